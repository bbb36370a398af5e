//! Before authentication: connections that never finish the TLS handshake are capped (an authenticated
//! primary still gets through), and `accept` errors such as EMFILE back off instead of spinning.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

struct Pair {
    dir: TestDir,
    cfg: PathBuf,
    data_a: PathBuf,
    listen: String,
}

/// A primary and its standby that already share a small logged history (no recorder needed).
fn pair() -> Pair {
    let dir = TestDir::new();
    let cluster = new_pair(&dir);
    let data_a = cluster.primary_data.clone();
    let history = nvr_sync::fixture::History {
        count: 3,
        camera: "old".into(),
        first_start_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        segment_ms: 10_000,
        payload: vec![3; 1000],
    };
    build_history(&cluster, &history);
    let listen = cluster.standby_listen.clone();
    let cfg = cluster.write(&dir);
    Pair {
        dir,
        cfg,
        data_a,
        listen,
    }
}

fn connected(data_a: &Path) -> bool {
    status_file(data_a)["peers"]["standby-1"]["connected"].as_bool() == Some(true)
}

/// Starts node-a's agent and asserts that it connects to `standby` within `timeout`; the agent.
fn primary_gets_through(p: &Pair, standby: &NvrProcess, timeout: Duration) -> NvrProcess {
    let primary = spawn_sync(&p.dir, &p.cfg, "node-a");
    let through = wait_until(timeout, Duration::from_millis(100), || connected(&p.data_a));
    assert!(
        through,
        "primary kept out\nprimary:\n{}\nstandby:\n{}",
        primary.stderr_tail(20),
        standby.stderr_tail(20)
    );
    primary
}

fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect()
}

#[test]
fn idle_unauthenticated_connections_are_capped_and_the_primary_gets_through() {
    let p = pair();
    let standby = spawn_sync(&p.dir, &p.cfg, "standby-1");
    wait_standby_listening(&standby);
    let base_fds = open_fds(standby.pid().expect("pid"));
    // 300 connections that never start a TLS handshake, then the real primary (accepted after them).
    let idle = idle_connections(&p.listen, 300);
    assert_eq!(idle.len(), 300);
    let _primary = primary_gets_through(&p, &standby, Duration::from_secs(60));
    let fds = open_fds(standby.pid().expect("pid"));
    assert!(
        fds < base_fds + 100,
        "the standby holds {fds} descriptors ({base_fds} before) for 300 idle connections"
    );
    drop(idle);
}

#[test]
fn accept_errors_back_off_and_the_primary_gets_through_afterwards() {
    let p = pair();
    // The standby with few descriptors: idle connections exhaust them and accept fails (EMFILE).
    let agent = nvr_sync_bin();
    let cfg = p.cfg.to_string_lossy().into_owned();
    let agent_s = agent.to_string_lossy().into_owned();
    let standby = NvrProcess::spawn_program(
        &p.dir,
        "nvr-sync-lowfd",
        "sh",
        &[
            "-c",
            "ulimit -n 40 && exec \"$0\" \"$@\"",
            &agent_s,
            "run",
            "--config",
            &cfg,
            "--node",
            "standby-1",
        ],
        &[("RUST_LOG", "info")],
    );
    wait_standby_listening(&standby);
    let idle = idle_connections(&p.listen, 100);
    assert!(wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || standby.stderr_tail(20).contains("accept failed")
    ));
    let _primary = primary_gets_through(&p, &standby, Duration::from_secs(90));
    drop(idle);
    let log = std::fs::read_to_string(standby.stderr_log_path()).expect("standby log");
    let failures = log.matches("accept failed").count();
    assert!(
        failures < 200,
        "{failures} accept failures logged: the accept loop spins"
    );
}
