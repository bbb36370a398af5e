//! The `nvr-sync` binary: node identity, the sync agent (primary or standby), status and restore.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};

use cluster_config::NodeArgs;
use nvr_sync::agent::{self, restore::RestoreFilter, AgentStatus};
use nvr_sync::config::{Role, SyncConfig};
use nvr_sync::identity;

#[derive(Parser)]
#[command(
    name = "nvr-sync",
    version,
    about = "NVR sync agent: mirrors segments to a standby with signed version snapshots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this node's signing key, TLS key and certificate (private keys 0600) and print its pins.
    Keygen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: String,
    },
    /// Run the agent until SIGTERM/SIGINT.
    Run {
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Print the agent's status (peers, lag, last accepted head, alarms; with [arbiter] the flow-back
    /// of takeover segments) as JSON.
    Status {
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Check this node's sealed segments against its signed log (files and catalog rows); prints the
    /// problems as JSON and exits 1 if there are any.
    Check {
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Restore this node's segments from the standby, verified against the signed log.
    Restore {
        #[command(flatten)]
        args: NodeArgs,
        #[arg(long)]
        camera: Option<String>,
        /// `main` or `sub`.
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        from_ms: Option<i64>,
        #[arg(long)]
        to_ms: Option<i64>,
    },
}

fn main() -> ExitCode {
    base::process::init_logging();
    base::process::exit_code(real_main(Cli::parse()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { dir, node } => {
            let id = identity::generate(&dir, &node)?;
            let (cert, key) = id.pins().to_hex_strings();
            println!("node = \"{node}\"\ncert_sha256 = \"{cert}\"\nsigning_public_key = \"{key}\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { args } => {
            let cfg = SyncConfig::load(&args.config, args.node())?;
            let id = identity::load(&cfg.identity_dir)?;
            if id.node != cfg.node_name {
                anyhow::bail!(
                    "identity in {} is for node {:?}, config says {:?}",
                    cfg.identity_dir.display(),
                    id.node,
                    cfg.node_name
                );
            }
            let status = Arc::new(Mutex::new(AgentStatus::default()));
            runtime()?.block_on(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    base::process::shutdown_signal().await;
                    let _ = tx.send(true);
                });
                match cfg.role {
                    Role::Primary => agent::primary::run(cfg, id, status, rx).await,
                    Role::Standby => agent::standby::run(cfg, id, status, rx).await,
                    // Refused by `SyncConfig::load` (`ClusterConfig::sync_node`).
                    Role::Witness => Ok(()),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { args } => {
            let cfg = SyncConfig::load(&args.config, args.node())?;
            let path = cfg.data_dir.join(agent::STATUS_FILE);
            let body = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (is the agent running?)", path.display()))?;
            println!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { args } => {
            let cfg = SyncConfig::load(&args.config, args.node())?;
            let problems = agent::repair::check_against_log(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&problems)?);
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Restore {
            args,
            camera,
            stream,
            from_ms,
            to_ms,
        } => {
            let cfg = SyncConfig::load(&args.config, args.node())?;
            let id = identity::load(&cfg.identity_dir)?;
            let filter = RestoreFilter {
                camera,
                stream,
                from_ms,
                to_ms,
            };
            let report = runtime()?.block_on(agent::restore::run(&cfg, &id, &filter))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
