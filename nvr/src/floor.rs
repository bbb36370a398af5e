//! `nvr floor`: the benchmark's floors, what receiving alone costs and what the bytes themselves cost.
//! The recorder's RTSP sessions (retina, opened by the ingest's own `connect` with the same settings,
//! in the same runtime set-up) whose frames are depacketized and then, by [`FloorLevel`]:
//!
//! - `receive`: dropped (no writing, hashing, catalog or live fan-out);
//! - `hash`: fed to SHA-256 (ring, as the segment hash) and dropped;
//! - `write`: appended through the store's own segment writer (block preallocation, one vectored
//!   `write` per fragment, the SHA-256 of every byte) and flushed by the store's grouped pass every
//!   `flush_interval_ms`, exactly as the recorder's segments are; but written inline on the runtime
//!   worker, as raw frames (no fMP4 boxes, no recording state, no writer threads, no catalog commits,
//!   status or live fan-out): a lower bound for any recorder that keeps the evidence hash and the
//!   power-loss bound.
//!
//! `nvr-bench` measures each like the recorder, so the recorder's own work is the difference
//! between the recorder and `receive`, and the part no recorder of this design can avoid is the
//! difference between `write` and `receive` (`docs/performance.md`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use retina::codec::CodecItem;

use crate::config::Config;
use crate::ingest::{connect_session, IngestError, StreamSpec};
use crate::recorder::ingest_settings;
use crate::supervisor::desired_streams;
use store::{NewSegment, SegmentWriter, Store};

/// Waited before a session that failed is opened again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What a floor does with every received frame (module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorLevel {
    Receive,
    Hash,
    Write,
}

/// What the floor received, over all its sessions.
#[derive(Debug, Default)]
pub struct FloorCounts {
    pub sessions: AtomicU64,
    pub video_frames: AtomicU64,
    pub video_bytes: AtomicU64,
    /// Bytes fed to SHA-256 (`hash`) or appended to segments (`write`, fragment headers aside).
    pub hashed_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// Where a `write` floor writes: the store in the configuration's data directory, and when a
/// fragment is complete.
#[derive(Clone)]
struct WriteTarget {
    store: Arc<Store>,
    fragment_max: Duration,
}

/// Opens a session to every stream of `config` (whatever its mode) and does `level`'s work with what
/// it receives, until `shutdown` resolves.
pub async fn run(
    config: &Config,
    level: FloorLevel,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Arc<FloorCounts>, store::StorageError> {
    let settings = ingest_settings(config);
    let counts = Arc::new(FloorCounts::default());
    let target = match level {
        FloorLevel::Write => Some(WriteTarget {
            store: Arc::new(Store::open(
                &config.data_dir,
                &config.node_name,
                Arc::new(base::clock::SystemClock),
            )?),
            fragment_max: Duration::from_millis(config.recording.fragment_max_ms),
        }),
        _ => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, _) in desired_streams(config) {
        let counts = counts.clone();
        let target = target.clone();
        tasks.spawn(async move {
            loop {
                if let Err(e) = receive(&spec, settings, level, target.as_ref(), &counts).await {
                    tracing::warn!(stream = %spec.url, error = %e, "floor session ended");
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        });
    }
    if let Some(t) = &target {
        tasks.spawn(flush_passes(
            t.store.clone(),
            Duration::from_millis(config.recording.flush_interval_ms.max(1)),
        ));
    }
    shutdown.await;
    tasks.shutdown().await;
    Ok(counts)
}

/// The store's grouped flush pass every `interval`, on a blocking thread, as the recorder runs it.
async fn flush_passes(store: Arc<Store>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.sync_appended()).await {
            tracing::warn!(error = %e, "floor flush pass failed");
        }
    }
}

/// One session: every video frame's data taken from retina (as the recorder takes it), then
/// hashed or written as `level` says.
async fn receive(
    spec: &StreamSpec,
    settings: crate::ingest::IngestSettings,
    level: FloorLevel,
    target: Option<&WriteTarget>,
    counts: &FloorCounts,
) -> Result<(), IngestError> {
    let mut demuxed = connect_session(spec, settings).await?;
    counts.sessions.fetch_add(1, Ordering::Relaxed);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut writer = match target {
        Some(t) => Some(RawWriter::open(t, spec)?),
        None => None,
    };
    let mut first = true;
    while let Some(item) = demuxed.next().await {
        match item {
            Ok(CodecItem::VideoFrame(frame)) => {
                if std::mem::take(&mut first) {
                    tracing::info!(stream = %spec.url, "floor: receiving");
                }
                let key = frame.is_random_access_point();
                let data = frame.into_data();
                counts.video_frames.fetch_add(1, Ordering::Relaxed);
                counts
                    .video_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                match (level, writer.as_mut()) {
                    (FloorLevel::Hash, _) => {
                        hash.update(&data);
                        counts
                            .hashed_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    (FloorLevel::Write, Some(w)) => {
                        let appended = w.push(Bytes::from(data), key)?;
                        counts.written_bytes.fetch_add(appended, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => return Err(IngestError::BadData(format!("stream: {e}"))),
        }
    }
    Ok(())
}

/// Raw frames of one session appended to one open segment through the store's writer, a fragment
/// at a key frame or after `fragment_max` (never sealed: the floor runs for one window).
struct RawWriter {
    segment: SegmentWriter,
    fragment_max: Duration,
    frames: Vec<Bytes>,
    started: Instant,
    appended_ms: i64,
}

impl RawWriter {
    fn open(target: &WriteTarget, spec: &StreamSpec) -> Result<Self, IngestError> {
        let store = &target.store;
        let stream = spec.kind.as_str();
        let stream_id = store.ensure_stream(&spec.camera, stream)?;
        let start_ms = store.now_utc_ms();
        let run_id = store
            .catalog()
            .insert_run(stream_id, store.node(), start_ms)?;
        let tracks = [store::mp4::synthetic_video_track(1280, 720)];
        let segment = store.create_segment(&NewSegment {
            stream_id,
            run_id,
            camera: &spec.camera,
            stream,
            start_ms,
            tracks: &tracks,
            video_codec: "avc1.64001f",
            width: 1280,
            height: 720,
            audio_codec: None,
            epoch: None,
        })?;
        Ok(RawWriter {
            segment,
            fragment_max: target.fragment_max,
            frames: Vec::new(),
            started: Instant::now(),
            appended_ms: 0,
        })
    }

    /// Buffers a frame; a key frame, or a fragment held `fragment_max`, appends what is buffered
    /// first. Returns the bytes appended (0 when the frame was only buffered).
    fn push(&mut self, data: Bytes, key: bool) -> Result<u64, IngestError> {
        let due = !self.frames.is_empty() && (key || self.started.elapsed() >= self.fragment_max);
        let mut appended = 0;
        if due {
            let parts: Vec<&[u8]> = self.frames.iter().map(|f| &f[..]).collect();
            appended = parts.iter().map(|p| p.len() as u64).sum();
            self.appended_ms += i64::try_from(self.started.elapsed().as_millis()).unwrap_or(0);
            self.segment.append_fragment_parts(
                &parts,
                self.frames.len() as u64,
                self.appended_ms,
            )?;
            self.frames.clear();
        }
        if self.frames.is_empty() {
            self.started = Instant::now();
        }
        self.frames.push(data);
        Ok(appended)
    }
}
