//! The stream supervisor and its control socket, end to end: real `nvr run` processes recording the
//! camera simulator (and the GStreamer camera), steered with `nvr ctl` and raw socket clients.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base::clock::SystemClock;
use common::{
    ffprobe, named_node_config, probe_segment, run_nvr, start_nvr, wait_until, CameraOpts,
    GstCamera, NvrProcess, TestDir,
};
use serde_json::{json, Value};
use store::{SegmentRow, SegmentState};

fn common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Starts `nvr camsim` with `streams` streams on a free port; returns it and the port.
fn start_camsim(dir: &TestDir, streams: usize) -> (NvrProcess, u16) {
    for _ in 0..5 {
        let port = common::free_port();
        let mut sim = NvrProcess::spawn(
            dir,
            &[
                "camsim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--streams",
                &streams.to_string(),
            ],
        );
        if wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            sim.stdout().contains("camsim serving")
        }) {
            return (sim, port);
        }
        sim.kill9();
    }
    panic!("camsim did not start");
}

/// A one-node cluster file for node `name` (its identity in `identity-<name>/`): `cams` are (name,
/// url, record).
fn write_config(dir: &TestDir, name: &str, data: &str, cams: &[(&str, String, bool)]) -> PathBuf {
    let mut cfg = named_node_config(dir, name, &format!("identity-{name}"), data, 60, "");
    for (cam, url, record) in cams {
        cfg.push_str(&format!(
            "\n[[cameras]]\nname = \"{cam}\"\nnode = \"{name}\"\n[cameras.streams.main]\nurl = \"{url}\"\nrecord = {record}\n"
        ));
    }
    dir.write(format!("{name}.toml"), cfg)
}

/// `nvr ctl --config CONFIG ARGS…`: (exit ok, parsed stdout or stderr text as a JSON string).
fn ctl(dir: &TestDir, config: &Path, args: &[&str]) -> (bool, Value) {
    let config = config.to_string_lossy().into_owned();
    let mut all = vec!["ctl", "--config", &config];
    all.extend_from_slice(args);
    let out = run_nvr(dir, &all, Duration::from_secs(40));
    if out.status.success() {
        let v = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("ctl {args:?}: bad JSON {e}: {}", out.stdout));
        (true, v)
    } else {
        (false, Value::String(out.stderr))
    }
}

fn ctl_ok(dir: &TestDir, config: &Path, args: &[&str]) -> Value {
    let (ok, v) = ctl(dir, config, args);
    assert!(ok, "ctl {args:?} failed: {v}");
    v
}

/// A stream's status, or `Null` while the recorder does not answer (yet).
fn stream_status(dir: &TestDir, config: &Path, camera: &str) -> Value {
    let (ok, all) = ctl(dir, config, &["status"]);
    if !ok {
        return Value::Null;
    }
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["camera"] == camera))
        .cloned()
        .unwrap_or(Value::Null)
}

fn segments(dir: &TestDir, data: &str, camera: &str) -> Vec<SegmentRow> {
    let store = store::Reader::open(&dir.join(data), Arc::new(SystemClock)).expect("store");
    let Some(id) = store.find_stream(camera, "main").expect("stream") else {
        return Vec::new();
    };
    store.segments_in_range(id, 0, i64::MAX).expect("segments")
}

fn runs(dir: &TestDir, data: &str, camera: &str) -> usize {
    let store = store::Reader::open(&dir.join(data), Arc::new(SystemClock)).expect("store");
    let id = store
        .find_stream(camera, "main")
        .expect("stream")
        .expect("known stream");
    let runs = store.runs(id).expect("runs");
    runs.len()
}

/// The camsim sequence numbers of every recorded frame of `camera`, in file order.
fn stamps(dir: &TestDir, data: &str, camera: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for s in segments(dir, data, camera) {
        let frames = nvr::frames::list(&dir.join(data).join(&s.path)).expect("frames");
        out.extend(frames.iter().map(|f| f.stamp.expect("stamped frame").seq));
    }
    out
}

/// (missing, duplicated) frames between the first and the last of `seqs`.
fn gaps_and_duplicates(seqs: &[u64]) -> (u64, u64) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let before = sorted.len() as u64;
    sorted.dedup();
    let duplicated = before - sorted.len() as u64;
    let span = match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    };
    (span - sorted.len() as u64, duplicated)
}

/// Switches `stream` of `camera` to shadow mode and waits until its ring holds more than `frames`.
fn shadow(dir: &TestDir, config: &Path, camera: &str, frames: u64) {
    ctl_ok(
        dir,
        config,
        &["start", &format!("{camera}/main"), "--shadow"],
    );
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            let s = stream_status(dir, config, camera);
            s["state"] == "shadowing" && s["ring_frames"].as_u64().unwrap_or(0) > frames
        }),
        "{camera}: no shadow ring"
    );
}

/// SIGTERM to every node, then each must exit cleanly (segments sealed).
fn stop_nodes(nodes: &mut [&mut NvrProcess]) {
    for n in nodes.iter_mut() {
        n.sigterm();
    }
    for n in nodes.iter_mut() {
        n.expect_clean_exit(Duration::from_secs(30));
    }
}

/// Node A records `url` as camera `cam`, node B has it configured but not recorded; both started,
/// A recording. Returns (config A, config B, A, B).
fn start_two_nodes(dir: &TestDir, url: &str) -> (PathBuf, PathBuf, NvrProcess, NvrProcess) {
    let config_a = write_config(dir, "node-a", "data-a", &[("cam", url.to_owned(), true)]);
    let config_b = write_config(dir, "node-b", "data-b", &[("cam", url.to_owned(), false)]);
    let a = start_nvr(dir, &config_a);
    let b = start_nvr(dir, &config_b);
    assert!(
        wait_frames(dir, &config_a, "cam", "frames", 50),
        "{}",
        a.stderr_tail(30)
    );
    (config_a, config_b, a, b)
}

/// Make-before-break: `to` shadows, `from` releases at a key frame, `to` promotes after `from`'s last
/// written frame and must start exactly at that key frame. Returns (release answer, promote answer).
fn handover(dir: &TestDir, from: &Path, to: &Path) -> (Value, Value) {
    shadow(dir, to, "cam", 30);
    let released = ctl_ok(dir, from, &["release", "cam/main"]);
    assert!(released["last_written"]["hash"].is_string(), "{released}");
    let promoted = ctl_ok(
        dir,
        to,
        &[
            "promote",
            "cam/main",
            "--after",
            &released["last_written"].to_string(),
        ],
    );
    assert_eq!(promoted["gap_ms"], Value::Null, "{promoted}");
    // On one clock (the new holder's own session): one frame interval of the camera's 25 fps.
    let frame_90k = i64::from(90_000 / CameraOpts::default().fps);
    assert_eq!(promoted["gap_90k"].as_i64(), Some(frame_90k), "{promoted}");
    assert_eq!(
        promoted["first_frame"]["hash"], released["key_frame"]["hash"],
        "the new holder starts exactly at the release key frame: {promoted} vs {released}"
    );
    (released, promoted)
}

fn wait_frames(dir: &TestDir, config: &Path, camera: &str, field: &str, n: u64) -> bool {
    wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        stream_status(dir, config, camera)[field]
            .as_u64()
            .unwrap_or(0)
            >= n
    })
}

/// Test 1: one stream is stopped, shadowed, promoted and released at runtime while three others
/// record: the others keep their one session and their one run, untouched.
#[test]
fn runtime_control_of_one_stream_leaves_the_others_untouched() {
    let dir = TestDir::new();
    let (_sim, port) = start_camsim(&dir, 4);
    let cams: Vec<(&str, String, bool)> = ["c1", "c2", "c3", "c4"]
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, format!("rtsp://127.0.0.1:{port}/cam{}", i + 1), true))
        .collect();
    let config = write_config(&dir, "node-a", "data", &cams);
    let mut nvr = start_nvr(&dir, &config);
    for c in ["c1", "c2", "c3", "c4"] {
        assert!(
            wait_frames(&dir, &config, c, "frames", 50),
            "{c} not recording; log:\n{}",
            nvr.stderr_tail(30)
        );
    }
    ctl_ok(&dir, &config, &["stop", "c1/main"]);
    assert_eq!(stream_status(&dir, &config, "c1")["state"], "idle");
    // Beyond one GOP of the simulator's clip: the ring holds a key frame.
    shadow(&dir, &config, "c1", 60);
    // Promote after a frame the ring no longer holds (a minute old): recording starts at the ring's
    // oldest key frame and the gap is reported.
    let minute_ago = json!({"hash": "00".repeat(16), "wall_ms": common_now_ms() - 60_000});
    let promoted = ctl_ok(
        &dir,
        &config,
        &["promote", "c1/main", "--after", &minute_ago.to_string()],
    );
    assert!(
        promoted["from_ring"].as_u64().unwrap_or(0) > 0,
        "{promoted}"
    );
    assert_eq!(promoted["starts_mid_gop"], false);
    let gap_ms = promoted["gap_ms"].as_i64().unwrap_or(0);
    assert!((50_000..=60_000).contains(&gap_ms), "{promoted}");
    assert_eq!(
        promoted["gap_90k"],
        Value::Null,
        "not on one clock: {promoted}"
    );
    assert!(wait_frames(&dir, &config, "c1", "frames", 120));
    let released = ctl_ok(&dir, &config, &["release", "c1/main", "--off"]);
    assert!(released["key_frame"]["hash"].is_string(), "{released}");
    assert_eq!(stream_status(&dir, &config, "c1")["mode"], "off");
    // Unknown streams and wrong modes are refused with a reason, and change nothing.
    let (ok, err) = ctl(&dir, &config, &["promote", "nope/main"]);
    assert!(
        !ok && err
            .as_str()
            .is_some_and(|e| e.contains("unknown stream nope/main")),
        "{err}"
    );
    let (ok, err) = ctl(&dir, &config, &["release", "c2/main"]);
    assert!(ok, "{err}");
    let (ok, err) = ctl(&dir, &config, &["release", "c1/main"]);
    assert!(
        !ok && err.as_str().is_some_and(|e| e.contains("not recording")),
        "{err}"
    );
    ctl_ok(&dir, &config, &["start", "c2/main"]);
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));

    for c in ["c3", "c4"] {
        let seqs = stamps(&dir, "data", c);
        assert!(seqs.len() > 100, "{c}: {} frames", seqs.len());
        assert_eq!(
            gaps_and_duplicates(&seqs),
            (0, 0),
            "{c}: every frame exactly once"
        );
        assert_eq!(runs(&dir, "data", c), 1, "{c}: one run, never interrupted");
        let segs = segments(&dir, "data", c);
        assert_eq!(segs.len(), 1, "{c}: {segs:?}");
        assert_eq!(segs[0].state, SegmentState::Sealed);
    }
    // c1: the first recording, then the promoted one; both sealed and decodable.
    let c1 = segments(&dir, "data", "c1");
    assert_eq!(c1.len(), 2, "{c1:?}");
    for s in &c1 {
        assert_eq!(s.state, SegmentState::Sealed);
        probe_segment(&dir, s);
    }
    // c2 was released at a key frame and started again: its recording is two runs, no frame twice.
    assert_eq!(runs(&dir, "data", "c2"), 2);
    assert_eq!(gaps_and_duplicates(&stamps(&dir, "data", "c2")).1, 0);
    assert_eq!(gaps_and_duplicates(&stamps(&dir, "data", "c1")).1, 0);
}

/// Tests 2 and 3 on the GStreamer camera (a shared media factory, two RTSP sessions): node A
/// releases at a key frame, node B (shadow) promotes after A's last written frame and starts exactly
/// at that key frame; promoting after a frame in the middle of a GOP starts right after it.
#[test]
fn release_and_promote_hand_a_stream_over_at_a_named_frame() {
    let dir = TestDir::new();
    let camera = GstCamera::start(&[("/cam", "h264")], CameraOpts::default());
    let (config_a, config_b, mut a, mut b) = start_two_nodes(&dir, &camera.url("/cam"));
    let (released, promoted) = handover(&dir, &config_a, &config_b);
    let key = &released["key_frame"];
    assert!(
        (promoted["first_frame"]["wall_ms"].as_i64().unwrap_or(0)
            - key["wall_ms"].as_i64().unwrap_or(0))
        .abs()
            < 500
    );
    assert_eq!(promoted["starts_mid_gop"], false);

    // Now back to A, in the middle of a GOP: A goes to shadow, then A promotes after a frame B
    // reports as its last key frame (a non-key successor follows it).
    shadow(&dir, &config_a, "cam", 30);
    let b_key = stream_status(&dir, &config_b, "cam")["last_key_frame"].clone();
    let promoted_a = ctl_ok(
        &dir,
        &config_a,
        &["promote", "cam/main", "--after", &b_key.to_string()],
    );
    assert_eq!(promoted_a["starts_mid_gop"], true, "{promoted_a}");
    assert_eq!(
        promoted_a["gap_90k"].as_i64(),
        Some(i64::from(90_000 / CameraOpts::default().fps)),
        "one frame interval on A's own session clock: {promoted_a}"
    );
    assert!(
        promoted_a["from_ring"].as_u64().unwrap_or(0) > 0,
        "{promoted_a}"
    );
    let after_ms = promoted_a["first_frame"]["wall_ms"].as_i64().unwrap_or(0)
        - b_key["wall_ms"].as_i64().unwrap_or(0);
    assert!(
        (0..=200).contains(&after_ms),
        "the frame right after the key frame: {after_ms} ms"
    );
    ctl_ok(&dir, &config_b, &["stop", "cam/main"]);
    std::thread::sleep(Duration::from_millis(1500));
    stop_nodes(&mut [&mut a, &mut b]);

    // A: the first recording ends before the key frame; B's recording starts with it.
    let segs_a = segments(&dir, "data-a", "cam");
    let segs_b = segments(&dir, "data-b", "cam");
    assert_eq!(segs_a.len(), 2, "{segs_a:?}");
    assert_eq!(segs_b.len(), 1, "{segs_b:?}");
    let scan = |data: &str, s: &SegmentRow| {
        store::mp4::scan_file(dir.join(data).join(&s.path)).expect("scan")
    };
    assert!(scan("data-b", &segs_b[0]).fragments[0].tracks[0].first_sample_is_sync);
    assert!(
        !scan("data-a", &segs_a[1]).fragments[0].tracks[0].first_sample_is_sync,
        "A's second part starts mid-GOP, right after B's key frame"
    );
    let probe = ffprobe(dir.join("data-b").join(&segs_b[0].path));
    assert!(probe.stderr_errors.is_empty(), "{}", probe.stderr_errors);
}

/// Tests 2 and 3 counted exactly on the camera simulator's frame stamps: A → B → A by release and
/// promote; the two nodes' recordings together hold every frame once.
#[test]
fn handover_both_ways_misses_and_duplicates_no_frame() {
    let dir = TestDir::new();
    let (_sim, port) = start_camsim(&dir, 1);
    let url = format!("rtsp://127.0.0.1:{port}/cam1");
    let (config_a, config_b, mut a, mut b) = start_two_nodes(&dir, &url);
    handover(&dir, &config_a, &config_b);
    assert!(wait_frames(&dir, &config_b, "cam", "frames", 60));
    handover(&dir, &config_b, &config_a);
    std::thread::sleep(Duration::from_secs(2));
    stop_nodes(&mut [&mut a, &mut b]);
    let seq_a = stamps(&dir, "data-a", "cam");
    let seq_b = stamps(&dir, "data-b", "cam");
    assert!(seq_b.len() >= 60, "B recorded {}", seq_b.len());
    let all: Vec<u64> = seq_a.iter().chain(&seq_b).copied().collect();
    assert_eq!(
        gaps_and_duplicates(&all),
        (0, 0),
        "A {} + B {} frames",
        seq_a.len(),
        seq_b.len()
    );
    // B's part lies strictly inside A's two parts.
    let (b_first, b_last) = (seq_b[0], seq_b[seq_b.len() - 1]);
    assert!(seq_a.contains(&(b_first - 1)) && seq_a.contains(&(b_last + 1)));
}

/// Test 6: live frames arrive within 500 ms of their send time (the camera simulator's stamp), with
/// no frame missing while the subscriber keeps up.
#[test]
fn live_frames_arrive_within_half_a_second_of_their_send_time() {
    let dir = TestDir::new();
    let (_sim, port) = start_camsim(&dir, 1);
    let config = write_config(
        &dir,
        "node-a",
        "data",
        &[("cam", format!("rtsp://127.0.0.1:{port}/cam1"), true)],
    );
    let mut nvr = start_nvr(&dir, &config);
    assert!(
        wait_frames(&dir, &config, "cam", "frames", 25),
        "{}",
        nvr.stderr_tail(30)
    );
    let mut s = UnixStream::connect(dir.join("data/control.sock")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&framed(br#"{"op":"live","stream":"cam/main"}"#))
        .expect("write");
    let ok: Value = serde_json::from_slice(&read_raw(&mut s).expect("answer")).expect("json");
    assert_eq!(ok["ok"], true, "{ok}");
    let mut latencies_ms = Vec::new();
    let mut seqs = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let chunk = read_raw(&mut s).expect("live frame");
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64;
        if &chunk[4..8] != b"moof" {
            continue;
        }
        let moof_len = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        let sample = &chunk[moof_len + 8..];
        let stamp = camsim::stamp::find_in_length_prefixed(sample).expect("stamped frame");
        latencies_ms.push((now_us - stamp.send_time_us as i64) as f64 / 1000.0);
        seqs.push(stamp.seq);
    }
    drop(s);
    assert!(seqs.len() >= 125, "{} frames in 6 s", seqs.len());
    assert_eq!(gaps_and_duplicates(&seqs), (0, 0));
    latencies_ms.sort_by(f64::total_cmp);
    let max = latencies_ms[latencies_ms.len() - 1];
    let p50 = latencies_ms[latencies_ms.len() / 2];
    eprintln!(
        "live latency over {} frames: p50 {p50:.1} ms, max {max:.1} ms",
        latencies_ms.len()
    );
    assert!(max < 500.0, "a frame arrived {max:.1} ms after it was sent");
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
}

/// Test 4: SIGHUP with a changed camera list adds and removes streams only; an unchanged stream
/// keeps its session and its run. A file that does not load is refused and the running set stays.
#[test]
fn sighup_applies_a_changed_camera_list_to_changed_streams_only() {
    let dir = TestDir::new();
    let (_sim, port) = start_camsim(&dir, 3);
    let url = |i: u32| format!("rtsp://127.0.0.1:{port}/cam{i}");
    let config = write_config(
        &dir,
        "node-a",
        "data",
        &[("c1", url(1), true), ("c2", url(2), true)],
    );
    let mut nvr = start_nvr(&dir, &config);
    assert!(
        wait_frames(&dir, &config, "c2", "frames", 25),
        "{}",
        nvr.stderr_tail(30)
    );
    let before = stream_status(&dir, &config, "c2");

    std::fs::write(&config, "[[nodes]]\nname = \"node-a\"\ndata_dir = 12\n").expect("write");
    nvr.sighup();
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || { nvr.stderr().contains("configuration not reloaded") }
    ));
    write_config(
        &dir,
        "node-a",
        "data",
        &[("c2", url(2), true), ("c3", url(3), true)],
    );
    nvr.sighup();
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            let (_, all) = ctl(&dir, &config, &["status"]);
            let names: Vec<&str> = all
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["camera"].as_str()).collect())
                .unwrap_or_default();
            names == ["c2", "c3"]
        }),
        "{}",
        nvr.stderr_tail(30)
    );
    assert!(wait_frames(&dir, &config, "c3", "frames", 25));
    let after = stream_status(&dir, &config, "c2");
    assert_eq!(
        after["connects"], before["connects"],
        "c2 untouched: {after}"
    );
    assert_eq!(after["reconnects"], 0);
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
    assert_eq!(runs(&dir, "data", "c2"), 1);
    let c1 = segments(&dir, "data", "c1");
    assert!(
        c1.iter().all(|s| s.state == SegmentState::Sealed),
        "removed stream sealed: {c1:?}"
    );
}

fn raw_request(socket: &Path, frame: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(frame)?;
    read_raw(&mut s)
}

fn read_raw(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Test 7 and the live path: malformed, oversized, unknown and unauthorized requests get clear
/// errors and change nothing; the socket is 0660; live video plays in ffprobe; a live subscriber that
/// reads nothing for 30 s costs the recording nothing.
#[test]
fn control_socket_refuses_bad_requests_and_live_never_slows_recording() {
    let dir = TestDir::new();
    let (_sim, port) = start_camsim(&dir, 2);
    let config = write_config(
        &dir,
        "node-a",
        "data",
        &[
            ("c1", format!("rtsp://127.0.0.1:{port}/cam1"), true),
            ("sub", format!("rtsp://127.0.0.1:{port}/cam2"), false),
        ],
    );
    let mut nvr = start_nvr(&dir, &config);
    assert!(
        wait_frames(&dir, &config, "c1", "frames", 25),
        "{}",
        nvr.stderr_tail(30)
    );
    let socket = dir.join("data/control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    let answer = |bytes: Vec<u8>| -> Value { serde_json::from_slice(&bytes).expect("JSON answer") };
    let r = answer(raw_request(&socket, &framed(b"{not json")).expect("answer"));
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("bad request")),
        "{r}"
    );
    let r = answer(raw_request(&socket, &framed(br#"{"op":"format_disk"}"#)).expect("answer"));
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown variant")),
        "{r}"
    );
    let r = answer(
        raw_request(
            &socket,
            &framed(
                json!({"op":"stop","stream":"../../etc"})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .expect("answer"),
    );
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown stream")),
        "{r}"
    );
    let mut huge = (10_000_000u32).to_be_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let r = answer(raw_request(&socket, &huge).expect("answer"));
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("exceeds the limit")),
        "{r}"
    );
    // A good request on a connection that sent a bad one first still works.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(&framed(b"[]")).expect("write");
    assert_eq!(answer(read_raw(&mut s).expect("read"))["ok"], false);
    s.write_all(&framed(br#"{"op":"status"}"#)).expect("write");
    assert_eq!(answer(read_raw(&mut s).expect("read"))["ok"], true);
    // Another user (not root, not the recorder's group) cannot connect at all.
    // setpriv is util-linux's, an Essential package on Debian: always there.
    {
        let out = std::process::Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::nvr_bin())
            .args(["ctl", "--socket"])
            .arg(&socket)
            .arg("status")
            .output()
            .expect("setpriv");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Permission denied"), "{err}");
    }

    // Live of a recorded stream and of a stream that is not recorded (pulled on demand).
    for stream in ["c1/main", "sub/main"] {
        let out_path = dir.join(format!("{}.mp4", stream.replace('/', "-")));
        let config_s = config.to_string_lossy().into_owned();
        let out = std::process::Command::new(common::nvr_bin())
            .args([
                "ctl",
                "--config",
                &config_s,
                "live",
                stream,
                "--duration-s",
                "4",
            ])
            .output()
            .expect("ctl live");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&out_path, &out.stdout).expect("write");
        let probe = ffprobe(&out_path);
        assert!(
            probe.stderr_errors.is_empty(),
            "{stream}: {}",
            probe.stderr_errors
        );
        assert!(
            probe.frames >= 50,
            "{stream}: {} frames in 4 s",
            probe.frames
        );
        assert_eq!(probe.codec, "h264");
    }
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            stream_status(&dir, &config, "sub")["state"] == "idle"
        }),
        "the live-only session closes without subscribers"
    );

    // A subscriber that reads nothing for 30 s.
    let mut stalled = UnixStream::connect(&socket).expect("connect");
    stalled
        .write_all(&framed(br#"{"op":"live","stream":"c1/main"}"#))
        .expect("write");
    let before = stream_status(&dir, &config, "c1");
    std::thread::sleep(Duration::from_secs(30));
    let after = stream_status(&dir, &config, "c1");
    let received = after["frames_received"].as_u64().unwrap_or(0)
        - before["frames_received"].as_u64().unwrap_or(0);
    assert!(received >= 29 * 25, "frames kept arriving: {received}");
    assert_eq!(after["reconnects"], 0, "{after}");
    drop(stalled);
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
    let segs = segments(&dir, "data", "c1");
    assert_eq!(segs.len(), 1);
    // Every frame from the session's first key frame on is recorded, once.
    let seqs = stamps(&dir, "data", "c1");
    assert_eq!(gaps_and_duplicates(&seqs), (0, 0));
    let received = after["frames_received"].as_u64().unwrap_or(0);
    assert!(
        seqs.len() as u64 + 50 >= received,
        "{} recorded vs {after}",
        seqs.len()
    );
}
