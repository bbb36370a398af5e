//! The primary's tamper watch, end to end: camera simulator, recorder, primary and standby agents as
//! processes; sealed files on the primary encrypted, deleted, made writable and changed, their catalog
//! rows rewritten, and file events lost; every case must raise its alarm and end with the file
//! bit-identical to what was recorded, while recording and mirroring go on.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;

/// Generous bound for an alarm the watch raises within about a second (the benchmark measures it).
const ALARM_DEADLINE: Duration = Duration::from_secs(20);
const REPAIR_DEADLINE: Duration = Duration::from_secs(60);

struct Rig {
    pair: RunningPair,
    /// Between the primary and the standby, if asked for.
    proxy: Option<FaultProxy>,
}

/// Camera simulator with `streams` streams, recorder and primary agent of node-a, standby-1; segments of
/// `segment_s` s; `sync_extra` appended to `[sync]`; `retention` replaces the `[retention]` table's
/// body; `via_proxy` puts a [`FaultProxy`] between the primary and the standby.
fn start(
    streams: usize,
    segment_s: u64,
    scrub_interval_ms: u64,
    sync_extra: &str,
    retention: Option<&str>,
    via_proxy: bool,
) -> Rig {
    let dir = TestDir::new();
    let (camsim, cam_port) = rig::cluster::spawn_camsim(&dir, streams);
    let mut cluster = new_pair(&dir);
    let proxy = cluster.through_proxy(via_proxy);
    cluster.cameras = camsim_cameras(cam_port, streams);
    cluster.segment_s = segment_s;
    cluster.scrub_interval_ms = scrub_interval_ms;
    cluster.extra = sync_extra.to_owned();
    let mut text = cluster.to_toml();
    if let Some(r) = retention {
        let old = "[retention]\nmin_free_bytes = 0\n";
        assert!(text.contains(old), "cluster file layout changed:\n{text}");
        text = text.replace(old, &format!("[retention]\nmin_free_bytes = 0\n{r}\n"));
    }
    let cfg = dir.write("cluster.toml", text);
    Rig {
        pair: RunningPair::spawn(dir, &cluster, cfg, camsim),
        proxy,
    }
}

/// Sealed rows of node-a in `data_dir`'s catalog.
fn sealed_rows(data_dir: &Path) -> Vec<store::SegmentRow> {
    open_reader(data_dir)
        .and_then(|r| r.segments_in_state(store::SegmentState::Sealed).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.node == "node-a")
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Rig {
    /// Waits until at least `n` of the primary's sealed segments are sealed on the standby with the
    /// same hash; returns those rows (path -> recorded sha256), oldest first.
    fn mirrored(&self, n: usize, timeout: Duration) -> BTreeMap<String, store::SegmentRow> {
        let mut got = BTreeMap::new();
        let ok = wait_until(timeout, Duration::from_millis(300), || {
            let standby: BTreeMap<String, Option<String>> = sealed_rows(&self.pair.data_s)
                .into_iter()
                .map(|r| (r.path, r.sha256))
                .collect();
            got = sealed_rows(&self.pair.data_a)
                .into_iter()
                .filter(|r| r.sha256.is_some() && standby.get(&r.path) == Some(&r.sha256))
                .map(|r| (r.path.clone(), r))
                .collect();
            got.len() >= n
        });
        assert!(
            ok,
            "only {} segments mirrored of {n}\nprimary:\n{}\nrecorder:\n{}",
            got.len(),
            self.pair.primary.stderr_tail(30),
            self.pair.recorder.stderr_tail(30)
        );
        got
    }

    fn alarm_for(&self, kind: &str, path: Option<&str>, since_ms: i64) -> Option<i64> {
        alarms(&self.pair.data_a)
            .into_iter()
            .filter(|a| a.kind == kind && a.time_ms >= since_ms)
            .find(|a| path.is_none_or(|p| a.segment_path.as_deref() == Some(p)))
            .map(|a| a.time_ms)
    }

    fn wait_alarm(&self, kind: &str, path: Option<&str>, since_ms: i64) -> i64 {
        let mut at = None;
        wait_until(ALARM_DEADLINE, Duration::from_millis(50), || {
            at = self.alarm_for(kind, path, since_ms);
            at.is_some()
        });
        at.unwrap_or_else(|| {
            panic!(
                "no {kind} alarm for {path:?} within {ALARM_DEADLINE:?}; alarms: {:?}\nprimary:\n{}",
                alarms(&self.pair.data_a),
                self.pair.primary.stderr_tail(40)
            )
        })
    }

    /// Waits until every file of `rows` on the primary is back to its recorded contents, read-only,
    /// and its catalog row holds the recorded hash and size again.
    fn wait_repaired(&self, rows: &[&store::SegmentRow]) {
        let mut bad: Vec<String> = Vec::new();
        let ok = wait_until(REPAIR_DEADLINE, Duration::from_millis(200), || {
            let catalog: BTreeMap<String, store::SegmentRow> = sealed_rows(&self.pair.data_a)
                .into_iter()
                .map(|r| (r.path.clone(), r))
                .collect();
            bad = rows
                .iter()
                .filter(|r| {
                    let path = self.pair.data_a.join(&r.path);
                    let file_ok = std::fs::metadata(&path)
                        .is_ok_and(|m| m.permissions().readonly())
                        && Some(file_sha256(&path)) == r.sha256;
                    let row_ok = catalog
                        .get(&r.path)
                        .is_some_and(|c| c.sha256 == r.sha256 && c.size_bytes == r.size_bytes);
                    !(file_ok && row_ok)
                })
                .map(|r| r.path.clone())
                .collect();
            bad.is_empty()
        });
        assert!(
            ok,
            "not repaired within {REPAIR_DEADLINE:?}: {bad:?}\nalarms: {:?}\nprimary:\n{}",
            alarms(&self.pair.data_a),
            self.pair.primary.stderr_tail(40)
        );
    }

    /// Recording and mirroring go on: a segment sealed after `since_ms` reaches the standby.
    fn assert_still_mirroring(&mut self, since_ms: i64) {
        assert!(self.pair.recorder.is_running(), "recording stopped");
        let ok = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            let standby: BTreeMap<String, Option<String>> = sealed_rows(&self.pair.data_s)
                .into_iter()
                .map(|r| (r.path, r.sha256))
                .collect();
            sealed_rows(&self.pair.data_a).iter().any(|r| {
                r.start_ms > since_ms
                    && r.sha256.is_some()
                    && standby.get(&r.path) == Some(&r.sha256)
            })
        });
        assert!(
            ok,
            "no segment recorded after the attack reached the standby\nprimary:\n{}",
            self.pair.primary.stderr_tail(30)
        );
    }
}

fn make_writable(path: &Path) {
    let mut perms = std::fs::metadata(path).expect("meta").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).expect("chmod u+w");
}

/// Overwrites a file in place with pseudo-random bytes of the same length (as ransomware encrypting it).
fn encrypt_in_place(path: &Path, seed: &mut u64) {
    let len = std::fs::metadata(path).expect("meta").len() as usize;
    let junk: Vec<u8> = (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect();
    make_writable(path);
    std::fs::write(path, junk).expect("encrypt");
}

#[test]
fn encrypting_twenty_sealed_files_raises_one_tampering_alarm_and_every_file_is_repaired() {
    let mut rig = start(4, 2, 0, "", None, false);
    let mirrored = rig.mirrored(20, Duration::from_secs(90));
    let targets: Vec<&store::SegmentRow> = mirrored.values().take(20).collect();
    let attack_ms = now_ms();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for row in &targets {
        encrypt_in_place(&rig.pair.data_a.join(&row.path), &mut seed);
    }
    let critical_ms = rig.wait_alarm("tampering", None, attack_ms);
    let first_ms = alarms(&rig.pair.data_a)
        .iter()
        .filter(|a| a.time_ms >= attack_ms && (a.kind == "tamper" || a.kind == "tampering"))
        .map(|a| a.time_ms)
        .min()
        .unwrap_or(critical_ms);
    println!(
        "first alarm {} ms, tampering alarm {} ms after the attack started",
        first_ms - attack_ms,
        critical_ms - attack_ms
    );
    rig.wait_repaired(&targets);
    let all = alarms(&rig.pair.data_a);
    let critical = all
        .iter()
        .filter(|a| a.kind == "tampering" && a.time_ms >= attack_ms)
        .count();
    assert_eq!(critical, 1, "one critical alarm, no flood: {all:?}");
    let per_file = all
        .iter()
        .filter(|a| a.kind == "tamper" && a.time_ms >= attack_ms)
        .count();
    assert!(
        per_file < 5,
        "per-file alarms stop at the threshold (5): {per_file}"
    );
    // The status (and `nvr-sync status`) shows the attack and its running count (the file is rewritten
    // every 250 ms: wait for it to catch up).
    let mut status = serde_json::Value::Null;
    let counted = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        status = sync_status(&rig.pair.dir, &rig.pair.cfg, "node-a");
        let t = &status["tamper"];
        t["files_detected"].as_u64().unwrap_or(0) >= 20
            && t["files_repaired"].as_u64().unwrap_or(0) >= 20
    });
    let tamper = &status["tamper"];
    assert!(counted, "status: {tamper}");
    assert!(
        tamper["attack"]["files"].as_u64().unwrap_or(0) >= 5
            || all.iter().any(|a| a.kind == "tampering_over"),
        "status: {tamper}"
    );
    assert!(
        status["recent_alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["kind"] == "tampering")),
        "status lists the tampering alarm: {status}"
    );
    rig.assert_still_mirroring(attack_ms);
}

#[test]
fn a_sealed_file_deleted_by_hand_is_an_alarm_and_restored_but_retention_deletions_are_not() {
    // Retention by bytes keeps about the last few segments of each stream, every second.
    let mut rig = start(
        1,
        2,
        0,
        "",
        Some("max_bytes_per_stream = \"3MB\"\ninterval_s = 1"),
        false,
    );
    let mirrored = rig.mirrored(3, Duration::from_secs(60));
    let newest = mirrored
        .values()
        .max_by_key(|r| r.start_ms)
        .expect("a segment")
        .clone();
    let deleted_ms = now_ms();
    std::fs::remove_file(rig.pair.data_a.join(&newest.path)).expect("rm");
    rig.wait_alarm("tamper", Some(&newest.path), deleted_ms);
    rig.wait_repaired(&[&newest]);
    // Renamed away (as ransomware renames what it encrypted): the same.
    let renamed = mirrored
        .values()
        .filter(|r| r.path != newest.path)
        .max_by_key(|r| r.start_ms)
        .expect("another segment")
        .clone();
    let renamed_ms = now_ms();
    let from = rig.pair.data_a.join(&renamed.path);
    std::fs::rename(&from, from.with_extension("mp4.locked")).expect("mv");
    rig.wait_alarm("tamper", Some(&renamed.path), renamed_ms);
    rig.wait_repaired(&[&renamed]);
    // Retention goes on deleting the oldest segments: none of those is an alarm.
    let reader = open_reader(&rig.pair.data_a).expect("catalog");
    let mut retention_deleted: Vec<String> = Vec::new();
    wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        retention_deleted = reader
            .segments_in_state(store::SegmentState::Deleted)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.path)
            .collect();
        retention_deleted.len() >= 3
    });
    assert!(
        retention_deleted.len() >= 3,
        "retention deleted {} segments",
        retention_deleted.len()
    );
    // Give the watch time to have seen them (it checks within a second).
    std::thread::sleep(Duration::from_secs(3));
    let all = alarms(&rig.pair.data_a);
    let false_alarms: Vec<_> = all
        .iter()
        .filter(|a| {
            matches!(a.kind.as_str(), "tamper" | "tampering")
                && a.segment_path.as_ref().is_some_and(|p| {
                    *p != newest.path && *p != renamed.path && retention_deleted.contains(p)
                })
        })
        .collect();
    assert!(
        false_alarms.is_empty(),
        "retention raised: {false_alarms:?}"
    );
    assert!(
        !all.iter().any(|a| a.kind == "tampering"),
        "no tampering alarm: {all:?}"
    );
    let status = sync_status(&rig.pair.dir, &rig.pair.cfg, "node-a");
    assert!(
        status["tamper"]["retention_deletions"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "retention deletions seen: {}",
        status["tamper"]
    );
    rig.assert_still_mirroring(deleted_ms);
}

#[test]
fn chmod_and_a_one_byte_change_of_a_sealed_file_is_an_alarm_and_repaired() {
    let mut rig = start(1, 2, 0, "", None, false);
    let mirrored = rig.mirrored(2, Duration::from_secs(60));
    let row = mirrored.values().next().expect("a segment").clone();
    let path = rig.pair.data_a.join(&row.path);
    let changed_ms = now_ms();
    make_writable(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).expect("write");
    let alarm_ms = rig.wait_alarm("tamper", Some(&row.path), changed_ms);
    println!("alarm {} ms after the change", alarm_ms - changed_ms);
    rig.wait_repaired(&[&row]);
    rig.assert_still_mirroring(changed_ms);
}

#[test]
fn a_file_tampered_with_before_the_standby_holds_it_is_a_failed_repair_and_mirroring_goes_on() {
    let mut rig = start(1, 2, 0, "", None, false);
    rig.mirrored(2, Duration::from_secs(60));
    rig.pair.standby.sigterm();
    rig.pair.standby.expect_clean_exit(Duration::from_secs(30));
    let stopped_ms = now_ms();
    // A segment recorded entirely while the standby was away.
    let mut row = None;
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        row = sealed_rows(&rig.pair.data_a)
            .into_iter()
            .find(|r| r.start_ms > stopped_ms + 500);
        row.is_some()
    });
    let row = row.expect("a segment sealed while the standby was stopped");
    let path = rig.pair.data_a.join(&row.path);
    let t0 = now_ms();
    make_writable(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(&path, bytes).expect("write");
    rig.wait_alarm("tamper", Some(&row.path), t0);
    rig.pair.standby = spawn_sync(&rig.pair.dir, &rig.pair.cfg, "standby-1");
    let restarted_ms = now_ms();
    rig.wait_alarm("repair_failed", Some(&row.path), t0);
    rig.assert_still_mirroring(restarted_ms);
}

#[test]
fn a_repair_lost_with_the_connection_is_asked_for_again() {
    let mut rig = start(1, 2, 0, "", None, true);
    let mirrored = rig.mirrored(2, Duration::from_secs(60));
    let row = mirrored.values().next().expect("a segment").clone();
    let proxy = rig.proxy.take().expect("proxy");
    // The link goes silent: the repair's fetch goes out and is never answered.
    proxy.set_mode(Mode::Stall);
    let t0 = now_ms();
    let path = rig.pair.data_a.join(&row.path);
    make_writable(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[200] ^= 0x01;
    std::fs::write(&path, bytes).expect("write");
    rig.wait_alarm("tamper", Some(&row.path), t0);
    std::thread::sleep(Duration::from_secs(1));
    // The connection (and the fetch with it) is dropped; the agents reconnect.
    proxy.cut();
    proxy.set_mode(Mode::Pass);
    rig.wait_repaired(&[&row]);
    rig.assert_still_mirroring(t0);
}

/// Changes a file and rewrites its catalog row to the changed file's hash and size.
fn alter_file_and_row(data_a: &Path, row: &store::SegmentRow) {
    let path = data_a.join(&row.path);
    make_writable(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(b"appended by the attacker");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    // A careful attacker leaves the file read-only again.
    let mut perms = std::fs::metadata(&path).expect("meta").permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).expect("chmod u-w");
    let sha = file_sha256(&path);
    let db = rusqlite::Connection::open(data_a.join("catalog.db")).expect("catalog");
    db.busy_timeout(Duration::from_secs(10)).expect("busy");
    let n = db
        .execute(
            "UPDATE segments SET sha256 = ?1, size_bytes = ?2 WHERE path = ?3",
            rusqlite::params![sha, bytes.len() as i64, row.path],
        )
        .expect("rewrite row");
    assert_eq!(n, 1);
}

#[test]
fn a_rewritten_catalog_row_does_not_hide_an_altered_file_from_the_watch_or_the_scrub() {
    let mut rig = start(1, 2, 1000, "", None, false);
    let mirrored = rig.mirrored(3, Duration::from_secs(60));
    let rows: Vec<store::SegmentRow> = mirrored.values().take(2).cloned().collect();
    // While the agent runs: the watch.
    let t0 = now_ms();
    alter_file_and_row(&rig.pair.data_a, &rows[0]);
    rig.wait_alarm("tamper", Some(&rows[0].path), t0);
    rig.wait_repaired(&[&rows[0]]);
    // While the agent is stopped (no file events): the scrub, against the signed log.
    rig.pair.primary.sigterm();
    rig.pair.primary.expect_clean_exit(Duration::from_secs(30));
    let t1 = now_ms();
    alter_file_and_row(&rig.pair.data_a, &rows[1]);
    // `nvr check` compares with the catalog and sees nothing; `nvr-sync check` compares with the log.
    let cfg = rig.pair.cfg.to_string_lossy().into_owned();
    let nvr_check = run_nvr(
        &rig.pair.dir,
        &["check", "--config", &cfg, "--node", "node-a"],
        Duration::from_secs(60),
    );
    assert!(
        !nvr_check.stdout.contains(&rows[1].path),
        "{}",
        nvr_check.stdout
    );
    let check_args = ["check", "--config", cfg.as_str(), "--node", "node-a"];
    let log_check = run_sync(&rig.pair.dir, &check_args, Duration::from_secs(60));
    assert_eq!(log_check.status.code(), Some(1), "{}", log_check.stderr);
    assert!(
        log_check.stdout.contains(&rows[1].path) && log_check.stdout.contains("signed log"),
        "{}",
        log_check.stdout
    );
    rig.pair.primary = spawn_sync(&rig.pair.dir, &rig.pair.cfg, "node-a");
    rig.wait_alarm("scrub_mismatch", Some(&rows[1].path), t1);
    rig.wait_repaired(&[&rows[1]]);
    let log_check = run_sync(&rig.pair.dir, &check_args, Duration::from_secs(60));
    assert!(
        !log_check.stdout.contains(&rows[1].path),
        "{}",
        log_check.stdout
    );
    let events = open_reader(&rig.pair.data_a)
        .expect("catalog")
        .events(0, 10_000)
        .expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "catalog_repaired" && e.message.contains(&rows[1].path)),
        "the row put back to the signed log is logged: {events:?}"
    );
    rig.assert_still_mirroring(t1);
}

#[test]
fn lost_file_events_fall_back_to_a_pass_that_finds_the_changed_files() {
    // A queue of two events: a burst of changes overflows it, as a full inotify queue would.
    let mut rig = start(4, 2, 0, "tamper_queue_events = 2\n", None, false);
    let mirrored = rig.mirrored(12, Duration::from_secs(90));
    let rows: Vec<&store::SegmentRow> = mirrored.values().collect();
    let t0 = now_ms();
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut changed: Vec<&store::SegmentRow> = Vec::new();
    // The recorder's own writes overflow a queue of two now and then. A burst does at once: every
    // file of the burst is made writable within a millisecond (more events than the queue holds, so
    // events are dropped and a fallback pass follows 150 ms later), then overwritten. A few bursts are
    // allowed in case the watch happened to keep up with one.
    let found = |rig: &Rig| {
        status_of(&rig.pair.data_a)["tamper"]["fallback_found"]
            .as_u64()
            .unwrap_or(0)
    };
    for burst in rows.chunks(4).take(3) {
        for row in burst {
            make_writable(&rig.pair.data_a.join(&row.path));
        }
        for row in burst {
            encrypt_in_place(&rig.pair.data_a.join(&row.path), &mut seed);
            changed.push(row);
        }
        if wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            found(&rig) >= 1
        }) {
            break;
        }
    }
    let ok = wait_until(ALARM_DEADLINE, Duration::from_millis(200), || {
        let t = &status_of(&rig.pair.data_a)["tamper"];
        t["fallback_passes"].as_u64().unwrap_or(0) >= 1
            && t["fallback_found"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        ok,
        "no fallback pass found anything: {}\nprimary:\n{}",
        status_of(&rig.pair.data_a)["tamper"],
        rig.pair.primary.stderr_tail(30)
    );
    rig.wait_repaired(&changed);
    assert!(
        rig.alarm_for("tamper", None, t0).is_some()
            || rig.alarm_for("tampering", None, t0).is_some(),
        "an alarm: {:?}",
        alarms(&rig.pair.data_a)
    );
    rig.assert_still_mirroring(t0);
}

fn status_of(data_dir: &Path) -> serde_json::Value {
    std::fs::read(data_dir.join("sync-status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}
