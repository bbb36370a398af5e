//! The web viewer of `nvr demo`: the recorder does not link the viewer, so the demo runs the `nvr-web`
//! binary found next to the `nvr` executable, on a cluster file equivalent to the demo's configuration
//! (written beside the data directory, with the viewer's state), with a demo admin whose password is
//! made at random and printed. Under `cargo run` from a terminal, a viewer not built yet is built first
//! (`cargo build -p nvr-web`, the same profile); otherwise the demo says how to get it and records
//! without it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rand::Rng;

/// The demo's viewer user (role admin).
pub const DEMO_USER: &str = "demo";

/// Why the viewer could not be started (the demo goes on recording without it).
#[derive(Debug, thiserror::Error)]
pub enum DemoViewerError {
    #[error(
        "the viewer (nvr-web) is not built next to {exe}: run `cargo build --release -p nvr-web` \
         (or `cargo build --release`) and start the demo again to get it"
    )]
    NotBuilt { exe: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`nvr-web {what}` failed ({status})")]
    Failed {
        what: String,
        status: std::process::ExitStatus,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoViewerError {
    let what = what.into();
    move |source| DemoViewerError::Io { what, source }
}

/// A running demo viewer; stopped when dropped.
pub struct DemoViewer {
    child: Child,
    pub url: String,
    pub password: String,
    pub state_dir: PathBuf,
}

impl Drop for DemoViewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nvr-web` next to the running executable.
pub fn viewer_binary() -> Result<PathBuf, DemoViewerError> {
    let exe = std::env::current_exe().map_err(io("finding the nvr executable"))?;
    Ok(exe.with_file_name("nvr-web"))
}

/// Builds `nvr-web` when the demo runs under `cargo run` from a terminal and it is missing: the same
/// cargo, the profile of this executable (`release` or `debug`). Returns whether it tried.
fn build_with_cargo(bin: &Path) -> bool {
    let (Some(cargo), true) = (std::env::var_os("CARGO"), std::io::stdin().is_terminal()) else {
        return false;
    };
    let profile = bin
        .parent()
        .and_then(Path::file_name)
        .and_then(|p| p.to_str());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "nvr-web"]);
    // From anywhere: the workspace of the package being run.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        cmd.arg("--manifest-path")
            .arg(Path::new(&dir).join("Cargo.toml"));
    }
    match profile {
        Some("release") => {
            cmd.arg("--release");
        }
        Some("debug") => {}
        _ => return false,
    }
    println!("demo: building the viewer first (cargo build -p nvr-web, same profile)…");
    cmd.status().is_ok_and(|s| s.success())
}

/// The cluster file of the demo: node `demo` recording `urls` as cameras `sim1`…, its viewer on
/// `listen` with its state in `state_dir`.
pub fn cluster_file(
    data_dir: &Path,
    urls: &[url::Url],
    segment_s: u64,
    listen: std::net::SocketAddr,
    state_dir: &Path,
) -> String {
    let mut t = format!(
        "# Written by `nvr demo` for its viewer (nvr-web): the demo's recorder configuration.\n\
         [recording]\nsegment_duration_s = {segment_s}\n\n[retention]\nmin_free_bytes = 0\n\n\
         [web]\nlisten = \"{listen}\"\nstate_dir = \"{}\"\n\n\
         [[nodes]]\nname = \"demo\"\nrole = \"primary\"\ndata_dir = \"{}\"\nweb_url = \"https://{listen}\"\n",
        state_dir.display(),
        data_dir.display(),
    );
    for (i, url) in urls.iter().enumerate() {
        t.push_str(&format!(
            "\n[[cameras]]\nname = \"sim{}\"\nnode = \"demo\"\n[cameras.streams.main]\nurl = \"{url}\"\n",
            i + 1
        ));
    }
    t
}

fn random_password() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

fn web(bin: &Path, args: &[&str], what: &str) -> Result<(), DemoViewerError> {
    let status = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map_err(io(format!("running {}", bin.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(DemoViewerError::Failed {
            what: what.to_owned(),
            status,
        })
    }
}

/// Starts the viewer of the demo recording `urls` into `data_dir`: its state and cluster file in
/// `<data_dir>-web/`, user [`DEMO_USER`] with a new random password, HTTPS on a free loopback port.
pub fn start(
    data_dir: &Path,
    urls: &[url::Url],
    segment_s: u64,
) -> Result<DemoViewer, DemoViewerError> {
    let bin = viewer_binary()?;
    let built = bin.is_file() || (build_with_cargo(&bin) && bin.is_file());
    if !built {
        return Err(DemoViewerError::NotBuilt {
            exe: bin.with_file_name("nvr"),
        });
    }
    let name = data_dir
        .file_name()
        .map_or_else(|| "demo-data".into(), |n| n.to_string_lossy().into_owned());
    let state_dir = data_dir.with_file_name(format!("{name}-web"));
    std::fs::create_dir_all(&state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(io("finding a free port for the viewer"))?;
        probe
            .local_addr()
            .map_err(io("finding a free port for the viewer"))?
    };
    let config = state_dir.join("demo-cluster.toml");
    std::fs::write(
        &config,
        cluster_file(data_dir, urls, segment_s, listen, &state_dir),
    )
    .map_err(io(format!("writing {}", config.display())))?;
    let password = random_password();
    let pw_file = state_dir.join("demo-password");
    std::fs::write(&pw_file, format!("{password}\n"))
        .map_err(io(format!("writing {}", pw_file.display())))?;
    let cfg = config.to_string_lossy().into_owned();
    let pw = pw_file.to_string_lossy().into_owned();
    let add = [
        "user",
        "--config",
        &cfg,
        "add",
        DEMO_USER,
        "--role",
        "admin",
        "--password-file",
        &pw,
    ];
    let reset = [
        "user",
        "--config",
        &cfg,
        "passwd",
        DEMO_USER,
        "--role",
        "admin",
        "--password-file",
        &pw,
    ];
    // A second demo in the same place has the user already: a new password then.
    web(&bin, &add, "user add").or_else(|_| web(&bin, &reset, "user passwd"))?;
    let _ = std::fs::remove_file(&pw_file);
    let child = Command::new(&bin)
        .args(["run", "--config", &cfg, "--node", "demo"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(format!("starting {}", bin.display())))?;
    let _ = std::io::stdout().flush();
    Ok(DemoViewer {
        child,
        url: format!("https://{listen}/"),
        password,
        state_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_cluster_file_is_a_valid_cluster_with_the_viewer() {
        let urls = [
            url::Url::parse("rtsp://127.0.0.1:5554/cam1").expect("url"),
            url::Url::parse("rtsp://127.0.0.1:5554/cam2").expect("url"),
        ];
        let text = cluster_file(
            Path::new("/tmp/demo-data"),
            &urls,
            10,
            "127.0.0.1:8443".parse().expect("addr"),
            Path::new("/tmp/demo-data-web"),
        );
        let c = cluster_config::parse(&text, "demo-cluster.toml").expect("parses");
        assert_eq!(c.web.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(
            c.nodes[0].web_url.as_deref(),
            Some("https://127.0.0.1:8443")
        );
        let names: Vec<&str> = c.cameras.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["sim1", "sim2"]);
        assert_eq!(c.recording.segment_duration_ms, 10_000);
        let p = random_password();
        assert_eq!(p.len(), 16);
        assert_ne!(p, random_password());
    }
}
