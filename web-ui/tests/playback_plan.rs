//! The playback plan on synthetic segment files (written with `store::mp4`, catalog rows through the
//! store): where a range starts (the last key frame at or before it), where it stops (a change of
//! codec parameters, a gap; an export runs across the gap), and the bytes: decode times rewritten to
//! run on across segments, the init section once.

mod common;

use std::path::Path;
use std::sync::Arc;

use nvr_web::playback::{plan, Mode, Stop};
use store::mp4::{
    init_segment, scan, synthetic_avc1_sample_entry, FragmentBuilder, SampleInfo, TrackKind,
    TrackSpec,
};
use store::{SegmentInsert, SegmentProgress, SegmentState, Store};

const T0_MS: i64 = 1_790_000_000_000;

/// A 4 s segment at 25 fps, one fragment a second, a key frame every 2 s (fragments 0 and 2), its
/// decode times starting at `base`; `width` changes the sample entry.
fn write_segment(store: &Store, rel: &str, start_ms: i64, width: u16, base: u64) {
    let mut file = init_segment(&[TrackSpec {
        track_id: 1,
        kind: TrackKind::Video { width, height: 720 },
        timescale: 90_000,
        sample_entry: synthetic_avc1_sample_entry(width, 720),
        presentation_delay: 0,
    }])
    .expect("init");
    for f in 0..4u64 {
        let mut b = FragmentBuilder::new(f as u32 + 1, &[(1, base + f * 90_000)]);
        for i in 0..25 {
            let info = SampleInfo {
                duration: 3600,
                size: 100,
                is_sync: i == 0 && f % 2 == 0,
                composition_offset: 0,
            };
            b.push_sample(0, info, &[f as u8; 100]);
        }
        file.extend_from_slice(&b.finish());
    }
    let path = store.data_dir().join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, &file).expect("write");
    let stream_id = store.ensure_stream("cam", "main").expect("stream");
    store
        .catalog()
        .put_sealed_segment(
            &SegmentInsert {
                stream_id,
                run_id: None,
                node: "node-a",
                path: rel,
                state: SegmentState::Sealed,
                start_ms,
                video_codec: "avc1",
                width: i64::from(width),
                height: 720,
                audio_codec: None,
                created_ms: start_ms,
            },
            &SegmentProgress {
                end_ms: start_ms + 4000,
                media_duration_ms: 4000,
                frames: 100,
                fragments: 4,
                size_bytes: file.len() as i64,
            },
            &store::sha256_file(&path).expect("hash"),
            start_ms + 4000,
            None,
        )
        .expect("row");
}

#[test]
fn a_plan_starts_at_a_key_frame_runs_on_across_segments_and_stops_at_a_gap_or_a_codec_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(dir.path(), "node-a", Arc::new(base::clock::SystemClock)).expect("store");
    // Segments at 0, 4 s (contiguous), 10 s (after a 2 s gap), 14 s (other width).
    write_segment(&store, "media/a.mp4", T0_MS, 1280, 0);
    write_segment(&store, "media/b.mp4", T0_MS + 4000, 1280, 360_000);
    write_segment(&store, "media/c.mp4", T0_MS + 10_000, 1280, 0);
    write_segment(&store, "media/d.mp4", T0_MS + 14_000, 640, 0);
    drop(store);
    let reader = store::Reader::open(Path::new(dir.path()), Arc::new(base::clock::SystemClock))
        .expect("reader");

    // From 3.5 s: the key frame at 2 s; across the boundary at 4 s; stops at the gap at 8 s.
    let p = plan(
        &reader,
        "cam",
        "main",
        T0_MS + 3500,
        T0_MS + 20_000,
        Mode::Playback,
    )
    .expect("plan");
    assert_eq!(p.start_ms, T0_MS + 2000);
    assert_eq!(p.end_ms, T0_MS + 8000);
    assert_eq!(p.frames, 150);
    assert_eq!(
        p.stop,
        Stop::Gap {
            from_ms: T0_MS + 8000,
            next_ms: T0_MS + 10_000
        }
    );
    let bytes = common::plan_bytes(&p);
    assert_eq!(bytes.len() as u64, p.total_len);
    let report = scan(&bytes).expect("scan");
    assert_eq!(report.trailing_bytes, 0);
    let times: Vec<u64> = report
        .fragments
        .iter()
        .map(|f| f.tracks[0].base_decode_time)
        .collect();
    assert_eq!(times, [0, 90_000, 180_000, 270_000, 360_000, 450_000]);
    let seqs: Vec<u32> = report.fragments.iter().map(|f| f.sequence_number).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(bytes.windows(4).filter(|w| w == b"moov").count(), 1);

    // An export runs across the gap (its timeline closes it) and stops where the codec changes.
    let e = plan(&reader, "cam", "main", T0_MS, T0_MS + 20_000, Mode::Export).expect("plan");
    assert_eq!(e.gaps, [(T0_MS + 8000, T0_MS + 10_000)]);
    assert_eq!(
        e.stop,
        Stop::CodecChange {
            next_ms: T0_MS + 14_000
        }
    );
    assert_eq!(e.frames, 300);
    let report = scan(&common::plan_bytes(&e)).expect("scan");
    let last = report.fragments.last().expect("fragments");
    assert_eq!(last.tracks[0].base_decode_time, 11 * 90_000);

    // From the other codec on: its own plan. Nothing recorded: empty.
    let d = plan(
        &reader,
        "cam",
        "main",
        T0_MS + 14_000,
        T0_MS + 18_000,
        Mode::Playback,
    )
    .expect("plan");
    assert_eq!(
        (d.start_ms, d.frames, d.stop.clone()),
        (T0_MS + 14_000, 100, Stop::End)
    );
    assert!(plan(
        &reader,
        "cam",
        "main",
        T0_MS + 8500,
        T0_MS + 9500,
        Mode::Playback
    )
    .is_err());
}
