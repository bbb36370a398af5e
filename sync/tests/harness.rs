//! Tests of the sync test support itself (`sync/tests/common`): the fault proxy, the reuse of the
//! recorder's rig from this crate, identity files, configuration writers, hashing. If these fail,
//! failures of the sync tests say little about the sync agent.

mod common;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

/// A loopback echo server (one thread per connection); lives until the test process exits.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let Ok(mut reader) = stream.try_clone() else {
                    return;
                };
                let _ = io::copy(&mut reader, &mut stream);
            });
        }
    });
    addr
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).expect("connect to proxy");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn roundtrip(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write through proxy");
    let got = read_exact_timeout(s, data.len(), T).expect("echo through proxy");
    assert!(got == data, "echoed bytes differ");
}

/// Asserts the peer closed or reset `s` (EOF or an error other than a timeout) within `T`.
fn assert_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(T)).expect("read timeout");
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected a closed connection, read {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            panic!("connection still open after {T:?}")
        }
        Err(_) => {} // reset
    }
}

/// Asserts nothing arrives on `s` for `quiet`.
fn assert_silent(s: &mut TcpStream, quiet: Duration) {
    s.set_read_timeout(Some(quiet)).expect("read timeout");
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

#[test]
fn proxy_passes_bytes_both_ways_on_several_connections() {
    let proxy = FaultProxy::start(echo_server());
    assert_eq!(proxy.mode(), Mode::Pass);
    assert!(proxy.addr().ip().is_loopback());
    assert_eq!(proxy.address(), format!("127.0.0.1:{}", proxy.port()));

    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    let big = pattern(300_000, 1);
    let writer = {
        let mut a2 = a.try_clone().expect("clone");
        let big = big.clone();
        thread::spawn(move || a2.write_all(&big).expect("write big"))
    };
    roundtrip(&mut b, b"hello");
    let got = read_exact_timeout(&mut a, big.len(), T).expect("echo big");
    writer.join().expect("writer thread");
    assert!(got == big, "300 kB echo differs");

    // Counters are bumped right after each write: the peer may see bytes a moment earlier.
    assert!(wait_until(T, Duration::from_millis(10), || {
        proxy.bytes_to_target() == 300_005 && proxy.bytes_to_client() == 300_005
    }));
    assert_eq!(proxy.bytes_forwarded(), 600_010);
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.active_connections(), 2);

    // A client's half-close reaches the server, whose close reaches the client.
    a.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_closed(&mut a);
    assert!(wait_until(T, Duration::from_millis(10), || proxy
        .active_connections()
        == 1));
}

#[test]
fn proxy_stall_holds_bytes_then_delivers_them_in_order() {
    let proxy = FaultProxy::start(echo_server());
    let mut a = connect(&proxy);
    roundtrip(&mut a, b"ping");
    let before = 8;
    assert!(wait_until(T, Duration::from_millis(10), || proxy
        .bytes_forwarded()
        == before));

    proxy.set_mode(Mode::Stall);
    let data = pattern(50_000, 7);
    let writer = {
        let mut a2 = a.try_clone().expect("clone");
        let data = data.clone();
        thread::spawn(move || a2.write_all(&data).expect("write while stalled"))
    };
    // A connection opened while stalled is accepted but carries nothing either.
    let mut b = connect(&proxy);
    b.write_all(b"late").expect("write on new connection");
    assert_silent(&mut a, Duration::from_millis(500));
    assert_silent(&mut b, Duration::from_millis(100));
    assert_eq!(
        proxy.bytes_forwarded(),
        before,
        "bytes passed while stalled"
    );
    writer.join().expect("writer thread");
    assert_eq!(
        proxy.bytes_forwarded(),
        before,
        "bytes passed while stalled"
    );
    assert_eq!(
        proxy.active_connections(),
        2,
        "stall must keep sockets open"
    );

    proxy.set_mode(Mode::Pass);
    let got = read_exact_timeout(&mut a, data.len(), T).expect("buffered bytes after stall");
    assert!(got == data, "bytes buffered during the stall differ");
    assert_eq!(
        read_exact_timeout(&mut b, 4, T).expect("late bytes after stall"),
        b"late"
    );
    roundtrip(&mut a, b"after");
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn proxy_refuse_resets_existing_and_new_connections_until_pass() {
    let proxy = FaultProxy::start(echo_server());
    let mut a = connect(&proxy);
    roundtrip(&mut a, b"one");

    proxy.set_mode(Mode::Refuse);
    assert_closed(&mut a);
    assert_eq!(proxy.active_connections(), 0);

    // New connections: accepted by the kernel, then reset; nothing is echoed.
    for _ in 0..3 {
        let mut b = connect(&proxy);
        let _ = b.write_all(b"refused?");
        assert_closed(&mut b);
    }
    assert!(wait_until(T, Duration::from_millis(10), || proxy.refused() == 3));
    assert_eq!(proxy.connections(), 1);

    proxy.set_mode(Mode::Pass);
    let mut c = connect(&proxy);
    roundtrip(&mut c, b"two");
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn proxy_cut_closes_current_connections_once_then_passes() {
    let proxy = FaultProxy::start(echo_server());
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    roundtrip(&mut a, b"a");
    roundtrip(&mut b, b"b");

    proxy.cut();
    assert_closed(&mut a);
    assert_closed(&mut b);
    assert_eq!(proxy.mode(), Mode::Pass);
    assert_eq!(proxy.active_connections(), 0);

    let mut c = connect(&proxy);
    roundtrip(&mut c, b"c");
    assert_eq!(proxy.connections(), 3);
    assert_eq!(proxy.active_connections(), 1);
    assert_eq!(proxy.refused(), 0);
}

#[test]
fn proxy_bandwidth_limit_bounds_bytes_per_second() {
    const RATE: u64 = 50_000;
    const BURST: u64 = RATE / 10;
    const TOTAL: usize = 100_000;
    let proxy = FaultProxy::start(echo_server());
    let mut a = connect(&proxy);
    roundtrip(&mut a, b"x");
    let base = 1;
    assert!(wait_until(T, Duration::from_millis(10), || proxy
        .bytes_forwarded()
        == 2 * base));

    let start = Instant::now(); // before the limit, so `start` bounds the bucket's refills
    proxy.set_bandwidth_bytes_per_s(Some(RATE));
    let data = pattern(TOTAL, 3);
    let writer = {
        let mut a2 = a.try_clone().expect("clone");
        let data = data.clone();
        thread::spawn(move || a2.write_all(&data).expect("write"))
    };
    let reader = {
        let mut a2 = a.try_clone().expect("clone");
        thread::spawn(move || read_exact_timeout(&mut a2, TOTAL, Duration::from_secs(60)))
    };
    // Upper bound at every sample: the bucket grants at most RATE per second plus one burst.
    while !reader.is_finished() {
        let sent = proxy.bytes_to_target() - base;
        let allowed = RATE as f64 * start.elapsed().as_secs_f64() + BURST as f64;
        assert!(
            sent as f64 <= allowed,
            "{sent} bytes forwarded after {:?}, limit allows {allowed}",
            start.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let got = reader.join().expect("reader").expect("echo under limit");
    writer.join().expect("writer");
    let elapsed = start.elapsed();
    assert!(got == data, "bytes differ under the limit");
    // Lower bound on time (slower machines only make it slower).
    let min = Duration::from_secs_f64((TOTAL as u64 - BURST) as f64 / RATE as f64);
    assert!(
        elapsed >= min,
        "{TOTAL} bytes at {RATE} B/s took only {elapsed:?}"
    );

    // Unlimited again: 2 MB passes well within the generous bound (it would take 40 s limited).
    proxy.set_bandwidth_bytes_per_s(None);
    let data = pattern(2_000_000, 9);
    let writer = {
        let mut a2 = a.try_clone().expect("clone");
        let data = data.clone();
        thread::spawn(move || a2.write_all(&data).expect("write"))
    };
    let t = Instant::now();
    let got = read_exact_timeout(&mut a, data.len(), Duration::from_secs(20)).expect("unlimited");
    writer.join().expect("writer");
    assert!(got == data);
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn proxy_drop_closes_listener_and_connections() {
    let proxy = FaultProxy::start(echo_server());
    let addr = proxy.addr();
    let mut a = connect(&proxy);
    roundtrip(&mut a, b"bye");
    drop(proxy);
    assert_closed(&mut a);
    assert!(
        TcpStream::connect(addr).is_err(),
        "proxy port still accepts after drop"
    );
}

#[test]
fn proxy_counts_connections_to_a_dead_target() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let proxy = FaultProxy::start(dead);
    let mut a = connect(&proxy);
    assert_closed(&mut a);
    assert!(wait_until(T, Duration::from_millis(10), || proxy
        .connect_failures()
        == 1));
    assert_eq!(proxy.connections(), 0);

    // Retargeted: new connections reach the live server.
    proxy.set_target(echo_server());
    let mut b = connect(&proxy);
    roundtrip(&mut b, b"alive");
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn file_hashes_and_tree_comparison() {
    let dir = TestDir::new();
    // FIPS 180-2 test vectors.
    let abc = dir.write("abc", "abc");
    assert_eq!(
        file_sha256(&abc),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let empty = dir.write("empty", "");
    assert_eq!(
        file_sha256(&empty),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );

    dir.write("a/media/cam1/main/1.mp4", "one");
    dir.write("a/media/cam1/main/2.mp4", "two");
    dir.write("a/media/cam2/x.mp4", "abc");
    std::os::unix::fs::symlink(dir.join("abc"), dir.join("a/media/link")).expect("symlink");
    let a = media_files(dir.join("a"));
    let expected: BTreeMap<String, String> = [
        (
            "media/cam1/main/1.mp4",
            file_sha256(dir.join("a/media/cam1/main/1.mp4")),
        ),
        (
            "media/cam1/main/2.mp4",
            file_sha256(dir.join("a/media/cam1/main/2.mp4")),
        ),
        ("media/cam2/x.mp4", file_sha256(&abc)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(a, expected);

    assert!(media_files(dir.join("nothing-here")).is_empty());
    assert_eq!(
        diff_files(&a, &BTreeMap::new()),
        vec![
            "media/cam1/main/1.mp4",
            "media/cam1/main/2.mp4",
            "media/cam2/x.mp4"
        ]
    );
    dir.write("b/media/cam1/main/1.mp4", "one");
    dir.write("b/media/cam1/main/2.mp4", "TWO");
    dir.write("b/media/cam2/x.mp4", "abc");
    dir.write("b/media/extra.mp4", "more");
    let b = media_files(dir.join("b"));
    assert_eq!(diff_files(&a, &b), vec!["media/cam1/main/2.mp4"]);
    dir.write("b/media/cam1/main/2.mp4", "two");
    assert!(diff_files(&a, &media_files(dir.join("b"))).is_empty());
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn identity_files_and_sync_configs() {
    let dir = TestDir::new();
    let a = keygen_in_process(&dir, "node-a");
    let s = keygen_in_process(&dir, "standby-1");
    assert_eq!(a.node, "node-a");
    assert_eq!(a.dir, identity_dir(&dir, "node-a"));
    assert!(is_hex(&a.cert_sha256, 64), "{a:?}");
    assert!(is_hex(&a.signing_public_key, 64), "{a:?}");
    assert_ne!(a.cert_sha256, s.cert_sha256);
    // The pins in identity.toml are the ones the library computes from the key files.
    let loaded = nvr_sync::identity::load(&a.dir).expect("load identity");
    let (cert, key) = loaded.pins().to_hex_strings();
    assert_eq!(
        (cert, key),
        (a.cert_sha256.clone(), a.signing_public_key.clone())
    );

    let data_a = dir.join("data-a");
    let data_s = dir.join("data-s");
    let listen = format!("127.0.0.1:{}", free_port());
    let path = write_cluster_config(
        &dir,
        &a,
        &data_a,
        &s,
        &data_s,
        &listen,
        &[("cam1", "rtsp://127.0.0.1:9/cam1")],
    );
    assert_eq!(path, dir.join("cluster.toml"));

    // Both nodes read the same file; each agent's view comes out of it.
    let p = nvr_sync::config::SyncConfig::load(&path, Some("node-a")).expect("primary view");
    assert_eq!(p.node_name, "node-a");
    assert_eq!(p.role, nvr_sync::config::Role::Primary);
    assert_eq!(p.data_dir, data_a);
    assert_eq!(p.identity_dir, a.dir);
    assert_eq!(p.listen, None);
    assert_eq!(p.settings.head_interval_ms, 1000);
    assert_eq!(p.settings.reconcile_interval_ms, 2000);
    assert_eq!(p.settings.scrub_interval_ms, 0);
    assert_eq!(p.peers.len(), 1);
    assert_eq!(p.peers[0].pins.node, "standby-1");
    assert_eq!(p.peers[0].address.as_deref(), Some(listen.as_str()));
    assert_eq!(
        p.peers[0].pins.to_hex_strings(),
        (s.cert_sha256.clone(), s.signing_public_key.clone())
    );

    let st = nvr_sync::config::SyncConfig::load(&path, Some("standby-1")).expect("standby view");
    assert_eq!(st.role, nvr_sync::config::Role::Standby);
    assert_eq!(st.data_dir, data_s);
    assert_eq!(st.listen.map(|l| l.to_string()), Some(listen.clone()));
    assert_eq!(st.peers.len(), 1);
    assert_eq!(st.peers[0].pins.node, "node-a");
    assert!(st.peers[0].address.is_none());
    assert_eq!(
        st.peers[0].pins.to_hex_strings(),
        (a.cert_sha256.clone(), a.signing_public_key.clone())
    );

    // Both identities are on this machine: the node must be named.
    let e = nvr_sync::config::SyncConfig::load(&path, None).expect_err("ambiguous");
    assert!(e.to_string().contains("pass --node NAME"), "{e}");

    // Adjusted copies: extra keys land in [sync]; a proxy address is where the primary connects.
    let mut cfg = ClusterFile::pair(&a, &data_a, &s, &data_s, &listen);
    cfg.scrub_interval_ms = 5000;
    cfg.standby_address = "127.0.0.1:9".into();
    cfg.extra = "bandwidth_bytes_per_s = 1000".into();
    let t: toml::Table = toml::from_str(&cfg.to_toml()).expect("TOML");
    assert_eq!(t["sync"]["scrub_interval_ms"].as_integer(), Some(5000));
    assert_eq!(t["sync"]["bandwidth_bytes_per_s"].as_integer(), Some(1000));
    let c = cluster_config::parse(&cfg.to_toml(), "t.toml").expect("parses");
    let view = nvr_sync::config::SyncConfig::from_cluster(&c, "node-a").expect("view");
    assert_eq!(view.peers[0].address.as_deref(), Some("127.0.0.1:9"));
    assert_eq!(view.settings.bandwidth_bytes_per_s, 1000);
    let view = nvr_sync::config::SyncConfig::from_cluster(&c, "standby-1").expect("view");
    assert_eq!(view.listen.map(|l| l.to_string()), Some(listen));
}

#[test]
fn rig_is_shared_and_finds_both_binaries() {
    assert!(nvr_bin().is_file(), "{}", nvr_bin().display());
    assert!(nvr_sync_bin().is_file(), "{}", nvr_sync_bin().display());
    assert!(repo_tests_file("rtsp_server.py").is_file());

    // A recorder configuration from this crate's helper is one the built `nvr` accepts.
    let dir = TestDir::new();
    let cfg = write_recorder_config(
        &dir,
        "node-a",
        &dir.join("data"),
        &[
            ("cam1", "rtsp://127.0.0.1:9/cam1"),
            ("cam-2", "rtsp://127.0.0.1:9/x"),
        ],
        2,
    );
    let cfg = cfg.to_str().expect("UTF-8 path");
    let out = run_nvr(&dir, &["check-config", cfg], T);
    assert!(
        out.status.success(),
        "nvr check-config: {}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn recorder_from_this_crate_records_media_files() {
    let dir = TestDir::new();
    let cam = GstCamera::start(&[("/cam1", "h264")], CameraOpts::default());
    let data = dir.join("data");
    let cfg = write_recorder_config(&dir, "node-a", &data, &[("cam1", &cam.url("/cam1"))], 1);
    let mut nvr = spawn_recorder(&dir, &cfg, "node-a");
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            media_files(&data).len() >= 2
        }),
        "no two media files after 30 s; nvr stderr:\n{}",
        nvr.stderr_tail(40)
    );
    assert!(nvr.is_running());
    nvr.kill9();
    let files = media_files(&data);
    assert!(
        files.keys().all(|k| k.ends_with(".mp4")),
        "unexpected files: {files:?}"
    );
}
