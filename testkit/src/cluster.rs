//! The failover rig: nodes (a primary and its standby, or several primaries and one standby) on
//! loopback, each with its recorder (`nvr run`), sync agent (`nvr-sync run`) and arbiter
//! (`nvr-arbiter run`), all reading one cluster file; the camera simulator (`nvr camsim`) with frame
//! stamps. Used by the arbiter's tests and by `nvr-failover-bench`.
//!
//! Node identities are generated with `nvr-sync keygen` (a process, like everything under test). The
//! `nvr`, `nvr-sync` and `nvr-arbiter` binaries must be built (`cargo build --workspace --bins`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{free_port, nvr_sync_bin, run_nvr, wait_until, workspace_bin, NvrProcess, TestDir};

pub const PRIMARY: &str = "node-a";
pub const STANDBY: &str = "node-s";

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A node's identity (generated in `<dir>/identity-<node>`), its public pins, data directory and
/// listening addresses.
pub struct Node {
    pub name: String,
    pub identity_dir: PathBuf,
    /// `cert_sha256` and `signing_public_key` as `nvr-sync keygen` prints them.
    pub cert_sha256: String,
    pub signing_public_key: String,
    pub data: PathBuf,
    pub arbiter: String,
    pub sync: String,
    /// Where peers reach this node's arbiter when that is not `arbiter` (a proxy in front of it): the
    /// cluster file's `arbiter_address`, with `arbiter_listen = arbiter`.
    pub arbiter_public: Option<String>,
    /// Likewise for a standby's sync agent: its `address`, with `listen = sync`.
    pub sync_public: Option<String>,
}

/// Generates node `name`'s identity with `nvr-sync keygen` and picks its ports.
pub fn node(dir: &TestDir, name: &str) -> Node {
    let identity_dir = dir.join(format!("identity-{name}"));
    let out = std::process::Command::new(nvr_sync_bin())
        .args(["keygen", "--dir", &path_str(&identity_dir), "--node", name])
        .output()
        .expect("run nvr-sync keygen");
    assert!(
        out.status.success(),
        "nvr-sync keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_prefix('=').map(str::trim))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no {key} in nvr-sync keygen's output: {stdout}"))
    };
    Node {
        name: name.to_owned(),
        cert_sha256: value("cert_sha256"),
        signing_public_key: value("signing_public_key"),
        identity_dir,
        data: dir.join(format!("data-{name}")),
        arbiter: format!("127.0.0.1:{}", free_port()),
        sync: format!("127.0.0.1:{}", free_port()),
        arbiter_public: None,
        sync_public: None,
    }
}

/// A camera of a test cluster: name, URL, its primary, takeover mode, priority, and the bitrate
/// assumed until one is measured (`bitrate_kbps`).
pub struct Cam {
    pub name: String,
    pub url: String,
    pub node: String,
    pub cold: bool,
    pub priority: u32,
    pub bitrate_kbps: Option<u32>,
}

/// The standby's capacity caps (`capacity_streams`, `capacity_mbps`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Capacity {
    pub streams: Option<u32>,
    pub mbps: Option<u32>,
}

/// The cluster file: `a` primary with `cameras` (name, url; those named in `cold` taken over cold), `s`
/// its standby, `[arbiter]` defaults.
pub fn write_cluster(
    dir: &TestDir,
    a: &Node,
    s: &Node,
    cameras: &[(String, String)],
    cold: &[&str],
) -> PathBuf {
    let cams: Vec<Cam> = cameras
        .iter()
        .map(|(name, url)| Cam {
            name: name.clone(),
            url: url.clone(),
            node: a.name.clone(),
            cold: cold.contains(&name.as_str()),
            priority: 100,
            bitrate_kbps: None,
        })
        .collect();
    write_cluster_many(dir, &[a], s, None, &cams)
}

/// The cluster file of `primaries` protected by the standby `s` (with `capacity` streams), `cameras`,
/// `[arbiter]` defaults but a failback hold-down of 3 s.
pub fn write_cluster_many(
    dir: &TestDir,
    primaries: &[&Node],
    s: &Node,
    capacity: Option<u32>,
    cameras: &[Cam],
) -> PathBuf {
    let capacity = Capacity {
        streams: capacity,
        mbps: None,
    };
    write_cluster_with(dir, primaries, s, capacity, cameras)
}

/// [`write_cluster_many`] with both capacity caps.
pub fn write_cluster_with(
    dir: &TestDir,
    primaries: &[&Node],
    s: &Node,
    capacity: Capacity,
    cameras: &[Cam],
) -> PathBuf {
    write_cluster_file(dir, "cluster.toml", primaries, s, None, capacity, cameras)
}

/// [`write_cluster_with`] into `file`, with a witness node (arbiter only) if `witness` is given.
pub fn write_cluster_file(
    dir: &TestDir,
    file: &str,
    primaries: &[&Node],
    s: &Node,
    witness: Option<&Node>,
    capacity: Capacity,
    cameras: &[Cam],
) -> PathBuf {
    let mut t = String::from(
        "[recording]\nsegment_duration_s = 4\nflush_interval_ms = 200\nshadow_ring_ms = 8000\n\n\
         [ingest]\nconnect_timeout_ms = 3000\nframe_timeout_ms = 3000\nbackoff_initial_ms = 300\n\
         backoff_max_ms = 2000\n\n[retention]\nmin_free_bytes = 0\n\n\
         [sync]\nhead_interval_ms = 1000\nreconcile_interval_ms = 2000\nscrub_interval_ms = 0\n\n\
         [arbiter]\nheartbeat_interval_ms = 200\nnode_dead_ms = 1000\nstream_failed_ms = 2000\n\
         failback_hold_ms = 3000\n",
    );
    let nodes = primaries
        .iter()
        .map(|n| (*n, "primary"))
        .chain([(s, "standby")])
        .chain(witness.map(|w| (w, "witness")));
    for (n, role) in nodes {
        let _ = write!(
            t,
            "\n[[nodes]]\nname = \"{}\"\nrole = \"{role}\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
             cert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\narbiter_address = \"{}\"\n",
            n.name,
            path_str(&n.data),
            path_str(&n.identity_dir),
            n.cert_sha256,
            n.signing_public_key,
            n.arbiter_public.as_ref().unwrap_or(&n.arbiter)
        );
        if n.arbiter_public.is_some() {
            let _ = writeln!(t, "arbiter_listen = \"{}\"", n.arbiter);
        }
        if role == "standby" {
            let protects: Vec<String> = primaries
                .iter()
                .map(|p| format!("\"{}\"", p.name))
                .collect();
            let _ = write!(
                t,
                "address = \"{}\"\nprotects = [{}]\n",
                n.sync_public.as_ref().unwrap_or(&n.sync),
                protects.join(", ")
            );
            if n.sync_public.is_some() {
                let _ = writeln!(t, "listen = \"{}\"", n.sync);
            }
            if let Some(c) = capacity.streams {
                let _ = writeln!(t, "capacity_streams = {c}");
            }
            if let Some(c) = capacity.mbps {
                let _ = writeln!(t, "capacity_mbps = {c}");
            }
        }
    }
    for c in cameras {
        let _ = write!(
            t,
            "\n[[cameras]]\nname = \"{}\"\nnode = \"{}\"\ntakeover = \"{}\"\npriority = {}\n",
            c.name,
            c.node,
            if c.cold { "cold" } else { "hot" },
            c.priority,
        );
        if let Some(b) = c.bitrate_kbps {
            let _ = writeln!(t, "bitrate_kbps = {b}");
        }
        let _ = write!(t, "[cameras.streams.main]\nurl = \"{}\"\n", c.url);
    }
    dir.write(file, t)
}

/// `nvr camsim` serving `streams` streams (`cam1`..), with `extra` arguments (e.g. `--clip FILE`),
/// on a free port.
pub fn spawn_camsim_with(dir: &TestDir, streams: usize, extra: &[&str]) -> (NvrProcess, u16) {
    spawn_camsim_on(dir, streams, extra, None)
}

/// [`spawn_camsim_with`] on `port` (a camera that comes back where it was), or on a free port if
/// `None`; waits until it serves, trying again a few times.
pub fn spawn_camsim_on(
    dir: &TestDir,
    streams: usize,
    extra: &[&str],
    port: Option<u16>,
) -> (NvrProcess, u16) {
    for _ in 0..5 {
        let port = port.unwrap_or_else(free_port);
        let listen = format!("127.0.0.1:{port}");
        let n = streams.to_string();
        let mut args = vec!["camsim", "--listen", &listen, "--streams", &n];
        args.extend_from_slice(extra);
        let mut sim = NvrProcess::spawn(dir, &args);
        if wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            sim.stdout().contains("camsim serving")
        }) {
            return (sim, port);
        }
        sim.kill9();
    }
    panic!("camsim did not start");
}

pub fn spawn_camsim(dir: &TestDir, streams: usize) -> (NvrProcess, u16) {
    spawn_camsim_with(dir, streams, &[])
}

pub fn spawn_recorder(dir: &TestDir, cfg: &Path, node: &str) -> NvrProcess {
    NvrProcess::spawn(dir, &["run", "--config", &path_str(cfg), "--node", node])
}

fn envs() -> Vec<(&'static str, &'static str)> {
    let mut envs = vec![("RUST_BACKTRACE", "1")];
    if std::env::var_os("RUST_LOG").is_none() {
        envs.push(("RUST_LOG", "info"));
    }
    envs
}

pub fn spawn_sync(dir: &TestDir, cfg: &Path, node: &str) -> NvrProcess {
    NvrProcess::spawn_program(
        dir,
        "nvr-sync",
        nvr_sync_bin(),
        &["run", "--config", &path_str(cfg), "--node", node],
        &envs(),
    )
}

/// Path of the `nvr-arbiter` binary.
pub fn arbiter_bin() -> PathBuf {
    workspace_bin("nvr-arbiter")
}

pub fn spawn_arbiter(dir: &TestDir, cfg: &Path, node: &str) -> NvrProcess {
    NvrProcess::spawn_program(
        dir,
        "nvr-arbiter",
        arbiter_bin(),
        &["run", "--config", &path_str(cfg), "--node", node],
        &envs(),
    )
}

/// `nvr-arbiter status --json` of `node` (`Null` while there is none).
pub fn arbiter_status(dir: &TestDir, cfg: &Path, node: &str) -> serde_json::Value {
    let out = std::process::Command::new(arbiter_bin())
        .args([
            "status",
            "--json",
            "--config",
            &path_str(cfg),
            "--node",
            node,
        ])
        .current_dir(dir.path())
        .output()
        .expect("run nvr-arbiter status");
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// `nvr ctl status` of `node`'s recorder (`Null` while it does not answer).
pub fn recorder_status(dir: &TestDir, cfg: &Path, node: &str) -> serde_json::Value {
    let c = path_str(cfg);
    let out = run_nvr(
        dir,
        &["ctl", "--config", &c, "--node", node, "status"],
        Duration::from_secs(20),
    );
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The holding of `stream` in a status document: (holder, epoch).
pub fn holding(status: &serde_json::Value, stream: &str) -> Option<(String, u64)> {
    status["streams"]
        .as_array()?
        .iter()
        .find(|s| s["stream"] == stream)
        .map(|s| {
            (
                s["holder"].as_str().unwrap_or("").to_owned(),
                s["epoch"].as_u64().unwrap_or(0),
            )
        })
}

/// The events of a status document: (time_ms, message), oldest first.
pub fn status_events(status: &serde_json::Value) -> Vec<(i64, String)> {
    status["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["time_ms"].as_i64().unwrap_or(0),
                        e["message"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
