//! The heartbeat message and its framing on the arbiters' own mutual-TLS connection.
//!
//! A heartbeat says who sends it, a sequence number that only grows (the sender's start time, then a
//! counter: a replayed or reordered heartbeat is refused), the sender's view of every stream's holder
//! and epoch, and the health of the streams of its recorder. Each frame (`base::frame`) is a 4-byte
//! big-endian length and that many bytes of JSON, at most [`MAX_HEARTBEAT_BYTES`].

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest heartbeat frame.
pub const MAX_HEARTBEAT_BYTES: u32 = 1 << 20;

/// A heartbeat sequence number: the sender's start (wall ms) then a counter; ordered as a pair, so a
/// restarted sender continues above everything it sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seq {
    pub boot_ms: i64,
    pub n: u64,
}

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.boot_ms, self.n)
    }
}

/// The sender's view of one stream's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub stream: String,
    pub holder: String,
    pub epoch: u64,
    /// A hand-back: the last frame the previous holder wrote; the new holder records from the frame
    /// after it (make-before-break at the key frame where the previous holder stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<store::frame::FrameId>,
    /// Held after a planned handover: no failback.
    #[serde(default)]
    pub planned: bool,
}

/// One stream of the sender's recorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHealth {
    /// `camera/stream`.
    pub stream: String,
    /// `off`, `shadow` or `record`.
    pub mode: String,
    /// The recorder's state (`recording`, `shadowing`, `connecting`, `backoff`, …).
    pub state: String,
    /// Its session delivers frames (recording or shadowing).
    pub receiving: bool,
    /// Bitrate received over the recorder's last status interval, kbit/s (0: none, or not measured).
    #[serde(default)]
    pub bitrate_kbps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub node: String,
    pub seq: Seq,
    /// Sender's wall clock, ms UTC (informative).
    pub sent_ms: i64,
    pub holdings: Vec<Claim>,
    pub health: Vec<StreamHealth>,
    /// A witness's heartbeats: the nodes it hears now (their heartbeats accepted within
    /// `node_dead_ms`). Empty from other nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hears: Vec<String>,
}

/// Errors of the heartbeat framing.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("heartbeat: {0}")]
    Frame(#[from] base::frame::FrameError),
    #[error("malformed heartbeat: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl FrameError {
    /// The peer closed the connection between heartbeats.
    pub fn is_closed(&self) -> bool {
        matches!(self, FrameError::Frame(base::frame::FrameError::Closed))
    }
}

/// Reads one heartbeat.
pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> Result<Heartbeat, FrameError> {
    let buf = base::frame::read_frame(r, MAX_HEARTBEAT_BYTES).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// Writes one heartbeat.
pub async fn write(w: &mut (impl AsyncWrite + Unpin), hb: &Heartbeat) -> Result<(), FrameError> {
    let data = serde_json::to_vec(hb)?;
    if data.len() > MAX_HEARTBEAT_BYTES as usize {
        return Err(base::frame::FrameError::TooLarge {
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            max: MAX_HEARTBEAT_BYTES,
        }
        .into());
    }
    base::frame::write_frame(w, &data)
        .await
        .map_err(base::frame::FrameError::Io)?;
    Ok(())
}
