//! Receiving what grows with history in pages (the sending side is `standby_log.rs`): the standby's
//! `StandbyState` after a handshake, and for restore the standby's log (a head repeated with each page
//! of leaves) and the listing of its sealed copies.

use std::time::Duration;

use super::primary::StandbyView;
use super::{from_json, AgentError, Conn, HANDSHAKE_TIMEOUT};
use crate::merkle::SignedTreeHead;
use crate::proto::Message;

/// How long one page may take to arrive (a page is at most about a megabyte).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most entries gathered from the pages of one answer (`StandbyState` holdings, listing entries): a
/// peer that never stops sending pages is refused rather than filling memory.
pub const MAX_GATHERED_ENTRIES: usize = 5_000_000;

fn check_gathered(len: usize, max: usize, what: &str) -> Result<(), AgentError> {
    if len > max {
        return Err(AgentError::Peer(format!("{what}: more than {max} entries")));
    }
    Ok(())
}

/// Gathers every `StandbyState` page.
pub(super) async fn receive_standby_state<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
) -> Result<StandbyView, AgentError> {
    gather_standby_state(conn, MAX_GATHERED_ENTRIES).await
}

async fn gather_standby_state<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
    max_entries: usize,
) -> Result<StandbyView, AgentError> {
    let mut view: Option<StandbyView> = None;
    let mut first_head: Option<serde_json::Value> = None;
    loop {
        let timeout = if view.is_none() {
            HANDSHAKE_TIMEOUT
        } else {
            PAGE_TIMEOUT
        };
        match conn.recv(timeout).await? {
            Some(Message::StandbyState {
                holdings,
                head,
                sealed_below_leaf,
                more,
            }) => {
                match &mut view {
                    None => {
                        let parsed = match &head {
                            Some(v) => Some(from_json::<SignedTreeHead>(v, "standby head")?),
                            None => None,
                        };
                        first_head = head;
                        view = Some(StandbyView {
                            holdings,
                            head: parsed,
                            sealed_below_leaf,
                        });
                    }
                    Some(v) => {
                        if head != first_head || sealed_below_leaf != v.sealed_below_leaf {
                            return Err(AgentError::Peer(
                                "StandbyState pages disagree on the head or the summary".into(),
                            ));
                        }
                        v.holdings.extend(holdings);
                        check_gathered(v.holdings.len(), max_entries, "StandbyState holdings")?;
                    }
                }
                if !more {
                    return view.ok_or_else(|| AgentError::Peer("no StandbyState".into()));
                }
            }
            other => {
                return Err(AgentError::Peer(format!(
                    "expected StandbyState, got {other:?}"
                )))
            }
        }
    }
}

/// For restore: the head and every leaf of the standby's copy of this node's log, gathered from the
/// `TreeHead` pages that answer a `FetchList` (each repeats the head; `first_leaf` must follow on).
/// `Ok(None)` when the standby holds no head of this log.
pub(super) async fn receive_log<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
) -> Result<Option<(SignedTreeHead, Vec<serde_json::Value>)>, AgentError> {
    let mut first: Option<(serde_json::Value, SignedTreeHead)> = None;
    let mut leaves: Vec<serde_json::Value> = Vec::new();
    loop {
        match conn.recv(PAGE_TIMEOUT).await? {
            Some(Message::TreeHead {
                head,
                first_leaf,
                leaves: page,
                ..
            }) => {
                if head.is_null() {
                    return Ok(None);
                }
                if first.as_ref().is_some_and(|(json, _)| *json != head) {
                    return Err(AgentError::Peer(
                        "the log's pages name different heads".into(),
                    ));
                }
                if first_leaf != leaves.len() as u64 {
                    return Err(AgentError::Peer(format!(
                        "log page starts at leaf {first_leaf}, expected {}",
                        leaves.len()
                    )));
                }
                if first.is_none() {
                    let parsed: SignedTreeHead = from_json(&head, "tree head")?;
                    first = Some((head, parsed));
                }
                let size = first.as_ref().map_or(0, |(_, h)| h.head.tree_size);
                if page.is_empty() && (leaves.len() as u64) < size {
                    return Err(AgentError::Peer("empty log page before the end".into()));
                }
                leaves.extend(page);
                if leaves.len() as u64 > size {
                    return Err(AgentError::Peer(format!(
                        "more leaves than the head's {size}"
                    )));
                }
                if leaves.len() as u64 == size {
                    return Ok(first.map(|(_, h)| (h, leaves)));
                }
            }
            Some(Message::Pong { .. }) => {}
            other => return Err(AgentError::Peer(format!("expected the log, got {other:?}"))),
        }
    }
}

/// For restore: every `HeadChain` page (the heads the standby kept of this node's log, in order, each
/// `{"head", "countersignature"}`).
pub(super) async fn receive_head_chain<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
) -> Result<Vec<serde_json::Value>, AgentError> {
    let mut heads = Vec::new();
    loop {
        match conn.recv(PAGE_TIMEOUT).await? {
            Some(Message::HeadChain { heads: page, more }) => {
                heads.extend(page);
                check_gathered(heads.len(), MAX_GATHERED_ENTRIES, "head chain")?;
                if !more {
                    return Ok(heads);
                }
            }
            Some(Message::Pong { .. }) => {}
            other => {
                return Err(AgentError::Peer(format!(
                    "expected the chain of heads, got {other:?}"
                )))
            }
        }
    }
}

/// For restore: every `FetchListReply` page of the listing.
pub(super) async fn receive_listing<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
) -> Result<Vec<serde_json::Value>, AgentError> {
    gather_listing(conn, MAX_GATHERED_ENTRIES).await
}

async fn gather_listing<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
    max_entries: usize,
) -> Result<Vec<serde_json::Value>, AgentError> {
    let mut segments = Vec::new();
    loop {
        match conn.recv(PAGE_TIMEOUT).await? {
            Some(Message::FetchListReply {
                segments: page,
                more,
            }) => {
                segments.extend(page);
                check_gathered(segments.len(), max_entries, "segment listing")?;
                if !more {
                    return Ok(segments);
                }
            }
            Some(Message::Pong { .. }) => {}
            other => {
                return Err(AgentError::Peer(format!(
                    "expected the segment list, got {other:?}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Holding, SegmentKey};

    fn holdings(n: usize) -> Vec<Holding> {
        (0..n)
            .map(|i| Holding {
                key: SegmentKey {
                    origin_node: "node-a".into(),
                    path: format!("media/c/main/2026-01-01/{i:09}_node-a.mp4"),
                },
                bytes_held: 1,
                sealed_sha256: None,
            })
            .collect()
    }

    /// Pages are gathered until `more` is false; a peer whose pages never end is refused at the cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_are_gathered_up_to_a_cap() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::new(ours);
        let mut peer = Conn::new(theirs);
        let sender = tokio::spawn(async move {
            for (i, more) in [(0, true), (1, true), (2, false)] {
                let page = Message::StandbyState {
                    holdings: holdings(10 + i),
                    head: None,
                    sealed_below_leaf: 4,
                    more,
                };
                peer.send(&page).await.expect("send");
            }
            for _ in 0..100 {
                let page = Message::FetchListReply {
                    segments: vec![serde_json::json!({"path": "p"}); 10],
                    more: true,
                };
                if peer.send(&page).await.is_err() {
                    break;
                }
            }
        });
        let view = gather_standby_state(&mut conn, 1000)
            .await
            .expect("gathered");
        assert_eq!(view.holdings.len(), 33);
        assert_eq!(view.sealed_below_leaf, 4);
        let err = gather_listing(&mut conn, 500).await.expect_err("capped");
        assert!(err.to_string().contains("more than 500"), "{err}");
        drop(conn);
        let _ = sender.await;
    }
}
