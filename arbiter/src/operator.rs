//! The operator socket `<data_dir>/arbiter.sock` (`store::layout::ARBITER_SOCKET_FILE`, mode 0660: the
//! arbiter's user and group only): one request per connection, framed like the recorder's control
//! socket (a 4-byte big-endian length, then JSON), answered `{"ok":true,"result":…}` or
//! `{"ok":false,"error":"…"}`. `{"op":"takeover","stream":"CAM/STREAM"}` takes a stream over on this
//! node now (its holder is down for good and the operator knows it);
//! `{"op":"handover","to":"NODE","stream":"CAM/STREAM"}` (without `stream`: every stream held here, a
//! drain; `"cameras":["CAM",…]` instead of `stream`: every stream of those cameras) hands streams to a
//! living peer, make-before-break at a key frame; `{"op":"drain","node":"NODE"}` (NODE: this node)
//! hands every stream held here to its counterpart: a primary's to its standby, a standby's back to
//! each stream's owner. The result lists what the arbiter decided. `nvr ctl handover` and
//! `nvr ctl drain` send these requests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base::frame::{read_frame, write_frame};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::core::OperatorCommand;

/// Largest request.
const MAX_REQUEST_BYTES: u32 = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Takeover {
        stream: String,
    },
    Handover {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        cameras: Vec<String>,
        to: String,
    },
    Drain {
        node: String,
    },
}

/// A command for the arbiter's loop, with where to send the answer.
pub type Job = (OperatorCommand, oneshot::Sender<Value>);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(store::layout::ARBITER_SOCKET_FILE)
}

/// Binds the socket (replacing a stale one), mode 0660.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Binds the socket in `data_dir` (retrying every second while the directory does not exist yet: the
/// recorder creates it) and serves operators: each request becomes a [`Job`] for the loop.
pub async fn serve(data_dir: PathBuf, tx: mpsc::Sender<Job>) {
    let mut logged = false;
    let listener = loop {
        match bind(&data_dir) {
            Ok(l) => break l,
            Err(e) => {
                if !logged {
                    tracing::warn!(dir = %data_dir.display(), error = %e, "operator socket not open yet; retrying");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, one(conn, tx)).await;
        });
    }
}

async fn one(mut conn: UnixStream, tx: mpsc::Sender<Job>) -> std::io::Result<()> {
    let command = match read(&mut conn).await {
        Err(e) => return write(&mut conn, &json!({"ok": false, "error": e})).await,
        Ok(Request::Takeover { stream }) => OperatorCommand::ForceTakeover { stream },
        Ok(Request::Handover {
            stream: Some(_),
            cameras,
            ..
        }) if !cameras.is_empty() => {
            let e = "bad request: give stream or cameras, not both";
            return write(&mut conn, &json!({"ok": false, "error": e})).await;
        }
        Ok(Request::Handover {
            stream,
            cameras,
            to,
        }) => {
            if cameras.is_empty() {
                OperatorCommand::Handover { stream, to }
            } else {
                OperatorCommand::HandoverCameras { cameras, to }
            }
        }
        Ok(Request::Drain { node }) => OperatorCommand::Drain { node },
    };
    let (reply, rx) = oneshot::channel();
    let answer = if tx.send((command, reply)).await.is_err() {
        json!({"ok": false, "error": "the arbiter is stopping"})
    } else {
        match rx.await {
            Ok(v) => v,
            Err(_) => json!({"ok": false, "error": "no answer"}),
        }
    };
    write(&mut conn, &answer).await
}

async fn read(conn: &mut UnixStream) -> Result<Request, String> {
    let buf = read_frame(conn, MAX_REQUEST_BYTES)
        .await
        .map_err(|e| match e {
            base::frame::FrameError::TooLarge { len, .. } => {
                format!("bad request frame: {len} bytes (1 to {MAX_REQUEST_BYTES})")
            }
            base::frame::FrameError::Empty => {
                format!("bad request frame: 0 bytes (1 to {MAX_REQUEST_BYTES})")
            }
            e => format!("reading the request: {e}"),
        })?;
    serde_json::from_slice(&buf).map_err(|e| format!("bad request: {e}"))
}

async fn write(conn: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    write_frame(conn, &body).await
}

/// Client side (`nvr-arbiter takeover`): sends `request`, returns the answer.
pub async fn request(data_dir: &Path, request: &Value) -> std::io::Result<Value> {
    let path = socket_path(data_dir);
    let mut conn = UnixStream::connect(&path).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{} (is nvr-arbiter running?): {e}", path.display()),
        )
    })?;
    write(&mut conn, request).await?;
    let buf = read_frame(&mut conn, 16 << 20).await.map_err(|e| match e {
        base::frame::FrameError::TooLarge { len, .. } => {
            std::io::Error::other(format!("answer of {len} bytes"))
        }
        e => e.into(),
    })?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}
