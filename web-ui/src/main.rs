//! `nvr-web`: `run` serves the viewer; `user add|passwd|del` manage its users file.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use cluster_config::NodeArgs;
use nvr_web::server::Server;
use nvr_web::users::{users_file, Role, Users};

#[derive(Parser)]
#[command(name = "nvr-web", about = "NVR web viewer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serves the viewer of this node.
    Run {
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Manages the users of the viewer (`[web] state_dir`/users.json).
    User {
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        action: UserCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Adds a user; the password is read from --password-file or the first line of standard input.
    Add {
        name: String,
        #[arg(long, default_value = "viewer")]
        role: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Sets a user's password (and role, with --role).
    Passwd {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Removes a user.
    Del { name: String },
}

fn read_password(file: Option<&Path>) -> anyhow::Result<String> {
    let line = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        None => {
            eprintln!("password (one line on standard input):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if line.is_empty() {
        bail!("empty password");
    }
    Ok(line)
}

fn user(config: &Path, action: UserCmd) -> anyhow::Result<()> {
    let cluster = cluster_config::load(config)?;
    let path = users_file(&cluster.web);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut users = Users::load(&path)?;
    match action {
        UserCmd::Add {
            name,
            role,
            password_file,
        } => {
            let role = Role::parse(&role)?;
            users.add(&name, role, &read_password(password_file.as_deref())?)?;
            println!("user {name} added ({})", role.as_str());
        }
        UserCmd::Passwd {
            name,
            role,
            password_file,
        } => {
            let role = role.as_deref().map(Role::parse).transpose()?;
            users.passwd(&name, &read_password(password_file.as_deref())?, role)?;
            println!("user {name} changed");
        }
        UserCmd::Del { name } => {
            users.del(&name)?;
            println!("user {name} removed");
        }
    }
    users.save(&path)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    base::process::init_logging();
    match Cli::parse().command {
        Cmd::Run { args } => {
            let (cluster, node) = args.load()?;
            let server = Server::new(&cluster, &node)?;
            actix_web::rt::System::new().block_on(server.run())?;
        }
        Cmd::User { config, action } => user(&config, action)?,
    }
    Ok(())
}
