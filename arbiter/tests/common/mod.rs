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

/// A loopback TCP proxy in front of one camera that can cut the connections opened after the first
/// `keep` and refuse every new one: the camera becomes unreachable for one node only (the one that
/// connected later), while the other's session goes on.
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

    /// Cuts every connection from the `keep`-th on and refuses all new ones.
    pub fn cut_after(&self, keep: usize) {
        *self.state.refuse_from.lock().expect("lock") = Some(keep);
        for c in self.state.conns.lock().expect("lock").iter().skip(keep) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}
