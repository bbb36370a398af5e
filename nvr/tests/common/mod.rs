//! Shared set-up of the recorder's tests: the workspace's test rig (`testkit`, re-exported here)
//! and what the tests read back from a recorder with its data in `<dir>/data`: its segments, its
//! status file, and whether a recorded segment decodes.
//!
//! Not every test file uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod synthetic;

pub use testkit::*;

use std::path::Path;
use std::sync::Arc;

use base::clock::SystemClock;
use store::{Reader, SegmentRow, SegmentState};

/// The start of a cluster file with the one primary node `test-a` (data in `<dir>/data`), whose
/// identity file (`<dir>/identity/identity.toml`, naming it) is written so that `nvr` picks the node
/// by its identity as on an installed node: segments of `segment_s`, and `after_ingest` right after
/// the `[ingest]` table's lines (more of them, or other tables). Cameras and other nodes follow.
pub fn node_config(dir: &TestDir, segment_s: u64, after_ingest: &str) -> String {
    named_node_config(dir, "test-a", "identity", "data", segment_s, after_ingest)
}

/// [`node_config`] of the primary node `name`, its identity file in `<dir>/<identity>` and its data
/// in `<dir>/<data>`.
pub fn named_node_config(
    dir: &TestDir,
    name: &str,
    identity: &str,
    data: &str,
    segment_s: u64,
    after_ingest: &str,
) -> String {
    dir.write(
        format!("{identity}/identity.toml"),
        format!("node = \"{name}\"\n"),
    );
    format!(
        r#"identity_dir = "{}"

[recording]
segment_duration_s = {segment_s}
flush_interval_ms = 500

[ingest]
connect_timeout_ms = 3000
frame_timeout_ms = 3000
backoff_initial_ms = 300
backoff_max_ms = 2000
{after_ingest}

[[nodes]]
name = "{name}"
role = "primary"
data_dir = "{}"
"#,
        dir.join(identity).display(),
        dir.join(data).display()
    )
}

/// `nvr run --config CONFIG`.
pub fn start_nvr(dir: &TestDir, config: &Path) -> NvrProcess {
    let config = config.to_string_lossy().into_owned();
    NvrProcess::spawn(dir, &["run", "--config", &config])
}

/// The segments of `camera`'s main stream in `<dir>/data` (none until the recorder made its
/// catalog and the stream).
pub fn segments(dir: &TestDir, camera: &str) -> Vec<SegmentRow> {
    let Some(store) =
        Reader::open_if_ready(&dir.join("data"), Arc::new(SystemClock)).expect("open catalog")
    else {
        return Vec::new();
    };
    match store.find_stream(camera, "main").expect("find stream") {
        Some(id) => store.stream_segments(id).expect("segments"),
        None => Vec::new(),
    }
}

/// How many of `camera`'s segments are sealed.
pub fn sealed_count(dir: &TestDir, camera: &str) -> usize {
    segments(dir, camera)
        .iter()
        .filter(|s| s.state == SegmentState::Sealed)
        .count()
}

/// The recorder's status file, `<dir>/data/status.json` (`Null` while there is none).
pub fn status(dir: &TestDir) -> serde_json::Value {
    std::fs::read(dir.join("data/status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// `camera`'s entry in the recorder's status file (`Null` while there is none).
pub fn stream_status(dir: &TestDir, camera: &str) -> serde_json::Value {
    status(dir)["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["camera"] == camera).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Probes the recorded segment `s` in `<dir>/data`: it decodes without an error and ffprobe counts
/// the catalog's frames. The report, for further checks.
pub fn probe_segment(dir: &TestDir, s: &SegmentRow) -> FfprobeReport {
    let probe = ffprobe(dir.join("data").join(&s.path));
    assert!(
        probe.stderr_errors.is_empty(),
        "{}: decode errors: {}",
        s.path,
        probe.stderr_errors
    );
    assert_eq!(
        probe.frames as i64, s.frames,
        "{}: ffprobe frames vs catalog",
        s.path
    );
    probe
}
