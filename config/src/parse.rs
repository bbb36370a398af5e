//! TOML → [`ClusterConfig`]: walks the span-preserving document tree of `toml` so that every error can name the
//! file, the 1-based line, and the key path (`cameras[1].streams.main.url`, `nodes[0].address`).
//!
//! Values of `password` (and the contents of `password_file`) are never copied into an error message.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use std::net::SocketAddr;

use super::{
    check, ArbiterSettings, CameraConfig, ClusterConfig, IngestConfig, NodeConfig, PasswordFile,
    Pins, RecordingConfig, RetentionConfig, Role, Secret, StreamConfig, StreamKind, SyncSettings,
    Takeover, Transport, UdpReorder, WebSettings, DEFAULT_PRIORITY,
};

/// A settings struct read from its table: `from_keys!(t, base, Type { field: read(args), ..., other =
/// expr, })`. Each `field: read(args)` is read from the key of the same name by the [`Table`] method
/// `read` (`int_in`, `u32_in`, `byte_size`) and is `base.field` where the key is absent, so a key is
/// named once; `other = expr` sets a field whose key differs or that needs more (fields are read in
/// the order written, which decides the error reported first).
macro_rules! from_keys {
    ($t:ident, $base:ident, $ty:ident { $($body:tt)* }) => {
        from_keys!(@fields $t $base $ty {} $($body)*)
    };
    (@fields $t:ident $base:ident $ty:ident { $($done:tt)* }) => {
        $ty { $($done)* }
    };
    (@fields $t:ident $base:ident $ty:ident { $($done:tt)* }
        $field:ident: $read:ident($($arg:expr),*), $($rest:tt)*) => {
        from_keys!(@fields $t $base $ty {
            $($done)* $field: $t.$read(stringify!($field), $($arg),*)?.unwrap_or($base.$field),
        } $($rest)*)
    };
    (@fields $t:ident $base:ident $ty:ident { $($done:tt)* }
        $field:ident = $value:expr, $($rest:tt)*) => {
        from_keys!(@fields $t $base $ty { $($done)* $field: $value, } $($rest)*)
    };
}

/// Why a configuration file was refused.
///
/// `Display` gives `FILE:LINE: KEY.PATH: what is wrong` (or `FILE:LINE: unknown key "k" in [table]`,
/// `FILE:LINE: message` for TOML syntax errors, `FILE: cannot read: ...` for I/O errors).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file itself could not be read.
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin}:{line}: invalid TOML: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    /// A key that the configuration does not know (often a typo).
    #[error("{origin}:{line}: unknown key \"{key}\" in {table}")]
    UnknownKey {
        origin: String,
        line: usize,
        key: String,
        /// `[recording]`, `[cameras[0].streams.main]`, or `the top-level table`.
        table: String,
    },
    /// A missing, mistyped or out-of-range value.
    #[error("{origin}:{line}: {path}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        /// Key path, e.g. `cameras[1].name`.
        path: String,
        message: String,
    },
    /// Which node this machine is could not be decided (see [`ClusterConfig::select_node`]), or the
    /// node cannot do what was asked of it.
    #[error("{origin}: {message}")]
    Node { origin: String, message: String },
}

impl ConfigError {
    /// 1-based line of the offending key or value, if the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } | ConfigError::Node { .. } => None,
            ConfigError::Syntax { line, .. }
            | ConfigError::UnknownKey { line, .. }
            | ConfigError::Invalid { line, .. } => Some(*line),
        }
    }

    /// Key path of the offending value (for an unknown key: the path of that key).
    pub fn path(&self) -> Option<String> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } | ConfigError::Node { .. } => {
                None
            }
            ConfigError::UnknownKey { key, table, .. } => {
                let t = table.trim_start_matches('[').trim_end_matches(']');
                if table.starts_with('[') {
                    Some(format!("{t}.{key}"))
                } else {
                    Some(key.clone())
                }
            }
            ConfigError::Invalid { path, .. } => Some(path.clone()),
        }
    }
}

/// Reads and validates the cluster configuration file at `path` (see `config.example.toml`): every node,
/// every camera, every cross-node rule (what `nvr check-config` checks).
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        origin: origin.clone(),
        source,
    })?;
    parse(&text, &origin)
}

/// Parses and validates cluster configuration text. `origin` (usually the file name) prefixes every error
/// message.
///
/// `password_file`s are not read here (they live on their camera's node): see
/// [`ClusterConfig::recorder`].
pub fn parse(text: &str, origin: &str) -> Result<ClusterConfig, ConfigError> {
    let ctx = Ctx { origin, text };
    let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_owned(),
        line: e.span().map_or(1, |s| ctx.line(&s)),
        // `message()` only, not the `Display` of the error: that quotes the source line, which could be the
        // line of a password.
        message: e.message().trim().to_owned(),
    })?;
    let root = Table::new(
        &ctx,
        doc.get_ref(),
        doc.span(),
        String::new(),
        &[
            "identity_dir",
            "recording",
            "ingest",
            "retention",
            "sync",
            "web",
            "arbiter",
            "nodes",
            "cameras",
        ],
    )?;

    let identity_dir = match root.string("identity_dir")? {
        Some(v) => absolute_path(&ctx, &v, "identity_dir")?,
        None => PathBuf::from(DEFAULT_IDENTITY_DIR),
    };
    let recording = root
        .section("recording", parse_recording)?
        .unwrap_or_default();
    let ingest = root.section("ingest", parse_ingest)?.unwrap_or_default();
    let retention = root
        .section("retention", parse_retention)?
        .unwrap_or_default();
    let sync = root
        .section("sync", |t| parse_sync(t, &SyncSettings::default()))?
        .unwrap_or_default();
    let web = root.section("web", parse_web)?.unwrap_or_default();
    let arbiter = root.section("arbiter", parse_arbiter)?;
    let nodes = parse_nodes(&root, &identity_dir, &sync)?;
    let cameras = parse_cameras(&root, ingest.udp_reorder)?;

    check::cluster(origin, &nodes, &cameras)?;
    check::arbiter(origin, arbiter.is_some(), &nodes)?;

    Ok(ClusterConfig {
        origin: origin.to_owned(),
        recording,
        ingest,
        retention,
        sync,
        web,
        arbiter,
        nodes: nodes.into_iter().map(|(n, _)| n).collect(),
        cameras: cameras.into_iter().map(|(c, _)| c).collect(),
    })
}

/// The `[[nodes]]` tables, at least one, each name once.
fn parse_nodes(
    root: &Table<'_, '_>,
    identity_dir: &Path,
    sync: &SyncSettings,
) -> Result<Vec<(NodeConfig, NodeLines)>, ConfigError> {
    let (ctx, origin) = (root.ctx, root.ctx.origin);
    let mut nodes: Vec<(NodeConfig, NodeLines)> = Vec::new();
    for (i, table) in root.array_of_tables("nodes", NODE_KEYS)?.iter().enumerate() {
        let (node, lines) = parse_node(table, i, identity_dir, sync)?;
        if let Some((first, _)) = nodes.iter().find(|(n, _)| n.name == node.name) {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                line: node.line,
                path: table.key_path("name"),
                message: format!(
                    "duplicate node name {:?} (first defined at line {})",
                    node.name, first.line
                ),
            });
        }
        nodes.push((node, lines));
    }
    if nodes.is_empty() {
        return Err(ctx.invalid(
            root.span.clone(),
            "nodes",
            "no nodes: add one [[nodes]] table per node of the cluster",
        ));
    }
    Ok(nodes)
}

/// The `[[cameras]]` tables, each name once.
fn parse_cameras(
    root: &Table<'_, '_>,
    udp_reorder: UdpReorder,
) -> Result<Vec<(CameraConfig, CameraLines)>, ConfigError> {
    let origin = root.ctx.origin;
    let mut cameras: Vec<(CameraConfig, CameraLines)> = Vec::new();
    for (i, table) in root
        .array_of_tables("cameras", CAMERA_KEYS)?
        .iter()
        .enumerate()
    {
        let (cam, lines) = parse_camera(table, i, udp_reorder)?;
        if let Some((_, first)) = cameras.iter().find(|(c, _)| c.name == cam.name) {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                line: lines.name,
                path: table.key_path("name"),
                message: format!(
                    "duplicate camera name {:?} (first defined at line {})",
                    cam.name, first.name
                ),
            });
        }
        cameras.push((cam, lines));
    }
    Ok(cameras)
}

/// Where `nvr-sync keygen` is told to write a node's identity unless the file says otherwise.
const DEFAULT_IDENTITY_DIR: &str = "/etc/nvr/identity";

const SYNC_KEYS: &[&str] = &[
    "head_interval_ms",
    "reconcile_interval_ms",
    "scrub_interval_ms",
    "scrub_bytes_per_s",
    "bandwidth_bytes_per_s",
    "tamper_threshold_files",
    "tamper_window_ms",
    "tamper_queue_events",
    "stall_alarm_ms",
    "mirror_quota_bytes",
    "staging_expire_ms",
];

/// The `[sync]` keys a node may override in `[nodes.sync]`: those that depend on its disk and link.
const NODE_SYNC_KEYS: &[&str] = &[
    "scrub_interval_ms",
    "scrub_bytes_per_s",
    "bandwidth_bytes_per_s",
    "mirror_quota_bytes",
];

const NODE_KEYS: &[&str] = &[
    "name",
    "role",
    "data_dir",
    "identity_dir",
    "address",
    "listen",
    "cert_sha256",
    "signing_public_key",
    "protects",
    "sync",
    "arbiter_address",
    "capacity_streams",
    "web_url",
    "capacity_mbps",
    "arbiter_listen",
];

const CAMERA_KEYS: &[&str] = &[
    "name",
    "node",
    "username",
    "password",
    "password_file",
    "transport",
    "udp_reorder_max_packets",
    "udp_reorder_max_delay_ms",
    "takeover",
    "priority",
    "bitrate_kbps",
    "streams",
];

const ARBITER_KEYS: &[&str] = &[
    "heartbeat_interval_ms",
    "node_dead_ms",
    "stream_failed_ms",
    "failback_hold_ms",
];

/// `[arbiter]`: every timing in range, and a node declared dead only after several missed heartbeats.
fn parse_arbiter(t: &Table<'_, '_>) -> Result<ArbiterSettings, ConfigError> {
    let d = ArbiterSettings::default();
    let a = from_keys!(
        t,
        d,
        ArbiterSettings {
            heartbeat_interval_ms: int_in(20, 10_000),
            node_dead_ms: int_in(100, 600_000),
            stream_failed_ms: int_in(100, 600_000),
            failback_hold_ms: int_in(0, 86_400_000),
        }
    );
    if a.node_dead_ms < 3 * a.heartbeat_interval_ms {
        let span = t
            .get("node_dead_ms")
            .or_else(|| t.get("heartbeat_interval_ms"))
            .map_or_else(|| t.span.clone(), |v| v.span());
        return Err(t.ctx.invalid(
            span,
            t.key_path("node_dead_ms"),
            format!(
                "{} ms is less than three heartbeats of {} ms: one late packet would declare a node dead",
                a.node_dead_ms, a.heartbeat_interval_ms
            ),
        ));
    }
    Ok(a)
}

/// Upper bound of the sync intervals: one week.
const MAX_SYNC_MS: u64 = 7 * 86_400_000;

/// `[sync]`, or a node's `[nodes.sync]` over the cluster's `base`.
fn parse_sync(t: &Table<'_, '_>, base: &SyncSettings) -> Result<SyncSettings, ConfigError> {
    Ok(from_keys!(
        t,
        base,
        SyncSettings {
            head_interval_ms: int_in(1, MAX_SYNC_MS),
            reconcile_interval_ms: int_in(1, MAX_SYNC_MS),
            scrub_interval_ms: int_in(0, MAX_SYNC_MS),
            scrub_bytes_per_s: byte_size(false),
            bandwidth_bytes_per_s: byte_size(true),
            tamper_threshold_files: u32_in(1, 1_000_000),
            tamper_window_ms: int_in(1, MAX_SYNC_MS),
            tamper_queue_events: u32_in(1, 1_000_000),
            stall_alarm_ms: int_in(1, MAX_SYNC_MS),
            mirror_quota_bytes: byte_size(true),
            staging_expire_ms: int_in(1, MAX_SYNC_MS),
        }
    ))
}

const WEB_KEYS: &[&str] = &[
    "listen",
    "plain_http",
    "cert_file",
    "key_file",
    "session_secret_file",
    "state_dir",
    "session_ttl_s",
    "max_live_streams",
    "users_file",
];

fn parse_web(t: &Table<'_, '_>) -> Result<WebSettings, ConfigError> {
    let d = WebSettings::default();
    let path_of = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        match t.string(key)? {
            Some(v) => absolute_path(t.ctx, &v, &t.key_path(key)).map(Some),
            None => Ok(None),
        }
    };
    let cert_file = path_of("cert_file")?;
    let key_file = path_of("key_file")?;
    if cert_file.is_some() != key_file.is_some() {
        let present = if cert_file.is_some() {
            "cert_file"
        } else {
            "key_file"
        };
        return Err(t.invalid_key(
            present,
            "cert_file and key_file go together: give both, or neither for a self-signed certificate",
        ));
    }
    Ok(from_keys!(t, d, WebSettings {
        listen = socket_address(t, "listen")?.map_or(d.listen, |(a, _)| a),
        plain_http: boolean(),
        cert_file = cert_file,
        key_file = key_file,
        session_secret_file = path_of("session_secret_file")?,
        state_dir = path_of("state_dir")?.unwrap_or(d.state_dir),
        session_ttl_s: int_in(60, 30 * 86_400),
        max_live_streams: u32_in(1, 60),
        users_file = path_of("users_file")?,
    }))
}

/// A viewer's address as browsers reach it, reduced to its origin (`https://host:port`, a trailing `/`
/// dropped, the scheme's default port left out, as a browser's `Origin` header has it).
pub fn web_origin(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e}): {text:?}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "must be an https:// (or http://) URL, got {text:?}"
        ));
    }
    if url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "must be the viewer's origin only, scheme://host:port (no user, path or query), got {text:?}"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

fn absolute_path(ctx: &Ctx<'_>, v: &Spanned<String>, path: &str) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(v.get_ref());
    if v.get_ref().is_empty() || !p.is_absolute() {
        return Err(ctx.invalid(
            v.span(),
            path,
            format!("must be an absolute path, got {:?}", v.get_ref()),
        ));
    }
    Ok(p)
}

/// A socket address `IP:PORT` with a non-zero port.
fn socket_address(
    t: &Table<'_, '_>,
    key: &str,
) -> Result<Option<(SocketAddr, usize)>, ConfigError> {
    let Some(v) = t.string(key)? else {
        return Ok(None);
    };
    let addr: SocketAddr = v.get_ref().parse().map_err(|_| {
        t.ctx.invalid(
            v.span(),
            t.key_path(key),
            format!(
                "{:?} is not an IP address and port (e.g. \"192.0.2.20:7443\" or \"[2001:db8::20]:7443\")",
                v.get_ref()
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(t.ctx.invalid(
            v.span(),
            t.key_path(key),
            format!("{:?}: port must not be 0", v.get_ref()),
        ));
    }
    Ok(Some((addr, t.ctx.line(&v.span()))))
}

/// A pin: 64 hex digits (stored lower-case).
fn pin(t: &Table<'_, '_>, key: &str) -> Result<Option<(String, usize)>, ConfigError> {
    let Some(v) = t.string(key)? else {
        return Ok(None);
    };
    let s = v.get_ref();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(t.ctx.invalid(
            v.span(),
            t.key_path(key),
            format!(
                "must be 64 hex digits (as printed by `nvr-sync keygen`), got {} characters{}",
                s.len(),
                if s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ""
                } else {
                    " with a non-hex digit"
                }
            ),
        ));
    }
    Ok(Some((s.to_ascii_lowercase(), t.ctx.line(&v.span()))))
}

/// Lines of a node's keys, for the cross-node checks.
pub(crate) struct NodeLines {
    /// `nodes[i]`.
    pub path: String,
    pub address: usize,
    pub listen: usize,
    pub cert_sha256: usize,
    pub signing_public_key: usize,
    /// Line of each `protects` entry.
    pub protects: Vec<usize>,
    pub arbiter_address: usize,
    pub web_url: usize,
}

/// Lines of a camera's keys, for the cross-node checks.
pub(crate) struct CameraLines {
    /// `cameras[i]`.
    pub path: String,
    pub name: usize,
    pub node: usize,
}

fn parse_node(
    t: &Table<'_, '_>,
    index: usize,
    cluster_identity_dir: &Path,
    cluster_sync: &SyncSettings,
) -> Result<(NodeConfig, NodeLines), ConfigError> {
    let ctx = t.ctx;
    let name = t.string("name")?.ok_or_else(|| t.missing("name"))?;
    check_name(ctx, &name, &t.key_path("name"))?;
    let line = ctx.line(&name.span());

    let role = t
        .choice(
            "role",
            &[
                ("primary", Role::Primary),
                ("standby", Role::Standby),
                ("witness", Role::Witness),
            ],
        )?
        .ok_or_else(|| t.missing("role"))?;
    let data_dir = match t.string("data_dir")? {
        Some(v) => absolute_path(ctx, &v, &t.key_path("data_dir"))?,
        None => return Err(t.missing("data_dir")),
    };
    let identity_dir = match t.string("identity_dir")? {
        Some(v) => absolute_path(ctx, &v, &t.key_path("identity_dir"))?,
        None => cluster_identity_dir.to_owned(),
    };
    let address = socket_address(t, "address")?;
    let listen = socket_address(t, "listen")?;
    let arbiter_address = socket_address(t, "arbiter_address")?;
    let arbiter_listen = socket_address(t, "arbiter_listen")?;
    if arbiter_listen.is_some() && arbiter_address.is_none() {
        return Err(t.invalid_key(
            "arbiter_listen",
            "needs arbiter_address (where the peers reach this arbiter)",
        ));
    }
    let capacity_streams = t.u32_in("capacity_streams", 0, 100_000)?;
    let (web_url, web_url_line) = match t.string("web_url")? {
        Some(v) => (
            Some(
                web_origin(v.get_ref())
                    .map_err(|message| ctx.invalid(v.span(), t.key_path("web_url"), message))?,
            ),
            ctx.line(&v.span()),
        ),
        None => (None, line),
    };
    let capacity_mbps = t.u32_in("capacity_mbps", 1, 1_000_000)?;
    let pins = parse_pins(t)?;

    let (protects, protects_lines) = parse_protects(t)?;
    check_role_keys(t, role, address.is_some(), &protects)?;

    let sync = match t.get("sync") {
        None => *cluster_sync,
        Some(v) => {
            let DeValue::Table(st) = v.get_ref() else {
                return Err(t.wrong_type("sync", v, "a table"));
            };
            let st = Table::new(ctx, st, v.span(), t.key_path("sync"), NODE_SYNC_KEYS)?;
            parse_sync(&st, cluster_sync)?
        }
    };

    Ok((
        NodeConfig {
            name: name.into_inner(),
            role,
            data_dir,
            identity_dir,
            address: address.map(|(a, _)| a),
            listen: listen.map(|(a, _)| a),
            pins: pins.as_ref().map(|(p, _, _)| p.clone()),
            protects,
            sync,
            arbiter_address: arbiter_address.map(|(a, _)| a),
            arbiter_listen: arbiter_listen.map(|(a, _)| a),
            capacity_streams,
            web_url,
            capacity_mbps,
            line,
        },
        NodeLines {
            path: format!("nodes[{index}]"),
            address: address.map_or(line, |(_, l)| l),
            listen: listen.or(address).map_or(line, |(_, l)| l),
            cert_sha256: pins.as_ref().map_or(line, |(_, l, _)| *l),
            signing_public_key: pins.as_ref().map_or(line, |(_, _, l)| *l),
            protects: protects_lines,
            arbiter_address: arbiter_address.map_or(line, |(_, l)| l),
            web_url: web_url_line,
        },
    ))
}

/// A node's pins (both keys or neither), with the line of each key.
fn parse_pins(t: &Table<'_, '_>) -> Result<Option<(Pins, usize, usize)>, ConfigError> {
    match (pin(t, "cert_sha256")?, pin(t, "signing_public_key")?) {
        (Some((cert_sha256, cert_line)), Some((signing_public_key, key_line))) => Ok(Some((
            Pins {
                cert_sha256,
                signing_public_key,
            },
            cert_line,
            key_line,
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(t.missing("signing_public_key")),
        (None, Some(_)) => Err(t.missing("cert_sha256")),
    }
}

/// A standby's `protects`: node names, each once, with their lines.
fn parse_protects(t: &Table<'_, '_>) -> Result<(Vec<String>, Vec<usize>), ConfigError> {
    let ctx = t.ctx;
    let mut protects = Vec::new();
    let mut protects_lines = Vec::new();
    if let Some(v) = t.get("protects") {
        let path = t.key_path("protects");
        let DeValue::Array(items) = v.get_ref() else {
            return Err(t.wrong_type("protects", v, "an array of node names"));
        };
        for (j, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{j}]");
            let DeValue::String(s) = item.get_ref() else {
                return Err(ctx.invalid(
                    item.span(),
                    item_path,
                    format!("expected a node name, got {}", item.get_ref().type_str()),
                ));
            };
            let s = Spanned::new(item.span(), s.to_string());
            check_name(ctx, &s, &item_path)?;
            if protects.contains(s.get_ref()) {
                return Err(ctx.invalid(
                    item.span(),
                    item_path,
                    format!("{:?} is listed twice", s.get_ref()),
                ));
            }
            protects_lines.push(ctx.line(&item.span()));
            protects.push(s.into_inner());
        }
    }
    Ok((protects, protects_lines))
}

/// Keys that only one role uses are refused on the other: no key is silently ignored.
fn check_role_keys(
    t: &Table<'_, '_>,
    role: Role,
    has_address: bool,
    protects: &[String],
) -> Result<(), ConfigError> {
    let standby_only: &[&str] = &[
        "address",
        "listen",
        "protects",
        "capacity_streams",
        "capacity_mbps",
    ];
    match role {
        Role::Primary | Role::Witness => {
            if let Some(k) = standby_only.iter().find(|k| t.get(k).is_some()) {
                return Err(t.invalid_key(
                    k,
                    format!("only a standby has {k} (this node is a {})", role.as_str()),
                ));
            }
            if role == Role::Witness && t.get("sync").is_some() {
                return Err(t.invalid_key("sync", "a witness runs no sync agent"));
            }
        }
        Role::Standby => {
            if !has_address {
                return Err(t.ctx.invalid(
                    t.span.clone(),
                    t.key_path("address"),
                    "missing (required on a standby: where primaries reach its sync agent)",
                ));
            }
            if protects.is_empty() {
                return Err(t.invalid_key(
                    "protects",
                    "a standby must protect at least one primary (protects = [\"nvr-a\"])",
                ));
            }
        }
    }
    Ok(())
}

fn parse_recording(t: &Table<'_, '_>) -> Result<RecordingConfig, ConfigError> {
    let d = RecordingConfig::default();
    Ok(from_keys!(t, d, RecordingConfig {
        segment_duration_ms = t
            .int_in("segment_duration_s", 1, 3_600)?
            .map_or(d.segment_duration_ms, |s| s * 1_000),
        flush_interval_ms: int_in(1, 60_000),
        fragment_max_ms: int_in(100, 10_000),
        shadow_ring_ms: int_in(1_000, 60_000),
        shadow_ring_max_bytes: byte_size(false),
    }))
}

/// Upper bound of the ingest timeouts and delays: one hour.
const MAX_MS: u64 = 3_600_000;
/// Upper bound of `udp_recv_buffer_bytes`: 1 GiB.
const MAX_UDP_RECV_BUFFER_BYTES: u64 = 1 << 30;

/// `"FIRST-LAST"`: an inclusive range of ports with room for at least one RTP/RTCP pair (an even
/// port and the one after it).
fn parse_port_range(t: &Table<'_, '_>, key: &str) -> Result<Option<(u16, u16)>, ConfigError> {
    let Some(v) = t.string(key)? else {
        return Ok(None);
    };
    let parsed = v
        .get_ref()
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((first, last)) if first >= 1024 && first < last && first.div_ceil(2) * 2 < last => {
            Ok(Some((first, last)))
        }
        _ => Err(t.ctx.invalid(
            v.span(),
            t.key_path(key),
            format!(
                "must be \"FIRST-LAST\" with 1024 <= FIRST < LAST <= 65535 and room for an even port and the next one, got {:?}",
                v.get_ref()
            ),
        )),
    }
}

/// Upper bound of `udp_reorder_max_packets`: 1024 packets, about 1.5 MB of ordinary RTP packets
/// (the reorder buffer is scanned linearly, so it is meant to stay small).
const MAX_UDP_REORDER_PACKETS: u64 = 1024;
/// Upper bound of `udp_reorder_max_delay_ms`: a lost packet holds up its successors this long.
const MAX_UDP_REORDER_DELAY_MS: u64 = 1000;

/// `udp_reorder_max_packets` and `udp_reorder_max_delay_ms` of `t`, each `base`'s when absent.
fn parse_udp_reorder(t: &Table<'_, '_>, base: UdpReorder) -> Result<UdpReorder, ConfigError> {
    Ok(UdpReorder {
        max_packets: t
            .u32_in("udp_reorder_max_packets", 0, MAX_UDP_REORDER_PACKETS)?
            .unwrap_or(base.max_packets),
        max_delay_ms: t
            .int_in("udp_reorder_max_delay_ms", 1, MAX_UDP_REORDER_DELAY_MS)?
            .unwrap_or(base.max_delay_ms),
    })
}

fn parse_ingest(t: &Table<'_, '_>) -> Result<IngestConfig, ConfigError> {
    let d = IngestConfig::default();
    let c = from_keys!(t, d, IngestConfig {
        connect_timeout_ms: int_in(1, MAX_MS),
        frame_timeout_ms: int_in(1, MAX_MS),
        backoff_initial_ms: int_in(1, MAX_MS),
        backoff_max_ms: int_in(1, MAX_MS),
        udp_recv_buffer_bytes: byte_size_at_most(MAX_UDP_RECV_BUFFER_BYTES, "1 GiB"),
        udp_port_range = parse_port_range(t, "udp_port_range")?,
        udp_reorder = parse_udp_reorder(t, d.udp_reorder)?,
    });
    if c.backoff_initial_ms > c.backoff_max_ms {
        // Point at whichever of the two keys is written (the initial one if both are).
        let key = if t.get("backoff_initial_ms").is_some() {
            "backoff_initial_ms"
        } else {
            "backoff_max_ms"
        };
        return Err(t.invalid_key(
            key,
            format!(
                "backoff_initial_ms ({}) must not exceed backoff_max_ms ({})",
                c.backoff_initial_ms, c.backoff_max_ms
            ),
        ));
    }
    Ok(c)
}

/// Upper bound of `max_age_days`: 100 years.
const MAX_AGE_DAYS: u64 = 36_500;

fn parse_retention(t: &Table<'_, '_>) -> Result<RetentionConfig, ConfigError> {
    let d = RetentionConfig::default();
    Ok(RetentionConfig {
        max_age_days: t.int_in("max_age_days", 1, MAX_AGE_DAYS)?,
        max_bytes_per_stream: t.byte_size("max_bytes_per_stream", false)?,
        min_free_bytes: t
            .byte_size("min_free_bytes", true)?
            .unwrap_or(d.min_free_bytes),
        interval_ms: t
            .int_in("interval_s", 1, 86_400)?
            .map_or(d.interval_ms, |s| s * 1_000),
    })
}

/// Returns the camera and the lines of its keys.
fn parse_camera(
    t: &Table<'_, '_>,
    index: usize,
    udp_reorder: UdpReorder,
) -> Result<(CameraConfig, CameraLines), ConfigError> {
    let ctx = t.ctx;
    let name = t.string("name")?.ok_or_else(|| t.missing("name"))?;
    check_name(ctx, &name, &t.key_path("name"))?;
    let name_line = ctx.line(&name.span());

    let node = t.string("node")?.ok_or_else(|| t.missing("node"))?;
    check_name(ctx, &node, &t.key_path("node"))?;
    let node_line = ctx.line(&node.span());

    let (username, password, password_file) = parse_credentials(t)?;

    let transport = t
        .choice(
            "transport",
            &[
                ("tcp", Transport::Tcp),
                ("udp", Transport::Udp),
                ("auto", Transport::Auto),
            ],
        )?
        .unwrap_or(Transport::Tcp);

    let udp_reorder = parse_udp_reorder(t, udp_reorder)?;
    if transport == Transport::Tcp {
        if let Some(key) = ["udp_reorder_max_packets", "udp_reorder_max_delay_ms"]
            .into_iter()
            .find(|k| t.get(k).is_some())
        {
            return Err(t.invalid_key(
                key,
                "applies to RTP over UDP only, but this camera's transport is \"tcp\" (set transport = \"udp\" or \"auto\", or remove the key)",
            ));
        }
    }

    let takeover = t
        .choice(
            "takeover",
            &[("hot", Takeover::Hot), ("cold", Takeover::Cold)],
        )?
        .unwrap_or(Takeover::Hot);
    let priority = t
        .u32_in("priority", 0, 1_000_000)?
        .unwrap_or(DEFAULT_PRIORITY);
    let bitrate_kbps = t.u32_in("bitrate_kbps", 1, 10_000_000)?;

    let streams = parse_streams(t)?;

    Ok((
        CameraConfig {
            name: name.into_inner(),
            node: node.into_inner(),
            username,
            password,
            password_file,
            transport,
            udp_reorder,
            takeover,
            priority,
            bitrate_kbps,
            streams,
        },
        CameraLines {
            path: format!("cameras[{index}]"),
            name: name_line,
            node: node_line,
        },
    ))
}

/// A camera's `username`, `password` and `password_file`.
type Credentials = (Option<String>, Option<Secret>, Option<PasswordFile>);

/// A camera's `username` and its password, given in the file or as a `password_file` (not both).
fn parse_credentials(t: &Table<'_, '_>) -> Result<Credentials, ConfigError> {
    let ctx = t.ctx;
    let username = match t.string("username")? {
        Some(u) if u.get_ref().is_empty() => {
            return Err(ctx.invalid(u.span(), t.key_path("username"), "must not be empty"))
        }
        Some(u) => Some(u.into_inner()),
        None => None,
    };

    let (password, password_file) = match (t.get("password"), t.get("password_file")) {
        (Some(_), Some(f)) => {
            return Err(ctx.invalid(
                f.span(),
                t.key_path("password_file"),
                "password and password_file are both set; use one",
            ))
        }
        (Some(_), None) => (t.string("password")?.map(|p| Secret(p.into_inner())), None),
        (None, Some(_)) => match t.string("password_file")? {
            Some(f) => (None, Some(password_file_of(t, &f)?)),
            None => (None, None),
        },
        (None, None) => (None, None),
    };
    if (password.is_some() || password_file.is_some()) && username.is_none() {
        let key = if t.get("password").is_some() {
            "password"
        } else {
            "password_file"
        };
        return Err(t.invalid_key(key, "a password is set but username is not"));
    }
    Ok((username, password, password_file))
}

const NO_STREAMS: &str =
    "camera has no streams (add [cameras.streams.main] and/or [cameras.streams.sub])";

/// A camera's `[cameras.streams.main]` and `[cameras.streams.sub]`, at least one.
fn parse_streams(t: &Table<'_, '_>) -> Result<Vec<StreamConfig>, ConfigError> {
    let ctx = t.ctx;
    let streams_path = t.key_path("streams");
    let mut streams = Vec::new();
    match t.get("streams") {
        None => return Err(ctx.invalid(t.span.clone(), streams_path, NO_STREAMS)),
        Some(v) => {
            let DeValue::Table(st) = v.get_ref() else {
                return Err(ctx.invalid(
                    v.span(),
                    streams_path,
                    format!("expected a table, got {}", v.get_ref().type_str()),
                ));
            };
            // Unknown stream names first, by position.
            if let Some((k, _)) = st
                .iter()
                .filter(|(k, _)| !matches!(k.get_ref().as_ref(), "main" | "sub"))
                .min_by_key(|(k, _)| k.span().start)
            {
                return Err(ctx.invalid(
                    k.span(),
                    format!("{streams_path}.{}", k.get_ref()),
                    format!(
                        "unknown stream {:?}; streams must be \"main\" or \"sub\"",
                        k.get_ref()
                    ),
                ));
            }
            for kind in [StreamKind::Main, StreamKind::Sub] {
                let Some((_, sv)) = st.iter().find(|(k, _)| k.get_ref() == kind.as_str()) else {
                    continue;
                };
                let path = format!("{streams_path}.{}", kind.as_str());
                let DeValue::Table(s) = sv.get_ref() else {
                    return Err(ctx.invalid(
                        sv.span(),
                        path,
                        format!("expected a table, got {}", sv.get_ref().type_str()),
                    ));
                };
                let table = Table::new(
                    ctx,
                    s,
                    sv.span(),
                    path,
                    &["url", "record", "max_age_days", "max_bytes"],
                )?;
                streams.push(parse_stream(&table, kind)?);
            }
            if streams.is_empty() {
                return Err(ctx.invalid(v.span(), streams_path, NO_STREAMS));
            }
        }
    }
    Ok(streams)
}

fn password_file_of(t: &Table<'_, '_>, f: &Spanned<String>) -> Result<PasswordFile, ConfigError> {
    let key = t.key_path("password_file");
    let path = absolute_path(t.ctx, f, &key)?;
    Ok(PasswordFile {
        path,
        line: t.ctx.line(&f.span()),
        key,
    })
}

/// Reads a camera's `password_file` (a trailing newline is trimmed; an empty password is refused).
pub(crate) fn read_password_file(origin: &str, f: &PasswordFile) -> Result<Secret, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        line: f.line,
        path: f.key.clone(),
        message,
    };
    let contents = std::fs::read_to_string(&f.path)
        .map_err(|e| invalid(format!("cannot read {:?}: {e}", f.path)))?;
    let pw = contents.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(invalid(format!("{:?} is empty", f.path)));
    }
    Ok(Secret(pw.to_owned()))
}

fn parse_stream(t: &Table<'_, '_>, kind: StreamKind) -> Result<StreamConfig, ConfigError> {
    let ctx = t.ctx;
    let u = t.string("url")?.ok_or_else(|| t.missing("url"))?;
    let path = t.key_path("url");
    // The URL text is never echoed: it might carry credentials.
    let url = url::Url::parse(u.get_ref())
        .map_err(|e| ctx.invalid(u.span(), path.clone(), format!("invalid URL: {e}")))?;
    if url.scheme() != "rtsp" {
        return Err(ctx.invalid(
            u.span(),
            path,
            format!("scheme must be rtsp, got {:?}", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ctx.invalid(
            u.span(),
            path,
            "credentials must not be embedded in the URL (they would end up in logs); \
             use the camera's username and password or password_file",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ctx.invalid(u.span(), path, "URL has no host"));
    }
    Ok(StreamConfig {
        kind,
        url,
        record: t.boolean("record")?.unwrap_or(true),
        max_age_days: t.int_in("max_age_days", 1, MAX_AGE_DAYS)?,
        max_bytes: t.byte_size("max_bytes", false)?,
    })
}

/// The one name rule of [`base::names`].
fn check_name(ctx: &Ctx<'_>, v: &Spanned<String>, path: &str) -> Result<(), ConfigError> {
    base::names::check(v.get_ref()).map_err(|e| match e {
        base::names::NameError::Empty => ctx.invalid(v.span(), path, "must not be empty"),
        other => ctx.invalid(v.span(), path, other.to_string()),
    })
}

/// Parses a byte size: a plain integer (bytes) or an integer followed by an optional space and a unit:
/// `B`, `KB`/`kB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
///
/// ```
/// assert_eq!(cluster_config::parse_byte_size("1 GiB"), Ok(1 << 30));
/// assert_eq!(cluster_config::parse_byte_size("5MB"), Ok(5_000_000));
/// ```
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "invalid byte size {s:?}: expected an integer and an optional unit, e.g. \"500 GiB\""
        ));
    }
    let mult: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "invalid byte size {s:?}: unknown unit {other:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid byte size {s:?}: number too large"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid byte size {s:?}: too large"))
}

struct Ctx<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    /// 1-based line of the start of `span`.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(
        &self,
        span: Range<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: self.line(&span),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One TOML table being read, with its key path; refuses unknown keys on construction.
struct Table<'a, 'i> {
    ctx: &'a Ctx<'a>,
    table: &'a DeTable<'i>,
    span: Range<usize>,
    /// Empty for the root table.
    path: String,
}

impl<'a, 'i> Table<'a, 'i> {
    fn new(
        ctx: &'a Ctx<'a>,
        table: &'a DeTable<'i>,
        span: Range<usize>,
        path: String,
        allowed: &[&str],
    ) -> Result<Self, ConfigError> {
        // Report the first unknown key in file order (the map itself is sorted by key).
        if let Some((k, _)) = table
            .iter()
            .filter(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
            .min_by_key(|(k, _)| k.span().start)
        {
            return Err(ConfigError::UnknownKey {
                origin: ctx.origin.to_owned(),
                line: ctx.line(&k.span()),
                key: k.get_ref().to_string(),
                table: if path.is_empty() {
                    "the top-level table".to_owned()
                } else {
                    format!("[{path}]")
                },
            });
        }
        Ok(Table {
            ctx,
            table,
            span,
            path,
        })
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    /// An error about `key`, at its line (the table's where the key is absent).
    fn invalid_key(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let span = self
            .get(key)
            .map_or_else(|| self.span.clone(), |v| v.span());
        self.ctx.invalid(span, self.key_path(key), message)
    }

    /// A string that must be one of `choices` (each its spelling in the file and its value).
    fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<Option<T>, ConfigError> {
        let Some(v) = self.string(key)? else {
            return Ok(None);
        };
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == v.get_ref()) {
            return Ok(Some(*value));
        }
        let mut names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        let last = names.pop().unwrap_or_default();
        let expected = if names.is_empty() {
            last
        } else {
            format!("{} or {last}", names.join(", "))
        };
        Err(self.ctx.invalid(
            v.span(),
            self.key_path(key),
            format!("must be {expected}, got {:?}", v.get_ref()),
        ))
    }

    /// The sub-table `key` read by `parse`, if present.
    fn section<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&Table<'a, 'i>) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.table(key)?.map(|t| parse(&t)).transpose()
    }

    fn missing(&self, key: &str) -> ConfigError {
        self.ctx
            .invalid(self.span.clone(), self.key_path(key), "missing (required)")
    }

    fn wrong_type(&self, key: &str, v: &Spanned<DeValue<'_>>, expected: &str) -> ConfigError {
        // Only the type is named, never the value (it could be a password).
        self.ctx.invalid(
            v.span(),
            self.key_path(key),
            format!("expected {expected}, got {}", v.get_ref().type_str()),
        )
    }

    fn string(&self, key: &str) -> Result<Option<Spanned<String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Ok(Some(Spanned::new(v.span(), s.to_string()))),
                _ => Err(self.wrong_type(key, v, "a string")),
            },
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => Ok(Some(*b)),
                _ => Err(self.wrong_type(key, v, "true or false")),
            },
        }
    }

    fn table(&self, key: &str) -> Result<Option<Table<'a, 'i>>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "a table"));
        };
        let allowed: &[&str] = match key {
            "recording" => &[
                "segment_duration_s",
                "flush_interval_ms",
                "fragment_max_ms",
                "shadow_ring_ms",
                "shadow_ring_max_bytes",
            ],
            "ingest" => &[
                "connect_timeout_ms",
                "frame_timeout_ms",
                "backoff_initial_ms",
                "backoff_max_ms",
                "udp_recv_buffer_bytes",
                "udp_port_range",
                "udp_reorder_max_packets",
                "udp_reorder_max_delay_ms",
            ],
            "retention" => &[
                "max_age_days",
                "max_bytes_per_stream",
                "min_free_bytes",
                "interval_s",
            ],
            "sync" => SYNC_KEYS,
            "web" => WEB_KEYS,
            "arbiter" => ARBITER_KEYS,
            _ => &[],
        };
        Table::new(self.ctx, t, v.span(), self.key_path(key), allowed).map(Some)
    }

    /// The tables of an array of tables (`[[nodes]]`), each checked for unknown keys; none if absent.
    fn array_of_tables(
        &self,
        key: &str,
        allowed: &[&str],
    ) -> Result<Vec<Table<'a, 'i>>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let DeValue::Array(arr) = v.get_ref() else {
            return Err(self.ctx.invalid(
                v.span(),
                self.key_path(key),
                format!(
                    "expected an array of tables ([[{key}]]), got {}",
                    v.get_ref().type_str()
                ),
            ));
        };
        let mut out = Vec::new();
        for (i, item) in arr.iter().enumerate() {
            let path = format!("{}[{i}]", self.key_path(key));
            let DeValue::Table(t) = item.get_ref() else {
                return Err(self.ctx.invalid(
                    item.span(),
                    path,
                    format!("expected a table, got {}", item.get_ref().type_str()),
                ));
            };
            out.push(Table::new(self.ctx, t, item.span(), path, allowed)?);
        }
        Ok(out)
    }

    /// An integer in `min..=max`.
    fn int_in(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Integer(i) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "an integer"));
        };
        let n = i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| self.wrong_type(key, v, "an integer"))?;
        if n < i128::from(min) || n > i128::from(max) {
            return Err(self.ctx.invalid(
                v.span(),
                self.key_path(key),
                format!("must be between {min} and {max}, got {n}"),
            ));
        }
        // In range, so it fits.
        Ok(Some(u64::try_from(n).unwrap_or(max)))
    }

    /// An integer in `min..=max` (at most `u32::MAX`).
    fn u32_in(&self, key: &str, min: u64, max: u64) -> Result<Option<u32>, ConfigError> {
        Ok(self
            .int_in(key, min, max)?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// A byte size above zero and at most `max` (`max_text` in words, for the message).
    fn byte_size_at_most(
        &self,
        key: &str,
        max: u64,
        max_text: &str,
    ) -> Result<Option<u64>, ConfigError> {
        match self.byte_size(key, false)? {
            Some(n) if n > max => {
                Err(self.invalid_key(key, format!("at most {max} bytes ({max_text}), got {n}")))
            }
            n => Ok(n),
        }
    }

    /// A byte size: an integer (bytes) or a string with a unit. Zero is refused unless `zero_ok`.
    fn byte_size(&self, key: &str, zero_ok: bool) -> Result<Option<u64>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    self.ctx.invalid(
                        v.span(),
                        self.key_path(key),
                        format!("invalid byte size {i}: must not be negative"),
                    )
                })?,
            DeValue::String(s) => {
                parse_byte_size(s).map_err(|m| self.ctx.invalid(v.span(), self.key_path(key), m))?
            }
            _ => {
                return Err(self.wrong_type(
                    key,
                    v,
                    "a byte size (an integer or a string such as \"500 GiB\")",
                ))
            }
        };
        if n == 0 && !zero_ok {
            return Err(self.ctx.invalid(
                v.span(),
                self.key_path(key),
                "must be greater than zero (omit the key for no limit)",
            ));
        }
        Ok(Some(n))
    }
}
