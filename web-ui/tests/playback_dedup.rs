//! Playback and export over two nodes' overlapping copies of one stream in one catalog (real H.264
//! from ffmpeg, written through the store as the recorders write it, de-duplicated after the seal): the
//! plan skips the trimmed fragments, so the output holds every picture exactly once, in order, and
//! ffmpeg decodes it; a kept copy lying inside a trimmed one plays in the trimmed one's hole.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base::clock::{Clock, ManualClock};
use nvr_web::playback::{plan, Mode};
use store::mp4::scan_samples;
use store::test_support::{self, TestVideo};
use store::{SegmentId, Store};

const T0_MS: i64 = 1_790_000_000_000;
const FPS: u32 = 25;

/// The test camera: 250 H.264 pictures at 25 fps, a key frame every 25, no B frames.
struct Camera {
    /// 160×120 H.264, the sample entry ffmpeg wrote.
    video: TestVideo,
    /// (data, key frame) per picture.
    pictures: Vec<(Vec<u8>, bool)>,
}

fn camera(dir: &Path) -> Camera {
    let src = dir.join("camera.mp4");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=160x120:rate={FPS}"))
        .args(["-frames:v", "250", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .args([
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ])
        .args(["-movflags", "frag_keyframe+empty_moov", "-f", "mp4"])
        .arg(&src)
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&src).expect("read camera");
    let (_, samples) = scan_samples(&data).expect("scan camera");
    let pictures: Vec<(Vec<u8>, bool)> = samples
        .iter()
        .map(|s| {
            let at = usize::try_from(s.offset).expect("offset");
            (data[at..at + s.size as usize].to_vec(), s.is_sync)
        })
        .collect();
    assert_eq!(pictures.len(), 250);
    // The first sample entry: after `stsd`, its version, flags and entry count.
    let at = data.windows(4).position(|w| w == b"stsd").expect("stsd") + 12;
    assert_eq!(&data[at + 4..at + 8], b"avc1");
    let len = u32::from_be_bytes(data[at..at + 4].try_into().expect("size")) as usize;
    Camera {
        video: TestVideo {
            width: 160,
            height: 120,
            codec: "avc1.64000c",
            sample_entry: data[at..at + len].to_vec(),
        },
        pictures,
    }
}

fn store(dir: &Path, node: &str) -> Arc<Store> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0_MS + 600_000));
    Arc::new(Store::open(dir, node, clock).expect("store"))
}

/// Records pictures `first..last` (1 s fragments) into one sealed segment of `cam/main` starting at
/// `start_ms` under `epoch`; the de-duplication job's pass (as the recorder's job runs it after a
/// seal) then trims it against the other node's copies.
fn record(
    store: &Arc<Store>,
    cam: &Camera,
    pictures: std::ops::Range<usize>,
    start_ms: i64,
    epoch: Option<u64>,
) -> SegmentId {
    let mut w = test_support::create_segment(store, &cam.video, start_ms, epoch);
    test_support::append_pictures(&mut w, &cam.pictures[pictures], FPS as usize);
    let id = w.seal().expect("seal").expect("sealed").id;
    store.deduplicate_pending().expect("de-duplication pass");
    id
}

/// The picture numbers of an output file, in file order (each sample matched by its bytes).
fn pictures_of(cam: &Camera, bytes: &[u8]) -> Vec<usize> {
    let (_, samples) = scan_samples(bytes).expect("scan output");
    samples
        .iter()
        .map(|s| {
            let at = usize::try_from(s.offset).expect("offset");
            let data = &bytes[at..at + s.size as usize];
            cam.pictures
                .iter()
                .position(|(p, _)| p.as_slice() == data)
                .expect("a picture of the camera")
        })
        .collect()
}

/// Plans the whole stream in `mode`, checks each picture `0..250` is there once and in order, and
/// that ffmpeg decodes the file without an error.
fn check_once(dir: &Path, cam: &Camera, mode: Mode, name: &str) {
    let reader = store::Reader::open(dir, Arc::new(base::clock::SystemClock)).expect("reader");
    let p = plan(&reader, "cam", "main", T0_MS, T0_MS + 20_000, mode).expect("plan");
    let bytes = common::plan_bytes(&p);
    assert_eq!(
        pictures_of(cam, &bytes),
        (0..250).collect::<Vec<_>>(),
        "{name} {mode:?}"
    );
    assert_eq!(p.frames, 250, "{name} {mode:?}");
    let file = dir.join(format!("{name}-{mode:?}.mp4"));
    std::fs::write(&file, &bytes).expect("write output");
    let probe = testkit::ffprobe(&file);
    assert_eq!(probe.frames, 250, "{name} {mode:?}: {probe:?}");
    assert!(probe.stderr_errors.is_empty(), "{name}: {probe:?}");
}

#[test]
fn overlapping_copies_play_and_export_each_picture_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let cam = camera(work.path());

    // The primary recorded pictures 0..150; the standby took over under epoch 1 and recorded
    // 100..250 (its clock 3 ms ahead): pictures 100..150 are trimmed from the primary's copy.
    let dir = work.path().join("tail");
    let (a, s) = (store(&dir, "node-a"), store(&dir, "node-s"));
    let seg_a = record(&a, &cam, 0..150, T0_MS, None);
    record(&s, &cam, 100..250, T0_MS + 4_000 + 3, Some(1));
    let stream = a.ensure_stream("cam", "main").expect("stream");
    let timeline = a.timeline(stream, 0, i64::MAX).expect("timeline");
    let trimmed: Vec<_> = timeline.iter().filter(|t| !t.trims.is_empty()).collect();
    assert_eq!(trimmed.len(), 1, "{timeline:#?}");
    assert_eq!(trimmed[0].segment.id, seg_a);
    for mode in [Mode::Playback, Mode::Export] {
        check_once(&dir, &cam, mode, "tail");
    }

    // A kept copy inside the trimmed one: the standby's 100..150 (epoch 1) within the primary's
    // 0..250; the primary's middle is trimmed and the standby's copy plays in its place.
    let dir = work.path().join("middle");
    let (a, s) = (store(&dir, "node-a"), store(&dir, "node-s"));
    record(&a, &cam, 0..250, T0_MS, None);
    record(&s, &cam, 100..150, T0_MS + 4_000 + 3, Some(1));
    for mode in [Mode::Playback, Mode::Export] {
        check_once(&dir, &cam, mode, "middle");
    }
}
