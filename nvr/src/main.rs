//! The `nvr` binary: recorder, control client, configuration check, store check, camera simulator,
//! frame stamps and demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use base::clock::SystemClock;
use camsim::{CamSim, Clip};
use cluster_config::NodeArgs;
use nvr::config::{self, Config};

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
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Validate a cluster configuration file for every node at once and print a per-node summary.
    CheckConfig {
        file: PathBuf,
        /// Also derive this node's recorder configuration (reads its cameras' password files).
        #[arg(long)]
        node: Option<String>,
    },
    /// Control a running recorder through its control socket (docs/control.md).
    Ctl {
        /// The recorder's configuration (its socket is `<data_dir>/control.sock`).
        #[arg(
            long,
            short,
            conflicts_with = "socket",
            required_unless_present = "socket"
        )]
        config: Option<PathBuf>,
        /// The control socket, instead of `--config`.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// With `--config`: the node whose recorder to control (default: from its identity).
        #[arg(long)]
        node: Option<String>,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Compare catalog and media files, re-hash sealed segments; exit 0 if all is well, 1 if not.
    Check {
        #[command(flatten)]
        args: NodeArgs,
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
    /// List the camsim frame stamps in recorded segment files: one line per video sample
    /// `SEQ SEND_TIME_US KEY FILE`, then a `# FILE: ...` summary per file and `# all: ...` over all files
    /// (sequence range, missing, duplicated, unstamped frames). With `--data-dir DIR --timeline
    /// CAM/STREAM`: the stream's de-duplicated timeline in that data directory instead (every segment
    /// of the catalog without its trimmed frames), then `# trimmed: N frames` and `# CAM/STREAM: ...`.
    Frames {
        #[arg(required_unless_present = "timeline")]
        files: Vec<PathBuf>,
        /// A data directory whose catalog holds the `--timeline` stream.
        #[arg(long, requires = "timeline")]
        data_dir: Option<PathBuf>,
        /// The stream (CAM/STREAM) whose timeline in `--data-dir` to list.
        #[arg(long, requires = "data_dir", conflicts_with = "files")]
        timeline: Option<String>,
        /// Print only the summary lines.
        #[arg(long)]
        summary: bool,
    },
    /// Benchmark floor: open every stream of this node's cameras as `run` would and drop, hash or
    /// write every frame (`--level`, nvr/src/floor.rs) until SIGTERM/SIGINT; prints what it received.
    #[command(hide = true)]
    Floor {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        node: Option<String>,
        /// What is done with every frame: dropped, hashed, or written through the store's segment writer.
        #[arg(long, value_enum, default_value = "receive")]
        level: nvr::floor::FloorLevel,
    },
    /// Check an exported MP4 against its signed evidence manifest, offline (docs/web.md, "Exports").
    VerifyExport {
        /// The exported MP4.
        file: PathBuf,
        /// Its manifest (JSON).
        manifest: PathBuf,
        /// The recording node's signing public key (hex, or a file holding it): its `[[nodes]]`
        /// `signing_public_key`.
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        node_key: Option<String>,
        /// Or take the manifest's node's `signing_public_key` from this cluster file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The node's export public key (hex, or a file holding it, e.g. the viewer's `export.pub`).
        #[arg(long)]
        export_key: String,
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
        /// Do not start the web viewer (`nvr-web`, next to this executable).
        #[arg(long)]
        no_viewer: bool,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Every stream's mode, state, last frame, rates, last key frame and errors (JSON).
    Status,
    /// Set a stream's mode to record (default) or shadow.
    Start {
        /// `camera/stream`, e.g. `front-door/main`.
        stream: String,
        #[arg(long)]
        shadow: bool,
    },
    /// Set a stream's mode to off (its segment is sealed, its session closed).
    Stop { stream: String },
    /// Shadow -> record, writing from the shadow ring exactly after a frame (JSON `{"hash","wall_ms"}`,
    /// as printed by `release` or `status`); without `--after`, from the ring's newest key frame.
    Promote {
        stream: String,
        #[arg(long)]
        after: Option<String>,
        /// The ownership epoch (fencing token) recorded with every segment of this holding.
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Record -> shadow (or off) at the next key frame; prints that key frame.
    Release {
        stream: String,
        #[arg(long)]
        off: bool,
    },
    /// The cluster as this node's arbiter sees it (nodes, heartbeat ages, holder and epoch per stream,
    /// uncovered streams): its status document `<data_dir>/arbiter-status.json`, as JSON.
    Cluster,
    /// Planned handover through this node's arbiter: every stream held here (or those of `--camera`)
    /// to the living peer NODE, make-before-break at a key frame; prints what the arbiter decided.
    Handover {
        /// The peer that takes the streams.
        #[arg(long)]
        to: String,
        /// Only this camera's streams (repeatable).
        #[arg(long = "camera")]
        cameras: Vec<String>,
    },
    /// Drain NODE (this node) for an upgrade through its arbiter: every stream held here to its
    /// counterpart (a primary's to its standby, a standby's back to each owner), make-before-break.
    Drain { node: String },
    /// Write the stream's live video as fragmented MP4 to stdout.
    Live {
        stream: String,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        duration_s: Option<u64>,
    },
}

fn main() -> ExitCode {
    base::process::init_logging();
    base::process::exit_code(real_main(Cli::parse()))
}

/// Threads of the runtime's blocking pool at most (tokio's default is 512). The recorder's steady state
/// uses two: the grouped flush pass and the catalog's progress flush (each once per interval), plus the
/// retention pass; a recording finished by a mode change or at shutdown leaves its worker with
/// `block_in_place`, which borrows one for the worker's core (and takes the core back itself when none
/// is free, so the cap only delays it). Fragments are written by the fixed writer pool
/// (`nvr::ingest::WRITER_THREADS`), not here.
const MAX_BLOCKING_THREADS: usize = 8;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { args } => {
            let cfg = config::load_node(&args.config, args.node())?;
            runtime()?.block_on(async move {
                let reloads = reload_on_sighup(args.config, args.node)?;
                nvr::recorder::run(cfg, base::process::shutdown_signal(), reloads, |_| {}).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl {
            config,
            socket,
            node,
            command,
        } => {
            let socket = match (socket, config) {
                (Some(s), _) => s,
                (None, Some(c)) => config::load_node(&c, node.as_deref())?
                    .data_dir
                    .join(store::layout::CONTROL_SOCKET_FILE),
                (None, None) => anyhow::bail!("give --config or --socket"),
            };
            runtime()?.block_on(ctl(&socket, command))
        }
        Command::Floor {
            config,
            node,
            level,
        } => {
            let cfg = config::load_node(&config, node.as_deref())?;
            let counts = runtime()?.block_on(nvr::floor::run(
                &cfg,
                level,
                base::process::shutdown_signal(),
            ))?;
            let get =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "floor: sessions={} video_frames={} video_bytes={} hashed_bytes={} written_bytes={} errors={}",
                get(&counts.sessions),
                get(&counts.video_frames),
                get(&counts.video_bytes),
                get(&counts.hashed_bytes),
                get(&counts.written_bytes),
                get(&counts.errors)
            );
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
        Command::Check { args, no_rehash } => {
            let cfg = config::load_node(&args.config, args.node())?;
            let store = store::Reader::open(&cfg.data_dir, Arc::new(SystemClock))?;
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
        Command::VerifyExport {
            file,
            manifest,
            node_key,
            config,
            export_key,
        } => verify_export(&file, &manifest, node_key, config, &export_key),
        Command::Frames {
            data_dir: Some(data_dir),
            timeline: Some(stream),
            summary,
            ..
        } => {
            let reader = store::Reader::open(&data_dir, Arc::new(SystemClock))?;
            let (frames, trimmed) = nvr::frames::list_timeline(&reader, &stream)?;
            if !summary {
                for (f, path) in &frames {
                    println!(
                        "{}",
                        nvr::frames::frame_line(f, &path.display().to_string())
                    );
                }
            }
            let frames: Vec<_> = frames.into_iter().map(|(f, _)| f).collect();
            println!("# trimmed: {trimmed} frames");
            println!(
                "{}",
                nvr::frames::summary_line(&nvr::frames::summarize(&frames), &stream)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Frames { files, summary, .. } => {
            let mut all = Vec::new();
            for path in &files {
                let frames = nvr::frames::list(path)?;
                let name = path.display().to_string();
                if !summary {
                    for f in &frames {
                        println!("{}", nvr::frames::frame_line(f, &name));
                    }
                }
                println!(
                    "{}",
                    nvr::frames::summary_line(&nvr::frames::summarize(&frames), &name)
                );
                all.extend(frames);
            }
            if files.len() > 1 {
                println!(
                    "{}",
                    nvr::frames::summary_line(&nvr::frames::summarize(&all), "all")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            data_dir,
            streams,
            segment_s,
            duration_s,
            no_viewer,
        } => {
            runtime()?.block_on(demo(data_dir, streams, segment_s, duration_s, !no_viewer))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A 32-byte key given as 64 hex digits, or the path of a file whose first line they are.
fn key_arg(value: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let text = if value.len() == 64 {
        value.to_owned()
    } else {
        std::fs::read_to_string(value)
            .with_context(|| format!("reading the {what} from {value}"))?
    };
    base::hex::decode(text.trim())
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .with_context(|| format!("the {what} is not 64 hex digits (an Ed25519 public key)"))
}

fn verify_export(
    file: &std::path::Path,
    manifest: &std::path::Path,
    node_key: Option<String>,
    config: Option<PathBuf>,
    export_key: &str,
) -> anyhow::Result<ExitCode> {
    use nvr_evidence::manifest::{verify, Manifest};
    let bytes =
        std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let node_key = match (node_key, config) {
        (Some(k), _) => key_arg(&k, "node key")?,
        (None, Some(path)) => {
            let node = Manifest::from_file_bytes(&bytes)
                .map(|m| m.node)
                .unwrap_or_default();
            let cluster = config::load(&path)?;
            let pins = cluster
                .nodes
                .iter()
                .find(|n| n.name == node)
                .and_then(|n| n.pins.clone())
                .with_context(|| format!("{}: no node {node:?} with pins", path.display()))?;
            key_arg(&pins.signing_public_key, "node key")?
        }
        (None, None) => anyhow::bail!("give --node-key or --config"),
    };
    let export_key = key_arg(export_key, "export key")?;
    match verify(&bytes, file, &node_key, &export_key) {
        Ok(v) => {
            println!(
                "verified: {} (SHA-256 {}) was exported from {} segment(s) in the node's signed log \
                 ({} leaves, head of {} ms)",
                file.display(),
                v.file_sha256,
                v.segments,
                v.tree_size,
                v.head_timestamp_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("NOT VERIFIED: {}: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn demo(
    data_dir: PathBuf,
    streams: usize,
    segment_s: u64,
    duration_s: Option<u64>,
    with_viewer: bool,
) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&data_dir).context("resolving the demo data directory")?;
    let sim = CamSim::bind("127.0.0.1:0".parse()?, streams, Clip::embedded()).await?;
    let cfg = config::demo(&data_dir, &sim.urls(), segment_s * 1000);
    let viewer = with_viewer.then(|| nvr::demo_viewer::start(&data_dir, &sim.urls(), segment_s));
    let (sim_stop_tx, sim_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(sim.run(async move {
        let _ = sim_stop_rx.await;
    }));
    println!(
        "demo: camera simulator with {streams} streams; recording into {} (segments of {segment_s} s). Ctrl-C stops.",
        data_dir.display()
    );
    println!(
        "demo: steer it from another terminal: nvr ctl --socket {} status (or live sim1/main > live.mp4)",
        data_dir.join(store::layout::CONTROL_SOCKET_FILE).display()
    );
    match &viewer {
        Some(Ok(v)) => println!(
            "demo: viewer {} (a self-signed certificate: accept it in the browser); log in as {} with password {}",
            v.url,
            nvr::demo_viewer::DEMO_USER,
            v.password
        ),
        Some(Err(e)) => println!("demo: no viewer: {e}"),
        None => {}
    }
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
    let (_reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    nvr::recorder::run(cfg, stop, reloads, |handle| {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                for s in handle.supervisor.statuses() {
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
    drop(viewer);
    let _ = sim_stop_tx.send(());
    let _ = sim_task.await;
    let store = store::Reader::open(&data_dir, Arc::new(SystemClock))?;
    let report = store.check(true)?;
    println!(
        "demo finished: {} sealed segments, all verified: {}; see {}",
        report.sealed_checked,
        report.ok(),
        data_dir.display()
    );
    Ok(())
}

/// Re-reads the configuration on every SIGHUP; a file that does not load is reported and ignored (the
/// running configuration stays).
fn reload_on_sighup(
    path: PathBuf,
    node: Option<String>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<Config>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match config::load_node(&path, node.as_deref()) {
                Ok(cfg) => {
                    tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                    if tx.send(cfg).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "SIGHUP: configuration not reloaded, the running one stays: {e}"
                    )
                }
            }
        }
    });
    Ok(rx)
}

/// One request to the arbiter's operator socket beside the control socket (the recorder does not link
/// the arbiter); prints the answer, exit status 1 if it was refused.
async fn arbiter(
    control_socket: &std::path::Path,
    request: &serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let data_dir = control_socket.parent().unwrap_or(std::path::Path::new("."));
    let path = data_dir.join(store::layout::ARBITER_SOCKET_FILE);
    let answer = nvr::control::client::arbiter_request(&path, request).await?;
    if answer["ok"] == true {
        println!("{}", serde_json::to_string_pretty(&answer["result"])?);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "refused: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        );
        Ok(ExitCode::from(1))
    }
}

async fn ctl(socket: &std::path::Path, command: CtlCommand) -> anyhow::Result<ExitCode> {
    use nvr::control::client;
    use nvr::control::protocol::Request;
    use nvr::ingest::Mode;
    let request = match command {
        CtlCommand::Cluster => {
            // The arbiter is another process (the recorder does not link it); its status document
            // lives beside the control socket, in the data directory.
            let data_dir = socket.parent().unwrap_or(std::path::Path::new("."));
            let path = data_dir.join(store::layout::ARBITER_STATUS_FILE);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (is nvr-arbiter running on this node?)",
                    path.display()
                )
            })?;
            let doc: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a status document", path.display()))?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(ExitCode::SUCCESS);
        }
        CtlCommand::Handover { to, cameras } => {
            let mut req = serde_json::json!({"op": "handover", "to": to});
            if !cameras.is_empty() {
                req["cameras"] = serde_json::json!(cameras);
            }
            return arbiter(socket, &req).await;
        }
        CtlCommand::Drain { node } => {
            return arbiter(socket, &serde_json::json!({"op": "drain", "node": node})).await;
        }
        CtlCommand::Live { stream, duration_s } => {
            let stop = async move {
                match duration_s {
                    Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                    None => base::process::shutdown_signal().await,
                }
            };
            let mut out = tokio::io::stdout();
            let bytes = client::live(socket, &stream, &mut out, stop).await?;
            eprintln!("live {stream}: {bytes} bytes");
            return Ok(ExitCode::SUCCESS);
        }
        CtlCommand::Status => Request::Status {},
        CtlCommand::Start { stream, shadow } => Request::Start {
            stream,
            mode: if shadow { Mode::Shadow } else { Mode::Record },
        },
        CtlCommand::Stop { stream } => Request::Stop { stream },
        CtlCommand::Promote {
            stream,
            after,
            epoch,
        } => Request::Promote {
            stream,
            epoch,
            reason: None,
            after: after
                .map(|a| serde_json::from_str(&a))
                .transpose()
                .context("--after must be JSON like {\"hash\":\"…\",\"wall_ms\":…}")?,
        },
        CtlCommand::Release { stream, off } => Request::Release {
            stream,
            to: if off { Mode::Off } else { Mode::Shadow },
        },
    };
    match client::request(socket, &request).await {
        Ok(result) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(client::ClientError::Refused(message)) => {
            eprintln!("refused: {message}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
