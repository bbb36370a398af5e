//! What the API says of a stream's recordings over a time range: its recorded spans (contiguous
//! segments of one node merged), its segments (ranges up to [`SEGMENT_LIST_MAX_MS`]), the gaps
//! between them and the stream's events (the catalog's: camera errors, trims, recovery …), read from the catalog through `store::Reader` (shared by the API and its benchmark).

use serde_json::{json, Value};
use store::{Reader, SegmentRow, StorageError};

/// Longest range whose answer lists every segment (6 hours: 360 rows of 60 s segments); a longer one
/// has the merged `spans` only, so a month is a few rows rather than 40 000.
pub const SEGMENT_LIST_MAX_MS: i64 = 6 * 3_600_000;

/// Most events in one answer (the oldest of the range first; `events_truncated` says more exist).
pub const EVENT_LIST_MAX: u32 = 500;

/// Contiguous segments recorded by one node, merged: `(start_ms, end_ms, node)`.
pub fn spans(segments: &[SegmentRow]) -> Vec<(i64, i64, &str)> {
    let mut out: Vec<(i64, i64, &str)> = Vec::new();
    for s in segments {
        match out.last_mut() {
            Some(last) if last.2 == s.node && s.start_ms <= last.1 => last.1 = last.1.max(s.end_ms),
            _ => out.push((s.start_ms, s.end_ms, &s.node)),
        }
    }
    out
}

/// `{"start_ms", "end_ms", "spans": [...], "segment_count", "segments": [...] (ranges up to
/// SEGMENT_LIST_MAX_MS), "gaps": [...]}` of `camera`/`stream` over `[start_ms, end_ms)`; `None` if the
/// catalog has no such stream.
pub fn recordings_json(
    reader: &Reader,
    camera: &str,
    stream: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<Option<Value>, StorageError> {
    let Some(id) = reader.find_stream(camera, stream)? else {
        return Ok(None);
    };
    let segments = reader.segments_in_range(id, start_ms, end_ms)?;
    let gaps: Vec<Value> = store::gaps_between(&segments, start_ms, end_ms)
        .iter()
        .map(|g| json!({"start_ms": g.start_ms, "end_ms": g.end_ms}))
        .collect();
    let spans: Vec<Value> = spans(&segments)
        .iter()
        .map(|(s, e, node)| json!({"start_ms": s, "end_ms": e, "node": node}))
        .collect();
    let mut events: Vec<Value> = reader
        .stream_events_in_range(id, start_ms, end_ms, EVENT_LIST_MAX + 1)?
        .iter()
        .map(|e| json!({"time_ms": e.time_ms, "kind": e.kind, "message": e.message}))
        .collect();
    let events_truncated = events.len() > EVENT_LIST_MAX as usize;
    events.truncate(EVENT_LIST_MAX as usize);
    let mut answer = json!({
        "start_ms": start_ms, "end_ms": end_ms, "spans": spans,
        "segment_count": segments.len(), "gaps": gaps,
        "events": events, "events_truncated": events_truncated});
    if end_ms - start_ms <= SEGMENT_LIST_MAX_MS {
        answer["segments"] = segments
            .iter()
            .map(|s| {
                json!({"start_ms": s.start_ms, "end_ms": s.end_ms, "node": s.node,
                    "state": s.state.as_str(), "frames": s.frames, "size_bytes": s.size_bytes,
                    "video_codec": s.video_codec, "width": s.width, "height": s.height})
            })
            .collect();
    }
    Ok(Some(answer))
}
