//! The shipped `systemd/nvr-sync.service` is valid for the systemd on this machine and keeps the agent
//! independent of the recorder (it may restart on its own; the recorder never waits for it); the example
//! cluster configuration gives every node an agent configuration and bad sync settings name the key.

use nvr_sync::config::{Role, SyncConfig};

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/nvr-sync.service"
));
const INSTALLED_EXEC: &str = "ExecStart=/usr/local/bin/nvr-sync ";

#[test]
fn sync_unit_passes_systemd_analyze_verify_without_warnings() {
    assert!(UNIT.contains(INSTALLED_EXEC));
    testkit::systemd::assert_unit_verifies(
        UNIT,
        "nvr-sync.service",
        INSTALLED_EXEC,
        std::path::Path::new(env!("CARGO_BIN_EXE_nvr-sync")),
    );
    // The recorder must never depend on the agent.
    testkit::systemd::assert_independent_of_the_recorder(UNIT, "nvr-sync");
}

#[test]
fn example_config_parses_for_every_node() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config.example.toml"
    ));
    let cluster = cluster_config::load(path).expect("config.example.toml parses");
    let cfg = SyncConfig::from_cluster(&cluster, "nvr-a").expect("nvr-a");
    assert_eq!(cfg.node_name, "nvr-a");
    assert_eq!(cfg.role, Role::Primary);
    assert_eq!(cfg.settings.head_interval_ms, 3_600_000);
    assert_eq!(cfg.settings.bandwidth_bytes_per_s, 2_000_000);
    assert_eq!(cfg.peers.len(), 1);
    assert_eq!(cfg.peers[0].pins.node, "standby-1");
    assert_eq!(cfg.peers[0].address.as_deref(), Some("192.0.2.20:7443"));
    let cfg = SyncConfig::from_cluster(&cluster, "standby-1").expect("standby-1");
    assert_eq!(cfg.role, Role::Standby);
    assert_eq!(cfg.listen, Some("0.0.0.0:7443".parse().expect("addr")));
    let peers: Vec<&str> = cfg.peers.iter().map(|p| p.pins.node.as_str()).collect();
    assert_eq!(peers, ["nvr-a", "nvr-b"]);
    SyncConfig::from_cluster(&cluster, "nvr-b").expect("nvr-b");
    // The shipped unit reads the same file as the recorder's.
    assert!(UNIT.contains("--config /etc/nvr/config.toml"));
}

#[test]
fn bad_sync_settings_name_file_line_and_key() {
    let pin = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let nodes = format!(
        "[[nodes]]\nname = \"a\"\nrole = \"primary\"\ndata_dir = \"/d\"\ncert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\n\
         [[nodes]]\nname = \"s\"\nrole = \"standby\"\ndata_dir = \"/s\"\naddress = \"127.0.0.1:1\"\nprotects = [\"a\"]\n\
         cert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\n",
        pin('1'),
        pin('2'),
        pin('3'),
        pin('4')
    );
    let cases = [
        (
            "[sync]\nbogus = 1\n",
            "cluster.toml:2: unknown key \"bogus\" in [sync]",
        ),
        (
            "[sync]\nhead_interval_ms = 0\n",
            "cluster.toml:2: sync.head_interval_ms: must be between 1",
        ),
        (
            "[sync]\nscrub_bytes_per_s = \"lots\"\n",
            "cluster.toml:2: sync.scrub_bytes_per_s: invalid byte size",
        ),
    ];
    for (sync, want) in cases {
        let text = format!("{sync}{nodes}");
        let e = cluster_config::parse(&text, "cluster.toml")
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(e.to_string().starts_with(want), "{want}: {e}");
    }
    // A primary that no standby protects has no agent configuration.
    let lone = cluster_config::parse(
        "[[nodes]]\nname = \"a\"\nrole = \"primary\"\ndata_dir = \"/d\"\n",
        "cluster.toml",
    )
    .expect("parses");
    let e = SyncConfig::from_cluster(&lone, "a").expect_err("no standby");
    assert!(
        e.to_string()
            .starts_with("cluster.toml:2: node \"a\": no standby protects this primary"),
        "{e}"
    );
}

/// Issue 8 ("also"): the recorder parses untrusted camera input, so it must not be able to read the
/// sync agent's signing key. The agent runs as its own user `nvr-sync` (group `nvr`, to share the
/// data directory); the identity directory belongs to it, the keys are 0600, and only the public
/// `identity.toml` (the node's name and pins, which the recorder reads) is readable by the group.
#[test]
fn the_agent_runs_as_its_own_user_and_only_it_can_read_the_keys() {
    use std::os::unix::fs::PermissionsExt;
    let recorder = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/nvr.service"
    ));
    let setting = |unit: &'static str, key: &str| -> Vec<&'static str> {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .collect()
    };
    assert_eq!(setting(UNIT, "User="), ["nvr-sync"]);
    assert_eq!(setting(recorder, "User="), ["nvr"]);
    assert_eq!(setting(UNIT, "Group="), ["nvr"]);
    assert_eq!(setting(recorder, "Group="), ["nvr"]);
    // Both create group-writable files in the shared data directory.
    assert_eq!(setting(UNIT, "UMask="), ["0007"]);
    assert_eq!(setting(recorder, "UMask="), ["0007"]);
    // Only the recorder's unit owns (and chowns) the state directory.
    assert!(setting(UNIT, "StateDirectory=").is_empty());
    assert_eq!(setting(UNIT, "ReadWritePaths="), ["/var/lib/nvr"]);

    let sysusers = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/nvr-sync.sysusers");
    let text = std::fs::read_to_string(sysusers).expect("read systemd/nvr-sync.sysusers");
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(lines.iter().any(|l| l[..2] == ["u", "nvr-sync"]), "{text}");
    assert!(
        lines.iter().any(|l| l[..] == ["m", "nvr-sync", "nvr"]),
        "{text}"
    );
    let both = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/nvr.sysusers"),
        sysusers,
    ];
    testkit::systemd::assert_sysusers_parse(&both);

    let tmpfiles = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/nvr.tmpfiles"
    ))
    .expect("read systemd/nvr.tmpfiles");
    let entries: Vec<Vec<&str>> = tmpfiles
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    for want in [
        ["d", "/etc/nvr/identity", "0750", "nvr-sync", "nvr"],
        ["d", "/var/lib/nvr", "0770", "nvr", "nvr"],
    ] {
        assert!(
            entries.iter().any(|e| e.len() >= 5 && e[..5] == want),
            "systemd/nvr.tmpfiles lacks {want:?}:\n{tmpfiles}"
        );
    }

    // keygen: the keys only for their owner, the public identity for the group too.
    let dir = tempfile::tempdir().expect("tempdir");
    let id_dir = dir.path().join("identity");
    nvr_sync::identity::generate(&id_dir, "nvr-a").expect("keygen");
    let mode = |name: &str| {
        std::fs::metadata(id_dir.join(name))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("signing.key"), 0o600);
    assert_eq!(mode("tls.key"), 0o600);
    assert_eq!(mode("identity.toml") & 0o040, 0o040);
}
