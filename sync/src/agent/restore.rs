//! `nvr-sync restore`: rebuild this node's store (all, one camera, or a time range) from the standby.
//!
//! Every file is verified before it is written: the standby's copy must hash to the leaf logged for it,
//! and the leaves must form the tree of a head signed with this node's own key. A damaged local file is
//! moved to quarantine (never deleted) and replaced; a missing one is written and indexed. Works onto a
//! wiped data directory.
//!
//! The verified log itself is imported into this node's `sync.db` (leaves and the chain of heads the
//! standby kept, each signed by this node and chaining to the one before; one transaction)
//! when the local log is a prefix of it, so the heads signed after a restore onto a wiped node chain to
//! the standby's and mirroring resumes. The report names logged segments the standby did not return
//! (restore is then incomplete and exits non-zero), those its own retention deleted, and sealed copies
//! no head covers yet (sealed just before a stop: restored by their seal hash, marked unverified).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use store::Store;

use super::{from_json, history, now_ms, primary, AgentError, Conn, HANDSHAKE_TIMEOUT};
use crate::config::SyncConfig;
use crate::identity::NodeIdentity;
use crate::merkle::{MerkleTree, SegmentLeaf, SignedTreeHead};
use crate::proto::{Message, SegmentKey};
use crate::syncdb::{NewHead, NewLeaf, SyncDb};

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
    /// Leaves of the standby's verified log added to this node's `sync.db` (a wiped or older log), so
    /// the heads this node signs next chain to the standby's and mirroring resumes.
    pub leaves_imported: u64,
    /// Heads of the standby's verified chain added to this node's `sync.db` (signed by this node,
    /// each chaining to the one before, the last the head the leaves verify against).
    pub heads_imported: u64,
    pub listed: usize,
    pub already_good: usize,
    pub restored_damaged: Vec<String>,
    pub restored_missing: Vec<String>,
    /// Sealed copies on the standby that no accepted head covers yet (sealed just before a stop):
    /// restored by the hash this node announced when it sealed them, not verified against the log.
    pub unverified: Vec<String>,
    /// Logged segments (matching the filter) that the standby's own retention deleted.
    pub deleted_on_standby: Vec<String>,
    /// Logged segments (matching the filter) that the standby neither returned nor deleted: restore
    /// is incomplete.
    pub not_returned: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub bytes_fetched: u64,
}

impl RestoreReport {
    /// Everything asked for was restored or already good (`nvr-sync restore` exits 0).
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.not_returned.is_empty()
    }
}

impl RestoreFilter {
    fn matches_leaf(&self, leaf: &SegmentLeaf) -> bool {
        self.camera.as_deref().is_none_or(|c| leaf.camera == c)
            && self.stream.as_deref().is_none_or(|s| leaf.stream == s)
            && self.from_ms.is_none_or(|from| leaf.end_ms > from)
            && self.to_ms.is_none_or(|to| leaf.start_ms < to)
    }
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
    let db = SyncDb::open(&cfg.data_dir)?;
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

    let chain = history::receive_head_chain(&mut conn).await?;
    let (head, leaves) = receive_verified_log(&mut conn, cfg, id).await?;
    let chain = verify_chain(&chain, &head, cfg, id)?;
    let (leaves_imported, heads_imported) =
        tokio::task::block_in_place(|| import_log(&db, &cfg.node_name, &chain, &leaves))?;
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
    let entries: Vec<serde_json::Value> = history::receive_listing(&mut conn)
        .await?
        .into_iter()
        .filter(wanted_stream)
        .collect();
    let mut report = RestoreReport {
        log_size: head.head.tree_size,
        leaves_imported,
        heads_imported,
        ..RestoreReport::default()
    };
    let mut returned: HashSet<String> = HashSet::new();
    for entry in entries {
        let Some(path) = entry["path"].as_str().map(str::to_owned) else {
            continue;
        };
        returned.insert(path.clone());
        if entry["deleted"].as_bool() == Some(true) {
            if logged.contains_key(path.as_str()) {
                report.deleted_on_standby.push(path);
            }
            continue;
        }
        report.listed += 1;
        let (sha, size) = match logged.get(path.as_str()) {
            Some(leaf) => (base::hex::encode(&leaf.sha256), leaf.size_bytes),
            None => {
                // Sealed just before a stop: no accepted head covers it yet.
                let sha = entry["sha256"].as_str().unwrap_or_default().to_owned();
                let size = entry["size_bytes"].as_u64().unwrap_or(0);
                report.unverified.push(path.clone());
                (sha, size)
            }
        };
        restore_segment(&store, &mut conn, cfg, &path, &sha, size, &mut report).await?;
    }
    report.not_returned = leaves
        .iter()
        .filter(|l| filter.matches_leaf(l) && !returned.contains(&l.path))
        .map(|l| l.path.clone())
        .collect();
    store.log_event(
        None,
        "restore",
        &format!(
            "restore from {} at {}: {} damaged and {} missing segments restored ({} unverified), {} failed, {} logged but not returned, {} leaves imported",
            standby.pins.node,
            now_ms(),
            report.restored_damaged.len(),
            report.restored_missing.len(),
            report.unverified.len(),
            report.failed.len(),
            report.not_returned.len(),
            report.leaves_imported,
        ),
    );
    Ok(report)
}

/// The standby's copy of this node's log: a head signed with this node's own key and the leaves that
/// give exactly its root.
async fn receive_verified_log<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
    cfg: &SyncConfig,
    id: &NodeIdentity,
) -> Result<(SignedTreeHead, Vec<SegmentLeaf>), AgentError> {
    let Some((head, leaves)) = history::receive_log(conn).await? else {
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
    Ok((head, leaves))
}

/// A head of the chain with the standby's countersignature (JSON), if it kept one.
type ChainHead = (SignedTreeHead, Option<String>);

/// The standby's chain of heads, checked: every head signed with this node's key for this node's
/// log, each chaining to the one before (`prev_head_hash`), the last the head the leaves verify
/// against.
fn verify_chain(
    entries: &[serde_json::Value],
    last: &SignedTreeHead,
    cfg: &SyncConfig,
    id: &NodeIdentity,
) -> Result<Vec<ChainHead>, AgentError> {
    let key = id.signing_public_key();
    let mut chain: Vec<ChainHead> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let head: SignedTreeHead = from_json(&entry["head"], "head of the chain")?;
        if head.head.log_node != cfg.node_name || !head.verify_signature(&key) {
            return Err(AgentError::Peer(format!(
                "head {i} of the standby's chain is not signed by this node's key"
            )));
        }
        if let Some((prev, _)) = chain.last() {
            if head.head.prev_head_hash != prev.head.head_hash() {
                return Err(AgentError::Peer(format!(
                    "head {i} of the standby's chain does not chain to the one before"
                )));
            }
        }
        let cs = Some(&entry["countersignature"])
            .filter(|v| !v.is_null())
            .map(serde_json::Value::to_string);
        chain.push((head, cs));
    }
    match chain.last() {
        Some((h, _)) if h.head.head_hash() == last.head.head_hash() => Ok(chain),
        _ => Err(AgentError::Peer(
            "the standby's chain of heads does not end at its latest head".into(),
        )),
    }
}

/// Brings this node's `sync.db` up to the verified log: when its own log is a prefix of it (empty
/// after a wipe), the missing leaves and the heads of the chain it lacks are added in one transaction,
/// so the next head this node signs extends and chains to the one the standby holds. A longer local
/// log is left alone; one that contradicts the verified log is an error. Returns (leaves added, heads
/// added).
fn import_log(
    db: &SyncDb,
    node: &str,
    chain: &[ChainHead],
    leaves: &[SegmentLeaf],
) -> Result<(u64, u64), AgentError> {
    let local = db.leaves(node)?;
    let hashes: Vec<[u8; 32]> = leaves.iter().map(SegmentLeaf::leaf_hash).collect();
    if let Some(i) = local
        .iter()
        .zip(&hashes)
        .position(|((_, mine), theirs)| mine != theirs)
    {
        return Err(AgentError::Peer(format!(
            "this node's log in sync.db differs from the standby's verified log at leaf {i}; move sync.db aside to import the verified log"
        )));
    }
    let have = local.len();
    if have > leaves.len() {
        return Ok((0, 0));
    }
    let mut missing: Vec<(String, [u8; 32], u64, Option<&str>)> = Vec::new();
    for (head, cs) in chain {
        let hash = head.head.head_hash();
        if db.head_id(node, &hash)?.is_none() {
            let json = serde_json::to_string(head).map_err(|e| AgentError::Peer(e.to_string()))?;
            missing.push((json, hash, head.head.tree_size, cs.as_deref()));
        }
    }
    if have == leaves.len() && missing.is_empty() {
        return Ok((0, 0));
    }
    let encoded: Vec<Vec<u8>> = leaves[have..].iter().map(SegmentLeaf::encode).collect();
    let new_leaves: Vec<NewLeaf<'_>> = encoded
        .iter()
        .zip(&hashes[have..])
        .zip(&leaves[have..])
        .map(|((leaf, hash), l)| NewLeaf {
            leaf,
            leaf_hash: hash,
            segment_path: &l.path,
        })
        .collect();
    let received_ms = now_ms();
    let heads: Vec<NewHead<'_>> = missing
        .iter()
        .map(|(json, hash, size, cs)| NewHead {
            tree_size: *size,
            head_hash: hash,
            head_json: json,
            countersignature_json: *cs,
            received_ms,
        })
        .collect();
    db.accept_heads(node, have as u64, &new_leaves, &heads)?;
    Ok(((leaves.len() - have) as u64, heads.len() as u64))
}

/// Fetches one segment from the standby unless the local copy already hashes to `sha`, and puts it in
/// place; the outcome goes into `report`.
async fn restore_segment<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    store: &Store,
    conn: &mut Conn<S>,
    cfg: &SyncConfig,
    path: &str,
    sha: &str,
    size: u64,
    report: &mut RestoreReport,
) -> Result<(), AgentError> {
    let path = path.to_owned();
    let local = store.sealed_segment_by_path(&path)?;
    let local_ok = local.as_ref().is_some_and(|_| {
        store::sha256_file(&store.absolute_path(&path))
            .ok()
            .as_deref()
            == Some(sha)
    });
    if local_ok {
        report.already_good += 1;
        return Ok(());
    }
    let key = SegmentKey {
        origin_node: cfg.node_name.clone(),
        path: path.clone(),
    };
    conn.send(&Message::FetchRequest {
        key,
        offset: 0,
        len: size,
    })
    .await?;
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 30));
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
        return Ok(());
    }
    report.bytes_fetched += buf.len() as u64;
    let result = tokio::task::block_in_place(|| match &local {
        Some(_) => store.restore_sealed(&path, &buf),
        None => store.restore_missing(&path, &buf, sha),
    });
    match (result, local.is_some()) {
        (Ok(()), true) => report.restored_damaged.push(path),
        (Ok(()), false) => report.restored_missing.push(path),
        (Err(e), _) => report.failed.push((path, e.to_string())),
    }
    Ok(())
}
