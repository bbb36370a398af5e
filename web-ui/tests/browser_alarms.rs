//! Alarms on the timeline in Debian's headless chromium (`web-ui/tests/browser/alarms.mjs`,
//! playwright-core as in `browser.rs`): a real camera outage (`common::outage`) raises a camera-down
//! alarm; while it lasts, its mark runs to the bar's right edge; once it ended, the page draws it as its
//! own mark on the bar, at the timeline answer's times and place, with a hover text naming it and
//! saying nobody acknowledged it, and the summary line counts it; a click on the mark plays from the
//! alarm's start (the first frame shown is within a second of it).
//! `NVR_WEB_SCREENSHOT=FILE.png` keeps the screenshot.

mod common;

use common::outage::Outage;
use common::{browser_scripts, now_ms, run_browser_script, PASSWORD};
use serde_json::Value;

/// Runs `browser/alarms.mjs` as alice on alarm `id`; its JSON line.
fn run_page(rig: &Outage, id: &str, shot: &str) -> Value {
    run_browser_script(
        "alarms.mjs",
        [
            format!("https://localhost:{}/", rig.web_port),
            "alice".to_owned(),
            PASSWORD.to_owned(),
            id.to_owned(),
            rig.dir.join(shot).display().to_string(),
        ],
        String::new,
    )
}

#[test]
fn an_alarm_is_a_mark_on_the_timeline_and_a_click_plays_from_its_start() {
    browser_scripts(); // playwright-core is there before the rig starts
    let mut rig = Outage::start(false);
    let open = rig.camera_down();
    let id = open["id"].as_str().expect("id").to_owned();
    let start = open["start_ms"].as_i64().expect("start");

    // While the camera is down the alarm is open: its mark runs to the bar's right edge, and a click
    // on it plays from its start too.
    let result = run_page(&rig, &id, "alarms-open.png");
    let mark = result["alarms"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("no mark for the open alarm {id}: {result}"));
    assert_eq!(mark["open"], true, "{mark}");
    assert_eq!(mark["start_ms"].as_i64(), Some(start), "{mark}");
    let gap = mark["right_gap_px"].as_f64().expect("right_gap_px");
    assert!(
        gap.abs() < 0.5,
        "the open alarm ends {gap} px before the right edge: {mark}"
    );
    assert!(
        mark["title"]
            .as_str()
            .is_some_and(|t| t.contains("still open")),
        "{mark}"
    );
    assert_eq!(result["requested_ms"].as_i64(), Some(start), "{result}");

    let alarm = rig.camera_back(&open, 6_000);
    let end = alarm["end_ms"].as_i64().expect("end");
    // Everything the timeline answer lists is what the page should draw.
    let (_, answer) = rig.timeline("cam", now_ms() - 600_000, now_ms());
    let listed = answer["alarms"].as_array().map_or(0, Vec::len);
    let result = run_page(&rig, &id, "alarms.png");

    // Its own mark, at the answer's times and place.
    let bar = (
        result["bar"]["start"].as_f64().expect("bar start"),
        result["bar"]["end"].as_f64().expect("bar end"),
    );
    let marks = result["alarms"].as_array().expect("alarms");
    assert_eq!(marks.len(), listed, "one mark per alarm listed: {result}");
    let mark = marks
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no mark for {id}: {result}"));
    assert_eq!(mark["classes"], "alarm", "not acknowledged: {mark}");
    assert_eq!(
        (
            mark["start_ms"].as_i64(),
            mark["end_ms"].as_i64(),
            &mark["open"]
        ),
        (Some(start), Some(end), &Value::Bool(false)),
        "{mark}"
    );
    let left = mark["left"].as_f64().expect("left");
    let want = (start as f64 - bar.0) / (bar.1 - bar.0) * 100.0;
    assert!(
        (left - want).abs() < 0.01,
        "mark at {left}%, belongs at {want}%"
    );
    let title = mark["title"].as_str().expect("title");
    assert!(
        title.contains("camera_down") && title.contains("not acknowledged"),
        "hover text: {title}"
    );
    let summary = result["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&format!(
            "{listed} alarm{}",
            if listed == 1 { "" } else { "s" }
        )),
        "summary: {summary}"
    );

    // A click on the mark plays from the alarm's start.
    assert_eq!(result["requested_ms"].as_i64(), Some(start), "{result}");
    let shown = result["first_frame"]["wall_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no frame shown: {result}"));
    assert!(
        (shown - start as f64).abs() < 1_000.0,
        "the alarm starts at {start}, the first frame shown is at {shown:.0}: {result}"
    );
    eprintln!(
        "alarm {id}: {:.1} s, drawn at {left:.2}%; the first frame shown after the click is {:.0} ms from its start",
        (end - start) as f64 / 1000.0,
        shown - start as f64
    );
    if let Ok(keep) = std::env::var("NVR_WEB_SCREENSHOT") {
        let _ = std::fs::copy(
            rig.dir.join("alarms.png"),
            keep.replace(".png", "-alarms.png"),
        );
        let _ = std::fs::copy(
            rig.dir.join("alarms-open.png"),
            keep.replace(".png", "-alarms-open.png"),
        );
    }
    rig.nvr.sigterm();
    rig.nvr
        .expect_clean_exit(std::time::Duration::from_secs(30));
}
