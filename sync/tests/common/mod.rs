//! Test support for the integration tests in `sync/tests/` (each file says `mod common;` and
//! `use common::*;`).
//!
//! * [`rig`]: the workspace's test rig (the `testkit` crate), re-exported
//!   here: [`TestDir`], [`NvrProcess`], [`GstCamera`], [`wait_until`], [`free_port`], [`ffprobe`],
//!   [`nvr_bin`], [`nvr_sync_bin`], ...
//! * [`FaultProxy`]: a loopback TCP proxy that can pass, stall, refuse, cut and throttle traffic;
//!   put it between a primary and its standby to simulate a bad link.
//! * Sync nodes: [`keygen`] / [`read_identity`], the one cluster file of both nodes
//!   ([`ClusterFile`] / [`write_cluster_config`]), [`spawn_sync`], [`run_sync`], [`sync_status`],
//!   [`sync_restore`]; recorders: [`write_recorder_config`] (a one-node cluster), [`spawn_recorder`].
//! * Store comparison: [`file_sha256`], [`dir_files`], [`media_files`], [`diff_files`].
//!
//! The `nvr` binary is another crate's: `cargo test -p nvr-sync` does not build it. `tests/run`
//! runs `cargo build --workspace --bins` first; by hand, do the same (`nvr_bin()` panics with that
//! hint when the binary is missing).
//!
//! Not every test file uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub use testkit as rig;

pub use rig::*;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// FaultProxy
// ---------------------------------------------------------------------------------------------

/// What a [`FaultProxy`] does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways (subject to the bandwidth limit).
    Pass,
    /// Forward nothing, keep every socket open: data buffers (in the kernel's socket buffers and
    /// at most one 16 KiB chunk per direction inside the proxy) and is delivered, in order, once
    /// the mode is `Pass` again. New connections are accepted and connected to the target but
    /// carry nothing while stalled. Like a link that silently drops packets for a while.
    Stall,
    /// Reset every current connection at once, and reset each new one right after accepting it
    /// (the client's `connect` succeeds, its first read or write fails with a reset). The
    /// listening port stays reserved, so `Pass` resumes on the same address.
    Refuse,
}

/// How long the proxy waits to connect to its target before dropping the client connection.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of one read in a forwarding thread (and so the most a direction holds inside the proxy).
const PROXY_CHUNK: usize = 16 * 1024;

/// A loopback TCP proxy with fault injection, for links between sync nodes.
///
/// Listens on `127.0.0.1:<free port>` and forwards each accepted connection to the target, bytes
/// both ways, one thread per direction. All methods take `&self` and may be called from any thread.
/// Dropping it closes the listener and every connection.
///
/// ```ignore
/// let proxy = FaultProxy::start(standby_listen_addr);
/// // primary's peer address = proxy.address()
/// proxy.set_mode(Mode::Stall);   // link hangs
/// proxy.cut();                   // every connection dies once, new ones pass
/// proxy.set_bandwidth_bytes_per_s(Some(200_000));
/// ```
pub struct FaultProxy {
    shared: Arc<ProxyShared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

struct ProxyShared {
    state: Mutex<ProxyState>,
    /// Notified on every mode change and connection close (wakes threads waiting in Stall).
    changed: Condvar,
    stop: AtomicBool,
    conns: Mutex<Vec<Arc<ProxyConn>>>,
    to_target: AtomicU64,
    to_client: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    connect_failures: AtomicU64,
}

struct ProxyState {
    mode: Mode,
    target: SocketAddr,
    /// Token buckets for (client -> target, target -> client); `None` when unlimited.
    limit: Option<[Bucket; 2]>,
}

#[derive(Clone, Copy)]
struct Bucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Burst allowance: a tenth of a second's worth (at least one byte).
    fn capacity(&self) -> f64 {
        (self.rate as f64 / 10.0).max(1.0)
    }

    /// Takes up to `want` bytes' worth of tokens; `Err(wait)` if none are available yet.
    fn take(&mut self, want: usize) -> Result<usize, Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.capacity());
        if self.tokens >= 1.0 {
            let n = (self.tokens.floor() as usize).min(want);
            self.tokens -= n as f64;
            Ok(n)
        } else {
            let secs = (1.0 - self.tokens) / self.rate as f64;
            Err(Duration::from_secs_f64(secs.clamp(0.001, 0.05)))
        }
    }
}

struct ProxyConn {
    client: TcpStream,
    upstream: TcpStream,
    closed: AtomicBool,
    /// Forwarding threads still running (the connection leaves the registry at 0).
    pumps: AtomicUsize,
}

impl ProxyConn {
    /// Closes both sockets (FIN both ways; `reset` makes the final close an RST). Wakes the
    /// forwarding threads: their reads return, their writes fail.
    fn close(&self, reset: bool) {
        self.closed.store(true, Ordering::SeqCst);
        for s in [&self.client, &self.upstream] {
            if reset {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    ToTarget,
    ToClient,
}

impl ProxyShared {
    fn lock_state(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_conns(&self) -> MutexGuard<'_, Vec<Arc<ProxyConn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_all(&self, reset: bool) {
        let conns: Vec<_> = self.lock_conns().drain(..).collect();
        for c in &conns {
            c.close(reset);
        }
        self.changed.notify_all();
    }

    /// Blocks while stalled. True if forwarding may go on, false if the connection is finished.
    fn gate(&self, conn: &ProxyConn) -> bool {
        let mut st = self.lock_state();
        loop {
            if conn.closed.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
                return false;
            }
            match st.mode {
                Mode::Pass => return true,
                Mode::Refuse => return false,
                Mode::Stall => {
                    st = self
                        .changed
                        .wait_timeout(st, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// How many of `want` bytes may be written now (waits for bandwidth); 0 means "re-check the
    /// gate" (mode or connection state may have changed while waiting).
    fn allowance(&self, dir: Direction, want: usize) -> usize {
        let wait = {
            let mut st = self.lock_state();
            if st.mode != Mode::Pass {
                return 0;
            }
            let Some(buckets) = st.limit.as_mut() else {
                return want;
            };
            let bucket = &mut buckets[dir as usize];
            match bucket.take(want) {
                Ok(n) => return n,
                Err(wait) => wait,
            }
        };
        thread::sleep(wait);
        0
    }

    fn counter(&self, dir: Direction) -> &AtomicU64 {
        match dir {
            Direction::ToTarget => &self.to_target,
            Direction::ToClient => &self.to_client,
        }
    }

    fn finish_pump(&self, conn: &Arc<ProxyConn>) {
        if conn.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
            conn.close(false);
            self.lock_conns().retain(|c| !Arc::ptr_eq(c, conn));
        }
    }
}

/// Forwards `from` -> `to` until EOF, an error, or the connection is closed. A clean EOF is passed
/// on as a half-close (`shutdown(Write)` on `to`); an error closes the whole connection.
fn pump(shared: &ProxyShared, conn: &ProxyConn, dir: Direction) {
    let (mut from, mut to) = match dir {
        Direction::ToTarget => (&conn.client, &conn.upstream),
        Direction::ToClient => (&conn.upstream, &conn.client),
    };
    let mut buf = vec![0u8; PROXY_CHUNK];
    'outer: loop {
        if !shared.gate(conn) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut off = 0;
        while off < n {
            if !shared.gate(conn) {
                break 'outer;
            }
            let k = shared.allowance(dir, n - off);
            if k == 0 {
                continue;
            }
            if to.write_all(&buf[off..off + k]).is_err() {
                break 'outer;
            }
            shared.counter(dir).fetch_add(k as u64, Ordering::SeqCst);
            off += k;
        }
    }
    conn.close(false);
}

fn reset_and_drop(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn handle_accepted(shared: Arc<ProxyShared>, client: TcpStream) {
    let (mode, target) = {
        let st = shared.lock_state();
        (st.mode, st.target)
    };
    if mode == Mode::Refuse {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        reset_and_drop(client);
        return;
    }
    let upstream = match TcpStream::connect_timeout(&target, PROXY_CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            shared.connect_failures.fetch_add(1, Ordering::SeqCst);
            reset_and_drop(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let conn = Arc::new(ProxyConn {
        client,
        upstream,
        closed: AtomicBool::new(false),
        pumps: AtomicUsize::new(2),
    });
    {
        // Registered under the lock that `close_all` drains, after re-checking the mode: a
        // connection accepted just before `Refuse`/`cut`/drop is not missed.
        let mut conns = shared.lock_conns();
        if shared.stop.load(Ordering::SeqCst) || shared.lock_state().mode == Mode::Refuse {
            drop(conns);
            shared.refused.fetch_add(1, Ordering::SeqCst);
            conn.close(true);
            return;
        }
        conns.push(Arc::clone(&conn));
    }
    shared.connections.fetch_add(1, Ordering::SeqCst);
    for dir in [Direction::ToTarget, Direction::ToClient] {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        thread::spawn(move || {
            pump(&shared, &conn, dir);
            shared.finish_pump(&conn);
        });
    }
}

impl FaultProxy {
    /// Starts a proxy to `target` in [`Mode::Pass`], unlimited bandwidth. Returns once it listens.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("FaultProxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FaultProxy: local_addr");
        listener
            .set_nonblocking(true)
            .expect("FaultProxy: non-blocking listener");
        let shared = Arc::new(ProxyShared {
            state: Mutex::new(ProxyState {
                mode: Mode::Pass,
                target,
                limit: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            to_target: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                // Polling accept: the listener is dropped (port closed) within ~5 ms of `stop`.
                while !shared.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if client.set_nonblocking(false).is_err() {
                                continue;
                            }
                            let shared = Arc::clone(&shared);
                            thread::spawn(move || handle_accepted(shared, client));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FaultProxy {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's listening address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening address as `"127.0.0.1:PORT"` (for configuration files).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where new connections go (existing ones keep their target).
    pub fn set_target(&self, target: SocketAddr) {
        self.shared.lock_state().target = target;
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock_state().mode
    }

    /// Switches the mode; [`Mode::Refuse`] resets every current connection before returning.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock_state().mode = mode;
        if mode == Mode::Refuse {
            self.shared.close_all(true);
        }
        self.shared.changed.notify_all();
    }

    /// Closes every current connection once (FIN both ways to both ends); the mode is unchanged,
    /// so with [`Mode::Pass`] new connections pass again right away.
    pub fn cut(&self) {
        self.shared.close_all(false);
    }

    /// Limits forwarding to `rate` bytes per second in each direction (all connections together),
    /// with a burst of a tenth of a second's worth; `None` removes the limit.
    pub fn set_bandwidth_bytes_per_s(&self, rate: Option<u64>) {
        let rate = rate.map(|r| r.max(1));
        self.shared.lock_state().limit = rate.map(|r| [Bucket::new(r), Bucket::new(r)]);
    }

    /// Bytes written to either side so far (both directions, all connections). Counters are
    /// bumped right after each write returns, so a peer may read bytes a moment before they are
    /// counted: compare with [`wait_until`], not right after a read.
    pub fn bytes_forwarded(&self) -> u64 {
        self.bytes_to_target() + self.bytes_to_client()
    }

    /// Bytes written client -> target so far.
    pub fn bytes_to_target(&self) -> u64 {
        self.shared.to_target.load(Ordering::SeqCst)
    }

    /// Bytes written target -> client so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Connections accepted and connected to the target so far (refused ones not included).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections currently open through the proxy.
    pub fn active_connections(&self) -> usize {
        self.shared.lock_conns().len()
    }

    /// Connections reset on accept because of [`Mode::Refuse`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections dropped because the target could not be reached.
    pub fn connect_failures(&self) -> u64 {
        self.shared.connect_failures.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.close_all(false);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // A connection being set up by `handle_accepted` when stop was set closes itself.
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing and store comparison
// ---------------------------------------------------------------------------------------------

/// SHA-256 of a file's contents, lowercase hex. Panics if the file cannot be read.
pub fn file_sha256(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
    base::hex::encode(ctx.finish().as_ref())
}

/// Every regular file under `root`, as relative path (`/`-separated) -> SHA-256. Symlinks and
/// other non-regular files are skipped. A missing `root` gives an empty map (a standby that has
/// not received anything yet has no `media/`).
pub fn dir_files(root: impl AsRef<Path>) -> BTreeMap<String, String> {
    let root = root.as_ref();
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            let ty = entry
                .file_type()
                .unwrap_or_else(|e| panic!("file type of {}: {e}", path.display()));
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .expect("walked path is under root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, file_sha256(&path));
            }
        }
    }
    out
}

/// [`dir_files`] of a node's `<data_dir>/media`, keyed like catalog paths (`media/<camera>/...`).
pub fn media_files(data_dir: impl AsRef<Path>) -> BTreeMap<String, String> {
    dir_files(data_dir.as_ref().join("media"))
        .into_iter()
        .map(|(k, v)| (format!("media/{k}"), v))
        .collect()
}

/// Paths in `want` that `have` lacks or holds with other contents (empty: `have` ⊇ `want`).
pub fn diff_files(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> Vec<String> {
    want.iter()
        .filter(|(path, hash)| have.get(*path) != Some(*hash))
        .map(|(path, _)| path.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Recorder nodes
// ---------------------------------------------------------------------------------------------

/// Quotes `s` as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
        .to_string()
}

/// Test timings of the recorder: segments of `segment_s` seconds, fast reconnects and flushes, and the
/// free-space floor off (`min_free_bytes = 0`, so retention never deletes segments on a full test
/// machine behind a test's back).
fn recorder_sections(segment_s: u64) -> String {
    format!(
        "[recording]\n\
         segment_duration_s = {segment_s}\n\
         flush_interval_ms = 500\n\
         \n\
         [ingest]\n\
         connect_timeout_ms = 3000\n\
         frame_timeout_ms = 3000\n\
         backoff_initial_ms = 300\n\
         backoff_max_ms = 2000\n\
         \n\
         [retention]\n\
         min_free_bytes = 0\n"
    )
}

/// `[[cameras]]` tables owned by `node`: `(name, rtsp url)`, main stream only.
fn camera_tables(node: &str, cameras: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (name, url) in cameras {
        let _ = write!(
            s,
            "\n[[cameras]]\nname = {}\nnode = {}\n[cameras.streams.main]\nurl = {}\n",
            toml_string(name),
            toml_string(node),
            toml_string(url)
        );
    }
    s
}

/// Writes `<dir>/nvr-<node>.toml`, a cluster configuration of the one primary `node` (no sync) recording
/// into `data_dir` with `cameras` as `(name, rtsp url)` (main stream only) and the test timings of
/// [`ClusterFile`]. Run it with `--node NODE` ([`spawn_recorder`]).
pub fn write_recorder_config(
    dir: &TestDir,
    node: &str,
    data_dir: &Path,
    cameras: &[(&str, &str)],
    segment_s: u64,
) -> PathBuf {
    let cfg = format!(
        "{}\n[[nodes]]\nname = {}\nrole = \"primary\"\ndata_dir = {}\n{}",
        recorder_sections(segment_s),
        toml_string(node),
        toml_string(&path_str(data_dir)),
        camera_tables(node, cameras)
    );
    dir.write(format!("nvr-{node}.toml"), cfg)
}

/// Runs `nvr run --config CONFIG --node NODE` (logs in the test dir; see [`NvrProcess`]).
pub fn spawn_recorder(dir: &TestDir, config: &Path, node: &str) -> NvrProcess {
    let config = path_str(config);
    NvrProcess::spawn(dir, &["run", "--config", &config, "--node", node])
}

// ---------------------------------------------------------------------------------------------
// Sync nodes
// ---------------------------------------------------------------------------------------------

/// A node's identity directory and public pins (from its `identity.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub dir: PathBuf,
    pub node: String,
    /// SHA-256 of the TLS certificate (DER), hex.
    pub cert_sha256: String,
    /// Ed25519 public key of the signing key, hex.
    pub signing_public_key: String,
}

#[derive(serde::Deserialize)]
struct IdentityFile {
    node: String,
    cert_sha256: String,
    signing_public_key: String,
}

/// Reads `<identity_dir>/identity.toml`.
pub fn read_identity(identity_dir: &Path) -> Identity {
    let path = identity_dir.join("identity.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let f: IdentityFile =
        toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", path.display()));
    Identity {
        dir: identity_dir.to_path_buf(),
        node: f.node,
        cert_sha256: f.cert_sha256,
        signing_public_key: f.signing_public_key,
    }
}

/// Where [`keygen`] puts `node`'s identity: `<dir>/identity-<node>`.
pub fn identity_dir(dir: &TestDir, node: &str) -> PathBuf {
    dir.join(format!("identity-{node}"))
}

/// Runs `nvr-sync keygen --dir <dir>/identity-<node> --node NODE`, expects success, and returns
/// the identity it wrote.
pub fn keygen(dir: &TestDir, node: &str) -> Identity {
    let id_dir = identity_dir(dir, node);
    run_sync_ok(
        dir,
        &["keygen", "--dir", &path_str(&id_dir), "--node", node],
        Duration::from_secs(30),
    );
    let id = read_identity(&id_dir);
    assert_eq!(id.node, node, "identity.toml names another node");
    id
}

/// Like [`keygen`] but through the library (`nvr_sync::identity::generate`), without the binary.
pub fn keygen_in_process(dir: &TestDir, node: &str) -> Identity {
    let id_dir = identity_dir(dir, node);
    nvr_sync::identity::generate(&id_dir, node)
        .unwrap_or_else(|e| panic!("generate identity {node}: {e}"));
    read_identity(&id_dir)
}

/// The pair most tests run: `node-a` (data in `<dir>/data-a`) and `standby-1` (`<dir>/data-s`) with
/// fresh identities ([`keygen`]), the standby listening on a free port; adjust, then write.
pub fn new_pair(dir: &TestDir) -> ClusterFile {
    let a = keygen(dir, "node-a");
    let s = keygen(dir, "standby-1");
    let listen = format!("127.0.0.1:{}", free_port());
    ClusterFile::pair(&a, &dir.join("data-a"), &s, &dir.join("data-s"), &listen)
}

/// The cameras `cam1`..`camN` of a camsim serving `streams` streams on `cam_port`, as
/// [`ClusterFile::cameras`] lists them.
pub fn camsim_cameras(cam_port: u16, streams: usize) -> Vec<(String, String)> {
    (1..=streams)
        .map(|i| {
            (
                format!("cam{i}"),
                format!("rtsp://127.0.0.1:{cam_port}/cam{i}"),
            )
        })
        .collect()
}

/// Builds `history` straight into both nodes' stores and signed logs (`nvr_sync::fixture`), before
/// any agent of the pair runs.
pub fn build_history(cluster: &ClusterFile, history: &nvr_sync::fixture::History) {
    let id_a = nvr_sync::identity::load(&cluster.primary.dir).expect("load node-a identity");
    let id_s = nvr_sync::identity::load(&cluster.standby.dir).expect("load standby identity");
    nvr_sync::fixture::build(
        history,
        &cluster.primary_data,
        &id_a,
        &cluster.standby_data,
        &id_s,
    )
    .expect("build history");
}

/// A runtime for the tests that speak the sync protocol themselves.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What the tests that speak the protocol themselves say a segment of `camera`'s main stream is
/// (starting 2030-01-01, H.264 640x480).
pub fn segment_info(camera: &str) -> nvr_sync::proto::SegmentInfo {
    nvr_sync::proto::SegmentInfo {
        camera: camera.into(),
        stream: "main".into(),
        start_ms: 1_893_456_000_000,
        video_codec: "avc1.640028".into(),
        width: 640,
        height: 480,
        audio_codec: None,
    }
}

/// node-a's agent's connection to `standby`, through the handshake, and what the standby said it
/// holds.
pub async fn connect_as_node_a(
    id: &nvr_sync::identity::NodeIdentity,
    standby: &nvr_sync::config::Peer,
) -> (
    nvr_sync::agent::Conn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    nvr_sync::agent::primary::StandbyView,
) {
    use nvr_sync::agent::{primary, Conn};
    let tls = primary::connect(id, standby).await.expect("connect");
    let mut conn = Conn::new(tls);
    let view = primary::handshake(&mut conn, "node-a", standby)
        .await
        .expect("handshake");
    (conn, view)
}

/// Opens the segment `key` of `camera` ([`segment_info`]) and sends `data` as its first bytes.
pub async fn open_segment_with<S>(
    conn: &mut nvr_sync::agent::Conn<S>,
    key: &nvr_sync::proto::SegmentKey,
    camera: &str,
    data: Vec<u8>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use nvr_sync::proto::Message;
    conn.send(&Message::SegmentOpen {
        key: key.clone(),
        info: segment_info(camera),
    })
    .await
    .expect("send");
    send_segment_data(conn, key, 0, data).await;
}

/// Sends `data` of the segment `key` at `offset`.
pub async fn send_segment_data<S>(
    conn: &mut nvr_sync::agent::Conn<S>,
    key: &nvr_sync::proto::SegmentKey,
    offset: u64,
    data: Vec<u8>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    conn.send(&nvr_sync::proto::Message::SegmentData {
        key: key.clone(),
        offset,
        data: data.into(),
    })
    .await
    .expect("send");
}

/// Waits (20 s at most) for the peer's next message that is not a `Ping` of its own.
pub async fn next_reply<S>(conn: &mut nvr_sync::agent::Conn<S>) -> nvr_sync::proto::Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    loop {
        match conn.recv(Duration::from_secs(20)).await {
            Ok(Some(nvr_sync::proto::Message::Ping { .. })) => {}
            Ok(Some(m)) => return m,
            other => panic!("no reply from the peer: {other:?}"),
        }
    }
}

/// Asserts that the peer's next reply acknowledges `bytes_durable` bytes.
pub async fn expect_ack<S>(conn: &mut nvr_sync::agent::Conn<S>, bytes_durable: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    match next_reply(conn).await {
        nvr_sync::proto::Message::Ack {
            bytes_durable: acked,
            ..
        } => assert_eq!(acked, bytes_durable),
        other => panic!("expected Ack, got {other:?}"),
    }
}

/// The standby's agent, then node-a's recorder and agent, of the pair in cluster file `cfg`:
/// (standby, recorder, primary).
pub fn spawn_pair(dir: &TestDir, cfg: &Path) -> (NvrProcess, NvrProcess, NvrProcess) {
    let standby = spawn_sync(dir, cfg, "standby-1");
    let recorder = spawn_recorder(dir, cfg, "node-a");
    let primary = spawn_sync(dir, cfg, "node-a");
    (standby, recorder, primary)
}

/// The usual pair running beside a camera simulator: node-a's recorder and primary agent and
/// standby-1's agent ([`spawn_pair`]) on the cluster file `cfg`.
pub struct RunningPair {
    pub dir: TestDir,
    pub data_a: PathBuf,
    pub data_s: PathBuf,
    /// The one cluster file both nodes read.
    pub cfg: PathBuf,
    pub camsim: NvrProcess,
    pub recorder: NvrProcess,
    pub primary: NvrProcess,
    pub standby: NvrProcess,
}

impl RunningPair {
    /// Starts the processes of the pair that `cluster` describes, written to `cfg`, beside `camsim`.
    pub fn spawn(dir: TestDir, cluster: &ClusterFile, cfg: PathBuf, camsim: NvrProcess) -> Self {
        let (standby, recorder, primary) = spawn_pair(&dir, &cfg);
        RunningPair {
            data_a: cluster.primary_data.clone(),
            data_s: cluster.standby_data.clone(),
            dir,
            cfg,
            camsim,
            recorder,
            primary,
            standby,
        }
    }

    /// Asserts that the standby `converged` on every segment in `want` (path -> sha256) that it
    /// `has` too, naming the ones it lacks with both agents' logs.
    pub fn assert_converged(
        &self,
        converged: bool,
        want: &BTreeMap<String, String>,
        has: &BTreeMap<String, String>,
    ) {
        let missing: Vec<&String> = want
            .iter()
            .filter(|(k, v)| has.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            converged,
            "standby lacks {} of {} segments: {missing:?}\nprimary log:\n{}\nstandby log:\n{}",
            missing.len(),
            want.len(),
            self.primary.stderr_tail(30),
            self.standby.stderr_tail(30)
        );
    }
}

/// Waits (30 s at most) until the standby's agent `standby` says it listens.
pub fn wait_standby_listening(standby: &NvrProcess) {
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            standby.stderr_tail(50).contains("standby listening")
        }),
        "the standby does not listen:\n{}",
        standby.stderr_tail(30)
    );
}

/// The agent's status file in `data_dir` (`Null` while there is none, or it is being replaced).
pub fn status_file(data_dir: &Path) -> serde_json::Value {
    fs::read(data_dir.join("sync-status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The alarms the agent with `data_dir` raised (none while its sync.db is not there).
pub fn alarms(data_dir: &Path) -> Vec<nvr_sync::syncdb::AlarmRow> {
    nvr_sync::syncdb::SyncDb::open(data_dir)
        .and_then(|db| db.alarms(0))
        .unwrap_or_default()
}

/// The catalog of the store at `data_dir`, once the recorder or agent has made one.
pub fn open_reader(data_dir: &Path) -> Option<store::Reader> {
    if !data_dir.join("catalog.db").exists() {
        return None;
    }
    store::Reader::open(data_dir, Arc::new(base::clock::SystemClock)).ok()
}

/// Segments of `node` in `state` on the store at `data_dir` (path -> sha256; empty while there is no
/// catalog, or it is being created).
pub fn segments_on(
    data_dir: &Path,
    node: &str,
    state: store::SegmentState,
) -> BTreeMap<String, String> {
    let Some(store) = open_reader(data_dir) else {
        return BTreeMap::new();
    };
    store
        .segments_in_state(state)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.node == node)
        .map(|r| (r.path, r.sha256.unwrap_or_default()))
        .collect()
}

/// Sealed segments of `node` on the store at `data_dir` (path -> sha256).
pub fn sealed_on(data_dir: &Path, node: &str) -> BTreeMap<String, String> {
    segments_on(data_dir, node, store::SegmentState::Sealed)
}

/// The one cluster file of a primary (recording `cameras`) and the standby that protects it; both nodes'
/// processes read the same file, each with `--node`. Build one with [`ClusterFile::pair`], adjust
/// fields, then [`ClusterFile::write`]. `extra` is appended verbatim to the `[sync]` table.
#[derive(Clone, Debug)]
pub struct ClusterFile {
    pub primary: Identity,
    pub primary_data: PathBuf,
    pub standby: Identity,
    pub standby_data: PathBuf,
    /// Where the standby's agent binds.
    pub standby_listen: String,
    /// Where the primary reaches the standby: its listen address, or a [`FaultProxy::address`] in front
    /// of it.
    pub standby_address: String,
    /// The primary's cameras, `(name, rtsp url)`.
    pub cameras: Vec<(String, String)>,
    pub segment_s: u64,
    pub head_interval_ms: u64,
    pub reconcile_interval_ms: u64,
    /// 0 = scrubbing off.
    pub scrub_interval_ms: u64,
    pub extra: String,
    /// With `[arbiter]` (defaults) and these `arbiter_address`es of the primary and the standby: the
    /// standby records what it takes over and sends it back (flow-back).
    pub arbiter: Option<(String, String)>,
}

impl ClusterFile {
    /// `primary` (recording into `primary_data`, no cameras yet) protected by `standby` (storing into
    /// `standby_data`, listening and reached on `standby_listen`). Segments of 4 s, fast sync
    /// intervals (head 1 s, reconcile 2 s), scrub off.
    /// With `via`, a [`FaultProxy`] in front of the standby's listener, through which the primary
    /// then reaches it; the proxy, to cut or throttle the link.
    pub fn through_proxy(&mut self, via: bool) -> Option<FaultProxy> {
        let proxy = via.then(|| FaultProxy::start(self.standby_listen.parse().expect("addr")));
        if let Some(p) = &proxy {
            self.standby_address = p.address();
        }
        proxy
    }

    pub fn pair(
        primary: &Identity,
        primary_data: &Path,
        standby: &Identity,
        standby_data: &Path,
        standby_listen: &str,
    ) -> ClusterFile {
        ClusterFile {
            primary: primary.clone(),
            primary_data: primary_data.to_path_buf(),
            standby: standby.clone(),
            standby_data: standby_data.to_path_buf(),
            standby_listen: standby_listen.to_string(),
            standby_address: standby_listen.to_string(),
            cameras: Vec::new(),
            segment_s: 4,
            head_interval_ms: 1000,
            reconcile_interval_ms: 2000,
            scrub_interval_ms: 0,
            extra: String::new(),
            arbiter: None,
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = recorder_sections(self.segment_s);
        let _ = writeln!(
            s,
            "\n[sync]\nhead_interval_ms = {}\nreconcile_interval_ms = {}\nscrub_interval_ms = {}",
            self.head_interval_ms, self.reconcile_interval_ms, self.scrub_interval_ms
        );
        if !self.extra.is_empty() {
            s.push_str(&self.extra);
            if !self.extra.ends_with('\n') {
                s.push('\n');
            }
        }
        if self.arbiter.is_some() {
            s.push_str("\n[arbiter]\n");
        }
        let node = |s: &mut String,
                    id: &Identity,
                    role: &str,
                    data: &Path,
                    arbiter: Option<&str>| {
            let _ = writeln!(
                s,
                "\n[[nodes]]\nname = {}\nrole = {}\ndata_dir = {}\nidentity_dir = {}\ncert_sha256 = {}\nsigning_public_key = {}",
                toml_string(&id.node),
                toml_string(role),
                toml_string(&path_str(data)),
                toml_string(&path_str(&id.dir)),
                toml_string(&id.cert_sha256),
                toml_string(&id.signing_public_key)
            );
            if let Some(a) = arbiter {
                let _ = writeln!(s, "arbiter_address = {}", toml_string(a));
            }
        };
        let (arb_a, arb_s) = match &self.arbiter {
            Some((a, s)) => (Some(a.as_str()), Some(s.as_str())),
            None => (None, None),
        };
        node(&mut s, &self.primary, "primary", &self.primary_data, arb_a);
        node(&mut s, &self.standby, "standby", &self.standby_data, arb_s);
        let _ = writeln!(
            s,
            "address = {}\nprotects = [{}]",
            toml_string(&self.standby_address),
            toml_string(&self.primary.node)
        );
        if self.standby_listen != self.standby_address {
            let _ = writeln!(s, "listen = {}", toml_string(&self.standby_listen));
        }
        let cams: Vec<(&str, &str)> = self
            .cameras
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        s.push_str(&camera_tables(&self.primary.node, &cams));
        s
    }

    /// Writes `<dir>/cluster.toml` and returns its path.
    pub fn write(&self, dir: &TestDir) -> PathBuf {
        dir.write("cluster.toml", self.to_toml())
    }
}

/// Writes the cluster file of [`ClusterFile::pair`] with `cameras` on the primary.
pub fn write_cluster_config(
    dir: &TestDir,
    primary: &Identity,
    primary_data: &Path,
    standby: &Identity,
    standby_data: &Path,
    standby_listen: &str,
    cameras: &[(&str, &str)],
) -> PathBuf {
    let mut c = ClusterFile::pair(primary, primary_data, standby, standby_data, standby_listen);
    c.cameras = cameras
        .iter()
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .collect();
    c.write(dir)
}

fn sync_envs() -> Vec<(&'static str, &'static str)> {
    let mut envs = vec![("RUST_BACKTRACE", "1")];
    if std::env::var_os("RUST_LOG").is_none() {
        envs.push(("RUST_LOG", "info"));
    }
    envs
}

/// Spawns `nvr-sync ARGS...` like [`NvrProcess::spawn`] spawns `nvr` (logs
/// `<dir>/nvr-sync-<n>.{stdout,stderr}.log`, `RUST_BACKTRACE=1`, `RUST_LOG=info` unless set,
/// own process group, SIGKILL on drop, `.kill9()`, `.sigterm()`).
pub fn spawn_sync_args(dir: &TestDir, args: &[&str]) -> NvrProcess {
    NvrProcess::spawn_program(dir, "nvr-sync", nvr_sync_bin(), args, &sync_envs())
}

/// Runs node `node`'s agent: `nvr-sync run --config CONFIG --node NODE`.
pub fn spawn_sync(dir: &TestDir, config: &Path, node: &str) -> NvrProcess {
    spawn_sync_args(dir, &["run", "--config", &path_str(config), "--node", node])
}

/// Runs a short `nvr-sync` command to completion; panics if it takes longer than `timeout`.
pub fn run_sync(dir: &TestDir, args: &[&str], timeout: Duration) -> NvrOutput {
    let mut p = spawn_sync_args(dir, args);
    let Some(status) = p.wait_exit(timeout) else {
        panic!(
            "nvr-sync {args:?} did not finish within {timeout:?}; stderr tail:\n{}",
            p.stderr_tail(60)
        );
    };
    NvrOutput {
        status,
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// [`run_sync`] of a command that must succeed; panics with its output if it fails.
pub fn run_sync_ok(dir: &TestDir, args: &[&str], timeout: Duration) -> NvrOutput {
    let out = run_sync(dir, args, timeout);
    assert!(
        out.status.success(),
        "nvr-sync {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// `nvr-sync status --config CONFIG --node NODE`, parsed as JSON. Panics on failure or non-JSON output.
pub fn sync_status(dir: &TestDir, config: &Path, node: &str) -> serde_json::Value {
    let out = run_sync_ok(
        dir,
        &["status", "--config", &path_str(config), "--node", node],
        Duration::from_secs(30),
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nvr-sync status printed no JSON ({e}):\n{}{}",
            out.stdout, out.stderr
        )
    })
}

/// `nvr-sync restore --config CONFIG --node NODE [--camera C] [--from-ms A --to-ms B]`; the caller
/// checks the exit status.
pub fn sync_restore(
    dir: &TestDir,
    config: &Path,
    node: &str,
    camera: Option<&str>,
    range_ms: Option<(i64, i64)>,
    timeout: Duration,
) -> NvrOutput {
    let config = path_str(config);
    let mut args: Vec<String> = vec![
        "restore".into(),
        "--config".into(),
        config,
        "--node".into(),
        node.into(),
    ];
    if let Some(c) = camera {
        args.extend(["--camera".into(), c.to_string()]);
    }
    if let Some((from, to)) = range_ms {
        args.extend([
            "--from-ms".into(),
            from.to_string(),
            "--to-ms".into(),
            to.to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_sync(dir, &args, timeout)
}

/// [`sync_restore`] that must succeed: its JSON report.
pub fn restore_report(
    dir: &TestDir,
    config: &Path,
    node: &str,
    camera: Option<&str>,
    range_ms: Option<(i64, i64)>,
    timeout: Duration,
) -> serde_json::Value {
    let out = sync_restore(dir, config, node, camera, range_ms, timeout);
    assert!(
        out.status.success(),
        "restore failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("restore report: {e}\n{}", out.stdout))
}

/// [`restore_report`] of every stream of node-a, two minutes at most.
pub fn restore_node_a(dir: &TestDir, config: &Path) -> serde_json::Value {
    restore_report(dir, config, "node-a", None, None, Duration::from_secs(120))
}

/// Reads exactly `n` bytes or fails after `timeout` (for tests talking through a proxy).
pub fn read_exact_timeout(
    stream: &mut TcpStream,
    n: usize,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("read {got} of {n} bytes"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {got} of {n} bytes"),
                ))
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// Writes all of `data` (convenience for tests; panics on error).
pub fn write_all_or_panic(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("write to proxy connection");
}
