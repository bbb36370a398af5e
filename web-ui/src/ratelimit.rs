//! Login rate limiting: after `MAX_FAILURES` failed logins within `WINDOW` from one client address, or
//! for one user name, further attempts for it are refused until the oldest failure leaves the window.
//! Time is tokio's, so tests advance it without sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys kept at most (oldest dropped first when full), so that a flood of names cannot exhaust memory.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Err(wait)` while `key` is blocked.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = map.get_mut(key) else {
            return Ok(());
        };
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= MAX_FAILURES {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    pub fn failed(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let now = Instant::now();
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_KEYS {
                return;
            }
        }
        let q = map.entry(key.to_owned()).or_default();
        q.push_back(Instant::now());
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_after_max_failures_until_the_window_passes() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.check("ip:1").is_ok());
            l.failed("ip:1");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let wait = l.check("ip:1").expect_err("blocked");
        assert_eq!(wait, WINDOW - Duration::from_secs(MAX_FAILURES as u64));
        assert!(l.check("ip:2").is_ok(), "other keys are not blocked");
        tokio::time::advance(wait).await;
        assert!(
            l.check("ip:1").is_ok(),
            "the oldest failure left the window"
        );
        l.failed("ip:1");
        assert!(l.check("ip:1").is_err());
        l.succeeded("ip:1");
        assert!(l.check("ip:1").is_ok());
    }
}
