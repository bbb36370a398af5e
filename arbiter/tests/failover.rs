//! Failover end to end with real processes on loopback: a primary and its standby, each with its
//! recorder, sync agent and arbiter, recording the camera simulator (frame stamps count missing and
//! duplicated frames exactly, with the `nvr frames` code); kill -9 of every primary process.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Streams of the failover tests: `cam1`..`cam3` hot, `cam4` cold. Each node runs a recorder, a sync
/// agent and an arbiter, and the camera simulator serves every hot stream twice (to the primary and to
/// the standby's shadow session): the 2-core test machine holds 4 streams with room for the other tests
/// running beside it (the issue asks for 10).
const STREAMS: usize = 4;
const COLD: &str = "cam4";
/// The frame interval of camsim's shipped clip (25 fps, `camsim/src/clip.rs`).
const CLIP_FRAME_MS: f64 = 40.0;

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

/// Camera simulator, and per node its recorder, sync agent and arbiter, all running; the standby
/// shadows the hot streams, hears the primary, and holds sealed copies of its segments.
struct Pair {
    dir: TestDir,
    cfg: PathBuf,
    s: Node,
    a: Node,
    _camsim: NvrProcess,
    rec_a: NvrProcess,
    sync_a: NvrProcess,
    arb_a: NvrProcess,
    rec_s: NvrProcess,
    sync_s: NvrProcess,
    arb_s: NvrProcess,
}

impl Pair {
    fn start() -> Pair {
        let dir = TestDir::new();
        let (camsim, port) = spawn_camsim(&dir, STREAMS);
        let a = node(&dir, PRIMARY);
        let s = node(&dir, STANDBY);
        let cams = camsim_cameras(port, STREAMS);
        let cfg = write_cluster(&dir, &a, &s, &cams, &[COLD]);
        let (rec_s, sync_s, arb_s) = spawn_node(&dir, &cfg, STANDBY);
        let (rec_a, sync_a, arb_a) = spawn_node(&dir, &cfg, PRIMARY);
        let p = Pair {
            dir,
            cfg,
            s,
            a,
            _camsim: camsim,
            rec_a,
            sync_a,
            arb_a,
            rec_s,
            sync_s,
            arb_s,
        };
        let ready = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            p.standby_shadows() && p.standby_hears_primary()
        });
        assert!(
            ready,
            "standby not shadowing or not hearing the primary:\n{}\n{}\n{}",
            p.rec_s.stderr_tail(20),
            p.arb_s.stderr_tail(20),
            p.arb_a.stderr_tail(20)
        );
        let mirrored = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
            (1..=STREAMS).all(|i| {
                standby_files(&p.s.data, PRIMARY, &format!("cam{i}"))
                    .iter()
                    .filter(|(_, n, _)| n == PRIMARY)
                    .count()
                    >= 3
            })
        });
        assert!(mirrored, "nothing mirrored:\n{}", p.sync_s.stderr_tail(30));
        p
    }

    /// Every hot stream shadowed with a filled ring, the cold one idle.
    fn standby_shadows(&self) -> bool {
        let st = recorder_status(&self.dir, &self.cfg, STANDBY);
        st.as_array().is_some_and(|a| {
            a.len() == STREAMS
                && a.iter().all(|x| {
                    if x["camera"] == COLD {
                        x["mode"] == "off"
                    } else {
                        x["state"] == "shadowing" && x["ring_frames"].as_u64().unwrap_or(0) > 50
                    }
                })
        })
    }

    /// The arbiters are told to stop (recording goes on unchanged).
    fn stop_arbiters(&mut self) {
        for proc in [&mut self.arb_a, &mut self.arb_s] {
            proc.sigterm();
        }
    }

    /// The recorders stop cleanly: every segment sealed.
    fn stop_recorders(&mut self) {
        for proc in [&mut self.rec_a, &mut self.rec_s] {
            proc.sigterm();
            proc.expect_clean_exit(Duration::from_secs(30));
        }
    }

    /// The sync agents are told to stop.
    fn stop_agents(&mut self) {
        for proc in [&mut self.sync_a, &mut self.sync_s] {
            proc.sigterm();
        }
    }

    /// The arbiters, then the recorders, then the sync agents.
    fn stop_all(&mut self) {
        self.stop_arbiters();
        self.stop_recorders();
        self.stop_agents();
    }

    fn standby_hears_primary(&self) -> bool {
        arbiter_status(&self.dir, &self.cfg, STANDBY)["peers"][0]["alive"] == true
    }
}

/// Test 1 of the issue: kill -9 of the primary's recorder, sync agent and arbiter with hot streams.
/// The standby's arbiter detects the silence, promotes every stream after the last frame mirrored
/// from the primary with a new epoch, and the standby's merged timeline (mirrored copies of the
/// primary's segments + its own takeover segments) misses no frame.
#[test]
fn kill_9_of_the_primary_hot_streams_continue_on_the_standby_without_a_missing_frame() {
    let p = Pair::start();
    let Pair {
        dir,
        cfg,
        s,
        a: _,
        _camsim,
        mut rec_a,
        mut sync_a,
        mut arb_a,
        mut rec_s,
        mut sync_s,
        mut arb_s,
    } = p;

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
    let events: Vec<(i64, String)> = status_events(&st);
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
    // Let the standby record on its own for a few segments' worth; the arbiter reports each takeover's
    // gap once the first segment under the new epoch exists.
    std::thread::sleep(Duration::from_secs(6));
    let gaps: Vec<String> = event_messages(&arbiter_status(&dir, &cfg, STANDBY))
        .into_iter()
        .filter(|m| m.contains("takeover gap"))
        .collect();
    assert_eq!(gaps.len(), STREAMS, "{gaps:#?}");
    // kill -9 of the standby's arbiter while it holds the streams: restarted, it resumes its epochs;
    // asking its recorder again to record what it records already is not a failure.
    arb_s.kill9();
    let _ = std::fs::remove_file(s.data.join("arbiter-status.json"));
    let mut arb_s = spawn_arbiter(&dir, &cfg, STANDBY);
    let mut st = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            st = arbiter_status(&dir, &cfg, STANDBY);
            st["streams"].as_array().is_some_and(|v| {
                v.len() == STREAMS
                    && v.iter()
                        .all(|x| x["holder"] == STANDBY && x["promote_pending"] == false)
            })
        }),
        "{st:#}\n{}",
        arb_s.stderr_tail(20)
    );
    std::thread::sleep(Duration::from_secs(2));
    let failures: Vec<String> = event_messages(&arbiter_status(&dir, &cfg, STANDBY))
        .into_iter()
        .filter(|m| m.contains("failed"))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
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

    for g in &gaps {
        println!("{g}");
    }
    println!(
        "failover of {} hot and 1 cold streams: primary silent for {silent_ms} ms when declared dead \
         ({} ms after the kill by the wall clock), every stream recording on the standby {takeover_seen_s:.2} s \
         after the kill (polled)",
        STREAMS - 1,
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
        assert_eq!(duplicated, 0, "{camera}: {line}");
        let gap = gaps
            .iter()
            .find(|g| g.starts_with(&format!("{camera}/main:")))
            .expect("gap report");
        if camera == COLD {
            // Cold: the session opened on takeover; the gap is reported, and it is what is missing.
            assert!(gap.contains("cold takeover gap"), "{gap}");
            assert!(missing > 0, "{camera}: {line}");
        } else {
            // Seamless: the first frame recorded here follows the last one held by one frame interval,
            // measured on one clock (the standby's own session with the camera), ±1 frame.
            assert!(gap.contains("hot takeover gap"), "{gap}");
            let gap_ms: f64 = gap
                .split("takeover gap ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no gap figure in {gap:?}"));
            assert!(
                (gap_ms - CLIP_FRAME_MS).abs() <= CLIP_FRAME_MS,
                "{camera}: a seamless hot takeover's gap is one frame interval: {gaps:#?}"
            );
            assert!(gap.contains("on this node's session clock"), "{gap}");
            assert_eq!(
                missing, 0,
                "{camera}: frames missing in the merged timeline: {line}"
            );
        }
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
    for t in &takeovers {
        assert!(t.contains("epoch 1"), "{t}");
        if t.starts_with(&format!("{COLD}/main")) {
            assert!(t.contains("after nothing (cold start)"), "{t}");
            assert!(t.contains("gap not known on one clock"), "{t}");
        } else {
            assert!(t.contains("after the last frame held from node-a"), "{t}");
            assert!(t.contains("on this node's session clock"), "{t}");
        }
    }
}

/// Test 8 of the issue: kill -9 of either arbiter, restarted at once as its systemd unit does: recording
/// continues unchanged (the primary's recorder keeps its one run per stream, the standby keeps
/// shadowing and does not take over), and each arbiter resumes with its persisted state.
#[test]
fn kill_9_of_either_arbiter_changes_no_recording() {
    let mut p = Pair::start();
    let reader =
        || store::Reader::open(&p.a.data, Arc::new(base::clock::SystemClock)).expect("catalog");
    let runs_of = |r: &store::Reader| -> Vec<usize> {
        (1..=STREAMS)
            .map(|i| {
                let id = r
                    .find_stream(&format!("cam{i}"), "main")
                    .expect("query")
                    .expect("stream");
                r.runs(id).expect("runs").len()
            })
            .collect()
    };
    let runs_before = runs_of(&reader());

    p.arb_a.kill9();
    p.arb_a = spawn_arbiter(&p.dir, &p.cfg, PRIMARY);
    p.arb_s.kill9();
    p.arb_s = spawn_arbiter(&p.dir, &p.cfg, STANDBY);
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            p.standby_hears_primary()
        }),
        "{}",
        p.arb_s.stderr_tail(20)
    );
    // A few seconds of normal operation after the restarts.
    std::thread::sleep(Duration::from_secs(4));
    let st = arbiter_status(&p.dir, &p.cfg, STANDBY);
    for i in 1..=STREAMS {
        assert_eq!(
            holding(&st, &format!("cam{i}/main")),
            Some((PRIMARY.to_owned(), 0)),
            "no takeover: {st:#}"
        );
    }
    assert!(
        p.standby_shadows(),
        "the standby's streams kept their modes"
    );
    let rec = recorder_status(&p.dir, &p.cfg, PRIMARY);
    assert!(
        rec.as_array()
            .is_some_and(|a| a.len() == STREAMS && a.iter().all(|x| x["state"] == "recording")),
        "{rec:#}"
    );
    assert_eq!(
        runs_of(&reader()),
        runs_before,
        "recording was never interrupted"
    );

    p.rec_a.sigterm();
    p.rec_a.expect_clean_exit(Duration::from_secs(30));
    let r = reader();
    for i in 1..=STREAMS {
        let id = r
            .find_stream(&format!("cam{i}"), "main")
            .expect("query")
            .expect("stream");
        let paths: Vec<PathBuf> = r
            .stream_segments(id)
            .expect("segments")
            .iter()
            .map(|s| r.absolute_path(&s.path))
            .collect();
        let (_, missing, duplicated, line) = frames_summary(&p.dir, &paths);
        assert_eq!((missing, duplicated), (0, 0), "cam{i}: {line}");
    }
    let takeovers = store::Reader::open(&p.s.data, Arc::new(base::clock::SystemClock))
        .expect("standby catalog")
        .events(0, 10_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "takeover")
        .count();
    assert_eq!(takeovers, 0);
    for proc in [
        &mut p.arb_a,
        &mut p.arb_s,
        &mut p.sync_a,
        &mut p.sync_s,
        &mut p.rec_s,
    ] {
        proc.sigterm();
    }
}

/// Test 3 of the issue: one camera becomes unreachable from the primary only (a proxy in front of it cuts
/// the primary's session and refuses its reconnections, while the standby's shadow session goes on): after
/// `stream_failed_ms` that stream alone moves to the standby, exactly after its last mirrored frame; the
/// other streams stay with the primary.
#[test]
fn a_camera_unreachable_from_the_primary_only_moves_that_stream_alone() {
    let dir = TestDir::new();
    let (_camsim, port) = spawn_camsim(&dir, 2);
    let proxy = CameraProxy::start(format!("127.0.0.1:{port}").parse().expect("addr"));
    let a = node(&dir, PRIMARY);
    let s = node(&dir, STANDBY);
    let cams = vec![
        (
            "cam1".to_owned(),
            format!("rtsp://127.0.0.1:{}/cam1", proxy.port),
        ),
        ("cam2".to_owned(), format!("rtsp://127.0.0.1:{port}/cam2")),
    ];
    let cfg = write_cluster(&dir, &a, &s, &cams, &[]);
    // The standby's recorder connects to the camera first (the proxy's first connection).
    let mut rec_s = spawn_recorder(&dir, &cfg, STANDBY);
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            proxy.connections() >= 1
                && recorder_status(&dir, &cfg, STANDBY)
                    .as_array()
                    .is_some_and(|v| v.iter().all(|x| x["state"] == "shadowing"))
        }),
        "{}",
        rec_s.stderr_tail(20)
    );
    let kept = proxy.connections();
    let mut sync_s = spawn_sync(&dir, &cfg, STANDBY);
    let mut arb_s = spawn_arbiter(&dir, &cfg, STANDBY);
    let (mut rec_a, mut sync_a, mut arb_a) = spawn_node(&dir, &cfg, PRIMARY);
    let mirrored = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        ["cam1", "cam2"].iter().all(|c| {
            standby_files(&s.data, PRIMARY, c)
                .iter()
                .filter(|(_, n, _)| n == PRIMARY)
                .count()
                >= 2
        }) && arbiter_status(&dir, &cfg, STANDBY)["peers"][0]["alive"] == true
    });
    assert!(mirrored, "{}", sync_s.stderr_tail(20));

    proxy.cut_after(kept);
    let moved = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let st = arbiter_status(&dir, &cfg, STANDBY);
        holding(&st, "cam1/main") == Some((STANDBY.to_owned(), 1))
    });
    assert!(
        moved,
        "{}\n{}",
        arb_s.stderr_tail(30),
        arb_a.stderr_tail(30)
    );
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            recorder_status(&dir, &cfg, STANDBY)
                .as_array()
                .and_then(|v| v.iter().find(|x| x["camera"] == "cam1").cloned())
                .is_some_and(|x| x["state"] == "recording")
        }),
        "{}",
        rec_s.stderr_tail(20)
    );
    // Only that stream moved; the primary, alive, keeps the other.
    std::thread::sleep(Duration::from_secs(4));
    let st = arbiter_status(&dir, &cfg, STANDBY);
    assert_eq!(
        holding(&st, "cam2/main"),
        Some((PRIMARY.to_owned(), 0)),
        "{st:#}"
    );
    assert!(st["peers"][0]["alive"] == true, "{st:#}");
    let event = event_messages(&st)
        .into_iter()
        .find(|m| m.starts_with("promoting cam1/main with epoch 1"))
        .expect("promotion event");
    assert!(
        event.contains("session of cam1/main failed on node-a"),
        "{event}"
    );
    // The primary learned the newer epoch and switched its stream to shadow (fencing).
    let sa = arbiter_status(&dir, &cfg, PRIMARY);
    assert_eq!(
        holding(&sa, "cam1/main"),
        Some((STANDBY.to_owned(), 1)),
        "{sa:#}"
    );
    let rec = recorder_status(&dir, &cfg, PRIMARY);
    let mode_of = |cam: &str| {
        rec.as_array()
            .and_then(|v| v.iter().find(|x| x["camera"] == cam).cloned())
            .map(|x| x["mode"].clone())
    };
    assert_eq!(
        mode_of("cam1"),
        Some(serde_json::json!("shadow")),
        "{rec:#}"
    );
    assert_eq!(
        mode_of("cam2"),
        Some(serde_json::json!("record")),
        "{rec:#}"
    );

    for p in [&mut arb_a, &mut arb_s, &mut rec_a, &mut sync_a] {
        p.sigterm();
    }
    rec_s.sigterm();
    rec_s.expect_clean_exit(Duration::from_secs(30));
    sync_s.sigterm();
    let files = standby_files(&s.data, PRIMARY, "cam1");
    assert!(files.iter().any(|(_, n, e)| n == STANDBY && *e == Some(1)));
    let paths: Vec<PathBuf> = files.iter().map(|(p, _, _)| p.clone()).collect();
    let (_, missing, duplicated, line) = frames_summary(&dir, &paths);
    println!("cam1 after the stream-level takeover: {line}; {event}");
    assert_eq!((missing, duplicated), (0, 0), "{line}");
}

/// Test 5 of the issue: failback. The primary dies (kill -9), the standby takes over; the primary comes
/// back, learns the newer epochs and shadows its streams; after the hold-down (3 s here) the standby
/// releases each stream at a key frame and hands it back with a new epoch, and the primary records from
/// exactly the frame after the standby's last: in the standby's de-duplicated timeline (every segment
/// of both nodes, including what the returning primary recorded before it learned of the takeover and
/// what its recovery brought back), no hot stream misses or repeats a frame.
#[test]
fn failback_after_the_primary_returns_misses_and_repeats_no_frame() {
    let mut p = Pair::start();
    p.rec_a.kill9();
    p.sync_a.kill9();
    p.arb_a.kill9();
    let took_over = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let st = arbiter_status(&p.dir, &p.cfg, STANDBY);
        (1..=STREAMS)
            .all(|i| holding(&st, &format!("cam{i}/main")) == Some((STANDBY.to_owned(), 1)))
    });
    assert!(took_over, "{}", p.arb_s.stderr_tail(30));
    std::thread::sleep(Duration::from_secs(3));

    // The primary comes back.
    p.rec_a = spawn_recorder(&p.dir, &p.cfg, PRIMARY);
    p.sync_a = spawn_sync(&p.dir, &p.cfg, PRIMARY);
    p.arb_a = spawn_arbiter(&p.dir, &p.cfg, PRIMARY);
    let mut st = serde_json::Value::Null;
    let handed_back = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        st = arbiter_status(&p.dir, &p.cfg, STANDBY);
        (1..=STREAMS)
            .all(|i| holding(&st, &format!("cam{i}/main")) == Some((PRIMARY.to_owned(), 2)))
    });
    assert!(
        handed_back,
        "{st:#}\n{}\n{}",
        p.arb_s.stderr_tail(30),
        p.arb_a.stderr_tail(30)
    );
    let recording_again = wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
        let a = recorder_status(&p.dir, &p.cfg, PRIMARY);
        let s = recorder_status(&p.dir, &p.cfg, STANDBY);
        a.as_array().is_some_and(|v| {
            v.len() == STREAMS
                && v.iter()
                    .all(|x| x["mode"] == "record" && x["state"] == "recording")
        }) && s
            .as_array()
            .is_some_and(|v| v.iter().all(|x| x["mode"] != "record"))
    });
    assert!(recording_again, "{}", p.arb_a.stderr_tail(30));
    std::thread::sleep(Duration::from_secs(4));
    p.stop_arbiters();
    p.stop_recorders();
    // Settling: every segment the primary sealed reaches the standby, whose catalog then holds the
    // whole stream.
    assert!(
        mirrored_all(&p.a.data, &p.s.data, STREAMS),
        "mirroring did not catch up:\n{}",
        p.sync_a.stderr_tail(30)
    );
    p.stop_agents();
    let events: Vec<String> = event_messages(&st)
        .into_iter()
        .filter(|m| m.contains("handed back") || m.contains("handing"))
        .collect();
    for e in &events {
        println!("{e}");
    }

    let primary =
        store::Reader::open(&p.a.data, Arc::new(base::clock::SystemClock)).expect("catalog");
    for i in 1..=STREAMS {
        let camera = format!("cam{i}");
        // The primary's part after the failback: its segments under epoch 2.
        let id = primary
            .find_stream(&camera, "main")
            .expect("query")
            .expect("stream");
        let after = primary
            .stream_segments(id)
            .expect("segments")
            .iter()
            .filter(|s| s.epoch == Some(2))
            .count();
        assert!(after > 0, "{camera}: nothing recorded under epoch 2");
        // The standby's timeline holds every part: the primary's before the failure, what its
        // recovery brought back that was not mirrored when it died, what it recorded on its return
        // before it learned of the takeover (both repeat frames of the standby's part), the standby's
        // part and the primary's part after the failback. De-duplication leaves each frame once.
        let (frames, missing, duplicated, trimmed, line) =
            timeline_summary(&p.dir, &p.s.data, &format!("{camera}/main"));
        println!(
            "{camera}: the standby's timeline {line}; {trimmed} frames recorded by both nodes trimmed"
        );
        assert!(frames > 200, "{line}");
        assert_eq!(duplicated, 0, "{camera}: {line}");
        if camera != COLD {
            assert_eq!(missing, 0, "{camera}: {line}");
        }
    }
}

/// Test 6 of the issue: planned handover both ways (`nvr-arbiter handover`, for an upgrade): each hot
/// stream goes from the primary to the standby and back, make-before-break at a key frame; it stays on
/// the standby past the failback hold-down (a planned handover is not undone); the primary's part, the
/// standby's part and the primary's part again miss and repeat no frame.
#[test]
fn planned_handover_both_ways_misses_and_repeats_no_frame() {
    let mut p = Pair::start();
    let hot: Vec<String> = (1..STREAMS).map(|i| format!("cam{i}/main")).collect();
    let handover = |from: &str, to: &str, stream: &str| {
        let out = std::process::Command::new(arbiter_bin())
            .args([
                "handover",
                "--config",
                &path_str(&p.cfg),
                "--node",
                from,
                "--to",
                to,
                stream,
            ])
            .output()
            .expect("nvr-arbiter handover");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let held_by = |node: &str, epoch: u64| {
        let st = arbiter_status(&p.dir, &p.cfg, STANDBY);
        hot.iter()
            .all(|k| holding(&st, k) == Some((node.to_owned(), epoch)))
    };
    let modes = |node: &str, mode: &str| {
        recorder_status(&p.dir, &p.cfg, node)
            .as_array()
            .is_some_and(|v| {
                v.iter()
                    .filter(|x| x["camera"] != COLD)
                    .all(|x| x["mode"] == mode)
            })
    };
    // The cold stream has no shadow session on the standby: a handover to it is refused by name.
    let out = std::process::Command::new(arbiter_bin())
        .args([
            "handover",
            "--config",
            &path_str(&p.cfg),
            "--node",
            PRIMARY,
            "--to",
            STANDBY,
        ])
        .output()
        .expect("nvr-arbiter handover");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node node-s does not receive cam4/main now"),
        "{out:?}"
    );

    // Every hot stream handed from `from` to `to`, which then records them under `epoch` while
    // `from` shadows them (`from_arbiter`'s log if not).
    let hand_over_all = |from: &str, to: &str, epoch: u64, from_arbiter: &NvrProcess| {
        for k in &hot {
            handover(from, to, k);
        }
        assert!(
            wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
                held_by(to, epoch) && modes(to, "record") && modes(from, "shadow")
            }),
            "{}",
            from_arbiter.stderr_tail(30)
        );
    };
    hand_over_all(PRIMARY, STANDBY, 1, &p.arb_a);
    // Past the failback hold-down (3 s): still on the standby.
    std::thread::sleep(Duration::from_secs(5));
    assert!(held_by(STANDBY, 1), "a planned handover was undone");
    hand_over_all(STANDBY, PRIMARY, 2, &p.arb_s);
    std::thread::sleep(Duration::from_secs(3));
    p.stop_all();
    assert_primary_standby_primary_again(&p, &hot, "");
}

/// `nvr ctl handover --to NODE --camera C…` and `nvr ctl drain NODE` from the recorder's command line,
/// through the arbiter's operator socket: two cameras go to the standby by name, a drain of the
/// primary is refused by name while its cold camera has no session on the standby, the standby's drain
/// hands both back; across the primary's part, the standby's and the primary's again no frame is
/// missing or repeated. With the arbiter stopped, `nvr ctl handover` says so.
#[test]
fn nvr_ctl_handover_and_drain_miss_and_repeat_no_frame() {
    let mut p = Pair::start();
    let ctl = |node: &str, args: &[&str]| {
        let c = path_str(&p.cfg);
        let mut all = vec!["ctl", "--config", &c, "--node", node];
        all.extend_from_slice(args);
        run_nvr(&p.dir, &all, Duration::from_secs(30))
    };
    let hot = ["cam1/main", "cam2/main"];
    let held_by = |node: &str, epoch: u64| {
        let st = arbiter_status(&p.dir, &p.cfg, STANDBY);
        hot.iter()
            .all(|k| holding(&st, k) == Some((node.to_owned(), epoch)))
    };
    let out = ctl(
        PRIMARY,
        &[
            "handover", "--to", STANDBY, "--camera", "cam1", "--camera", "cam2",
        ],
    );
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("hand_back"), "{}", out.stdout);
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            held_by(STANDBY, 1)
        }),
        "{}",
        p.arb_a.stderr_tail(30)
    );
    // A drain of the primary: cam4 is cold, the standby has no session to continue it from.
    let out = ctl(PRIMARY, &["drain", PRIMARY]);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("refused: node node-s does not receive cam4/main now"),
        "{}",
        out.stderr
    );
    let out = ctl(PRIMARY, &["drain", STANDBY]);
    assert!(
        out.stderr.contains("a node is drained by its own arbiter"),
        "{}",
        out.stderr
    );
    std::thread::sleep(Duration::from_secs(3));
    // The standby drains: both back to their owner, make-before-break.
    let out = ctl(STANDBY, &["drain", STANDBY]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            held_by(PRIMARY, 2)
                && recorder_status(&p.dir, &p.cfg, STANDBY)
                    .as_array()
                    .is_some_and(|v| v.iter().all(|x| x["mode"] != "record"))
        }),
        "{}",
        p.arb_s.stderr_tail(30)
    );
    std::thread::sleep(Duration::from_secs(3));
    // Without its arbiter, the command says what is wrong.
    p.arb_a.sigterm();
    p.arb_a.expect_clean_exit(Duration::from_secs(15));
    let out = ctl(PRIMARY, &["handover", "--to", STANDBY]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("is nvr-arbiter running on this node?"),
        "{}",
        out.stderr
    );
    p.arb_s.sigterm();
    p.stop_recorders();
    p.stop_agents();
    assert_primary_standby_primary_again(&p, &hot, " through nvr ctl");
}

/// The files of `camera` each node recorded itself: the primary's own segments in its catalog (the
/// standby's, which flow back to it, are taken from the standby), then the standby's own copies (of
/// epoch `only_epoch` if given).
fn recorded_by_each_node(p: &Pair, camera: &str, only_epoch: Option<u64>) -> Vec<PathBuf> {
    let primary =
        store::Reader::open(&p.a.data, Arc::new(base::clock::SystemClock)).expect("catalog");
    let id = primary
        .find_stream(camera, "main")
        .expect("query")
        .expect("stream");
    let mut paths: Vec<PathBuf> = primary
        .stream_segments(id)
        .expect("segments")
        .iter()
        .filter(|s| s.node == PRIMARY)
        .map(|s| primary.absolute_path(&s.path))
        .collect();
    paths.extend(
        standby_files(&p.s.data, PRIMARY, camera)
            .into_iter()
            .filter(|(_, node, epoch)| {
                node == STANDBY && only_epoch.is_none_or(|e| *epoch == Some(e))
            })
            .map(|(path, _, _)| path),
    );
    paths
}

/// After a handover to the standby and back (epoch 1 on the standby): per stream of `streams`, the
/// primary's own segments and the standby's epoch-1 segments together miss and repeat no frame. The
/// primary's own rows only: the standby's part flows back into its catalog too.
fn assert_primary_standby_primary_again<S: AsRef<str>>(p: &Pair, streams: &[S], how: &str) {
    for k in streams {
        let camera = k.as_ref().trim_end_matches("/main");
        let paths = recorded_by_each_node(p, camera, Some(1));
        let (frames, missing, duplicated, line) = frames_summary(&p.dir, &paths);
        println!("{camera} (primary, standby, primary again){how}: {line}");
        assert!(frames > 200, "{line}");
        assert_eq!((missing, duplicated), (0, 0), "{camera}: {line}");
    }
}

/// `kill -SIG PID` (a shell utility: the tests deny unsafe code).
fn signal(p: &NvrProcess, sig: &str) {
    let pid = p.pid().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Test 9 of the issue, with the primary's heartbeats flapping: its arbiter is paused 3 s and runs 3 s,
/// for a minute, while its recorder keeps recording. The standby takes the streams over (the primary
/// then learns the newer epoch and stands down), raises a flapping alarm at the third death, and from
/// then on switches nothing back: switches are bounded; no frame is lost across both nodes.
#[test]
fn a_primary_flapping_every_3_s_for_a_minute_loses_no_frame_with_bounded_switches() {
    let mut p = Pair::start();
    for _ in 0..10 {
        signal(&p.arb_a, "-STOP");
        std::thread::sleep(Duration::from_secs(3));
        signal(&p.arb_a, "-CONT");
        std::thread::sleep(Duration::from_secs(3));
    }
    let st = arbiter_status(&p.dir, &p.cfg, STANDBY);
    // Each pause is a death; until the third (flapping), a running window of 3 s can satisfy the
    // test's 3 s failback hold-down: at most 3 takeovers and 2 hand-backs per stream, then it stays.
    for i in 1..=STREAMS {
        let (holder, epoch) = holding(&st, &format!("cam{i}/main")).expect("held");
        assert_eq!(holder, STANDBY, "{st:#}");
        assert!(epoch <= 5, "switches bounded: epoch {epoch}");
    }
    assert!(st["peers"][0]["flapping"] == true, "{st:#}");
    let events: Vec<(i64, String)> = status_events(&st);
    let (flapped_at, flaps) = events
        .iter()
        .find(|(_, m)| m.starts_with("node node-a flaps"))
        .cloned()
        .unwrap_or_else(|| panic!("no flapping alarm: {events:#?}"));
    let deaths = events
        .iter()
        .filter(|(_, m)| m.starts_with("node node-a is dead"))
        .count();
    assert!(
        !events
            .iter()
            .any(|(t, m)| *t > flapped_at && m.contains("handing")),
        "nothing handed back once it flaps: {events:#?}"
    );
    p.stop_all();
    println!("{flaps}; declared dead {deaths} times (the status keeps the last events)");
    for i in 1..STREAMS {
        let camera = format!("cam{i}");
        let paths = recorded_by_each_node(&p, &camera, None);
        let (frames, missing, duplicated, line) = frames_summary(&p.dir, &paths);
        println!("{camera} (both nodes): {line}");
        assert!(frames > 1000, "{line}");
        // Both recorded while the primary had not yet heard of the takeover: duplicates, not losses.
        assert_eq!(missing, 0, "{camera}: {line}");
        println!("{camera}: {duplicated} frames recorded by both nodes");
    }
}
