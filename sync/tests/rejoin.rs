//! Restore re-joins the pair: after a primary's data directory (with its `sync.db`) is wiped and
//! restored from the standby, the heads it signs chain to the standby's and mirroring resumes; restore
//! names what the standby did not return and what no head covers yet.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn standby_head(data_s: &Path) -> u64 {
    nvr_sync::syncdb::SyncDb::open(data_s)
        .ok()
        .and_then(|db| db.latest_head("node-a").ok().flatten())
        .and_then(|j| serde_json::from_str::<nvr_sync::merkle::SignedTreeHead>(&j).ok())
        .map_or(0, |h| h.head.tree_size)
}

struct Nodes {
    dir: TestDir,
    cfg: PathBuf,
    data_a: PathBuf,
    data_s: PathBuf,
}

fn nodes(cam_port: u16) -> Nodes {
    let dir = TestDir::new();
    let mut cluster = new_pair(&dir);
    let (data_a, data_s) = (cluster.primary_data.clone(), cluster.standby_data.clone());
    cluster.cameras = vec![("cam1".into(), format!("rtsp://127.0.0.1:{cam_port}/cam1"))];
    let cfg = cluster.write(&dir);
    Nodes {
        dir,
        cfg,
        data_a,
        data_s,
    }
}

fn camsim(dir: &TestDir, port: u16) -> NvrProcess {
    NvrProcess::spawn(
        dir,
        &[
            "camsim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--streams",
            "1",
        ],
    )
}

/// The primary loses everything, its sync.db too, and is restored from the standby: the restore's
/// report.
fn wipe_and_restore_the_primary(n: &Nodes) -> serde_json::Value {
    std::fs::remove_dir_all(&n.data_a).expect("wipe the primary");
    restore_node_a(&n.dir, &n.cfg)
}

#[test]
fn restore_onto_a_wiped_primary_rejoins_the_pair_and_reports_what_is_missing() {
    let cam_port = free_port();
    let n = nodes(cam_port);
    let _camsim = camsim(&n.dir, cam_port);
    let standby = spawn_sync(&n.dir, &n.cfg, "standby-1");
    let mut recorder = spawn_recorder(&n.dir, &n.cfg, "node-a");
    let mut primary = spawn_sync(&n.dir, &n.cfg, "node-a");
    let logged = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        standby_head(&n.data_s) >= 3
    });
    assert!(logged, "nothing logged\n{}", primary.stderr_tail(20));
    recorder.sigterm();
    recorder.expect_clean_exit(Duration::from_secs(30));
    let want = sealed_on(&n.data_a, "node-a");
    let covered = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        standby_head(&n.data_s) == want.len() as u64 && sealed_on(&n.data_s, "node-a") == want
    });
    assert!(
        covered,
        "standby did not converge on {} segments",
        want.len()
    );
    primary.sigterm();
    primary.expect_clean_exit(Duration::from_secs(20));
    let before = standby_head(&n.data_s);

    // The primary loses everything, its sync.db too, and is restored from the standby.
    let report = wipe_and_restore_the_primary(&n);
    assert_eq!(report["leaves_imported"].as_u64(), Some(before), "{report}");
    let heads_of = |data: &Path| -> Vec<[u8; 32]> {
        nvr_sync::syncdb::SyncDb::open(data)
            .and_then(|db| db.heads("node-a"))
            .expect("heads")
            .iter()
            .map(|h| h.head_hash)
            .collect()
    };
    let chain = heads_of(&n.data_s);
    assert_eq!(
        report["heads_imported"].as_u64(),
        Some(chain.len() as u64),
        "{report}"
    );
    assert_eq!(heads_of(&n.data_a), chain, "the chain of heads, in order");
    assert_eq!(sealed_on(&n.data_a, "node-a"), want);

    // Recording and mirroring go on: the new heads extend the standby's log.
    let mut recorder = spawn_recorder(&n.dir, &n.cfg, "node-a");
    let mut primary = spawn_sync(&n.dir, &n.cfg, "node-a");
    let resumed = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        standby_head(&n.data_s) > before + 1
            && status_file(&n.data_a)["peers"]["standby-1"]["connected"].as_bool() == Some(true)
    });
    assert!(
        resumed,
        "mirroring did not resume after the restore\nprimary:\n{}\nstandby:\n{}\nprimary alarms: {:?}",
        primary.stderr_tail(20),
        standby.stderr_tail(20),
        alarms(&n.data_a)
    );
    assert!(
        !alarms(&n.data_a).iter().any(|a| a.kind == "unknown_head"),
        "{:?}",
        alarms(&n.data_a)
    );
    assert!(
        !alarms(&n.data_s).iter().any(|a| a.kind == "head_refused"),
        "{:?}",
        alarms(&n.data_s)
    );
    recorder.sigterm();
    recorder.expect_clean_exit(Duration::from_secs(30));
    primary.sigterm();
    primary.expect_clean_exit(Duration::from_secs(20));

    // A logged segment the standby no longer has (its row and file gone behind its back): restore
    // says so and exits non-zero.
    let mut standby = standby;
    standby.sigterm();
    standby.expect_clean_exit(Duration::from_secs(20));
    let lost = want.keys().next().expect("a segment").clone();
    rusqlite::Connection::open(n.data_s.join("catalog.db"))
        .and_then(|c| c.execute("DELETE FROM segments WHERE path = ?1", [&lost]))
        .expect("drop the standby's row");
    std::fs::remove_file(n.data_s.join(&lost)).expect("drop the standby's file");
    let standby = spawn_sync(&n.dir, &n.cfg, "standby-1");
    wait_standby_listening(&standby);
    std::fs::remove_file(n.data_a.join(&lost)).expect("lose the primary's copy too");
    let out = sync_restore(
        &n.dir,
        &n.cfg,
        "node-a",
        None,
        None,
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("report");
    assert_eq!(
        report["not_returned"],
        serde_json::json!([lost]),
        "{report}"
    );
}

/// Segments sealed on the standby while no head covering them is accepted (here a trigger refuses the
/// standby's head writes, as when it refuses the primary's heads, or the primary stopped right after
/// sealing) are marked unverified in its status; restore onto a wiped primary restores them by their
/// seal hash, lists them as unverified and succeeds; once heads are accepted again they are verified.
#[test]
fn sealed_but_unlogged_segments_are_held_unverified_and_restored() {
    let cam_port = free_port();
    let n = nodes(cam_port);
    let _camsim = camsim(&n.dir, cam_port);
    let mut standby = spawn_sync(&n.dir, &n.cfg, "standby-1");
    let mut recorder = spawn_recorder(&n.dir, &n.cfg, "node-a");
    let mut primary = spawn_sync(&n.dir, &n.cfg, "node-a");
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            standby_head(&n.data_s) >= 2
        }),
        "nothing logged"
    );
    standby.sigterm();
    standby.expect_clean_exit(Duration::from_secs(20));
    let logged = standby_head(&n.data_s);
    rusqlite::Connection::open(n.data_s.join("sync.db"))
        .and_then(|c| {
            c.execute_batch(&format!(
                "CREATE TRIGGER fail_heads BEFORE INSERT ON heads WHEN NEW.tree_size > {logged}
                 BEGIN SELECT RAISE(ABORT, 'injected: heads refused'); END;"
            ))
        })
        .expect("install the fault");
    let mut standby = spawn_sync(&n.dir, &n.cfg, "standby-1");
    let unverified_on_standby =
        || status_file(&n.data_s)["peers"]["node-a"]["unverified_segments"].as_u64();
    // Sealed on the primary after the fault: complete on the standby, held unverified there.
    let grown = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        unverified_on_standby().is_some_and(|u| u >= 2)
    });
    assert!(
        grown,
        "nothing held unverified on the standby after the fault"
    );
    recorder.sigterm();
    recorder.expect_clean_exit(Duration::from_secs(30));
    let want = sealed_on(&n.data_a, "node-a");
    let unverified = want.len() as u64 - logged;
    // What no accepted head covers is held complete but unverified, never published: the standby
    // publishes exactly the logged segments (with the primary's hashes) and marks the rest.
    let published_logged_only = || {
        let published = sealed_on(&n.data_s, "node-a");
        published.len() as u64 == logged
            && published.iter().all(|(p, sha)| want.get(p) == Some(sha))
    };
    let marked = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        published_logged_only() && unverified_on_standby() == Some(unverified)
    });
    assert!(
        marked,
        "standby did not converge: published {} of {} ({logged} logged), status: {}",
        sealed_on(&n.data_s, "node-a").len(),
        want.len(),
        status_file(&n.data_s)["peers"]["node-a"]
    );
    primary.sigterm();
    primary.expect_clean_exit(Duration::from_secs(20));

    let report = wipe_and_restore_the_primary(&n);
    assert_eq!(
        report["unverified"].as_array().map(Vec::len),
        Some(unverified as usize),
        "{report}"
    );
    assert_eq!(sealed_on(&n.data_a, "node-a"), want);

    // Heads accepted again: the restored primary logs them, the standby verifies them.
    standby.sigterm();
    standby.expect_clean_exit(Duration::from_secs(20));
    rusqlite::Connection::open(n.data_s.join("sync.db"))
        .and_then(|c| c.execute_batch("DROP TRIGGER fail_heads;"))
        .expect("remove the fault");
    let standby = spawn_sync(&n.dir, &n.cfg, "standby-1");
    let primary = spawn_sync(&n.dir, &n.cfg, "node-a");
    let verified = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        standby_head(&n.data_s) == want.len() as u64
            && status_file(&n.data_s)["peers"]["node-a"]["unverified_segments"].as_u64() == Some(0)
            && sealed_on(&n.data_s, "node-a") == want
    });
    assert!(
        verified,
        "not verified: {}\nprimary:\n{}\nstandby:\n{}",
        status_file(&n.data_s)["peers"]["node-a"],
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
}
