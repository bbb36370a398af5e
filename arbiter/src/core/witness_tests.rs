//! The witness in the decision core: a primary `a`, its standby `s` and the witness `w`, each a
//! [`Core`], exchanging heartbeats every 200 ms over links that can be cut; each node's recorder is
//! modelled by the modes its promotions and releases set.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::heartbeat::{Seq, StreamHealth};

const T: Timings = Timings {
    heartbeat_interval_ms: 200,
    node_dead_ms: 1_000,
    stream_failed_ms: 2_000,
    failback_hold_ms: 10_000,
};
const STREAM: &str = "a1/main";
const NODES: [&str; 3] = ["a", "s", "w"];

struct World {
    cores: BTreeMap<&'static str, Core>,
    /// Whether each node's recorder records `STREAM` (else it shadows it).
    records: BTreeMap<&'static str, bool>,
    /// Cut links (both directions), as sorted pairs.
    cut: BTreeSet<(&'static str, &'static str)>,
    now_ms: i64,
    n: u64,
    /// Every action, with its time and node.
    log: Vec<(i64, &'static str, Action)>,
}

fn link(x: &'static str, y: &'static str) -> (&'static str, &'static str) {
    if x < y {
        (x, y)
    } else {
        (y, x)
    }
}

impl World {
    fn new() -> World {
        let spec = StreamSpec {
            key: STREAM.to_owned(),
            owner: "a".to_owned(),
            protector: "s".to_owned(),
            takeover: Takeover::Hot,
            priority: 100,
            bitrate_kbps: None,
        };
        let core = |me: &str, peers: &[&str], streams: Vec<StreamSpec>| {
            let peers: Vec<String> = peers.iter().map(|p| (*p).to_owned()).collect();
            Core::new(
                me,
                T,
                Capacity::streams(None),
                streams,
                &peers,
                &BTreeMap::new(),
                0,
            )
            .with_witness(Some("w".to_owned()))
        };
        World {
            cores: BTreeMap::from([
                ("a", core("a", &["s", "w"], vec![spec.clone()])),
                ("s", core("s", &["a", "w"], vec![spec])),
                ("w", core("w", &["a", "s"], Vec::new())),
            ]),
            records: BTreeMap::from([("a", true), ("s", false), ("w", false)]),
            cut: BTreeSet::new(),
            now_ms: 0,
            n: 0,
            log: Vec::new(),
        }
    }

    fn heartbeat(&self, node: &str) -> Heartbeat {
        let core = &self.cores[node];
        let health = if node == "w" {
            Vec::new()
        } else {
            vec![StreamHealth {
                stream: STREAM.to_owned(),
                bitrate_kbps: 0,
                mode: if self.records[node] {
                    "record"
                } else {
                    "shadow"
                }
                .to_owned(),
                state: "recording".to_owned(),
                receiving: true,
            }]
        };
        Heartbeat {
            node: node.to_owned(),
            seq: Seq {
                boot_ms: 1,
                n: self.n,
            },
            sent_ms: self.now_ms,
            holdings: core.claims(),
            health,
            hears: if core.is_witness() {
                core.hears()
            } else {
                Vec::new()
            },
        }
    }

    /// Carries out `actions` of `node` like its shell and recorder would, feeding back the results.
    fn apply(&mut self, node: &'static str, actions: Vec<Action>) {
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for a in queue {
                self.log.push((self.now_ms, node, a.clone()));
                let input = match a {
                    Action::Promote { stream, epoch, .. } => {
                        self.records.insert(node, true);
                        Some(Input::Promoted {
                            stream,
                            epoch,
                            result: Ok(()),
                        })
                    }
                    Action::Release { .. } => {
                        self.records.insert(node, false);
                        None
                    }
                    Action::HandBack { stream, epoch, .. } => {
                        self.records.insert(node, false);
                        Some(Input::HandedBack {
                            stream,
                            epoch,
                            result: Ok(FrameId {
                                hash: "00".to_owned(),
                                wall_ms: self.now_ms,
                            }),
                        })
                    }
                    _ => None,
                };
                if let Some(input) = input {
                    let now = self.now_ms;
                    if let Some(core) = self.cores.get_mut(node) {
                        next.extend(core.handle(now, input).expect("result"));
                    }
                }
            }
            queue = next;
        }
    }

    /// One heartbeat interval: every node sends a heartbeat over every link not cut, then ticks.
    fn step(&mut self) {
        self.now_ms += T.heartbeat_interval_ms;
        self.n += 1;
        let beats: Vec<(&'static str, Heartbeat)> =
            NODES.iter().map(|n| (*n, self.heartbeat(n))).collect();
        for (from, hb) in beats {
            for to in NODES {
                if to == from || self.cut.contains(&link(from, to)) {
                    continue;
                }
                let now = self.now_ms;
                let core = self.cores.get_mut(to).expect("core");
                // A refused heartbeat (a stale claim right after a heal) changes nothing.
                if let Ok(actions) = core.handle(
                    now,
                    Input::Heartbeat {
                        from: from.to_owned(),
                        heartbeat: hb.clone(),
                    },
                ) {
                    self.apply(to, actions);
                }
            }
        }
        for node in NODES {
            let now = self.now_ms;
            let local = if node == "w" {
                None
            } else {
                Some(vec![StreamHealth {
                    stream: STREAM.to_owned(),
                    bitrate_kbps: 0,
                    mode: if self.records[node] {
                        "record"
                    } else {
                        "shadow"
                    }
                    .to_owned(),
                    state: "recording".to_owned(),
                    receiving: true,
                }])
            };
            let core = self.cores.get_mut(node).expect("core");
            let mut actions = core.handle(now, Input::LocalHealth(local)).expect("health");
            actions.extend(core.handle(now, Input::Tick).expect("tick"));
            self.apply(node, actions);
        }
    }

    fn run_ms(&mut self, ms: i64) {
        let until = self.now_ms + ms;
        while self.now_ms < until {
            self.step();
        }
    }

    fn holding(&self, node: &str) -> (String, u64) {
        let h = &self.cores[node].holdings()[STREAM];
        (h.holder.clone(), h.epoch)
    }

    fn alarms(&self, node: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|(_, n, _)| *n == node)
            .filter_map(|(_, _, a)| match a {
                Action::Alarm { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Time of `node`'s first action matching `f`.
    fn first(&self, node: &str, f: impl Fn(&Action) -> bool) -> Option<i64> {
        self.log
            .iter()
            .find(|(_, n, a)| *n == node && f(a))
            .map(|(t, _, _)| *t)
    }
}

#[test]
fn a_partition_between_primary_and_standby_that_the_witness_bridges_moves_nothing() {
    let mut w = World::new();
    w.run_ms(3_000);
    assert_eq!(w.cores["w"].hears(), ["a", "s"]);
    w.cut.insert(link("a", "s"));
    w.run_ms(10_000);
    assert_eq!(w.holding("s"), ("a".to_owned(), 0));
    assert_eq!(w.holding("a"), ("a".to_owned(), 0));
    assert!(w.records["a"] && !w.records["s"], "{:?}", w.records);
    assert!(!w.cores["a"].standing_down());
    let vouched: Vec<String> = w
        .alarms("s")
        .into_iter()
        .filter(|m| m.contains("the witness hears it"))
        .collect();
    assert_eq!(vouched.len(), 1, "{:?}", w.alarms("s"));
    // Healed: nothing to undo.
    w.cut.clear();
    w.run_ms(3_000);
    assert_eq!(w.holding("s"), ("a".to_owned(), 0));
    assert!(w.records["a"] && !w.records["s"]);
}

#[test]
fn a_primary_cut_off_from_both_stands_down_before_the_standby_takes_over() {
    let mut w = World::new();
    w.run_ms(3_000);
    let cut_at = w.now_ms;
    w.cut.insert(link("a", "s"));
    w.cut.insert(link("a", "w"));
    w.run_ms(5_000);
    assert!(w.cores["a"].standing_down());
    assert_eq!(w.holding("s"), ("s".to_owned(), 1));
    assert!(!w.records["a"] && w.records["s"], "{:?}", w.records);
    let released = w
        .first("a", |a| matches!(a, Action::Release { .. }))
        .expect("a released");
    let promoted = w
        .first("s", |a| matches!(a, Action::Promote { .. }))
        .expect("s promoted");
    assert!(
        released <= promoted,
        "a stood down at {released}, s took over at {promoted}"
    );
    assert!(
        promoted - cut_at <= T.node_dead_ms + 3 * T.heartbeat_interval_ms,
        "takeover {} ms after the cut",
        promoted - cut_at
    );
    // Healed: the primary learns epoch 1 and shadows; failback after the hold-down.
    w.cut.clear();
    w.run_ms(1_000);
    assert!(!w.cores["a"].standing_down());
    assert_eq!(w.holding("a"), ("s".to_owned(), 1));
    w.run_ms(T.failback_hold_ms + 2_000);
    assert_eq!(w.holding("s"), ("a".to_owned(), 2));
    assert!(w.records["a"] && !w.records["s"], "{:?}", w.records);
}

#[test]
fn without_the_witness_the_standby_takes_over_and_a_primary_that_never_heard_anyone_records_on() {
    // The witness is gone, then the primary: the standby cannot ask anyone and takes over (video is
    // never dropped to avoid a duplicate).
    let mut w = World::new();
    w.run_ms(3_000);
    w.cut.insert(link("s", "w"));
    w.cut.insert(link("a", "w"));
    w.run_ms(3_000);
    assert!(w.records["a"] && !w.records["s"]);
    w.cut.insert(link("a", "s"));
    w.run_ms(3_000);
    assert_eq!(w.holding("s"), ("s".to_owned(), 1));
    assert!(w.records["s"]);

    // A primary that starts alone never heard a peer: it records.
    let mut alone = World::new();
    alone.cut.insert(link("a", "s"));
    alone.cut.insert(link("a", "w"));
    alone.run_ms(5_000);
    assert!(!alone.cores["a"].standing_down());
    assert!(alone.records["a"]);
}

#[test]
fn a_stood_down_primary_resumes_only_once_it_knows_whether_the_standby_took_over() {
    // Heard again by the witness only, which hears the standby: the standby took over; stay down.
    let mut w = World::new();
    w.run_ms(3_000);
    w.cut.insert(link("a", "s"));
    w.cut.insert(link("a", "w"));
    w.run_ms(4_000);
    assert!(w.cores["a"].standing_down() && w.records["s"]);
    w.cut.remove(&link("a", "w"));
    w.run_ms(4_000);
    assert!(
        w.cores["a"].standing_down(),
        "resumed without hearing the standby"
    );
    assert!(!w.records["a"]);
    // The standby heard again: its newer epoch first, so nothing is recorded twice.
    w.cut.clear();
    w.run_ms(1_000);
    assert!(!w.cores["a"].standing_down());
    assert_eq!(w.holding("a"), ("s".to_owned(), 1));
    assert!(!w.records["a"] && w.records["s"]);

    // The standby is gone as well (the witness does not hear it either): the primary records again.
    let mut w = World::new();
    w.run_ms(3_000);
    w.cut.insert(link("a", "s"));
    w.cut.insert(link("a", "w"));
    w.run_ms(4_000);
    assert!(w.cores["a"].standing_down());
    w.cut.insert(link("s", "w"));
    w.cut.remove(&link("a", "w"));
    w.run_ms(3_000);
    assert!(!w.cores["a"].standing_down());
    assert!(w.records["a"]);
}

#[derive(Debug, Clone)]
enum Cut {
    Toggle(usize),
    Wait(i64),
}

fn cut_step() -> impl Strategy<Value = Cut> {
    prop_oneof![
        (0usize..3).prop_map(Cut::Toggle),
        (200i64..4_000).prop_map(Cut::Wait),
    ]
}

proptest! {
    /// Whatever the links do, the stream is never left unrecorded longer than failure detection
    /// (`node_dead_ms`) plus a few heartbeats (hot takeovers continue after the last mirrored frame,
    /// so that is no loss), epochs only grow, and once every link is up again exactly one node
    /// records it.
    #[test]
    fn the_stream_is_always_recorded_by_someone(steps in proptest::collection::vec(cut_step(), 1..40)) {
        let links = [link("a", "s"), link("a", "w"), link("s", "w")];
        let mut w = World::new();
        w.run_ms(3_000);
        let mut unrecorded_since: Option<i64> = None;
        let mut epoch = 0;
        let mut check = |w: &World| -> Result<(), TestCaseError> {
            let e = w.holding("s").1.max(w.holding("a").1);
            prop_assert!(e >= epoch);
            epoch = e;
            Ok(())
        };
        for st in steps {
            let ms = match st {
                Cut::Toggle(i) => {
                    if !w.cut.remove(&links[i]) {
                        w.cut.insert(links[i]);
                    }
                    T.heartbeat_interval_ms
                }
                Cut::Wait(ms) => ms,
            };
            let until = w.now_ms + ms;
            while w.now_ms < until {
                w.step();
                check(&w)?;
                if w.records["a"] || w.records["s"] {
                    unrecorded_since = None;
                } else {
                    let since = *unrecorded_since.get_or_insert(w.now_ms);
                    prop_assert!(
                        w.now_ms - since <= T.node_dead_ms + 4 * T.heartbeat_interval_ms,
                        "unrecorded since {since}, now {}, cut {:?}", w.now_ms, w.cut
                    );
                }
            }
        }
        w.cut.clear();
        w.run_ms(T.failback_hold_ms + 5_000);
        prop_assert!(w.records["a"] != w.records["s"], "{:?}", w.records);
    }
}
