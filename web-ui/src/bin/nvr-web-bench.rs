//! Benchmarks of the viewer's catalog and file work (docs/performance.md, "Web viewer"): the timeline
//! answer for 30 days of one camera in a synthetic catalog of 16 cameras (and its alarms, from an
//! alarm history of one outage a day per camera), and the first byte of an export of one hour of
//! synthetic segment files. Prints figures; asserts nothing about speed.
//!
//! `nvr-web-bench timeline [--cameras 16] [--days 30] [--segment-s 60]`
//! `nvr-web-bench export [--minutes 60] [--segment-s 60] [--frame-bytes 2000]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nvr_web::playback::{self, body, Mode};
use nvr_web::recordings;
use store::mp4::{init_segment, synthetic_video_track, FragmentBuilder, SampleInfo};
use store::{SegmentInsert, SegmentProgress, SegmentState, Store};

#[derive(Parser)]
#[command(
    name = "nvr-web-bench",
    about = "Viewer benchmarks: timeline API, export first byte"
)]
struct Cli {
    #[command(subcommand)]
    mode: BenchMode,
}

#[derive(Subcommand)]
enum BenchMode {
    /// The recordings answer for 30 days of one camera, on a synthetic catalog.
    Timeline {
        #[arg(long, default_value_t = 16)]
        cameras: usize,
        #[arg(long, default_value_t = 30)]
        days: i64,
        #[arg(long, default_value_t = 60)]
        segment_s: i64,
    },
    /// The first byte of an export of synthetic segment files.
    Export {
        #[arg(long, default_value_t = 60)]
        minutes: i64,
        #[arg(long, default_value_t = 60)]
        segment_s: i64,
        #[arg(long, default_value_t = 2000)]
        frame_bytes: usize,
    },
}

const T0_MS: i64 = 1_790_000_000_000;

fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        BenchMode::Timeline {
            cameras,
            days,
            segment_s,
        } => timeline(cameras, days, segment_s),
        BenchMode::Export {
            minutes,
            segment_s,
            frame_bytes,
        } => export(minutes, segment_s, frame_bytes),
    }
}

fn stats(label: &str, mut runs: Vec<Duration>) {
    runs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: median {:.1} ms, min {:.1} ms, max {:.1} ms over {} runs",
        ms(runs[runs.len() / 2]),
        ms(runs[0]),
        ms(runs[runs.len() - 1]),
        runs.len()
    );
}

/// A sealed row of `camera`/main: `span` is (start_ms, end_ms), `counts` (frames, size_bytes).
fn insert(
    store: &Store,
    camera: &str,
    path: &str,
    span: (i64, i64),
    counts: (i64, i64),
    sha: &str,
) -> anyhow::Result<()> {
    let (start_ms, end_ms) = span;
    let (frames, size_bytes) = counts;
    let stream_id = store.ensure_stream(camera, "main")?;
    store.catalog().put_sealed_segment(
        &SegmentInsert {
            stream_id,
            run_id: None,
            node: "node-a",
            path,
            state: SegmentState::Sealed,
            start_ms,
            video_codec: "avc1.640028",
            width: 1280,
            height: 720,
            audio_codec: None,
            created_ms: start_ms,
        },
        &SegmentProgress {
            end_ms,
            media_duration_ms: end_ms - start_ms,
            frames,
            fragments: (end_ms - start_ms) / 1000,
            size_bytes,
        },
        sha,
        end_ms,
        None,
    )?;
    Ok(())
}

fn timeline(cameras: usize, days: i64, segment_s: i64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), "node-a", Arc::new(base::clock::SystemClock))?;
    let per_camera = days * 86_400 / segment_s;
    let started = Instant::now();
    for c in 0..cameras {
        let camera = format!("cam{c:02}");
        for i in 0..per_camera {
            let start_ms = T0_MS + i * segment_s * 1000;
            // One 10-minute gap a day.
            if i % (86_400 / segment_s) == 100 {
                continue;
            }
            let path = format!("media/{camera}/main/{i:07}_node-a.mp4");
            insert(
                &store,
                &camera,
                &path,
                (start_ms, start_ms + segment_s * 1000),
                (segment_s * 25, 1 << 20),
                "00",
            )?;
        }
    }
    println!(
        "synthetic catalog: {cameras} cameras x {days} days of {segment_s} s segments = {} rows, built in {:.1} s",
        per_camera * cameras as i64,
        started.elapsed().as_secs_f64()
    );
    drop(store);
    let clock: Arc<dyn base::clock::Clock> = Arc::new(base::clock::SystemClock);
    let (start, end) = (T0_MS, T0_MS + days * 86_400_000);
    // Seven runs of one camera's timeline up to `to_ms` (the store opened each time, as a request
    // does), and the size of its JSON.
    let one_camera = |to_ms: i64| -> anyhow::Result<(Vec<Duration>, usize)> {
        let (mut runs, mut bytes) = (Vec::new(), 0);
        for _ in 0..7 {
            let t = Instant::now();
            let reader = store::Reader::open(dir.path(), clock.clone())?;
            let v = recordings::recordings_json(&reader, "cam07", "main", start, to_ms)?
                .context("no stream")?;
            bytes = serde_json::to_vec(&v)?.len();
            runs.push(t.elapsed());
        }
        Ok((runs, bytes))
    };
    let (month, bytes) = one_camera(end)?;
    stats(
        &format!("timeline API, one camera, {days} days (merged spans, {bytes} bytes of JSON)"),
        month,
    );
    let (hours, bytes) = one_camera(start + 6 * 3_600_000)?;
    stats(
        &format!("timeline API, one camera, 6 hours (every segment, {bytes} bytes)"),
        hours,
    );
    let t = Instant::now();
    let reader = store::Reader::open(dir.path(), clock)?;
    for c in 0..cameras {
        recordings::recordings_json(&reader, &format!("cam{c:02}"), "main", start, end)?;
    }
    println!(
        "timeline API, all {cameras} cameras one after another, {days} days each: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    timeline_alarms(cameras, days)
}

/// The timeline's alarms for 30 days of one camera: an alarm history with one 5-minute camera-down
/// alarm a day for every camera, written by the watch's own writer; no `sync.db`.
fn timeline_alarms(cameras: usize, days: i64) -> anyhow::Result<()> {
    use nvr_web::alarm_history::AlarmHistory;
    use nvr_web::alarms::{collect, Category};
    use nvr_web::timeline_alarms::{alarms_of_stream, Sources, StreamRef};
    let data = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let mut history = AlarmHistory::open(state.path())?;
    let observed = [Category::CameraDown];
    for day in 0..days {
        let down_ms = T0_MS + day * 86_400_000 + 3_600_000;
        let statuses: Vec<serde_json::Value> = (0..cameras)
            .map(|c| {
                serde_json::json!({"camera": format!("cam{c:02}"), "stream": "main",
                    "mode": "record", "state": "backoff", "last_error": "connection refused",
                    "last_error_ms": down_ms + 2_000, "last_frame_ms": down_ms})
            })
            .collect();
        let down = collect("node-a", None, None, &statuses);
        history.record(down_ms + 2_000, &down, &observed, false)?;
        history.record(down_ms + 300_000, &[], &observed, false)?;
    }
    let (start, end) = (T0_MS, T0_MS + days * 86_400_000);
    let src = Sources {
        node: "node-a",
        protects: &[],
        data_dir: data.path(),
        state_dir: state.path(),
    };
    let stream = StreamRef {
        camera: "cam07",
        stream: "main",
        owner: Some("node-a"),
    };
    let acks = Default::default();
    let mut runs = Vec::new();
    let mut listed = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let mut problems = Vec::new();
        let (alarms, _) = alarms_of_stream(src, &acks, stream, start, end, &mut problems);
        anyhow::ensure!(problems.is_empty(), "{problems:?}");
        listed = alarms.len();
        runs.push(t.elapsed());
    }
    stats(
        &format!(
            "timeline alarms, one camera, {days} days ({listed} of {} camera-down alarms in the history)",
            days * cameras as i64
        ),
        runs,
    );
    Ok(())
}

/// One synthetic segment file of `segment_s` seconds at 25 fps, a key frame every second.
fn write_segment(path: &Path, segment_s: i64, frame_bytes: usize) -> anyhow::Result<(i64, i64)> {
    let mut file = init_segment(&[synthetic_video_track(1280, 720)])?;
    let data = vec![0x5au8; frame_bytes];
    for f in 0..segment_s {
        let mut b = FragmentBuilder::new(f as u32 + 1, &[(1, f as u64 * 90_000)]);
        for i in 0..25 {
            let info = SampleInfo {
                duration: 3600,
                size: frame_bytes as u32,
                is_sync: i == 0,
                composition_offset: 0,
            };
            b.push_sample(0, info, &data);
        }
        file.extend_from_slice(&b.finish());
    }
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(path, &file)?;
    Ok((segment_s * 25, file.len() as i64))
}

fn export(minutes: i64, segment_s: i64, frame_bytes: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), "node-a", Arc::new(base::clock::SystemClock))?;
    let count = minutes * 60 / segment_s;
    let mut total = 0;
    for i in 0..count {
        let rel = format!("media/cam/main/{i:05}_node-a.mp4");
        let (frames, size) = write_segment(&dir.path().join(&rel), segment_s, frame_bytes)?;
        total += size;
        let start_ms = T0_MS + i * segment_s * 1000;
        let sha = store::sha256_file(&dir.path().join(&rel))?;
        insert(
            &store,
            "cam",
            &rel,
            (start_ms, start_ms + segment_s * 1000),
            (frames, size),
            &sha,
        )?;
    }
    drop(store);
    println!(
        "synthetic recording: {count} segments of {segment_s} s ({:.0} MB)",
        total as f64 / 1e6
    );
    let clock: Arc<dyn base::clock::Clock> = Arc::new(base::clock::SystemClock);
    let (start, end) = (T0_MS, T0_MS + minutes * 60_000);
    let mut first = Vec::new();
    let mut plans = Vec::new();
    let mut len = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let reader = store::Reader::open(dir.path(), clock.clone())?;
        let plan = playback::plan(&reader, "cam", "main", start, end, Mode::Export)?;
        plans.push(t.elapsed());
        len = plan.total_len;
        let mut got = false;
        body::produce(
            &plan,
            body::ByteRange {
                first: 0,
                last: plan.total_len - 1,
            },
            &mut |chunk| {
                got = !chunk.is_empty();
                false
            },
        )?;
        anyhow::ensure!(got, "no first byte");
        first.push(t.elapsed());
    }
    stats(
        &format!("export of {minutes} min: plan ({count} files' moofs read)"),
        plans,
    );
    stats(
        &format!("export of {minutes} min: first byte ({len} bytes in all)"),
        first,
    );
    let reader = store::Reader::open(dir.path(), clock)?;
    let plan = playback::plan(&reader, "cam", "main", start, end, Mode::Export)?;
    let t = Instant::now();
    let mut n = 0u64;
    body::produce(
        &plan,
        body::ByteRange {
            first: 0,
            last: plan.total_len - 1,
        },
        &mut |chunk| {
            n += chunk.len() as u64;
            true
        },
    )?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "export of {minutes} min: whole body {:.0} MB in {:.2} s ({:.0} MB/s, files in the page cache)",
        n as f64 / 1e6,
        s,
        n as f64 / 1e6 / s
    );
    Ok(())
}
