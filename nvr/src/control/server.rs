//! The recorder's side of the control socket: accepts connections (at most [`MAX_CONNECTIONS`]),
//! checks the peer's credentials, answers requests through the [`Supervisor`], and streams live video.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::protocol::{read_frame, write_frame, FrameError, Request, Response, MAX_REQUEST_BYTES};
use crate::ingest::{Command, Mode};
use crate::live::{next_chunks, LiveMuxer};
use crate::supervisor::Supervisor;

/// Connections served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A live subscriber whose socket accepts nothing for this long is dropped.
const LIVE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}: another recorder answers on this control socket")]
    InUse(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Binds `path` (mode 0660; a stale socket file is replaced) and serves until `stop` turns true.
pub fn start(
    path: &Path,
    supervisor: Arc<Supervisor>,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io("remove stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("chmod", path))?;
    let meta = std::fs::metadata(path).map_err(io("stat", path))?;
    let owner = (meta.uid(), meta.gid());
    let path = path.to_owned();
    Ok(tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: do not spin.
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tokio::spawn(refuse(stream, "too many control connections"));
                continue;
            };
            let supervisor = supervisor.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                serve(stream, owner, supervisor, stop).await;
                drop(permit);
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn refuse(mut stream: UnixStream, why: &str) {
    if let Ok(body) = serde_json::to_vec(&Response::error(why)) {
        let _ = write_frame(&mut stream, &body).await;
    }
}

/// Whether the peer may use the socket: root, the socket's owner, or its group (the service group).
fn allowed(stream: &UnixStream, (uid, gid): (u32, u32)) -> bool {
    match stream.peer_cred() {
        Ok(c) => c.uid() == 0 || c.uid() == uid || c.gid() == gid,
        Err(_) => false,
    }
}

async fn serve(
    mut stream: UnixStream,
    owner: (u32, u32),
    supervisor: Arc<Supervisor>,
    stop: watch::Receiver<bool>,
) {
    if !allowed(&stream, owner) {
        refuse(
            stream,
            "permission denied: not the recorder's user or group",
        )
        .await;
        return;
    }
    loop {
        let frame =
            match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream, MAX_REQUEST_BYTES))
                .await
            {
                Err(_) | Ok(Err(FrameError::Closed)) => return,
                Ok(Err(e)) => {
                    // The framing is lost: answer once and close.
                    refuse(stream, &format!("bad request frame: {e}")).await;
                    return;
                }
                Ok(Ok(frame)) => frame,
            };
        let request: Request = match serde_json::from_slice(&frame) {
            Ok(r) => r,
            Err(e) => {
                if answer(&mut stream, Response::error(format!("bad request: {e}")))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if let Request::Live { stream: key } = request {
            live(stream, &supervisor, &key, stop).await;
            return;
        }
        let response = dispatch(&supervisor, request).await;
        if answer(&mut stream, response).await.is_err() {
            return;
        }
    }
}

async fn answer(stream: &mut UnixStream, response: Response) -> std::io::Result<()> {
    let body = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    write_frame(stream, &body).await
}

fn result<T: serde::Serialize>(r: Result<T, crate::ingest::CommandError>) -> Response {
    match r {
        Ok(v) => Response::ok(v),
        Err(e) => Response::error(e.to_string()),
    }
}

async fn dispatch(supervisor: &Supervisor, request: Request) -> Response {
    match request {
        Request::Status {} => Response::ok(supervisor.statuses()),
        Request::Start { stream, mode } => {
            if mode == Mode::Off {
                return Response::error("start takes mode record or shadow; use stop for off");
            }
            result(supervisor.set_mode(&stream, mode).await)
        }
        Request::Stop { stream } => result(supervisor.set_mode(&stream, Mode::Off).await),
        Request::Promote {
            stream,
            after,
            epoch,
            reason,
        } => result(
            supervisor
                .command(&stream, |reply| Command::Promote {
                    after,
                    epoch,
                    reason,
                    reply,
                })
                .await,
        ),
        Request::Release { stream, to } => result(
            supervisor
                .command(&stream, |reply| Command::Release { to, reply })
                .await,
        ),
        Request::Live { .. } => Response::error("live is answered separately"),
    }
}

async fn live(
    mut stream: UnixStream,
    supervisor: &Supervisor,
    key: &str,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = match supervisor.subscribe(key) {
        Ok(rx) => rx,
        Err(e) => {
            let _ = answer(&mut stream, Response::error(e.to_string())).await;
            return;
        }
    };
    if answer(&mut stream, Response::ok(key)).await.is_err() {
        supervisor.unsubscribed(key);
        return;
    }
    let mut mux = LiveMuxer::new();
    loop {
        let chunks = tokio::select! {
            _ = stop.changed() => break,
            c = next_chunks(&mut rx, &mut mux) => c,
        };
        let chunks = match chunks {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(stream = key, error = %e, "live: cannot build fragment");
                continue;
            }
            Some(Ok(c)) => c,
        };
        for c in chunks {
            match tokio::time::timeout(LIVE_WRITE_TIMEOUT, write_frame(&mut stream, &c)).await {
                Ok(Ok(())) => {}
                _ => {
                    drop(rx);
                    supervisor.unsubscribed(key);
                    return;
                }
            }
        }
    }
    drop(rx);
    supervisor.unsubscribed(key);
}
