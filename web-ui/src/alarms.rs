//! Alarms as the viewer shows them, and their acknowledgements.
//!
//! An alarm comes from one of three places on this node: the sync agent's alarms (`recent_alarms` of
//! `sync-status.json`, id `sync:<row id>`), a stream the arbiter lists as uncovered
//! (`uncovered:<stream>:<epoch>`), and a stream the recorder should receive but does not
//! (`camera_down:<stream>:<last frame ms, 0 if none>`). Ids are stable while the condition lasts and new when
//! it comes back, so an acknowledgement hides that occurrence only.
//!
//! Acknowledgements are kept in `<state_dir>/alarm-acks.json` (the viewer's own directory: the sync
//! agent's and arbiter's files are read-only to it): `{"acks": {"<id>": {"by": "<user>",
//! "time_ms": <ms>}}}`, at most [`MAX_ACKS`] (the oldest go first), replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::WebError;

/// Acknowledgements kept.
pub const MAX_ACKS: usize = 10_000;
/// The acknowledgements file in the state directory.
pub const ACKS_FILE: &str = "alarm-acks.json";

/// What an alarm is about, which decides whether the banner shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The mirrored history was refused or contradicted (forks, rewritten bytes, forged heads).
    History,
    /// Files changed behind the recorder's back (ransomware), scrub mismatches, failed repairs.
    Tampering,
    CameraDown,
    Uncovered,
    /// Everything else the sync agent reports (stalls, quota, expired staging copies).
    Sync,
}

impl Category {
    /// Whether the banner on every page shows it (the others are on the cluster page only).
    pub fn banner(self) -> bool {
        self != Category::Sync
    }

    /// The category of a sync agent alarm kind (`docs/sync.md`).
    pub fn of_sync_kind(kind: &str) -> Category {
        match kind {
            "head_refused"
            | "heads_refused"
            | "head_fork"
            | "refused_data"
            | "refused_by_standby"
            | "unknown_head"
            | "bad_countersignature"
            | "impersonation"
            | "foreign_segment"
            | "unknown_stream" => Category::History,
            "tampering" | "tamper" | "scrub_mismatch" | "repair_failed" => Category::Tampering,
            _ => Category::Sync,
        }
    }
}

/// Who acknowledged an alarm, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub time_ms: i64,
}

/// One alarm of this node.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    pub id: String,
    pub node: String,
    pub category: Category,
    pub banner: bool,
    pub kind: String,
    pub time_ms: Option<i64>,
    /// The stream, peer or segment it is about.
    pub subject: Option<String>,
    pub detail: String,
    pub acknowledged: Option<Ack>,
    /// When the condition began, where the source says (a camera down: the last frame received);
    /// the alarm history's start (`alarm_history`), not part of the alarm's JSON.
    #[serde(skip)]
    pub since_ms: Option<i64>,
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// This node's alarms from the sync agent's status, the arbiter's and the recorder's, newest first.
pub fn collect(
    node: &str,
    sync_status: Option<&Value>,
    arbiter_status: Option<&Value>,
    recorder: &[Value],
) -> Vec<Alarm> {
    let mut out = Vec::new();
    let alarm = |id: String, category: Category, kind: &str| Alarm {
        id,
        node: node.to_owned(),
        category,
        banner: category.banner(),
        kind: kind.to_owned(),
        time_ms: None,
        subject: None,
        detail: String::new(),
        acknowledged: None,
        since_ms: None,
    };
    for a in sync_status
        .and_then(|s| s["recent_alarms"].as_array())
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(kind)) = (a["id"].as_i64(), a["kind"].as_str()) else {
            continue;
        };
        out.push(Alarm {
            time_ms: a["time_ms"].as_i64(),
            subject: str_of(&a["segment_path"]).or_else(|| str_of(&a["peer"])),
            detail: str_of(&a["detail"]).unwrap_or_default(),
            ..alarm(format!("sync:{id}"), Category::of_sync_kind(kind), kind)
        });
    }
    if let Some(arbiter) = arbiter_status {
        for stream in arbiter["uncovered"].as_array().into_iter().flatten() {
            let Some(stream) = stream.as_str() else {
                continue;
            };
            let view = arbiter["streams"]
                .as_array()
                .and_then(|s| s.iter().find(|v| v["stream"] == stream));
            let epoch = view.and_then(|v| v["epoch"].as_u64()).unwrap_or(0);
            out.push(Alarm {
                time_ms: arbiter["updated_ms"].as_i64(),
                subject: Some(stream.to_owned()),
                detail: format!("no node records {stream}"),
                ..alarm(
                    format!("uncovered:{stream}:{epoch}"),
                    Category::Uncovered,
                    "uncovered",
                )
            });
        }
    }
    for s in recorder {
        let wanted = matches!(s["mode"].as_str(), Some("record" | "shadow"));
        let receiving = matches!(s["state"].as_str(), Some("recording" | "shadowing"));
        let Some(error) = s["last_error"].as_str() else {
            continue;
        };
        if !wanted || receiving {
            continue;
        }
        let stream = format!(
            "{}/{}",
            s["camera"].as_str().unwrap_or("?"),
            s["stream"].as_str().unwrap_or("?")
        );
        // The last frame received names this outage (0: never received since the recorder
        // started); the error's time changes with every retry.
        let since = s["last_frame_ms"].as_i64().unwrap_or(0);
        out.push(Alarm {
            time_ms: s["last_error_ms"].as_i64(),
            since_ms: (since > 0).then_some(since),
            subject: Some(stream.clone()),
            detail: format!(
                "{stream} is {}: {error}",
                s["state"].as_str().unwrap_or("down")
            ),
            ..alarm(
                format!("camera_down:{stream}:{since}"),
                Category::CameraDown,
                "camera_down",
            )
        });
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.time_ms));
    out
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AckFile {
    acks: BTreeMap<String, Ack>,
}

/// The acknowledgements file.
#[derive(Debug)]
pub struct AckStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AckStore {
    pub fn new(state_dir: &Path) -> AckStore {
        AckStore {
            path: state_dir.join(ACKS_FILE),
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<AckFile, WebError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WebError::BadFile {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AckFile::default()),
            Err(e) => Err(WebError::io(&self.path)(e)),
        }
    }

    /// Every acknowledgement kept, by alarm id.
    pub fn all(&self) -> Result<BTreeMap<String, Ack>, WebError> {
        Ok(self.read()?.acks)
    }

    /// Fills in `acknowledged` of each alarm.
    pub fn apply(&self, alarms: &mut [Alarm]) -> Result<(), WebError> {
        let file = self.read()?;
        for a in alarms {
            a.acknowledged = file.acks.get(&a.id).cloned();
        }
        Ok(())
    }

    /// Records that `by` acknowledged alarm `id` at `time_ms` (a second acknowledgement keeps the
    /// first); the oldest acknowledgements go past [`MAX_ACKS`].
    pub fn acknowledge(&self, id: &str, by: &str, time_ms: i64) -> Result<Ack, WebError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let ack = file
            .acks
            .entry(id.to_owned())
            .or_insert_with(|| Ack {
                by: by.to_owned(),
                time_ms,
            })
            .clone();
        while file.acks.len() > MAX_ACKS {
            let oldest = file
                .acks
                .iter()
                .min_by_key(|(_, a)| a.time_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => file.acks.remove(&k),
                None => break,
            };
        }
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| WebError::BadFile {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        base::fs::write_atomic(&self.path, &bytes, Some(0o600))
            .map_err(WebError::io(&self.path))?;
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alarms_of_the_three_sources_with_stable_ids_and_categories() {
        let sync = json!({"recent_alarms": [
            {"id": 7, "time_ms": 100, "kind": "head_fork", "peer": "a", "segment_path": null, "detail": "two heads"},
            {"id": 8, "time_ms": 300, "kind": "tampering", "peer": null, "segment_path": "media/x.mp4", "detail": "files encrypted"},
            {"id": 9, "time_ms": 50, "kind": "segment_stuck", "peer": "b", "segment_path": null, "detail": "waits"},
        ]});
        let arbiter = json!({"updated_ms": 200, "uncovered": ["cam/main"],
            "streams": [{"stream": "cam/main", "epoch": 4}]});
        let recorder = vec![
            json!({"camera": "door", "stream": "main", "mode": "record", "state": "backoff",
                "last_error": "connection refused", "last_error_ms": 250, "last_frame_ms": 240}),
            json!({"camera": "yard", "stream": "main", "mode": "record", "state": "recording",
                "last_error": "an old one", "last_frame_ms": 260}),
            json!({"camera": "yard", "stream": "sub", "mode": "off", "state": "idle", "last_error": "x"}),
        ];
        let alarms = collect("a", Some(&sync), Some(&arbiter), &recorder);
        let ids: Vec<&str> = alarms.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "sync:8",
                "camera_down:door/main:240",
                "uncovered:cam/main:4",
                "sync:7",
                "sync:9"
            ]
        );
        let cats: Vec<Category> = alarms.iter().map(|a| a.category).collect();
        assert_eq!(
            cats,
            [
                Category::Tampering,
                Category::CameraDown,
                Category::Uncovered,
                Category::History,
                Category::Sync
            ]
        );
        assert!(alarms
            .iter()
            .all(|a| a.banner == (a.category != Category::Sync)));
        assert_eq!(alarms[0].subject.as_deref(), Some("media/x.mp4"));
    }

    #[test]
    fn an_acknowledgement_is_kept_in_the_state_dir_and_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AckStore::new(dir.path());
        let sync =
            json!({"recent_alarms": [{"id": 1, "time_ms": 1, "kind": "tampering", "detail": ""}]});
        let mut alarms = collect("a", Some(&sync), None, &[]);
        store.apply(&mut alarms).expect("apply");
        assert_eq!(alarms[0].acknowledged, None);
        let first = store.acknowledge("sync:1", "alice", 10).expect("ack");
        let again = store.acknowledge("sync:1", "bob", 20).expect("ack");
        assert_eq!(first, again, "the first acknowledgement is kept");
        let store = AckStore::new(dir.path());
        store.apply(&mut alarms).expect("apply");
        assert_eq!(
            alarms[0].acknowledged.as_ref().map(|a| a.by.as_str()),
            Some("alice")
        );
        std::fs::write(dir.path().join(ACKS_FILE), b"{oops").expect("write");
        let err = store.apply(&mut alarms).expect_err("damaged");
        assert!(err.to_string().contains(ACKS_FILE), "{err}");
    }
}
