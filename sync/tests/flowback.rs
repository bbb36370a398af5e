//! Flow-back, the owner's receiving side: the real agent of a primary (`nvr-sync run`, a cluster with
//! `[arbiter]`) connects to its standby to receive the standby's takeover segments; the test speaks as
//! that standby (its own certificate and key) and sends what an honest one never would. The process
//! test of the whole flow (kill -9, takeover, failback, one timeline on the owner) is
//! `arbiter/tests/flowback.rs`.

mod common;

use std::time::Duration;

use common::*;
use nvr_sync::agent::Conn;
use nvr_sync::proto::{Message, Role, SegmentKey, PROTOCOL_VERSION};

/// Speaking as the standby on its own address: the owner's agent opens the flow-back connection
/// (`Hello` with role `standby`, protocol 3) and says what it holds; it acknowledges a takeover
/// segment's bytes, refuses other bytes at the same offset (kept in its `quarantine/`, a
/// `refused_data` alarm naming the standby, the acknowledged copy unchanged) and refuses a stream it
/// does not own (`unknown_stream`): only takeover segments of its own cameras flow back.
#[test]
fn an_owner_refuses_takeover_bytes_that_contradict_what_it_holds() {
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    let dir = TestDir::new();
    let mut cluster = new_pair(&dir);
    let data_a = cluster.primary_data.clone();
    let listen = cluster.standby_listen.clone();
    cluster.cameras = vec![("cam1".into(), "rtsp://127.0.0.1:9/cam1".into())];
    cluster.arbiter = Some((
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ));
    let cfg = cluster.write(&dir);
    let id = nvr_sync::identity::load(&identity_dir(&dir, "standby-1")).expect("identity");
    let standby_cfg =
        nvr_sync::config::SyncConfig::load(&cfg, Some("standby-1")).expect("standby config");
    let pins: Vec<_> = standby_cfg.peers.iter().map(|p| p.pins.clone()).collect();

    let path = "media/cam1/main/2030-01-01/20300101T000000000Z_standby-1.mp4";
    let key = SegmentKey {
        origin_node: "standby-1".into(),
        path: path.into(),
    };
    let held = vec![0x11u8; 4096];
    let forged = vec![0x22u8; 4096];

    let rt = runtime();
    let mut owner = None;
    rt.block_on(async {
        let listener = TcpListener::bind(&listen).await.expect("bind");
        let acceptor = TlsAcceptor::from(
            nvr_sync::identity::server_config(&id, &pins).expect("server config"),
        );
        owner = Some(spawn_sync(&dir, &cfg, "node-a"));
        // The owner also opens its own mirroring session (role primary): not answered here.
        let mut conn = loop {
            let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
                .await
                .expect("the owner never connected")
                .expect("accept");
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut conn = Conn::new(tls);
            match conn.recv(Duration::from_secs(10)).await {
                Ok(Some(Message::Hello {
                    role: Role::Standby,
                    protocol_version,
                    node,
                    ..
                })) => {
                    assert_eq!((protocol_version, node.as_str()), (3, "node-a"));
                    break conn;
                }
                _ => continue,
            }
        };
        conn.send(&Message::HelloAck {
            protocol_version: PROTOCOL_VERSION,
            node: "standby-1".into(),
        })
        .await
        .expect("send");
        loop {
            match next_reply(&mut conn).await {
                Message::StandbyState {
                    more: false,
                    holdings,
                    ..
                } => {
                    assert!(holdings.is_empty(), "{holdings:?}");
                    break;
                }
                Message::StandbyState { .. } => {}
                other => panic!("expected StandbyState, got {other:?}"),
            }
        }
        open_segment_with(&mut conn, &key, "cam1", held.clone()).await;
        expect_ack(&mut conn, 4096).await;
        send_segment_data(&mut conn, &key, 0, forged.clone()).await;
        let reply = next_reply(&mut conn).await;
        assert!(
            matches!(&reply, Message::Refused { key: Some(k), .. } if k.path == path),
            "contradicting bytes accepted: {reply:?}"
        );
        // A camera the owner does not own (the standby's own, or another primary's) is refused.
        let foreign = SegmentKey {
            origin_node: "standby-1".into(),
            path: "media/cam9/main/2030-01-01/20300101T000000000Z_standby-1.mp4".into(),
        };
        conn.send(&Message::SegmentOpen {
            key: foreign.clone(),
            info: segment_info("cam9"),
        })
        .await
        .expect("send");
        let reply = next_reply(&mut conn).await;
        assert!(
            matches!(&reply, Message::Refused { key: Some(k), .. } if k.path == foreign.path),
            "a stream the owner does not own was accepted: {reply:?}"
        );
    });
    let mut owner = owner.expect("owner agent");

    let alarmed = |kind: &str| {
        alarms(&data_a)
            .iter()
            .any(|r| r.kind == kind && r.peer.as_deref() == Some("standby-1"))
    };
    assert!(alarmed("refused_data"), "{:?}", alarms(&data_a));
    assert!(alarmed("unknown_stream"), "{:?}", alarms(&data_a));
    let quarantined: Vec<String> = std::fs::read_dir(data_a.join(store::QUARANTINE_DIR))
        .expect("quarantine")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        quarantined.iter().any(|n| n.contains("standby-1")),
        "refused bytes not kept: {quarantined:?}"
    );
    let staged = std::fs::read(data_a.join("incoming/standby-1").join(path)).expect("staged copy");
    assert!(staged == held, "the acknowledged bytes were changed");
    assert!(!data_a.join(path).exists(), "published without a seal");
    // The status shows the flow-back direction.
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            status_file(&data_a)["flowback"]["role"] == "receiver"
        }),
        "status: {}",
        status_file(&data_a)
    );
    owner.sigterm();
    owner.expect_clean_exit(Duration::from_secs(20));
}

/// Protocol versions, speaking as the primary to a real standby with `[arbiter]`: a version 2
/// primary is still accepted (answered in version 2, and its `StandbyState` follows); a flow-back
/// `Hello` (role `standby`) in version 2 is refused (`unauthorized`), and so is an unknown version
/// (`version_mismatch`); a version 3 flow-back `Hello` is answered with `HelloAck`.
#[test]
fn a_standby_speaks_version_2_to_old_primaries_and_flow_back_only_in_version_3() {
    use nvr_sync::agent::primary;
    use nvr_sync::proto::ErrorCode;

    let dir = TestDir::new();
    let mut cluster = new_pair(&dir);
    cluster.cameras = vec![("cam1".into(), "rtsp://127.0.0.1:9/cam1".into())];
    cluster.arbiter = Some((
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ));
    let cfg = cluster.write(&dir);
    let mut standby = spawn_sync(&dir, &cfg, "standby-1");
    let id = nvr_sync::identity::load(&identity_dir(&dir, "node-a")).expect("identity");
    let peer = nvr_sync::config::SyncConfig::load(&cfg, Some("node-a"))
        .expect("config")
        .peers[0]
        .clone();
    let rt = runtime();
    rt.block_on(async {
        let hello = |protocol_version: u16, role: Role| Message::Hello {
            protocol_version,
            node: "node-a".into(),
            role,
            software: "test".into(),
        };
        let mut answers = Vec::new();
        for (version, role) in [
            (2, Role::Primary),
            (2, Role::Standby),
            (4, Role::Primary),
            (3, Role::Standby),
        ] {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let tls = loop {
                match primary::connect(&id, &peer).await {
                    Ok(t) => break t,
                    Err(_) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("connect to the standby: {e}"),
                }
            };
            let mut conn = Conn::new(tls);
            conn.send(&hello(version, role)).await.expect("send");
            let answer = next_reply(&mut conn).await;
            if let Message::HelloAck { .. } = answer {
                if role == Role::Primary {
                    // The handshake goes on as in version 2: what the standby holds.
                    let state = next_reply(&mut conn).await;
                    assert!(matches!(state, Message::StandbyState { .. }), "{state:?}");
                }
            }
            answers.push(answer);
        }
        match &answers[0] {
            Message::HelloAck {
                protocol_version: 2,
                node,
            } => assert_eq!(node, "standby-1"),
            other => panic!("version 2 primary: {other:?}"),
        }
        assert!(
            matches!(
                answers[1],
                Message::Error {
                    code: ErrorCode::Unauthorized,
                    ..
                }
            ),
            "flow-back in version 2: {:?}",
            answers[1]
        );
        assert!(
            matches!(
                answers[2],
                Message::Error {
                    code: ErrorCode::VersionMismatch,
                    ..
                }
            ),
            "version 4: {:?}",
            answers[2]
        );
        assert!(
            matches!(
                answers[3],
                Message::HelloAck {
                    protocol_version: 3,
                    ..
                }
            ),
            "flow-back in version 3: {:?}",
            answers[3]
        );
    });
    standby.sigterm();
    standby.expect_clean_exit(Duration::from_secs(20));
}
