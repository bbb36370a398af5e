//! Fragmented MP4 (ISO/IEC 14496-12, "ISO BMFF") segment files: the writer the recorder uses and the
//! scanner crash recovery uses.
//!
//! # File layout
//!
//! A segment file is written strictly by appending, each piece with a single `write`:
//!
//! ```text
//! ftyp                      major brand iso6, compatible iso6 iso5 mp41
//! moov
//!   mvhd                    timescale 1000, duration 0 (unknown: the file is still growing)
//!   trak (one per track)    tkhd, mdia(mdhd timescale = RTP clock rate, hdlr vide|soun,
//!                           minf(vmhd|smhd, dinf/dref/url, stbl(stsd(<sample entry from retina>),
//!                           empty stts/stsc/stsz/stco)))
//!   mvex
//!     trex (one per track)  all defaults 0: every fragment spells out its samples in full
//! moof  mdat                one pair per GOP ("fragment"), written as one buffer
//! moof  mdat
//! ...
//! ```
//!
//! Each `moof` holds `mfhd` (sequence number) and one `traf` per track present in the fragment:
//! `tfhd` (flag default-base-is-moof, so every offset is relative to the start of the `moof`),
//! `tfdt` version 1 (64-bit base media decode time in the track's timescale) and `trun` with a data
//! offset and per-sample duration, size, flags and composition offset. The sample data of all tracks
//! follows in the single `mdat`, track after track in `moof` order.
//!
//! Because nothing is ever rewritten, a file cut at any fragment boundary is a complete, playable
//! file; a crash loses at most the fragment being appended. [`scan`] finds where the last complete
//! fragment ends so recovery can truncate there.
//!
//! # Why a hand-written box writer
//!
//! `mp4-atom` (0.17) was considered. It models sample entries as typed structs and refuses to encode
//! an opaque entry (`Codec::Unknown` encodes to `Error::UnknownCodec`), so the complete `avc1`/`hvc1`/
//! `mp4a` box that `retina` builds would have to be decoded into its structs and re-encoded, silently
//! dropping any child box it does not model. It also needs Rust 1.88 (the workspace targets 1.85)
//! and its decoder works on whole boxes, whereas the scanner wants byte offsets and a clean stop at the
//! first damaged or truncated byte. The boxes we emit are few and fixed, so [`boxes`] is a small writer
//! with back-patched sizes and [`scan`] a bounds-checked reader that never allocates in proportion to
//! an untrusted count.

mod audio;
mod boxes;
mod fragment;
mod init;
mod scan;

pub use audio::{g711_sample_entry, opus_sample_entry, G711, OPUS_PRE_SKIP};
pub use fragment::{FragmentBuilder, SampleInfo};
pub use init::{init_segment, TrackKind, TrackSpec};
pub use scan::{
    scan, scan_file, scan_file_headers, scan_samples, Handler, ScanReport, ScannedFragment,
    ScannedSample, ScannedTrack, ScannedTrackRun,
};

/// Errors from building an init segment or scanning a segment file's init.
///
/// Damage in the fragments never yields an error: it ends the valid region instead (see [`scan`]).
#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    /// The data does not start with an `ftyp` box.
    #[error("not an MP4 file: {0}")]
    NotMp4(String),
    /// A required box (e.g. `moov`, `trak`'s `tkhd`) is absent.
    #[error("missing {0} box")]
    MissingBox(&'static str),
    /// A box in the init segment is truncated or its contents are inconsistent.
    #[error("malformed {box_type} box at offset {offset}: {reason}")]
    Malformed {
        box_type: String,
        offset: u64,
        reason: String,
    },
    /// The caller passed values that cannot be written (e.g. no tracks, track id 0).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Reading the file failed.
    #[error("reading segment file: {0}")]
    Io(#[from] std::io::Error),
}

/// Track 1, H.264 at 90 kHz with [`synthetic_avc1_sample_entry`]: the one video track of segments
/// that tests and benchmarks write without a camera.
pub fn synthetic_video_track(width: u16, height: u16) -> TrackSpec {
    TrackSpec {
        track_id: 1,
        kind: TrackKind::Video { width, height },
        timescale: 90_000,
        sample_entry: synthetic_avc1_sample_entry(width, height),
        presentation_delay: 0,
    }
}

/// An `avc1` sample entry with a minimal (not decodable) `avcC`, for tests and benchmarks that write
/// segments without a camera: the writer and the scanner treat sample entries as opaque boxes.
pub fn synthetic_avc1_sample_entry(width: u16, height: u16) -> Vec<u8> {
    const AVCC: &[u8] = &[
        1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xee,
    ];
    let body_len = 8 + 78 + 8 + AVCC.len();
    let mut entry = Vec::with_capacity(body_len);
    entry.extend_from_slice(&(body_len as u32).to_be_bytes());
    entry.extend_from_slice(b"avc1");
    entry.extend_from_slice(&[0; 6]);
    entry.extend_from_slice(&1u16.to_be_bytes());
    entry.extend_from_slice(&[0; 16]);
    entry.extend_from_slice(&width.to_be_bytes());
    entry.extend_from_slice(&height.to_be_bytes());
    entry.extend_from_slice(&[0, 0x48, 0, 0, 0, 0x48, 0, 0, 0, 0, 0, 0, 0, 1]);
    entry.extend_from_slice(&[0; 32]);
    entry.extend_from_slice(&[0, 0x18, 0xff, 0xff]);
    entry.extend_from_slice(&((8 + AVCC.len()) as u32).to_be_bytes());
    entry.extend_from_slice(b"avcC");
    entry.extend_from_slice(AVCC);
    entry
}
