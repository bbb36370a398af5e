//! The de-duplication job: overlapping copies compared off the seal path.
//!
//! Comparing a sealed segment with the overlapping copies of other nodes reads every frame of both
//! files ([`Store::deduplicate`], a fraction of a second per pair). A seal (the recorder's, recovery's,
//! a mirrored copy's) does not wait for it: it sets the segment's de-duplication mark in the catalog
//! in the same statement or transaction that seals the row, and wakes this process's job. The job
//! ([`Store::start_dedup_job`], the shared `base::job` shape) de-duplicates every marked segment and
//! clears each mark once its comparison is recorded; a mark whose comparison failed stays and is
//! retried after the backoff. Marks are durable: what a crash (or a process that seals without
//! running the job) leaves marked is done at the next start. On a clean stop the job makes one last pass
//! after its owner has sealed what was open, so nothing is left for later.
//!
//! The result is the one a synchronous de-duplication at every seal gives: a pair is compared once
//! both are sealed, whichever is processed first, and [`crate::timeline::kept_first`] decides alike
//! whatever the order. Several processes sharing a catalog (a node's recorder and sync agent) may
//! work on the same mark: trims already recorded are neither recorded nor logged again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base::job::{run_job, Job, JobStatus, JobTiming};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::catalog::DedupMark;
use crate::{SegmentId, StorageError, Store};

/// Marks read from the catalog at a time.
const PAGE: u32 = 64;

/// The job's timing: a pass at every wake-up (a seal in this process), else every minute (marks set
/// by another process sharing the catalog, e.g. the sync agent beside the recorder); after a failed
/// comparison, 1 s doubling to a minute.
pub const DEDUP_TIMING: JobTiming = JobTiming {
    interval: Duration::from_secs(60),
    backoff_initial_ms: 1000,
    backoff_max_ms: 60_000,
};

/// The store's side of its job: the wake-up after a seal and the count of marked segments.
#[derive(Debug, Default)]
pub(crate) struct DedupSignal {
    wake: Arc<Notify>,
    pending: Arc<AtomicU64>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DedupPass {
    /// Marked segments de-duplicated and cleared.
    pub segments: u64,
    /// Trims recorded.
    pub trims: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// Comparisons that failed; their marks stay for the next pass, the others were cleared.
    #[error("de-duplication of {failed} segment(s) failed (they stay marked), segment {segment}: {source}")]
    Segments {
        failed: u64,
        segment: i64,
        #[source]
        source: StorageError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("de-duplication task: {0}")]
    Task(String),
}

/// The job's status as shown in a status document: the shared job fields and the marked segments.
#[derive(Debug, Clone, Serialize)]
pub struct DedupStatus {
    #[serde(flatten)]
    pub job: JobStatus,
    /// Sealed segments waiting for their comparison (as of the last pass, plus seals since).
    pub pending: u64,
}

/// Where a status writer reads [`DedupStatus`] from.
#[derive(Debug, Clone)]
pub struct DedupStatusSource {
    job: Arc<Mutex<JobStatus>>,
    pending: Arc<AtomicU64>,
}

impl DedupStatusSource {
    pub fn snapshot(&self) -> DedupStatus {
        let job = match self.job.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        DedupStatus {
            job,
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

/// A started job: its status, and its task (ends after the last pass once shutdown is sent).
#[derive(Debug)]
pub struct DedupJob {
    pub status: DedupStatusSource,
    pub task: tokio::task::JoinHandle<()>,
}

struct DedupRunner {
    store: Arc<Store>,
}

impl Job for DedupRunner {
    type Error = DedupError;

    async fn run_once(&mut self) -> Result<(), DedupError> {
        let store = self.store.clone();
        let pass = tokio::task::spawn_blocking(move || store.deduplicate_pending())
            .await
            .map_err(|e| DedupError::Task(e.to_string()))??;
        if pass.trims > 0 {
            tracing::debug!(?pass, "de-duplication pass");
        }
        Ok(())
    }
}

impl Store {
    /// After a seal has set its segment's mark: counts it and wakes the job.
    pub(crate) fn dedup_marked(&self) {
        self.dedup.pending.fetch_add(1, Ordering::Relaxed);
        self.dedup.wake.notify_one();
    }

    /// Segments sealed but not yet de-duplicated.
    pub fn dedup_pending_count(&self) -> Result<u64, StorageError> {
        self.catalog().dedup_pending_count()
    }

    /// One pass of the job: de-duplicates every marked segment ([`Store::deduplicate`]) and clears its
    /// mark. A failure leaves that mark and is reported after the others were done.
    pub fn deduplicate_pending(&self) -> Result<DedupPass, DedupError> {
        let mut pass = DedupPass::default();
        let mut failures: Vec<(SegmentId, StorageError)> = Vec::new();
        let mut after = SegmentId(0);
        loop {
            let marks = self.catalog().dedup_marks_after(after, PAGE)?;
            let Some(last) = marks.last() else { break };
            after = last.segment_id;
            for mark in marks {
                match self.deduplicate_marked(mark) {
                    Ok(trims) => {
                        pass.segments += 1;
                        pass.trims += trims;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, segment = mark.segment_id.0, "de-duplication failed; both copies stay in the timeline until it is retried");
                        failures.push((mark.segment_id, e));
                    }
                }
            }
        }
        let pending = self.dedup_pending_count()?;
        self.dedup.pending.store(pending, Ordering::Relaxed);
        let failed = failures.len() as u64;
        match failures.into_iter().next() {
            None => Ok(pass),
            Some((segment, source)) => Err(DedupError::Segments {
                failed,
                segment: segment.0,
                source,
            }),
        }
    }

    fn deduplicate_marked(&self, mark: DedupMark) -> Result<u64, StorageError> {
        let trims = self.deduplicate(mark.segment_id)?;
        self.catalog().clear_dedup_mark(mark)?;
        Ok(trims.len() as u64)
    }

    /// Starts this store's de-duplication job on the current tokio runtime. It runs a pass at once
    /// (marks left by an earlier process), then at every seal. Once `shutdown` is true it makes a last
    /// pass and ends: send it after this process has sealed what it had open.
    pub fn start_dedup_job(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> DedupJob {
        let job_status = Arc::new(Mutex::new(JobStatus::new("dedup")));
        let status = DedupStatusSource {
            job: job_status.clone(),
            pending: self.dedup.pending.clone(),
        };
        let store = self.clone();
        let task = tokio::spawn(async move {
            let clock = store.clone();
            run_job(
                DedupRunner {
                    store: store.clone(),
                },
                DEDUP_TIMING,
                job_status,
                store.dedup.wake.clone(),
                shutdown,
                move || clock.now_utc_ms(),
            )
            .await;
            let last = store.clone();
            match tokio::task::spawn_blocking(move || last.deduplicate_pending()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "last de-duplication pass; the marks left are done at the next start")
                }
                Err(e) => tracing::warn!(error = %e, "last de-duplication pass failed"),
            }
        });
        DedupJob { status, task }
    }
}

#[cfg(test)]
mod tests;
