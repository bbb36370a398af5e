//! `nvr floor`: the benchmark's floor, what receiving alone costs. The recorder's RTSP sessions
//! (retina, opened by the ingest's own `connect` with the same settings, in the same runtime set-up)
//! whose frames are depacketized and dropped: no writing, hashing, catalog or live fan-out.
//! `nvr-bench` measures its CPU and memory exactly like the recorder's, so the recorder's own work is
//! the difference between the two (`docs/performance.md`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::codec::CodecItem;

use crate::config::Config;
use crate::ingest::{connect_session, StreamSpec};
use crate::recorder::ingest_settings;
use crate::supervisor::desired_streams;

/// Waited before a session that failed is opened again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What the floor received, over all its sessions.
#[derive(Debug, Default)]
pub struct FloorCounts {
    pub sessions: AtomicU64,
    pub video_frames: AtomicU64,
    pub video_bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// Opens a session to every stream of `config` (whatever its mode) and drops what it receives, until
/// `shutdown` resolves.
pub async fn run(
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Arc<FloorCounts> {
    let settings = ingest_settings(config);
    let counts = Arc::new(FloorCounts::default());
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, _) in desired_streams(config) {
        let counts = counts.clone();
        tasks.spawn(async move {
            loop {
                if let Err(e) = receive(&spec, settings, &counts).await {
                    tracing::warn!(stream = %spec.url, error = %e, "floor session ended");
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        });
    }
    shutdown.await;
    tasks.shutdown().await;
    counts
}

/// One session: every video frame's data taken from retina (as the recorder takes it) and dropped.
async fn receive(
    spec: &StreamSpec,
    settings: crate::ingest::IngestSettings,
    counts: &FloorCounts,
) -> Result<(), crate::ingest::IngestError> {
    let mut demuxed = connect_session(spec, settings).await?;
    counts.sessions.fetch_add(1, Ordering::Relaxed);
    let mut first = true;
    while let Some(item) = demuxed.next().await {
        match item {
            Ok(CodecItem::VideoFrame(frame)) => {
                if std::mem::take(&mut first) {
                    tracing::info!(stream = %spec.url, "floor: receiving");
                }
                let data = frame.into_data();
                counts.video_frames.fetch_add(1, Ordering::Relaxed);
                counts
                    .video_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => return Err(crate::ingest::IngestError::BadData(format!("stream: {e}"))),
        }
    }
    Ok(())
}
