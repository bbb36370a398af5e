//! Frame identity end to end: the real `nvr` binary records the camera simulator (`nvr camsim`, a
//! separate process) on two cameras that pull the same simulated stream; after SIGTERM, the camsim
//! stamps in the sealed segments (read with `nvr::frames` and the `nvr frames` CLI) show that no frame
//! was lost or repeated, that both recordings agree frame by frame, and ffmpeg decodes the files cleanly.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{ffprobe, sealed_count, segments, wait_until, NvrProcess, TestDir};
use nvr::frames::{list, summarize, FrameInfo};
use store::SegmentState;

fn write_config(dir: &TestDir, sim_port: u16) -> PathBuf {
    let mut cfg = common::node_config(dir, 2, "");
    for name in ["a", "b"] {
        cfg.push_str(&format!(
            "\n[[cameras]]\nname = \"{name}\"\nnode = \"test-a\"\n[cameras.streams.main]\nurl = \"rtsp://127.0.0.1:{sim_port}/cam2\"\n"
        ));
    }
    dir.write("nvr.toml", cfg)
}

#[test]
fn recorded_segments_hold_every_stamped_frame_once() {
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
    let mut nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            sealed_count(&dir, "a") >= 2 && sealed_count(&dir, "b") >= 2
        }),
        "no recording; log:\n{}",
        nvr.stderr_tail(40)
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));

    let mut by_camera: HashMap<&str, Vec<FrameInfo>> = HashMap::new();
    for camera in ["a", "b"] {
        let segs = segments(&dir, camera);
        assert!(segs.len() >= 2, "{camera}: {segs:?}");
        assert_eq!(
            segs.iter()
                .filter_map(|s| s.run_id)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            1,
            "{camera}: one run without a break"
        );
        let mut all = Vec::new();
        for s in &segs {
            assert_eq!(s.state, SegmentState::Sealed, "{camera}: {s:?}");
            let path = dir.join("data").join(&s.path);
            let frames = list(&path).expect("list frames");
            assert_eq!(frames.len() as i64, s.frames, "{camera} {}", s.path);
            // The first sample of every segment is a key frame carrying a stamp.
            assert!(frames[0].key, "{camera} {}", s.path);
            assert!(frames[0].stamp.is_some(), "{camera} {}", s.path);
            let sum = summarize(&frames);
            assert_eq!(
                (sum.missing, sum.duplicated, sum.unstamped),
                (0, 0, 0),
                "{camera} {}: {sum:?}",
                s.path
            );
            // The stamp's send time (also what camsim's RTCP sender reports map RTP time to) is the
            // recorder's wall-clock time for the segment's first frame.
            let first_send_ms = frames[0].stamp.map_or(0, |st| st.send_time_us / 1000) as i64;
            assert!(
                (first_send_ms - s.start_ms).abs() <= 100,
                "{camera} {}: first frame sent at {first_send_ms} ms, segment starts at {} ms",
                s.path,
                s.start_ms
            );
            // Inside a segment, decode times follow the sequence numbers: 3600 ticks (one frame period)
            // per sequence number.
            for w in frames.windows(2) {
                let seqs = w[0].stamp.zip(w[1].stamp).map(|(x, y)| y.seq - x.seq);
                assert_eq!(seqs, Some(1), "{camera} {}", s.path);
                assert_eq!(w[1].decode_time - w[0].decode_time, 3600, "{camera}");
            }
            let probe = ffprobe(&path);
            assert!(
                probe.stderr_errors.is_empty(),
                "{camera} {}: decode errors: {}",
                s.path,
                probe.stderr_errors
            );
            assert_eq!(probe.frames as i64, s.frames, "{camera} {}", s.path);
            all.extend(frames);
        }
        // Across the segments of the run: contiguous, from the first to the last recorded frame.
        let sum = summarize(&all);
        assert_eq!(
            (sum.missing, sum.duplicated, sum.unstamped),
            (0, 0, 0),
            "{camera}: {sum:?}"
        );
        let (first, last) = (sum.first.unwrap_or(0), sum.last.unwrap_or(0));
        assert_eq!(last - first + 1, all.len() as u64, "{camera}: {sum:?}");
        assert!(all.len() >= 100, "{camera}: only {} frames", all.len());

        // The CLI says the same.
        let mut args = vec!["frames".to_owned()];
        args.extend(segs.iter().map(|s| {
            dir.join("data")
                .join(&s.path)
                .to_string_lossy()
                .into_owned()
        }));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = NvrProcess::spawn(&dir, &args).wait_output(Duration::from_secs(30));
        assert!(code.success(), "{out}");
        let want = format!(
            "# all: {} frames, seq {first}..{last}, 0 missing, 0 duplicated, 0 unstamped",
            all.len()
        );
        assert!(out.contains(&want), "want {want:?} in:\n{out}");
        let frame_lines = out.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(frame_lines, all.len(), "{out}");
        by_camera.insert(camera, all);
    }

    // Two recordings of one simulated stream: the frames both hold are the same frames (sequence number
    // and send time), and they overlap for almost the whole recording.
    let a: HashMap<u64, u64> = by_camera["a"]
        .iter()
        .filter_map(|f| f.stamp.map(|s| (s.seq, s.send_time_us)))
        .collect();
    let mut common_frames = 0;
    for f in &by_camera["b"] {
        let Some(st) = f.stamp else { continue };
        if let Some(&t) = a.get(&st.seq) {
            assert_eq!(t, st.send_time_us, "seq {}", st.seq);
            common_frames += 1;
        }
    }
    assert!(common_frames >= 50, "only {common_frames} frames in common");
}
