//! Load-test helper for `camsim` until the `nvr camsim` subcommand is wired up.
//!
//! ```text
//! cargo run --example camsim_load -- serve 127.0.0.1:8554 100     # server only
//! cargo run --example camsim_load -- clients 127.0.0.1:8554 100 30 # 100 raw TCP clients for 30 s
//! ```
//!
//! The clients speak just enough RTSP (SETUP, PLAY, GET_PARAMETER keepalive) to pull `/cam1..camN` and
//! count frames (RTP marker bits) and bytes; they do not depacketize, so their own CPU cost stays small and
//! the server's cost can be read from `/proc/PID/stat` separately.

use camsim::{CamSim, Clip};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Default)]
struct Totals {
    frames: AtomicU64,
    bytes: AtomicU64,
    failed_clients: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", listen, streams] => {
            let sim = CamSim::bind(listen.parse()?, streams.parse()?, Clip::embedded()).await?;
            println!(
                "serving {} streams on {} (pid {})",
                streams,
                sim.local_addr(),
                std::process::id()
            );
            sim.run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
        ["clients", addr, n, duration_secs] => {
            let addr: SocketAddr = addr.parse()?;
            let n: usize = n.parse()?;
            let duration = Duration::from_secs(duration_secs.parse()?);
            let totals = Arc::new(Totals::default());
            let deadline = Instant::now() + duration;
            let mut tasks = Vec::new();
            for i in 1..=n {
                let totals = totals.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = client(addr, i, deadline, &totals).await {
                        eprintln!("client {i}: {e}");
                        totals.failed_clients.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
            let frames = totals.frames.load(Ordering::Relaxed);
            let bytes = totals.bytes.load(Ordering::Relaxed);
            let secs = duration.as_secs_f64();
            println!(
                "{n} clients, {secs:.0} s: {frames} frames ({:.1} fps per client), {:.2} Mbit/s per client, {} failed",
                frames as f64 / secs / n as f64,
                bytes as f64 * 8.0 / secs / n as f64 / 1e6,
                totals.failed_clients.load(Ordering::Relaxed),
            );
        }
        _ => anyhow::bail!("usage: serve LISTEN STREAMS | clients ADDR N DURATION_SECS"),
    }
    Ok(())
}

async fn client(
    addr: SocketAddr,
    cam: usize,
    deadline: Instant,
    totals: &Totals,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    let base = format!("rtsp://{addr}/cam{cam}");
    s.write_all(
        format!("SETUP {base}/track1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await?;
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    let session = resp
        .lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session in {resp:?}"))?
        .to_owned();
    s.write_all(
        format!("PLAY {base}/ RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n").as_bytes(),
    )
    .await?;
    // Parse the stream: RTSP responses (skipped up to the blank line) and `$` frames.
    let mut pending: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut next_keepalive = Instant::now() + Duration::from_secs(20);
    let mut cseq = 3;
    while Instant::now() < deadline {
        if Instant::now() >= next_keepalive {
            s.write_all(
                format!(
                    "GET_PARAMETER {base}/ RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {session}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
            cseq += 1;
            next_keepalive += Duration::from_secs(20);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "server closed");
        totals.bytes.fetch_add(n as u64, Ordering::Relaxed);
        pending.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        loop {
            let rest = &pending[off..];
            if rest.first() == Some(&b'$') {
                if rest.len() < 4 {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                if rest.len() < 4 + len {
                    break;
                }
                if rest[1] == 0 && len >= 12 && rest[5] & 0x80 != 0 {
                    totals.frames.fetch_add(1, Ordering::Relaxed);
                }
                off += 4 + len;
            } else if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
                off += end + 4;
            } else {
                break;
            }
        }
        pending.drain(..off);
    }
    Ok(())
}
