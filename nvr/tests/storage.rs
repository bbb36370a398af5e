//! Storage and segmenting with synthetic frames: cuts, continuity, sealing, crash recovery, orphan and
//! missing files, retention, gaps, and the scrub rule against a reference with its repair. Real files and a real SQLite catalog in a temporary directory.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use base::clock::ManualClock;
use common::synthetic::{frame_data, ingest_settings, push_frames};
use nvr::config::StreamKind;
use nvr::ingest::{Recording, VideoTrack};
use store::{
    RetentionPolicy, RetentionReport, SegmentRow, SegmentState, Store, StreamId, StreamLimits,
};

const T0_MS: i64 = 1_790_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Arc<Store>,
    stream: StreamId,
}

impl Fixture {
    /// A recording of the fixture's stream (`cam1`/main) with segments of `segment_duration_ms`.
    fn recording(&self, segment_duration_ms: u64) -> Recording {
        self.recording_of(self.stream, "cam1", segment_duration_ms)
    }

    /// A recording of `camera`'s main stream `stream` with segments of `segment_duration_ms`.
    fn recording_of(&self, stream: StreamId, camera: &str, segment_duration_ms: u64) -> Recording {
        Recording::new(
            self.store.clone(),
            stream,
            camera,
            StreamKind::Main,
            ingest_settings(segment_duration_ms),
        )
    }

    /// Records `frames` frames (a key frame every 25) of the fixture's stream in segments of
    /// `segment_duration_ms`, then stops as a shutdown does.
    fn record(&self, segment_duration_ms: u64, frames: i64) {
        let mut rec = self.recording(segment_duration_ms);
        push_frames(&mut rec, 0, frames, 25);
        rec.finish("shutdown").expect("finish");
    }

    /// The fixture's segments in `state`, oldest first.
    fn in_state(&self, state: SegmentState) -> Vec<SegmentRow> {
        self.store
            .catalog()
            .segments_in_state(state)
            .expect("segments in state")
    }

    /// One retention pass under `policy` with `free_bytes` free on the disk.
    fn retention(&self, policy: &RetentionPolicy, free_bytes: u64) -> RetentionReport {
        self.store
            .retention_pass(policy, &|| Ok(free_bytes))
            .expect("retention")
    }
}

/// Every segment of `stream` in `store`'s catalog, oldest first.
fn segments(store: &Store, stream: StreamId) -> Vec<SegmentRow> {
    store
        .segments_in_range(stream, 0, i64::MAX)
        .expect("segments")
}

/// The catalog row of the segment file at `path` (relative to the data directory).
fn row_by_path(store: &Store, path: &str) -> SegmentRow {
    store
        .catalog()
        .segment_by_path(path)
        .expect("query")
        .expect("row")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0_MS));
    let store = Arc::new(Store::open(dir.path(), "node-a", clock.clone()).expect("open store"));
    let stream = store.ensure_stream("cam1", "main").expect("stream");
    Fixture {
        _dir: dir,
        clock,
        store,
        stream,
    }
}

#[test]
fn segments_are_cut_on_key_frames_continuous_and_sealed() {
    let f = fixture();
    f.record(2000, 250);

    let segs = segments(&f.store, f.stream);
    assert_eq!(segs.len(), 5, "{segs:#?}");
    assert_eq!(
        segs.iter().map(|s| s.frames).sum::<i64>(),
        250,
        "every frame recorded"
    );
    assert_eq!(segs[0].start_ms, T0_MS);
    for w in segs.windows(2) {
        assert_eq!(w[0].end_ms, w[1].start_ms, "segments of a run meet exactly");
    }
    assert_eq!(segs.last().map(|s| s.end_ms), Some(T0_MS + 10_000));
    for s in &segs {
        assert_eq!(s.state, SegmentState::Sealed);
        assert_eq!(s.frames, 50);
        assert_eq!(s.media_duration_ms, 2000);
        assert_eq!(s.end_ms - s.start_ms, 2000);
        let path = f.store.absolute_path(&s.path);
        let meta = std::fs::metadata(&path).expect("file");
        assert_eq!(meta.len() as i64, s.size_bytes);
        assert_eq!(
            meta.permissions().mode() & 0o222,
            0,
            "sealed file is read-only"
        );
        let scan = store::mp4::scan_file(&path).expect("scan");
        assert_eq!(scan.fragments.len(), 2, "one fragment per GOP");
        assert_eq!(scan.trailing_bytes, 0);
    }
    let check = f.store.check(true).expect("check");
    assert!(check.ok(), "{:?}", check.problems);
    assert_eq!(check.sealed_checked, 5);
}

/// Long-GOP cameras (4 s and 10 s): every fragment holds at most `fragment_max_ms` (1 s) of media, the
/// fragment after a key frame starts with it, and segments still start on key frames.
#[test]
fn long_gops_are_cut_into_fragments_of_at_most_one_second() {
    for gop_frames in [100, 250] {
        let f = fixture();
        let mut rec = f.recording(60_000);
        push_frames(&mut rec, 0, 2 * gop_frames + 13, gop_frames);
        rec.finish("shutdown").expect("finish");
        let segs = segments(&f.store, f.stream);
        assert_eq!(segs.len(), 1, "{segs:#?}");
        assert_eq!(segs[0].frames, 2 * gop_frames + 13, "every frame recorded");
        let scan = store::mp4::scan_file(f.store.absolute_path(&segs[0].path)).expect("scan");
        assert_eq!(scan.trailing_bytes, 0);
        let mut frames = 0i64;
        for frag in &scan.fragments {
            let video = &frag.tracks[0];
            assert!(
                video.duration_sum <= 90_000,
                "GOP {gop_frames}: fragment {} holds {} ticks (> 1 s)",
                frag.sequence_number,
                video.duration_sum
            );
            assert_eq!(
                video.first_sample_is_sync,
                frames % gop_frames == 0,
                "GOP {gop_frames}: fragment at frame {frames}"
            );
            frames += i64::from(video.sample_count);
        }
        assert_eq!(frames, 2 * gop_frames + 13);
        // 25 frames per full second of a GOP; the GOP's remainder and the tail in smaller ones.
        assert!(scan.fragments.len() as i64 >= (2 * gop_frames + 13) / 25);
    }
}

/// Open segments' catalog rows learn of appended fragments in batches ([`Store::flush_progress`], one
/// transaction for every open segment), not with one write per fragment.
#[test]
fn open_segment_progress_reaches_the_catalog_in_batches() {
    let f = fixture();
    let mut rec = f.recording(60_000);
    push_frames(&mut rec, 0, 60, 25);
    assert_eq!(rec.frames_written(), 50, "two fragments written");
    let row = |store: &Store| segments(store, f.stream).remove(0);
    assert_eq!(row(&f.store).frames, 0, "no catalog write per fragment");
    assert_eq!(f.store.flush_progress().expect("flush"), 1);
    let flushed = row(&f.store);
    assert_eq!((flushed.frames, flushed.fragments), (50, 2));
    assert_eq!(flushed.end_ms, T0_MS + 2000);
    assert_eq!(f.store.flush_progress().expect("flush"), 0, "nothing new");
    rec.finish("shutdown").expect("finish");
    let sealed = row(&f.store);
    assert_eq!((sealed.state, sealed.frames), (SegmentState::Sealed, 60));
    assert_eq!(
        f.store.flush_progress().expect("flush"),
        0,
        "sealing forgets the queue"
    );
}

/// Appended data is flushed by one grouped pass over every open segment (`Store::sync_appended`,
/// which the recorder runs every `flush_interval_ms`), not by each stream on its own timer: a pass
/// syncs each file appended to since the previous one, once, and a sealed file leaves the set.
#[test]
fn one_grouped_pass_flushes_every_open_segment_appended_to() {
    let f = fixture();
    let cam2 = f.store.ensure_stream("cam2", "main").expect("stream");
    let mut one = f.recording(60_000);
    let mut two = f.recording_of(cam2, "cam2", 60_000);
    assert_eq!(f.store.sync_appended().files_synced, 0, "nothing appended");
    push_frames(&mut one, 0, 60, 25);
    push_frames(&mut two, 0, 60, 25);
    let pass = f.store.sync_appended();
    assert_eq!((pass.files_synced, pass.errors), (2, 0));
    assert_eq!(f.store.sync_appended().files_synced, 0, "nothing new");
    push_frames(&mut one, 60, 25, 25);
    assert_eq!(
        f.store.sync_appended().files_synced,
        1,
        "only the one appended to"
    );
    push_frames(&mut two, 60, 25, 25);
    one.finish("shutdown").expect("finish");
    two.finish("shutdown").expect("finish");
    assert_eq!(
        f.store.sync_appended().files_synced,
        0,
        "sealing fsyncs the file itself and leaves the set"
    );
}

/// Bytes of disk a file holds (`st_blocks`), whatever its length says.
fn allocated_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("meta").blocks() * 512
}

/// An open segment reserves its blocks ahead (`PREALLOCATE_BYTES`) without changing its length; the
/// reservation is released when it is sealed, and by recovery after a crash; lengths, catalog sizes
/// and hashes are those of the data.
#[test]
fn preallocated_blocks_are_released_at_seal_and_by_recovery() {
    let f = fixture();
    let cam2 = f.store.ensure_stream("cam2", "main").expect("stream");
    let mut sealed = f.recording(60_000);
    let mut crashed = f.recording_of(cam2, "cam2", 60_000);
    push_frames(&mut sealed, 0, 90, 25);
    push_frames(&mut crashed, 0, 90, 25);
    let open = f.store.catalog().open_segments("node-a").expect("open");
    assert_eq!(open.len(), 2);
    let paths: Vec<_> = open
        .iter()
        .map(|s| f.store.absolute_path(&s.path))
        .collect();
    for p in &paths {
        let len = std::fs::metadata(p).expect("meta").len();
        assert!(len < 100_000, "{len}");
        assert!(
            allocated_bytes(p) >= store::PREALLOCATE_BYTES,
            "reserved ahead: {} bytes for {len}",
            allocated_bytes(p)
        );
        let scan = store::mp4::scan_file(p).expect("scan");
        assert_eq!((scan.fragments.len(), scan.trailing_bytes), (3, 0));
    }
    let released = |p: &std::path::Path| {
        let len = std::fs::metadata(p).expect("meta").len();
        assert!(
            allocated_bytes(p) <= len + 64 * 1024,
            "{}: {} bytes held for {len}",
            p.display(),
            allocated_bytes(p)
        );
    };
    sealed.finish("shutdown").expect("finish");
    released(&paths[0]);
    std::mem::forget(crashed); // no finish(): like kill -9
    drop(f.store);

    let store = Store::open(f._dir.path(), "node-a", f.clock.clone()).expect("reopen");
    let report = store.recover().expect("recover");
    assert_eq!(report.recovered.len(), 1, "{report:?}");
    assert_eq!(report.recovered[0].1, 0, "nothing to cut");
    released(&paths[1]);
    let segs = segments(&store, cam2);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].frames, 75);
    for p in &paths {
        let rel = p.strip_prefix(f._dir.path()).expect("relative");
        let row = row_by_path(&store, &rel.to_string_lossy());
        assert_eq!(row.state, SegmentState::Sealed);
        assert_eq!(
            row.size_bytes as u64,
            std::fs::metadata(p).expect("meta").len()
        );
    }
    let check = store.check(true).expect("check");
    assert!(check.ok(), "{:?}", check.problems);
    assert_eq!(check.sealed_checked, 2, "both hashes match their files");
}

#[test]
fn parameter_change_starts_a_new_segment() {
    let f = fixture();
    let mut rec = f.recording(60_000);
    push_frames(&mut rec, 0, 50, 25);
    let mut other = VideoTrack::synthetic_avc1(320, 240);
    other.width = 640;
    other.codec = "avc1.640028".into();
    rec.push_video(50 * 3600, true, vec![1; 500], Some(other))
        .expect("push");
    push_frames(&mut rec, 51, 0, 25);
    for i in 51..75 {
        rec.push_video(i * 3600, false, vec![2; 300], None)
            .expect("push");
    }
    rec.finish("shutdown").expect("finish");
    let segs = segments(&f.store, f.stream);
    assert_eq!(segs.len(), 2);
    assert_eq!((segs[0].width, segs[1].width), (320, 640));
    assert_eq!(segs[1].video_codec, "avc1.640028");
    assert_eq!(segs[0].end_ms, segs[1].start_ms);
    assert_eq!(segs[0].frames + segs[1].frames, 75);
}

#[test]
fn crash_recovery_keeps_every_complete_fragment() {
    let f = fixture();
    let mut rec = f.recording(60_000);
    // Three GOPs complete (written), the fourth still buffered when the process "dies".
    push_frames(&mut rec, 0, 90, 25);
    let open = f.store.catalog().open_segments("node-a").expect("open");
    assert_eq!(open.len(), 1);
    let path = f.store.absolute_path(&open[0].path);
    let complete_len = std::fs::metadata(&path).expect("meta").len();
    // A fragment half written at the moment of the kill.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(&[0, 0, 0x10, 0, b'm', b'o', b'o', b'f', 1, 2, 3]))
        .expect("append partial");
    std::mem::forget(rec); // no finish(): like kill -9
    drop(f.store);

    let store = Store::open(f._dir.path(), "node-a", f.clock.clone()).expect("reopen");
    let report = store.recover().expect("recover");
    assert_eq!(report.recovered.len(), 1, "{report:?}");
    assert_eq!(
        report.recovered[0].1, 11,
        "only the partial fragment is cut"
    );
    assert_eq!(report.runs_closed, 1);
    let segs = segments(&store, f.stream);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].state, SegmentState::Sealed);
    assert_eq!(segs[0].frames, 75);
    assert_eq!(segs[0].end_ms, T0_MS + 3000);
    assert_eq!(segs[0].size_bytes as u64, complete_len);
    assert!(store.check(true).expect("check").ok());
    let runs = store.catalog().runs(f.stream).expect("runs");
    assert_eq!(runs[0].end_ms, Some(T0_MS + 3000));
    assert_eq!(runs[0].end_reason.as_deref(), Some("crash"));
    // A second recovery finds nothing to do.
    assert!(store.recover().expect("recover again").is_empty());
}

#[test]
fn orphan_files_are_indexed_and_missing_files_marked() {
    let f = fixture();
    f.record(2000, 150);
    let segs = segments(&f.store, f.stream);
    assert_eq!(segs.len(), 3);
    // A copy of segment 0 under another node's name: a file without a row.
    let orphan_rel = segs[0].path.replace("_node-a.mp4", "_node-b.mp4");
    std::fs::copy(
        f.store.absolute_path(&segs[0].path),
        f.store.absolute_path(&orphan_rel),
    )
    .expect("copy");
    // Segment 2's file vanishes.
    std::fs::remove_file(f.store.absolute_path(&segs[2].path)).expect("remove");
    let check = f.store.check(false).expect("check");
    assert_eq!(check.problems.len(), 2, "{:?}", check.problems);

    let report = f.store.recover().expect("recover");
    assert_eq!(report.indexed, std::slice::from_ref(&orphan_rel));
    assert_eq!(report.missing, [segs[2].path.clone()]);
    let all = f.store.catalog().stream_segments(f.stream).expect("all");
    let orphan = all
        .iter()
        .find(|s| s.path == orphan_rel)
        .expect("indexed row");
    assert_eq!(
        (orphan.node.as_str(), orphan.frames, orphan.state),
        ("node-b", 50, SegmentState::Sealed)
    );
    assert_eq!(orphan.sha256, segs[0].sha256);
    let missing = all.iter().find(|s| s.id == segs[2].id).expect("row");
    assert_eq!(missing.state, SegmentState::Missing);
    assert!(f.store.check(true).expect("check").ok());
}

#[test]
fn retention_deletes_oldest_first_and_never_open_segments() {
    let f = fixture();
    let mut rec = f.recording(2000);
    // Five sealed 2 s segments, a sixth open with one fragment, one GOP buffered.
    push_frames(&mut rec, 0, 300, 25);
    let sealed = f.in_state(SegmentState::Sealed);
    let open = f.in_state(SegmentState::Open);
    assert_eq!((sealed.len(), open.len()), (5, 1));
    let seg_bytes = sealed[0].size_bytes as u64;

    // By age: segments that ended more than 5 s before "now" go.
    f.clock.set_ms(T0_MS + 10_500);
    let mut policy = RetentionPolicy::default();
    policy.streams.insert(
        f.stream,
        StreamLimits {
            max_age_ms: Some(5000),
            max_bytes: None,
        },
    );
    let r = f.retention(&policy, u64::MAX);
    assert_eq!(r.deleted_by_age, 2, "{r:?}");
    let left = f.in_state(SegmentState::Sealed);
    assert_eq!(
        left.first().map(|s| s.start_ms),
        Some(T0_MS + 4000),
        "oldest went first"
    );
    assert!(!f.store.absolute_path(&sealed[0].path).exists());

    // By bytes: three sealed segments and half an open one exceed two segments' worth (open counts).
    policy.streams.insert(
        f.stream,
        StreamLimits {
            max_age_ms: None,
            max_bytes: Some(seg_bytes * 2),
        },
    );
    let r = f.retention(&policy, u64::MAX);
    assert_eq!(r.deleted_by_bytes, 2, "{r:?}");

    // Free-space floor that cannot be met: every sealed segment goes, the open one stays.
    policy.streams.clear();
    policy.min_free_bytes = 1 << 40;
    let r = f.retention(&policy, 0);
    assert!(r.free_floor_unmet);
    assert_eq!(r.deleted_for_free_space, 1);
    let open_now = f.in_state(SegmentState::Open);
    assert_eq!(open_now.len(), 1);
    assert!(f.store.absolute_path(&open_now[0].path).exists());
    let events = f.store.catalog().events(0, 100).expect("events");
    let deletions = events
        .iter()
        .filter(|e| e.kind == "retention" && e.message.starts_with("deleted "))
        .count();
    assert_eq!(deletions, 5);
    rec.finish("shutdown").expect("finish");
    assert!(f.store.check(true).expect("check").ok());
}

#[test]
fn a_retention_deletion_cut_short_by_a_stop_is_finished_by_recovery() {
    let f = fixture();
    f.record(2000, 150);
    let sealed = f.in_state(SegmentState::Sealed);
    // Retention marks the row `deleted` (and logs it) before it unlinks the file: a stop in between.
    let victim = &sealed[0];
    f.store
        .catalog()
        .set_segment_state(victim.id, SegmentState::Deleted, T0_MS + 9000)
        .expect("mark deleted");
    assert!(f.store.absolute_path(&victim.path).exists());
    let report = f.store.recover().expect("recover");
    assert!(report.indexed.is_empty(), "{report:?}");
    assert!(!f.store.absolute_path(&victim.path).exists());
    assert!(f.store.absolute_path(&sealed[1].path).exists());
    assert!(f.store.check(true).expect("check").ok());
}

#[test]
fn the_scrub_rule_against_a_reference_sees_a_rewritten_row_and_repair_puts_both_back() {
    let f = fixture();
    f.record(2000, 100);
    let row = f.in_state(SegmentState::Sealed).remove(0);
    let path = f.store.absolute_path(&row.path);
    let good = std::fs::read(&path).expect("read");
    let reference = store::SealedReference {
        size_bytes: good.len() as u64,
        sha256: row.sha256.clone().expect("hash"),
    };
    assert_eq!(f.store.verify_sealed(&row, Some(&reference), true), Ok(()));
    // Alter the file (left read-only) and rewrite its row to match: the catalog alone sees nothing.
    let mut bad = good.clone();
    bad.push(0);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&path, &bad).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let bad_sha = store::sha256_file(&path).expect("hash");
    f.store
        .catalog()
        .set_segment_hash(row.id, &bad_sha, bad.len() as i64)
        .expect("rewrite row");
    let rewritten = row_by_path(&f.store, &row.path);
    assert_eq!(f.store.verify_sealed(&rewritten, None, true), Ok(()));
    let problem = f
        .store
        .verify_sealed(&rewritten, Some(&reference), true)
        .expect_err("the reference disagrees");
    assert!(problem.contains("signed log"), "{problem}");
    // Bytes that do not match the reference change nothing.
    assert!(f.store.repair_sealed(&row.path, &bad, &reference).is_err());
    assert_eq!(store::sha256_file(&path).expect("hash"), bad_sha);
    // The good bytes: the row is set back, the file replaced (the altered one kept in quarantine).
    f.store
        .repair_sealed(&row.path, &good, &reference)
        .expect("repair");
    let repaired = row_by_path(&f.store, &row.path);
    assert_eq!(repaired.sha256, row.sha256);
    assert_eq!(repaired.size_bytes, row.size_bytes);
    assert_eq!(
        f.store.verify_sealed(&repaired, Some(&reference), true),
        Ok(())
    );
    let events = f.store.catalog().events(0, 100).expect("events");
    assert!(events.iter().any(|e| e.kind == "catalog_repaired"));
}

#[test]
fn gaps_between_runs_are_explicit() {
    let f = fixture();
    let mut rec = f.recording(60_000);
    push_frames(&mut rec, 0, 100, 25);
    rec.finish("camera error").expect("finish");
    f.clock.set_ms(T0_MS + 14_000);
    f.record(60_000, 50);
    let gaps = f
        .store
        .gaps_in_range(f.stream, T0_MS, T0_MS + 16_000)
        .expect("gaps");
    assert_eq!(
        gaps,
        [store::Gap {
            start_ms: T0_MS + 4000,
            end_ms: T0_MS + 14_000
        }]
    );
    let runs = f.store.catalog().runs(f.stream).expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].end_reason.as_deref(), Some("camera error"));
}

#[test]
fn camera_timestamp_resets_keep_the_timeline_continuous() {
    let f = fixture();
    let mut rec = f.recording(2000);
    push_frames(&mut rec, 0, 60, 25);
    // The camera restarts its clock mid-GOP (as a shared GStreamer pipeline does when a client joins),
    // then later jumps far ahead.
    for i in 0..70i64 {
        rec.push_video(i * 3600, i % 25 == 0, vec![3; 800], None)
            .expect("push");
    }
    for i in 0..50i64 {
        rec.push_video(900_000_000 + i * 3600, i % 25 == 0, vec![4; 800], None)
            .expect("push");
    }
    assert_eq!(rec.discontinuities(), 2);
    rec.finish("shutdown").expect("finish");
    let segs = segments(&f.store, f.stream);
    assert_eq!(segs.iter().map(|s| s.frames).sum::<i64>(), 180);
    for w in segs.windows(2) {
        assert_eq!(w[0].end_ms, w[1].start_ms);
    }
    assert_eq!(
        segs.last().map(|s| s.end_ms),
        Some(T0_MS + 180 * 40),
        "timeline has no holes or overlaps"
    );
    assert!(
        segs.iter().all(|s| s.media_duration_ms <= 3000),
        "segments still cut on time: {segs:#?}"
    );
    let events = f.store.catalog().events(0, 100).expect("events");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "timestamp_discontinuity")
            .count(),
        2
    );
}

/// `may_write` decides whether the ingest loop leaves the async worker for a frame: when it says
/// `false`, pushing that frame must neither write a fragment nor log a discontinuity (both touch the
/// disk). Driven through key frames, a 10 s fragment without key frames, and clock jumps both ways.
#[test]
fn may_write_false_means_the_frame_touches_no_disk() {
    let f = fixture();
    let mut rec = f.recording(2000);
    let mut frames: Vec<(i64, bool)> = (0..60).map(|i| (i * 3600, i % 25 == 0)).collect();
    // 11 s without a key frame: the fragment is cut at 10 s.
    frames.extend((60..340).map(|i| (i * 3600, i == 60)));
    // A jump back to 0 mid-GOP, then far ahead, then back again right before a would-be cut.
    frames.extend((0..30).map(|i| (i * 3600, false)));
    frames.extend((0..30).map(|i| (900_000_000 + i * 3600, i == 10)));
    frames.extend((0..5).map(|i| (5_000 + i * 3600, false)));
    let (mut writes, mut jumps) = (0, 0);
    for (n, (ts, key)) in frames.into_iter().enumerate() {
        let may = rec.may_write(ts, key);
        let before = (rec.frames_written(), rec.discontinuities());
        rec.push_video(
            ts,
            key,
            vec![1; 500],
            (n == 0).then(|| VideoTrack::synthetic_avc1(320, 240)),
        )
        .expect("push");
        let after = (rec.frames_written(), rec.discontinuities());
        if !may {
            assert_eq!(
                before, after,
                "frame {n} (ts {ts}, key {key}) touched the disk"
            );
        }
        writes += u32::from(after.0 != before.0);
        jumps += u32::from(after.1 != before.1);
    }
    assert!(writes >= 5, "fragments were written: {writes}");
    assert_eq!(jumps, 3, "discontinuities bridged");
    rec.finish("shutdown").expect("finish");
}

/// Segments written under an arbiter's promotion record the node and the epoch; the last frame of a
/// segment file, named as the arbiter names it (`store::frame::last_frame_in_file`), is the id the
/// recorder gave that frame (same hash, the recording node's wall time).
#[test]
fn segments_record_node_and_epoch_and_the_last_frame_of_a_file_is_named_like_a_received_one() {
    let f = fixture();
    let mut rec = f.recording(2000);
    rec.set_epoch(Some(4));
    push_frames(&mut rec, 0, 250, 25);
    rec.finish("shutdown").expect("finish");
    let segs = segments(&f.store, f.stream);
    assert_eq!(segs.len(), 5);
    assert!(segs
        .iter()
        .all(|s| s.epoch == Some(4) && s.node == "node-a"));

    let last = segs.last().expect("a segment");
    let id = store::frame::last_frame_in_file(&f.store.absolute_path(&last.path), last.start_ms)
        .expect("read")
        .expect("a frame");
    // As push_frames builds frame 249.
    assert_eq!(
        id,
        store::frame::FrameId::of(&frame_data(249), false, T0_MS + 249 * 40)
    );

    // Without an epoch (no arbiter), none is recorded.
    let mut rec = f.recording(2000);
    push_frames(&mut rec, 300, 50, 25);
    rec.finish("shutdown").expect("finish");
    let segs = segments(&f.store, f.stream);
    assert_eq!(segs.iter().filter(|s| s.epoch == Some(4)).count(), 5);
    assert!(segs.iter().any(|s| s.epoch.is_none()), "{segs:#?}");
}
