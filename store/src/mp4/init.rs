//! The init segment (`ftyp` + `moov`) at the start of every segment file.
//!
//! Layout written by [`init_segment`], in order:
//!
//! ```text
//! ftyp  major iso6, minor 0, compatible iso6 iso5 mp41
//! moov
//!   mvhd v0          timescale 1000, duration 0, next_track_ID = max id + 1
//!   trak per track
//!     tkhd v0        flags enabled|in_movie, duration 0, width/height 16.16 (video), volume (audio)
//!     edts/elst v0   only if `presentation_delay` > 0: one entry, segment_duration 0 (the whole
//!                    fragmented track), media_time = presentation_delay, rate 1
//!     mdia
//!       mdhd v0      timescale = track timescale, duration 0, language "und"
//!       hdlr         vide | soun
//!       minf
//!         vmhd | smhd
//!         dinf/dref  one self-contained `url ` entry
//!         stbl       stsd(1 entry: the caller's sample entry bytes, verbatim),
//!                    stts, stsc, stsz, stco all empty (samples live in the fragments)
//!   mvex
//!     trex per track default sample description 1, other defaults 0
//! ```
//!
//! Durations are 0 because the file is written while recording; players take the duration from the
//! fragments.

use super::boxes::BoxWriter;
use super::Mp4Error;

/// What a track carries, with the values `tkhd` and the handler need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    Video { width: u16, height: u16 },
    Audio { channels: u16, sample_rate_hz: u32 },
}

/// One track of a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackSpec {
    /// Non-zero and unique within the file; `traf`s refer to it.
    pub track_id: u32,
    pub kind: TrackKind,
    /// Ticks per second of this track's timestamps (the RTP clock rate: 90000 for video, the sample
    /// rate for AAC).
    pub timescale: u32,
    /// A complete sample entry box (`avc1`/`hvc1` with `avcC`/`hvcC`, `mp4a` with `esds`, ...),
    /// copied verbatim into `stsd`; e.g. `retina`'s `mp4_sample_entry().build()`.
    pub sample_entry: Vec<u8>,
    /// Composition time of the first presented sample, in the track's timescale: with B-frames the
    /// decode timeline starts this much before the presentation (every composition offset stays
    /// non-negative). Written as an edit list so that presentation starts at 0; 0 writes none.
    pub presentation_delay: u32,
}

/// Movie timescale for `mvhd`; only its (zero) duration is expressed in it.
const MOVIE_TIMESCALE: u32 = 1000;
/// ISO 639-2 "und" packed as three 5-bit letters (each minus 0x60).
const LANGUAGE_UND: u16 =
    ((b'u' - 0x60) as u16) << 10 | ((b'n' - 0x60) as u16) << 5 | (b'd' - 0x60) as u16;

fn validate(tracks: &[TrackSpec]) -> Result<(), Mp4Error> {
    if tracks.is_empty() {
        return Err(Mp4Error::InvalidInput("no tracks".into()));
    }
    for (i, t) in tracks.iter().enumerate() {
        if t.track_id == 0 {
            return Err(Mp4Error::InvalidInput("track_id 0 is reserved".into()));
        }
        if tracks[..i].iter().any(|o| o.track_id == t.track_id) {
            return Err(Mp4Error::InvalidInput(format!(
                "duplicate track_id {}",
                t.track_id
            )));
        }
        if t.timescale == 0 {
            return Err(Mp4Error::InvalidInput(format!(
                "track {}: timescale 0",
                t.track_id
            )));
        }
        let e = &t.sample_entry;
        let declared_len = e
            .get(..4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
        if e.len() < 8 || declared_len != Some(e.len()) {
            return Err(Mp4Error::InvalidInput(format!(
                "track {}: sample entry is not a single box ({} bytes, size field {:?})",
                t.track_id,
                e.len(),
                declared_len
            )));
        }
    }
    Ok(())
}

/// Builds `ftyp` + `moov` (with `mvex`) for `tracks`, in the given order.
pub fn init_segment(tracks: &[TrackSpec]) -> Result<Vec<u8>, Mp4Error> {
    validate(tracks)?;
    let entries_bytes: usize = tracks.iter().map(|t| t.sample_entry.len()).sum();
    let mut w = BoxWriter::with_capacity(1024 + entries_bytes);

    let ftyp = w.start(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"iso5", b"mp41"] {
        w.bytes(brand);
    }
    w.end(ftyp);

    let moov = w.start(b"moov");
    write_mvhd(&mut w, tracks);
    for t in tracks {
        write_trak(&mut w, t);
    }
    let mvex = w.start(b"mvex");
    for t in tracks {
        let trex = w.start_full(b"trex", 0, 0);
        w.u32(t.track_id);
        w.u32(1); // default_sample_description_index
        w.u32(0); // default_sample_duration
        w.u32(0); // default_sample_size
        w.u32(0); // default_sample_flags
        w.end(trex);
    }
    w.end(mvex);
    w.end(moov);
    Ok(w.into_inner())
}

fn write_mvhd(w: &mut BoxWriter, tracks: &[TrackSpec]) {
    let next_track_id = tracks
        .iter()
        .map(|t| t.track_id)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let b = w.start_full(b"mvhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(MOVIE_TIMESCALE);
    w.u32(0); // duration
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(2 + 8); // reserved
    w.unity_matrix();
    w.zeros(6 * 4); // pre_defined
    w.u32(next_track_id);
    w.end(b);
}

fn write_trak(w: &mut BoxWriter, t: &TrackSpec) {
    let trak = w.start(b"trak");

    // Flags 0x3: track_enabled | track_in_movie.
    let tkhd = w.start_full(b"tkhd", 0, 0x3);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(t.track_id);
    w.u32(0); // reserved
    w.u32(0); // duration
    w.zeros(8); // reserved
    w.u16(0); // layer
    w.u16(0); // alternate_group
    let (volume, width, height) = match t.kind {
        TrackKind::Video { width, height } => (0, width, height),
        TrackKind::Audio { .. } => (0x0100, 0, 0),
    };
    w.u16(volume);
    w.u16(0); // reserved
    w.unity_matrix();
    w.u32(u32::from(width) << 16);
    w.u32(u32::from(height) << 16);
    w.end(tkhd);

    if t.presentation_delay > 0 {
        let edts = w.start(b"edts");
        let elst = w.start_full(b"elst", 0, 0);
        w.u32(1); // entry_count
        w.u32(0); // segment_duration: 0 = the whole (fragmented) track
        w.i32(i32::try_from(t.presentation_delay).unwrap_or(i32::MAX)); // media_time
        w.u16(1); // media_rate_integer
        w.u16(0); // media_rate_fraction
        w.end(elst);
        w.end(edts);
    }

    let mdia = w.start(b"mdia");
    let mdhd = w.start_full(b"mdhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(t.timescale);
    w.u32(0); // duration
    w.u16(LANGUAGE_UND);
    w.u16(0); // pre_defined
    w.end(mdhd);

    let (handler, name): (&[u8; 4], &[u8]) = match t.kind {
        TrackKind::Video { .. } => (b"vide", b"VideoHandler\0"),
        TrackKind::Audio { .. } => (b"soun", b"SoundHandler\0"),
    };
    let hdlr = w.start_full(b"hdlr", 0, 0);
    w.u32(0); // pre_defined
    w.bytes(handler);
    w.zeros(3 * 4); // reserved
    w.bytes(name);
    w.end(hdlr);

    let minf = w.start(b"minf");
    match t.kind {
        TrackKind::Video { .. } => {
            let vmhd = w.start_full(b"vmhd", 0, 1);
            w.u16(0); // graphicsmode: copy
            w.zeros(3 * 2); // opcolor
            w.end(vmhd);
        }
        TrackKind::Audio { .. } => {
            let smhd = w.start_full(b"smhd", 0, 0);
            w.u16(0); // balance
            w.u16(0); // reserved
            w.end(smhd);
        }
    }
    let dinf = w.start(b"dinf");
    let dref = w.start_full(b"dref", 0, 0);
    w.u32(1); // entry_count
    let url = w.start_full(b"url ", 0, 1); // flag 1: media is in this file
    w.end(url);
    w.end(dref);
    w.end(dinf);

    let stbl = w.start(b"stbl");
    let stsd = w.start_full(b"stsd", 0, 0);
    w.u32(1); // entry_count
    w.bytes(&t.sample_entry);
    w.end(stsd);
    for empty in [b"stts", b"stsc", b"stco"] {
        let b = w.start_full(empty, 0, 0);
        w.u32(0); // entry_count
        w.end(b);
    }
    let stsz = w.start_full(b"stsz", 0, 0);
    w.u32(0); // sample_size
    w.u32(0); // sample_count
    w.end(stsz);
    w.end(stbl);
    w.end(minf);
    w.end(mdia);
    w.end(trak);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fourcc: &[u8; 4], body_len: usize) -> Vec<u8> {
        let mut e = ((8 + body_len) as u32).to_be_bytes().to_vec();
        e.extend_from_slice(fourcc);
        e.resize(8 + body_len, 0);
        e
    }

    #[test]
    fn rejects_bad_input() {
        let good = TrackSpec {
            track_id: 1,
            kind: TrackKind::Video {
                width: 1,
                height: 1,
            },
            timescale: 90_000,
            sample_entry: entry(b"avc1", 78),
            presentation_delay: 0,
        };
        assert!(init_segment(&[]).is_err());
        assert!(init_segment(&[TrackSpec {
            track_id: 0,
            ..good.clone()
        }])
        .is_err());
        assert!(init_segment(&[good.clone(), good.clone()]).is_err());
        assert!(init_segment(&[TrackSpec {
            timescale: 0,
            ..good.clone()
        }])
        .is_err());
        let mut short = good.clone();
        short.sample_entry.pop();
        assert!(init_segment(&[short]).is_err());
        assert!(init_segment(&[good]).is_ok());
    }

    #[test]
    fn starts_with_ftyp_and_sizes_add_up() {
        let init = init_segment(&[TrackSpec {
            track_id: 1,
            kind: TrackKind::Audio {
                channels: 1,
                sample_rate_hz: 8000,
            },
            timescale: 8000,
            sample_entry: entry(b"mp4a", 28),
            presentation_delay: 0,
        }])
        .expect("valid");
        assert_eq!(&init[4..8], b"ftyp");
        let ftyp_len = u32::from_be_bytes([init[0], init[1], init[2], init[3]]) as usize;
        assert_eq!(&init[ftyp_len + 4..ftyp_len + 8], b"moov");
        let moov_len = u32::from_be_bytes([
            init[ftyp_len],
            init[ftyp_len + 1],
            init[ftyp_len + 2],
            init[ftyp_len + 3],
        ]) as usize;
        assert_eq!(ftyp_len + moov_len, init.len());
    }

    #[test]
    fn edit_list_only_with_a_presentation_delay() {
        let track = |presentation_delay| TrackSpec {
            track_id: 1,
            kind: TrackKind::Video {
                width: 2,
                height: 2,
            },
            timescale: 90_000,
            sample_entry: entry(b"avc1", 78),
            presentation_delay,
        };
        let plain = init_segment(&[track(0)]).expect("valid");
        assert!(!plain.windows(4).any(|w| w == b"edts"));
        let delayed = init_segment(&[track(3600)]).expect("valid");
        let at = delayed
            .windows(4)
            .position(|w| w == b"elst")
            .expect("elst written");
        // version/flags, entry_count 1, segment_duration 0, media_time 3600, rate 1.0.
        assert_eq!(
            &delayed[at + 4..at + 24],
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x0e, 0x10, 0, 1, 0, 0]
        );
        assert_eq!(delayed.len(), plain.len() + 8 + 28);
    }
}
