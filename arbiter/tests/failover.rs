//! Failover end to end with real processes on loopback: a primary and its standby, each with its
//! recorder, sync agent and arbiter, recording the camera simulator (frame stamps count missing and
//! duplicated frames exactly, with the `nvr frames` code); kill -9 of every primary process.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Streams of the failover test. Each node runs a recorder, a sync agent and an arbiter, and the
/// camera simulator serves every stream twice (to the primary and to the standby's shadow session):
/// the 2-core test machine holds 4 streams with room for the other tests running beside it.
const STREAMS: usize = 4;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every file of `camera`'s main stream that the standby holds, by relative path: its sealed copies
/// and own segments (catalog) and the staging copies of segments the primary never sealed.
fn standby_files(data: &Path, origin: &str, camera: &str) -> Vec<(PathBuf, String, Option<u64>)> {
    let reader =
        store::Reader::open(data, Arc::new(base::clock::SystemClock)).expect("standby catalog");
    let mut by_path: BTreeMap<String, (PathBuf, String, Option<u64>)> = BTreeMap::new();
    if let Some(id) = reader.find_stream(camera, "main").expect("stream") {
        for s in reader.stream_segments(id).expect("segments") {
            by_path.insert(
                s.path.clone(),
                (reader.absolute_path(&s.path), s.node.clone(), s.epoch),
            );
        }
    }
    let staging = data.join(store::INCOMING_DIR).join(origin);
    for rel in store::layout::list_media_files(&staging).expect("staging") {
        let info = store::parse_media_path(&rel).expect("staging path");
        if info.camera == camera {
            by_path
                .entry(path_str(&rel))
                .or_insert((staging.join(&rel), origin.to_owned(), None));
        }
    }
    by_path.into_values().collect()
}

/// `nvr frames --summary FILES…`: the `# all:` (or single file) line's (frames, missing, duplicated).
fn frames_summary(dir: &TestDir, files: &[PathBuf]) -> (u64, u64, u64, String) {
    let mut args = vec!["frames".to_owned(), "--summary".to_owned()];
    args.extend(files.iter().map(|p| path_str(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(dir, &args, Duration::from_secs(60));
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    let line = out.stdout.lines().last().expect("summary line").to_owned();
    // "# NAME: N frames, seq A..B, M missing, D duplicated, U unstamped"
    let num = |word: &str| -> u64 {
        let parts: Vec<&str> = line.split([' ', ',']).filter(|p| !p.is_empty()).collect();
        parts
            .iter()
            .position(|p| *p == word)
            .and_then(|i| parts.get(i - 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {word} in {line:?}"))
    };
    (num("frames"), num("missing"), num("duplicated"), line)
}

/// Test 1 of the issue: kill -9 of the primary's recorder, sync agent and arbiter with hot streams.
/// The standby's arbiter detects the silence, promotes every stream after the last frame mirrored
/// from the primary with a new epoch, and the standby's merged timeline (mirrored copies of the
/// primary's segments + its own takeover segments) misses no frame.
#[test]
fn kill_9_of_the_primary_hot_streams_continue_on_the_standby_without_a_missing_frame() {
    let dir = TestDir::new();
    let (_camsim, port) = spawn_camsim(&dir, STREAMS);
    let a = node(&dir, PRIMARY);
    let s = node(&dir, STANDBY);
    let cams: Vec<(String, String)> = (1..=STREAMS)
        .map(|i| (format!("cam{i}"), format!("rtsp://127.0.0.1:{port}/cam{i}")))
        .collect();
    let cfg = write_cluster(&dir, &a, &s, &cams);

    let mut rec_s = spawn_recorder(&dir, &cfg, STANDBY);
    let mut sync_s = spawn_sync(&dir, &cfg, STANDBY);
    let mut arb_s = spawn_arbiter(&dir, &cfg, STANDBY);
    let mut rec_a = spawn_recorder(&dir, &cfg, PRIMARY);
    let mut sync_a = spawn_sync(&dir, &cfg, PRIMARY);
    let mut arb_a = spawn_arbiter(&dir, &cfg, PRIMARY);

    // The standby shadows every stream, the primary records them, and the arbiters hear each other.
    let ready = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        let st = recorder_status(&dir, &cfg, STANDBY);
        let shadowing = st.as_array().is_some_and(|a| {
            a.len() == STREAMS
                && a.iter().all(|x| {
                    x["state"] == "shadowing" && x["ring_frames"].as_u64().unwrap_or(0) > 50
                })
        });
        let sa = arbiter_status(&dir, &cfg, STANDBY);
        let heard = sa["peers"][0]["alive"] == true;
        shadowing && heard
    });
    assert!(
        ready,
        "standby not shadowing or not hearing the primary:\n{}\n{}\n{}",
        rec_s.stderr_tail(20),
        arb_s.stderr_tail(20),
        arb_a.stderr_tail(20)
    );
    // Several segments mirrored (sealed copies on the standby) before the failure.
    let mirrored = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        (1..=STREAMS).all(|i| {
            standby_files(&s.data, PRIMARY, &format!("cam{i}"))
                .iter()
                .filter(|(_, n, _)| n == PRIMARY)
                .count()
                >= 3
        })
    });
    assert!(mirrored, "nothing mirrored:\n{}", sync_s.stderr_tail(30));

    // kill -9 of every process of the primary, at once.
    let killed_ms = now_ms();
    let killed = Instant::now();
    rec_a.kill9();
    sync_a.kill9();
    arb_a.kill9();

    let took_over = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let st = recorder_status(&dir, &cfg, STANDBY);
        st.as_array().is_some_and(|a| {
            a.len() == STREAMS
                && a.iter()
                    .all(|x| x["mode"] == "record" && x["state"] == "recording")
        })
    });
    let takeover_seen_s = killed.elapsed().as_secs_f64();
    assert!(
        took_over,
        "the standby did not take over:\n{}\n{}",
        arb_s.stderr_tail(40),
        rec_s.stderr_tail(40)
    );
    // The status document is rewritten every heartbeat interval.
    let mut st = serde_json::Value::Null;
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        st = arbiter_status(&dir, &cfg, STANDBY);
        (1..=STREAMS).all(|i| holding(&st, &format!("cam{i}/main")).is_some_and(|h| h.1 == 1))
    });
    for i in 1..=STREAMS {
        assert_eq!(
            holding(&st, &format!("cam{i}/main")),
            Some((STANDBY.to_owned(), 1)),
            "{st:#}"
        );
    }
    assert!(
        st["peers"][0]["alive"] == false,
        "the primary is dead: {st:#}"
    );
    // Detection, as the standby reports it: "node node-a is dead (silent for N ms)".
    let events: Vec<(i64, String)> = st["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["time_ms"].as_i64().unwrap_or(0),
                e["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let (dead_at_ms, dead_msg) = events
        .iter()
        .find(|(_, m)| m.starts_with(&format!("node {PRIMARY} is dead")))
        .cloned()
        .unwrap_or_else(|| panic!("no detection event: {events:#?}"));
    let silent_ms: i64 = dead_msg
        .split("silent for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no silence figure in {dead_msg:?}"));
    // Let the standby record on its own for a few segments' worth.
    std::thread::sleep(Duration::from_secs(6));
    arb_s.sigterm();
    arb_s.expect_clean_exit(Duration::from_secs(15));
    // The arbiter's exit changed nothing: the recorder still records every stream.
    let st = recorder_status(&dir, &cfg, STANDBY);
    assert!(
        st.as_array()
            .is_some_and(|a| a.iter().all(|x| x["mode"] == "record")),
        "{st:#}"
    );
    rec_s.sigterm();
    rec_s.expect_clean_exit(Duration::from_secs(30));
    sync_s.sigterm();
    sync_s.expect_clean_exit(Duration::from_secs(30));

    println!(
        "failover of {STREAMS} hot streams: primary silent for {silent_ms} ms when declared dead \
         ({} ms after the kill by the wall clock), every stream recording on the standby {takeover_seen_s:.2} s \
         after the kill (polled)",
        dead_at_ms - killed_ms
    );
    for i in 1..=STREAMS {
        let camera = format!("cam{i}");
        let files = standby_files(&s.data, PRIMARY, &camera);
        let own: Vec<&(PathBuf, String, Option<u64>)> =
            files.iter().filter(|(_, n, _)| n == STANDBY).collect();
        assert!(!own.is_empty(), "{camera}: no takeover segment");
        assert!(
            own.iter().all(|(_, _, e)| *e == Some(1)),
            "{camera}: takeover segments carry node and epoch: {own:?}"
        );
        let paths: Vec<PathBuf> = files.iter().map(|(p, _, _)| p.clone()).collect();
        let (frames, missing, duplicated, line) = frames_summary(&dir, &paths);
        println!("{camera}: {line}");
        assert!(frames > 200, "{camera}: {line}");
        assert_eq!(
            missing, 0,
            "{camera}: frames missing in the merged timeline: {line}"
        );
        assert_eq!(duplicated, 0, "{camera}: {line}");
    }
    // The takeover is in the standby's catalog events, with its epoch.
    let reader = store::Reader::open(&s.data, Arc::new(base::clock::SystemClock)).expect("catalog");
    let takeovers: Vec<String> = reader
        .events(0, 10_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "takeover")
        .map(|e| e.message)
        .collect();
    assert_eq!(takeovers.len(), STREAMS, "{takeovers:#?}");
    assert!(
        takeovers
            .iter()
            .all(|m| m.contains("epoch 1")
                && m.contains("after the last frame mirrored from node-a")),
        "{takeovers:#?}"
    );
}
