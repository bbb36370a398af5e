//! Repairs of this node's damaged sealed files from the standby's verified copies (primary side): what
//! a file is checked against (its leaf in the signed log), the request the scrub and the tamper watch
//! queue, and what is done with the bytes that come back.

use std::collections::HashMap;

use store::{SealedReference, SegmentRow, Store};

use super::{raise_alarm, with_status, SharedStatus};
use crate::merkle::SegmentLeaf;
use crate::syncdb::SyncDb;

/// Who asked for a repair (decides which outcomes are alarms of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairCause {
    Scrub,
    Watch,
    /// The tamper watch asking again for a file still damaged (the first request was lost with a
    /// connection, or refused): its failures were already raised once.
    Retry,
}

impl RepairCause {
    /// Whether an outcome is only logged and counted, not raised as an alarm: while the tampering
    /// alarm is up, the watch's repairs are counted under it; a retry's failure was raised before.
    fn quiet(self, attack: bool, failed: bool) -> bool {
        match self {
            RepairCause::Scrub => false,
            RepairCause::Watch => attack,
            RepairCause::Retry => attack || failed,
        }
    }
}

/// A damaged or missing sealed file to fetch back from the standby.
#[derive(Debug, Clone)]
pub struct RepairRequest {
    pub path: String,
    /// What the good copy must be: the signed log's leaf (or the catalog row if not logged yet).
    pub reference: SealedReference,
    pub cause: RepairCause,
}

/// The signed log's leaf for `path` in `node`'s log as a reference, if the path is logged.
pub fn log_reference(db: &SyncDb, node: &str, path: &str) -> Option<SealedReference> {
    let index = match db.leaf_index_of(node, path) {
        Ok(i) => i?,
        Err(e) => {
            tracing::warn!(error = %e, path, "cannot read the log's leaf");
            return None;
        }
    };
    let (bytes, _) = db
        .leaves_range(node, index, index + 1)
        .ok()?
        .into_iter()
        .next()?;
    let leaf = SegmentLeaf::decode(&bytes).ok()?;
    Some(SealedReference {
        size_bytes: leaf.size_bytes,
        sha256: base::hex::encode(&leaf.sha256),
    })
}

/// What a repair of `row` must bring back: its leaf, else (not logged yet) its catalog row.
pub fn repair_reference(db: &SyncDb, row: &SegmentRow) -> Option<SealedReference> {
    log_reference(db, &row.node, &row.path).or_else(|| {
        row.sha256.as_ref().map(|sha| SealedReference {
            size_bytes: row.size_bytes.max(0) as u64,
            sha256: sha.clone(),
        })
    })
}

/// Repairs in flight on one connection: the request and the bytes received so far.
#[derive(Default)]
pub struct Repairs {
    pending: HashMap<String, (RepairRequest, Vec<u8>)>,
}

impl Repairs {
    /// Records `req`; false if a repair of that path is already in flight (nothing to send).
    pub fn start(&mut self, req: RepairRequest) -> bool {
        if self.pending.contains_key(&req.path) {
            return false;
        }
        self.pending.insert(req.path.clone(), (req, Vec::new()));
        true
    }

    pub fn is_pending(&self, path: &str) -> bool {
        self.pending.contains_key(path)
    }

    /// The standby refused the fetch: forgets the repair (a later check may ask again).
    pub fn refused(&mut self, path: &str) -> Option<RepairRequest> {
        self.pending.remove(path).map(|(req, _)| req)
    }

    /// Adds fetched bytes; returns the request and the whole file once the last chunk arrived.
    pub fn data(
        &mut self,
        path: &str,
        offset: u64,
        data: &[u8],
        last: bool,
    ) -> Option<(RepairRequest, Vec<u8>)> {
        let (_, buf) = self.pending.get_mut(path)?;
        if offset == buf.len() as u64 {
            buf.extend_from_slice(data);
        }
        if last {
            self.pending.remove(path)
        } else {
            None
        }
    }
}

/// Replaces the damaged file with the standby's copy (checked against the reference, the catalog row
/// set back to it) and reports the outcome: an alarm unless [`RepairCause`] says it is only counted
/// (the watch's repairs while the tampering alarm is up: an attack raises one alarm, not a flood).
pub fn finish_repair(
    store: &Store,
    db: &SyncDb,
    status: &SharedStatus,
    peer: &str,
    req: &RepairRequest,
    good: &[u8],
) {
    let result = store.repair_sealed(&req.path, good, &req.reference);
    let quiet = with_status(status, |s| {
        let attack = s.tamper.as_ref().is_some_and(|t| t.attack.is_some());
        if let Some(t) = s.tamper.as_mut() {
            match &result {
                Ok(()) => {
                    t.files_repaired += 1;
                    t.last_repaired_ms = Some(super::now_ms());
                }
                Err(_) => t.repairs_failed += 1,
            }
        }
        req.cause.quiet(attack, result.is_err())
    });
    match result {
        Ok(()) if quiet => {
            tracing::warn!(path = %req.path, "repaired from the standby's verified copy")
        }
        Ok(()) => raise_alarm(
            db,
            "repaired",
            Some(peer),
            Some(&req.path),
            "damaged local copy replaced by the standby's verified copy",
        ),
        Err(e) if quiet => tracing::error!(path = %req.path, error = %e, "repair failed"),
        Err(e) => raise_alarm(
            db,
            "repair_failed",
            Some(peer),
            Some(&req.path),
            &e.to_string(),
        ),
    }
}

/// The standby could not serve a repair (it holds no sealed copy of the file): counted, and an alarm
/// unless the tampering alarm is up.
pub fn repair_refused(
    db: &SyncDb,
    status: &SharedStatus,
    peer: &str,
    req: &RepairRequest,
    reason: &str,
) {
    let quiet = with_status(status, |s| {
        let t = s.tamper.as_mut();
        let attack = t.as_ref().is_some_and(|t| t.attack.is_some());
        if let Some(t) = t {
            t.repairs_failed += 1;
        }
        req.cause.quiet(attack, true)
    });
    let detail = format!("the standby cannot provide a good copy: {reason}");
    if quiet {
        tracing::error!(path = %req.path, detail, "repair failed");
    } else {
        raise_alarm(db, "repair_failed", Some(peer), Some(&req.path), &detail);
    }
}

/// `nvr-sync check`: every sealed segment of this node checked against its leaf in the signed log (the
/// scrub's rule, re-hashing every file) through a read-only store; the problems, path and what is wrong.
pub fn check_against_log(
    cfg: &crate::config::SyncConfig,
) -> Result<Vec<store::CheckProblem>, super::AgentError> {
    let reader = store::Reader::open(&cfg.data_dir, std::sync::Arc::new(base::clock::SystemClock))?;
    let db = SyncDb::open(&cfg.data_dir)?;
    let damaged = reader.check_against(&cfg.node_name, &|row| {
        log_reference(&db, &cfg.node_name, &row.path)
    })?;
    Ok(damaged
        .into_iter()
        .map(|(row, problem)| store::CheckProblem {
            path: row.path,
            problem,
        })
        .collect())
}
