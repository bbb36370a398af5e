//! The RTSP side of a stream: [`run_stream`] connects with retina (every step under a timeout), feeds
//! frames into a [`Recording`], watches for silence, and reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{PlayOptions, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    update, AudioTrack, IngestError, IngestSettings, Recording, SharedStatus, StreamSpec,
    StreamState, VideoTrack,
};
use crate::config::Transport;
use base::job::{random_jitter_unit, Backoff};
use store::{Store, StreamId};

/// How a session ended without error.
enum SessionEnd {
    Shutdown,
}

/// Runs one stream until `shutdown` turns true: connect, record, back off, reconnect.
pub async fn run_stream(
    store: Arc<Store>,
    spec: StreamSpec,
    settings: IngestSettings,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream_id = match blocking(|| store.ensure_stream(&spec.camera, spec.kind.as_str())) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(camera = %spec.camera, error = %e, "cannot register stream in catalog");
            update(&status, |s| {
                s.state = StreamState::Stopped;
                s.last_error = Some(e.to_string());
            });
            return;
        }
    };
    let mut backoff = Backoff::new(settings.backoff_initial_ms, settings.backoff_max_ms);
    let label = format!("{}/{}", spec.camera, spec.kind.as_str());
    loop {
        if *shutdown.borrow() {
            break;
        }
        update(&status, |s| {
            s.state = StreamState::Connecting;
            s.next_retry_ms = None;
            s.alive_ms = store.now_utc_ms();
        });
        let mut recorded = false;
        let result = session(
            &store,
            stream_id,
            &spec,
            settings,
            &status,
            &mut shutdown,
            &mut recorded,
        )
        .await;
        let err = match result {
            Ok(SessionEnd::Shutdown) => break,
            Err(e) => e,
        };
        if recorded {
            backoff.reset();
        }
        let delay_ms = match err {
            IngestError::Auth(_) => backoff.capped_delay_ms(random_jitter_unit()),
            _ => backoff.next_delay_ms(random_jitter_unit()),
        };
        let message = err.to_string();
        tracing::warn!(stream = %label, error = %message, retry_in_ms = delay_ms, "stream session ended");
        store.log_event(
            Some(stream_id),
            "stream_error",
            &format!("{label}: {message}; retry in {delay_ms} ms"),
        );
        update(&status, |s| {
            s.state = StreamState::Backoff;
            s.reconnects += 1;
            s.last_error = Some(message);
            s.last_error_ms = Some(store.now_utc_ms());
            s.next_retry_ms = Some(delay_ms);
        });
        let until = Instant::now() + Duration::from_millis(delay_ms);
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = shutdown.changed() => break,
                _ = alive.tick() => update(&status, |s| s.alive_ms = store.now_utc_ms()),
            }
        }
    }
    update(&status, |s| {
        s.state = StreamState::Stopped;
        s.next_retry_ms = None;
    });
}

/// Runs blocking storage work without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

async fn with_timeout<T>(
    step: &'static str,
    timeout_ms: u64,
    fut: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, IngestError> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(IngestError::rtsp(step, e)),
        Err(_) => Err(IngestError::Timeout { step, timeout_ms }),
    }
}

async fn session(
    store: &Arc<Store>,
    stream_id: StreamId,
    spec: &StreamSpec,
    settings: IngestSettings,
    status: &SharedStatus,
    shutdown: &mut watch::Receiver<bool>,
    recorded: &mut bool,
) -> Result<SessionEnd, IngestError> {
    let creds = match (&spec.username, &spec.password) {
        (Some(u), Some(p)) => Some(retina::client::Credentials {
            username: u.clone(),
            password: p.0.clone(),
        }),
        (Some(u), None) => Some(retina::client::Credentials {
            username: u.clone(),
            password: String::new(),
        }),
        _ => None,
    };
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("nvr/{}", env!("CARGO_PKG_VERSION")));
    let mut rtsp = with_timeout(
        "connect/DESCRIBE",
        settings.connect_timeout_ms,
        retina::client::Session::describe(spec.url.clone(), options),
    )
    .await?;

    let streams = rtsp.streams();
    let video_i = streams
        .iter()
        .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        .ok_or_else(|| {
            IngestError::NoVideo(
                streams
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
    let audio = streams.iter().position(|s| s.media() == "audio");
    let (audio_i, audio_note) = match audio {
        Some(i) if streams[i].encoding_name() == "mpeg4-generic" => {
            (Some(i), Some("aac".to_owned()))
        }
        Some(i) => (
            None,
            Some(format!(
                "{}: not recorded (only AAC audio is recorded)",
                streams[i].encoding_name()
            )),
        ),
        None => (None, None),
    };
    let transport = match spec.transport {
        Transport::Tcp => retina::client::Transport::Tcp(Default::default()),
        Transport::Udp => retina::client::Transport::Udp(Default::default()),
    };
    let setup = || {
        SetupOptions::default()
            .transport(transport.clone())
            .frame_format(FrameFormat::MP4)
    };
    with_timeout(
        "SETUP",
        settings.connect_timeout_ms,
        rtsp.setup(video_i, setup()),
    )
    .await?;
    if let Some(i) = audio_i {
        with_timeout("SETUP", settings.connect_timeout_ms, rtsp.setup(i, setup())).await?;
    }
    let playing = with_timeout(
        "PLAY",
        settings.connect_timeout_ms,
        rtsp.play(PlayOptions::default()),
    )
    .await?;
    let mut demuxed = playing
        .demuxed()
        .map_err(|e| IngestError::rtsp("PLAY", e))?;
    update(status, |s| {
        s.connects += 1;
        s.audio = audio_note.clone();
        s.state = StreamState::Recording;
    });
    tracing::info!(camera = %spec.camera, stream = spec.kind.as_str(), audio = ?audio_note, "stream connected");

    let mut rec = Recording::new(store.clone(), stream_id, &spec.camera, spec.kind, settings);
    let frame_timeout = Duration::from_millis(settings.frame_timeout_ms);
    // The no-frame watchdog: one timer, re-armed only when it fires early (frames only stamp
    // `last_frame`, so the per-frame path touches no timer).
    let mut last_frame = Instant::now();
    let mut published_frames = 0u64;
    let watchdog = tokio::time::sleep(frame_timeout);
    tokio::pin!(watchdog);
    let mut tick = tokio::time::interval(Duration::from_millis(
        settings.flush_interval_ms.clamp(50, 1000),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(SessionEnd::Shutdown),
            _ = &mut watchdog => {
                let due = last_frame + frame_timeout;
                if Instant::now() >= due {
                    break Err(IngestError::NoFrames(settings.frame_timeout_ms));
                }
                watchdog.as_mut().reset(due);
            }
            _ = tick.tick() => {
                let now_ms = store.now_utc_ms();
                update(status, |s| s.alive_ms = now_ms);
                publish(status, &rec, now_ms - last_frame.elapsed().as_millis() as i64);
                // Leave the async worker only when there is something to flush.
                if rec.sync_due() {
                    if let Err(e) = blocking(|| rec.sync_if_due()) {
                        break Err(e.into());
                    }
                }
            }
            item = demuxed.next() => {
                let item = match item {
                    None => break Err(IngestError::Ended),
                    Some(Err(e)) => break Err(IngestError::rtsp("stream", e)),
                    Some(Ok(item)) => item,
                };
                let pushed = match item {
                    CodecItem::VideoFrame(frame) => {
                        last_frame = Instant::now();
                        let params = if frame.has_new_parameters() || !rec.has_video_track() {
                            match demuxed.streams()[video_i].parameters() {
                                Some(ParametersRef::Video(v)) => Some(video_track(v)?),
                                _ => None,
                            }
                        } else {
                            None
                        };
                        let ts = frame.timestamp();
                        let key = frame.is_random_access_point();
                        let ts = ts.elapsed();
                        // Only a frame that completes a fragment touches the disk; the others are
                        // buffered without leaving the async worker.
                        if rec.may_write(ts, key) {
                            blocking(|| rec.push_video(ts, key, frame.into_data(), params))
                        } else {
                            rec.push_video(ts, key, frame.into_data(), params)
                        }
                    }
                    CodecItem::AudioFrame(frame) if Some(frame.stream_id()) == audio_i => {
                        if !rec.has_audio_track() {
                            if let Some(ParametersRef::Audio(a)) = demuxed.streams()[frame.stream_id()].parameters() {
                                rec.set_audio_track(audio_track(a)?);
                            }
                        }
                        let ts = frame.timestamp();
                        rec.push_audio(ts.elapsed(), frame.frame_length().get(), frame.data().to_vec());
                        Ok(())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = pushed {
                    break Err(e);
                }
                *recorded |= rec.frames_written() > 0;
                if rec.frames_written() != published_frames {
                    published_frames = rec.frames_written();
                    publish(status, &rec, store.now_utc_ms());
                }
            }
        }
    };
    let reason = match &result {
        Ok(SessionEnd::Shutdown) => "shutdown",
        Err(IngestError::Storage(_)) => "storage error",
        Err(_) => "camera error",
    };
    let finished = blocking(|| rec.finish(reason));
    update(status, |s| {
        s.sealed_before_session += rec.segments_sealed();
        s.segments_sealed = s.sealed_before_session;
        s.frames_before_session += rec.frames_written();
        s.bytes_before_session += rec.bytes_written();
        s.frames = s.frames_before_session;
        s.bytes = s.bytes_before_session;
        s.current_segment = None;
    });
    match (result, finished) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
        (Ok(end), Ok(())) => Ok(end),
    }
}

/// Copies a recording's progress into the shared status (on fragment writes and on the loop's tick,
/// not per frame).
fn publish(status: &SharedStatus, rec: &Recording, last_frame_ms: i64) {
    update(status, |s| {
        if rec.frames_written() > 0 || s.last_frame_ms.is_some() {
            s.last_frame_ms = Some(last_frame_ms);
        }
        s.frames = s.frames_before_session + rec.frames_written();
        s.bytes = s.bytes_before_session + rec.bytes_written();
        s.segments_sealed = s.sealed_before_session + rec.segments_sealed();
        if s.current_segment.as_deref() != rec.current_segment() {
            s.current_segment = rec.current_segment().map(str::to_owned);
        }
        if let Some(v) = rec.video_track() {
            if s.video_codec.as_deref() != Some(v.codec.as_str()) {
                s.video_codec = Some(v.codec.clone());
            }
            s.width = Some(v.width);
            s.height = Some(v.height);
        }
    });
}

fn video_track(v: &retina::codec::VideoParameters) -> Result<VideoTrack, IngestError> {
    let (width, height) = v.pixel_dimensions();
    let sample_entry = v
        .mp4_sample_entry()
        .build()
        .map_err(|e| IngestError::BadData(format!("video parameters: {e}")))?;
    Ok(VideoTrack {
        codec: v.rfc6381_codec().to_owned(),
        width,
        height,
        clock_rate: 90_000,
        sample_entry,
    })
}

fn audio_track(a: &retina::codec::AudioParameters) -> Result<AudioTrack, IngestError> {
    let sample_entry = a
        .mp4_sample_entry()
        .build()
        .map_err(|e| IngestError::BadData(format!("audio parameters: {e}")))?;
    Ok(AudioTrack {
        codec: a.rfc6381_codec().unwrap_or("mp4a").to_owned(),
        channels: a.channels().get(),
        clock_rate: a.clock_rate(),
        sample_entry,
    })
}
