//! `nvr-failover-bench`: kill -9 of every process of a primary (arbiter, sync agent, recorder) while it
//! records N streams that its standby protects, on loopback with the failover rig of
//! `testkit::cluster` and the camera simulator's frame stamps. For N = 10, 50, 100 hot streams and
//! 10 cold ones (by default), per stream: frames missing in the standby's merged timeline (the mirrored
//! copies of the primary's segments, then the standby's own), exact from camsim's stamps; time from
//! the kill to the standby's first segment under the new epoch (its file's creation); the gap in
//! camera time between the last frame held from the primary and the first frame the standby recorded
//! (camsim's send times; one frame interval when nothing is missing); and per run the detection time
//! (kill → the standby's "node … is dead" event). Prints p50 / p99 / max per run; method and figures
//! in `docs/performance.md`.
//!
//! Needs the release binaries next to it: `cargo build --release --workspace --bins`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;

use nvr_arbiter::mirror;
use testkit::cluster::{
    arbiter_status, holding, node, recorder_status, spawn_arbiter, spawn_camsim_with,
    spawn_recorder, spawn_sync, status_events, write_cluster_with, Cam, Capacity, PRIMARY, STANDBY,
};
use testkit::frames::{frames, missing_and_duplicated, Frame};
use testkit::{wait_until, NvrProcess, TestDir};

#[derive(Parser)]
#[command(
    name = "nvr-failover-bench",
    about = "kill -9 of a primary with N protected streams: missing frames, detection, takeover times"
)]
struct Args {
    /// Hot stream counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    streams: Vec<usize>,
    /// Cold streams of the cold run (0: no cold run).
    #[arg(long, default_value_t = 10)]
    cold: usize,
    /// How long the standby records after the takeover before everything stops, in seconds.
    #[arg(long, default_value_t = 8)]
    after_s: u64,
    /// How long a run may take to be ready (every stream shadowed and mirrored), in seconds.
    #[arg(long, default_value_t = 300)]
    ready_s: u64,
    /// Serve this Annex-B H.264 clip (`nvr camsim --clip`) instead of camsim's embedded one.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// The recorders' `shadow_ring_ms` (the rig's cluster file sets 8000; the default is 5000).
    #[arg(long)]
    shadow_ring_ms: Option<u64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// p50, p99 and max of `v` (nearest rank).
fn percentiles(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (rank(0.50), rank(0.99), s[s.len() - 1])
}

fn row(name: &str, v: &[f64], unit: &str) -> String {
    let (p50, p99, max) = percentiles(v);
    format!("  {name:<34} p50 {p50:>8.0} {unit}  p99 {p99:>8.0} {unit}  max {max:>8.0} {unit}")
}

/// Per stream: what the run measured.
struct StreamResult {
    missing: u64,
    duplicated: u64,
    frames: u64,
    /// Kill → creation of the standby's first segment under the new epoch.
    first_write_ms: Option<i64>,
    /// Camera time from the last frame held from the primary to the first recorded by the standby.
    gap_ms: Option<f64>,
}

/// One run's processes; dropped (SIGKILL of every group) at the end.
struct Rig {
    dir: TestDir,
    cfg: PathBuf,
    standby_data: PathBuf,
    _camsim: NvrProcess,
    primary: Vec<NvrProcess>,
    standby: Vec<NvrProcess>,
}

fn start(n: usize, cold: bool, args: &Args) -> Rig {
    let dir = TestDir::new();
    let clip = args.clip.as_ref().map(|c| c.to_string_lossy().into_owned());
    let extra: Vec<&str> = clip.as_deref().map_or(Vec::new(), |c| vec!["--clip", c]);
    let (camsim, port) = spawn_camsim_with(&dir, n, &extra);
    let a = node(&dir, PRIMARY);
    let s = node(&dir, STANDBY);
    let cams: Vec<Cam> = (1..=n)
        .map(|i| Cam {
            name: format!("cam{i}"),
            url: format!("rtsp://127.0.0.1:{port}/cam{i}"),
            node: PRIMARY.to_owned(),
            cold,
            priority: 100,
            bitrate_kbps: None,
        })
        .collect();
    let cfg = write_cluster_with(&dir, &[&a], &s, Capacity::default(), &cams);
    if let Some(ring) = args.shadow_ring_ms {
        let text = std::fs::read_to_string(&cfg).unwrap_or_default();
        let text = text.replace("shadow_ring_ms = 8000", &format!("shadow_ring_ms = {ring}"));
        dir.write("cluster.toml", text);
    }
    let standby = vec![
        spawn_recorder(&dir, &cfg, STANDBY),
        spawn_sync(&dir, &cfg, STANDBY),
        spawn_arbiter(&dir, &cfg, STANDBY),
    ];
    let primary = vec![
        spawn_recorder(&dir, &cfg, PRIMARY),
        spawn_sync(&dir, &cfg, PRIMARY),
        spawn_arbiter(&dir, &cfg, PRIMARY),
    ];
    Rig {
        standby_data: s.data.clone(),
        dir,
        cfg,
        _camsim: camsim,
        primary,
        standby,
    }
}

/// Waits until the standby hears the primary, shadows every hot stream (idle cold ones) and holds
/// two mirrored segments of every stream; `Err` says what was missing at the deadline.
fn wait_ready(rig: &Rig, n: usize, cold: bool, within: Duration) -> Result<(), String> {
    let mut why = String::new();
    let ready = wait_until(within, Duration::from_secs(1), || {
        let st = recorder_status(&rig.dir, &rig.cfg, STANDBY);
        let shadowing = st.as_array().map_or(0, |a| {
            a.iter()
                .filter(|x| {
                    if cold {
                        x["mode"] == "off"
                    } else {
                        x["state"] == "shadowing" && x["ring_frames"].as_u64().unwrap_or(0) > 50
                    }
                })
                .count()
        });
        let heard = arbiter_status(&rig.dir, &rig.cfg, STANDBY)["peers"][0]["alive"] == true;
        let mirrored = store::Reader::open(&rig.standby_data, Arc::new(base::clock::SystemClock))
            .map_or(0, |r| {
                (1..=n)
                    .filter(|i| {
                        mirror::copies(&r, PRIMARY, &format!("cam{i}"), "main")
                            .is_ok_and(|c| c.len() >= 3)
                    })
                    .count()
            });
        why = format!(
            "standby hears the primary: {heard}; streams {} on the standby: {shadowing}/{n}; streams \
             with 3 mirrored segments: {mirrored}/{n}",
            if cold { "idle" } else { "shadowed" }
        );
        heard && shadowing == n && mirrored == n
    });
    if ready {
        Ok(())
    } else {
        Err(why)
    }
}

/// One run: start, kill -9 the primary, measure. `Err` when the machine could not hold the run.
fn run(n: usize, cold: bool, args: &Args) -> Result<()> {
    let label = format!(
        "{n} {} streams{}",
        if cold { "cold" } else { "hot" },
        args.shadow_ring_ms
            .map_or_else(String::new, |r| format!(", shadow_ring_ms {r}"))
    );
    println!("== {label} (load average {})", load_average());
    let started = Instant::now();
    let mut rig = start(n, cold, args);
    if let Err(why) = wait_ready(&rig, n, cold, Duration::from_secs(args.ready_s)) {
        bail!(
            "{label}: not ready after {} s: {why}\nstandby recorder:\n{}\nstandby agent:\n{}",
            args.ready_s,
            rig.standby[0].stderr_tail(10),
            rig.standby[1].stderr_tail(10)
        );
    }
    println!(
        "  ready after {:.0} s (load average {})",
        started.elapsed().as_secs_f64(),
        load_average()
    );

    // The arbiter first (its silence is what the standby detects), then the sync agent and the
    // recorder, a few ms apart.
    let kill_ms = now_ms();
    for p in rig.primary.iter_mut().rev() {
        p.kill9();
    }
    let keys: Vec<String> = (1..=n).map(|i| format!("cam{i}/main")).collect();
    let deadline_s = 60 + n as u64 / 2;
    // The status keeps the last events only (100 streams make 200 of them): gather them as they come.
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut gather = |st: &serde_json::Value| {
        for e in status_events(st) {
            if !events.contains(&e) {
                events.push(e);
            }
        }
    };
    let held = wait_until(
        Duration::from_secs(deadline_s),
        Duration::from_millis(100),
        || {
            let st = arbiter_status(&rig.dir, &rig.cfg, STANDBY);
            gather(&st);
            keys.iter()
                .all(|k| holding(&st, k) == Some((STANDBY.to_owned(), 1)))
        },
    );
    let recording = wait_until(
        Duration::from_secs(deadline_s),
        Duration::from_millis(200),
        || {
            recorder_status(&rig.dir, &rig.cfg, STANDBY)
                .as_array()
                .is_some_and(|a| {
                    a.len() == n
                        && a.iter()
                            .all(|x| x["mode"] == "record" && x["state"] == "recording")
                })
        },
    );
    let all_recording_ms = now_ms() - kill_ms;
    if !held || !recording {
        bail!(
            "{label}: the standby did not take every stream over (held {held}, recording {recording})\n{}",
            rig.standby[2].stderr_tail(20)
        );
    }
    std::thread::sleep(Duration::from_secs(args.after_s));
    gather(&arbiter_status(&rig.dir, &rig.cfg, STANDBY));
    for p in rig.standby.iter_mut().rev() {
        p.sigterm();
    }
    for p in rig.standby.iter_mut() {
        p.wait_exit(Duration::from_secs(60));
    }

    let dead = events
        .iter()
        .find(|(_, m)| m.starts_with(&format!("node {PRIMARY} is dead")))
        .context("no detection event in the standby's status")?;
    let detection_ms = dead.0 - kill_ms;
    let silent_ms: Option<i64> = dead
        .1
        .split("silent for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok());
    let reader = store::Reader::open(&rig.standby_data, Arc::new(base::clock::SystemClock))
        .context("the standby's catalog")?;
    let mut results = Vec::new();
    for i in 1..=n {
        let camera = format!("cam{i}");
        let primary: Vec<PathBuf> = mirror::copies(&reader, PRIMARY, &camera, "main")?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let own: Vec<PathBuf> = mirror::copies(&reader, STANDBY, &camera, "main")?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let all: Vec<PathBuf> = primary.iter().chain(&own).cloned().collect();
        let listed = frames(&rig.dir, &all);
        let seqs: Vec<u64> = listed.iter().map(|f| f.seq).collect();
        let (missing, duplicated) = missing_and_duplicated(&seqs);
        if duplicated > 0 || (missing > 0 && !cold) {
            println!(
                "  {camera}: {}",
                describe(&listed, &own, missing, duplicated)
            );
        }
        let first_write_ms = reader
            .find_stream(&camera, "main")?
            .map(|id| reader.stream_segments(id))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.node == STANDBY && s.epoch == Some(1))
            .min_by_key(|s| s.start_ms)
            .and_then(|s| std::fs::metadata(reader.absolute_path(&s.path)).ok())
            .and_then(|m| m.created().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64 - kill_ms);
        results.push(StreamResult {
            missing,
            duplicated,
            frames: seqs.len() as u64,
            first_write_ms,
            gap_ms: camera_gap_ms(&listed, &own),
        });
    }
    let gop = gop_frames(&rig, &reader);
    report(
        &label,
        &results,
        detection_ms,
        silent_ms,
        all_recording_ms,
        gop,
    );
    Ok(())
}

/// Where a stream's timeline misses or repeats frames: the primary's part and the standby's, and the
/// repeated sequence numbers.
fn describe(listed: &[Frame], own: &[PathBuf], missing: u64, duplicated: u64) -> String {
    let own: Vec<String> = own
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let range = |mine: bool| {
        let seqs = listed
            .iter()
            .filter(|f| own.contains(&f.file) == mine)
            .map(|f| f.seq);
        match (seqs.clone().min(), seqs.max()) {
            (Some(a), Some(b)) => format!("{a}..{b}"),
            _ => "-".to_owned(),
        }
    };
    let mut seen = std::collections::BTreeMap::new();
    for f in listed {
        *seen.entry(f.seq).or_insert(0u32) += 1;
    }
    let repeated: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    format!(
        "{missing} missing, {duplicated} duplicated (seq {:?}..{:?}); primary's part {}, standby's {}",
        repeated.first(),
        repeated.last(),
        range(false),
        range(true)
    )
}

/// The camera time (camsim's send times) between the last frame of the primary's part below the
/// standby's first frame and that first frame.
fn camera_gap_ms(listed: &[Frame], own: &[PathBuf]) -> Option<f64> {
    let own: Vec<String> = own
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let first_own = listed
        .iter()
        .filter(|f| own.contains(&f.file))
        .min_by_key(|f| f.seq)?;
    let last_before = listed
        .iter()
        .filter(|f| !own.contains(&f.file) && f.seq < first_own.seq)
        .max_by_key(|f| f.seq)?;
    Some((first_own.send_time_us as f64 - last_before.send_time_us as f64) / 1000.0)
}

/// Frames per GOP of the served clip: the distance between key frames in one mirrored segment.
fn gop_frames(rig: &Rig, reader: &store::Reader) -> Option<usize> {
    let files: Vec<PathBuf> = mirror::copies(reader, PRIMARY, "cam1", "main")
        .ok()?
        .into_iter()
        .skip(1)
        .take(1)
        .map(|(p, _)| p)
        .collect();
    let keys: Vec<usize> = frames(&rig.dir, &files)
        .iter()
        .enumerate()
        .filter(|(_, f)| f.key)
        .map(|(i, _)| i)
        .collect();
    keys.windows(2).map(|w| w[1] - w[0]).max()
}

fn report(
    label: &str,
    results: &[StreamResult],
    detection_ms: i64,
    silent_ms: Option<i64>,
    all_recording_ms: i64,
    gop: Option<usize>,
) {
    let col = |f: &dyn Fn(&StreamResult) -> Option<f64>| -> Vec<f64> {
        results.iter().filter_map(f).collect()
    };
    let missing = col(&|r| Some(r.missing as f64));
    let total_missing: u64 = results.iter().map(|r| r.missing).sum();
    let total_dup: u64 = results.iter().map(|r| r.duplicated).sum();
    let total_frames: u64 = results.iter().map(|r| r.frames).sum();
    println!(
        "  detection: declared dead {detection_ms} ms after the kill (silent for {} ms); every stream \
         recording on the standby {all_recording_ms} ms after the kill (polled); GOP {} frames",
        silent_ms.map_or_else(|| "?".to_owned(), |v| v.to_string()),
        gop.map_or_else(|| "?".to_owned(), |g| g.to_string())
    );
    println!(
        "  frames: {total_frames} in the merged timelines, {total_missing} missing, {total_dup} duplicated"
    );
    println!("{}", row("missing frames per stream", &missing, "  "));
    let first = col(&|r| r.first_write_ms.map(|v| v as f64));
    println!(
        "{}  ({} of {} streams)",
        row("kill → first segment written, ms", &first, "ms"),
        first.len(),
        results.len()
    );
    let gaps = col(&|r| r.gap_ms);
    println!(
        "{}  ({} of {} streams)",
        row("gap, camera time, ms", &gaps, "ms"),
        gaps.len(),
        results.len()
    );
    println!("== {label}: done");
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut runs: Vec<(usize, bool)> = args.streams.iter().map(|n| (*n, false)).collect();
    if args.cold > 0 {
        runs.push((args.cold, true));
    }
    let mut failed = Vec::new();
    for (n, cold) in runs {
        if let Err(e) = run(n, cold, &args) {
            println!("  FAILED: {e:#}");
            failed.push(n);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("runs that could not be completed: {failed:?}")
    }
}
