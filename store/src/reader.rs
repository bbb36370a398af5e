//! [`Reader`]: read-only access to a data directory, for every process but the one that owns it (the
//! `nvr check` command, the web viewer, the arbiter, benchmarks and tests). It opens the catalog with
//! SQLite's read-only flag and offers queries only: nothing written through it can exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base::clock::Clock;

use crate::catalog::RunRow;
use crate::{
    CheckReport, EventRow, Gap, SegmentRow, SegmentState, StorageError, Store, StreamId, StreamRow,
};

/// See the module documentation.
#[derive(Debug)]
pub struct Reader {
    store: Store,
}

impl Reader {
    /// Opens the catalog of `data_dir` read-only; an uninitialized catalog (no recorder has opened it
    /// yet) is [`StorageError::NotInitialized`].
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<Reader, StorageError> {
        Ok(Reader {
            store: Store::open_read_only(data_dir, clock)?,
        })
    }

    /// Opens the catalog like [`Reader::open`], or `None` while it is not there yet: no catalog file, or
    /// one the recorder has created but not yet initialized (a reader started beside a recorder that
    /// is starting up sees both, one after the other).
    pub fn open_if_ready(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Reader>, StorageError> {
        if !data_dir.join(crate::layout::CATALOG_FILE).exists() {
            return Ok(None);
        }
        match Reader::open(data_dir, clock) {
            Ok(reader) => Ok(Some(reader)),
            Err(StorageError::NotInitialized { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.store.data_dir()
    }

    /// Absolute path of a segment given its catalog (relative) path.
    pub fn absolute_path(&self, relative: &str) -> PathBuf {
        self.store.absolute_path(relative)
    }

    pub fn streams(&self) -> Result<Vec<StreamRow>, StorageError> {
        self.store.catalog().streams()
    }

    pub fn find_stream(&self, camera: &str, kind: &str) -> Result<Option<StreamId>, StorageError> {
        self.store.catalog().find_stream(camera, kind)
    }

    /// Recording runs of a stream, oldest first.
    pub fn runs(&self, stream: StreamId) -> Result<Vec<RunRow>, StorageError> {
        self.store.catalog().runs(stream)
    }

    /// Segments of `stream` overlapping `[start_ms, end_ms)`, oldest first (open and sealed only).
    pub fn segments_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        self.store.segments_in_range(stream, start_ms, end_ms)
    }

    /// Spans of `[start_ms, end_ms)` in which `stream` has no recording.
    pub fn gaps_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Gap>, StorageError> {
        self.store.gaps_in_range(stream, start_ms, end_ms)
    }

    /// The de-duplicated timeline of `stream` over `[start_ms, end_ms)`: its segments with the trims
    /// in effect on each (see [`Store::timeline`]); playback and frame counting skip what is trimmed.
    pub fn timeline(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<crate::TimelineSegment>, StorageError> {
        self.store.timeline(stream, start_ms, end_ms)
    }

    /// Every segment row of a stream, whatever its state.
    pub fn stream_segments(&self, stream: StreamId) -> Result<Vec<SegmentRow>, StorageError> {
        self.store.catalog().stream_segments(stream)
    }

    pub fn segments_in_state(&self, state: SegmentState) -> Result<Vec<SegmentRow>, StorageError> {
        self.store.catalog().segments_in_state(state)
    }

    pub fn segment_by_path(&self, path: &str) -> Result<Option<SegmentRow>, StorageError> {
        self.store.catalog().segment_by_path(path)
    }

    /// Events after `after_id`, oldest first, at most `limit`.
    pub fn events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRow>, StorageError> {
        self.store.catalog().events(after_id, limit)
    }

    /// Events of `stream` in `[start_ms, end_ms)`, oldest first, at most `limit`.
    pub fn stream_events_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StorageError> {
        self.store
            .catalog()
            .stream_events_in_range(stream, start_ms, end_ms, limit)
    }

    /// Compares catalog and files (see [`Store::check`]).
    pub fn check(&self, rehash: bool) -> Result<CheckReport, StorageError> {
        self.store.check(rehash)
    }

    /// Checks every sealed segment of `node` against the reference `reference` gives for it, re-hashing
    /// each file (see [`Store::scrub_pass_against`]); the damaged ones with what is wrong.
    pub fn check_against(
        &self,
        node: &str,
        reference: &dyn Fn(&SegmentRow) -> Option<crate::SealedReference>,
    ) -> Result<Vec<(SegmentRow, String)>, StorageError> {
        Ok(self
            .store
            .scrub_pass_against(Some(node), u64::MAX, reference)?
            .1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_owner_wrote_and_refuses_an_uninitialized_catalog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(base::clock::ManualClock::new(1_000));
        assert!(matches!(
            Reader::open(dir.path(), clock.clone()),
            Err(StorageError::NotInitialized { .. }) | Err(StorageError::Catalog { .. })
        ));
        assert!(Reader::open_if_ready(dir.path(), clock.clone())
            .expect("no catalog yet")
            .is_none());
        // Created but not initialized (the moment a recorder starting up has only opened the file).
        drop(
            rusqlite::Connection::open(dir.path().join(crate::layout::CATALOG_FILE))
                .expect("create"),
        );
        assert!(Reader::open_if_ready(dir.path(), clock.clone())
            .expect("uninitialized catalog")
            .is_none());
        let owner = Store::open(dir.path(), "node-a", clock.clone()).expect("store");
        let id = owner.ensure_stream("cam", "main").expect("stream");
        owner.log_event(Some(id), "test", "hello");
        let reader = Reader::open_if_ready(dir.path(), clock)
            .expect("reader")
            .expect("initialized");
        assert_eq!(reader.find_stream("cam", "main").expect("find"), Some(id));
        assert_eq!(reader.streams().expect("streams").len(), 1);
        assert_eq!(reader.events(0, 10).expect("events")[0].message, "hello");
        assert!(reader.runs(id).expect("runs").is_empty());
        assert!(reader.check(true).expect("check").ok());
    }

    #[test]
    fn a_streams_events_over_a_range_oldest_first_and_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(base::clock::ManualClock::new(1_000));
        let owner = Store::open(dir.path(), "node-a", clock.clone()).expect("store");
        let (cam, other) = (
            owner.ensure_stream("cam", "main").expect("stream"),
            owner.ensure_stream("cam", "sub").expect("stream"),
        );
        let cat = owner.catalog();
        for (t, s, m) in [
            (500, Some(cam), "before"),
            (1_000, Some(cam), "a"),
            (1_500, Some(other), "other"),
            (1_700, None, "node-wide"),
            (2_000, Some(cam), "b"),
            (2_500, Some(cam), "c"),
            (3_000, Some(cam), "at the end"),
        ] {
            cat.log_event(t, s, "test", m).expect("event");
        }
        let reader = Reader::open(dir.path(), clock).expect("reader");
        let messages = |limit| -> Vec<String> {
            reader
                .stream_events_in_range(cam, 1_000, 3_000, limit)
                .expect("events")
                .into_iter()
                .map(|e| e.message)
                .collect()
        };
        assert_eq!(messages(10), ["a", "b", "c"]);
        assert_eq!(messages(2), ["a", "b"]);
    }
}
