//! Test 10 of the issue with a real standby arbiter process: heartbeats from an unknown certificate,
//! replayed ones and ones with an old epoch are refused and change nothing; the real primary's are
//! accepted. Then kill -9 of the arbiter: it restarts with the holders and epochs it persisted.

mod common;

use std::time::Duration;

use common::*;
use node_identity::{NodeIdentity, PeerPins};
use nvr_arbiter::heartbeat::{self, Claim, Heartbeat, Seq};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const STREAM: &str = "cam1/main";

/// A heartbeat connection to the standby's arbiter, as `id`.
struct Link {
    rt: tokio::runtime::Runtime,
    tls: Option<TlsStream<TcpStream>>,
}

impl Link {
    fn connect(id: &NodeIdentity, standby: &PeerPins, address: &str) -> Link {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = node_identity::client_config(id, standby).expect("client config");
        let name = node_identity::server_name(standby).expect("name");
        let tls = rt.block_on(async {
            let tcp = TcpStream::connect(address).await.ok()?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let mut tls = connector.connect(name, tcp).await.ok()?;
            // A server that refuses the client certificate says so (an alert) on the first read; an
            // accepted connection stays silent (the standby's arbiter only listens on it).
            let mut buf = [0u8; 1];
            use tokio::io::AsyncReadExt;
            match tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => None,
                _ => Some(tls),
            }
        });
        Link { rt, tls }
    }

    fn send(&mut self, h: &Heartbeat) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        self.rt.block_on(heartbeat::write(tls, h)).is_ok()
    }
}

fn hb(node: &str, n: u64, holder: &str, epoch: u64) -> Heartbeat {
    Heartbeat {
        node: node.to_owned(),
        seq: Seq { boot_ms: 1_000, n },
        sent_ms: 0,
        holdings: vec![Claim {
            stream: STREAM.to_owned(),
            holder: holder.to_owned(),
            epoch,
            after: None,
            planned: false,
        }],
        health: Vec::new(),
        hears: Vec::new(),
    }
}

fn refused(st: &serde_json::Value) -> u64 {
    st["heartbeats_refused"].as_u64().unwrap_or(0)
}

/// The primary and the standby of a cluster whose one camera (`cam1`) never answers, the standby's
/// data directory made: no recorder needed for the arbiters' own exchanges. (primary, standby, the
/// cluster file.)
fn pair_without_camera(dir: &TestDir) -> (Node, Node, std::path::PathBuf) {
    let a = node(dir, PRIMARY);
    let s = node(dir, STANDBY);
    let cfg = write_cluster(
        dir,
        &a,
        &s,
        &[("cam1".to_owned(), "rtsp://127.0.0.1:9/cam1".to_owned())],
        &[],
    );
    std::fs::create_dir_all(&s.data).expect("data dir");
    (a, s, cfg)
}

#[test]
fn forged_replayed_and_stale_heartbeats_are_refused_and_the_arbiter_resumes_after_kill_9() {
    let dir = TestDir::new();
    let (a, s, cfg) = pair_without_camera(&dir);
    let mut arb = spawn_arbiter(&dir, &cfg, STANDBY);
    let a_id = node_identity::load(&a.identity_dir).expect("primary identity");
    let s_pins = node_identity::load(&s.identity_dir)
        .expect("standby identity")
        .pins();
    let status = || arbiter_status(&dir, &cfg, STANDBY);

    // The real primary: accepted, alive.
    let mut link = None;
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let l = Link::connect(&a_id, &s_pins, &s.arbiter);
            let ok = l.tls.is_some();
            link = Some(l);
            ok
        }),
        "cannot reach the standby's arbiter:\n{}",
        arb.stderr_tail(20)
    );
    let mut link = link.expect("link");
    let mut n = 1;
    let beat = |link: &mut Link, n: &mut u64| {
        *n += 1;
        assert!(link.send(&hb(PRIMARY, *n, PRIMARY, 0)), "send");
        std::thread::sleep(Duration::from_millis(150));
    };
    for _ in 0..5 {
        beat(&mut link, &mut n);
    }
    let mut st = serde_json::Value::Null;
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            beat(&mut link, &mut n);
            st = status();
            st["peers"][0]["alive"] == true
        }
    ));
    assert_eq!(refused(&st), 0, "{st:#}");
    assert_eq!(holding(&st, STREAM), Some((PRIMARY.to_owned(), 0)));

    // Replayed: the same and an older sequence number.
    assert!(link.send(&hb(PRIMARY, n, PRIMARY, 0)));
    assert!(link.send(&hb(PRIMARY, n - 3, PRIMARY, 0)));
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            beat(&mut link, &mut n);
            st = status();
            refused(&st) >= 2
        }
    ));
    assert_eq!(refused(&st), 2, "{st:#}");
    assert!(
        st["last_refusal"]
            .as_str()
            .unwrap_or("")
            .contains("replayed heartbeat from node-a"),
        "{st:#}"
    );
    assert_eq!(holding(&st, STREAM), Some((PRIMARY.to_owned(), 0)));

    // Forged: another key pair under the primary's name. Its TLS handshake is refused, so while only
    // forged heartbeats come, the primary is silent: after 1 s the standby takes the stream over.
    let forged_dir = dir.join("forged");
    let forged = node_identity::generate(&forged_dir, PRIMARY).expect("forged identity");
    let mut f = Link::connect(&forged, &s_pins, &s.arbiter);
    assert!(
        f.tls.is_none(),
        "a connection with an unpinned certificate was accepted"
    );
    let took_over = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        f = Link::connect(&forged, &s_pins, &s.arbiter);
        assert!(!f.send(&hb(PRIMARY, 1_000_000, PRIMARY, 0)));
        st = status();
        holding(&st, STREAM) == Some((STANDBY.to_owned(), 1))
    });
    assert!(took_over, "{st:#}\n{}", arb.stderr_tail(20));
    assert!(st["peers"][0]["alive"] == false, "{st:#}");
    assert_eq!(
        refused(&st),
        2,
        "forged heartbeats never reach the core: {st:#}"
    );
    assert!(
        arb.stderr().contains("heartbeat connection refused"),
        "{}",
        arb.stderr_tail(20)
    );

    // Stale: the real primary claims the stream with its old epoch: refused, nothing changes, and it
    // stays dead.
    let mut link = Link::connect(&a_id, &s_pins, &s.arbiter);
    assert!(link.tls.is_some());
    n += 10;
    assert!(link.send(&hb(PRIMARY, n, PRIMARY, 0)));
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            st = status();
            refused(&st) >= 3
        }
    ));
    assert!(
        st["last_refusal"]
            .as_str()
            .unwrap_or("")
            .contains("stale heartbeat from node-a"),
        "{st:#}"
    );
    assert_eq!(holding(&st, STREAM), Some((STANDBY.to_owned(), 1)));
    assert!(st["peers"][0]["alive"] == false, "{st:#}");
    // Once it agrees with the newer epoch, it is heard again (holding unchanged).
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            n += 1;
            link.send(&hb(PRIMARY, n, STANDBY, 1));
            std::thread::sleep(Duration::from_millis(100));
            status()["peers"][0]["alive"] == true
        }
    ));
    assert_eq!(holding(&status(), STREAM), Some((STANDBY.to_owned(), 1)));

    // The operator's view: the same data as text.
    let out = std::process::Command::new(arbiter_bin())
        .args(["status", "--config", &path_str(&cfg), "--node", STANDBY])
        .output()
        .expect("nvr-arbiter status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("node node-s (standby)"), "{text}");
    assert!(
        text.contains("cam1/main: owner node-a, holder node-s epoch 1 (hot, priority 100)"),
        "{text}"
    );
    assert!(text.contains("heartbeats refused: 3"), "{text}");

    // kill -9 of the arbiter: it restarts with the holder and epoch it persisted.
    arb.kill9();
    let persisted = std::fs::read_to_string(s.data.join("arbiter.json")).expect("state file");
    assert!(persisted.contains("\"epoch\": 1"), "{persisted}");
    let _ = std::fs::remove_file(s.data.join("arbiter-status.json"));
    let arb2 = spawn_arbiter(&dir, &cfg, STANDBY);
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            holding(&status(), STREAM) == Some((STANDBY.to_owned(), 1))
        }),
        "{}",
        arb2.stderr_tail(20)
    );
}

/// An operator takes a stream over through the running arbiter's socket (`nvr-arbiter takeover`), while
/// its primary is alive; an unknown stream is refused by name. `nvr ctl cluster` shows the arbiter's
/// view from the recorder's command line.
#[test]
fn operator_takeover_through_the_arbiter_socket_and_nvr_ctl_cluster() {
    let dir = TestDir::new();
    let (a, _s, cfg) = pair_without_camera(&dir);
    std::fs::create_dir_all(&a.data).expect("data dir");
    let arb_s = spawn_arbiter(&dir, &cfg, STANDBY);
    let _arb_a = spawn_arbiter(&dir, &cfg, PRIMARY);
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            arbiter_status(&dir, &cfg, STANDBY)["peers"][0]["alive"] == true
        }),
        "{}",
        arb_s.stderr_tail(20)
    );
    let takeover = |stream: &str| {
        std::process::Command::new(arbiter_bin())
            .args([
                "takeover",
                "--config",
                &path_str(&cfg),
                "--node",
                STANDBY,
                stream,
            ])
            .output()
            .expect("nvr-arbiter takeover")
    };
    let out = takeover("nope/main");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no stream nope/main in this arbiter's care"),
        "{out:?}"
    );
    let out = takeover(STREAM);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\"action\": \"promote\"") && text.contains("operator forced"),
        "{text}"
    );
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            holding(&arbiter_status(&dir, &cfg, STANDBY), STREAM) == Some((STANDBY.to_owned(), 1))
        }
    ));
    // The primary, alive, learns the newer epoch from the standby's heartbeats.
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            holding(&arbiter_status(&dir, &cfg, PRIMARY), STREAM) == Some((STANDBY.to_owned(), 1))
        }
    ));
    // `nvr ctl cluster` prints the same document.
    let c = path_str(&cfg);
    let out = run_nvr(
        &dir,
        &["ctl", "--config", &c, "--node", STANDBY, "cluster"],
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["node"], STANDBY);
    assert_eq!(holding(&doc, STREAM), Some((STANDBY.to_owned(), 1)));
}
