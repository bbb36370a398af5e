//! `nvr-sync-bench tamper`: a recording primary (camera simulator, recorder, both agents) whose sealed
//! files are encrypted in place, run after run; the time from the first change to the first alarm, to
//! the critical `tampering` alarm and to the last file repaired from the standby, from the agent's own
//! alarm and status timestamps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{bin, free_port, spawn, stop, write_configs_with};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sealed rows of node-a on the primary that the standby holds with the same hash (path -> sha256).
fn mirrored(data_a: &Path, data_s: &Path) -> BTreeMap<String, String> {
    let rows = |dir: &Path| -> BTreeMap<String, String> {
        store::Reader::open(dir, Arc::new(base::clock::SystemClock))
            .and_then(|r| r.segments_in_state(store::SegmentState::Sealed))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.node == "node-a")
            .filter_map(|r| Some((r.path, r.sha256?)))
            .collect()
    };
    if !data_a.join("catalog.db").exists() || !data_s.join("catalog.db").exists() {
        return BTreeMap::new();
    }
    let standby = rows(data_s);
    rows(data_a)
        .into_iter()
        .filter(|(p, h)| standby.get(p) == Some(h))
        .collect()
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn tamper_status(data_a: &Path) -> serde_json::Value {
    std::fs::read(data_a.join("sync-status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| v["tamper"].clone())
        .unwrap_or(serde_json::Value::Null)
}

fn encrypt_in_place(path: &Path, seed: &mut u64) -> Result<()> {
    let len = std::fs::metadata(path)?.len() as usize;
    let junk: Vec<u8> = (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect();
    let mut perms = std::fs::metadata(path)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms)?;
    std::fs::write(path, junk)?;
    Ok(())
}

/// One attack: returns (ms to the first alarm, ms to the tampering alarm, ms to the last repair).
fn attack(data_a: &Path, targets: &[(String, String)], seed: &mut u64) -> Result<(i64, i64, i64)> {
    let repaired_before = tamper_status(data_a)["files_repaired"]
        .as_u64()
        .unwrap_or(0);
    let t0 = now_ms();
    for (path, _) in targets {
        encrypt_in_place(&data_a.join(path), seed)?;
    }
    let db = nvr_sync::syncdb::SyncDb::open(data_a)?;
    let alarm_at = |kind: &str| -> Option<i64> {
        db.alarms(0)
            .ok()?
            .into_iter()
            .filter(|a| a.kind == kind && a.time_ms >= t0)
            .map(|a| a.time_ms)
            .min()
    };
    let mut critical = None;
    if !wait(Duration::from_secs(30), || {
        critical = alarm_at("tampering");
        critical.is_some()
    }) {
        bail!("no tampering alarm within 30 s");
    }
    let first = [alarm_at("tamper"), critical]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(t0);
    let all_good = || {
        targets.iter().all(|(path, sha)| {
            store::sha256_file(&data_a.join(path)).is_ok_and(|have| &have == sha)
        })
    };
    if !wait(Duration::from_secs(60), all_good) {
        bail!("not every file bit-identical again within 60 s");
    }
    // The status is written every 250 ms: let it catch up with the last repair.
    let want = repaired_before + targets.len() as u64;
    let mut last_repair = None;
    if !wait(Duration::from_secs(5), || {
        let t = tamper_status(data_a);
        last_repair = t["last_repaired_ms"].as_i64();
        t["files_repaired"].as_u64().unwrap_or(0) >= want
    }) {
        bail!("the status counts fewer repairs than files");
    }
    // The attack is over once a whole window passed without a change.
    if !wait(Duration::from_secs(30), || {
        alarm_at("tampering_over").is_some()
    }) {
        bail!("no tampering_over alarm");
    }
    Ok((
        first - t0,
        critical.unwrap_or(t0) - t0,
        last_repair.unwrap_or(t0) - t0,
    ))
}

pub fn run(runs: usize, files: usize, streams: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let data_a = dir.join("a");
    let data_s = dir.join("s");
    let nvr = bin("nvr")?;
    let agent = bin("nvr-sync")?;
    let cam_port = free_port()?;
    let cam_args = [
        "camsim".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{cam_port}"),
        "--streams".to_owned(),
        streams.to_string(),
    ];
    let cam_args: Vec<&str> = cam_args.iter().map(String::as_str).collect();
    let mut camsim = spawn(&nvr, &cam_args, &dir.join("camsim.log"))?;
    let mut rec = String::new();
    for i in 1..=streams {
        rec.push_str(&format!("[[cameras]]\nname = \"cam{i}\"\nnode = \"node-a\"\n[cameras.streams.main]\nurl = \"rtsp://127.0.0.1:{cam_port}/cam{i}\"\n"));
    }
    let nodes = write_configs_with(dir, &data_a, &data_s, &rec, 2, "tamper_window_ms = 2000\n")?;
    let mut recorder = nodes.run(&nvr, "node-a", &dir.join("rec.log"))?;
    let mut standby = nodes.start_standby(&agent, dir)?;
    let mut primary = nodes.start_primary(&agent, dir)?;
    let mut targets: Vec<(String, String)> = Vec::new();
    let ready = wait(Duration::from_secs(120), || {
        targets = mirrored(&data_a, &data_s).into_iter().take(files).collect();
        targets.len() >= files
    });
    let mut results = Vec::new();
    let mut failure = None;
    if !ready {
        failure = Some(format!("only {} of {files} files mirrored", targets.len()));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..runs {
        if failure.is_some() {
            break;
        }
        match attack(&data_a, &targets, &mut seed) {
            Ok(r) => results.push(r),
            Err(e) => failure = Some(format!("run {i}: {e}")),
        }
    }
    let recording = recorder.try_wait().ok().flatten().is_none();
    stop(&mut primary);
    stop(&mut standby);
    stop(&mut recorder);
    stop(&mut camsim);
    if let Some(f) = failure {
        bail!("{f} (logs were in {})", dir.display());
    }
    let figures = |pick: fn(&(i64, i64, i64)) -> i64| {
        let mut v: Vec<i64> = results.iter().map(pick).collect();
        v.sort_unstable();
        let p50 = v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0);
        (p50, v.last().copied().unwrap_or(0))
    };
    let (a50, amax) = figures(|r| r.0);
    let (c50, cmax) = figures(|r| r.1);
    let (r50, rmax) = figures(|r| r.2);
    println!(
        "{runs} runs, {files} sealed files encrypted in place per run ({streams} recorded streams, 2 s segments, tamper_window_ms 2000); recorder still recording: {recording}"
    );
    println!("first alarm after the first change  ms p50 {a50:6} max {amax:6}");
    println!("tampering alarm                     ms p50 {c50:6} max {cmax:6}");
    println!("last file repaired from the standby ms p50 {r50:6} max {rmax:6}");
    Ok(())
}
