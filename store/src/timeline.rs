//! One timeline per stream out of overlapping recordings: de-duplication by frame identity.
//!
//! When two nodes recorded the same camera at the same time (a partition without a witness, a
//! returning primary that records before it learns of the takeover, fragments of a dead primary that
//! were not mirrored), one catalog ends up with segments of different nodes that overlap in time.
//! [`Store::deduplicate`] (run by the background [`crate::dedup_job`] for every sealed segment)
//! compares such a pair frame by frame (`crate::frame`: slice hash + wall
//! time): the frames both hold are kept in one copy ([`kept_first`] decides which, the same way on
//! every node) and trimmed from the other. Sealed files are evidence and never change: a trim is a
//! catalog row (`trims`, in 90 kHz units of decode time) plus a `trim` event naming both segments,
//! the span, its first and last frame and the count. Readers honour the trims through
//! [`Store::timeline`] and [`TimelineSegment::keeps`]; a trim stops counting when its kept segment is
//! deleted (retention), so no frame ever leaves the timeline without a copy in it.

mod compare;

use std::cmp::Ordering;
use std::collections::HashMap;

pub use compare::{duplicate_runs, DuplicateRun};

use crate::catalog::{Trim, TrimInsert};
use crate::frame::{frames_in_file, FileFrame, FrameFileError, MATCH_TOLERANCE_MS};
use crate::{SegmentId, SegmentRow, SegmentState, StorageError, Store, StreamId};

/// Which of two overlapping segments of different nodes keeps the frames both hold: `Less` if `a`.
///
/// 1. the newer epoch (the holder the arbiter fenced the other with; no epoch is oldest),
/// 2. then the one that starts earlier, 3. then the longer one, 4. then the smaller path.
///
/// Every input is a catalog value that a mirrored copy carries unchanged, so both nodes decide alike.
pub fn kept_first(a: &SegmentRow, b: &SegmentRow) -> Ordering {
    b.epoch
        .cmp(&a.epoch)
        .then(a.start_ms.cmp(&b.start_ms))
        .then((b.end_ms - b.start_ms).cmp(&(a.end_ms - a.start_ms)))
        .then(a.path.cmp(&b.path))
}

/// A segment of a stream's timeline with the trims in effect on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSegment {
    pub segment: SegmentRow,
    pub trims: Vec<Trim>,
}

impl TimelineSegment {
    /// Whether the timeline keeps the frame decoded `offset_90k` after the segment's first video frame.
    pub fn keeps(&self, offset_90k: u64) -> bool {
        !self
            .trims
            .iter()
            .any(|t| (t.start_90k..t.end_90k).contains(&offset_90k))
    }

    /// Video frames trimmed from this segment.
    pub fn trimmed_frames(&self) -> u64 {
        self.trims.iter().map(|t| t.frames).sum()
    }
}

fn frame_error(e: FrameFileError) -> StorageError {
    match e {
        FrameFileError::Io { path, source } => StorageError::Io {
            op: "read",
            path,
            source,
        },
        FrameFileError::Mp4 { path, source } => StorageError::Mp4 { path, source },
    }
}

fn epoch_text(e: Option<u64>) -> String {
    e.map_or_else(|| "none".to_owned(), |e| e.to_string())
}

impl Store {
    fn file_frames(&self, row: &SegmentRow) -> Result<Vec<FileFrame>, StorageError> {
        frames_in_file(&self.absolute_path(&row.path), row.start_ms).map_err(frame_error)
    }

    /// Compares the sealed segment `id` with every sealed segment of its stream from another node that
    /// overlaps it, and trims the frames a pair holds twice from the copy [`kept_first`] does not
    /// keep. Idempotent (a pair trimmed before is not compared again) and safe beside other processes
    /// doing the same. Run by the de-duplication job ([`crate::dedup_job`]) for every segment sealed
    /// (by the recorder, by recovery, a mirrored copy), off the seal path. Returns the trims recorded
    /// now.
    pub fn deduplicate(&self, id: SegmentId) -> Result<Vec<Trim>, StorageError> {
        let Some(row) = self.catalog().segment(id)? else {
            return Ok(Vec::new());
        };
        if row.state != SegmentState::Sealed {
            return Ok(Vec::new());
        }
        let others = self.catalog().sealed_segments_of_others(
            row.stream_id,
            &row.node,
            row.start_ms - MATCH_TOLERANCE_MS,
            row.end_ms + MATCH_TOLERANCE_MS,
        )?;
        let mut own_frames: Option<Vec<FileFrame>> = None;
        let mut done = Vec::new();
        for other in others {
            let (kept, trimmed) = match kept_first(&row, &other) {
                Ordering::Greater => (&other, &row),
                _ => (&row, &other),
            };
            if self.catalog().has_trims(trimmed.id, kept.id)? {
                continue;
            }
            let own = match own_frames.take() {
                Some(f) => f,
                None => self.file_frames(&row)?,
            };
            let other_frames = self.file_frames(&other)?;
            let (kept_frames, trimmed_frames) = if kept.id == row.id {
                (&own, &other_frames)
            } else {
                (&other_frames, &own)
            };
            let inserts = trim_inserts(trimmed, kept, &duplicate_runs(trimmed_frames, kept_frames));
            own_frames = Some(own);
            if inserts.is_empty() {
                continue;
            }
            let now_ms = self.now_utc_ms();
            let added = self.catalog().insert_trims(&inserts, now_ms)?;
            for t in &inserts {
                if added.contains(&t.trim) {
                    tracing::info!("{}", t.message);
                }
            }
            done.extend(added);
        }
        Ok(done)
    }

    /// The timeline of `stream` over `[start_ms, end_ms)`: its open and sealed segments, oldest first,
    /// each with the trims in effect on it (playback and frame counting skip what they cover).
    pub fn timeline(
        &self,
        stream: StreamId,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<TimelineSegment>, StorageError> {
        let cat = self.catalog();
        let segments = cat.segments_in_range(stream, start_ms, end_ms)?;
        let mut trims: HashMap<SegmentId, Vec<Trim>> = HashMap::new();
        for t in cat.active_trims(stream, start_ms, end_ms)? {
            trims.entry(t.segment_id).or_default().push(t);
        }
        Ok(segments
            .into_iter()
            .map(|segment| TimelineSegment {
                trims: trims.remove(&segment.id).unwrap_or_default(),
                segment,
            })
            .collect())
    }
}

/// The trims (with their events) of `runs` of `trimmed` in favour of `kept`.
fn trim_inserts(trimmed: &SegmentRow, kept: &SegmentRow, runs: &[DuplicateRun]) -> Vec<TrimInsert> {
    runs.iter()
        .map(|r| TrimInsert {
            trim: Trim {
                segment_id: trimmed.id,
                kept_segment_id: kept.id,
                start_90k: r.start_90k,
                end_90k: r.end_90k,
                frames: r.frames,
            },
            stream_id: trimmed.stream_id,
            message: format!(
                "{} frames of {} ({}, epoch {}) trimmed, 90 kHz {}..{} (frames {} to {}): held by {} ({}, epoch {}), which is kept",
                r.frames,
                trimmed.path,
                trimmed.node,
                epoch_text(trimmed.epoch),
                r.start_90k,
                r.end_90k,
                r.first,
                r.last,
                kept.path,
                kept.node,
                epoch_text(kept.epoch)
            ),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
