//! The witness in the core's decisions: whether the witness vouches for a silent holder (no
//! takeover), and a node cut off from every peer standing down and resuming.

use super::*;

impl Core {
    /// Whether the witness (alive here) says it hears `node`: then `node`'s silence here is a
    /// partition between the two, not its death.
    pub(super) fn witness_hears(&self, node: &str) -> bool {
        let Some(w) = self.witness.as_deref() else {
            return false;
        };
        if w == self.me || w == node {
            return false;
        }
        self.peers.get(w).is_some_and(|p| {
            !p.dead && p.last_heard_ms.is_some() && p.hears.iter().any(|h| h == node)
        })
    }

    /// With a witness: a node that heard a peer since it started and now hears none (its standby and
    /// the witness alike are silent for `node_dead_ms`) stands down: the streams it owns and holds go
    /// to `shadow` (the standby, which with the witness does hear each other, takes them over after
    /// its last mirrored frame); it records them again when [`Core::may_resume`] says so. The
    /// witness itself and a cluster without one never stand down.
    pub(super) fn stand_down(&mut self, out: &mut Vec<Action>) {
        if self.witness.is_none() || self.is_witness() || self.peers.is_empty() {
            return;
        }
        let isolated = self.peers.values().all(|p| p.dead)
            && self.peers.values().any(|p| p.last_heard_ms.is_some());
        let down = isolated || (self.standing_down && !self.may_resume());
        if down == self.standing_down {
            return;
        }
        self.standing_down = down;
        let me = self.me.clone();
        let now = self.now_ms;
        let mine: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.holding.holder == me && s.spec.owner == me)
            .map(|s| s.spec.key.clone())
            .collect();
        if down {
            out.push(Action::Alarm {
                message: format!(
                    "no peer heard for {} ms (neither the standby nor the witness): standing down, \
                     {} streams to shadow",
                    self.timings.node_dead_ms,
                    mine.len()
                ),
            });
            for key in mine {
                let Some(s) = self.streams.get_mut(&key) else {
                    continue;
                };
                s.fenced_at_ms = Some(now);
                out.push(Action::Release {
                    stream: key,
                    epoch: s.holding.epoch,
                    reason: "cut off from the standby and the witness: standing down".to_owned(),
                });
            }
        } else {
            out.push(Action::Alarm {
                message: format!(
                    "a peer is heard again: recording the {} streams held here again",
                    mine.len()
                ),
            });
            for key in mine {
                let Some(s) = self.streams.get_mut(&key) else {
                    continue;
                };
                s.promote_pending = true;
                s.in_flight = false;
                s.retry_at_ms = now;
            }
        }
    }

    /// After a stand-down, with a peer heard again: whether this node records its streams again. Yes
    /// once it hears their standby (whose heartbeat told it first whether the standby took them
    /// over), or once the witness says that standby is gone too. Not while only the witness is heard
    /// and hears the standby: that standby took the streams over while this node was cut off.
    fn may_resume(&self) -> bool {
        let alive = |n: &str| {
            self.peers
                .get(n)
                .is_some_and(|p| !p.dead && p.last_heard_ms.is_some())
        };
        let standbys: Vec<&str> = self
            .streams
            .values()
            .filter(|s| s.spec.owner == self.me)
            .map(|s| s.spec.protector.as_str())
            .collect();
        standbys.iter().all(|sb| {
            alive(sb)
                || self
                    .witness
                    .as_deref()
                    .is_some_and(|w| alive(w) && !self.witness_hears(sb))
        })
    }
}
