//! Live fan-out: turns a stream's frames (from the supervisor's broadcast channel) into a fragmented MP4
//! that a browser's Media Source Extensions or ffmpeg play as it arrives: an init segment, then one
//! `moof`+`mdat` per video frame.
//!
//! Frames come in decode order with presentation times; with B-frames those go back and forth, so
//! each frame gets a decode time of its own (one frame period after the previous one, or its
//! presentation time less the reorder delay seen so far if that is later: a gap stays a gap) and a
//! composition offset (negative for B-frames: `trun` v1) that keeps its presentation time exact.
//!
//! A subscriber starts at a key frame. One that falls behind (the broadcast channel dropped frames for
//! it) skips to the next key frame; the stream's task never waits for a subscriber. Live output is
//! video only (audio is recorded, not yet sent live).

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::frame::{MediaFrame, VideoFrame};
use crate::ingest::VideoTrack;
use store::mp4::{init_segment, FragmentBuilder, Mp4Error, SampleInfo, TrackKind, TrackSpec};

const TRACK_ID: u32 = 1;
/// Duration of a frame until the next one shows the real one (25 fps in 90 kHz).
const DEFAULT_DURATION_90K: u32 = 3600;

/// Builds the fMP4 byte stream of one subscriber.
#[derive(Debug, Default)]
pub struct LiveMuxer {
    track: Option<Arc<VideoTrack>>,
    first_ts: i64,
    last_ts: Option<i64>,
    last_duration_90k: u32,
    /// Decode time of the last frame sent, relative to `first_ts`.
    last_decode: Option<i64>,
    /// Latest presentation time sent, and how far a frame was presented before it (reorder delay).
    max_ts: i64,
    reorder_90k: i64,
    /// Smallest step seen between presentation times: the frame period.
    period_90k: Option<u32>,
    sequence: u32,
    /// Frames were lost: skip to the next key frame (same init segment, decode times continue).
    need_key: bool,
    /// Frames skipped because this subscriber fell behind.
    pub skipped: u64,
}

impl LiveMuxer {
    pub fn new() -> Self {
        LiveMuxer {
            last_duration_90k: DEFAULT_DURATION_90K,
            ..Default::default()
        }
    }

    /// The subscriber missed frames: wait for the next key frame.
    pub fn lost(&mut self, frames: u64) {
        self.skipped += frames;
        self.need_key = true;
    }

    /// Bytes to send for `frame` (an init segment first when starting or when parameters change), or
    /// nothing while waiting for a key frame.
    pub fn push(&mut self, frame: &VideoFrame) -> Result<Vec<Vec<u8>>, Mp4Error> {
        let mut out = Vec::new();
        let same_track = self
            .track
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &frame.track) || **t == *frame.track);
        if (!same_track || self.need_key) && !frame.key {
            self.skipped += 1;
            return Ok(out);
        }
        self.need_key = false;
        if !same_track {
            out.push(init_segment(&[TrackSpec {
                track_id: TRACK_ID,
                kind: TrackKind::Video {
                    width: u16::try_from(frame.track.width).unwrap_or(u16::MAX),
                    height: u16::try_from(frame.track.height).unwrap_or(u16::MAX),
                },
                timescale: frame.track.clock_rate,
                sample_entry: frame.track.sample_entry.clone(),
                presentation_delay: 0,
            }])?);
            self.track = Some(frame.track.clone());
            self.first_ts = frame.ts;
            self.last_ts = None;
            self.last_decode = None;
            self.max_ts = frame.ts;
            self.reorder_90k = 0;
            self.sequence = 0;
        }
        if let Some(last) = self.last_ts {
            let d = frame.ts - last;
            if d > 0 && d <= i64::from(u32::MAX) && self.period_90k.is_none_or(|p| d < i64::from(p))
            {
                self.period_90k = Some(d as u32);
            }
        }
        if let Some(p) = self.period_90k {
            self.last_duration_90k = p;
        }
        self.reorder_90k = self.reorder_90k.max(self.max_ts - frame.ts);
        self.max_ts = self.max_ts.max(frame.ts);
        self.last_ts = Some(frame.ts);
        self.sequence = self.sequence.wrapping_add(1);
        let presentation = frame.ts - self.first_ts;
        let decode = match self.last_decode {
            None => presentation,
            Some(prev) => {
                (prev + i64::from(self.last_duration_90k)).max(presentation - self.reorder_90k)
            }
        };
        self.last_decode = Some(decode);
        let decode_time = u64::try_from(decode).unwrap_or(0);
        let mut fb = FragmentBuilder::new(self.sequence, &[(TRACK_ID, decode_time)]);
        fb.push_sample(
            0,
            SampleInfo {
                duration: self.last_duration_90k,
                size: frame.data.len() as u32,
                is_sync: frame.key,
                composition_offset: i32::try_from(presentation - decode).unwrap_or(0),
            },
            &frame.data,
        );
        out.push(fb.finish());
        Ok(out)
    }
}

/// Reads the next chunks of fMP4 for a subscriber; `None` when the stream is gone.
pub async fn next_chunks(
    rx: &mut broadcast::Receiver<MediaFrame>,
    mux: &mut LiveMuxer,
) -> Option<Result<Vec<Vec<u8>>, Mp4Error>> {
    loop {
        match rx.recv().await {
            Ok(MediaFrame::Video(v)) => {
                let chunks = mux.push(&v);
                if matches!(&chunks, Ok(c) if c.is_empty()) {
                    continue;
                }
                return Some(chunks);
            }
            Ok(MediaFrame::Audio(_)) => continue,
            Err(RecvError::Lagged(n)) => mux.lost(n),
            Err(RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: i64, key: bool, track: &Arc<VideoTrack>) -> VideoFrame {
        VideoFrame::new(
            1000 + i * 3600,
            key,
            bytes::Bytes::from(vec![0, 0, 0, 2, 0x65, i as u8]),
            i,
            false,
            track.clone(),
        )
    }

    #[test]
    fn starts_at_a_key_frame_and_resyncs_after_loss() {
        let track = Arc::new(VideoTrack::synthetic_avc1(64, 48));
        let mut mux = LiveMuxer::new();
        assert!(mux.push(&frame(0, false, &track)).expect("push").is_empty());
        let first = mux.push(&frame(1, true, &track)).expect("push");
        assert_eq!(first.len(), 2, "init segment and a fragment");
        let mut file = first.concat();
        file.extend(mux.push(&frame(2, false, &track)).expect("push").concat());
        mux.lost(3);
        assert!(mux.push(&frame(6, false, &track)).expect("push").is_empty());
        let again = mux.push(&frame(7, true, &track)).expect("push");
        assert_eq!(again.len(), 1, "the same init segment goes on after a loss");
        file.extend(again.concat());
        assert_eq!(mux.skipped, 5);
        let scan = store::mp4::scan(&file).expect("scan");
        assert_eq!(scan.fragments.len(), 3);
        assert_eq!(scan.trailing_bytes, 0);
        assert_eq!(scan.fragments[1].tracks[0].base_decode_time, 3600);
        assert_eq!(scan.fragments[2].tracks[0].base_decode_time, 6 * 3600);
        assert!(scan.fragments[2].tracks[0].first_sample_is_sync);
        let other = Arc::new(VideoTrack::synthetic_avc1(32, 32));
        assert_eq!(
            mux.push(&frame(8, true, &other)).expect("push").len(),
            2,
            "new parameters: new init"
        );
    }

    #[test]
    fn b_frames_get_growing_decode_times_and_exact_presentation_times() {
        let track = Arc::new(VideoTrack::synthetic_avc1(64, 48));
        let mut mux = LiveMuxer::new();
        // I0 P3 B1 B2 P6 B4 B5, then a gap (P9 B7 B8 lost) and P12 B10 B11.
        let order = [0, 3, 1, 2, 6, 4, 5, 12, 10, 11];
        let mut file = Vec::new();
        for (n, &i) in order.iter().enumerate() {
            file.extend(mux.push(&frame(i, n == 0, &track)).expect("push").concat());
        }
        let (scan, samples) = store::mp4::scan_samples(&file).expect("scan");
        assert_eq!(scan.fragments.len(), order.len());
        let decode: Vec<u64> = samples.iter().map(|s| s.decode_time).collect();
        assert!(decode.windows(2).all(|w| w[1] > w[0]), "{decode:?}");
        // Presentation = decode + offset, read back from each trun.
        for (k, f) in scan.fragments.iter().enumerate() {
            let moof = &file[f.offset as usize..];
            let trun = moof.windows(4).position(|w| w == b"trun").expect("trun");
            // size(4) type(4) version/flags(4) count(4) data_offset(4) duration size flags cto.
            let at = trun + 4 + 4 + 4 + 4 + 12;
            let cto = i32::from_be_bytes([moof[at], moof[at + 1], moof[at + 2], moof[at + 3]]);
            let presentation = decode[k] as i64 + i64::from(cto);
            assert_eq!(presentation, order[k] * 3600, "frame {k}: {decode:?}");
        }
        // The gap stays a gap: P12 is decoded no earlier than its presentation less the delay.
        assert!(decode[7] >= 12 * 3600 - 2 * 3600, "{decode:?}");
    }
}
