//! End-to-end tests of the mirroring data path under crashes and stalls: real recorder, real agents as
//! processes on loopback, real faults (kill -9, a segment file cut back to a fragment boundary as
//! power-loss recovery does, a damaged `sync.db`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;

type Pair = RunningPair;

/// Camera simulator (one stream) + recorder + standby agent + primary agent; `adjust` edits the
/// cluster file before it is written.
fn start_pair(adjust: impl FnOnce(&mut ClusterFile)) -> Pair {
    let dir = TestDir::new();
    let (camsim, cam_port) = rig::cluster::spawn_camsim(&dir, 1);
    let mut cluster = new_pair(&dir);
    cluster.cameras = camsim_cameras(cam_port, 1);
    adjust(&mut cluster);
    let cfg = cluster.write(&dir);
    RunningPair::spawn(dir, &cluster, cfg, camsim)
}

/// The stalls listed in the status file at `data_dir`.
fn stalls(data_dir: &Path) -> Vec<serde_json::Value> {
    status_file(data_dir)["stalls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The largest `lag_ms` of any stream in the primary's status.
fn max_lag_ms(data_a: &Path) -> i64 {
    status_file(data_a)["peers"]["standby-1"]["streams"]
        .as_object()
        .map(|streams| {
            streams
                .values()
                .filter_map(|v| v["lag_ms"].as_i64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Ends of the complete fragments of the file at `path` (empty if unreadable).
fn fragment_ends(path: &Path) -> Vec<u64> {
    store::mp4::scan_file(path)
        .map(|r| r.fragments.iter().map(|f| f.offset + f.len).collect())
        .unwrap_or_default()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Stops the recorder and waits until the standby holds every sealed segment of the primary with the
/// primary's hash.
fn stop_and_converge(p: &mut Pair, timeout: Duration) {
    p.recorder.sigterm();
    p.recorder.expect_clean_exit(Duration::from_secs(30));
    let want = sealed_on(&p.data_a, "node-a");
    assert!(!want.is_empty());
    let converged = wait_until(timeout, Duration::from_millis(300), || {
        let have = sealed_on(&p.data_s, "node-a");
        want.iter().all(|(path, sha)| have.get(path) == Some(sha))
    });
    p.assert_converged(converged, &want, &sealed_on(&p.data_s, "node-a"));
}

/// Waits (a minute at most) until the standby holds `n` sealed copies of node-a's segments.
fn wait_mirrored(p: &Pair, n: usize) {
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            sealed_on(&p.data_s, "node-a").len() >= n
        }),
        "nothing mirrored\n{}",
        p.primary.stderr_tail(30)
    );
}

/// Stops node-a's agent, for a test to speak to the standby in its place: node-a's identity and the
/// standby as node-a's agent reaches it.
fn stand_in_for_the_primary_agent(
    p: &mut Pair,
) -> (nvr_sync::identity::NodeIdentity, nvr_sync::config::Peer) {
    p.primary.sigterm();
    p.primary.expect_clean_exit(Duration::from_secs(20));
    let id = nvr_sync::identity::load(&identity_dir(&p.dir, "node-a")).expect("identity");
    let cfg = nvr_sync::config::SyncConfig::load(&p.cfg, Some("node-a")).expect("config");
    (id, cfg.peers[0].clone())
}

/// Issue 8, defect 2. The primary mirrors bytes before they are durable; a power loss then cuts its
/// open segment back to an earlier fragment boundary, so the standby holds more than the primary's
/// sealed file. The standby must seal the prefix that matches the primary's hash (the longer tail
/// kept in quarantine, with an alarm), and mirroring of later segments must go on.
#[test]
fn a_segment_cut_back_after_a_crash_seals_on_the_standby_and_later_ones_follow() {
    let mut p = start_pair(|c| c.segment_s = 10);
    // The recorder's open segment, once the standby holds at least two of its fragments.
    let mut open: Option<(String, u64)> = None;
    let found = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let Some((path, _)) = segments_on(&p.data_a, "node-a", store::SegmentState::Open)
            .into_iter()
            .next()
        else {
            return false;
        };
        let ends = fragment_ends(&p.data_a.join(&path));
        let held = file_len(&p.data_s.join("incoming/node-a").join(&path));
        if ends.len() >= 3 && held >= ends[1] {
            open = Some((path, held));
            return true;
        }
        false
    });
    assert!(
        found,
        "the standby never held two fragments of an open segment\nprimary:\n{}",
        p.primary.stderr_tail(30)
    );
    let (path, _) = open.expect("open segment");
    // The crash: both processes on the primary die at once.
    p.primary.kill9();
    p.recorder.kill9();
    let staged = p.data_s.join("incoming/node-a").join(&path);
    let held = file_len(&staged);
    let primary_file = p.data_a.join(&path);
    // What power-loss recovery leaves: the file cut back to a fragment boundary below what the
    // standby holds (the bytes after it were never durable on the primary).
    let cut = fragment_ends(&primary_file)
        .into_iter()
        .filter(|&e| e < held)
        .max()
        .expect("a fragment boundary below what the standby holds");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&primary_file)
        .and_then(|f| f.set_len(cut))
        .expect("cut the primary's file");
    println!("standby holds {held} bytes of {path}; primary cut back to {cut}");

    p.recorder = spawn_recorder(&p.dir, &p.cfg, "node-a");
    p.primary = spawn_sync(&p.dir, &p.cfg, "node-a");
    let sealed = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let want = sealed_on(&p.data_a, "node-a").get(&path).cloned();
        want.is_some() && sealed_on(&p.data_s, "node-a").get(&path) == want.as_ref()
    });
    assert!(
        sealed,
        "{path} never sealed on the standby\nprimary:\n{}\nstandby:\n{}",
        p.primary.stderr_tail(30),
        p.standby.stderr_tail(30)
    );
    assert_eq!(file_len(&p.data_s.join(&path)), cut);
    assert!(!staged.exists(), "staging copy left behind");
    let alarm = alarms(&p.data_s)
        .into_iter()
        .find(|a| a.kind == "crash_cut" && a.segment_path.as_deref() == Some(path.as_str()));
    assert!(
        alarm.is_some(),
        "no crash_cut alarm: {:?}",
        alarms(&p.data_s)
    );
    // The tail the primary lost is kept, not discarded.
    let tails: Vec<u64> = std::fs::read_dir(p.data_s.join("quarantine"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| file_len(&e.path()))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        tails.contains(&(held - cut)),
        "quarantine holds {tails:?}, expected the {} bytes of the tail",
        held - cut
    );
    // Later segments are mirrored.
    let before = sealed_on(&p.data_a, "node-a").len();
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            sealed_on(&p.data_a, "node-a").len() > before
        }),
        "the recorder sealed nothing after the restart"
    );
    stop_and_converge(&mut p, Duration::from_secs(60));
    assert!(p.primary.is_running() && p.standby.is_running());
}

/// Issue 8, defect 12 (the drill of the issue): a leaf row deleted from the primary's `sync.db` makes
/// every log update fail ("leaf N appended, the next index is N+1"), so mirroring stops. That must
/// raise an alarm within the configured bound, show in the status with how long it has lasted, and
/// the streams' `lag_ms` must not read 0 meanwhile.
#[test]
fn a_damaged_log_on_the_primary_raises_an_alarm_and_shows_in_the_status() {
    let mut p = start_pair(|c| c.extra = "stall_alarm_ms = 3000".into());
    let leaves = |data: &Path| {
        nvr_sync::syncdb::SyncDb::open(data)
            .and_then(|db| db.leaf_count("node-a"))
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            leaves(&p.data_a) >= 3 && sealed_on(&p.data_s, "node-a").len() >= 3
        }),
        "nothing logged and mirrored\n{}",
        p.primary.stderr_tail(30)
    );
    p.primary.sigterm();
    p.primary.expect_clean_exit(Duration::from_secs(20));
    let db = rusqlite::Connection::open(p.data_a.join("sync.db")).expect("open sync.db");
    let deleted = db
        .execute(
            "DELETE FROM leaves WHERE log_node = 'node-a' AND leaf_index = 1",
            [],
        )
        .expect("delete a leaf row");
    assert_eq!(deleted, 1);
    drop(db);
    assert!(alarms(&p.data_a).is_empty(), "{:?}", alarms(&p.data_a));

    p.primary = spawn_sync(&p.dir, &p.cfg, "node-a");
    let alarmed = wait_until(Duration::from_secs(40), Duration::from_millis(300), || {
        alarms(&p.data_a).iter().any(|a| a.kind == "log_error")
    });
    assert!(
        alarmed,
        "no log_error alarm: {:?}\nprimary:\n{}",
        alarms(&p.data_a),
        p.primary.stderr_tail(30)
    );
    let stall = stalls(&p.data_a)
        .into_iter()
        .find(|s| s["kind"] == "log_error")
        .unwrap_or_else(|| panic!("status shows no log stall: {}", status_file(&p.data_a)));
    assert!(stall["waited_ms"].as_i64() >= Some(3000), "{stall}");
    assert!(
        stall["detail"]
            .as_str()
            .unwrap_or("")
            .contains("the next index is"),
        "{stall}"
    );
    // The recorder goes on; what it records waits, and the lag says so.
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
            max_lag_ms(&p.data_a) > 0
        }),
        "lag_ms reads 0 while mirroring is stopped: {}",
        status_file(&p.data_a)
    );
    assert!(p.recorder.is_running());
}

/// Issue 8, defects 2 and 12: a standby that cannot store anything (a file where its staging
/// directory should be) stops mirroring; both sides raise an alarm within the bound, the primary's
/// status names the waiting segment and how long it has waited, `lag_ms` is not 0. Once the standby
/// can store again, everything is mirrored and the stalls are cleared.
#[test]
fn a_standby_that_cannot_store_raises_stall_alarms_on_both_sides_and_recovers() {
    let mut p = start_pair(|c| {
        let incoming = c.standby_data.join("incoming/node-a");
        std::fs::create_dir_all(&incoming).expect("mkdir incoming");
        std::fs::write(incoming.join("media"), "not a directory").expect("blocker");
        c.extra = "stall_alarm_ms = 3000".into();
    });
    let blocker = p.data_s.join("incoming/node-a/media");
    let alarmed = wait_until(Duration::from_secs(40), Duration::from_millis(300), || {
        alarms(&p.data_a).iter().any(|a| a.kind == "segment_stuck")
            && alarms(&p.data_s).iter().any(|a| a.kind == "store_error")
    });
    assert!(
        alarmed,
        "primary alarms {:?}\nstandby alarms {:?}\nprimary:\n{}",
        alarms(&p.data_a),
        alarms(&p.data_s),
        p.primary.stderr_tail(30)
    );
    let stuck = stalls(&p.data_a)
        .into_iter()
        .find(|s| s["kind"] == "segment_stuck")
        .unwrap_or_else(|| panic!("status shows no stuck segment: {}", status_file(&p.data_a)));
    let segment = stuck["segment"].as_str().unwrap_or("").to_owned();
    assert!(segment.starts_with("media/cam1/main/"), "{stuck}");
    assert!(stuck["waited_ms"].as_i64() >= Some(3000), "{stuck}");
    assert!(max_lag_ms(&p.data_a) >= 3000, "{}", status_file(&p.data_a));
    assert!(
        stalls(&p.data_s).iter().any(|s| s["kind"] == "store_error"),
        "{}",
        status_file(&p.data_s)
    );

    std::fs::remove_file(&blocker).expect("remove blocker");
    stop_and_converge(&mut p, Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
            stalls(&p.data_a).is_empty() && stalls(&p.data_s).is_empty()
        }),
        "stalls not cleared: primary {:?} standby {:?}",
        stalls(&p.data_a),
        stalls(&p.data_s)
    );
}

/// Issue 8, defect 3. Speaking as the primary (its own certificate and key): bytes the standby has
/// acknowledged for a path cannot be dropped by a seal with another hash and replaced by a fresh copy
/// from offset 0, and a seal that matches the held bytes does not publish while no logged leaf
/// covers the path.
#[test]
fn acknowledged_bytes_are_never_replaced_and_an_unlogged_seal_does_not_publish() {
    use nvr_sync::proto::{Message, SegmentKey};

    let mut p = start_pair(|_| {});
    wait_mirrored(&p, 2);
    let (id, standby) = stand_in_for_the_primary_agent(&mut p);
    let path = "media/cam1/main/2030-01-01/20300101T000000000Z_node-a.mp4";
    let key = SegmentKey {
        origin_node: "node-a".into(),
        path: path.into(),
    };
    let held = vec![0x11u8; 4096];
    let forged = vec![0x22u8; 4096];
    let sha = |b: &[u8]| base::hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    let seal = |sha256: String| Message::SegmentSealed {
        key: key.clone(),
        size_bytes: 4096,
        sha256,
        end_ms: 1_893_456_004_000,
        frames: 100,
        leaf_index: 1_000_000,
        epoch: None,
    };

    let rt = runtime();
    rt.block_on(async {
        let (mut conn, _) = connect_as_node_a(&id, &standby).await;
        open_segment_with(&mut conn, &key, "cam1", held.clone()).await;
        expect_ack(&mut conn, 4096).await;
        // A seal with another hash is refused ...
        conn.send(&seal(sha(&forged))).await.expect("send");
        let reply = next_reply(&mut conn).await;
        assert!(matches!(reply, Message::Refused { .. }), "{reply:?}");
        // ... and does not let the path start afresh with other bytes.
        send_segment_data(&mut conn, &key, 0, forged.clone()).await;
        let reply = next_reply(&mut conn).await;
        assert!(
            matches!(reply, Message::Refused { .. }),
            "bytes at offset 0 replaced the acknowledged ones: {reply:?}"
        );
        // A seal matching the held bytes, with no leaf logging the path: the standby answers the
        // ping that follows it, and nothing before.
        conn.send(&seal(sha(&held))).await.expect("send");
        conn.send(&Message::Ping {
            nonce: 77,
            sent_ms: 0,
        })
        .await
        .expect("send");
        match next_reply(&mut conn).await {
            Message::Pong { nonce: 77, .. } => {}
            other => panic!("expected only the Pong, got {other:?}"),
        }
    });
    assert!(
        !p.data_s.join(path).exists(),
        "published without a logged leaf"
    );
    assert!(!sealed_on(&p.data_s, "node-a").contains_key(path));
    // Held complete but unverified, and counted so.
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            status_file(&p.data_s)["peers"]["node-a"]["unverified_segments"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        }),
        "status: {}",
        status_file(&p.data_s)["peers"]["node-a"]
    );
    let staged = std::fs::read(p.data_s.join("incoming/node-a").join(path)).expect("staged copy");
    assert!(staged == held, "the acknowledged bytes were changed");
    // The honest primary carries on.
    p.primary = spawn_sync(&p.dir, &p.cfg, "node-a");
    stop_and_converge(&mut p, Duration::from_secs(60));
}

/// Issue 8, defect 4. Speaking as the primary: a camera the cluster file does not give it is refused
/// (it would get a retention budget of its own on the standby), and unverified bytes (staging and
/// quarantine) stop at the per-origin quota with an alarm, leaving every verified copy alone.
#[test]
fn invented_cameras_are_refused_and_unverified_bytes_stop_at_the_quota() {
    use nvr_sync::proto::{Message, SegmentKey};

    const QUOTA: u64 = 12_000_000;
    let mut p = start_pair(|c| c.extra = format!("mirror_quota_bytes = {QUOTA}"));
    wait_mirrored(&p, 2);
    let (id, standby) = stand_in_for_the_primary_agent(&mut p);
    let verified = media_files(&p.data_s);
    let key = |camera: &str| SegmentKey {
        origin_node: "node-a".into(),
        path: format!("media/{camera}/main/2030-01-01/20300101T000000000Z_node-a.mp4"),
    };
    let rt = runtime();
    let acked = rt.block_on(async {
        let (mut conn, _) = connect_as_node_a(&id, &standby).await;
        // An invented camera.
        conn.send(&Message::SegmentOpen {
            key: key("cam9"),
            info: segment_info("cam9"),
        })
        .await
        .expect("send");
        let reply = next_reply(&mut conn).await;
        assert!(matches!(reply, Message::Refused { .. }), "{reply:?}");
        send_segment_data(&mut conn, &key("cam9"), 0, vec![1u8; 1000]).await;
        let reply = next_reply(&mut conn).await;
        assert!(matches!(reply, Message::Refused { .. }), "{reply:?}");
        // A real camera, but far more bytes than the quota, never sealed.
        conn.send(&Message::SegmentOpen {
            key: key("cam1"),
            info: segment_info("cam1"),
        })
        .await
        .expect("send");
        let chunk = vec![0x33u8; 1 << 20];
        let mut acked = 0u64;
        for i in 0..(QUOTA / (1 << 20) + 4) {
            send_segment_data(&mut conn, &key("cam1"), i << 20, chunk.clone()).await;
            match next_reply(&mut conn).await {
                Message::Ack { bytes_durable, .. } => acked = bytes_durable,
                Message::Refused { .. } => return acked,
                other => panic!("expected Ack or Refused, got {other:?}"),
            }
        }
        panic!("{acked} bytes acknowledged, past the quota of {QUOTA}");
    });
    assert!(acked > 0 && acked <= QUOTA, "{acked} bytes acknowledged");
    assert!(!p.data_s.join("incoming/node-a/media/cam9").exists());
    let kinds: Vec<String> = alarms(&p.data_s).into_iter().map(|a| a.kind).collect();
    assert!(kinds.iter().any(|k| k == "unknown_stream"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "quota_exceeded"), "{kinds:?}");
    // Nothing verified was touched to make room.
    let now = media_files(&p.data_s);
    for (path, sha) in &verified {
        assert_eq!(now.get(path), Some(sha), "{path} changed");
    }
    assert!(p.standby.is_running());
}

/// Issue 8, defect 4: a staging copy nothing is appended to any more expires after
/// `staging_expire_ms`: it is kept in quarantine (never deleted), an alarm says so, and its path
/// cannot be started again with other bytes.
#[test]
fn a_stale_staging_copy_expires_to_quarantine_and_its_path_stays_closed() {
    use nvr_sync::proto::{Message, SegmentKey};

    let mut p = start_pair(|c| c.extra = "staging_expire_ms = 3000".into());
    wait_mirrored(&p, 2);
    let (id, standby) = stand_in_for_the_primary_agent(&mut p);
    let verified = media_files(&p.data_s);
    let path = "media/cam1/main/2030-01-01/20300101T000000000Z_node-a.mp4";
    let key = SegmentKey {
        origin_node: "node-a".into(),
        path: path.into(),
    };
    let held = vec![0x44u8; 4096];
    let rt = runtime();
    let send = |data: Vec<u8>| {
        rt.block_on(async {
            let (mut conn, _) = connect_as_node_a(&id, &standby).await;
            open_segment_with(&mut conn, &key, "cam1", data).await;
            next_reply(&mut conn).await
        })
    };
    let reply = send(held.clone());
    assert!(matches!(reply, Message::Ack { .. }), "{reply:?}");
    let staged = p.data_s.join("incoming/node-a").join(path);
    assert!(staged.exists());
    let expired = wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
        alarms(&p.data_s)
            .iter()
            .any(|a| a.kind == "staging_expired" && a.segment_path.as_deref() == Some(path))
    });
    assert!(expired, "no staging_expired alarm: {:?}", alarms(&p.data_s));
    assert!(!staged.exists());
    let kept = std::fs::read_dir(p.data_s.join("quarantine"))
        .expect("quarantine")
        .filter_map(|e| e.ok())
        .any(|e| std::fs::read(e.path()).is_ok_and(|b| b == held));
    assert!(kept, "the expired copy is not in quarantine");
    // The path stays closed: other bytes at offset 0 are refused.
    let reply = send(vec![0x55u8; 4096]);
    assert!(matches!(reply, Message::Refused { .. }), "{reply:?}");
    assert!(!staged.exists());
    let now = media_files(&p.data_s);
    for (path, sha) in &verified {
        assert_eq!(now.get(path), Some(sha), "{path} changed");
    }
}

/// Runs `program ARGS` under `strace -f -yy -qq -e trace=TRACE -o LOG` (the rig's process handling:
/// own process group, SIGKILL on drop).
fn traced(
    dir: &TestDir,
    name: &str,
    program: &Path,
    args: &[&str],
    trace: &str,
    log: &Path,
) -> NvrProcess {
    let mut all = vec!["-f", "-yy", "-qq", "-e"];
    let trace = format!("trace={trace}");
    let log = log.to_string_lossy().into_owned();
    let program = program.to_string_lossy().into_owned();
    all.extend([trace.as_str(), "-o", log.as_str(), program.as_str()]);
    all.extend_from_slice(args);
    NvrProcess::spawn_program(dir, name, "strace", &all, &[("RUST_LOG", "info")])
}

/// The path in `fd<path>` after `call(`, e.g. `fsync(7</a/b>)` -> `/a/b`.
fn fd_path<'a>(line: &'a str, call: &str) -> Option<&'a str> {
    let rest = &line[line.find(&format!("{call}("))? + call.len() + 1..];
    let start = rest.find('<')? + 1;
    let end = start + rest[start..].find('>')?;
    Some(&rest[start..end])
}

/// The syscall name of an strace line (after the pid and any `<... resumed>`).
fn call_of(line: &str) -> &str {
    let rest = line.split_once(' ').map_or(line, |(_, r)| r.trim_start());
    rest.split('(').next().unwrap_or("")
}

/// Issue 8, defect 10. The recorder makes a new segment's name (and a new date directory) durable
/// before any of its data: the parent directory is fsynced between creating the file and the file's
/// first flush. The standby acknowledges a seal only once its catalog row is on disk: the catalog's
/// WAL is synced between publishing the file and the next bytes sent to the primary. Checked on the
/// real processes' system calls (strace).
#[test]
fn new_segments_and_acknowledged_seals_are_durable_first() {
    let trace_dir = TestDir::new();
    let rec_log = trace_dir.join("recorder.strace");
    let sby_log = trace_dir.join("standby.strace");
    let mut p = start_pair(|c| c.segment_s = 2);
    // Everything again from empty data directories, recorder and standby under strace (so the trace
    // sees the date directory created too).
    p.recorder.kill9();
    p.primary.kill9();
    p.standby.kill9();
    for data in [&p.data_a, &p.data_s] {
        match std::fs::remove_dir_all(data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("wipe {data:?}: {e}"),
            _ => {}
        }
    }
    let cfg = p.cfg.to_string_lossy().into_owned();
    p.standby = traced(
        &p.dir,
        "standby-traced",
        &nvr_sync_bin(),
        &["run", "--config", &cfg, "--node", "standby-1"],
        "linkat,link,fsync,fdatasync,write,writev,sendto,sendmsg",
        &sby_log,
    );
    p.recorder = traced(
        &p.dir,
        "recorder-traced",
        &nvr_bin(),
        &["run", "--config", &cfg, "--node", "node-a"],
        "mkdir,mkdirat,openat,fsync,fdatasync",
        &rec_log,
    );
    p.primary = spawn_sync(&p.dir, &p.cfg, "node-a");
    assert!(
        wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
            let log = std::fs::read_to_string(&sby_log).unwrap_or_default();
            log.lines()
                .filter(|l| call_of(l) == "linkat" && l.contains("/media/") && l.ends_with("= 0"))
                .count()
                >= 3
        }),
        "the traced standby published nothing\nstandby:\n{}\nrecorder:\n{}",
        p.standby.stderr_tail(30),
        p.recorder.stderr_tail(30)
    );
    p.recorder.kill9();
    p.standby.kill9();

    // Recorder: every created segment file and directory is durable before the file's first flush.
    let rec = std::fs::read_to_string(&rec_log).expect("recorder trace");
    let lines: Vec<&str> = rec.lines().collect();
    let synced_dirs = |from: usize, to: usize| -> Vec<&str> {
        lines[from..to]
            .iter()
            .filter(|l| call_of(l) == "fsync")
            .filter_map(|l| fd_path(l, "fsync"))
            .collect()
    };
    let mut created = 0;
    for (i, line) in lines.iter().enumerate() {
        let creates_file =
            call_of(line) == "openat" && line.contains("O_EXCL") && line.contains(".mp4");
        // Directories of segments (camera, stream, date) under media/; the data directory itself
        // is made at installation.
        let creates_dir = matches!(call_of(line), "mkdir" | "mkdirat")
            && line.ends_with("= 0")
            && line.contains("/media/");
        if !creates_file && !creates_dir {
            continue;
        }
        let Some(path) = line.split('"').nth(1) else {
            continue;
        };
        let path = Path::new(path);
        let parent = path
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The first flush of a file at or below `path`.
        let prefix = path.to_string_lossy().into_owned();
        let Some(j) = lines[i + 1..]
            .iter()
            .position(|l| {
                matches!(call_of(l), "fdatasync" | "fsync")
                    && fd_path(l, call_of(l))
                        .is_some_and(|p| p.starts_with(&prefix) && p.ends_with(".mp4"))
            })
            .map(|k| i + 1 + k)
        else {
            continue;
        };
        created += 1;
        assert!(
            synced_dirs(i + 1, j).contains(&parent.as_str()),
            "{} flushed before its directory {parent} was fsynced:\n{}",
            path.display(),
            lines[i..=j].join("\n")
        );
    }
    assert!(created >= 3, "no segment created and flushed in the trace");

    // Standby: after each publish, the catalog's WAL is synced before the next bytes to the primary.
    let sby = std::fs::read_to_string(&sby_log).expect("standby trace");
    let lines: Vec<&str> = sby.lines().collect();
    let mut published = 0;
    for (i, line) in lines.iter().enumerate() {
        if !(call_of(line) == "linkat" && line.contains("/media/") && line.ends_with("= 0")) {
            continue;
        }
        let Some(j) = lines[i + 1..]
            .iter()
            .position(|l| {
                matches!(call_of(l), "write" | "writev" | "sendto" | "sendmsg")
                    && l.contains("<TCP")
            })
            .map(|k| i + 1 + k)
        else {
            continue;
        };
        published += 1;
        let catalog_synced = lines[i + 1..j].iter().any(|l| {
            matches!(call_of(l), "fdatasync" | "fsync")
                && fd_path(l, call_of(l))
                    .is_some_and(|p| p.ends_with("catalog.db-wal") || p.ends_with("catalog.db"))
        });
        assert!(
            catalog_synced,
            "seal acknowledged before its catalog row was durable:\n{}",
            lines[i..=j].join("\n")
        );
    }
    assert!(
        published >= 3,
        "no publish followed by a reply in the trace"
    );
}

/// Issue 8 ("also"): the standby's scrub finds a verified copy damaged (bit rot, tampering on the
/// standby) and repairs it from the primary, whose copy still matches the log; the damaged file is kept
/// in quarantine.
#[test]
fn a_damaged_copy_on_the_standby_is_repaired_from_the_primary() {
    let p = start_pair(|c| c.scrub_interval_ms = 1000);
    wait_mirrored(&p, 3);
    let (path, sha) = sealed_on(&p.data_s, "node-a")
        .into_iter()
        .next()
        .expect("a sealed copy");
    let file = p.data_s.join(&path);
    let mut bytes = std::fs::read(&file).expect("read copy");
    for b in &mut bytes[1000..1100] {
        *b ^= 0xee;
    }
    // Written in place (the test runs as root or owns the file; read-only does not stop it).
    let mut perms = std::fs::metadata(&file).expect("stat").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&file, perms).expect("chmod");
    std::fs::write(&file, &bytes).expect("damage the copy");
    let repaired = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        alarms(&p.data_s)
            .iter()
            .any(|a| a.kind == "repaired" && a.segment_path.as_deref() == Some(path.as_str()))
    });
    assert!(
        repaired,
        "not repaired: {:?}\nstandby:\n{}",
        alarms(&p.data_s),
        p.standby.stderr_tail(30)
    );
    assert_eq!(
        file_sha256(&file),
        sha,
        "the copy is the verified one again"
    );
    let kept = std::fs::read_dir(p.data_s.join("quarantine"))
        .expect("quarantine")
        .filter_map(|e| e.ok())
        .any(|e| std::fs::read(e.path()).is_ok_and(|b| b == bytes));
    assert!(kept, "the damaged file is not in quarantine");
}

/// Issue 8, defects 2 and 12: a segment that can never be mirrored (here a sealed segment whose file
/// was deleted behind the recorder's back) must not stop the segments after it: the mirroring loop
/// neither gives up the session on it nor keeps its watermark there (which looked at only the 2 000
/// rows after it), and it is shown as a stall with an alarm. 2 100 small segments follow it (written
/// with the store library, no recorder).
#[test]
fn a_segment_that_never_completes_does_not_stop_the_2100_after_it() {
    const AFTER: u64 = 2100;
    let dir = TestDir::new();
    let mut cluster = new_pair(&dir);
    let (data_a, data_s) = (cluster.primary_data.clone(), cluster.standby_data.clone());
    cluster.cameras = vec![("cam1".into(), "rtsp://127.0.0.1:9/cam1".into())];
    cluster.extra = "stall_alarm_ms = 3000".into();
    let cfg = cluster.write(&dir);
    {
        let clock = std::sync::Arc::new(base::clock::SystemClock);
        let store =
            std::sync::Arc::new(store::Store::open(&data_a, "node-a", clock).expect("store"));
        let stream = store.ensure_stream("cam1", "main").expect("stream");
        let run = store
            .catalog()
            .insert_run(stream, "node-a", 1_790_000_000_000)
            .expect("run");
        let tracks = [store::mp4::TrackSpec {
            track_id: 1,
            kind: store::mp4::TrackKind::Video {
                width: 64,
                height: 64,
            },
            timescale: 90_000,
            sample_entry: store::mp4::synthetic_avc1_sample_entry(64, 64),
            presentation_delay: 0,
        }];
        for i in 0..=AFTER {
            let mut w = store
                .create_segment(&store::NewSegment {
                    stream_id: stream,
                    run_id: run,
                    camera: "cam1",
                    stream: "main",
                    start_ms: 1_790_000_000_000 + i as i64 * 1000,
                    tracks: &tracks,
                    video_codec: "avc1.64000a",
                    width: 64,
                    height: 64,
                    audio_codec: None,
                    epoch: None,
                })
                .expect("create segment");
            let sample = vec![i as u8; 256];
            let mut fb = store::mp4::FragmentBuilder::new(1, &[(1, 0)]);
            fb.push_sample(
                0,
                store::mp4::SampleInfo {
                    duration: 90_000,
                    size: sample.len() as u32,
                    is_sync: true,
                    composition_offset: 0,
                },
                &sample,
            );
            w.append_fragment(&fb.finish(), 1, 1000).expect("append");
            let path = w.relative_path().to_owned();
            w.seal().expect("seal");
            if i == 0 {
                let file = data_a.join(&path);
                let mut perms = std::fs::metadata(&file).expect("stat").permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&file, perms).expect("chmod");
                std::fs::remove_file(&file).expect("remove the first file");
            }
        }
    }
    let want = sealed_on(&data_a, "node-a");
    let unreadable = want.keys().next().cloned().expect("the first segment");
    let want: BTreeMap<String, String> = want.into_iter().skip(1).collect();
    assert_eq!(want.len() as u64, AFTER);
    let mut standby = spawn_sync(&dir, &cfg, "standby-1");
    let mut primary = spawn_sync(&dir, &cfg, "node-a");
    // 2 101 sealed copies, each fsynced and cataloged on the standby: 1 to 2 minutes on a quiet
    // machine, over 4 under a parallel build; the deadline is generous (nextest allows this test 10 min).
    let converged = wait_until(Duration::from_secs(480), Duration::from_millis(500), || {
        sealed_on(&data_s, "node-a").len() as u64 == AFTER
    });
    assert!(
        converged,
        "{} of {AFTER} mirrored\nprimary:\n{}",
        sealed_on(&data_s, "node-a").len(),
        primary.stderr_tail(20)
    );
    assert_eq!(sealed_on(&data_s, "node-a"), want);
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
            alarms(&data_a).iter().any(|a| {
                a.kind == "segment_unreadable"
                    && a.segment_path.as_deref() == Some(unreadable.as_str())
            })
        }),
        "no alarm for the unreadable segment: {:?}",
        alarms(&data_a)
    );
    assert!(primary.is_running() && standby.is_running());
}
