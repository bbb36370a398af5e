//! The recorder process and the store's de-duplication job: overlapping copies of two nodes sealed
//! into its catalog before it started (as a recorder and a sync agent killed right after their seals
//! leave them: sealed, marked, not compared) are de-duplicated by the `nvr run` that follows, and the
//! job's status (`dedup` in `status.json`) says so. The real `nvr` binary, real files, real signals.

use testkit as common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base::clock::{Clock, SystemClock};
use common::{wait_until, NvrProcess, TestDir};
use store::test_support::{self, TestVideo};
use store::{Reader, SegmentId, Store};

/// Seals pictures `range` (25 fps, 1 s fragments) of `cam/main` starting at `start_ms` under `epoch`
/// through `store`, which runs no de-duplication job.
fn seal_pictures(
    store: &Arc<Store>,
    range: std::ops::Range<u32>,
    start_ms: i64,
    epoch: Option<u64>,
) -> SegmentId {
    let mut w = test_support::create_segment(store, &TestVideo::synthetic(), start_ms, epoch);
    let pictures: Vec<(Vec<u8>, bool)> = range
        .map(|n| (test_support::picture(n, 0), n % 25 == 0))
        .collect();
    test_support::append_pictures(&mut w, &pictures, 25);
    w.seal().expect("seal").expect("sealed").id
}

/// One primary `test-a` without cameras of its own (the stream above is another node's copy and its
/// own takeover), and its identity file.
fn write_config(dir: &TestDir) -> PathBuf {
    dir.write("identity/identity.toml", "node = \"test-a\"\n");
    dir.write(
        "nvr.toml",
        format!(
            r#"identity_dir = "{}"

[[nodes]]
name = "test-a"
role = "primary"
data_dir = "{}"

[[nodes]]
name = "test-b"
role = "primary"
data_dir = "/nonexistent/test-b"

[[cameras]]
name = "cam"
node = "test-b"
[cameras.streams.main]
url = "rtsp://127.0.0.1:9/cam"
"#,
            dir.join("identity").display(),
            dir.join("data").display()
        ),
    )
}

fn status(dir: &TestDir) -> serde_json::Value {
    std::fs::read(dir.join("data/status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn trim_events(data: &std::path::Path) -> Vec<String> {
    Reader::open(data, Arc::new(SystemClock))
        .expect("reader")
        .events(0, 10_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "trim")
        .map(|e| e.message)
        .collect()
}

#[test]
fn the_recorder_de_duplicates_what_a_crash_left_marked_and_reports_its_job() {
    let dir = TestDir::new();
    let data = dir.join("data");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Ten minutes ago (retention keeps it): test-b recorded pictures 0..150 without an epoch, then
    // test-a took over under epoch 1 and recorded 100..250; pictures 100..150 are in both copies.
    let t0_ms = clock.now_utc_ms() - 600_000;
    let (seg_b, seg_a) = {
        let b = Arc::new(Store::open(&data, "test-b", clock.clone()).expect("store b"));
        let a = Arc::new(Store::open(&data, "test-a", clock.clone()).expect("store a"));
        let seg_b = seal_pictures(&b, 0..150, t0_ms, None);
        let seg_a = seal_pictures(&a, 100..250, t0_ms + 4_000 + 3, Some(1));
        assert_eq!(a.dedup_pending_count().expect("count"), 2);
        (seg_b, seg_a)
    };
    assert!(trim_events(&data).is_empty());

    let config = write_config(&dir);
    let config = config.to_string_lossy().into_owned();
    let mut nvr = NvrProcess::spawn(&dir, &["run", "--config", &config]);
    let done = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let s = status(&dir);
        s["dedup"]["runs"].as_u64().unwrap_or(0) >= 1 && s["dedup"]["pending"] == 0
    });
    assert!(
        done,
        "status: {}\n{}",
        status(&dir)["dedup"],
        nvr.stderr_tail(30)
    );
    let events = trim_events(&data);
    assert_eq!(events.len(), 1, "{events:#?}");
    let reader = Reader::open(&data, clock.clone()).expect("reader");
    let path = |id: SegmentId| {
        reader
            .stream_segments(
                reader
                    .find_stream("cam", "main")
                    .expect("q")
                    .expect("stream"),
            )
            .expect("segments")
            .into_iter()
            .find(|r| r.id == id)
            .expect("row")
            .path
    };
    assert!(
        events[0].starts_with(&format!(
            "50 frames of {} (test-b, epoch none) trimmed",
            path(seg_b)
        )) && events[0].ends_with(&format!(
            "held by {} (test-a, epoch 1), which is kept",
            path(seg_a)
        )),
        "{}",
        events[0]
    );
    let st = status(&dir)["dedup"].clone();
    assert_eq!(st["name"], "dedup", "{st}");
    assert!(st["last_error"].is_null(), "{st}");

    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
    assert_eq!(status(&dir)["dedup"]["state"], "stopped");
    assert_eq!(trim_events(&data).len(), 1);
}
