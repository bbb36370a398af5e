//! The arbiter tests' rig: the two-node (or N:1) failover rig of `testkit::cluster` (a primary
//! `node-a` and its standby `node-s` on loopback, each with its recorder, sync agent and arbiter;
//! the camera simulator with frame stamps), exact frame counts (`testkit::frames`), and a camera
//! proxy that cuts one node's session.
//!
//! The `nvr` and `nvr-sync` binaries are other crates': `tests/run` builds them first
//! (`cargo build --workspace --bins`).
#![allow(dead_code, unused_imports)]

pub use testkit::cluster::*;
pub use testkit::frames::*;
pub use testkit::{free_port, nvr_sync_bin, run_nvr, wait_until, NvrProcess, TestDir};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A loopback TCP proxy that can cut the connections opened after the first `keep` and refuse every
/// new one, and let them through again ([`CameraProxy::heal`]). In front of one camera: the camera
/// becomes unreachable for one node only (the one that connected later), while the other's session
/// goes on. In front of an arbiter's or a sync agent's listener (`keep` 0): a partition of that link.
pub struct CameraProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// Connections in the order they were accepted (client side), to shut down on a cut.
    conns: std::sync::Mutex<Vec<std::net::TcpStream>>,
    /// Connections from this index on are refused (closed at once).
    refuse_from: std::sync::Mutex<Option<usize>>,
}

impl CameraProxy {
    pub fn start(target: std::net::SocketAddr) -> CameraProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut conns = st.conns.lock().expect("lock");
                let index = conns.len();
                let refused = st
                    .refuse_from
                    .lock()
                    .expect("lock")
                    .is_some_and(|from| index >= from);
                if let Ok(c) = client.try_clone() {
                    conns.push(c);
                }
                drop(conns);
                if refused {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CameraProxy { port, state }
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state.conns.lock().expect("lock").len()
    }

    /// Lets new connections through again after [`CameraProxy::cut_after`].
    pub fn heal(&self) {
        *self.state.refuse_from.lock().expect("lock") = None;
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every connection from the `keep`-th on and refuses all new ones.
    pub fn cut_after(&self, keep: usize) {
        *self.state.refuse_from.lock().expect("lock") = Some(keep);
        for c in self.state.conns.lock().expect("lock").iter().skip(keep) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

pub fn reader(data: &Path) -> store::Reader {
    store::Reader::open(data, std::sync::Arc::new(base::clock::SystemClock)).expect("catalog")
}

/// Sealed segments of `camera`/main written by `node` in the catalog of `data`: (path, absolute path).
pub fn sealed_segments(data: &Path, camera: &str, node: &str) -> Vec<(String, PathBuf)> {
    let r = reader(data);
    let Some(id) = r.find_stream(camera, "main").expect("stream") else {
        return Vec::new();
    };
    r.stream_segments(id)
        .expect("segments")
        .into_iter()
        .filter(|s| s.node == node && s.state == store::SegmentState::Sealed)
        .map(|s| (s.path.clone(), r.absolute_path(&s.path)))
        .collect()
}

/// Waits (up to 2 minutes) until the standby whose data directory is `standby` holds a sealed copy of
/// every segment the primary (`primary`, node `PRIMARY`) sealed of `cam1`..`cam{streams}`.
pub fn mirrored_all(primary: &Path, standby: &Path, streams: usize) -> bool {
    wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        (1..=streams).all(|i| {
            let camera = format!("cam{i}");
            let held: std::collections::BTreeSet<String> =
                sealed_segments(standby, &camera, PRIMARY)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
            sealed_segments(primary, &camera, PRIMARY)
                .iter()
                .all(|(p, _)| held.contains(p))
        })
    })
}

/// The messages of a status document's events, oldest first.
pub fn event_messages(status: &serde_json::Value) -> Vec<String> {
    status_events(status).into_iter().map(|(_, m)| m).collect()
}

/// Ends a run so that its recordings can be compared: the arbiters stop (recording unchanged), then
/// the recorders (every segment sealed); the sync agents (`syncs`, the primary's first) mirror what
/// is left of `cam1`..`cam{streams}` from `primary` to `standby`, then stop.
pub fn settle(
    arbiters: &mut [&mut NvrProcess],
    recorders: &mut [&mut NvrProcess],
    syncs: &mut [&mut NvrProcess],
    (primary, standby): (&Path, &Path),
    streams: usize,
) {
    for p in arbiters.iter_mut() {
        p.sigterm();
        p.expect_clean_exit(Duration::from_secs(15));
    }
    for p in recorders.iter_mut() {
        p.sigterm();
        p.expect_clean_exit(Duration::from_secs(30));
    }
    assert!(
        mirrored_all(primary, standby, streams),
        "mirroring did not catch up:\n{}",
        syncs[0].stderr_tail(30)
    );
    for p in syncs.iter_mut() {
        p.sigterm();
        p.expect_clean_exit(Duration::from_secs(30));
    }
}

/// Every file either node recorded of `camera`/main itself: the primary's (`PRIMARY`) sealed
/// segments in `primary`, then the standby's (`STANDBY`) in `standby`.
pub fn own_recordings(primary: &Path, standby: &Path, camera: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = sealed_segments(primary, camera, PRIMARY)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    files.extend(
        sealed_segments(standby, camera, STANDBY)
            .into_iter()
            .map(|(_, p)| p),
    );
    files
}

/// The cameras `cam1`..`cam{streams}` of the camera simulator on `port`, as `write_cluster` takes them.
pub fn camsim_cameras(port: u16, streams: usize) -> Vec<(String, String)> {
    (1..=streams)
        .map(|i| (format!("cam{i}"), format!("rtsp://127.0.0.1:{port}/cam{i}")))
        .collect()
}

/// `node`'s recorder, sync agent and arbiter, started in that order: (recorder, sync, arbiter).
pub fn spawn_node(dir: &TestDir, cfg: &Path, node: &str) -> (NvrProcess, NvrProcess, NvrProcess) {
    let recorder = spawn_recorder(dir, cfg, node);
    let sync = spawn_sync(dir, cfg, node);
    let arbiter = spawn_arbiter(dir, cfg, node);
    (recorder, sync, arbiter)
}

/// The mode of each stream in `node`'s recorder status.
pub fn recorder_modes(dir: &TestDir, cfg: &Path, node: &str) -> Vec<String> {
    recorder_status(dir, cfg, node)
        .as_array()
        .map(|v| {
            v.iter()
                .map(|x| x["mode"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}
