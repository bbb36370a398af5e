//! One browser test: Debian's headless chromium, driven by `playwright-core` from npm
//! (`web-ui/tests/browser/`, installed by `tests/run` with `npm ci`), logs in through the page (a wrong
//! password first shows an error) and sees a live tile play: the video's `currentTime` advances; the
//! timeline tab draws the recorded spans. `NVR_WEB_SCREENSHOT=FILE.png` keeps the screenshots.

mod common;

use common::{browser_scripts, one_camera, run_browser_script, start_web, web_user, PASSWORD};
use serde_json::Value;
use testkit::{NvrProcess, TestDir};

#[test]
fn chromium_logs_in_and_a_live_tile_plays() {
    browser_scripts();
    let dir = TestDir::new();
    let (_sim, cam_port, web_port, config) = one_camera(&dir);
    // A sub stream that is not recorded (the recorder opens it while it has live viewers): the grid
    // shows it, a click shows the main stream.
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[cameras.streams.sub]\nurl = \"rtsp://127.0.0.1:{cam_port}/cam1\"\nrecord = false\n"
    ));
    std::fs::write(&config, text).expect("config");
    let _nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    let _web = start_web(&dir, &config, web_port);
    let shot = dir.join("live.png");
    let result = run_browser_script(
        "live.mjs",
        [
            format!("https://localhost:{web_port}/"),
            "alice".to_owned(),
            PASSWORD.to_owned(),
            shot.to_string_lossy().into_owned(),
        ],
        String::new,
    );
    assert!(
        result["wrong_password_error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong user name or password")),
        "{result}"
    );
    assert_eq!(
        result["login_hidden"], true,
        "the login form is gone: {result}"
    );
    assert_eq!(result["tiles"], 4, "{result}");
    assert_eq!(
        result["grid_stream"], "cam/sub",
        "the grid shows sub streams: {result}"
    );
    assert_eq!(
        (&result["focused_stream"], &result["focused_tiles"]),
        (&Value::from("cam/main"), &Value::from(1)),
        "{result}"
    );
    let samples: Vec<f64> = result["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(samples.len(), 4, "{result}");
    assert!(
        samples.windows(2).all(|w| w[1] > w[0]),
        "currentTime does not advance: {samples:?}"
    );
    assert!(
        result["timeline"]
            .as_str()
            .is_some_and(|t| t.contains("segments")),
        "{result}"
    );
    assert!(result["recorded_spans"].as_u64() >= Some(1), "{result}");
    // Latency from camsim's SEI send time to the rendered frame.
    let mut latencies: Vec<f64> = result["latencies_ms"]
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        latencies.len() >= 50,
        "{} frames measured: {result}",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "live latency in chromium over {} frames: p50 {p50:.0} ms, p99 {p99:.0} ms, max {:.0} ms",
        latencies.len(),
        latencies[latencies.len() - 1]
    );
    assert!(
        p50 > 0.0,
        "a frame shown before it was sent: clocks or stamps wrong ({p50} ms)"
    );
    assert!(
        p99 < 1000.0,
        "live latency p99 {p99:.0} ms (issue 11: under 1 s)"
    );
    assert!(std::fs::metadata(&shot)
        .map(|m| m.len() > 0)
        .unwrap_or(false));
    if let Ok(keep) = std::env::var("NVR_WEB_SCREENSHOT") {
        let _ = std::fs::copy(&shot, &keep);
        let _ = std::fs::copy(
            dir.join("live-timeline.png"),
            keep.replace(".png", "-timeline.png"),
        );
    }
}
