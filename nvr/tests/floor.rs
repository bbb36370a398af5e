//! `nvr floor`, the benchmark's receive-only floor: it opens every configured stream of the camera
//! simulator, receives frames, writes nothing (no data directory, no catalog) and reports what it
//! received when stopped.

use testkit as common;

use std::path::PathBuf;
use std::time::Duration;

use common::{wait_until, NvrProcess, TestDir};

fn write_config(dir: &TestDir, sim_port: u16) -> PathBuf {
    let mut cfg = format!(
        "[[nodes]]\nname = \"bench\"\nrole = \"primary\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    for i in 1..=2 {
        cfg.push_str(&format!(
            "\n[[cameras]]\nname = \"cam{i}\"\nnode = \"bench\"\n[cameras.streams.main]\n\
             url = \"rtsp://127.0.0.1:{sim_port}/cam{i}\"\n"
        ));
    }
    dir.write("nvr.toml", cfg)
}

/// `video_frames=` etc. of the floor's summary line.
fn count(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

#[test]
fn the_floor_receives_every_stream_and_writes_nothing() {
    let dir = TestDir::new();
    let sim_port = common::free_port();
    let _sim = NvrProcess::spawn(
        &dir,
        &[
            "camsim",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--streams",
            "2",
        ],
    );
    let config = write_config(&dir, sim_port);
    let mut floor = NvrProcess::spawn(
        &dir,
        &[
            "floor",
            "--config",
            &config.to_string_lossy(),
            "--node",
            "bench",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            floor.stderr().matches("floor: receiving").count() >= 2
        }),
        "the floor did not receive both streams; log:\n{}",
        floor.stderr_tail(40)
    );
    floor.sigterm();
    floor.expect_clean_exit(Duration::from_secs(30));
    let out = floor.stdout();
    let summary = out
        .lines()
        .find(|l| l.starts_with("floor:"))
        .unwrap_or_else(|| panic!("no summary line in {out:?}"));
    assert_eq!(count(summary, "sessions"), 2, "{summary}");
    assert_eq!(count(summary, "errors"), 0, "{summary}");
    assert!(count(summary, "video_frames") >= 2, "{summary}");
    assert!(count(summary, "video_bytes") > 0, "{summary}");
    assert!(
        !dir.join("data").exists(),
        "the floor created the data directory"
    );
}
