//! Alarms on a stream's timeline against real processes (`common::outage`): camsim killed with
//! `kill -9` raises a real camera-down alarm; the timeline answer of that stream lists it, open while
//! the camera is down (acknowledged by an admin: by whom), ended once it records again, from the last
//! frame before the outage to about where recording goes on; a range before or after it does not list
//! it, one that overlaps it by a millisecond does; the timeline of a camera that stayed up lists none.

mod common;

use common::now_ms;
use common::outage::{sealed, Outage};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn ids(answer: &Value) -> Vec<String> {
    answer["alarms"]
        .as_array()
        .unwrap_or_else(|| panic!("no alarms in the answer: {answer}"))
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_camera_outage_is_an_alarm_on_its_streams_timeline_within_its_range_only() {
    let mut rig = Outage::start(true);
    let before_ms = sealed(&rig.dir, "cam")[0].start_ms;
    let open = rig.camera_down();
    let id = open["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (&open["category"], &open["subject"], &open["node"]),
        (&json!("camera_down"), &json!("cam/main"), &json!("node-a")),
        "{open}"
    );
    assert!(
        open["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cam/main")),
        "{open}"
    );
    assert_eq!(open["acknowledged"], Value::Null, "{open}");
    let start = open["start_ms"].as_i64().expect("start_ms");

    // An admin acknowledges it while it lasts: the timeline says by whom.
    let acked: Value = rig
        .admin
        .post(format!("https://localhost:{}/api/alarms/ack", rig.web_port))
        .header("x-csrf-token", &rig.csrf)
        .json(&json!({"id": id}))
        .send()
        .expect("ack")
        .json()
        .expect("ack answer");
    assert_eq!(acked["acknowledged"]["by"], "root", "{acked}");
    let now = now_ms();
    let (_, answer) = rig.timeline("cam", start, now + 1_000);
    let listed = answer["alarms"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("{id} not on the timeline: {answer}"));
    assert_eq!(listed["acknowledged"]["by"], "root", "{listed}");
    assert_eq!(listed["end_ms"], Value::Null, "still open: {listed}");
    assert_eq!(answer["alarm_problems"], json!([]), "{answer}");

    let ended = rig.camera_back(&open, 6_000);
    let end = ended["end_ms"].as_i64().expect("end_ms");
    assert_eq!(ended["start_ms"].as_i64(), Some(start), "{ended}");
    // It starts at the last frame received: within the last second of the run before the outage.
    let run = sealed(&rig.dir, "cam")[0].run_id;
    assert!(
        testkit::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            sealed(&rig.dir, "cam").iter().any(|s| s.run_id != run)
        }),
        "no recording after the outage"
    );
    let segs = sealed(&rig.dir, "cam");
    let last_end = segs
        .iter()
        .filter(|s| s.run_id == run)
        .map(|s| s.end_ms)
        .max()
        .expect("segments");
    assert!(
        (last_end - 1_500..=last_end + 100).contains(&start),
        "alarm starts at {start}, recording ended at {last_end}"
    );
    let after = segs
        .iter()
        .find(|s| s.run_id != run && s.start_ms > last_end)
        .expect("a segment after the outage");
    // It ends once the recorder is connected again (the watch looks every second): after the
    // recording before the outage, before or shortly after the first segment after it (its first key
    // frame comes a moment after the connection).
    assert!(
        end > start && (last_end + 1_000..=after.start_ms + 5_000).contains(&end),
        "alarm {start}..{end}, recording went on at {}",
        after.start_ms
    );

    eprintln!(
        "camera_down alarm {start}..{end}: starts {} ms before the recording before the outage ended, \
         ends {} ms after recording went on",
        last_end - start,
        end - after.start_ms
    );

    // Within the range, and not outside it.
    let listed = |from: i64, to: i64| {
        let (status, answer) = rig.timeline("cam", from, to);
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids(&answer).contains(&id)
    };
    assert!(listed(before_ms, now_ms()));
    assert!(
        listed(start - 60_000, start + 1),
        "overlapping its first millisecond"
    );
    assert!(
        listed(end - 1, end + 60_000),
        "overlapping its last millisecond"
    );
    assert!(listed(start + 1, end - 1), "inside it");
    assert!(
        !listed(start - 60_000, start),
        "a range ending where it starts"
    );
    assert!(!listed(end, end + 60_000), "a range starting where it ends");

    // The camera that stayed up has no alarm on its timeline.
    let (status, answer) = rig.timeline("cam2", before_ms, now_ms());
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["spans"].as_array().is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
    assert_eq!(ids(&answer), Vec::<String>::new(), "{answer}");
    rig.nvr.sigterm();
    rig.nvr.expect_clean_exit(Duration::from_secs(30));
}
