//! The decision core alone: every input, every refusal, and properties over random runs of a primary
//! and its standby exchanging heartbeats (lost, delayed, replayed) while nodes die and come back.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const T: Timings = Timings {
    heartbeat_interval_ms: 200,
    node_dead_ms: 1_000,
    stream_failed_ms: 2_000,
    failback_hold_ms: 10_000,
};

fn spec(key: &str, owner: &str, takeover: Takeover, priority: u32) -> StreamSpec {
    StreamSpec {
        key: key.to_owned(),
        owner: owner.to_owned(),
        protector: "s".to_owned(),
        takeover,
        priority,
        bitrate_kbps: None,
    }
}

fn streams() -> Vec<StreamSpec> {
    vec![
        spec("a1/main", "a", Takeover::Hot, 100),
        spec("a2/main", "a", Takeover::Cold, 200),
    ]
}

fn standby(capacity: Option<u32>) -> Core {
    Core::new(
        "s",
        T,
        Capacity::streams(capacity),
        streams(),
        &["a".to_owned()],
        &BTreeMap::new(),
        0,
    )
}

fn primary() -> Core {
    Core::new(
        "a",
        T,
        Capacity::default(),
        streams(),
        &["s".to_owned()],
        &BTreeMap::new(),
        0,
    )
}

fn hb_from(core: &Core, n: u64, receiving: bool) -> Heartbeat {
    Heartbeat {
        node: core.me().to_owned(),
        seq: Seq { boot_ms: 1, n },
        sent_ms: 0,
        holdings: core.claims(),
        health: ["a1/main", "a2/main"]
            .iter()
            .map(|s| StreamHealth {
                stream: (*s).to_owned(),
                mode: "record".to_owned(),
                state: if receiving { "recording" } else { "backoff" }.to_owned(),
                receiving,
                bitrate_kbps: 0,
            })
            .collect(),
        hears: Vec::new(),
    }
}

/// A heartbeat from `from`, as the shell hands it to the core.
fn heartbeat_in(from: &str, heartbeat: Heartbeat) -> Input {
    Input::Heartbeat {
        from: from.into(),
        heartbeat,
    }
}

/// `core` hears `heartbeat` from `from` at `t_ms` and accepts it.
fn hear(core: &mut Core, t_ms: i64, from: &str, heartbeat: Heartbeat) -> Vec<Action> {
    core.handle(t_ms, heartbeat_in(from, heartbeat))
        .expect("heartbeat accepted")
}

/// `core`'s heartbeat with every stream in shadow mode (a standby, or an owner shadowing its
/// streams back).
fn shadowing(core: &Core, n: u64) -> Heartbeat {
    let mut h = hb_from(core, n, true);
    for x in &mut h.health {
        x.mode = "shadow".into();
    }
    h
}

/// The (stream, new owner) of every hand-back in `actions`.
fn hand_backs(actions: &[Action]) -> Vec<(&str, &str)> {
    actions
        .iter()
        .filter_map(|x| match x {
            Action::HandBack { stream, owner, .. } => Some((stream.as_str(), owner.as_str())),
            _ => None,
        })
        .collect()
}

/// The shell reports `stream` handed back at `epoch` after the frame `last`.
fn report_handed_back(core: &mut Core, t_ms: i64, stream: &str, epoch: u64, last: &FrameId) {
    core.handle(
        t_ms,
        Input::HandedBack {
            stream: stream.into(),
            epoch,
            result: Ok(last.clone()),
        },
    )
    .expect("released");
}

/// The shell reports `stream` promoted at `epoch`.
fn report_promoted(core: &mut Core, t_ms: i64, stream: &str, epoch: u64) {
    core.handle(
        t_ms,
        Input::Promoted {
            stream: stream.into(),
            epoch,
            result: Ok(()),
        },
    )
    .expect("promoted");
}

fn promotes(actions: &[Action]) -> Vec<(String, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Promote { stream, epoch, .. } => Some((stream.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

fn alarms(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Alarm { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn local_receiving(core: &mut Core, now_ms: i64) {
    let health = ["a1/main", "a2/main"]
        .iter()
        .map(|s| StreamHealth {
            stream: (*s).to_owned(),
            mode: "shadow".to_owned(),
            state: "shadowing".to_owned(),
            receiving: true,
            bitrate_kbps: 0,
        })
        .collect();
    core.handle(now_ms, Input::LocalHealth(Some(health)))
        .expect("local health");
}

#[test]
fn heartbeats_keep_the_primary_alive_and_silence_promotes_in_priority_order() {
    let a = primary();
    let mut s = standby(None);
    let mut t = 0;
    for n in 1..=10 {
        t += 200;
        let acts = hear(&mut s, t, "a", hb_from(&a, n, true));
        assert!(promotes(&acts).is_empty());
    }
    // 1000 ms of silence is not yet dead; 1001 is, which is when the shell is told to evaluate.
    assert_eq!(s.next_death_ms(), Some(t + 1_001));
    let acts = s.handle(t + 1_000, Input::Tick).expect("tick");
    assert!(promotes(&acts).is_empty(), "{acts:?}");
    let acts = s.handle(t + 1_001, Input::Tick).expect("tick");
    assert_eq!(s.next_death_ms(), None, "no living peer left");
    assert_eq!(
        promotes(&acts),
        [("a2/main".to_owned(), 1), ("a1/main".to_owned(), 1)],
        "higher priority first, each with a new epoch"
    );
    assert!(acts.contains(&Action::Persist));
    assert!(
        alarms(&acts).iter().any(|m| m.contains("node a is dead")),
        "{acts:?}"
    );
    let hot = acts.iter().find_map(|a| match a {
        Action::Promote {
            stream,
            takeover,
            after_frames_of,
            ..
        } if stream == "a1/main" => Some((*takeover, after_frames_of.clone())),
        _ => None,
    });
    assert_eq!(hot, Some((Takeover::Hot, "a".to_owned())));
    let h = s.holdings();
    assert_eq!(
        h["a1/main"],
        Holding {
            holder: "s".into(),
            epoch: 1
        }
    );
    // No second promotion while the first is in flight; a confirmed one is not repeated.
    assert!(promotes(&s.handle(t + 1_200, Input::Tick).expect("tick")).is_empty());
    for k in ["a1/main", "a2/main"] {
        report_promoted(&mut s, t + 1_300, k, 1);
    }
    assert!(promotes(&s.handle(t + 5_000, Input::Tick).expect("tick")).is_empty());
}

#[test]
fn a_failed_promotion_is_retried_with_the_same_epoch() {
    let mut s = standby(None);
    let acts = s.handle(1_001, Input::Tick).expect("tick");
    assert_eq!(
        promotes(&acts).len(),
        2,
        "never heard of: dead after the grace"
    );
    let acts = s
        .handle(
            1_100,
            Input::Promoted {
                stream: "a1/main".into(),
                epoch: 1,
                result: Err("busy".into()),
            },
        )
        .expect("result");
    assert!(alarms(&acts).iter().any(|m| m.contains("failed: busy")));
    assert!(promotes(&acts).is_empty(), "not at once: {acts:?}");
    assert!(promotes(&s.handle(2_099, Input::Tick).expect("tick")).is_empty());
    let acts = s.handle(2_100, Input::Tick).expect("tick");
    assert_eq!(promotes(&acts), [("a1/main".to_owned(), 1)]);
}

#[test]
fn capacity_leaves_the_lowest_priorities_uncovered_and_says_so_once() {
    let mut s = standby(Some(1));
    let acts = s.handle(1_001, Input::Tick).expect("tick");
    assert_eq!(promotes(&acts), [("a2/main".to_owned(), 1)]);
    assert!(alarms(&acts)
        .iter()
        .any(|m| m.contains("a1/main is uncovered")));
    let acts = s.handle(2_000, Input::Tick).expect("tick");
    assert!(alarms(&acts).is_empty(), "{acts:?}");
    let view = s.streams();
    assert!(view
        .iter()
        .any(|v| v.stream == "a1/main" && v.uncovered && v.holder == "a"));
}

#[test]
fn a_higher_priority_stream_preempts_a_lower_one_at_capacity() {
    // One standby for two primaries, room for one stream: a's (priority 100) is taken first, then b's
    // (priority 200) dies too and takes its place; a's is released, held by nobody, reported.
    let streams = vec![
        spec("a1/main", "a", Takeover::Hot, 100),
        spec("b1/main", "b", Takeover::Hot, 200),
    ];
    let peers = ["a".to_owned(), "b".to_owned()];
    let mut s = Core::new(
        "s",
        T,
        Capacity::streams(Some(1)),
        streams,
        &peers,
        &BTreeMap::new(),
        0,
    );
    let b = Core::new(
        "b",
        T,
        Capacity::default(),
        vec![spec("b1/main", "b", Takeover::Hot, 200)],
        &["s".to_owned()],
        &BTreeMap::new(),
        0,
    );
    let mut acts = Vec::new();
    for n in 1..=8 {
        let mut h = hb_from(&b, n as u64, true);
        h.node = "b".into();
        let from = "b".to_owned();
        acts.extend(hear(&mut s, n * 200, &from, h));
    }
    // a was never heard: dead after the grace, taken over; b is alive.
    assert_eq!(promotes(&acts), [("a1/main".to_owned(), 1)]);
    // b falls silent.
    let acts = s.handle(2_700, Input::Tick).expect("tick");
    assert_eq!(promotes(&acts), [("b1/main".to_owned(), 1)], "{acts:?}");
    assert!(
        acts.iter()
            .any(|x| matches!(x, Action::Release { stream, epoch: 2, .. } if stream == "a1/main")),
        "{acts:?}"
    );
    assert!(alarms(&acts)
        .iter()
        .any(|m| m.contains("a1/main is uncovered: released to make room for b1/main")));
    let h = s.holdings();
    assert_eq!(
        h["a1/main"],
        Holding {
            holder: NOBODY.into(),
            epoch: 2
        }
    );
    assert_eq!(
        h["b1/main"],
        Holding {
            holder: "s".into(),
            epoch: 1
        }
    );
    // The lower one does not come back while the higher one holds the room, and is not re-alarmed.
    let acts = s.handle(3_000, Input::Tick).expect("tick");
    assert!(
        promotes(&acts).is_empty() && alarms(&acts).is_empty(),
        "{acts:?}"
    );
    assert!(s
        .streams()
        .iter()
        .any(|v| v.stream == "a1/main" && v.uncovered));
}

/// `nvr ctl handover --camera` and `nvr ctl drain`: a camera's streams go to the peer named; a drain
/// of the primary hands each stream to its standby and a drain of the standby each back to its owner;
/// refusals (an unknown camera, another node's drain, a peer that does not shadow) change nothing.
#[test]
fn handover_by_camera_and_drain_both_ways() {
    let mut a = primary();
    let mut s = standby(None);
    hear(&mut a, 100, "s", shadowing(&s, 1));
    hear(&mut s, 100, "a", hb_from(&a, 1, true));
    let cameras = |to: &str, cams: &[&str]| {
        Input::Operator(OperatorCommand::HandoverCameras {
            cameras: cams.iter().map(|c| (*c).to_owned()).collect(),
            to: to.to_owned(),
        })
    };
    let drain = |node: &str| {
        Input::Operator(OperatorCommand::Drain {
            node: node.to_owned(),
        })
    };
    let before = a.holdings();
    assert_eq!(
        a.handle(200, cameras("s", &["a1", "zz"]))
            .expect_err("unknown camera")
            .to_string(),
        "no stream of camera zz in this arbiter's care"
    );
    assert_eq!(
        a.handle(200, drain("s"))
            .expect_err("elsewhere")
            .to_string(),
        "this is the arbiter of a, not of s: a node is drained by its own arbiter"
    );
    assert!(matches!(
        s.handle(200, cameras("a", &["a1"])),
        Err(Refusal::NotHeldHere { .. })
    ));
    assert_eq!(a.holdings(), before);
    assert!(!a.streams.values().any(|x| x.handing_back));

    // a → s by camera: a1 only.
    let acts = a.handle(300, cameras("s", &["a1"])).expect("handover");
    assert_eq!(hand_backs(&acts), [("a1/main", "s")]);
    let last = FrameId {
        hash: "ab".repeat(16),
        wall_ms: 300,
    };
    report_handed_back(&mut a, 400, "a1/main", 0, &last);
    // a drains: the rest (a2) goes to its standby.
    let acts = a.handle(450, drain("a")).expect("drain");
    assert_eq!(hand_backs(&acts), [("a2/main", "s")]);
    report_handed_back(&mut a, 460, "a2/main", 0, &last);
    let acts = hear(&mut s, 500, "a", hb_from(&a, 2, true));
    assert_eq!(
        promotes(&acts),
        [("a1/main".to_owned(), 1), ("a2/main".to_owned(), 1)]
    );
    for k in ["a1/main", "a2/main"] {
        report_promoted(&mut s, 600, k, 1);
    }
    // The standby drains while a does not shadow yet: refused by name, nothing changes.
    assert!(matches!(
        s.handle(650, drain("s")),
        Err(Refusal::NotShadowed { .. })
    ));
    // a shadows both: the standby's drain hands each back to its owner.
    hear(&mut s, 700, "a", shadowing(&a, 3));
    let acts = s.handle(700, drain("s")).expect("drain");
    assert_eq!(hand_backs(&acts), [("a1/main", "a"), ("a2/main", "a")]);
}

/// A standby with a cap in kbit/s (and optionally in streams) protecting `streams` of never-heard
/// primaries (`spec` with a configured bitrate): (key, owner, priority, configured kbit/s).
fn mbps_standby(streams: Option<u32>, kbps: u64, specs: &[(&str, &str, u32, Option<u32>)]) -> Core {
    let specs: Vec<StreamSpec> = specs
        .iter()
        .map(|(key, owner, priority, rate)| StreamSpec {
            bitrate_kbps: *rate,
            ..spec(key, owner, Takeover::Hot, *priority)
        })
        .collect();
    let mut peers: Vec<String> = specs.iter().map(|s| s.owner.clone()).collect();
    peers.dedup();
    Core::new(
        "s",
        T,
        Capacity {
            streams,
            kbps: Some(kbps),
        },
        specs,
        &peers,
        &BTreeMap::new(),
        0,
    )
}

/// The local recorder shadows `rates` (key, measured kbit/s).
fn local_rates(core: &mut Core, now_ms: i64, rates: &[(&str, u64)]) {
    let health = rates
        .iter()
        .map(|(k, r)| StreamHealth {
            stream: (*k).to_owned(),
            mode: "shadow".to_owned(),
            state: "shadowing".to_owned(),
            receiving: true,
            bitrate_kbps: *r,
        })
        .collect();
    core.handle(now_ms, Input::LocalHealth(Some(health)))
        .expect("local health");
}

fn held_by_me(core: &Core) -> Vec<String> {
    core.holdings()
        .into_iter()
        .filter(|(_, h)| h.holder == core.me())
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn a_capacity_in_mbps_counts_configured_bitrates_until_measured() {
    // 5 Mbit/s: x1 (3 Mbit/s) first; x2 (3) does not fit beside it and is uncovered; x3 (1.5) does.
    let specs = [
        ("x1/main", "a", 300, Some(3_000)),
        ("x2/main", "a", 200, Some(3_000)),
        ("x3/main", "a", 100, Some(1_500)),
    ];
    let mut s = mbps_standby(None, 5_000, &specs);
    let acts = s.handle(1_001, Input::Tick).expect("tick");
    assert_eq!(
        promotes(&acts),
        [("x1/main".to_owned(), 1), ("x3/main".to_owned(), 1)]
    );
    assert!(
        alarms(&acts).iter().any(|m| m.starts_with(
            "x2/main is uncovered: node a dead: never heard, and this node is at its capacity of 5 Mbit/s"
        )),
        "{acts:?}"
    );
    assert_eq!(s.capacity().kbps, 4_500);
    assert_eq!(s.capacity().streams, 2);

    // Measured: x2 is 1 Mbit/s in fact, so x1 + x2 fit and x3 (1.5) no longer does.
    let mut s = mbps_standby(None, 5_000, &specs);
    local_rates(&mut s, 500, &[("x2/main", 1_000)]);
    let acts = s.handle(1_001, Input::Tick).expect("tick");
    assert_eq!(
        promotes(&acts),
        [("x1/main".to_owned(), 1), ("x2/main".to_owned(), 1)]
    );
    assert!(alarms(&acts)
        .iter()
        .any(|m| m.starts_with("x3/main is uncovered")));
    let view = s.streams();
    let rate = |k: &str| view.iter().find(|v| v.stream == k).map(|v| v.bitrate_kbps);
    assert_eq!(
        (rate("x1/main"), rate("x2/main"), rate("x3/main")),
        (Some(3_000), Some(1_000), Some(1_500))
    );
}

#[test]
fn both_caps_hold_at_once() {
    // Room for 10 Mbit/s but only 2 streams: the third is uncovered though it would fit in Mbit/s.
    let specs = [
        ("x1/main", "a", 300, Some(1_000)),
        ("x2/main", "a", 200, Some(1_000)),
        ("x3/main", "a", 100, Some(1_000)),
    ];
    let mut s = mbps_standby(Some(2), 10_000, &specs);
    let acts = s.handle(1_001, Input::Tick).expect("tick");
    assert_eq!(held_by_me(&s), ["x1/main", "x2/main"]);
    assert!(alarms(&acts).iter().any(|m| m.starts_with(
        "x3/main is uncovered: node a dead: never heard, and this node is at its capacity of 2 streams and 10 Mbit/s"
    )));
}

/// One higher-priority stream may need several lower ones given up; none is given up when even all
/// of them would not make room; and the streams given up are taken back when room frees.
#[test]
fn preemption_in_mbps_gives_up_as_few_as_needed_and_takes_them_back_when_room_frees() {
    let specs = [
        ("a1/main", "a", 100, Some(1_500)),
        ("a2/main", "a", 110, Some(1_500)),
        ("a3/main", "a", 120, Some(1_500)),
        ("b1/main", "b", 200, Some(2_500)),
        ("c1/main", "c", 300, Some(9_000)),
    ];
    let mut s = mbps_standby(None, 5_000, &specs);
    // b and c are heard (alive, recording); a is never heard: its three streams are taken (4.5).
    let hb = |node: &str, n: u64, keys: &[&str], mode: &str| Heartbeat {
        node: node.to_owned(),
        seq: Seq { boot_ms: 1, n },
        sent_ms: 0,
        holdings: Vec::new(),
        hears: Vec::new(),
        health: keys
            .iter()
            .map(|k| StreamHealth {
                stream: (*k).to_owned(),
                mode: mode.to_owned(),
                state: if mode == "shadow" {
                    "shadowing"
                } else {
                    "recording"
                }
                .to_owned(),
                receiving: true,
                bitrate_kbps: 0,
            })
            .collect(),
    };
    let mut acts = Vec::new();
    for n in 1..=5u64 {
        let t = n as i64 * 200;
        for (node, key) in [("b", "b1/main"), ("c", "c1/main")] {
            acts.extend(
                s.handle(t, heartbeat_in(node, hb(node, n, &[key], "record")))
                    .expect("alive"),
            );
        }
    }
    acts.extend(s.handle(1_001, Input::Tick).expect("tick"));
    assert_eq!(held_by_me(&s), ["a1/main", "a2/main", "a3/main"]);
    // c dies: its 9 Mbit/s stream cannot fit even with all of a's given up: nothing is given up.
    // b dies too (at the same time): 2.5 Mbit/s needs two of a's 1.5 given up, the two lowest.
    let acts = s.handle(2_001, Input::Tick).expect("tick");
    assert_eq!(held_by_me(&s), ["a3/main", "b1/main"], "{acts:?}");
    let released: Vec<&str> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Release { stream, .. } => Some(stream.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(released, ["a1/main", "a2/main"]);
    assert!(alarms(&acts)
        .iter()
        .any(|m| m.starts_with("c1/main is uncovered")));
    assert_eq!(s.capacity().kbps, 4_000);
    report_promoted(&mut s, 2_050, "b1/main", 1);
    // b comes back and shadows its stream; after the hold-down the standby hands b1 back, and the
    // room it frees goes back to a's streams (nobody records them), highest priority first.
    let mut acts = Vec::new();
    let mut t = 2_001;
    let mut handback = None;
    for n in 6..=70u64 {
        t += 200;
        acts.extend(hear(&mut s, t, "b", hb("b", n, &["b1/main"], "shadow")));
        if let Some(Action::HandBack { stream, epoch, .. }) =
            acts.iter().find(|a| matches!(a, Action::HandBack { .. }))
        {
            handback = Some((stream.clone(), *epoch));
            break;
        }
    }
    let (stream, epoch) = handback.expect("b1 handed back after the hold-down");
    let last = FrameId {
        wall_ms: t,
        hash: "00".repeat(16),
    };
    let acts = s
        .handle(
            t + 10,
            Input::HandedBack {
                stream,
                epoch,
                result: Ok(last),
            },
        )
        .expect("handed back");
    assert_eq!(
        held_by_me(&s),
        ["a1/main", "a2/main", "a3/main"],
        "{acts:?}"
    );
    assert_eq!(
        promotes(&acts),
        [("a2/main".to_owned(), 3), ("a1/main".to_owned(), 3)]
    );
    assert!(s
        .streams()
        .iter()
        .all(|v| v.uncovered == (v.stream == "c1/main")));
}

/// Failback: the owner, back and shadowing its stream for the hold-down time, gets it back: the
/// standby releases at a key frame, then hands it over with a new epoch and the last frame it wrote;
/// the owner promotes exactly after that frame.
#[test]
fn failback_after_the_hold_down_hands_the_stream_back_after_the_last_written_frame() {
    let mut a = primary();
    let mut s = standby(None);
    s.handle(1_001, Input::Tick).expect("tick");
    for k in ["a1/main", "a2/main"] {
        report_promoted(&mut s, 1_100, k, 1);
    }
    // The owner comes back, adopts the standby's epochs and releases (its streams go to shadow).
    let acts = hear(&mut a, 2_000, "s", hb_from(&s, 1, true));
    assert_eq!(
        acts.iter()
            .filter(|x| matches!(x, Action::Release { .. }))
            .count(),
        2
    );
    // Its heartbeats now say: alive, both streams in shadow and receiving.
    let shadow_hb = |a: &Core, n: u64| {
        let mut h = hb_from(a, n, true);
        for x in &mut h.health {
            x.mode = "shadow".into();
            x.state = "shadowing".into();
        }
        h
    };
    let mut handbacks = Vec::new();
    let mut t = 2_000;
    for n in 1..=60 {
        t += 200;
        let acts = hear(&mut s, t, "a", shadow_hb(&a, n));
        handbacks.extend(
            acts.into_iter()
                .filter(|x| matches!(x, Action::HandBack { .. })),
        );
        if t < 2_200 + 10_000 {
            assert!(handbacks.is_empty(), "before the hold-down: {handbacks:?}");
        }
    }
    assert_eq!(handbacks.len(), 2, "{handbacks:?}");
    assert!(handbacks.contains(&Action::HandBack {
        stream: "a1/main".into(),
        epoch: 1,
        owner: "a".into()
    }));
    // The release of a1 at a key frame answers with the last frame written here.
    let last = FrameId {
        hash: "ab".repeat(16),
        wall_ms: 12_345,
    };
    let acts = s
        .handle(
            t,
            Input::HandedBack {
                stream: "a1/main".into(),
                epoch: 1,
                result: Ok(last.clone()),
            },
        )
        .expect("handed back");
    assert!(acts.contains(&Action::Persist));
    assert_eq!(
        s.holdings()["a1/main"],
        Holding {
            holder: "a".into(),
            epoch: 2
        }
    );
    // The owner learns it from the standby's next heartbeat and promotes exactly after that frame.
    let acts = hear(&mut a, t, "s", hb_from(&s, 2, true));
    let promoted: Vec<(String, u64, Option<FrameId>)> = acts
        .iter()
        .filter_map(|x| match x {
            Action::Promote {
                stream,
                epoch,
                after,
                ..
            } => Some((stream.clone(), *epoch, after.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(promoted, [("a1/main".to_owned(), 2, Some(last))]);
    assert_eq!(
        a.holdings()["a1/main"],
        Holding {
            holder: "a".into(),
            epoch: 2
        }
    );
    // A failed hand-back release keeps the stream here and waits a hold-down again.
    let acts = s
        .handle(
            t,
            Input::HandedBack {
                stream: "a2/main".into(),
                epoch: 1,
                result: Err("busy".into()),
            },
        )
        .expect("failed");
    assert!(alarms(&acts)
        .iter()
        .any(|m| m.contains("hand-back of a2/main failed")));
    assert_eq!(s.holdings()["a2/main"].holder, "s");
}

/// Planned handover both ways: the primary hands its streams to the shadowing standby (released at a
/// key frame, new epoch, the last frame written); the standby keeps them (no failback) until it hands
/// them back the same way. Bad requests are refused by name and change nothing.
#[test]
fn planned_handover_both_ways_and_refusals() {
    let mut a = primary();
    let mut s = standby(None);
    // Each hears the other; the standby shadows both streams.
    hear(&mut a, 100, "s", shadowing(&s, 1));
    hear(&mut s, 100, "a", hb_from(&a, 1, true));
    let op = |to: &str, stream: Option<&str>| {
        Input::Operator(OperatorCommand::Handover {
            stream: stream.map(str::to_owned),
            to: to.to_owned(),
        })
    };
    let before = a.holdings();
    assert_eq!(
        a.handle(200, op("x", None))
            .expect_err("unknown")
            .to_string(),
        "x is not a peer of this node"
    );
    assert!(matches!(
        a.handle(200, op("s", Some("zz/main"))),
        Err(Refusal::UnknownStream(_))
    ));
    assert!(matches!(
        s.handle(200, op("a", Some("a1/main"))),
        Err(Refusal::NotHeldHere { .. })
    ));
    assert_eq!(a.holdings(), before);
    // a → s, every stream.
    let acts = a.handle(300, op("s", None)).expect("handover");
    assert_eq!(
        acts.iter()
            .filter(|x| matches!(x, Action::HandBack { .. }))
            .count(),
        2
    );
    let last = FrameId {
        hash: "cd".repeat(16),
        wall_ms: 300,
    };
    for k in ["a1/main", "a2/main"] {
        report_handed_back(&mut a, 400, k, 0, &last);
    }
    assert_eq!(
        a.holdings()["a1/main"],
        Holding {
            holder: "s".into(),
            epoch: 1
        }
    );
    let acts = hear(&mut s, 500, "a", hb_from(&a, 2, true));
    let promoted: Vec<(String, Option<FrameId>)> = acts
        .iter()
        .filter_map(|x| match x {
            Action::Promote { stream, after, .. } => Some((stream.clone(), after.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(promoted.len(), 2);
    assert!(promoted
        .iter()
        .all(|(_, after)| *after == Some(last.clone())));
    for k in ["a1/main", "a2/main"] {
        report_promoted(&mut s, 600, k, 1);
    }
    // The owner shadows them, but a planned handover is not undone by failback.
    let mut t = 600;
    for n in 3..=80 {
        t += 200;
        let acts = hear(&mut s, t, "a", shadowing(&a, n));
        assert!(
            !acts.iter().any(|x| matches!(x, Action::HandBack { .. })),
            "{acts:?}"
        );
    }
    // s → a, by the operator.
    let acts = s
        .handle(t, op("a", Some("a1/main")))
        .expect("handover back");
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::HandBack { stream, .. } if stream == "a1/main")));
    report_handed_back(&mut s, t, "a1/main", 1, &last);
    assert_eq!(
        s.holdings()["a1/main"],
        Holding {
            holder: "a".into(),
            epoch: 2
        }
    );
}

/// Test 9 of the issue, in the core: a primary that is reachable 3 s, silent 3 s, for a minute. The
/// standby takes its streams over once, raises a flapping alarm, and gives nothing back while it flaps;
/// once the primary has been stable for a whole window, failback happens after the hold-down.
#[test]
fn a_flapping_primary_is_taken_over_once_and_gets_nothing_back_until_stable() {
    let mut a = primary();
    let mut s = standby(None);
    local_receiving(&mut s, 0);
    let (mut n_a, mut n_s) = (0u64, 0u64);
    let mut all = Vec::new();
    let mut step = |t: i64, alive: bool, a: &mut Core, s: &mut Core, all: &mut Vec<Action>| {
        if alive {
            n_s += 1;
            let _ = a.handle(t, heartbeat_in("s", hb_from(s, n_s, true)));
            n_a += 1;
            if let Ok(acts) = s.handle(t, heartbeat_in("a", shadowing(a, n_a))) {
                all.extend(acts);
            }
        }
        let acts = s.handle(t, Input::Tick).expect("tick");
        for x in &acts {
            if let Action::Promote { stream, epoch, .. } = x {
                report_promoted(s, t, stream, *epoch);
            }
        }
        all.extend(acts);
    };
    let mut t = 0;
    while t < 60_000 {
        t += 200;
        step(t, (t / 3_000) % 2 == 0, &mut a, &mut s, &mut all);
    }
    let takeovers = promotes(&all).len();
    let handbacks = all
        .iter()
        .filter(|x| matches!(x, Action::HandBack { .. }))
        .count();
    assert_eq!(
        (takeovers, handbacks),
        (2, 0),
        "one takeover per stream, nothing given back"
    );
    assert!(
        alarms(&all).iter().any(|m| m.contains("node a flaps")),
        "{:?}",
        alarms(&all)
    );
    assert!(s.peers()[0].flapping);
    // Stable from now on: after a whole window without a death, then the hold-down, failback.
    all.clear();
    while t < 60_000 + 60_000 + 10_000 + 2_000 {
        t += 200;
        step(t, true, &mut a, &mut s, &mut all);
    }
    assert!(alarms(&all)
        .iter()
        .any(|m| m.contains("node a is stable again")));
    assert_eq!(
        all.iter()
            .filter(|x| matches!(x, Action::HandBack { .. }))
            .count(),
        2
    );
}

#[test]
fn replayed_forged_stale_and_conflicting_heartbeats_change_nothing() {
    let a = primary();
    let mut s = standby(None);
    hear(&mut s, 100, "a", hb_from(&a, 5, true));
    // Replayed (same and older sequence).
    for n in [5, 4] {
        let e = s
            .handle(200, heartbeat_in("a", hb_from(&a, n, true)))
            .expect_err("replay");
        assert!(matches!(e, Refusal::Replayed { .. }), "{e}");
    }
    // An older boot is a replay too.
    let mut old = hb_from(&a, 99, true);
    old.seq.boot_ms = 0;
    assert!(matches!(
        s.handle(200, heartbeat_in("a", old)),
        Err(Refusal::Replayed { .. })
    ));
    // Unknown peer, or a body naming another node than the certificate.
    assert!(matches!(
        s.handle(200, heartbeat_in("x", hb_from(&a, 6, true))),
        Err(Refusal::UnknownPeer(_))
    ));
    assert!(matches!(
        s.handle(
            200,
            heartbeat_in("a", {
                let mut h = hb_from(&a, 6, true);
                h.node = "s".into();
                h
            })
        ),
        Err(Refusal::WrongSender { .. })
    ));
    // Refused heartbeats do not keep the primary alive: it is declared dead 1000 ms after the
    // last accepted one, and the standby takes over.
    let acts = s.handle(1_101, Input::Tick).expect("tick");
    assert_eq!(promotes(&acts).len(), 2);
    let before = s.holdings();
    // The old primary claims its streams with epoch 0: stale, refused, nothing changes.
    let e = s
        .handle(1_200, heartbeat_in("a", hb_from(&a, 7, true)))
        .expect_err("stale");
    assert!(
        matches!(
            e,
            Refusal::StaleEpoch {
                claimed: 0,
                known: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(s.holdings(), before);
    assert!(s.peers().iter().all(|p| !p.alive));
    // A claim of the same epoch by another holder is a conflict.
    let mut hb = hb_from(&a, 8, true);
    for c in &mut hb.holdings {
        c.epoch = 1;
    }
    assert!(matches!(
        s.handle(1_300, heartbeat_in("a", hb)),
        Err(Refusal::Conflict { .. })
    ));
    assert_eq!(s.holdings(), before);
}

#[test]
fn a_returning_primary_adopts_the_newer_epoch_and_releases_its_streams() {
    let mut a = primary();
    let mut s = standby(None);
    s.handle(1_001, Input::Tick).expect("tick");
    let hb = hb_from(&s, 1, true);
    let acts = hear(&mut a, 5_000, "s", hb);
    let released: Vec<&Action> = acts
        .iter()
        .filter(|x| matches!(x, Action::Release { .. }))
        .collect();
    assert_eq!(released.len(), 2, "{acts:?}");
    assert!(acts.contains(&Action::Persist));
    assert_eq!(
        a.holdings()["a1/main"],
        Holding {
            holder: "s".into(),
            epoch: 1
        }
    );
    // Now its heartbeats agree and are accepted again.
    hear(&mut s, 5_100, "a", hb_from(&a, 1, true));
    assert!(s.peers().iter().all(|p| p.alive));
}

/// A release can be lost (the recorder was not up yet): a stream recorded here while another node holds
/// it is released again every 3 s until the recorder no longer records it.
#[test]
fn fencing_is_repeated_while_the_recorder_still_records_a_stream_held_elsewhere() {
    let mut a = primary();
    let mut s = standby(None);
    s.handle(1_001, Input::Tick).expect("tick");
    let releases = |acts: &[Action]| {
        acts.iter()
            .filter(|x| matches!(x, Action::Release { .. }))
            .count()
    };
    let acts = hear(&mut a, 2_000, "s", hb_from(&s, 1, true));
    assert_eq!(releases(&acts), 2);
    let recording = |mode: &str| {
        Input::LocalHealth(Some(
            ["a1/main", "a2/main"]
                .iter()
                .map(|k| StreamHealth {
                    stream: (*k).to_owned(),
                    mode: mode.to_owned(),
                    state: "recording".to_owned(),
                    receiving: true,
                    bitrate_kbps: 0,
                })
                .collect(),
        ))
    };
    assert_eq!(
        releases(&a.handle(2_500, recording("record")).expect("health")),
        0
    );
    assert_eq!(
        releases(&a.handle(5_000, recording("record")).expect("health")),
        2
    );
    assert_eq!(
        releases(&a.handle(5_100, recording("record")).expect("health")),
        0
    );
    assert_eq!(
        releases(&a.handle(9_000, recording("shadow")).expect("health")),
        0
    );
}

#[test]
fn a_failed_session_on_a_living_primary_moves_that_stream_alone() {
    let a = primary();
    let mut s = standby(None);
    local_receiving(&mut s, 0);
    let mut hb = hb_from(&a, 1, true);
    hb.health[0].receiving = false; // a1 fails on the primary, a2 is fine
    hear(&mut s, 100, "a", hb.clone());
    let mut acts = Vec::new();
    for (i, t) in (300..=2_300).step_by(200).enumerate() {
        hb.seq.n = 2 + i as u64;
        acts = hear(&mut s, t, "a", hb.clone());
        if t <= 2_100 {
            assert!(promotes(&acts).is_empty(), "at {t}: {acts:?}");
        }
    }
    assert_eq!(promotes(&acts), [("a1/main".to_owned(), 1)]);
    assert_eq!(s.holdings()["a2/main"].holder, "a");
}

#[test]
fn a_stream_the_standby_does_not_receive_does_not_move_on_a_living_primary() {
    let a = primary();
    let mut s = standby(None);
    let mut hb = hb_from(&a, 1, false);
    for n in 1..=20 {
        hb.seq.n = n;
        let acts = hear(&mut s, n as i64 * 200, "a", hb.clone());
        assert!(promotes(&acts).is_empty());
    }
}

#[test]
fn persisted_holdings_survive_a_restart_and_resume_the_promotion() {
    let mut s = standby(None);
    s.handle(1_001, Input::Tick).expect("tick");
    let saved = s.holdings();
    let mut again = Core::new(
        "s",
        T,
        Capacity::default(),
        streams(),
        &["a".to_owned()],
        &saved,
        50_000,
    );
    assert_eq!(again.holdings(), saved);
    let acts = again.handle(50_000, Input::Tick).expect("tick");
    assert_eq!(
        promotes(&acts).len(),
        2,
        "the restarted arbiter asks its recorder again"
    );
}

#[test]
fn operator_forces_a_takeover_and_unknown_streams_are_refused() {
    let a = primary();
    let mut s = standby(None);
    hear(&mut s, 100, "a", hb_from(&a, 1, true));
    let acts = s
        .handle(
            200,
            Input::Operator(OperatorCommand::ForceTakeover {
                stream: "a1/main".into(),
            }),
        )
        .expect("op");
    assert_eq!(promotes(&acts), [("a1/main".to_owned(), 1)]);
    let before = s.holdings();
    let e = s
        .handle(
            200,
            Input::Operator(OperatorCommand::ForceTakeover {
                stream: "zz/main".into(),
            }),
        )
        .expect_err("unknown");
    assert_eq!(e.to_string(), "no stream zz/main in this arbiter's care");
    assert_eq!(s.holdings(), before);
    // Taking over what this node holds already changes nothing.
    let acts = s
        .handle(
            300,
            Input::Operator(OperatorCommand::ForceTakeover {
                stream: "a1/main".into(),
            }),
        )
        .expect("op");
    assert!(promotes(&acts).is_empty());
    assert_eq!(s.holdings(), before);
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    Advance(i64),
    /// Primary → standby heartbeat (delivered, or lost).
    AToS {
        deliver: bool,
        receiving: bool,
    },
    StoA {
        deliver: bool,
    },
    /// Re-deliver an earlier heartbeat of the primary (a replay).
    ReplayA(usize),
    /// The primary restarts with its persisted holdings.
    RestartA,
    PromotedAll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..700).prop_map(Step::Advance),
        (any::<bool>(), any::<bool>())
            .prop_map(|(deliver, receiving)| Step::AToS { deliver, receiving }),
        any::<bool>().prop_map(|deliver| Step::StoA { deliver }),
        (0usize..50).prop_map(Step::ReplayA),
        Just(Step::RestartA),
        Just(Step::PromotedAll),
    ]
}

proptest! {
    /// Epochs only grow on both sides; no two nodes hold a stream under the same epoch; a refused
    /// heartbeat changes nothing; a replayed heartbeat is always refused.
    #[test]
    fn epochs_grow_holders_are_unique_and_refusals_change_nothing(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let mut a = primary();
        let mut s = standby(None);
        local_receiving(&mut s, 0);
        let mut now = 0i64;
        let mut n_a = 0u64;
        let mut n_s = 0u64;
        let mut boot_a = 1i64;
        let mut sent_a: Vec<Heartbeat> = Vec::new();
        let mut accepted_a: Option<Seq> = None;
        let mut persisted_a = a.holdings();
        for st in steps {
            let before_a = a.holdings();
            let before_s = s.holdings();
            match st {
                Step::Advance(ms) => {
                    now += ms;
                    a.handle(now, Input::Tick).expect("tick");
                    s.handle(now, Input::Tick).expect("tick");
                }
                Step::AToS { deliver, receiving } => {
                    n_a += 1;
                    let mut hb = hb_from(&a, n_a, receiving);
                    hb.seq.boot_ms = boot_a;
                    sent_a.push(hb.clone());
                    if deliver {
                        let seq = hb.seq;
                        if s.handle(now, heartbeat_in("a", hb)).is_err() {
                            prop_assert_eq!(s.holdings(), before_s.clone());
                        } else {
                            accepted_a = Some(seq);
                        }
                    }
                }
                Step::StoA { deliver } => {
                    n_s += 1;
                    let hb = hb_from(&s, n_s, true);
                    if deliver {
                        let r = a.handle(now, heartbeat_in("s", hb));
                        if r.is_err() {
                            prop_assert_eq!(a.holdings(), before_a.clone());
                        }
                    }
                }
                Step::ReplayA(i) => {
                    // A heartbeat sent earlier arrives again (or late): refused, with nothing changed,
                    // whenever one at least as new was accepted.
                    if let Some(hb) = sent_a.get(i).cloned() {
                        let seq = hb.seq;
                        let r = s.handle(now, heartbeat_in("a", hb));
                        if accepted_a.is_some_and(|last| seq <= last) {
                            prop_assert!(r.is_err(), "a replay was accepted");
                        }
                        if r.is_ok() {
                            accepted_a = Some(seq);
                        } else {
                            prop_assert_eq!(s.holdings(), before_s.clone());
                        }
                    }
                }
                Step::RestartA => {
                    boot_a += 1;
                    n_a = 0;
                    a = Core::new("a", T, Capacity::default(), streams(), &["s".to_owned()], &persisted_a, now);
                }
                Step::PromotedAll => {
                    for (k, h) in s.holdings() {
                        if h.holder == "s" {
                            s.handle(now, Input::Promoted { stream: k, epoch: h.epoch, result: Ok(()) })
                                .expect("promoted");
                        }
                    }
                }
            }
            persisted_a = a.holdings();
            for (k, h) in a.holdings() {
                prop_assert!(h.epoch >= before_a[&k].epoch, "epoch went down on a");
            }
            for (k, h) in s.holdings() {
                prop_assert!(h.epoch >= before_s[&k].epoch, "epoch went down on s");
                let ha = &a.holdings()[&k];
                if ha.epoch == h.epoch {
                    prop_assert_eq!(&ha.holder, &h.holder, "two holders with epoch {}", h.epoch);
                }
            }
        }
    }
}

proptest! {
    /// Whatever the streams' priorities and bitrates (configured or measured) and the caps: what a
    /// standby takes over when its primaries die stays within both caps, and a stream is left
    /// uncovered only if it would not fit even with every lower-priority stream taken given up.
    #[test]
    fn takeovers_stay_within_both_caps_and_leave_out_only_what_cannot_fit(
        rates in proptest::collection::vec(
            (0u32..4, proptest::option::of(1u32..4_000), proptest::option::of(1u64..4_000)),
            1..10,
        ),
        streams_cap in proptest::option::of(0u32..6),
        kbps_cap in 0u64..12_000,
    ) {
        let specs: Vec<(String, String, u32, Option<u32>)> = rates
            .iter()
            .enumerate()
            .map(|(i, (priority, configured, _))| {
                (format!("x{i}/main"), if i % 2 == 0 { "a" } else { "b" }.to_owned(), *priority, *configured)
            })
            .collect();
        let refs: Vec<(&str, &str, u32, Option<u32>)> = specs
            .iter()
            .map(|(k, o, p, r)| (k.as_str(), o.as_str(), *p, *r))
            .collect();
        let mut s = mbps_standby(streams_cap, kbps_cap, &refs);
        let measured: Vec<(&str, u64)> = specs
            .iter()
            .zip(&rates)
            .filter_map(|((k, ..), (_, _, m))| m.map(|m| (k.as_str(), m)))
            .collect();
        local_rates(&mut s, 500, &measured);
        for t in [1_001, 1_500, 2_000] {
            s.handle(t, Input::Tick).expect("tick");
        }
        let view = s.streams();
        let taken: Vec<&StreamView> = view.iter().filter(|v| v.holder == "s").collect();
        let used: u64 = taken.iter().map(|v| v.bitrate_kbps).sum();
        prop_assert!(used <= kbps_cap, "{used} > {kbps_cap}");
        prop_assert_eq!(s.capacity().kbps, used);
        if let Some(c) = streams_cap {
            prop_assert!(taken.len() <= c as usize);
        }
        for u in view.iter().filter(|v| v.holder != "s") {
            prop_assert!(u.uncovered, "{} neither taken nor uncovered", u.stream);
            let lower: Vec<&&StreamView> = taken.iter().filter(|v| v.priority < u.priority).collect();
            let kbps_after = used - lower.iter().map(|v| v.bitrate_kbps).sum::<u64>();
            let count_after = taken.len() - lower.len();
            let would_fit = kbps_after + u.bitrate_kbps <= kbps_cap
                && streams_cap.is_none_or(|c| count_after < c as usize);
            prop_assert!(!would_fit, "{} left out though it fits: {view:?}", u.stream);
        }
    }
}
