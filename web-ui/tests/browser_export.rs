//! Export from the page in Debian's headless chromium (`web-ui/tests/browser/export.mjs`,
//! playwright-core as in `browser.rs`) against real processes: `nvr run` recording camsim, the node's
//! sync agent keeping the signed log, `nvr-web run`. An operator sees the export controls, types a
//! range, clicks Export and gets two downloads, the MP4 and its manifest, which `nvr verify-export`
//! passes offline; a viewer does not see the controls. `NVR_WEB_SCREENSHOT=FILE.png` keeps the
//! screenshot.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{client, start_camsim, start_web, web_user, write_config, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{free_port, nvr_sync_bin, run_nvr, wait_until, NvrProcess, TestDir};

fn sealed(dir: &TestDir) -> Vec<store::SegmentRow> {
    let Ok(reader) = store::Reader::open(&dir.join("data"), Arc::new(base::clock::SystemClock))
    else {
        return Vec::new();
    };
    let Ok(Some(id)) = reader.find_stream("cam", "main") else {
        return Vec::new();
    };
    reader
        .stream_segments(id)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state == store::SegmentState::Sealed)
        .collect()
}

#[test]
fn an_operator_exports_from_the_page_and_the_downloads_verify() {
    let script_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"));
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run tests/run, or `npm ci` in {}",
        script_dir.display()
    );
    let dir = TestDir::new();
    let (_sim, cam_port) = start_camsim(&dir, None);
    let web_port = free_port();
    let config = write_config(
        &dir,
        "a",
        Some(&format!("rtsp://127.0.0.1:{cam_port}/cam1")),
        web_port,
        "web",
    );
    common::signed_log::add_node_keys(&dir, &config);
    let config_arg = config.to_string_lossy().into_owned();
    let nvr = NvrProcess::spawn(&dir, &["run", "--config", &config_arg]);
    let _agent = NvrProcess::spawn_program(
        &dir,
        "nvr-sync",
        nvr_sync_bin(),
        &["run", "--config", &config_arg],
        &[("RUST_LOG", "info")],
    );
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    web_user(&dir, &config, &["add", "olga", "--role", "operator"]);
    let _web = start_web(&dir, &config, web_port);
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            sealed(&dir).len() >= 4
        }),
        "not four sealed segments: {}",
        nvr.stderr_tail(30)
    );
    // Whole seconds inside segments 1 and 2 (the page's fields are to the second).
    let segs = sealed(&dir);
    let from_ms = (segs[1].start_ms + 999) / 1000 * 1000;
    let to_ms = segs[2].end_ms / 1000 * 1000;

    // Wait until the agent has logged those segments (an export through the API succeeds).
    let api = client(&dir.join("web/tls.crt"), web_port);
    let base = format!("https://localhost:{web_port}");
    let status = api
        .post(format!("{base}/api/login"))
        .json(&json!({"user": "olga", "password": PASSWORD}))
        .send()
        .expect("login")
        .status();
    assert_eq!(status, StatusCode::OK);
    let export =
        format!("{base}/api/streams/cam/main/export.mp4?start_ms={from_ms}&end_ms={to_ms}");
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
            let r = api.get(&export).send().expect("export");
            r.status() == StatusCode::OK && r.bytes().is_ok()
        }),
        "the segments never got into the signed log"
    );

    let out_dir = dir.join("downloads");
    std::fs::create_dir_all(&out_dir).expect("downloads dir");
    let shot = dir.join("export.png");
    let out = Command::new("node")
        .arg(script_dir.join("export.mjs"))
        .arg(format!("{base}/"))
        .args(["olga", "alice", PASSWORD])
        .arg(from_ms.to_string())
        .arg(to_ms.to_string())
        .arg(&out_dir)
        .arg(&shot)
        .current_dir(script_dir)
        .output()
        .expect("run node (tests/run installs nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(result["operator_sees_export"], true, "{result}");
    assert_eq!(result["viewer_sees_export"], false, "{result}");
    assert_eq!(result["last"]["ok"], true, "{result}");
    assert_eq!(
        result["last"]["start_ms"].as_i64(),
        Some(from_ms),
        "{result}"
    );
    assert_eq!(result["last"]["end_ms"].as_i64(), Some(to_ms), "{result}");
    let files: Vec<&str> = result["downloads"]
        .as_array()
        .expect("downloads")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(files.len(), 2, "{result}");
    let mp4 = files.iter().find(|f| f.ends_with(".mp4")).expect("the MP4");
    let manifest = files
        .iter()
        .find(|f| f.ends_with(".manifest.json"))
        .expect("the manifest");
    let m: Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("JSON");
    assert_eq!(m["exported_by"], "olga", "{m}");

    let export_key = dir.join("web/export.pub").to_string_lossy().into_owned();
    let ok = run_nvr(
        &dir,
        &[
            "verify-export",
            mp4,
            manifest,
            "--config",
            &config_arg,
            "--export-key",
            &export_key,
        ],
        Duration::from_secs(60),
    );
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("verified: "), "{}", ok.stdout);
    if let Ok(keep) = std::env::var("NVR_WEB_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep.replace(".png", "-export.png"));
    }
    let probe = testkit::ffprobe(mp4);
    assert!(probe.frames > 0, "{probe:?}");
    assert!(probe.stderr_errors.trim().is_empty(), "{probe:?}");
}
