//! [`StreamTask`]: one stream's task. It owns the stream's [`Mode`], its RTSP session, its shadow ring
//! and its [`Recording`], and obeys [`Command`]s between frames. Nothing outside reaches into it: the
//! supervisor sends commands over a bounded channel and reads the shared status, live subscribers
//! read a broadcast channel that never makes the task wait.
//!
//! Modes: `off` (no session unless live subscribers want one), `shadow` (session open, the last seconds
//! in the ring, nothing written), `record`. Promotion (shadow → record) writes from the ring starting
//! exactly after a named frame; release (record → shadow/off) stops at the next key frame and names it,
//! so that another node can continue there without a gap or a duplicate (make-before-break).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::codec::{CodecItem, ParametersRef};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::command::Reply;
use super::loss::{event_message, LossTracker, Verdict};
use super::ring::ShadowRing;
use super::session::{audio_track, blocking, connect, video_track, Connected};
use super::{
    update, AudioTrack, Command, CommandError, IngestError, IngestSettings, Mode, PromoteReport,
    Recording, ReleaseReport, SharedStatus, StreamSpec, StreamState, VideoTrack, Writer,
};
use crate::frame::{AudioFrame, FrameId, MediaFrame, VideoFrame, MATCH_TOLERANCE_MS};
use base::job::{random_jitter_unit, Backoff};
use store::{Store, StreamId};

/// Commands waiting for a stream's task; more are refused as busy (never waited for).
pub const COMMAND_QUEUE: usize = 16;
/// Frames a live subscriber may fall behind before it skips to the next key frame. The channel keeps
/// the last this-many frames sent (only while subscribers exist), so it is kept small.
pub const LIVE_QUEUE: usize = 64;
/// How long a promotion waits for a requested frame that this node has not received yet.
const PROMOTE_WAIT: Duration = Duration::from_secs(3);

/// The ends of a stream task's channels that others hold.
#[derive(Debug, Clone)]
pub struct StreamChannels {
    pub commands: mpsc::Sender<Command>,
    pub live: broadcast::Sender<MediaFrame>,
}

/// How a session (or the wait for one) ended.
enum End {
    /// Leave the task.
    Exit,
    /// No session is wanted any more (mode off, no live subscriber).
    Idle,
}

/// What the loop does after a command.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    EndSession,
    Exit,
}

/// A video frame that completes a fragment, waiting to be handed to the writer pool with the recording.
struct FragmentWrite {
    frame: Arc<VideoFrame>,
    params: Option<VideoTrack>,
}

struct PendingPromote {
    after: FrameId,
    deadline: Instant,
    reply: Reply<PromoteReport>,
}

/// One stream's task; see the module documentation.
pub struct StreamTask {
    store: Arc<Store>,
    spec: StreamSpec,
    label: String,
    settings: IngestSettings,
    status: SharedStatus,
    commands: mpsc::Receiver<Command>,
    live: broadcast::Sender<MediaFrame>,
    mode: Mode,
    stream_id: StreamId,
    ring: ShadowRing,
    rec: Option<Recording>,
    /// The pool that writes fragments (see `writer.rs`).
    writer: Writer,
    /// Set by a frame that completes a fragment; written (awaited) before the next item is read.
    fragment_write: Option<FragmentWrite>,
    h265: bool,
    video_track: Option<Arc<VideoTrack>>,
    audio_track: Option<Arc<AudioTrack>>,
    /// The track last handed to the recording (parameters are passed only when they change).
    pushed_track: Option<Arc<VideoTrack>>,
    last_video: Option<Arc<VideoFrame>>,
    pending_promote: Option<PendingPromote>,
    /// A promotion answered once its first frame is written, with the session timestamp (90 kHz)
    /// of the frame it continues after, if that frame was received here.
    promote_reply: Option<(Reply<PromoteReport>, PromoteReport, Option<i64>)>,
    /// The `takeover` event of an arbiter's promotion, logged with the gap once it is answered.
    takeover_note: Option<String>,
    /// The arbiter's epoch of the last promotion (recorded with every segment of this holding).
    epoch: Option<u64>,
    pending_release: Option<(Mode, Reply<ReleaseReport>)>,
    window_frames: u64,
    window_bytes: u64,
    window_start: Instant,
    received: u64,
    loss: LossTracker,
}

impl StreamTask {
    /// A task for `spec` starting in `mode`, and the channel ends for the supervisor.
    pub fn new(
        store: Arc<Store>,
        stream_id: StreamId,
        spec: StreamSpec,
        settings: IngestSettings,
        status: SharedStatus,
        mode: Mode,
        writer: Writer,
    ) -> (StreamTask, StreamChannels) {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (live_tx, _) = broadcast::channel(LIVE_QUEUE);
        update(&status, |s| s.mode = mode);
        let task = StreamTask {
            label: format!("{}/{}", spec.camera, spec.kind.as_str()),
            store,
            spec,
            ring: ShadowRing::new(settings.ring()),
            settings,
            status,
            commands: cmd_rx,
            live: live_tx.clone(),
            mode,
            stream_id,
            rec: None,
            writer,
            fragment_write: None,
            h265: false,
            video_track: None,
            audio_track: None,
            pushed_track: None,
            last_video: None,
            pending_promote: None,
            promote_reply: None,
            takeover_note: None,
            epoch: None,
            pending_release: None,
            window_frames: 0,
            window_bytes: 0,
            window_start: Instant::now(),
            received: 0,
            loss: LossTracker::default(),
        };
        let channels = StreamChannels {
            commands: cmd_tx,
            live: live_tx,
        };
        (task, channels)
    }

    fn wants_session(&self) -> bool {
        self.mode != Mode::Off || self.live.receiver_count() > 0
    }

    fn set_state(&self, state: StreamState) {
        let mode = self.mode;
        let now_ms = self.store.now_utc_ms();
        update(&self.status, |s| {
            s.state = state;
            s.mode = mode;
            s.alive_ms = now_ms;
        });
    }

    fn connected_state(&self) -> StreamState {
        match self.mode {
            Mode::Record => StreamState::Recording,
            Mode::Shadow => StreamState::Shadowing,
            Mode::Off => StreamState::Live,
        }
    }

    /// Runs until [`Command::Exit`] (or every sender is gone).
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(
            self.settings.ingest.backoff_initial_ms,
            self.settings.ingest.backoff_max_ms,
        );
        loop {
            if !self.wants_session() {
                self.set_state(StreamState::Idle);
                let Some(cmd) = self.commands.recv().await else {
                    break;
                };
                if self.handle_idle(cmd) == Flow::Exit {
                    break;
                }
                continue;
            }
            self.set_state(StreamState::Connecting);
            update(&self.status, |s| s.next_retry_ms = None);
            let mut delivered = false;
            let err = match self.session(&mut delivered).await {
                Ok(End::Exit) => break,
                Ok(End::Idle) => continue,
                Err(e) => e,
            };
            if delivered {
                backoff.reset();
            }
            let delay_ms = match err {
                IngestError::Auth(_) => backoff.capped_delay_ms(random_jitter_unit()),
                _ => backoff.next_delay_ms(random_jitter_unit()),
            };
            let message = err.to_string();
            tracing::warn!(stream = %self.label, error = %message, retry_in_ms = delay_ms, "stream session ended");
            self.store.log_event(
                Some(self.stream_id),
                "stream_error",
                &format!("{}: {message}; retry in {delay_ms} ms", self.label),
            );
            let now_ms = self.store.now_utc_ms();
            update(&self.status, |s| {
                s.state = StreamState::Backoff;
                s.reconnects += 1;
                s.last_error = Some(message);
                s.last_error_ms = Some(now_ms);
                s.next_retry_ms = Some(delay_ms);
            });
            if let End::Exit = self.wait_backoff(delay_ms).await {
                break;
            }
        }
        self.finish_recording("shutdown");
        self.set_state(StreamState::Stopped);
        update(&self.status, |s| s.next_retry_ms = None);
    }

    /// Waits `delay_ms` before reconnecting, obeying commands meanwhile.
    async fn wait_backoff(&mut self, delay_ms: u64) -> End {
        let until = Instant::now() + Duration::from_millis(delay_ms);
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return End::Idle,
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return End::Exit };
                    if self.handle_idle(cmd) == Flow::Exit {
                        return End::Exit;
                    }
                    if !self.wants_session() {
                        return End::Idle;
                    }
                }
                _ = alive.tick() => {
                    let now_ms = self.store.now_utc_ms();
                    update(&self.status, |s| s.alive_ms = now_ms);
                }
            }
        }
    }

    /// A command while no session is open.
    fn handle_idle(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::SetMode(m, reply) => {
                if self.mode == Mode::Record && m != Mode::Record {
                    self.finish_recording("stopped");
                }
                self.mode = m;
                self.set_state(StreamState::Idle);
                let _ = reply.send(Ok(()));
            }
            Command::Promote {
                reply,
                epoch,
                reason,
                ..
            } => {
                if self.mode == Mode::Record {
                    let _ = reply.send(Err(self.wrong_mode("already recording")));
                } else {
                    // Cold: the session opens now and records from its first key frame.
                    self.mode = Mode::Record;
                    self.note_takeover(epoch, reason, None);
                    self.send_promote(
                        reply,
                        PromoteReport {
                            first_frame: None,
                            from_ring: 0,
                            gap_ms: None,
                            gap_90k: None,
                            starts_mid_gop: false,
                        },
                    );
                }
            }
            Command::Release { reply, .. } => {
                let e = if self.mode == Mode::Record {
                    CommandError::NotConnected(self.label.clone())
                } else {
                    self.wrong_mode("not recording")
                };
                let _ = reply.send(Err(e));
            }
            Command::Wake => {}
            Command::Exit => return Flow::Exit,
        }
        Flow::Continue
    }

    fn wrong_mode(&self, what: &'static str) -> CommandError {
        CommandError::WrongMode {
            stream: self.label.clone(),
            mode: self.mode.as_str(),
            what,
        }
    }

    /// One RTSP session: connect, then frames and commands until it fails or is no longer wanted.
    async fn session(&mut self, delivered: &mut bool) -> Result<End, IngestError> {
        let spec = self.spec.clone();
        let connecting = connect(&spec, self.settings);
        tokio::pin!(connecting);
        // The loop stays alive for the watchdog while a slow camera answers.
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        let mut c: Connected = loop {
            tokio::select! {
                biased;
                _ = alive.tick() => {
                    let now_ms = self.store.now_utc_ms();
                    update(&self.status, |s| s.alive_ms = now_ms);
                }
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return Ok(End::Exit) };
                    if self.handle_idle(cmd) == Flow::Exit {
                        return Ok(End::Exit);
                    }
                    if !self.wants_session() {
                        return Ok(End::Idle);
                    }
                }
                c = &mut connecting => break c?,
            }
        };
        self.h265 = c.h265;
        self.loss.session_started();
        // Parameters are read anew from each session.
        self.video_track = None;
        self.audio_track = None;
        let note = c.audio_note.clone();
        let (transport, udp_buffer) = (c.transport, c.udp_recv_buffer_bytes);
        update(&self.status, |s| {
            s.connects += 1;
            s.audio = note;
            s.transport = Some(transport.to_owned());
            s.udp_recv_buffer_bytes = udp_buffer;
        });
        self.set_state(self.connected_state());
        tracing::info!(stream = %self.label, mode = self.mode.as_str(), audio = ?c.audio_note, "stream connected");
        let result = self.frames(&mut c, delivered).await;
        let reason = match &result {
            Ok(_) => "shutdown",
            Err(IngestError::Storage(_)) => "storage error",
            Err(_) => "camera error",
        };
        self.finish_recording(reason);
        self.ring.clear();
        if let Some(p) = self.pending_promote.take() {
            let _ = p
                .reply
                .send(Err(CommandError::NotConnected(self.label.clone())));
        }
        if let Some((_, reply)) = self.pending_release.take() {
            let _ = reply.send(Err(CommandError::NotConnected(self.label.clone())));
        }
        result
    }

    async fn frames(
        &mut self,
        c: &mut Connected,
        delivered: &mut bool,
    ) -> Result<End, IngestError> {
        let frame_timeout = Duration::from_millis(self.settings.ingest.frame_timeout_ms);
        // The no-frame watchdog: one timer, re-armed only when it fires early (frames only stamp
        // `last_frame`, so the per-frame path touches no timer).
        let mut last_frame = Instant::now();
        let watchdog = tokio::time::sleep(frame_timeout);
        tokio::pin!(watchdog);
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.settings.recording.flush_interval_ms.clamp(50, 1000),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published = 0u64;
        loop {
            tokio::select! {
                biased;
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return Ok(End::Exit) };
                    match self.handle_live(cmd)? {
                        Flow::Continue => {}
                        Flow::EndSession => return Ok(End::Idle),
                        Flow::Exit => return Ok(End::Exit),
                    }
                }
                _ = &mut watchdog => {
                    let due = last_frame + frame_timeout;
                    if Instant::now() >= due {
                        return Err(IngestError::NoFrames(self.settings.ingest.frame_timeout_ms));
                    }
                    watchdog.as_mut().reset(due);
                }
                _ = tick.tick() => {
                    let last_ms = self.store.now_utc_ms() - last_frame.elapsed().as_millis() as i64;
                    self.publish(Some(last_ms), true);
                    if self.pending_promote.as_ref().is_some_and(|p| Instant::now() >= p.deadline) {
                        self.promote_fallback()?;
                    }
                    if self.mode == Mode::Off && self.live.receiver_count() == 0 {
                        return Ok(End::Idle);
                    }
                }
                item = c.demuxed.next() => {
                    let item = match item {
                        None => return Err(IngestError::Ended),
                        Some(Err(e)) => {
                            if self.loss.packet_error() {
                                tracing::debug!(stream = %self.label, error = %e, "bad packet; waiting for the next key frame");
                                continue;
                            }
                            return Err(IngestError::rtsp("stream", e));
                        }
                        Some(Ok(item)) => item,
                    };
                    if self.on_item(c, item)? {
                        last_frame = Instant::now();
                    }
                    if let Some(w) = self.fragment_write.take() {
                        self.write_fragment(w).await?;
                    }
                    let written = self.frames_written();
                    *delivered |= written > 0 || self.mode != Mode::Record;
                    if written != published {
                        published = written;
                        self.publish(Some(self.store.now_utc_ms()), false);
                    }
                }
            }
        }
    }

    /// Handles one item of the session: a video or (recorded) audio frame. Returns whether it was a
    /// video frame (the no-frame watchdog counts those).
    fn on_item(&mut self, c: &Connected, item: CodecItem) -> Result<bool, IngestError> {
        match item {
            CodecItem::VideoFrame(frame) => {
                if frame.has_new_parameters() || self.video_track.is_none() {
                    if let Some(ParametersRef::Video(v)) =
                        c.demuxed.streams()[c.video_i].parameters()
                    {
                        self.video_track = Some(Arc::new(video_track(v)?));
                    }
                }
                let Some(track) = self.video_track.clone() else {
                    return Ok(true);
                };
                let ts = frame.timestamp().elapsed();
                let key = frame.is_random_access_point();
                if self.loss.video_frame(frame.loss(), key) == Verdict::Skip {
                    self.received += 1;
                    return Ok(true);
                }
                let data = bytes::Bytes::from(frame.into_data());
                let wall_ms = self.store.now_utc_ms();
                let frame = VideoFrame::new(ts, key, data, wall_ms, self.h265, track);
                self.on_video(Arc::new(frame))?;
                Ok(true)
            }
            CodecItem::AudioFrame(frame) if Some(frame.stream_id()) == c.audio_i => {
                self.loss.audio_frame(frame.loss());
                if self.audio_track.is_none() {
                    self.audio_track =
                        audio_track(&c.demuxed.streams()[frame.stream_id()])?.map(Arc::new);
                }
                if let Some(track) = self.audio_track.clone() {
                    self.on_audio(Arc::new(AudioFrame {
                        ts: frame.timestamp().elapsed(),
                        duration: frame.frame_length().get(),
                        data: bytes::Bytes::copy_from_slice(frame.data()),
                        track,
                    }));
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn frames_written(&self) -> u64 {
        self.rec.as_ref().map_or(0, Recording::frames_written)
    }

    /// A command while a session is open.
    fn handle_live(&mut self, cmd: Command) -> Result<Flow, IngestError> {
        match cmd {
            Command::SetMode(m, reply) => {
                let old = self.mode;
                if old == Mode::Record && m != Mode::Record {
                    self.finish_recording("stopped");
                }
                if m == Mode::Record && old != Mode::Record {
                    // Start at the ring's newest key frame (pre-roll), or at the next key frame.
                    let start = self.ring.newest_key().unwrap_or(self.ring.len());
                    self.start_recording(start, false, None)?;
                }
                if m != Mode::Shadow {
                    self.ring.clear();
                }
                self.mode = m;
                self.set_state(self.connected_state());
                let _ = reply.send(Ok(()));
                if m == Mode::Off && self.live.receiver_count() == 0 {
                    return Ok(Flow::EndSession);
                }
            }
            Command::Promote {
                after,
                epoch,
                reason,
                reply,
            } => {
                if self.mode == Mode::Record {
                    let _ = reply.send(Err(self.wrong_mode("already recording")));
                } else {
                    self.note_takeover(epoch, reason, after.as_ref());
                    self.promote(after, reply)?;
                }
            }
            Command::Release { to, reply } => {
                if self.mode != Mode::Record {
                    let _ = reply.send(Err(self.wrong_mode("not recording")));
                } else if to == Mode::Record {
                    let _ = reply.send(Err(self.wrong_mode("a release goes to shadow or off")));
                } else if let Some((_, old)) = self.pending_release.replace((to, reply)) {
                    let _ = old.send(Err(self.wrong_mode("a newer release replaced this one")));
                }
            }
            Command::Wake => {
                if self.mode == Mode::Off && self.live.receiver_count() == 0 {
                    return Ok(Flow::EndSession);
                }
            }
            Command::Exit => return Ok(Flow::Exit),
        }
        Ok(Flow::Continue)
    }

    /// Keeps a promotion's epoch for the segments to come and logs an arbiter's takeover as an event.
    fn note_takeover(
        &mut self,
        epoch: Option<u64>,
        reason: Option<String>,
        after: Option<&FrameId>,
    ) {
        self.epoch = epoch;
        if epoch.is_none() && reason.is_none() {
            return;
        }
        let message = format!(
            "{}: promoted with epoch {} after {}{}",
            self.label,
            epoch.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            after.map_or_else(|| "nothing (cold start)".to_owned(), |a| a.to_string()),
            reason.map_or_else(String::new, |r| format!(": {r}"))
        );
        self.takeover_note = Some(message);
    }

    /// Answers a promotion and logs its pending `takeover` event with the gap: on one clock (this
    /// node's session) when the frame it continues after was received here, else "not known".
    fn send_promote(&mut self, reply: Reply<PromoteReport>, report: PromoteReport) {
        if let Some(note) = self.takeover_note.take() {
            let gap = match (report.gap_90k, report.gap_ms) {
                (Some(g), _) => format!(
                    "gap {g} (90 kHz) = {:.1} ms on this node's session clock",
                    g as f64 / 90.0
                ),
                (None, Some(ms)) => format!(
                    "gap not known on one clock (the frame was not in the shadow ring; the oldest \
                     key frame is {ms} ms after it by the two nodes' wall clocks)"
                ),
                (None, None) => "gap not known on one clock (no frame of this session continues \
                                 a received one)"
                    .to_owned(),
            };
            let message = format!("{note}; {gap}");
            tracing::info!("{message}");
            self.store
                .log_event(Some(self.stream_id), "takeover", &message);
        }
        let _ = reply.send(Ok(report));
    }

    /// Shadow → record after `after` (see [`Command::Promote`]).
    fn promote(
        &mut self,
        after: Option<FrameId>,
        reply: Reply<PromoteReport>,
    ) -> Result<(), IngestError> {
        let Some(after) = after else {
            let start = self.ring.newest_key().unwrap_or(self.ring.len());
            let report = self.start_recording(start, false, None)?;
            return self.answer_promote(reply, report, None);
        };
        if let Some(i) = self.ring.position(&after) {
            let mid = self.ring.video_at(i + 1).is_none_or(|v| !v.key);
            let after_ts = self.ring.video_at(i).map(|v| v.ts);
            let report = self.start_recording(i + 1, mid, after_ts)?;
            return self.answer_promote(reply, report, after_ts);
        }
        let not_seen_yet = self
            .ring
            .newest_video()
            .is_none_or(|n| n.wall_ms <= after.wall_ms + MATCH_TOLERANCE_MS);
        if not_seen_yet {
            self.pending_promote = Some(PendingPromote {
                after,
                deadline: Instant::now() + PROMOTE_WAIT,
                reply,
            });
            return Ok(());
        }
        let report = self.start_after_gap(&after)?;
        self.answer_promote(reply, report, None)
    }

    /// The requested frame is not in the ring: start at its oldest key frame and report the gap.
    fn start_after_gap(&mut self, after: &FrameId) -> Result<PromoteReport, IngestError> {
        let start = self.ring.oldest_key().unwrap_or(self.ring.len());
        let start_wall = self.ring.video_at(start).map(|v| v.wall_ms);
        let mut report = self.start_recording(start, false, None)?;
        report.gap_ms = Some(start_wall.unwrap_or_else(|| self.store.now_utc_ms()) - after.wall_ms);
        tracing::warn!(stream = %self.label, after = %after, gap_ms = ?report.gap_ms, "promotion: requested frame not in the ring");
        Ok(report)
    }

    fn promote_fallback(&mut self) -> Result<(), IngestError> {
        if let Some(p) = self.pending_promote.take() {
            let report = self.start_after_gap(&p.after)?;
            self.answer_promote(p.reply, report, None)?;
        }
        Ok(())
    }

    /// Answers a promotion now if its first frame is written, else when it is (`after_ts`: the
    /// session timestamp of the frame it continues after, for the gap).
    fn answer_promote(
        &mut self,
        reply: Reply<PromoteReport>,
        report: PromoteReport,
        after_ts: Option<i64>,
    ) -> Result<(), IngestError> {
        if report.first_frame.is_some() {
            self.send_promote(reply, report);
        } else {
            self.promote_reply = Some((reply, report, after_ts));
        }
        Ok(())
    }

    /// Starts a recording with the ring's items from `start` on (`mid`: the first frame need not be
    /// a key frame; `after_ts`: the session timestamp of the frame it continues after) and switches
    /// to record mode.
    fn start_recording(
        &mut self,
        start: usize,
        mid: bool,
        after_ts: Option<i64>,
    ) -> Result<PromoteReport, IngestError> {
        let items = self.ring.take_from(start);
        let (first_video, first_ts) = items
            .iter()
            .find_map(|f| match f {
                MediaFrame::Video(v) => Some((Some(v.id().clone()), Some(v.ts))),
                MediaFrame::Audio(_) => None,
            })
            .unwrap_or((None, None));
        let mut rec = Recording::new(
            self.store.clone(),
            self.stream_id,
            &self.spec.camera,
            self.spec.kind,
            self.settings,
        );
        rec.set_epoch(self.epoch);
        if let Some(id) = &first_video {
            rec.start_at(id.wall_ms, mid);
        } else if mid {
            rec.start_at(self.store.now_utc_ms(), true);
        }
        self.rec = Some(rec);
        self.pushed_track = None;
        self.mode = Mode::Record;
        self.set_state(StreamState::Recording);
        let from_ring = items.len();
        for item in items {
            match item {
                MediaFrame::Video(v) => self.push_video(&v, false)?,
                MediaFrame::Audio(a) => self.push_audio(&a),
            }
        }
        let recording = self.rec.as_ref().is_some_and(Recording::is_recording);
        let gap_90k = match (recording, first_ts, after_ts) {
            (true, Some(first), Some(after)) => Some(first - after),
            _ => None,
        };
        Ok(PromoteReport {
            first_frame: if recording { first_video } else { None },
            from_ring,
            gap_ms: None,
            gap_90k,
            starts_mid_gop: mid,
        })
    }

    fn on_video(&mut self, frame: Arc<VideoFrame>) -> Result<(), IngestError> {
        self.window_frames += 1;
        self.received += 1;
        self.window_bytes += frame.data.len() as u64;
        if frame.key {
            let id = frame.id().clone();
            update(&self.status, |s| s.last_key_frame = Some(id));
            if self.pending_release.is_some() {
                self.release_at(&frame);
            }
        }
        match self.mode {
            Mode::Record => self.push_video(&frame, true)?,
            Mode::Shadow => {
                self.ring.push(MediaFrame::Video(frame.clone()));
                if self
                    .pending_promote
                    .as_ref()
                    .is_some_and(|p| p.after.matches(frame.id()))
                {
                    if let Some(p) = self.pending_promote.take() {
                        let report = self.start_recording(self.ring.len(), true, Some(frame.ts))?;
                        self.answer_promote(p.reply, report, Some(frame.ts))?;
                    }
                }
            }
            Mode::Off => {}
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(MediaFrame::Video(frame.clone()));
        }
        self.last_video = Some(frame.clone());
        Ok(())
    }

    fn on_audio(&mut self, frame: Arc<AudioFrame>) {
        match self.mode {
            Mode::Record => self.push_audio(&frame),
            Mode::Shadow => self.ring.push(MediaFrame::Audio(frame.clone())),
            Mode::Off => {}
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(MediaFrame::Audio(frame));
        }
    }

    /// Stops recording before the key frame `key` (a pending release) and answers with it.
    fn release_at(&mut self, key: &VideoFrame) {
        let Some((to, reply)) = self.pending_release.take() else {
            return;
        };
        self.finish_recording("released");
        self.mode = to;
        self.set_state(self.connected_state());
        let report = ReleaseReport {
            key_frame: key.id().clone(),
            last_written: self.last_video.as_ref().map(|v| v.id().clone()),
        };
        tracing::info!(stream = %self.label, key_frame = %report.key_frame, to = to.as_str(), "released at key frame");
        let _ = reply.send(Ok(report));
    }

    /// Adds a frame to the recording. One that may complete a fragment is written on the writer pool:
    /// with `defer` it is kept in `fragment_write` for the session loop to await (the hot path), else
    /// written here leaving the worker with `block_in_place` (frames replayed from the shadow ring).
    fn push_video(&mut self, frame: &Arc<VideoFrame>, defer: bool) -> Result<(), IngestError> {
        let params = match &self.pushed_track {
            Some(t) if Arc::ptr_eq(t, &frame.track) => None,
            _ => {
                self.pushed_track = Some(frame.track.clone());
                Some((*frame.track).clone())
            }
        };
        let epoch = self.epoch;
        let rec = self.rec.get_or_insert_with(|| {
            let mut rec = Recording::new(
                self.store.clone(),
                self.stream_id,
                &self.spec.camera,
                self.spec.kind,
                self.settings,
            );
            rec.set_epoch(epoch);
            rec
        });
        let was_recording = rec.is_recording();
        let data = frame.data.clone();
        // Only a frame that completes a fragment touches the disk; the others are buffered without
        // leaving the async worker.
        if rec.may_write(frame.ts, frame.key) {
            if defer {
                self.fragment_write = Some(FragmentWrite {
                    frame: frame.clone(),
                    params,
                });
                return Ok(());
            }
            blocking(|| rec.push_video(frame.ts, frame.key, data, params))?;
        } else {
            rec.push_video(frame.ts, frame.key, data, params)?;
        }
        self.after_push(was_recording, frame);
        Ok(())
    }

    /// Writes a fragment on the writer pool: the recording goes to a writer thread with the frame
    /// that completes the fragment and comes back with the result.
    async fn write_fragment(&mut self, w: FragmentWrite) -> Result<(), IngestError> {
        let Some(mut rec) = self.rec.take() else {
            return Ok(());
        };
        let was_recording = rec.is_recording();
        let (ts, key, data) = (w.frame.ts, w.frame.key, w.frame.data.clone());
        let (rec, result) = self
            .writer
            .run(move || {
                let result = rec.push_video(ts, key, data, w.params);
                (rec, result)
            })
            .await?;
        self.rec = Some(rec);
        result?;
        self.after_push(was_recording, &w.frame);
        Ok(())
    }

    /// Answers a pending promotion once its first frame has started the recording.
    fn after_push(&mut self, was_recording: bool, frame: &VideoFrame) {
        if !was_recording && self.rec.as_ref().is_some_and(Recording::is_recording) {
            if let Some((reply, mut report, after_ts)) = self.promote_reply.take() {
                report.first_frame = Some(frame.id().clone());
                report.gap_90k = after_ts.map(|t| frame.ts - t);
                self.send_promote(reply, report);
            }
        }
    }

    fn push_audio(&mut self, frame: &AudioFrame) {
        if let Some(rec) = self.rec.as_mut() {
            if !rec.has_audio_track() {
                rec.set_audio_track((*frame.track).clone());
            }
            rec.push_audio(frame.ts, frame.duration, frame.data.clone());
        }
    }

    /// Ends the current recording (writes what is buffered, seals, closes the run).
    fn finish_recording(&mut self, reason: &str) {
        // A later recording is a new one: it must be given the parameters again.
        self.pushed_track = None;
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        // A frame still waiting for the writer pool is recorded too (nothing received is dropped).
        if let Some(w) = self.fragment_write.take() {
            let f = &w.frame;
            if let Err(e) = blocking(|| rec.push_video(f.ts, f.key, f.data.clone(), w.params)) {
                tracing::error!(stream = %self.label, error = %e, "could not write the last fragment");
            }
        }
        if let Err(e) = blocking(|| rec.finish(reason)) {
            tracing::error!(stream = %self.label, error = %e, "could not finish the recording");
            let message = e.to_string();
            update(&self.status, |s| s.last_error = Some(message));
        }
        update(&self.status, |s| {
            s.sealed_before_session += rec.segments_sealed();
            s.segments_sealed = s.sealed_before_session;
            s.frames_before_session += rec.frames_written();
            s.bytes_before_session += rec.bytes_written();
            s.frames = s.frames_before_session;
            s.bytes = s.bytes_before_session;
            s.current_segment = None;
        });
        if let Some((reply, mut report, _)) = self.promote_reply.take() {
            report.first_frame = None;
            report.gap_90k = None;
            self.send_promote(reply, report);
        }
    }

    /// Copies progress into the shared status (on fragment writes and on the loop's tick, not per
    /// frame). `rates`: also compute frame and bit rates over the window since the last call.
    fn publish(&mut self, last_frame_ms: Option<i64>, rates: bool) {
        let now_ms = self.store.now_utc_ms();
        let (fps, bps) = if rates {
            let secs = self.window_start.elapsed().as_secs_f64().max(1e-3);
            let r = (
                self.window_frames as f64 / secs,
                (self.window_bytes as f64 * 8.0 / secs) as u64,
            );
            self.window_frames = 0;
            self.window_bytes = 0;
            self.window_start = Instant::now();
            Some(r)
        } else {
            None
        }
        .unzip();
        let rec = self.rec.as_ref();
        let (ring_frames, ring_bytes) = (self.ring.len(), self.ring.bytes());
        let subscribers = self.live.receiver_count();
        let received = self.received;
        let loss = self.loss.counts();
        if rates {
            if let Some(new) = self.loss.event_due(now_ms) {
                let message = event_message(&self.label, new);
                tracing::warn!(stream = %self.label, "{message}");
                self.store
                    .log_event(Some(self.stream_id), "media_loss", &message);
            }
        }
        let track = self.video_track.clone();
        update(&self.status, |s| {
            s.alive_ms = now_ms;
            if let Some(ms) = last_frame_ms {
                s.last_frame_ms = Some(ms);
            }
            if let (Some(f), Some(b)) = (fps, bps) {
                s.fps = (f * 10.0).round() / 10.0;
                s.bitrate_bps = b;
            }
            if let Some(rec) = rec {
                s.frames = s.frames_before_session + rec.frames_written();
                s.bytes = s.bytes_before_session + rec.bytes_written();
                s.segments_sealed = s.sealed_before_session + rec.segments_sealed();
                if s.current_segment.as_deref() != rec.current_segment() {
                    s.current_segment = rec.current_segment().map(str::to_owned);
                }
            }
            if let Some(v) = track {
                if s.video_codec.as_deref() != Some(v.codec.as_str()) {
                    s.video_codec = Some(v.codec.clone());
                }
                s.width = Some(v.width);
                s.height = Some(v.height);
            }
            s.frames_received = received;
            s.loss = loss;
            s.ring_frames = ring_frames;
            s.ring_bytes = ring_bytes;
            s.live_subscribers = subscribers;
        });
    }
}
