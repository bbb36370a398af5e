//! Live fan-out: turns a stream's frames (from the supervisor's broadcast channel) into a fragmented MP4
//! that a browser's Media Source Extensions or ffmpeg play as it arrives: an init segment, then one
//! `moof`+`mdat` per video frame.
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
            self.sequence = 0;
        }
        if let Some(last) = self.last_ts {
            let d = frame.ts - last;
            if d > 0 && d <= i64::from(u32::MAX) {
                self.last_duration_90k = d as u32;
            }
        }
        self.last_ts = Some(frame.ts);
        self.sequence = self.sequence.wrapping_add(1);
        let decode_time = u64::try_from(frame.ts - self.first_ts).unwrap_or(0);
        let mut fb = FragmentBuilder::new(self.sequence, &[(TRACK_ID, decode_time)]);
        fb.push_sample(
            0,
            SampleInfo {
                duration: self.last_duration_90k,
                size: frame.data.len() as u32,
                is_sync: frame.key,
                composition_offset: 0,
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
}
