//! The primary's watch on `media/` (notify: inotify on Linux). Every event wakes the mirroring loop;
//! events that can change a segment file (writes, truncations, attribute changes, renames, deletions)
//! go, as the file's catalog path, into a bounded queue for the tamper watch ([`super::tamper`]).
//!
//! The watch never blocks the watcher thread: when the queue is full, or when the kernel's own queue
//! overflowed (notify's `Rescan`), events are dropped until the tamper watch has started a fallback
//! pass over the sealed segments, as inotify drops them after an overflow.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, EventKind};
use tokio::sync::{mpsc, Notify};

/// The tamper watch's side of the media watch.
pub struct WatchEvents {
    /// Catalog paths (`media/…`) of segment files an event touched.
    pub paths: mpsc::Receiver<String>,
    /// Signalled when events were lost (the queue was full, or the kernel's queue overflowed).
    pub overflow: Arc<Notify>,
    lost: Arc<AtomicBool>,
    counters: Arc<WatchCounters>,
}

/// Counts kept by the watcher thread.
#[derive(Default)]
pub struct WatchCounters {
    pub events: AtomicU64,
    pub overflows: AtomicU64,
}

impl WatchEvents {
    /// Called as a fallback pass starts: events are queued again from now on. Returns true if events
    /// had been lost since the last call.
    pub fn resume(&self) -> bool {
        self.lost.swap(false, Ordering::SeqCst)
    }

    /// (events seen, overflows) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.events.load(Ordering::Relaxed),
            self.counters.overflows.load(Ordering::Relaxed),
        )
    }
}

/// Whether an event can mean a segment file changed (reads and opens cannot).
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Starts the watch. `None` for the watcher if notify is unavailable (the periodic passes remain); the
/// tamper watch then sees no events.
pub fn watch_media(
    data_dir: &Path,
    wake: Arc<Notify>,
    queue_events: usize,
) -> (Option<notify::RecommendedWatcher>, WatchEvents) {
    use notify::Watcher;
    let (tx, rx) = mpsc::channel::<String>(queue_events.max(1));
    let overflow = Arc::new(Notify::new());
    let lost = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(WatchCounters::default());
    let events = WatchEvents {
        paths: rx,
        overflow: overflow.clone(),
        lost: lost.clone(),
        counters: counters.clone(),
    };
    let media = data_dir.join(store::layout::MEDIA_DIR);
    let _ = std::fs::create_dir_all(&media);
    let root = data_dir.to_path_buf();
    let dropping = lost.clone();
    let seen = counters.clone();
    let lose = move || {
        if !lost.swap(true, Ordering::SeqCst) {
            counters.overflows.fetch_add(1, Ordering::Relaxed);
        }
        overflow.notify_one();
    };
    let handler = move |res: notify::Result<notify::Event>| {
        wake.notify_one();
        let ev = match res {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "file watch error; events may be lost");
                lose();
                return;
            }
        };
        seen.events.fetch_add(1, Ordering::Relaxed);
        if ev.need_rescan() {
            lose();
            return;
        }
        if !may_change(&ev.kind) {
            return;
        }
        for p in &ev.paths {
            if p.extension().is_none_or(|e| e != "mp4") {
                continue;
            }
            let Some(rel) = p.strip_prefix(&root).ok().and_then(|r| r.to_str()) else {
                continue;
            };
            if dropping.load(Ordering::SeqCst) {
                continue;
            }
            match tx.try_send(rel.to_owned()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => lose(),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watcher unavailable; relying on periodic passes");
            return (None, events);
        }
    };
    if let Err(e) = watcher.watch(&media, notify::RecursiveMode::Recursive) {
        tracing::warn!(error = %e, "cannot watch media directory; relying on periodic passes");
        return (None, events);
    }
    (Some(watcher), events)
}
