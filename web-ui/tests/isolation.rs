//! The viewer's crash never touches recording: `nvr-web` killed with SIGKILL while several browsers
//! (one of them reading nothing) hold live streams, then started again; every frame camsim sent while
//! the recorder ran is in the recording exactly once (`nvr frames`), and live video works again; SIGTERM
//! then ends the viewer cleanly with a live stream open.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{client, one_camera, start_web, web_user, PASSWORD};
use serde_json::json;
use testkit::{run_nvr, NvrProcess, TestDir};

fn login(c: &reqwest::blocking::Client, port: u16) {
    let r = c
        .post(format!("https://localhost:{port}/api/login"))
        .json(&json!({"user": "alice", "password": PASSWORD}))
        .send()
        .expect("login");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

/// Opens the live stream of cam/main and reads its first `bytes` bytes.
fn open_live(
    c: &reqwest::blocking::Client,
    port: u16,
    bytes: usize,
) -> reqwest::blocking::Response {
    let mut r = c
        .get(format!(
            "https://localhost:{port}/api/streams/cam/main/live"
        ))
        .send()
        .expect("live");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let mut buf = vec![0u8; bytes];
    r.read_exact(&mut buf).expect("live bytes");
    r
}

#[test]
fn a_killed_viewer_with_live_viewers_loses_no_recorded_frame() {
    let dir = TestDir::new();
    let (_sim, _, web_port, config) = one_camera(&dir);
    let mut nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    let mut web = start_web(&dir, &config, web_port);
    let c = client(&dir.join("web/tls.crt"), web_port);
    login(&c, web_port);

    // Three live viewers; the last one stops reading after its first bytes.
    let mut readers: Vec<_> = (0..2).map(|_| open_live(&c, web_port, 4096)).collect();
    let _stalled = open_live(&c, web_port, 1024);
    let mut buf = vec![0u8; 256 * 1024];
    for r in &mut readers {
        r.read_exact(&mut buf).expect("live keeps coming");
    }
    web.process.kill9();
    drop(readers);
    assert!(nvr.is_running(), "the recorder survives its viewer");

    // The viewer comes back; the session secret is the same, the cookie still good.
    let mut web2 = start_web(&dir, &config, web_port);
    assert_eq!(web2.fingerprint, web.fingerprint, "the certificate is kept");
    let mut again = open_live(&c, web_port, 4096);
    again.read_exact(&mut buf).expect("live again");
    // SIGTERM (systemctl stop) ends the viewer cleanly even with a live stream open.
    web2.process.sigterm();
    web2.process.expect_clean_exit(Duration::from_secs(30));
    drop(again);
    std::thread::sleep(Duration::from_secs(2));
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));

    // Every frame once: one run, no missing or duplicated camsim sequence number.
    let (reader, id) = common::cam_reader(&dir);
    assert_eq!(
        reader.runs(id).expect("runs").len(),
        1,
        "recording never stopped"
    );
    let segs = reader.stream_segments(id).expect("segments");
    let mut args = vec!["frames".to_owned(), "--summary".to_owned()];
    args.extend(segs.iter().map(|s| {
        dir.join("data")
            .join(&s.path)
            .to_string_lossy()
            .into_owned()
    }));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(&dir, &args, Duration::from_secs(60));
    let all = out
        .stdout
        .lines()
        .find(|l| l.starts_with("# all:"))
        .unwrap_or_else(|| panic!("no summary: {}", out.stdout))
        .to_owned();
    assert!(
        all.contains(" 0 missing, 0 duplicated, 0 unstamped"),
        "{all}"
    );
    let frames: u64 = all
        .trim_start_matches("# all: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("frame count");
    assert!(frames >= 100, "{all}");
}
