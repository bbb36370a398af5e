//! What the API says of a stream's recordings over a time range: its segments and the gaps between
//! them, read from the catalog through `store::Reader` (shared by the API and its benchmark).

use serde_json::{json, Value};
use store::{Reader, StorageError};

/// `{"start_ms", "end_ms", "segments": [...], "gaps": [...]}` of `camera`/`stream` over
/// `[start_ms, end_ms)`; `None` if the catalog has no such stream.
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
    let gaps = reader.gaps_in_range(id, start_ms, end_ms)?;
    let segments: Vec<Value> = segments
        .iter()
        .map(|s| {
            json!({"start_ms": s.start_ms, "end_ms": s.end_ms, "node": s.node,
                "state": s.state.as_str(), "frames": s.frames, "size_bytes": s.size_bytes,
                "video_codec": s.video_codec, "width": s.width, "height": s.height})
        })
        .collect();
    let gaps: Vec<Value> = gaps
        .iter()
        .map(|g| json!({"start_ms": g.start_ms, "end_ms": g.end_ms}))
        .collect();
    Ok(Some(json!({
        "start_ms": start_ms, "end_ms": end_ms, "segments": segments, "gaps": gaps})))
}
