//! Clusters of several nodes on loopback for the cluster page's and client failover's tests: one cluster
//! file (per viewer: `[web]` is cluster-wide, so two viewers on one machine need two files that differ
//! only there), node identities, recorders, sync agents and arbiters as real processes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use testkit::{free_port, NvrProcess, TestDir};

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// One node of a test cluster.
pub struct Node {
    pub name: String,
    /// "primary" or "standby".
    pub role: &'static str,
    pub data: PathBuf,
    pub identity_dir: PathBuf,
    /// Pins, when the node takes part in sync.
    pub pins: Option<(String, String)>,
    pub arbiter: String,
    pub sync: String,
    /// Its viewer's origin and listening address.
    pub web_url: String,
    pub web_listen: String,
    pub web_state: PathBuf,
}

/// A node whose viewer listens on `web_ip` (a loopback address) and a free port; with `sync`, its
/// identity is generated and pinned.
pub fn node(dir: &TestDir, name: &str, role: &'static str, web_ip: &str, sync: bool) -> Node {
    let identity_dir = dir.join(format!("identity-{name}"));
    let pins = sync.then(|| {
        node_identity::generate(&identity_dir, name)
            .expect("generate identity")
            .pins()
            .to_hex_strings()
    });
    let port = free_port();
    Node {
        name: name.to_owned(),
        role,
        data: dir.join(format!("data-{name}")),
        identity_dir,
        pins,
        arbiter: format!("127.0.0.1:{}", free_port()),
        sync: format!("127.0.0.1:{}", free_port()),
        web_url: format!("https://{web_ip}:{port}"),
        web_listen: format!("{web_ip}:{port}"),
        web_state: dir.join(format!("web-{name}")),
    }
}

/// A camera: name, node, URL.
pub type Cam<'a> = (&'a str, &'a str, String);

/// The cluster file `cluster-<viewer>.toml` for the viewer of node `viewer`: every node with its
/// `web_url`, the cameras, `[arbiter]` when `arbiter`, the shared session secret and users file.
pub fn write_cluster(
    dir: &TestDir,
    nodes: &[&Node],
    cameras: &[Cam<'_>],
    arbiter: bool,
    viewer: &Node,
) -> PathBuf {
    dir.write(
        "session.secret",
        "0123456789abcdef0123456789abcdef-shared\n",
    );
    let mut t = format!(
        "[recording]\nsegment_duration_s = 2\nflush_interval_ms = 200\nshadow_ring_ms = 8000\n\n\
         [ingest]\nconnect_timeout_ms = 3000\nframe_timeout_ms = 3000\nbackoff_initial_ms = 300\n\
         backoff_max_ms = 1000\n\n[retention]\nmin_free_bytes = 0\n\n\
         [sync]\nhead_interval_ms = 1000\nreconcile_interval_ms = 2000\nscrub_interval_ms = 0\n\n\
         [web]\nlisten = \"{}\"\nstate_dir = \"{}\"\nsession_secret_file = \"{}\"\nusers_file = \"{}\"\n",
        viewer.web_listen,
        path_str(&viewer.web_state),
        path_str(&dir.join("session.secret")),
        path_str(&dir.join("users.json")),
    );
    if arbiter {
        t.push_str(
            "\n[arbiter]\nheartbeat_interval_ms = 200\nnode_dead_ms = 1000\nstream_failed_ms = 2000\n\
             failback_hold_ms = 600000\n",
        );
    }
    for n in nodes {
        let _ = write!(
            t,
            "\n[[nodes]]\nname = \"{}\"\nrole = \"{}\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
             web_url = \"{}\"\n",
            n.name,
            n.role,
            path_str(&n.data),
            path_str(&n.identity_dir),
            n.web_url,
        );
        if let Some((cert, key)) = &n.pins {
            let _ = writeln!(
                t,
                "cert_sha256 = \"{cert}\"\nsigning_public_key = \"{key}\""
            );
            if arbiter {
                let _ = writeln!(t, "arbiter_address = \"{}\"", n.arbiter);
            }
        }
        if n.role == "standby" {
            let protects: Vec<String> = nodes
                .iter()
                .filter(|p| p.role == "primary")
                .map(|p| format!("\"{}\"", p.name))
                .collect();
            let _ = writeln!(
                t,
                "address = \"{}\"\nprotects = [{}]",
                n.sync,
                protects.join(", ")
            );
        }
    }
    for (name, node, url) in cameras {
        let _ = write!(
            t,
            "\n[[cameras]]\nname = \"{name}\"\nnode = \"{node}\"\n[cameras.streams.main]\nurl = \"{url}\"\n"
        );
    }
    dir.write(format!("cluster-{}.toml", viewer.name), t)
}

fn envs() -> Vec<(&'static str, &'static str)> {
    vec![("RUST_BACKTRACE", "1"), ("RUST_LOG", "info")]
}

/// A binary of another crate of the workspace, next to the test executable's profile directory
/// (`tests/run` builds every binary first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile directory");
    let path = profile.join(name);
    assert!(
        path.is_file(),
        "{} not found: `cargo build --workspace --bins` first (tests/run does)",
        path.display()
    );
    path
}

pub fn spawn_recorder(dir: &TestDir, cfg: &Path, node: &str) -> NvrProcess {
    NvrProcess::spawn(dir, &["run", "--config", &path_str(cfg), "--node", node])
}

pub fn spawn_sync(dir: &TestDir, cfg: &Path, node: &str) -> NvrProcess {
    NvrProcess::spawn_program(
        dir,
        "nvr-sync",
        testkit::nvr_sync_bin(),
        &["run", "--config", &path_str(cfg), "--node", node],
        &envs(),
    )
}

pub fn spawn_arbiter(dir: &TestDir, cfg: &Path, node: &str) -> NvrProcess {
    NvrProcess::spawn_program(
        dir,
        "nvr-arbiter",
        workspace_bin("nvr-arbiter"),
        &["run", "--config", &path_str(cfg), "--node", node],
        &envs(),
    )
}

/// `nvr-web run` for `node` on `cfg`, waiting until it listens on `listen`.
pub fn spawn_web(dir: &TestDir, cfg: &Path, node: &str, url: &str) -> NvrProcess {
    let mut p = NvrProcess::spawn_program(
        dir,
        "nvr-web",
        super::web_bin(),
        &["run", "--config", &path_str(cfg), "--node", node],
        &envs(),
    );
    let listening = format!("nvr-web listening on {url}/");
    assert!(
        testkit::wait_until(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(50),
            || p.stdout().contains(&listening) || !p.is_running()
        ) && p.stdout().contains(&listening),
        "nvr-web {node} did not start: {}\n{}",
        p.stdout(),
        p.stderr()
    );
    p
}
