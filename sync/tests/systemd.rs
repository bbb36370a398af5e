//! The shipped `systemd/nvr-sync.service` is valid for the systemd on this machine and keeps the agent
//! independent of the recorder (it may restart on its own; the recorder never waits for it); the example
//! configuration parses and bad configurations name the key.

use std::process::Command;

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/nvr-sync.service"
));
const INSTALLED_EXEC: &str = "ExecStart=/usr/local/bin/nvr-sync ";

#[test]
fn sync_unit_passes_systemd_analyze_verify_without_warnings() {
    assert!(UNIT.contains(INSTALLED_EXEC));
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = UNIT.replace(
        INSTALLED_EXEC,
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_nvr-sync")),
    );
    let path = dir.path().join("nvr-sync.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze (tests/run installs the systemd package)");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{all}"
    );
    let complaints: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("nvr-sync.service") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze warns about the unit:\n{all}"
    );
    // The recorder must never depend on the agent.
    let recorder = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/nvr.service"
    ));
    assert!(
        !recorder.contains("nvr-sync"),
        "nvr.service must not depend on nvr-sync.service"
    );
    for key in ["Requires=", "BindsTo="] {
        assert!(
            !UNIT
                .lines()
                .any(|l| l.starts_with(key) && l.contains("nvr.service")),
            "{key}"
        );
    }
}

#[test]
fn example_config_parses() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../sync.example.toml"));
    let cfg = nvr_sync::config::SyncConfig::load(path).expect("sync.example.toml parses");
    assert_eq!(cfg.node_name, "nvr-a");
    assert_eq!(cfg.role, nvr_sync::config::Role::Primary);
    assert_eq!(cfg.head_interval_ms, 5000);
    assert_eq!(cfg.peers.len(), 1);
    assert_eq!(cfg.peers[0].address.as_deref(), Some("192.0.2.20:7443"));
}

#[test]
fn bad_sync_configs_name_the_key() {
    let base = "node_name = \"a\"\ndata_dir = \"/d\"\nidentity_dir = \"/i\"\nrole = \"primary\"\n";
    let peer = "[[peers]]\nnode = \"s\"\naddress = \"127.0.0.1:1\"\ncert_sha256 = \"00000000000000000000000000000000000000000000000000000000000000ff\"\nsigning_public_key = \"00000000000000000000000000000000000000000000000000000000000000ff\"\n";
    let cases = [
        (format!("{base}{peer}bogus = 1\n"), "bogus"),
        (base.to_string(), "peers"),
        (format!("{}{peer}", base.replace("/d", "d")), "data_dir"),
        (
            format!(
                "{base}{}",
                peer.replace("00ff\"\nsigning", "0ff\"\nsigning")
            ),
            "peers[0]",
        ),
        (
            format!("{}{peer}", base.replace("primary", "standby")),
            "listen",
        ),
        (
            format!("{base}head_interval_ms = 0\n{peer}"),
            "head_interval_ms",
        ),
        (
            format!("{}{peer}", base.replace("\"a\"", "\"A b\"")),
            "node_name",
        ),
    ];
    for (text, key) in cases {
        let err = nvr_sync::config::SyncConfig::parse(&text, std::path::Path::new("sync.toml"))
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        let msg = err.to_string();
        assert!(
            msg.starts_with("sync.toml") && msg.contains(key),
            "{key}: {msg}"
        );
    }
}
