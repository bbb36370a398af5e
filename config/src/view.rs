//! One node's view of the cluster: what its recorder records ([`RecorderConfig`]) and whom its sync agent
//! talks to ([`SyncNode`]); and the per-node summary printed by `nvr check-config`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::parse::{read_password_file, ConfigError};
use super::{
    CameraConfig, ClusterConfig, IngestConfig, NodeConfig, RecordingConfig, RetentionConfig, Role,
    SyncSettings,
};

/// What one node's recorder needs: its name and data directory, the cluster's recording, ingest and
/// retention settings, and the cameras it owns (with `password_file`s read).
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    /// Name of this node; recorded with every segment and part of every file name.
    pub node_name: String,
    /// Root of the media files and the catalog (`catalog.db`).
    pub data_dir: PathBuf,
    pub recording: RecordingConfig,
    pub ingest: IngestConfig,
    pub retention: RetentionConfig,
    /// The cameras owned by this node (none on a standby).
    pub cameras: Vec<CameraConfig>,
    /// Standby with `[arbiter]`: the cameras of the primaries it protects, which its recorder keeps
    /// in `shadow` (takeover hot) or `off` (cold) until the arbiter promotes them.
    pub protected: Vec<CameraConfig>,
}

/// What one node's sync agent needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncNode {
    pub node_name: String,
    pub role: Role,
    pub data_dir: PathBuf,
    pub identity_dir: PathBuf,
    /// Standby: the address it binds.
    pub listen: Option<SocketAddr>,
    /// The cluster's `[sync]` with this node's overrides.
    pub settings: SyncSettings,
    /// Primary: its standby (with `address`); standby: the primaries it protects (no address).
    pub peers: Vec<SyncPeer>,
}

/// A node this node's agent trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPeer {
    pub node: String,
    /// Where to connect (a primary's view of its standby).
    pub address: Option<SocketAddr>,
    /// 64 hex digits.
    pub cert_sha256: String,
    /// 64 hex digits.
    pub signing_public_key: String,
}

impl ClusterConfig {
    fn node_or_err(&self, name: &str) -> Result<&NodeConfig, ConfigError> {
        self.node(name).ok_or_else(|| ConfigError::Node {
            origin: self.origin.clone(),
            message: format!("no node {name:?}"),
        })
    }

    /// Node `name`'s recorder configuration: only the cameras it owns; their `password_file`s are read
    /// here (errors name the file, line and key).
    pub fn recorder(&self, name: &str) -> Result<RecorderConfig, ConfigError> {
        let node = self.node_or_err(name)?;
        if node.role == Role::Witness {
            return Err(ConfigError::Invalid {
                origin: self.origin.clone(),
                line: node.line,
                path: format!("node {name:?}"),
                message: "a witness runs no recorder (only nvr-arbiter)".to_owned(),
            });
        }
        let with_password = |c: &CameraConfig| -> Result<CameraConfig, ConfigError> {
            let mut c = c.clone();
            if let Some(f) = &c.password_file {
                c.password = Some(read_password_file(&self.origin, f)?);
            }
            Ok(c)
        };
        let cameras = self
            .cameras_of(name)
            .map(with_password)
            .collect::<Result<Vec<_>, _>>()?;
        let protected = if self.arbiter.is_some() && node.role == Role::Standby {
            self.protected_by(name)
                .map(with_password)
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(RecorderConfig {
            node_name: node.name.clone(),
            data_dir: node.data_dir.clone(),
            recording: self.recording,
            ingest: self.ingest,
            retention: self.retention.clone(),
            cameras,
            protected,
        })
    }

    /// Node `name`'s sync agent configuration. Refused for a primary that no standby protects (its agent
    /// would have nothing to do).
    pub fn sync_node(&self, name: &str) -> Result<SyncNode, ConfigError> {
        let node = self.node_or_err(name)?;
        let peer = |n: &NodeConfig, address: Option<SocketAddr>| {
            n.pins.as_ref().map(|p| SyncPeer {
                node: n.name.clone(),
                address,
                cert_sha256: p.cert_sha256.clone(),
                signing_public_key: p.signing_public_key.clone(),
            })
        };
        let peers: Vec<Option<SyncPeer>> = match node.role {
            Role::Primary => match self.standby_of(name) {
                Some(s) => vec![peer(s, s.address)],
                None => {
                    return Err(ConfigError::Invalid {
                        origin: self.origin.clone(),
                        line: node.line,
                        path: format!("node {name:?}"),
                        message: "no standby protects this primary, so its sync agent has nothing \
                                  to do (list it in a standby's protects)"
                            .to_owned(),
                    })
                }
            },
            Role::Standby => node
                .protects
                .iter()
                .filter_map(|p| self.node(p))
                .map(|p| peer(p, None))
                .collect(),
            Role::Witness => {
                return Err(ConfigError::Invalid {
                    origin: self.origin.clone(),
                    line: node.line,
                    path: format!("node {name:?}"),
                    message: "a witness runs no sync agent (only nvr-arbiter)".to_owned(),
                })
            }
        };
        // The parser refuses sync nodes without pins; a None here would be a parser bug, reported anyway.
        let peers: Option<Vec<SyncPeer>> = peers.into_iter().collect();
        let peers = peers.ok_or_else(|| ConfigError::Node {
            origin: self.origin.clone(),
            message: format!("a peer of node {name:?} has no pins"),
        })?;
        Ok(SyncNode {
            node_name: node.name.clone(),
            role: node.role,
            data_dir: node.data_dir.clone(),
            identity_dir: node.identity_dir.clone(),
            listen: node.listen_address(),
            settings: node.sync,
            peers,
        })
    }

    /// A few human-readable lines per node (no secrets), for `nvr check-config`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "recording: segment {} ms, flush {} ms; retention: max age {}, max bytes/stream {}, min free {} B, every {} ms",
            self.recording.segment_duration_ms,
            self.recording.flush_interval_ms,
            self.retention
                .max_age_days
                .map_or_else(|| "none".to_owned(), |d| format!("{d} d")),
            self.retention
                .max_bytes_per_stream
                .map_or_else(|| "none".to_owned(), |b| format!("{b} B")),
            self.retention.min_free_bytes,
            self.retention.interval_ms
        );
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "node {} ({}): data_dir {}, identity_dir {}",
                n.name,
                n.role.as_str(),
                n.data_dir.display(),
                n.identity_dir.display()
            );
            match n.role {
                Role::Primary => {
                    let _ = match self.standby_of(&n.name) {
                        Some(st) => writeln!(
                            s,
                            "  sync: mirrors to {} at {}",
                            st.name,
                            st.address.map_or_else(|| "-".to_owned(), |a| a.to_string())
                        ),
                        None => writeln!(s, "  sync: not protected by a standby"),
                    };
                }
                Role::Witness => {
                    let _ = writeln!(s, "  witness: arbiter only, no recorder or sync agent");
                }
                Role::Standby => {
                    let _ = writeln!(
                        s,
                        "  sync: listens on {}, protects {}",
                        n.listen_address()
                            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                        n.protects.join(", ")
                    );
                }
            }
            let st = &n.sync;
            let _ = writeln!(
                s,
                "  sync settings: head {} ms, reconcile {} ms, stall alarm {} ms, scrub {}, bandwidth {}",
                st.head_interval_ms,
                st.reconcile_interval_ms,
                st.stall_alarm_ms,
                if st.scrub_interval_ms == 0 {
                    "off".to_owned()
                } else {
                    format!(
                        "every {} ms at {} B/s",
                        st.scrub_interval_ms, st.scrub_bytes_per_s
                    )
                },
                if st.bandwidth_bytes_per_s == 0 {
                    "no cap".to_owned()
                } else {
                    format!("{} B/s", st.bandwidth_bytes_per_s)
                }
            );
            let cams: Vec<&CameraConfig> = self.cameras_of(&n.name).collect();
            let streams: usize = cams.iter().map(|c| c.streams.len()).sum();
            let recorded = cams
                .iter()
                .flat_map(|c| &c.streams)
                .filter(|s| s.record)
                .count();
            let _ = writeln!(
                s,
                "  {} camera(s), {streams} stream(s) ({recorded} recorded)",
                cams.len()
            );
            for c in cams {
                let streams: Vec<String> = c
                    .streams
                    .iter()
                    .map(|st| {
                        format!(
                            "{}{}",
                            st.kind.as_str(),
                            if st.record { "" } else { " (not recorded)" }
                        )
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "    {} [{}] {}: {}",
                    c.name,
                    c.transport.as_str(),
                    if c.password.is_some() {
                        "with password"
                    } else if c.password_file.is_some() {
                        "with password file"
                    } else {
                        "no password"
                    },
                    streams.join(", ")
                );
            }
        }
        s
    }
}
