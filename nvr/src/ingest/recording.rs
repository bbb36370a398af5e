//! [`Recording`]: turns the timestamped frames of one session into fMP4 fragments and segments, with no
//! knowledge of RTSP (tests and benchmarks push synthetic frames).

use std::sync::Arc;

use bytes::Bytes;

use super::timing::{fragment_timing, reorder_delay, Next, Timeline};
use super::{IngestError, IngestSettings};
use crate::config::StreamKind;
use store::mp4::{FragmentBuilder, SampleInfo, TrackKind, TrackSpec};
use store::{RunId, SegmentWriter, StorageError, Store, StreamId};

/// Track ids in every segment file.
const VIDEO_TRACK_ID: u32 = 1;
const AUDIO_TRACK_ID: u32 = 2;
/// Frame durations outside (0, this] are camera timestamp errors; the previous duration is used instead.
const MAX_FRAME_DURATION_MS: i64 = 5_000;

/// Camera-independent description of the video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub clock_rate: u32,
    pub sample_entry: Vec<u8>,
}

impl VideoTrack {
    /// An H.264 track with [`store::mp4::synthetic_avc1_sample_entry`], for tests and benchmarks that
    /// push frames without a camera.
    pub fn synthetic_avc1(width: u16, height: u16) -> VideoTrack {
        VideoTrack {
            codec: "avc1.64001f".into(),
            width: u32::from(width),
            height: u32::from(height),
            clock_rate: 90_000,
            sample_entry: store::mp4::synthetic_avc1_sample_entry(width, height),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrack {
    pub codec: String,
    pub channels: u16,
    pub clock_rate: u32,
    pub sample_entry: Vec<u8>,
}

struct PendingFrame {
    ts: i64,
    key: bool,
    data: Bytes,
}

struct PendingAudio {
    ts: i64,
    duration: u32,
    data: Bytes,
}

/// Turns frames of one session into fragments and segments.
///
/// Frames are buffered until the next key frame or until they hold `fragment_max_ms` of media, then written
/// as one fragment (a fragment starts on a key frame only when a key frame closed the previous one). A segment is cut
/// at the first key frame at or after `segment_duration_ms`, or when the video parameters change. Wall
/// times come from the local clock at the first frame plus media time, so consecutive segments of a run
/// meet exactly (`end_ms` of one = `start_ms` of the next).
pub struct Recording {
    store: Arc<Store>,
    stream_id: StreamId,
    camera: String,
    kind: StreamKind,
    settings: IngestSettings,
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// New parameters that take effect with the next segment.
    pending_video: Option<VideoTrack>,
    run: Option<(RunId, i64, i64)>,
    /// (wall ms, video timestamp) of the run's first frame, taken when it arrives.
    anchor: Option<(i64, i64)>,
    /// Added to camera timestamps to keep the timeline continuous across discontinuities.
    ts_offset: i64,
    last_ts: Option<i64>,
    discontinuities: u64,
    segment: Option<OpenSegment>,
    gop: Vec<PendingFrame>,
    gop_audio: Vec<PendingAudio>,
    last_duration: u32,
    /// Reorder delay (ticks) the stream's B-frames have needed so far; a new segment starts its
    /// decode timeline this far before its presentation (see `timing.rs`).
    reorder_delay: i64,
    frames_written: u64,
    bytes_written: u64,
    frames_dropped_before_key: u64,
    segments_sealed: u64,
    /// The next frame may start the recording although it is not a key frame (a takeover that must
    /// continue exactly after another node's last frame).
    start_anywhere: bool,
    /// Wall time to anchor the run at instead of "now" (frames replayed from the shadow ring).
    next_anchor_wall_ms: Option<i64>,
    /// The arbiter's epoch of the promotion being recorded, written with every segment.
    epoch: Option<u64>,
}

struct OpenSegment {
    writer: SegmentWriter,
    /// Presentation time of the segment's first frame (its start).
    first_ts: i64,
    /// Reorder delay of this segment's decode timeline (its edit list).
    delay: i64,
    sequence: u32,
    video_ticks: u64,
    audio_ticks: Option<u64>,
    has_audio: bool,
}

impl Recording {
    pub fn new(
        store: Arc<Store>,
        stream_id: StreamId,
        camera: &str,
        kind: StreamKind,
        settings: IngestSettings,
    ) -> Self {
        Recording {
            store,
            stream_id,
            camera: camera.to_owned(),
            kind,
            settings,
            video: None,
            audio: None,
            pending_video: None,
            run: None,
            anchor: None,
            ts_offset: 0,
            last_ts: None,
            discontinuities: 0,
            segment: None,
            gop: Vec::new(),
            gop_audio: Vec::new(),
            last_duration: 3600,
            reorder_delay: 0,
            frames_written: 0,
            bytes_written: 0,
            frames_dropped_before_key: 0,
            start_anywhere: false,
            next_anchor_wall_ms: None,
            segments_sealed: 0,
            epoch: None,
        }
    }

    /// The arbiter's epoch under which the following segments are written.
    pub fn set_epoch(&mut self, epoch: Option<u64>) {
        self.epoch = epoch;
    }

    /// Lets the next frame start the recording even if it is not a key frame, and anchors the run's
    /// wall time at `wall_ms` (when that frame was received). A takeover continues exactly after the
    /// previous holder's last frame: its first fragment decodes only after that holder's part (same
    /// camera stream, same references) or from the next key frame on.
    pub fn start_at(&mut self, wall_ms: i64, anywhere: bool) {
        self.start_anywhere = anywhere;
        self.next_anchor_wall_ms = Some(wall_ms);
    }

    /// Whether a run is open (frames have been accepted since the last [`Self::finish`]).
    pub fn is_recording(&self) -> bool {
        self.anchor.is_some()
    }

    pub fn has_video_track(&self) -> bool {
        self.video.is_some()
    }

    pub fn has_audio_track(&self) -> bool {
        self.audio.is_some()
    }

    pub fn set_audio_track(&mut self, audio: AudioTrack) {
        self.audio = Some(audio);
    }

    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    pub fn segments_sealed(&self) -> u64 {
        self.segments_sealed
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Relative path of the segment being written.
    pub fn current_segment(&self) -> Option<&str> {
        self.segment.as_ref().map(|s| s.writer.relative_path())
    }

    pub fn video_track(&self) -> Option<&VideoTrack> {
        self.video.as_ref()
    }

    fn clock_rate(&self) -> i64 {
        i64::from(self.video.as_ref().map_or(90_000, |v| v.clock_rate.max(1)))
    }

    /// Wall time (ms UTC) of a video timestamp, from the run's anchor.
    fn wall_ms(&self, ts: i64) -> i64 {
        match self.run {
            Some((_, start_wall_ms, start_ts)) => {
                start_wall_ms
                    + (ts - start_ts)
                        .saturating_mul(1000)
                        .div_euclid(self.clock_rate())
            }
            None => self.store.now_utc_ms(),
        }
    }

    /// Whether [`push_video`](Self::push_video) of this frame may touch the disk (it completes a
    /// fragment, or bridges a timestamp discontinuity, which is logged in the catalog).
    /// Conservative: a `false` is certain, a `true` may write nothing.
    pub fn may_write(&self, raw_ts: i64, key: bool) -> bool {
        let (ts, jump) = self.timeline_ts(raw_ts);
        jump || self.completes_fragment(ts, key)
    }

    /// Whether a frame at `ts` (on the run's timeline) ends the buffered fragment: a key frame, or a
    /// frame `fragment_max_ms` or more after the fragment's first frame (so a fragment never holds more
    /// than `fragment_max_ms` of media, whatever the camera's GOP) that is presented after every
    /// buffered frame (with B-frames, a reference frame: the B-frames before it in presentation
    /// order follow it in decode order and belong to the same fragment).
    fn completes_fragment(&self, ts: i64, key: bool) -> bool {
        self.gop.first().is_some_and(|first| {
            key || ((ts - first.ts).saturating_mul(1000) / self.clock_rate()
                >= self.settings.recording.fragment_max_ms as i64
                && self.gop.iter().all(|f| f.ts < ts))
        })
    }

    /// Adds a video frame. `ts` is in the video clock (90 kHz). `params` are given with the first frame
    /// and whenever they change.
    pub fn push_video(
        &mut self,
        ts: i64,
        key: bool,
        data: impl Into<Bytes>,
        params: Option<VideoTrack>,
    ) -> Result<(), IngestError> {
        let data = data.into();
        if let Some(p) = params {
            if self.video.is_none() {
                self.video = Some(p);
            } else if self.video.as_ref() != Some(&p) {
                self.pending_video = Some(p);
            }
        }
        if self.video.is_none() || (self.gop.is_empty() && !key && !self.start_anywhere) {
            // Nothing can be written before the first key frame with known parameters.
            self.frames_dropped_before_key += 1;
            return Ok(());
        }
        let ts = self.continuous_ts(ts);
        if let Some(last) = self.gop.last() {
            if ts <= last.ts && !key {
                tracing::debug!(camera = %self.camera, ts, last = last.ts, "non-increasing video timestamp");
            }
        }
        if self.completes_fragment(ts, key) {
            self.write_fragment(Some((ts, key)))?;
            if key {
                self.maybe_cut_segment(ts)?;
            }
        }
        if self.anchor.is_none() {
            if self.frames_dropped_before_key > 0 {
                tracing::info!(camera = %self.camera, frames = self.frames_dropped_before_key, "frames before the first key frame dropped");
            }
            let wall_ms = self
                .next_anchor_wall_ms
                .take()
                .unwrap_or_else(|| self.store.now_utc_ms());
            self.anchor = Some((wall_ms, ts));
            self.start_anywhere = false;
        }
        self.gop.push(PendingFrame { ts, key, data });
        Ok(())
    }

    /// Maps a camera timestamp onto the run's continuous media timeline.
    ///
    /// Cameras restart their RTP clock (encoder restart, another client joining a shared pipeline) and
    /// jump it; a jump backwards by more than 1 s or forwards by more than 5 s is a discontinuity: the
    /// timeline continues one frame period after the previous frame and later frames are shifted alike.
    fn continuous_ts(&mut self, raw_ts: i64) -> i64 {
        let (ts, jump) = self.timeline_ts(raw_ts);
        if jump {
            let rate = self.clock_rate();
            let step = raw_ts.saturating_add(self.ts_offset) - self.last_ts.unwrap_or(ts);
            self.ts_offset = ts - raw_ts;
            self.discontinuities += 1;
            let jump_ms = step * 1000 / rate;
            tracing::warn!(camera = %self.camera, jump_ms, "camera timestamp discontinuity; timeline continued");
            self.store.log_event(
                Some(self.stream_id),
                "timestamp_discontinuity",
                &format!(
                    "{}: camera timestamps jumped {jump_ms} ms; timeline continued",
                    self.camera
                ),
            );
        }
        self.last_ts = Some(ts);
        ts
    }

    /// Where `raw_ts` lands on the run's timeline, and whether it is a discontinuity there (see
    /// [`Self::continuous_ts`]); changes nothing.
    fn timeline_ts(&self, raw_ts: i64) -> (i64, bool) {
        let rate = self.clock_rate();
        let adjusted = raw_ts.saturating_add(self.ts_offset);
        match self.last_ts {
            Some(last) => {
                let step = adjusted - last;
                if step < -rate || step > MAX_FRAME_DURATION_MS * rate / 1000 {
                    (last + i64::from(self.last_duration), true)
                } else {
                    (adjusted, false)
                }
            }
            None => (adjusted, false),
        }
    }

    /// Timestamp discontinuities bridged so far.
    pub fn discontinuities(&self) -> u64 {
        self.discontinuities
    }

    /// Adds an audio frame (AAC, G.711, Opus); `ts` in the audio clock, `duration` in samples.
    pub fn push_audio(&mut self, ts: i64, duration: u32, data: impl Into<Bytes>) {
        let data = data.into();
        if self.audio.is_some() && !self.gop.is_empty() {
            self.gop_audio.push(PendingAudio { ts, duration, data });
        }
    }

    fn maybe_cut_segment(&mut self, key_ts: i64) -> Result<(), IngestError> {
        let Some(seg) = &self.segment else {
            return Ok(());
        };
        let elapsed_ms = (key_ts - seg.first_ts) * 1000 / self.clock_rate();
        if self.pending_video.is_some()
            || elapsed_ms >= self.settings.recording.segment_duration_ms as i64
        {
            self.seal_segment()?;
            if let Some(p) = self.pending_video.take() {
                tracing::info!(camera = %self.camera, codec = %p.codec, width = p.width, height = p.height, "video parameters changed; new segment");
                self.video = Some(p);
            }
        }
        Ok(())
    }

    fn seal_segment(&mut self) -> Result<(), IngestError> {
        if let Some(seg) = self.segment.take() {
            if let Some(sealed) = seg.writer.seal()? {
                self.segments_sealed += 1;
                tracing::info!(path = %sealed.path, frames = sealed.frames, bytes = sealed.size_bytes, "segment sealed");
            }
        }
        Ok(())
    }

    fn open_segment(&mut self, first_ts: i64, delay: i64) -> Result<(), IngestError> {
        let Some(video) = self.video.clone() else {
            return Err(IngestError::BadData("no video parameters".into()));
        };
        if self.run.is_none() {
            let (start_ms, start_ts) = self
                .anchor
                .unwrap_or_else(|| (self.store.now_utc_ms(), first_ts));
            let run =
                self.store
                    .catalog()
                    .insert_run(self.stream_id, self.store.node(), start_ms)?;
            self.run = Some((run, start_ms, start_ts));
        }
        let Some((run_id, _, _)) = self.run else {
            return Err(IngestError::BadData("no run".into()));
        };
        let mut tracks = vec![TrackSpec {
            track_id: VIDEO_TRACK_ID,
            kind: TrackKind::Video {
                width: u16::try_from(video.width).unwrap_or(u16::MAX),
                height: u16::try_from(video.height).unwrap_or(u16::MAX),
            },
            timescale: video.clock_rate,
            sample_entry: video.sample_entry.clone(),
            presentation_delay: u32::try_from(delay).unwrap_or(0),
        }];
        if let Some(a) = &self.audio {
            tracks.push(TrackSpec {
                track_id: AUDIO_TRACK_ID,
                kind: TrackKind::Audio {
                    channels: a.channels,
                    sample_rate_hz: a.clock_rate,
                },
                timescale: a.clock_rate,
                sample_entry: a.sample_entry.clone(),
                presentation_delay: 0,
            });
        }
        let start_ms = self.wall_ms(first_ts);
        let stream = self.kind.as_str();
        let writer = self.store.create_segment(&store::NewSegment {
            stream_id: self.stream_id,
            run_id,
            camera: &self.camera,
            stream,
            start_ms,
            tracks: &tracks,
            video_codec: &video.codec,
            width: video.width,
            height: video.height,
            audio_codec: self.audio.as_ref().map(|a| a.codec.as_str()),
            epoch: self.epoch,
        })?;
        self.segment = Some(OpenSegment {
            writer,
            first_ts,
            delay,
            sequence: 1,
            video_ticks: 0,
            audio_ticks: None,
            has_audio: self.audio.is_some(),
        });
        Ok(())
    }

    /// Writes the buffered frames as one fragment. `next` is the timestamp of the frame after the last
    /// buffered one and whether it is a key frame (it gives the last frame's duration); `None` at the
    /// end of a run.
    fn write_fragment(&mut self, next: Option<(i64, bool)>) -> Result<(), IngestError> {
        if self.gop.is_empty() {
            return Ok(());
        }
        let pts: Vec<i64> = self.gop.iter().map(|f| f.ts).collect();
        self.reorder_delay = self.reorder_delay.max(reorder_delay(&pts));
        if self.segment.is_none() {
            self.open_segment(self.gop[0].ts, self.reorder_delay)?;
        }
        let next = next.map(|(ts, key)| Next {
            ts,
            exact: key || self.reorder_delay == 0,
        });
        let max_ticks = MAX_FRAME_DURATION_MS * self.clock_rate() / 1000;
        let gop = std::mem::take(&mut self.gop);
        let audio_rate = self.audio.as_ref().map(|a| i64::from(a.clock_rate.max(1)));
        let video_rate = self.clock_rate();
        let audio = self.take_fragment_audio(next.map(|n| n.ts), audio_rate);
        let Some(seg) = self.segment.as_mut() else {
            return Ok(());
        };
        // Audio decode time starts where the segment's video starts (both clocks count from PLAY).
        if seg.has_audio && seg.audio_ticks.is_none() {
            if let (Some(first), Some(rate)) = (audio.first(), audio_rate) {
                let offset =
                    first.ts as i128 * video_rate as i128 - seg.first_ts as i128 * rate as i128;
                seg.audio_ticks =
                    Some(u64::try_from((offset / video_rate as i128).max(0)).unwrap_or(0));
            }
        }
        let mut tracks = vec![(VIDEO_TRACK_ID, seg.video_ticks)];
        let audio_index = if seg.has_audio && !audio.is_empty() {
            tracks.push((AUDIO_TRACK_ID, seg.audio_ticks.unwrap_or(0)));
            Some(1)
        } else {
            None
        };
        let mut fb = FragmentBuilder::new(seg.sequence, &tracks);
        let timeline = Timeline {
            origin_ts: seg.first_ts,
            delay: seg.delay,
            start: seg.video_ticks as i64,
            typical: self.last_duration,
            max_duration: max_ticks as u32,
        };
        let (timing, typical) = fragment_timing(&pts, timeline, next);
        self.last_duration = typical;
        let mut ticks = 0u64;
        for (f, t) in gop.iter().zip(timing) {
            ticks += u64::from(t.duration);
            fb.push_sample_info(
                0,
                SampleInfo {
                    duration: t.duration,
                    size: f.data.len() as u32,
                    is_sync: f.key,
                    composition_offset: t.composition_offset,
                },
            );
        }
        let mut audio_ticks = 0u64;
        if let Some(idx) = audio_index {
            for a in &audio {
                audio_ticks += u64::from(a.duration);
                fb.push_sample_info(
                    idx,
                    SampleInfo {
                        duration: a.duration,
                        size: a.data.len() as u32,
                        is_sync: true,
                        composition_offset: 0,
                    },
                );
            }
        }
        // Header, then the samples' own buffers: the media is not copied before the write.
        let header = fb.header();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + gop.len() + audio.len());
        parts.push(&header);
        parts.extend(gop.iter().map(|f| &f.data[..]));
        if audio_index.is_some() {
            parts.extend(audio.iter().map(|a| &a.data[..]));
        }
        let fragment_bytes: usize = parts.iter().map(|p| p.len()).sum();
        seg.video_ticks += ticks;
        if let Some(t) = seg.audio_ticks.as_mut() {
            *t += audio_ticks;
        }
        seg.sequence = seg.sequence.wrapping_add(1);
        let media_duration_ms = (seg.video_ticks as i64) * 1000 / video_rate;
        let end_ts = seg.first_ts + seg.video_ticks as i64;
        let end_ms = match self.run {
            Some((_, w, t0)) => w + (end_ts - t0).saturating_mul(1000).div_euclid(video_rate),
            None => seg.writer.start_ms() + media_duration_ms,
        };
        seg.writer.append_fragment_parts(
            &parts,
            gop.len() as u64,
            end_ms - seg.writer.start_ms(),
        )?;
        self.frames_written += gop.len() as u64;
        self.bytes_written += fragment_bytes as u64;
        Ok(())
    }

    /// The buffered audio that belongs with the fragment ending at video time `end_ts`: frames that
    /// start before it (both clocks count from PLAY). Later frames wait for the next fragment, so a
    /// segment's audio ends with its video (cameras send audio ahead of encoded video). All of it
    /// at the end of a run (`None`).
    fn take_fragment_audio(
        &mut self,
        end_ts: Option<i64>,
        audio_rate: Option<i64>,
    ) -> Vec<PendingAudio> {
        let (Some(end_ts), Some(rate)) = (end_ts, audio_rate) else {
            return std::mem::take(&mut self.gop_audio);
        };
        let video_rate = i128::from(self.clock_rate());
        let split = self
            .gop_audio
            .iter()
            .position(|a| i128::from(a.ts) * video_rate >= i128::from(end_ts) * i128::from(rate))
            .unwrap_or(self.gop_audio.len());
        let later = self.gop_audio.split_off(split);
        std::mem::replace(&mut self.gop_audio, later)
    }

    /// Ends the run: writes buffered frames (nothing received is dropped), seals the segment, closes the run.
    pub fn finish(&mut self, reason: &str) -> Result<(), StorageError> {
        let written = match self.write_fragment(None) {
            Ok(()) => Ok(()),
            Err(IngestError::Storage(e)) => Err(e),
            Err(other) => {
                tracing::error!(error = %other, "could not write the last fragment");
                Ok(())
            }
        };
        let sealed = match self.seal_segment() {
            Ok(()) => Ok(()),
            Err(IngestError::Storage(e)) => Err(e),
            Err(other) => {
                tracing::error!(error = %other, "could not seal the segment");
                Ok(())
            }
        };
        self.anchor = None;
        if let Some((run, _, _)) = self.run.take() {
            let cat = self.store.catalog();
            let end_ms = cat
                .run_last_end_ms(run)?
                .unwrap_or_else(|| self.store.now_utc_ms());
            cat.end_run(run, end_ms, reason)?;
        }
        written.and(sealed)
    }
}
