//! Shared set-up of the viewer's tests: camsim, `nvr run`, `nvr-web run` as real processes on loopback,
//! users made with `nvr-web user add`, and an HTTPS client that trusts the viewer's own certificate.

#![allow(dead_code)]

pub mod outage;
pub mod rig;
pub mod signed_log;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use testkit::{wait_until, NvrProcess, TestDir};

pub const PASSWORD: &str = "correct horse battery";

pub fn web_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvr-web"))
}

/// `nvr camsim` with one stream (`/cam1`) on `port` (a free one if `None`).
pub fn start_camsim(dir: &TestDir, port: Option<u16>) -> (NvrProcess, u16) {
    testkit::cluster::spawn_camsim_on(dir, 1, &[], port)
}

/// A one-node cluster file `<name>.toml` (node `node-a`, data in `data/`, camera `cam` at `camera_url`
/// if given), its viewer on `web_port` with state in `web_state`, sessions signed with `secret`.
pub fn write_config(
    dir: &TestDir,
    name: &str,
    camera_url: Option<&str>,
    web_port: u16,
    web_state: &str,
) -> PathBuf {
    dir.write("identity/identity.toml", "node = \"node-a\"\n");
    dir.write(
        "session.secret",
        "0123456789abcdef0123456789abcdef-shared\n",
    );
    let mut cfg = format!(
        r#"identity_dir = "{identity}"

[recording]
segment_duration_s = 2
flush_interval_ms = 500

[ingest]
connect_timeout_ms = 3000
frame_timeout_ms = 2000
backoff_initial_ms = 300
backoff_max_ms = 1000

[web]
listen = "127.0.0.1:{web_port}"
state_dir = "{state}"
session_secret_file = "{secret}"

[[nodes]]
name = "node-a"
role = "primary"
data_dir = "{data}"
"#,
        identity = dir.join("identity").display(),
        state = dir.join(web_state).display(),
        secret = dir.join("session.secret").display(),
        data = dir.join("data").display(),
    );
    if let Some(url) = camera_url {
        cfg.push_str(&format!(
            "\n[[cameras]]\nname = \"cam\"\nnode = \"node-a\"\n[cameras.streams.main]\nurl = \"{url}\"\nrecord = true\n"
        ));
    }
    dir.write(format!("{name}.toml"), cfg)
}

/// `nvr-web user ARGS… --config CONFIG`, the password from a file; panics on failure.
pub fn web_user(dir: &TestDir, config: &Path, args: &[&str]) {
    let pw = dir.write("password.txt", format!("{PASSWORD}\n"));
    let mut all = vec!["user", "--config"];
    let config = config.to_string_lossy().into_owned();
    all.push(&config);
    all.extend_from_slice(args);
    let pw = pw.to_string_lossy().into_owned();
    if args[0] != "del" {
        all.extend_from_slice(&["--password-file", &pw]);
    }
    let mut p = NvrProcess::spawn_program(dir, "nvr-web-user", web_bin(), &all, &[]);
    let status = p
        .wait_exit(Duration::from_secs(60))
        .expect("nvr-web user exits");
    assert!(status.success(), "nvr-web user {args:?}: {}", p.stderr());
}

/// A running viewer and what it printed.
pub struct Web {
    pub process: NvrProcess,
    pub port: u16,
    pub fingerprint: String,
}

/// Starts `nvr-web run --config CONFIG` and waits until it listens.
pub fn start_web(dir: &TestDir, config: &Path, port: u16) -> Web {
    let config = config.to_string_lossy().into_owned();
    let mut process = NvrProcess::spawn_program(
        dir,
        "nvr-web",
        web_bin(),
        &["run", "--config", &config],
        &[("RUST_LOG", "info")],
    );
    let listening = format!("nvr-web listening on https://127.0.0.1:{port}/");
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            process.stdout().contains(&listening) || !process.is_running()
        }) && process.stdout().contains(&listening),
        "nvr-web did not start: {}\n{}",
        process.stdout(),
        process.stderr()
    );
    let fingerprint = process
        .stdout()
        .lines()
        .find_map(|l| l.split_once(" SHA-256 ").map(|(_, f)| f.trim().to_owned()))
        .expect("fingerprint printed");
    Web {
        process,
        port,
        fingerprint,
    }
}

/// A blocking HTTPS client with a cookie store that trusts only `cert_pem` and reaches `localhost` on
/// 127.0.0.1.
pub fn client(cert_pem: &Path, port: u16) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(cert_pem).expect("read certificate");
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("certificate"))
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .cookie_store(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// camsim with one stream and the one-node cluster file `a.toml` recording it (`write_config`), the
/// viewer to listen on a free port with its state in `web/`: (camsim, its port, the viewer's port,
/// the cluster file).
pub fn one_camera(dir: &TestDir) -> (NvrProcess, u16, u16, PathBuf) {
    let (sim, cam_port) = start_camsim(dir, None);
    let web_port = testkit::free_port();
    let config = write_config(
        dir,
        "a",
        Some(&format!("rtsp://127.0.0.1:{cam_port}/cam1")),
        web_port,
        "web",
    );
    (sim, cam_port, web_port, config)
}

/// The catalog in `<dir>/data`, read-only, and the id of its stream `cam/main` (both must exist).
pub fn cam_reader(dir: &TestDir) -> (store::Reader, store::StreamId) {
    let reader =
        store::Reader::open(&dir.join("data"), Arc::new(base::clock::SystemClock)).expect("reader");
    let id = reader
        .find_stream("cam", "main")
        .expect("find")
        .expect("stream");
    (reader, id)
}

/// The whole output of a playback plan, read through `body::produce` as the viewer serves it.
pub fn plan_bytes(p: &nvr_web::playback::Plan) -> Vec<u8> {
    let mut out = Vec::new();
    nvr_web::playback::body::produce(
        p,
        nvr_web::playback::body::ByteRange {
            first: 0,
            last: p.total_len - 1,
        },
        &mut |c| {
            out.extend_from_slice(&c);
            true
        },
    )
    .expect("produce");
    out
}

/// The sealed segments of `cam/main` in `dir/data`; none while the catalog or the stream is not
/// there yet.
pub fn sealed_segments(dir: &TestDir) -> Vec<store::SegmentRow> {
    let Ok(reader) = store::Reader::open(&dir.join("data"), Arc::new(base::clock::SystemClock))
    else {
        return Vec::new();
    };
    let Ok(Some(id)) = reader.find_stream("cam", "main") else {
        return Vec::new();
    };
    reader
        .stream_segments(id)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state == store::SegmentState::Sealed)
        .collect()
}

/// Waits (a minute at most) until `<dir>/data` holds `n` sealed segments of `cam/main`, and returns
/// them; panics with the recorder's log otherwise.
pub fn wait_sealed_segments(
    dir: &TestDir,
    n: usize,
    recorder: &NvrProcess,
) -> Vec<store::SegmentRow> {
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            sealed_segments(dir).len() >= n
        }),
        "not {n} sealed segments: {}",
        recorder.stderr_tail(30)
    );
    sealed_segments(dir)
}

/// `nvr run` and `nvr-sync run` (which keeps the signed log exports need) on `config`:
/// (recorder, sync agent).
pub fn start_recorder_and_agent(dir: &TestDir, config: &Path) -> (NvrProcess, NvrProcess) {
    let config_arg = config.to_string_lossy().into_owned();
    let nvr = NvrProcess::spawn(dir, &["run", "--config", &config_arg]);
    let agent = NvrProcess::spawn_program(
        dir,
        "nvr-sync",
        testkit::nvr_sync_bin(),
        &["run", "--config", &config_arg],
        &[("RUST_LOG", "info")],
    );
    (nvr, agent)
}

/// The browser scripts' folder, `tests/browser`; panics when playwright-core is not installed there.
pub fn browser_scripts() -> &'static Path {
    let script_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"));
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run tests/run, or `npm ci` in {}",
        script_dir.display()
    );
    script_dir
}

/// `node SCRIPT ARGS…` in the browser scripts' folder, and the one JSON line it prints; panics with
/// its output, and with what `context` then tells, when it fails.
pub fn run_browser_script<S: AsRef<OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = S>,
    context: impl FnOnce() -> String,
) -> serde_json::Value {
    let script_dir = browser_scripts();
    let out = Command::new("node")
        .arg(script_dir.join(script))
        .args(args)
        .current_dir(script_dir)
        .output()
        .expect("run node (tests/run installs nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script {script} failed:\n{stdout}\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}
