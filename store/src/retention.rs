//! Retention: delete the oldest sealed segments by age and bytes per stream, and globally to keep a
//! free-disk floor. Open segments are never deleted. Every deletion is written to the event log and the
//! row is kept with state `deleted`, so the catalog remembers what existed.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{SegmentRow, SegmentState, StorageError, Store, StreamId};

/// Per-stream limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    pub streams: HashMap<StreamId, StreamLimits>,
    /// Free bytes to keep on the data directory's file system.
    pub min_free_bytes: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RetentionReport {
    pub deleted_by_age: usize,
    pub deleted_by_bytes: usize,
    pub deleted_for_free_space: usize,
    pub bytes_freed: u64,
    /// The floor could not be met with every sealed segment gone.
    pub free_floor_unmet: bool,
    /// Free bytes after the pass (as estimated from what was deleted), when the floor was checked.
    pub free_bytes_after: Option<u64>,
}

/// Free bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[derive(Clone, Copy)]
enum Reason {
    Age,
    Bytes,
    FreeSpace,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "age",
            Reason::Bytes => "bytes",
            Reason::FreeSpace => "free-space floor",
        }
    }
}

impl Store {
    /// One retention pass. `free_bytes_now` reads the file system's free space (injectable for tests).
    pub fn retention_pass(
        &self,
        policy: &RetentionPolicy,
        free_bytes_now: &dyn Fn() -> std::io::Result<u64>,
    ) -> Result<RetentionReport, StorageError> {
        let mut report = RetentionReport::default();
        let now_ms = self.now_utc_ms();
        let sealed = self.catalog().segments_in_state(SegmentState::Sealed)?;
        let open = self.catalog().segments_in_state(SegmentState::Open)?;

        let mut by_stream: HashMap<StreamId, Vec<&SegmentRow>> = HashMap::new();
        for s in &sealed {
            by_stream.entry(s.stream_id).or_default().push(s);
        }
        let mut open_bytes: HashMap<StreamId, u64> = HashMap::new();
        for s in &open {
            *open_bytes.entry(s.stream_id).or_default() += s.size_bytes.max(0) as u64;
        }

        let mut deleted = std::collections::HashSet::new();
        for (stream, segs) in &by_stream {
            let limits = policy.streams.get(stream).copied().unwrap_or_default();
            let mut total: u64 = segs.iter().map(|s| s.size_bytes.max(0) as u64).sum::<u64>()
                + open_bytes.get(stream).copied().unwrap_or(0);
            for s in segs {
                let too_old = limits.max_age_ms.is_some_and(|max| s.end_ms < now_ms - max);
                let too_big = limits.max_bytes.is_some_and(|max| total > max);
                let reason = match (too_old, too_big) {
                    (true, _) => Reason::Age,
                    (false, true) => Reason::Bytes,
                    (false, false) => break,
                };
                if self.delete_segment(s, reason)? {
                    total = total.saturating_sub(s.size_bytes.max(0) as u64);
                    report.bytes_freed += s.size_bytes.max(0) as u64;
                    match reason {
                        Reason::Age => report.deleted_by_age += 1,
                        _ => report.deleted_by_bytes += 1,
                    }
                }
                deleted.insert(s.id);
            }
        }

        if policy.min_free_bytes > 0 {
            let mut free =
                free_bytes_now().map_err(|e| StorageError::io("statvfs", &self.data_dir, e))?;
            let mut rest = sealed.iter().filter(|s| !deleted.contains(&s.id));
            while free < policy.min_free_bytes {
                let Some(s) = rest.next() else {
                    report.free_floor_unmet = true;
                    break;
                };
                if self.delete_segment(s, Reason::FreeSpace)? {
                    report.deleted_for_free_space += 1;
                    report.bytes_freed += s.size_bytes.max(0) as u64;
                }
                // The file system may report freed blocks late; count what was freed instead.
                free = free.saturating_add(s.size_bytes.max(0) as u64);
            }
            report.free_bytes_after = Some(free);
        }
        Ok(report)
    }

    /// Marks one sealed segment's row `deleted` and logs the event, then deletes its file. Returns false
    /// if the file was already gone.
    ///
    /// The row is marked before the file is unlinked, so whoever sees the file disappear (the sync
    /// agent's tamper watch) already finds the row `deleted`: a deletion with the row still `sealed` was
    /// not made by retention. If the unlink fails the row is set back to `sealed`; after a crash between
    /// the two, start-up recovery finishes the deletion ((`finish_deletion`)).
    fn delete_segment(&self, s: &SegmentRow, reason: Reason) -> Result<bool, StorageError> {
        let path = self.data_dir.join(&s.path);
        let now_ms = self.now_utc_ms();
        let cat = self.catalog();
        cat.set_segment_state(s.id, SegmentState::Deleted, now_ms)?;
        cat.log_event(
            now_ms,
            Some(s.stream_id),
            "retention",
            &format!(
                "deleted {} ({} bytes, {}..{} ms, sha256 {}) by {}",
                s.path,
                s.size_bytes,
                s.start_ms,
                s.end_ms,
                s.sha256.as_deref().unwrap_or("-"),
                reason.as_str()
            ),
        )?;
        drop(cat);
        let existed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                self.catalog()
                    .set_segment_state(s.id, SegmentState::Sealed, now_ms)?;
                return Err(StorageError::io("remove", &path, e));
            }
        };
        tracing::info!(path = %s.path, bytes = s.size_bytes, reason = reason.as_str(), "retention deleted segment");
        Ok(existed)
    }

    /// Deletes the file of a row retention marked `deleted` whose unlink did not happen (a crash between
    /// marking the row and unlinking the file); called by start-up recovery.
    pub(crate) fn finish_deletion(&self, rel: &str) -> Result<(), StorageError> {
        let path = self.data_dir.join(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.log_event(
                    None,
                    "retention",
                    &format!("{rel}: deletion cut short by a stop finished"),
                );
                tracing::info!(path = %rel, "finished a retention deletion cut short by a stop");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("remove", &path, e)),
        }
    }
}
