//! Shared set-up of the viewer's tests: camsim, `nvr run`, `nvr-web run` as real processes on loopback,
//! users made with `nvr-web user add`, and an HTTPS client that trusts the viewer's own certificate.

#![allow(dead_code)]

pub mod outage;
pub mod rig;
pub mod signed_log;

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::{free_port, wait_until, NvrProcess, TestDir};

pub const PASSWORD: &str = "correct horse battery";

pub fn web_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvr-web"))
}

/// `nvr camsim` with one stream (`/cam1`) on `port` (a free one if `None`).
pub fn start_camsim(dir: &TestDir, port: Option<u16>) -> (NvrProcess, u16) {
    for _ in 0..5 {
        let port = port.unwrap_or_else(free_port);
        let mut sim = NvrProcess::spawn(
            dir,
            &[
                "camsim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--streams",
                "1",
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
