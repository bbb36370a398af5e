//! The viewer's API against real processes: `nvr-web run` (and a second viewer sharing the cluster's
//! session secret), `nvr run` recording camsim, `nvr-web user` for the users. Authentication, roles,
//! CSRF, rate limiting, the audit log, recordings and gaps against the catalog, live fMP4 in ffprobe.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{
    client, now_ms, one_camera, start_camsim, start_web, web_user, write_config, PASSWORD,
};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{free_port, wait_until, NvrProcess, TestDir};

fn url(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

/// Status and JSON body.
fn answer(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().unwrap_or(Value::Null))
}

fn login(c: &Client, port: u16, user: &str, password: &str) -> (StatusCode, Value) {
    answer(
        c.post(url(port, "/api/login"))
            .json(&json!({"user": user, "password": password}))
            .send()
            .expect("login request"),
    )
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{got:?}");
    assert_eq!(got.1["error"]["code"], json!(code), "{got:?}");
    assert!(got.1["error"]["message"].is_string(), "{got:?}");
}

#[test]
fn login_roles_csrf_rate_limit_audit_and_a_session_good_on_every_node() {
    let dir = TestDir::new();
    let (port_a, port_b) = (free_port(), free_port());
    let config_a = write_config(&dir, "a", None, port_a, "web-a");
    let config_b = write_config(&dir, "b", None, port_b, "web-b");
    web_user(&dir, &config_a, &["add", "alice", "--role", "viewer"]);
    web_user(&dir, &config_a, &["add", "bob", "--role", "admin"]);
    std::fs::create_dir_all(dir.join("web-b")).expect("mkdir");
    std::fs::copy(dir.join("web-a/users.json"), dir.join("web-b/users.json")).expect("copy users");
    let web_a = start_web(&dir, &config_a, port_a);
    let web_b = start_web(&dir, &config_b, port_b);
    assert_eq!(web_a.fingerprint.len(), 95, "{}", web_a.fingerprint);
    assert_ne!(
        web_a.fingerprint, web_b.fingerprint,
        "each node its own certificate"
    );
    let a = client(&dir.join("web-a/tls.crt"), port_a);
    let b = client(&dir.join("web-b/tls.crt"), port_b);

    // Nothing without a session, on every route the router has but the public ones; one error shape.
    let range = format!("?start_ms={}&end_ms={}", now_ms() - 60_000, now_ms());
    let mut checked = 0;
    for route in nvr_web::api::ROUTES.iter().filter(|r| !r.public) {
        let path = route
            .path
            .replace("{camera}", "cam")
            .replace("{stream}", "main");
        let req = match route.method {
            "POST" => a.post(url(port_a, &path)).header("x-csrf-token", "x"),
            _ => a.get(url(port_a, &format!("{path}{range}"))),
        };
        let got = answer(req.send().expect("request"));
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
        checked += 1;
    }
    assert!(checked >= 6, "{checked} routes");
    // Assets are names the binary holds, never paths.
    for path in [
        "/assets/..%2F..%2Fetc%2Fpasswd",
        "/assets/../../etc/passwd",
        "/assets/%2e%2e/Cargo.toml",
    ] {
        let got = answer(a.get(url(port_a, path)).send().expect("traversal"));
        assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    }
    assert_error(
        &answer(a.post(url(port_a, "/api/logout")).send().expect("post")),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &answer(a.get(url(port_a, "/api/nothing")).send().expect("get")),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let index = a.get(url(port_a, "/")).send().expect("index");
    assert_eq!(index.status(), StatusCode::OK);
    assert!(index.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("default-src 'self'"));

    // Wrong password, oversized request.
    assert_error(
        &login(&a, port_a, "alice", "not the password"),
        StatusCode::UNAUTHORIZED,
        "bad_credentials",
    );
    let big = "x".repeat(64 * 1024);
    assert_error(
        &answer(
            a.post(url(port_a, "/api/login"))
                .json(&json!({"user": "alice", "password": big}))
                .send()
                .expect("post"),
        ),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // A viewer logs in: cookie flags, session, no admin routes.
    let r = a
        .post(url(port_a, "/api/login"))
        .json(&json!({"user": "alice", "password": PASSWORD}))
        .send()
        .expect("login");
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    for flag in [
        "nvr_session=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set_cookie.contains(flag), "{flag} missing in {set_cookie}");
    }
    let me: Value = r.json().expect("json");
    assert_eq!(me["role"], json!("viewer"));
    let csrf = me["csrf"].as_str().expect("csrf").to_owned();
    let (status, me2) = answer(a.get(url(port_a, "/api/me")).send().expect("me"));
    assert_eq!((status, &me2["user"]), (StatusCode::OK, &json!("alice")));
    assert_error(
        &answer(a.get(url(port_a, "/api/audit")).send().expect("audit")),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // The recorder is not running: cameras answer, saying so.
    let (status, cams) = answer(a.get(url(port_a, "/api/cameras")).send().expect("cameras"));
    assert_eq!(status, StatusCode::OK);
    assert!(
        cams["recorder_error"]
            .as_str()
            .expect("error")
            .contains("control.sock"),
        "{cams}"
    );

    // The same session on the other node (shared secret): a failover keeps it.
    let cookie_value = set_cookie.split(';').next().expect("pair").to_owned();
    let (status, on_b) = answer(
        b.get(url(port_b, "/api/me"))
            .header("cookie", &cookie_value)
            .send()
            .expect("me on b"),
    );
    assert_eq!(
        (status, &on_b["user"]),
        (StatusCode::OK, &json!("alice")),
        "{on_b}"
    );
    // A changed cookie is refused.
    let mut forged = cookie_value.clone();
    forged.insert(forged.find('=').expect("=") + 1, 'x');
    assert_error(
        &answer(
            b.get(url(port_b, "/api/me"))
                .header("cookie", forged)
                .send()
                .expect("me"),
        ),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // CSRF: a state change needs the session's token.
    for token in [None, Some("wrong")] {
        let mut req = a.post(url(port_a, "/api/logout"));
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        assert_error(
            &answer(req.send().expect("logout")),
            StatusCode::FORBIDDEN,
            "csrf",
        );
    }
    let r = a
        .post(url(port_a, "/api/logout"))
        .header("x-csrf-token", &csrf)
        .send()
        .expect("logout");
    assert_eq!(r.status(), StatusCode::OK);
    assert_error(
        &answer(a.get(url(port_a, "/api/me")).send().expect("me")),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // A deleted user's session ends at once (on B, whose users file we change).
    web_user(&dir, &config_b, &["del", "alice"]);
    assert_error(
        &answer(
            b.get(url(port_b, "/api/me"))
                .header("cookie", &cookie_value)
                .send()
                .expect("me"),
        ),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // Rate limit: after 5 failures from this client even the right password is refused.
    let mut failures = 1; // the wrong password above
    while failures < 5 {
        assert_error(
            &login(&a, port_a, "bob", "not the password"),
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
        );
        failures += 1;
    }
    let r = a
        .post(url(port_a, "/api/login"))
        .json(&json!({"user": "bob", "password": PASSWORD}))
        .send()
        .expect("login");
    assert!(r.headers().contains_key("retry-after"));
    assert_error(&answer(r), StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // The audit log has it all; an admin reads it through the API (on B, not rate limited).
    let log = std::fs::read_to_string(dir.join("web-a/audit.log")).expect("audit log");
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let count = |e: &str| events.iter().filter(|v| v["event"] == json!(e)).count();
    assert_eq!(count("login_failed"), 5, "{log}");
    assert_eq!(count("login"), 1, "{log}");
    assert_eq!(count("logout"), 1, "{log}");
    assert_eq!(count("login_refused"), 1, "{log}");
    assert!(!log.contains(PASSWORD), "no password in the audit log");
    let (status, me) = login(&b, port_b, "bob", PASSWORD);
    assert_eq!((status, &me["role"]), (StatusCode::OK, &json!("admin")));
    let (status, audit) = answer(b.get(url(port_b, "/api/audit")).send().expect("audit"));
    assert_eq!(status, StatusCode::OK);
    let last = audit["entries"].as_array().and_then(|e| e.last()).cloned();
    assert_eq!(
        last.map(|e| (e["event"].clone(), e["user"].clone())),
        Some((json!("login"), json!("bob")))
    );
}

fn recordings(c: &Client, port: u16, start_ms: i64, end_ms: i64) -> Value {
    let (status, v) = answer(
        c.get(url(
            port,
            &format!("/api/streams/cam/main/recordings?start_ms={start_ms}&end_ms={end_ms}"),
        ))
        .send()
        .expect("recordings"),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[test]
fn recordings_and_gaps_match_the_catalog_and_live_video_decodes() {
    let dir = TestDir::new();
    let (mut sim, cam_port, web_port, config) = one_camera(&dir);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen("[web]\n", "[web]\nmax_live_streams = 2\n", 1),
    )
    .expect("config");
    let mut nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    let _web = start_web(&dir, &config, web_port);
    let c = client(&dir.join("web/tls.crt"), web_port);
    let (status, _) = login(&c, web_port, "alice", PASSWORD);
    assert_eq!(status, StatusCode::OK);
    let t0 = now_ms();

    // The recorder's status through the API.
    let state = || {
        let (_, cams) = answer(
            c.get(url(web_port, "/api/cameras"))
                .send()
                .expect("cameras"),
        );
        cams["cameras"][0]["streams"][0]["status"]["state"].clone()
    };
    assert!(
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || state() == json!("recording")
        ),
        "never recording: {}",
        nvr.stderr_tail(30)
    );

    // Live: a few seconds of the fMP4 stream decode.
    let mut live = c
        .get(url(web_port, "/api/streams/cam/main/live"))
        .send()
        .expect("live");
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()["content-type"], "video/mp4");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let n = live.read(&mut buf).expect("live bytes");
        assert!(n > 0, "live stream ended");
        bytes.extend_from_slice(&buf[..n]);
    }
    let live_path = dir.write("live.mp4", &bytes);

    // At most max_live_streams (2) at once; a slot is free again once its client has gone.
    let live_url = url(web_port, "/api/streams/cam/main/live");
    let second = c.get(&live_url).send().expect("second live");
    assert_eq!(second.status(), StatusCode::OK);
    assert_error(
        &answer(c.get(&live_url).send().expect("third live")),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    drop(live);
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            c.get(&live_url)
                .send()
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }),
        "the slot of a closed live stream is never given back"
    );
    drop(second);
    let probe = testkit::ffprobe(&live_path);
    assert_eq!(probe.codec, "h264", "{probe:?}");
    assert!(probe.frames >= 25, "{probe:?}");
    assert_error(
        &answer(
            c.get(url(web_port, "/api/streams/cam/sub/live"))
                .send()
                .expect("live"),
        ),
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A real outage: the camera stops for 4 s, then comes back on the same port.
    std::thread::sleep(Duration::from_secs(3));
    sim.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let (_sim2, _) = start_camsim(&dir, Some(cam_port));
    assert!(
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || state() == json!("recording")
        ),
        "not recording again: {}",
        nvr.stderr_tail(30)
    );
    std::thread::sleep(Duration::from_secs(3));
    let t1 = now_ms();

    let api = recordings(&c, web_port, t0, t1);
    let (reader, id) = common::cam_reader(&dir);
    let segments: Vec<Value> = reader
        .segments_in_range(id, t0, t1)
        .expect("segments")
        .iter()
        .map(|s| json!([s.start_ms, s.end_ms, s.node, s.state.as_str(), s.frames]))
        .collect();
    let api_segments: Vec<Value> = api["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            json!([
                s["start_ms"],
                s["end_ms"],
                s["node"],
                s["state"],
                s["frames"]
            ])
        })
        .collect();
    // The open segment may grow between the two reads: compare the sealed ones exactly.
    let sealed = |v: &Vec<Value>| -> Vec<Value> {
        v.iter()
            .filter(|s| s[3] == json!("sealed"))
            .cloned()
            .collect()
    };
    assert!(!sealed(&segments).is_empty());
    assert_eq!(sealed(&api_segments), sealed(&segments));
    let gaps: Vec<Value> = reader
        .gaps_in_range(id, t0, t1)
        .expect("gaps")
        .iter()
        .map(|g| json!({"start_ms": g.start_ms, "end_ms": g.end_ms}))
        .collect();
    assert_eq!(api["gaps"], json!(gaps));
    let outage: Vec<&Value> = gaps
        .iter()
        .filter(|g| {
            g["end_ms"].as_i64().unwrap_or(0) - g["start_ms"].as_i64().unwrap_or(0) >= 3_000
        })
        .collect();
    assert_eq!(outage.len(), 1, "one gap for the outage: {gaps:?}");

    // A bad range is refused with the error shape.
    let (status, v) = answer(
        c.get(url(
            web_port,
            &format!("/api/streams/cam/main/recordings?start_ms={t1}&end_ms={t0}"),
        ))
        .send()
        .expect("bad range"),
    );
    assert_error(&(status, v), StatusCode::BAD_REQUEST, "bad_request");
    let (status, v) = answer(
        c.get(url(
            web_port,
            "/api/streams/cam/main/recordings?start_ms=x&end_ms=1",
        ))
        .send()
        .expect("bad query"),
    );
    assert_error(&(status, v), StatusCode::BAD_REQUEST, "bad_request");
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
}
