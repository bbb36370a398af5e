//! The workspace's test rig, a dev-dependency of every crate's integration tests (`use testkit as
//! common;` in `nvr/tests/`, re-exported by `sync/tests/common/mod.rs`). It depends on no crate of the
//! workspace: programs under test are run as processes.
//!
//! * [`GstCamera`]: a real RTSP camera (GStreamer's gst-rtsp-server driven by `tests/rtsp_server.py`).
//! * [`HostileCamera`]: a misbehaving RTSP server (`tests/hostile_camera.py`).
//! * [`vlc::VlcServer`]: VLC 3's RTSP server serving a clip (`cvlc`).
//! * [`NvrProcess`]: the `nvr` binary under test, stderr/stdout captured to log files in the test's
//!   [`TestDir`]; the log tail is printed when a test panics while the process handle is alive.
//! * [`ffprobe`]: frame count, codec, size, duration and decode errors of a recorded file.
//! * [`free_port`], [`wait_until`], [`TestDir`].
//! * [`systemd::assert_unit_verifies`]: `systemd-analyze verify` of a shipped unit.
//! * [`cluster`]: the failover rig (nodes with recorder, sync agent and arbiter; the camera simulator);
//!   [`frames`]: exact frame counts from camsim's stamps (`nvr frames`).
//!
//! Everything listens on 127.0.0.1 and on ports picked at run time: other processes on the machine
//! may hold any fixed port. Child processes are started in their own process group and the whole
//! group is killed on drop; the Python cameras also exit when their parent process goes away.

pub mod cluster;
pub mod frames;
pub mod systemd;
pub mod vlc;

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a camera script may take to print `READY <port>`.
pub const CAMERA_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports [`GstCamera::start`] / [`HostileCamera::start`] try before giving up.
const PORT_ATTEMPTS: usize = 8;
/// Exit code the camera scripts use for "port taken".
const EXIT_PORT_TAKEN: i32 = 2;

/// Debian's Python: the `python3` first on PATH may be a build without `gi`.
pub const GST_PYTHON: &str = "/usr/bin/python3";

/// Path of a file under the repository's `tests/` directory.
pub fn repo_tests_file(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests")).join(name)
}

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// A port that was free a moment ago on 127.0.0.1.
///
/// Race: the port is released before the caller binds it, so another process may grab it in
/// between. The camera starters handle this by retrying with a new port when the server reports
/// the port as taken; anything else that binds a port from here must be ready for the same.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Polls `cond` every `poll_interval` until it returns true (returns true) or `timeout` passes
/// (returns false). `cond` is always evaluated at least once, and once more at the deadline.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(poll_interval.min(deadline - now));
    }
}

/// A temporary directory for one test, removed on drop unless [`TestDir::keep`] is called or the
/// `NVR_TEST_KEEP` environment variable is set (then its path is printed).
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("nvr-test-")
            .tempdir()
            .expect("create temporary test directory");
        TestDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("TestDir already consumed").path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `contents` to `rel` (creating parent directories) and returns the full path.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent directories in TestDir");
        }
        fs::write(&path, contents).expect("write file in TestDir");
        path
    }

    /// Keeps the directory on disk (for debugging) and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.dir.take().expect("TestDir already consumed").keep()
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("NVR_TEST_KEEP").is_some() || thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test directory kept: {}", dir.keep().display());
            }
        }
    }
}

/// The log of a helper server that has stopped: its last lines printed under `name` when the
/// thread panics (the test failed and they may tell why), else removed.
pub(crate) fn end_server_log(log: &Path, name: &str) {
    if thread::panicking() {
        eprintln!(
            "--- {name} log {} (tail) ---\n{}",
            log.display(),
            file_tail(log, 20)
        );
    } else {
        let _ = fs::remove_file(log);
    }
}

/// Last `lines` lines of a text file ("" if it cannot be read).
pub fn file_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    // Read at most the last 256 KiB: logs of long tests can be big.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[allow(unsafe_code)]
fn signal_raw(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions; it only takes integers.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Sends `signal` to the process group led by `child` (the child must have been spawned with
/// `process_group(0)`).
fn signal_group(child: &Child, signal: libc::c_int) -> bool {
    match i32::try_from(child.id()) {
        Ok(pid) if pid > 0 => signal_raw(-pid, signal),
        _ => false,
    }
}

fn signal_pid(child: &Child, signal: libc::c_int) -> bool {
    match i32::try_from(child.id()) {
        Ok(pid) if pid > 0 => signal_raw(pid, signal),
        _ => false,
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs the whole process group of `child` and reaps it.
fn kill_group_and_reap(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        // Already reaped: its pid (and so the group id) may be reused by now; signal nothing.
        return;
    }
    if !signal_group(child, libc::SIGKILL) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn append_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log file {}: {e}", path.display()))
}

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_log_path(prefix: &str) -> PathBuf {
    let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("nvr-rig-{prefix}-{}-{n}.log", std::process::id()))
}

// ---------------------------------------------------------------------------------------------
// Camera scripts (shared by GstCamera and HostileCamera)
// ---------------------------------------------------------------------------------------------

enum SpawnOutcome {
    Ready(Child),
    PortTaken,
}

/// Spawns `program args... --port port`, waits for `READY <port>` on stdout. The child's stderr
/// is appended to `log`.
fn spawn_script(program: &str, args: &[String], port: u16, log: &Path) -> SpawnOutcome {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg("--port")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append_log(log))
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "spawn {program} {args:?}: {e} (run tests/run once to install the test dependencies)"
        )
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        // Forward lines until EOF; keeps draining so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Receiver gone: keep reading and dropping.
            }
        }
    });
    let expected = format!("READY {port}");
    let deadline = Instant::now() + CAMERA_READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim() == expected => return SpawnOutcome::Ready(child),
            Ok(_other) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_child(&mut child, Duration::from_secs(5));
                if status.and_then(|s| s.code()) == Some(EXIT_PORT_TAKEN) {
                    return SpawnOutcome::PortTaken;
                }
                kill_group_and_reap(&mut child);
                panic!(
                    "{program} {args:?} --port {port} exited before READY ({status:?}); log {}:\n{}",
                    log.display(),
                    file_tail(log, 40)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group_and_reap(&mut child);
                panic!(
                    "{program} {args:?} --port {port}: no READY within {CAMERA_READY_TIMEOUT:?}; log {}:\n{}",
                    log.display(),
                    file_tail(log, 40)
                );
            }
        }
    }
}

/// Spawns a script on `first_port` (or a free port), retrying with fresh ports while the script
/// reports the port as taken.
fn spawn_script_any_port(
    program: &str,
    args: &[String],
    first_port: Option<u16>,
    log: &Path,
) -> (Child, u16) {
    let mut port = first_port.unwrap_or_else(free_port);
    for _ in 0..PORT_ATTEMPTS {
        match spawn_script(program, args, port, log) {
            SpawnOutcome::Ready(child) => return (child, port),
            SpawnOutcome::PortTaken => port = free_port(),
        }
    }
    panic!(
        "{program} {args:?}: no free port after {PORT_ATTEMPTS} attempts; log:\n{}",
        file_tail(log, 40)
    );
}

/// Stops the script's server in `child`, if it runs (SIGKILL to its process group).
fn stop_script(child: &mut Option<Child>) {
    if let Some(mut running) = child.take() {
        kill_group_and_reap(&mut running);
    }
}

/// Stops the script's server in `child` if it runs, then starts `program args` again on `port`.
fn restart_script(
    child: &mut Option<Child>,
    program: &str,
    args: &[String],
    port: u16,
    log: &Path,
) {
    stop_script(child);
    *child = Some(spawn_script_same_port(
        program,
        args,
        port,
        log,
        Duration::from_secs(10),
    ));
}

/// Spawns a script on exactly `port`, retrying for up to `within` while the port is taken (e.g.
/// a previous instance is still releasing it).
fn spawn_script_same_port(
    program: &str,
    args: &[String],
    port: u16,
    log: &Path,
    within: Duration,
) -> Child {
    let deadline = Instant::now() + within;
    loop {
        match spawn_script(program, args, port, log) {
            SpawnOutcome::Ready(child) => return child,
            SpawnOutcome::PortTaken if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(200))
            }
            SpawnOutcome::PortTaken => {
                panic!("port {port} still taken after {within:?}; cannot restart on it")
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for user info in URLs).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn normalize_mount(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

// ---------------------------------------------------------------------------------------------
// GstCamera
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Digest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraAuth {
    pub method: AuthMethod,
    pub user: String,
    pub password: String,
}

impl CameraAuth {
    pub fn digest(user: &str, password: &str) -> CameraAuth {
        CameraAuth {
            method: AuthMethod::Digest,
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn basic(user: &str, password: &str) -> CameraAuth {
        CameraAuth {
            method: AuthMethod::Basic,
            user: user.into(),
            password: password.into(),
        }
    }
}

/// Options of a [`GstCamera`]; `CameraOpts::default()` is 320x240, 25 fps, a key frame every 25
/// frames, 512 kbit/s, no B-frames, no auth.
#[derive(Clone, Debug)]
pub struct CameraOpts {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop_frames: u32,
    pub bitrate_kbps: u32,
    /// B-frames between reference frames (`--bframes`; no pyramid: a reorder depth of one frame).
    pub bframes: u32,
    /// Offer RTP over UDP only (`--protocols udp`): TCP interleaving is answered with 461.
    pub udp_only: bool,
    /// Test picture (`--pattern`): `ball` (the default) or `snow` (noise: large frames).
    pub pattern: &'static str,
    pub auth: Option<CameraAuth>,
    /// Video parameter sets only in the SDP, never in the stream (`--no-inband-parameter-sets`).
    pub no_inband_parameter_sets: bool,
    /// Every `a=fmtp` of the SDP ends with `;` (`--sdp-fmtp-trailing-semicolon`).
    pub sdp_fmtp_trailing_semicolon: bool,
}

impl Default for CameraOpts {
    fn default() -> Self {
        CameraOpts {
            width: 320,
            height: 240,
            fps: 25,
            gop_frames: 25,
            bitrate_kbps: 512,
            bframes: 0,
            udp_only: false,
            pattern: "ball",
            auth: None,
            no_inband_parameter_sets: false,
            sdp_fmtp_trailing_semicolon: false,
        }
    }
}

/// A live RTSP camera: `tests/rtsp_server.py` (gst-rtsp-server) on 127.0.0.1.
pub struct GstCamera {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    opts: CameraOpts,
    log: PathBuf,
}

impl GstCamera {
    /// Starts a camera with `mounts` as `(path, kind)`, kind one of `h264`, `h265`, `h264+aac`,
    /// `h264+pcma`, `h264+pcmu`, `h264+opus`, on a free port. Returns once the server listens.
    pub fn start(mounts: &[(&str, &str)], opts: CameraOpts) -> GstCamera {
        GstCamera::start_on(None, mounts, opts)
    }

    /// Like [`GstCamera::start`], trying `port` first; if it is taken, falls back to free ports.
    pub fn start_on(port: Option<u16>, mounts: &[(&str, &str)], opts: CameraOpts) -> GstCamera {
        let script = repo_tests_file("rtsp_server.py");
        let mut args = vec![script.to_string_lossy().into_owned()];
        for (path, kind) in mounts {
            args.push("--mount".into());
            args.push(format!("{}={kind}", normalize_mount(path)));
        }
        for (flag, value) in [
            ("--width", opts.width),
            ("--height", opts.height),
            ("--fps", opts.fps),
            ("--gop-frames", opts.gop_frames),
            ("--bitrate", opts.bitrate_kbps),
        ] {
            args.push(flag.into());
            args.push(value.to_string());
        }
        if opts.pattern != "ball" {
            args.push("--pattern".into());
            args.push(opts.pattern.into());
        }
        if opts.udp_only {
            args.push("--protocols".into());
            args.push("udp".into());
        }
        if opts.no_inband_parameter_sets {
            args.push("--no-inband-parameter-sets".into());
        }
        if opts.sdp_fmtp_trailing_semicolon {
            args.push("--sdp-fmtp-trailing-semicolon".into());
        }
        if opts.bframes > 0 {
            args.push("--bframes".into());
            args.push(opts.bframes.to_string());
        }
        if let Some(auth) = &opts.auth {
            let method = match auth.method {
                AuthMethod::Basic => "basic",
                AuthMethod::Digest => "digest",
            };
            args.push("--auth".into());
            args.push(format!("{method}:{}:{}", auth.user, auth.password));
        }
        let log = unique_log_path("gstcam");
        let (child, port) = spawn_script_any_port(GST_PYTHON, &args, port, &log);
        GstCamera {
            child: Some(child),
            port,
            args,
            opts,
            log,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn opts(&self) -> &CameraOpts {
        &self.opts
    }

    /// `rtsp://127.0.0.1:PORT/path`, without credentials.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, normalize_mount(path))
    }

    /// Like [`GstCamera::url`] with the configured credentials (percent-encoded) in the URL.
    pub fn url_with_credentials(&self, path: &str) -> String {
        match &self.opts.auth {
            None => self.url(path),
            Some(a) => format!(
                "rtsp://{}:{}@127.0.0.1:{}{}",
                percent_encode(&a.user),
                percent_encode(&a.password),
                self.port,
                normalize_mount(path)
            ),
        }
    }

    /// The server's stderr log (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the server (SIGKILL to its process group: connections drop without TEARDOWN, as when
    /// a camera loses power). The port stays reserved in this handle for [`Self::restart_same_port`].
    pub fn stop(&mut self) {
        stop_script(&mut self.child);
    }

    /// Stops the server if it runs, then starts it again on the same port and mounts.
    pub fn restart_same_port(&mut self) {
        restart_script(
            &mut self.child,
            GST_PYTHON,
            &self.args,
            self.port,
            &self.log,
        );
    }
}

impl Drop for GstCamera {
    fn drop(&mut self) {
        self.stop();
        end_server_log(&self.log, &format!("GstCamera port {}", self.port));
    }
}

// ---------------------------------------------------------------------------------------------
// HostileCamera
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostileMode {
    /// Accepts TCP connections, never answers.
    Silent,
    /// Proper OPTIONS/DESCRIBE/SETUP/PLAY, then random garbage and malformed `$` frames forever.
    GarbageAfterPlay,
    /// Proper handshake, then truncated/invalid RTP headers and FU-A fragments that never end.
    TruncatedRtp,
    /// Answers OPTIONS and DESCRIBE, then closes the connection.
    CloseAfterDescribe,
}

impl HostileMode {
    pub const ALL: [HostileMode; 4] = [
        HostileMode::Silent,
        HostileMode::GarbageAfterPlay,
        HostileMode::TruncatedRtp,
        HostileMode::CloseAfterDescribe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostileMode::Silent => "silent",
            HostileMode::GarbageAfterPlay => "garbage-after-play",
            HostileMode::TruncatedRtp => "truncated-rtp",
            HostileMode::CloseAfterDescribe => "close-after-describe",
        }
    }
}

/// A misbehaving RTSP server: `tests/hostile_camera.py` on 127.0.0.1 (any path is accepted).
pub struct HostileCamera {
    child: Option<Child>,
    port: u16,
    mode: HostileMode,
    args: Vec<String>,
    log: PathBuf,
}

impl HostileCamera {
    pub fn start(mode: HostileMode) -> HostileCamera {
        let script = repo_tests_file("hostile_camera.py");
        let args = vec![
            script.to_string_lossy().into_owned(),
            "--mode".into(),
            mode.as_str().into(),
        ];
        let log = unique_log_path("hostile");
        let (child, port) = spawn_script_any_port("python3", &args, None, &log);
        HostileCamera {
            child: Some(child),
            port,
            mode,
            args,
            log,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> HostileMode {
        self.mode
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, normalize_mount(path))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn stop(&mut self) {
        stop_script(&mut self.child);
    }

    pub fn restart_same_port(&mut self) {
        restart_script(&mut self.child, "python3", &self.args, self.port, &self.log);
    }
}

impl Drop for HostileCamera {
    fn drop(&mut self) {
        self.stop();
        end_server_log(
            &self.log,
            &format!("HostileCamera {} port {}", self.mode.as_str(), self.port),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// LossyProxy
// ---------------------------------------------------------------------------------------------

/// Damage done by a [`LossyProxy`] so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossyStats {
    /// Packets of the damaged channel that were candidates.
    pub seen: u64,
    pub dropped: u64,
    /// Packets sent after the packet that followed them.
    pub reordered: u64,
    /// The damage window (`damage_packets`) has passed: no more damage.
    pub done: bool,
}

/// What a [`LossyProxy`] does; `LossyOpts::default()` passes everything unchanged.
#[derive(Clone, Debug, Default)]
pub struct LossyOpts {
    /// Percent of the first stream's RTP packets (interleaved channel 0, or its UDP datagrams) dropped.
    pub drop_percent: f64,
    /// Percent of them sent after the packet that follows them (or the next `reorder_distance`).
    pub reorder_percent: f64,
    /// How many packets a reordered one is sent after; 0 or 1: the next one.
    pub reorder_distance: u32,
    /// Only the first this-many packets of the channel are damaged (0: all).
    pub damage_packets: u64,
    /// Every `a=fmtp` line of the SDP ends with `;`.
    pub sdp_trailing_semicolon: bool,
    /// The SDP's `sprop-*` parameters are removed: parameter sets only in band.
    pub sdp_drop_sprop: bool,
    /// RTP goes over UDP through the proxy's own port pairs (SETUP's ports rewritten); the
    /// damage applies to the first stream's RTP datagrams. The client must ask for UDP.
    pub udp: bool,
}

/// A lossy, quirky link for RTSP (RTP interleaved over TCP, or over UDP) in front of a camera: `tests/lossy_rtsp_proxy.py` with
/// [`LossyOpts`] (seeded: the same damage every run).
pub struct LossyProxy {
    child: Option<Child>,
    port: u16,
    stats: PathBuf,
    log: PathBuf,
}

impl LossyProxy {
    pub fn start(upstream_port: u16, opts: LossyOpts) -> LossyProxy {
        let script = repo_tests_file("lossy_rtsp_proxy.py");
        let log = unique_log_path("lossy");
        let stats = log.with_extension("json");
        let mut args = vec![
            script.to_string_lossy().into_owned(),
            "--upstream-port".into(),
            upstream_port.to_string(),
            "--drop-percent".into(),
            opts.drop_percent.to_string(),
            "--reorder-percent".into(),
            opts.reorder_percent.to_string(),
            "--damage-packets".into(),
            opts.damage_packets.to_string(),
            "--stats".into(),
            stats.to_string_lossy().into_owned(),
        ];
        if opts.reorder_distance > 1 {
            args.push("--reorder-distance".into());
            args.push(opts.reorder_distance.to_string());
        }
        if opts.sdp_trailing_semicolon {
            args.push("--sdp-trailing-semicolon".into());
        }
        if opts.sdp_drop_sprop {
            args.push("--sdp-drop-sprop".into());
        }
        if opts.udp {
            args.push("--udp".into());
        }
        let (child, port) = spawn_script_any_port("python3", &args, None, &log);
        LossyProxy {
            child: Some(child),
            port,
            stats,
            log,
        }
    }

    /// The camera's `path` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, normalize_mount(path))
    }

    pub fn stats(&self) -> LossyStats {
        let v: serde_json::Value = fs::read(&self.stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        LossyStats {
            seen: v["seen"].as_u64().unwrap_or(0),
            dropped: v["dropped"].as_u64().unwrap_or(0),
            reordered: v["reordered"].as_u64().unwrap_or(0),
            done: v["done"].as_bool().unwrap_or(false),
        }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        stop_script(&mut self.child);
        end_server_log(&self.log, &format!("LossyProxy port {}", self.port));
        let _ = fs::remove_file(&self.stats);
    }
}

// ---------------------------------------------------------------------------------------------
// ffprobe
// ---------------------------------------------------------------------------------------------

/// What ffprobe and a full ffmpeg decode say about a media file (or URL).
#[derive(Clone, Debug, Default)]
pub struct FfprobeReport {
    /// Decoded video frames (`-count_frames`); 0 for URLs probed with [`ffprobe_url`].
    pub frames: u64,
    /// Codec of the first video stream (`h264`, `hevc`), "" if there is none.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Container duration (falls back to the video stream's), 0.0 if unknown.
    pub duration_s: f64,
    /// Codec of the first audio stream, if any.
    pub audio_codec: Option<String>,
    /// Error output of ffprobe and of `ffmpeg -v error -i F -f null -` ("" when clean).
    pub stderr_errors: String,
}

fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn json_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Parses `ffprobe -of json -show_streams -show_format` output.
fn parse_probe_json(json: &str) -> FfprobeReport {
    let mut report = FfprobeReport::default();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        report
            .stderr_errors
            .push_str("ffprobe printed no valid JSON\n");
        return report;
    };
    let empty = Vec::new();
    let streams = v
        .get("streams")
        .and_then(|s| s.as_array())
        .unwrap_or(&empty);
    let stream_type = |s: &serde_json::Value| {
        s.get("codec_type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string()
    };
    let name = |s: &serde_json::Value| {
        s.get("codec_name")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut video_duration = None;
    if let Some(video) = streams.iter().find(|s| stream_type(s) == "video") {
        report.codec = name(video);
        report.width = video
            .get("width")
            .and_then(json_u64)
            .and_then(|w| u32::try_from(w).ok())
            .unwrap_or(0);
        report.height = video
            .get("height")
            .and_then(json_u64)
            .and_then(|h| u32::try_from(h).ok())
            .unwrap_or(0);
        report.frames = video.get("nb_read_frames").and_then(json_u64).unwrap_or(0);
        video_duration = video.get("duration").and_then(json_f64);
    }
    report.audio_codec = streams.iter().find(|s| stream_type(s) == "audio").map(name);
    report.duration_s = v
        .get("format")
        .and_then(|f| f.get("duration"))
        .and_then(json_f64)
        .or(video_duration)
        .unwrap_or(0.0);
    report
}

fn run_capture(cmd: &mut Command, what: &str) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e} (is ffmpeg installed? run tests/run)"))
}

/// Probes a media file: stream info with `-count_frames`, then a full decode with
/// `ffmpeg -v error -i F -f null -`; both error outputs end up in `stderr_errors`.
pub fn ffprobe(path: impl AsRef<Path>) -> FfprobeReport {
    let path = path.as_ref();
    let out = run_capture(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_streams",
                "-show_format",
                "-of",
                "json",
            ])
            .arg(path),
        "ffprobe",
    );
    let mut report = parse_probe_json(&String::from_utf8_lossy(&out.stdout));
    report
        .stderr_errors
        .push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let _ = writeln!(report.stderr_errors, "ffprobe exited with {}", out.status);
    }
    let decode = run_capture(
        Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"]),
        "ffmpeg",
    );
    report
        .stderr_errors
        .push_str(&String::from_utf8_lossy(&decode.stderr));
    if !decode.status.success() {
        let _ = writeln!(
            report.stderr_errors,
            "ffmpeg decode exited with {}",
            decode.status
        );
    }
    report
}

/// Probes an RTSP URL over TCP (stream info only: no frame count, no decode). `stderr_errors`
/// holds ffprobe's error output, e.g. `401 Unauthorized`.
pub fn ffprobe_url(url: &str, timeout: Duration) -> FfprobeReport {
    let mut child = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run ffprobe: {e} (is ffmpeg installed? run tests/run)"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        kill_group_and_reap(&mut child);
    }
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    let mut report = parse_probe_json(&out);
    report.stderr_errors.push_str(&err);
    match status {
        None => {
            let _ = writeln!(report.stderr_errors, "ffprobe timed out after {timeout:?}");
        }
        Some(s) if !s.success() => {
            let _ = writeln!(report.stderr_errors, "ffprobe exited with {s}");
        }
        Some(_) => {}
    }
    report
}

// ---------------------------------------------------------------------------------------------
// NvrProcess
// ---------------------------------------------------------------------------------------------

/// Path of a workspace binary: `<target>/<profile>/<name>` next to the running test executable
/// (`<target>/<profile>/deps/<test>-<hash>`) or benchmark binary (`<target>/<profile>/<bench>`).
/// Panics with a hint when the binary is not there: binaries of *other* crates are not built by
/// `cargo test -p <crate>`, which is why `tests/run` runs `cargo build --workspace --bins` first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    // deps/<test> -> deps -> <profile>, or <profile>/<binary> -> <profile>
    let profile_dir = exe
        .parent()
        .and_then(|p| {
            if p.ends_with("deps") {
                p.parent()
            } else {
                Some(p)
            }
        })
        .unwrap_or_else(|| panic!("unexpected executable path {}", exe.display()));
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "binary `{name}` not found at {} (looked next to the test executable {}); \
         build it first: `cargo build --workspace --bins` (tests/run does this)",
        path.display(),
        exe.display()
    );
    path
}

/// Path of the `nvr` binary (works from the tests of any workspace crate; see [`workspace_bin`]).
pub fn nvr_bin() -> PathBuf {
    workspace_bin("nvr")
}

/// Path of the `nvr-sync` binary (works from the tests of any workspace crate).
pub fn nvr_sync_bin() -> PathBuf {
    workspace_bin("nvr-sync")
}

static SPAWN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running `nvr` (or, for testing the rig itself, any program). stdout and stderr go to
/// `<dir>/<name>-<n>.stdout.log` / `.stderr.log`; when a test panics while this handle is alive,
/// the stderr tail is printed. Drop SIGKILLs the process group.
pub struct NvrProcess {
    child: Option<Child>,
    status: Option<ExitStatus>,
    stderr_log: PathBuf,
    stdout_log: PathBuf,
    description: String,
}

impl NvrProcess {
    /// Spawns `nvr args...` with `RUST_BACKTRACE=1` and `RUST_LOG` defaulting to `info`.
    pub fn spawn(dir: &TestDir, args: &[&str]) -> NvrProcess {
        NvrProcess::spawn_with_env(dir, args, &[])
    }

    /// Like [`NvrProcess::spawn`] with extra environment variables.
    pub fn spawn_with_env(dir: &TestDir, args: &[&str], envs: &[(&str, &str)]) -> NvrProcess {
        let mut all_envs: Vec<(&str, &str)> = vec![("RUST_BACKTRACE", "1")];
        if std::env::var_os("RUST_LOG").is_none() {
            all_envs.push(("RUST_LOG", "info"));
        }
        all_envs.extend_from_slice(envs);
        NvrProcess::spawn_program(dir, "nvr", nvr_bin(), args, &all_envs)
    }

    /// Spawns any program the same way (used by the rig's own tests).
    pub fn spawn_program(
        dir: &TestDir,
        name: &str,
        program: impl AsRef<Path>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> NvrProcess {
        let n = SPAWN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let stderr_log = dir.join(format!("{name}-{n}.stderr.log"));
        let stdout_log = dir.join(format!("{name}-{n}.stdout.log"));
        let program = program.as_ref();
        let description = format!("{} {}", program.display(), args.join(" "));
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(append_log(&stdout_log))
            .stderr(append_log(&stderr_log))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
        NvrProcess {
            child: Some(child),
            status: None,
            stderr_log,
            stdout_log,
            description,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn stderr_log_path(&self) -> &Path {
        &self.stderr_log
    }

    pub fn stdout_log_path(&self) -> &Path {
        &self.stdout_log
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    /// Waits for a short-lived command (`check`, `check-config`, `demo`) and returns its exit status
    /// with stdout followed by stderr. Panics if it does not exit within `timeout`.
    pub fn wait_output(mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("{} did not exit within {timeout:?}", self.description));
        (status, format!("{}{}", self.stdout(), self.stderr()))
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        file_tail(&self.stderr_log, lines)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.status = Some(status);
                false
            }
            _ => false,
        }
    }

    /// Sends SIGTERM to the process itself (not its group): a clean shutdown request.
    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGHUP: the recorder reloads its configuration.
    pub fn sighup(&mut self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends SIGINT to the process itself.
    pub fn sigint(&mut self) {
        self.signal(libc::SIGINT);
    }

    fn signal(&mut self, sig: libc::c_int) {
        if !self.is_running() {
            return;
        }
        if let Some(child) = &self.child {
            signal_pid(child, sig);
        }
    }

    /// SIGKILLs the process group (a crash / power loss as far as the recorder can tell) and
    /// reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let child = self
            .child
            .as_mut()
            .expect("child present until exit is recorded");
        kill_group_and_reap(child);
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.description));
        self.status = Some(status);
        status
    }

    /// Waits up to `timeout` for the process to exit. `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.status {
            return Some(status);
        }
        let child = self.child.as_mut()?;
        let status = wait_child(child, timeout);
        self.status = status;
        status
    }

    /// Like [`NvrProcess::wait_exit`] but panics (printing the stderr tail) on timeout or on a
    /// non-zero exit.
    pub fn expect_clean_exit(&mut self, timeout: Duration) {
        match self.wait_exit(timeout) {
            Some(s) if s.success() => {}
            Some(s) => panic!(
                "{} exited with {s} (signal {:?}); stderr tail:\n{}",
                self.description,
                s.signal(),
                self.stderr_tail(60)
            ),
            None => panic!(
                "{} still running after {timeout:?}; stderr tail:\n{}",
                self.description,
                self.stderr_tail(60)
            ),
        }
    }
}

impl Drop for NvrProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_group_and_reap(child);
        }
        if thread::panicking() {
            eprintln!(
                "--- {} ({}) stderr tail ---\n{}\n--- end ---",
                self.description,
                self.stderr_log.display(),
                self.stderr_tail(60)
            );
        }
    }
}

/// Result of [`run_nvr`].
#[derive(Debug)]
pub struct NvrOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `nvr args...` to completion (for short commands like `check-config`); panics if it runs
/// longer than `timeout`.
pub fn run_nvr(dir: &TestDir, args: &[&str], timeout: Duration) -> NvrOutput {
    let mut p = NvrProcess::spawn(dir, args);
    let Some(status) = p.wait_exit(timeout) else {
        panic!(
            "nvr {args:?} did not finish within {timeout:?}; stderr tail:\n{}",
            p.stderr_tail(60)
        );
    };
    NvrOutput {
        status,
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}
