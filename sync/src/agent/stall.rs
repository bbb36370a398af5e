//! Conditions that stop mirroring progress (stalls): a segment not sealed on the standby, a peer that
//! cannot be reached or is silent, heads refused, a local log or disk error. Each side notes the ones
//! it sees while they last ([`observe`], [`clear`]); the status lists them with how long they have
//! lasted, and one that lasts longer than `stall_alarm_ms` raises one alarm.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{with_status, AgentStatus, SharedStatus};

/// One ongoing condition, as the status file shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stall {
    pub kind: String,
    pub peer: Option<String>,
    pub segment: Option<String>,
    pub detail: String,
    /// When it began (the earliest observation).
    pub since_ms: i64,
    pub waited_ms: i64,
    /// Its alarm has been raised.
    pub alarmed: bool,
}

/// The ongoing stalls by key (`<what>:<name>`, e.g. `segment:<path>`, `link:<peer>`).
pub type Stalls = BTreeMap<String, Stall>;

/// What is stalled, for [`observe`].
pub struct Observed<'a> {
    pub kind: &'a str,
    pub peer: Option<&'a str>,
    pub segment: Option<&'a str>,
    pub detail: &'a str,
    /// When the condition began as far as the caller knows; an earlier start already noted is kept.
    pub since_ms: i64,
}

/// Notes that the condition `key` holds; returns since when (the earliest start noted).
pub fn observe(status: &SharedStatus, key: &str, o: Observed<'_>) -> i64 {
    with_status(status, |s| {
        let stall = s.stall_map.entry(key.to_owned()).or_insert_with(|| Stall {
            since_ms: o.since_ms,
            ..Stall::default()
        });
        stall.kind = o.kind.to_owned();
        stall.peer = o.peer.map(str::to_owned);
        stall.segment = o.segment.map(str::to_owned);
        if stall.detail != o.detail {
            stall.detail = o.detail.to_owned();
        }
        stall.since_ms = stall.since_ms.min(o.since_ms);
        stall.since_ms
    })
}

/// The condition `key` is over.
pub fn clear(status: &SharedStatus, key: &str) {
    with_status(status, |s| {
        s.stall_map.remove(key);
    });
}

/// Updates how long each stall has lasted, lists them in `status.stalls` (oldest first) and returns
/// those that just passed `stall_alarm_ms` (marked alarmed, so each raises one alarm).
pub(super) fn refresh(status: &mut AgentStatus, now_ms: i64) -> Vec<Stall> {
    let bound = i64::try_from(status.stall_alarm_ms).unwrap_or(i64::MAX);
    let mut overdue = Vec::new();
    for stall in status.stall_map.values_mut() {
        stall.waited_ms = (now_ms - stall.since_ms).max(0);
        if !stall.alarmed && stall.waited_ms >= bound {
            stall.alarmed = true;
            overdue.push(stall.clone());
        }
    }
    let mut list: Vec<Stall> = status.stall_map.values().cloned().collect();
    list.sort_by_key(|s| s.since_ms);
    status.stalls = list;
    for lag in status
        .peers
        .values_mut()
        .flat_map(|p| p.streams.values_mut())
    {
        lag.lag_ms = lag.waiting_since_ms.map_or(0, |t| (now_ms - t).max(0));
    }
    overdue
}
