//! Exports against real processes: `nvr run` recording camsim, the node's sync agent (`nvr-sync run`,
//! its standby absent: it keeps the signed log while it cannot reach it), `nvr-web run`. A viewer is
//! refused; an operator's export downloads, plays in ffprobe with the catalog's frames, is read by
//! VLC as a plain MP4 of the same frames is, and
//! `nvr verify-export` passes with its manifest offline; one flipped byte in the MP4, one changed byte
//! in the manifest, or another export key fails it; the audit log has the export.

mod common;

use std::time::Duration;

use common::{
    client, one_camera, start_recorder_and_agent, start_web, wait_sealed_segments, web_user,
    PASSWORD,
};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{run_nvr, wait_until, TestDir};

fn url(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

fn login(dir: &TestDir, port: u16, user: &str) -> Client {
    let c = client(&dir.join("web/tls.crt"), port);
    let status = c
        .post(url(port, "/api/login"))
        .json(&json!({"user": user, "password": PASSWORD}))
        .send()
        .expect("login")
        .status();
    assert_eq!(status, StatusCode::OK);
    c
}

/// Sealed segments of cam/main, oldest first.
fn verify(
    dir: &TestDir,
    mp4: &std::path::Path,
    manifest: &std::path::Path,
    keys: &[&str],
) -> testkit::NvrOutput {
    let mut args = vec![
        "verify-export".to_owned(),
        mp4.to_string_lossy().into_owned(),
        manifest.to_string_lossy().into_owned(),
    ];
    args.extend(keys.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_nvr(dir, &args, Duration::from_secs(60))
}

#[test]
fn an_operator_exports_a_range_that_verifies_offline_and_a_changed_byte_does_not() {
    let dir = TestDir::new();
    let (_sim, _, web_port, config) = one_camera(&dir);
    // The node's keys, and a standby that is never started (its pins only).
    let key_a = common::signed_log::add_node_keys(&dir, &config);
    let (mut nvr, _agent) = start_recorder_and_agent(&dir, &config);
    let config_arg = config.to_string_lossy().into_owned();
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    web_user(&dir, &config, &["add", "olga", "--role", "operator"]);
    let web = start_web(&dir, &config, web_port);
    let export_pub = std::fs::read_to_string(dir.join("web/export.pub")).expect("export.pub");
    assert!(
        web.process.stdout().contains(&format!(
            "nvr-web export key (Ed25519) {}",
            export_pub.trim()
        )),
        "{}",
        web.process.stdout()
    );

    let segs = wait_sealed_segments(&dir, 5, &nvr);
    let (start_ms, end_ms) = (segs[1].start_ms, segs[3].end_ms);
    let frames: i64 = segs[1..=3].iter().map(|s| s.frames).sum();
    let export = url(
        web_port,
        &format!("/api/streams/cam/main/export.mp4?start_ms={start_ms}&end_ms={end_ms}"),
    );

    // A viewer cannot export.
    let viewer = login(&dir, web_port, "alice");
    let r = viewer.get(&export).send().expect("viewer export");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().expect("error body");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");

    // The operator's export, once the agent has logged the segments.
    let operator = login(&dir, web_port, "olga");
    let mut got = None;
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
            let r = operator.get(&export).send().expect("export");
            if r.status() == StatusCode::CONFLICT {
                return false;
            }
            got = Some(r);
            true
        }),
        "the segments never got into the signed log"
    );
    let r = got.expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("attachment; filename=\"cam-main-")));
    let id = r.headers()["x-export-id"].to_str().expect("id").to_owned();
    let mp4 = dir.write("export.mp4", r.bytes().expect("mp4"));
    let probe = testkit::ffprobe(&mp4);
    assert_eq!(probe.codec, "h264", "{probe:?}");
    assert_eq!(probe.frames, frames as u64, "{probe:?}");
    assert!(probe.stderr_errors.trim().is_empty(), "{probe:?}");
    // VLC, what an investigator most likely opens it with, reads it as it reads a plain MP4 of the
    // same frames (ffmpeg's unfragmented copy), and its MP4 demuxer reports no error.
    let plain = dir.join("export-plain.mp4");
    let copied = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&mp4)
        .args(["-c", "copy"])
        .arg(&plain)
        .status()
        .expect("run ffmpeg");
    assert!(copied.success(), "ffmpeg could not copy the export");
    let vlc = testkit::vlc::vlc_remux(&mp4);
    let control = testkit::vlc::vlc_remux(&plain);
    assert!(vlc.frames > frames as u64 / 2, "{vlc:?} of {frames} frames");
    assert_eq!(vlc.frames, control.frames, "{vlc:?} against {control:?}");
    assert!(!vlc.demux_log.contains("error"), "{vlc:?}");

    // The manifest is written once the last byte went out.
    let manifest_url = url(web_port, &format!("/api/exports/{id}/manifest"));
    let mut manifest = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let r = operator.get(&manifest_url).send().expect("manifest");
            if r.status() != StatusCode::OK {
                return false;
            }
            manifest = r.bytes().expect("manifest").to_vec();
            true
        }),
        "no manifest"
    );
    assert_eq!(
        viewer
            .get(&manifest_url)
            .send()
            .expect("viewer manifest")
            .status(),
        StatusCode::FORBIDDEN
    );
    let manifest_path = dir.write("export.manifest.json", &manifest);
    let m: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    assert_eq!(m["exported_by"], "olga");
    assert_eq!(m["node"], "node-a");
    assert_eq!(m["segments"].as_array().map(Vec::len), Some(3), "{m}");
    let paths: Vec<&str> = segs[1..=3].iter().map(|s| s.path.as_str()).collect();
    let listed: Vec<&str> = m["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter_map(|s| s["leaf"]["path"].as_str())
        .collect();
    assert_eq!(listed, paths);

    // verify-export passes offline, with the node key from the cluster file or given.
    let export_key = dir.join("web/export.pub").to_string_lossy().into_owned();
    let ok = verify(
        &dir,
        &mp4,
        &manifest_path,
        &["--config", &config_arg, "--export-key", &export_key],
    );
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("verified: "), "{}", ok.stdout);
    let ok = verify(
        &dir,
        &mp4,
        &manifest_path,
        &["--node-key", &key_a, "--export-key", export_pub.trim()],
    );
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);

    // One flipped byte in the MP4 fails it.
    let mut bytes = std::fs::read(&mp4).expect("mp4");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let flipped = dir.write("flipped.mp4", &bytes);
    let bad = verify(
        &dir,
        &flipped,
        &manifest_path,
        &["--config", &config_arg, "--export-key", &export_key],
    );
    assert!(!bad.status.success(), "{}", bad.stdout);
    assert!(
        bad.stderr.contains("NOT VERIFIED") && bad.stderr.contains("does not match"),
        "{}",
        bad.stderr
    );

    // One changed byte in the manifest fails it: the user's name, then one digit of the range.
    let text = String::from_utf8(manifest.clone()).expect("utf-8");
    for (from, to) in [
        ("\"olga\"", "\"olgb\""),
        (&*format!("{start_ms}"), &*format!("{}", start_ms + 1)),
    ] {
        let changed = dir.write("changed.json", text.replacen(from, to, 1));
        let bad = verify(
            &dir,
            &mp4,
            &changed,
            &["--config", &config_arg, "--export-key", &export_key],
        );
        assert!(!bad.status.success(), "{from} → {to}: {}", bad.stdout);
        assert!(
            bad.stderr.contains("signature does not verify"),
            "{}",
            bad.stderr
        );
    }
    // Another export key (the node's signing key) fails it.
    let bad = verify(
        &dir,
        &mp4,
        &manifest_path,
        &["--config", &config_arg, "--export-key", &key_a],
    );
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("not the given"), "{}", bad.stderr);

    // The audit log: the viewer's refusal, the operator's export and its completion.
    let audit = std::fs::read_to_string(dir.join("web/audit.log")).expect("audit");
    let entries: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let has = |event: &str, user: &str| {
        entries
            .iter()
            .any(|e| e["event"] == event && e["user"] == user)
    };
    assert!(has("export_refused", "alice"), "{audit}");
    assert!(has("export", "olga"), "{audit}");
    assert!(
        entries.iter().any(|e| e["event"] == "export_done"
            && e["user"] == "olga"
            && e["detail"].as_str().is_some_and(|d| d.contains(&id))),
        "{audit}"
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
}
