//! Which of this node's segments the primary's mirroring loop looks at: every segment not yet
//! mirrored (open, or sealed but not acknowledged by the standby) plus the next page of new catalog
//! rows. A segment that stays pending (a crash-cut segment, a refused one) never stops the scan: the
//! cursor moves past every row it has seen and the pending ones are kept here. Open rows are read
//! again on every pass (they grow); a sealed row no longer changes, so it is kept as read until the
//! next full pass (which notices deletions).

use std::collections::BTreeMap;

use store::{SegmentRow, SegmentState, Store};

/// Catalog rows read per pass past the cursor.
const PAGE_ROWS: u32 = 2000;

#[derive(Debug, Default)]
pub(super) struct Watermark {
    /// Every row with an id up to here has been seen.
    scanned_after_id: i64,
    /// Rows seen but not yet mirrored, oldest first: id -> (path, the row if sealed).
    pending: BTreeMap<i64, (String, Option<SegmentRow>)>,
}

impl Watermark {
    /// Starts past `after_id`: every row up to it is known to need nothing (mirrored, summed up by
    /// the standby as held, or deleted).
    pub(super) fn starting_after(after_id: i64) -> Self {
        Watermark {
            scanned_after_id: after_id,
            pending: BTreeMap::new(),
        }
    }

    /// The pending rows (open ones re-read, as they grow and get sealed), then the next page of new
    /// rows.
    pub(super) fn rows(
        &mut self,
        store: &Store,
        node: &str,
    ) -> Result<Vec<SegmentRow>, store::StorageError> {
        let catalog = store.catalog();
        let mut rows = Vec::with_capacity(self.pending.len());
        let mut gone = Vec::new();
        for (id, (path, sealed)) in &self.pending {
            if let Some(row) = sealed {
                rows.push(row.clone());
                continue;
            }
            match catalog.segment_by_path(path)? {
                Some(row) if row.id.0 == *id => rows.push(row),
                // Its row was removed (or the path reused by a new row, which the scan finds).
                _ => gone.push(*id),
            }
        }
        for id in gone {
            self.pending.remove(&id);
        }
        let page = catalog.node_segments_after(node, self.scanned_after_id, PAGE_ROWS)?;
        if let Some(last) = page.last() {
            self.scanned_after_id = last.id.0;
        }
        rows.extend(
            page.into_iter()
                .filter(|r| !self.pending.contains_key(&r.id.0)),
        );
        Ok(rows)
    }

    /// `row` is still to be mirrored.
    pub(super) fn pending(&mut self, row: &SegmentRow) {
        let sealed = (row.state == SegmentState::Sealed).then(|| row.clone());
        self.pending.insert(row.id.0, (row.path.clone(), sealed));
    }

    /// `row` is mirrored (or deleted): no need to look at it again.
    pub(super) fn done(&mut self, row: &SegmentRow) {
        self.pending.remove(&row.id.0);
    }

    /// Starts a full pass over the catalog again (file events and acks can be missed) from past
    /// `after_id`, up to which every row is known to need nothing; pending rows are read again too.
    pub(super) fn rescan(&mut self, after_id: i64) {
        self.scanned_after_id = after_id;
        for (_, sealed) in self.pending.values_mut() {
            *sealed = None;
        }
    }
}
