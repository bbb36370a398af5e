//! One fragment (`moof` + `mdat`) of a segment file, typically one GOP.
//!
//! Layout produced by [`FragmentBuilder::finish`]:
//!
//! ```text
//! moof
//!   mfhd               sequence_number
//!   traf per track (in the order given to `new`)
//!     tfhd             flags 0x020000 default-base-is-moof; track_ID
//!     tfdt v1          base_media_decode_time (u64, track timescale)
//!     trun v0|v1       flags 0x000F01: data_offset + per-sample duration, size, flags,
//!                      composition time offset (v1, signed, only if some offset is negative)
//! mdat                 track 0's samples, then track 1's, ... (32-bit size, or 64-bit largesize
//!                      if the data exceeds 4 GiB)
//! ```
//!
//! `data_offset` of each `trun` is the distance from the first byte of the `moof` to that track's
//! first sample byte in the `mdat`. Sample flags are `0x02000000` (depends on no other sample) for sync
//! samples and `0x01010000` (depends on others, non-sync) otherwise.

use super::boxes::BoxWriter;

/// Timing and size of one sample (video frame or audio frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleInfo {
    /// In the track's timescale.
    pub duration: u32,
    /// Bytes of sample data.
    pub size: u32,
    /// Random access point (IDR/IRAP picture; every audio frame).
    pub is_sync: bool,
    /// Presentation time minus decode time, in the track's timescale.
    pub composition_offset: i32,
}

const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x0001;
const TRUN_SAMPLE_DURATION: u32 = 0x0100;
const TRUN_SAMPLE_SIZE: u32 = 0x0200;
const TRUN_SAMPLE_FLAGS: u32 = 0x0400;
const TRUN_SAMPLE_CTO: u32 = 0x0800;
/// sample_depends_on = 2 (I-frame), is_non_sync_sample = 0.
const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// sample_depends_on = 1, is_non_sync_sample = 1.
const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;

struct TrackRun {
    track_id: u32,
    base_media_decode_time: u64,
    samples: Vec<SampleInfo>,
    /// Sample data copied in by `push_sample` (empty with `push_sample_info`).
    data: Vec<u8>,
    /// Sum of the samples' sizes.
    payload_bytes: usize,
}

/// Builds one moof+mdat. Tracks appear in the moof in the order given.
pub struct FragmentBuilder {
    sequence_number: u32,
    tracks: Vec<TrackRun>,
}

impl FragmentBuilder {
    /// `tracks`: (track_id, base_media_decode_time in that track's timescale) for each track in this
    /// fragment.
    pub fn new(sequence_number: u32, tracks: &[(u32, u64)]) -> Self {
        Self {
            sequence_number,
            tracks: tracks
                .iter()
                .map(|&(track_id, base_media_decode_time)| TrackRun {
                    track_id,
                    base_media_decode_time,
                    samples: Vec::new(),
                    data: Vec::new(),
                    payload_bytes: 0,
                })
                .collect(),
        }
    }

    /// Appends one sample's data to `track_index`'s run; `sample.size` must equal `data.len()`.
    ///
    /// The size written to the file is always `data.len()` (a mismatch is caught by a debug
    /// assertion), so the `trun` and the `mdat` cannot disagree.
    ///
    /// # Panics
    ///
    /// If `track_index` is not an index into the `tracks` given to [`Self::new`], or `data` is 4 GiB
    /// or larger.
    pub fn push_sample(&mut self, track_index: usize, sample: SampleInfo, data: &[u8]) {
        debug_assert_eq!(sample.size as usize, data.len(), "SampleInfo::size");
        let size = u32::try_from(data.len()).expect("sample below 4 GiB");
        let run = &mut self.tracks[track_index];
        run.samples.push(SampleInfo { size, ..sample });
        run.data.extend_from_slice(data);
        run.payload_bytes += data.len();
    }

    /// Records one sample of `track_index` without its data: the caller writes [`Self::header`]
    /// followed by the sample data itself, track by track in the order of `new`'s `tracks`, each
    /// track's samples in the order pushed (no copy of the media). `sample.size` is the data's size.
    /// Do not mix with [`Self::push_sample`] in one fragment.
    pub fn push_sample_info(&mut self, track_index: usize, sample: SampleInfo) {
        let run = &mut self.tracks[track_index];
        run.samples.push(sample);
        run.payload_bytes += sample.size as usize;
    }

    /// Samples pushed so far, over all tracks.
    pub fn sample_count(&self) -> usize {
        self.tracks.iter().map(|t| t.samples.len()).sum()
    }

    /// Sample data bytes pushed so far, over all tracks (the `mdat` payload).
    pub fn data_bytes(&self) -> usize {
        self.tracks.iter().map(|t| t.payload_bytes).sum()
    }

    /// moof (mfhd, traf per track: tfhd with default-base-is-moof, tfdt v1, trun with data offset,
    /// per-sample duration, size, flags, composition offsets) + mdat, as one buffer ready for a single
    /// append.
    ///
    /// # Panics
    ///
    /// If a track's data would start 2 GiB or more after the `moof` (the `trun` data offset is a signed
    /// 32-bit value); fragments are meant to hold one GOP.
    pub fn finish(self) -> Vec<u8> {
        let mut out = self.header_with_capacity(self.data_bytes());
        for t in &self.tracks {
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// The `moof` and the `mdat` header: everything of the fragment but the sample data, which
    /// follows it in the file (see [`Self::push_sample_info`]).
    ///
    /// # Panics
    ///
    /// As [`Self::finish`].
    pub fn header(&self) -> Vec<u8> {
        self.header_with_capacity(0)
    }

    fn header_with_capacity(&self, extra_bytes: usize) -> Vec<u8> {
        let data_bytes = self.data_bytes();
        let moof_estimate_bytes = 8 + 16 + self.tracks.len() * 64 + self.sample_count() * 16;
        let mut w = BoxWriter::with_capacity(moof_estimate_bytes + 16 + extra_bytes);

        let moof = w.start(b"moof");
        let mfhd = w.start_full(b"mfhd", 0, 0);
        w.u32(self.sequence_number);
        w.end(mfhd);
        let mut data_offset_fields = Vec::with_capacity(self.tracks.len());
        for t in &self.tracks {
            let traf = w.start(b"traf");
            let tfhd = w.start_full(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
            w.u32(t.track_id);
            w.end(tfhd);
            let tfdt = w.start_full(b"tfdt", 1, 0);
            w.u64(t.base_media_decode_time);
            w.end(tfdt);
            let version = u8::from(t.samples.iter().any(|s| s.composition_offset < 0));
            let trun = w.start_full(
                b"trun",
                version,
                TRUN_DATA_OFFSET
                    | TRUN_SAMPLE_DURATION
                    | TRUN_SAMPLE_SIZE
                    | TRUN_SAMPLE_FLAGS
                    | TRUN_SAMPLE_CTO,
            );
            w.u32(u32::try_from(t.samples.len()).expect("sample count below 2^32"));
            data_offset_fields.push(w.len());
            w.i32(0); // data_offset, patched below
            for s in &t.samples {
                w.u32(s.duration);
                w.u32(s.size);
                w.u32(if s.is_sync {
                    SAMPLE_FLAGS_SYNC
                } else {
                    SAMPLE_FLAGS_NON_SYNC
                });
                w.i32(s.composition_offset); // v0 reads it as u32; only used when all are >= 0
            }
            w.end(trun);
            w.end(traf);
        }
        w.end(moof);
        let moof_bytes = w.len();

        let mdat_header_bytes = if data_bytes + 8 <= u32::MAX as usize {
            8
        } else {
            16
        };
        let mut offset = moof_bytes + mdat_header_bytes;
        for (t, at) in self.tracks.iter().zip(data_offset_fields) {
            let v = i32::try_from(offset).expect("track data starts below 2 GiB into the fragment");
            w.patch_i32(at, v);
            offset += t.payload_bytes;
        }

        if mdat_header_bytes == 8 {
            w.u32((8 + data_bytes) as u32);
            w.bytes(b"mdat");
        } else {
            w.u32(1);
            w.bytes(b"mdat");
            w.u64(16 + data_bytes as u64);
        }
        w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_data_offsets() {
        let mut b = FragmentBuilder::new(7, &[(1, 1000), (2, 50)]);
        let s = |size, is_sync| SampleInfo {
            duration: 10,
            size,
            is_sync,
            composition_offset: 0,
        };
        b.push_sample(0, s(3, true), b"abc");
        b.push_sample(1, s(2, true), b"xy");
        b.push_sample(0, s(1, false), b"d");
        assert_eq!(b.sample_count(), 3);
        assert_eq!(b.data_bytes(), 6);
        let out = b.finish();
        let moof_len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(&out[4..8], b"moof");
        // 8 moof + 16 mfhd + traf(8 + 16 tfhd + 20 tfdt + trun(20 + 16 n)) for n = 2 and n = 1.
        assert_eq!(
            moof_len,
            8 + 16 + (8 + 16 + 20 + 20 + 32) + (8 + 16 + 20 + 20 + 16)
        );
        assert_eq!(&out[moof_len + 4..moof_len + 8], b"mdat");
        assert_eq!(&out[moof_len + 8..], b"abcdxy");
        // First trun's data_offset: 8 moof + 16 mfhd + 8 traf + 16 tfhd + 20 tfdt + 16 into trun.
        let at = 8 + 16 + 8 + 16 + 20 + 16;
        let off = i32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
        assert_eq!(off, moof_len + 8);
    }

    #[test]
    fn header_plus_data_equals_finish() {
        let s = |size, is_sync| SampleInfo {
            duration: 10,
            size,
            is_sync,
            composition_offset: 0,
        };
        let mut copied = FragmentBuilder::new(3, &[(1, 5), (2, 9)]);
        let mut by_info = FragmentBuilder::new(3, &[(1, 5), (2, 9)]);
        for (track, data, sync) in [(0, &b"abc"[..], true), (1, b"xy", true), (0, b"d", false)] {
            copied.push_sample(track, s(data.len() as u32, sync), data);
            by_info.push_sample_info(track, s(data.len() as u32, sync));
        }
        assert_eq!(by_info.data_bytes(), 6);
        let mut out = by_info.header();
        out.extend_from_slice(b"abcdxy");
        assert_eq!(out, copied.finish());
    }

    #[test]
    fn negative_composition_offset_uses_trun_v1() {
        let mut b = FragmentBuilder::new(1, &[(1, 0)]);
        b.push_sample(
            0,
            SampleInfo {
                duration: 1,
                size: 1,
                is_sync: true,
                composition_offset: -3,
            },
            b"z",
        );
        let out = b.finish();
        let trun_at = 8 + 16 + 8 + 16 + 20;
        assert_eq!(&out[trun_at + 4..trun_at + 8], b"trun");
        assert_eq!(out[trun_at + 8], 1);
    }
}
