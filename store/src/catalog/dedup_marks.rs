//! The de-duplication mark (schema version 4, `segments.dedup_pending`): a sealed segment not yet
//! compared with the overlapping copies of other nodes. Set in the statement or transaction that
//! seals the row, cleared by the de-duplication job (`crate::dedup_job`) once the comparison is done.

use rusqlite::params;

use super::{Catalog, SegmentId, SegmentInsert, SegmentProgress};
use crate::StorageError;

/// A marked segment and its mark as read: the number of seals not yet de-duplicated. Clearing only
/// succeeds if the mark is unchanged, so a seal of the same row in between is not forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupMark {
    pub segment_id: SegmentId,
    pub marks: i64,
}

impl Catalog {
    /// [`Catalog::put_sealed_segment`] and its de-duplication mark, in one transaction (a mirrored
    /// copy sealed into this catalog).
    pub fn put_sealed_segment_to_deduplicate(
        &self,
        s: &SegmentInsert<'_>,
        p: &SegmentProgress,
        sha256_hex: &str,
        sealed_ms: i64,
        epoch: Option<u64>,
    ) -> Result<SegmentId, StorageError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.e(e))?;
        let id = self.put_sealed_segment(s, p, sha256_hex, sealed_ms, epoch)?;
        self.mark_to_deduplicate(id)?;
        tx.commit().map_err(|e| self.e(e))?;
        Ok(id)
    }

    /// Marks `id` once more, as a seal does (inside the caller's transaction, if any: the same
    /// connection).
    pub(crate) fn mark_to_deduplicate(&self, id: SegmentId) -> Result<(), StorageError> {
        self.conn
            .execute(
                "UPDATE segments SET dedup_pending = dedup_pending + 1 WHERE id = ?1",
                params![id.0],
            )
            .map_err(|e| self.e(e))?;
        Ok(())
    }

    /// Marked segments with an id greater than `after`, by id, at most `limit`.
    pub fn dedup_marks_after(
        &self,
        after: SegmentId,
        limit: u32,
    ) -> Result<Vec<DedupMark>, StorageError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, dedup_pending FROM segments WHERE dedup_pending > 0 AND id > ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.e(e))?;
        let rows = stmt
            .query_map(params![after.0, limit], |r| {
                Ok(DedupMark {
                    segment_id: SegmentId(r.get(0)?),
                    marks: r.get(1)?,
                })
            })
            .map_err(|e| self.e(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.e(e))
    }

    /// Clears `mark` if the row still carries it; `false` if it was sealed again (or cleared by
    /// another process) since it was read.
    pub fn clear_dedup_mark(&self, mark: DedupMark) -> Result<bool, StorageError> {
        let changed = self
            .conn
            .execute(
                "UPDATE segments SET dedup_pending = 0 WHERE id = ?1 AND dedup_pending = ?2",
                params![mark.segment_id.0, mark.marks],
            )
            .map_err(|e| self.e(e))?;
        Ok(changed > 0)
    }

    /// How many segments are marked.
    pub fn dedup_pending_count(&self) -> Result<u64, StorageError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM segments WHERE dedup_pending > 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.e(e))
    }
}
