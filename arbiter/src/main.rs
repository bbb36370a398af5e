//! The `nvr-arbiter` binary: run the arbiter of this node, print its status.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cluster_config::NodeArgs;
use nvr_arbiter::config::ArbiterConfig;
use nvr_arbiter::{run, status};

#[derive(Parser)]
#[command(
    name = "nvr-arbiter",
    version,
    about = "NVR arbiter: heartbeats between nodes, failure detection, frame-exact takeover"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the arbiter until SIGTERM/SIGINT (the recorder keeps its streams' modes).
    Run {
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Take a stream over on this node now, through the running arbiter (its holder is down for good);
    /// prints what the arbiter decided.
    Takeover {
        #[command(flatten)]
        args: NodeArgs,
        /// `camera/stream`, e.g. `front-door/main`.
        stream: String,
    },
    /// Planned handover (upgrades): hand STREAM, or every stream held here (a drain), to the living peer
    /// NODE, make-before-break at a key frame; it stays there (no failback) until handed on.
    Handover {
        #[command(flatten)]
        args: NodeArgs,
        /// The peer that takes the streams.
        #[arg(long)]
        to: String,
        /// `camera/stream`; every stream held here if omitted.
        stream: Option<String>,
    },
    /// Print the arbiter's status: nodes, heartbeat ages, holder and epoch of every stream.
    Status {
        #[command(flatten)]
        args: NodeArgs,
        /// The status document as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { args } => {
            base::process::init_logging();
            let cfg = ArbiterConfig::load(&args.config, args.node())?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run::run(cfg, base::process::shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Takeover { args, stream } => operator(
            &args,
            serde_json::json!({"op": "takeover", "stream": stream}),
        ),
        Command::Handover { args, to, stream } => operator(
            &args,
            serde_json::json!({"op": "handover", "to": to, "stream": stream}),
        ),
        Command::Status { args, json } => {
            let cfg = ArbiterConfig::load(&args.config, args.node())?;
            let path = status::path(&cfg.data_dir);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading {} (is the arbiter running?)", path.display()))?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a status document", path.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", status::render(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sends one request to the running arbiter's operator socket and prints the answer.
fn operator(args: &NodeArgs, request: serde_json::Value) -> anyhow::Result<ExitCode> {
    let cfg = ArbiterConfig::load(&args.config, args.node())?;
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(nvr_arbiter::operator::request(&cfg.data_dir, &request))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(if answer["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
