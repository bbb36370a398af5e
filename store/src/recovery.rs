//! Start-up recovery: make the catalog and the media files agree after any stop, clean or not.
//!
//! 1. Every `open` segment of this node (the process died while writing it) is scanned, cut after its
//!    last complete fragment, hashed, sealed and cataloged. At most the fragment being written is lost.
//!    One with no complete fragment held no media and is removed.
//! 2. Runs of this node left open are closed at the end of their last segment.
//! 3. Media files with no catalog row are scanned, sealed and indexed.
//! 4. Rows whose file is gone are marked `missing`.
//!
//! Everything done is logged and written to the catalog's event log. A segment sealed here is marked
//! for de-duplication like any seal; the store's job compares it once its process starts the job.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use super::catalog::{SegmentInsert, SegmentProgress};
use super::segment::{seal_file, sha256_file};
use super::{layout, SegmentRow, SegmentState, StorageError, Store, StreamId};
use crate::mp4;

/// What [`Store::recover`] did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RecoveryReport {
    /// Open segments that were cut back and sealed: (path, bytes cut off).
    pub recovered: Vec<(String, u64)>,
    /// Open segments with no complete fragment, removed.
    pub discarded: Vec<String>,
    /// Files found without a catalog row, now indexed.
    pub indexed: Vec<String>,
    /// Rows whose file is gone.
    pub missing: Vec<String>,
    /// Files that are not readable MP4 at all (left in place, row marked `damaged`).
    pub damaged: Vec<String>,
    /// Runs closed because the process had died during them.
    pub runs_closed: usize,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        self.recovered.is_empty()
            && self.discarded.is_empty()
            && self.indexed.is_empty()
            && self.missing.is_empty()
            && self.damaged.is_empty()
            && self.runs_closed == 0
    }
}

/// Frame count and media duration of the video track, from a scan.
fn scanned_video_totals(report: &mp4::ScanReport) -> (i64, i64) {
    let Some(video) = report
        .tracks
        .iter()
        .find(|t| t.handler == mp4::Handler::Video)
    else {
        return (0, 0);
    };
    let timescale = i64::from(video.timescale.max(1));
    let (mut frames, mut ticks) = (0i64, 0i64);
    for f in &report.fragments {
        for t in f.tracks.iter().filter(|t| t.track_id == video.track_id) {
            frames += i64::from(t.sample_count);
            ticks += t.duration_sum as i64;
        }
    }
    (frames, ticks * 1000 / timescale)
}

/// What the catalog row of a segment file says that a scan of the file tells: its video totals,
/// codecs (sample entry types) and picture size. Zeros and empty codecs for a file that does not scan.
#[derive(Debug, Default)]
pub(super) struct ScannedSegment {
    frames: i64,
    media_duration_ms: i64,
    fragments: i64,
    video_codec: String,
    audio_codec: Option<String>,
    width: i64,
    height: i64,
}

impl ScannedSegment {
    pub(super) fn of(scan: &mp4::ScanReport) -> ScannedSegment {
        let (frames, media_duration_ms) = scanned_video_totals(scan);
        let track = |h: mp4::Handler| scan.tracks.iter().find(|t| t.handler == h);
        let fourcc =
            |t: &mp4::ScannedTrack| String::from_utf8_lossy(&t.sample_entry_type).into_owned();
        let video = track(mp4::Handler::Video);
        let (width, height) = video.and_then(|v| v.pixel_dimensions).unwrap_or((0, 0));
        ScannedSegment {
            frames,
            media_duration_ms,
            fragments: scan.fragments.len() as i64,
            video_codec: video.map(fourcc).unwrap_or_default(),
            audio_codec: track(mp4::Handler::Audio).map(fourcc),
            width: i64::from(width),
            height: i64::from(height),
        }
    }

    /// The row of the file at `path` (relative to the data directory), written by `node`, with no run.
    pub(super) fn row<'a>(
        &'a self,
        stream_id: StreamId,
        node: &'a str,
        path: &'a str,
        state: SegmentState,
        start_ms: i64,
        created_ms: i64,
    ) -> SegmentInsert<'a> {
        SegmentInsert {
            stream_id,
            run_id: None,
            node,
            path,
            state,
            start_ms,
            video_codec: &self.video_codec,
            width: self.width,
            height: self.height,
            audio_codec: self.audio_codec.as_deref(),
            created_ms,
        }
    }

    /// The final values of a file of `size_bytes` that starts at `start_ms`.
    pub(super) fn progress(&self, start_ms: i64, size_bytes: i64) -> SegmentProgress {
        SegmentProgress {
            end_ms: start_ms + self.media_duration_ms,
            media_duration_ms: self.media_duration_ms,
            frames: self.frames,
            fragments: self.fragments,
            size_bytes,
        }
    }
}

impl Store {
    /// Runs start-up recovery for this node. Call before recording starts.
    pub fn recover(&self) -> Result<RecoveryReport, StorageError> {
        let mut report = RecoveryReport::default();
        let open = self.catalog().open_segments(&self.node)?;
        for row in open {
            self.recover_open_segment(&row, &mut report)?;
        }

        let open_runs = self.catalog().open_runs(&self.node)?;
        for run in open_runs {
            let cat = self.catalog();
            let end_ms = cat.run_last_end_ms(run.id)?.unwrap_or(run.start_ms);
            cat.end_run(run.id, end_ms, "crash")?;
            report.runs_closed += 1;
        }

        let known = self.catalog().all_segment_paths()?;
        let known_paths: HashSet<&str> = known.iter().map(|(_, p, _)| p.as_str()).collect();
        let deleted_paths: HashSet<&str> = known
            .iter()
            .filter(|(_, _, st)| *st == SegmentState::Deleted)
            .map(|(_, p, _)| p.as_str())
            .collect();
        let files = layout::list_media_files(&self.data_dir)
            .map_err(|e| StorageError::io("list", &self.data_dir, e))?;
        for rel in &files {
            let Some(rel_str) = rel.to_str() else {
                continue;
            };
            if deleted_paths.contains(rel_str) {
                // Retention marks the row before unlinking: a stop in between left the file.
                self.finish_deletion(rel_str)?;
            } else if !known_paths.contains(rel_str) {
                self.index_orphan_file(rel, rel_str, &mut report)?;
            }
        }

        for (id, path, state) in &known {
            if matches!(state, SegmentState::Sealed | SegmentState::Open)
                && !self.data_dir.join(path).exists()
            {
                let now_ms = self.now_utc_ms();
                self.catalog()
                    .set_segment_state(*id, SegmentState::Missing, now_ms)?;
                self.log_event(
                    None,
                    "missing",
                    &format!("{path}: catalog row without file, marked missing"),
                );
                tracing::warn!(path, "segment file missing; row marked missing");
                report.missing.push(path.clone());
            }
        }
        Ok(report)
    }

    fn recover_open_segment(
        &self,
        row: &SegmentRow,
        report: &mut RecoveryReport,
    ) -> Result<(), StorageError> {
        let path = self.data_dir.join(&row.path);
        if !path.exists() {
            let now_ms = self.now_utc_ms();
            self.catalog()
                .set_segment_state(row.id, SegmentState::Missing, now_ms)?;
            self.log_event(
                Some(row.stream_id),
                "missing",
                &format!("{}: open segment's file is gone", row.path),
            );
            report.missing.push(row.path.clone());
            return Ok(());
        }
        let scan = match mp4::scan_file(&path) {
            Ok(s) => s,
            Err(e) => {
                let now_ms = self.now_utc_ms();
                self.catalog()
                    .set_segment_state(row.id, SegmentState::Damaged, now_ms)?;
                self.log_event(
                    Some(row.stream_id),
                    "damaged",
                    &format!("{}: not a readable MP4: {e}", row.path),
                );
                tracing::error!(path = %row.path, error = %e, "open segment unreadable; marked damaged");
                report.damaged.push(row.path.clone());
                return Ok(());
            }
        };
        if scan.fragments.is_empty() {
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
            self.catalog().delete_segment_row(row.id)?;
            self.log_event(
                Some(row.stream_id),
                "recovery",
                &format!("{}: no complete fragment; removed", row.path),
            );
            report.discarded.push(row.path.clone());
            return Ok(());
        }
        let cut_bytes = cut_to_valid(&path, &scan)?;
        let sha = sha256_file(&path)?;
        seal_file(&path)?;
        let (frames, media_duration_ms) = scanned_video_totals(&scan);
        let progress = SegmentProgress {
            end_ms: row.start_ms + media_duration_ms,
            media_duration_ms,
            frames,
            fragments: scan.fragments.len() as i64,
            size_bytes: scan.valid_len as i64,
        };
        let now_ms = self.now_utc_ms();
        self.catalog()
            .seal_segment(row.id, &progress, &sha, now_ms)?;
        self.dedup_marked();
        let msg = format!(
            "{}: recovered {} fragments, {frames} frames, {media_duration_ms} ms; cut {cut_bytes} bytes of an incomplete fragment",
            row.path,
            scan.fragments.len()
        );
        self.log_event(Some(row.stream_id), "recovery", &msg);
        tracing::info!("{msg}");
        report.recovered.push((row.path.clone(), cut_bytes));
        Ok(())
    }

    fn index_orphan_file(
        &self,
        rel: &Path,
        rel_str: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), StorageError> {
        let path = self.data_dir.join(rel);
        let Some(info) = layout::parse_media_path(rel) else {
            tracing::warn!(
                path = rel_str,
                "media file with an unexpected name; left alone"
            );
            self.log_event(
                None,
                "orphan",
                &format!("{rel_str}: unexpected file name; not indexed"),
            );
            return Ok(());
        };
        let stream_id = self.ensure_stream(&info.camera, &info.stream)?;
        let scan = match mp4::scan_file(&path) {
            Ok(s) if !s.fragments.is_empty() => s,
            Ok(_) => {
                // Created, but the process died before the first fragment and before its row was written.
                std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
                self.log_event(
                    Some(stream_id),
                    "recovery",
                    &format!("{rel_str}: no complete fragment; removed"),
                );
                report.discarded.push(rel_str.to_owned());
                return Ok(());
            }
            Err(e) => {
                self.log_event(
                    Some(stream_id),
                    "damaged",
                    &format!("{rel_str}: not a readable MP4: {e}"),
                );
                report.damaged.push(rel_str.to_owned());
                return Ok(());
            }
        };
        let cut_bytes = if info.node == self.node {
            cut_to_valid(&path, &scan)?
        } else {
            0
        };
        let sha = sha256_file(&path)?;
        seal_file(&path)?;
        let scanned = ScannedSegment::of(&scan);
        let frames = scanned.frames;
        let now_ms = self.now_utc_ms();
        let cat = self.catalog();
        let id = cat.insert_segment(&scanned.row(
            stream_id,
            &info.node,
            rel_str,
            SegmentState::Open,
            info.start_ms,
            now_ms,
        ))?;
        cat.seal_segment(
            id,
            &scanned.progress(info.start_ms, scan.valid_len as i64),
            &sha,
            now_ms,
        )?;
        cat.log_event(
            now_ms,
            Some(stream_id),
            "indexed",
            &format!("{rel_str}: file without catalog row indexed ({frames} frames, cut {cut_bytes} bytes)"),
        )?;
        drop(cat);
        self.dedup_marked();
        tracing::warn!(path = rel_str, "indexed media file that had no catalog row");
        report.indexed.push(rel_str.to_owned());
        Ok(())
    }
}

/// Truncates a file after its last complete fragment; returns the bytes cut off. Called even when
/// nothing is cut: truncating also releases the blocks an open segment had preallocated past its end.
fn cut_to_valid(path: &Path, scan: &mp4::ScanReport) -> Result<u64, StorageError> {
    let meta = std::fs::metadata(path).map_err(|e| StorageError::io("stat", path, e))?;
    let mut perms = meta.permissions();
    if perms.readonly() {
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(path, perms).map_err(|e| StorageError::io("chmod", path, e))?;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    f.set_len(scan.valid_len)
        .map_err(|e| StorageError::io("truncate", path, e))?;
    f.sync_all()
        .map_err(|e| StorageError::io("fsync", path, e))?;
    Ok(scan.trailing_bytes)
}
