//! Which stored fragments of a stream's timeline a plan uses: the de-duplication trims of
//! `store::timeline` honoured at fragment granularity.
//!
//! A plan copies whole stored fragments (it never rewrites a `trun`), so a fragment is left out only
//! when EVERY video frame in it is trimmed (held by the kept copy of another node); a fragment with
//! one frame the timeline keeps is used whole. The recorders cut fragments at key frames and a
//! trimmed run starts and ends where the two copies' frames stop matching, so for two nodes recording
//! one camera the trims fall on fragment boundaries and each frame is played once; a trim that ends
//! inside a fragment leaves that fragment's duplicated frames in, never a frame without a copy.
//!
//! What is left of each segment is cut into parts (runs of consecutive used fragments), and the parts
//! of all segments are put in wall-time order: a kept copy that lies inside a trimmed one plays in the
//! trimmed one's hole.

use std::path::PathBuf;
use std::rc::Rc;

use store::frame::to_90k;
use store::mp4::scan_samples;
use store::{Reader, SegmentRow, TimelineSegment};

use super::{run_of, scan, PlanError, Scanned};

/// A segment of the timeline as the plan reads it.
pub(super) struct Segment {
    pub row: SegmentRow,
    pub path: PathBuf,
    pub scanned: Scanned,
}

/// Consecutive used fragments `from..to` (indices into the segment's scanned fragments).
pub(super) struct Part {
    pub segment: Rc<Segment>,
    pub from: usize,
    pub to: usize,
    /// Wall time of the part's first video frame.
    pub start_ms: i64,
    /// Wall time where the part's video ends.
    pub end_ms: i64,
}

/// The parts of `timeline` in wall-time order, without those that end before `start_ms` (unless
/// nothing else is left).
///
/// A segment without trims that lies wholly inside the span of the segments before it and keeps no
/// other segment's frames is left out as before de-duplication existed (a copy not compared yet: an
/// open segment, or one whose comparison failed and is retried at the next seal).
pub(super) fn parts(
    reader: &Reader,
    timeline: Vec<TimelineSegment>,
    start_ms: i64,
) -> Result<Vec<Part>, PlanError> {
    let keepers: Vec<store::SegmentId> = timeline
        .iter()
        .flat_map(|t| t.trims.iter().map(|trim| trim.kept_segment_id))
        .collect();
    let mut covered_until_ms = i64::MIN;
    let mut out = Vec::new();
    for t in timeline {
        let row = &t.segment;
        let inside = row.end_ms <= covered_until_ms;
        covered_until_ms = covered_until_ms.max(row.end_ms);
        if inside && t.trims.is_empty() && !keepers.contains(&row.id) {
            continue;
        }
        let path = reader.absolute_path(&row.path);
        let scanned = scan(&path)?;
        let used = used_fragments(&t, &path, &scanned)?;
        let segment = Rc::new(Segment {
            row: t.segment,
            path,
            scanned,
        });
        out.extend(runs(&segment, &used));
    }
    if out.iter().any(|p| p.end_ms > start_ms) {
        out.retain(|p| p.end_ms > start_ms);
    }
    out.sort_by_key(|p| p.start_ms);
    Ok(out)
}

/// Per stored fragment: whether the plan uses it (not every one of its video frames trimmed).
fn used_fragments(
    t: &TimelineSegment,
    path: &std::path::Path,
    s: &Scanned,
) -> Result<Vec<bool>, PlanError> {
    let count = s.report.fragments.len();
    if t.trims.is_empty() {
        return Ok(vec![true; count]);
    }
    let bad = |message: String| PlanError::File {
        path: path.to_owned(),
        message,
    };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (_, samples) = scan_samples(&data).map_err(|e| bad(e.to_string()))?;
    let clock = &s.report.tracks[s.clock_track];
    let mut video = samples
        .iter()
        .filter(|x| x.track_id == clock.track_id)
        .peekable();
    let Some(first) = video.peek().map(|x| x.decode_time) else {
        return Ok(vec![true; count]);
    };
    // Fragments without video are used as they are (what holds them is decided by their neighbours).
    let mut used: Vec<bool> = s
        .report
        .fragments
        .iter()
        .map(|f| run_of(f, clock.track_id).is_none())
        .collect();
    for x in video {
        let offset_90k = to_90k(x.decode_time.saturating_sub(first), clock.timescale);
        if let Some(u) = used.get_mut(x.fragment_index) {
            *u |= t.keeps(offset_90k);
        }
    }
    Ok(used)
}

/// The runs of used fragments of `segment` that hold video.
fn runs(segment: &Rc<Segment>, used: &[bool]) -> Vec<Part> {
    let s = &segment.scanned;
    let track = s.report.tracks[s.clock_track].track_id;
    let frags = &s.report.fragments;
    let mut out = Vec::new();
    let mut i = 0;
    while i < used.len() {
        if !used[i] {
            i += 1;
            continue;
        }
        let from = i;
        while i < used.len() && used[i] {
            i += 1;
        }
        let video: Vec<_> = (from..i).filter_map(|j| run_of(&frags[j], track)).collect();
        let (Some(first), Some(last)) = (video.first(), video.last()) else {
            continue;
        };
        out.push(Part {
            segment: Rc::clone(segment),
            from,
            to: i,
            start_ms: s.wall(segment.row.start_ms, first.base_decode_time),
            end_ms: s.wall(
                segment.row.start_ms,
                last.base_decode_time + last.duration_sum,
            ),
        });
    }
    out
}
