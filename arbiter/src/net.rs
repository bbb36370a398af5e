//! The arbiters' links: each arbiter listens for its peers' heartbeats and keeps one outgoing
//! connection to each peer, both pinned mutual TLS 1.3 with the node identities (`node-identity`).
//! A connection whose certificate is not pinned never completes its handshake; a connection is only
//! ever attributed to the node whose pinned certificate it presented.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use node_identity::{NodeIdentity, PeerPins};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::heartbeat::{self, Heartbeat};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A heartbeat as received: the pinned peer it came from, and the message.
pub type Received = (String, Heartbeat);

/// Accepts peers' connections on `listener` and forwards their heartbeats to `tx`.
pub async fn serve(
    listener: TcpListener,
    id: Arc<NodeIdentity>,
    pins: Vec<PeerPins>,
    tx: mpsc::Sender<Received>,
) -> Result<(), node_identity::IdentityError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(node_identity::server_config(&id, &pins)?);
    let pins = Arc::new(pins);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let pins = pins.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "heartbeat connection refused: TLS handshake failed (unknown certificate?)");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%addr, "heartbeat connection refused: TLS handshake timed out");
                    return;
                }
            };
            let Some(peer) = node_identity::peer_of(tls.get_ref().1, &pins) else {
                tracing::warn!(%addr, "heartbeat connection refused: no pinned certificate");
                return;
            };
            let mut tls = tls;
            loop {
                match heartbeat::read(&mut tls).await {
                    Ok(hb) => {
                        if tx.send((peer.node.clone(), hb)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(peer = %peer.node, error = %e, "heartbeat connection dropped");
                        return;
                    }
                }
            }
        });
    }
}

/// Keeps a connection to `peer` at `address` and sends every heartbeat published on `rx`;
/// reconnects (every `retry`) when the connection fails.
pub async fn send_to(
    id: Arc<NodeIdentity>,
    peer: PeerPins,
    address: SocketAddr,
    mut rx: watch::Receiver<Heartbeat>,
    retry: Duration,
) {
    let config = match node_identity::client_config(&id, &peer) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(peer = %peer.node, error = %e, "cannot build the TLS client configuration");
            return;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = match node_identity::server_name(&peer) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(peer = %peer.node, error = %e, "bad peer name");
            return;
        }
    };
    let mut logged = false;
    loop {
        let conn = async {
            let tcp = TcpStream::connect(address).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name.clone(), tcp).await
        };
        let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                if !logged {
                    tracing::warn!(peer = %peer.node, %address, error = %e, "cannot reach the peer's arbiter");
                    logged = true;
                }
                tokio::time::sleep(retry).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        tracing::info!(peer = %peer.node, %address, "heartbeat link up");
        logged = false;
        loop {
            let hb = rx.borrow_and_update().clone();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, heartbeat::write(&mut tls, &hb)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer.node, error = %e, "heartbeat link down");
                    break;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer.node, "heartbeat link stalled");
                    break;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
