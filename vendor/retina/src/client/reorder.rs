// Copyright (C) The Retina Authors
// SPDX-License-Identifier: MIT OR Apache-2.0

//! A small, bounded reorder buffer for RTP over UDP.
//!
//! UDP may deliver datagrams out of order. Without this buffer, a packet that arrives after its
//! successor is skipped as out-of-order, and the gap its successor opened is reported as loss.
//! With it, a packet that arrives ahead of the expected sequence number is held back for a short
//! while (at most `max_packets` packets and `max_delay` of time), so that the missing ones can
//! arrive and everything is handed on in sequence order. A packet that does not arrive within
//! that window is taken as lost: the held ones are handed on, and the sequence gap is reported
//! as loss as before.

use std::time::Duration;

use tokio::time::Instant;

/// A packet held back because it arrived ahead of the expected sequence number.
#[derive(Debug)]
struct Held<T> {
    seq: u16,
    received: Instant,
    item: T,
}

/// Reorders packets by RTP sequence number within a bounded window. `T` is the packet (or a
/// handle to it); the buffer only looks at the sequence number passed with it.
#[derive(Debug)]
pub(super) struct ReorderBuffer<T> {
    max_packets: usize,
    max_delay: Duration,

    /// The sequence number expected next; `None` before the first packet.
    next_seq: Option<u16>,

    /// Packets ahead of `next_seq`, in arrival order. At most `max_packets + 1` long (briefly,
    /// until [`ReorderBuffer::pop`] releases one), so a linear scan is fine.
    held: Vec<Held<T>>,
}

/// Distance from `next` to `seq`, ordered so that packets behind `next` (late or duplicated, to be
/// handed on at once) come first, then packets ahead of it in sequence order.
fn order_key(seq: u16, next: u16) -> u16 {
    seq.wrapping_sub(next).wrapping_add(0x8000)
}

impl<T> ReorderBuffer<T> {
    /// A buffer holding at most `max_packets` packets for at most `max_delay` each. With
    /// `max_packets == 0` every packet is handed on at once, as without a buffer.
    pub(super) fn new(max_packets: usize, max_delay: Duration) -> Self {
        Self {
            max_packets,
            max_delay,
            next_seq: None,
            held: Vec::new(),
        }
    }

    /// Offers a packet just received with sequence number `seq`. Returns it if it is to be
    /// handed on now (it is the expected one, or behind it, or the buffer is disabled); else it
    /// is held, and a later [`ReorderBuffer::pop`] hands it on.
    ///
    /// After a packet is held, call `pop` before receiving more: the buffer may be over its size.
    pub(super) fn push(&mut self, seq: u16, now: Instant, item: T) -> Option<T> {
        if self.max_packets == 0 {
            return Some(item);
        }
        let Some(next) = self.next_seq else {
            self.next_seq = Some(seq.wrapping_add(1));
            return Some(item);
        };
        let ahead = seq.wrapping_sub(next);
        if ahead == 0 {
            self.next_seq = Some(seq.wrapping_add(1));
            return Some(item);
        }
        if ahead >= 0x8000 {
            // Late or duplicated: the sequence check downstream skips it, as without a buffer.
            return Some(item);
        }
        self.held.push(Held {
            seq,
            received: now,
            item,
        });
        None
    }

    /// Returns the held packet due to be handed on at `now`, if any: the one continuing the
    /// sequence, or else the lowest one, when the buffer is over `max_packets` or its oldest
    /// packet has waited `max_delay` (the packets missing before it are then taken as lost).
    pub(super) fn pop(&mut self, now: Instant) -> Option<T> {
        let next = self.next_seq?;
        let (i, lowest) = self
            .held
            .iter()
            .enumerate()
            .min_by_key(|(_, h)| order_key(h.seq, next))?;
        let in_sequence = lowest.seq.wrapping_sub(next) == 0;
        let late = lowest.seq.wrapping_sub(next) >= 0x8000;
        let overdue = self.held.len() > self.max_packets
            || self.deadline().is_some_and(|deadline| deadline <= now);
        if !(in_sequence || late || overdue) {
            return None;
        }
        let held = self.held.swap_remove(i);
        if !late {
            self.next_seq = Some(held.seq.wrapping_add(1));
        }
        Some(held.item)
    }

    /// When the oldest held packet stops waiting for the ones missing before it.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.held
            .iter()
            .map(|h| h.received)
            .min()
            .map(|received| received + self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut ReorderBuffer<u16>, now: Instant, out: &mut Vec<u16>) {
        while let Some(seq) = b.pop(now) {
            out.push(seq);
        }
    }

    /// Feeds `seqs` at one instant, returning what is handed on then.
    fn feed(b: &mut ReorderBuffer<u16>, now: Instant, seqs: &[u16]) -> Vec<u16> {
        let mut out = Vec::new();
        for &seq in seqs {
            if let Some(s) = b.push(seq, now, seq) {
                out.push(s);
            }
            drain(b, now, &mut out);
        }
        out
    }

    #[test]
    fn swapped_packets_come_out_in_order() {
        let now = Instant::now();
        let mut b = ReorderBuffer::new(4, Duration::from_millis(50));
        assert_eq!(
            feed(&mut b, now, &[10, 12, 11, 13, 15, 14]),
            [10, 11, 12, 13, 14, 15]
        );
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_lost_packet_is_given_up_after_max_delay() {
        let now = Instant::now();
        let mut b = ReorderBuffer::new(4, Duration::from_millis(50));
        assert_eq!(feed(&mut b, now, &[1, 3, 4]), [1]);
        assert_eq!(b.deadline(), Some(now + Duration::from_millis(50)));
        assert_eq!(b.pop(now + Duration::from_millis(49)), None);
        let mut out = Vec::new();
        drain(&mut b, now + Duration::from_millis(50), &mut out);
        assert_eq!(out, [3, 4]);
        // The lost packet arriving after all is handed on (and skipped downstream as late).
        assert_eq!(feed(&mut b, now, &[2, 5]), [2, 5]);
    }

    #[test]
    fn a_lost_packet_is_given_up_when_the_buffer_is_full() {
        let now = Instant::now();
        let mut b = ReorderBuffer::new(2, Duration::from_secs(10));
        assert_eq!(feed(&mut b, now, &[1, 3, 4]), [1]);
        assert_eq!(feed(&mut b, now, &[5]), [3, 4, 5]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let now = Instant::now();
        let mut b = ReorderBuffer::new(4, Duration::from_millis(50));
        assert_eq!(
            feed(&mut b, now, &[65534, 0, 65535, 1]),
            [65534, 65535, 0, 1]
        );
    }

    #[test]
    fn disabled_hands_everything_on_at_once() {
        let now = Instant::now();
        let mut b = ReorderBuffer::new(0, Duration::from_millis(50));
        assert_eq!(feed(&mut b, now, &[1, 3, 2]), [1, 3, 2]);
    }
}
