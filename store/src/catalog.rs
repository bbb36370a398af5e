//! The SQLite catalog: schema, migrations and queries.
//!
//! Opened in WAL mode so readers (checks, the sync agent, the viewer) never block the recorder. The schema
//! version is `PRAGMA user_version`; [`MIGRATIONS`] upgrades older catalogs in one transaction each.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;

use super::StorageError;

mod dedup_marks;
mod trims;
pub use dedup_marks::DedupMark;
pub use trims::Trim;
pub(crate) use trims::TrimInsert;

/// Schema migrations; entry `i` upgrades version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE streams (
    id          INTEGER PRIMARY KEY,
    camera      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (camera, kind)
);
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams (id),
    node        TEXT NOT NULL,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER,
    end_reason  TEXT
);
CREATE INDEX runs_stream_start ON runs (stream_id, start_ms);
CREATE TABLE segments (
    id                 INTEGER PRIMARY KEY,
    stream_id          INTEGER NOT NULL REFERENCES streams (id),
    run_id             INTEGER REFERENCES runs (id),
    node               TEXT NOT NULL,
    path               TEXT NOT NULL UNIQUE,
    state              TEXT NOT NULL CHECK (state IN ('open', 'sealed', 'missing', 'damaged', 'deleted')),
    start_ms           INTEGER NOT NULL,
    end_ms             INTEGER NOT NULL,
    media_duration_ms  INTEGER NOT NULL,
    frames             INTEGER NOT NULL,
    fragments          INTEGER NOT NULL,
    size_bytes         INTEGER NOT NULL,
    sha256             TEXT,
    video_codec        TEXT NOT NULL,
    width              INTEGER NOT NULL,
    height             INTEGER NOT NULL,
    audio_codec        TEXT,
    created_ms         INTEGER NOT NULL,
    sealed_ms          INTEGER,
    deleted_ms         INTEGER
);
CREATE INDEX segments_stream_start ON segments (stream_id, start_ms);
CREATE INDEX segments_state ON segments (state);
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    stream_id   INTEGER REFERENCES streams (id),
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX events_time ON events (time_ms);
"#,
    // 1 -> 2: the ownership epoch (fencing token of the arbiter) under which a segment was written;
    // NULL for segments written without an arbiter's promotion.
    r#"
ALTER TABLE segments ADD COLUMN epoch INTEGER;
"#,
    // 2 -> 3: trims of de-duplication (`store::timeline`): a span of a segment whose frames another
    // segment (`kept_segment_id`) holds too, in 90 kHz units of decode time since the segment's first
    // video frame, `[start_90k, end_90k)`. Files are never rewritten; readers skip what is trimmed.
    r#"
CREATE TABLE trims (
    id               INTEGER PRIMARY KEY,
    segment_id       INTEGER NOT NULL REFERENCES segments (id),
    kept_segment_id  INTEGER NOT NULL REFERENCES segments (id),
    start_90k        INTEGER NOT NULL,
    end_90k          INTEGER NOT NULL,
    frames           INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL,
    UNIQUE (segment_id, kept_segment_id, start_90k)
);
CREATE INDEX trims_segment ON trims (segment_id);
"#,
    // 3 -> 4: segments sealed but not yet compared with overlapping copies of other nodes
    // (`store::dedup_job`). A seal sets the mark in its own statement; the de-duplication job clears it.
    // It counts seals, so a mark set again while the job works on the segment is not lost.
    r#"
ALTER TABLE segments ADD COLUMN dedup_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX segments_dedup_pending ON segments (id) WHERE dedup_pending > 0;
"#,
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct StreamId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RunId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SegmentId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    /// Being written by its node.
    Open,
    /// Complete, hashed, read-only.
    Sealed,
    /// The catalog has a row but the file is gone.
    Missing,
    /// The file exists but holds no readable MP4 (kept untouched for inspection).
    Damaged,
    /// Removed by retention.
    Deleted,
}

impl SegmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Open => "open",
            SegmentState::Sealed => "sealed",
            SegmentState::Missing => "missing",
            SegmentState::Damaged => "damaged",
            SegmentState::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "open" => SegmentState::Open,
            "sealed" => SegmentState::Sealed,
            "missing" => SegmentState::Missing,
            "damaged" => SegmentState::Damaged,
            "deleted" => SegmentState::Deleted,
            other => {
                return Err(rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("unknown segment state {other:?}").into(),
                ))
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamRow {
    pub id: StreamId,
    pub camera: String,
    pub kind: String,
}

/// One segment as the catalog knows it. `path` is relative to the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRow {
    pub id: SegmentId,
    pub stream_id: StreamId,
    pub run_id: Option<RunId>,
    pub node: String,
    pub path: String,
    pub state: SegmentState,
    pub start_ms: i64,
    pub end_ms: i64,
    pub media_duration_ms: i64,
    pub frames: i64,
    pub fragments: i64,
    pub size_bytes: i64,
    pub sha256: Option<String>,
    pub video_codec: String,
    pub width: i64,
    pub height: i64,
    pub audio_codec: Option<String>,
    /// The arbiter's epoch under which `node` wrote this segment (`None`: no arbiter promotion).
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRow {
    pub id: RunId,
    pub stream_id: StreamId,
    pub node: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub time_ms: i64,
    pub stream_id: Option<StreamId>,
    pub kind: String,
    pub message: String,
}

/// A span with no recording, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Values of a new (open) segment row.
#[derive(Debug, Clone)]
pub struct SegmentInsert<'a> {
    pub stream_id: StreamId,
    pub run_id: Option<RunId>,
    pub node: &'a str,
    pub path: &'a str,
    pub state: SegmentState,
    pub start_ms: i64,
    pub video_codec: &'a str,
    pub width: i64,
    pub height: i64,
    pub audio_codec: Option<&'a str>,
    pub created_ms: i64,
}

/// Progress or final values of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentProgress {
    pub end_ms: i64,
    pub media_duration_ms: i64,
    pub frames: i64,
    pub fragments: i64,
    pub size_bytes: i64,
}

const SEGMENT_COLUMNS: &str = "id, stream_id, run_id, node, path, state, start_ms, end_ms, \
     media_duration_ms, frames, fragments, size_bytes, sha256, video_codec, width, height, audio_codec, \
     epoch";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: RunId(r.get(0)?),
        stream_id: StreamId(r.get(1)?),
        node: r.get(2)?,
        start_ms: r.get(3)?,
        end_ms: r.get(4)?,
        end_reason: r.get(5)?,
    })
}

fn segment_from_row(row: &Row<'_>) -> rusqlite::Result<SegmentRow> {
    let state: String = row.get(5)?;
    Ok(SegmentRow {
        id: SegmentId(row.get(0)?),
        stream_id: StreamId(row.get(1)?),
        run_id: row.get::<_, Option<i64>>(2)?.map(RunId),
        node: row.get(3)?,
        path: row.get(4)?,
        state: SegmentState::parse(&state)?,
        start_ms: row.get(6)?,
        end_ms: row.get(7)?,
        media_duration_ms: row.get(8)?,
        frames: row.get(9)?,
        fragments: row.get(10)?,
        size_bytes: row.get(11)?,
        sha256: row.get(12)?,
        video_codec: row.get(13)?,
        width: row.get(14)?,
        height: row.get(15)?,
        audio_codec: row.get(16)?,
        epoch: row
            .get::<_, Option<i64>>(17)?
            .and_then(|e| u64::try_from(e).ok()),
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        time_ms: r.get(1)?,
        stream_id: r.get::<_, Option<i64>>(2)?.map(StreamId),
        kind: r.get(3)?,
        message: r.get(4)?,
    })
}

/// The catalog connection.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

impl Catalog {
    /// Opens or creates the catalog read-write and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Catalog, StorageError> {
        let conn = Connection::open(path).map_err(|e| err(path, e))?;
        let mut catalog = Catalog {
            conn,
            path: path.to_owned(),
        };
        catalog.configure()?;
        catalog.migrate()?;
        Ok(catalog)
    }

    /// Opens an existing catalog read-only (no migration; a newer schema is refused).
    pub fn open_read_only(path: &Path) -> Result<Catalog, StorageError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(path, e))?;
        let catalog = Catalog {
            conn,
            path: path.to_owned(),
        };
        catalog
            .conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err(path, e))?;
        let version = catalog.schema_version()?;
        if version == 0 {
            return Err(StorageError::NotInitialized {
                path: path.to_owned(),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StorageError::SchemaTooNew {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(catalog)
    }

    fn e(&self, source: rusqlite::Error) -> StorageError {
        err(&self.path, source)
    }

    /// Runs one statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StorageError> {
        self.conn.execute(sql, params).map_err(|e| self.e(e))
    }

    fn query_row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        self.conn.query_row(sql, params, f).map_err(|e| self.e(e))
    }

    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StorageError> {
        query_rows(&self.conn, &self.path, sql, params, f)
    }

    fn configure(&self) -> Result<(), StorageError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| self.e(e))?;
        self.enable_wal()?;
        // Media durability comes from fsync of the files; the catalog can be rebuilt from them, so
        // NORMAL (durable at checkpoints, never corrupt) is the right trade-off in WAL mode.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.e(e))?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(|e| self.e(e))?;
        Ok(())
    }

    /// Switches to WAL mode unless it already is. Switching needs an exclusive lock, and SQLite answers
    /// `SQLITE_BUSY` at once (without the busy handler) while another process opens the same new
    /// database: the switch is retried for up to the busy timeout.
    fn enable_wal(&self) -> Result<(), StorageError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mode: Result<String, _> =
                self.conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
            match mode {
                Ok(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(m) => {
                    return Err(self.e(rusqlite::Error::InvalidParameterName(format!(
                        "journal_mode stays {m}, WAL is required"
                    ))))
                }
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(self.e(e)),
            }
        }
    }

    pub fn schema_version(&self) -> Result<i64, StorageError> {
        self.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    fn migrate(&mut self) -> Result<(), StorageError> {
        let path = self.path.clone();
        migrate(&mut self.conn, MIGRATIONS, &path, "catalog")
    }

    pub fn ensure_stream(
        &self,
        camera: &str,
        kind: &str,
        now_ms: i64,
    ) -> Result<StreamId, StorageError> {
        self.execute(
            "INSERT INTO streams (camera, kind, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (camera, kind) DO NOTHING",
            params![camera, kind, now_ms],
        )?;
        self.query_row(
            "SELECT id FROM streams WHERE camera = ?1 AND kind = ?2",
            params![camera, kind],
            |r| r.get(0),
        )
        .map(StreamId)
    }

    pub fn streams(&self) -> Result<Vec<StreamRow>, StorageError> {
        self.rows(
            "SELECT id, camera, kind FROM streams ORDER BY camera, kind",
            [],
            |r| {
                Ok(StreamRow {
                    id: StreamId(r.get(0)?),
                    camera: r.get(1)?,
                    kind: r.get(2)?,
                })
            },
        )
    }

    pub fn find_stream(&self, camera: &str, kind: &str) -> Result<Option<StreamId>, StorageError> {
        self.conn
            .query_row(
                "SELECT id FROM streams WHERE camera = ?1 AND kind = ?2",
                params![camera, kind],
                |r| r.get(0),
            )
            .optional()
            .map(|o| o.map(StreamId))
            .map_err(|e| self.e(e))
    }

    pub fn insert_run(
        &self,
        stream: StreamId,
        node: &str,
        start_ms: i64,
    ) -> Result<RunId, StorageError> {
        self.execute(
            "INSERT INTO runs (stream_id, node, start_ms) VALUES (?1, ?2, ?3)",
            params![stream.0, node, start_ms],
        )?;
        Ok(RunId(self.conn.last_insert_rowid()))
    }

    pub fn end_run(&self, run: RunId, end_ms: i64, reason: &str) -> Result<(), StorageError> {
        self.execute(
            "UPDATE runs SET end_ms = ?2, end_reason = ?3 WHERE id = ?1",
            params![run.0, end_ms, reason],
        )?;
        Ok(())
    }

    /// Runs of `node` that were never ended (the process died while recording).
    pub fn open_runs(&self, node: &str) -> Result<Vec<RunRow>, StorageError> {
        self.rows(
            "SELECT id, stream_id, node, start_ms, end_ms, end_reason FROM runs
             WHERE node = ?1 AND end_ms IS NULL ORDER BY id",
            params![node],
            run_from_row,
        )
    }

    /// Runs of `stream`, oldest first.
    pub fn runs(&self, stream: StreamId) -> Result<Vec<RunRow>, StorageError> {
        self.rows(
            "SELECT id, stream_id, node, start_ms, end_ms, end_reason FROM runs
             WHERE stream_id = ?1 ORDER BY start_ms, id",
            params![stream.0],
            run_from_row,
        )
    }

    /// The latest end of the segments of `run` (or `None` if it has none).
    pub fn run_last_end_ms(&self, run: RunId) -> Result<Option<i64>, StorageError> {
        self.query_row(
            "SELECT MAX(end_ms) FROM segments WHERE run_id = ?1 AND state != 'deleted'",
            params![run.0],
            |r| r.get(0),
        )
    }

    pub fn insert_segment(&self, s: &SegmentInsert<'_>) -> Result<SegmentId, StorageError> {
        self.execute(
            "INSERT INTO segments (stream_id, run_id, node, path, state, start_ms, end_ms,
                     media_duration_ms, frames, fragments, size_bytes, video_codec, width, height,
                     audio_codec, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, 0, 0, 0, ?7, ?8, ?9, ?10, ?11)",
            params![
                s.stream_id.0,
                s.run_id.map(|r| r.0),
                s.node,
                s.path,
                s.state.as_str(),
                s.start_ms,
                s.video_codec,
                s.width,
                s.height,
                s.audio_codec,
                s.created_ms
            ],
        )?;
        Ok(SegmentId(self.conn.last_insert_rowid()))
    }

    /// Records the arbiter's epoch under which segment `id` is written.
    pub fn set_segment_epoch(&self, id: SegmentId, epoch: u64) -> Result<(), StorageError> {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.execute(
            "UPDATE segments SET epoch = ?2 WHERE id = ?1",
            params![id.0, epoch],
        )
        .map(|_| ())
    }

    /// Writes the progress of open segments, all in one transaction (sealed rows are left alone).
    pub fn update_open_segments(
        &self,
        progress: &[(SegmentId, SegmentProgress)],
    ) -> Result<(), StorageError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.e(e))?;
        for (id, p) in progress {
            tx.prepare_cached(
                "UPDATE segments SET end_ms = ?2, media_duration_ms = ?3, frames = ?4, fragments = ?5,
                     size_bytes = ?6 WHERE id = ?1 AND state = 'open'",
            )
            .and_then(|mut s| {
                s.execute(params![id.0, p.end_ms, p.media_duration_ms, p.frames, p.fragments, p.size_bytes])
            })
            .map_err(|e| self.e(e))?;
        }
        tx.commit().map_err(|e| self.e(e))
    }

    /// Marks the row `sealed` with its final values, and to be de-duplicated (`dedup_pending`) in the
    /// same statement.
    pub fn seal_segment(
        &self,
        id: SegmentId,
        p: &SegmentProgress,
        sha256_hex: &str,
        sealed_ms: i64,
    ) -> Result<(), StorageError> {
        self.execute(
                "UPDATE segments SET state = 'sealed', end_ms = ?2, media_duration_ms = ?3, frames = ?4,
                     fragments = ?5, size_bytes = ?6, sha256 = ?7, sealed_ms = ?8,
                     dedup_pending = dedup_pending + 1 WHERE id = ?1",
                params![
                    id.0,
                    p.end_ms,
                    p.media_duration_ms,
                    p.frames,
                    p.fragments,
                    p.size_bytes,
                    sha256_hex,
                    sealed_ms
                ],
            )?;
        Ok(())
    }

    pub fn set_segment_state(
        &self,
        id: SegmentId,
        state: SegmentState,
        at_ms: i64,
    ) -> Result<(), StorageError> {
        let deleted_ms = (state == SegmentState::Deleted).then_some(at_ms);
        self.execute(
            "UPDATE segments SET state = ?2, deleted_ms = COALESCE(?3, deleted_ms) WHERE id = ?1",
            params![id.0, state.as_str(), deleted_ms],
        )?;
        Ok(())
    }

    /// Sets a sealed segment's SHA-256 and size (a repair puts a rewritten row back to the signed log).
    pub fn set_segment_hash(
        &self,
        id: SegmentId,
        sha256_hex: &str,
        size_bytes: i64,
    ) -> Result<(), StorageError> {
        self.execute(
            "UPDATE segments SET sha256 = ?2, size_bytes = ?3 WHERE id = ?1",
            params![id.0, sha256_hex, size_bytes],
        )?;
        Ok(())
    }

    /// Removes a segment row that never held a complete fragment.
    pub fn delete_segment_row(&self, id: SegmentId) -> Result<(), StorageError> {
        self.execute("DELETE FROM segments WHERE id = ?1", params![id.0])?;
        Ok(())
    }

    fn query_segments(
        &self,
        where_clause: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE {where_clause}");
        self.rows(&sql, params, segment_from_row)
    }

    /// Open and sealed segments of `stream` overlapping `[start_ms, end_ms)`, oldest first.
    pub fn segments_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments(
            "stream_id = ?1 AND state IN ('open', 'sealed') AND start_ms < ?3 AND end_ms > ?2
             ORDER BY start_ms, id",
            params![stream.0, start_ms, end_ms],
        )
    }

    /// Segments in `state`, oldest first.
    pub fn segments_in_state(&self, state: SegmentState) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments("state = ?1 ORDER BY start_ms, id", params![state.as_str()])
    }

    /// Open segments written by `node`.
    pub fn open_segments(&self, node: &str) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments("state = 'open' AND node = ?1 ORDER BY id", params![node])
    }

    /// Segments recorded by `node` with id greater than `after_id` in state open, sealed or deleted, by id,
    /// at most `limit` (the sync agent walks them incrementally).
    pub fn node_segments_after(
        &self,
        node: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments(
            "node = ?1 AND id > ?2 AND state IN ('open', 'sealed', 'deleted') ORDER BY id LIMIT ?3",
            params![node, after_id, limit],
        )
    }

    /// Every segment of `stream` (any state), oldest first.
    pub fn stream_segments(&self, stream: StreamId) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments("stream_id = ?1 ORDER BY start_ms, id", params![stream.0])
    }

    pub fn segment(&self, id: SegmentId) -> Result<Option<SegmentRow>, StorageError> {
        Ok(self
            .query_segments("id = ?1", params![id.0])?
            .into_iter()
            .next())
    }

    /// The row of `path` in any state (paths are unique).
    pub fn segment_by_path(&self, path: &str) -> Result<Option<SegmentRow>, StorageError> {
        Ok(self
            .query_segments("path = ?1", params![path])?
            .into_iter()
            .next())
    }

    /// Segments of `node` in `state`, oldest first.
    pub fn node_segments_in_state(
        &self,
        node: &str,
        state: SegmentState,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments(
            "node = ?1 AND state = ?2 ORDER BY start_ms, id",
            params![node, state.as_str()],
        )
    }

    /// Runs `f` with `synchronous = FULL`, so what it commits is on disk when it returns (the catalog
    /// otherwise runs with `NORMAL`: durable at checkpoints). For rows another node is told about.
    pub fn durably<T>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.e(e))?;
        let r = f(self);
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.e(e))?;
        r
    }

    /// Inserts a `sealed` row for a file that is already complete (mirrored or restored), or turns the
    /// existing row of the same path (e.g. `deleted`, `missing`) into that sealed row. `epoch`: the
    /// arbiter's epoch under which the origin wrote it (its own catalog row's), if any.
    pub fn put_sealed_segment(
        &self,
        s: &SegmentInsert<'_>,
        p: &SegmentProgress,
        sha256_hex: &str,
        sealed_ms: i64,
        epoch: Option<u64>,
    ) -> Result<SegmentId, StorageError> {
        let epoch = epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
        self.execute(
            "INSERT INTO segments (stream_id, run_id, node, path, state, start_ms, end_ms,
                     media_duration_ms, frames, fragments, size_bytes, sha256, video_codec, width,
                     height, audio_codec, created_ms, sealed_ms, epoch)
                 VALUES (?1, ?2, ?3, ?4, 'sealed', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18)
                 ON CONFLICT (path) DO UPDATE SET stream_id = excluded.stream_id,
                     run_id = excluded.run_id, node = excluded.node, state = 'sealed',
                     start_ms = excluded.start_ms, end_ms = excluded.end_ms,
                     media_duration_ms = excluded.media_duration_ms, frames = excluded.frames,
                     fragments = excluded.fragments, size_bytes = excluded.size_bytes,
                     sha256 = excluded.sha256, video_codec = excluded.video_codec,
                     width = excluded.width, height = excluded.height,
                     audio_codec = excluded.audio_codec, sealed_ms = excluded.sealed_ms,
                     deleted_ms = NULL, epoch = excluded.epoch",
            params![
                s.stream_id.0,
                s.run_id.map(|r| r.0),
                s.node,
                s.path,
                s.start_ms,
                p.end_ms,
                p.media_duration_ms,
                p.frames,
                p.fragments,
                p.size_bytes,
                sha256_hex,
                s.video_codec,
                s.width,
                s.height,
                s.audio_codec,
                s.created_ms,
                sealed_ms,
                epoch
            ],
        )?;
        self.query_row(
            "SELECT id FROM segments WHERE path = ?1",
            params![s.path],
            |r| r.get(0),
        )
        .map(SegmentId)
    }

    /// Every catalog path (any state), for matching files against rows.
    pub fn all_segment_paths(
        &self,
    ) -> Result<Vec<(SegmentId, String, SegmentState)>, StorageError> {
        self.rows("SELECT id, path, state FROM segments", [], |r| {
            let state: String = r.get(2)?;
            Ok((
                SegmentId(r.get(0)?),
                r.get(1)?,
                SegmentState::parse(&state)?,
            ))
        })
    }

    pub fn log_event(
        &self,
        time_ms: i64,
        stream: Option<StreamId>,
        kind: &str,
        message: &str,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (time_ms, stream_id, kind, message) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![time_ms, stream.map(|s| s.0), kind, message]))
            .map_err(|e| self.e(e))?;
        Ok(())
    }

    /// Events of `stream` with `start_ms <= time_ms < end_ms`, oldest first, at most `limit`.
    pub fn stream_events_in_range(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StorageError> {
        self.rows(
            "SELECT id, time_ms, stream_id, kind, message FROM events \
             WHERE time_ms >= ?2 AND time_ms < ?3 AND stream_id = ?1 ORDER BY time_ms, id LIMIT ?4",
            params![stream.0, start_ms, end_ms, limit],
            event_from_row,
        )
    }

    /// Events with id greater than `after_id`, oldest first, at most `limit`.
    pub fn events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRow>, StorageError> {
        self.rows(
            "SELECT id, time_ms, stream_id, kind, message FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after_id, limit],
            event_from_row,
        )
    }
}

/// Applies the missing `migrations` (entry `i` upgrades version `i` to `i + 1`, in `PRAGMA user_version`).
///
/// Several processes open the same database (the recorder, the sync agent, checks): each step runs in an
/// IMMEDIATE transaction that re-reads the version, so two processes starting together never apply a
/// step twice. A database newer than `migrations` is refused.
pub fn migrate(
    conn: &mut Connection,
    migrations: &[&str],
    path: &Path,
    what: &str,
) -> Result<(), StorageError> {
    let supported = migrations.len() as i64;
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err(path, e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| err(path, e))?;
        if version > supported {
            return Err(StorageError::SchemaTooNew {
                path: path.to_owned(),
                found: version,
                supported,
            });
        }
        let Some(sql) = migrations.get(version as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(|e| err(path, e))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(|e| err(path, e))?;
        tx.commit().map_err(|e| err(path, e))?;
        tracing::info!(db = %path.display(), version = version + 1, "{what} schema migrated");
    }
}

/// Every row of `sql` with `params`, each through `f` (a cached statement); an error names the
/// database at `path`. The one way the catalog and `sync.db` read lists of rows.
pub fn query_rows<T>(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StorageError> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| err(path, e))?;
    let rows = stmt.query_map(params, f).map_err(|e| err(path, e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| err(path, e))
}

fn err(path: &Path, source: rusqlite::Error) -> StorageError {
    StorageError::Catalog {
        path: path.to_owned(),
        source,
    }
}

/// The parts of `[start_ms, end_ms)` not covered by `segments` (sorted by start).
pub fn gaps_between(segments: &[SegmentRow], start_ms: i64, end_ms: i64) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut covered_until_ms = start_ms;
    for s in segments {
        if s.start_ms > covered_until_ms {
            gaps.push(Gap {
                start_ms: covered_until_ms,
                end_ms: s.start_ms.min(end_ms),
            });
        }
        covered_until_ms = covered_until_ms.max(s.end_ms);
        if covered_until_ms >= end_ms {
            return gaps;
        }
    }
    if covered_until_ms < end_ms {
        gaps.push(Gap {
            start_ms: covered_until_ms,
            end_ms,
        });
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: i64, end_ms: i64) -> SegmentRow {
        SegmentRow {
            node: "n".into(),
            ..crate::test_support::sealed_row(start_ms, end_ms)
        }
    }

    #[test]
    fn gaps_cover_the_uncovered_parts_only() {
        let segs = [seg(100, 200), seg(200, 300), seg(350, 400), seg(390, 450)];
        assert_eq!(
            gaps_between(&segs, 0, 500),
            [
                Gap {
                    start_ms: 0,
                    end_ms: 100
                },
                Gap {
                    start_ms: 300,
                    end_ms: 350
                },
                Gap {
                    start_ms: 450,
                    end_ms: 500
                }
            ]
        );
        assert_eq!(gaps_between(&segs, 120, 300), []);
        assert_eq!(
            gaps_between(&[], 5, 10),
            [Gap {
                start_ms: 5,
                end_ms: 10
            }]
        );
    }

    /// The recorder and the sync agent open a new catalog at the same moment: both must succeed (the
    /// switch to WAL mode answers "busy" without waiting while the other holds the database).
    #[test]
    fn processes_opening_a_new_catalog_together_all_succeed() {
        for round in 0..30 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("catalog.db");
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || Catalog::open(&path).map(|c| c.schema_version()))
                })
                .collect();
            for o in openers {
                let opened = o.join().expect("thread");
                assert!(
                    matches!(opened, Ok(Ok(v)) if v == SCHEMA_VERSION),
                    "round {round}: {opened:?}"
                );
            }
        }
    }

    #[test]
    fn migrations_apply_once_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.db");
        let c = Catalog::open(&path).expect("open");
        assert_eq!(c.schema_version().expect("version"), SCHEMA_VERSION);
        let s = c.ensure_stream("cam", "main", 1).expect("stream");
        assert_eq!(c.ensure_stream("cam", "main", 2).expect("stream"), s);
        drop(c);
        let c = Catalog::open(&path).expect("reopen");
        assert_eq!(c.find_stream("cam", "main").expect("find"), Some(s));
        c.conn
            .pragma_update(None, "user_version", 99)
            .expect("set version");
        drop(c);
        match Catalog::open(&path) {
            Err(StorageError::SchemaTooNew { found: 99, .. }) => {}
            other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
        }
    }
}
