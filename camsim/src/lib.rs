//! `camsim`: the project's own camera simulator, a small RTSP 1.0 server (RFC 2326) serving N looped live
//! H.264 streams at `/cam1` .. `/camN` over TCP-interleaved RTP (RFC 6184), with RTCP sender reports
//! (RFC 3550). Used for demos, installers' burn-in tests and load tests of hundreds of streams.
//!
//! The clip is parsed and packetized once ([`Clip`]) and shared by all sessions. Each stream is one live
//! source with a frame clock: every session of a stream gets frame `k` at the same moment, stamped with
//! an SEI ([`stamp`]) holding `k` and its send time; a session inserts that small packet, patches RTP
//! headers and writes one buffer per access unit. See `docs/camsim.md`.

mod clip;
mod conn;
mod rtsp;
pub mod stamp;

pub use clip::{AccessUnit, Clip, ClipError, EMBEDDED_FPS, MAX_RTP_PAYLOAD_BYTES, RTP_CLOCK_HZ};

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// The ffmpeg command that encodes a clip `camsim` can serve (`--clip`): `seconds` of ffmpeg's
/// `testsrc2` pattern at `width`x`height`, 25 fps, H.264 High profile without B-frames, an IDR every
/// `gop_frames` frames with parameter sets before each, at a constant `mbit` Mbit/s (`None`: the
/// encoder's default rate control), written as raw Annex-B to `out`. Run it and check its status.
pub fn ffmpeg_clip_command(
    out: &std::path::Path,
    (width, height): (u32, u32),
    seconds: u32,
    gop_frames: u32,
    mbit: Option<u32>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg(format!("testsrc2=size={width}x{height}:rate=25"))
    .args(["-t", &seconds.to_string(), "-c:v", "libx264"])
    .args([
        "-profile:v",
        "high",
        "-bf",
        "0",
        "-g",
        &gop_frames.to_string(),
    ])
    .args(["-keyint_min", &gop_frames.to_string(), "-sc_threshold", "0"]);
    match mbit {
        Some(m) => {
            let rate = format!("{m}M");
            cmd.args(["-b:v", &rate, "-minrate", &rate, "-maxrate", &rate])
                .args(["-bufsize", &format!("{}M", m * 2)])
                .args(["-x264-params", "nal-hrd=cbr:repeat-headers=1"]);
        }
        None => {
            cmd.args(["-x264-params", "repeat-headers=1"]);
        }
    }
    cmd.args(["-f", "h264"]).arg(out);
    cmd
}

/// Default RTSP session timeout announced in `Session: ...;timeout=60`. Connections silent for longer are
/// dropped.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client's socket may stay unwritable before its connection is dropped.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most simultaneous connections; more are accepted and closed at once (keeps file descriptors bounded).
pub const MAX_CONNECTIONS: usize = 4096;

/// Kernel send buffer per connection (`SO_SNDBUF`, inherited from the listening socket; Linux doubles it).
/// About 1 s of a 2 Mbit/s stream: plenty for LAN round trips, bounds kernel memory per connection (autotuned
/// buffers reach several MB each), and lets a stalled client's writes block soon so it gets dropped.
pub const SEND_BUFFER_BYTES: u32 = 256 * 1024;

/// Pending-connection queue length for the listening socket (load tests connect hundreds at once).
const LISTEN_BACKLOG: u32 = 1024;

/// Most streams one server offers.
pub const MAX_STREAMS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CamSimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("stream count {streams} out of range 1..={MAX_STREAMS}")]
    StreamCount { streams: usize },
}

/// A bound, not yet running, camera simulator.
#[derive(Debug)]
pub struct CamSim {
    listener: TcpListener,
    local_addr: SocketAddr,
    streams: usize,
    clip: Arc<Clip>,
    session_timeout: Duration,
    write_timeout: Duration,
}

impl CamSim {
    /// Binds `listen` (port 0 = pick a free port).
    pub async fn bind(
        listen: SocketAddr,
        streams: usize,
        clip: Arc<Clip>,
    ) -> Result<CamSim, CamSimError> {
        if !(1..=MAX_STREAMS).contains(&streams) {
            return Err(CamSimError::StreamCount { streams });
        }
        let bind_err = |source| CamSimError::Bind {
            addr: listen,
            source,
        };
        let socket = match listen {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(bind_err)?;
        socket.set_reuseaddr(true).map_err(bind_err)?;
        socket
            .set_send_buffer_size(SEND_BUFFER_BYTES)
            .map_err(bind_err)?;
        socket.bind(listen).map_err(bind_err)?;
        let listener = socket.listen(LISTEN_BACKLOG).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(CamSim {
            listener,
            local_addr,
            streams,
            clip,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        })
    }

    /// Changes the session timeout (whole seconds, at least 1) announced to clients and enforced.
    pub fn set_session_timeout(&mut self, timeout: Duration) {
        self.session_timeout = Duration::from_secs(timeout.as_secs().max(1));
    }

    /// Changes how long a client may leave its socket unwritable before being dropped.
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = timeout;
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `rtsp://ip:port/camN` for n in 1..=streams. An unspecified listen address (`0.0.0.0`, `::`) is shown as
    /// loopback.
    pub fn urls(&self) -> Vec<url::Url> {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        (1..=self.streams)
            .filter_map(|n| url::Url::parse(&format!("rtsp://{addr}/cam{n}")).ok())
            .collect()
    }

    /// Serves until `shutdown` resolves; then stops accepting and closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), CamSimError> {
        let shared = Arc::new(conn::Shared {
            clip: self.clip,
            streams: self.streams,
            started: Instant::now(),
            started_wall_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            session_timeout: self.session_timeout,
            write_timeout: self.write_timeout,
        });
        info!(
            addr = %self.local_addr,
            streams = self.streams,
            "camsim: serving rtsp://{}/cam1..cam{}",
            self.local_addr,
            self.streams
        );
        tokio::pin!(shutdown);
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                r = self.listener.accept() => match r {
                    Ok((sock, peer)) => {
                        if tasks.len() >= MAX_CONNECTIONS {
                            warn!(%peer, "camsim: too many connections; refusing");
                            continue;
                        }
                        if let Err(e) = sock.set_nodelay(true) {
                            debug!(%peer, "camsim: set_nodelay: {e}");
                        }
                        info!(%peer, "camsim: client connected");
                        let shared = shared.clone();
                        tasks.spawn(async move {
                            match conn::serve(sock, shared).await {
                                Ok(()) => debug!(%peer, "camsim: connection closed"),
                                Err(e) => debug!(%peer, "camsim: connection dropped: {e}"),
                            }
                        });
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        warn!("camsim: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        info!("camsim: shutting down");
        tasks.shutdown().await;
        Ok(())
    }
}
