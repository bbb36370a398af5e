//! The `nvr` binary: recorder, configuration check, store check, camera simulator and demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use base::clock::SystemClock;
use camsim::{CamSim, Clip};
use nvr::config;

#[derive(Parser)]
#[command(name = "nvr", version, about = "Network video recorder")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record this node's cameras until SIGTERM/SIGINT.
    Run {
        /// The cluster configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Run as this node instead of the one named by its identity (`identity.toml` in the node's
        /// identity_dir); for tests and several nodes on one machine.
        #[arg(long)]
        node: Option<String>,
    },
    /// Validate a cluster configuration file for every node at once and print a per-node summary.
    CheckConfig {
        file: PathBuf,
        /// Also derive this node's recorder configuration (reads its cameras' password files).
        #[arg(long)]
        node: Option<String>,
    },
    /// Compare catalog and media files, re-hash sealed segments; exit 0 if all is well, 1 if not.
    Check {
        /// The cluster configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Check this node's data instead of the one named by its identity.
        #[arg(long)]
        node: Option<String>,
        /// Skip re-hashing sealed segments (sizes and presence only).
        #[arg(long)]
        no_rehash: bool,
    },
    /// Serve N looped H.264 streams over RTSP at rtsp://ADDR/cam1..camN (demo, burn-in, load tests).
    Camsim {
        #[arg(long, default_value = "127.0.0.1:8554")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Serve this Annex-B H.264 file instead of the embedded clip (must start with an IDR, carry
        /// SPS/PPS and have no B-frames), looped.
        #[arg(long)]
        clip: Option<PathBuf>,
        /// Frame rate of `--clip`.
        #[arg(long, default_value_t = camsim::EMBEDDED_FPS, requires = "clip")]
        fps: u32,
    },
    /// Demo without cameras: the camera simulator plus the recorder, recording into a local folder.
    Demo {
        #[arg(long, default_value = "demo-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Segment length for the demo (short, so sealing shows quickly).
        #[arg(long, default_value_t = 10)]
        segment_s: u64,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration_s: Option<u64>,
    },
}

fn main() -> ExitCode {
    base::process::init_logging();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, node } => {
            let cfg = config::load_node(&config, node.as_deref())?;
            runtime()?.block_on(nvr::recorder::run(
                cfg,
                base::process::shutdown_signal(),
                |_| {},
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file, node } => {
            let cluster = config::load(&file)?;
            if let Some(node) = &node {
                let name = cluster.select_node(Some(node))?.name.clone();
                cluster.recorder(&name)?;
            }
            println!(
                "ok: {} node(s), {} camera(s) in {}",
                cluster.nodes.len(),
                cluster.cameras.len(),
                file.display()
            );
            print!("{}", cluster.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            config,
            node,
            no_rehash,
        } => {
            let cfg = config::load_node(&config, node.as_deref())?;
            let store = store::Store::open_read_only(&cfg.data_dir, Arc::new(SystemClock))?;
            let report = store.check(!no_rehash)?;
            for p in &report.problems {
                println!("PROBLEM {}: {}", p.path, p.problem);
            }
            println!(
                "{} sealed and {} open segments checked, {} bytes re-hashed, {} problems",
                report.sealed_checked,
                report.open_checked,
                report.bytes_hashed,
                report.problems.len()
            );
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Camsim {
            listen,
            streams,
            clip,
            fps,
        } => {
            let clip = match clip {
                None => Clip::embedded(),
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading clip {}", path.display()))?;
                    std::sync::Arc::new(
                        Clip::parse(&bytes, fps)
                            .with_context(|| format!("clip {}", path.display()))?,
                    )
                }
            };
            runtime()?.block_on(async move {
                let sim = CamSim::bind(listen, streams, clip).await?;
                let urls = sim.urls();
                println!(
                    "camsim serving {streams} streams: {} .. {}",
                    urls.first().map(|u| u.as_str()).unwrap_or("-"),
                    urls.last().map(|u| u.as_str()).unwrap_or("-")
                );
                sim.run(base::process::shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            data_dir,
            streams,
            segment_s,
            duration_s,
        } => {
            runtime()?.block_on(demo(data_dir, streams, segment_s, duration_s))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn demo(
    data_dir: PathBuf,
    streams: usize,
    segment_s: u64,
    duration_s: Option<u64>,
) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&data_dir).context("resolving the demo data directory")?;
    let sim = CamSim::bind("127.0.0.1:0".parse()?, streams, Clip::embedded()).await?;
    let cfg = config::demo(&data_dir, &sim.urls(), segment_s * 1000);
    let (sim_stop_tx, sim_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(sim.run(async move {
        let _ = sim_stop_rx.await;
    }));
    println!(
        "demo: camera simulator with {streams} streams; recording into {} (segments of {segment_s} s). Ctrl-C stops.",
        data_dir.display()
    );
    let stop = async move {
        match duration_s {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                    _ = base::process::shutdown_signal() => {}
                }
            }
            None => base::process::shutdown_signal().await,
        }
    };
    let printer = std::sync::Mutex::new(None);
    nvr::recorder::run(cfg, stop, |handle| {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                for s in &handle.streams {
                    let s = match s.lock() {
                        Ok(g) => g.clone(),
                        Err(p) => p.into_inner().clone(),
                    };
                    println!(
                        "{}/{}: {:?}, {} frames, {} bytes, {} segments sealed, writing {}",
                        s.camera,
                        s.stream,
                        s.state,
                        s.frames,
                        s.bytes,
                        s.segments_sealed,
                        s.current_segment.as_deref().unwrap_or("-")
                    );
                }
            }
        });
        if let Ok(mut p) = printer.lock() {
            *p = Some(task);
        }
    })
    .await?;
    if let Ok(mut p) = printer.lock() {
        if let Some(t) = p.take() {
            t.abort();
        }
    }
    let _ = sim_stop_tx.send(());
    let _ = sim_task.await;
    let store = store::Store::open_read_only(&data_dir, Arc::new(SystemClock))?;
    let report = store.check(true)?;
    println!(
        "demo finished: {} sealed segments, all verified: {}; see {}",
        report.sealed_checked,
        report.ok(),
        data_dir.display()
    );
    Ok(())
}
