//! The recorder process: recovery, one ingest task per recorded stream, retention, de-duplication,
//! status and systemd.
//!
//! Start-up order: open the store, run recovery, start streams, then tell systemd READY. Every second the
//! status (`<data_dir>/status.json`, replaced atomically) is written and, if every stream loop is alive,
//! systemd's watchdog is pinged. On shutdown every stream writes what it buffered and seals its segment,
//! then the de-duplication job makes its last pass (`store::dedup_job`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::control;
use crate::ingest::{IngestSettings, StreamState, StreamStatus};
use crate::supervisor::{desired_streams, Supervisor};
use base::clock::{Clock, SystemClock};
use base::job::{run_job, Job, JobStatus, JobTiming};
use store::{
    free_bytes, DedupStatus, RecoveryReport, RetentionPolicy, StorageError, Store, StreamLimits,
};

pub use store::layout::STATUS_FILE;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Task(String),
}

/// The status document written to `status.json`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub time_ms: i64,
    pub pid: u32,
    pub streams: Vec<StreamStatus>,
    pub retention: JobStatus,
    /// De-duplication of overlapping copies (`store::dedup_job`): the job and the segments waiting.
    pub dedup: DedupStatus,
    pub recovery: RecoveryReport,
}

struct RetentionJob {
    store: Arc<Store>,
    /// The running configuration (replaced by reloads).
    config: watch::Receiver<Config>,
    /// The floor was unmet at the previous pass (the event is logged once per episode, not every pass).
    floor_unmet: bool,
}

impl Job for RetentionJob {
    type Error = StorageError;

    async fn run_once(&mut self) -> Result<(), StorageError> {
        let store = self.store.clone();
        let config = self.config.borrow().clone();
        let min_free_bytes = config.retention.min_free_bytes;
        let report = tokio::task::spawn_blocking(move || {
            let policy = retention_policy(&store, &config)?;
            let dir = store.data_dir().to_owned();
            store.retention_pass(&policy, &|| free_bytes(&dir))
        })
        .await
        .map_err(|e| {
            StorageError::io(
                "retention task",
                Path::new(""),
                std::io::Error::other(e.to_string()),
            )
        })??;
        if report.bytes_freed > 0 {
            tracing::info!(?report, "retention pass");
        }
        if report.free_floor_unmet && !self.floor_unmet {
            let message = format!(
                "free space {} bytes is below the floor of {} bytes with no sealed segment left to delete",
                report.free_bytes_after.unwrap_or(0),
                min_free_bytes
            );
            tracing::error!("{message}");
            self.store.log_event(None, "retention", &message);
        }
        self.floor_unmet = report.free_floor_unmet;
        Ok(())
    }
}

/// The retention policy of `config`, with stream ids from the catalog.
pub fn retention_policy(store: &Store, config: &Config) -> Result<RetentionPolicy, StorageError> {
    let mut streams = HashMap::new();
    for cam in &config.cameras {
        for s in &cam.streams {
            let id = store.ensure_stream(&cam.name, s.kind.as_str())?;
            let max_age_days = s.max_age_days.or(config.retention.max_age_days);
            streams.insert(
                id,
                StreamLimits {
                    max_age_ms: max_age_days.map(|d| (d as i64).saturating_mul(DAY_MS)),
                    max_bytes: s.max_bytes.or(config.retention.max_bytes_per_stream),
                },
            );
        }
    }
    // Streams this node holds but does not record (segments mirrored from primaries, cameras removed
    // from the configuration) get the default limits: nothing is kept forever by omission.
    let defaults = StreamLimits {
        max_age_ms: config
            .retention
            .max_age_days
            .map(|d| (d as i64).saturating_mul(DAY_MS)),
        max_bytes: config.retention.max_bytes_per_stream,
    };
    for s in store.catalog().streams()? {
        streams.entry(s.id).or_insert(defaults);
    }
    Ok(RetentionPolicy {
        streams,
        min_free_bytes: config.retention.min_free_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_not_in_the_configuration_get_the_default_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url::Url::parse("rtsp://127.0.0.1:1/x").expect("url");
        let mut config = crate::config::demo(dir.path(), &[url], 60_000);
        config.retention.max_age_days = Some(7);
        config.cameras[0].streams[0].max_age_days = Some(2);
        let store = Store::open(dir.path(), "n", Arc::new(SystemClock)).expect("store");
        let mirrored = store.ensure_stream("elsewhere", "main").expect("stream");
        let policy = retention_policy(&store, &config).expect("policy");
        let own = store.ensure_stream("sim1", "main").expect("stream");
        assert_eq!(policy.streams[&own].max_age_ms, Some(2 * DAY_MS));
        assert_eq!(policy.streams[&mirrored].max_age_ms, Some(7 * DAY_MS));
    }
}

fn write_status(path: &Path, status: &NodeStatus) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    base::fs::replace_file(path, &body)
}

fn lock<T: Clone>(m: &Mutex<T>) -> T {
    match m.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Handles for observing and steering a running recorder.
#[derive(Clone)]
pub struct RecorderHandle {
    pub store: Arc<Store>,
    pub supervisor: Arc<Supervisor>,
}

/// Ingest settings from the configuration.
pub fn ingest_settings(config: &Config) -> IngestSettings {
    IngestSettings {
        recording: config.recording,
        ingest: config.ingest,
    }
}

/// Applies a reloaded configuration's cameras and retention; what cannot change while running is
/// reported.
async fn reload(supervisor: &Supervisor, running: &watch::Sender<Config>, new: Config) {
    let current = running.borrow().clone();
    if new.data_dir != current.data_dir || new.node_name != current.node_name {
        tracing::error!(
            "reload: node_name and data_dir cannot change while running; restart the recorder"
        );
        return;
    }
    if new.recording != current.recording || new.ingest != current.ingest {
        tracing::warn!("reload: [recording] and [ingest] settings apply after a restart");
    }
    let report = supervisor.apply(desired_streams(&new)).await;
    tracing::info!(?report, "configuration reloaded");
    running.send_modify(|c| {
        c.cameras = new.cameras;
        c.retention = new.retention;
    });
}

/// Runs the recorder until `shutdown` resolves. `on_started` is called once streams are running;
/// each configuration received on `reloads` (SIGHUP) is applied to the running streams.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::Receiver<Config>,
    on_started: impl FnOnce(RecorderHandle),
) -> Result<(), RecorderError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(Store::open(&config.data_dir, &config.node_name, clock)?);
    let recovery = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.recover())
            .await
            .map_err(|e| RecorderError::Task(e.to_string()))??
    };
    if !recovery.is_empty() {
        tracing::warn!(?recovery, "start-up recovery");
    }
    // Seals (recovery's above, the streams' below) only mark their rows; this job compares them with
    // other nodes' copies. It stops after the streams have sealed, with a last pass.
    let (dedup_stop_tx, dedup_stop_rx) = watch::channel(false);
    let dedup = store.start_dedup_job(dedup_stop_rx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = crate::ingest::Writer::start(crate::ingest::WRITER_THREADS)
        .map_err(|e| RecorderError::Task(format!("starting the fragment writer threads: {e}")))?;
    let supervisor = Supervisor::new(store.clone(), ingest_settings(&config), writer);
    let started = supervisor.apply(desired_streams(&config)).await;
    tracing::info!(streams = started.added.len(), "streams started");
    let control = control::server::start(
        &config.data_dir.join(store::layout::CONTROL_SOCKET_FILE),
        supervisor.clone(),
        stop_rx.clone(),
    )
    .map_err(|e| RecorderError::Task(format!("control socket: {e}")))?;

    let (running, running_rx) = watch::channel(config.clone());
    let retention_status = Arc::new(Mutex::new(JobStatus::new("retention")));
    let retention_task = {
        let job = RetentionJob {
            store: store.clone(),
            config: running_rx,
            floor_unmet: false,
        };
        let timing = JobTiming {
            interval: Duration::from_millis(config.retention.interval_ms),
            backoff_initial_ms: 1000,
            backoff_max_ms: config.retention.interval_ms.max(1000),
        };
        let st = store.clone();
        tokio::spawn(run_job(
            job,
            timing,
            retention_status.clone(),
            Arc::new(Notify::new()),
            stop_rx.clone(),
            move || st.now_utc_ms(),
        ))
    };

    let flush_task = spawn_flush(
        store.clone(),
        Duration::from_millis(config.recording.flush_interval_ms.max(1)),
        stop_rx.clone(),
    );

    let status_path: PathBuf = config.data_dir.join(STATUS_FILE);
    let snapshot = {
        let store = store.clone();
        let supervisor = supervisor.clone();
        let retention_status = retention_status.clone();
        let dedup_status = dedup.status.clone();
        let node = config.node_name.clone();
        move || NodeStatus {
            node: node.clone(),
            time_ms: store.now_utc_ms(),
            pid: std::process::id(),
            streams: supervisor.statuses(),
            retention: lock(&retention_status),
            dedup: dedup_status.snapshot(),
            recovery: recovery.clone(),
        }
    };
    let status_task = {
        let snapshot = snapshot.clone();
        let store = store.clone();
        let status_path = status_path.clone();
        let mut stop = stop_rx.clone();
        let watchdog = watchdog_enabled();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                // The catalog learns of appended fragments once a second, in one transaction.
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.flush_progress()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot write segment progress to the catalog")
                    }
                    Err(e) => tracing::warn!(error = %e, "segment progress task failed"),
                }
                let st = snapshot();
                if let Err(e) = write_status(&status_path, &st) {
                    tracing::warn!(error = %e, "cannot write status file");
                }
                // Ping the watchdog only while every stream loop is alive (a stuck stream task
                // gets the process restarted; streams waiting to reconnect still tick).
                let stale = st.streams.iter().any(|s| {
                    !matches!(s.state, StreamState::Stopped | StreamState::Idle)
                        && st.time_ms - s.alive_ms > 15_000
                        && s.alive_ms > 0
                });
                if watchdog && !stale {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        })
    };

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(node = %config.node_name, streams = supervisor.keys().len(), data_dir = %config.data_dir.display(), "recorder started");
    on_started(RecorderHandle {
        store: store.clone(),
        supervisor: supervisor.clone(),
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            new = reloads.recv() => {
                let Some(new) = new else {
                    shutdown.as_mut().await;
                    break;
                };
                reload(&supervisor, &running, new).await;
            }
        }
    }
    tracing::info!("stopping: sealing open segments");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    supervisor.shutdown().await;
    let _ = control.await;
    let _ = flush_task.await;
    store.sync_appended();
    if let Err(e) = store.flush_progress() {
        tracing::warn!(error = %e, "cannot write segment progress to the catalog");
    }
    let _ = retention_task.await;
    let _ = dedup_stop_tx.send(true);
    let _ = dedup.task.await;
    let _ = status_task.await;
    if let Err(e) = write_status(&status_path, &snapshot()) {
        tracing::warn!(error = %e, "cannot write status file");
    }
    tracing::info!("recorder stopped");
    Ok(())
}

/// Flushes every open segment's appended data in one pass per `interval` (`recording.flush_interval_ms`),
/// on one blocking thread: the streams' tasks and the fragment writers never wait for the disk's
/// `fdatasync` (`store::Store::sync_appended`).
fn spawn_flush(
    store: Arc<Store>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let store = store.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || store.sync_appended()).await {
                tracing::warn!(error = %e, "segment flush task failed");
            }
        }
    })
}

fn watchdog_enabled() -> bool {
    sd_notify::watchdog_enabled().is_some()
}
