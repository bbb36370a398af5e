//! The arbiter's status document, `<data_dir>/arbiter-status.json` (`store::layout::ARBITER_STATUS_FILE`),
//! rewritten about every second: nodes and roles, heartbeat ages, holder and epoch of every stream,
//! uncovered streams, refused heartbeats and the recent events. `nvr-arbiter status` prints it (as
//! text, or the same JSON with `--json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::{CapacityView, PeerView, StreamView};
use crate::heartbeat::StreamHealth;

/// How many events the document keeps.
pub const MAX_EVENTS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time_ms: i64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub node: String,
    pub role: String,
    pub updated_ms: i64,
    pub peers: Vec<PeerView>,
    pub streams: Vec<StreamView>,
    /// This node's recorder, as last read (empty while it does not answer).
    pub recorder: Vec<StreamHealth>,
    /// Streams this node protects that no node records now.
    pub uncovered: Vec<String>,
    /// What this node has taken over against its caps.
    pub capacity: CapacityView,
    /// Cut off from its standby and the witness: the streams it holds are in shadow.
    pub standing_down: bool,
    /// A witness: the nodes it hears now (what its heartbeats say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hears: Vec<String>,
    pub heartbeats_refused: u64,
    pub last_refusal: Option<String>,
    pub events: Vec<Event>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(store::layout::ARBITER_STATUS_FILE)
}

/// Writes the document (atomically replaced, not flushed: it is rewritten every second).
pub fn write(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    base::fs::replace_file(&path(data_dir), &bytes)
}

/// The document as text for an operator.
pub fn render(v: &serde_json::Value) -> String {
    let mut s = String::new();
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let _ = writeln!(
        s,
        "node {} ({}){}",
        str_of(&v["node"]),
        str_of(&v["role"]),
        if v["standing_down"] == true {
            ": STANDING DOWN (no peer heard; its streams in shadow)"
        } else {
            ""
        }
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "  peer {}: {}, last heartbeat {}",
            str_of(&p["node"]),
            if p["alive"] == true { "alive" } else { "dead" },
            p["heartbeat_age_ms"]
                .as_i64()
                .map_or_else(|| "never".to_owned(), |a| format!("{a} ms ago"))
        );
    }
    for st in v["streams"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "  {}: owner {}, holder {} epoch {} ({}, priority {}){}",
            str_of(&st["stream"]),
            str_of(&st["owner"]),
            str_of(&st["holder"]),
            st["epoch"],
            str_of(&st["takeover"]),
            st["priority"],
            if st["uncovered"] == true {
                " UNCOVERED"
            } else {
                ""
            }
        );
    }
    let cap = &v["capacity"];
    if !cap["streams_cap"].is_null() || !cap["kbps_cap"].is_null() {
        let _ = writeln!(
            s,
            "  taken over: {} streams (cap {}), {:.1} Mbit/s (cap {})",
            cap["streams"],
            cap["streams_cap"]
                .as_u64()
                .map_or_else(|| "none".to_owned(), |c| c.to_string()),
            cap["kbps"].as_u64().unwrap_or(0) as f64 / 1000.0,
            cap["kbps_cap"]
                .as_u64()
                .map_or_else(|| "none".to_owned(), |c| (c / 1000).to_string())
        );
    }
    let _ = writeln!(s, "  heartbeats refused: {}", v["heartbeats_refused"]);
    for e in v["events"].as_array().into_iter().flatten().rev().take(10) {
        let _ = writeln!(
            s,
            "  {} {}",
            base::clock::format_utc_ms(e["time_ms"].as_i64().unwrap_or(0)),
            str_of(&e["message"])
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_shows_the_capacity_only_when_capped() {
        let mut v = serde_json::json!({
            "node": "s", "role": "standby", "peers": [], "streams": [], "events": [],
            "heartbeats_refused": 0,
            "capacity": {"streams": 2, "streams_cap": null, "kbps": 4500, "kbps_cap": 10000},
        });
        assert!(
            render(&v).contains("  taken over: 2 streams (cap none), 4.5 Mbit/s (cap 10)\n"),
            "{}",
            render(&v)
        );
        v["capacity"]["kbps_cap"] = serde_json::Value::Null;
        assert!(!render(&v).contains("taken over"), "{}", render(&v));
    }
}
