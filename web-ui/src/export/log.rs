//! The node's signed log as an export needs it, read from the sync agent's `<data_dir>/sync.db`
//! (tables `leaves` and `heads`, written by `nvr_sync::syncdb`) over a read-only SQLite connection:
//! the latest signed head, the leaves it covers, and for each source segment its leaf, index and
//! inclusion proof. The tree is rebuilt from the leaves and must give the head's root.

use std::collections::HashMap;
use std::path::Path;

use nvr_evidence::merkle::{MerkleTree, SegmentLeaf, SignedTreeHead};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// Why the log cannot vouch for an export.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no signed log on this node ({0}): is its sync agent running?")]
    NoLog(String),
    #[error("sync.db: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the signed log is inconsistent: {0}")]
    Inconsistent(String),
}

/// The latest signed head of `node`'s log and its tree.
pub struct SignedLog {
    pub head: SignedTreeHead,
    pub tree: MerkleTree,
    /// Segment path → (leaf index, leaf), for the leaves the head covers.
    pub leaves: HashMap<String, (u64, SegmentLeaf)>,
}

impl SignedLog {
    pub fn load(data_dir: &Path, node: &str) -> Result<SignedLog, LogError> {
        let path = data_dir.join(store::layout::SYNC_DB_FILE);
        if !path.exists() {
            return Err(LogError::NoLog(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let head_json: Option<String> = conn
            .query_row(
                "SELECT head_json FROM heads WHERE log_node = ?1 ORDER BY tree_size DESC, id DESC
                 LIMIT 1",
                params![node],
                |r| r.get(0),
            )
            .optional()?;
        let head_json =
            head_json.ok_or_else(|| LogError::NoLog(format!("no signed head of {node}")))?;
        let head: SignedTreeHead = serde_json::from_str(&head_json)
            .map_err(|e| LogError::Inconsistent(format!("head: {e}")))?;
        let size = i64::try_from(head.head.tree_size).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare(
            "SELECT leaf_index, leaf, leaf_hash FROM leaves WHERE log_node = ?1 AND leaf_index < ?2
             ORDER BY leaf_index",
        )?;
        let rows = stmt.query_map(params![node, size], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut hashes = Vec::new();
        let mut leaves = HashMap::new();
        for row in rows {
            let (index, bytes, hash) = row?;
            if index != hashes.len() as i64 {
                return Err(LogError::Inconsistent(format!("leaf {index} out of order")));
            }
            let hash = <[u8; 32]>::try_from(hash.as_slice())
                .map_err(|_| LogError::Inconsistent(format!("leaf {index}: hash length")))?;
            let leaf = SegmentLeaf::decode(&bytes)
                .map_err(|e| LogError::Inconsistent(format!("leaf {index}: {e}")))?;
            if leaf.leaf_hash() != hash {
                return Err(LogError::Inconsistent(format!(
                    "leaf {index}: stored hash is not its leaf's"
                )));
            }
            hashes.push(hash);
            leaves.insert(leaf.path.clone(), (index as u64, leaf));
        }
        let tree = MerkleTree::from_leaf_hashes(hashes);
        if tree.len() != head.head.tree_size || tree.root() != head.head.root_hash {
            return Err(LogError::Inconsistent(format!(
                "{} leaves do not give the root of the signed head of size {}",
                tree.len(),
                head.head.tree_size
            )));
        }
        Ok(SignedLog { head, tree, leaves })
    }
}
