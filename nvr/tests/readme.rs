//! The README's first command must work as written: `cargo run --release -p nvr -- demo` needs the
//! package to name its default binary (it has two: `nvr` and `nvr-bench`).

use std::process::Command;

#[test]
fn readme_cargo_run_picks_the_recorder_binary() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    assert!(
        readme.contains("cargo run --release -p nvr -- demo"),
        "the README's first command changed: update this test"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let nvr = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "nvr"))
        .expect("package nvr");
    assert_eq!(
        nvr["default_run"], "nvr",
        "cargo run -p nvr cannot pick a binary"
    );
}
