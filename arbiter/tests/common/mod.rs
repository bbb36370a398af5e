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
    /// Where peers reach this node's arbiter when that is not `arbiter` (a proxy in front of it): the
    /// cluster file's `arbiter_address`, with `arbiter_listen = arbiter`.
    pub arbiter_public: Option<String>,
    /// Likewise for a standby's sync agent: its `address`, with `listen = sync`.
    pub sync_public: Option<String>,
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
        arbiter_public: None,
        sync_public: None,
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
    write_cluster_file(dir, "cluster.toml", primaries, s, None, capacity, cameras)
}

/// [`write_cluster_many`] into `file`, with a witness node (arbiter only) if `witness` is given.
pub fn write_cluster_file(
    dir: &TestDir,
    file: &str,
    primaries: &[&Node],
    s: &Node,
    witness: Option<&Node>,
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
        .chain([(s, "standby")])
        .chain(witness.map(|w| (w, "witness")));
    for (n, role) in nodes {
        let (cert, key) = n.identity.pins().to_hex_strings();
        let _ = write!(
            t,
            "\n[[nodes]]\nname = \"{}\"\nrole = \"{role}\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
             cert_sha256 = \"{cert}\"\nsigning_public_key = \"{key}\"\narbiter_address = \"{}\"\n",
            n.name,
            path_str(&n.data),
            path_str(&n.identity_dir),
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
    dir.write(file, t)
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

/// A loopback TCP proxy that can cut the connections opened after the first `keep` and refuse every
/// new one, and let them through again ([`CameraProxy::heal`]). In front of one camera: the camera
/// becomes unreachable for one node only (the one that connected later), while the other's session
/// goes on. In front of an arbiter's or a sync agent's listener (`keep` 0): a partition of that link.
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

    /// Lets new connections through again after [`CameraProxy::cut_after`].
    pub fn heal(&self) {
        *self.state.refuse_from.lock().expect("lock") = None;
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every connection from the `keep`-th on and refuses all new ones.
    pub fn cut_after(&self, keep: usize) {
        *self.state.refuse_from.lock().expect("lock") = Some(keep);
        for c in self.state.conns.lock().expect("lock").iter().skip(keep) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The number before `word` in an `nvr frames` summary line ("# NAME: N frames, seq A..B, M missing, …").
fn number_before(line: &str, word: &str) -> u64 {
    let parts: Vec<&str> = line.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    parts
        .iter()
        .position(|p| *p == word)
        .and_then(|i| parts.get(i.checked_sub(1)?))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {word} in {line:?}"))
}

/// `nvr frames --summary FILES…`: the `# all:` (or single file) line's (frames, missing, duplicated).
pub fn frames_summary(dir: &TestDir, files: &[PathBuf]) -> (u64, u64, u64, String) {
    let mut args = vec!["frames".to_owned(), "--summary".to_owned()];
    args.extend(files.iter().map(|p| path_str(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(dir, &args, Duration::from_secs(60));
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    let line = out.stdout.lines().last().expect("summary line").to_owned();
    (
        number_before(&line, "frames"),
        number_before(&line, "missing"),
        number_before(&line, "duplicated"),
        line,
    )
}

/// `nvr frames --data-dir DATA --timeline STREAM --summary`: the stream's de-duplicated timeline in
/// that catalog: (frames, missing, duplicated, trimmed, summary line).
pub fn timeline_summary(dir: &TestDir, data: &Path, stream: &str) -> (u64, u64, u64, u64, String) {
    let d = path_str(data);
    let out = run_nvr(
        dir,
        &[
            "frames",
            "--data-dir",
            &d,
            "--timeline",
            stream,
            "--summary",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    let trimmed_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("# trimmed:"))
        .expect("trimmed line");
    let line = out.stdout.lines().last().expect("summary line").to_owned();
    (
        number_before(&line, "frames"),
        number_before(&line, "missing"),
        number_before(&line, "duplicated"),
        number_before(trimmed_line, "frames"),
        line,
    )
}

pub fn reader(data: &Path) -> store::Reader {
    store::Reader::open(data, std::sync::Arc::new(base::clock::SystemClock)).expect("catalog")
}

/// Sealed segments of `camera`/main written by `node` in the catalog of `data`: (path, absolute path).
pub fn sealed_segments(data: &Path, camera: &str, node: &str) -> Vec<(String, PathBuf)> {
    let r = reader(data);
    let Some(id) = r.find_stream(camera, "main").expect("stream") else {
        return Vec::new();
    };
    r.stream_segments(id)
        .expect("segments")
        .into_iter()
        .filter(|s| s.node == node && s.state == store::SegmentState::Sealed)
        .map(|s| (s.path.clone(), r.absolute_path(&s.path)))
        .collect()
}

/// Waits (up to 2 minutes) until the standby whose data directory is `standby` holds a sealed copy of
/// every segment the primary (`primary`, node `PRIMARY`) sealed of `cam1`..`cam{streams}`.
pub fn mirrored_all(primary: &Path, standby: &Path, streams: usize) -> bool {
    wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        (1..=streams).all(|i| {
            let camera = format!("cam{i}");
            let held: std::collections::BTreeSet<String> =
                sealed_segments(standby, &camera, PRIMARY)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
            sealed_segments(primary, &camera, PRIMARY)
                .iter()
                .all(|(p, _)| held.contains(p))
        })
    })
}
