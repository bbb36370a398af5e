//! VLC 3's RTSP server as a test camera: `cvlc` serving a clip made with ffmpeg (MPEG-TS), looped,
//! through `--sout '#gather:rtp{sdp=rtsp://127.0.0.1:PORT/x}'`.
//!
//! VLC's server sends RTP over UDP only (it answers 461 to TCP interleaving) and writes its SDP its
//! own way (an H.265 `fmtp` ending in `;`, `sprop-sei`, one payload type for audio and video). Its
//! RTP muxer is shared by every client: a client joins mid-stream, mid-fragment. `gather` keeps the
//! RTP streams across the clip's loops (without it, VLC ends every session when the clip restarts:
//! no more packets, an RTCP BYE); a clip longer than a test's recording keeps the loop's timestamp
//! jump out of it. The clip is MPEG-TS, not MP4: from an MP4 clip with B-frames (whose edit list
//! starts decoding two frames before presentation) VLC sends the first frames with wrong RTP
//! timestamps (the key frame and a B-frame at the same presentation time, the rest two frames
//! early), which no recorder can put right.
//!
//! VLC refuses to run as root ("VLC is not supposed to be run as root"), and has no option to allow
//! it: as root, the server runs as `nobody` through `setpriv`, with the clip in a directory that
//! user can read. It is killed (its process group) on drop.
//!
//! [`vlc_remux`] has VLC read an MP4 file (exports) and copy its frames, to count what VLC's MP4
//! demuxer reads.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    append_log, end_server_log, file_tail, free_port, kill_group_and_reap, unique_log_path,
    wait_until,
};

/// The user VLC runs as when the tests run as root.
const NOBODY_UID: u32 = 65534;
/// Frames per second of every clip.
pub const VLC_CLIP_FPS: u32 = 25;
/// Length of every clip: longer than any test records from one server.
const CLIP_S: u32 = 60;

/// What a [`VlcServer`] serves: 320x240, 25 fps, a key frame every second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VlcClip {
    /// H.264 without B-frames, no audio.
    H264,
    /// H.264 with 2 B-frames between reference frames, and AAC audio.
    H264BFramesAac,
    /// H.265 (x265's defaults: open GOPs, CRA pictures after the first IDR) with 2 B-frames, and
    /// AAC audio.
    H265BFramesAac,
}

impl VlcClip {
    fn ffmpeg_args(self) -> Vec<String> {
        let video: &[&str] = match self {
            VlcClip::H264 => &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0"],
            VlcClip::H264BFramesAac => &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2"],
            VlcClip::H265BFramesAac => &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "keyint=25:min-keyint=25:bframes=2:log-level=error",
            ],
        };
        let mut args: Vec<String> = [
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-map",
            "0:v",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self != VlcClip::H264 {
            args.extend(["-map", "1:a", "-c:a", "aac", "-b:a", "64k"].map(str::to_owned));
        }
        args.extend([
            "-t".to_owned(),
            CLIP_S.to_string(),
            "-g".to_owned(),
            "25".to_owned(),
        ]);
        args.extend(video.iter().map(|s| (*s).to_owned()));
        args.extend(["-pix_fmt", "yuv420p"].map(str::to_owned));
        args
    }
}

/// A running VLC RTSP server; killed on drop.
pub struct VlcServer {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl VlcServer {
    /// Makes the clip and starts serving it on a free port; returns once the server answers a
    /// DESCRIBE with the clip's SDP.
    pub fn start(clip: VlcClip) -> VlcServer {
        let dir = tempfile::Builder::new()
            .prefix("nvr-vlc-")
            .tempdir()
            .expect("create the clip directory");
        let file = dir.path().join("clip.ts");
        let out = Command::new("ffmpeg")
            .args(clip.ffmpeg_args())
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run ffmpeg: {e} (is ffmpeg installed? run tests/run)"));
        assert!(
            out.status.success(),
            "ffmpeg could not make the {clip:?} clip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Readable by the user VLC runs as; VLC's HOME (its configuration) inside.
        let home = dir.path().join("home");
        fs::create_dir(&home).expect("create VLC's home");
        for (path, mode) in [(dir.path(), 0o755), (&file, 0o644), (&home, 0o777)] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let log = unique_log_path("vlc");
        let mut last = String::new();
        for _ in 0..4 {
            let port = free_port();
            let mut child = spawn_vlc(&file, &home, port, &log);
            let ready = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
                matches!(child.try_wait(), Ok(None)) && describes(port)
            });
            if ready {
                return VlcServer {
                    child: Some(child),
                    port,
                    dir: Some(dir),
                    log,
                };
            }
            // Most likely the port was taken in between: try another one.
            kill_group_and_reap(&mut child);
            last = file_tail(&log, 20);
        }
        panic!("VLC's RTSP server did not start; its log:\n{last}");
    }

    /// The stream's URL.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/x", self.port)
    }
}

fn spawn_vlc(file: &Path, home: &Path, port: u16, log: &Path) -> Child {
    let mut cmd = cvlc_command();
    cmd.args(["-q", "--loop"])
        .arg(file)
        .arg("--sout")
        .arg(format!("#gather:rtp{{sdp=rtsp://127.0.0.1:{port}/x}}"))
        .arg("--sout-keep")
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(append_log(log))
        .stderr(append_log(log))
        .process_group(0);
    cmd.spawn().unwrap_or_else(|e| {
        panic!("run cvlc: {e} (is VLC installed? tests/run installs vlc-bin and vlc-plugin-base)")
    })
}

/// `cvlc`, as `nobody` when the tests run as root (VLC refuses root).
fn cvlc_command() -> Command {
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        let nobody = NOBODY_UID.to_string();
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &nobody,
            "--regid",
            &nobody,
            "--clear-groups",
            "cvlc",
        ]);
        c
    } else {
        Command::new("cvlc")
    }
}

/// What VLC read from an MP4 file: [`vlc_remux`].
#[derive(Debug)]
pub struct VlcRemux {
    /// Video frames in VLC's MPEG-TS copy, decoded by ffmpeg.
    pub frames: u64,
    /// VLC's log lines from its MP4 demuxer ("mp4 demux: …").
    pub demux_log: String,
}

/// Has VLC 3 read `mp4` (its MP4 demuxer, as when an investigator opens the file) and copy every
/// frame it read into MPEG-TS without decoding (`--sout '#std{mux=ts}'`), then counts the copy's
/// frames with ffprobe. VLC's file output leaves out the last few frames of a file (5 of 100 with an
/// MP4 written by ffmpeg), so compare with a control file, not with the source's frame count.
pub fn vlc_remux(mp4: &Path) -> VlcRemux {
    let dir = tempfile::Builder::new()
        .prefix("nvr-vlc-remux-")
        .tempdir()
        .expect("create VLC's directory");
    let input = dir.path().join("in.mp4");
    fs::copy(mp4, &input).expect("copy the MP4 for VLC");
    let home = dir.path().join("home");
    fs::create_dir(&home).expect("create VLC's home");
    // VLC (as `nobody`) reads the copy and writes its output into the directory.
    for (path, mode) in [(dir.path(), 0o777), (&input, 0o644), (&home, 0o777)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let output = dir.path().join("out.ts");
    let log = unique_log_path("vlc-remux");
    let mut child = cvlc_command()
        .args(["-I", "dummy", "--play-and-exit", "--no-audio"])
        .arg(&input)
        .arg("--sout")
        .arg(format!(
            "#std{{access=file,mux=ts,dst={}}}",
            output.display()
        ))
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(append_log(&log))
        .stderr(append_log(&log))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run cvlc: {e} (is VLC installed? tests/run installs vlc-bin)"));
    let exited = wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        kill_group_and_reap(&mut child);
        panic!(
            "VLC did not finish reading {}; its log:\n{}",
            mp4.display(),
            file_tail(&log, 20)
        );
    }
    let mut text = String::new();
    let _ = fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
    let demux_log = text
        .lines()
        .filter(|l| l.contains("mp4 demux"))
        .collect::<Vec<_>>()
        .join("\n");
    let frames = if output.exists() {
        super::ffprobe(&output).frames
    } else {
        0
    };
    VlcRemux { frames, demux_log }
}

/// Whether the server on `port` answers a DESCRIBE of `/x` with an SDP that has a video stream.
fn describes(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "DESCRIBE rtsp://127.0.0.1:{port}/x RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    );
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if text.contains("m=video") {
            return text.starts_with("RTSP/1.0 200");
        }
    }
    false
}

impl Drop for VlcServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group_and_reap(&mut child);
        }
        end_server_log(&self.log, &format!("VLC port {}", self.port));
        drop(self.dir.take());
    }
}
