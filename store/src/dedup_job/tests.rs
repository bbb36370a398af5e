//! The de-duplication job with real segment files of two nodes in one catalog: a seal only marks,
//! the running job trims afterwards; marks left by a crash (after a seal, or in an open segment that
//! recovery seals) are done at the next start; a failed comparison stays marked; the seal's duration
//! for an overlapping segment, with and without the comparison in it.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::timeline::tests::{store, trim_events, write_segment, T0_MS};
use crate::{SegmentId, SegmentState, Store};

/// Generous: the machine running the tests may be loaded.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits (without blocking the runtime's thread) until `done` holds, or panics after [`DEADLINE`].
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn seal(w: crate::SegmentWriter) -> SegmentId {
    w.seal().expect("seal").expect("sealed").id
}

/// The `trim` event of the primary's 0..150 trimmed in favour of the standby's 100..250 (epoch 1).
fn assert_one_trim_of_a_by_s(st: &Store, seg_a: SegmentId, seg_s: SegmentId) {
    let events = trim_events(st);
    assert_eq!(events.len(), 1, "{events:#?}");
    let path_a = st.catalog().segment(seg_a).expect("q").expect("row").path;
    let path_s = st.catalog().segment(seg_s).expect("q").expect("row").path;
    assert!(
        events[0].starts_with(&format!(
            "50 frames of {path_a} (node-a, epoch none) trimmed, 90 kHz 360000..536401"
        )) && events[0].ends_with(&format!(
            "held by {path_s} (node-s, epoch 1), which is kept"
        )),
        "{}",
        events[0]
    );
}

/// With the job running (on this single-threaded runtime it cannot run while the test does not
/// await), the seal of the overlapping segment returns with its row marked and no trim yet; the job,
/// woken by the seal, records the trim afterwards and clears both marks.
#[tokio::test]
async fn a_seal_only_marks_and_the_running_job_trims_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = store(dir.path(), "node-a");
    let s = store(dir.path(), "node-s");
    let (stop_tx, stop_rx) = watch::channel(false);
    let job = s.start_dedup_job(stop_rx);
    wait_for("the job's first pass", || {
        job.status.snapshot().job.runs >= 1
    })
    .await;

    let seg_a = seal(write_segment(&a, 0..150, T0_MS, None, 0));
    let seg_s = seal(write_segment(&s, 100..250, T0_MS + 4_000 + 3, Some(1), 0));
    assert!(trim_events(&s).is_empty(), "the seal de-duplicated");
    assert_eq!(s.dedup_pending_count().expect("count"), 2);
    let stream = s.ensure_stream("cam", "main").expect("stream");
    let trims = s
        .catalog()
        .active_trims(stream, 0, i64::MAX)
        .expect("trims");
    assert!(trims.is_empty(), "{trims:?}");

    wait_for("the trim", || !trim_events(&s).is_empty()).await;
    assert_one_trim_of_a_by_s(&s, seg_a, seg_s);
    wait_for("the marks cleared", || {
        s.dedup_pending_count().expect("count") == 0
    })
    .await;
    stop_tx.send(true).expect("stop");
    job.task.await.expect("job");
    let status = job.status.snapshot();
    assert_eq!(status.pending, 0, "{status:?}");
    assert_eq!(status.job.last_error, None, "{status:?}");
    assert_eq!(status.job.state, base::job::JobState::Stopped);
    // Idempotent: another pass finds nothing to do and logs nothing again.
    s.catalog().mark_to_deduplicate(seg_a).expect("mark again");
    let pass = s.deduplicate_pending().expect("pass");
    assert_eq!((pass.segments, pass.trims), (1, 0));
    assert_eq!(trim_events(&s).len(), 1);
}

/// A crash after the seals, before any job ran (here: stores without the job, dropped): the marks
/// are in the catalog, and the job of the next process does them at its start. Then a crash in the
/// middle of a segment: recovery seals it (marked), and the job trims it.
#[tokio::test]
async fn marks_left_by_a_crash_are_done_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg_a, seg_s) = {
        let a = store(dir.path(), "node-a");
        let s = store(dir.path(), "node-s");
        let seg_a = seal(write_segment(&a, 0..150, T0_MS, None, 0));
        let seg_s = seal(write_segment(&s, 100..250, T0_MS + 4_000 + 3, Some(1), 0));
        (seg_a, seg_s)
    };
    let s = store(dir.path(), "node-s");
    assert!(trim_events(&s).is_empty());
    assert_eq!(s.dedup_pending_count().expect("count"), 2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let job = s.start_dedup_job(stop_rx);
    wait_for("the trim", || !trim_events(&s).is_empty()).await;
    assert_one_trim_of_a_by_s(&s, seg_a, seg_s);
    stop_tx.send(true).expect("stop");
    job.task.await.expect("job");
    assert_eq!(s.dedup_pending_count().expect("count"), 0);
    drop(s);

    // The standby again (epoch 2), killed while writing 300..400 over the primary's 300..400.
    let a = store(dir.path(), "node-a");
    let seg_a2 = seal(write_segment(&a, 300..400, T0_MS + 12_000, None, 0));
    let open = write_segment(
        &store(dir.path(), "node-s"),
        300..400,
        T0_MS + 12_000 + 3,
        Some(2),
        0,
    );
    let open_id = open.id();
    drop(open);
    let s = store(dir.path(), "node-s");
    let report = s.recover().expect("recover");
    assert_eq!(report.recovered.len(), 1, "{report:?}");
    let (stop_tx, stop_rx) = watch::channel(false);
    let job = s.start_dedup_job(stop_rx);
    wait_for("the trim of the recovered segment", || {
        trim_events(&s).len() == 2
    })
    .await;
    let stream = s.ensure_stream("cam", "main").expect("stream");
    let trims = s
        .catalog()
        .active_trims(stream, 0, i64::MAX)
        .expect("trims");
    assert!(
        trims
            .iter()
            .any(|t| t.segment_id == seg_a2 && t.kept_segment_id == open_id && t.frames == 100),
        "{trims:?}"
    );
    stop_tx.send(true).expect("stop");
    job.task.await.expect("job");
}

/// A comparison that fails (the other copy's file is gone) leaves that mark, reports the failure and
/// still clears the others; once the row says the file is missing the mark is cleared.
#[test]
fn a_failed_comparison_stays_marked_and_the_others_are_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = store(dir.path(), "node-a");
    let s = store(dir.path(), "node-s");
    let seg_a = seal(write_segment(&a, 0..150, T0_MS, None, 0));
    a.deduplicate_pending().expect("first pass");
    let row_a = a.catalog().segment(seg_a).expect("q").expect("row");
    std::fs::remove_file(a.absolute_path(&row_a.path)).expect("remove");
    let seg_s = seal(write_segment(&s, 100..250, T0_MS + 4_000 + 3, Some(1), 0));
    // A third segment that overlaps nothing of another node: done in the same pass.
    seal(write_segment(&s, 1000..1025, T0_MS + 60_000, Some(1), 0));
    let err = s.deduplicate_pending().expect_err("the missing file");
    let text = err.to_string();
    assert!(
        text.contains("1 segment(s) failed") && text.contains(&format!("segment {}", seg_s.0)),
        "{text}"
    );
    assert_eq!(s.dedup_pending_count().expect("count"), 1);
    s.catalog()
        .set_segment_state(seg_a, SegmentState::Missing, T0_MS + 700_000)
        .expect("missing");
    let pass = s.deduplicate_pending().expect("pass");
    assert_eq!((pass.segments, pass.trims), (1, 0));
    assert_eq!(s.dedup_pending_count().expect("count"), 0);
}

/// Benchmark (prints figures; `docs/storage.md`): two 60 s segments of 4 Mbit/s (1500 pictures of
/// 20 kB) of two nodes overlapping by 30 s. The seal of the second now returns without reading
/// either file; the job's comparison (750 frames trimmed) is what the seal used to do on top.
#[test]
fn seal_of_an_overlapping_segment_leaves_the_comparison_to_the_job() {
    const PICTURE_BYTES: usize = 20_000;
    let mut seal_ms = Vec::new();
    let mut compare_ms = Vec::new();
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = store(dir.path(), "node-a");
        let s = store(dir.path(), "node-s");
        seal(write_segment(&a, 0..1500, T0_MS, None, PICTURE_BYTES));
        let w = write_segment(&s, 750..2250, T0_MS + 30_000 + 3, Some(1), PICTURE_BYTES);
        let started = Instant::now();
        seal(w);
        seal_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(trim_events(&s).is_empty(), "round {round}");
        let started = Instant::now();
        let pass = s.deduplicate_pending().expect("pass");
        compare_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!((pass.segments, pass.trims), (2, 1), "round {round}");
        assert!(trim_events(&s)[0].starts_with("750 frames of "));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (seal_med, compare_med) = (median(&mut seal_ms), median(&mut compare_ms));
    println!(
        "seal of a 60 s, 30 MB segment overlapping another node's copy by 30 s (median of 3): \
         {seal_med:.1} ms now (seal only, the row marked); the job's comparison {compare_med:.1} ms; \
         before, the seal did both: {:.1} ms. All: seal {seal_ms:.1?} ms, comparison {compare_ms:.1?} ms",
        seal_med + compare_med
    );
}
