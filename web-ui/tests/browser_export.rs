//! Export from the page in Debian's headless chromium (`web-ui/tests/browser/export.mjs`,
//! playwright-core as in `browser.rs`) against real processes: `nvr run` recording camsim, the node's
//! sync agent keeping the signed log, `nvr-web run`. An operator sees the export controls, types a
//! range, clicks Export and gets two downloads, the MP4 and its manifest, which `nvr verify-export`
//! passes offline; a viewer does not see the controls. `NVR_WEB_SCREENSHOT=FILE.png` keeps the
//! screenshot.

mod common;

use std::time::Duration;

use common::{
    browser_scripts, client, one_camera, run_browser_script, start_recorder_and_agent, start_web,
    wait_sealed_segments, web_user, PASSWORD,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{run_nvr, wait_until, TestDir};

#[test]
fn an_operator_exports_from_the_page_and_the_downloads_verify() {
    browser_scripts();
    let dir = TestDir::new();
    let (_sim, _, web_port, config) = one_camera(&dir);
    common::signed_log::add_node_keys(&dir, &config);
    let (nvr, _agent) = start_recorder_and_agent(&dir, &config);
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    web_user(&dir, &config, &["add", "olga", "--role", "operator"]);
    let _web = start_web(&dir, &config, web_port);
    // Whole seconds inside segments 1 and 2 (the page's fields are to the second).
    let segs = wait_sealed_segments(&dir, 4, &nvr);
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
    let result = run_browser_script(
        "export.mjs",
        [
            format!("{base}/"),
            "olga".to_owned(),
            "alice".to_owned(),
            PASSWORD.to_owned(),
            from_ms.to_string(),
            to_ms.to_string(),
            out_dir.to_string_lossy().into_owned(),
            shot.to_string_lossy().into_owned(),
        ],
        String::new,
    );
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
    let config_arg = config.to_string_lossy().into_owned();
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
