//! The node's signed log as an export needs it, read from the sync agent's `<data_dir>/sync.db`
//! (tables `leaves` and `heads`, written by `nvr_sync::syncdb`) over a read-only SQLite connection.
//! Before an export's first byte: the latest signed head and each source segment's leaf, by indexed
//! lookups ([`LogView::open`], [`LogView::leaf`]); after its last byte: the leaves the head covers,
//! the tree rebuilt (it must give the head's root) and the inclusion proofs ([`LogView::proofs`]),
//! whose cost grows with the log's length.

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

/// `node`'s log at its latest signed head.
pub struct LogView {
    conn: Connection,
    node: String,
    pub head: SignedTreeHead,
}

impl LogView {
    pub fn open(data_dir: &Path, node: &str) -> Result<LogView, LogError> {
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
        Ok(LogView {
            conn,
            node: node.to_owned(),
            head,
        })
    }

    /// The first leaf logging `path` under the head, with its index; `None` if the head covers none.
    pub fn leaf(&self, path: &str) -> Result<Option<(u64, SegmentLeaf)>, LogError> {
        let size = i64::try_from(self.head.head.tree_size).unwrap_or(i64::MAX);
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT leaf_index, leaf FROM leaves WHERE log_node = ?1 AND segment_path = ?2
                 AND leaf_index < ?3 ORDER BY leaf_index LIMIT 1",
                params![self.node, path, size],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((index, bytes)) = row else {
            return Ok(None);
        };
        let leaf = SegmentLeaf::decode(&bytes)
            .map_err(|e| LogError::Inconsistent(format!("leaf {index}: {e}")))?;
        if leaf.path != path {
            return Err(LogError::Inconsistent(format!(
                "leaf {index} is indexed under {path} but logs {}",
                leaf.path
            )));
        }
        Ok(Some((index as u64, leaf)))
    }

    /// The inclusion proofs of `indices` under the head, from the tree of its leaves rebuilt and
    /// checked against its root.
    pub fn proofs(&self, indices: &[u64]) -> Result<Vec<Vec<[u8; 32]>>, LogError> {
        let size = self.head.head.tree_size;
        let mut stmt = self.conn.prepare(
            "SELECT leaf_index, leaf_hash FROM leaves WHERE log_node = ?1 AND leaf_index < ?2
             ORDER BY leaf_index",
        )?;
        let rows = stmt.query_map(
            params![self.node, i64::try_from(size).unwrap_or(i64::MAX)],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        let mut hashes = Vec::new();
        for row in rows {
            let (index, hash) = row?;
            if index != hashes.len() as i64 {
                return Err(LogError::Inconsistent(format!("leaf {index} out of order")));
            }
            hashes.push(
                <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| LogError::Inconsistent(format!("leaf {index}: hash length")))?,
            );
        }
        let tree = MerkleTree::from_leaf_hashes(hashes);
        if tree.len() != size || tree.root() != self.head.head.root_hash {
            return Err(LogError::Inconsistent(format!(
                "{} leaves do not give the root of the signed head of size {size}",
                tree.len()
            )));
        }
        indices
            .iter()
            .map(|&i| {
                tree.inclusion_proof(i, size)
                    .ok_or_else(|| LogError::Inconsistent(format!("no proof for leaf {i}")))
            })
            .collect()
    }
}
