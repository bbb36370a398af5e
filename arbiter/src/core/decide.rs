//! The decisions of the core, after every input: failure detection (dead nodes, failed sessions),
//! takeovers within the capacity and by priority (preempting a lower priority), failback after the
//! hold-down, and level-triggered fencing.

use super::*;

impl Core {
    /// Whether peer `name` is dead now (never heard: dead once the start-up grace has passed).
    fn peer_dead(&self, name: &str) -> bool {
        let Some(p) = self.peers.get(name) else {
            return false;
        };
        let since = p.last_heard_ms.unwrap_or(self.started_ms);
        self.now_ms - since > self.timings.node_dead_ms
    }

    /// The core time at which the next living peer is dead unless heard before (the shell evaluates
    /// then, so that detection does not wait for its next periodic tick); `None` without living peers.
    pub fn next_death_ms(&self) -> Option<i64> {
        self.peers
            .values()
            .filter(|p| !p.dead)
            .map(|p| p.last_heard_ms.unwrap_or(self.started_ms) + self.timings.node_dead_ms + 1)
            .min()
    }

    /// Failure detection and takeovers, after every input.
    pub(super) fn evaluate(&mut self, out: &mut Vec<Action>) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        let mut dead_now = Vec::new();
        for name in names {
            let dead = self.peer_dead(&name);
            let Some(p) = self.peers.get_mut(&name) else {
                continue;
            };
            let now = self.now_ms;
            p.deaths_ms.retain(|t| now - t < FLAP_WINDOW_MS);
            if dead && !p.dead {
                p.dead = true;
                p.deaths_ms.push(now);
                let silent = p.last_heard_ms.map_or_else(
                    || "never heard".to_owned(),
                    |t| format!("silent for {} ms", now - t),
                );
                out.push(Action::Alarm {
                    message: format!("node {name} is dead ({silent})"),
                });
                if p.deaths_ms.len() >= FLAP_DEATHS && !p.flapping {
                    p.flapping = true;
                    out.push(Action::Alarm {
                        message: format!(
                            "node {name} flaps: dead {} times within {} s; no failback to it until it \
                             is stable for {} s",
                            p.deaths_ms.len(),
                            FLAP_WINDOW_MS / 1000,
                            FLAP_WINDOW_MS / 1000
                        ),
                    });
                }
                dead_now.push(name);
            } else if p.flapping && p.deaths_ms.is_empty() {
                p.flapping = false;
                out.push(Action::Alarm {
                    message: format!("node {name} is stable again"),
                });
            }
        }
        self.stand_down(out);
        // Streams this node protects whose holder is dead, or whose session failed on a living holder
        // while this node still receives it.
        let mut wanted: Vec<(String, String)> = Vec::new();
        let mut vouched: Vec<String> = Vec::new();
        for s in self.streams.values() {
            if s.spec.protector != self.me || s.holding.holder == self.me {
                continue;
            }
            let holder = &s.holding.holder;
            if holder == NOBODY {
                wanted.push((s.spec.key.clone(), "no node records it".to_owned()));
                continue;
            }
            let Some(p) = self.peers.get(holder) else {
                continue;
            };
            // The witness hears the silent holder, whose last heartbeat said it records the stream: a
            // partition between the two, not a death. (One that had not yet learned it holds the
            // stream, e.g. a hand-back cut off midway, records nothing: taken over again.)
            let records_there = p
                .health
                .get(&s.spec.key)
                .is_some_and(|h| h.mode == "record");
            if p.dead && records_there && self.witness_hears(holder) {
                if !p.vouched && !vouched.contains(holder) {
                    vouched.push(holder.clone());
                }
            } else if p.dead {
                let silent = p.last_heard_ms.map_or_else(
                    || "never heard".to_owned(),
                    |t| format!("heartbeats missing for {} ms", self.now_ms - t),
                );
                wanted.push((s.spec.key.clone(), format!("node {holder} dead: {silent}")));
            } else if let Some(since) = p.failing_since_ms.get(&s.spec.key) {
                let failed_ms = self.now_ms - since;
                let here = self.local.get(&s.spec.key).is_some_and(|h| h.receiving);
                if failed_ms > self.timings.stream_failed_ms && here {
                    wanted.push((
                        s.spec.key.clone(),
                        format!(
                            "session of {} failed on {holder} for {failed_ms} ms",
                            s.spec.key
                        ),
                    ));
                }
            }
        }
        for node in vouched {
            if let Some(p) = self.peers.get_mut(&node) {
                p.vouched = true;
            }
            out.push(Action::Alarm {
                message: format!(
                    "node {node} is silent here but the witness hears it: a partition between the \
                     two, no takeover"
                ),
            });
        }
        if !wanted.is_empty() {
            // Priority order (higher first), then name, within the capacity.
            wanted.sort_by(|a, b| {
                let pa = self.streams.get(&a.0).map_or(0, |s| s.spec.priority);
                let pb = self.streams.get(&b.0).map_or(0, |s| s.spec.priority);
                pb.cmp(&pa).then_with(|| a.0.cmp(&b.0))
            });
            for (key, reason) in wanted {
                self.take(&[key], &reason, out);
            }
        }
        // Promotions to (re)send: held here, not confirmed, not being carried out.
        let retry: Vec<String> = self
            .streams
            .values()
            .filter(|s| {
                s.holding.holder == self.me
                    && s.promote_pending
                    && !s.in_flight
                    && self.now_ms >= s.retry_at_ms
            })
            .map(|s| s.spec.key.clone())
            .collect();
        for key in retry {
            self.promote_action(&key, "resuming a takeover".to_owned(), out);
        }
        self.failback(out);
        self.fence(out);
    }

    /// How many streams this node holds that it does not own.
    pub(super) fn taken_over(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.holding.holder == self.me && s.spec.owner != self.me)
            .count()
    }

    /// How many kbit/s of streams this node holds that it does not own (each at its measured or
    /// configured bitrate).
    pub(super) fn taken_over_kbps(&self) -> u64 {
        self.streams
            .values()
            .filter(|s| s.holding.holder == self.me && s.spec.owner != self.me)
            .map(Stream::rate_kbps)
            .sum()
    }

    /// Whether one more stream of `kbps` fits beside what is taken over now, less `freed` (a count
    /// and a rate given up to make room).
    fn fits(&self, kbps: u64, freed: (usize, u64)) -> bool {
        let streams_ok = self
            .capacity
            .streams
            .is_none_or(|c| self.taken_over().saturating_sub(freed.0) < c as usize);
        let kbps_ok = self
            .capacity
            .kbps
            .is_none_or(|c| self.taken_over_kbps().saturating_sub(freed.1) + kbps <= c);
        streams_ok && kbps_ok
    }

    /// The capacity as words, for alarms.
    fn capacity_words(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.capacity.streams {
            parts.push(format!("{c} streams"));
        }
        if let Some(c) = self.capacity.kbps {
            parts.push(format!(
                "{} Mbit/s ({:.1} taken)",
                c / 1000,
                self.taken_over_kbps() as f64 / 1000.0
            ));
        }
        parts.join(" and ")
    }

    /// Takes `keys` over with new epochs, within the capacity; the rest are reported uncovered.
    pub(super) fn take(&mut self, keys: &[String], reason: &str, out: &mut Vec<Action>) {
        for key in keys {
            let Some((priority, kbps)) = self
                .streams
                .get(key)
                .map(|s| (s.spec.priority, s.rate_kbps()))
            else {
                continue;
            };
            if !self.fits(kbps, (0, 0)) && !self.preempt_below(priority, kbps, key, out) {
                let words = self.capacity_words();
                let Some(s) = self.streams.get_mut(key) else {
                    continue;
                };
                if !s.uncovered {
                    s.uncovered = true;
                    out.push(Action::Alarm {
                        message: format!(
                            "{key} is uncovered: {reason}, and this node is at its capacity of {words} \
                             ({key} counts {:.1} Mbit/s)",
                            kbps as f64 / 1000.0
                        ),
                    });
                }
                continue;
            }
            let me = self.me.clone();
            let Some(s) = self.streams.get_mut(key) else {
                continue;
            };
            let previous = if s.holding.holder == NOBODY {
                "none".to_owned()
            } else {
                s.holding.holder.clone()
            };
            s.holding = Holding {
                holder: me,
                epoch: s.holding.epoch + 1,
            };
            s.promote_pending = true;
            s.uncovered = false;
            out.push(Action::Persist);
            self.promote_action(key, format!("{reason} (previous holder {previous})"), out);
        }
    }

    /// At capacity: gives up the lowest-priority streams this node took over whose priority is below
    /// `priority`, as few as make room for `for_key` (of `kbps`); none if even all of them would not.
    /// Each is released here and held by nobody under a new epoch (uncovered, reported; taken back
    /// when room frees). Returns whether room was made.
    fn preempt_below(
        &mut self,
        priority: u32,
        kbps: u64,
        for_key: &str,
        out: &mut Vec<Action>,
    ) -> bool {
        let me = self.me.clone();
        let mut candidates: Vec<(u32, String, u64)> = self
            .streams
            .values()
            .filter(|s| s.holding.holder == me && s.spec.owner != me && s.spec.priority < priority)
            .map(|s| (s.spec.priority, s.spec.key.clone(), s.rate_kbps()))
            .collect();
        // Lowest priority first; among equals, the last by name first.
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        let mut victims = Vec::new();
        let mut freed = (0usize, 0u64);
        for (_, key, rate) in candidates {
            if self.fits(kbps, freed) {
                break;
            }
            freed = (freed.0 + 1, freed.1 + rate);
            victims.push(key);
        }
        if victims.is_empty() || !self.fits(kbps, freed) {
            return false;
        }
        for victim in victims {
            let Some(v) = self.streams.get_mut(&victim) else {
                continue;
            };
            v.holding = Holding {
                holder: NOBODY.to_owned(),
                epoch: v.holding.epoch + 1,
            };
            v.promote_pending = false;
            v.uncovered = true;
            let epoch = v.holding.epoch;
            out.push(Action::Persist);
            out.push(Action::Release {
                stream: victim.clone(),
                epoch,
                reason: format!("room for {for_key}, of higher priority"),
            });
            out.push(Action::Alarm {
                message: format!(
                    "{victim} is uncovered: released to make room for {for_key}, of higher priority \
                     (capacity {})",
                    self.capacity_words()
                ),
            });
        }
        true
    }

    fn promote_action(&mut self, key: &str, reason: String, out: &mut Vec<Action>) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        s.in_flight = true;
        out.push(Action::Promote {
            stream: key.to_owned(),
            epoch: s.holding.epoch,
            takeover: s.spec.takeover,
            after_frames_of: s.spec.owner.clone(),
            after: None,
            reason,
        });
    }

    /// Failback: streams held here that their living owner has shadowed for the hold-down time.
    fn failback(&mut self, out: &mut Vec<Action>) {
        let hold = self.timings.failback_hold_ms;
        let me = self.me.clone();
        let now = self.now_ms;
        let mut ready = Vec::new();
        for s in self.streams.values_mut() {
            if s.holding.holder != me || s.spec.owner == me {
                s.owner_ready_since_ms = None;
                continue;
            }
            let owner_shadows = self.peers.get(&s.spec.owner).is_some_and(|p| {
                !p.dead
                    && !p.flapping
                    && p.last_heard_ms.is_some()
                    && p.health
                        .get(&s.spec.key)
                        .is_some_and(|h| h.receiving && h.mode == "shadow")
            });
            if !owner_shadows || s.promote_pending || s.handing_back || s.planned {
                s.owner_ready_since_ms = None;
                continue;
            }
            let since = *s.owner_ready_since_ms.get_or_insert(now);
            if hold > 0 && now - since >= hold {
                s.handing_back = true;
                ready.push((s.spec.key.clone(), s.holding.epoch, s.spec.owner.clone()));
            }
        }
        for (stream, epoch, owner) in ready {
            out.push(Action::HandBack {
                stream,
                epoch,
                owner,
            });
        }
    }

    /// Fencing, level-triggered: a stream this node's recorder records while another node (or nobody)
    /// holds it is released again every [`FENCE_RETRY_MS`] until it is not (a release can be lost: the
    /// recorder was not up yet, or refused it).
    fn fence(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let standing_down = self.standing_down;
        for s in self.streams.values_mut() {
            let held_here =
                s.holding.holder == self.me && !(standing_down && s.spec.owner == self.me);
            if held_here || s.handing_back {
                continue;
            }
            let recording = self
                .local
                .get(&s.spec.key)
                .is_some_and(|h| h.mode == "record");
            if !recording || s.fenced_at_ms.is_some_and(|t| now - t < FENCE_RETRY_MS) {
                continue;
            }
            s.fenced_at_ms = Some(now);
            out.push(Action::Release {
                stream: s.spec.key.clone(),
                epoch: s.holding.epoch,
                reason: if s.holding.holder == self.me {
                    "recorded here while standing down (cut off from the standby and the witness)"
                        .to_owned()
                } else {
                    format!(
                        "recorded here while {} holds it under epoch {}",
                        if s.holding.holder == NOBODY {
                            "no node"
                        } else {
                            s.holding.holder.as_str()
                        },
                        s.holding.epoch
                    )
                },
            });
        }
    }
}
