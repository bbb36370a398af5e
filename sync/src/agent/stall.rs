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
    let stall_map = &status.stall_map;
    for (peer, peer_status) in status.peers.iter_mut() {
        for (stream, lag) in peer_status.streams.iter_mut() {
            // A stalled segment of the stream (e.g. a file that cannot be read) waits as well, even
            // when the segment the lag shows does not.
            let since_ms = match (lag.waiting_since_ms, oldest_stall(stall_map, peer, stream)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            lag.lag_ms = since_ms.map_or(0, |t| (now_ms - t).max(0));
        }
    }
    overdue
}

/// Since when the oldest stall on a segment of `stream` (`camera/stream`) for `peer` has lasted.
fn oldest_stall(stalls: &Stalls, peer: &str, stream: &str) -> Option<i64> {
    stalls
        .values()
        .filter(|s| s.peer.as_deref() == Some(peer))
        .filter(|s| {
            s.segment
                .as_deref()
                .and_then(|path| store::layout::parse_media_path(std::path::Path::new(path)))
                .is_some_and(|info| format!("{}/{}", info.camera, info.stream) == stream)
        })
        .map(|s| s.since_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::StreamLag;

    /// A stream whose only waiting segment is one that cannot be read (a stall of its own, not the
    /// segment its lag shows) must not read `lag_ms` 0.
    #[test]
    fn a_stalled_segment_counts_in_its_streams_lag() {
        let mut status = AgentStatus::default();
        let peer = status.peers.entry("standby-1".to_owned()).or_default();
        peer.streams
            .insert("cam1/main".to_owned(), StreamLag::default());
        peer.streams
            .insert("cam2/main".to_owned(), StreamLag::default());
        let path = "media/cam1/main/2026-12-02/20261202T120000000Z_nvr-a.mp4";
        status.stall_map.insert(
            format!("segment:{path}"),
            Stall {
                kind: "segment_unreadable".to_owned(),
                peer: Some("standby-1".to_owned()),
                segment: Some(path.to_owned()),
                since_ms: 1_000,
                ..Stall::default()
            },
        );
        refresh(&mut status, 5_000);
        let streams = &status.peers["standby-1"].streams;
        assert_eq!(streams["cam1/main"].lag_ms, 4_000);
        assert_eq!(
            streams["cam2/main"].lag_ms, 0,
            "another stream does not wait"
        );
    }
}
