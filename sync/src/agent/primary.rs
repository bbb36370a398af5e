//! Primary side: keep the signed log of this node's sealed segments and mirror every segment, fragment
//! by fragment while it grows, to the standby.
//!
//! The agent only reads the recorder's catalog and files (and, to repair a damaged sealed file, replaces
//! it through `Store::restore_sealed`); the recorder never waits for it. A connection resumes from what
//! the standby says it holds, so nothing already received is sent again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::syncdb::SyncDb;
use store::{SegmentRow, SegmentState, Store};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch, Notify};

mod fetch;
mod watermark;

use watermark::Watermark;

use super::repair::{
    finish_repair, log_reference, repair_reference, repair_refused, RepairCause, RepairRequest,
    Repairs,
};
use super::{
    from_json, io_err, now_ms, peer_disconnected, raise_alarm, stall, to_json, with_status,
    write_status, AgentError, Conn, SharedStatus, StreamLag, CHUNK_BYTES, HANDSHAKE_TIMEOUT,
    PEER_SILENCE,
};
use crate::config::{Peer, SyncConfig};
use crate::identity::{self, NodeIdentity};
use crate::merkle::{MerkleTree, SegmentLeaf, SignedTreeHead, TreeHead};
use crate::proto::{Holding, Message, Role, SegmentInfo, SegmentKey, PROTOCOL_VERSION};

/// Leaves per signed head at most, so one message stays small after a long outage.
const MAX_LEAVES_PER_HEAD: u64 = 500;
/// The status file is rewritten at most this often (the loop runs once per message).
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// The primary's signed log: Merkle tree of leaves plus the last of the chain of signed heads (the
/// chain itself stays in `sync.db`). A standby keeps one such log per owner it sends takeover segments
/// back to ([`Log::load_flowback`]).
pub struct Log {
    node: String,
    /// The log's name in `sync.db`: the node's own, or `<node>><owner>` for a flow-back log.
    key: String,
    /// Only segments of these streams (`camera`, `main`/`sub`) are logged and mirrored; `None`: all of
    /// the node's.
    streams: Option<BTreeSet<(String, String)>>,
    pub tree: MerkleTree,
    logged: HashMap<String, u64>,
    /// The last signed head and its id in `sync.db` (heads are sent in id order).
    last_head: Option<SignedTreeHead>,
    last_head_id: i64,
    scan_after_id: i64,
}

impl Log {
    pub fn load(node: &str, db: &SyncDb) -> Result<Log, AgentError> {
        Self::load_keyed(node, node, None, db)
    }

    /// A standby's log of its own segments of `owner`'s streams (its takeover segments), signed with
    /// its key and sent back to `owner`: one log per owner, so an owner learns nothing of another's
    /// cameras.
    pub fn load_flowback(
        node: &str,
        owner: &str,
        streams: BTreeSet<(String, String)>,
        db: &SyncDb,
    ) -> Result<Log, AgentError> {
        Self::load_keyed(node, &flowback_log_key(node, owner), Some(streams), db)
    }

    fn load_keyed(
        node: &str,
        key: &str,
        streams: Option<BTreeSet<(String, String)>>,
        db: &SyncDb,
    ) -> Result<Log, AgentError> {
        let mut tree = MerkleTree::new();
        let mut logged = HashMap::new();
        for (bytes, hash) in db.leaves(key)? {
            let index = tree.push(hash);
            if let Ok(leaf) = SegmentLeaf::decode(&bytes) {
                logged.insert(leaf.path, index);
            }
        }
        let (last_head_id, last_head) = match db.last_head(key)? {
            Some((id, h)) => match serde_json::from_str::<SignedTreeHead>(&h.head_json) {
                Ok(sth) => (id, Some(sth)),
                Err(e) => {
                    return Err(AgentError::Peer(format!(
                        "own head in sync.db unreadable: {e}"
                    )))
                }
            },
            None => (0, None),
        };
        Ok(Log {
            node: node.to_owned(),
            key: key.to_owned(),
            streams,
            tree,
            logged,
            last_head,
            last_head_id,
            scan_after_id: 0,
        })
    }

    pub fn leaf_index(&self, path: &str) -> Option<u64> {
        self.logged.get(path).copied()
    }

    /// The log's name in `sync.db`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether segment `path` belongs in this log (a flow-back log takes its owner's streams only).
    pub fn covers(&self, path: &str) -> bool {
        self.streams.as_ref().is_none_or(|streams| {
            store::parse_media_path(std::path::Path::new(path))
                .is_some_and(|i| streams.contains(&(i.camera, i.stream)))
        })
    }

    /// Appends leaves for newly sealed segments and signs heads: one per `MAX_LEAVES_PER_HEAD` new
    /// leaves and one for the rest; with nothing new, a keep-alive head only when `refresh` and the last
    /// head is older than `head_interval` (by its own timestamp, so restarts and reconnects do not add
    /// heads). Returns true if anything was signed.
    pub fn update(
        &mut self,
        store: &Store,
        db: &SyncDb,
        id: &NodeIdentity,
        head_interval: Duration,
        refresh: bool,
    ) -> Result<bool, AgentError> {
        let streams: HashMap<i64, (String, String)> = store
            .catalog()
            .streams()?
            .into_iter()
            .map(|s| (s.id.0, (s.camera, s.kind)))
            .collect();
        let mut signed = false;
        loop {
            let rows = store
                .catalog()
                .node_segments_after(&self.node, self.scan_after_id, 1000)?;
            if rows.is_empty() {
                break;
            }
            let mut blocked = false;
            for row in &rows {
                if !self.covers(&row.path) {
                    if !blocked {
                        self.scan_after_id = row.id.0;
                    }
                    continue;
                }
                if row.state == SegmentState::Open || row.sha256.is_none() {
                    blocked = true;
                    continue;
                }
                // The cursor passes a row once it is logged (or cannot be): a failed append is
                // tried again, so a damaged sync.db keeps failing (and alarming) instead of
                // skipping the segment.
                let advance = !blocked;
                if self.logged.contains_key(&row.path) {
                    if advance {
                        self.scan_after_id = row.id.0;
                    }
                    continue;
                }
                let Some(sha) = row.sha256.as_deref().and_then(base::hex::decode_32) else {
                    if advance {
                        self.scan_after_id = row.id.0;
                    }
                    continue;
                };
                let (camera, stream) = streams.get(&row.stream_id.0).cloned().unwrap_or_default();
                let leaf = SegmentLeaf {
                    origin_node: self.node.clone(),
                    camera,
                    stream,
                    path: row.path.clone(),
                    start_ms: row.start_ms,
                    end_ms: row.end_ms,
                    size_bytes: row.size_bytes.max(0) as u64,
                    sha256: sha,
                };
                let hash = leaf.leaf_hash();
                let index = self.tree.len();
                db.append_leaf(&self.key, index, &leaf.encode(), &hash, &row.path)?;
                self.tree.push(hash);
                self.logged.insert(row.path.clone(), index);
                if advance {
                    self.scan_after_id = row.id.0;
                }
                if self.tree.len() - self.head_size() >= MAX_LEAVES_PER_HEAD {
                    self.sign(db, id)?;
                    signed = true;
                }
            }
            if blocked || rows.len() < 1000 {
                break;
            }
        }
        let interval_ms = i64::try_from(head_interval.as_millis()).unwrap_or(i64::MAX);
        let stale = self
            .last_head
            .as_ref()
            .is_some_and(|h| now_ms().saturating_sub(h.head.timestamp_ms) >= interval_ms);
        if self.tree.len() > self.head_size() || (refresh && stale) {
            self.sign(db, id)?;
            signed = true;
        }
        Ok(signed)
    }

    fn head_size(&self) -> u64 {
        self.last_head.as_ref().map_or(0, |h| h.head.tree_size)
    }

    /// The id of the last signed head in `sync.db`.
    pub fn last_head_id(&self) -> i64 {
        self.last_head_id
    }

    fn sign(&mut self, db: &SyncDb, id: &NodeIdentity) -> Result<(), AgentError> {
        let prev = self
            .last_head
            .as_ref()
            .map_or([0u8; 32], |h| h.head.head_hash());
        let head = TreeHead {
            log_node: self.node.clone(),
            tree_size: self.tree.len(),
            root_hash: self.tree.root(),
            timestamp_ms: now_ms().max(self.last_head.as_ref().map_or(0, |h| h.head.timestamp_ms)),
            prev_head_hash: prev,
        };
        let signed = head.sign(&|m| id.sign(m));
        let json = serde_json::to_string(&signed).map_err(|e| AgentError::Peer(e.to_string()))?;
        db.store_head(
            &self.key,
            head.tree_size,
            &head.head_hash(),
            &json,
            now_ms(),
        )?;
        self.last_head_id = db
            .head_id(&self.key, &head.head_hash())?
            .unwrap_or(self.last_head_id);
        self.last_head = Some(signed);
        Ok(())
    }

    /// Leaves `[from, to)` as JSON for a `TreeHead` message.
    fn leaves_json(
        &self,
        db: &SyncDb,
        from: u64,
        to: u64,
    ) -> Result<Vec<serde_json::Value>, AgentError> {
        Ok(db
            .leaves_range(&self.key, from, to)?
            .iter()
            .filter_map(|(bytes, _)| SegmentLeaf::decode(bytes).ok())
            .map(|l| to_json(&l))
            .collect())
    }
}

/// The `sync.db` name of `node`'s flow-back log to `owner` (`>` is in no node name).
pub fn flowback_log_key(node: &str, owner: &str) -> String {
    format!("{node}>{owner}")
}

/// Runs the primary side until `shutdown`.
pub async fn run(
    cfg: SyncConfig,
    id: NodeIdentity,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (store, db) = super::open_storage(&cfg)?;
    // With `[arbiter]` this agent seals its standby's takeover segments here (flow-back).
    let dedup_task = super::start_dedup(&store, &status, shutdown.clone());
    let mut log = Log::load(&cfg.node_name, &db).inspect_err(|e| {
        raise_alarm(
            &db,
            "log_error",
            None,
            None,
            &format!("cannot load the log: {e}"),
        );
    })?;
    let standby = cfg.peers[0].clone();
    with_status(&status, |s| {
        s.stall_alarm_ms = cfg.settings.stall_alarm_ms;
        s.node = cfg.node_name.clone();
        s.role = "primary".into();
        s.peers.entry(standby.pins.node.clone()).or_default().node = standby.pins.node.clone();
    });

    // File events wake the mirroring loop at once (the periodic pass catches anything missed) and feed
    // the tamper watch.
    let wake = Arc::new(Notify::new());
    let (watcher, events) = super::watch::watch_media(
        &cfg.data_dir,
        wake.clone(),
        cfg.settings.tamper_queue_events as usize,
    );
    with_status(&status, |s| {
        s.tamper = Some(super::tamper::TamperStatus {
            watching: watcher.is_some(),
            ..Default::default()
        });
    });

    if cfg.flowback {
        tokio::spawn(super::flowback::receive_loop(
            cfg.clone(),
            id.clone(),
            store.clone(),
            db.clone(),
            status.clone(),
            shutdown.clone(),
        ));
    }
    let (repair_tx, mut repair_rx) = mpsc::unbounded_channel::<RepairRequest>();
    tokio::spawn(super::tamper::tamper_loop(
        store.clone(),
        db.clone(),
        cfg.clone(),
        status.clone(),
        events,
        repair_tx.clone(),
        shutdown.clone(),
    ));
    if cfg.settings.scrub_interval_ms > 0 {
        tokio::spawn(scrub_loop(
            store.clone(),
            db.clone(),
            cfg.clone(),
            status.clone(),
            repair_tx,
            shutdown.clone(),
        ));
    }

    let mut backoff = base::job::Backoff::new(500, 5000);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = Instant::now();
        let result = session(
            &cfg,
            &id,
            &standby,
            &store,
            &db,
            &mut log,
            &status,
            &wake,
            &mut repair_rx,
            &mut shutdown,
        )
        .await;
        peer_disconnected(&status, &standby.pins.node, &result);
        if let Err(e) = &result {
            link_down(&store, &status, &standby.pins.node, &e.to_string());
        }
        write_status(&cfg.data_dir, &status, &db);
        match result {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
                let delay = backoff.next_delay_ms(base::job::random_jitter_unit());
                tracing::warn!(peer = %standby.pins.node, error = %e, retry_in_ms = delay, "standby connection ended");
                // Keep the log and heads current while disconnected.
                let head_interval = Duration::from_millis(cfg.settings.head_interval_ms);
                if let Err(e) =
                    update_log(&mut log, &store, &db, &id, &status, head_interval, false)
                {
                    tracing::error!(error = %e, "log update failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
    let _ = dedup_task.await;
    Ok(())
}

/// The standby cannot be reached or the session failed: a stall of the link, and every stream waits
/// (what the recorder writes meanwhile is not mirrored) from now on if it did not wait already.
fn link_down(store: &Store, status: &SharedStatus, peer: &str, error: &str) {
    let now = now_ms();
    let streams = tokio::task::block_in_place(|| store.catalog().streams()).unwrap_or_default();
    stall::observe(
        status,
        &format!("link:{peer}"),
        stall::Observed {
            kind: "standby_unreachable",
            peer: Some(peer),
            segment: None,
            detail: &format!("no session with the standby: {error}"),
            since_ms: now,
        },
    );
    with_status(status, |s| {
        if let Some(p) = s.peers.get_mut(peer) {
            for st in streams {
                p.streams
                    .entry(format!("{}/{}", st.camera, st.kind))
                    .or_default();
            }
            for lag in p.streams.values_mut() {
                lag.waiting_since_ms.get_or_insert(now);
            }
        }
    });
}

/// [`Log::update`], noting a failure as a stall (mirroring cannot go on while the log cannot grow).
#[allow(clippy::too_many_arguments)]
fn update_log(
    log: &mut Log,
    store: &Store,
    db: &SyncDb,
    id: &NodeIdentity,
    status: &SharedStatus,
    head_interval: Duration,
    refresh: bool,
) -> Result<bool, AgentError> {
    let key = format!("log:{}", log.node);
    match tokio::task::block_in_place(|| log.update(store, db, id, head_interval, refresh)) {
        Ok(signed) => {
            stall::clear(status, &key);
            Ok(signed)
        }
        Err(e) => {
            stall::observe(
                status,
                &key,
                stall::Observed {
                    kind: "log_error",
                    peer: None,
                    segment: None,
                    detail: &format!("the log cannot be updated: {e}"),
                    since_ms: now_ms(),
                },
            );
            Err(e)
        }
    }
}

pub async fn connect(
    id: &NodeIdentity,
    peer: &Peer,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, AgentError> {
    let address = peer.address.clone().unwrap_or_default();
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| AgentError::Timeout(format!("connecting to {address}")))?
        .map_err(io_err(format!("connect {address}")))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(identity::client_config(id, &peer.pins)?);
    let name = identity::server_name(&peer.pins)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| AgentError::Timeout(format!("TLS handshake with {address}")))?
        .map_err(io_err(format!("TLS handshake with {address}")))
}

/// What the standby said it holds after the handshake (every `StandbyState` page gathered).
pub struct StandbyView {
    /// Open segments, and sealed ones not summed up by `sealed_below_leaf`.
    pub holdings: Vec<Holding>,
    pub head: Option<SignedTreeHead>,
    /// Segments logged below this leaf index need nothing more (at most the standby's head size).
    pub sealed_below_leaf: u64,
}

/// Hello / HelloAck / StandbyState (all its pages), as the primary.
pub async fn handshake<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
    node: &str,
    peer: &Peer,
) -> Result<StandbyView, AgentError> {
    conn.send(&Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        node: node.to_owned(),
        role: Role::Primary,
        software: format!("nvr-sync {}", env!("CARGO_PKG_VERSION")),
    })
    .await?;
    match conn.recv(HANDSHAKE_TIMEOUT).await? {
        Some(Message::HelloAck { node: n, .. }) if n == peer.pins.node => {}
        Some(Message::Error { message, .. }) => {
            return Err(AgentError::Peer(format!("standby refused: {message}")))
        }
        other => {
            return Err(AgentError::Peer(format!(
                "expected HelloAck from {}, got {other:?}",
                peer.pins.node
            )))
        }
    }
    super::history::receive_standby_state(conn).await
}

/// Per-connection mirroring state of one segment.
#[derive(Default)]
struct Mirror {
    announced: bool,
    sent: u64,
    acked: u64,
    data_in_flight: u32,
    seal_sent: bool,
    done: bool,
    unacked_since_ms: Option<i64>,
    /// When this connection first saw the segment sealed here (it waits for the standby's seal).
    sealed_seen_ms: Option<i64>,
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &SyncConfig,
    id: &NodeIdentity,
    standby: &Peer,
    store: &Arc<Store>,
    db: &Arc<SyncDb>,
    log: &mut Log,
    status: &SharedStatus,
    wake: &Arc<Notify>,
    repair_rx: &mut mpsc::UnboundedReceiver<RepairRequest>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let tls = connect(id, standby).await?;
    let mut conn = Conn::new(tls);
    let view = handshake(&mut conn, &cfg.node_name, standby).await?;
    let route = Route {
        cfg,
        id,
        peer: standby,
        store,
        db,
        status,
        writes_status: true,
    };
    mirror(&route, conn, view, log, wake, repair_rx, shutdown).await
}

/// Who mirrors to whom in one session: this node (`cfg.node_name`) is the origin of the segments
/// `log` covers, `peer` receives them (the standby, or for flow-back the owner of the cameras).
pub(super) struct Route<'a> {
    pub cfg: &'a SyncConfig,
    pub id: &'a NodeIdentity,
    pub peer: &'a Peer,
    pub store: &'a Arc<Store>,
    pub db: &'a Arc<SyncDb>,
    /// Where this direction's peer status and stalls go.
    pub status: &'a SharedStatus,
    /// Whether this loop writes the status file (the flow-back's status is written by the agent's
    /// main loop, as part of its own).
    pub writes_status: bool,
}

/// Mirrors `log`'s segments over an established session (`view`: what the receiving side said it
/// holds) until the connection fails or `shutdown`: new bytes of open and sealed segments, seals and
/// signed heads, the receiver's acknowledgements, repair fetches both ways.
pub(super) async fn mirror<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    route: &Route<'_>,
    conn: Conn<S>,
    view: StandbyView,
    log: &mut Log,
    wake: &Notify,
    repair_rx: &mut mpsc::UnboundedReceiver<RepairRequest>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let Route {
        cfg,
        id,
        peer: standby,
        store,
        db,
        status,
        writes_status,
    } = *route;
    let StandbyView {
        holdings,
        head: standby_head,
        sealed_below_leaf,
    } = view;
    let peer_name = standby.pins.node.clone();
    tracing::info!(peer = %peer_name, holdings = holdings.len(), head = ?standby_head.as_ref().map(|h| h.head.tree_size), "connected to standby");
    with_status(status, |s| {
        if let Some(p) = s.peers.get_mut(&peer_name) {
            p.connected = true;
            p.last_connected_ms = Some(now_ms());
            p.last_error = None;
            p.last_head_size = standby_head.as_ref().map(|h| h.head.tree_size);
        }
    });
    stall::clear(status, &format!("link:{peer_name}"));

    // Where the standby's log stands in ours.
    let mut standby_size = 0u64;
    // Heads stored after this id are sent next, in signing order.
    let mut sent_head_id = 0i64;
    if let Some(h) = &standby_head {
        let hash = h.head.head_hash();
        match db.head_id(log.key(), &hash)? {
            Some(i) => {
                standby_size = h.head.tree_size;
                sent_head_id = i;
            }
            None => {
                raise_alarm(db, "unknown_head", Some(&peer_name), None, &format!(
                    "standby holds a head of size {} that this node never signed (was sync.db lost? run restore)",
                    h.head.tree_size
                ));
                return Err(AgentError::Peer(
                    "standby holds a head we never signed".into(),
                ));
            }
        }
    }

    let mut mirrors: HashMap<String, Mirror> = HashMap::new();
    for h in holdings {
        if h.key.origin_node != cfg.node_name {
            continue;
        }
        mirrors.insert(
            h.key.path.clone(),
            Mirror {
                sent: h.bytes_held,
                acked: h.bytes_held,
                done: h.sealed_sha256.is_some(),
                ..Mirror::default()
            },
        );
    }

    let Conn {
        mut incoming,
        mut writer,
    } = conn;

    let head_interval = Duration::from_millis(cfg.settings.head_interval_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let mut last_ping = Instant::now();
    let mut last_reconcile = Instant::now();
    let mut last_status = Instant::now()
        .checked_sub(STATUS_INTERVAL)
        .unwrap_or_else(Instant::now);
    // Segments the standby summed up as held (logged below `sealed_below`) are never looked at again.
    let sealed_below = sealed_below_leaf.min(standby_size);
    // A row that needs nothing more: deleted, summed up as held, or mirrored and sealed already.
    let needs_nothing = |log: &Log, mirrors: &HashMap<String, Mirror>, row: &SegmentRow| {
        row.state == SegmentState::Deleted
            || !log.covers(&row.path)
            || log.leaf_index(&row.path).is_some_and(|i| i < sealed_below)
            || mirrors.get(&row.path).is_some_and(|m| m.done)
    };
    let mut watermark = Watermark::starting_after(tokio::task::block_in_place(|| {
        skip_done(store, &cfg.node_name, 0, |row| {
            needs_nothing(log, &mirrors, row)
        })
    })?);
    let mut head_in_flight: Option<(i64, SignedTreeHead)> = None;
    let mut streams: HashMap<i64, (String, String)> = HashMap::new();
    let mut repairs = Repairs::default();
    let mut budget = Budget::new(cfg.settings.bandwidth_bytes_per_s);
    let mut nonce = 0u64;

    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
                return Ok(());
            }
            _ = wake.notified() => {}
            _ = tick.tick() => {}
            Some(req) = repair_rx.recv() => {
                let key = SegmentKey { origin_node: cfg.node_name.clone(), path: req.path.clone() };
                let len = req.reference.size_bytes;
                if repairs.start(req) {
                    tracing::warn!(path = %key.path, "fetching the good copy from the standby");
                    crate::proto::write_message(&mut writer, &Message::FetchRequest { key, offset: 0, len }).await?;
                }
            }
            msg = incoming.next() => {
                let Some(msg) = msg? else {
                    return Err(AgentError::Peer("standby closed the connection".into()));
                };
                last_rx = Instant::now();
                match msg {
                    Message::Ack { key, bytes_durable } => {
                        let m = mirrors.entry(key.path.clone()).or_default();
                        if m.data_in_flight > 0 {
                            m.data_in_flight -= 1;
                            m.acked = m.acked.max(bytes_durable);
                            if bytes_durable < m.sent && m.data_in_flight == 0 {
                                // The standby holds less than we sent (a gap): resend from there.
                                m.sent = bytes_durable;
                                m.acked = bytes_durable;
                            }
                        } else if m.seal_sent {
                            m.done = true;
                            with_status(status, |s| {
                                if let Some(p) = s.peers.get_mut(&peer_name) {
                                    p.segments_sealed_on_peer += 1;
                                }
                            });
                        }
                        if m.acked >= m.sent {
                            m.unacked_since_ms = None;
                        }
                    }
                    Message::HeadAccepted { countersignature } => {
                        if let Some((i, head)) = head_in_flight.take() {
                            let cs: crate::merkle::Countersignature = from_json(&countersignature, "countersignature")?;
                            if !cs.verify_for(&head.head, &standby.pins.signing_public_key) {
                                raise_alarm(db, "bad_countersignature", Some(&peer_name), None, "standby's countersignature does not verify");
                            } else {
                                let json = serde_json::to_string(&cs).unwrap_or_default();
                                db.set_countersignature(log.key(), &head.head.head_hash(), &json)?;
                            }
                            standby_size = head.head.tree_size;
                            sent_head_id = i;
                            stall::clear(status, &format!("head:{peer_name}"));
                            with_status(status, |s| {
                                if let Some(p) = s.peers.get_mut(&peer_name) {
                                    p.last_head_size = Some(standby_size);
                                    p.last_head_ms = Some(now_ms());
                                }
                            });
                        }
                    }
                    Message::Refused { key: Some(key), reason } if repairs.is_pending(&key.path) => {
                        // The standby has no sealed copy to repair from (not mirrored yet).
                        if let Some(req) = repairs.refused(&key.path) {
                            repair_refused(db, status, &peer_name, &req, &reason);
                        }
                    }
                    Message::Refused { key, reason } => {
                        let path = key.as_ref().map(|k| k.path.clone());
                        raise_alarm(db, "refused_by_standby", Some(&peer_name), path.as_deref(), &reason);
                        match key {
                            Some(k) => {
                                let m = mirrors.entry(k.path).or_default();
                                m.done = true;
                                m.data_in_flight = m.data_in_flight.saturating_sub(1);
                            }
                            None => {
                                stall::observe(status, &format!("head:{peer_name}"), stall::Observed {
                                    kind: "head_refused", peer: Some(&peer_name), segment: None,
                                    detail: &format!("the standby refuses our heads: {reason}"), since_ms: now_ms(),
                                });
                                return Err(AgentError::Peer(format!("standby refused our log: {reason}")));
                            }
                        }
                    }
                    Message::FetchData { key, offset, data, last } => {
                        if let Some((req, buf)) = repairs.data(&key.path, offset, &data, last) {
                            tokio::task::block_in_place(|| finish_repair(store, db, status, &peer_name, &req, &buf));
                        }
                    }
                    Message::FetchRequest { key, offset, len } => {
                        fetch::serve(&mut writer, store, db, log, key, offset, len).await?;
                    }
                    Message::Pong { .. } | Message::Ping { .. } => {}
                    Message::Error { code, message } => {
                        return Err(AgentError::Peer(format!("standby error {code:?}: {message}")));
                    }
                    other => tracing::debug!(?other, "unexpected message from standby"),
                }
            }
        }

        if last_rx.elapsed() > PEER_SILENCE {
            return Err(AgentError::Timeout(format!(
                "standby silent for {PEER_SILENCE:?}"
            )));
        }
        if last_ping.elapsed() >= Duration::from_secs(1) {
            nonce += 1;
            crate::proto::write_message(
                &mut writer,
                &Message::Ping {
                    nonce,
                    sent_ms: now_ms(),
                },
            )
            .await?;
            last_ping = Instant::now();
        }

        // The log first, so a sealed segment has its leaf index when announced.
        update_log(log, store, db, id, status, head_interval, true)?;
        if last_reconcile.elapsed() >= Duration::from_millis(cfg.settings.reconcile_interval_ms) {
            let resume_after = tokio::task::block_in_place(|| {
                skip_done(store, &cfg.node_name, 0, |row| {
                    needs_nothing(log, &mirrors, row)
                })
            })?;
            watermark.rescan(resume_after);
            last_reconcile = Instant::now();
        }

        // Mirror the segments still pending, then new ones from the watermark on.
        let rows = tokio::task::block_in_place(|| watermark.rows(store, &cfg.node_name))?;
        let mut lags: HashMap<String, StreamLag> = HashMap::new();
        for row in rows {
            if needs_nothing(log, &mirrors, &row) {
                watermark.done(&row);
                stall::clear(status, &format!("segment:{}", row.path));
                continue;
            }
            let m = mirrors.entry(row.path.clone()).or_default();
            watermark.pending(&row);
            if !streams.contains_key(&row.stream_id.0) {
                streams = store
                    .catalog()
                    .streams()?
                    .into_iter()
                    .map(|s| (s.id.0, (s.camera, s.kind)))
                    .collect();
            }
            let (camera, stream) = streams.get(&row.stream_id.0).cloned().unwrap_or_default();
            let key = SegmentKey {
                origin_node: cfg.node_name.clone(),
                path: row.path.clone(),
            };
            let abs = store.absolute_path(&row.path);
            let sealed = row.state == SegmentState::Sealed;
            let local_len = if sealed {
                row.size_bytes.max(0) as u64
            } else {
                match std::fs::metadata(&abs) {
                    Ok(meta) => meta.len(),
                    Err(_) => continue,
                }
            };
            if !m.announced {
                let info = SegmentInfo {
                    camera: camera.clone(),
                    stream: stream.clone(),
                    start_ms: row.start_ms,
                    video_codec: row.video_codec.clone(),
                    width: row.width.max(0) as u32,
                    height: row.height.max(0) as u32,
                    audio_codec: row.audio_codec.clone(),
                };
                crate::proto::write_message(
                    &mut writer,
                    &Message::SegmentOpen {
                        key: key.clone(),
                        info,
                    },
                )
                .await?;
                m.announced = true;
            }
            if local_len > m.sent && m.data_in_flight < 64 {
                let chunks = SegmentChunks {
                    key: &key,
                    abs: &abs,
                    local_len,
                };
                match chunks
                    .send(&mut writer, m, &mut budget, status, &peer_name)
                    .await
                {
                    Ok(()) => {}
                    Err(SendError::Peer(e)) => return Err(e),
                    // One unreadable file (deleted or cut under us) must not stop the others.
                    Err(SendError::Read(e)) => {
                        segment_unreadable(status, &peer_name, &row, m, &e);
                        continue;
                    }
                }
            }
            // More sent than the sealed file holds: a crash cut the file back after its tail was
            // mirrored. The seal tells the standby to keep the matching prefix.
            if sealed && m.sent >= local_len && !m.seal_sent {
                if let (Some(sha), Some(leaf_index)) =
                    (row.sha256.clone(), log.leaf_index(&row.path))
                {
                    crate::proto::write_message(
                        &mut writer,
                        &Message::SegmentSealed {
                            key: key.clone(),
                            size_bytes: local_len,
                            sha256: sha,
                            end_ms: row.end_ms,
                            frames: row.frames,
                            leaf_index,
                            epoch: row.epoch,
                        },
                    )
                    .await?;
                    m.seal_sent = true;
                }
            }
            let waiting = segment_waiting(status, &peer_name, &row, m);
            let lag = lags.entry(format!("{camera}/{stream}")).or_default();
            // The stream's lag is that of its oldest waiting segment, else of its open one.
            let shown = match (waiting, lag.waiting_since_ms) {
                (Some(w), Some(l)) => w < l,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => !sealed || lag.segment.is_empty(),
            };
            if shown {
                lag.segment = row.path.clone();
                lag.local_bytes = local_len;
                lag.acked_bytes = m.acked;
                lag.lag_bytes = local_len.saturating_sub(m.acked);
                lag.waiting_since_ms = waiting;
                lag.lag_ms = waiting.map_or(0, |t| now_ms() - t);
            }
        }

        // Tree heads, in the order they were signed, each with the leaves it adds.
        let next_head = if head_in_flight.is_none() && sent_head_id < log.last_head_id() {
            db.head_after(log.key(), sent_head_id)?
        } else {
            None
        };
        if let Some((head_id, stored)) = next_head {
            let head: SignedTreeHead = serde_json::from_str(&stored.head_json)
                .map_err(|e| AgentError::Peer(format!("own head in sync.db unreadable: {e}")))?;
            let size = head.head.tree_size;
            let proof = if standby_size == 0 {
                Vec::new()
            } else {
                log.tree
                    .consistency_proof(standby_size, size)
                    .unwrap_or_default()
            };
            let leaves = log.leaves_json(db, standby_size, size)?;
            crate::proto::write_message(
                &mut writer,
                &Message::TreeHead {
                    head: to_json(&head),
                    first_leaf: standby_size,
                    consistency_proof: proof.iter().map(|h| base::hex::encode(h)).collect(),
                    leaves,
                },
            )
            .await?;
            head_in_flight = Some((head_id, head));
        }

        with_status(status, |s| {
            s.log_size = log.tree.len();
            if let Some(p) = s.peers.get_mut(&peer_name) {
                // A stream none of whose segments waited in this pass waits for nothing (one that
                // stopped being recorded here, e.g. a takeover handed back, keeps no stale lag).
                for (k, v) in p.streams.iter_mut() {
                    if !lags.contains_key(k) && v.waiting_since_ms.is_some() {
                        v.acked_bytes = v.local_bytes;
                        v.lag_bytes = 0;
                        v.lag_ms = 0;
                        v.waiting_since_ms = None;
                    }
                }
                for (k, v) in lags {
                    p.streams.insert(k, v);
                }
            }
        });
        if writes_status && last_status.elapsed() >= STATUS_INTERVAL {
            write_status(&cfg.data_dir, status, db);
            last_status = Instant::now();
        }
    }
}

/// The id of the last of `node`'s catalog rows after `after_id` up to which every row is `done`: where
/// mirroring resumes, found by reading the catalog in batches (not one batch per mirroring pass).
fn skip_done(
    store: &Store,
    node: &str,
    mut after_id: i64,
    done: impl Fn(&SegmentRow) -> bool,
) -> Result<i64, AgentError> {
    const BATCH: u32 = 5000;
    loop {
        let rows = store.catalog().node_segments_after(node, after_id, BATCH)?;
        for row in &rows {
            if !done(row) {
                return Ok(after_id);
            }
            after_id = row.id.0;
        }
        if rows.len() < BATCH as usize {
            return Ok(after_id);
        }
    }
}

/// Bytes of one segment to send from its file.
struct SegmentChunks<'a> {
    key: &'a SegmentKey,
    abs: &'a std::path::Path,
    local_len: u64,
}

enum SendError {
    /// The segment's file cannot be read: that segment waits, the session goes on.
    Read(String),
    /// The connection failed.
    Peer(AgentError),
}

impl SegmentChunks<'_> {
    /// Sends `SegmentData` chunks from `m.sent` on, while fewer than 64 are unacknowledged.
    async fn send<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        m: &mut Mirror,
        budget: &mut Budget,
        status: &SharedStatus,
        peer: &str,
    ) -> Result<(), SendError> {
        let read_err = |op: &str, e: std::io::Error| {
            SendError::Read(format!("{op} {}: {e}", self.abs.display()))
        };
        let mut file = tokio::fs::File::open(self.abs)
            .await
            .map_err(|e| read_err("open", e))?;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(m.sent))
            .await
            .map_err(|e| read_err("seek", e))?;
        while m.sent < self.local_len && m.data_in_flight < 64 {
            let want = ((self.local_len - m.sent) as usize).min(CHUNK_BYTES);
            budget.take(want).await;
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| read_err("read", e))?;
            let msg = Message::SegmentData {
                key: self.key.clone(),
                offset: m.sent,
                data: buf.into(),
            };
            crate::proto::write_message(writer, &msg)
                .await
                .map_err(|e| SendError::Peer(e.into()))?;
            m.sent += want as u64;
            m.data_in_flight += 1;
            m.unacked_since_ms.get_or_insert_with(now_ms);
            with_status(status, |s| {
                if let Some(p) = s.peers.get_mut(peer) {
                    p.bytes_sent += want as u64;
                }
            });
        }
        Ok(())
    }
}

/// Segment `row`'s file cannot be read: it waits (a stall, alarmed after `stall_alarm_ms`), tried
/// again on every pass.
fn segment_unreadable(
    status: &SharedStatus,
    peer: &str,
    row: &SegmentRow,
    m: &mut Mirror,
    error: &str,
) {
    let since_ms = *m.sealed_seen_ms.get_or_insert_with(now_ms);
    tracing::debug!(path = %row.path, error, "segment file unreadable");
    stall::observe(
        status,
        &format!("segment:{}", row.path),
        stall::Observed {
            kind: "segment_unreadable",
            peer: Some(peer),
            segment: Some(&row.path),
            detail: &format!("cannot read this node's file: {error}"),
            since_ms,
        },
    );
}

/// Since when segment `row` has waited on the standby (bytes sent but not acknowledged, or sealed here
/// but its seal not acknowledged), noted as a stall; `None` (and the stall cleared) if it does not wait.
fn segment_waiting(
    status: &SharedStatus,
    peer: &str,
    row: &SegmentRow,
    m: &mut Mirror,
) -> Option<i64> {
    let key = format!("segment:{}", row.path);
    if row.state == SegmentState::Sealed {
        m.sealed_seen_ms.get_or_insert_with(now_ms);
    }
    let Some(since_ms) = m.unacked_since_ms.or(m.sealed_seen_ms) else {
        stall::clear(status, &key);
        return None;
    };
    let detail = if row.state == SegmentState::Sealed {
        format!(
            "sealed here ({} bytes), not sealed on the standby ({} bytes acknowledged{})",
            row.size_bytes,
            m.acked,
            if m.seal_sent { ", seal sent" } else { "" }
        )
    } else {
        format!("{} bytes sent, {} acknowledged", m.sent, m.acked)
    };
    Some(stall::observe(
        status,
        &key,
        stall::Observed {
            kind: "segment_stuck",
            peer: Some(peer),
            segment: Some(&row.path),
            detail: &detail,
            since_ms,
        },
    ))
}

/// A token bucket for the optional bandwidth cap.
struct Budget {
    bytes_per_s: u64,
    available: f64,
    last: Instant,
}

impl Budget {
    fn new(bytes_per_s: u64) -> Self {
        Budget {
            bytes_per_s,
            available: bytes_per_s as f64,
            last: Instant::now(),
        }
    }

    async fn take(&mut self, bytes: usize) {
        if self.bytes_per_s == 0 {
            return;
        }
        let rate = self.bytes_per_s as f64;
        self.available = (self.available + self.last.elapsed().as_secs_f64() * rate).min(rate);
        self.last = Instant::now();
        self.available -= bytes as f64;
        if self.available < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.available / rate)).await;
        }
    }
}

/// Periodically re-hashes this node's sealed segments against the signed log's leaves (the catalog rows
/// too; rate-limited); a mismatch is an alarm and a repair request (the good copy is fetched from the
/// standby and verified against the leaf before it replaces the damaged file).
async fn scrub_loop(
    store: Arc<Store>,
    db: Arc<SyncDb>,
    cfg: SyncConfig,
    status: SharedStatus,
    repair: mpsc::UnboundedSender<RepairRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        let store2 = store.clone();
        let node = cfg.node_name.clone();
        let rate = cfg.settings.scrub_bytes_per_s;
        let db2 = db.clone();
        let pass = tokio::task::spawn_blocking(move || {
            store2.scrub_pass_against(Some(node.as_str()), rate, &|row| {
                log_reference(&db2, &node, &row.path)
            })
        })
        .await;
        match pass {
            Ok(Ok((bytes, damaged))) => {
                with_status(&status, |s| {
                    s.scrub_passes += 1;
                    s.scrub_bytes += bytes;
                });
                for (row, detail) in damaged {
                    if reported.insert(format!("{}:{detail}", row.path)) {
                        raise_alarm(&db, "scrub_mismatch", None, Some(&row.path), &detail);
                    }
                    if let Some(reference) = repair_reference(&db, &row) {
                        let _ = repair.send(RepairRequest {
                            path: row.path.clone(),
                            reference,
                            cause: RepairCause::Scrub,
                        });
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "scrub pass failed"),
            Err(e) => tracing::warn!(error = %e, "scrub task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(cfg.settings.scrub_interval_ms)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
