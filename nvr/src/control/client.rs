//! The client side of the control socket (`nvr ctl`).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::protocol::{read_frame, write_frame, FrameError, Request, Response, MAX_RESPONSE_BYTES};

/// Errors of talking to the recorder.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the recorder's control socket {path} (is `nvr run` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Frame(#[from] FrameError),
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket: bad response: {0}")]
    BadResponse(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "cannot connect to the arbiter's socket {path} (is nvr-arbiter running on this node?)"
    )]
    ArbiterConnect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

async fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })
}

async fn exchange(stream: &mut UnixStream, request: &Request) -> Result<Response, ClientError> {
    let body = serde_json::to_vec(request).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    write_frame(stream, &body).await?;
    let frame = read_frame(stream, MAX_RESPONSE_BYTES).await?;
    serde_json::from_slice(&frame).map_err(|e| ClientError::BadResponse(e.to_string()))
}

/// Sends one request; a refused request is [`ClientError::Refused`] with the recorder's message.
pub async fn request(path: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    let mut stream = connect(path).await?;
    let response = exchange(&mut stream, request).await?;
    match response {
        Response {
            ok: true, result, ..
        } => Ok(result.unwrap_or(serde_json::Value::Null)),
        Response { error, .. } => Err(ClientError::Refused(
            error.unwrap_or_else(|| "refused".to_owned()),
        )),
    }
}

/// Sends one request to the arbiter's operator socket `<data_dir>/arbiter.sock` (the same framing:
/// a 4-byte big-endian length, then JSON; `docs/failover.md`, "Operator command") and returns its
/// answer, `{"ok":true,"result":…}` or `{"ok":false,"error":…}`. The recorder does not link the
/// arbiter: `nvr ctl handover` and `nvr ctl drain` speak its documented protocol.
pub async fn arbiter_request(
    path: &Path,
    request: &serde_json::Value,
) -> Result<serde_json::Value, ClientError> {
    let mut stream =
        UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::ArbiterConnect {
                path: path.to_owned(),
                source,
            })?;
    let body = serde_json::to_vec(request).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    write_frame(&mut stream, &body).await?;
    let frame = read_frame(&mut stream, MAX_RESPONSE_BYTES).await?;
    serde_json::from_slice(&frame).map_err(|e| ClientError::BadResponse(e.to_string()))
}

/// Writes a stream's live fMP4 to `out` until `stop` resolves or the recorder ends it; returns the
/// bytes written.
pub async fn live(
    path: &Path,
    stream_key: &str,
    out: &mut (impl AsyncWrite + Unpin),
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64, ClientError> {
    let mut stream = connect(path).await?;
    let response = exchange(
        &mut stream,
        &Request::Live {
            stream: stream_key.to_owned(),
        },
    )
    .await?;
    if !response.ok {
        return Err(ClientError::Refused(
            response.error.unwrap_or_else(|| "refused".to_owned()),
        ));
    }
    tokio::pin!(stop);
    let mut written = 0u64;
    loop {
        let chunk = tokio::select! {
            _ = &mut stop => break,
            c = read_frame(&mut stream, MAX_RESPONSE_BYTES) => c,
        };
        match chunk {
            Ok(c) => {
                out.write_all(&c).await?;
                out.flush().await?;
                written += c.len() as u64;
            }
            Err(FrameError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}
