//! The shipped systemd unit (`systemd/nvr.service`) and sysusers snippet (`systemd/nvr.sysusers`)
//! are valid for the systemd on this machine and keep the settings the recorder relies on.
//! `systemd-analyze` and `systemd-sysusers` come from the `systemd` package (tests/run installs it).

use testkit as common;

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/nvr.service"
));
const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/nvr.sysusers");
const INSTALLED_EXEC: &str = "ExecStart=/usr/local/bin/nvr ";

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    assert!(
        UNIT.contains(INSTALLED_EXEC),
        "unit must start /usr/local/bin/nvr"
    );
    testkit::systemd::assert_unit_verifies(UNIT, "nvr.service", INSTALLED_EXEC, &common::nvr_bin());
}

#[test]
fn unit_keeps_required_settings() {
    testkit::systemd::assert_unit_has(
        UNIT,
        "systemd/nvr.service",
        &[
            "Type=notify",
            "WatchdogSec=30",
            "Restart=on-failure",
            "RestartSec=2",
            "TimeoutStopSec=30",
            "User=nvr",
            "Group=nvr",
            "StateDirectory=nvr",
            "ExecStart=/usr/local/bin/nvr run --config /etc/nvr/config.toml",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "RestrictNamespaces=yes",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=",
            "LimitNOFILE=65536",
        ],
    );
}

#[test]
fn sysusers_snippet_parses_and_declares_nvr() {
    let text = std::fs::read_to_string(SYSUSERS).expect("read systemd/nvr.sysusers");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "nvr"])),
        "no `u nvr` line:\n{text}"
    );
    testkit::systemd::assert_sysusers_parse(&[SYSUSERS]);
}
