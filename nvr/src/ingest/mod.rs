//! Ingest: one RTSP session per stream (retina), frames grouped into fMP4 fragments and segments.
//!
//! [`run_stream`] (in `session.rs`) is the stream's background job: connect (each step under a
//! timeout), record until the session fails or the no-frame watchdog fires (a lost or malformed
//! packet does not fail it: `loss.rs` skips to the next key frame and counts), close the recording
//! cleanly, back off (exponential with jitter; capped at once after a wrong password), reconnect. A
//! failure of one stream never touches another. [`Recording`] (in `recording.rs`) is the
//! camera-independent part: it turns timestamped frames into fragments and segments and is tested with
//! synthetic frames. This file holds what both share: the stream's description, settings, status and
//! errors.

mod command;
mod loss;
mod recording;
pub mod ring;
mod session;
mod task;
mod timing;
mod writer;

pub use command::{Command, CommandError, Mode, PromoteReport, ReleaseReport};
pub use loss::LossCounts;
pub use recording::{AudioTrack, Recording, VideoTrack};
pub use ring::RingLimits;
pub use task::{StreamChannels, StreamTask, COMMAND_QUEUE, LIVE_QUEUE};
pub use writer::{Writer, WriterError, WRITER_THREADS};

/// Opens and plays a stream's RTSP session as the recorder does and returns its frames (for `nvr
/// floor`, which receives without recording).
pub async fn connect_session(
    spec: &StreamSpec,
    settings: IngestSettings,
) -> Result<retina::client::Demuxed, IngestError> {
    Ok(session::connect(spec, settings).await?.demuxed)
}

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{IngestConfig, RecordingConfig, Secret, StreamKind, Transport, UdpReorder};
use store::StorageError;

/// What to record: one camera stream.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub camera: String,
    pub kind: StreamKind,
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub transport: Transport,
    /// The reorder window of UDP sessions.
    pub udp_reorder: UdpReorder,
}

/// Timing of ingest and segmenting: the `[recording]` and `[ingest]` sections as configured (each
/// key read where it is used, so a new key is written once, in `cluster-config`). `Copy`: every
/// stream's task holds its own. `Default`: the configuration's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestSettings {
    pub recording: RecordingConfig,
    pub ingest: IngestConfig,
}

impl IngestSettings {
    /// Bounds of the shadow ring.
    pub fn ring(&self) -> RingLimits {
        RingLimits {
            max_ms: i64::try_from(self.recording.shadow_ring_ms).unwrap_or(i64::MAX),
            max_bytes: usize::try_from(self.recording.shadow_ring_max_bytes).unwrap_or(usize::MAX),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    Starting,
    /// Mode `off` and no live subscriber: no session.
    Idle,
    Connecting,
    /// Session up, mode `record`.
    Recording,
    /// Session up, mode `shadow` (frames kept in the ring, nothing written).
    Shadowing,
    /// Session up for live subscribers only (mode `off`).
    Live,
    Backoff,
    Stopped,
}

/// Per-stream status, shared with status output.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub camera: String,
    pub stream: String,
    pub mode: Mode,
    pub state: StreamState,
    pub video_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Audio as recorded (`aac`, `pcma (G.711 A-law): recorded as alaw`) or why not
    /// (`opus: not recorded (...)`).
    pub audio: Option<String>,
    /// RTSP transport of the current or last session (`tcp`, `udp`).
    pub transport: Option<String>,
    /// Receive buffer of the video's UDP RTP socket as the kernel reports it (Linux: twice the
    /// usable size), when over UDP.
    pub udp_recv_buffer_bytes: Option<usize>,
    pub last_frame_ms: Option<i64>,
    pub frames: u64,
    pub bytes: u64,
    pub segments_sealed: u64,
    pub current_segment: Option<String>,
    pub connects: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub next_retry_ms: Option<u64>,
    /// Last time the stream's loop ran (for the systemd watchdog), ms UTC.
    pub alive_ms: i64,
    /// Video frames received in this process (recorded or not).
    pub frames_received: u64,
    /// Media lost in this process: RTP packets missing, malformed packets survived, frames skipped
    /// to the next key frame (flattened: `rtp_packets_lost`, `packet_errors`, `frames_skipped`).
    #[serde(flatten)]
    pub loss: LossCounts,
    /// Received video frames per second and bits per second over the last status interval.
    pub fps: f64,
    pub bitrate_bps: u64,
    /// The last key frame received.
    pub last_key_frame: Option<crate::frame::FrameId>,
    /// Shadow ring occupancy.
    pub ring_frames: usize,
    pub ring_bytes: usize,
    pub live_subscribers: usize,
    #[serde(skip)]
    frames_before_session: u64,
    #[serde(skip)]
    bytes_before_session: u64,
    #[serde(skip)]
    sealed_before_session: u64,
}

impl StreamStatus {
    pub fn new(camera: &str, kind: StreamKind) -> Self {
        StreamStatus {
            camera: camera.to_owned(),
            stream: kind.as_str().to_owned(),
            mode: Mode::Off,
            state: StreamState::Starting,
            video_codec: None,
            width: None,
            height: None,
            audio: None,
            transport: None,
            udp_recv_buffer_bytes: None,
            last_frame_ms: None,
            frames: 0,
            bytes: 0,
            segments_sealed: 0,
            current_segment: None,
            connects: 0,
            reconnects: 0,
            last_error: None,
            last_error_ms: None,
            next_retry_ms: None,
            alive_ms: 0,
            frames_received: 0,
            loss: LossCounts::default(),
            fps: 0.0,
            bitrate_bps: 0,
            last_key_frame: None,
            ring_frames: 0,
            ring_bytes: 0,
            live_subscribers: 0,
            frames_before_session: 0,
            bytes_before_session: 0,
            sealed_before_session: 0,
        }
    }
}

pub type SharedStatus = Arc<Mutex<StreamStatus>>;

fn update(status: &SharedStatus, f: impl FnOnce(&mut StreamStatus)) {
    match status.lock() {
        Ok(mut s) => f(&mut s),
        Err(p) => f(&mut p.into_inner()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{step} timed out after {timeout_ms} ms")]
    Timeout { step: &'static str, timeout_ms: u64 },
    #[error("authentication failed (check username and password): {0}")]
    Auth(String),
    #[error("RTSP {step}: {message}")]
    Rtsp { step: &'static str, message: String },
    #[error("camera offers no H.264 or H.265 video stream (it offers: {0})")]
    NoVideo(String),
    #[error("no frame received for {0} ms")]
    NoFrames(u64),
    #[error("camera ended the stream")]
    Ended,
    #[error("bad camera data: {0}")]
    BadData(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Writer(#[from] WriterError),
}

impl IngestError {
    fn rtsp(step: &'static str, e: retina::Error) -> Self {
        if e.status_code() == Some(401) {
            IngestError::Auth(first_line(&e.to_string()))
        } else {
            IngestError::Rtsp {
                step,
                message: first_line(&e.to_string()),
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}
