//! Which frames of one segment file another holds too, by frame identity (`crate::frame`).

use std::collections::HashMap;

use crate::frame::{FileFrame, FrameId, MATCH_TOLERANCE_MS};

/// How far (ms) a frame's wall time may stray from the pair's common offset and still be the same
/// frame: both copies' wall times are their segment's start plus the media time, so within one pair
/// of segments the offset between the two copies of a frame is constant up to rounding.
const OFFSET_SLACK_MS: i64 = 2;

/// A run of consecutive frames of the trimmed copy that the kept copy holds too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateRun {
    /// Decode time of the run's first frame and just past its last one (90 kHz since the trimmed
    /// copy's first video frame).
    pub start_90k: u64,
    pub end_90k: u64,
    pub frames: u64,
    pub first: FrameId,
    pub last: FrameId,
}

/// The most common wall-time offset (kept minus trimmed) between frames with the same picture hash
/// within [`MATCH_TOLERANCE_MS`]; ties go to the smaller offset in magnitude, then the smaller one.
fn common_offset_ms(trimmed: &[FileFrame], kept: &HashMap<&str, Vec<i64>>) -> Option<i64> {
    let mut counts: HashMap<i64, u64> = HashMap::new();
    for f in trimmed {
        for &wall in kept.get(f.id.hash.as_str()).into_iter().flatten() {
            let offset = wall - f.id.wall_ms;
            if offset.abs() <= MATCH_TOLERANCE_MS {
                *counts.entry(offset).or_default() += 1;
            }
        }
    }
    // Rounding spreads one true offset over neighbouring milliseconds: count each with its neighbours.
    let smoothed = |o: i64| -> u64 {
        (o - 1..=o + 1)
            .map(|x| counts.get(&x).copied().unwrap_or(0))
            .sum()
    };
    counts.keys().copied().max_by(|a, b| {
        smoothed(*a)
            .cmp(&smoothed(*b))
            .then(b.abs().cmp(&a.abs()))
            .then(b.cmp(a))
    })
}

/// The runs of `trimmed` (in file order) whose frames `kept` holds too: the same picture at the wall
/// time the pair's common offset predicts. A frame the kept copy lacks is never in a run, so trimming
/// the runs loses nothing; both nodes compute the same runs from the same two files.
pub fn duplicate_runs(trimmed: &[FileFrame], kept: &[FileFrame]) -> Vec<DuplicateRun> {
    let mut by_hash: HashMap<&str, Vec<i64>> = HashMap::new();
    for f in kept {
        by_hash
            .entry(f.id.hash.as_str())
            .or_default()
            .push(f.id.wall_ms);
    }
    let Some(offset) = common_offset_ms(trimmed, &by_hash) else {
        return Vec::new();
    };
    let held = |f: &FileFrame| {
        by_hash.get(f.id.hash.as_str()).is_some_and(|walls| {
            walls
                .iter()
                .any(|w| (w - f.id.wall_ms - offset).abs() <= OFFSET_SLACK_MS)
        })
    };
    let mut runs: Vec<DuplicateRun> = Vec::new();
    let mut open = false;
    for f in trimmed {
        if !held(f) {
            open = false;
            continue;
        }
        match runs.last_mut() {
            Some(r) if open => {
                r.end_90k = f.offset_90k.saturating_add(1);
                r.frames += 1;
                r.last = f.id.clone();
            }
            _ => runs.push(DuplicateRun {
                start_90k: f.offset_90k,
                end_90k: f.offset_90k.saturating_add(1),
                frames: 1,
                first: f.id.clone(),
                last: f.id.clone(),
            }),
        }
        open = true;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(picture: u32, wall_ms: i64, offset_90k: u64) -> FileFrame {
        FileFrame {
            id: FrameId {
                hash: format!("{picture:08x}"),
                wall_ms,
            },
            offset_90k,
        }
    }

    /// Pictures `first..last` at 40 ms from `wall0`, the clip looping every `period` pictures.
    fn copy(first: u32, last: u32, wall0: i64, period: u32) -> Vec<FileFrame> {
        (first..last)
            .enumerate()
            .map(|(i, n)| frame(n % period, wall0 + 40 * i as i64, 3600 * i as u64))
            .collect()
    }

    #[test]
    fn the_overlap_is_one_run_at_the_right_place() {
        // Trimmed copy: pictures 0..100; kept copy: 60..160, its clock 7 ms ahead.
        let trimmed = copy(0, 100, 10_000, 1_000);
        let kept = copy(60, 160, 10_000 + 60 * 40 + 7, 1_000);
        let runs = duplicate_runs(&trimmed, &kept);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].frames, 40);
        assert_eq!(runs[0].start_90k, 60 * 3600);
        assert_eq!(runs[0].end_90k, 99 * 3600 + 1);
        assert_eq!(runs[0].first, trimmed[60].id);
        assert_eq!(runs[0].last, trimmed[99].id);
        assert!(duplicate_runs(&trimmed, &[]).is_empty());
        assert!(duplicate_runs(&[], &kept).is_empty());
    }

    #[test]
    fn a_hole_in_the_kept_copy_keeps_those_frames_and_repeated_pictures_do_not_match() {
        // The clip repeats every 10 pictures (400 ms, within the match tolerance): only the wall-time
        // offset common to the pair tells the true copy of a frame from the same picture 400 ms away.
        let trimmed = copy(0, 50, 0, 10);
        let mut kept = copy(0, 50, 3, 10);
        kept.drain(20..25);
        let runs = duplicate_runs(&trimmed, &kept);
        let spans: Vec<(u64, u64)> = runs
            .iter()
            .map(|r| (r.start_90k / 3600, r.frames))
            .collect();
        assert_eq!(spans, [(0, 20), (25, 25)]);
    }
}
