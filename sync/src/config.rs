//! The sync agent's configuration: its node's view of the cluster configuration file (crate
//! `cluster-config`, shared with the recorder). Every key is documented in `config.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use cluster_config::{ClusterConfig, Role, SyncSettings};

use crate::identity::{NodePinsError, PeerPins};

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
    /// The cluster's `[sync]` settings with this node's overrides (`cluster_config::SyncSettings`).
    pub settings: SyncSettings,
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
    #[error(transparent)]
    Pins(#[from] NodePinsError),
}

impl SyncConfig {
    /// Loads the cluster file at `path` and returns the agent configuration of this machine's node:
    /// `node` if given (the `--node` option), else the node named by its `identity.toml`.
    pub fn load(path: &Path, node: Option<&str>) -> Result<SyncConfig, ConfigError> {
        let (cluster, name) = cluster_config::load_with_node(path, node)?;
        Self::from_cluster(&cluster, &name)
    }

    /// Node `node`'s agent configuration.
    pub fn from_cluster(cluster: &ClusterConfig, node: &str) -> Result<SyncConfig, ConfigError> {
        let view = cluster.sync_node(node)?;
        let mut peers = Vec::new();
        for p in view.peers {
            let pins = PeerPins::of_node(
                &cluster.origin,
                &p.node,
                &p.cert_sha256,
                &p.signing_public_key,
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
            settings: view.settings,
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
