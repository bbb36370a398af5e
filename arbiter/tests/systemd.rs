//! The shipped `systemd/nvr-arbiter.service` is valid for the systemd on this machine and keeps the
//! arbiter independent of the recorder (the recorder never waits for it); the example cluster file gives
//! every node of the failover an arbiter configuration.

use nvr_arbiter::config::ArbiterConfig;

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/nvr-arbiter.service"
));
const INSTALLED_EXEC: &str = "ExecStart=/usr/local/bin/nvr-arbiter ";

#[test]
fn arbiter_unit_passes_systemd_analyze_verify_without_warnings() {
    assert!(UNIT.contains(INSTALLED_EXEC));
    assert!(UNIT.contains("--config /etc/nvr/config.toml"));
    testkit::systemd::assert_unit_verifies(
        UNIT,
        "nvr-arbiter.service",
        INSTALLED_EXEC,
        std::path::Path::new(env!("CARGO_BIN_EXE_nvr-arbiter")),
    );
    // The recorder must never depend on the arbiter.
    testkit::systemd::assert_independent_of_the_recorder(UNIT, "nvr-arbiter");
}

/// The heartbeats are authenticated with the node's TLS key, which only the `nvr-sync` user can read
/// (systemd/nvr-sync.sysusers, systemd/nvr.tmpfiles): the arbiter runs as that user, in the recorder's
/// group, and must not claim `/var/lib/nvr` with `StateDirectory=` (systemd would chown it away from
/// the recorder).
#[test]
fn arbiter_runs_as_the_user_that_can_read_the_node_keys() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    assert!(lines.contains(&"User=nvr-sync"), "{UNIT}");
    assert!(lines.contains(&"Group=nvr"), "{UNIT}");
    assert!(lines.contains(&"ReadWritePaths=/var/lib/nvr"), "{UNIT}");
    assert!(
        !lines.iter().any(|l| l.starts_with("StateDirectory=")),
        "StateDirectory= would chown the recorder's data directory: {UNIT}"
    );
    let sysusers = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/nvr-sync.sysusers"
    ));
    assert!(sysusers.contains("m nvr-sync nvr"), "{sysusers}");
}

#[test]
fn example_config_gives_every_failover_node_its_arbiter() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config.example.toml"
    ));
    let cluster = cluster_config::load(path).expect("config.example.toml parses");
    let a = ArbiterConfig::from_cluster(&cluster, "nvr-a").expect("nvr-a");
    assert_eq!(a.listen, "192.0.2.10:7444".parse().expect("addr"));
    assert_eq!(a.peers.len(), 1);
    assert_eq!(a.peers[0].pins.node, "standby-1");
    assert_eq!(a.timings.heartbeat_interval_ms, 200);
    let keys: Vec<&str> = a.streams.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        ["front-door/main", "garage/main"],
        "recorded streams only"
    );
    let s = ArbiterConfig::from_cluster(&cluster, "standby-1").expect("standby-1");
    let peers: Vec<&str> = s.peers.iter().map(|p| p.pins.node.as_str()).collect();
    assert_eq!(peers, ["nvr-a", "nvr-b"]);
    assert_eq!(
        s.capacity,
        nvr_arbiter::core::Capacity {
            streams: Some(64),
            kbps: Some(400_000)
        }
    );
    assert_eq!(s.streams.len(), 3);
    assert_eq!(s.streams[0].priority, 200);
    assert_eq!(s.streams[0].bitrate_kbps, Some(4_000));
}
