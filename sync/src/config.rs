//! The sync agent's configuration: its node's view of the cluster configuration file (crate
//! `cluster-config`, shared with the recorder). Every key is documented in `config.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use cluster_config::{ClusterConfig, Role};

use crate::identity::{IdentityError, PeerPins};

/// A configured peer: its pins, and on a primary the standby's address.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its cameras' streams (`camera`, `main`/`sub`) in the cluster file: the only ones a standby
    /// accepts from that primary.
    pub streams: std::collections::BTreeSet<(String, String)>,
    pub pins: PeerPins,
    pub address: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub identity_dir: PathBuf,
    pub role: Role,
    /// Standby: where to accept primaries.
    pub listen: Option<SocketAddr>,
    /// Primary: a signed tree head at least this often while connected (and on every seal batch).
    pub head_interval_ms: u64,
    /// Primary: full pass over the catalog this often (file events can be missed).
    pub reconcile_interval_ms: u64,
    /// Re-hash of sealed segments against the log: one pass this often; 0 = off.
    pub scrub_interval_ms: u64,
    /// Re-hash rate limit of the scrub.
    pub scrub_bytes_per_s: u64,
    /// Primary: cap of the media bytes sent per second; 0 = no cap.
    pub bandwidth_bytes_per_s: u64,
    /// Primary: tampered sealed files within `tamper_window_ms` that raise the one `tampering` alarm.
    pub tamper_threshold_files: u32,
    /// Primary: the tamper watch's counting window.
    pub tamper_window_ms: u64,
    /// Primary: file events the tamper watch queues at most before it falls back to a pass.
    pub tamper_queue_events: u32,
    /// Anything that stops mirroring progress raises an alarm once it has lasted this long.
    pub stall_alarm_ms: u64,
    /// Standby: unverified bytes (staging and quarantine) each primary may hold here; 0 = no quota.
    pub mirror_quota_bytes: u64,
    /// Standby: a staging copy idle this long goes to quarantine and its path is closed.
    pub staging_expire_ms: u64,
    /// Primary: its standby; standby: the primaries it protects.
    pub peers: Vec<Peer>,
    /// The cluster file has `[arbiter]`: a standby records the streams it takes over, and sends these
    /// takeover segments back to their owners (flow-back, `docs/sync.md`); a primary receives them.
    pub flowback: bool,
    /// This node's own streams (`camera`, `main`/`sub`): on a primary, the only ones its standby may
    /// send back.
    pub own_streams: std::collections::BTreeSet<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cluster file is invalid, or this node cannot be picked or has no sync role.
    #[error(transparent)]
    Cluster(#[from] cluster_config::ConfigError),
    /// A peer's pins (already checked as 64 hex digits by the parser) were refused.
    #[error("{origin}: pins of node {node:?}: {source}")]
    Pins {
        origin: String,
        node: String,
        #[source]
        source: IdentityError,
    },
}

impl SyncConfig {
    /// Loads the cluster file at `path` and returns the agent configuration of this machine's node:
    /// `node` if given (the `--node` option), else the node named by its `identity.toml`.
    pub fn load(path: &Path, node: Option<&str>) -> Result<SyncConfig, ConfigError> {
        let cluster = cluster_config::load(path)?;
        let name = cluster.select_node(node)?.name.clone();
        Self::from_cluster(&cluster, &name)
    }

    /// Node `node`'s agent configuration.
    pub fn from_cluster(cluster: &ClusterConfig, node: &str) -> Result<SyncConfig, ConfigError> {
        let view = cluster.sync_node(node)?;
        let mut peers = Vec::new();
        for p in view.peers {
            let pins = PeerPins::from_hex(&p.node, &p.cert_sha256, &p.signing_public_key).map_err(
                |source| ConfigError::Pins {
                    origin: cluster.origin.clone(),
                    node: p.node.clone(),
                    source,
                },
            )?;
            peers.push(Peer {
                streams: streams_of(cluster, &p.node),
                pins,
                address: p.address.map(|a| a.to_string()),
            });
        }
        Ok(SyncConfig {
            node_name: view.node_name,
            data_dir: view.data_dir,
            identity_dir: view.identity_dir,
            role: view.role,
            listen: view.listen,
            head_interval_ms: view.settings.head_interval_ms,
            reconcile_interval_ms: view.settings.reconcile_interval_ms,
            scrub_interval_ms: view.settings.scrub_interval_ms,
            scrub_bytes_per_s: view.settings.scrub_bytes_per_s,
            bandwidth_bytes_per_s: view.settings.bandwidth_bytes_per_s,
            tamper_threshold_files: view.settings.tamper_threshold_files,
            tamper_window_ms: view.settings.tamper_window_ms,
            tamper_queue_events: view.settings.tamper_queue_events,
            stall_alarm_ms: view.settings.stall_alarm_ms,
            mirror_quota_bytes: view.settings.mirror_quota_bytes,
            staging_expire_ms: view.settings.staging_expire_ms,
            peers,
            flowback: cluster.arbiter.is_some(),
            own_streams: streams_of(cluster, node),
        })
    }
}

/// The streams (`camera`, `main`/`sub`) of the cameras node `node` owns in the cluster file.
fn streams_of(cluster: &ClusterConfig, node: &str) -> std::collections::BTreeSet<(String, String)> {
    cluster
        .cameras_of(node)
        .flat_map(|c| {
            c.streams
                .iter()
                .map(|s| (c.name.clone(), s.kind.as_str().to_owned()))
        })
        .collect()
}
