//! Recordings flow back: the segments a standby records for a stream it took over (its takeover
//! segments: catalog `node` = the standby, a camera owned by a primary it protects) are mirrored to
//! that owner, fragment by fragment while they are written, with the same guarantees as the primary's
//! mirroring to its standby. The standby is their origin: it keeps a signed, hash-chained log of them
//! per owner (so an owner learns nothing of another's cameras) and runs the primary's mirroring loop
//! ([`super::primary::mirror`]); the owner receives them as a standby does ([`super::standby::receive`]:
//! write-once, contradictions refused into quarantine, seals held until logged, its quota, alarms).
//!
//! Only with `[arbiter]` in the cluster file (without it a standby records nothing). The owner's agent
//! opens the connection, to the standby's sync address (the one it mirrors to; a primary has no
//! listening address), with `Hello { role: standby }` (protocol version 3); the standby answers with
//! `HelloAck` and the roles are reversed from there on. Each side keeps this direction's status
//! apart (`flowback` in `sync-status.json`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};

use super::primary::{self, Log, Route};
use super::standby::{self, Shared};
use super::{
    now_ms, peer_disconnected, stall, with_status, AgentError, AgentStatus, Conn, SharedStatus,
    HANDSHAKE_TIMEOUT,
};
use crate::config::{Peer, SyncConfig};
use crate::identity::{NodeIdentity, PeerPins};
use crate::proto::{Message, Role, PROTOCOL_VERSION};
use crate::syncdb::SyncDb;

/// A new status of one flow-back side (`origin` or `receiver`) with an entry per peer.
fn side_status(cfg: &SyncConfig, role: &str, peers: &[&str]) -> SharedStatus {
    let mut s = AgentStatus {
        node: cfg.node_name.clone(),
        role: role.to_owned(),
        stall_alarm_ms: cfg.settings.stall_alarm_ms,
        ..AgentStatus::default()
    };
    for p in peers {
        s.peers.entry((*p).to_owned()).or_default().node = (*p).to_owned();
    }
    Arc::new(Mutex::new(s))
}

/// The standby as origin of its takeover segments: per owner, its streams and its flow-back log.
pub struct Origin {
    cfg: SyncConfig,
    id: NodeIdentity,
    /// Per owner (a primary this standby protects): the owner as the receiving peer (its streams
    /// are the ones that flow back) and its log, used by one session at a time.
    owners: HashMap<String, (Peer, tokio::sync::Mutex<Log>)>,
    /// This direction's status (peers = owners).
    pub(super) status: SharedStatus,
}

impl Origin {
    /// Loads the flow-back log of every primary `cfg` protects.
    pub(super) fn load(
        cfg: &SyncConfig,
        id: &NodeIdentity,
        db: &SyncDb,
    ) -> Result<Origin, AgentError> {
        let mut owners = HashMap::new();
        for p in &cfg.peers {
            let log = Log::load_flowback(&cfg.node_name, &p.pins.node, p.streams.clone(), db)?;
            owners.insert(
                p.pins.node.clone(),
                (p.clone(), tokio::sync::Mutex::new(log)),
            );
        }
        let names: Vec<&str> = cfg.peers.iter().map(|p| p.pins.node.as_str()).collect();
        Ok(Origin {
            cfg: cfg.clone(),
            id: id.clone(),
            owners,
            status: side_status(cfg, "origin", &names),
        })
    }
}

/// Standby side: the owner `peer` connected to receive its takeover segments (its `Hello` read and
/// checked): `HelloAck`, what the owner holds, then the primary's mirroring loop over this
/// connection, with this standby's flow-back log of that owner.
pub(super) async fn serve_origin<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    origin: &Origin,
    peer: &PeerPins,
    mut conn: Conn<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let Some((owner, log)) = origin.owners.get(&peer.node) else {
        return Err(AgentError::Peer(format!(
            "{} is not protected here",
            peer.node
        )));
    };
    conn.send(&Message::HelloAck {
        protocol_version: PROTOCOL_VERSION,
        node: origin.cfg.node_name.clone(),
    })
    .await?;
    let view = super::history::receive_standby_state(&mut conn).await?;
    // A reconnecting owner waits for its previous session to end (its connection failing).
    let mut log = log.lock().await;
    tracing::info!(owner = %peer.node, "flow-back: owner connected");
    let route = Route {
        cfg: &origin.cfg,
        id: &origin.id,
        peer: owner,
        store: &shared.store,
        db: &shared.db,
        status: &origin.status,
        writes_status: false,
    };
    // Takeover segments are found by the loop's tick; nothing is repaired from the owner.
    let wake = Notify::new();
    let (_repairs, mut no_repairs) = mpsc::unbounded_channel();
    let result = primary::mirror(
        &route,
        conn,
        view,
        &mut log,
        &wake,
        &mut no_repairs,
        &mut shutdown,
    )
    .await;
    peer_disconnected(&origin.status, &peer.node, &result);
    result
}

/// Stale staging copies of the standby's segments are looked for this often on the owner.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

/// Primary side: receives its standby's takeover segments of this node's cameras until `shutdown`,
/// reconnecting with back-off. `store` and `db` are the primary agent's own; the standby's unverified
/// bytes here count against `mirror_quota_bytes`.
pub async fn receive_loop(
    cfg: SyncConfig,
    id: NodeIdentity,
    store: Arc<store::Store>,
    db: Arc<SyncDb>,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(standby) = cfg.peers.first() else {
        return;
    };
    // The standby may send back only this node's own streams.
    let standby = Peer {
        streams: cfg.own_streams.clone(),
        ..standby.clone()
    };
    let name = standby.pins.node.clone();
    let side = side_status(&cfg, "receiver", &[name.as_str()]);
    with_status(&status, |s| s.flowback_shared = Some(side.clone()));
    store.set_mirror_quota(cfg.settings.mirror_quota_bytes);
    let shared = Arc::new(Shared::receiving(
        id,
        std::slice::from_ref(&standby),
        store,
        db,
        side.clone(),
        None,
    ));
    tokio::spawn(expire_loop(
        shared.clone(),
        cfg.settings.staging_expire_ms,
        shutdown.clone(),
    ));
    // The standby's copies are scrubbed here as a standby scrubs a primary's (this node's own
    // segments are the primary side's), and a damaged one is repaired from the standby.
    if cfg.settings.scrub_interval_ms > 0 {
        tokio::spawn(standby::scrub_loop(
            shared.clone(),
            Some(name.clone()),
            cfg.settings.scrub_interval_ms,
            cfg.settings.scrub_bytes_per_s,
            shutdown.clone(),
        ));
    }
    let mut backoff = base::job::Backoff::new(500, 5000);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = Instant::now();
        let result = receive_once(&shared, &standby, shutdown.clone()).await;
        peer_disconnected(&side, &name, &result);
        let error = match &result {
            Ok(()) if *shutdown.borrow() => break,
            Ok(()) => "the standby closed the connection".to_owned(),
            Err(e) => e.to_string(),
        };
        stall::observe(
            &side,
            &format!("link:{name}"),
            stall::Observed {
                kind: "standby_unreachable",
                peer: Some(&name),
                segment: None,
                detail: &format!("no flow-back session with the standby: {error}"),
                since_ms: now_ms(),
            },
        );
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        let delay = backoff.next_delay_ms(base::job::random_jitter_unit());
        tracing::warn!(peer = %name, %error, retry_in_ms = delay, "flow-back connection ended");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One flow-back session with the standby: connect, `Hello { role: standby }`, then receive.
async fn receive_once(
    shared: &Shared,
    standby: &Peer,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let tls = primary::connect(&shared.id, standby).await?;
    let mut conn = Conn::new(tls);
    conn.send(&Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        node: shared.node.clone(),
        role: Role::Standby,
        software: format!("nvr-sync {}", env!("CARGO_PKG_VERSION")),
    })
    .await?;
    match conn.recv(HANDSHAKE_TIMEOUT).await? {
        Some(Message::HelloAck { node, .. }) if node == standby.pins.node => {}
        Some(Message::Error { code, message }) => {
            return Err(AgentError::Peer(format!(
                "standby refused flow-back ({code:?}): {message}"
            )))
        }
        other => {
            return Err(AgentError::Peer(format!(
                "expected HelloAck from {}, got {other:?}",
                standby.pins.node
            )))
        }
    }
    standby::receive(shared, &standby.pins, conn, shutdown).await
}

/// Moves the standby's staging copies idle for `staging_expire_ms` to quarantine (as a standby does).
async fn expire_loop(
    shared: Arc<Shared>,
    staging_expire_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        standby::expire_staging(&shared, staging_expire_ms);
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
