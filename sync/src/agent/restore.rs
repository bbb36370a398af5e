//! `nvr-sync restore`: rebuild this node's store (all, one camera, or a time range) from the standby.
//!
//! Every file is verified before it is written: the standby's copy must hash to the leaf logged for it,
//! and the leaves must form the tree of a head signed with this node's own key. A damaged local file is
//! moved to quarantine (never deleted) and replaced; a missing one is written and indexed. Works onto a
//! wiped data directory.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use store::Store;

use super::{from_json, history, now_ms, primary, AgentError, Conn, HANDSHAKE_TIMEOUT};
use crate::config::SyncConfig;
use crate::identity::NodeIdentity;
use crate::merkle::{MerkleTree, SegmentLeaf};
use crate::proto::{Message, SegmentKey};

#[derive(Debug, Default, Clone)]
pub struct RestoreFilter {
    pub camera: Option<String>,
    /// `main` or `sub` (with or without `camera`).
    pub stream: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RestoreReport {
    pub log_size: u64,
    pub listed: usize,
    pub already_good: usize,
    pub restored_damaged: Vec<String>,
    pub restored_missing: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub bytes_fetched: u64,
}

pub async fn run(
    cfg: &SyncConfig,
    id: &NodeIdentity,
    filter: &RestoreFilter,
) -> Result<RestoreReport, AgentError> {
    let store = Arc::new(Store::open(
        &cfg.data_dir,
        &cfg.node_name,
        Arc::new(base::clock::SystemClock),
    )?);
    let standby = cfg
        .peers
        .first()
        .ok_or_else(|| AgentError::Peer("no standby configured".into()))?;
    let tls = primary::connect(id, standby).await?;
    let mut conn = Conn::new(tls);
    primary::handshake(&mut conn, &cfg.node_name, standby).await?;
    conn.send(&Message::FetchList {
        origin_node: Some(cfg.node_name.clone()),
        camera: filter.camera.clone(),
        start_ms: filter.from_ms,
        end_ms: filter.to_ms,
    })
    .await?;

    // The signed log, verified with this node's own key.
    let Some((head, leaves)) = history::receive_log(&mut conn).await? else {
        return Err(AgentError::Peer(format!(
            "the standby holds no log of {}",
            cfg.node_name
        )));
    };
    if head.head.log_node != cfg.node_name || !head.verify_signature(&id.signing_public_key()) {
        return Err(AgentError::Peer(
            "the standby's log head is not signed by this node's key".into(),
        ));
    }
    let leaves: Vec<SegmentLeaf> = leaves
        .iter()
        .map(|l| from_json(l, "leaf"))
        .collect::<Result<_, _>>()?;
    let tree = MerkleTree::from_leaf_hashes(leaves.iter().map(|l| l.leaf_hash()).collect());
    if tree.len() != head.head.tree_size || tree.root() != head.head.root_hash {
        return Err(AgentError::Peer(
            "the standby's leaves do not match the signed head".into(),
        ));
    }
    let logged: HashMap<&str, &SegmentLeaf> = leaves.iter().map(|l| (l.path.as_str(), l)).collect();
    // The standby filters by camera and time; the stream is filtered here, from the path.
    let wanted_stream = |entry: &serde_json::Value| {
        filter.stream.as_deref().is_none_or(|want| {
            entry["path"]
                .as_str()
                .and_then(|p| store::parse_media_path(std::path::Path::new(p)))
                .is_some_and(|info| info.stream == want)
        })
    };
    let segments: Vec<serde_json::Value> = history::receive_listing(&mut conn)
        .await?
        .into_iter()
        .filter(wanted_stream)
        .collect();
    let mut report = RestoreReport {
        log_size: tree.len(),
        listed: segments.len(),
        ..RestoreReport::default()
    };
    for entry in segments {
        let Some(path) = entry["path"].as_str().map(str::to_owned) else {
            continue;
        };
        let Some(leaf) = logged.get(path.as_str()) else {
            report.failed.push((path, "not in the signed log".into()));
            continue;
        };
        let sha = base::hex::encode(&leaf.sha256);
        let local = store.sealed_segment_by_path(&path)?;
        let local_ok = local.as_ref().is_some_and(|_| {
            store::sha256_file(&store.absolute_path(&path))
                .ok()
                .as_deref()
                == Some(sha.as_str())
        });
        if local_ok {
            report.already_good += 1;
            continue;
        }
        let key = SegmentKey {
            origin_node: cfg.node_name.clone(),
            path: path.clone(),
        };
        conn.send(&Message::FetchRequest {
            key,
            offset: 0,
            len: leaf.size_bytes,
        })
        .await?;
        let mut buf = Vec::with_capacity(leaf.size_bytes as usize);
        let fetched = loop {
            match conn.recv(HANDSHAKE_TIMEOUT * 6).await? {
                Some(Message::FetchData {
                    offset, data, last, ..
                }) => {
                    if offset as usize != buf.len() {
                        break Err("pieces out of order".to_owned());
                    }
                    buf.extend_from_slice(&data);
                    if last {
                        break Ok(());
                    }
                }
                Some(Message::Refused { reason, .. }) => break Err(reason),
                Some(Message::Pong { .. }) => {}
                other => return Err(AgentError::Peer(format!("expected data, got {other:?}"))),
            }
        };
        if let Err(reason) = fetched {
            report.failed.push((path, reason));
            continue;
        }
        report.bytes_fetched += buf.len() as u64;
        let result = tokio::task::block_in_place(|| match &local {
            Some(_) => store.restore_sealed(&path, &buf),
            None => store.restore_missing(&path, &buf, &sha),
        });
        match (result, local.is_some()) {
            (Ok(()), true) => report.restored_damaged.push(path),
            (Ok(()), false) => report.restored_missing.push(path),
            (Err(e), _) => report.failed.push((path, e.to_string())),
        }
    }
    store.log_event(
        None,
        "restore",
        &format!(
            "restore from {} at {}: {} damaged and {} missing segments restored, {} failed",
            standby.pins.node,
            now_ms(),
            report.restored_damaged.len(),
            report.restored_missing.len(),
            report.failed.len()
        ),
    );
    Ok(report)
}
