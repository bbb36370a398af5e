//! Frame identity: which frame of a camera stream is which, across RTSP sessions, nodes and files.
//!
//! Every RTSP session of one camera stream carries the same coded pictures, byte for byte (the slice
//! NAL units), while RTP timestamps, sequence numbers and in-band parameter sets may differ per
//! session. A frame is therefore named by a hash of its slice NAL units together with its approximate
//! wall time (pictures repeat, e.g. a looped clip or a static scene coded identically, so the hash
//! alone is not unique). Two nodes' wall times of the same frame differ by network and clock skew,
//! far less than [`MATCH_TOLERANCE_MS`].
//!
//! The one implementation: the recorder names received frames with it (`nvr::frame`), the arbiter
//! names the last frame of a mirrored segment file with [`last_frame_in_file`], and de-duplication
//! (`crate::timeline`) names every frame of overlapping copies with [`frames_in_file`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mp4::{scan_samples, Handler, Mp4Error, ScannedSample};

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

/// Why the last frame of a segment file could not be named.
#[derive(Debug, thiserror::Error)]
pub enum FrameFileError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Mp4 { path: PathBuf, source: Mp4Error },
}

/// One video frame of a segment file: its identity and where it lies in the file's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFrame {
    pub id: FrameId,
    /// Decode time since the file's first video frame, in 90 kHz units.
    pub offset_90k: u64,
}

/// The video samples of the complete fragments of `data`: (H.265?, timescale, samples).
fn video_samples(
    data: &[u8],
    path: &Path,
) -> Result<Option<(bool, u32, Vec<ScannedSample>)>, FrameFileError> {
    let (report, samples) = scan_samples(data).map_err(|source| FrameFileError::Mp4 {
        path: path.to_owned(),
        source,
    })?;
    let Some(video) = report.tracks.iter().find(|t| t.handler == Handler::Video) else {
        return Ok(None);
    };
    let h265 = matches!(&video.sample_entry_type, b"hvc1" | b"hev1");
    let samples = samples
        .into_iter()
        .filter(|s| s.track_id == video.track_id)
        .collect();
    Ok(Some((h265, video.timescale.max(1), samples)))
}

fn read(path: &Path) -> Result<Vec<u8>, FrameFileError> {
    std::fs::read(path).map_err(|source| FrameFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The id of `sample` of `data`, whose file starts at `start_ms` with the sample decoded at `first`.
fn sample_id(
    data: &[u8],
    sample: &ScannedSample,
    h265: bool,
    timescale: u32,
    first: u64,
    start_ms: i64,
) -> FrameId {
    let start = usize::try_from(sample.offset).unwrap_or(usize::MAX);
    let bytes = start
        .checked_add(sample.size as usize)
        .and_then(|end| data.get(start..end))
        .unwrap_or_default();
    let since_first = i64::try_from(sample.decode_time.saturating_sub(first)).unwrap_or(0);
    let wall_ms = start_ms.saturating_add(since_first.saturating_mul(1000) / i64::from(timescale));
    FrameId::of(bytes, h265, wall_ms)
}

/// Converts a duration in `timescale` units to 90 kHz units.
pub fn to_90k(units: u64, timescale: u32) -> u64 {
    if timescale == 90_000 {
        return units;
    }
    let scaled = u128::from(units) * 90_000 / u128::from(timescale.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// The id of the last video frame in the complete fragments of the segment file at `path` (a growing
/// or mirrored copy may end in a partial fragment, which is ignored), `None` if it holds none.
///
/// Its wall time is the recording node's: the segment's `start_ms` (its first frame's wall time, as in
/// the file name) plus the frame's decode time since the segment's first frame.
pub fn last_frame_in_file(path: &Path, start_ms: i64) -> Result<Option<FrameId>, FrameFileError> {
    let data = read(path)?;
    let Some((h265, timescale, samples)) = video_samples(&data, path)? else {
        return Ok(None);
    };
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok(None);
    };
    Ok(Some(sample_id(
        &data,
        last,
        h265,
        timescale,
        first.decode_time,
        start_ms,
    )))
}

/// Every video frame in the complete fragments of the segment file at `path`, in file order, named
/// as [`last_frame_in_file`] names the last one (used by de-duplication, `crate::timeline`).
pub fn frames_in_file(path: &Path, start_ms: i64) -> Result<Vec<FileFrame>, FrameFileError> {
    let data = read(path)?;
    let Some((h265, timescale, samples)) = video_samples(&data, path)? else {
        return Ok(Vec::new());
    };
    let Some(first) = samples.first().map(|s| s.decode_time) else {
        return Ok(Vec::new());
    };
    Ok(samples
        .iter()
        .map(|s| FileFrame {
            id: sample_id(&data, s, h265, timescale, first, start_ms),
            offset_90k: to_90k(s.decode_time.saturating_sub(first), timescale),
        })
        .collect())
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
