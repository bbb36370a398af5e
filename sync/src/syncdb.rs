//! The sync agent's own SQLite database, `<data_dir>/sync.db`.
//!
//! Separate from `catalog.db` so the agent's writes never contend with the recorder's. WAL mode,
//! versioned migrations in `PRAGMA user_version` (as in the catalog). It holds:
//!
//! - `leaves`: the Merkle log of a node (on a primary its own; on a standby those of the primaries it
//!   protects). Leaves are opaque bytes encoded by the sync crate, with their 32-byte hash, appended
//!   strictly in index order.
//! - `heads`: every accepted signed tree head (opaque JSON), keyed by (log node, tree size, head hash),
//!   with the peer's countersignature once it arrives.
//! - `alarms`: contradictions and other integrity alarms, for operators and status output.
//! - `held_seals`: on a standby, seals of complete staging copies that no accepted head logs yet (held
//!   unverified, returned so by restore, published once a head logs them).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub use store::layout::SYNC_DB_FILE;
use store::StorageError;

/// Schema migrations; entry `i` upgrades version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE leaves (
    log_node      TEXT NOT NULL,
    leaf_index    INTEGER NOT NULL,
    leaf          BLOB NOT NULL,
    leaf_hash     BLOB NOT NULL,
    segment_path  TEXT NOT NULL,
    PRIMARY KEY (log_node, leaf_index)
);
CREATE INDEX leaves_path ON leaves (log_node, segment_path);
CREATE TABLE heads (
    id                     INTEGER PRIMARY KEY,
    log_node               TEXT NOT NULL,
    tree_size              INTEGER NOT NULL,
    head_hash              BLOB NOT NULL,
    head_json              TEXT NOT NULL,
    countersignature_json  TEXT,
    received_ms            INTEGER NOT NULL,
    UNIQUE (log_node, tree_size, head_hash)
);
CREATE INDEX heads_node_size ON heads (log_node, tree_size);
CREATE TABLE alarms (
    id            INTEGER PRIMARY KEY,
    time_ms       INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    peer          TEXT,
    segment_path  TEXT,
    detail        TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE held_seals (
    origin        TEXT NOT NULL,
    segment_path  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER NOT NULL,
    frames        INTEGER NOT NULL,
    PRIMARY KEY (origin, segment_path)
);
"#,
];

/// A leaf of a Merkle log: its encoded bytes and its hash.
pub type Leaf = (Vec<u8>, [u8; 32]);

/// A leaf to append: its encoding, its hash and the segment path it logs.
#[derive(Debug, Clone, Copy)]
pub struct NewLeaf<'a> {
    pub leaf: &'a [u8],
    pub leaf_hash: &'a [u8; 32],
    pub segment_path: &'a str,
}

/// A head to keep with [`SyncDb::accept_head`].
#[derive(Debug, Clone, Copy)]
pub struct NewHead<'a> {
    pub tree_size: u64,
    pub head_hash: &'a [u8; 32],
    pub head_json: &'a str,
    pub countersignature_json: Option<&'a str>,
    pub received_ms: i64,
}

/// One stored signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredHead {
    pub tree_size: u64,
    pub head_hash: [u8; 32],
    pub head_json: String,
    pub countersignature_json: Option<String>,
    pub received_ms: i64,
}

/// One alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmRow {
    pub id: i64,
    pub time_ms: i64,
    pub kind: String,
    pub peer: Option<String>,
    pub segment_path: Option<String>,
    pub detail: String,
}

/// A seal a standby holds unverified: its copy is complete in staging, no accepted head logs its path
/// yet. What the primary announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSeal {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub frames: i64,
}

/// The sync agent's database. `Send + Sync`; calls are serialized on one connection.
pub struct SyncDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SyncDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncDb").field("path", &self.path).finish()
    }
}

fn to_i64(what: &str, v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::SyncDb(format!("{what} {v} out of range")))
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("hash of {} bytes, expected 32", v.len()).into(),
        )
    })
}

/// The index the next leaf of `log_node`'s log takes: the number of its leaves.
fn next_leaf_index(conn: &Connection, log_node: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM leaves WHERE log_node = ?1",
        params![log_node],
        |r| r.get(0),
    )
}

/// The columns [`alarm_row`] reads.
const SELECT_ALARMS: &str = "SELECT id, time_ms, kind, peer, segment_path, detail FROM alarms";

fn alarm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmRow> {
    Ok(AlarmRow {
        id: r.get(0)?,
        time_ms: r.get(1)?,
        kind: r.get(2)?,
        peer: r.get(3)?,
        segment_path: r.get(4)?,
        detail: r.get(5)?,
    })
}

/// The columns [`stored_head`] reads, then the head's id ([`stored_head_with_id`]).
const SELECT_HEADS: &str =
    "SELECT tree_size, head_hash, head_json, countersignature_json, received_ms, id FROM heads";

fn stored_head_with_id(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, StoredHead)> {
    Ok((r.get(5)?, stored_head(r)?))
}

fn stored_head(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredHead> {
    Ok(StoredHead {
        tree_size: r.get::<_, i64>(0)?.max(0) as u64,
        head_hash: hash32(r.get(1)?)?,
        head_json: r.get(2)?,
        countersignature_json: r.get(3)?,
        received_ms: r.get(4)?,
    })
}

impl SyncDb {
    /// Opens (creating if needed) `<data_dir>/sync.db` and migrates it.
    pub fn open(data_dir: &Path) -> Result<SyncDb, StorageError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StorageError::io("create directory", data_dir, e))?;
        let path = data_dir.join(SYNC_DB_FILE);
        let e = |source| StorageError::Catalog {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        // Heads and alarms must survive a power cut once acknowledged: FULL in WAL mode.
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        store::migrate(&mut conn, MIGRATIONS, &path, "sync.db")?;
        Ok(SyncDb {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn e(&self, source: rusqlite::Error) -> StorageError {
        StorageError::Catalog {
            path: self.path.clone(),
            source,
        }
    }

    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StorageError> {
        store::query_rows(&self.conn(), &self.path, sql, params, f)
    }

    /// Appends leaf `leaf_index` to `log_node`'s log; it must be the next one (== the number of leaves).
    pub fn append_leaf(
        &self,
        log_node: &str,
        leaf_index: u64,
        leaf: &[u8],
        leaf_hash: &[u8; 32],
        segment_path: &str,
    ) -> Result<(), StorageError> {
        let leaf = NewLeaf {
            leaf,
            leaf_hash,
            segment_path,
        };
        self.append_leaves(log_node, leaf_index, &[leaf])
    }

    /// Appends `leaves` to `log_node`'s log as indexes `first_index..`, in one transaction: all of
    /// them or none. `first_index` must be the next index (== the number of leaves held).
    pub fn append_leaves(
        &self,
        log_node: &str,
        first_index: u64,
        leaves: &[NewLeaf<'_>],
    ) -> Result<(), StorageError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.e(e))?;
        self.insert_leaves(&tx, log_node, first_index, leaves)?;
        tx.commit().map_err(|e| self.e(e))
    }

    /// Accepts a head of a primary's log in one transaction: its new leaves (`first_index..`, which
    /// must be the next index), the head, and this node's countersignature. A crash leaves either all
    /// of it or none, so the log never holds leaves that no kept head covers.
    pub fn accept_head(
        &self,
        log_node: &str,
        first_index: u64,
        leaves: &[NewLeaf<'_>],
        head: &NewHead<'_>,
    ) -> Result<(), StorageError> {
        self.accept_heads(log_node, first_index, leaves, std::slice::from_ref(head))
    }

    /// Like [`SyncDb::accept_head`] with several heads, kept in the order given (restore imports a
    /// chain of heads with the leaves of the last one).
    pub fn accept_heads(
        &self,
        log_node: &str,
        first_index: u64,
        leaves: &[NewLeaf<'_>],
        heads: &[NewHead<'_>],
    ) -> Result<(), StorageError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.e(e))?;
        self.insert_leaves(&tx, log_node, first_index, leaves)?;
        for head in heads {
            let size = to_i64("tree size", head.tree_size)?;
            tx.execute(
                "INSERT INTO heads (log_node, tree_size, head_hash, head_json, countersignature_json,
                     received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (log_node, tree_size, head_hash) DO UPDATE
                     SET countersignature_json = excluded.countersignature_json",
                params![
                    log_node,
                    size,
                    &head.head_hash[..],
                    head.head_json,
                    head.countersignature_json,
                    head.received_ms
                ],
            )
            .map_err(|e| self.e(e))?;
        }
        tx.commit().map_err(|e| self.e(e))
    }

    fn insert_leaves(
        &self,
        tx: &rusqlite::Transaction<'_>,
        log_node: &str,
        first_index: u64,
        leaves: &[NewLeaf<'_>],
    ) -> Result<(), StorageError> {
        let first = to_i64("leaf index", first_index)?;
        let next = next_leaf_index(tx, log_node).map_err(|e| self.e(e))?;
        if first != next {
            return Err(StorageError::SyncDb(format!(
                "log {log_node}: leaf {first_index} appended, the next index is {next}"
            )));
        }
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO leaves (log_node, leaf_index, leaf, leaf_hash, segment_path)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(|e| self.e(e))?;
        for (i, leaf) in leaves.iter().enumerate() {
            let index = first
                .checked_add(i as i64)
                .ok_or_else(|| StorageError::SyncDb("leaf index out of range".into()))?;
            stmt.execute(params![
                log_node,
                index,
                leaf.leaf,
                &leaf.leaf_hash[..],
                leaf.segment_path
            ])
            .map_err(|e| self.e(e))?;
        }
        Ok(())
    }

    /// Deletes the leaves of `log_node`'s log from index `from` on; returns how many there were.
    pub fn truncate_leaves(&self, log_node: &str, from: u64) -> Result<u64, StorageError> {
        let from = to_i64("leaf index", from)?;
        let n = self
            .conn()
            .execute(
                "DELETE FROM leaves WHERE log_node = ?1 AND leaf_index >= ?2",
                params![log_node, from],
            )
            .map_err(|e| self.e(e))?;
        Ok(n as u64)
    }

    /// Keeps (or replaces) `origin`'s held seal of `seal.path`.
    pub fn put_held_seal(&self, origin: &str, seal: &HeldSeal) -> Result<(), StorageError> {
        let size = to_i64("size", seal.size_bytes)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO held_seals
                 (origin, segment_path, size_bytes, sha256, start_ms, end_ms, frames)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    origin,
                    seal.path,
                    size,
                    seal.sha256,
                    seal.start_ms,
                    seal.end_ms,
                    seal.frames
                ],
            )
            .map_err(|e| self.e(e))?;
        Ok(())
    }

    /// `origin`'s held seals, by path.
    pub fn held_seals(&self, origin: &str) -> Result<Vec<HeldSeal>, StorageError> {
        self.rows(
            "SELECT segment_path, size_bytes, sha256, start_ms, end_ms, frames
             FROM held_seals WHERE origin = ?1 ORDER BY segment_path",
            params![origin],
            |r| {
                Ok(HeldSeal {
                    path: r.get(0)?,
                    size_bytes: r.get::<_, i64>(1)?.max(0) as u64,
                    sha256: r.get(2)?,
                    start_ms: r.get(3)?,
                    end_ms: r.get(4)?,
                    frames: r.get(5)?,
                })
            },
        )
    }

    /// Forgets `origin`'s held seals of `paths` (published, or their staging copy gone).
    pub fn delete_held_seals(&self, origin: &str, paths: &[String]) -> Result<(), StorageError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.e(e))?;
        for path in paths {
            tx.execute(
                "DELETE FROM held_seals WHERE origin = ?1 AND segment_path = ?2",
                params![origin, path],
            )
            .map_err(|e| self.e(e))?;
        }
        tx.commit().map_err(|e| self.e(e))
    }

    /// Number of leaves of `log_node`'s log.
    pub fn leaf_count(&self, log_node: &str) -> Result<u64, StorageError> {
        let n = next_leaf_index(&self.conn(), log_node).map_err(|e| self.e(e))?;
        Ok(n.max(0) as u64)
    }

    /// The leaves of `log_node`'s log with their hashes, in index order.
    pub fn leaves(&self, log_node: &str) -> Result<Vec<Leaf>, StorageError> {
        self.leaves_range(log_node, 0, u64::MAX)
    }

    /// Leaves `[from, to)` of `log_node`'s log, in index order.
    pub fn leaves_range(
        &self,
        log_node: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Leaf>, StorageError> {
        let (from, to) = (
            i64::try_from(from).unwrap_or(i64::MAX),
            i64::try_from(to).unwrap_or(i64::MAX),
        );
        self.rows(
            "SELECT leaf, leaf_hash FROM leaves WHERE log_node = ?1 AND leaf_index >= ?2
             AND leaf_index < ?3 ORDER BY leaf_index",
            params![log_node, from, to],
            |r| Ok((r.get(0)?, hash32(r.get(1)?)?)),
        )
    }

    /// The segment paths of at most `limit` leaves of `log_node`'s log from index `from`, in index
    /// order.
    pub fn leaf_paths(
        &self,
        log_node: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "SELECT segment_path FROM leaves WHERE log_node = ?1 AND leaf_index >= ?2
             ORDER BY leaf_index LIMIT ?3",
            params![log_node, from, limit],
            |r| r.get(0),
        )
    }

    /// The index of the first leaf of `log_node`'s log for `segment_path`.
    pub fn leaf_index_of(
        &self,
        log_node: &str,
        segment_path: &str,
    ) -> Result<Option<u64>, StorageError> {
        let idx: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MIN(leaf_index) FROM leaves WHERE log_node = ?1 AND segment_path = ?2",
                params![log_node, segment_path],
                |r| r.get(0),
            )
            .map_err(|e| self.e(e))?;
        Ok(idx.map(|i| i.max(0) as u64))
    }

    /// Keeps a signed tree head. Every accepted head is kept; storing the same (node, size, hash)
    /// again keeps the first one and succeeds.
    pub fn store_head(
        &self,
        log_node: &str,
        tree_size: u64,
        head_hash: &[u8; 32],
        head_json: &str,
        received_ms: i64,
    ) -> Result<(), StorageError> {
        let size = to_i64("tree size", tree_size)?;
        self.conn()
            .execute(
                "INSERT INTO heads (log_node, tree_size, head_hash, head_json, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (log_node, tree_size, head_hash) DO NOTHING",
                params![log_node, size, &head_hash[..], head_json, received_ms],
            )
            .map_err(|e| self.e(e))?;
        Ok(())
    }

    /// Records the peer's countersignature of a stored head; an unknown head is an error.
    pub fn set_countersignature(
        &self,
        log_node: &str,
        head_hash: &[u8; 32],
        countersignature_json: &str,
    ) -> Result<(), StorageError> {
        let n = self
            .conn()
            .execute(
                "UPDATE heads SET countersignature_json = ?3 WHERE log_node = ?1 AND head_hash = ?2",
                params![log_node, &head_hash[..], countersignature_json],
            )
            .map_err(|e| self.e(e))?;
        if n == 0 {
            return Err(StorageError::SyncDb(format!(
                "log {log_node}: no stored head {}",
                base::hex::encode(head_hash)
            )));
        }
        Ok(())
    }

    /// The JSON of the latest head of `log_node`: largest tree size, then the last received.
    pub fn latest_head(&self, log_node: &str) -> Result<Option<String>, StorageError> {
        self.conn()
            .query_row(
                "SELECT head_json FROM heads WHERE log_node = ?1 ORDER BY tree_size DESC, id DESC
                 LIMIT 1",
                params![log_node],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.e(e))
    }

    /// The id (signing or receiving order) of `log_node`'s stored head with `head_hash`, if any.
    pub fn head_id(
        &self,
        log_node: &str,
        head_hash: &[u8; 32],
    ) -> Result<Option<i64>, StorageError> {
        self.conn()
            .query_row(
                "SELECT MIN(id) FROM heads WHERE log_node = ?1 AND head_hash = ?2",
                params![log_node, &head_hash[..]],
                |r| r.get(0),
            )
            .map_err(|e| self.e(e))
    }

    /// The first head of `log_node` stored after the one with id `after_id`, with its id.
    pub fn head_after(
        &self,
        log_node: &str,
        after_id: i64,
    ) -> Result<Option<(i64, StoredHead)>, StorageError> {
        Ok(self.heads_after(log_node, after_id, 1)?.pop())
    }

    /// At most `limit` heads of `log_node` stored after the one with id `after_id`, in id order, with
    /// their ids.
    pub fn heads_after(
        &self,
        log_node: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredHead)>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            &format!("{SELECT_HEADS} WHERE log_node = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
            params![log_node, after_id, limit],
            stored_head_with_id,
        )
    }

    /// The head of `log_node` stored last, with its id.
    pub fn last_head(&self, log_node: &str) -> Result<Option<(i64, StoredHead)>, StorageError> {
        let last = self.rows(
            &format!("{SELECT_HEADS} WHERE log_node = ?1 ORDER BY id DESC LIMIT 1"),
            params![log_node],
            stored_head_with_id,
        )?;
        Ok(last.into_iter().next())
    }

    /// The number of stored heads of `log_node`.
    pub fn head_count(&self, log_node: &str) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM heads WHERE log_node = ?1",
                params![log_node],
                |r| r.get(0),
            )
            .map_err(|e| self.e(e))?;
        Ok(n.max(0) as u64)
    }

    /// The stored head of `log_node` with `head_hash`, if any.
    pub fn head_by_hash(
        &self,
        log_node: &str,
        head_hash: &[u8; 32],
    ) -> Result<Option<StoredHead>, StorageError> {
        let found = self.rows(
            &format!(
                "{SELECT_HEADS} WHERE log_node = ?1 AND head_hash = ?2 ORDER BY id DESC LIMIT 1"
            ),
            params![log_node, &head_hash[..]],
            stored_head,
        )?;
        Ok(found.into_iter().next())
    }

    /// Every stored head of `log_node`, by tree size then received order.
    pub fn heads(&self, log_node: &str) -> Result<Vec<StoredHead>, StorageError> {
        self.rows(
            &format!("{SELECT_HEADS} WHERE log_node = ?1 ORDER BY tree_size, id"),
            params![log_node],
            stored_head,
        )
    }

    /// Records an alarm and returns its id. (The caller also writes it to the log.)
    pub fn raise_alarm(
        &self,
        time_ms: i64,
        kind: &str,
        peer: Option<&str>,
        segment_path: Option<&str>,
        detail: &str,
    ) -> Result<i64, StorageError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO alarms (time_ms, kind, peer, segment_path, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![time_ms, kind, peer, segment_path, detail],
        )
        .map_err(|e| self.e(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// The number of alarms.
    pub fn alarm_count(&self) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM alarms", [], |r| r.get(0))
            .map_err(|e| self.e(e))?;
        Ok(n.max(0) as u64)
    }

    /// The last `limit` alarms, newest first.
    pub fn recent_alarms(&self, limit: usize) -> Result<Vec<AlarmRow>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            &format!("{SELECT_ALARMS} ORDER BY id DESC LIMIT ?1"),
            params![limit],
            alarm_row,
        )
    }

    /// Alarms with id greater than `since_id`, oldest first.
    pub fn alarms(&self, since_id: i64) -> Result<Vec<AlarmRow>, StorageError> {
        self.rows(
            &format!("{SELECT_ALARMS} WHERE id > ?1 ORDER BY id"),
            params![since_id],
            alarm_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "nvr-a";

    #[test]
    fn syncdb_leaves_heads_and_alarms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = SyncDb::open(dir.path()).expect("open");
        let h = |i: u8| [i; 32];
        for i in 0..3u8 {
            db.append_leaf(PRIMARY, u64::from(i), &[i, i], &h(i), &format!("seg{i}"))
                .expect("append");
        }
        db.append_leaf("nvr-c", 0, b"c0", &h(9), "seg0")
            .expect("other log");
        assert!(
            db.append_leaf(PRIMARY, 5, b"x", &h(5), "seg5").is_err(),
            "gap"
        );
        assert!(
            db.append_leaf(PRIMARY, 1, b"x", &h(5), "seg5").is_err(),
            "rewrite"
        );
        assert_eq!(
            db.leaves(PRIMARY).expect("leaves"),
            [(vec![0, 0], h(0)), (vec![1, 1], h(1)), (vec![2, 2], h(2))]
        );
        assert_eq!(db.leaf_count(PRIMARY).expect("count"), 3);
        assert_eq!(db.leaf_index_of(PRIMARY, "seg2").expect("index"), Some(2));
        assert_eq!(db.leaf_index_of(PRIMARY, "nope").expect("index"), None);
        assert_eq!(db.leaf_index_of("nvr-c", "seg0").expect("index"), Some(0));

        assert_eq!(db.latest_head(PRIMARY).expect("latest"), None);
        db.store_head(PRIMARY, 2, &h(20), "{\"size\":2}", 100)
            .expect("head 2");
        db.store_head(PRIMARY, 3, &h(30), "{\"size\":3}", 200)
            .expect("head 3");
        db.store_head(PRIMARY, 3, &h(31), "{\"size\":3,\"b\":1}", 300)
            .expect("head 3b");
        db.store_head(PRIMARY, 1, &h(10), "{\"size\":1}", 400)
            .expect("late head 1");
        db.store_head(PRIMARY, 2, &h(20), "{\"dup\":1}", 500)
            .expect("duplicate kept once");
        db.set_countersignature(PRIMARY, &h(30), "{\"cs\":3}")
            .expect("countersign");
        assert!(db.set_countersignature(PRIMARY, &h(99), "{}").is_err());
        assert_eq!(
            db.latest_head(PRIMARY).expect("latest").as_deref(),
            Some("{\"size\":3,\"b\":1}")
        );
        let heads = db.heads(PRIMARY).expect("heads");
        type HeadSummary<'a> = (u64, [u8; 32], &'a str, Option<&'a str>, i64);
        let summary: Vec<HeadSummary<'_>> = heads
            .iter()
            .map(|x| {
                (
                    x.tree_size,
                    x.head_hash,
                    x.head_json.as_str(),
                    x.countersignature_json.as_deref(),
                    x.received_ms,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, h(10), "{\"size\":1}", None, 400),
                (2, h(20), "{\"size\":2}", None, 100),
                (3, h(30), "{\"size\":3}", Some("{\"cs\":3}"), 200),
                (3, h(31), "{\"size\":3,\"b\":1}", None, 300),
            ]
        );
        assert_eq!(db.heads("nvr-c").expect("heads"), []);

        let a1 = db
            .raise_alarm(
                1000,
                "contradiction",
                Some(PRIMARY),
                Some("seg1"),
                "bytes differ",
            )
            .expect("alarm");
        let a2 = db
            .raise_alarm(2000, "head_fork", None, None, "two heads of size 3")
            .expect("alarm");
        assert!(a2 > a1);
        let all = db.alarms(0).expect("alarms");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, "contradiction");
        assert_eq!(all[0].peer.as_deref(), Some(PRIMARY));
        assert_eq!(all[0].segment_path.as_deref(), Some("seg1"));
        assert_eq!(all[1].time_ms, 2000);
        assert_eq!(db.alarms(a1).expect("since").len(), 1);
        assert_eq!(db.alarm_count().expect("count"), 2);
        let recent = db.recent_alarms(1).expect("recent");
        assert_eq!((recent.len(), recent[0].id), (1, a2));

        // Everything survives a reopen; sync.db is separate from the catalog.
        drop(db);
        let db = SyncDb::open(dir.path()).expect("reopen");
        assert_eq!(db.leaves(PRIMARY).expect("leaves").len(), 3);
        assert_eq!(db.heads(PRIMARY).expect("heads").len(), 4);
        assert_eq!(db.alarms(0).expect("alarms").len(), 2);
        assert!(dir.path().join("sync.db").exists());
        assert!(!dir.path().join("catalog.db").exists());
    }

    #[test]
    fn syncdb_head_acceptance_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = SyncDb::open(dir.path()).expect("open");
        let h = |i: u8| [i; 32];
        let hashes: Vec<[u8; 32]> = (0..4).map(h).collect();
        let leaf = |i: u8| NewLeaf {
            leaf: &[1, 2, 3],
            leaf_hash: &hashes[usize::from(i)],
            segment_path: ["p0", "p1", "p2", "p3"][usize::from(i)],
        };
        db.append_leaves(PRIMARY, 0, &[leaf(0), leaf(1)])
            .expect("batch");
        assert!(db.append_leaves(PRIMARY, 5, &[leaf(2)]).is_err(), "gap");
        let head = |size: u64, hash: &'static [u8; 32]| NewHead {
            tree_size: size,
            head_hash: hash,
            head_json: "{}",
            countersignature_json: Some("{\"cs\":1}"),
            received_ms: 7,
        };
        static H4: [u8; 32] = [4; 32];
        static H5: [u8; 32] = [5; 32];
        // A failing head write (wrong first index for the second leaf) keeps nothing.
        assert!(db
            .accept_head(PRIMARY, 1, &[leaf(2), leaf(3)], &head(4, &H4))
            .is_err());
        assert_eq!(db.leaf_count(PRIMARY).expect("count"), 2);
        assert_eq!(db.head_by_hash(PRIMARY, &H4).expect("head"), None);
        db.accept_head(PRIMARY, 2, &[leaf(2), leaf(3)], &head(4, &H5))
            .expect("accept");
        assert_eq!(db.leaf_count(PRIMARY).expect("count"), 4);
        let stored = db.head_by_hash(PRIMARY, &H5).expect("head").expect("kept");
        assert_eq!(stored.tree_size, 4);
        assert_eq!(stored.countersignature_json.as_deref(), Some("{\"cs\":1}"));
        assert_eq!(
            db.leaf_paths(PRIMARY, 1, 2).expect("paths"),
            ["p1".to_owned(), "p2".to_owned()]
        );
        assert_eq!(
            db.leaf_paths(PRIMARY, 4, 10).expect("paths"),
            Vec::<String>::new()
        );
        assert_eq!(db.leaves(PRIMARY).expect("leaves")[3].1, h(3));
    }
}
