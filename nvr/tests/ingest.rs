//! Ingest against real cameras that are not the test suite's plain ones (issue 9): B-frames from
//! GStreamer's x264/x265 encoders, recorded by the real `nvr` binary and checked with ffprobe packet
//! by packet.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base::clock::SystemClock;
use common::vlc::{VlcClip, VlcServer, VLC_CLIP_FPS};
use common::{
    ffprobe, node_config, probe_segment, sealed_count, segments, start_nvr, stream_status,
    wait_until, CameraOpts, GstCamera, LossyOpts, LossyProxy, TestDir,
};
use store::{Reader, SegmentState};

/// 25 fps test cameras: one frame is 3600 ticks of the 90 kHz clock, 40 ms.
const FRAME_TICKS: i64 = 3600;
const FRAME_MS: i64 = 40;

/// A one-node configuration recording `cams` as (name, url).
fn write_config(dir: &TestDir, segment_s: u64, cams: &[(&str, String)]) -> PathBuf {
    let cams: Vec<_> = cams.iter().map(|(n, u)| (*n, u.clone(), "tcp")).collect();
    write_config_transport(dir, segment_s, &cams)
}

/// A one-node configuration recording `cams` as (name, url, transport).
fn write_config_transport(dir: &TestDir, segment_s: u64, cams: &[(&str, String, &str)]) -> PathBuf {
    write_config_ingest(dir, segment_s, cams, "")
}

/// Like [`write_config_transport`], with extra `[ingest]` lines.
fn write_config_ingest(
    dir: &TestDir,
    segment_s: u64,
    cams: &[(&str, String, &str)],
    ingest: &str,
) -> PathBuf {
    let cams: Vec<_> = cams
        .iter()
        .map(|(n, u, t)| (*n, u.clone(), *t, ""))
        .collect();
    write_config_cameras(dir, segment_s, &cams, ingest)
}

/// Like [`write_config_ingest`], with cameras as (name, url, transport, extra camera lines).
fn write_config_cameras(
    dir: &TestDir,
    segment_s: u64,
    cams: &[(&str, String, &str, &str)],
    ingest: &str,
) -> PathBuf {
    let mut cfg = node_config(dir, segment_s, ingest);
    for (name, url, transport, extra) in cams {
        cfg.push_str(&format!(
            "\n[[cameras]]\nname = \"{name}\"\nnode = \"test-a\"\ntransport = \"{transport}\"\n{extra}\n[cameras.streams.main]\nurl = \"{url}\"\n"
        ));
    }
    dir.write("nvr.toml", cfg)
}

/// Local ports of the IPv4 UDP sockets on this machine (`/proc/net/udp`).
fn udp_ports_bound() -> Vec<u16> {
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            u16::from_str_radix(local.split(':').nth(1)?, 16).ok()
        })
        .collect()
}

/// One video packet as ffprobe reads it from the file: pts, dts (90 kHz ticks), key flag.
#[derive(Debug, Clone, Copy)]
struct Packet {
    pts: i64,
    dts: i64,
    key: bool,
}

fn video_packets(path: &Path) -> Vec<Packet> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_packets"])
        .args(["-show_entries", "packet=pts,dts,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let num = |i: usize| -> i64 {
                f.get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{}: field {i} of {l:?}", path.display()))
            };
            Packet {
                pts: num(0),
                dts: num(1),
                key: f.get(2).is_some_and(|k| k.starts_with('K')),
            }
        })
        .collect()
}

/// Every segment of `camera` has B-frames with correct timestamps: decode times only grow, no frame
/// is presented before it is decoded, the presentation times are one frame apart with no hole or
/// duplicate and start at 0, the catalog's duration is the file's, and the segments of a run meet.
fn assert_b_frame_segments(dir: &TestDir, camera: &str, codec: &str) {
    assert_segment_timing(dir, camera, codec, true);
}

/// [`assert_b_frame_segments`] for a camera that sends B-frames (`b_frames`) or none.
fn assert_segment_timing(dir: &TestDir, camera: &str, codec: &str, b_frames: bool) {
    let segs = segments(dir, camera);
    assert!(segs.len() >= 2, "{camera}: segments {segs:?}");
    let mut reordered = 0;
    for s in &segs {
        assert_eq!(s.state, SegmentState::Sealed, "{camera}: {s:?}");
        let path = dir.join("data").join(&s.path);
        let probe = probe_segment(dir, s);
        assert_eq!(probe.codec, codec);
        let packets = video_packets(&path);
        assert_eq!(packets.len() as i64, s.frames, "{camera} {}", s.path);
        assert!(packets[0].key, "{camera} {}: starts on a key frame", s.path);
        for w in packets.windows(2) {
            assert!(
                w[1].dts > w[0].dts,
                "{camera} {}: decode times must grow: {w:?}",
                s.path
            );
        }
        for p in &packets {
            assert!(p.pts >= p.dts, "{camera} {}: {p:?}", s.path);
        }
        reordered += packets.windows(2).filter(|w| w[1].pts < w[0].pts).count();
        let mut pts: Vec<i64> = packets.iter().map(|p| p.pts).collect();
        pts.sort_unstable();
        assert_eq!(pts[0], 0, "{camera} {}: presentation starts at 0", s.path);
        assert!(
            pts.windows(2).all(|w| w[1] > w[0]),
            "{camera} {}: {pts:?}",
            s.path
        );
        // The decode timeline (the samples' durations, as written) spans the presentation: the
        // file's duration either way.
        let scan = store::mp4::scan_file(&path).expect("scan");
        let decode_span: i64 = scan
            .fragments
            .iter()
            .flat_map(|f| &f.tracks)
            .filter(|t| t.track_id == 1)
            .map(|t| t.duration_sum as i64)
            .sum();
        let presentation_span = pts[pts.len() - 1] + FRAME_TICKS;
        assert_eq!(decode_span, presentation_span, "{camera} {}", s.path);
        assert_eq!(
            s.media_duration_ms,
            presentation_span / 90,
            "{camera} {}: catalog duration vs the file's",
            s.path
        );
        let last_of_run = segs
            .iter()
            .all(|o| o.run_id != s.run_id || o.start_ms <= s.start_ms);
        if !last_of_run {
            // Cut at a key frame: every frame is there, one frame period apart. (A run stopped
            // after a reference frame ends without the B-frames presented before it, which the
            // camera had not sent yet.)
            for (i, p) in pts.iter().enumerate() {
                assert_eq!(
                    *p,
                    i as i64 * FRAME_TICKS,
                    "{camera} {}: presentation times one frame apart: {pts:?}",
                    s.path
                );
            }
            assert_eq!(s.media_duration_ms, s.frames * FRAME_MS, "{s:?}");
        }
        assert_eq!(s.end_ms - s.start_ms, s.media_duration_ms, "{s:?}");
    }
    assert_eq!(
        reordered > 0,
        b_frames,
        "{camera}: {reordered} frames presented before an earlier decoded one"
    );
    for w in segs.windows(2) {
        if w[0].run_id == w[1].run_id {
            assert_eq!(
                w[0].end_ms, w[1].start_ms,
                "{camera}: segments overlap or gap"
            );
        }
    }
}

#[test]
fn b_frames_get_composition_offsets_growing_decode_times_and_presentation_durations() {
    let dir = TestDir::new();
    let cam = GstCamera::start(
        &[("/h264", "h264"), ("/h265", "h265")],
        CameraOpts {
            bframes: 2,
            ..CameraOpts::default()
        },
    );
    let config = write_config(
        &dir,
        2,
        &[("bf264", cam.url("/h264")), ("bf265", cam.url("/h265"))],
    );
    let mut nvr = start_nvr(&dir, &config);
    let sealed = |camera: &str| sealed_count(&dir, camera);
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            sealed("bf264") >= 3 && sealed("bf265") >= 3
        }),
        "no three sealed segments each; nvr:\n{}",
        nvr.stderr_tail(40)
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    assert_b_frame_segments(&dir, "bf264", "h264");
    assert_b_frame_segments(&dir, "bf265", "hevc");
}

/// Stops the recorder cleanly; `camera`'s recording is then one run (no reconnect) of at least two
/// sealed segments that decode with the catalog's frame counts.
fn stop_and_assert_one_run(dir: &TestDir, nvr: &mut common::NvrProcess, camera: &str) {
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    let segs = segments(dir, camera);
    assert!(segs.len() >= 2, "{segs:?}");
    for s in &segs {
        assert_eq!(s.state, SegmentState::Sealed);
        assert_eq!(s.run_id, segs[0].run_id, "one run: no reconnect");
        probe_segment(dir, s);
    }
}

/// A GStreamer camera (`/cam`, H.264) behind a lossy link (`udp`: a UDP relay) dropping 1 % of
/// the video's RTP packets and reordering `reorder_percent` %, among the first 2000.
fn camera_behind_a_lossy_link(reorder_percent: f64, udp: bool) -> (GstCamera, LossyProxy) {
    let cam = GstCamera::start(&[("/cam", "h264")], CameraOpts::default());
    let proxy = LossyProxy::start(
        cam.port(),
        LossyOpts {
            drop_percent: 1.0,
            reorder_percent,
            damage_packets: 2000,
            udp,
            ..LossyOpts::default()
        },
    );
    (cam, proxy)
}

#[test]
fn a_lossy_link_is_survived_every_lost_packet_counted_and_the_files_decode() {
    let dir = TestDir::new();
    // 1 % of the video's RTP packets dropped and 0.5 % reordered, among the first 2000.
    let (_cam, proxy) = camera_behind_a_lossy_link(0.5, false);
    let config = write_config(&dir, 4, &[("lossy", proxy.url("/cam"))]);
    let mut nvr = start_nvr(&dir, &config);
    let counted = |st: &serde_json::Value| {
        (
            st["rtp_packets_lost"].as_u64().unwrap_or(0),
            st["packet_errors"].as_u64().unwrap_or(0),
        )
    };
    // Once the damage is over, the status counts exactly what the link did: each dropped packet and
    // each reordered one is missing from the sequence when its successor arrives; a reordered
    // packet arriving late is a bad packet (out of order over TCP), survived.
    let done = wait_until(Duration::from_secs(120), Duration::from_millis(300), || {
        let damage = proxy.stats();
        damage.done
            && counted(&stream_status(&dir, "lossy"))
                == (damage.dropped + damage.reordered, damage.reordered)
    });
    let damage = proxy.stats();
    let st = stream_status(&dir, "lossy");
    assert!(
        done,
        "damage {damage:?}, status {st}\nnvr:\n{}",
        nvr.stderr_tail(40)
    );
    assert!(damage.dropped > 0 && damage.reordered > 0, "{damage:?}");
    assert_eq!(st["connects"], 1, "the session stayed up: {st}");
    assert_eq!(st["reconnects"], 0, "{st}");
    assert!(st["frames_skipped"].as_u64().unwrap_or(0) > 0, "{st}");
    stop_and_assert_one_run(&dir, &mut nvr, "lossy");
    let store = Reader::open(&dir.join("data"), Arc::new(SystemClock)).expect("open catalog");
    let loss_events: Vec<_> = store
        .events(0, 1000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "media_loss")
        .collect();
    assert!(!loss_events.is_empty(), "no media_loss event");
    assert!(
        loss_events[0].message.contains("RTP packets lost"),
        "{loss_events:?}"
    );
}

#[test]
fn udp_reordered_packets_are_not_losses_dropped_ones_are_counted_and_the_files_decode() {
    let dir = TestDir::new();
    // A UDP relay: 1 % of the video's RTP datagrams dropped and 1 % sent after the next one, among
    // the first 2000.
    let (_cam, proxy) = camera_behind_a_lossy_link(1.0, true);
    let config = write_config_transport(&dir, 4, &[("lossy", proxy.url("/cam"), "udp")]);
    let mut nvr = start_nvr(&dir, &config);
    let lost = |st: &serde_json::Value| st["rtp_packets_lost"].as_u64().unwrap_or(0);
    // Once the damage is over, the status counts the dropped datagrams and nothing else: a
    // reordered one is put back in its place.
    let done = wait_until(Duration::from_secs(120), Duration::from_millis(300), || {
        let damage = proxy.stats();
        damage.done && lost(&stream_status(&dir, "lossy")) >= damage.dropped
    });
    let damage = proxy.stats();
    // The status is read after the stream went on well past the damage window.
    let frames_then = stream_status(&dir, "lossy")["frames_received"]
        .as_u64()
        .unwrap_or(0);
    wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
        stream_status(&dir, "lossy")["frames_received"]
            .as_u64()
            .unwrap_or(0)
            > frames_then + 25
    });
    let st = stream_status(&dir, "lossy");
    eprintln!(
        "UDP link: {} datagrams, {} dropped, {} reordered; recorder: {} lost, {} packet errors, \
         {} of {} frames skipped to the next key frame",
        damage.seen,
        damage.dropped,
        damage.reordered,
        lost(&st),
        st["packet_errors"],
        st["frames_skipped"],
        st["frames_received"]
    );
    assert!(
        done,
        "damage {damage:?}, status {st}\nnvr:\n{}",
        nvr.stderr_tail(40)
    );
    assert!(damage.dropped > 0 && damage.reordered > 0, "{damage:?}");
    assert_eq!(
        (lost(&st), st["packet_errors"].as_u64().unwrap_or(0)),
        (damage.dropped, 0),
        "only the dropped datagrams are losses ({damage:?}): {st}"
    );
    assert_eq!(st["transport"], "udp", "{st}");
    assert_eq!(st["connects"], 1, "the session stayed up: {st}");
    assert_eq!(st["reconnects"], 0, "{st}");
    stop_and_assert_one_run(&dir, &mut nvr, "lossy");
}

#[test]
fn a_camera_s_wider_udp_reorder_window_survives_a_reordering_the_default_does_not() {
    let dir = TestDir::new();
    // Noise at 2 Mbit/s: some 200 RTP packets a second, so a packet sent 100 packets late is about
    // half a second late: beyond the default window's 64 packets, within 512 packets and 1 s.
    let cam = GstCamera::start(
        &[("/cam", "h264")],
        CameraOpts {
            pattern: "snow",
            bitrate_kbps: 2000,
            ..CameraOpts::default()
        },
    );
    let reordering = LossyOpts {
        reorder_percent: 0.5,
        reorder_distance: 100,
        damage_packets: 3000,
        udp: true,
        ..LossyOpts::default()
    };
    let wide_link = LossyProxy::start(cam.port(), reordering.clone());
    let default_link = LossyProxy::start(cam.port(), reordering);
    let config = write_config_cameras(
        &dir,
        4,
        &[
            (
                "wide",
                wide_link.url("/cam"),
                "udp",
                "udp_reorder_max_packets = 512\nudp_reorder_max_delay_ms = 1000",
            ),
            ("default", default_link.url("/cam"), "udp", ""),
        ],
        "",
    );
    let mut nvr = start_nvr(&dir, &config);
    let received = |camera: &str| {
        stream_status(&dir, camera)["frames_received"]
            .as_u64()
            .unwrap_or(0)
    };
    // Both links have reordered their share and both streams went on well past that.
    let mut after = None;
    let done = wait_until(Duration::from_secs(180), Duration::from_millis(300), || {
        if !(wide_link.stats().done && default_link.stats().done) {
            return false;
        }
        let (wide, default) = *after.get_or_insert((received("wide"), received("default")));
        received("wide") > wide + 50 && received("default") > default + 50
    });
    let wide = stream_status(&dir, "wide");
    let default = stream_status(&dir, "default");
    let (wide_damage, default_damage) = (wide_link.stats(), default_link.stats());
    let count = |st: &serde_json::Value, key: &str| st[key].as_u64().unwrap_or(0);
    for (name, st, damage) in [
        ("wide", &wide, &wide_damage),
        ("default", &default, &default_damage),
    ] {
        eprintln!(
            "{name} window: {} datagrams, {} sent 100 later; recorder: {} lost, {} of {} frames \
             skipped to the next key frame",
            damage.seen,
            damage.reordered,
            count(st, "rtp_packets_lost"),
            count(st, "frames_skipped"),
            count(st, "frames_received")
        );
    }
    assert!(
        done,
        "wide {wide}, default {default}\nnvr:\n{}",
        nvr.stderr_tail(40)
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    assert!(wide_damage.reordered > 0, "{wide_damage:?}");
    // The wide window puts every late packet back in its place.
    for key in ["rtp_packets_lost", "packet_errors", "frames_skipped"] {
        assert_eq!(count(&wide, key), 0, "{key}: {wide}");
    }
    // The default window gives each one up as lost (and skips it when it comes).
    assert_eq!(
        count(&default, "rtp_packets_lost"),
        default_damage.reordered,
        "{default}"
    );
    assert!(count(&default, "frames_skipped") > 0, "{default}");
    for st in [&wide, &default] {
        assert_eq!(st["transport"], "udp", "{st}");
        assert_eq!(st["reconnects"], 0, "{st}");
    }
}

#[test]
fn sdp_with_trailing_semicolons_and_parameter_sets_only_in_band_records() {
    let dir = TestDir::new();
    let cam = GstCamera::start(
        &[("/h264", "h264"), ("/h265", "h265")],
        CameraOpts::default(),
    );
    let proxy = LossyProxy::start(
        cam.port(),
        LossyOpts {
            sdp_trailing_semicolon: true,
            sdp_drop_sprop: true,
            ..LossyOpts::default()
        },
    );
    let config = write_config(
        &dir,
        2,
        &[
            ("fmtp264", proxy.url("/h264")),
            ("fmtp265", proxy.url("/h265")),
        ],
    );
    records_h264_and_h265(&dir, &config, ["fmtp264", "fmtp265"]);
}

#[test]
fn sdp_with_trailing_semicolons_and_parameter_sets_only_in_the_sdp_records() {
    let dir = TestDir::new();
    // The camera itself serves `a=fmtp:... ;` and sends no parameter sets in band: the SDP's are
    // the only ones.
    let cam = GstCamera::start(
        &[("/h264", "h264"), ("/h265", "h265")],
        CameraOpts {
            no_inband_parameter_sets: true,
            sdp_fmtp_trailing_semicolon: true,
            ..CameraOpts::default()
        },
    );
    let config = write_config(
        &dir,
        2,
        &[("sdp264", cam.url("/h264")), ("sdp265", cam.url("/h265"))],
    );
    records_h264_and_h265(&dir, &config, ["sdp264", "sdp265"]);
}

#[test]
fn a_camera_refusing_tcp_records_over_udp_with_transport_auto() {
    let dir = TestDir::new();
    let cam = GstCamera::start(
        &[("/cam", "h264")],
        CameraOpts {
            udp_only: true,
            ..CameraOpts::default()
        },
    );
    let config = write_config_transport(
        &dir,
        2,
        &[
            ("auto", cam.url("/cam"), "auto"),
            ("tcponly", cam.url("/cam"), "tcp"),
        ],
    );
    let mut nvr = start_nvr(&dir, &config);
    let sealed = |camera: &str| sealed_count(&dir, camera);
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            sealed("auto") >= 2
                && stream_status(&dir, "tcponly")["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("461"))
        }),
        "auto {}, tcponly {}; nvr:\n{}",
        stream_status(&dir, "auto"),
        stream_status(&dir, "tcponly"),
        nvr.stderr_tail(40)
    );
    let st = stream_status(&dir, "auto");
    assert_eq!(st["transport"], "udp", "{st}");
    assert_eq!(st["reconnects"], 0, "{st}");
    assert_eq!(sealed("tcponly"), 0);
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    for s in segments(&dir, "auto") {
        probe_segment(&dir, &s);
    }
}

#[test]
fn udp_4k_key_frames_of_a_megabyte_lose_nothing_on_loopback() {
    let dir = TestDir::new();
    // Noise at 3840x2160: key frames of about 1.2 MB, each sent by the camera as one burst of
    // some 900 UDP packets. 5 fps keeps the encoder within one core.
    let cam = GstCamera::start(
        &[("/cam", "h264")],
        CameraOpts {
            width: 3840,
            height: 2160,
            fps: 5,
            gop_frames: 5,
            bitrate_kbps: 20_000,
            pattern: "snow",
            ..CameraOpts::default()
        },
    );
    // A port range for the firewall, somewhere in 20000-59999: the RTP/RTCP pair is bound in it.
    let first = 20_000 + (std::process::id() % 2_000) as u16 * 20;
    let last = first + 19;
    let config = write_config_ingest(
        &dir,
        4,
        &[("uhd", cam.url("/cam"), "udp")],
        &format!("udp_port_range = \"{first}-{last}\""),
    );
    let mut nvr = start_nvr(&dir, &config);
    let sealed = || sealed_count(&dir, "uhd");
    assert!(
        wait_until(
            Duration::from_secs(90),
            Duration::from_millis(300),
            || sealed() >= 3
        ),
        "status {}; nvr:\n{}",
        stream_status(&dir, "uhd"),
        nvr.stderr_tail(40)
    );
    let st = stream_status(&dir, "uhd");
    let bound = udp_ports_bound();
    assert!(
        bound.iter().any(|p| (first..=last).contains(p)),
        "no UDP port bound in {first}-{last}"
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    assert_eq!(st["transport"], "udp", "{st}");
    let granted = st["udp_recv_buffer_bytes"].as_u64().unwrap_or(0);
    assert!(granted > 212_992, "receive buffer not raised: {st}");
    assert!(
        nvr.stderr().contains("UDP receive buffer"),
        "the granted buffer is logged"
    );
    for key in ["rtp_packets_lost", "packet_errors", "frames_skipped"] {
        assert_eq!(st[key], 0, "{key}: {st}");
    }
    assert_eq!(st["reconnects"], 0, "{st}");
    let segs = segments(&dir, "uhd");
    let mut big_key_frames = 0;
    for s in &segs[..segs.len() - 1] {
        let path = dir.join("data").join(&s.path);
        // 5 fps: every frame one period (200 ms) apart, none missing.
        assert_eq!(s.media_duration_ms, s.frames * 200, "{s:?}");
        let (_, samples) =
            store::mp4::scan_samples(&std::fs::read(&path).expect("read")).expect("scan");
        big_key_frames += samples
            .iter()
            .filter(|x| x.is_sync && x.size >= 1_000_000)
            .count();
    }
    assert!(big_key_frames > 0, "no key frame of a megabyte");
}

#[test]
fn g711_audio_is_recorded_as_alaw_and_ulaw_and_decodes() {
    records_audio(&[
        ("alaw", "h264+pcma", "recorded as alaw", "pcm_alaw"),
        ("ulaw", "h264+pcmu", "recorded as ulaw", "pcm_mulaw"),
    ]);
}

#[test]
fn opus_audio_is_recorded_as_opus_and_decodes() {
    let dir = records_audio(&[("opus", "h264+opus", "recorded as Opus", "opus")]);
    // 48 kHz timescale and mono (the camera's sprop-stereo=0), as the `dOps` box says.
    let segs = segments(&dir, "opus");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["stream=time_base,sample_rate,channels", "-of", "csv=p=0"])
        .arg(dir.join("data").join(&segs[0].path))
        .output()
        .expect("ffprobe");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "48000,1,1/48000",
        "{}",
        segs[0].path
    );
}

/// Records one GStreamer camera per `(camera, kind, status note, ffprobe codec)` (the catalog's
/// audio codec is the camera's name) until each has sealed two segments, stops the recorder, and
/// checks every sealed segment: the status names the audio as recorded, ffprobe shows the audio
/// codec, ffmpeg decodes the file without an error, and the audio lasts as long as the video.
fn records_audio(cams: &[(&str, &str, &str, &str)]) -> TestDir {
    let dir = TestDir::new();
    let mounts: Vec<(String, &str)> = cams.iter().map(|c| (format!("/{}", c.0), c.1)).collect();
    let mounts: Vec<(&str, &str)> = mounts.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    let cam = GstCamera::start(&mounts, CameraOpts::default());
    let urls: Vec<(&str, String)> = cams
        .iter()
        .map(|c| (c.0, cam.url(&format!("/{}", c.0))))
        .collect();
    let config = write_config(&dir, 2, &urls);
    let mut nvr = start_nvr(&dir, &config);
    let sealed = |camera: &str| sealed_count(&dir, camera);
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            cams.iter().all(|c| sealed(c.0) >= 2)
        }),
        "{:?}; nvr:\n{}",
        cams.iter()
            .map(|c| stream_status(&dir, c.0))
            .collect::<Vec<_>>(),
        nvr.stderr_tail(40)
    );
    let statuses: Vec<_> = cams.iter().map(|c| stream_status(&dir, c.0)).collect();
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    for (&(camera, _, note, probe_codec), status) in cams.iter().zip(&statuses) {
        assert!(
            status["audio"].as_str().is_some_and(|a| a.contains(note)),
            "{status}"
        );
        let segs = segments(&dir, camera);
        for s in &segs[..segs.len() - 1] {
            assert_eq!(s.audio_codec.as_deref(), Some(camera), "{s:?}");
            let path = dir.join("data").join(&s.path);
            let probe = ffprobe(&path);
            assert!(
                probe.stderr_errors.is_empty(),
                "{}: {}",
                s.path,
                probe.stderr_errors
            );
            assert_eq!(
                probe.audio_codec.as_deref(),
                Some(probe_codec),
                "{}",
                s.path
            );
            // The audio covers the segment: its duration is the video's within one packet (20 ms)
            // plus what arrived with the last GOP.
            let out = Command::new("ffprobe")
                .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
                .args(["stream=duration", "-of", "csv=p=0"])
                .arg(&path)
                .output()
                .expect("ffprobe");
            let audio_s: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0.0);
            let video_s = s.media_duration_ms as f64 / 1000.0;
            assert!(
                (audio_s - video_s).abs() <= 0.2,
                "{}: audio {audio_s} s, video {video_s} s",
                s.path
            );
        }
    }
    dir
}

/// Records the H.264 camera `cameras[0]` and the H.265 camera `cameras[1]` of `config` until each has
/// sealed two segments, stops the recorder cleanly, and checks that every file decodes without error
/// with the right codec and the catalog's frame count.
fn records_h264_and_h265(dir: &TestDir, config: &Path, cameras: [&str; 2]) {
    let mut nvr = start_nvr(dir, config);
    let sealed = |camera: &str| {
        segments(dir, camera)
            .iter()
            .filter(|s| s.state == SegmentState::Sealed)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            sealed(cameras[0]) >= 2 && sealed(cameras[1]) >= 2
        }),
        "status h264 {}, h265 {}; nvr:\n{}",
        stream_status(dir, cameras[0]),
        stream_status(dir, cameras[1]),
        nvr.stderr_tail(40)
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    for (camera, codec) in [(cameras[0], "h264"), (cameras[1], "hevc")] {
        for s in segments(dir, camera) {
            let probe = probe_segment(dir, &s);
            assert_eq!(probe.codec, codec);
        }
    }
}

#[test]
fn vlc_h264_over_udp_records_every_frame_like_ffmpeg() {
    records_vlc_like_ffmpeg(VlcClip::H264, "h264", false);
}

#[test]
fn vlc_h264_with_b_frames_and_aac_records_every_frame_like_ffmpeg() {
    records_vlc_like_ffmpeg(VlcClip::H264BFramesAac, "h264", true);
}

/// x265's open GOPs: after the first IDR every key frame is a CRA picture. Before retina took CRA
/// and BLA pictures as random access points, nothing was recorded (every frame skipped, waiting
/// for an IDR that never came).
#[test]
fn vlc_h265_with_b_frames_open_gops_and_aac_records_every_frame_like_ffmpeg() {
    records_vlc_like_ffmpeg(VlcClip::H265BFramesAac, "hevc", true);
}

/// Frames and whole GOPs (key frame to key frame) of a sequence of packets in decode order: the
/// frames before the first key frame and from the last one on are not counted.
fn whole_gops(packets: &[Packet]) -> (usize, usize) {
    let keys: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].key).collect();
    match (keys.first(), keys.last()) {
        (Some(first), Some(last)) => (last - first, keys.len() - 1),
        _ => (0, 0),
    }
}

/// Records VLC 3's RTSP server serving `clip` over UDP while ffmpeg (`-c copy`) records the same URL:
/// the session stays up, nothing is lost, every segment decodes with its frames one period apart
/// (see [`assert_segment_timing`]), audio is recorded as AAC where the clip has it, and the
/// recorder's frames per whole GOP are within 0.5 % of ffmpeg's.
fn records_vlc_like_ffmpeg(clip: VlcClip, codec: &str, b_frames: bool) {
    let dir = TestDir::new();
    let vlc = VlcServer::start(clip);
    let ff_file = dir.join("ffmpeg.mp4");
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-rtsp_transport", "udp", "-i"])
        .arg(vlc.url())
        .args(["-map", "0:v", "-c", "copy", "-t", "16", "-y"])
        .arg(&ff_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let config = write_config_transport(&dir, 4, &[("vlc", vlc.url(), "udp")]);
    let mut nvr = start_nvr(&dir, &config);
    let sealed = || {
        segments(&dir, "vlc")
            .iter()
            .filter(|s| s.state == SegmentState::Sealed)
            .count()
    };
    let recorded = wait_until(Duration::from_secs(90), Duration::from_millis(300), || {
        sealed() >= 3
    });
    let st = stream_status(&dir, "vlc");
    assert!(recorded, "status {st}\nnvr:\n{}", nvr.stderr_tail(40));
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(20));
    let ff_done = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        matches!(ffmpeg.try_wait(), Ok(Some(_)))
    });
    if !ff_done {
        let _ = ffmpeg.kill();
    }
    let ff_out = ffmpeg.wait_with_output().expect("ffmpeg's output");
    assert!(ff_done && ff_out.status.success(), "ffmpeg: {ff_out:?}");

    assert_eq!(st["transport"], "udp", "{st}");
    assert_eq!(
        (st["connects"].as_u64(), st["reconnects"].as_u64()),
        (Some(1), Some(0)),
        "{st}"
    );
    assert_eq!(st["rtp_packets_lost"], 0, "{st}");
    assert_segment_timing(&dir, "vlc", codec, b_frames);
    let segs = segments(&dir, "vlc");
    if clip != VlcClip::H264 {
        assert_eq!(st["audio"], "aac", "{st}");
        for s in &segs {
            assert_eq!(s.audio_codec.as_deref(), Some("mp4a.40.2"), "{s:?}");
            let probe = ffprobe(dir.join("data").join(&s.path));
            assert_eq!(probe.audio_codec.as_deref(), Some("aac"), "{}", s.path);
        }
    }
    // The last segment may end on a reference frame without the B-frames presented before it
    // (the run was stopped before they came): the rate is that of the others.
    let whole = &segs[..segs.len() - 1];
    let frames: i64 = whole.iter().map(|s| s.frames).sum();
    let media_ms: i64 = whole.iter().map(|s| s.media_duration_ms).sum();
    let recorder_fps = frames as f64 * 1000.0 / media_ms as f64;
    // Frames per GOP, counted in whole GOPs: independent of when each client joined and left, and
    // of timestamps (ffmpeg rewrites some of its own while it syncs to the server's RTCP).
    let recorded: Vec<Packet> = segs
        .iter()
        .flat_map(|s| video_packets(&dir.join("data").join(&s.path)))
        .collect();
    let (rec_frames, rec_gops) = whole_gops(&recorded);
    let (ff_frames, ff_gops) = whole_gops(&video_packets(&ff_file));
    eprintln!(
        "VLC {clip:?}: recorder {frames} frames in {:.2} s of whole segments ({recorder_fps:.3} \
         fps), {} packet errors, {} frames skipped, {rec_frames} frames in {rec_gops} whole GOPs; \
         ffmpeg {ff_frames} frames in {ff_gops} whole GOPs",
        media_ms as f64 / 1000.0,
        st["packet_errors"],
        st["frames_skipped"]
    );
    assert!(rec_gops >= 8 && ff_gops >= 8, "{rec_gops}, {ff_gops} GOPs");
    let rec_per_gop = rec_frames as f64 / rec_gops as f64;
    let ff_per_gop = ff_frames as f64 / ff_gops as f64;
    assert!(
        (recorder_fps - f64::from(VLC_CLIP_FPS)).abs() < 1e-9,
        "every frame recorded: {recorder_fps} fps"
    );
    assert!(
        ((rec_per_gop - ff_per_gop) / ff_per_gop).abs() <= 0.005,
        "frames per GOP: recorder {rec_per_gop}, ffmpeg {ff_per_gop}"
    );
}
