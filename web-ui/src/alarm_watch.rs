//! The alarm watch: a background job (`base::job`) of the viewer that collects this node's alarms
//! every [`INTERVAL`] from the same sources as the banner (the sync agent's and arbiter's status
//! files, the recorder's status) and writes the conditions among them to the alarm history
//! (`alarm_history`), whether or not a page is open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web;
use base::job::{run_job, Job, JobStatus, JobTiming};
use tokio::sync::{watch, Notify};

use crate::alarm_history::{AlarmHistory, HISTORY_FILE};
use crate::alarms::{self, Category};
use crate::cluster_api;
use crate::server::AppState;
use crate::WebError;

/// How often the watch looks.
pub const INTERVAL: Duration = Duration::from_secs(1);

struct AlarmWatch {
    state: web::Data<AppState>,
    history: Arc<Mutex<AlarmHistory>>,
    /// True until the first pass: spans left open by a previous run are closed when last seen.
    resumed: bool,
}

impl Job for AlarmWatch {
    type Error = WebError;

    async fn run_once(&mut self) -> Result<(), WebError> {
        let s = cluster_api::sources(&self.state).await;
        let current = alarms::collect(
            &self.state.node,
            s.sync.as_ref(),
            s.arbiter.as_ref(),
            s.recorder.as_deref().unwrap_or_default(),
        );
        // A source that did not answer ends none of its alarms.
        let mut observed = Vec::new();
        if s.recorder.is_some() {
            observed.push(Category::CameraDown);
        }
        if s.arbiter.is_some() || self.state.cluster.arbiter.is_none() {
            observed.push(Category::Uncovered);
        }
        let now_ms = self.state.clock.now_utc_ms();
        let resumed = std::mem::replace(&mut self.resumed, false);
        let history = self.history.clone();
        tokio::task::spawn_blocking(move || {
            let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
            h.record(now_ms, &current, &observed, resumed)
        })
        .await
        .map_err(|e| WebError::BadFile {
            path: self.state.state_dir.join(HISTORY_FILE),
            message: e.to_string(),
        })?
    }
}

/// Opens the history and starts the watch; it stops when `shutdown` turns true.
pub fn spawn(
    state: web::Data<AppState>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, WebError> {
    let history = Arc::new(Mutex::new(AlarmHistory::open(&state.state_dir)?));
    let clock = state.clock.clone();
    let job = AlarmWatch {
        state,
        history,
        resumed: true,
    };
    let timing = JobTiming {
        interval: INTERVAL,
        backoff_initial_ms: 1_000,
        backoff_max_ms: 30_000,
    };
    Ok(tokio::spawn(run_job(
        job,
        timing,
        Arc::new(Mutex::new(JobStatus::new("alarm-watch"))),
        Arc::new(Notify::new()),
        shutdown,
        move || clock.now_utc_ms(),
    )))
}
