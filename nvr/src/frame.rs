//! Frame identity: which frame of a camera stream is which, across RTSP sessions and nodes.
//!
//! Every RTSP session of one camera stream carries the same coded pictures, byte for byte (the slice
//! NAL units), while RTP timestamps, sequence numbers and in-band parameter sets may differ per
//! session. A frame is therefore named by a hash of its slice NAL units together with its approximate
//! wall time (pictures repeat, e.g. a looped clip or a static scene coded identically, so the hash
//! alone is not unique). Two nodes' wall times of the same frame differ by network and clock skew,
//! far less than [`MATCH_TOLERANCE_MS`].
//!
//! Received frames are [`VideoFrame`] / [`AudioFrame`] behind an `Arc`, with their data in `Bytes`:
//! the recording, the shadow ring and live subscribers share one copy.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ingest::{AudioTrack, VideoTrack};

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

/// Two ids with the same hash name the same frame if their wall times are at most this far apart.
pub const MATCH_TOLERANCE_MS: i64 = 1_000;

/// The identity of one video frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameId {
    /// Hex of the first 16 bytes of the SHA-256 of the frame's slice NAL units.
    pub hash: String,
    /// When this node received the frame, ms since the Unix epoch (UTC).
    pub wall_ms: i64,
}

impl FrameId {
    /// The id of a frame in MP4 form (4-byte length-prefixed NAL units) received at `wall_ms`.
    pub fn of(data: &[u8], h265: bool, wall_ms: i64) -> FrameId {
        FrameId {
            hash: base::hex::encode(&picture_hash(data, h265)),
            wall_ms,
        }
    }

    /// Whether `other` names the same frame (same picture, wall times within the tolerance).
    pub fn matches(&self, other: &FrameId) -> bool {
        self.hash == other.hash && (self.wall_ms - other.wall_ms).abs() <= MATCH_TOLERANCE_MS
    }
}

impl std::fmt::Display for FrameId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.hash, self.wall_ms)
    }
}

/// Whether a NAL unit (its first header byte) carries coded picture data.
fn is_slice(header: u8, h265: bool) -> bool {
    if h265 {
        (header >> 1) & 0x3f <= 31
    } else {
        matches!(header & 0x1f, 1..=5)
    }
}

/// SHA-256 (first 16 bytes) over the slice NAL units of a frame in 4-byte length-prefixed form; over the
/// whole frame if it has none or is malformed (camera data is never trusted to be well formed).
pub fn picture_hash(data: &[u8], h265: bool) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut rest = data;
    let mut any = false;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else {
            any = false;
            break;
        };
        if nal.first().is_some_and(|&h| is_slice(h, h265)) {
            ctx.update(nal);
            any = true;
        }
        rest = &rest[4 + len..];
    }
    if !any || !rest.is_empty() {
        ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(data);
    }
    let digest = ctx.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn only_slices_count_and_wall_time_disambiguates() {
        let slice = nal(&[0x65, 1, 2, 3]);
        let sei_a = nal(&[0x06, 5, 1]);
        let sei_b = nal(&[0x06, 5, 2]);
        let sps = nal(&[0x67, 9, 9]);
        let a = [sei_a, sps.clone(), slice.clone()].concat();
        let b = [sei_b, slice.clone()].concat();
        assert_eq!(picture_hash(&a, false), picture_hash(&b, false));
        let other = [sps, nal(&[0x41, 1, 2, 4])].concat();
        assert_ne!(picture_hash(&a, false), picture_hash(&other, false));
        let x = FrameId::of(&a, false, 10_000);
        assert!(x.matches(&FrameId::of(&b, false, 10_900)));
        assert!(!x.matches(&FrameId::of(&b, false, 11_001)));
        assert!(!x.matches(&FrameId::of(&other, false, 10_000)));
    }

    #[test]
    fn malformed_frames_hash_whole() {
        let bad = [0u8, 0, 0, 9, 0x65, 1];
        assert_eq!(picture_hash(&bad, false), picture_hash(&bad, false));
        assert_ne!(picture_hash(&bad, false), picture_hash(&[0x65, 1], false));
        // H.265: types 0..=31 are slices (here IDR_W_RADL = 19), 32+ are parameter sets and SEI.
        let hevc = [nal(&[19 << 1, 1, 7, 7]), nal(&[39 << 1, 1, 0])].concat();
        let hevc2 = [nal(&[19 << 1, 1, 7, 7]), nal(&[39 << 1, 1, 5])].concat();
        assert_eq!(picture_hash(&hevc, true), picture_hash(&hevc2, true));
    }
}
