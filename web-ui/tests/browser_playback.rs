//! Timeline playback in Debian's headless chromium (`web-ui/tests/browser/playback.mjs`, playwright-core
//! as in `browser.rs`): camsim recorded in 2 s segments with a real 10 s camera outage. The timeline
//! draws the outage as a gap at the catalog's times and place; a click on the bar plays from the time
//! clicked, the first frame shown being the recording's frame at that time (± 1 frame, told by its camsim
//! stamp); playback crosses a segment boundary without a stall (frames in sequence, none held long);
//! one frame step shows the next frame; at 4× it plays to the outage and goes on after it. The stream's
//! events are drawn at the catalog's times (the outage's camera error among them); the + button halves
//! the visible span around its middle and the mouse wheel doubles it. `NVR_WEB_SCREENSHOT=FILE.png` keeps the
//! screenshot.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    browser_scripts, one_camera, run_browser_script, sealed_segments, start_camsim, start_web,
    wait_sealed_segments, web_user, PASSWORD,
};
use serde_json::Value;
use testkit::{run_nvr, wait_until, NvrProcess, TestDir};

fn reader(dir: &TestDir) -> Option<(store::Reader, store::StreamId)> {
    let r = store::Reader::open(&dir.join("data"), Arc::new(base::clock::SystemClock)).ok()?;
    let id = r.find_stream("cam", "main").ok()??;
    Some((r, id))
}

#[test]
fn a_click_on_the_timeline_plays_from_that_time_across_segments_and_the_outage_is_a_gap() {
    browser_scripts();
    let dir = TestDir::new();
    let (mut sim, cam_port, web_port, config) = one_camera(&dir);
    let mut nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
    // An operator, so that the screenshots show the export controls too.
    web_user(&dir, &config, &["add", "alice", "--role", "operator"]);
    let _web = start_web(&dir, &config, web_port);
    wait_sealed_segments(&dir, 4, &nvr);
    // A real 10 s outage.
    sim.kill9();
    std::thread::sleep(Duration::from_secs(10));
    let (_sim2, _) = start_camsim(&dir, Some(cam_port));
    let run = sealed_segments(&dir)[0].run_id;
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            sealed_segments(&dir)
                .iter()
                .filter(|s| s.run_id != run)
                .count()
                >= 2
        }),
        "no recording after the outage: {}",
        nvr.stderr_tail(30)
    );
    let segs = sealed_segments(&dir);
    let (r, id) = reader(&dir).expect("catalog");
    let first = segs[0].start_ms;
    let outage: Vec<store::Gap> = r
        .gaps_in_range(id, first, segs[segs.len() - 1].end_ms)
        .expect("gaps")
        .into_iter()
        .filter(|g| g.end_ms - g.start_ms >= 9_000)
        .collect();
    assert_eq!(outage.len(), 1, "{outage:?}");
    // Click 700 ms into the second segment: playback crosses into the third 1.3 s later.
    let (seg, boundary_ms) = (&segs[1], segs[2].start_ms);
    assert_eq!(seg.end_ms, boundary_ms, "{segs:?}");
    let t_ms = seg.start_ms + 700;

    let shot = dir.join("playback.png");
    let result = run_browser_script(
        "playback.mjs",
        [
            format!("https://localhost:{web_port}/"),
            "alice".to_owned(),
            PASSWORD.to_owned(),
            t_ms.to_string(),
            shot.to_string_lossy().into_owned(),
        ],
        String::new,
    );

    // The outage is drawn as a gap with the catalog's times, at its place on the bar.
    let bar = (
        result["bar"]["start"].as_f64().expect("bar start"),
        result["bar"]["end"].as_f64().expect("bar end"),
    );
    let gap = result["gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .find(|g| g["start_ms"].as_i64() == Some(outage[0].start_ms))
        .unwrap_or_else(|| panic!("no gap drawn at {:?}: {result}", outage[0]));
    assert_eq!(gap["end_ms"].as_i64(), Some(outage[0].end_ms), "{gap}");
    let left = gap["left"].as_f64().expect("left");
    let want = (outage[0].start_ms as f64 - bar.0) / (bar.1 - bar.0) * 100.0;
    assert!(
        (left - want).abs() < 0.01,
        "gap drawn at {left}%, belongs at {want}%"
    );

    // The first frame shown is the recording's frame at the clicked time, ± 1 frame. The recording's
    // clock: the segment's start_ms is its first frame's time; camsim's send time of that frame (from
    // `nvr frames`) gives the offset between the two clocks.
    let requested = result["requested_ms"].as_i64().expect("requested_ms");
    assert!(
        (requested - t_ms).abs() < 1_000,
        "clicked {requested}, aimed at {t_ms}"
    );
    let listing = run_nvr(
        &dir,
        &[
            "frames",
            &dir.join("data").join(&seg.path).to_string_lossy(),
        ],
        Duration::from_secs(60),
    );
    let first_send_us: i64 = listing
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no stamp: {}", listing.stdout));
    let offset_ms = seg.start_ms as f64 - first_send_us as f64 / 1000.0;
    let frame_ms = (seg.end_ms - seg.start_ms) as f64 / seg.frames as f64;
    let frames: Vec<&Value> = result["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter(|f| f["seq"].is_u64())
        .collect();
    let shown = frames.first().expect("a stamped frame shown");
    let shown_ms = shown["send_us"].as_f64().expect("send_us") / 1000.0 + offset_ms;
    assert!(
        (shown_ms - requested as f64).abs() <= frame_ms + 1.0,
        "clicked {requested}, first frame shown recorded at {shown_ms:.1} (frame {frame_ms:.1} ms)"
    );

    // Across the segment boundary: frames in sequence, none held on screen long (a stall).
    let crossing: Vec<&&Value> = frames
        .iter()
        .filter(|f| {
            let w = f["wall_ms"].as_f64().unwrap_or(0.0);
            (w - boundary_ms as f64).abs() < 1_000.0
        })
        .collect();
    assert!(
        crossing
            .iter()
            .any(|f| f["wall_ms"].as_f64() < Some(boundary_ms as f64))
            && crossing
                .iter()
                .any(|f| f["wall_ms"].as_f64() > Some(boundary_ms as f64)),
        "playback did not cross the boundary at {boundary_ms}: {result}"
    );
    let mut held_ms: f64 = 0.0;
    for w in crossing.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            b["seq"].as_u64() > a["seq"].as_u64(),
            "frames out of order at the boundary: {a} {b}"
        );
        held_ms =
            held_ms.max(b["at_ms"].as_f64().unwrap_or(0.0) - a["at_ms"].as_f64().unwrap_or(0.0));
    }
    eprintln!(
        "playback across a segment boundary: {} frames within 1 s of it, longest on screen {held_ms:.0} ms",
        crossing.len()
    );
    assert!(
        held_ms < 500.0,
        "a frame stayed {held_ms:.0} ms at the boundary (a stall)"
    );

    // 4×; one frame forward while paused.
    assert_eq!(result["rate"].as_f64(), Some(4.0), "{result}");
    let (before, after) = (&result["step_before"], &result["step_after"]);
    assert_eq!(
        after["seq"].as_u64(),
        before["seq"].as_u64().map(|s| s + 1),
        "one frame step: {before} → {after}"
    );
    // At the end of the recording before the outage, playback goes on where recording does.
    let after_gap = segs
        .iter()
        .find(|s| s.start_ms >= outage[0].end_ms)
        .expect("a segment after the outage");
    assert_eq!(
        result["continued"]["at"].as_i64(),
        Some(after_gap.start_ms),
        "{}",
        result["continued"]
    );
    assert!(
        result["continued"]["frame"]["wall_ms"].as_f64() >= Some(after_gap.start_ms as f64),
        "{}",
        result["continued"]
    );
    // The stream's events (the catalog's, in the recordings answer) are drawn at their times; the
    // outage's camera error is among them, at its place on the bar.
    let drawn: Vec<(i64, String, f64)> = result["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["time_ms"].as_i64().unwrap_or(-1),
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["left"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    let catalog: Vec<(i64, String)> = r
        .stream_events_in_range(id, bar.0 as i64, bar.1 as i64, 1000)
        .expect("events")
        .into_iter()
        .map(|e| (e.time_ms, e.kind))
        .collect();
    let drawn_kinds: Vec<(i64, String)> = drawn.iter().map(|(t, k, _)| (*t, k.clone())).collect();
    assert_eq!(drawn_kinds, catalog, "events drawn vs the catalog's");
    let (t, _, left) = drawn
        .iter()
        .find(|(t, k, _)| {
            k == "stream_error" && (outage[0].start_ms..=outage[0].end_ms).contains(t)
        })
        .unwrap_or_else(|| panic!("no camera error drawn in the outage {outage:?}: {drawn:?}"));
    let want = (*t as f64 - bar.0) / (bar.1 - bar.0) * 100.0;
    assert!(
        (left - want).abs() < 0.01,
        "event drawn at {left}%, belongs at {want}%"
    );
    // Zoom: + halves the visible span around its middle, the wheel doubles it again.
    let zoom = &result["zoom"];
    let span = |v: &Value| {
        let (a, b) = (
            v["start"].as_f64().unwrap_or(0.0),
            v["end"].as_f64().unwrap_or(0.0),
        );
        (b - a, (a + b) / 2.0)
    };
    let (from_span, from_mid) = span(&zoom["from"]);
    let (in_span, in_mid) = span(&zoom["zoom_in"]);
    let (out_span, _) = span(&zoom["wheel_out"]);
    assert_eq!(from_span, 600_000.0, "{zoom}");
    assert_eq!(in_span, 300_000.0, "{zoom}");
    assert!((in_mid - from_mid).abs() <= 1.0, "{zoom}");
    assert_eq!(out_span, 600_000.0, "{zoom}");
    assert_eq!(zoom["label"], "10 min", "{zoom}");
    if let Ok(keep) = std::env::var("NVR_WEB_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep.replace(".png", "-playback.png"));
        let _ = std::fs::copy(
            dir.join("playback-zoom.png"),
            keep.replace(".png", "-timeline-zoom.png"),
        );
    }
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
}
