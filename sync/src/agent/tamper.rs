//! The primary's tamper watch: sealed files changed by anything but retention are found within about a
//! second of the change, raised as alarms and repaired from the standby.
//!
//! - Every file event of [`super::watch`] queues its segment for a check shortly after (events of one
//!   file within [`DEBOUNCE`] are one check). The check is the one rule, [`store::Store::verify_sealed`],
//!   against the signed log's leaf for the path: the file's size, read-only mode and SHA-256, and the
//!   catalog row itself. Open segments (the recorder writes them) are skipped.
//! - A deletion is retention's when the row is already `deleted`: retention marks the row before it
//!   unlinks the file (`store::retention`), so a file that disappears while its row says `sealed` was
//!   removed by someone else.
//! - A tampered file is an alarm (`tamper`, naming the file) and a repair request; once
//!   `tamper_threshold_files` files were tampered with within `tamper_window_ms`, one critical
//!   `tampering` alarm replaces the per-file ones, counting on in the status until a whole window passes
//!   without a change (then `tampering_over` with the totals).
//! - Lost events (the queue bound `tamper_queue_events`, or an inotify overflow) start a fallback pass
//!   once the burst had [`DEBOUNCE`] to end (events are dropped until then, then queued again): a stat
//!   of every sealed segment of this node, newest first; a file whose size, mode or change time
//!   differs from when it was last found good (or, never checked, whose change time is later than its
//!   segment's end plus a minute) is checked in full.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use store::{SealedReference, SegmentRow, SegmentState, Store};
use tokio::sync::{mpsc, watch};

use super::repair::{log_reference, repair_reference, RepairCause, RepairRequest};
use super::watch::WatchEvents;
use super::{now_ms, raise_alarm, with_status, SharedStatus};
use crate::config::SyncConfig;
use crate::syncdb::SyncDb;

/// Events of one file within this long are checked once.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// A damaged file is checked again this long after its repair was asked for, then at doubling intervals
/// up to [`RETRY_MAX`]; while still damaged its repair is asked for again.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// A sealed file never checked by the watch is suspect in a fallback pass if it changed later than its
/// segment's end plus this.
const SEAL_SLACK_MS: i64 = 60_000;

/// The tamper watch in the status file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TamperStatus {
    /// The file watch runs (false: notify is unavailable; only the scrub finds changes).
    pub watching: bool,
    pub events_seen: u64,
    /// Times events were lost (queue full or inotify overflow); each starts a fallback pass.
    pub overflows: u64,
    pub fallback_passes: u64,
    /// Tampered files found by fallback passes.
    pub fallback_found: u64,
    /// Sealed files found changed, missing or writable (each time it happened).
    pub files_detected: u64,
    pub files_repaired: u64,
    pub repairs_failed: u64,
    /// Deletions of sealed files seen and recognised as retention's.
    pub retention_deletions: u64,
    pub last_detected_ms: Option<i64>,
    pub last_detected_path: Option<String>,
    pub last_repaired_ms: Option<i64>,
    /// The tampering alarm being up: since when, and how many files so far.
    pub attack: Option<AttackStatus>,
    pub attacks_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttackStatus {
    pub started_ms: i64,
    pub files: u64,
    pub last_ms: i64,
    pub last_path: String,
}

/// What identifies a file's state without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    ino: u64,
    len: u64,
    mode: u32,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Signature {
    fn of(m: &std::fs::Metadata) -> Signature {
        Signature {
            ino: m.ino(),
            len: m.len(),
            mode: m.mode(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

enum Verdict {
    Good,
    Tampered {
        row: Box<SegmentRow>,
        detail: String,
    },
    Retention,
    Skip,
}

/// Checks and their memory of files found good.
struct Checker {
    store: Arc<Store>,
    db: Arc<SyncDb>,
    node: String,
    good: HashMap<String, Signature>,
}

impl Checker {
    /// The full check of one path.
    fn check(&mut self, path: &str) -> Verdict {
        let row = match self.store.catalog().segment_by_path(path) {
            Ok(Some(r)) if r.node == self.node => r,
            Ok(_) => return Verdict::Skip,
            Err(e) => {
                tracing::warn!(error = %e, path, "tamper check: catalog unreadable");
                return Verdict::Skip;
            }
        };
        match row.state {
            SegmentState::Sealed => {}
            SegmentState::Deleted => {
                self.good.remove(path);
                let gone = !self.store.absolute_path(path).exists();
                return if gone {
                    Verdict::Retention
                } else {
                    Verdict::Skip
                };
            }
            _ => return Verdict::Skip,
        }
        let reference = log_reference(&self.db, &self.node, path);
        match self.store.verify_sealed(&row, reference.as_ref(), true) {
            Ok(()) => {
                if let Ok(m) = std::fs::metadata(self.store.absolute_path(path)) {
                    self.good.insert(path.to_owned(), Signature::of(&m));
                }
                Verdict::Good
            }
            Err(detail) => {
                self.good.remove(path);
                Verdict::Tampered {
                    row: Box::new(row),
                    detail,
                }
            }
        }
    }

    /// Sealed segments whose file looks changed, by stat alone (newest first).
    fn suspects(&self) -> Vec<String> {
        let rows = match self
            .store
            .catalog()
            .node_segments_in_state(&self.node, SegmentState::Sealed)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "fallback pass: catalog unreadable");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for row in rows.iter().rev() {
            let suspect = match std::fs::metadata(self.store.absolute_path(&row.path)) {
                Err(_) => true,
                Ok(m) => match self.good.get(&row.path) {
                    Some(sig) => *sig != Signature::of(&m),
                    None => {
                        m.len() != row.size_bytes.max(0) as u64
                            || !m.permissions().readonly()
                            || m.ctime().saturating_mul(1000) > row.end_ms + SEAL_SLACK_MS
                    }
                },
            };
            if suspect {
                out.push(row.path.clone());
            }
        }
        out
    }
}

/// Files whose repair was asked for, checked again until they are good: a repair lost with a connection,
/// or refused, is asked for again (quietly: the file was raised once).
#[derive(Default)]
struct Unrepaired {
    files: HashMap<String, (Instant, Duration)>,
}

impl Unrepaired {
    fn asked(&mut self, path: &str) {
        self.files
            .insert(path.to_owned(), (Instant::now() + RETRY_FIRST, RETRY_FIRST));
    }

    fn retry_due(&mut self, checker: &mut Checker, repair: &mpsc::UnboundedSender<RepairRequest>) {
        let now = Instant::now();
        let due: Vec<String> = self
            .files
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            match tokio::task::block_in_place(|| checker.check(&path)) {
                Verdict::Tampered { row, detail } => {
                    let Some(reference) = repair_reference(&checker.db, &row) else {
                        self.files.remove(&path);
                        continue;
                    };
                    tracing::warn!(path, detail, "still damaged; asking the standby again");
                    let _ = repair.send(RepairRequest {
                        path: path.clone(),
                        reference,
                        cause: RepairCause::Retry,
                    });
                    if let Some((at, wait)) = self.files.get_mut(&path) {
                        *wait = (*wait * 2).min(RETRY_MAX);
                        *at = now + *wait;
                    }
                }
                Verdict::Good | Verdict::Retention | Verdict::Skip => {
                    self.files.remove(&path);
                }
            }
        }
    }
}

/// The rate rule: per-file alarms until `threshold` files within `window`, then one critical alarm.
struct Rate {
    threshold: usize,
    window: Duration,
    recent: VecDeque<(Instant, String)>,
    last: Option<Instant>,
}

impl Rate {
    /// Records a tampered file; true if it makes `threshold` distinct files within the window.
    fn record(&mut self, path: &str, now: Instant) -> (bool, usize) {
        self.last = Some(now);
        self.recent.push_back((now, path.to_owned()));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        let distinct: HashSet<&str> = self.recent.iter().map(|(_, p)| p.as_str()).collect();
        (distinct.len() >= self.threshold, distinct.len())
    }

    fn quiet_for_window(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.duration_since(t) > self.window)
    }
}

/// Runs the tamper watch until `shutdown`.
pub async fn tamper_loop(
    store: Arc<Store>,
    db: Arc<SyncDb>,
    cfg: SyncConfig,
    status: SharedStatus,
    mut events: WatchEvents,
    repair: mpsc::UnboundedSender<RepairRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut checker = Checker {
        store,
        db: db.clone(),
        node: cfg.node_name.clone(),
        good: HashMap::new(),
    };
    let mut rate = Rate {
        threshold: cfg.settings.tamper_threshold_files.max(1) as usize,
        window: Duration::from_millis(cfg.settings.tamper_window_ms),
        recent: VecDeque::new(),
        last: None,
    };
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut unrepaired = Unrepaired::default();
    loop {
        let next = pending
            .values()
            .min()
            .copied()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let mut fallback = false;
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(path) = events.paths.recv() => {
                pending.entry(path).or_insert_with(|| Instant::now() + DEBOUNCE);
            }
            _ = events.overflow.notified() => fallback = true,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        if fallback {
            for (row, detail) in
                fallback_pass(&mut checker, &mut events, &mut pending, &status).await
            {
                unrepaired.asked(&row.path);
                detected(&db, &status, &mut rate, &repair, *row, &detail);
            }
        }
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            pending.remove(&path);
            match tokio::task::block_in_place(|| checker.check(&path)) {
                Verdict::Tampered { row, detail } => {
                    unrepaired.asked(&row.path);
                    detected(&db, &status, &mut rate, &repair, *row, &detail)
                }
                Verdict::Retention => with_status(&status, |s| {
                    if let Some(t) = s.tamper.as_mut() {
                        t.retention_deletions += 1;
                    }
                }),
                Verdict::Good | Verdict::Skip => {}
            }
        }
        unrepaired.retry_due(&mut checker, &repair);
        end_attack_if_quiet(&db, &status, &rate);
        let (seen, overflows) = events.counts();
        with_status(&status, |s| {
            if let Some(t) = s.tamper.as_mut() {
                t.events_seen = seen;
                t.overflows = overflows;
            }
        });
    }
}

/// After lost events: waits out the burst, queues events again, and checks every sealed segment that
/// looks changed by stat (what was queued before is checked with it). Returns the tampered ones.
async fn fallback_pass(
    checker: &mut Checker,
    events: &mut WatchEvents,
    pending: &mut HashMap<String, Instant>,
    status: &SharedStatus,
) -> Vec<(Box<SegmentRow>, String)> {
    // Events are dropped for one more debounce interval, so a burst is over (and its files covered by
    // the pass) before events are queued again.
    tokio::time::sleep(DEBOUNCE).await;
    events.resume();
    while let Ok(path) = events.paths.try_recv() {
        pending.entry(path).or_insert_with(Instant::now);
    }
    let found = tokio::task::block_in_place(|| {
        let mut found = Vec::new();
        for path in checker.suspects() {
            if let Verdict::Tampered { row, detail } = checker.check(&path) {
                pending.remove(&path);
                found.push((row, detail));
            }
        }
        found
    });
    with_status(status, |s| {
        if let Some(t) = s.tamper.as_mut() {
            t.fallback_passes += 1;
            t.fallback_found += found.len() as u64;
        }
    });
    tracing::warn!(
        found = found.len(),
        "file events were lost; fallback pass over the sealed segments done"
    );
    found
}

/// A tampered file: alarm (or count, while the tampering alarm is up) and repair request.
fn detected(
    db: &SyncDb,
    status: &SharedStatus,
    rate: &mut Rate,
    repair: &mpsc::UnboundedSender<RepairRequest>,
    row: SegmentRow,
    detail: &str,
) {
    let now = now_ms();
    let (over, distinct) = rate.record(&row.path, Instant::now());
    let window_s = rate.window.as_secs_f64();
    // 0: counted under the tampering alarm; 1: per-file alarm; 2: the tampering alarm starts.
    let what = with_status(status, |s| {
        let t = s.tamper.get_or_insert_with(TamperStatus::default);
        t.files_detected += 1;
        t.last_detected_ms = Some(now);
        t.last_detected_path = Some(row.path.clone());
        match t.attack.as_mut() {
            Some(a) => {
                a.files += 1;
                a.last_ms = now;
                a.last_path = row.path.clone();
                0
            }
            None if over => {
                t.attacks_total += 1;
                t.attack = Some(AttackStatus {
                    started_ms: now,
                    files: distinct as u64,
                    last_ms: now,
                    last_path: row.path.clone(),
                });
                2
            }
            None => 1,
        }
    });
    match what {
        2 => raise_alarm(
            db,
            "tampering",
            None,
            Some(&row.path),
            &format!(
                "CRITICAL: sealed recordings are being modified: {distinct} files within {window_s} s \
                 (latest {}: {detail}); each is repaired from the standby; per-file alarms stop until \
                 {window_s} s pass without a change, the count goes on in the status",
                row.path
            ),
        ),
        1 => raise_alarm(
            db,
            "tamper",
            None,
            Some(&row.path),
            &format!("sealed file changed outside retention: {detail}"),
        ),
        _ => tracing::warn!(path = %row.path, detail, "tampered sealed file (counted under the tampering alarm)"),
    }
    let reference: Option<SealedReference> = repair_reference(db, &row);
    match reference {
        Some(reference) => {
            let _ = repair.send(RepairRequest {
                path: row.path.clone(),
                reference,
                cause: RepairCause::Watch,
            });
        }
        None => tracing::error!(path = %row.path, "no hash to repair against"),
    }
}

/// Ends the tampering alarm after a whole window without a change, with the totals.
fn end_attack_if_quiet(db: &SyncDb, status: &SharedStatus, rate: &Rate) {
    if !rate.quiet_for_window(Instant::now()) {
        return;
    }
    let ended = with_status(status, |s| {
        let t = s.tamper.as_mut()?;
        let a = t.attack.take()?;
        Some((a, t.files_repaired, t.repairs_failed))
    });
    if let Some((a, repaired, failed)) = ended {
        raise_alarm(
            db,
            "tampering_over",
            None,
            Some(&a.last_path),
            &format!(
                "no sealed file changed for {} s: {} files were modified from {} to {} ms; repairs so far: {repaired} done, {failed} failed",
                rate.window.as_secs_f64(),
                a.files,
                a.started_ms,
                a.last_ms
            ),
        );
    }
}
