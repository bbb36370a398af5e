//! The storage layer: the SQLite catalog, the segment files and their fragmented MP4 format ([`mp4`]).
//! This crate is the one owner of the data directory: every entry of it is named in [`layout`], and
//! other processes (viewer, arbiter, checks) read it through [`Reader`], which can only query;
//! catalog writes happen only through [`Store`] in the process that owns the directory (the recorder,
//! and the sync agent for mirrored segments and repairs). See `docs/storage.md`.
//!
//! Invariants:
//! - A segment file is only ever appended to, one complete fragment per write, while its row is `open`.
//! - Sealing = fsync file, record the SHA-256 computed while writing, make the file read-only, fsync the
//!   directory, then mark the row `sealed`. A sealed file is never modified again.
//! - After a crash, [`Store::recover`] cuts every open segment after its last complete fragment and seals it.
//! - Overlapping copies of one stream from different nodes are de-duplicated in the catalog only
//!   ([`timeline`]): a trim is a row, never a change to a file. A seal only marks its row (in the same
//!   statement); the background [`dedup_job`] compares and clears the mark, off the recording path.

mod catalog;
mod check;
pub mod dedup_job;
mod flush;
pub mod frame;
pub mod layout;
mod mirror;
pub mod mp4;
mod reader;
mod recovery;
mod repair;
mod retention;
mod segment;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod timeline;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use catalog::{gaps_between, migrate, query_rows};
pub use catalog::{
    Catalog, EventRow, Gap, RunId, RunRow, SegmentId, SegmentInsert, SegmentProgress, SegmentRow,
    SegmentState, StreamId, StreamRow, Trim,
};
pub use check::{CheckProblem, CheckReport, SealedReference};
pub use dedup_job::{DedupError, DedupJob, DedupPass, DedupStatus, DedupStatusSource};
pub use flush::SyncReport;
pub use layout::{parse_media_path, MediaPathInfo};
pub use layout::{INCOMING_DIR, QUARANTINE_DIR};
pub use mirror::{CutTail, ExpiredStaging, MirrorError, MirrorHolding, MirrorInfo, SealOutcome};
pub use reader::Reader;
pub use recovery::RecoveryReport;
pub use retention::{free_bytes, RetentionPolicy, RetentionReport, StreamLimits};
pub use segment::{sha256_file, NewSegment, SealedSegment, SegmentWriter, PREALLOCATE_BYTES};
pub use timeline::TimelineSegment;

use base::clock::Clock;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("catalog {path}: {source}")]
    Catalog {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "catalog {path}: schema version {found} is newer than this program supports ({supported})"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("catalog {path} is not initialized yet (no recorder has opened it)")]
    NotInitialized { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Mp4 {
        path: PathBuf,
        #[source]
        source: crate::mp4::Mp4Error,
    },
    #[error("unknown stream id {0}")]
    UnknownStream(i64),
    #[error("bad media file name {0}")]
    BadMediaPath(PathBuf),
    /// A request the sync database refuses (a leaf out of order, an unknown head, ...).
    #[error("sync.db: {0}")]
    SyncDb(String),
}

impl StorageError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// The storage of one node: catalog plus media files under one data directory.
pub struct Store {
    data_dir: PathBuf,
    node: String,
    catalog_path: PathBuf,
    catalog: Mutex<Catalog>,
    clock: Arc<dyn Clock>,
    /// Serializes the mirror and restore operations (see `mirror.rs`).
    mirror_lock: Mutex<mirror::MirrorState>,
    /// Progress of open segments not yet written to the catalog ([`Store::flush_progress`]).
    pending_progress: Mutex<HashMap<SegmentId, catalog::SegmentProgress>>,
    /// Open segment files appended to since the last [`Store::sync_appended`].
    dirty: flush::DirtySegments,
    /// Wakes this process's de-duplication job after a seal; counts what it has to do.
    dedup: dedup_job::DedupSignal,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .field("node", &self.node)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir` for node `node`, migrating the catalog.
    pub fn open(data_dir: &Path, node: &str, clock: Arc<dyn Clock>) -> Result<Store, StorageError> {
        std::fs::create_dir_all(data_dir.join(layout::MEDIA_DIR))
            .map_err(|e| StorageError::io("create directory", data_dir, e))?;
        let catalog_path = data_dir.join(layout::CATALOG_FILE);
        let catalog = Catalog::open(&catalog_path)?;
        Ok(Store::with_catalog(
            data_dir,
            node,
            catalog_path,
            catalog,
            clock,
        ))
    }

    /// Opens an existing store for reading; other processes use [`Reader`], which offers queries only.
    pub(crate) fn open_read_only(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StorageError> {
        let catalog_path = data_dir.join(layout::CATALOG_FILE);
        let catalog = Catalog::open_read_only(&catalog_path)?;
        Ok(Store::with_catalog(
            data_dir,
            "",
            catalog_path,
            catalog,
            clock,
        ))
    }

    fn with_catalog(
        data_dir: &Path,
        node: &str,
        catalog_path: PathBuf,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
    ) -> Store {
        Store {
            data_dir: data_dir.to_owned(),
            node: node.to_owned(),
            catalog_path,
            catalog: Mutex::new(catalog),
            clock,
            mirror_lock: Mutex::new(mirror::MirrorState::default()),
            pending_progress: Mutex::new(HashMap::new()),
            dirty: flush::DirtySegments::default(),
            dedup: dedup_job::DedupSignal::default(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn now_utc_ms(&self) -> i64 {
        self.clock.now_utc_ms()
    }

    /// Absolute path of a segment given its catalog (relative) path.
    pub fn absolute_path(&self, relative: &str) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// The catalog, locked. Keep the guard short: recording threads share it.
    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        match self.catalog.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn catalog_path(&self) -> &Path {
        &self.catalog_path
    }

    /// Notes an open segment's progress after an append; written by the next [`Self::flush_progress`].
    pub(crate) fn queue_progress(&self, id: SegmentId, progress: catalog::SegmentProgress) {
        lock_map(&self.pending_progress).insert(id, progress);
    }

    /// Drops queued progress of a segment that was sealed or removed (its row has the final values).
    pub(crate) fn forget_progress(&self, id: SegmentId) {
        lock_map(&self.pending_progress).remove(&id);
    }

    /// Writes the queued progress of every open segment in one transaction: the catalog learns of
    /// appended fragments in batches (the recorder flushes every second), not with one write per
    /// fragment and stream. Open rows may lag their files by that much; the files are the truth for
    /// open segments (recovery scans them, the sync agent reads their length). Returns the rows written.
    pub fn flush_progress(&self) -> Result<usize, StorageError> {
        let batch: Vec<_> = lock_map(&self.pending_progress).drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        self.catalog().update_open_segments(&batch)?;
        Ok(batch.len())
    }

    /// Finds or creates the stream row for `camera`/`kind`.
    pub fn ensure_stream(&self, camera: &str, kind: &str) -> Result<StreamId, StorageError> {
        let now_ms = self.now_utc_ms();
        self.catalog().ensure_stream(camera, kind, now_ms)
    }

    /// Appends an event to the catalog's event log; failures are logged, never fatal.
    pub fn log_event(&self, stream: Option<StreamId>, kind: &str, message: &str) {
        let now_ms = self.now_utc_ms();
        if let Err(e) = self.catalog().log_event(now_ms, stream, kind, message) {
            tracing::error!(error = %e, kind, message, "could not write event to catalog");
        }
    }

    /// Segments of `stream` overlapping `[start_ms, end_ms)`, oldest first (open and sealed only).
    pub fn segments_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        self.catalog().segments_in_range(stream, start_ms, end_ms)
    }

    /// Spans of `[start_ms, end_ms)` in which `stream` has no recording.
    pub fn gaps_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Gap>, StorageError> {
        let segments = self.segments_in_range(stream, start_ms, end_ms)?;
        Ok(catalog::gaps_between(&segments, start_ms, end_ms))
    }
}

fn lock_map<K, V>(m: &Mutex<HashMap<K, V>>) -> MutexGuard<'_, HashMap<K, V>> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
