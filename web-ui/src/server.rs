//! The server: this node's view of the cluster file, the state directory, TLS or plain HTTP, the
//! routes and their limits.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpRequest, HttpServer};
use base::clock::{Clock, SystemClock};
use cluster_config::{CameraConfig, ClusterConfig, WebSettings};

use crate::alarms::AckStore;
use crate::audit::AuditLog;
use crate::control::ControlClient;
use crate::error::ApiError;
use crate::peers::Peers;
use crate::ratelimit::LoginLimiter;
use crate::session::SessionKey;
use crate::{api, assets, tls, WebError};

/// Largest JSON request body.
pub const MAX_JSON_BYTES: usize = 16 * 1024;

/// What every request handler shares.
pub struct AppState {
    pub node: String,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    /// This node's cameras, and on a standby with an arbiter those it protects (its recorder runs
    /// them, and records them once it takes them over).
    pub cameras: Vec<CameraConfig>,
    pub key: SessionKey,
    pub session_ttl_s: u64,
    pub limiter: LoginLimiter,
    pub audit: AuditLog,
    pub control: ControlClient,
    /// One permit per live stream relayed now (`[web] max_live_streams`).
    pub live_slots: Arc<tokio::sync::Semaphore>,
    pub live_slots_total: u32,
    pub clock: Arc<dyn Clock>,
    /// `[web] users_file`, or `<state_dir>/users.json`.
    pub users_file: PathBuf,
    /// The cluster file (the cluster page's nodes, cameras and retention).
    pub cluster: Arc<ClusterConfig>,
    /// Every node's viewer: the page's failover, CORS and the CSP.
    pub peers: Peers,
    /// Alarm acknowledgements (`<state_dir>/alarm-acks.json`).
    pub acks: AckStore,
    /// Signs export manifests (`<state_dir>/export.key`).
    pub export_key: crate::export::key::ExportKey,
}

/// The viewer of node `node` of `cluster`, ready to serve.
pub struct Server {
    pub state: web::Data<AppState>,
    pub settings: WebSettings,
    /// `None` for plain HTTP.
    pub cert: Option<tls::ServerCert>,
}

impl Server {
    /// Opens the state directory (made if missing, 0700), the audit log, the session secret and the
    /// certificate.
    pub fn new(cluster: &ClusterConfig, node: &str) -> Result<Server, WebError> {
        let settings = cluster.web.clone();
        let node_cfg = cluster
            .nodes
            .iter()
            .find(|n| n.name == node)
            .ok_or_else(|| WebError::BadFile {
                path: PathBuf::from(&cluster.origin),
                message: format!("no node {node:?}"),
            })?;
        let state_dir = settings.state_dir.clone();
        make_private_dir(&state_dir)?;
        let key = SessionKey::load(settings.session_secret_file.as_deref(), &state_dir)?;
        let cert = if settings.plain_http {
            None
        } else if let (Some(c), Some(k)) = (&settings.cert_file, &settings.key_file) {
            Some(tls::load(c, k)?)
        } else {
            let mut names = vec![node.to_owned(), "localhost".to_owned()];
            if !settings.listen.ip().is_unspecified() {
                names.push(settings.listen.ip().to_string());
            }
            Some(tls::self_signed(&state_dir, names)?)
        };
        let state = AppState {
            node: node.to_owned(),
            data_dir: node_cfg.data_dir.clone(),
            audit: AuditLog::open(&state_dir)?,
            state_dir,
            cameras: cameras_shown(cluster, node_cfg),
            key,
            session_ttl_s: settings.session_ttl_s,
            limiter: LoginLimiter::default(),
            control: ControlClient::new(&node_cfg.data_dir),
            live_slots: Arc::new(tokio::sync::Semaphore::new(
                settings.max_live_streams as usize,
            )),
            live_slots_total: settings.max_live_streams,
            clock: Arc::new(SystemClock),
            users_file: crate::users::users_file(&settings),
            cluster: Arc::new(cluster.clone()),
            peers: Peers::from_cluster(cluster),
            acks: AckStore::new(&settings.state_dir),
            export_key: crate::export::key::ExportKey::load_or_create(&settings.state_dir)?,
        };
        Ok(Server {
            state: web::Data::new(state),
            settings,
            cert,
        })
    }

    /// The URL to print: `https://HOST:PORT/` (or `http://`).
    pub fn url(&self, bound: std::net::SocketAddr) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        let host = if bound.ip().is_unspecified() {
            "localhost".to_owned()
        } else if bound.is_ipv6() {
            format!("[{}]", bound.ip())
        } else {
            bound.ip().to_string()
        };
        format!("{scheme}://{host}:{}/", bound.port())
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run(self) -> Result<(), WebError> {
        let state = self.state.clone();
        let csp = state.peers.csp();
        let http = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_JSON_BYTES)
                        .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
                )
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
                )
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
                )
                .wrap(
                    DefaultHeaders::new()
                        .add(("Content-Security-Policy", csp.clone()))
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Referrer-Policy", "no-referrer")),
                )
                .wrap(actix_web::middleware::from_fn(crate::peers::cors))
                .configure(api::configure)
                .route("/", web::get().to(assets::index))
                .route("/assets/{name}", web::get().to(assets::asset))
                .default_service(web::to(not_found))
        })
        .shutdown_timeout(5);
        let listen = self.settings.listen;
        let http = match &self.cert {
            Some(cert) => http.bind_rustls_0_23(listen, cert.server_config()?),
            None => http.bind(listen),
        }
        .map_err(|e| WebError::Io {
            path: PathBuf::from(listen.to_string()),
            source: e,
        })?;
        for addr in http.addrs() {
            println!("nvr-web listening on {}", self.url(addr));
        }
        if let Some(cert) = &self.cert {
            let kind = if cert.self_signed {
                "self-signed"
            } else {
                "configured"
            };
            println!(
                "nvr-web certificate ({kind}) SHA-256 {}",
                cert.fingerprint()
            );
        }
        println!(
            "nvr-web export key (Ed25519) {}",
            self.state.export_key.public_hex()
        );
        let (stop_watch, watch_stopped) = tokio::sync::watch::channel(false);
        // Without its history the viewer still serves: the timeline then names the file in
        // `alarm_problems`.
        let watch = crate::alarm_watch::spawn(self.state.clone(), watch_stopped)
            .inspect_err(|e| tracing::error!(error = %e, "alarm history: alarms are not recorded"))
            .ok();
        let server = http.disable_signals().run();
        let handle = server.handle();
        tokio::spawn(async move {
            base::process::shutdown_signal().await;
            handle.stop(true).await;
        });
        let served = server.await.map_err(|e| WebError::Io {
            path: PathBuf::from(listen.to_string()),
            source: e,
        });
        let _ = stop_watch.send(true);
        if let Some(watch) = watch {
            let _ = watch.await;
        }
        served
    }
}

/// The cameras a node's viewer shows: its own, and on a standby with an arbiter those of the
/// primaries it protects (the same as its recorder runs).
fn cameras_shown(cluster: &ClusterConfig, node: &cluster_config::NodeConfig) -> Vec<CameraConfig> {
    let mut cameras: Vec<CameraConfig> = cluster.cameras_of(&node.name).cloned().collect();
    if cluster.arbiter.is_some() && node.role == cluster_config::Role::Standby {
        cameras.extend(cluster.protected_by(&node.name).cloned());
    }
    cameras
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route {} {}",
        req.method(),
        req.path()
    )))
}

fn make_private_dir(dir: &std::path::Path) -> Result<(), WebError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(WebError::io(dir)(e)),
    }
}
