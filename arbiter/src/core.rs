//! The decision core: a pure state machine over an injected clock. No I/O: the shell feeds it
//! [`Input`]s (accepted heartbeats, the local recorder's stream health, timer ticks, operator
//! commands, results of promotions) with the time, and carries out the [`Action`]s it returns.
//!
//! Each protected stream has an owner (its primary in the cluster file) and a holder with an epoch
//! (the fencing token): the node that records it under that epoch. Epochs only grow; a node takes a
//! stream over with a new epoch above every epoch it knows for it; a claim with an older epoch than
//! the one known never changes anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::heartbeat::{Claim, Heartbeat, Seq, StreamHealth};
use store::frame::FrameId;

/// The holder of a stream no node records (given up by a standby at its capacity).
pub const NOBODY: &str = "";

/// A node declared dead [`FLAP_DEATHS`] times within this window flaps: an alarm, and no failback to
/// it until it has been stable for a whole window.
pub const FLAP_WINDOW_MS: i64 = 60_000;
pub const FLAP_DEATHS: usize = 3;

/// A stream recorded here while another node holds it is released again after this long.
pub const FENCE_RETRY_MS: i64 = 3_000;

/// A failed promotion is asked again after this long.
pub const PROMOTE_RETRY_MS: i64 = 1_000;

/// Timings of failure detection (`[arbiter]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub heartbeat_interval_ms: i64,
    /// A peer whose heartbeats are missing this long is dead.
    pub node_dead_ms: i64,
    /// A stream whose session has failed this long on a living primary moves.
    pub stream_failed_ms: i64,
    /// A stream taken over goes back to its owner once the owner has shadowed it this long (0: never
    /// automatically).
    pub failback_hold_ms: i64,
}

/// How a stream is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Takeover {
    /// After the last frame held from the owner (the standby shadows the stream).
    Hot,
    /// Cold start: the session opens on takeover.
    Cold,
}

/// A stream the arbiter knows: owned by a primary, protected by a standby.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// `camera/stream`.
    pub key: String,
    pub owner: String,
    pub protector: String,
    pub takeover: Takeover,
    /// Higher first.
    pub priority: u32,
    /// Its camera's `bitrate_kbps`: what it counts against a capacity in Mbit/s until a bitrate is
    /// measured.
    pub bitrate_kbps: Option<u32>,
}

/// A standby's capacity caps (either, both or none): streams and kbit/s of streams taken over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub streams: Option<u32>,
    /// `capacity_mbps` × 1000.
    pub kbps: Option<u64>,
}

impl Capacity {
    /// A cap in streams only.
    pub fn streams(streams: Option<u32>) -> Capacity {
        Capacity {
            streams,
            kbps: None,
        }
    }
}

/// What a standby has taken over against its caps (the status document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapacityView {
    pub streams: usize,
    pub streams_cap: Option<u32>,
    pub kbps: u64,
    pub kbps_cap: Option<u64>,
}

/// Who records a stream, under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub holder: String,
    pub epoch: u64,
}

/// What the core is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A heartbeat from `from` (the name the pinned TLS certificate belongs to).
    Heartbeat { from: String, heartbeat: Heartbeat },
    /// The local recorder's health of each of its streams (`None`: the recorder does not answer).
    LocalHealth(Option<Vec<StreamHealth>>),
    /// Time passes.
    Tick,
    /// The result of a promotion asked for by [`Action::Promote`].
    Promoted {
        stream: String,
        epoch: u64,
        result: Result<(), String>,
    },
    /// The result of a hand-back release asked for by [`Action::HandBack`]: the last frame written
    /// here.
    HandedBack {
        stream: String,
        epoch: u64,
        result: Result<FrameId, String>,
    },
    /// An operator's command.
    Operator(OperatorCommand),
}

/// Commands of an operator (`nvr-arbiter` CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    /// Take `stream` over on this node now (its holder is unreachable and the operator knows it is
    /// down for good).
    ForceTakeover { stream: String },
    /// Planned handover (upgrades): hand `stream` (every stream held here if `None`) to the living
    /// peer `to`, make-before-break at a key frame; it stays there (no failback) until handed on.
    Handover { stream: Option<String>, to: String },
    /// A planned handover of every stream of `cameras` held here to `to`.
    HandoverCameras { cameras: Vec<String>, to: String },
    /// Drain `node` (this node) for an upgrade: hand every stream held here to its counterpart (a
    /// primary's to its standby, a standby's back to each stream's owner), make-before-break.
    Drain { node: String },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Ask the local recorder to record `stream` under `epoch`: hot after the last frame held from
    /// `after_frames_of` (the previous holder), cold without.
    Promote {
        stream: String,
        epoch: u64,
        takeover: Takeover,
        after_frames_of: String,
        /// A hand-back: exactly after this frame (the previous holder's last written), not after the
        /// last mirrored one.
        after: Option<FrameId>,
        reason: String,
    },
    /// Failback: release `stream` here at its next key frame, then hand it to its owner (answer with
    /// [`Input::HandedBack`]).
    HandBack {
        stream: String,
        epoch: u64,
        owner: String,
    },
    /// Stop recording `stream` here (to shadow): another node holds it under a newer epoch (fencing),
    /// or this standby gives it up for one of higher priority.
    Release {
        stream: String,
        epoch: u64,
        reason: String,
    },
    /// Something an operator must see.
    Alarm { message: String },
    /// The holdings changed: write them to disk before anything else is done.
    Persist,
}

/// Why a heartbeat or an operator's command was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no stream {0} in this arbiter's care")]
    UnknownStream(String),
    #[error("no stream of camera {0} in this arbiter's care")]
    UnknownCamera(String),
    #[error("this is the arbiter of {me}, not of {node}: a node is drained by its own arbiter")]
    DrainElsewhere { node: String, me: String },
    #[error("{0} is not a peer of this node")]
    UnknownNode(String),
    #[error("node {0} is not alive now")]
    PeerDead(String),
    #[error("{stream} is held by {holder}, not by this node")]
    NotHeldHere { stream: String, holder: String },
    #[error("node {to} does not receive {stream} now (not shadowing it)")]
    NotShadowed { stream: String, to: String },
    #[error("heartbeat from {0}, which is not a peer of this node")]
    UnknownPeer(String),
    #[error("heartbeat from {from} says it is from {claimed}")]
    WrongSender { from: String, claimed: String },
    #[error("replayed heartbeat from {from}: sequence {got} not after {last}")]
    Replayed { from: String, got: Seq, last: Seq },
    #[error(
        "stale heartbeat from {from}: it claims {stream} with epoch {claimed}, {known} is known"
    )]
    StaleEpoch {
        from: String,
        stream: String,
        claimed: u64,
        known: u64,
    },
    #[error("heartbeat from {from} claims {stream} with epoch {epoch}, held by {holder} under the same epoch")]
    Conflict {
        from: String,
        stream: String,
        epoch: u64,
        holder: String,
    },
}

#[derive(Debug, Clone, Default)]
struct Peer {
    last_seq: Option<Seq>,
    /// Core time of the last accepted heartbeat.
    last_heard_ms: Option<i64>,
    dead: bool,
    /// The peer's stream health, as last reported.
    health: BTreeMap<String, StreamHealth>,
    /// Core time since which each of its streams has been reported failing.
    failing_since_ms: BTreeMap<String, i64>,
    /// Core times at which it was declared dead, within the last [`FLAP_WINDOW_MS`].
    deaths_ms: Vec<i64>,
    /// Reported as flapping (until it is stable for a window).
    flapping: bool,
    /// A witness: the nodes it hears, as of its last accepted heartbeat.
    hears: Vec<String>,
    /// Silent here while the witness hears it: reported once (a partition between the two).
    vouched: bool,
}

#[derive(Debug, Clone)]
struct Stream {
    spec: StreamSpec,
    holding: Holding,
    /// This node holds the stream but the recorder has not confirmed the promotion yet.
    promote_pending: bool,
    /// A promotion is being carried out by the shell.
    in_flight: bool,
    /// After a failed promotion: not asked again before this core time.
    retry_at_ms: i64,
    /// Reported as uncovered (no capacity) already.
    uncovered: bool,
    /// Held here and taken over: since when its owner has shadowed it (core time).
    owner_ready_since_ms: Option<i64>,
    /// A hand-back release is being carried out.
    handing_back: bool,
    /// A hand-back: the frame the new holder continues after (sent in heartbeats).
    after: Option<FrameId>,
    /// A hand-back in progress goes to this node (the owner when `None`).
    handing_to: Option<String>,
    /// Held here after a planned handover, or handed on by one: no failback (sent in heartbeats).
    planned: bool,
    /// The last bitrate measured by a recorder receiving it (here or on a peer), kbit/s.
    measured_kbps: Option<u64>,
    /// When this node last asked its recorder to stop recording the stream (core time).
    fenced_at_ms: Option<i64>,
}

impl Stream {
    /// What the stream counts against a capacity in Mbit/s: the last bitrate measured, else its
    /// camera's `bitrate_kbps`, else 0 (kbit/s).
    fn rate_kbps(&self) -> u64 {
        self.measured_kbps
            .or(self.spec.bitrate_kbps.map(u64::from))
            .unwrap_or(0)
    }
}

/// The state a status report shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamView {
    pub stream: String,
    pub owner: String,
    pub protector: String,
    pub holder: String,
    pub epoch: u64,
    pub takeover: Takeover,
    pub priority: u32,
    pub uncovered: bool,
    pub promote_pending: bool,
    /// What it counts against a capacity in Mbit/s: measured, else configured (kbit/s).
    pub bitrate_kbps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    pub node: String,
    pub alive: bool,
    /// Declared dead [`FLAP_DEATHS`] times or more within [`FLAP_WINDOW_MS`]: no failback to it.
    pub flapping: bool,
    /// Time since its last accepted heartbeat (`None`: never heard).
    pub heartbeat_age_ms: Option<i64>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Core {
    me: String,
    timings: Timings,
    /// Standby: how many streams, and how many kbit/s, it takes over at most.
    capacity: Capacity,
    streams: BTreeMap<String, Stream>,
    peers: BTreeMap<String, Peer>,
    /// Core time at start: a peer never heard of is dead `node_dead_ms` after it.
    started_ms: i64,
    now_ms: i64,
    /// This node's own stream health, as last read from its recorder.
    local: BTreeMap<String, StreamHealth>,
    /// The cluster's witness (one of `peers`), if any.
    witness: Option<String>,
    /// Cut off from every peer, the standby and the witness alike: this node records none of the
    /// streams it holds (they are in `shadow`) until it hears a peer again.
    standing_down: bool,
}

impl Core {
    /// A core for node `me` at core time `now_ms`, with the holdings persisted earlier (streams not in
    /// `persisted` are held by their owner under epoch 0).
    pub fn new(
        me: &str,
        timings: Timings,
        capacity: Capacity,
        streams: Vec<StreamSpec>,
        peers: &[String],
        persisted: &BTreeMap<String, Holding>,
        now_ms: i64,
    ) -> Core {
        let streams = streams
            .into_iter()
            .map(|spec| {
                let holding = persisted.get(&spec.key).cloned().unwrap_or(Holding {
                    holder: spec.owner.clone(),
                    epoch: 0,
                });
                // A stream this node held when it stopped: the recorder may have restarted since, so
                // the promotion is asked again (a recorder already recording refuses it harmlessly).
                let promote_pending = holding.holder == me && spec.owner != me;
                (
                    spec.key.clone(),
                    Stream {
                        spec,
                        holding,
                        promote_pending,
                        in_flight: false,
                        retry_at_ms: 0,
                        uncovered: false,
                        owner_ready_since_ms: None,
                        handing_back: false,
                        after: None,
                        handing_to: None,
                        planned: false,
                        fenced_at_ms: None,
                        measured_kbps: None,
                    },
                )
            })
            .collect();
        Core {
            me: me.to_owned(),
            timings,
            capacity,
            streams,
            peers: peers.iter().map(|p| (p.clone(), Peer::default())).collect(),
            started_ms: now_ms,
            now_ms,
            local: BTreeMap::new(),
            witness: None,
            standing_down: false,
        }
    }

    /// Names the cluster's witness node (it must be one of the peers): a standby then takes a stream
    /// of a silent holder over only if the witness does not hear that holder either, and a node
    /// that hears neither its standby nor the witness stands down.
    pub fn with_witness(mut self, witness: Option<String>) -> Core {
        self.witness = witness.filter(|w| self.peers.contains_key(w) || *w == self.me);
        self
    }

    /// Whether this node is the witness.
    pub fn is_witness(&self) -> bool {
        self.witness.as_deref() == Some(self.me.as_str())
    }

    /// The peers heard now (what a witness sends in its heartbeats).
    pub fn hears(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.dead && p.last_heard_ms.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Cut off from every peer: the streams it holds are in `shadow` (see [`Core::with_witness`]).
    pub fn standing_down(&self) -> bool {
        self.standing_down
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Every stream's holder and epoch (what is persisted and sent in heartbeats).
    pub fn holdings(&self) -> BTreeMap<String, Holding> {
        self.streams
            .iter()
            .map(|(k, s)| (k.clone(), s.holding.clone()))
            .collect()
    }

    /// The claims this node sends in its heartbeats: every stream's holder and epoch, and the frame
    /// to continue after for a hand-back.
    pub fn claims(&self) -> Vec<crate::heartbeat::Claim> {
        self.streams
            .iter()
            .map(|(k, s)| crate::heartbeat::Claim {
                stream: k.clone(),
                holder: s.holding.holder.clone(),
                epoch: s.holding.epoch,
                after: s.after.clone(),
                planned: s.planned,
            })
            .collect()
    }

    /// This node's stream health, as last read from its recorder.
    pub fn local_health(&self) -> Vec<StreamHealth> {
        self.local.values().cloned().collect()
    }

    pub fn streams(&self) -> Vec<StreamView> {
        self.streams
            .values()
            .map(|s| StreamView {
                stream: s.spec.key.clone(),
                owner: s.spec.owner.clone(),
                protector: s.spec.protector.clone(),
                holder: s.holding.holder.clone(),
                epoch: s.holding.epoch,
                takeover: s.spec.takeover,
                priority: s.spec.priority,
                uncovered: s.uncovered,
                promote_pending: s.promote_pending,
                bitrate_kbps: s.rate_kbps(),
            })
            .collect()
    }

    /// What this node has taken over against its caps.
    pub fn capacity(&self) -> CapacityView {
        CapacityView {
            streams: self.taken_over(),
            streams_cap: self.capacity.streams,
            kbps: self.taken_over_kbps(),
            kbps_cap: self.capacity.kbps,
        }
    }

    pub fn peers(&self) -> Vec<PeerView> {
        self.peers
            .iter()
            .map(|(name, p)| PeerView {
                node: name.clone(),
                alive: !p.dead && p.last_heard_ms.is_some(),
                flapping: p.flapping,
                heartbeat_age_ms: p.last_heard_ms.map(|t| self.now_ms - t),
            })
            .collect()
    }

    /// Feeds one input at core time `now_ms` (never earlier than the previous one's).
    pub fn handle(&mut self, now_ms: i64, input: Input) -> Result<Vec<Action>, Refusal> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        match input {
            Input::Heartbeat { from, heartbeat } => self.heartbeat(&from, heartbeat, &mut out)?,
            Input::LocalHealth(health) => self.local_health_in(health),
            Input::Tick => {}
            Input::Promoted {
                stream,
                epoch,
                result,
            } => self.promoted(&stream, epoch, result, &mut out),
            Input::HandedBack {
                stream,
                epoch,
                result,
            } => self.handed_back(&stream, epoch, result, &mut out),
            Input::Operator(OperatorCommand::ForceTakeover { stream }) => {
                let Some(s) = self.streams.get(&stream) else {
                    return Err(Refusal::UnknownStream(stream));
                };
                if s.holding.holder != self.me {
                    let reason = format!("operator forced the takeover of {stream}");
                    self.take(&[stream], &reason, &mut out);
                }
            }
            Input::Operator(OperatorCommand::Handover { stream, to }) => {
                self.handover(stream, &to, &mut out)?;
            }
            Input::Operator(OperatorCommand::HandoverCameras { cameras, to }) => {
                self.handover_cameras(&cameras, &to, &mut out)?;
            }
            Input::Operator(OperatorCommand::Drain { node }) => {
                self.drain(&node, &mut out)?;
            }
        }
        self.evaluate(&mut out);
        Ok(out)
    }

    fn local_health_in(&mut self, health: Option<Vec<StreamHealth>>) {
        self.local = health
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.stream.clone(), h))
            .collect();
        for h in self.local.values() {
            Self::measured(&mut self.streams, h);
        }
    }

    /// Keeps the bitrate a receiving recorder measured for a stream.
    fn measured(streams: &mut BTreeMap<String, Stream>, h: &StreamHealth) {
        if let Some(s) = streams.get_mut(&h.stream) {
            if h.receiving && h.bitrate_kbps > 0 {
                s.measured_kbps = Some(h.bitrate_kbps);
            }
        }
    }

    /// Checks and applies a heartbeat: nothing changes unless every check passes.
    fn heartbeat(
        &mut self,
        from: &str,
        hb: Heartbeat,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        self.check_heartbeat(from, &hb)?;
        self.peer_heard(from, &hb, out);
        let mut changed = false;
        for claim in hb.holdings {
            changed |= self.adopt_claim(from, claim, out);
        }
        if changed {
            out.push(Action::Persist);
        }
        Ok(())
    }

    /// The checks of a heartbeat (see [`Refusal`]); changes nothing.
    fn check_heartbeat(&self, from: &str, hb: &Heartbeat) -> Result<(), Refusal> {
        let Some(peer) = self.peers.get(from) else {
            return Err(Refusal::UnknownPeer(from.to_owned()));
        };
        if hb.node != from {
            return Err(Refusal::WrongSender {
                from: from.to_owned(),
                claimed: hb.node.clone(),
            });
        }
        if let Some(last) = peer.last_seq {
            if hb.seq <= last {
                return Err(Refusal::Replayed {
                    from: from.to_owned(),
                    got: hb.seq,
                    last,
                });
            }
        }
        for claim in &hb.holdings {
            let Some(s) = self.streams.get(&claim.stream) else {
                continue;
            };
            let known = &s.holding;
            if claim.epoch < known.epoch && claim.holder == from {
                return Err(Refusal::StaleEpoch {
                    from: from.to_owned(),
                    stream: claim.stream.clone(),
                    claimed: claim.epoch,
                    known: known.epoch,
                });
            }
            if claim.epoch == known.epoch && claim.holder != known.holder && claim.epoch > 0 {
                return Err(Refusal::Conflict {
                    from: from.to_owned(),
                    stream: claim.stream.clone(),
                    epoch: claim.epoch,
                    holder: known.holder.clone(),
                });
            }
        }
        Ok(())
    }

    /// An accepted heartbeat: the peer is alive; its streams' health.
    fn peer_heard(&mut self, from: &str, hb: &Heartbeat, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let peer = self.peers.entry(from.to_owned()).or_default();
        peer.last_seq = Some(hb.seq);
        peer.last_heard_ms = Some(now);
        if peer.dead {
            peer.dead = false;
            out.push(Action::Alarm {
                message: format!("node {from} is heard again"),
            });
        }
        peer.hears = hb.hears.clone();
        peer.vouched = false;
        for h in &hb.health {
            if h.receiving {
                peer.failing_since_ms.remove(&h.stream);
            } else {
                peer.failing_since_ms.entry(h.stream.clone()).or_insert(now);
            }
        }
        peer.health = hb
            .health
            .iter()
            .map(|h| (h.stream.clone(), h.clone()))
            .collect();
        for h in &hb.health {
            Self::measured(&mut self.streams, h);
        }
    }

    /// A claim with a newer epoch than known is adopted: a stream handed to this node is promoted
    /// after the frame named, one this node recorded is released. Returns whether anything changed.
    fn adopt_claim(&mut self, from: &str, claim: Claim, out: &mut Vec<Action>) -> bool {
        let now = self.now_ms;
        let me = self.me.clone();
        let Some(s) = self.streams.get_mut(&claim.stream) else {
            return false;
        };
        if claim.epoch <= s.holding.epoch {
            return false;
        }
        let was_mine = s.holding.holder == me;
        s.holding = Holding {
            holder: claim.holder,
            epoch: claim.epoch,
        };
        s.promote_pending = false;
        s.uncovered = false;
        s.after = None;
        s.owner_ready_since_ms = None;
        s.planned = claim.planned;
        if !was_mine && s.holding.holder == me {
            // Handed to this node: record from the frame after the previous holder's last.
            s.promote_pending = true;
            s.in_flight = true;
            out.push(Action::Promote {
                stream: claim.stream.clone(),
                epoch: claim.epoch,
                takeover: Takeover::Hot,
                after_frames_of: from.to_owned(),
                after: claim.after,
                reason: format!(
                    "{} by {from}, which stopped at a key frame (epoch {})",
                    if claim.planned {
                        "handed over (planned)"
                    } else {
                        "handed back"
                    },
                    claim.epoch
                ),
            });
        }
        if was_mine && s.holding.holder != me {
            s.fenced_at_ms = Some(now);
            out.push(Action::Release {
                stream: claim.stream,
                epoch: claim.epoch,
                reason: format!(
                    "{from} says {} holds it under the newer epoch",
                    s.holding.holder
                ),
            });
        }
        true
    }

    fn promoted(
        &mut self,
        stream: &str,
        epoch: u64,
        result: Result<(), String>,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        s.in_flight = false;
        if s.holding.epoch != epoch || s.holding.holder != self.me {
            return;
        }
        match result {
            Ok(()) => s.promote_pending = false,
            Err(e) => {
                s.retry_at_ms = self.now_ms + PROMOTE_RETRY_MS;
                out.push(Action::Alarm {
                    message: format!(
                        "promotion of {stream} (epoch {epoch}) failed: {e}; retrying in {PROMOTE_RETRY_MS} ms"
                    ),
                })
            }
        }
    }

    /// A planned handover: every check first (nothing changes on a refusal), then a hand-back release
    /// of each stream to `to`.
    fn handover(
        &mut self,
        stream: Option<String>,
        to: &str,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        self.check_peer_alive(to)?;
        let keys: Vec<String> = match stream {
            Some(k) => {
                self.check_held_here(&k)?;
                vec![k]
            }
            None => self.held_here(),
        };
        let targets = keys.into_iter().map(|k| (k, to.to_owned())).collect();
        self.hand_over(targets, out)
    }

    /// A planned handover of every stream of `cameras` to `to` (each camera must have a stream in
    /// this arbiter's care, every one of them held here).
    fn handover_cameras(
        &mut self,
        cameras: &[String],
        to: &str,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        self.check_peer_alive(to)?;
        let mut targets = Vec::new();
        for camera in cameras {
            let keys: Vec<String> = self
                .streams
                .keys()
                .filter(|k| k.split('/').next() == Some(camera.as_str()))
                .cloned()
                .collect();
            if keys.is_empty() {
                return Err(Refusal::UnknownCamera(camera.clone()));
            }
            for k in keys {
                self.check_held_here(&k)?;
                targets.push((k, to.to_owned()));
            }
        }
        self.hand_over(targets, out)
    }

    /// A drain of this node: every stream held here to its counterpart (its protector if this node
    /// owns it, else its owner).
    fn drain(&mut self, node: &str, out: &mut Vec<Action>) -> Result<(), Refusal> {
        if node != self.me {
            return Err(Refusal::DrainElsewhere {
                node: node.to_owned(),
                me: self.me.clone(),
            });
        }
        let targets = self
            .held_here()
            .into_iter()
            .filter_map(|k| {
                let s = self.streams.get(&k)?;
                let to = if s.spec.owner == self.me {
                    s.spec.protector.clone()
                } else {
                    s.spec.owner.clone()
                };
                Some((k, to))
            })
            .collect();
        self.hand_over(targets, out)
    }

    /// Streams held here and not being handed on already.
    fn held_here(&self) -> Vec<String> {
        self.streams
            .values()
            .filter(|s| s.holding.holder == self.me && !s.handing_back)
            .map(|s| s.spec.key.clone())
            .collect()
    }

    fn check_peer_alive(&self, node: &str) -> Result<(), Refusal> {
        let Some(peer) = self.peers.get(node) else {
            return Err(Refusal::UnknownNode(node.to_owned()));
        };
        if peer.dead || peer.last_heard_ms.is_none() {
            return Err(Refusal::PeerDead(node.to_owned()));
        }
        Ok(())
    }

    fn check_held_here(&self, key: &str) -> Result<(), Refusal> {
        let Some(s) = self.streams.get(key) else {
            return Err(Refusal::UnknownStream(key.to_owned()));
        };
        if s.holding.holder != self.me {
            return Err(Refusal::NotHeldHere {
                stream: key.to_owned(),
                holder: s.holding.holder.clone(),
            });
        }
        Ok(())
    }

    /// Hands each (stream, node) over: every check first (the node alive and shadowing the stream;
    /// nothing changes on a refusal), then a hand-back release of each.
    fn hand_over(
        &mut self,
        targets: Vec<(String, String)>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        for (k, to) in &targets {
            self.check_peer_alive(to)?;
            let shadowing = self.peers.get(to).is_some_and(|p| {
                p.health
                    .get(k)
                    .is_some_and(|h| h.receiving && h.mode == "shadow")
            });
            if !shadowing {
                return Err(Refusal::NotShadowed {
                    stream: k.clone(),
                    to: to.clone(),
                });
            }
        }
        for (k, to) in targets {
            let Some(s) = self.streams.get_mut(&k) else {
                continue;
            };
            s.handing_back = true;
            s.handing_to = Some(to.clone());
            out.push(Action::HandBack {
                stream: k,
                epoch: s.holding.epoch,
                owner: to,
            });
        }
        Ok(())
    }

    fn handed_back(
        &mut self,
        stream: &str,
        epoch: u64,
        result: Result<FrameId, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        s.handing_back = false;
        if s.holding.holder != self.me || s.holding.epoch != epoch {
            return;
        }
        match result {
            Ok(last) => {
                let to = s.handing_to.take().unwrap_or_else(|| s.spec.owner.clone());
                s.planned = to != s.spec.owner;
                s.holding = Holding {
                    holder: to.clone(),
                    epoch: epoch + 1,
                };
                s.after = Some(last.clone());
                s.owner_ready_since_ms = None;
                out.push(Action::Persist);
                out.push(Action::Alarm {
                    message: format!(
                        "{stream} handed {} to {to} with epoch {}: released here at a key frame, last written {last}",
                        if s.planned { "over" } else { "back" },
                        epoch + 1
                    ),
                });
            }
            Err(e) => {
                s.handing_to = None;
                s.owner_ready_since_ms = Some(self.now_ms);
                out.push(Action::Alarm {
                    message: format!("hand-back of {stream} failed: {e}; waiting again"),
                });
            }
        }
    }
}

mod decide;
#[cfg(test)]
mod tests;
mod witness;
#[cfg(test)]
mod witness_tests;
