//! The alarms a stream's timeline shows (`docs/api.md`, "Alarms on the timeline"): this node's alarms
//! that concern the stream and overlap the range, each with a start and an end (`None`: still open).
//!
//! - Conditions (a camera down, an uncovered stream) come from the alarm history
//!   (`alarm_history`): they concern the stream they name, and last until they clear.
//! - The sync agent's alarms come from its `sync.db` (read-only): events that need a person, so each
//!   lasts from its time until an admin acknowledges it (open while nobody has). One naming a segment
//!   concerns that segment's stream. One naming no stream concerns every stream when it is about
//!   the history or tampering (a refused history, a forked log, encrypted files: what is recorded here
//!   may be in question); when it names a peer that this node protects (a standby refusing its
//!   primary's history), only the streams that peer owns, and when it names another peer (a primary
//!   whose standby refused its history), only this node's own streams. The other sync alarms
//!   (stalls, quota) stay on the cluster page.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};
use serde_json::{json, Value};

use crate::alarm_history::{category_name, AlarmHistory};
use crate::alarms::{Ack, Category};

/// Most alarms in one answer (the oldest first; `alarms_truncated` says more exist).
pub const ALARM_LIST_MAX: usize = 500;

/// The stream a timeline is about.
#[derive(Debug, Clone, Copy)]
pub struct StreamRef<'a> {
    pub camera: &'a str,
    pub stream: &'a str,
    /// The camera's owner in the cluster file (`None`: not in it).
    pub owner: Option<&'a str>,
}

/// Where this node's alarms are.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub node: &'a str,
    /// The primaries this node protects (its `protects` in the cluster file).
    pub protects: &'a [String],
    pub data_dir: &'a Path,
    pub state_dir: &'a Path,
}

/// One alarm on a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineAlarm {
    pub id: String,
    pub category: String,
    pub kind: String,
    pub subject: Option<String>,
    pub detail: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// One row of the sync agent's `alarms` table.
#[derive(Debug, Clone)]
struct SyncAlarm {
    id: i64,
    time_ms: i64,
    kind: String,
    peer: Option<String>,
    segment_path: Option<String>,
    detail: String,
}

/// Whether sync alarm `a` of this node concerns stream `s`.
fn concerns(a: &SyncAlarm, s: StreamRef<'_>, src: Sources<'_>) -> bool {
    let named = a
        .segment_path
        .as_deref()
        .and_then(|p| store::parse_media_path(Path::new(p)));
    if let Some(info) = named {
        return info.camera == s.camera && info.stream == s.stream;
    }
    if !matches!(
        Category::of_sync_kind(&a.kind),
        Category::History | Category::Tampering
    ) {
        return false;
    }
    match (a.peer.as_deref(), s.owner) {
        (Some(peer), Some(owner)) if src.protects.iter().any(|p| p == peer) => owner == peer,
        (Some(_), Some(owner)) => owner == src.node,
        _ => true,
    }
}

/// The sync agent's alarms raised before `end_ms` (none without a `sync.db`).
fn sync_alarms(data_dir: &Path, end_ms: i64) -> Result<Vec<SyncAlarm>, rusqlite::Error> {
    let path = data_dir.join(store::layout::SYNC_DB_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare(
        "SELECT id, time_ms, kind, peer, segment_path, detail FROM alarms WHERE time_ms < ?1
         ORDER BY time_ms, id",
    )?;
    let rows = stmt.query_map(params![end_ms], |r| {
        Ok(SyncAlarm {
            id: r.get(0)?,
            time_ms: r.get(1)?,
            kind: r.get(2)?,
            peer: r.get(3)?,
            segment_path: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// The alarms of this node that concern `s` and overlap `[start_ms, end_ms)`, oldest first, at most
/// [`ALARM_LIST_MAX`] (the bool: more exist); with what could not be read (in `problems`).
pub fn alarms_of_stream(
    src: Sources<'_>,
    acks: &BTreeMap<String, Ack>,
    s: StreamRef<'_>,
    start_ms: i64,
    end_ms: i64,
    problems: &mut Vec<String>,
) -> (Vec<TimelineAlarm>, bool) {
    let mut out = Vec::new();
    let subject = format!("{}/{}", s.camera, s.stream);
    let history = AlarmHistory::open_read_only(src.state_dir).and_then(|h| match h {
        Some(h) => h.spans(&subject, start_ms, end_ms, ALARM_LIST_MAX + 1),
        None => Ok(Vec::new()),
    });
    match history {
        Ok(spans) => out.extend(spans.into_iter().map(|h| TimelineAlarm {
            id: h.id,
            category: h.category,
            kind: h.kind,
            subject: h.subject,
            detail: h.detail,
            start_ms: h.start_ms,
            end_ms: h.end_ms,
        })),
        Err(e) => problems.push(format!("alarm history: {e}")),
    }
    match sync_alarms(src.data_dir, end_ms) {
        Ok(rows) => {
            for a in rows.into_iter().filter(|a| concerns(a, s, src)) {
                let id = format!("sync:{}", a.id);
                let end = acks.get(&id).map(|ack| ack.time_ms.max(a.time_ms));
                if end.is_some_and(|e| e <= start_ms) {
                    continue;
                }
                out.push(TimelineAlarm {
                    id,
                    category: category_name(Category::of_sync_kind(&a.kind)),
                    kind: a.kind,
                    subject: a.segment_path.or(a.peer),
                    detail: a.detail,
                    start_ms: a.time_ms,
                    end_ms: end,
                });
            }
        }
        Err(e) => problems.push(format!("{}: {e}", store::layout::SYNC_DB_FILE)),
    }
    out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    let truncated = out.len() > ALARM_LIST_MAX;
    out.truncate(ALARM_LIST_MAX);
    (out, truncated)
}

/// The answer's `alarms` entries: `{"id", "node", "category", "kind", "subject", "detail",
/// "start_ms", "end_ms", "acknowledged"}`.
pub fn to_json(node: &str, alarms: &[TimelineAlarm], acks: &BTreeMap<String, Ack>) -> Vec<Value> {
    alarms
        .iter()
        .map(|a| {
            json!({"id": a.id, "node": node, "category": a.category, "kind": a.kind,
                "subject": a.subject, "detail": a.detail, "start_ms": a.start_ms,
                "end_ms": a.end_ms, "acknowledged": acks.get(&a.id)})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm_history::AlarmHistory;
    use crate::alarms::collect;

    const S: StreamRef<'static> = StreamRef {
        camera: "door",
        stream: "main",
        owner: Some("a"),
    };

    fn ack(by: &str, time_ms: i64) -> Ack {
        Ack {
            by: by.to_owned(),
            time_ms,
        }
    }

    #[test]
    fn sync_alarms_last_until_acknowledged_and_concern_their_streams() {
        let data = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        let db = nvr_sync::syncdb::SyncDb::open(data.path()).expect("sync.db");
        let seg = store::layout::segment_relative_path("door", "main", 1_000, "a");
        let other = store::layout::segment_relative_path("yard", "main", 1_000, "a");
        let raise = |t, kind, peer, path: Option<&str>| {
            db.raise_alarm(t, kind, peer, path, kind).expect("alarm")
        };
        let fork = raise(1_000, "head_fork", Some("s"), None);
        let tamper = raise(2_000, "tampering", None, Some(&seg));
        raise(2_500, "tampering", None, Some(&other));
        raise(3_000, "segment_stuck", Some("s"), None);
        let foreign = raise(4_000, "head_refused", Some("c"), None);
        let acks = BTreeMap::from([(format!("sync:{tamper}"), ack("root", 5_000))]);
        let src = Sources {
            node: "a",
            protects: &[],
            data_dir: data.path(),
            state_dir: state.path(),
        };
        let mut problems = Vec::new();
        let (got, truncated) = alarms_of_stream(src, &acks, S, 0, 10_000, &mut problems);
        assert!(problems.is_empty() && !truncated, "{problems:?}");
        let ids: Vec<(&str, i64, Option<i64>)> = got
            .iter()
            .map(|a| (a.id.as_str(), a.start_ms, a.end_ms))
            .collect();
        let (fork, tamper, foreign) = (
            format!("sync:{fork}"),
            format!("sync:{tamper}"),
            format!("sync:{foreign}"),
        );
        assert_eq!(
            ids,
            [
                (fork.as_str(), 1_000, None),
                (tamper.as_str(), 2_000, Some(5_000)),
                (foreign.as_str(), 4_000, None)
            ],
            "the other stream's tampering and a stall are left out"
        );
        // On a standby protecting a and c, an alarm naming c concerns c's cameras only.
        let protects = ["a".to_owned(), "c".to_owned()];
        let on_s = Sources {
            node: "s",
            protects: &protects,
            ..src
        };
        let c_cam = StreamRef {
            owner: Some("c"),
            ..S
        };
        let (got, _) = alarms_of_stream(on_s, &acks, c_cam, 0, 10_000, &mut problems);
        assert!(got.iter().any(|a| a.id == foreign), "{got:?}");
        assert!(!got.iter().any(|a| a.id == fork), "{got:?}");
        let a_cam = StreamRef {
            owner: Some("a"),
            ..S
        };
        let (got, _) = alarms_of_stream(on_s, &acks, a_cam, 0, 10_000, &mut problems);
        assert!(!got.iter().any(|a| a.id == foreign), "{got:?}");
        // Range: the acknowledged one ended at 5 000; the open ones run on.
        let (late, _) = alarms_of_stream(src, &acks, S, 5_000, 10_000, &mut problems);
        assert_eq!(
            late.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            [fork.as_str(), foreign.as_str()]
        );
        let (early, _) = alarms_of_stream(src, &acks, S, 0, 1_000, &mut problems);
        assert!(early.is_empty(), "{early:?}");
        let json = to_json("a", &got, &acks);
        assert!(json.iter().all(|j| j["node"] == "a"), "{json:?}");
    }

    #[test]
    fn history_spans_of_the_stream_and_problems_named() {
        let data = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        let mut h = AlarmHistory::open(state.path()).expect("history");
        let down = serde_json::json!({"camera": "door", "stream": "main", "mode": "record",
            "state": "backoff", "last_error": "refused", "last_error_ms": 3_000, "last_frame_ms": 2_000});
        let alarms = collect("a", None, None, &[down]);
        h.record(4_000, &alarms, &[Category::CameraDown], true)
            .expect("record");
        std::fs::write(
            data.path().join(store::layout::SYNC_DB_FILE),
            b"not a database",
        )
        .expect("write");
        let src = Sources {
            node: "a",
            protects: &[],
            data_dir: data.path(),
            state_dir: state.path(),
        };
        let mut problems = Vec::new();
        let (got, _) = alarms_of_stream(src, &BTreeMap::new(), S, 0, 10_000, &mut problems);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].kind.as_str(), got[0].start_ms, got[0].end_ms),
            ("camera_down", 2_000, None)
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("sync.db"), "{problems:?}");
    }
}
