//! The two-node rig of the arbiter's tests: a primary `node-a` and its standby `node-s` on loopback,
//! each with its recorder (`nvr run`), sync agent (`nvr-sync run`) and arbiter (`nvr-arbiter run`),
//! all reading one cluster file; the camera simulator (`nvr camsim`) with frame stamps.
//!
//! The `nvr` and `nvr-sync` binaries are other crates': `tests/run` builds them first
//! (`cargo build --workspace --bins`).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use node_identity::NodeIdentity;
pub use testkit::{free_port, nvr_sync_bin, run_nvr, wait_until, NvrProcess, TestDir};

pub const PRIMARY: &str = "node-a";
pub const STANDBY: &str = "node-s";

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A node's identity (generated in `<dir>/identity-<node>`) and data directory.
pub struct Node {
    pub name: String,
    pub identity_dir: PathBuf,
    pub identity: NodeIdentity,
    pub data: PathBuf,
    pub arbiter: String,
    pub sync: String,
}

pub fn node(dir: &TestDir, name: &str) -> Node {
    let identity_dir = dir.join(format!("identity-{name}"));
    let identity = node_identity::generate(&identity_dir, name).expect("generate identity");
    Node {
        name: name.to_owned(),
        identity_dir,
        identity,
        data: dir.join(format!("data-{name}")),
        arbiter: format!("127.0.0.1:{}", free_port()),
        sync: format!("127.0.0.1:{}", free_port()),
    }
}

/// A camera of a test cluster: name, URL, its primary, takeover mode, priority.
pub struct Cam {
    pub name: String,
    pub url: String,
    pub node: String,
    pub cold: bool,
    pub priority: u32,
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
        .chain([(s, "standby")]);
    for (n, role) in nodes {
        let (cert, key) = n.identity.pins().to_hex_strings();
        let _ = write!(
            t,
            "\n[[nodes]]\nname = \"{}\"\nrole = \"{role}\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
             cert_sha256 = \"{cert}\"\nsigning_public_key = \"{key}\"\narbiter_address = \"{}\"\n",
            n.name,
            path_str(&n.data),
            path_str(&n.identity_dir),
            n.arbiter
        );
        if role == "standby" {
            let protects: Vec<String> = primaries
                .iter()
                .map(|p| format!("\"{}\"", p.name))
                .collect();
            let _ = write!(
                t,
                "address = \"{}\"\nprotects = [{}]\n",
                n.sync,
                protects.join(", ")
            );
            if let Some(c) = capacity {
                let _ = writeln!(t, "capacity_streams = {c}");
            }
        }
    }
    for c in cameras {
        let _ = write!(
            t,
            "\n[[cameras]]\nname = \"{}\"\nnode = \"{}\"\ntakeover = \"{}\"\npriority = {}\n\
             [cameras.streams.main]\nurl = \"{}\"\n",
            c.name,
            c.node,
            if c.cold { "cold" } else { "hot" },
            c.priority,
            c.url
        );
    }
    dir.write("cluster.toml", t)
}

/// `nvr frames FILES…`: the camsim sequence numbers of every frame, in file order.
pub fn frame_seqs(dir: &TestDir, files: &[PathBuf]) -> Vec<u64> {
    if files.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["frames".to_owned()];
    args.extend(files.iter().map(|p| path_str(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(dir, &args, Duration::from_secs(60));
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// (missing, duplicated) between the lowest and the highest of `seqs`.
pub fn missing_and_duplicated(seqs: &[u64]) -> (u64, u64) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    sorted.dedup();
    let span = match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    };
    (span - sorted.len() as u64, n - sorted.len() as u64)
}

pub fn spawn_camsim(dir: &TestDir, streams: usize) -> (NvrProcess, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut sim = NvrProcess::spawn(
            dir,
            &[
                "camsim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--streams",
                &streams.to_string(),
            ],
        );
        if wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            sim.stdout().contains("camsim serving")
        }) {
            return (sim, port);
        }
        sim.kill9();
    }
    panic!("camsim did not start");
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

pub fn arbiter_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nvr-arbiter")
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

/// A loopback TCP proxy in front of one camera that can cut the connections opened after the first
/// `keep` and refuse every new one: the camera becomes unreachable for one node only (the one that
/// connected later), while the other's session goes on.
pub struct CameraProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// Connections in the order they were accepted (client side), to shut down on a cut.
    conns: std::sync::Mutex<Vec<std::net::TcpStream>>,
    /// Connections from this index on are refused (closed at once).
    refuse_from: std::sync::Mutex<Option<usize>>,
}

impl CameraProxy {
    pub fn start(target: std::net::SocketAddr) -> CameraProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut conns = st.conns.lock().expect("lock");
                let index = conns.len();
                let refused = st
                    .refuse_from
                    .lock()
                    .expect("lock")
                    .is_some_and(|from| index >= from);
                if let Ok(c) = client.try_clone() {
                    conns.push(c);
                }
                drop(conns);
                if refused {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CameraProxy { port, state }
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state.conns.lock().expect("lock").len()
    }

    /// Cuts every connection from the `keep`-th on and refuses all new ones.
    pub fn cut_after(&self, keep: usize) {
        *self.state.refuse_from.lock().expect("lock") = Some(keep);
        for c in self.state.conns.lock().expect("lock").iter().skip(keep) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}
