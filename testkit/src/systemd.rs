//! Checks of the shipped systemd units: one way to run `systemd-analyze verify` on a unit with its
//! `ExecStart=` pointed at the binary under test (`systemd-analyze` comes from the `systemd` package,
//! which tests/run installs).

use std::path::Path;
use std::process::Command;

use crate::TestDir;

/// Runs `systemd-analyze verify` on `unit` (the text of `systemd/<file_name>`) with its
/// `installed_exec` prefix (e.g. `"ExecStart=/usr/local/bin/nvr "`) replaced by `binary`, and panics
/// with systemd's whole output if it fails or warns about the unit.
pub fn assert_unit_verifies(unit: &str, file_name: &str, installed_exec: &str, binary: &Path) {
    assert!(
        unit.contains(installed_exec),
        "{file_name} must start with {installed_exec:?}"
    );
    let dir = TestDir::new();
    let unit = unit.replace(installed_exec, &format!("ExecStart={} ", binary.display()));
    let path = dir.write(file_name, unit);
    let all = run_systemd_tool(Command::new("systemd-analyze").arg("verify").arg(&path));
    let dir_text = dir.path().to_string_lossy().into_owned();
    let complaints: Vec<&str> = all
        .lines()
        .filter(|l| l.contains(file_name) || l.contains(&dir_text))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify warns about {file_name}:\n{all}"
    );
}

/// Runs `cmd`, a tool of the `systemd` package, and returns its stdout and stderr together; panics
/// with them if it fails.
pub fn run_systemd_tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "run {} (install the systemd package: tests/run does): {e}",
            cmd.get_program().to_string_lossy()
        )
    });
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{all}",
        cmd.get_program().to_string_lossy(),
        args.join(" "),
        out.status
    );
    all
}

/// `systemd-sysusers --dry-run` accepts the snippets at `paths` (read together) without failing or
/// complaining about a line.
pub fn assert_sysusers_parse(paths: &[&str]) {
    let all = run_systemd_tool(
        Command::new("systemd-sysusers")
            .arg("--dry-run")
            .args(paths),
    );
    for bad in ["ignoring", "Failed", "rror"] {
        assert!(!all.contains(bad), "systemd-sysusers complains:\n{all}");
    }
}

/// The settings of `unit` (the text of `systemd/<file_name>`, comments left out) include every
/// line of `required`; panics naming the first it lacks.
pub fn assert_unit_has(unit: &str, file_name: &str, required: &[&str]) {
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for required in required {
        assert!(
            settings.contains(required),
            "{file_name} lacks `{required}`"
        );
    }
}

/// `unit` (the text of `systemd/<program>.service`) neither requires nor binds to the recorder's
/// `nvr.service`, and the recorder's unit never names `program`: each stops and starts on its own, and
/// the recorder never waits for it.
pub fn assert_independent_of_the_recorder(unit: &str, program: &str) {
    for key in ["Requires=", "BindsTo="] {
        assert!(
            !unit
                .lines()
                .map(str::trim)
                .any(|l| l.starts_with(key) && l.contains("nvr.service")),
            "{program}.service: {key}nvr.service"
        );
    }
    let recorder = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/nvr.service"
    ));
    assert!(
        !recorder.contains(program),
        "nvr.service must not depend on {program}.service"
    );
}
