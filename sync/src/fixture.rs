//! Synthetic logged histories for tests and the benchmark: a primary and its standby that already hold
//! `count` sealed, logged and mirrored segments, as months of recording would leave them, written
//! straight into both catalogs, media directories and `sync.db`s (one payload file hard-linked under
//! every path, leaves in one transaction), so a history of 100 000 segments takes seconds to build.
//!
//! The primary's log gets one head signed with its key; the standby holds the same leaves and that head
//! countersigned with its own key, exactly as if it had accepted it.

use std::path::Path;
use std::sync::Arc;

use store::{SegmentInsert, SegmentProgress, SegmentState, Store};

use crate::agent::AgentError;
use crate::identity::NodeIdentity;
use crate::merkle::{Countersignature, MerkleTree, SegmentLeaf, TreeHead};
use crate::syncdb::{NewHead, NewLeaf, SyncDb};

/// What to build.
#[derive(Debug, Clone)]
pub struct History {
    /// Number of sealed, logged segments.
    pub count: u64,
    /// The camera (stream `main`) they belong to; not one the recorder is configured with.
    pub camera: String,
    /// Start of the first segment; each segment lasts `segment_ms`.
    pub first_start_ms: i64,
    pub segment_ms: i64,
    /// The bytes of every segment file (one file, hard-linked).
    pub payload: Vec<u8>,
}

/// Builds `h` into the primary's data directory (`primary_dir`, node `primary.node`) and the
/// standby's (`standby_dir`, node `standby.node`). Both must be empty or new.
pub fn build(
    h: &History,
    primary_dir: &Path,
    primary: &NodeIdentity,
    standby_dir: &Path,
    standby: &NodeIdentity,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(primary_dir).map_err(crate::agent::io_err(format!(
        "create {}",
        primary_dir.display()
    )))?;
    let probe = primary_dir.join("fixture-payload.mp4");
    std::fs::write(&probe, &h.payload)
        .map_err(crate::agent::io_err(format!("write {}", probe.display())))?;
    let sha = store::sha256_file(&probe)?;
    std::fs::remove_file(&probe)
        .map_err(crate::agent::io_err(format!("remove {}", probe.display())))?;
    let sha_bytes = base::hex::decode_32(&sha)
        .ok_or_else(|| AgentError::Peer("payload hash is not 32 bytes".into()))?;
    let leaves: Vec<SegmentLeaf> = (0..h.count)
        .map(|i| {
            let start_ms = h.first_start_ms + i as i64 * h.segment_ms;
            SegmentLeaf {
                origin_node: primary.node.clone(),
                camera: h.camera.clone(),
                stream: "main".into(),
                path: store::layout::segment_relative_path(
                    &h.camera,
                    "main",
                    start_ms,
                    &primary.node,
                ),
                start_ms,
                end_ms: start_ms + h.segment_ms,
                size_bytes: h.payload.len() as u64,
                sha256: sha_bytes,
            }
        })
        .collect();
    for (dir, node) in [(primary_dir, &primary.node), (standby_dir, &standby.node)] {
        write_segments(h, dir, node, &primary.node, &leaves, &sha)?;
    }
    let encoded: Vec<(Vec<u8>, [u8; 32])> =
        leaves.iter().map(|l| (l.encode(), l.leaf_hash())).collect();
    let new_leaves: Vec<NewLeaf<'_>> = encoded
        .iter()
        .zip(&leaves)
        .map(|((leaf, hash), l)| NewLeaf {
            leaf,
            leaf_hash: hash,
            segment_path: &l.path,
        })
        .collect();
    let tree = MerkleTree::from_leaf_hashes(encoded.iter().map(|(_, h)| *h).collect());
    let head = TreeHead {
        log_node: primary.node.clone(),
        tree_size: tree.len(),
        root_hash: tree.root(),
        timestamp_ms: chrono::Utc::now().timestamp_millis() - 60_000,
        prev_head_hash: [0; 32],
    };
    let signed = head.sign(&|m| primary.sign(m));
    let json = serde_json::to_string(&signed).map_err(|e| AgentError::Peer(e.to_string()))?;
    let cs = Countersignature::create(&standby.node, &head, &|m| standby.sign(m));
    let cs_json = serde_json::to_string(&cs).map_err(|e| AgentError::Peer(e.to_string()))?;
    let hash = head.head_hash();
    for (dir, countersignature_json) in [(primary_dir, &cs_json), (standby_dir, &cs_json)] {
        SyncDb::open(dir)?.accept_head(
            &primary.node,
            0,
            &new_leaves,
            &NewHead {
                tree_size: head.tree_size,
                head_hash: &hash,
                head_json: &json,
                countersignature_json: Some(countersignature_json),
                received_ms: head.timestamp_ms,
            },
        )?;
    }
    Ok(())
}

/// Hard links made to one copy of the payload before the next copy.
const LINKS_PER_FILE: usize = 50_000;

/// The payload file hard-linked at every leaf's path under `dir`, and a sealed catalog row for each
/// (`node` = the origin, as on both the primary and a standby).
fn write_segments(
    h: &History,
    dir: &Path,
    store_node: &str,
    origin: &str,
    leaves: &[SegmentLeaf],
    sha: &str,
) -> Result<(), AgentError> {
    let store = Store::open(dir, store_node, Arc::new(base::clock::SystemClock))?;
    let io = |op: &str, p: &Path| {
        let what = format!("{op} {}", p.display());
        move |e| crate::agent::io_err(what)(e)
    };
    let payload = dir.join("fixture-payload.mp4");
    let stream_id = store.ensure_stream(&h.camera, "main")?;
    let catalog = store.catalog();
    for (i, leaf) in leaves.iter().enumerate() {
        // A fresh source file now and then: file systems cap the links per inode (ext4: 65 000).
        if i % LINKS_PER_FILE == 0 {
            let _ = std::fs::remove_file(&payload);
            std::fs::write(&payload, &h.payload).map_err(io("write", &payload))?;
        }
        let target = dir.join(&leaf.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::hard_link(&payload, &target).map_err(io("link", &target))?;
        catalog.put_sealed_segment(
            &SegmentInsert {
                stream_id,
                run_id: None,
                node: origin,
                path: &leaf.path,
                state: SegmentState::Sealed,
                start_ms: leaf.start_ms,
                video_codec: "avc1.640028",
                width: 1280,
                height: 720,
                audio_codec: None,
                created_ms: leaf.start_ms,
            },
            &SegmentProgress {
                end_ms: leaf.end_ms,
                media_duration_ms: h.segment_ms,
                frames: h.segment_ms / 40,
                fragments: h.segment_ms / 1000,
                size_bytes: h.payload.len() as i64,
            },
            sha,
            leaf.end_ms,
            None,
        )?;
    }
    drop(catalog);
    std::fs::remove_file(&payload).map_err(io("remove", &payload))?;
    Ok(())
}
