//! Media loss within a session: survived, counted and reported.
//!
//! retina drops an access unit in which RTP packets went missing and tells the next frame how many
//! packets were lost before it (`loss()`); a malformed packet (a fragment without its start, an
//! out-of-order packet over TCP, a bad NAL header) comes out of the demuxer as an error, after
//! which retina 0.4.21 resets the depacketizer so that polling may go on (its `push` restores the
//! depacketizer's invariant "so the caller can try to recover after error"). [`LossTracker`] decides
//! what follows: after any loss the frames up to the next key frame are skipped (they reference the
//! lost picture and would decode broken), and the session is kept unless errors come
//! [`MAX_CONSECUTIVE_ERRORS`] times without a frame in between (a session that stays broken; a
//! closed connection ends the demuxed stream anyway). Every loss is counted per stream, and written
//! to the catalog as a `media_loss` event at most once per [`EVENT_INTERVAL_MS`] (the first at once).

use serde::Serialize;

/// Errors in a row, without a frame received in between, after which the session is given up.
pub(super) const MAX_CONSECUTIVE_ERRORS: u32 = 32;
/// At most one `media_loss` event per stream in this interval; later losses are summed into the next.
pub(super) const EVENT_INTERVAL_MS: i64 = 60_000;

/// Loss counters of one stream since the recorder started (shown in status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossCounts {
    /// RTP packets missing from the sequence (retina's per-frame `loss`, video and audio).
    pub rtp_packets_lost: u64,
    /// Malformed or out-of-order packets survived (the demuxer's errors).
    pub packet_errors: u64,
    /// Video frames received intact but dropped until the next key frame after a loss.
    pub frames_skipped: u64,
}

impl LossCounts {
    fn minus(self, o: LossCounts) -> LossCounts {
        LossCounts {
            rtp_packets_lost: self.rtp_packets_lost - o.rtp_packets_lost,
            packet_errors: self.packet_errors - o.packet_errors,
            frames_skipped: self.frames_skipped - o.frames_skipped,
        }
    }

    fn is_zero(self) -> bool {
        self == LossCounts::default()
    }
}

/// What to do with a video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    /// A non-key frame after a loss: dropped (and counted).
    Skip,
}

/// Per-stream loss state; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct LossTracker {
    counts: LossCounts,
    /// Counts already written in an event.
    reported: LossCounts,
    awaiting_key: bool,
    consecutive_errors: u32,
    last_event_ms: Option<i64>,
}

impl LossTracker {
    pub fn counts(&self) -> LossCounts {
        self.counts
    }

    /// A new session: its first frames are not "after a loss".
    pub fn session_started(&mut self) {
        self.awaiting_key = false;
        self.consecutive_errors = 0;
    }

    /// A video frame that retina delivered with `lost_packets` missing before it.
    pub fn video_frame(&mut self, lost_packets: u16, key: bool) -> Verdict {
        self.consecutive_errors = 0;
        if lost_packets > 0 {
            self.counts.rtp_packets_lost += u64::from(lost_packets);
            self.awaiting_key = true;
        }
        if key {
            self.awaiting_key = false;
        }
        if self.awaiting_key {
            self.counts.frames_skipped += 1;
            Verdict::Skip
        } else {
            Verdict::Keep
        }
    }

    /// An audio frame with `lost_packets` missing before it (audio frames stand alone: nothing is
    /// skipped).
    pub fn audio_frame(&mut self, lost_packets: u16) {
        self.consecutive_errors = 0;
        self.counts.rtp_packets_lost += u64::from(lost_packets);
    }

    /// The demuxer returned an error. Returns whether the session is still worth keeping.
    pub fn packet_error(&mut self) -> bool {
        self.counts.packet_errors += 1;
        self.awaiting_key = true;
        self.consecutive_errors += 1;
        self.consecutive_errors < MAX_CONSECUTIVE_ERRORS
    }

    /// The loss since the last event, if an event is due at `now_ms` (the first loss at once, then
    /// at most one per [`EVENT_INTERVAL_MS`]); marks it reported.
    pub fn event_due(&mut self, now_ms: i64) -> Option<LossCounts> {
        let new = self.counts.minus(self.reported);
        if new.is_zero()
            || self
                .last_event_ms
                .is_some_and(|t| now_ms - t < EVENT_INTERVAL_MS)
        {
            return None;
        }
        self.last_event_ms = Some(now_ms);
        self.reported = self.counts;
        Some(new)
    }
}

/// The text of a `media_loss` event.
pub(super) fn event_message(label: &str, c: LossCounts) -> String {
    format!(
        "{label}: {} RTP packets lost, {} malformed or out-of-order packets, {} frames skipped to the next key frame",
        c.rtp_packets_lost, c.packet_errors, c.frames_skipped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_skips_to_the_next_key_frame() {
        let mut t = LossTracker::default();
        assert_eq!(t.video_frame(0, true), Verdict::Keep);
        assert_eq!(t.video_frame(0, false), Verdict::Keep);
        assert_eq!(t.video_frame(3, false), Verdict::Skip);
        assert_eq!(t.video_frame(0, false), Verdict::Skip);
        assert_eq!(t.video_frame(0, true), Verdict::Keep);
        assert!(t.packet_error());
        assert_eq!(t.video_frame(0, false), Verdict::Skip);
        assert_eq!(t.video_frame(1, true), Verdict::Keep);
        assert_eq!(
            t.counts(),
            LossCounts {
                rtp_packets_lost: 4,
                packet_errors: 1,
                frames_skipped: 3,
            }
        );
    }

    #[test]
    fn a_session_that_stays_broken_is_given_up() {
        let mut t = LossTracker::default();
        for _ in 1..MAX_CONSECUTIVE_ERRORS {
            assert!(t.packet_error());
        }
        t.audio_frame(0);
        for _ in 1..MAX_CONSECUTIVE_ERRORS {
            assert!(t.packet_error());
        }
        assert!(!t.packet_error());
    }

    #[test]
    fn events_are_rate_limited_and_sum_what_came_between() {
        let mut t = LossTracker::default();
        assert_eq!(t.event_due(0), None);
        t.video_frame(2, false);
        assert_eq!(t.event_due(1_000).map(|c| c.rtp_packets_lost), Some(2));
        t.video_frame(1, false);
        assert_eq!(t.event_due(2_000), None);
        t.audio_frame(4);
        let c = t.event_due(1_000 + EVENT_INTERVAL_MS).expect("due");
        assert_eq!((c.rtp_packets_lost, c.frames_skipped), (5, 1));
        assert_eq!(t.event_due(10 * EVENT_INTERVAL_MS), None);
    }
}
