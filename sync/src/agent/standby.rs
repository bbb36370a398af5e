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

use super::preauth::{AcceptBackoff, PreAuth};
pub use super::standby_log::MAX_HEAD_CLOCK_AHEAD_MS;
use super::standby_log::{
    accept_head, held_seal, load_origin, lock, send_listing, send_standby_state, HeadMessage,
    ListFilter, Origins,
};
use super::{
    io_err, now_ms, peer_disconnected, raise_alarm, stall, with_status, write_status, AgentError,
    Conn, SharedStatus, CHUNK_BYTES, HANDSHAKE_TIMEOUT, PEER_SILENCE,
};
use crate::config::SyncConfig;
use crate::identity::{self, NodeIdentity, PeerPins};
use crate::proto::{
    ErrorCode, Message, Role, SegmentInfo, SegmentKey, FLOWBACK_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

mod repair;
mod sealed;

/// State shared by the standby's connections.
pub(super) struct Shared {
    pub(super) node: String,
    pub(super) id: NodeIdentity,
    pins: Vec<PeerPins>,
    pub(super) store: Arc<Store>,
    pub(super) db: Arc<SyncDb>,
    pub(super) origins: Origins,
    /// Heads are accepted one at a time (their `sync.db` write runs outside `origins`' lock).
    pub(super) accept_lock: tokio::sync::Mutex<()>,
    pub(super) status: SharedStatus,
    /// Per primary, the streams (`camera`, `main`/`sub`) the cluster file gives it.
    streams: HashMap<String, std::collections::BTreeSet<(String, String)>>,
    /// Per connected primary, where the scrub sends damaged copies to repair from it.
    repair_queues: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<store::SegmentRow>>>,
    /// With `[arbiter]`: this standby's takeover segments go back to their owners
    /// ([`super::flowback`]).
    flowback: Option<super::flowback::Origin>,
}

impl Shared {
    /// The receiving side's state: this node (`id`) accepts from each of `peers` the segments of
    /// the streams the peer carries, into `store` and `db`, with status and stalls in `status`.
    pub(super) fn receiving(
        id: NodeIdentity,
        peers: &[crate::config::Peer],
        store: Arc<Store>,
        db: Arc<SyncDb>,
        status: SharedStatus,
        flowback: Option<super::flowback::Origin>,
    ) -> Shared {
        Shared {
            node: id.node.clone(),
            id,
            pins: peers.iter().map(|p| p.pins.clone()).collect(),
            store,
            db,
            origins: Mutex::new(HashMap::new()),
            accept_lock: tokio::sync::Mutex::new(()),
            status,
            streams: peers
                .iter()
                .map(|p| (p.pins.node.clone(), p.streams.clone()))
                .collect(),
            repair_queues: Mutex::new(HashMap::new()),
            flowback,
        }
    }
}

/// Runs the standby side until `shutdown`.
pub async fn run(
    cfg: SyncConfig,
    id: NodeIdentity,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (store, db) = super::open_storage(&cfg)?;
    store.set_mirror_quota(cfg.settings.mirror_quota_bytes);
    let dedup_task = super::start_dedup(&store, &status, shutdown.clone());
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
        s.stall_alarm_ms = cfg.settings.stall_alarm_ms;
        s.node = cfg.node_name.clone();
        s.role = "standby".into();
        for p in &pins {
            s.peers.entry(p.node.clone()).or_default().node = p.node.clone();
        }
    });
    for p in &pins {
        primary_absent(&status, &p.node, "not connected since this agent started");
    }
    let flowback = if cfg.flowback {
        let origin = tokio::task::block_in_place(|| super::flowback::Origin::load(&cfg, &id, &db))?;
        with_status(&status, |s| s.flowback_shared = Some(origin.status.clone()));
        Some(origin)
    } else {
        None
    };
    let shared = Arc::new(Shared::receiving(
        id,
        &cfg.peers,
        store,
        db,
        status.clone(),
        flowback,
    ));
    if cfg.settings.scrub_interval_ms > 0 {
        tokio::spawn(scrub_loop(
            shared.clone(),
            None,
            cfg.settings.scrub_interval_ms,
            cfg.settings.scrub_bytes_per_s,
            shutdown.clone(),
        ));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let preauth = PreAuth::new();
    let mut accept_backoff = AcceptBackoff::default();
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                ticks += 1;
                if ticks % EXPIRY_TICKS == 1 {
                    expire_staging(&shared, cfg.settings.staging_expire_ms);
                }
                write_status(&cfg.data_dir, &status, &shared.db)
            }
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(a) => {
                        accept_backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        // EMFILE and the like: retrying at once would only spin. The oldest
                        // unauthenticated connection goes, freeing a descriptor.
                        let delay = accept_backoff.failed();
                        preauth.make_room();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "accept failed");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => break,
                        }
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                let mut ticket = preauth.enter();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(t)) => t,
                            Ok(Err(e)) => {
                                tracing::warn!(%addr, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(%addr, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = ticket.displaced() => {
                            tracing::warn!(%addr, "unauthenticated connection closed to make room for a newer one");
                            return;
                        }
                    };
                    drop(ticket);
                    let Some(peer) = identity::peer_of(tls.get_ref().1, &shared.pins) else {
                        tracing::warn!(%addr, "connection without a pinned certificate");
                        return;
                    };
                    let name = peer.node.clone();
                    let mut conn = Conn::new(tls);
                    let result = match hello(&shared, &peer, &mut conn).await {
                        Ok(Session::FlowBack) => {
                            if let Some(origin) = &shared.flowback {
                                let r = super::flowback::serve_origin(&shared, origin, &peer, conn, shutdown).await;
                                if let Err(e) = r {
                                    tracing::warn!(peer = %name, error = %e, "flow-back connection ended");
                                }
                            }
                            return;
                        }
                        Ok(Session::Mirror) => receive(&shared, &peer, conn, shutdown).await,
                        Err(e) => Err(e),
                    };
                    repair_queues(&shared).retain(|_, tx| !tx.is_closed());
                    peer_disconnected(&shared.status, &name, &result);
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
    let _ = dedup_task.await;
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
pub(super) fn expire_staging(shared: &Shared, max_idle_ms: u64) {
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

/// What a pinned primary's connection is for, by its `Hello`.
enum Session {
    /// It mirrors its segments here (`role` primary): answered with `HelloAck`, then [`receive`].
    Mirror,
    /// It receives this standby's takeover segments of its cameras (`role` standby, protocol version
    /// 3): [`super::flowback::serve_origin`].
    FlowBack,
}

/// Reads and checks a primary's `Hello`: the protocol version (2 or 3; flow-back needs 3 and a
/// cluster with `[arbiter]`), the node its certificate belongs to, its role.
async fn hello<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    peer: &PeerPins,
    conn: &mut Conn<S>,
) -> Result<Session, AgentError> {
    let origin = &peer.node;
    let Some(Message::Hello {
        protocol_version,
        node,
        role,
        ..
    }) = conn.recv(HANDSHAKE_TIMEOUT).await?
    else {
        return Err(AgentError::Peer("expected Hello".into()));
    };
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol_version) {
        conn.send(&Message::Error {
            code: ErrorCode::VersionMismatch,
            message: format!("protocol {protocol_version} not supported (this standby speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION})"),
        })
        .await?;
        return Err(AgentError::Peer("protocol version mismatch".into()));
    }
    if node != *origin {
        raise_alarm(
            &shared.db,
            "impersonation",
            Some(origin),
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
    match role {
        Role::Primary => {
            conn.send(&Message::HelloAck {
                protocol_version,
                node: shared.node.clone(),
            })
            .await?;
            Ok(Session::Mirror)
        }
        Role::Standby
            if shared.flowback.is_some() && protocol_version >= FLOWBACK_PROTOCOL_VERSION =>
        {
            Ok(Session::FlowBack)
        }
        Role::Standby => {
            let message = if shared.flowback.is_some() {
                format!("flow-back needs protocol {FLOWBACK_PROTOCOL_VERSION}")
            } else {
                "no flow-back without [arbiter] in the cluster file".to_owned()
            };
            conn.send(&Message::Error {
                code: ErrorCode::Unauthorized,
                message: message.clone(),
            })
            .await?;
            Err(AgentError::Peer(message))
        }
    }
}

/// Receives a peer's segments after the handshake (the `Hello` exchange, either way round): sends what
/// is held here (`StandbyState`), then stores what arrives write-once, checks heads and seals, until
/// the connection ends or `shutdown`. A standby receives so from its primaries, and a primary from its
/// standby (flow-back of takeover segments).
pub(super) async fn receive<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    peer: &PeerPins,
    mut conn: Conn<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let peer = peer.clone();
    let origin = peer.node.clone();
    tokio::task::block_in_place(|| load_origin(shared, &origin))?;
    send_standby_state(shared, &mut conn, &origin).await?;
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
                        if unsynced.due() {
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
                epoch,
            } => {
                let seal = sealed::Seal {
                    key,
                    size_bytes,
                    sha256,
                    end_ms,
                    frames,
                    epoch,
                };
                sealed::handle(shared, &mut conn, &origin, &infos, &mut waiting, seal).await?;
            }
            Message::TreeHead {
                head,
                first_leaf,
                consistency_proof,
                leaves,
            } => match accept_head(
                shared,
                &peer,
                HeadMessage {
                    head: &head,
                    first_leaf,
                    proof: &consistency_proof,
                    leaves: &leaves,
                },
            )
            .await
            {
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
                let filter = ListFilter {
                    camera: camera.as_deref(),
                    start_ms,
                    end_ms,
                };
                send_listing(shared, &mut conn, &origin, &filter).await?;
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

/// ... and at least every this many data frames, whatever their size.
const MAX_OWED_ACKS: usize = 1024;

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

    /// Whether the owed acks must be flushed now, though more messages are waiting.
    fn due(&self) -> bool {
        self.bytes >= SYNC_BATCH_BYTES || self.acks.len() >= MAX_OWED_ACKS
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

async fn send_file<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    key: SegmentKey,
    offset: u64,
    len: u64,
) -> Result<(), AgentError> {
    let row = shared.store.sealed_segment_by_path(&key.path)?;
    let row = row.filter(|r| r.node == key.origin_node && r.state == SegmentState::Sealed);
    // A sealed copy, else (for restore) a complete copy whose seal waits for its leaf, up to the
    // sealed size.
    let (path, sealed_size) = match row {
        Some(row) => (shared.store.absolute_path(&row.path), u64::MAX),
        None => match held_seal(shared, &key.origin_node, &key.path) {
            Some(seal) => (
                shared
                    .store
                    .mirror_staging_file(&key.origin_node, &key.path),
                seal.size_bytes,
            ),
            None => {
                return conn
                    .send(&Message::Refused {
                        key: Some(key),
                        reason: "no sealed copy here".into(),
                    })
                    .await
            }
        },
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return conn
                .send(&Message::Refused {
                    key: Some(key),
                    reason: format!("cannot read the sealed copy: {e}"),
                })
                .await
        }
    };
    // Only the bytes asked for are read, a chunk at a time, whatever the file's size.
    let size = file
        .metadata()
        .await
        .map_err(io_err(format!("stat {}", path.display())))?
        .len()
        .min(sealed_size);
    let start = offset.min(size);
    let end = offset.saturating_add(len).min(size);
    tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(start))
        .await
        .map_err(io_err(format!("seek {}", path.display())))?;
    let mut pos = start;
    loop {
        let n = usize::try_from(end - pos).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        let mut buf = vec![0u8; n];
        tokio::io::AsyncReadExt::read_exact(&mut file, &mut buf)
            .await
            .map_err(io_err(format!("read {}", path.display())))?;
        let next = pos + n as u64;
        let last = next == end;
        conn.send(&Message::FetchData {
            key: key.clone(),
            offset: pos,
            data: buf.into(),
            last,
        })
        .await?;
        pos = next;
        if last {
            return Ok(());
        }
    }
}

/// Re-hashes every sealed copy held here (mirrored and own; only those recorded by `node`, if given)
/// against the catalog, whose hashes were verified against the primaries' logs when the copies were
/// sealed; a mismatch (bit rot, tampering on the standby itself) is an alarm, raised once per segment,
/// and a mirrored copy is repaired from its primary while that is connected and still holds a copy
/// matching the log ([`repair`]).
pub(super) async fn scrub_loop(
    shared: Arc<Shared>,
    node: Option<String>,
    interval_ms: u64,
    bytes_per_s: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reported = std::collections::HashSet::new();
    loop {
        let store = shared.store.clone();
        let node = node.clone();
        match tokio::task::spawn_blocking(move || store.scrub_pass(node.as_deref(), bytes_per_s))
            .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Owed acks are bounded in number, not only in bytes: zero-length data frames cannot pile them up.
    #[test]
    fn owed_acks_come_due_by_count_as_well_as_bytes() {
        let key = SegmentKey {
            origin_node: "node-a".into(),
            path: "media/c/main/2026-01-01/20260101T000000000Z_node-a.mp4".into(),
        };
        let mut owed = Unsynced::default();
        let mut pushed = 0usize;
        while !owed.due() && pushed < 1_000_000 {
            owed.push(key.clone(), 0, 0);
            pushed += 1;
        }
        assert!(
            owed.due(),
            "{pushed} zero-length frames owed and still not due"
        );
        assert!(pushed <= MAX_OWED_ACKS);
        let mut owed = Unsynced::default();
        owed.push(key, SYNC_BATCH_BYTES as u64, SYNC_BATCH_BYTES);
        assert!(owed.due(), "due by bytes");
    }
}
