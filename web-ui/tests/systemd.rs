//! The shipped `systemd/nvr-web.service` is valid for the systemd on this machine, keeps the viewer
//! independent of the recorder (the recorder never waits for it) and keeps its hardening; the example
//! cluster file's `[web]` section parses.

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/nvr-web.service"
));
const INSTALLED_EXEC: &str = "ExecStart=/usr/local/bin/nvr-web ";

#[test]
fn web_unit_passes_systemd_analyze_verify_without_warnings() {
    assert!(UNIT.contains(INSTALLED_EXEC));
    testkit::systemd::assert_unit_verifies(
        UNIT,
        "nvr-web.service",
        INSTALLED_EXEC,
        std::path::Path::new(env!("CARGO_BIN_EXE_nvr-web")),
    );
}

#[test]
fn web_unit_keeps_required_settings_and_the_recorder_never_waits_for_it() {
    testkit::systemd::assert_unit_has(
        UNIT,
        "nvr-web.service",
        &[
            "ExecStart=/usr/local/bin/nvr-web run --config /etc/nvr/config.toml",
            "User=nvr",
            "Group=nvr",
            "Restart=on-failure",
            "StateDirectory=nvr nvr-web",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "NoNewPrivileges=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=",
        ],
    );
    testkit::systemd::assert_independent_of_the_recorder(UNIT, "nvr-web");
}

#[test]
fn example_config_web_section_parses() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config.example.toml"
    ));
    let cluster = cluster_config::load(path).expect("config.example.toml parses");
    assert_eq!(cluster.web.listen.port(), 8443);
    assert!(!cluster.web.plain_http);
    assert_eq!(
        cluster.web.session_secret_file.as_deref(),
        Some(std::path::Path::new("/etc/nvr/web-session.secret"))
    );
}
