//! De-duplication of real segment files written by the store: two nodes' overlapping copies in one
//! catalog, a mirrored copy sealed into a standby's catalog, both nodes' timelines, retention.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base::clock::{Clock, ManualClock};

use super::*;
use crate::frame::picture_hash;
use crate::test_support::{self, TestVideo};
use crate::MirrorInfo;

pub(crate) const T0_MS: i64 = 1_700_000_000_000;

/// Picture `n` of the test camera: one length-prefixed slice (an IDR every 25 pictures).
fn picture(n: u32) -> Vec<u8> {
    test_support::picture(n, 0)
}

pub(crate) fn store(dir: &Path, node: &str) -> Arc<Store> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0_MS + 600_000));
    Arc::new(Store::open(dir, node, clock).expect("store"))
}

/// Records pictures `first..last` (25 fps, 1 s fragments) into one sealed segment of `cam/main`
/// starting at `start_ms`, under `epoch`, then runs the de-duplication job's pass.
fn record(
    store: &Arc<Store>,
    first: u32,
    last: u32,
    start_ms: i64,
    epoch: Option<u64>,
) -> SegmentId {
    let w = write_segment(store, first..last, start_ms, epoch, 0);
    let id = w.seal().expect("seal").expect("sealed").id;
    store.deduplicate_pending().expect("de-duplication pass");
    id
}

/// Writes pictures `range` (25 fps, 1 s fragments, each padded to `size_bytes`) into one open
/// segment of `cam/main` starting at `start_ms`, under `epoch`: sealing it is the caller's.
pub(crate) fn write_segment(
    store: &Arc<Store>,
    range: std::ops::Range<u32>,
    start_ms: i64,
    epoch: Option<u64>,
    size_bytes: usize,
) -> crate::SegmentWriter {
    let mut w = test_support::create_segment(store, &TestVideo::synthetic(), start_ms, epoch);
    let pictures: Vec<(Vec<u8>, bool)> = range
        .map(|n| (test_support::picture(n, size_bytes), n % 25 == 0))
        .collect();
    test_support::append_pictures(&mut w, &pictures, 25);
    w
}

/// The picture numbers of `stream`'s timeline in `store`, in timeline order.
fn timeline_pictures(store: &Store) -> Vec<u32> {
    let names: HashMap<String, u32> = (0..1_000)
        .map(|n| (base::hex::encode(&picture_hash(&picture(n), false)), n))
        .collect();
    let stream = store.ensure_stream("cam", "main").expect("stream");
    let mut out = Vec::new();
    for part in store.timeline(stream, 0, i64::MAX).expect("timeline") {
        let frames = store.file_frames(&part.segment).expect("frames");
        out.extend(
            frames
                .iter()
                .filter(|f| part.keeps(f.offset_90k))
                .map(|f| names[&f.id.hash]),
        );
    }
    out
}

pub(crate) fn trim_events(store: &Store) -> Vec<String> {
    store
        .catalog()
        .events(0, 1_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "trim")
        .map(|e| e.message)
        .collect()
}

/// Mirrors `from`'s sealed segment `id` into `to` and runs `to`'s de-duplication pass.
fn mirror(from: &Store, to: &Store, id: SegmentId) {
    mirror_sealed(from, to, id);
    to.deduplicate_pending().expect("de-duplication pass");
}

/// Mirrors `from`'s sealed segment `id` into `to` (staging, then the seal), as the sync agent does.
pub(crate) fn mirror_sealed(from: &Store, to: &Store, id: SegmentId) {
    let row = from.catalog().segment(id).expect("query").expect("row");
    let data = std::fs::read(from.absolute_path(&row.path)).expect("read");
    to.mirror_append(&row.node, &row.path, 0, &data, true)
        .expect("append");
    let info = MirrorInfo {
        camera: "cam".into(),
        stream: "main".into(),
        start_ms: row.start_ms,
        video_codec: row.video_codec.clone(),
        width: 64,
        height: 64,
        audio_codec: None,
        epoch: row.epoch,
    };
    let sha = row.sha256.clone().expect("sha");
    to.mirror_seal(
        &row.node,
        &row.path,
        &info,
        data.len() as u64,
        &sha,
        row.end_ms,
        row.frames,
    )
    .expect("seal");
}

/// A primary recorded pictures 0..150 without an epoch; the standby took over under epoch 1 and
/// recorded 100..250 (its clock 3 ms ahead). Sealing the second segment trims pictures 100..150 from
/// the primary's copy: each picture once in the timeline, the trim logged once.
#[test]
fn overlapping_copies_of_two_nodes_keep_each_frame_once_and_log_the_trim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = store(dir.path(), "node-a");
    let s = store(dir.path(), "node-s");
    let seg_a = record(&a, 0, 150, T0_MS, None);
    assert!(trim_events(&a).is_empty());
    let seg_s = record(&s, 100, 250, T0_MS + 4_000 + 3, Some(1));
    assert_eq!(timeline_pictures(&a), (0..250).collect::<Vec<_>>());
    let events = trim_events(&a);
    assert_eq!(events.len(), 1, "{events:#?}");
    let path_a = a.catalog().segment(seg_a).expect("q").expect("row").path;
    let path_s = a.catalog().segment(seg_s).expect("q").expect("row").path;
    assert!(
        events[0].starts_with(&format!(
            "50 frames of {path_a} (node-a, epoch none) trimmed, 90 kHz 360000..536401"
        )),
        "{}",
        events[0]
    );
    assert!(
        events[0].ends_with(&format!(
            "held by {path_s} (node-s, epoch 1), which is kept"
        )),
        "{}",
        events[0]
    );
    // Idempotent, from either segment and either process.
    assert!(a.deduplicate(seg_a).expect("dedup").is_empty());
    assert!(s.deduplicate(seg_s).expect("dedup").is_empty());
    assert_eq!(trim_events(&a).len(), 1);
    // The files are untouched evidence: they still hold every frame they were written with.
    let row_a = a.catalog().segment(seg_a).expect("q").expect("row");
    assert_eq!(a.file_frames(&row_a).expect("frames").len(), 150);
    assert_eq!(
        crate::sha256_file(&a.absolute_path(&row_a.path)).expect("hash"),
        row_a.sha256.clone().expect("sha")
    );
    // A kept copy deleted by retention gives the frames back to the trimmed one.
    a.catalog()
        .set_segment_state(seg_s, SegmentState::Deleted, T0_MS + 700_000)
        .expect("delete");
    assert_eq!(timeline_pictures(&a), (0..150).collect::<Vec<_>>());
}

/// A kept copy with a hole: the trimmed copy keeps exactly the frames the hole lacks (two trims).
#[test]
fn a_hole_in_the_kept_copy_leaves_those_frames_in_the_trimmed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = store(dir.path(), "node-a");
    let s = store(dir.path(), "node-s");
    record(&s, 0, 50, T0_MS, Some(1));
    record(&s, 75, 150, T0_MS + 3_000, Some(1));
    record(&a, 0, 150, T0_MS + 1, None);
    assert_eq!(timeline_pictures(&a).len(), 150);
    let mut sorted = timeline_pictures(&a);
    sorted.sort_unstable();
    assert_eq!(sorted, (0..150).collect::<Vec<_>>());
    assert_eq!(trim_events(&a).len(), 2);
}

/// The standby recorded under epoch 1 before the primary's overlapping segment (no epoch) reached it;
/// sealing the mirrored copy de-duplicates. With equal epochs, the primary's and the standby's
/// catalogs, each holding one copy of its own and one mirrored, reach the same timeline.
#[test]
fn a_mirrored_copy_is_deduplicated_when_sealed_and_both_nodes_reach_the_same_timeline() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_s = tempfile::tempdir().expect("tempdir");
    let a = store(dir_a.path(), "node-a");
    let s = store(dir_s.path(), "node-s");
    let seg_a = record(&a, 0, 150, T0_MS, None);
    record(&s, 100, 250, T0_MS + 4_000 - 2, Some(1));
    mirror(&a, &s, seg_a);
    assert_eq!(timeline_pictures(&s), (0..250).collect::<Vec<_>>());
    assert_eq!(trim_events(&s).len(), 1);

    // Without epochs on either copy: the earlier one (the primary's) is kept, on both nodes.
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_s = tempfile::tempdir().expect("tempdir");
    let a = store(dir_a.path(), "node-a");
    let s = store(dir_s.path(), "node-s");
    let seg_a = record(&a, 0, 150, T0_MS, None);
    let seg_s = record(&s, 100, 250, T0_MS + 4_000 + 5, None);
    mirror(&a, &s, seg_a);
    mirror(&s, &a, seg_s);
    let on_a = timeline_pictures(&a);
    assert_eq!(on_a, (0..250).collect::<Vec<_>>());
    assert_eq!(timeline_pictures(&s), on_a);
    let trimmed = |st: &Store| -> Vec<(String, u64, u64, u64)> {
        let stream = st.ensure_stream("cam", "main").expect("stream");
        st.timeline(stream, 0, i64::MAX)
            .expect("timeline")
            .into_iter()
            .flat_map(|p| {
                p.trims
                    .iter()
                    .map(|t| (p.segment.path.clone(), t.start_90k, t.end_90k, t.frames))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(trimmed(&a), trimmed(&s));
    assert_eq!(trimmed(&a).len(), 1);
    assert!(trimmed(&a)[0].0.ends_with("_node-s.mp4"));
}

#[test]
fn the_kept_copy_is_the_newer_epoch_then_the_earlier_then_the_longer() {
    let row = |path: &str, start_ms: i64, end_ms: i64, epoch: Option<u64>| SegmentRow {
        path: path.into(),
        epoch,
        ..test_support::sealed_row(start_ms, end_ms)
    };
    let newer = row("b", 500, 600, Some(2));
    let older = row("a", 0, 1_000, Some(1));
    let none = row("a", 0, 1_000, None);
    assert_eq!(kept_first(&newer, &older), Ordering::Less);
    assert_eq!(kept_first(&older, &none), Ordering::Less);
    assert_eq!(
        kept_first(&row("x", 0, 10, None), &row("y", 1, 100, None)),
        Ordering::Less
    );
    assert_eq!(
        kept_first(&row("x", 0, 10, None), &row("y", 0, 100, None)),
        Ordering::Greater
    );
    assert_eq!(
        kept_first(&row("x", 0, 10, None), &row("y", 0, 10, None)),
        Ordering::Less
    );
}
