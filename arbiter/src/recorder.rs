//! The local recorder, over its control socket (`docs/control.md`): stream health from `status`,
//! `promote` with the arbiter's epoch, `release`. The arbiter speaks the documented wire protocol (a
//! 4-byte big-endian length, then JSON); it does not link the recorder.

use std::path::Path;
use std::time::Duration;

use base::frame::{read_frame, write_frame, FrameError};
use serde_json::{json, Value};
use tokio::net::UnixStream;

use crate::heartbeat::StreamHealth;

/// Largest answer accepted (a status of many streams).
const MAX_ANSWER_BYTES: u32 = 16 << 20;
/// `status` is answered at once; a promotion waits at most for its frame (3 s) and the first write.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(35);

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("recorder control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("recorder control socket: no answer within {0:?}")]
    Timeout(Duration),
    #[error("recorder control socket: answer of {0} bytes is too large")]
    TooLarge(u32),
    #[error("recorder control socket: malformed answer: {0}")]
    Malformed(String),
    #[error("refused by the recorder: {0}")]
    Refused(String),
}

/// Sends one request and returns the `result` of an `ok` answer.
pub async fn request(
    socket: &Path,
    req: &Value,
    timeout: Duration,
) -> Result<Value, RecorderError> {
    match tokio::time::timeout(timeout, exchange(socket, req)).await {
        Ok(r) => r,
        Err(_) => Err(RecorderError::Timeout(timeout)),
    }
}

async fn exchange(socket: &Path, req: &Value) -> Result<Value, RecorderError> {
    let io = |source| RecorderError::Io {
        path: socket.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(socket).await.map_err(io)?;
    let body = serde_json::to_vec(req).map_err(|e| RecorderError::Malformed(e.to_string()))?;
    write_frame(&mut s, &body).await.map_err(io)?;
    let buf = read_frame(&mut s, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| match e {
            FrameError::TooLarge { len, .. } => RecorderError::TooLarge(len),
            e => io(e.into()),
        })?;
    let answer: Value =
        serde_json::from_slice(&buf).map_err(|e| RecorderError::Malformed(e.to_string()))?;
    if answer["ok"] == Value::Bool(true) {
        Ok(answer["result"].clone())
    } else {
        Err(RecorderError::Refused(
            answer["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        ))
    }
}

/// The health of every stream of the recorder.
pub async fn health(socket: &Path) -> Result<Vec<StreamHealth>, RecorderError> {
    let result = request(socket, &json!({"op": "status"}), STATUS_TIMEOUT).await?;
    let Some(items) = result.as_array() else {
        return Err(RecorderError::Malformed(
            "status is not an array".to_owned(),
        ));
    };
    Ok(items.iter().filter_map(health_of).collect())
}

fn health_of(s: &Value) -> Option<StreamHealth> {
    let camera = s["camera"].as_str()?;
    let kind = s["stream"].as_str()?;
    let state = s["state"].as_str().unwrap_or("unknown");
    Some(StreamHealth {
        stream: format!("{camera}/{kind}"),
        mode: s["mode"].as_str().unwrap_or("unknown").to_owned(),
        state: state.to_owned(),
        receiving: matches!(state, "recording" | "shadowing"),
        bitrate_kbps: s["bitrate_bps"].as_u64().unwrap_or(0) / 1000,
    })
}

/// Promotes `stream` under `epoch`, after `after` (a frame id JSON) or cold; returns the answer. A
/// stream that records already counts as promoted (`{"already_recording": true}`).
pub async fn promote(
    socket: &Path,
    stream: &str,
    after: Option<&store::frame::FrameId>,
    epoch: u64,
    reason: &str,
) -> Result<Value, RecorderError> {
    let mut req = json!({"op": "promote", "stream": stream, "epoch": epoch, "reason": reason});
    if let Some(a) = after {
        req["after"] = json!(a);
    }
    match request(socket, &req, COMMAND_TIMEOUT).await {
        // A restarted arbiter asks again for what its recorder records already: done.
        Err(RecorderError::Refused(e)) if e.contains("already recording") => {
            Ok(json!({"already_recording": true}))
        }
        other => other,
    }
}

/// Releases `stream` to shadow at its next key frame; a stream without a session now (its camera
/// unreachable from here) is switched to shadow at once, so that it does not record again when the
/// camera comes back.
pub async fn release(socket: &Path, stream: &str) -> Result<Value, RecorderError> {
    let released = request(
        socket,
        &json!({"op": "release", "stream": stream, "to": "shadow"}),
        COMMAND_TIMEOUT,
    )
    .await;
    match released {
        Err(RecorderError::Refused(e)) if e.contains("no live session") => {
            request(
                socket,
                &json!({"op": "start", "stream": stream, "mode": "shadow"}),
                COMMAND_TIMEOUT,
            )
            .await
        }
        other => other,
    }
}

/// A hand-back: releases `stream` to shadow at its next key frame and returns the last frame written
/// here (the new holder continues right after it).
pub async fn release_for_handback(
    socket: &Path,
    stream: &str,
) -> Result<store::frame::FrameId, RecorderError> {
    let answer = request(
        socket,
        &json!({"op": "release", "stream": stream, "to": "shadow"}),
        COMMAND_TIMEOUT,
    )
    .await?;
    serde_json::from_value(answer["last_written"].clone()).map_err(|e| {
        RecorderError::Malformed(format!("release of {stream}: no last written frame: {e}"))
    })
}
