//! This node's view of the cluster (`GET /api/cluster`), read-only from the files of the programs that
//! know it: the arbiter's `<data_dir>/arbiter-status.json` (nodes alive, heartbeat ages, holder and
//! epoch of each stream, uncovered streams), the sync agent's `sync-status.json` (peers connected,
//! mirroring lag per stream, alarms), the recorder's status (through its control socket), the catalog
//! (storage per stream, through `store::Reader`) and the data directory's file system. Without an
//! arbiter (no status file, or one older than [`STALE_MS`]) it is the sync agent's view: a node is
//! alive when its agent is connected, each stream's holder is its owner and there are no epochs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base::clock::Clock;
use cluster_config::{ClusterConfig, RetentionConfig};
use serde::Serialize;
use serde_json::{json, Value};

use crate::alarms::Alarm;

/// A status file not rewritten for this long is left out (its program is not running).
pub const STALE_MS: i64 = 10_000;

/// Reads a status document of `data_dir`; `Ok(None)` when absent or stale, `Err` when unreadable.
pub fn read_status(
    data_dir: &Path,
    file: &str,
    time_key: &str,
    now_ms: i64,
) -> Result<Option<Value>, String> {
    let path = data_dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    match v[time_key].as_i64() {
        Some(t) if now_ms - t <= STALE_MS => Ok(Some(v)),
        Some(t) => Err(format!(
            "{}: not rewritten for {} s (is its program running?)",
            path.display(),
            (now_ms - t) / 1000
        )),
        None => Err(format!("{}: no {time_key}", path.display())),
    }
}

/// Storage of one stream in this node's catalog (segments not deleted).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStorage {
    pub segments: u64,
    pub size_bytes: u64,
    /// The oldest recording still held: the retention horizon.
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}

/// Per-stream storage from the catalog.
pub fn storage(
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<BTreeMap<String, StreamStorage>, store::StorageError> {
    let reader = store::Reader::open(data_dir, clock)?;
    let mut out = BTreeMap::new();
    for s in reader.streams()? {
        let mut st = StreamStorage::default();
        for seg in reader.stream_segments(s.id)? {
            if seg.state == store::SegmentState::Deleted {
                continue;
            }
            st.segments += 1;
            st.size_bytes += u64::try_from(seg.size_bytes).unwrap_or(0);
            st.oldest_ms = Some(st.oldest_ms.map_or(seg.start_ms, |o| o.min(seg.start_ms)));
            st.newest_ms = Some(st.newest_ms.map_or(seg.end_ms, |n| n.max(seg.end_ms)));
        }
        out.insert(format!("{}/{}", s.camera, s.kind), st);
    }
    Ok(out)
}

/// Free space of the file system holding `dir` (what retention's floor is measured against).
pub fn disk(dir: &Path) -> Option<Value> {
    store::free_bytes(dir)
        .ok()
        .map(|free| json!({"free_bytes": free}))
}

/// What the view is built from.
pub struct Inputs<'a> {
    pub cluster: &'a ClusterConfig,
    pub node: &'a str,
    pub now_ms: i64,
    pub arbiter: Option<&'a Value>,
    pub sync: Option<&'a Value>,
    pub recorder: &'a [Value],
    pub storage: &'a BTreeMap<String, StreamStorage>,
    pub disk: Option<Value>,
    pub alarms: Vec<Alarm>,
    pub problems: Vec<String>,
}

fn retention_json(r: &RetentionConfig) -> Value {
    json!({"max_age_days": r.max_age_days, "max_bytes_per_stream": r.max_bytes_per_stream,
        "min_free_bytes": r.min_free_bytes})
}

/// The nodes: every node of the cluster file, alive and heartbeat age from the arbiter, or from the
/// sync agent's connections without one.
fn nodes(i: &Inputs<'_>) -> Vec<Value> {
    i.cluster
        .nodes
        .iter()
        .map(|n| {
            let me = n.name == i.node;
            let peer = i.arbiter.and_then(|a| {
                a["peers"]
                    .as_array()
                    .and_then(|p| p.iter().find(|p| p["node"] == n.name.as_str()))
            });
            let sync_peer = i.sync.map(|s| &s["peers"][n.name.as_str()]);
            let sync_connected = sync_peer.and_then(|p| p["connected"].as_bool());
            let alive = if me {
                Some(true)
            } else if i.arbiter.is_some() {
                peer.and_then(|p| p["alive"].as_bool())
            } else {
                sync_connected
            };
            json!({
                "name": n.name, "role": n.role.as_str(), "web_url": n.web_url, "self": me,
                "alive": alive,
                "heartbeat_age_ms": peer.map_or(Value::Null, |p| p["heartbeat_age_ms"].clone()),
                "flapping": peer.is_some_and(|p| p["flapping"] == true),
                "sync_connected": sync_connected,
                "sync_error": sync_peer.map_or(Value::Null, |p| p["last_error"].clone()),
            })
        })
        .collect()
}

/// Mirroring lag of `stream` towards or from every peer of the sync agent.
fn mirror(sync: Option<&Value>, stream: &str) -> Vec<Value> {
    let Some(peers) = sync.and_then(|s| s["peers"].as_object()) else {
        return Vec::new();
    };
    peers
        .iter()
        .filter_map(|(peer, p)| {
            let lag = p["streams"].get(stream)?;
            Some(
                json!({"peer": peer, "lag_ms": lag["lag_ms"], "lag_bytes": lag["lag_bytes"],
                "segment": lag["segment"]}),
            )
        })
        .collect()
}

/// The streams: those of the cluster file (owner from there), those the arbiter knows and those in
/// this node's catalog, each with holder and epoch, recorder status, mirroring lag and storage.
fn streams(i: &Inputs<'_>) -> Vec<Value> {
    let mut keys: BTreeMap<String, Option<String>> = BTreeMap::new();
    for c in &i.cluster.cameras {
        for s in &c.streams {
            keys.insert(
                format!("{}/{}", c.name, s.kind.as_str()),
                Some(c.node.clone()),
            );
        }
    }
    for s in i
        .arbiter
        .and_then(|a| a["streams"].as_array())
        .into_iter()
        .flatten()
    {
        if let Some(k) = s["stream"].as_str() {
            keys.entry(k.to_owned()).or_default();
        }
    }
    for k in i.storage.keys() {
        keys.entry(k.clone()).or_default();
    }
    keys.into_iter()
        .map(|(key, owner)| {
            let view = i.arbiter.and_then(|a| {
                a["streams"]
                    .as_array()
                    .and_then(|s| s.iter().find(|v| v["stream"] == key.as_str()))
            });
            let recorder = i.recorder.iter().find(|s| {
                format!(
                    "{}/{}",
                    s["camera"].as_str().unwrap_or(""),
                    s["stream"].as_str().unwrap_or("")
                ) == key
            });
            let holder = match view {
                Some(v) => v["holder"].clone(),
                None => json!(owner),
            };
            json!({
                "stream": key,
                "owner": view.map_or_else(|| json!(owner), |v| v["owner"].clone()),
                "holder": holder,
                "epoch": view.map_or(Value::Null, |v| v["epoch"].clone()),
                "takeover": view.map_or(Value::Null, |v| v["takeover"].clone()),
                "uncovered": view.is_some_and(|v| v["uncovered"] == true),
                "recorder": recorder.map(|r| json!({"mode": r["mode"], "state": r["state"],
                    "last_frame_ms": r["last_frame_ms"], "fps": r["fps"]})),
                "mirror": mirror(i.sync, &key),
                "storage": i.storage.get(&key),
            })
        })
        .collect()
}

/// The whole view (`docs/api.md`, `GET /api/cluster`).
pub fn view(i: Inputs<'_>) -> Value {
    let source = if i.arbiter.is_some() {
        "arbiter"
    } else if i.sync.is_some() {
        "sync"
    } else {
        "config"
    };
    let used: u64 = i.storage.values().map(|s| s.size_bytes).sum();
    let events: Vec<Value> = i
        .arbiter
        .and_then(|a| a["events"].as_array())
        .map(|e| e.iter().rev().take(20).cloned().collect())
        .unwrap_or_default();
    json!({
        "node": i.node,
        "updated_ms": i.now_ms,
        "source": source,
        "nodes": nodes(&i),
        "streams": streams(&i),
        "storage": {"recordings_bytes": used, "disk": i.disk,
            "retention": retention_json(&i.cluster.retention)},
        "alarms": i.alarms,
        "events": events,
        "problems": i.problems,
    })
}
