//! The history of this node's alarms that are conditions (a camera down, an uncovered stream): when
//! each began and when it cleared, kept by the viewer in `<state_dir>/alarm-history.db` (SQLite) so
//! that a stream's timeline can draw them after they are gone from the status documents.
//!
//! The alarm watch (`alarm_watch`) writes it once a second from what [`crate::alarms::collect`]
//! returns: a condition seen for the first time opens a span (from the time the source says it began,
//! for a camera the last frame received, else from the time it was first seen); one no longer listed
//! closes it at the first pass that misses it. A span still open when the viewer stopped and gone
//! when it starts again is closed at the last time it was seen. The sync agent's alarms are not kept
//! here: they are events with a time, kept for good in `sync.db` (`timeline_alarms` reads them there).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use crate::alarms::{Alarm, Category};
use crate::WebError;

/// The history file in the state directory.
pub const HISTORY_FILE: &str = "alarm-history.db";
/// Spans kept: past this, the oldest closed ones go first.
pub const MAX_SPANS: i64 = 100_000;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE spans (
    row           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL,
    kind          TEXT NOT NULL,
    category      TEXT NOT NULL,
    subject       TEXT,
    detail        TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER,
    last_seen_ms  INTEGER NOT NULL
);
CREATE INDEX spans_subject ON spans (subject, start_ms);
CREATE INDEX spans_open ON spans (id) WHERE end_ms IS NULL;
"#];

/// The categories that are conditions, kept here.
pub fn kept(category: Category) -> bool {
    matches!(category, Category::CameraDown | Category::Uncovered)
}

/// One alarm's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub id: String,
    pub kind: String,
    pub category: String,
    pub subject: Option<String>,
    pub detail: String,
    pub start_ms: i64,
    /// `None` while the alarm lasts.
    pub end_ms: Option<i64>,
}

/// The history file, open.
#[derive(Debug)]
pub struct AlarmHistory {
    conn: Connection,
    path: PathBuf,
}

impl AlarmHistory {
    /// Opens (creating and migrating) the history for writing.
    pub fn open(state_dir: &Path) -> Result<AlarmHistory, WebError> {
        let path = state_dir.join(HISTORY_FILE);
        let bad = |e: rusqlite::Error| bad_file(&path, e);
        let mut conn = Connection::open(&path).map_err(bad)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(bad)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(bad)?;
        store::migrate(&mut conn, MIGRATIONS, &path, "alarm history").map_err(|e| {
            WebError::BadFile {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(AlarmHistory { conn, path })
    }

    /// Opens the history read-only; `None` if the watch has not made it yet.
    pub fn open_read_only(state_dir: &Path) -> Result<Option<AlarmHistory>, WebError> {
        let path = state_dir.join(HISTORY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| bad_file(&path, e))?;
        Ok(Some(AlarmHistory { conn, path }))
    }

    /// One pass of the watch at `now_ms`: `current` is every alarm listed now. Spans of the
    /// categories in `observed` (those whose source answered) that are not listed any more are
    /// closed: at `now_ms`, or with `resumed` (the first pass after the viewer started) at the last
    /// time they were seen.
    pub fn record(
        &mut self,
        now_ms: i64,
        current: &[Alarm],
        observed: &[Category],
        resumed: bool,
    ) -> Result<(), WebError> {
        let path = self.path.clone();
        let bad = |e: rusqlite::Error| bad_file(&path, e);
        let current: Vec<&Alarm> = current.iter().filter(|a| kept(a.category)).collect();
        // The usual pass, nothing open and nothing listed, writes nothing.
        let any_open: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM spans WHERE end_ms IS NULL)",
                [],
                |r| r.get(0),
            )
            .map_err(bad)?;
        if current.is_empty() && !any_open {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(bad)?;
        let open: Vec<(i64, String, String)> = {
            let mut stmt = tx
                .prepare_cached("SELECT row, id, category FROM spans WHERE end_ms IS NULL")
                .map_err(bad)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(bad)?;
            rows.collect::<rusqlite::Result<_>>().map_err(bad)?
        };
        for (row, id, category) in &open {
            if let Some(a) = current.iter().find(|a| a.id == *id) {
                tx.execute(
                    "UPDATE spans SET last_seen_ms = ?2, detail = ?3 WHERE row = ?1",
                    params![row, now_ms, a.detail],
                )
                .map_err(bad)?;
            } else if observed.iter().any(|c| category_name(*c) == *category) {
                tx.execute(
                    "UPDATE spans SET end_ms = max(start_ms, CASE WHEN ?3 THEN last_seen_ms ELSE ?2 END)
                     WHERE row = ?1",
                    params![row, now_ms, resumed],
                )
                .map_err(bad)?;
            }
        }
        let new: Vec<&&Alarm> = current
            .iter()
            .filter(|a| !open.iter().any(|o| o.1 == a.id))
            .collect();
        for a in &new {
            tx.execute(
                "INSERT INTO spans (id, kind, category, subject, detail, start_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.id,
                    a.kind,
                    category_name(a.category),
                    a.subject,
                    a.detail,
                    a.since_ms.unwrap_or(now_ms).min(now_ms),
                    now_ms
                ],
            )
            .map_err(bad)?;
        }
        if !new.is_empty() {
            tx.execute(
                "DELETE FROM spans WHERE row IN (SELECT row FROM spans WHERE end_ms IS NOT NULL
                 ORDER BY end_ms LIMIT max(0, (SELECT COUNT(*) FROM spans) - ?1))",
                params![MAX_SPANS],
            )
            .map_err(bad)?;
        }
        tx.commit().map_err(bad)
    }

    /// The spans about `subject` that overlap `[start_ms, end_ms)`, oldest first, at most `limit`.
    pub fn spans(
        &self,
        subject: &str,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
    ) -> Result<Vec<Span>, WebError> {
        let bad = |e: rusqlite::Error| bad_file(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, kind, category, subject, detail, start_ms, end_ms FROM spans
                 WHERE subject = ?1 AND start_ms < ?3 AND (end_ms IS NULL OR end_ms > ?2)
                 ORDER BY start_ms, row LIMIT ?4",
            )
            .map_err(bad)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![subject, start_ms, end_ms, limit], |r| {
                Ok(Span {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    category: r.get(2)?,
                    subject: r.get(3)?,
                    detail: r.get(4)?,
                    start_ms: r.get(5)?,
                    end_ms: r.get(6)?,
                })
            })
            .map_err(bad)?;
        rows.collect::<rusqlite::Result<_>>().map_err(bad)
    }
}

/// A category as the API names it.
pub fn category_name(c: Category) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn bad_file(path: &Path, e: rusqlite::Error) -> WebError {
    WebError::BadFile {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::collect;
    use serde_json::json;

    fn down(last_frame_ms: i64) -> serde_json::Value {
        json!({"camera": "door", "stream": "main", "mode": "record", "state": "backoff",
            "last_error": "connection refused", "last_error_ms": last_frame_ms + 2_000,
            "last_frame_ms": last_frame_ms})
    }

    #[test]
    fn a_condition_opens_a_span_from_its_start_and_closes_when_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = AlarmHistory::open(dir.path()).expect("open");
        let all = [Category::CameraDown, Category::Uncovered];
        let alarms = collect("a", None, None, &[down(1_000)]);
        h.record(5_000, &alarms, &all, true).expect("record");
        h.record(6_000, &alarms, &all, false).expect("record");
        let open = h.spans("door/main", 0, 10_000, 10).expect("spans");
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!((open[0].start_ms, open[0].end_ms), (1_000, None));
        assert_eq!(open[0].category, "camera_down");
        // The recorder did not answer: nothing is closed.
        h.record(7_000, &[], &[Category::Uncovered], false)
            .expect("record");
        assert_eq!(
            h.spans("door/main", 0, 10_000, 10).expect("spans")[0].end_ms,
            None
        );
        h.record(8_000, &[], &all, false).expect("record");
        let closed = h.spans("door/main", 0, 10_000, 10).expect("spans");
        assert_eq!((closed[0].start_ms, closed[0].end_ms), (1_000, Some(8_000)));
        // Overlap only: a range before the start or from the end on does not list it.
        assert!(h
            .spans("door/main", 0, 1_000, 10)
            .expect("spans")
            .is_empty());
        assert!(h
            .spans("door/main", 8_000, 9_000, 10)
            .expect("spans")
            .is_empty());
        assert_eq!(
            h.spans("door/main", 7_999, 9_000, 10).expect("spans").len(),
            1
        );
        assert!(h
            .spans("yard/main", 0, 10_000, 10)
            .expect("spans")
            .is_empty());
        // The same id again (never received since a recorder start) is a new span.
        let again = collect("a", None, None, &[down(0)]);
        h.record(20_000, &again, &all, false).expect("record");
        h.record(21_000, &again, &all, false).expect("record");
        // The viewer restarts after the condition is gone: closed when last seen.
        let reopened = AlarmHistory::open(dir.path());
        let mut h = reopened.expect("open");
        h.record(90_000, &[], &all, true).expect("record");
        let spans = h.spans("door/main", 0, 100_000, 10).expect("spans");
        let got: Vec<(i64, Option<i64>)> = spans.iter().map(|s| (s.start_ms, s.end_ms)).collect();
        assert_eq!(got, [(1_000, Some(8_000)), (20_000, Some(21_000))]);
        let ro = AlarmHistory::open_read_only(dir.path())
            .expect("open")
            .expect("exists");
        assert_eq!(
            ro.spans("door/main", 0, 100_000, 1).expect("spans").len(),
            1
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(AlarmHistory::open_read_only(empty.path())
            .expect("open")
            .is_none());
    }
}
