//! The I/O shell around the decision core: the heartbeat links, the local recorder's health, the
//! clock, and the actions (persist, promote, release, alarm) carried out in that order.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base::clock::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::ArbiterConfig;
use crate::core::{Action, Core, Input};
use crate::heartbeat::{Heartbeat, Seq};
use crate::status::{Event, Status, MAX_EVENTS};
use crate::{net, operator, recorder, state, status, takeover};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Identity(#[from] node_identity::IdentityError),
    #[error("the identity in {dir} is node {found:?}, not {expected:?}")]
    WrongIdentity {
        dir: String,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot open the operator socket in {dir}: {source}")]
    Operator { dir: String, source: std::io::Error },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What the background tasks tell the loop.
enum Report {
    /// An input of the core: the local recorder's health, the result of a promotion or hand-back.
    Input(Input),
    /// Something to show in the status document's events.
    Event(String),
}

/// Runs the arbiter of `cfg` until `shutdown` completes. The recorder is never stopped or changed on
/// the way out: its streams keep their modes.
pub async fn run(cfg: ArbiterConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let id = Arc::new(node_identity::load(&cfg.identity_dir)?);
    if id.node != cfg.node_name {
        return Err(RunError::WrongIdentity {
            dir: cfg.identity_dir.display().to_string(),
            found: id.node.clone(),
            expected: cfg.node_name.clone(),
        });
    }
    if cfg.role == cluster_config::Role::Witness {
        // No recorder creates a witness's data directory: the arbiter keeps its state there.
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| RunError::Operator {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
    }
    let persisted = state::load(&cfg.data_dir)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RunError::Listen {
            address: cfg.listen,
            source,
        })?;
    let clock = SystemClock;
    let start = Instant::now();
    let core_ms = move || i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX);
    let peers: Vec<String> = cfg.peers.iter().map(|p| p.pins.node.clone()).collect();
    let mut core = Core::new(
        &cfg.node_name,
        cfg.timings,
        cfg.capacity,
        cfg.streams.clone(),
        &peers,
        &persisted,
        core_ms(),
    )
    .with_witness(cfg.witness.clone());
    let boot_ms = clock.now_utc_ms();
    let mut seq_n = 0u64;
    let heartbeat_of = |core: &Core, n: u64| Heartbeat {
        node: cfg.node_name.clone(),
        seq: Seq { boot_ms, n },
        sent_ms: clock.now_utc_ms(),
        holdings: core.claims(),
        health: core.local_health(),
        hears: if core.is_witness() {
            core.hears()
        } else {
            Vec::new()
        },
    };

    let (hb_tx, mut hb_rx) = mpsc::channel::<net::Received>(256);
    let (out_tx, out_rx) = watch::channel(heartbeat_of(&core, 0));
    let (report_tx, mut report_rx) = mpsc::channel::<Report>(256);
    let (op_tx, mut op_rx) = mpsc::channel::<operator::Job>(16);
    let mut tasks = vec![tokio::spawn(operator::serve(cfg.data_dir.clone(), op_tx))];
    let interval = Duration::from_millis(cfg.timings.heartbeat_interval_ms.max(1) as u64);
    let pins: Vec<_> = cfg.peers.iter().map(|p| p.pins.clone()).collect();
    {
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = net::serve(listener, id, pins, hb_tx).await {
                tracing::error!(error = %e, "heartbeat listener failed");
            }
        }));
    }
    for p in &cfg.peers {
        tasks.push(tokio::spawn(net::send_to(
            id.clone(),
            p.pins.clone(),
            p.address,
            out_rx.clone(),
            interval,
        )));
    }
    if !core.is_witness() {
        tasks.push(tokio::spawn(poll_health(
            cfg.control_socket(),
            interval,
            report_tx.clone(),
        )));
    }
    tracing::info!(node = %cfg.node_name, listen = %cfg.listen, peers = ?peers, streams = cfg.streams.len(), "arbiter running");

    let mut shell = Shell {
        cfg: &cfg,
        events: VecDeque::new(),
        refused: 0,
        last_refusal: None,
        report_tx,
        last_status: None,
    };
    // Failure detection is evaluated more often than heartbeats are sent.
    let mut tick = tokio::time::interval((interval / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_heartbeat = Instant::now();
    tokio::pin!(shutdown);
    loop {
        // Besides the ticks, the core is evaluated right when the next peer would be dead.
        let death = core
            .next_death_ms()
            .map(|ms| start + Duration::from_millis(ms.max(0) as u64));
        let (now, input) = tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => (core_ms(), Input::Tick),
            _ = async {
                match death {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => (core_ms(), Input::Tick),
            Some((from, heartbeat)) = hb_rx.recv() => (core_ms(), Input::Heartbeat { from, heartbeat }),
            Some((command, reply)) = op_rx.recv() => {
                let answer = match core.handle(core_ms(), Input::Operator(command)) {
                    Ok(actions) => {
                        let v = serde_json::json!({"ok": true, "result": actions});
                        shell.carry_out(&core, actions);
                        v
                    }
                    Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
                };
                let _ = reply.send(answer);
                continue;
            }
            Some(r) = report_rx.recv() => (core_ms(), match r {
                Report::Input(input) => input,
                Report::Event(message) => {
                    tracing::info!("{message}");
                    shell.event(message);
                    continue;
                }
            }),
        };
        match core.handle(now, input) {
            Ok(actions) => shell.carry_out(&core, actions),
            Err(refusal) => {
                tracing::warn!(%refusal, "heartbeat refused");
                shell.refused += 1;
                shell.last_refusal = Some(refusal.to_string());
                shell.event(format!("heartbeat refused: {refusal}"));
            }
        }
        if Instant::now() >= next_heartbeat {
            next_heartbeat = Instant::now() + interval;
            seq_n += 1;
            let _ = out_tx.send(heartbeat_of(&core, seq_n));
            shell.write_status(&core);
        }
    }
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_file(operator::socket_path(&cfg.data_dir));
    shell.write_status(&core);
    tracing::info!("arbiter stopped; the recorder keeps its streams' modes");
    Ok(())
}

/// Reads the recorder's stream health every `interval`.
async fn poll_health(socket: std::path::PathBuf, interval: Duration, tx: mpsc::Sender<Report>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged = false;
    loop {
        tick.tick().await;
        let h = match recorder::health(&socket).await {
            Ok(h) => {
                logged = false;
                Some(h)
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "the recorder does not answer");
                    logged = true;
                }
                None
            }
        };
        if tx.send(Report::Input(Input::LocalHealth(h))).await.is_err() {
            return;
        }
    }
}

struct Shell<'a> {
    cfg: &'a ArbiterConfig,
    events: VecDeque<Event>,
    refused: u64,
    last_refusal: Option<String>,
    report_tx: mpsc::Sender<Report>,
    last_status: Option<Instant>,
}

impl Shell<'_> {
    fn event(&mut self, message: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            time_ms: SystemClock.now_utc_ms(),
            message,
        });
    }

    /// Persist first: no promotion or release is carried out under an epoch not on disk.
    fn carry_out(&mut self, core: &Core, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        if actions.contains(&Action::Persist) {
            if let Err(e) = state::save(&self.cfg.data_dir, &self.cfg.node_name, &core.holdings()) {
                let message = format!("cannot persist the holdings, nothing carried out: {e}");
                tracing::error!("{message}");
                self.event(message);
                return;
            }
        }
        for a in actions {
            match a {
                Action::Persist => {}
                Action::Alarm { message } => {
                    tracing::warn!("{message}");
                    self.event(message);
                }
                Action::Promote {
                    stream,
                    epoch,
                    takeover,
                    after_frames_of,
                    after,
                    reason,
                } => {
                    tracing::info!(%stream, epoch, ?takeover, %reason, "promoting");
                    self.event(format!("promoting {stream} with epoch {epoch}: {reason}"));
                    self.spawn_promotion(takeover::Promotion {
                        socket: self.cfg.control_socket(),
                        data_dir: self.cfg.data_dir.clone(),
                        node: self.cfg.node_name.clone(),
                        stream,
                        epoch,
                        takeover,
                        origin: after_frames_of,
                        after,
                        reason,
                    });
                }
                Action::HandBack {
                    stream,
                    epoch,
                    owner,
                } => {
                    self.event(format!(
                        "handing {stream} (epoch {epoch}) back to {owner}: releasing it here at the next key frame"
                    ));
                    self.spawn_handback(stream, epoch);
                }
                Action::Release {
                    stream,
                    epoch,
                    reason,
                } => {
                    self.event(format!("releasing {stream} (epoch {epoch}): {reason}"));
                    let socket = self.cfg.control_socket();
                    tokio::spawn(async move {
                        match recorder::release(&socket, &stream).await {
                            Ok(a) => tracing::info!(%stream, epoch, answer = %a, "released"),
                            Err(e) => tracing::warn!(%stream, epoch, error = %e, "release failed"),
                        }
                    });
                }
            }
        }
        self.write_status(core);
    }

    /// Carries out a promotion in the background; its result comes back to the core, then the gap
    /// it left goes to the events.
    fn spawn_promotion(&self, job: takeover::Promotion) {
        let tx = self.report_tx.clone();
        tokio::spawn(async move {
            let epoch = job.epoch;
            let asked_ms = SystemClock.now_utc_ms();
            let result = job.run().await;
            match &result {
                Ok(answer) => tracing::info!(stream = %job.stream, epoch, %answer, "promoted"),
                Err(e) => {
                    tracing::warn!(stream = %job.stream, epoch, error = %e, "promotion failed")
                }
            }
            let answer = result.as_ref().ok().cloned();
            let _ = tx
                .send(Report::Input(Input::Promoted {
                    stream: job.stream.clone(),
                    epoch,
                    result: result.map(|_| ()),
                }))
                .await;
            if let Some(answer) = answer {
                if let Some(message) = job.gap_report(&answer, asked_ms).await {
                    let _ = tx.send(Report::Event(message)).await;
                }
            }
        });
    }

    /// Releases a stream here for a hand-back in the background; the last frame written comes back
    /// to the core.
    fn spawn_handback(&self, stream: String, epoch: u64) {
        let socket = self.cfg.control_socket();
        let tx = self.report_tx.clone();
        tokio::spawn(async move {
            let result = recorder::release_for_handback(&socket, &stream).await;
            let _ = tx
                .send(Report::Input(Input::HandedBack {
                    stream,
                    epoch,
                    result: result.map_err(|e| e.to_string()),
                }))
                .await;
        });
    }

    fn write_status(&mut self, core: &Core) {
        if self
            .last_status
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_status = Some(Instant::now());
        let streams = core.streams();
        let uncovered = streams
            .iter()
            .filter(|s| s.uncovered)
            .map(|s| s.stream.clone())
            .collect();
        let doc = Status {
            node: self.cfg.node_name.clone(),
            role: self.cfg.role.as_str().to_owned(),
            updated_ms: SystemClock.now_utc_ms(),
            peers: core.peers(),
            streams,
            recorder: core.local_health(),
            uncovered,
            capacity: core.capacity(),
            standing_down: core.standing_down(),
            hears: if core.is_witness() {
                core.hears()
            } else {
                Vec::new()
            },
            heartbeats_refused: self.refused,
            last_refusal: self.last_refusal.clone(),
            events: self.events.iter().cloned().collect(),
        };
        if let Err(e) = status::write(&self.cfg.data_dir, &doc) {
            tracing::warn!(error = %e, "cannot write the status document");
        }
    }
}
