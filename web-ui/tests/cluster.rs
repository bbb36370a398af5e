//! The cluster API against a real two-node cluster on loopback: primary `node-a` and its standby
//! `node-s`, each with recorder, sync agent and arbiter, and node-a's viewer. The view comes from the
//! arbiter's and sync agent's status files (nodes alive, heartbeat ages, holder and epoch, mirroring
//! lag, storage); a sealed file changed behind the recorder's back is a tampering alarm in the banner's
//! list, acknowledged by an admin only; handover and drain go through the arbiter's socket, refused for
//! viewers and operators and without the CSRF token, and every attempt is in the audit log; a camera
//! that goes away is a camera-down alarm.

mod common;

use std::time::Duration;

use common::rig;
use common::{client, start_camsim, web_user, PASSWORD};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{wait_until, TestDir};

const STREAM: &str = "cam/main";

/// A client logged in to one viewer, with its CSRF token.
struct Session {
    client: Client,
    base: String,
    csrf: String,
}

impl Session {
    /// Logs `user` in to the viewer of `node` (`web-NODE/tls.crt` in `dir`) listening on `listen`.
    fn login(dir: &TestDir, node: &str, listen: &str, user: &str) -> Session {
        let port = port_of(listen);
        let client = client(&dir.join(format!("web-{node}/tls.crt")), port);
        let base = format!("https://localhost:{port}");
        let (status, me) = post(
            &client,
            &base,
            "/api/login",
            None,
            json!({"user": user, "password": PASSWORD}),
        );
        assert_eq!(status, StatusCode::OK, "{me}");
        assert!(
            me["token"].is_string(),
            "the session token for other nodes: {me}"
        );
        let csrf = me["csrf"].as_str().expect("csrf").to_owned();
        Session { client, base, csrf }
    }

    fn get(&self, path: &str) -> (StatusCode, Value) {
        get(&self.client, &self.base, path)
    }

    /// A POST with this session's CSRF token.
    fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        post(&self.client, &self.base, path, Some(&self.csrf), body)
    }

    /// A POST without the CSRF token (refused whatever the role).
    fn post_without_csrf(&self, path: &str, body: Value) -> (StatusCode, Value) {
        post(&self.client, &self.base, path, None, body)
    }
}

fn get(c: &Client, base: &str, path: &str) -> (StatusCode, Value) {
    let r = c.get(format!("{base}{path}")).send().expect("request");
    (r.status(), r.json().unwrap_or(Value::Null))
}

fn post(
    c: &Client,
    base: &str,
    path: &str,
    csrf: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = c.post(format!("{base}{path}")).json(&body);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    let r = req.send().expect("request");
    (r.status(), r.json().unwrap_or(Value::Null))
}

/// The port of a `[web] listen` address.
fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn stream_of<'a>(view: &'a Value, key: &str) -> Option<&'a Value> {
    view["streams"]
        .as_array()?
        .iter()
        .find(|s| s["stream"] == key)
}

fn audit_events(session: &Session) -> Vec<Value> {
    session.get("/api/audit?lines=1000").1["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn cluster_view_alarms_acknowledged_by_admins_and_handover_through_the_arbiter() {
    let dir = TestDir::new();
    let (sim, cam_port) = start_camsim(&dir, None);
    let a = rig::node(&dir, "node-a", "primary", "127.0.0.1", true);
    let s = rig::node(&dir, "node-s", "standby", "127.0.0.1", true);
    let cams = [("cam", "node-a", format!("rtsp://127.0.0.1:{cam_port}/cam1"))];
    let cfg = rig::write_cluster(&dir, &[&a, &s], &cams, true, &a);
    let _procs = [
        rig::spawn_recorder(&dir, &cfg, "node-a"),
        rig::spawn_recorder(&dir, &cfg, "node-s"),
        rig::spawn_sync(&dir, &cfg, "node-a"),
        rig::spawn_sync(&dir, &cfg, "node-s"),
        rig::spawn_arbiter(&dir, &cfg, "node-a"),
        rig::spawn_arbiter(&dir, &cfg, "node-s"),
    ];
    for (user, role) in [("root", "admin"), ("olga", "operator"), ("vic", "viewer")] {
        web_user(&dir, &cfg, &["add", user, "--role", role]);
    }
    assert!(dir.join("users.json").is_file(), "[web] users_file is used");
    let _web = rig::spawn_web(&dir, &cfg, "node-a", &a.web_url);
    let admin = Session::login(&dir, "node-a", &a.web_listen, "root");
    let operator = Session::login(&dir, "node-a", &a.web_listen, "olga");
    let viewer = Session::login(&dir, "node-a", &a.web_listen, "vic");

    // The viewers of every node, for the page's failover.
    let (_, nodes) = viewer.get("/api/nodes");
    assert_eq!(nodes["nodes"][0]["web_url"], json!(a.web_url), "{nodes}");
    assert_eq!(nodes["nodes"][1]["name"], "node-s", "{nodes}");

    // The arbiter's view: both nodes alive, node-a holds the stream, the standby mirrors it.
    let mut view = Value::Null;
    let ready = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        view = viewer.get("/api/cluster").1;
        let st = stream_of(&view, STREAM);
        view["source"] == "arbiter"
            && view["nodes"][1]["alive"] == true
            && view["nodes"][1]["heartbeat_age_ms"]
                .as_i64()
                .is_some_and(|a| a < 1000)
            && st.is_some_and(|st| {
                st["holder"] == "node-a"
                    && st["epoch"].as_u64().is_some()
                    && st["mirror"][0]["peer"] == "node-s"
                    && st["storage"]["segments"].as_u64() >= Some(2)
            })
    });
    assert!(ready, "cluster view: {view:#}");
    let st = stream_of(&view, STREAM).expect("stream");
    assert_eq!(st["owner"], "node-a", "{st}");
    assert_eq!(st["recorder"]["mode"], "record", "{st}");
    assert!(st["storage"]["oldest_ms"].as_i64().is_some(), "{st}");
    assert!(
        view["storage"]["recordings_bytes"].as_u64() > Some(0),
        "{view}"
    );
    assert!(
        view["storage"]["disk"]["free_bytes"].as_u64() > Some(0),
        "{view}"
    );
    assert_eq!(view["nodes"][0]["self"], true, "{view}");

    // A sealed segment changed behind the recorder's back (as ransomware would): the primary's sync
    // agent raises a tampering alarm, which the banner's list shows.
    let sealed = wait_for_sealed_segment(&a.data);
    let mut bytes = std::fs::read(&sealed).expect("read segment");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&sealed, &bytes).expect("change a sealed segment (as root)");
    let mut alarm = Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            let alarms = viewer.get("/api/alarms").1;
            alarm = alarms["alarms"]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["category"] == "tampering").cloned())
                .unwrap_or(Value::Null);
            !alarm.is_null()
        }),
        "no tampering alarm: {:#}",
        viewer.get("/api/alarms").1
    );
    assert_eq!(alarm["banner"], true, "{alarm}");
    assert_eq!(alarm["node"], "node-a", "{alarm}");
    assert_eq!(alarm["acknowledged"], Value::Null, "{alarm}");
    let id = alarm["id"].as_str().expect("id").to_owned();

    // Only an admin acknowledges, with the CSRF token, an alarm that exists.
    let ack = json!({"id": id});
    let got = viewer.post("/api/alarms/ack", ack.clone());
    assert_eq!(
        (got.0, &got.1["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden")),
        "{got:?}"
    );
    let got = operator.post("/api/alarms/ack", ack.clone());
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{got:?}");
    let got = admin.post_without_csrf("/api/alarms/ack", ack.clone());
    assert_eq!(
        (got.0, &got.1["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("csrf")),
        "{got:?}"
    );
    let got = admin.post("/api/alarms/ack", json!({"id": "sync:999999"}));
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{got:?}");
    let got = admin.post("/api/alarms/ack", ack.clone());
    assert_eq!(got.0, StatusCode::OK, "{got:?}");
    assert_eq!(got.1["acknowledged"]["by"], "root", "{got:?}");
    let alarms = viewer.get("/api/alarms").1;
    let acked = alarms["alarms"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["id"] == json!(id)).cloned())
        .expect("the alarm is still listed");
    assert_eq!(acked["acknowledged"]["by"], "root", "{acked}");
    let acks: Value = serde_json::from_slice(
        &std::fs::read(dir.join("web-node-a/alarm-acks.json")).expect("acks file in the state dir"),
    )
    .expect("acks json");
    assert_eq!(acks["acks"][&id]["by"], "root", "{acks}");

    // Handover: refused for viewers and operators and without CSRF; an admin's goes to the arbiter,
    // and the standby then records the stream under a new epoch.
    let epoch = st["epoch"].as_u64().expect("epoch");
    let handover = json!({"stream": STREAM, "to": "node-s"});
    let got = viewer.post("/api/cluster/handover", handover.clone());
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{got:?}");
    let got = operator.post("/api/cluster/handover", handover.clone());
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{got:?}");
    let got = admin.post_without_csrf("/api/cluster/handover", handover.clone());
    assert_eq!(got.1["error"]["code"], "csrf", "{got:?}");
    let got = operator.post("/api/cluster/drain", json!({"to": "node-s"}));
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{got:?}");
    let got = admin.post("/api/cluster/drain", json!({"to": "nowhere"}));
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{got:?}");
    let got = admin.post("/api/cluster/handover", handover.clone());
    assert_eq!(got.0, StatusCode::OK, "{got:?}");
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            view = viewer.get("/api/cluster").1;
            stream_of(&view, STREAM)
                .is_some_and(|st| st["holder"] == "node-s" && st["epoch"].as_u64() > Some(epoch))
        }),
        "handover not carried out: {view:#}"
    );

    // Every admin action is in the audit log: the refused ones and the ones carried out.
    let entries = audit_events(&admin);
    let count = |event: &str, ok: bool| {
        entries
            .iter()
            .filter(|e| e["event"] == event && e["ok"] == ok)
            .count()
    };
    assert_eq!(count("alarm_ack", true), 1, "{entries:#?}");
    assert!(count("alarm_ack", false) >= 2, "{entries:#?}");
    assert_eq!(count("handover", true), 1, "{entries:#?}");
    assert!(count("handover", false) >= 2, "{entries:#?}");
    assert!(count("drain", false) >= 1, "{entries:#?}");

    // The standby's viewer shows the camera it protects, now recorded there, and plays it live.
    let cfg_s = rig::write_cluster(&dir, &[&a, &s], &cams, true, &s);
    let _web_s = rig::spawn_web(&dir, &cfg_s, "node-s", &s.web_url);
    let on_s = Session::login(&dir, "node-s", &s.web_listen, "vic");
    let mut cams_s = Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
            cams_s = on_s.get("/api/cameras").1;
            cams_s["cameras"][0]["name"] == "cam"
                && cams_s["cameras"][0]["streams"][0]["status"]["mode"] == "record"
        }),
        "{cams_s:#}"
    );
    let mut live = on_s
        .client
        .get(format!("{}/api/streams/cam/main/live", on_s.base))
        .send()
        .expect("live");
    assert_eq!(live.status(), StatusCode::OK);
    let mut head = vec![0u8; 4096];
    std::io::Read::read_exact(&mut live, &mut head).expect("live bytes");
    assert_eq!(&head[4..8], b"ftyp", "an fMP4 init segment first");
    drop(live);

    // A drain of the standby (through its own viewer and arbiter) hands the stream back to node-a.
    let admin_s = Session::login(&dir, "node-s", &s.web_listen, "root");
    let got = admin_s.post("/api/cluster/drain", json!({"to": "node-a"}));
    assert_eq!(got.0, StatusCode::OK, "{got:?}");
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            view = viewer.get("/api/cluster").1;
            stream_of(&view, STREAM).is_some_and(|st| st["holder"] == "node-a")
        }),
        "drain not carried out: {view:#}"
    );
    let drained = admin_s.get("/api/audit?lines=100").1;
    assert!(
        drained["entries"].as_array().is_some_and(|l| l
            .iter()
            .any(|e| e["event"] == "drain" && e["ok"] == true && e["user"] == "root")),
        "{drained}"
    );

    // The camera goes away: a camera-down alarm for the banner.
    drop(sim);
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            viewer.get("/api/alarms").1["alarms"]
                .as_array()
                .is_some_and(|l| {
                    l.iter().any(|x| {
                        x["category"] == "camera_down"
                            && x["subject"] == STREAM
                            && x["banner"] == true
                    })
                })
        }),
        "no camera-down alarm: {:#}",
        viewer.get("/api/alarms").1
    );
}

/// A sealed segment of `data_dir`'s media (its file made read-only by sealing), waiting for one.
fn wait_for_sealed_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            found = sealed_files(&data_dir.join("media")).into_iter().next();
            found.is_some()
        }),
        "no sealed segment"
    );
    found.expect("sealed")
}

fn sealed_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sealed_files(&p));
        } else if p.extension().is_some_and(|x| x == "mp4")
            && e.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn without_an_arbiter_the_cluster_view_is_the_sync_agents() {
    let dir = TestDir::new();
    let (_sim, cam_port) = start_camsim(&dir, None);
    let a = rig::node(&dir, "node-a", "primary", "127.0.0.1", true);
    let s = rig::node(&dir, "node-s", "standby", "127.0.0.1", true);
    let cams = [("cam", "node-a", format!("rtsp://127.0.0.1:{cam_port}/cam1"))];
    let cfg = rig::write_cluster(&dir, &[&a, &s], &cams, false, &a);
    let _procs = [
        rig::spawn_recorder(&dir, &cfg, "node-a"),
        rig::spawn_sync(&dir, &cfg, "node-a"),
        rig::spawn_sync(&dir, &cfg, "node-s"),
    ];
    web_user(&dir, &cfg, &["add", "vic", "--role", "viewer"]);
    let _web = rig::spawn_web(&dir, &cfg, "node-a", &a.web_url);
    let viewer = Session::login(&dir, "node-a", &a.web_listen, "vic");
    let base = viewer.base.clone();
    let mut view = Value::Null;
    let ready = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        view = viewer.get("/api/cluster").1;
        view["source"] == "sync"
            && view["nodes"][1]["alive"] == true
            && stream_of(&view, STREAM).is_some_and(|st| st["mirror"][0]["peer"] == "node-s")
    });
    assert!(ready, "cluster view: {view:#}");
    assert_eq!(view["nodes"][1]["sync_connected"], true, "{view}");
    assert_eq!(
        view["nodes"][1]["heartbeat_age_ms"],
        Value::Null,
        "no arbiter: {view}"
    );
    let st = stream_of(&view, STREAM).expect("stream");
    assert_eq!(st["holder"], "node-a", "the owner records it: {st}");
    assert_eq!(st["epoch"], Value::Null, "{st}");
    assert!(
        view["problems"].as_array().is_some_and(|p| p.is_empty()),
        "a missing arbiter is not a problem: {view}"
    );
    // The session as a bearer token (what the page sends to another node's viewer), without a cookie;
    // changed, it is refused.
    let (_, me) = viewer.get("/api/me");
    let token = me["token"].as_str().expect("token").to_owned();
    let fresh = client(&dir.join("web-node-a/tls.crt"), port_of(&a.web_listen));
    let bearer = |t: &str| {
        let r = fresh
            .get(format!("{base}/api/me"))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .expect("request");
        (r.status(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, answer) = bearer(&token);
    assert_eq!(
        (status, &answer["user"]),
        (StatusCode::OK, &json!("vic")),
        "{answer}"
    );
    let mut forged = token.clone().into_bytes();
    forged[3] ^= 1;
    assert_eq!(
        bearer(&String::from_utf8_lossy(&forged)).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fresh
            .get(format!("{base}/api/me"))
            .send()
            .expect("request")
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // CORS: only the cluster's viewer origins, never credentials; the CSP lets the page reach them.
    let preflight = |origin: &str| {
        fresh
            .request(reqwest::Method::OPTIONS, format!("{base}/api/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .expect("preflight")
    };
    let header = |r: &reqwest::blocking::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ok = preflight(&s.web_url);
    assert_eq!(
        header(&ok, "access-control-allow-origin"),
        Some(s.web_url.clone())
    );
    assert!(
        header(&ok, "access-control-allow-headers").is_some_and(|h| h.contains("authorization"))
    );
    assert_eq!(header(&ok, "access-control-allow-credentials"), None);
    let evil = preflight("https://evil.example");
    assert_eq!(header(&evil, "access-control-allow-origin"), None);
    let r = fresh
        .get(format!("{base}/api/me"))
        .header("origin", s.web_url.as_str())
        .header("authorization", format!("Bearer {token}"))
        .send()
        .expect("request");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some(s.web_url.clone())
    );
    let csp = header(&r, "content-security-policy").expect("csp");
    assert!(
        csp.contains(&format!("connect-src 'self' {} {};", a.web_url, s.web_url)),
        "{csp}"
    );
    let r = fresh
        .get(format!("{base}/api/me"))
        .header("origin", "https://evil.example")
        .header("authorization", format!("Bearer {token}"))
        .send()
        .expect("request");
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    // Handover needs an arbiter: none answers on this node.
    web_user(&dir, &cfg, &["add", "root", "--role", "admin"]);
    let admin = Session::login(&dir, "node-a", &a.web_listen, "root");
    let got = admin.post(
        "/api/cluster/handover",
        json!({"stream": STREAM, "to": "node-s"}),
    );
    assert_eq!(
        (got.0, &got.1["error"]["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable")),
        "{got:?}"
    );
}
