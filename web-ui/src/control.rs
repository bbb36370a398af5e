//! A client of the recorder's control socket (`docs/control.md`): `status`, and `live` as a stream of
//! fMP4 bytes. Frames are a 4-byte big-endian length and the payload; answers are
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`. One connection per request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base::frame::{write_frame, FrameError};
use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use tokio::net::UnixStream;

/// Largest frame accepted from the recorder (a key frame of a high bit-rate camera fits easily).
pub const MAX_FRAME_BYTES: u32 = 32 * 1024 * 1024;
/// How long an answer may take (the recorder answers within 30 s).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(35);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: no answer within {ANSWER_TIMEOUT:?}")]
    Timeout { path: PathBuf },
    #[error("control socket {path}: frame of {len} bytes exceeds {MAX_FRAME_BYTES}")]
    FrameTooLarge { path: PathBuf, len: u32 },
    #[error("control socket {path}: answer is not JSON: {message}")]
    BadAnswer { path: PathBuf, message: String },
    /// The recorder refused the request (its message).
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    /// The client of `<data_dir>/control.sock`.
    pub fn new(data_dir: &Path) -> ControlClient {
        ControlClient {
            path: data_dir.join("control.sock"),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
        move |source| ControlError::Io {
            path: self.path.clone(),
            source,
        }
    }

    async fn ask(&self, request: &Value) -> Result<(UnixStream, Value), ControlError> {
        let fut = async {
            let mut s = UnixStream::connect(&self.path).await.map_err(self.io())?;
            let body = serde_json::to_vec(request).unwrap_or_default();
            write_frame(&mut s, &body).await.map_err(self.io())?;
            let answer = read_frame(&mut s, &self.path)
                .await?
                .ok_or_else(|| self.io()(std::io::ErrorKind::UnexpectedEof.into()))?;
            let answer: Value =
                serde_json::from_slice(&answer).map_err(|e| ControlError::BadAnswer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
            if answer["ok"] == json!(true) {
                Ok((s, answer["result"].clone()))
            } else {
                Err(ControlError::Refused(
                    answer["error"].as_str().unwrap_or("refused").to_owned(),
                ))
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, fut)
            .await
            .map_err(|_| ControlError::Timeout {
                path: self.path.clone(),
            })?
    }

    /// The recorder's per-stream statuses (`{"op":"status"}`).
    pub async fn status(&self) -> Result<Vec<Value>, ControlError> {
        let (_, result) = self.ask(&json!({"op": "status"})).await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    /// The live fMP4 bytes of `stream` (`CAM/STREAM`): init segment, then a fragment a frame. The
    /// stream ends when the recorder closes the connection.
    pub async fn live(
        &self,
        stream: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ControlError>> + use<>, ControlError> {
        let (s, _) = self.ask(&json!({"op": "live", "stream": stream})).await?;
        let path = self.path.clone();
        Ok(futures::stream::try_unfold(
            (s, path),
            |(mut s, path)| async move {
                Ok(read_frame(&mut s, &path)
                    .await?
                    .map(|frame| (Bytes::from(frame), (s, path))))
            },
        ))
    }
}

/// One frame, or `None` at a clean end of the connection.
async fn read_frame(s: &mut UnixStream, path: &Path) -> Result<Option<Vec<u8>>, ControlError> {
    match base::frame::read_frame(s, MAX_FRAME_BYTES).await {
        Ok(frame) => Ok(Some(frame)),
        Err(FrameError::Closed) => Ok(None),
        Err(FrameError::TooLarge { len, .. }) => Err(ControlError::FrameTooLarge {
            path: path.to_owned(),
            len,
        }),
        Err(e) => Err(ControlError::Io {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}
