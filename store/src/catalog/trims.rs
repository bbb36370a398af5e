//! The `trims` table (schema version 3): what de-duplication (`crate::timeline`) took out of a
//! segment's timeline because another segment holds the same frames. Rows only; files are untouched.

use rusqlite::{params, Row};
use serde::Serialize;

use super::{Catalog, SegmentId, SegmentRow, StreamId};
use crate::StorageError;

/// One trimmed span of a segment: its video frames decoded in `[start_90k, end_90k)` (90 kHz units
/// since the segment's first video frame) are held by `kept_segment_id` too and left out of the
/// timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trim {
    pub segment_id: SegmentId,
    pub kept_segment_id: SegmentId,
    pub start_90k: u64,
    pub end_90k: u64,
    /// Video frames in the span.
    pub frames: u64,
}

/// A trim to record, with the event that logs it.
#[derive(Debug, Clone)]
pub struct TrimInsert {
    pub trim: Trim,
    pub stream_id: StreamId,
    pub message: String,
}

fn trim_from_row(r: &Row<'_>) -> rusqlite::Result<Trim> {
    let u =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    Ok(Trim {
        segment_id: SegmentId(r.get(0)?),
        kept_segment_id: SegmentId(r.get(1)?),
        start_90k: u(2)?,
        end_90k: u(3)?,
        frames: u(4)?,
    })
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Catalog {
    /// Sealed segments of `stream` written by another node than `node` that overlap
    /// `[start_ms, end_ms)`, oldest first.
    pub fn sealed_segments_of_others(
        &self,
        stream: StreamId,
        node: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SegmentRow>, StorageError> {
        self.query_segments(
            "stream_id = ?1 AND node != ?2 AND state = 'sealed' AND start_ms < ?4 AND end_ms > ?3
             ORDER BY start_ms, id",
            params![stream.0, node, start_ms, end_ms],
        )
    }

    /// Whether `segment` has trims in favour of `kept` already.
    pub fn has_trims(&self, segment: SegmentId, kept: SegmentId) -> Result<bool, StorageError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM trims WHERE segment_id = ?1 AND kept_segment_id = ?2)",
                params![segment.0, kept.0],
                |r| r.get(0),
            )
            .map_err(|e| self.e(e))
    }

    /// Records `trims` and logs each as a `trim` event, in one transaction; a trim recorded before
    /// (by this or another process) is neither recorded nor logged again. Returns those recorded now.
    pub fn insert_trims(
        &self,
        trims: &[TrimInsert],
        now_ms: i64,
    ) -> Result<Vec<Trim>, StorageError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.e(e))?;
        let mut done = Vec::new();
        for t in trims {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO trims (segment_id, kept_segment_id, start_90k, end_90k,
                         frames, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        t.trim.segment_id.0,
                        t.trim.kept_segment_id.0,
                        i(t.trim.start_90k),
                        i(t.trim.end_90k),
                        i(t.trim.frames),
                        now_ms
                    ])
                })
                .map_err(|e| self.e(e))?;
            if added == 0 {
                continue;
            }
            tx.prepare_cached(
                "INSERT INTO events (time_ms, stream_id, kind, message) VALUES (?1, ?2, 'trim', ?3)",
            )
            .and_then(|mut s| s.execute(params![now_ms, t.stream_id.0, t.message]))
            .map_err(|e| self.e(e))?;
            done.push(t.trim.clone());
        }
        tx.commit().map_err(|e| self.e(e))?;
        Ok(done)
    }

    /// The trims in effect on segments of `stream` overlapping `[start_ms, end_ms)`: those whose kept
    /// segment is still `open` or `sealed` (a kept copy deleted by retention gives its frames back to
    /// the copy trimmed in its favour). Ordered by segment and start.
    pub fn active_trims(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Trim>, StorageError> {
        self.rows(
            "SELECT t.segment_id, t.kept_segment_id, t.start_90k, t.end_90k, t.frames
             FROM trims t JOIN segments s ON s.id = t.segment_id
                 JOIN segments k ON k.id = t.kept_segment_id
             WHERE s.stream_id = ?1 AND s.start_ms < ?3 AND s.end_ms > ?2
                 AND k.state IN ('open', 'sealed')
             ORDER BY t.segment_id, t.start_90k",
            params![stream.0, start_ms, end_ms],
            trim_from_row,
        )
    }
}
