//! The arbiter's configuration: its node's view of the cluster file (`[arbiter]`, the node's
//! `arbiter_address`, its peers' addresses and pins, the protected streams with their takeover mode
//! and priority, the standby's capacity).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cluster_config::{ClusterConfig, Role};
use node_identity::{NodePinsError, PeerPins};

use crate::core::{Capacity, StreamSpec, Takeover, Timings};

/// A peer's arbiter.
#[derive(Debug, Clone)]
pub struct Peer {
    pub pins: PeerPins,
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ArbiterConfig {
    pub node_name: String,
    pub role: Role,
    pub data_dir: PathBuf,
    pub identity_dir: PathBuf,
    /// Where this arbiter listens for heartbeats.
    pub listen: SocketAddr,
    pub timings: Timings,
    /// Standby: how many streams, and how many Mbit/s of them, it takes over at most.
    pub capacity: Capacity,
    /// Primary: its standby; standby: the primaries it protects; witness: every node that takes part
    /// in failover. Primaries and standbys also the witness, if the cluster has one.
    pub peers: Vec<Peer>,
    /// The cluster's witness node (arbiter only), if any.
    pub witness: Option<String>,
    /// The recorded streams of this node (primary) or of the primaries it protects (standby).
    pub streams: Vec<StreamSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Cluster(#[from] cluster_config::ConfigError),
    #[error("{origin}: no [arbiter] section: failover is not configured")]
    NoArbiter { origin: String },
    #[error("{origin}: node {node:?} takes no part in failover (a primary no standby protects)")]
    NotInFailover { origin: String, node: String },
    #[error("{origin}: node {node:?} has no arbiter_address")]
    NoAddress { origin: String, node: String },
    #[error("{origin}: node {node:?} has no pins (cert_sha256, signing_public_key)")]
    NoPins { origin: String, node: String },
    #[error(transparent)]
    Pins(#[from] NodePinsError),
}

impl ArbiterConfig {
    /// Loads the cluster file and returns the configuration of this machine's node (`--node`, else
    /// its `identity.toml`).
    pub fn load(path: &Path, node: Option<&str>) -> Result<ArbiterConfig, ConfigError> {
        let (cluster, name) = cluster_config::load_with_node(path, node)?;
        Self::from_cluster(&cluster, &name)
    }

    pub fn from_cluster(cluster: &ClusterConfig, name: &str) -> Result<ArbiterConfig, ConfigError> {
        let origin = cluster.origin.clone();
        let Some(settings) = cluster.arbiter else {
            return Err(ConfigError::NoArbiter { origin });
        };
        let node = cluster
            .select_node(Some(name))
            .map_err(ConfigError::Cluster)?
            .clone();
        let mut peer_nodes: Vec<&cluster_config::NodeConfig> = match node.role {
            Role::Primary => cluster.standby_of(name).into_iter().collect(),
            Role::Standby => node
                .protects
                .iter()
                .filter_map(|p| cluster.node(p))
                .collect(),
            Role::Witness => cluster
                .nodes
                .iter()
                .filter(|n| {
                    n.role == Role::Standby
                        || (n.role == Role::Primary && cluster.standby_of(&n.name).is_some())
                })
                .collect(),
        };
        let witness = cluster.witness().map(|w| w.name.clone());
        if !peer_nodes.is_empty() && node.role != Role::Witness {
            peer_nodes.extend(cluster.witness());
        }
        if peer_nodes.is_empty() {
            return Err(ConfigError::NotInFailover {
                origin,
                node: name.to_owned(),
            });
        }
        let no_address = |n: &str| ConfigError::NoAddress {
            origin: origin.clone(),
            node: n.to_owned(),
        };
        let mut peers = Vec::new();
        for p in &peer_nodes {
            let pins = p.pins.as_ref().ok_or_else(|| ConfigError::NoPins {
                origin: origin.clone(),
                node: p.name.clone(),
            })?;
            let pins = PeerPins::of_node(
                &origin,
                &p.name,
                &pins.cert_sha256,
                &pins.signing_public_key,
            )?;
            peers.push(Peer {
                pins,
                address: p.arbiter_address.ok_or_else(|| no_address(&p.name))?,
            });
        }
        let mut streams = Vec::new();
        for c in &cluster.cameras {
            let Some(protector) = cluster.standby_of(&c.node) else {
                continue;
            };
            let mine = match node.role {
                Role::Primary => c.node == name,
                Role::Standby => protector.name == name,
                Role::Witness => false,
            };
            if !mine {
                continue;
            }
            for s in c.streams.iter().filter(|s| s.record) {
                streams.push(StreamSpec {
                    key: format!("{}/{}", c.name, s.kind.as_str()),
                    owner: c.node.clone(),
                    protector: protector.name.clone(),
                    takeover: match c.takeover {
                        cluster_config::Takeover::Hot => Takeover::Hot,
                        cluster_config::Takeover::Cold => Takeover::Cold,
                    },
                    priority: c.priority,
                    bitrate_kbps: c.bitrate_kbps,
                });
            }
        }
        Ok(ArbiterConfig {
            node_name: node.name.clone(),
            role: node.role,
            data_dir: node.data_dir.clone(),
            identity_dir: node.identity_dir.clone(),
            listen: node
                .arbiter_listen_address()
                .ok_or_else(|| no_address(name))?,
            timings: Timings {
                heartbeat_interval_ms: settings.heartbeat_interval_ms as i64,
                node_dead_ms: settings.node_dead_ms as i64,
                stream_failed_ms: settings.stream_failed_ms as i64,
                failback_hold_ms: settings.failback_hold_ms as i64,
            },
            capacity: Capacity {
                streams: node.capacity_streams,
                kbps: node.capacity_mbps.map(|m| u64::from(m) * 1000),
            },
            peers,
            witness,
            streams,
        })
    }

    /// The recorder's control socket on this node.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join(store::layout::CONTROL_SOCKET_FILE)
    }
}
