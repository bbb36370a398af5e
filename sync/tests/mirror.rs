//! End-to-end tests of the sync agent: real recorder, real agents (primary and standby) as processes,
//! real mutual TLS on loopback, real faults (kill -9, a proxy that stalls, refuses and cuts, files
//! overwritten with random bytes, a forged primary).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const CAMSIM_STREAMS: usize = 3;

struct Pair {
    run: RunningPair,
    a: Identity,
    s: Identity,
    standby_listen: String,
}

/// Camera simulator + recorder + standby agent + primary agent (optionally through `proxy_for`).
fn start_pair(
    streams: usize,
    scrub_interval_ms: u64,
    via_proxy: bool,
) -> (Pair, Option<FaultProxy>) {
    let dir = TestDir::new();
    let (camsim, cam_port) = rig::cluster::spawn_camsim(&dir, streams);
    let mut cluster = new_pair(&dir);
    let proxy = cluster.through_proxy(via_proxy);
    cluster.cameras = camsim_cameras(cam_port, streams);
    cluster.segment_s = 4;
    cluster.scrub_interval_ms = scrub_interval_ms;
    let cfg = cluster.write(&dir);
    (
        Pair {
            a: cluster.primary.clone(),
            s: cluster.standby.clone(),
            standby_listen: cluster.standby_listen.clone(),
            run: RunningPair::spawn(dir, &cluster, cfg, camsim),
        },
        proxy,
    )
}

fn standby_alarms(data_s: &Path) -> Vec<nvr_sync::syncdb::AlarmRow> {
    nvr_sync::syncdb::SyncDb::open(data_s)
        .and_then(|db| db.alarms(0))
        .unwrap_or_default()
}

fn primary_alarms(data_a: &Path) -> Vec<nvr_sync::syncdb::AlarmRow> {
    nvr_sync::syncdb::SyncDb::open(data_a)
        .and_then(|db| db.alarms(0))
        .unwrap_or_default()
}

/// Stops the recorder and waits until the standby holds every sealed segment, byte-identical.
fn stop_and_converge(p: &mut Pair, timeout: Duration) {
    p.run.recorder.sigterm();
    p.run.recorder.expect_clean_exit(Duration::from_secs(30));
    let want = sealed_on(&p.run.data_a, "node-a");
    assert!(!want.is_empty());
    // The file is published a moment before its catalog row is written: wait for both.
    let converged = wait_until(timeout, Duration::from_millis(300), || {
        let have = media_files(&p.run.data_s);
        let cataloged = sealed_on(&p.run.data_s, "node-a");
        want.iter()
            .all(|(path, sha)| have.get(path) == Some(sha) && cataloged.get(path) == Some(sha))
    });
    let have = media_files(&p.run.data_s);
    p.run.assert_converged(converged, &want, &have);
    // Byte-identical to the primary's files, and to the hashes the recorder computed while writing.
    let primary_files = media_files(&p.run.data_a);
    for (path, sha) in &want {
        assert_eq!(
            primary_files.get(path),
            Some(sha),
            "{path}: primary file vs catalog"
        );
    }
    let standby_sealed = sealed_on(&p.run.data_s, "node-a");
    assert_eq!(
        standby_sealed, want,
        "standby catalog: every mirrored segment sealed with the primary's hash"
    );
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn mirrors_three_streams_byte_identical_lagging_at_most_a_fragment() {
    let (mut p, _) = start_pair(CAMSIM_STREAMS, 0, false);
    let mut lag_ms = Vec::new();
    let mut lag_bytes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let st = status_file(&p.run.data_a);
        if let Some(streams) = st["peers"]["standby-1"]["streams"].as_object() {
            for v in streams.values() {
                lag_ms.push(v["lag_ms"].as_i64().unwrap_or(0));
                lag_bytes.push(v["lag_bytes"].as_i64().unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        p.run.recorder.is_running() && p.run.primary.is_running() && p.run.standby.is_running()
    );
    assert!(lag_ms.len() > 100, "status samples: {}", lag_ms.len());
    lag_ms.sort_unstable();
    lag_bytes.sort_unstable();
    // One fragment = one 2 s GOP of the simulator (about 0.5 MB at 2 Mbit/s).
    let fragment_bytes = 700_000;
    println!(
        "lag ms p50 {} p99 {} max {}; lag bytes p50 {} p99 {} max {}",
        percentile(&lag_ms, 0.5),
        percentile(&lag_ms, 0.99),
        lag_ms.last().copied().unwrap_or(0),
        percentile(&lag_bytes, 0.5),
        percentile(&lag_bytes, 0.99),
        lag_bytes.last().copied().unwrap_or(0)
    );
    assert!(
        lag_ms.last().copied().unwrap_or(0) <= 3000,
        "lag beyond one fragment + 1 s: {:?}",
        lag_ms.last()
    );
    assert!(
        lag_bytes.last().copied().unwrap_or(0) <= fragment_bytes,
        "lag beyond one fragment: {:?}",
        lag_bytes.last()
    );
    stop_and_converge(&mut p, Duration::from_secs(30));
    // The standby countersigned the whole log.
    let st = status_file(&p.run.data_a);
    let log_size = st["log_size"].as_u64().unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            status_file(&p.run.data_a)["peers"]["standby-1"]["last_head_size"].as_u64()
                >= Some(sealed_on(&p.run.data_a, "node-a").len() as u64)
        }),
        "log {log_size}, status {st}"
    );
    assert!(
        standby_alarms(&p.run.data_s).is_empty(),
        "{:?}",
        standby_alarms(&p.run.data_s)
    );
    let status = sync_status(&p.run.dir, &p.run.cfg, "standby-1");
    assert_eq!(status["role"], "standby");
}

#[test]
fn killing_either_agent_resumes_without_resending_and_recording_never_stops() {
    let (mut p, _) = start_pair(2, 0, false);
    let mut sent_total = 0u64;
    let sent_now = |data_a: &Path| {
        status_file(data_a)["peers"]["standby-1"]["bytes_sent"]
            .as_u64()
            .unwrap_or(0)
    };
    for round in 0..2 {
        assert!(
            wait_until(
                Duration::from_secs(30),
                Duration::from_millis(200),
                || sent_now(&p.run.data_a) > 500_000
            ),
            "round {round}: nothing mirrored; {}",
            p.run.primary.stderr_tail(20)
        );
        std::thread::sleep(Duration::from_millis(1500));
        sent_total += sent_now(&p.run.data_a);
        // Mid-transfer, the primary agent dies; a moment later the standby's too.
        p.run.primary.kill9();
        std::fs::remove_file(p.run.data_a.join("sync-status.json")).ok();
        std::thread::sleep(Duration::from_secs(2));
        p.run.standby.kill9();
        std::thread::sleep(Duration::from_secs(2));
        p.run.standby = spawn_sync(&p.run.dir, &p.run.cfg, "standby-1");
        p.run.primary = spawn_sync(&p.run.dir, &p.run.cfg, "node-a");
    }
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        p.run.recorder.is_running(),
        "the recorder must not care about the agents"
    );
    stop_and_converge(&mut p, Duration::from_secs(40));
    sent_total += sent_now(&p.run.data_a);
    let total: u64 = media_files(&p.run.data_a)
        .keys()
        .map(|k| {
            std::fs::metadata(p.run.data_a.join(k))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    // Only data in flight at a kill (at most one 1 MiB chunk per stream, twice) may be sent again.
    println!("bytes sent over all agent lifetimes {sent_total}, bytes of media {total}");
    assert!(
        sent_total <= total + 4 * 1_048_576,
        "re-sent too much: {sent_total} for {total}"
    );
    // The recorder recorded every stream as one continuous run through all of it.
    let store = store::Reader::open(&p.run.data_a, std::sync::Arc::new(base::clock::SystemClock))
        .expect("store");
    let streams = store.streams().expect("streams");
    for s in streams {
        assert_eq!(
            store.runs(s.id).expect("runs").len(),
            1,
            "{}: recording was interrupted",
            s.camera
        );
    }
}

#[test]
fn link_stalls_refusals_and_cuts_are_caught_up_without_loss() {
    let (mut p, proxy) = start_pair(2, 0, true);
    let proxy = proxy.expect("proxy");
    assert!(
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || proxy.bytes_to_target() > 300_000
        ),
        "nothing crossed the proxy; {}",
        p.run.primary.stderr_tail(20)
    );
    proxy.set_mode(Mode::Stall);
    std::thread::sleep(Duration::from_secs(10));
    proxy.set_mode(Mode::Refuse);
    std::thread::sleep(Duration::from_secs(10));
    proxy.set_mode(Mode::Pass);
    std::thread::sleep(Duration::from_secs(5));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(5));
    assert!(proxy.connections() >= 2, "the agent reconnected");
    stop_and_converge(&mut p, Duration::from_secs(60));
    assert!(p.run.primary.is_running() && p.run.standby.is_running());
}

#[test]
fn ransomware_on_the_primary_cannot_touch_the_standby_and_is_repaired() {
    let (mut p, _) = start_pair(2, 1000, false);
    wait_sealed_on_standby(&p, 4);
    let standby_before = media_files(&p.run.data_s);
    // Encrypt every sealed segment on the primary; flip bytes in the open ones.
    let store = store::Reader::open(&p.run.data_a, std::sync::Arc::new(base::clock::SystemClock))
        .expect("store");
    let sealed = store
        .segments_in_state(store::SegmentState::Sealed)
        .expect("sealed");
    let open = store
        .segments_in_state(store::SegmentState::Open)
        .expect("open");
    let attack_ms = chrono::Utc::now().timestamp_millis();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for row in &sealed {
        let path = p.run.data_a.join(&row.path);
        let len = std::fs::metadata(&path).expect("meta").len() as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut perms = std::fs::metadata(&path).expect("meta").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).expect("chmod");
        std::fs::write(&path, junk).expect("encrypt");
    }
    for row in &open {
        let path = p.run.data_a.join(&row.path);
        if let Ok(mut bytes) = std::fs::read(&path) {
            let at = bytes.len() / 2;
            bytes[at] ^= 0xff;
            std::fs::write(&path, bytes).ok();
        }
    }
    // Alarms within 10 s (the tamper watch sees the changes first; the scrub may find some too).
    let attack_alarm = |kind: &str| matches!(kind, "scrub_mismatch" | "tamper" | "tampering");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            primary_alarms(&p.run.data_a)
                .iter()
                .any(|a| attack_alarm(&a.kind) && a.time_ms >= attack_ms)
        }),
        "no alarm within 10 s; primary log:\n{}",
        p.run.primary.stderr_tail(30)
    );
    let alarm_ms = primary_alarms(&p.run.data_a)
        .iter()
        .filter(|a| attack_alarm(&a.kind) && a.time_ms >= attack_ms)
        .map(|a| a.time_ms)
        .min()
        .unwrap_or(0);
    println!("first alarm {} ms after the attack", alarm_ms - attack_ms);
    // The standby's verified copies are untouched.
    let standby_now = media_files(&p.run.data_s);
    for (path, sha) in &standby_before {
        assert_eq!(
            standby_now.get(path),
            Some(sha),
            "{path} changed on the standby"
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    assert!(p.run.recorder.is_running(), "recording never stops");
    stop_and_converge(&mut p, Duration::from_secs(40));
    // Restore (on top of the automatic repair) leaves the primary bit-identical to what was recorded.
    restore_node_a(&p.run.dir, &p.run.cfg);
    let want = sealed_on(&p.run.data_a, "node-a");
    let files = media_files(&p.run.data_a);
    for (path, sha) in &want {
        assert_eq!(files.get(path), Some(sha), "{path} not restored");
    }
    let quarantined = std::fs::read_dir(p.run.data_a.join("quarantine"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        quarantined >= sealed.len(),
        "damaged files kept aside: {quarantined}"
    );
    let check = run_nvr(
        &p.run.dir,
        &[
            "check",
            "--config",
            &p.run.cfg.to_string_lossy(),
            "--node",
            "node-a",
        ],
        Duration::from_secs(60),
    );
    assert!(
        check.status.success(),
        "nvr check after restore:\n{}",
        check.stdout
    );
}

/// Waits (40 s at most) until the standby holds `n` sealed copies of node-a's segments.
fn wait_sealed_on_standby(p: &Pair, n: usize) {
    assert!(
        wait_until(Duration::from_secs(40), Duration::from_millis(300), || {
            sealed_on(&p.run.data_s, "node-a").len() >= n
        }),
        "nothing sealed on the standby; {}",
        p.run.standby.stderr_tail(20)
    );
}

#[test]
fn restore_rebuilds_a_wiped_primary_from_the_standby() {
    let (mut p, _) = start_pair(1, 0, false);
    wait_sealed_on_standby(&p, 3);
    stop_and_converge(&mut p, Duration::from_secs(30));
    let want = sealed_on(&p.run.data_a, "node-a");
    p.run.primary.sigterm();
    p.run.primary.expect_clean_exit(Duration::from_secs(20));
    std::fs::remove_dir_all(&p.run.data_a).expect("wipe");
    // Only the sub stream (never recorded here): nothing is listed or fetched.
    let config = p.run.cfg.to_string_lossy().into_owned();
    let out = run_sync_ok(
        &p.run.dir,
        &[
            "restore", "--config", &config, "--node", "node-a", "--stream", "sub",
        ],
        Duration::from_secs(120),
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("report");
    assert_eq!(report["listed"], 0, "{report}");
    assert!(media_files(&p.run.data_a).is_empty(), "nothing restored");
    restore_node_a(&p.run.dir, &p.run.cfg);
    assert_eq!(sealed_on(&p.run.data_a, "node-a"), want);
    assert_eq!(media_files(&p.run.data_a), want);
    let _ = (&p.a, &p.s, &p.standby_listen);
}

/// A compromised primary (it has the real keys) and strangers (no pinned key) talk to the standby
/// directly with the protocol library.
#[test]
fn forged_history_contradicting_bytes_and_unknown_peers_are_refused_with_alarms() {
    use nvr_sync::agent::{primary, Conn};
    use nvr_sync::merkle::{MerkleTree, SegmentLeaf, SignedTreeHead, TreeHead};
    use nvr_sync::proto::{Message, SegmentKey};

    let (mut p, _) = start_pair(1, 0, false);
    wait_sealed_on_standby(&p, 3);
    // Give the standby a moment to accept the head covering them, then stop the honest agent.
    std::thread::sleep(Duration::from_secs(2));
    p.run.primary.sigterm();
    p.run.primary.expect_clean_exit(Duration::from_secs(20));
    let before = media_files(&p.run.data_s);
    let alarms_before = standby_alarms(&p.run.data_s).len();

    let id = nvr_sync::identity::load(&p.a.dir).expect("primary identity");
    let stranger_dir = p.run.dir.join("stranger");
    let stranger =
        nvr_sync::identity::generate(&stranger_dir, "node-a").expect("stranger identity");
    let cfg = nvr_sync::config::SyncConfig::load(&p.run.cfg, Some("node-a")).expect("config");
    let standby = cfg.peers[0].clone();
    let own_heads: Vec<SignedTreeHead> = nvr_sync::syncdb::SyncDb::open(&p.run.data_a)
        .and_then(|db| db.heads("node-a"))
        .expect("heads")
        .iter()
        .filter_map(|h| serde_json::from_str(&h.head_json).ok())
        .collect();
    let own_leaves: Vec<SegmentLeaf> = nvr_sync::syncdb::SyncDb::open(&p.run.data_a)
        .and_then(|db| db.leaves("node-a"))
        .expect("leaves")
        .iter()
        .filter_map(|(b, _)| SegmentLeaf::decode(b).ok())
        .collect();
    assert!(own_heads.len() >= 2 && !own_leaves.is_empty());

    let rt = runtime();
    rt.block_on(async {
        // A stranger with an unpinned certificate never gets a session.
        let refused = match primary::connect(&stranger, &standby).await {
            Err(_) => true,
            Ok(tls) => {
                let mut conn = Conn::new(tls);
                primary::handshake(&mut conn, "node-a", &standby)
                    .await
                    .is_err()
            }
        };
        assert!(refused, "unknown certificate accepted");

        let (mut conn, view) = connect_as_node_a(&id, &standby).await;
        let held_head = view.head.expect("standby holds a head");
        // Sealed copies are summed up (`sealed_below_leaf`) rather than listed: one from the catalog.
        let sealed_path = sealed_on(&p.run.data_s, "node-a")
            .into_keys()
            .next()
            .expect("a sealed copy on the standby");
        /// Sends `msg` and expects the standby to refuse it.
        async fn expect_refused<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
            conn: &mut Conn<S>,
            msg: Message,
            what: &str,
        ) {
            conn.send(&msg).await.expect("send");
            match conn.recv(Duration::from_secs(10)).await.expect("recv") {
                Some(Message::Refused { .. }) => {}
                other => panic!("{what}: expected Refused, got {other:?}"),
            }
        }
        let size = held_head.head.tree_size as usize;
        let head_msg = |head: &SignedTreeHead, proof: Vec<String>, leaves: &[&SegmentLeaf]| {
            Message::TreeHead {
                head: serde_json::to_value(head).expect("json"),
                first_leaf: size as u64,
                consistency_proof: proof,
                leaves: leaves
                    .iter()
                    .map(|l| serde_json::to_value(l).expect("json"))
                    .collect(),
            }
        };
        // A head genuinely signed by the primary's key over `tree`, claiming to extend the held one.
        let extension = |tree: &MerkleTree, timestamp_ms: i64, new_leaf: &SegmentLeaf| {
            let head = TreeHead {
                log_node: "node-a".into(),
                tree_size: tree.len(),
                root_hash: tree.root(),
                timestamp_ms,
                prev_head_hash: held_head.head.head_hash(),
            }
            .sign(&|m| id.sign(m));
            let proof = tree
                .consistency_proof(size as u64, tree.len())
                .unwrap_or_default()
                .iter()
                .map(|h| base::hex::encode(h))
                .collect();
            head_msg(&head, proof, &[new_leaf])
        };

        // 1. Bytes contradicting a sealed copy.
        let key = SegmentKey {
            origin_node: "node-a".into(),
            path: sealed_path,
        };
        let data = Message::SegmentData {
            key,
            offset: 0,
            data: vec![0x42u8; 4096].into(),
        };
        expect_refused(&mut conn, data, "contradicting bytes").await;

        // 2. A head signed with another key.
        let mut forged = held_head.head.clone();
        forged.timestamp_ms += 1;
        forged.prev_head_hash = held_head.head.head_hash();
        let other_key = forged.sign(&|m| stranger.sign(m));
        let msg = head_msg(&other_key, vec![], &[]);
        expect_refused(&mut conn, msg, "head signed by another key").await;

        // 3. A replayed older head (genuinely signed).
        let old = own_heads
            .iter()
            .find(|h| h.head.tree_size < held_head.head.tree_size)
            .unwrap_or(&own_heads[0]);
        expect_refused(&mut conn, head_msg(old, vec![], &[]), "replayed head").await;

        // 4. History rewritten by the (compromised) primary itself: leaf 0 gets another hash.
        let mut leaves: Vec<SegmentLeaf> = own_leaves[..size.min(own_leaves.len())].to_vec();
        leaves[0].sha256 = [7u8; 32];
        let mut extra = leaves[0].clone();
        extra.path = "media/cam1/main/2030-01-01/20300101T000000000Z_node-a.mp4".into();
        leaves.push(extra.clone());
        let tree = MerkleTree::from_leaf_hashes(leaves.iter().map(|l| l.leaf_hash()).collect());
        let msg = extension(&tree, held_head.head.timestamp_ms + 10, &extra);
        expect_refused(&mut conn, msg, "rewritten leaf").await;

        // 5. A new leaf that contradicts a sealed copy the standby holds (same path, other hash).
        let mut grown = MerkleTree::from_leaf_hashes(
            own_leaves[..size].iter().map(|l| l.leaf_hash()).collect(),
        );
        let mut lie = own_leaves[0].clone();
        lie.sha256 = [9u8; 32];
        grown.push(lie.leaf_hash());
        let msg = extension(&grown, held_head.head.timestamp_ms + 20, &lie);
        expect_refused(&mut conn, msg, "leaf contradicting a held copy").await;

        // 6. A second leaf for a path the log already holds, even with the same hash (after the
        // standby's retention deleted the copy, it would otherwise become restore's answer).
        let mut again = MerkleTree::from_leaf_hashes(
            own_leaves[..size].iter().map(|l| l.leaf_hash()).collect(),
        );
        let dup = own_leaves[0].clone();
        again.push(dup.leaf_hash());
        let msg = extension(&again, held_head.head.timestamp_ms + 30, &dup);
        expect_refused(&mut conn, msg, "second leaf for a logged path").await;

        // 7. A head from the far future (genuinely signed, a valid new leaf): accepting it would
        // block every honest head after it (their timestamps would regress).
        let mut future = MerkleTree::from_leaf_hashes(
            own_leaves[..size].iter().map(|l| l.leaf_hash()).collect(),
        );
        let mut fresh_leaf = own_leaves[0].clone();
        fresh_leaf.path = "media/cam1/main/2030-01-02/20300102T000000000Z_node-a.mp4".into();
        future.push(fresh_leaf.leaf_hash());
        let year_ms = 365 * 86_400_000;
        let msg = extension(&future, held_head.head.timestamp_ms + year_ms, &fresh_leaf);
        expect_refused(&mut conn, msg, "head from the future").await;
    });

    let alarms = standby_alarms(&p.run.data_s);
    assert!(alarms.len() >= alarms_before + 7, "alarms: {alarms:?}");
    assert!(
        alarms
            .iter()
            .any(|a| a.detail.contains("ahead of this node's clock")),
        "alarms: {alarms:?}"
    );
    assert!(
        alarms
            .iter()
            .any(|a| a.detail.contains("already holds a leaf")),
        "alarms: {alarms:?}"
    );
    assert_eq!(
        media_files(&p.run.data_s),
        before,
        "the standby's media did not change"
    );
    let quarantined = std::fs::read_dir(p.run.data_s.join("quarantine"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(quarantined >= 1, "refused bytes kept aside");
    assert!(p.run.standby.is_running());
    // The honest primary reconnects and carries on.
    p.run.primary = spawn_sync(&p.run.dir, &p.run.cfg, "node-a");
    stop_and_converge(&mut p, Duration::from_secs(40));
}
