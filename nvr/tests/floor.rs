//! `nvr floor`, the benchmark's floors: each opens every configured stream of the camera simulator
//! and reports what it received when stopped; the receive floor writes nothing (no data directory,
//! no catalog), the hash floor hashes every received byte, the write floor appends them through the
//! store's segment writer.

use testkit as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Runs `nvr floor --level LEVEL` on two camsim streams until both are received and `until` holds,
/// stops it and returns its summary line.
fn run_floor(dir: &TestDir, level: &str, until: impl Fn() -> bool) -> String {
    // Serving before the floor connects: a connection refused would count as an error.
    let (_sim, sim_port) = common::cluster::spawn_camsim(dir, 2);
    let config = write_config(dir, sim_port);
    let mut floor = NvrProcess::spawn(
        dir,
        &[
            "floor",
            "--config",
            &config.to_string_lossy(),
            "--node",
            "bench",
            "--level",
            level,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            floor.stderr().matches("floor: receiving").count() >= 2 && until()
        }),
        "the {level} floor did not receive both streams; log:\n{}",
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
    summary.to_owned()
}

/// Lengths of every file under `dir` (none if it does not exist).
fn file_sizes(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            sizes.extend(file_sizes(&path));
        } else if let Ok(m) = e.metadata() {
            sizes.push(m.len());
        }
    }
    sizes
}

#[test]
fn the_floor_receives_every_stream_and_writes_nothing() {
    let dir = TestDir::new();
    let summary = run_floor(&dir, "receive", || true);
    assert_eq!(count(&summary, "hashed_bytes"), 0, "{summary}");
    assert_eq!(count(&summary, "written_bytes"), 0, "{summary}");
    assert!(
        !dir.join("data").exists(),
        "the floor created the data directory"
    );
}

#[test]
fn the_hash_floor_hashes_every_received_byte_and_writes_nothing() {
    let dir = TestDir::new();
    let summary = run_floor(&dir, "hash", || true);
    assert_eq!(
        count(&summary, "hashed_bytes"),
        count(&summary, "video_bytes"),
        "{summary}"
    );
    assert_eq!(count(&summary, "written_bytes"), 0, "{summary}");
    assert!(
        !dir.join("data").exists(),
        "the hash floor created the data directory"
    );
}

#[test]
fn the_write_floor_appends_what_it_receives_through_the_store() {
    let dir = TestDir::new();
    let media = dir.join("data").join(store::layout::MEDIA_DIR);
    // Until both streams' segments hold more than their init sections (a fragment each, at least).
    let summary = run_floor(&dir, "write", || {
        let sizes = file_sizes(&media);
        sizes.len() == 2 && sizes.iter().all(|&s| s > 10_000)
    });
    let written = count(&summary, "written_bytes");
    assert!(written > 20_000, "{summary}");
    assert!(written <= count(&summary, "video_bytes"), "{summary}");
    assert_eq!(count(&summary, "hashed_bytes"), 0, "{summary}");
    // Every appended byte is in the files, which also hold an init section and no fragment headers.
    let on_disk: u64 = file_sizes(&media).iter().sum();
    assert!(
        on_disk > written && on_disk < written + 10_000,
        "{on_disk} bytes on disk for {written} written"
    );
    // Through the store: one open segment per stream in the catalog.
    let reader = store::Reader::open(&dir.join("data"), Arc::new(base::clock::SystemClock))
        .expect("catalog");
    let streams = reader.streams().expect("streams");
    assert_eq!(streams.len(), 2);
    for s in streams {
        let segments = reader
            .segments_in_range(s.id, 0, i64::MAX)
            .expect("segments");
        assert_eq!(segments.len(), 1, "{segments:?}");
        assert_eq!(segments[0].state, store::SegmentState::Open);
    }
}
