//! Recordings flow back (issue 10): the standby's takeover segments are mirrored to their owner by the
//! sync agents, and the owner's catalog holds one timeline per camera. Real processes on loopback (per
//! node its recorder, sync agent and arbiter), the camera simulator's frame stamps counted exactly.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use store::{SegmentRow, SegmentState};

/// Hot streams of the test (each served twice: to the primary and to the standby's shadow session).
const STREAMS: usize = 2;

/// `camera`'s main-stream rows in the catalog of the node at `data` (none while it has no catalog).
fn rows(data: &Path, camera: &str) -> Vec<SegmentRow> {
    let Ok(reader) = store::Reader::open(data, Arc::new(base::clock::SystemClock)) else {
        return Vec::new();
    };
    match reader.find_stream(camera, "main") {
        Ok(Some(id)) => reader.stream_segments(id).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn sealed_by(rows: &[SegmentRow], node: &str, epoch: Option<u64>) -> Vec<SegmentRow> {
    rows.iter()
        .filter(|r| r.node == node && r.epoch == epoch && r.state == SegmentState::Sealed)
        .cloned()
        .collect()
}

/// Every takeover segment the standby recorded of `camera` (`node` = standby, epoch 1) is sealed there
/// and held sealed by the owner with the same size and hash.
fn all_flowed_back(a: &Node, s: &Node, camera: &str) -> bool {
    let standby = rows(&s.data, camera);
    let takeover: Vec<&SegmentRow> = standby
        .iter()
        .filter(|r| r.node == STANDBY && r.epoch == Some(1))
        .collect();
    let owner = rows(&a.data, camera);
    !takeover.is_empty()
        && takeover.iter().all(|t| {
            t.state == SegmentState::Sealed
                && owner.iter().any(|o| {
                    o.path == t.path
                        && o.state == SegmentState::Sealed
                        && o.sha256 == t.sha256
                        && o.size_bytes == t.size_bytes
                })
        })
}

/// Flips a byte in the middle of the sealed (read-only) file at `path`.
fn damage(path: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let middle = f.metadata().expect("stat").len() / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(middle)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    f.seek(SeekFrom::Start(middle)).expect("seek");
    f.write_all(&[byte[0] ^ 0xff]).expect("write");
}

fn sync_status(dir: &TestDir, cfg: &Path, node: &str) -> serde_json::Value {
    let out = std::process::Command::new(nvr_sync_bin())
        .args(["status", "--config", &path_str(cfg), "--node", node])
        .current_dir(dir.path())
        .output()
        .expect("run nvr-sync status");
    assert!(out.status.success(), "nvr-sync status of {node}");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Test 5 of the issue, the owner's side: the primary records, kill -9 of its recorder, sync agent and
/// arbiter, the standby takes over (hot) and records two segments and more, the primary comes back and
/// gets its streams back (failback). Every takeover segment is then in the owner's catalog (`node` =
/// the standby, epoch 1), sealed, read-only, hashing to the standby's hash; `nvr-sync status` shows the
/// flow-back on both sides; a flowed-back copy damaged on the owner is found by its scrub and repaired
/// from the standby; and the owner's timeline read from its own catalog (its own segments, the
/// flowed-back ones, its own again) misses no frame. Frames recorded twice (the returning primary
/// records for a moment before it learns of the takeover, and its recovery brings back fragments not
/// mirrored when it died) are counted and printed: de-duplication is not part of this test.
#[test]
fn takeover_segments_flow_back_to_the_owner_as_one_timeline_without_a_missing_frame() {
    let dir = TestDir::new();
    let (_camsim, port) = spawn_camsim(&dir, STREAMS);
    let a = node(&dir, PRIMARY);
    let s = node(&dir, STANDBY);
    let cams = camsim_cameras(port, STREAMS);
    let cfg = write_cluster(&dir, &a, &s, &cams, &[]);
    // Scrubbing every second: a flowed-back copy damaged on the owner is found and repaired.
    let text = std::fs::read_to_string(&cfg).expect("cluster file");
    std::fs::write(
        &cfg,
        text.replace("scrub_interval_ms = 0", "scrub_interval_ms = 1000"),
    )
    .expect("cluster file");
    let (mut rec_s, mut sync_s, mut arb_s) = spawn_node(&dir, &cfg, STANDBY);
    let (mut rec_a, mut sync_a, mut arb_a) = spawn_node(&dir, &cfg, PRIMARY);
    let cameras: Vec<String> = (1..=STREAMS).map(|i| format!("cam{i}")).collect();

    let ready = wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        let shadows = recorder_status(&dir, &cfg, STANDBY)
            .as_array()
            .is_some_and(|v| {
                v.len() == STREAMS
                    && v.iter().all(|x| {
                        x["state"] == "shadowing" && x["ring_frames"].as_u64().unwrap_or(0) > 50
                    })
            });
        shadows
            && arbiter_status(&dir, &cfg, STANDBY)["peers"][0]["alive"] == true
            && cameras
                .iter()
                .all(|c| sealed_by(&rows(&s.data, c), PRIMARY, None).len() >= 2)
    });
    assert!(
        ready,
        "not ready:\n{}\n{}",
        rec_s.stderr_tail(20),
        sync_s.stderr_tail(20)
    );

    rec_a.kill9();
    sync_a.kill9();
    arb_a.kill9();
    let took_over = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let st = arbiter_status(&dir, &cfg, STANDBY);
        cameras
            .iter()
            .all(|c| holding(&st, &format!("{c}/main")) == Some((STANDBY.to_owned(), 1)))
    });
    assert!(took_over, "{}", arb_s.stderr_tail(30));
    // The standby records for a while: two sealed takeover segments per stream.
    let recorded = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        cameras
            .iter()
            .all(|c| sealed_by(&rows(&s.data, c), STANDBY, Some(1)).len() >= 2)
    });
    assert!(recorded, "{}", rec_s.stderr_tail(30));

    // The primary comes back and gets its streams back.
    rec_a = spawn_recorder(&dir, &cfg, PRIMARY);
    sync_a = spawn_sync(&dir, &cfg, PRIMARY);
    arb_a = spawn_arbiter(&dir, &cfg, PRIMARY);
    let handed_back = wait_until(Duration::from_secs(90), Duration::from_millis(300), || {
        let st = arbiter_status(&dir, &cfg, STANDBY);
        cameras
            .iter()
            .all(|c| holding(&st, &format!("{c}/main")) == Some((PRIMARY.to_owned(), 2)))
    });
    assert!(
        handed_back,
        "{}\n{}",
        arb_s.stderr_tail(30),
        arb_a.stderr_tail(30)
    );
    // Every takeover segment flows back, and the owner records under epoch 2.
    let flowed = wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        cameras.iter().all(|c| {
            all_flowed_back(&a, &s, c) && !sealed_by(&rows(&a.data, c), PRIMARY, Some(2)).is_empty()
        })
    });
    assert!(
        flowed,
        "takeover segments not all on the owner:\n{}\n{}",
        sync_a.stderr_tail(30),
        sync_s.stderr_tail(30)
    );
    // A flowed-back copy damaged on the owner: its scrub finds it and repairs it from the standby.
    let victim = sealed_by(&rows(&a.data, "cam1"), STANDBY, Some(1))
        .into_iter()
        .next()
        .expect("a flowed-back copy");
    let victim_file = a.data.join(&victim.path);
    damage(&victim_file);
    let repaired = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let kinds: Vec<String> = sync_status(&dir, &cfg, PRIMARY)["recent_alarms"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|x| x["segment_path"] == victim.path.as_str())
                    .filter_map(|x| x["kind"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        kinds.iter().any(|k| k == "scrub_mismatch")
            && kinds.iter().any(|k| k == "repaired")
            && store::sha256_file(&victim_file).ok() == victim.sha256
    });
    assert!(
        repaired,
        "damaged copy of {} not repaired:\n{}",
        victim.path,
        sync_a.stderr_tail(30)
    );
    let owner_status = sync_status(&dir, &cfg, PRIMARY);
    let standby_status = sync_status(&dir, &cfg, STANDBY);
    for proc in [&mut arb_a, &mut arb_s] {
        proc.sigterm();
    }
    for proc in [&mut rec_a, &mut rec_s] {
        proc.sigterm();
        proc.expect_clean_exit(Duration::from_secs(30));
    }
    for proc in [&mut sync_a, &mut sync_s] {
        proc.sigterm();
    }

    // `nvr-sync status`: the flow-back direction on both sides.
    let received = &owner_status["flowback"]["peers"][STANDBY];
    println!("owner's flow-back status: {received}");
    assert_eq!(owner_status["flowback"]["role"], "receiver");
    assert_eq!(received["unverified_segments"], 0, "{received}");
    let takeover_total: usize = cameras
        .iter()
        .map(|c| {
            rows(&s.data, c)
                .iter()
                .filter(|r| r.node == STANDBY)
                .count()
        })
        .sum();
    assert!(
        received["segments_held"].as_u64().unwrap_or(0) as usize >= takeover_total,
        "{received}"
    );
    let sent = &standby_status["flowback"]["peers"][PRIMARY];
    println!("standby's flow-back status: {sent}");
    assert_eq!(standby_status["flowback"]["role"], "origin");
    assert_eq!(sent["connected"], true, "{sent}");
    for c in &cameras {
        assert!(sent["streams"][format!("{c}/main")].is_object(), "{sent}");
    }

    for camera in &cameras {
        let owner = rows(&a.data, camera);
        let flowed: Vec<&SegmentRow> = owner.iter().filter(|r| r.node == STANDBY).collect();
        assert!(flowed.len() >= 2, "{camera}: {flowed:?}");
        for r in &flowed {
            let file = a.data.join(&r.path);
            assert_eq!(r.state, SegmentState::Sealed, "{}", r.path);
            assert!(
                r.epoch.is_some_and(|e| e > 0),
                "{}: epoch {:?}",
                r.path,
                r.epoch
            );
            let have = store::sha256_file(&file).expect("hash");
            assert_eq!(Some(have), r.sha256.clone(), "{}", r.path);
            let mode = std::fs::metadata(&file).expect("stat").permissions();
            assert!(mode.readonly(), "{} is writable", r.path);
        }
        // One timeline from the owner's catalog: its part, the standby's, its part again.
        let mut sealed: Vec<&SegmentRow> = owner
            .iter()
            .filter(|r| r.state == SegmentState::Sealed)
            .collect();
        sealed.sort_by_key(|r| r.start_ms);
        let parts: Vec<(String, Option<u64>)> = sealed
            .iter()
            .map(|r| (r.node.clone(), r.epoch))
            .fold(Vec::new(), |mut v, p| {
                if v.last() != Some(&p) {
                    v.push(p);
                }
                v
            });
        let files: Vec<PathBuf> = sealed.iter().map(|r| a.data.join(&r.path)).collect();
        let seqs = frame_seqs(&dir, &files);
        let (missing, duplicated) = missing_and_duplicated(&seqs);
        println!(
            "{camera}: owner's timeline of {} segments, parts {parts:?}: {} frames, {missing} \
             missing, {duplicated} duplicated (recorded twice around the failure and the return)",
            sealed.len(),
            seqs.len()
        );
        let first_standby = parts.iter().position(|p| p.0 == STANDBY);
        let last_standby = parts.iter().rposition(|p| p.0 == STANDBY);
        assert!(
            first_standby.is_some_and(|i| i > 0 && parts[..i].iter().any(|p| p.0 == PRIMARY))
                && last_standby.is_some_and(|i| parts[i + 1..]
                    .iter()
                    .any(|p| *p == (PRIMARY.to_owned(), Some(2)))),
            "{camera}: not the owner's, the standby's and the owner's part again: {parts:?}"
        );
        assert!(seqs.len() > 300, "{camera}: {} frames", seqs.len());
        assert_eq!(
            missing, 0,
            "{camera}: frames missing from the owner's timeline"
        );
        // The same timeline de-duplicated by frame identity (the owner's catalog holds both copies of
        // what both nodes recorded around the failure and the return): each frame once.
        let (frames, missing, duplicated, trimmed, line) =
            timeline_summary(&dir, &a.data, &format!("{camera}/main"));
        println!("{camera}: owner's de-duplicated timeline: {line} ({trimmed} trimmed)");
        assert!(frames > 300, "{camera}: {line}");
        assert_eq!(
            (missing, duplicated),
            (0, 0),
            "{camera}: owner's de-duplicated timeline: {line}"
        );
    }
}
