//! The arbiter's operator socket `<data_dir>/arbiter.sock` (`docs/failover.md`), spoken without linking
//! the arbiter: one request per connection, a 4-byte big-endian length then JSON, answered
//! `{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`. The viewer sends planned handovers and
//! drains (`{"op":"handover","to":NODE[,"stream":S]}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base::frame::{read_frame, write_frame, FrameError};
use serde_json::Value;
use tokio::net::UnixStream;

/// The whole exchange, connection to answer.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_ANSWER_BYTES: u32 = 1 << 20;

/// Why the arbiter gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    #[error("no arbiter answers on {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the arbiter did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the arbiter's answer: {0}")]
    BadAnswer(String),
    #[error("the arbiter refused: {0}")]
    Refused(String),
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(store::layout::ARBITER_SOCKET_FILE)
}

/// Sends `request` to the arbiter of `data_dir`; its `result` when it accepts.
pub async fn request(data_dir: &Path, request: &Value) -> Result<Value, ArbiterError> {
    let path = socket_path(data_dir);
    let answer = tokio::time::timeout(TIMEOUT, exchange(&path, request))
        .await
        .map_err(|_| ArbiterError::Timeout(TIMEOUT))??;
    if answer["ok"] == true {
        Ok(answer["result"].clone())
    } else {
        Err(ArbiterError::Refused(
            answer["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        ))
    }
}

async fn exchange(path: &Path, request: &Value) -> Result<Value, ArbiterError> {
    let unreachable = |source| ArbiterError::Unreachable {
        path: path.to_owned(),
        source,
    };
    let mut conn = UnixStream::connect(path).await.map_err(unreachable)?;
    let body = serde_json::to_vec(request).map_err(|e| ArbiterError::BadAnswer(e.to_string()))?;
    write_frame(&mut conn, &body).await.map_err(unreachable)?;
    let buf = read_frame(&mut conn, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| match e {
            FrameError::TooLarge { len, .. } => ArbiterError::BadAnswer(format!("{len} bytes")),
            e => unreachable(e.into()),
        })?;
    serde_json::from_slice(&buf).map_err(|e| ArbiterError::BadAnswer(e.to_string()))
}
