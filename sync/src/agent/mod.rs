//! The running agent: the primary side ([`primary`]) mirrors this node's segments to its standby and
//! keeps the signed log; the standby side ([`standby`]) accepts, verifies and stores them write-once;
//! [`restore`] fetches verified copies back. Shared here: status, alarms, connection plumbing.

pub mod flowback;
mod history;
pub mod preauth;
pub mod primary;
pub mod repair;
pub mod restore;
pub mod stall;
pub mod standby;
mod standby_log;
pub mod tamper;
pub mod watch;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::syncdb::SyncDb;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, WriteHalf};

use crate::proto::{self, Limits, Message, ProtoError};

pub use store::layout::SYNC_STATUS_FILE as STATUS_FILE;
/// Largest media chunk in one `SegmentData`/`FetchData`.
pub const CHUNK_BYTES: usize = 1 << 20;
/// A peer silent for this long is considered gone (pings go every second).
pub const PEER_SILENCE: Duration = Duration::from_secs(15);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("storage: {0}")]
    Storage(#[from] store::StorageError),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("peer: {0}")]
    Peer(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

pub fn io_err(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let op = op.into();
    move |source| AgentError::Io { op, source }
}

/// Lag of one stream's mirroring (primary side).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamLag {
    pub segment: String,
    pub local_bytes: u64,
    pub acked_bytes: u64,
    pub lag_bytes: u64,
    /// How long the stream's oldest waiting segment has waited: un-acknowledged bytes, a seal not yet
    /// acknowledged, or the link down. 0 only when nothing waits.
    pub lag_ms: i64,
    /// Since when that segment (or the link) has waited.
    pub waiting_since_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    pub node: String,
    pub connected: bool,
    pub last_connected_ms: Option<i64>,
    pub last_error: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub segments_sealed_on_peer: u64,
    /// Last tree head accepted (primary: countersigned by the standby; standby: accepted from the primary).
    pub last_head_size: Option<u64>,
    pub last_head_ms: Option<i64>,
    /// Standby: sealed copies of this primary that no accepted head covers yet (verified once one does).
    pub unverified_segments: u64,
    /// Standby: the oldest of them by path, if any.
    pub oldest_unverified: Option<String>,
    /// Receiving side: sealed copies of this peer's segments held here (counted at each connection,
    /// then as they are sealed).
    pub segments_held: u64,
    pub streams: BTreeMap<String, StreamLag>,
}

/// The flow-back direction in the status ([`flowback`]): on a standby (`origin`) its takeover
/// segments going back to each owner, on a primary (`receiver`) those received from its standby.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowbackStatus {
    pub role: String,
    /// Per peer: connection, bytes, last head; on the origin the lag per stream, on the receiver the
    /// segments held and unverified.
    pub peers: BTreeMap<String, PeerStatus>,
    /// Ongoing stalls of this direction.
    pub stalls: Vec<stall::Stall>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    pub node: String,
    pub role: String,
    pub time_ms: i64,
    pub pid: u32,
    pub log_size: u64,
    pub peers: BTreeMap<String, PeerStatus>,
    pub alarms_total: u64,
    pub recent_alarms: Vec<crate::syncdb::AlarmRow>,
    pub scrub_passes: u64,
    pub scrub_bytes: u64,
    /// Primary: the tamper watch (files changed outside retention, the tampering alarm, repairs).
    pub tamper: Option<tamper::TamperStatus>,
    /// Ongoing conditions that stop mirroring progress, oldest first ([`stall`]).
    pub stalls: Vec<stall::Stall>,
    /// With `[arbiter]`: the flow-back direction of takeover segments ([`flowback`]).
    pub flowback: Option<FlowbackStatus>,
    /// The store's de-duplication job ([`start_dedup`]): mirrored copies sealed here waiting for it.
    pub dedup: Option<store::DedupStatus>,
    #[serde(skip)]
    pub dedup_source: Option<store::DedupStatusSource>,
    /// Where the flow-back side keeps its status (its own peers and stalls, so they never mix with
    /// this direction's).
    #[serde(skip)]
    pub flowback_shared: Option<SharedStatus>,
    #[serde(skip)]
    pub stall_map: stall::Stalls,
    /// A stall lasting this long raises an alarm.
    #[serde(skip)]
    pub stall_alarm_ms: u64,
}

pub type SharedStatus = Arc<Mutex<AgentStatus>>;

pub fn with_status<T>(status: &SharedStatus, f: impl FnOnce(&mut AgentStatus) -> T) -> T {
    match status.lock() {
        Ok(mut g) => f(&mut g),
        Err(p) => f(&mut p.into_inner()),
    }
}

/// Marks peer `node` disconnected in `status`, with the error its session ended with, if any.
pub fn peer_disconnected<E: std::fmt::Display>(
    status: &SharedStatus,
    node: &str,
    result: &Result<(), E>,
) {
    with_status(status, |s| {
        if let Some(p) = s.peers.get_mut(node) {
            p.connected = false;
            if let Err(e) = result {
                p.last_error = Some(e.to_string());
            }
        }
    });
}

/// Opens this node's store (catalog and media) and its `sync.db`.
pub fn open_storage(
    cfg: &crate::config::SyncConfig,
) -> Result<(Arc<store::Store>, Arc<SyncDb>), AgentError> {
    let store = store::Store::open(
        &cfg.data_dir,
        &cfg.node_name,
        Arc::new(base::clock::SystemClock),
    )?;
    Ok((Arc::new(store), Arc::new(SyncDb::open(&cfg.data_dir)?)))
}

/// Starts the store's de-duplication job: a mirrored copy sealed here only marks its row, the job
/// compares it with this node's overlapping copies (`store::dedup_job`). Its status goes into the
/// agent's; the task ends after a last pass once `shutdown` is true.
pub fn start_dedup(
    store: &Arc<store::Store>,
    status: &SharedStatus,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let job = store.start_dedup_job(shutdown);
    with_status(status, |s| s.dedup_source = Some(job.status.clone()));
    job.task
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Alarms shown in the status file (the newest).
const STATUS_ALARMS: usize = 20;

/// Writes `sync-status.json` atomically (the alarm count and the newest alarms only, not every one),
/// with the flow-back direction's part.
pub fn write_status(data_dir: &Path, status: &SharedStatus, db: &SyncDb) {
    let mut overdue = with_status(status, |s| stall::refresh(s, now_ms()));
    let flowback = with_status(status, |s| s.flowback_shared.clone()).map(|fb| {
        with_status(&fb, |f| {
            overdue.extend(stall::refresh(f, now_ms()));
            FlowbackStatus {
                role: f.role.clone(),
                peers: f.peers.clone(),
                stalls: f.stalls.clone(),
            }
        })
    });
    for st in overdue {
        let detail = format!(
            "{} (for {} ms, since {})",
            st.detail, st.waited_ms, st.since_ms
        );
        raise_alarm(
            db,
            &st.kind,
            st.peer.as_deref(),
            st.segment.as_deref(),
            &detail,
        );
    }
    let total = db.alarm_count().unwrap_or_default();
    let recent = db.recent_alarms(STATUS_ALARMS).unwrap_or_default();
    let snapshot = with_status(status, |s| {
        s.time_ms = now_ms();
        s.pid = std::process::id();
        s.alarms_total = total;
        s.recent_alarms = recent;
        s.flowback = flowback;
        s.dedup = s.dedup_source.as_ref().map(|d| d.snapshot());
        s.clone()
    });
    let path = data_dir.join(STATUS_FILE);
    let write = serde_json::to_vec_pretty(&snapshot)
        .map_err(std::io::Error::other)
        .and_then(|body| base::fs::replace_file(&path, &body));
    if let Err(e) = write {
        tracing::warn!(error = %e, "cannot write sync status");
    }
}

/// Records an alarm: in sync.db, the log, and the status.
pub fn raise_alarm(db: &SyncDb, kind: &str, peer: Option<&str>, path: Option<&str>, detail: &str) {
    tracing::error!(kind, peer, path, detail, "ALARM");
    if let Err(e) = db.raise_alarm(now_ms(), kind, peer, path, detail) {
        tracing::error!(error = %e, "cannot record alarm");
    }
}

/// Messages read ahead of the one being handled: bounds a connection's read buffer to about this
/// many frames (media frames are at most [`CHUNK_BYTES`] plus a header).
const READ_AHEAD_FRAMES: usize = 4;

/// One peer connection: a task reads and decodes frames ahead into a small bounded queue (so
/// receiving is cancel-safe and a caller can ask whether a message is already waiting); writes go
/// through a buffer and are flushed per message.
pub struct Conn<S> {
    pub incoming: Incoming,
    pub writer: BufWriter<WriteHalf<S>>,
}

/// The receiving side of a [`Conn`].
pub struct Incoming {
    rx: tokio::sync::mpsc::Receiver<Result<Message, ProtoError>>,
    _reader: AbortOnDrop,
}

impl Incoming {
    /// Reads one message within `timeout`; `Ok(None)` at a clean end of stream. Cancel-safe.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<Message>, AgentError> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(r)) => Ok(Some(r?)),
            Ok(None) => Ok(None),
            Err(_) => Err(AgentError::Timeout("waiting for the peer".into())),
        }
    }

    /// The next message, waiting as long as it takes; `Ok(None)` at a clean end of stream.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Message>, AgentError> {
        match self.rx.recv().await {
            Some(r) => Ok(Some(r?)),
            None => Ok(None),
        }
    }

    /// A message that has already arrived, without waiting: `None` if none is waiting yet.
    pub fn try_recv(&mut self) -> Option<Result<Option<Message>, AgentError>> {
        use tokio::sync::mpsc::error::TryRecvError;
        match self.rx.try_recv() {
            Ok(r) => Some(r.map(Some).map_err(AgentError::from)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Ok(None)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Conn<S> {
    pub fn new(stream: S) -> Self {
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_FRAMES);
        let limits = Limits::default();
        let task = tokio::spawn(async move {
            loop {
                let item = match proto::read_message(&mut reader, &limits).await {
                    Ok(Some(m)) => Ok(m),
                    // A clean end of stream closes the queue.
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Conn {
            incoming: Incoming {
                rx,
                _reader: AbortOnDrop(task),
            },
            writer: BufWriter::with_capacity(256 * 1024, writer),
        }
    }
}

impl<S: AsyncRead + AsyncWrite> Conn<S> {
    pub async fn send(&mut self, msg: &Message) -> Result<(), AgentError> {
        proto::write_message(&mut self.writer, msg).await?;
        Ok(())
    }

    /// See [`Incoming::recv`].
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<Message>, AgentError> {
        self.incoming.recv(timeout).await
    }

    /// See [`Incoming::try_recv`].
    pub fn try_recv(&mut self) -> Option<Result<Option<Message>, AgentError>> {
        self.incoming.try_recv()
    }
}

/// Aborts a background task when dropped (a connection's reader).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Converts a merkle type to the opaque JSON the protocol carries.
pub fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

pub fn from_json<T: serde::de::DeserializeOwned>(
    v: &serde_json::Value,
    what: &str,
) -> Result<T, AgentError> {
    serde_json::from_value(v.clone()).map_err(|e| AgentError::Peer(format!("bad {what}: {e}")))
}

#[cfg(test)]
mod peer_status_tests {
    use super::*;

    #[test]
    fn a_peer_whose_session_ends_is_disconnected_with_its_error_and_others_are_untouched() {
        let status = SharedStatus::default();
        with_status(&status, |s| {
            for node in ["standby-1", "standby-2"] {
                s.peers.insert(
                    node.to_owned(),
                    PeerStatus {
                        node: node.to_owned(),
                        connected: true,
                        last_error: Some("earlier".to_owned()),
                        ..PeerStatus::default()
                    },
                );
            }
        });
        peer_disconnected(&status, "standby-1", &Err::<(), _>("link reset"));
        peer_disconnected(&status, "unknown", &Err::<(), _>("ignored"));
        let s = with_status(&status, |s| s.peers.clone());
        assert!(!s["standby-1"].connected);
        assert_eq!(s["standby-1"].last_error.as_deref(), Some("link reset"));
        assert!(s["standby-2"].connected);
        assert_eq!(s.len(), 2);

        // A clean end keeps the last error.
        peer_disconnected(&status, "standby-2", &Ok::<(), &str>(()));
        let s = with_status(&status, |s| s.peers.clone());
        assert!(!s["standby-2"].connected);
        assert_eq!(s["standby-2"].last_error.as_deref(), Some("earlier"));
    }
}
