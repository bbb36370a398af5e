//! Tests of the test rig itself (`tests/common`, `tests/rtsp_server.py`, `tests/hostile_camera.py`):
//! if these fail, failures elsewhere say nothing about the recorder.

use testkit as common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    let listener = TcpListener::bind(("127.0.0.1", port));
    assert!(
        listener.is_ok(),
        "port {port} from free_port() could not be bound: {listener:?}"
    );
}

#[test]
fn wait_until_returns_true_when_condition_holds_and_false_on_timeout() {
    let start = Instant::now();
    let mut calls = 0;
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            calls += 1;
            calls >= 3
        }
    ));
    assert_eq!(calls, 3);
    assert!(start.elapsed() < Duration::from_secs(2));

    let start = Instant::now();
    assert!(!wait_until(
        Duration::from_millis(200),
        Duration::from_millis(20),
        || false
    ));
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn gst_camera_serves_every_kind() {
    let cam = GstCamera::start(
        &[
            ("/h264", "h264"),
            ("/h265", "h265"),
            ("/aac", "h264+aac"),
            ("pcma", "h264+pcma"),
        ],
        CameraOpts::default(),
    );
    for (path, codec, audio) in [
        ("/h264", "h264", None),
        ("/h265", "hevc", None),
        ("/aac", "h264", Some("aac")),
        ("/pcma", "h264", Some("pcm_alaw")),
    ] {
        let r = ffprobe_url(&cam.url(path), PROBE_TIMEOUT);
        assert_eq!(r.codec, codec, "{path}: {r:?}");
        assert_eq!((r.width, r.height), (320, 240), "{path}: {r:?}");
        assert_eq!(r.audio_codec.as_deref(), audio, "{path}: {r:?}");
        assert!(r.stderr_errors.is_empty(), "{path}: {r:?}");
    }
    assert!(ffprobe_url(&cam.url("/nope"), PROBE_TIMEOUT)
        .codec
        .is_empty());
}

/// Records ~3 s with `ffmpeg -c copy` and checks frame count, GOP and clean decode: the camera
/// must send what the options say, and `ffprobe()` must see it.
fn record_and_check(kind: &str, codec: &str, opts: CameraOpts) {
    let dir = TestDir::new();
    let fps = opts.fps;
    let gop = opts.gop_frames;
    let (w, h) = (opts.width, opts.height);
    let cam = GstCamera::start(&[("/cam", kind)], opts);
    let out = dir.join("clip.mkv");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
        ])
        .arg(cam.url("/cam"))
        .args(["-t", "3", "-c", "copy", "-y"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(
        status.success(),
        "ffmpeg recording from {} failed: {status}",
        cam.url("/cam")
    );

    let r = ffprobe(&out);
    assert_eq!(r.codec, codec, "{r:?}");
    assert_eq!((r.width, r.height), (w, h), "{r:?}");
    let expected = u64::from(fps) * 3;
    assert!(
        r.frames >= expected * 8 / 10 && r.frames <= expected * 12 / 10 + 2,
        "expected ~{expected} frames: {r:?}"
    );
    assert!((2.0..=4.0).contains(&r.duration_s), "{r:?}");
    assert!(r.stderr_errors.is_empty(), "{r:?}");

    // Key frames exactly every `gop` frames (no scene-cut key frames, closed GOPs).
    let out_frames = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .expect("run ffprobe for packet flags");
    let flags = String::from_utf8_lossy(&out_frames.stdout);
    let keys: Vec<usize> = flags
        .lines()
        .enumerate()
        .filter(|(_, f)| f.starts_with('K'))
        .map(|(i, _)| i)
        .collect();
    assert!(
        keys.len() >= 2,
        "expected at least two key frames in 3 s: {keys:?}"
    );
    for pair in keys.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            gop as usize,
            "key frame positions {keys:?}"
        );
    }
}

#[test]
fn gst_camera_h264_has_requested_gop_and_decodes_cleanly() {
    record_and_check(
        "h264",
        "h264",
        CameraOpts {
            gop_frames: 10,
            ..CameraOpts::default()
        },
    );
}

#[test]
fn gst_camera_h265_has_closed_gops_and_decodes_cleanly() {
    record_and_check(
        "h265",
        "hevc",
        CameraOpts {
            width: 352,
            height: 288,
            fps: 15,
            ..CameraOpts::default()
        },
    );
}

#[test]
fn gst_camera_digest_auth_rejects_then_accepts() {
    let cam = GstCamera::start(
        &[("/a", "h264")],
        CameraOpts {
            auth: Some(CameraAuth::digest("admin", "p@ss:w0rd")),
            ..CameraOpts::default()
        },
    );
    let r = ffprobe_url(&cam.url("/a"), PROBE_TIMEOUT);
    assert!(
        r.codec.is_empty() && r.stderr_errors.contains("401"),
        "no credentials: {r:?}"
    );
    let r = ffprobe_url(
        &cam.url("/a").replace("rtsp://", "rtsp://admin:wrong@"),
        PROBE_TIMEOUT,
    );
    assert!(
        r.codec.is_empty() && r.stderr_errors.contains("401"),
        "wrong password: {r:?}"
    );
    let r = ffprobe_url(&cam.url_with_credentials("/a"), PROBE_TIMEOUT);
    assert_eq!(r.codec, "h264", "right credentials: {r:?}");
}

#[test]
fn gst_camera_basic_auth() {
    let cam = GstCamera::start(
        &[("/a", "h264")],
        CameraOpts {
            auth: Some(CameraAuth::basic("u", "pw")),
            ..CameraOpts::default()
        },
    );
    assert!(ffprobe_url(&cam.url("/a"), PROBE_TIMEOUT)
        .stderr_errors
        .contains("401"));
    assert_eq!(
        ffprobe_url(&cam.url_with_credentials("/a"), PROBE_TIMEOUT).codec,
        "h264"
    );
}

#[test]
fn gst_camera_stop_and_restart_on_same_port() {
    let mut cam = GstCamera::start(&[("/a", "h264")], CameraOpts::default());
    let port = cam.port();
    assert_eq!(ffprobe_url(&cam.url("/a"), PROBE_TIMEOUT).codec, "h264");
    cam.stop();
    assert!(!cam.is_running());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts after stop()"
    );
    cam.restart_same_port();
    assert_eq!(cam.port(), port);
    assert!(cam.is_running());
    assert_eq!(ffprobe_url(&cam.url("/a"), PROBE_TIMEOUT).codec, "h264");
}

#[test]
fn gst_camera_moves_to_another_port_when_port_is_taken() {
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind squatter");
    let taken = squatter.local_addr().expect("squatter addr").port();
    let cam = GstCamera::start_on(Some(taken), &[("/a", "h264")], CameraOpts::default());
    assert_ne!(cam.port(), taken);
    assert_eq!(ffprobe_url(&cam.url("/a"), PROBE_TIMEOUT).codec, "h264");
}

// --- hostile cameras -------------------------------------------------------------------------

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to hostile camera");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    s
}

/// Sends one request and reads one response (headers + Content-Length body).
fn request(s: &mut TcpStream, method: &str, url: &str, cseq: u32, extra: &str) -> String {
    write!(s, "{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n").expect("send request");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read response headers");
        assert_eq!(
            n,
            1,
            "connection closed mid-response to {method}: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length:"))
        .map(|v| v.trim().parse::<usize>().expect("numeric Content-Length"))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read response body");
    head + &String::from_utf8_lossy(&body)
}

fn play(s: &mut TcpStream, url: &str) {
    let r = request(s, "OPTIONS", url, 1, "");
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    let r = request(s, "DESCRIBE", url, 2, "Accept: application/sdp\r\n");
    assert!(
        r.contains("m=video") && r.contains("H264/90000") && r.contains("sprop-parameter-sets"),
        "{r}"
    );
    let r = request(
        s,
        "SETUP",
        &format!("{url}/stream=0"),
        3,
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
    );
    assert!(
        r.contains("interleaved=0-1") && r.contains("Session:"),
        "{r}"
    );
    let r = request(s, "PLAY", url, 4, "Session: 4711DEAD\r\n");
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
}

fn read_at_least(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("reading after PLAY: {e}"),
        }
    }
    got
}

#[test]
fn hostile_silent_accepts_but_never_answers() {
    let cam = HostileCamera::start(HostileMode::Silent);
    let mut s = connect(cam.port());
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("set_read_timeout");
    write!(s, "OPTIONS {} RTSP/1.0\r\nCSeq: 1\r\n\r\n", cam.url("/x")).expect("send OPTIONS");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("silent camera answered or closed: {other:?}"),
    }
}

#[test]
fn hostile_close_after_describe_closes() {
    let cam = HostileCamera::start(HostileMode::CloseAfterDescribe);
    let mut s = connect(cam.port());
    let url = cam.url("/x");
    assert!(request(&mut s, "OPTIONS", &url, 1, "").starts_with("RTSP/1.0 200"));
    assert!(request(&mut s, "DESCRIBE", &url, 2, "").contains("m=video"));
    let mut buf = [0u8; 16];
    assert_eq!(
        s.read(&mut buf).expect("read after DESCRIBE"),
        0,
        "expected EOF after DESCRIBE"
    );
}

#[test]
fn hostile_garbage_after_play_sends_garbage() {
    let cam = HostileCamera::start(HostileMode::GarbageAfterPlay);
    let mut s = connect(cam.port());
    play(&mut s, &cam.url("/x"));
    let got = read_at_least(&mut s, 32 * 1024);
    assert!(
        got.len() >= 32 * 1024,
        "only {} bytes after PLAY",
        got.len()
    );
}

#[test]
fn hostile_truncated_rtp_sends_interleaved_frames() {
    let cam = HostileCamera::start(HostileMode::TruncatedRtp);
    let mut s = connect(cam.port());
    play(&mut s, &cam.url("/x"));
    let got = read_at_least(&mut s, 64 * 1024);
    assert!(
        got.len() >= 64 * 1024,
        "only {} bytes after PLAY",
        got.len()
    );
    // Walk the interleaved framing: every frame is `$`, channel 0, length; look for FU-A starts
    // and for RTP packets shorter than the 12-byte fixed header.
    let (mut i, mut fu_a_start, mut short) = (0usize, 0, 0);
    while i + 4 <= got.len() {
        assert_eq!(got[i], b'$', "framing lost at byte {i}");
        assert_eq!(got[i + 1], 0, "unexpected channel");
        let len = usize::from(u16::from_be_bytes([got[i + 2], got[i + 3]]));
        if i + 4 + len > got.len() {
            break;
        }
        let pkt = &got[i + 4..i + 4 + len];
        if pkt.len() < 12 {
            short += 1;
        } else if pkt.len() > 14 && pkt[12] & 0x1f == 28 && pkt[13] & 0x80 != 0 {
            fu_a_start += 1;
        }
        i += 4 + len;
    }
    assert!(fu_a_start >= 1, "no FU-A start seen");
    let _ = short; // random: present in most runs, not guaranteed in the first 64 KiB
}

#[test]
fn hostile_camera_restarts_on_same_port() {
    let mut cam = HostileCamera::start(HostileMode::Silent);
    let port = cam.port();
    cam.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    cam.restart_same_port();
    assert_eq!(cam.port(), port);
    connect(port);
}

// --- ffprobe and NvrProcess --------------------------------------------------------------------

#[test]
fn ffprobe_reports_clean_file_and_errors_in_corrupt_one() {
    let dir = TestDir::new();
    let clean = dir.join("clean.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
            "-t",
            "2",
        ])
        .args([
            "-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-y",
        ])
        .arg(&clean)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    let r = ffprobe(&clean);
    assert_eq!(
        (r.codec.as_str(), r.width, r.height, r.frames),
        ("h264", 160, 120, 50),
        "{r:?}"
    );
    assert!((r.duration_s - 2.0).abs() < 0.1, "{r:?}");
    assert_eq!(r.audio_codec, None);
    assert!(r.stderr_errors.is_empty(), "{r:?}");

    // Overwrite a stretch in the middle of the media data: the decode must complain.
    let mut bytes = std::fs::read(&clean).expect("read clean.mp4");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 2000] {
        *b = 0xff;
    }
    let corrupt = dir.write("corrupt.mp4", &bytes);
    let r = ffprobe(&corrupt);
    assert!(
        !r.stderr_errors.is_empty(),
        "corruption not reported: {r:?}"
    );

    let r = ffprobe(dir.join("missing.mp4"));
    assert!(r.codec.is_empty() && !r.stderr_errors.is_empty(), "{r:?}");
}

#[test]
fn process_sigterm_wait_exit_and_logs() {
    let dir = TestDir::new();
    let script = "echo started >&2; echo out; trap 'echo got-term >&2; exit 3' TERM; while :; do sleep 0.05; done";
    let mut p = NvrProcess::spawn_program(&dir, "sh", "/bin/sh", &["-c", script], &[]);
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || p.stderr().contains("started")
    ));
    assert!(p.is_running());
    assert_eq!(p.wait_exit(Duration::from_millis(100)), None);
    p.sigterm();
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(3));
    assert!(p.stderr().contains("got-term"), "{}", p.stderr());
    assert_eq!(p.stdout().trim(), "out");
    assert!(p.stderr_log_path().starts_with(dir.path()));
}

#[test]
fn process_kill9_kills_the_whole_group() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TestDir::new();
    // The child shell starts a grandchild sleeping in the background and records its pid.
    let script = "sleep 60 & echo $! > grandchild.pid; wait";
    let mut p = NvrProcess::spawn_program(&dir, "sh", "/bin/sh", &["-c", script], &[]);
    let pid_file = dir.join("grandchild.pid");
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || std::fs::read_to_string(&pid_file)
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    ));
    let grandchild = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .to_string();
    let status = p.kill9();
    assert_eq!(status.signal(), Some(9));
    let proc_path = format!("/proc/{grandchild}");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            // Gone, or a zombie waiting for init to reap it.
            std::fs::read_to_string(format!("{proc_path}/stat"))
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true)
        }),
        "grandchild {grandchild} survived kill9"
    );
}

#[test]
fn nvr_binary_is_spawnable() {
    let dir = TestDir::new();
    let mut p = NvrProcess::spawn(&dir, &["--help"]);
    assert!(
        p.wait_exit(Duration::from_secs(30)).is_some(),
        "nvr --help did not exit"
    );
}
