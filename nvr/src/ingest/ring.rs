//! The shadow ring: the last few seconds of a stream that is received but not recorded (shadow mode),
//! so that a promotion can start recording exactly after a frame another node wrote last.
//!
//! Bounds: the oldest GOP is dropped once the rest still covers `max_ms` and two GOPs; and
//! never more than `max_bytes`, dropping the oldest GOP first (then even below two GOPs). The ring
//! therefore always starts at a key frame once it has dropped anything.

use std::collections::VecDeque;

use crate::frame::{FrameId, MediaFrame, VideoFrame};

/// Bounds of a shadow ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    pub max_ms: i64,
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct ShadowRing {
    items: VecDeque<MediaFrame>,
    bytes: usize,
    key_frames: usize,
    limits: RingLimits,
}

impl ShadowRing {
    pub fn new(limits: RingLimits) -> Self {
        ShadowRing {
            items: VecDeque::new(),
            bytes: 0,
            key_frames: 0,
            limits,
        }
    }

    pub fn push(&mut self, frame: MediaFrame) {
        self.bytes += frame.len_bytes();
        if matches!(&frame, MediaFrame::Video(v) if v.key) {
            self.key_frames += 1;
        }
        self.items.push_back(frame);
        self.trim();
    }

    fn trim(&mut self) {
        while self.bytes > self.limits.max_bytes && !self.items.is_empty() {
            self.drop_oldest_gop();
        }
        // Drop the oldest GOP while what remains still covers `max_ms` and two GOPs.
        while self.key_frames > 2 && self.span_without_oldest_gop_ms() >= self.limits.max_ms {
            self.drop_oldest_gop();
        }
    }

    /// Drops the first item and everything up to (not including) the next key frame.
    fn drop_oldest_gop(&mut self) {
        let mut first = true;
        while let Some(front) = self.items.front() {
            let key = matches!(front, MediaFrame::Video(v) if v.key);
            if key && !first {
                break;
            }
            first = false;
            if key {
                self.key_frames -= 1;
            }
            self.bytes -= front.len_bytes();
            self.items.pop_front();
        }
    }

    fn videos(&self) -> impl DoubleEndedIterator<Item = (usize, &VideoFrame)> {
        self.items.iter().enumerate().filter_map(|(i, f)| match f {
            MediaFrame::Video(v) => Some((i, &**v)),
            MediaFrame::Audio(_) => None,
        })
    }

    /// Wall time from the second key frame to the newest video frame.
    fn span_without_oldest_gop_ms(&self) -> i64 {
        let mut keys = self.videos().filter(|(_, v)| v.key);
        let (Some(_), Some((_, second))) = (keys.next(), keys.next()) else {
            return 0;
        };
        let newest = self.videos().next_back().map_or(0, |(_, v)| v.wall_ms);
        newest - second.wall_ms
    }

    /// Wall time from the oldest to the newest video frame.
    pub fn span_ms(&self) -> i64 {
        match (self.videos().next(), self.videos().next_back()) {
            (Some((_, a)), Some((_, b))) => b.wall_ms - a.wall_ms,
            _ => 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The position of the newest frame matching `id`.
    pub fn position(&self, id: &FrameId) -> Option<usize> {
        self.videos()
            .rev()
            .find(|(_, v)| v.id().matches(id))
            .map(|(i, _)| i)
    }

    /// The position of the oldest key frame.
    pub fn oldest_key(&self) -> Option<usize> {
        self.videos().find(|(_, v)| v.key).map(|(i, _)| i)
    }

    /// The position of the newest key frame.
    pub fn newest_key(&self) -> Option<usize> {
        self.videos().rev().find(|(_, v)| v.key).map(|(i, _)| i)
    }

    /// The newest video frame.
    pub fn newest_video(&self) -> Option<&VideoFrame> {
        self.videos().next_back().map(|(_, v)| v)
    }

    /// The video frame at `i`, if that item is one.
    pub fn video_at(&self, i: usize) -> Option<&VideoFrame> {
        match self.items.get(i) {
            Some(MediaFrame::Video(v)) => Some(v),
            _ => None,
        }
    }

    /// Takes every item from position `from` on, and empties the ring.
    pub fn take_from(&mut self, from: usize) -> Vec<MediaFrame> {
        let out = self.items.drain(..).skip(from).collect();
        self.bytes = 0;
        self.key_frames = 0;
        out
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.key_frames = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameId, VideoFrame};
    use crate::ingest::VideoTrack;
    use std::sync::Arc;

    /// Frame `i` (its data differs from every other frame's).
    fn data(i: i64, bytes: usize) -> bytes::Bytes {
        let mut d = vec![0u8; bytes];
        d[..8].copy_from_slice(&i.to_be_bytes());
        bytes::Bytes::from(d)
    }

    fn wall(i: i64) -> i64 {
        1_000_000 + i * 40
    }

    fn frame(i: i64, gop: i64, bytes: usize) -> MediaFrame {
        MediaFrame::Video(Arc::new(VideoFrame::new(
            i * 3600,
            i % gop == 0,
            data(i, bytes),
            wall(i),
            false,
            Arc::new(VideoTrack::synthetic_avc1(64, 64)),
        )))
    }

    #[test]
    fn keeps_at_least_two_gops_and_the_time_bound() {
        let limits = RingLimits {
            max_ms: 2_000,
            max_bytes: usize::MAX,
        };
        // 10 s GOPs: two GOPs (20 s) are kept although they exceed 2 s.
        let mut ring = ShadowRing::new(limits);
        for i in 0..500 {
            ring.push(frame(i, 250, 100));
        }
        assert_eq!(ring.len(), 500);
        ring.push(frame(500, 250, 100));
        assert_eq!(ring.len(), 251, "the oldest GOP went");
        assert!(ring.video_at(0).is_some_and(|v| v.key));
        // 1 s GOPs: about 2 s plus the GOP being received are kept.
        let mut ring = ShadowRing::new(limits);
        for i in 0..300 {
            ring.push(frame(i, 25, 100));
        }
        assert!(ring.span_ms() <= 3_000, "{}", ring.span_ms());
        assert!(ring.span_ms() >= 2_000, "{}", ring.span_ms());
        assert!(ring.video_at(0).is_some_and(|v| v.key));
        assert_eq!(ring.bytes(), ring.len() * 100);
    }

    #[test]
    fn byte_cap_wins_and_lookups_find_frames() {
        let mut ring = ShadowRing::new(RingLimits {
            max_ms: 60_000,
            max_bytes: 10_000,
        });
        for i in 0..200 {
            ring.push(frame(i, 25, 100));
        }
        assert!(ring.bytes() <= 10_000);
        assert!(ring.video_at(0).is_some_and(|v| v.key));
        let newest = ring.newest_video().expect("frame").id().clone();
        assert_eq!(ring.position(&newest), Some(ring.len() - 1));
        let gone = FrameId::of(&data(3, 100), false, wall(3));
        assert_eq!(ring.position(&gone), None);
        let kept = FrameId::of(&data(199, 100), false, wall(199) + 500);
        assert_eq!(
            ring.position(&kept),
            Some(ring.len() - 1),
            "wall times 0.5 s apart match"
        );
        let key = ring.newest_key().expect("key");
        assert!(ring.video_at(key).is_some_and(|v| v.key));
        let taken = ring.take_from(key);
        assert!(!taken.is_empty());
        assert!(ring.is_empty() && ring.bytes() == 0);
    }
}
