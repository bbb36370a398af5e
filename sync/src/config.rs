//! The sync agent's configuration file (TOML). Every key is documented in `sync.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::PeerPins;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Standby,
}

/// A configured peer: its pins, and on a primary the standby's address.
#[derive(Debug, Clone)]
pub struct Peer {
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
    pub peers: Vec<Peer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_name: String,
    data_dir: PathBuf,
    identity_dir: PathBuf,
    role: Role,
    listen: Option<String>,
    head_interval_ms: Option<u64>,
    reconcile_interval_ms: Option<u64>,
    scrub_interval_ms: Option<u64>,
    scrub_bytes_per_s: Option<u64>,
    bandwidth_bytes_per_s: Option<u64>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    node: String,
    address: Option<String>,
    cert_sha256: String,
    signing_public_key: String,
}

impl SyncConfig {
    pub fn load(path: &Path) -> Result<SyncConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<SyncConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0);
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if nvr_sync_valid_node(&raw.node_name).is_err() {
            return Err(invalid(
                "node_name",
                format!(
                    "{:?} is not a valid node name ([a-z0-9][a-z0-9_-]{{0,62}})",
                    raw.node_name
                ),
            ));
        }
        for (key, dir) in [
            ("data_dir", &raw.data_dir),
            ("identity_dir", &raw.identity_dir),
        ] {
            if !dir.is_absolute() {
                return Err(invalid(
                    key,
                    format!("must be an absolute path, got {}", dir.display()),
                ));
            }
        }
        let listen = match raw.listen.as_deref() {
            Some(s) => Some(
                s.parse::<SocketAddr>()
                    .map_err(|e| invalid("listen", format!("{s:?}: {e}")))?,
            ),
            None => None,
        };
        let mut peers = Vec::new();
        for (i, p) in raw.peers.iter().enumerate() {
            let pins = PeerPins::from_hex(&p.node, &p.cert_sha256, &p.signing_public_key)
                .map_err(|e| invalid(&format!("peers[{i}]"), e.to_string()))?;
            if peers.iter().any(|q: &Peer| q.pins.node == p.node) {
                return Err(invalid(
                    &format!("peers[{i}].node"),
                    format!("duplicate peer {:?}", p.node),
                ));
            }
            peers.push(Peer {
                pins,
                address: p.address.clone(),
            });
        }
        match raw.role {
            Role::Primary => {
                if peers.len() != 1 {
                    return Err(invalid(
                        "peers",
                        format!(
                            "a primary needs exactly one standby peer, got {}",
                            peers.len()
                        ),
                    ));
                }
                if peers[0].address.is_none() {
                    return Err(invalid(
                        "peers[0].address",
                        "a primary needs the standby's address".into(),
                    ));
                }
            }
            Role::Standby => {
                if listen.is_none() {
                    return Err(invalid("listen", "a standby needs a listen address".into()));
                }
                if peers.is_empty() {
                    return Err(invalid(
                        "peers",
                        "a standby needs at least one primary peer".into(),
                    ));
                }
            }
        }
        let positive = |key: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
            match v {
                Some(0) => Err(invalid(key, "must be greater than 0".into())),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        Ok(SyncConfig {
            node_name: raw.node_name,
            data_dir: raw.data_dir,
            identity_dir: raw.identity_dir,
            role: raw.role,
            listen,
            head_interval_ms: positive("head_interval_ms", raw.head_interval_ms, 5000)?,
            reconcile_interval_ms: positive(
                "reconcile_interval_ms",
                raw.reconcile_interval_ms,
                10_000,
            )?,
            scrub_interval_ms: raw.scrub_interval_ms.unwrap_or(3_600_000),
            scrub_bytes_per_s: positive("scrub_bytes_per_s", raw.scrub_bytes_per_s, 50_000_000)?,
            bandwidth_bytes_per_s: raw.bandwidth_bytes_per_s.unwrap_or(0),
            peers,
        })
    }
}

fn nvr_sync_valid_node(name: &str) -> Result<(), crate::proto::ProtoError> {
    crate::proto::validate_node_name(name, "node_name")
}
