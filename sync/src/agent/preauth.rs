//! Connections before authentication: at most [`MAX_PREAUTH`] TLS handshakes in progress at once. A new
//! connection over the cap displaces the oldest one still waiting (closing it), so connections that never
//! finish their handshake hold a bounded number of descriptors and cannot keep an authenticated peer,
//! whose handshake takes milliseconds, out. `accept` errors (EMFILE when descriptors run out, ENFILE,
//! ENOMEM...) back off instead of spinning, and close the oldest unauthenticated connection to free a
//! descriptor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// TLS handshakes (and the pinned-certificate check) in progress at most.
pub const MAX_PREAUTH: usize = 32;

/// The connections not yet authenticated, oldest first.
#[derive(Default)]
pub struct PreAuth {
    waiting: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    next_id: AtomicU64,
}

/// One connection's place among the unauthenticated ones; dropping it (once authenticated, or gone)
/// frees the place.
pub struct Ticket {
    id: u64,
    displaced: oneshot::Receiver<()>,
    owner: Arc<PreAuth>,
}

impl PreAuth {
    pub fn new() -> Arc<PreAuth> {
        Arc::new(PreAuth::default())
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, oneshot::Sender<()>)>> {
        match self.waiting.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A place for a new connection; when all are taken the oldest connection is told to close.
    pub fn enter(self: &Arc<Self>) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting();
        while waiting.len() >= MAX_PREAUTH {
            if let Some((_, oldest)) = waiting.pop_front() {
                let _ = oldest.send(());
            }
        }
        waiting.push_back((id, tx));
        Ticket {
            id,
            displaced: rx,
            owner: self.clone(),
        }
    }

    /// Tells the oldest waiting connection to close (after an `accept` failed for want of a
    /// descriptor); false if none waits.
    pub fn make_room(&self) -> bool {
        match self.waiting().pop_front() {
            Some((_, oldest)) => {
                let _ = oldest.send(());
                true
            }
            None => false,
        }
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.waiting().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// Resolves when a newer connection took this one's place.
    pub async fn displaced(&mut self) {
        // A dropped sender (the ticket was removed some other way) counts as displaced too.
        let _ = (&mut self.displaced).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.owner.waiting().retain(|(id, _)| *id != self.id);
    }
}

/// The delay after a failed `accept`: 50 ms doubling to 1 s, back to the start after a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay_ms: u64,
}

impl AcceptBackoff {
    const FIRST_MS: u64 = 50;
    const MAX_MS: u64 = 1000;

    /// The delay before the next `accept` after a failure.
    pub fn failed(&mut self) -> Duration {
        self.delay_ms = (self.delay_ms * 2).clamp(Self::FIRST_MS, Self::MAX_MS);
        Duration::from_millis(self.delay_ms)
    }

    pub fn succeeded(&mut self) {
        self.delay_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_waiting_connection_makes_room() {
        let pre = PreAuth::new();
        let mut tickets: Vec<Ticket> = (0..MAX_PREAUTH).map(|_| pre.enter()).collect();
        assert_eq!(pre.len(), MAX_PREAUTH);
        let newest = pre.enter();
        assert_eq!(pre.len(), MAX_PREAUTH);
        tickets[0].displaced().await;
        drop(tickets.remove(0));
        drop(tickets.remove(3));
        assert_eq!(pre.len(), MAX_PREAUTH - 1);
        assert!(pre.make_room());
        tickets[0].displaced().await;
        drop(newest);
        drop(tickets);
        assert!(pre.is_empty());
        assert!(!pre.make_room());
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let delays: Vec<u64> = (0..7).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(50));
    }
}
