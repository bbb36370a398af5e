//! The stream supervisor: one [`StreamTask`] per configured stream, each with its own channel, added,
//! removed and switched at runtime without touching the others.
//!
//! Callers (the control socket, a configuration reload, the recorder's shutdown) never wait on a
//! stream's ingest: commands go through a bounded queue with `try_send` (a full queue is an error, not
//! a wait), and answers come back on a oneshot channel with a timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, Takeover, Transport};
use crate::frame::MediaFrame;
use crate::ingest::{
    Command, CommandError, IngestSettings, Mode, SharedStatus, StreamChannels, StreamSpec,
    StreamStatus, StreamTask, Writer,
};
use store::Store;

/// How long a command's answer is awaited (a release waits for the next key frame: long GOPs).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream's key: `camera/stream`.
pub fn stream_key(spec: &StreamSpec) -> String {
    format!("{}/{}", spec.camera, spec.kind.as_str())
}

struct Entry {
    spec: StreamSpec,
    mode: Mode,
    channels: StreamChannels,
    status: SharedStatus,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Streams whose camera settings changed (restarted).
    pub restarted: Vec<String>,
    /// Streams whose mode changed (no reconnect).
    pub mode_changed: Vec<String>,
    pub unchanged: usize,
}

/// See the module documentation.
pub struct Supervisor {
    store: Arc<Store>,
    settings: IngestSettings,
    /// The threads that write every stream's fragments.
    writer: Writer,
    streams: Mutex<BTreeMap<String, Entry>>,
}

/// The mode a configured stream starts in.
pub fn configured_mode(record: bool) -> Mode {
    if record {
        Mode::Record
    } else {
        Mode::Off
    }
}

/// The mode a stream protected by this standby starts in: `shadow` for a recorded stream taken over
/// hot (its takeover continues after the last mirrored frame), else `off`.
pub fn protected_mode(record: bool, takeover: Takeover) -> Mode {
    if record && takeover == Takeover::Hot {
        Mode::Shadow
    } else {
        Mode::Off
    }
}

/// Every stream of `config`, with its configured mode: the node's own cameras, then (on a standby)
/// the cameras it protects.
pub fn desired_streams(config: &Config) -> Vec<(StreamSpec, Mode)> {
    let own = config.cameras.iter().map(|c| (c, false));
    let protected = config.protected.iter().map(|c| (c, true));
    own.chain(protected)
        .flat_map(|(cam, protected)| {
            cam.streams.iter().map(move |s| {
                let mode = if protected {
                    protected_mode(s.record, cam.takeover)
                } else {
                    configured_mode(s.record)
                };
                (
                    StreamSpec {
                        camera: cam.name.clone(),
                        kind: s.kind,
                        url: s.url.clone(),
                        username: cam.username.clone(),
                        password: cam.password.clone(),
                        transport: cam.transport,
                        udp_reorder: cam.udp_reorder,
                    },
                    mode,
                )
            })
        })
        .collect()
}

/// Whether a stream's session can go on under `b` (else it restarts). The UDP reorder window
/// matters only to a camera that may use UDP.
fn same_camera_settings(a: &StreamSpec, b: &StreamSpec) -> bool {
    a.url == b.url
        && a.username == b.username
        && a.password == b.password
        && a.transport == b.transport
        && (a.transport == Transport::Tcp || a.udp_reorder == b.udp_reorder)
}

impl Supervisor {
    pub fn new(store: Arc<Store>, settings: IngestSettings, writer: Writer) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            store,
            settings,
            writer,
            streams: Mutex::new(BTreeMap::new()),
        })
    }

    fn streams(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        match self.streams.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts a task for `spec` in `mode`.
    pub fn add(&self, spec: StreamSpec, mode: Mode) -> Result<(), CommandError> {
        let key = stream_key(&spec);
        if self.streams().contains_key(&key) {
            return Err(CommandError::Exists(key));
        }
        let stream_id = self
            .store
            .ensure_stream(&spec.camera, spec.kind.as_str())
            .map_err(|e| CommandError::Storage(format!("{key}: {e}")))?;
        let status: SharedStatus = Arc::new(Mutex::new(StreamStatus::new(&spec.camera, spec.kind)));
        let (task, channels) = StreamTask::new(
            self.store.clone(),
            stream_id,
            spec.clone(),
            self.settings,
            status.clone(),
            mode,
            self.writer.clone(),
        );
        let task = tokio::spawn(task.run());
        self.streams().insert(
            key,
            Entry {
                spec,
                mode,
                channels,
                status,
                task,
            },
        );
        Ok(())
    }

    /// Stops a stream's task (its recording is finished and sealed) and forgets the stream.
    pub async fn remove(&self, key: &str) -> Result<(), CommandError> {
        let entry = self
            .streams()
            .remove(key)
            .ok_or_else(|| CommandError::UnknownStream(key.to_owned()))?;
        stop_entry(entry).await;
        Ok(())
    }

    /// Sends a command built around a reply channel and awaits the answer.
    pub async fn command<T>(
        &self,
        key: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, CommandError>>) -> Command,
    ) -> Result<T, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.send(key, make(tx))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CommandError::Gone(key.to_owned())),
            Err(_) => Err(CommandError::Busy(key.to_owned())),
        }
    }

    /// Queues a command without waiting (a full queue is [`CommandError::Busy`]).
    fn send(&self, key: &str, cmd: Command) -> Result<(), CommandError> {
        let sender = self
            .streams()
            .get(key)
            .map(|e| e.channels.commands.clone())
            .ok_or_else(|| CommandError::UnknownStream(key.to_owned()))?;
        sender.try_send(cmd).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => CommandError::Busy(key.to_owned()),
            tokio::sync::mpsc::error::TrySendError::Closed(_) => CommandError::Gone(key.to_owned()),
        })
    }

    /// Sets a stream's mode now.
    pub async fn set_mode(&self, key: &str, mode: Mode) -> Result<(), CommandError> {
        self.command(key, |r| Command::SetMode(mode, r)).await?;
        if let Some(e) = self.streams().get_mut(key) {
            e.mode = mode;
        }
        Ok(())
    }

    /// Subscribes to a stream's frames (opening a live-only session for a stream that is off).
    pub fn subscribe(&self, key: &str) -> Result<broadcast::Receiver<MediaFrame>, CommandError> {
        let rx = self
            .streams()
            .get(key)
            .map(|e| e.channels.live.subscribe())
            .ok_or_else(|| CommandError::UnknownStream(key.to_owned()))?;
        // A full queue is fine: the task sees the subscriber at its next tick.
        let _ = self.send(key, Command::Wake);
        Ok(rx)
    }

    /// Tells a stream that a live subscriber went away (an idle live-only session may close).
    pub fn unsubscribed(&self, key: &str) {
        let _ = self.send(key, Command::Wake);
    }

    /// Every stream's status, in key order.
    pub fn statuses(&self) -> Vec<StreamStatus> {
        self.streams()
            .values()
            .map(|e| match e.status.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            })
            .collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.streams().keys().cloned().collect()
    }

    /// Makes the running streams those of `desired`: new ones are added, missing ones removed, ones
    /// whose camera settings changed restarted, ones whose configured mode changed switched; the rest
    /// are not touched.
    pub async fn apply(&self, desired: Vec<(StreamSpec, Mode)>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let wanted: BTreeMap<String, (StreamSpec, Mode)> = desired
            .into_iter()
            .map(|(spec, mode)| (stream_key(&spec), (spec, mode)))
            .collect();
        let current: Vec<(String, StreamSpec, Mode)> = self
            .streams()
            .iter()
            .map(|(k, e)| (k.clone(), e.spec.clone(), e.mode))
            .collect();
        for (key, spec, mode) in current {
            match wanted.get(&key) {
                None => {
                    if self.remove(&key).await.is_ok() {
                        report.removed.push(key);
                    }
                }
                Some((new_spec, _)) if !same_camera_settings(&spec, new_spec) => {
                    let _ = self.remove(&key).await;
                    report.restarted.push(key);
                }
                Some((_, new_mode)) if *new_mode != mode => {
                    match self.set_mode(&key, *new_mode).await {
                        Ok(()) => report.mode_changed.push(key),
                        Err(e) => {
                            tracing::warn!(stream = %key, error = %e, "reload: mode change failed")
                        }
                    }
                }
                Some(_) => report.unchanged += 1,
            }
        }
        for (key, (spec, mode)) in wanted {
            if self.streams().contains_key(&key) {
                continue;
            }
            match self.add(spec, mode) {
                Ok(()) => {
                    if !report.restarted.contains(&key) {
                        report.added.push(key);
                    }
                }
                Err(e) => tracing::error!(stream = %key, error = %e, "cannot start stream"),
            }
        }
        report
    }

    /// Stops every stream (each seals its segment) and waits for them.
    pub async fn shutdown(&self) {
        let entries: Vec<Entry> = std::mem::take(&mut *self.streams()).into_values().collect();
        // Tell every task first, so they finish their recordings side by side.
        let tasks: Vec<JoinHandle<()>> = entries.into_iter().map(tell_exit).collect();
        for task in tasks {
            wait_task(task).await;
        }
    }
}

/// Asks a stream's task to finish and drops the supervisor's channel ends. If the command queue is
/// full the task still ends: it drains the queue, then finds every sender gone.
fn tell_exit(entry: Entry) -> JoinHandle<()> {
    let Entry { channels, task, .. } = entry;
    let _ = channels.commands.try_send(Command::Exit);
    task
}

async fn wait_task(task: JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::error!(error = %e, "stream task failed");
    }
}

async fn stop_entry(entry: Entry) {
    wait_task(tell_exit(entry)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StreamKind, UdpReorder};

    fn spec(transport: Transport, max_packets: u32) -> StreamSpec {
        StreamSpec {
            camera: "cam".to_owned(),
            kind: StreamKind::Main,
            url: url::Url::parse("rtsp://192.0.2.1/main").expect("url"),
            username: None,
            password: None,
            transport,
            udp_reorder: UdpReorder {
                max_packets,
                max_delay_ms: 50,
            },
        }
    }

    #[test]
    fn a_reorder_window_change_restarts_only_cameras_that_may_use_udp() {
        for t in [Transport::Udp, Transport::Auto] {
            assert!(!same_camera_settings(&spec(t, 64), &spec(t, 128)), "{t:?}");
            assert!(same_camera_settings(&spec(t, 64), &spec(t, 64)), "{t:?}");
        }
        assert!(same_camera_settings(
            &spec(Transport::Tcp, 64),
            &spec(Transport::Tcp, 128)
        ));
        assert!(!same_camera_settings(
            &spec(Transport::Tcp, 64),
            &spec(Transport::Udp, 64)
        ));
    }
}
