//! Runtime control of one stream: its [`Mode`] and the [`Command`]s its task accepts (from the
//! supervisor, on behalf of the control socket or a configuration reload), with their answers.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::frame::FrameId;

/// What a stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No RTSP session (unless a live subscriber asks for one).
    Off,
    /// RTSP session open, the last seconds kept in the shadow ring, nothing written.
    Shadow,
    /// Recording to segments.
    Record,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shadow => "shadow",
            Mode::Record => "record",
        }
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown stream {0}")]
    UnknownStream(String),
    #[error("stream {stream} is {mode}: {what}")]
    WrongMode {
        stream: String,
        mode: &'static str,
        what: &'static str,
    },
    #[error("stream {0} has no live session now (camera unreachable or connecting)")]
    NotConnected(String),
    #[error("stream {0} is busy (too many pending commands)")]
    Busy(String),
    #[error("stream {0} stopped before answering")]
    Gone(String),
    #[error("{0}")]
    Storage(String),
    #[error("stream {0} already exists")]
    Exists(String),
}

/// The answer to a promotion (shadow → record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteReport {
    /// The first frame written by this node (`None` for a cold start: no session was open).
    pub first_frame: Option<FrameId>,
    /// Frames written from the shadow ring (received before the promotion).
    pub from_ring: usize,
    /// The requested frame was not in the ring: recording started at the ring's oldest key frame,
    /// this much wall time after the requested frame (negative: frames may be duplicated).
    pub gap_ms: Option<i64>,
    /// The requested frame was in the ring (or arrived while the promotion waited for it): the
    /// presentation time from it to the first frame written, in this node's own session with the
    /// camera (90 kHz units; one frame interval for a seamless takeover). `None` otherwise: no frame
    /// of this session is known to be the requested one, so no gap on one clock exists.
    pub gap_90k: Option<i64>,
    /// The recording starts on a frame that is not a key frame (it continues another node's part).
    pub starts_mid_gop: bool,
}

/// The answer to a release (record → shadow/off at the next key frame): another node that starts
/// recording at `key_frame` continues exactly where this one stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReport {
    /// The key frame at which this node stopped: the first frame it did not write.
    pub key_frame: FrameId,
    /// The last frame this node wrote.
    pub last_written: Option<FrameId>,
}

pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// A command to a stream's task.
#[derive(Debug)]
pub enum Command {
    /// Switch mode now: `record` from `shadow` starts at the ring's newest key frame (pre-roll);
    /// leaving `record` seals at once.
    SetMode(Mode, Reply<()>),
    /// Shadow → record, writing from the ring starting exactly after `after` (see [`PromoteReport`]).
    Promote {
        after: Option<FrameId>,
        /// The arbiter's epoch (fencing token) of this promotion, recorded with every segment.
        epoch: Option<u64>,
        /// Why (from the arbiter: which node or session failed, and when it was detected); logged as
        /// a `takeover` event with the epoch.
        reason: Option<String>,
        reply: Reply<PromoteReport>,
    },
    /// Record → `to` at the next key frame.
    Release {
        to: Mode,
        reply: Reply<ReleaseReport>,
    },
    /// A live subscriber came or went: open or close a live-only session.
    Wake,
    /// Finish and end the task (stream removed, or the recorder stops).
    Exit,
}
