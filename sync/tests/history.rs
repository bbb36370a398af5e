//! A history larger than one message: 100 000 logged, mirrored segments (built straight into both
//! nodes' stores and logs by `nvr_sync::fixture`), then the real agents reconnect, a real recorder's new
//! segments are mirrored and covered by accepted heads, and `restore` works.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const COUNT: u64 = 100_000;
const PAYLOAD_BYTES: usize = 1000;

/// Sealed catalog rows of `node`'s camera `camera` in `data_dir` (path -> sha256).
fn sealed_of_camera(data_dir: &Path, node: &str, camera: &str) -> Vec<(String, String)> {
    let clock = std::sync::Arc::new(base::clock::SystemClock);
    let Ok(reader) = store::Reader::open(data_dir, clock) else {
        return Vec::new();
    };
    let prefix = format!("media/{camera}/");
    reader
        .segments_in_state(store::SegmentState::Sealed)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.node == node && r.path.starts_with(&prefix))
        .map(|r| (r.path, r.sha256.unwrap_or_default()))
        .collect()
}

#[test]
fn reconnect_and_restore_with_100k_logged_segments() {
    let dir = TestDir::new();
    let (_camsim, cam_port) = rig::cluster::spawn_camsim(&dir, 1);
    let mut cluster = new_pair(&dir);
    let (data_a, data_s) = (cluster.primary_data.clone(), cluster.standby_data.clone());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let history = nvr_sync::fixture::History {
        count: COUNT,
        camera: "old".into(),
        // Recent enough for any retention by age, ending an hour ago.
        first_start_ms: now_ms - 3_600_000 - COUNT as i64 * 10_000,
        segment_ms: 10_000,
        payload: (0..PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect(),
    };
    build_history(&cluster, &history);

    cluster.cameras = vec![("cam1".into(), format!("rtsp://127.0.0.1:{cam_port}/cam1"))];
    let cfg = cluster.write(&dir);
    let (mut standby, mut recorder, mut primary) = spawn_pair(&dir, &cfg);

    // New recordings are mirrored and logged past the old history.
    let mirrored = wait_until(Duration::from_secs(180), Duration::from_millis(500), || {
        let head = status_file(&data_s)["peers"]["node-a"]["last_head_size"]
            .as_u64()
            .unwrap_or(0);
        head > COUNT && sealed_of_camera(&data_s, "node-a", "cam1").len() >= 2
    });
    assert!(
        mirrored,
        "new segments not mirrored after reconnecting with {COUNT} logged segments\nprimary:\n{}\nstandby:\n{}",
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
    // Nothing of the old history was sent again, and nothing was refused.
    let sent = status_file(&data_a)["peers"]["standby-1"]["bytes_sent"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        sent < COUNT * PAYLOAD_BYTES as u64 / 10,
        "{sent} bytes sent: the old history was re-sent"
    );
    assert_eq!(alarms(&data_s), [], "standby alarms");
    assert_eq!(alarms(&data_a), [], "primary alarms");

    recorder.sigterm();
    recorder.expect_clean_exit(Duration::from_secs(30));
    let want = sealed_of_camera(&data_a, "node-a", "cam1");
    let converged = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        sealed_of_camera(&data_s, "node-a", "cam1") == want
    });
    assert!(converged, "standby did not converge on {want:?}");
    primary.sigterm();
    primary.expect_clean_exit(Duration::from_secs(20));

    // Restore pages through the whole log (100 000+ leaves) and the listing of cam1.
    for (path, _) in &want {
        std::fs::remove_file(data_a.join(path)).expect("remove a recorded file");
    }
    let report = restore_report(
        &dir,
        &cfg,
        "node-a",
        Some("cam1"),
        None,
        Duration::from_secs(300),
    );
    assert!(report["log_size"].as_u64().unwrap_or(0) > COUNT, "{report}");
    assert_eq!(
        report["listed"].as_u64(),
        Some(want.len() as u64),
        "{report}"
    );
    for (path, sha) in &want {
        assert_eq!(&file_sha256(data_a.join(path)), sha, "{path} restored");
    }
    standby.sigterm();
    standby.expect_clean_exit(Duration::from_secs(20));
}

/// Accepting a head is one transaction: when writing a head with new leaves fails (here a trigger refuses
/// it, as a crash or a full disk would stop it) after its leaves were written, none of the leaves stay, and once
/// the fault is gone the next heads are accepted and mirroring goes on.
#[test]
fn a_head_that_cannot_be_written_leaves_no_leaves_behind() {
    const OLD: u64 = 10;
    let dir = TestDir::new();
    let (_camsim, cam_port) = rig::cluster::spawn_camsim(&dir, 1);
    let mut cluster = new_pair(&dir);
    let data_s = cluster.standby_data.clone();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let history = nvr_sync::fixture::History {
        count: OLD,
        camera: "old".into(),
        first_start_ms: now_ms - 3_600_000,
        segment_ms: 10_000,
        payload: vec![7; PAYLOAD_BYTES],
    };
    build_history(&cluster, &history);
    let sync_db = |data: &Path| {
        rusqlite::Connection::open(data.join("sync.db")).expect("open sync.db directly")
    };
    sync_db(&data_s)
        .execute_batch(&format!(
            "CREATE TRIGGER fail_heads BEFORE INSERT ON heads WHEN NEW.tree_size > {OLD}
                 BEGIN SELECT RAISE(ABORT, 'injected: the head cannot be written'); END;"
        ))
        .expect("install the fault");

    cluster.cameras = vec![("cam1".into(), format!("rtsp://127.0.0.1:{cam_port}/cam1"))];
    let cfg = cluster.write(&dir);
    let (mut standby, _recorder, primary) = spawn_pair(&dir, &cfg);

    let refused = wait_until(Duration::from_secs(90), Duration::from_millis(300), || {
        alarms(&data_s)
            .iter()
            .any(|a| a.detail.contains("injected: the head cannot be written"))
    });
    assert!(
        refused,
        "the faulty head write was never tried\nprimary:\n{}\nstandby:\n{}",
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
    let db = nvr_sync::syncdb::SyncDb::open(&data_s).expect("standby sync.db");
    let head_size = |db: &nvr_sync::syncdb::SyncDb| {
        db.latest_head("node-a")
            .expect("latest head")
            .and_then(|j| serde_json::from_str::<nvr_sync::merkle::SignedTreeHead>(&j).ok())
            .map_or(0, |h| h.head.tree_size)
    };
    assert_eq!(head_size(&db), OLD);
    assert_eq!(
        db.leaf_count("node-a").expect("leaf count"),
        OLD,
        "leaves kept beyond the last kept head"
    );

    standby.sigterm();
    standby.expect_clean_exit(Duration::from_secs(20));
    sync_db(&data_s)
        .execute_batch("DROP TRIGGER fail_heads;")
        .expect("remove the fault");
    let standby = spawn_sync(&dir, &cfg, "standby-1");
    let resumed = wait_until(Duration::from_secs(90), Duration::from_millis(300), || {
        head_size(&db) > OLD && !sealed_of_camera(&data_s, "node-a", "cam1").is_empty()
    });
    assert!(
        resumed,
        "heads not accepted after the fault\nprimary:\n{}\nstandby:\n{}",
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
    let leaves = db.leaf_count("node-a").expect("leaf count");
    assert!(
        leaves <= head_size(&db),
        "{leaves} leaves beyond the last head"
    );
}

/// Peak resident memory of a process in bytes (`VmHWM`).
fn peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A `FetchRequest` reads only the bytes it asks for: 4 KiB at the end of a 4 GiB sealed copy cost the
/// standby a few MiB of memory, not the whole file.
#[test]
fn a_fetch_reads_only_the_requested_bytes() {
    use nvr_sync::proto::{Message, SegmentKey};

    const BIG: u64 = 4 << 30;
    let dir = TestDir::new();
    let cluster = new_pair(&dir);
    let data_s = cluster.standby_data.clone();
    let history = nvr_sync::fixture::History {
        count: 3,
        camera: "old".into(),
        first_start_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        segment_ms: 10_000,
        payload: vec![1; PAYLOAD_BYTES],
    };
    build_history(&cluster, &history);
    // The standby's copy of the first segment becomes a sparse 4 GiB file ending in known bytes.
    let path = nvr_sync::syncdb::SyncDb::open(&data_s)
        .and_then(|db| db.leaf_paths("node-a", 0, 1))
        .expect("leaf paths")
        .remove(0);
    let file = data_s.join(&path);
    std::fs::remove_file(&file).expect("unlink the copy");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&file).expect("create big copy");
        f.seek(SeekFrom::Start(BIG - 4096)).expect("seek");
        f.write_all(&[0x5a; 4096]).expect("write the tail");
    }
    let cfg = cluster.write(&dir);
    let standby = spawn_sync(&dir, &cfg, "standby-1");
    wait_standby_listening(&standby);
    let peer = nvr_sync::config::SyncConfig::load(&cfg, Some("node-a"))
        .expect("config")
        .peers[0]
        .clone();
    let id_a = nvr_sync::identity::load(&cluster.primary.dir).expect("load node-a identity");
    let rt = runtime();
    let got = rt.block_on(async {
        let (mut conn, _) = connect_as_node_a(&id_a, &peer).await;
        conn.send(&Message::FetchRequest {
            key: SegmentKey {
                origin_node: "node-a".into(),
                path: path.clone(),
            },
            offset: BIG - 4096,
            len: 4096,
        })
        .await
        .expect("send");
        let mut got = Vec::new();
        loop {
            match conn.recv(Duration::from_secs(120)).await.expect("recv") {
                Some(Message::FetchData { data, last, .. }) => {
                    got.extend_from_slice(&data);
                    if last {
                        return got;
                    }
                }
                other => panic!("expected FetchData, got {other:?}"),
            }
        }
    });
    assert_eq!(got, vec![0x5a; 4096]);
    let peak = peak_rss_bytes(standby.pid().expect("standby pid"));
    assert!(
        peak < 512 << 20,
        "the standby peaked at {} MiB to send 4 KiB",
        peak >> 20
    );
}

/// What grows with time stays out of memory and stops growing when nothing happens: a primary whose
/// `sync.db` holds 500 000 heads and 500 000 alarms connects with a bounded resident size (heads are
/// not all loaded, the status writer reads the newest alarms only), and with nothing new sealed it
/// signs no head, on start or while connected.
#[test]
fn heads_and_alarms_stay_out_of_memory_and_idle_logs_do_not_grow() {
    const ROWS: i64 = 500_000;
    let dir = TestDir::new();
    let mut cluster = new_pair(&dir);
    let (data_a, data_s) = (cluster.primary_data.clone(), cluster.standby_data.clone());
    let history = nvr_sync::fixture::History {
        count: 3,
        camera: "old".into(),
        first_start_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        segment_ms: 10_000,
        payload: vec![2; PAYLOAD_BYTES],
    };
    build_history(&cluster, &history);
    {
        // Older heads (ids below the real one, same content) and alarms, as months would leave.
        let mut c = rusqlite::Connection::open(data_a.join("sync.db")).expect("open sync.db");
        let tx = c.transaction().expect("transaction");
        tx.execute(
            "INSERT INTO heads (id, log_node, tree_size, head_hash, head_json, received_ms)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             SELECT -i, log_node, tree_size, randomblob(32), head_json, received_ms
             FROM n, (SELECT * FROM heads LIMIT 1)",
            [ROWS],
        )
        .expect("old heads");
        tx.execute(
            "INSERT INTO alarms (time_ms, kind, peer, segment_path, detail)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             SELECT i, 'old_alarm', 'standby-1', NULL, 'an alarm of long ago, kept for the record'
             FROM n",
            [ROWS],
        )
        .expect("old alarms");
        tx.commit().expect("commit");
    }
    let db_a = nvr_sync::syncdb::SyncDb::open(&data_a).expect("primary sync.db");
    let db_s = nvr_sync::syncdb::SyncDb::open(&data_s).expect("standby sync.db");
    let heads_a = db_a.head_count("node-a").expect("heads");
    let heads_s = db_s.head_count("node-a").expect("heads");
    assert_eq!(heads_a, ROWS as u64 + 1);

    cluster.head_interval_ms = 3_600_000;
    let cfg = cluster.write(&dir);
    let standby = spawn_sync(&dir, &cfg, "standby-1");
    let primary = spawn_sync(&dir, &cfg, "node-a");
    let connected = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        status_file(&data_a)["peers"]["standby-1"]["connected"].as_bool() == Some(true)
    });
    assert!(
        connected,
        "primary:\n{}\nstandby:\n{}",
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
    // A few status ticks (each one wrote the alarms) while connected and idle.
    let ticks = status_file(&data_a)["time_ms"].as_i64().unwrap_or(0);
    assert!(wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || status_file(&data_a)["time_ms"].as_i64().unwrap_or(0) > ticks + 3000
    ));
    let status = status_file(&data_a);
    assert_eq!(
        status["alarms_total"].as_u64(),
        Some(ROWS as u64),
        "{status}"
    );
    assert_eq!(status["recent_alarms"].as_array().map(Vec::len), Some(20));
    let peak = peak_rss_bytes(primary.pid().expect("primary pid"));
    assert!(
        peak < 96 << 20,
        "the primary peaked at {} MiB with {ROWS} heads and alarms stored",
        peak >> 20
    );
    assert_eq!(
        db_a.head_count("node-a").expect("heads"),
        heads_a,
        "heads signed with nothing new"
    );
    assert_eq!(db_s.head_count("node-a").expect("heads"), heads_s);
}

/// A standby whose `sync.db` holds leaves beyond its last head (as an acceptance interrupted by a crash
/// left it before heads were one transaction) drops them when it starts and accepts the next heads.
#[test]
fn leaves_no_head_covers_are_dropped_at_start() {
    const OLD: u64 = 10;
    let dir = TestDir::new();
    let (_camsim, cam_port) = rig::cluster::spawn_camsim(&dir, 1);
    let mut cluster = new_pair(&dir);
    let data_s = cluster.standby_data.clone();
    let history = nvr_sync::fixture::History {
        count: OLD,
        camera: "old".into(),
        first_start_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        segment_ms: 10_000,
        payload: vec![5; PAYLOAD_BYTES],
    };
    build_history(&cluster, &history);
    let db = nvr_sync::syncdb::SyncDb::open(&data_s).expect("standby sync.db");
    let stray = nvr_sync::merkle::SegmentLeaf {
        origin_node: "node-a".into(),
        camera: "old".into(),
        stream: "main".into(),
        path: "media/old/main/2020-01-01/20200101T000000000Z_node-a.mp4".into(),
        start_ms: 0,
        end_ms: 1,
        size_bytes: 1,
        sha256: [9; 32],
    };
    db.append_leaf(
        "node-a",
        OLD,
        &stray.encode(),
        &stray.leaf_hash(),
        &stray.path,
    )
    .expect("a leaf beyond the head");

    cluster.cameras = vec![("cam1".into(), format!("rtsp://127.0.0.1:{cam_port}/cam1"))];
    let cfg = cluster.write(&dir);
    let (standby, _recorder, primary) = spawn_pair(&dir, &cfg);
    let accepted = wait_until(Duration::from_secs(90), Duration::from_millis(300), || {
        status_file(&data_s)["peers"]["node-a"]["last_head_size"]
            .as_u64()
            .unwrap_or(0)
            > OLD
    });
    assert!(
        accepted,
        "no head accepted over the stray leaf\nprimary:\n{}\nstandby:\n{}",
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
    assert!(
        db.leaf_index_of("node-a", &stray.path)
            .expect("lookup")
            .is_none(),
        "the stray leaf is gone"
    );
}
