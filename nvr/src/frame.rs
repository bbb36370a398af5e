//! Received frames and their identity. A frame is named by a [`FrameId`]: the hash of its slice NAL
//! units and the wall time this node received it; the one implementation is `store::frame` (the
//! arbiter names the last frame of a mirrored file with it), re-exported here.
//!
//! Received frames are [`VideoFrame`] / [`AudioFrame`] behind an `Arc`, with their data in `Bytes`:
//! the recording, the shadow ring and live subscribers share one copy.

use std::sync::Arc;

use crate::ingest::{AudioTrack, VideoTrack};
use bytes::Bytes;

pub use store::frame::{picture_hash, FrameId, MATCH_TOLERANCE_MS};

/// A received video frame.
#[derive(Debug)]
pub struct VideoFrame {
    /// Timestamp in the session's 90 kHz clock (`retina`'s elapsed timestamp).
    pub ts: i64,
    pub key: bool,
    /// 4-byte length-prefixed NAL units, as stored in MP4.
    pub data: Bytes,
    /// When this node received the frame, ms UTC.
    pub wall_ms: i64,
    pub h265: bool,
    /// The parameters in effect for this frame.
    pub track: Arc<VideoTrack>,
    /// Computed on first use: recording needs no per-frame hash, only promotions, releases and
    /// status do.
    id: std::sync::OnceLock<FrameId>,
}

impl VideoFrame {
    pub fn new(
        ts: i64,
        key: bool,
        data: Bytes,
        wall_ms: i64,
        h265: bool,
        track: Arc<VideoTrack>,
    ) -> VideoFrame {
        VideoFrame {
            ts,
            key,
            data,
            wall_ms,
            h265,
            track,
            id: std::sync::OnceLock::new(),
        }
    }

    /// The frame's identity (hashed once, on first use).
    pub fn id(&self) -> &FrameId {
        self.id
            .get_or_init(|| FrameId::of(&self.data, self.h265, self.wall_ms))
    }
}

/// A received audio frame.
#[derive(Debug)]
pub struct AudioFrame {
    /// Timestamp in the audio clock.
    pub ts: i64,
    /// Duration in samples.
    pub duration: u32,
    pub data: Bytes,
    pub track: Arc<AudioTrack>,
}

/// One frame as it flows to the recording, the shadow ring and live subscribers.
#[derive(Debug, Clone)]
pub enum MediaFrame {
    Video(Arc<VideoFrame>),
    Audio(Arc<AudioFrame>),
}

impl MediaFrame {
    pub fn len_bytes(&self) -> usize {
        match self {
            MediaFrame::Video(v) => v.data.len(),
            MediaFrame::Audio(a) => a.data.len(),
        }
    }
}
