//! Decode times of a fragment's video frames (B-frames).
//!
//! RTP carries presentation times, and frames arrive in decode order: with B-frames the times go
//! back and forth (`I0 P3 B1 B2 P6 B4 B5`). MP4 wants decode times that only grow, a duration per
//! sample (decode time to the next one), and a composition offset per sample (presentation minus
//! decode time). Within a fragment the decode times are the fragment's presentation times sorted,
//! moved back by the stream's reorder delay: every composition offset is then non-negative, and an
//! edit list of the delay (in the segment's init) makes presentation start at 0. Without B-frames the
//! delay is 0 and the decode times are the presentation times.
//!
//! A fragment ends only where no later frame is presented before its frames (at a key frame of a
//! closed GOP, or before a frame presented after every buffered one: see
//! `Recording::completes_fragment`), so sorting within a fragment is sorting the stream.

/// Timing of one sample, in the video clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SampleTiming {
    pub duration: u32,
    pub composition_offset: i32,
}

/// What is known of the frame after the fragment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Next {
    /// Its presentation time.
    pub ts: i64,
    /// Nothing after it is presented before it (a key frame of a closed GOP, or a stream without
    /// reordering): its presentation time is the next decode slot, so the last duration is exact.
    pub exact: bool,
}

/// The decode timeline of a segment and what it has learnt of the stream.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeline {
    /// Presentation time that is decode time 0 plus `delay` (the segment's first presented frame).
    pub origin_ts: i64,
    /// Reorder delay in ticks: decode times run this far behind presentation times.
    pub delay: i64,
    /// Decode time where this fragment starts (the previous fragment's end).
    pub start: i64,
    /// The usual frame duration (used where the next frame's time is not known).
    pub typical: u32,
    /// Longest believable frame duration; longer gaps are camera timestamp errors.
    pub max_duration: u32,
}

/// The reorder delay the frames `pts` (in decode order) need: how far a frame's presentation time
/// lies before the decode slot its sorted position gives it.
pub(super) fn reorder_delay(pts: &[i64]) -> i64 {
    let mut sorted = pts.to_vec();
    sorted.sort_unstable();
    sorted
        .iter()
        .zip(pts)
        .map(|(slot, p)| slot - p)
        .max()
        .unwrap_or(0)
        .max(0)
}

/// Durations and composition offsets for frames presented at `pts` (decode order), and the frame
/// period seen (`t.typical` if the fragment shows none). Decode times start at `t.start` and strictly grow; every sample keeps its
/// exact presentation time (decode time + offset = `pts - origin_ts + delay`). An offset is negative
/// only where a fragment needs more reordering than the segment's delay (it then needs `trun` v1).
pub(super) fn fragment_timing(
    pts: &[i64],
    t: Timeline,
    next: Option<Next>,
) -> (Vec<SampleTiming>, u32) {
    let mut sorted = pts.to_vec();
    sorted.sort_unstable();
    // Decode time of a sorted slot is `slot - origin_ts`; composition time of a frame `pts - base`.
    let base = t.origin_ts - t.delay;
    let max = i64::from(t.max_duration);
    // The frame period: the smallest step between presentation times (a gap of lost frames is
    // not one).
    let typical = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0 && d <= max)
        .min()
        .map_or(t.typical, |d| d as u32);
    let mut dts = Vec::with_capacity(pts.len());
    let mut durations = Vec::with_capacity(pts.len());
    for (i, slot) in sorted.iter().enumerate() {
        let Some(&prev) = dts.last() else {
            dts.push(t.start);
            continue;
        };
        let step = slot - sorted[i - 1];
        let d = if step > 0 && step <= max {
            // Back on the ideal slot if an earlier guess was off, but never backwards.
            (slot - t.origin_ts - prev).clamp(1, max)
        } else {
            i64::from(typical)
        };
        durations.push(d as u32);
        dts.push(prev + d);
    }
    if let (Some(&last_dts), Some(&last_slot)) = (dts.last(), sorted.last()) {
        // The frame after the last slot: one period on. A short fragment (a run that ended on a
        // reference frame before the B-frames presented ahead of it came) may show only a longer
        // step than the period, so the shorter of its own and the stream's is taken.
        let period = i64::from(if t.typical > 0 {
            typical.min(t.typical)
        } else {
            typical
        });
        let target = match next {
            Some(n) if n.exact => n.ts - t.origin_ts,
            Some(n) => n.ts.min(last_slot + period) - t.origin_ts,
            None => last_slot + period - t.origin_ts,
        };
        let d = target - last_dts;
        let d = if d > 0 && d <= max {
            d
        } else {
            i64::from(typical)
        };
        durations.push(d as u32);
    }
    let timing = pts
        .iter()
        .zip(&dts)
        .zip(&durations)
        .map(|((p, d), dur)| SampleTiming {
            duration: *dur,
            composition_offset: i32::try_from(p - base - d).unwrap_or(0),
        })
        .collect();
    (timing, typical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 3600;

    fn timeline(origin_ts: i64, delay: i64, start: i64) -> Timeline {
        Timeline {
            origin_ts,
            delay,
            start,
            typical: F as u32,
            max_duration: 450_000,
        }
    }

    /// Decode and presentation times relative to the segment, as a player computes them.
    fn times(t: &Timeline, timing: &[SampleTiming]) -> Vec<(i64, i64)> {
        let mut dts = t.start;
        timing
            .iter()
            .map(|s| {
                let out = (dts, dts + i64::from(s.composition_offset));
                dts += i64::from(s.duration);
                out
            })
            .collect()
    }

    #[test]
    fn without_b_frames_decode_is_presentation() {
        let pts: Vec<i64> = (0..5).map(|i| 1000 + i * F).collect();
        assert_eq!(reorder_delay(&pts), 0);
        let t = timeline(1000, 0, 0);
        let next = Next {
            ts: 1000 + 5 * F,
            exact: true,
        };
        let (timing, typical) = fragment_timing(&pts, t, Some(next));
        assert_eq!(typical, F as u32);
        assert!(timing
            .iter()
            .all(|s| s.duration == F as u32 && s.composition_offset == 0));
    }

    #[test]
    fn b_frames_get_sorted_decode_times_and_non_negative_offsets() {
        // I0 P3 B1 B2 P6 B4 B5, then the next key frame I7.
        let pts: Vec<i64> = [0, 3, 1, 2, 6, 4, 5].iter().map(|i| 500 + i * F).collect();
        let delay = reorder_delay(&pts);
        assert_eq!(delay, F);
        let t = timeline(500, delay, 0);
        let next = Next {
            ts: 500 + 7 * F,
            exact: true,
        };
        let (timing, _) = fragment_timing(&pts, t, Some(next));
        let got = times(&t, &timing);
        for (i, (dts, cts)) in got.iter().enumerate() {
            assert_eq!(*dts, i as i64 * F, "{got:?}");
            assert_eq!(*cts, pts[i] - 500 + delay, "{got:?}");
            assert!(cts >= dts);
        }
        assert!(timing.iter().all(|s| s.duration == F as u32));
    }

    #[test]
    fn a_cut_before_an_anchor_ends_on_the_usual_duration() {
        // I0 P3 B1 B2 | P6 B4 B5: the next fragment starts with P6, presented after B4 and B5.
        let pts: Vec<i64> = [0, 3, 1, 2].iter().map(|i| i * F).collect();
        let t = timeline(0, F, 0);
        let next = Next {
            ts: 6 * F,
            exact: false,
        };
        let (first, typical) = fragment_timing(&pts, t, Some(next));
        assert_eq!(first.iter().map(|s| s.duration).sum::<u32>(), 4 * F as u32);
        let t2 = Timeline {
            start: 4 * F,
            typical,
            ..t
        };
        let pts2: Vec<i64> = [6, 4, 5].iter().map(|i| i * F).collect();
        let (second, _) = fragment_timing(&pts2, t2, None);
        let got = times(&t2, &second);
        assert_eq!(got, vec![(4 * F, 7 * F), (5 * F, 5 * F), (6 * F, 6 * F)]);
    }

    #[test]
    fn decode_times_grow_on_repeated_or_wild_timestamps() {
        let pts = [0, F, F, 10 * 90_000, 2 * F];
        let t = timeline(0, 0, 0);
        let (timing, _) = fragment_timing(&pts, t, None);
        assert!(timing.iter().all(|s| s.duration > 0));
        let got = times(&t, &timing);
        assert!(got.windows(2).all(|w| w[1].0 > w[0].0), "{got:?}");
    }

    #[test]
    fn a_run_ending_after_a_gap_keeps_the_frame_period() {
        // K0 P3 B1 B2 P6 B4 B5 P9 B7 B8 P12, the run ends before B10 and B11 arrive.
        let pts: Vec<i64> = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12]
            .iter()
            .map(|i| i * F)
            .collect();
        let t = timeline(0, F, 0);
        let (timing, typical) = fragment_timing(&pts, t, None);
        assert_eq!(typical, F as u32);
        let total: u32 = timing.iter().map(|s| s.duration).sum();
        assert_eq!(i64::from(total), 13 * F, "decode span = presentation span");
    }

    #[test]
    fn a_run_ending_on_a_short_fragment_keeps_the_earlier_frame_period() {
        // The last fragment is K0 P3 only: the run ended before B1 and B2 arrived, so the
        // fragment's own smallest step (3 frames) is not the frame period; earlier ones said F.
        let pts: Vec<i64> = [0, 3].iter().map(|i| i * F).collect();
        let t = timeline(0, F, 0);
        let (timing, _) = fragment_timing(&pts, t, None);
        let total: u32 = timing.iter().map(|s| s.duration).sum();
        assert_eq!(i64::from(total), 4 * F, "decode span = presentation span");
    }
}
