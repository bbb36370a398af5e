//! Standby side: accept pinned primaries, store their segments write-once, verify every signed tree head
//! against the history already held, countersign what is consistent, refuse and quarantine the rest.
//!
//! What a primary (honest, broken or compromised) can do here: add new segments and extend its own log.
//! What it cannot do: change bytes already received, replace a sealed copy, rewrite or fork its logged
//! history, delete anything (the standby deletes only by its own retention), or act for another primary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::syncdb::SyncDb;
use store::{MirrorError, SegmentState, Store};
use tokio::sync::watch;

use super::{
    from_json, io_err, now_ms, raise_alarm, stall, to_json, with_status, write_status, AgentError,
    Conn, SharedStatus, CHUNK_BYTES, HANDSHAKE_TIMEOUT, PEER_SILENCE,
};
use crate::config::SyncConfig;
use crate::identity::{self, NodeIdentity, PeerPins};
use crate::merkle::{
    check_leaves, check_new_head, Countersignature, HeadCheck, MerkleTree, SegmentLeaf,
    SignedTreeHead,
};
use crate::proto::{ErrorCode, Holding, Message, Role, SegmentInfo, SegmentKey, PROTOCOL_VERSION};

mod repair;
mod sealed;

/// What the standby holds of one primary's log.
#[derive(Default)]
struct OriginLog {
    loaded: bool,
    tree: MerkleTree,
    head: Option<SignedTreeHead>,
    /// Logged sha256 per segment path.
    logged: HashMap<String, [u8; 32]>,
}

type Origins = Arc<Mutex<HashMap<String, OriginLog>>>;

struct Shared {
    node: String,
    id: NodeIdentity,
    pins: Vec<PeerPins>,
    store: Arc<Store>,
    db: Arc<SyncDb>,
    origins: Origins,
    status: SharedStatus,
    /// Per primary, the streams (`camera`, `main`/`sub`) the cluster file gives it.
    streams: HashMap<String, std::collections::BTreeSet<(String, String)>>,
    /// Per connected primary, where the scrub sends damaged copies to repair from it.
    repair_queues: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<store::SegmentRow>>>,
}

/// Runs the standby side until `shutdown`.
pub async fn run(
    cfg: SyncConfig,
    id: NodeIdentity,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (store, db) = super::open_storage(&cfg)?;
    store.set_mirror_quota(cfg.mirror_quota_bytes);
    let pins: Vec<PeerPins> = cfg.peers.iter().map(|p| p.pins.clone()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(identity::server_config(&id, &pins)?);
    let Some(listen) = cfg.listen else {
        return Err(AgentError::Peer("standby without listen address".into()));
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(io_err(format!("listen on {listen}")))?;
    tracing::info!(%listen, primaries = pins.len(), "standby listening");
    with_status(&status, |s| {
        s.stall_alarm_ms = cfg.stall_alarm_ms;
        s.node = cfg.node_name.clone();
        s.role = "standby".into();
        for p in &pins {
            s.peers.entry(p.node.clone()).or_default().node = p.node.clone();
        }
    });
    for p in &pins {
        primary_absent(&status, &p.node, "not connected since this agent started");
    }
    let shared = Arc::new(Shared {
        node: cfg.node_name.clone(),
        id,
        pins,
        store,
        db,
        origins: Arc::new(Mutex::new(HashMap::new())),
        status: status.clone(),
        streams: cfg
            .peers
            .iter()
            .map(|p| (p.pins.node.clone(), p.streams.clone()))
            .collect(),
        repair_queues: Mutex::new(HashMap::new()),
    });
    if cfg.scrub_interval_ms > 0 {
        tokio::spawn(scrub_loop(
            shared.clone(),
            cfg.scrub_interval_ms,
            cfg.scrub_bytes_per_s,
            shutdown.clone(),
        ));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                ticks += 1;
                if ticks % EXPIRY_TICKS == 1 {
                    expire_staging(&shared, cfg.staging_expire_ms);
                }
                write_status(&cfg.data_dir, &status, &shared.db)
            }
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::warn!(%addr, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let Some(peer) = identity::peer_of(tls.get_ref().1, &shared.pins) else {
                        tracing::warn!(%addr, "connection without a pinned certificate");
                        return;
                    };
                    let name = peer.node.clone();
                    let result = serve(&shared, peer, Conn::new(tls), shutdown).await;
                    repair_queues(&shared).retain(|_, tx| !tx.is_closed());
                    with_status(&shared.status, |s| {
                        if let Some(p) = s.peers.get_mut(&name) {
                            p.connected = false;
                            if let Err(e) = &result {
                                p.last_error = Some(e.to_string());
                            }
                        }
                    });
                    let ended = match &result {
                        Ok(()) => "connection closed".to_owned(),
                        Err(e) => format!("connection ended: {e}"),
                    };
                    primary_absent(&shared.status, &name, &ended);
                    if let Err(e) = result {
                        tracing::warn!(peer = %name, error = %e, "primary connection ended");
                    }
                });
            }
        }
    }
    write_status(&cfg.data_dir, &status, &shared.db);
    Ok(())
}

/// No session with primary `peer` (yet, or any more): a stall until it connects again. A second
/// connection of the same primary ending while the first goes on is not one: its clear comes first.
fn primary_absent(status: &SharedStatus, peer: &str, why: &str) {
    let connected = with_status(status, |s| s.peers.get(peer).is_some_and(|p| p.connected));
    if connected {
        return;
    }
    stall::observe(
        status,
        &format!("link:{peer}"),
        stall::Observed {
            kind: "primary_silent",
            peer: Some(peer),
            segment: None,
            detail: &format!("no session with the primary: {why}"),
            since_ms: now_ms(),
        },
    );
}

/// A local storage error stops mirroring from `origin`: a stall until an append succeeds again.
fn store_failed(status: &SharedStatus, origin: &str, path: &str, error: &str) {
    stall::observe(
        status,
        &format!("store:{origin}"),
        stall::Observed {
            kind: "store_error",
            peer: Some(origin),
            segment: Some(path),
            detail: &format!("cannot store what the primary sends: {error}"),
            since_ms: now_ms(),
        },
    );
}

/// The primary's heads are refused: its new segments are not verified, a stall until one is accepted.
fn heads_refused(status: &SharedStatus, origin: &str, reason: &str) {
    stall::observe(
        status,
        &format!("head:{origin}"),
        stall::Observed {
            kind: "heads_refused",
            peer: Some(origin),
            segment: None,
            detail: &format!("the primary's heads are refused: {reason}"),
            since_ms: now_ms(),
        },
    );
}

/// Stale staging copies are looked for every this many status ticks (seconds).
const EXPIRY_TICKS: u64 = 5;

/// Moves every primary's staging copies idle for `max_idle_ms` to quarantine, with an alarm each.
fn expire_staging(shared: &Shared, max_idle_ms: u64) {
    for pins in &shared.pins {
        let origin = &pins.node;
        let r =
            tokio::task::block_in_place(|| shared.store.mirror_expire_staging(origin, max_idle_ms));
        match r {
            Ok(expired) => {
                for e in expired {
                    raise_alarm(
                        &shared.db,
                        "staging_expired",
                        Some(origin),
                        Some(&e.path),
                        &format!(
                            "nothing appended for {max_idle_ms} ms: the {} bytes held were kept in {} and the path is closed",
                            e.bytes,
                            e.quarantine_path.display()
                        ),
                    );
                }
            }
            Err(e) => tracing::warn!(origin, error = %e, "cannot expire stale staging copies"),
        }
    }
}

fn repair_queues(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::mpsc::UnboundedSender<store::SegmentRow>>>
{
    match shared.repair_queues.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn lock(origins: &Origins) -> std::sync::MutexGuard<'_, HashMap<String, OriginLog>> {
    match origins.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn load_origin(shared: &Shared, origin: &str) -> Result<(), AgentError> {
    let mut origins = lock(&shared.origins);
    let log = origins.entry(origin.to_owned()).or_default();
    if log.loaded {
        return Ok(());
    }
    for (bytes, hash) in shared.db.leaves(origin)? {
        log.tree.push(hash);
        if let Ok(leaf) = SegmentLeaf::decode(&bytes) {
            log.logged.insert(leaf.path, leaf.sha256);
        }
    }
    if let Some(json) = shared.db.latest_head(origin)? {
        log.head = serde_json::from_str(&json).ok();
    }
    log.loaded = true;
    Ok(())
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    peer: PeerPins,
    mut conn: Conn<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let origin = peer.node.clone();
    match conn.recv(HANDSHAKE_TIMEOUT).await? {
        Some(Message::Hello {
            protocol_version,
            node,
            role,
            ..
        }) => {
            if protocol_version != PROTOCOL_VERSION {
                conn.send(&Message::Error {
                    code: ErrorCode::VersionMismatch,
                    message: format!("protocol {protocol_version} not supported (this standby speaks {PROTOCOL_VERSION})"),
                })
                .await?;
                return Err(AgentError::Peer("protocol version mismatch".into()));
            }
            if node != origin || role != Role::Primary {
                raise_alarm(
                    &shared.db,
                    "impersonation",
                    Some(&origin),
                    None,
                    &format!("certificate of {origin} said it is {node} ({role:?})"),
                );
                conn.send(&Message::Error {
                    code: ErrorCode::Unauthorized,
                    message: "certificate and Hello disagree".into(),
                })
                .await?;
                return Err(AgentError::Peer("certificate and Hello disagree".into()));
            }
        }
        other => return Err(AgentError::Peer(format!("expected Hello, got {other:?}"))),
    }
    conn.send(&Message::HelloAck {
        protocol_version: PROTOCOL_VERSION,
        node: shared.node.clone(),
    })
    .await?;
    tokio::task::block_in_place(|| load_origin(shared, &origin))?;
    let holdings: Vec<Holding> =
        tokio::task::block_in_place(|| shared.store.mirror_holdings(&origin))?
            .into_iter()
            .map(|h| Holding {
                key: SegmentKey {
                    origin_node: origin.clone(),
                    path: h.path,
                },
                bytes_held: h.bytes_held,
                sealed_sha256: h.sealed_sha256,
            })
            .collect();
    let head = lock(&shared.origins)
        .get(&origin)
        .and_then(|l| l.head.as_ref().map(to_json));
    conn.send(&Message::StandbyState { holdings, head }).await?;
    tracing::info!(peer = %origin, "primary connected");
    with_status(&shared.status, |s| {
        if let Some(p) = s.peers.get_mut(&origin) {
            p.connected = true;
            p.last_connected_ms = Some(now_ms());
            p.last_error = None;
        }
    });
    stall::clear(&shared.status, &format!("link:{origin}"));

    let mut infos: HashMap<String, SegmentInfo> = HashMap::new();
    // Appended but not yet flushed: their acks go out after one fdatasync per file, when no further
    // message is waiting, before any other message is handled, or when enough bytes piled up.
    let mut unsynced = Unsynced::default();
    let mut waiting = sealed::Waiting::default();
    let mut repairs = repair::Repairs::default();
    let (repair_tx, mut repair_rx) = tokio::sync::mpsc::unbounded_channel();
    repair_queues(shared).insert(origin.clone(), repair_tx);
    loop {
        let msg = if unsynced.acks.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                Some(row) = repair_rx.recv() => {
                    repair::request(&mut conn, &mut repairs, &origin, row).await?;
                    continue;
                }
                m = conn.recv(PEER_SILENCE) => m?,
            }
        } else {
            match conn.try_recv() {
                Some(m) => m?,
                None => {
                    unsynced.flush(shared, &mut conn, &origin).await?;
                    continue;
                }
            }
        };
        let Some(msg) = msg else {
            unsynced.flush(shared, &mut conn, &origin).await?;
            return Ok(());
        };
        if !matches!(msg, Message::SegmentData { .. }) {
            unsynced.flush(shared, &mut conn, &origin).await?;
        }
        match msg {
            Message::SegmentOpen { key, info } => {
                if refuse_foreign(shared, &mut conn, &origin, &key).await?
                    || refuse_unknown_stream(shared, &mut conn, &origin, &key).await?
                {
                    continue;
                }
                infos.insert(key.path, info);
            }
            Message::SegmentData { key, offset, data } => {
                if refuse_foreign(shared, &mut conn, &origin, &key).await?
                    || refuse_unknown_stream(shared, &mut conn, &origin, &key).await?
                {
                    continue;
                }
                with_status(&shared.status, |s| {
                    if let Some(p) = s.peers.get_mut(&origin) {
                        p.bytes_received += data.len() as u64;
                    }
                });
                let r = tokio::task::block_in_place(|| {
                    shared
                        .store
                        .mirror_append(&origin, &key.path, offset, &data, false)
                });
                if r.is_ok() {
                    stall::clear(&shared.status, &format!("store:{origin}"));
                    stall::clear(&shared.status, &format!("quota:{origin}"));
                }
                match r {
                    Ok(held) | Err(MirrorError::OffsetGap { held, .. }) => {
                        unsynced.push(key, held, data.len());
                        if unsynced.bytes >= SYNC_BATCH_BYTES {
                            unsynced.flush(shared, &mut conn, &origin).await?;
                        }
                    }
                    Err(MirrorError::Storage(e)) => {
                        store_failed(&shared.status, &origin, &key.path, &e.to_string());
                        return Err(e.into());
                    }
                    Err(e @ MirrorError::QuotaExceeded { .. }) => {
                        unsynced.flush(shared, &mut conn, &origin).await?;
                        let reason = e.to_string();
                        over_quota(&shared.status, &origin, &key.path, &reason);
                        refuse(
                            shared,
                            &mut conn,
                            &origin,
                            Some(key),
                            "quota_exceeded",
                            &reason,
                        )
                        .await?
                    }
                    Err(e) => {
                        unsynced.flush(shared, &mut conn, &origin).await?;
                        refuse(
                            shared,
                            &mut conn,
                            &origin,
                            Some(key),
                            "refused_data",
                            &e.to_string(),
                        )
                        .await?
                    }
                }
            }
            Message::SegmentSealed {
                key,
                size_bytes,
                sha256,
                end_ms,
                frames,
                leaf_index: _,
            } => {
                let seal = sealed::Seal {
                    key,
                    size_bytes,
                    sha256,
                    end_ms,
                    frames,
                };
                sealed::handle(shared, &mut conn, &origin, &infos, &mut waiting, seal).await?;
            }
            Message::TreeHead {
                head,
                consistency_proof,
                leaves,
            } => match accept_head(shared, &peer, &head, &consistency_proof, &leaves) {
                Ok(cs) => {
                    stall::clear(&shared.status, &format!("head:{origin}"));
                    conn.send(&Message::HeadAccepted {
                        countersignature: cs,
                    })
                    .await?;
                    sealed::release(shared, &mut conn, &origin, &infos, &mut waiting).await?;
                }
                Err(reason) => {
                    heads_refused(&shared.status, &origin, &reason);
                    refuse(shared, &mut conn, &origin, None, "head_refused", &reason).await?
                }
            },
            Message::FetchList {
                camera,
                start_ms,
                end_ms,
                ..
            } => {
                send_listing(
                    shared,
                    &mut conn,
                    &origin,
                    camera.as_deref(),
                    start_ms,
                    end_ms,
                )
                .await?;
            }
            Message::FetchRequest { key, offset, len } => {
                if refuse_foreign(shared, &mut conn, &origin, &key).await? {
                    continue;
                }
                send_file(shared, &mut conn, key, offset, len).await?;
            }
            Message::FetchData {
                key,
                offset,
                data,
                last,
            } => repair::on_data(shared, &mut repairs, &origin, &key, offset, &data, last),
            Message::Refused {
                key: Some(key),
                reason,
            } => repair::on_refused(shared, &mut repairs, &origin, &key, &reason),
            Message::Ping { nonce, sent_ms } => {
                conn.send(&Message::Pong { nonce, sent_ms }).await?
            }
            Message::Pong { .. } => {}
            Message::Error { code, message } => {
                return Err(AgentError::Peer(format!(
                    "primary error {code:?}: {message}"
                )))
            }
            other => tracing::debug!(?other, "unexpected message from primary"),
        }
    }
}

/// Appended bytes are made durable and acknowledged at least this often (in bytes received).
const SYNC_BATCH_BYTES: usize = 16 << 20;

/// Appends not yet flushed to disk, with the acknowledgements they are owed, in arrival order.
#[derive(Default)]
struct Unsynced {
    acks: Vec<(SegmentKey, u64)>,
    bytes: usize,
}

impl Unsynced {
    fn push(&mut self, key: SegmentKey, held: u64, bytes: usize) {
        self.acks.push((key, held));
        self.bytes += bytes;
    }

    /// One `fdatasync` per staging file, then every owed `Ack` in order.
    async fn flush<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
        &mut self,
        shared: &Shared,
        conn: &mut Conn<S>,
        origin: &str,
    ) -> Result<(), AgentError> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let mut paths: Vec<&str> = self.acks.iter().map(|(k, _)| k.path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        tokio::task::block_in_place(|| {
            paths
                .iter()
                .try_for_each(|p| match shared.store.mirror_sync(origin, p) {
                    Ok(()) => Ok(()),
                    Err(MirrorError::Storage(e)) => Err(AgentError::from(e)),
                    // Paths were checked when their bytes were appended.
                    Err(e) => Err(AgentError::Peer(e.to_string())),
                })
        })?;
        for (key, held) in self.acks.drain(..) {
            conn.send(&Message::Ack {
                key,
                bytes_durable: held,
            })
            .await?;
        }
        self.bytes = 0;
        Ok(())
    }
}

/// A primary may only send segments of the streams the cluster file gives it: an invented camera
/// would otherwise get a retention budget of its own on this node.
async fn refuse_unknown_stream<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    key: &SegmentKey,
) -> Result<bool, AgentError> {
    let stream =
        store::parse_media_path(std::path::Path::new(&key.path)).map(|i| (i.camera, i.stream));
    let known = stream.as_ref().is_some_and(|s| {
        shared
            .streams
            .get(origin)
            .is_some_and(|streams| streams.contains(s))
    });
    if known {
        return Ok(false);
    }
    let reason = match stream {
        Some((camera, stream)) => {
            format!("{origin} has no stream {camera}/{stream} in the cluster file")
        }
        None => format!("{:?} is not a media segment path", key.path),
    };
    refuse(
        shared,
        conn,
        origin,
        Some(key.clone()),
        "unknown_stream",
        &reason,
    )
    .await?;
    Ok(true)
}

/// The primary's unverified bytes here reached the quota: a stall until an append succeeds again.
fn over_quota(status: &SharedStatus, origin: &str, path: &str, reason: &str) {
    stall::observe(
        status,
        &format!("quota:{origin}"),
        stall::Observed {
            kind: "quota_exceeded",
            peer: Some(origin),
            segment: Some(path),
            detail: reason,
            since_ms: now_ms(),
        },
    );
}

/// A primary may only send its own segments.
async fn refuse_foreign<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    key: &SegmentKey,
) -> Result<bool, AgentError> {
    if key.origin_node == origin {
        return Ok(false);
    }
    let reason = format!("{origin} sent a segment of {}", key.origin_node);
    refuse(
        shared,
        conn,
        origin,
        Some(key.clone()),
        "foreign_segment",
        &reason,
    )
    .await?;
    Ok(true)
}

async fn refuse<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    key: Option<SegmentKey>,
    kind: &str,
    reason: &str,
) -> Result<(), AgentError> {
    raise_alarm(
        &shared.db,
        kind,
        Some(origin),
        key.as_ref().map(|k| k.path.as_str()),
        reason,
    );
    conn.send(&Message::Refused {
        key,
        reason: reason.to_owned(),
    })
    .await
}

/// How far ahead of the standby's clock a head's timestamp may be. Heads must not go back in time, so
/// one from the far future would block every honest head after it. Nodes keep their clocks within
/// this (NTP) of each other.
pub const MAX_HEAD_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;

/// Verifies a new head (signature, chain, consistency, leaves) and countersigns it.
fn accept_head(
    shared: &Shared,
    peer: &PeerPins,
    head: &serde_json::Value,
    proof: &[String],
    leaves: &[serde_json::Value],
) -> Result<serde_json::Value, String> {
    let origin = &peer.node;
    let new: SignedTreeHead = from_json(head, "tree head").map_err(|e| e.to_string())?;
    let ahead_ms = new.head.timestamp_ms - now_ms();
    if ahead_ms > MAX_HEAD_CLOCK_AHEAD_MS {
        return Err(format!(
            "head timestamp {} is {ahead_ms} ms ahead of this node's clock (at most {MAX_HEAD_CLOCK_AHEAD_MS} ms)",
            new.head.timestamp_ms
        ));
    }
    let proof: Vec<[u8; 32]> = proof
        .iter()
        .map(|h| base::hex::decode_32(h).ok_or_else(|| format!("bad proof hash {h:?}")))
        .collect::<Result<_, _>>()?;
    let leaves: Vec<SegmentLeaf> = leaves
        .iter()
        .map(|l| from_json(l, "leaf").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if new.head.log_node != *origin {
        return Err(format!(
            "head of log {:?} sent by {origin}",
            new.head.log_node
        ));
    }
    let mut origins = lock(&shared.origins);
    let log = origins.entry(origin.clone()).or_default();
    match check_new_head(log.head.as_ref(), &new, &proof, &peer.signing_public_key)
        .map_err(|e| e.to_string())?
    {
        HeadCheck::AlreadyHeld => {
            let hash = new.head.head_hash();
            let stored = shared.db.heads(origin).map_err(|e| e.to_string())?;
            let cs = stored
                .iter()
                .rev()
                .find(|h| h.head_hash == hash)
                .and_then(|h| h.countersignature_json.as_deref())
                .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
            return cs.ok_or_else(|| "head held without countersignature".to_owned());
        }
        HeadCheck::First | HeadCheck::Extends { .. } => {}
    }
    if leaves.iter().any(|l| l.origin_node != *origin) {
        return Err("leaf of another node in this log".into());
    }
    // One leaf per path, ever: a second one (even with the same hash) would become restore's answer
    // once retention deleted the first copy.
    let mut new_paths = std::collections::HashSet::new();
    for leaf in &leaves {
        if log.logged.contains_key(&leaf.path) || !new_paths.insert(leaf.path.as_str()) {
            return Err(format!(
                "leaf for {}: the log already holds a leaf for this path",
                leaf.path
            ));
        }
    }
    let hashes: Vec<[u8; 32]> = leaves.iter().map(|l| l.leaf_hash()).collect();
    check_leaves(&log.tree, &hashes, &new.head).map_err(|e| e.to_string())?;
    // A leaf must not contradict a sealed copy held here.
    for leaf in &leaves {
        if let Ok(Some(row)) = shared.store.sealed_segment_by_path(&leaf.path) {
            if row.node == *origin
                && row.state == SegmentState::Sealed
                && row.sha256.as_deref() != Some(base::hex::encode(&leaf.sha256).as_str())
            {
                return Err(format!(
                    "leaf for {} says sha256 {} but the held copy is {}",
                    leaf.path,
                    base::hex::encode(&leaf.sha256),
                    row.sha256.as_deref().unwrap_or("-")
                ));
            }
        }
    }
    let base = log.tree.len();
    for (i, leaf) in leaves.iter().enumerate() {
        shared
            .db
            .append_leaf(
                origin,
                base + i as u64,
                &leaf.encode(),
                &hashes[i],
                &leaf.path,
            )
            .map_err(|e| e.to_string())?;
        log.tree.push(hashes[i]);
        log.logged.insert(leaf.path.clone(), leaf.sha256);
    }
    let json = serde_json::to_string(&new).map_err(|e| e.to_string())?;
    let hash = new.head.head_hash();
    shared
        .db
        .store_head(origin, new.head.tree_size, &hash, &json, now_ms())
        .map_err(|e| e.to_string())?;
    let cs = Countersignature::create(&shared.node, &new.head, &|m| shared.id.sign(m));
    let cs_json = serde_json::to_string(&cs).map_err(|e| e.to_string())?;
    shared
        .db
        .set_countersignature(origin, &hash, &cs_json)
        .map_err(|e| e.to_string())?;
    let size = new.head.tree_size;
    log.head = Some(new);
    drop(origins);
    with_status(&shared.status, |s| {
        if let Some(p) = s.peers.get_mut(origin) {
            p.last_head_size = Some(size);
            p.last_head_ms = Some(now_ms());
        }
    });
    Ok(to_json(&cs))
}

/// For restore: the latest head with every leaf, then the sealed segments matching the filter.
async fn send_listing<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    camera: Option<&str>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
) -> Result<(), AgentError> {
    let (head, leaves) = {
        let origins = lock(&shared.origins);
        let head = origins
            .get(origin)
            .and_then(|l| l.head.as_ref().map(to_json))
            .unwrap_or(serde_json::Value::Null);
        (head, shared.db.leaves(origin)?)
    };
    let leaves_json: Vec<serde_json::Value> = leaves
        .iter()
        .filter_map(|(b, _)| SegmentLeaf::decode(b).ok())
        .map(|l| to_json(&l))
        .collect();
    conn.send(&Message::TreeHead {
        head,
        consistency_proof: Vec::new(),
        leaves: leaves_json,
    })
    .await?;
    let rows = shared
        .store
        .catalog()
        .segments_in_state(SegmentState::Sealed)?;
    let segments = rows
        .into_iter()
        .filter(|r| r.node == origin)
        .filter(|r| start_ms.is_none_or(|s| r.end_ms > s) && end_ms.is_none_or(|e| r.start_ms < e))
        .filter(|r| camera.is_none_or(|c| r.path.split('/').nth(1) == Some(c)))
        .map(|r| {
            serde_json::json!({
                "path": r.path, "start_ms": r.start_ms, "end_ms": r.end_ms,
                "size_bytes": r.size_bytes, "sha256": r.sha256, "frames": r.frames,
            })
        })
        .collect();
    conn.send(&Message::FetchListReply { segments }).await
}

async fn send_file<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    key: SegmentKey,
    offset: u64,
    len: u64,
) -> Result<(), AgentError> {
    let row = shared.store.sealed_segment_by_path(&key.path)?;
    let Some(row) = row.filter(|r| r.node == key.origin_node && r.state == SegmentState::Sealed)
    else {
        return conn
            .send(&Message::Refused {
                key: Some(key),
                reason: "no sealed copy here".into(),
            })
            .await;
    };
    let path = shared.store.absolute_path(&row.path);
    let data = tokio::fs::read(&path)
        .await
        .map_err(io_err(format!("read {}", path.display())))?;
    let start = (offset as usize).min(data.len());
    let end = (offset.saturating_add(len) as usize).min(data.len());
    let mut pos = start;
    loop {
        let next = (pos + CHUNK_BYTES).min(end);
        let last = next == end;
        conn.send(&Message::FetchData {
            key: key.clone(),
            offset: pos as u64,
            data: bytes::Bytes::copy_from_slice(&data[pos..next]),
            last,
        })
        .await?;
        pos = next;
        if last {
            return Ok(());
        }
    }
}

/// Re-hashes every sealed copy held here (mirrored and own) against the catalog, whose hashes were
/// verified against the primaries' logs when the copies were sealed; a mismatch (bit rot, tampering on
/// the standby itself) is an alarm, raised once per segment, and a mirrored copy is repaired from its
/// primary while that is connected and still holds a copy matching the log ([`repair`]).
async fn scrub_loop(
    shared: Arc<Shared>,
    interval_ms: u64,
    bytes_per_s: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reported = std::collections::HashSet::new();
    loop {
        let store = shared.store.clone();
        match tokio::task::spawn_blocking(move || store.scrub_pass(None, bytes_per_s)).await {
            Ok(Ok((bytes, damaged))) => {
                with_status(&shared.status, |s| {
                    s.scrub_passes += 1;
                    s.scrub_bytes += bytes;
                });
                for (row, detail) in damaged {
                    if reported.insert(row.path.clone()) {
                        raise_alarm(
                            &shared.db,
                            "scrub_mismatch",
                            Some(&row.node),
                            Some(&row.path),
                            &detail,
                        );
                    }
                    // A mirrored copy: repaired from its primary while connected (each pass retries).
                    if let Some(tx) = repair_queues(&shared).get(&row.node) {
                        let _ = tx.send(row);
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "scrub pass failed"),
            Err(e) => tracing::warn!(error = %e, "scrub task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(interval_ms)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
