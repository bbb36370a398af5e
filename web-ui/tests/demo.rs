//! `nvr demo` starts the viewer (the `nvr-web` binary next to `nvr`) and prints its URL and a demo
//! login that works: the demo's cameras are there, recording; the viewer stops with the demo.

mod common;

use std::time::Duration;

use common::client;
use serde_json::{json, Value};
use testkit::{wait_until, NvrProcess, TestDir};

#[test]
fn the_demo_starts_the_viewer_and_prints_a_login_that_works() {
    let dir = TestDir::new();
    let data = dir.join("demo-data");
    let mut demo = NvrProcess::spawn(
        &dir,
        &[
            "demo",
            "--duration-s",
            "120",
            "--streams",
            "2",
            "--segment-s",
            "2",
            "--data-dir",
            &data.to_string_lossy(),
        ],
    );
    let line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("demo: viewer https://"))
            .map(str::to_owned)
    };
    assert!(
        wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
            line(&demo.stdout()).is_some() && demo.stdout().contains("nvr-web listening on")
                || !demo.is_running()
        }),
        "no viewer: {}\n{}",
        demo.stdout(),
        demo.stderr()
    );
    let printed = line(&demo.stdout()).unwrap_or_else(|| panic!("{}", demo.stdout()));
    // "demo: viewer https://127.0.0.1:PORT/ (…); log in as demo with password PASSWORD"
    let port: u16 = printed
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{printed}"));
    let password = printed
        .rsplit("with password ")
        .next()
        .expect("password")
        .trim()
        .to_owned();
    assert!(printed.contains("log in as demo "), "{printed}");
    assert_eq!(password.len(), 16, "{printed}");

    let c = client(&dir.join("demo-data-web/tls.crt"), port);
    let base = format!("https://localhost:{port}");
    let r = c
        .post(format!("{base}/api/login"))
        .json(&json!({"user": "demo", "password": password}))
        .send()
        .expect("login");
    assert_eq!(r.status(), 200, "{:?}", r.text());
    let me: Value = c
        .get(format!("{base}/api/me"))
        .send()
        .expect("me")
        .json()
        .expect("json");
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("demo"), Some("admin"))
    );
    let mut cams = Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            cams = c
                .get(format!("{base}/api/cameras"))
                .send()
                .ok()
                .and_then(|r| r.json().ok())
                .unwrap_or(Value::Null);
            cams["cameras"].as_array().is_some_and(|l| {
                l.len() == 2
                    && l.iter()
                        .all(|c| c["streams"][0]["status"]["state"] == "recording")
            })
        }),
        "{cams:#}"
    );

    // Stopping the demo stops its viewer.
    demo.sigint();
    let status = demo
        .wait_exit(Duration::from_secs(60))
        .expect("the demo stops");
    assert!(status.success(), "{}", demo.stderr());
    assert!(
        demo.stdout().contains("all verified: true"),
        "{}",
        demo.stdout()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the viewer still listens after the demo"
    );
}
