//! Grouped flushing of open segments: an append notes its file as dirty, and one pass
//! ([`Store::sync_appended`], run by the recorder every `flush_interval_ms`) `fdatasync`s every dirty
//! file in turn, instead of each stream syncing its own file on its own timer. The pass first starts
//! the writeback of every dirty file (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which waits for
//! nothing), so the data of all of them is in flight together and each `fdatasync` then mostly
//! writes the file's metadata and waits for what is already under way: one submission and one wait
//! per pass instead of one per file, at the same guarantee (every file still gets its `fdatasync`). The bound stays what
//! `docs/storage.md` promises: appended data is on disk at most one flush interval (plus the length of
//! one pass) after it was written; a process crash loses nothing that was appended, a power loss at
//! most that interval.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{SegmentId, StorageError, Store};

/// An open segment file appended to since its last flush.
struct Dirty {
    file: Arc<File>,
    path: PathBuf,
}

/// The open segments with appended data not yet flushed.
#[derive(Default)]
pub(crate) struct DirtySegments(Mutex<HashMap<SegmentId, Dirty>>);

impl DirtySegments {
    fn lock(&self) -> MutexGuard<'_, HashMap<SegmentId, Dirty>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// What one pass flushed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub files_synced: usize,
    pub errors: usize,
}

impl Store {
    /// Notes that `file` (segment `id`) has appended data to flush.
    pub(crate) fn note_appended(&self, id: SegmentId, file: &Arc<File>, path: &std::path::Path) {
        self.dirty.lock().entry(id).or_insert_with(|| Dirty {
            file: file.clone(),
            path: path.to_owned(),
        });
    }

    /// Forgets segment `id` (sealed: its own `fsync` flushed it; or removed).
    pub(crate) fn forget_appended(&self, id: SegmentId) {
        self.dirty.lock().remove(&id);
    }

    /// `fdatasync`s every open segment file appended to since the last pass. A file that cannot be
    /// flushed is logged and counted (its stream's next write or its seal reports the disk's error);
    /// the others are still flushed.
    pub fn sync_appended(&self) -> SyncReport {
        let batch: Vec<Dirty> = self.dirty.lock().drain().map(|(_, d)| d).collect();
        let mut report = SyncReport::default();
        for d in &batch {
            // An error here is the disk's and the `fdatasync` below reports it.
            let _ = start_writeback(&d.file);
        }
        for d in batch {
            match d.file.sync_data() {
                Ok(()) => report.files_synced += 1,
                Err(e) => {
                    report.errors += 1;
                    let e = StorageError::io("fdatasync", &d.path, e);
                    tracing::error!(error = %e, "cannot flush an open segment");
                }
            }
        }
        report
    }
}

/// Starts the writeback of `file`'s dirty pages without waiting for it (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`: no durability by itself, the `fdatasync` after it gives that). Neither
/// rustix nor nix offers this call, hence `libc`.
#[allow(unsafe_code)]
fn start_writeback(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `file`), and the
    // call takes no pointers.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
