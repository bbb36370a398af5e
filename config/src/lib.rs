//! The cluster configuration: ONE TOML file, edited once and copied to every node, that holds the nodes
//! (name, role, data directory, sync address, pins), every camera with its owner node, and the recording,
//! ingest, retention and sync settings. Every key is documented in `config.example.toml` at the
//! repository root and in `docs/configuration.md`.
//!
//! Both the recorder (`nvr`) and the sync agent (`nvr-sync`) read the file through this crate, which
//! depends only on `base`: [`load`] parses and validates the whole file (every node at once, the checks of
//! `nvr check-config`), [`ClusterConfig::select_node`] finds the node this machine is (from its
//! `identity.toml`, or an explicit `--node`), and [`ClusterConfig::recorder`] /
//! [`ClusterConfig::sync_node`] derive one node's view.

use std::net::SocketAddr;
use std::path::PathBuf;

mod args;
mod check;
mod parse;
mod select;
mod view;

pub use args::NodeArgs;
pub use parse::{load, parse, parse_byte_size, ConfigError};
pub use select::{identity_node, load_with_node, IDENTITY_FILE};
pub use view::{RecorderConfig, SyncNode, SyncPeer};

/// The whole cluster: what every node reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Where the text came from (usually the file name); prefixes every error message.
    pub origin: String,
    pub recording: RecordingConfig,
    pub ingest: IngestConfig,
    pub retention: RetentionConfig,
    /// Cluster-wide sync settings (nodes may override some, see [`NodeConfig::sync`]).
    pub sync: SyncSettings,
    /// The web viewer (`nvr-web`) of every node.
    pub web: WebSettings,
    /// The `[arbiter]` section: failover between primaries and their standby. `None`: no failover
    /// (standbys only mirror).
    pub arbiter: Option<ArbiterSettings>,
    /// In file order; names unique.
    pub nodes: Vec<NodeConfig>,
    /// In file order; names unique across the cluster; each owned by a primary of `nodes`.
    pub cameras: Vec<CameraConfig>,
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Records its cameras; its sync agent mirrors them to the standby that protects it.
    Primary,
    /// Records nothing; its sync agent listens for the primaries it protects and keeps their copies.
    Standby,
    /// Runs only an arbiter (no recorder, no cameras, no sync agent): it heartbeats with every node
    /// that takes part in failover and tells them whom it hears, so that a standby takes a primary
    /// over only if the witness lost it too, and a primary cut off from both stands down.
    Witness,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Witness => "witness",
        }
    }
}

/// One `[[nodes]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The node's name (`base::names`); recorded with every segment, the TLS name of its agent.
    pub name: String,
    pub role: Role,
    /// Root of the node's media and catalog (a primary's recordings; a standby's copies).
    pub data_dir: PathBuf,
    /// Where `nvr-sync keygen` wrote the node's keys and `identity.toml` (the node's own or the
    /// cluster's `identity_dir`).
    pub identity_dir: PathBuf,
    /// Standby: where primaries reach its sync agent (IP and port).
    pub address: Option<SocketAddr>,
    /// Standby: what its agent binds; defaults to `address`.
    pub listen: Option<SocketAddr>,
    /// The public pins printed by `nvr-sync keygen`; required on nodes that take part in sync.
    pub pins: Option<Pins>,
    /// Standby: the primaries it protects (names of primary nodes, at least one).
    pub protects: Vec<String>,
    /// Sync settings in effect on this node: the cluster's `[sync]` with this node's overrides.
    pub sync: SyncSettings,
    /// Where this node's arbiter listens for heartbeats (IP and port); required on every primary
    /// with a standby and every standby when `[arbiter]` is present.
    pub arbiter_address: Option<SocketAddr>,
    /// What this node's arbiter binds when that differs from `arbiter_address` (a port forward or
    /// proxy in between); defaults to `arbiter_address`.
    pub arbiter_listen: Option<SocketAddr>,
    /// Standby: how many streams it records at most on takeover (`None`: no cap).
    pub capacity_streams: Option<u32>,
    /// Where browsers reach this node's viewer (`https://host:port`, an origin: scheme, host and port,
    /// no path), for the page's failover between nodes. `None`: the page cannot move to this node.
    pub web_url: Option<String>,
    /// Standby: how many Mbit/s of streams it records at most on takeover (`None`: no cap); each
    /// stream counts at its measured bitrate, or its camera's `bitrate_kbps` until measured.
    pub capacity_mbps: Option<u32>,
    /// 1-based line of the node's `name` (for messages about the node).
    pub line: usize,
}

impl NodeConfig {
    /// The address its agent binds: `listen`, or else `address` (standbys only).
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.listen.or(self.address)
    }

    /// The address its arbiter binds: `arbiter_listen`, or else `arbiter_address`.
    pub fn arbiter_listen_address(&self) -> Option<SocketAddr> {
        self.arbiter_listen.or(self.arbiter_address)
    }
}

/// The `[arbiter]` section: timings of failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArbiterSettings {
    /// A heartbeat to every peer this often. Default 200.
    pub heartbeat_interval_ms: u64,
    /// A peer whose heartbeats are missing this long is dead. Default 1 000.
    pub node_dead_ms: u64,
    /// A stream whose session has failed this long on a living primary moves. Default 2 000.
    pub stream_failed_ms: u64,
    /// A stream taken over goes back to its owner (make-before-break at a key frame) once the owner
    /// has been healthy, shadowing it, this long; 0: no automatic failback. Default 10 000.
    pub failback_hold_ms: u64,
}

impl Default for ArbiterSettings {
    fn default() -> Self {
        ArbiterSettings {
            heartbeat_interval_ms: 200,
            node_dead_ms: 1_000,
            stream_failed_ms: 2_000,
            failback_hold_ms: 10_000,
        }
    }
}

/// How a standby takes a camera over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// The standby keeps a shadow session open: takeover continues after the last mirrored frame.
    #[default]
    Hot,
    /// The session is opened on takeover: a gap of about detection + connect + one GOP.
    Cold,
}

impl Takeover {
    pub fn as_str(self) -> &'static str {
        match self {
            Takeover::Hot => "hot",
            Takeover::Cold => "cold",
        }
    }
}

/// Default `priority` of a camera.
pub const DEFAULT_PRIORITY: u32 = 100;

/// A node's public pins, as lower-case hex (64 digits each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// SHA-256 of the node's TLS certificate (DER).
    pub cert_sha256: String,
    /// The node's Ed25519 public key that signs its log heads.
    pub signing_public_key: String,
}

/// Settings of the sync agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    /// Primary: every seal batch is signed at once; with nothing new, a keep-alive head at most this
    /// often while connected (by the last head's own timestamp). Default 3 600 000 (1 h).
    pub head_interval_ms: u64,
    /// Primary: full pass over the catalog this often (file events can be missed). Default 10 000.
    pub reconcile_interval_ms: u64,
    /// Re-hash of sealed segments against the log: one pass this often; 0 = off. Default 3 600 000.
    /// Per-node override.
    pub scrub_interval_ms: u64,
    /// Re-hash rate limit of the scrub. Default 50 000 000. Per-node override.
    pub scrub_bytes_per_s: u64,
    /// Primary: cap of the media bytes sent per second; 0 = no cap. Default 0. Per-node override.
    pub bandwidth_bytes_per_s: u64,
    /// Primary: this many tampered sealed files within `tamper_window_ms` raise the one critical
    /// `tampering` alarm (per-file alarms stop until the attack is over). Default 5.
    pub tamper_threshold_files: u32,
    /// Primary: the tamper watch's counting window. Default 10 000.
    pub tamper_window_ms: u64,
    /// Primary: file events the tamper watch queues at most; past that (or on an inotify overflow) it
    /// falls back to a size/mtime pass over the sealed segments. Default 4 096.
    pub tamper_queue_events: u32,
    /// Anything that stops mirroring progress (a segment not sealed on the standby, a peer unreachable
    /// or refusing heads, a local log error) raises an alarm once it has lasted this long.
    /// Default 120 000.
    pub stall_alarm_ms: u64,
    /// Standby: bytes each primary may hold here unverified (staging copies and its quarantined
    /// files); beyond it what the primary sends is refused with an alarm. 0 = no quota. Default
    /// 20 GB. Per-node override.
    pub mirror_quota_bytes: u64,
    /// Standby: a staging copy nothing was appended to for this long is moved to quarantine (alarm)
    /// and its path cannot be started again. Default 604 800 000 (7 days).
    pub staging_expire_ms: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            head_interval_ms: 3_600_000,
            reconcile_interval_ms: 10_000,
            scrub_interval_ms: 3_600_000,
            scrub_bytes_per_s: 50_000_000,
            bandwidth_bytes_per_s: 0,
            tamper_threshold_files: 5,
            tamper_window_ms: 10_000,
            tamper_queue_events: 4_096,
            stall_alarm_ms: 120_000,
            mirror_quota_bytes: 20_000_000_000,
            staging_expire_ms: 7 * 86_400_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordingConfig {
    /// Target segment length; a segment is cut on the first key frame at or after it. Default 60 000.
    pub segment_duration_ms: u64,
    /// Appended data is flushed to disk (fdatasync) at most this long after it was written. Default 1 000.
    pub flush_interval_ms: u64,
    /// A fragment is closed at a key frame or once it holds this much media, whichever comes first: the
    /// bound on frames held in memory, on the mirroring lag and on the loss at a crash. Default 1 000.
    pub fragment_max_ms: u64,
    /// Shadow mode keeps the last this-many ms of a stream (but at least two GOPs). Default 5 000.
    pub shadow_ring_ms: u64,
    /// Cap of a shadow ring, bytes (wins over the two GOPs). Default 16 MiB.
    pub shadow_ring_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestConfig {
    /// Timeout of each of connect+DESCRIBE, SETUP and PLAY. Default 10 000.
    pub connect_timeout_ms: u64,
    /// No-frame watchdog: a session that delivers no frame for this long is dropped and reconnected. Default 10 000.
    pub frame_timeout_ms: u64,
    /// First reconnect delay; doubled on each failure (plus jitter) up to `backoff_max_ms`. Default 1 000.
    pub backoff_initial_ms: u64,
    /// Cap of the reconnect delay, also used after an authentication failure. Default 30 000.
    pub backoff_max_ms: u64,
    /// Receive buffer requested for each UDP RTP socket (a 4K key frame arrives as a burst of a
    /// megabyte or more). Default 8 MiB; the kernel grants at most `net.core.rmem_max`.
    pub udp_recv_buffer_bytes: u64,
    /// Local UDP ports for RTP/RTCP pairs, inclusive (`"50000-50999"`), for firewalls. `None`: any
    /// port from 5000 to 65000.
    pub udp_port_range: Option<(u16, u16)>,
    /// The reorder window of UDP sessions (a camera's own keys override it).
    pub udp_reorder: UdpReorder,
}

/// The UDP reorder window: RTP packets that arrive ahead of a missing one are held and put back in
/// sequence, at most `max_packets` of them for at most `max_delay_ms`; a packet still missing then
/// is counted as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpReorder {
    /// Packets held at most; 0 turns the window off (a packet arriving after its successor is then
    /// lost). Default 64.
    pub max_packets: u32,
    /// How long a held packet waits at most for the ones missing before it. Default 50.
    pub max_delay_ms: u64,
}

impl Default for UdpReorder {
    fn default() -> Self {
        UdpReorder {
            max_packets: 64,
            max_delay_ms: 50,
        }
    }
}

/// `[web]`: the web viewer (`nvr-web`), the same on every node.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSettings {
    /// Where the viewer listens. Default `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Plain HTTP instead of HTTPS (only behind a reverse proxy that terminates TLS). Default false.
    pub plain_http: bool,
    /// PEM certificate chain and private key; both or neither. Neither: a self-signed certificate is
    /// made at first start in `state_dir`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A file of at least 32 bytes, the same on every node, that signs session cookies so that every
    /// node accepts them. `None`: a per-node secret made at first start in `state_dir`.
    pub session_secret_file: Option<PathBuf>,
    /// The viewer's own directory: users, audit log, self-signed certificate, per-node secret.
    /// Default `/var/lib/nvr-web`.
    pub state_dir: PathBuf,
    /// Lifetime of a login session, in seconds. Default 43 200 (12 h).
    pub session_ttl_s: u64,
    /// Live streams the viewer relays at once (each is a connection to the recorder's control socket,
    /// which takes at most 64). Default 32; 1 to 60.
    pub max_live_streams: u32,
    /// The users file, the same on every node so that every node knows every user. `None`:
    /// `<state_dir>/users.json`.
    pub users_file: Option<PathBuf>,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            plain_http: false,
            cert_file: None,
            key_file: None,
            session_secret_file: None,
            state_dir: PathBuf::from("/var/lib/nvr-web"),
            session_ttl_s: 43_200,
            max_live_streams: 32,
            users_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Default per-stream maximum age of sealed segments, in days. `None`: no age limit.
    pub max_age_days: Option<u64>,
    /// Default per-stream maximum bytes of sealed segments. `None`: no byte limit.
    pub max_bytes_per_stream: Option<u64>,
    /// Global floor of free bytes on the data directory's file system. Default 1 GiB.
    pub min_free_bytes: u64,
    /// How often the retention pass runs. Default 60 000.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
    /// TCP, or UDP when the camera refuses TCP interleaving (461 Unsupported Transport).
    Auto,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamKind {
    Main,
    Sub,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Main => "main",
            StreamKind::Sub => "sub",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// Unique name in the cluster: `[a-z0-9][a-z0-9_-]{0,62}` (used in paths).
    pub name: String,
    /// The primary node that records it.
    pub node: String,
    pub username: Option<String>,
    /// Never logged or printed (its `Debug` is redacted). In a [`ClusterConfig`] only an inline
    /// `password`; in a [`RecorderConfig`] also one read from `password_file`.
    pub password: Option<Secret>,
    /// `password_file`, read when the owner node's [`RecorderConfig`] is derived (the file is on that
    /// node, not necessarily on the machine that checks the cluster file).
    pub password_file: Option<PasswordFile>,
    pub transport: Transport,
    /// The UDP reorder window of this camera's sessions: its `udp_reorder_*` keys over `[ingest]`'s.
    pub udp_reorder: UdpReorder,
    /// How the standby takes this camera over (with `[arbiter]`). Default hot.
    pub takeover: Takeover,
    /// Takeover order within the standby's capacity: higher first. Default [`DEFAULT_PRIORITY`].
    pub priority: u32,
    /// The bitrate each recorded stream of this camera is counted at against a standby's
    /// `capacity_mbps` until one is measured (`None`: 0 until measured).
    pub bitrate_kbps: Option<u32>,
    /// At least one stream; at most one `main` and one `sub`.
    pub streams: Vec<StreamConfig>,
}

/// Where a camera's password is read from, and where that was configured (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    /// Absolute path.
    pub path: PathBuf,
    /// 1-based line of the `password_file` key.
    pub line: usize,
    /// Key path, e.g. `cameras[0].password_file`.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub kind: StreamKind,
    /// `rtsp://` URL without credentials (credentials in the URL are refused: they would end up in logs).
    pub url: url::Url,
    /// Default true.
    pub record: bool,
    /// Overrides `retention.max_age_days` for this stream.
    pub max_age_days: Option<u64>,
    /// Overrides `retention.max_bytes_per_stream` for this stream.
    pub max_bytes: Option<u64>,
}

/// A password; `Debug` and `Display` print `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// The password itself, for the RTSP client only. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            segment_duration_ms: 60_000,
            flush_interval_ms: 1_000,
            fragment_max_ms: 1_000,
            shadow_ring_ms: 5_000,
            shadow_ring_max_bytes: 16 << 20,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            connect_timeout_ms: 10_000,
            frame_timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            udp_recv_buffer_bytes: 8 * 1024 * 1024,
            udp_port_range: None,
            udp_reorder: UdpReorder::default(),
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_days: None,
            max_bytes_per_stream: None,
            min_free_bytes: 1 << 30,
            interval_ms: 60_000,
        }
    }
}

impl ClusterConfig {
    /// The node named `name`, if any.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The standby that protects primary `name`, if any.
    pub fn standby_of(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes
            .iter()
            .find(|n| n.role == Role::Standby && n.protects.iter().any(|p| p == name))
    }

    /// The witness node (arbiter only), if the cluster has one.
    pub fn witness(&self) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.role == Role::Witness)
    }

    /// The cameras protected by standby `name` (owned by the primaries it protects), in file order.
    pub fn protected_by<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a CameraConfig> + 'a {
        let protects: &'a [String] = self.node(name).map_or(&[], |n| n.protects.as_slice());
        self.cameras
            .iter()
            .filter(move |c| protects.contains(&c.node))
    }

    /// The cameras owned by node `name`, in file order.
    pub fn cameras_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a CameraConfig> + 'a {
        self.cameras.iter().filter(move |c| c.node == name)
    }
}
