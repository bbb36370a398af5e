//! The one shape of every background job: run, wait for work, back off on failure, report status.
//!
//! A job implements [`Job::run_once`]; [`run_job`] drives it: after a success it waits for the next
//! interval or an explicit wake-up, after a failure it waits an exponential [`Backoff`] with jitter.
//! Both waits end early on shutdown. [`JobStatus`] is shared with status output. Waits use `tokio::time`,
//! so tests pause time instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};

/// Exponential backoff with jitter, capped.
///
/// Delay n (0-based) is `min(max, initial * 2^n)`, scaled by a jitter factor in `[0.75, 1.0]` so that
/// many streams failing together do not reconnect in lock-step. The jitter never pushes past the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    failures: u32,
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        Backoff {
            initial_ms: initial_ms.max(1),
            max_ms: max_ms.max(initial_ms.max(1)),
            failures: 0,
        }
    }

    /// The delay before the next attempt; `jitter_unit` in `[0, 1)` (random in production).
    pub fn next_delay_ms(&mut self, jitter_unit: f64) -> u64 {
        let base_ms = self.base_ms();
        self.failures = self.failures.saturating_add(1);
        Self::jittered(base_ms, jitter_unit)
    }

    /// The capped delay, used after failures that retrying sooner cannot fix (a wrong password).
    pub fn capped_delay_ms(&mut self, jitter_unit: f64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        Self::jittered(self.max_ms, jitter_unit)
    }

    fn base_ms(&self) -> u64 {
        let factor = 1u64.checked_shl(self.failures.min(62)).unwrap_or(u64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }

    fn jittered(base_ms: u64, jitter_unit: f64) -> u64 {
        let unit = if jitter_unit.is_finite() {
            jitter_unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ((base_ms as f64) * (0.75 + 0.25 * unit)).round().max(1.0) as u64
    }

    /// Call after a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A random jitter unit in `[0, 1)`.
pub fn random_jitter_unit() -> f64 {
    rand::random::<f64>()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Starting,
    Running,
    Waiting,
    Backoff,
    Stopped,
}

/// Status of one background job, shared with status output.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: String,
    pub state: JobState,
    pub runs: u64,
    pub failures: u64,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub next_delay_ms: Option<u64>,
}

impl JobStatus {
    pub fn new(name: &str) -> Self {
        JobStatus {
            name: name.to_owned(),
            state: JobState::Starting,
            runs: 0,
            failures: 0,
            last_success_ms: None,
            last_error: None,
            next_delay_ms: None,
        }
    }
}

/// A unit of background work run repeatedly by [`run_job`].
pub trait Job: Send {
    type Error: std::fmt::Display + Send;
    /// Does one pass of the work.
    fn run_once(&mut self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// Timing of a job.
#[derive(Debug, Clone, Copy)]
pub struct JobTiming {
    /// Wait after a successful pass (cut short by a wake-up).
    pub interval: Duration,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

/// Runs `job` until `shutdown` becomes true. `wake` cuts a wait short; `now_ms` reads wall time for status.
pub async fn run_job<J: Job>(
    mut job: J,
    timing: JobTiming,
    status: Arc<Mutex<JobStatus>>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    now_ms: impl Fn() -> i64 + Send,
) {
    let mut backoff = Backoff::new(timing.backoff_initial_ms, timing.backoff_max_ms);
    loop {
        if *shutdown.borrow() {
            break;
        }
        set_state(&status, |s| s.state = JobState::Running);
        let result = job.run_once().await;
        let wait = match result {
            Ok(()) => {
                backoff.reset();
                set_state(&status, |s| {
                    s.runs += 1;
                    s.last_success_ms = Some(now_ms());
                    s.last_error = None;
                    s.state = JobState::Waiting;
                    s.next_delay_ms = None;
                });
                timing.interval
            }
            Err(e) => {
                let delay_ms = backoff.next_delay_ms(random_jitter_unit());
                let message = e.to_string();
                tracing::warn!(job = %status_name(&status), error = %message, delay_ms, "background job failed");
                set_state(&status, |s| {
                    s.runs += 1;
                    s.failures += 1;
                    s.last_error = Some(message);
                    s.state = JobState::Backoff;
                    s.next_delay_ms = Some(delay_ms);
                });
                Duration::from_millis(delay_ms)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
    set_state(&status, |s| s.state = JobState::Stopped);
}

fn status_name(status: &Mutex<JobStatus>) -> String {
    match status.lock() {
        Ok(s) => s.name.clone(),
        Err(p) => p.into_inner().name.clone(),
    }
}

fn set_state(status: &Mutex<JobStatus>, f: impl FnOnce(&mut JobStatus)) {
    match status.lock() {
        Ok(mut s) => f(&mut s),
        Err(p) => f(&mut p.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(1000, 30_000);
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay_ms(1.0)).collect();
        assert_eq!(
            delays,
            [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
        );
        b.reset();
        assert_eq!(b.next_delay_ms(1.0), 1000);
    }

    #[test]
    fn backoff_jitter_stays_within_quarter_below() {
        let mut b = Backoff::new(1000, 30_000);
        assert_eq!(b.next_delay_ms(0.0), 750);
        assert_eq!(b.next_delay_ms(0.5), 1750);
        for _ in 0..4 {
            b.next_delay_ms(0.5);
        }
        for _ in 0..20 {
            let d = b.next_delay_ms(0.5);
            assert!((22_500..=30_000).contains(&d), "{d}");
        }
        assert_eq!(b.capped_delay_ms(0.0), 22_500);
        assert_eq!(b.next_delay_ms(f64::NAN), 22_500);
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(u64::MAX / 2, u64::MAX);
        for _ in 0..100 {
            b.next_delay_ms(1.0);
        }
        assert_eq!(b.next_delay_ms(1.0), u64::MAX);
    }

    struct Flaky {
        calls: Arc<AtomicU32>,
        fail_first: u32,
    }

    impl Job for Flaky {
        type Error = String;
        async fn run_once(&mut self) -> Result<(), String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                Err(format!("failure {n}"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn job_backs_off_then_runs_on_interval_and_stops() {
        let calls = Arc::new(AtomicU32::new(0));
        let status = Arc::new(Mutex::new(JobStatus::new("flaky")));
        let wake = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(false);
        let timing = JobTiming {
            interval: Duration::from_secs(60),
            backoff_initial_ms: 1000,
            backoff_max_ms: 8000,
        };
        let job = Flaky {
            calls: calls.clone(),
            fail_first: 2,
        };
        let handle = tokio::spawn(run_job(
            job,
            timing,
            status.clone(),
            wake.clone(),
            rx,
            || 42,
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        {
            let s = status.lock().expect("status");
            assert_eq!(s.state, JobState::Backoff);
            assert_eq!(s.last_error.as_deref(), Some("failure 0"));
        }
        // First backoff is at most 1 s, second at most 2 s.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        {
            let s = status.lock().expect("status");
            assert_eq!(s.state, JobState::Waiting);
            assert_eq!(s.failures, 2);
            assert_eq!(s.last_success_ms, Some(42));
        }
        // Waiting for the interval; a wake-up runs it at once.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        tx.send(true).expect("send");
        handle.await.expect("join");
        assert_eq!(status.lock().expect("status").state, JobState::Stopped);
    }
}
