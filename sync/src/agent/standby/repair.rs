//! The standby repairing a damaged verified copy (found by its scrub) from the primary that recorded
//! it: the primary sends its copy only if that still matches its logged leaf, and the standby checks
//! the bytes against the leaf it holds and the catalog before they replace the damaged file (which
//! is kept in quarantine).

use std::collections::HashMap;

use store::SegmentRow;

use super::{lock, Shared};
use crate::agent::{raise_alarm, AgentError, Conn};
use crate::proto::{Message, SegmentKey};

/// Repairs asked of one primary at once, at most (the rest wait for the next scrub pass).
const MAX_REPAIRS: usize = 16;

/// Repairs in flight on one connection: path -> (the damaged row, bytes received so far).
#[derive(Default)]
pub(super) struct Repairs {
    pending: HashMap<String, (SegmentRow, Vec<u8>)>,
}

/// Asks the primary for its copy of `row` (a segment it recorded whose copy here is damaged).
pub(super) async fn request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    conn: &mut Conn<S>,
    repairs: &mut Repairs,
    origin: &str,
    row: SegmentRow,
) -> Result<(), AgentError> {
    if row.node != origin
        || repairs.pending.contains_key(&row.path)
        || repairs.pending.len() >= MAX_REPAIRS
    {
        return Ok(());
    }
    let key = SegmentKey {
        origin_node: origin.to_owned(),
        path: row.path.clone(),
    };
    let len = row.size_bytes.max(0) as u64;
    tracing::warn!(path = %row.path, origin, "fetching the primary's copy to repair a damaged one");
    conn.send(&Message::FetchRequest {
        key,
        offset: 0,
        len,
    })
    .await?;
    repairs
        .pending
        .insert(row.path.clone(), (row, Vec::with_capacity(len as usize)));
    Ok(())
}

/// A chunk of a requested copy; the last one completes the repair.
pub(super) fn on_data(
    shared: &Shared,
    repairs: &mut Repairs,
    origin: &str,
    key: &SegmentKey,
    offset: u64,
    data: &[u8],
    last: bool,
) {
    let Some((row, buf)) = repairs.pending.get_mut(&key.path) else {
        tracing::debug!(path = %key.path, "fetch data nobody asked for");
        return;
    };
    let expected = row.size_bytes.max(0) as u64;
    if offset != buf.len() as u64 || buf.len() as u64 + data.len() as u64 > expected {
        let path = key.path.clone();
        repairs.pending.remove(&path);
        raise_alarm(
            &shared.db,
            "repair_failed",
            Some(origin),
            Some(&path),
            &format!("the primary's copy arrived out of order or too long (at {offset})"),
        );
        return;
    }
    buf.extend_from_slice(data);
    if !last {
        return;
    }
    let Some((row, buf)) = repairs.pending.remove(&key.path) else {
        return;
    };
    finish(shared, origin, &row, &buf);
}

/// The primary cannot send a copy matching its log.
pub(super) fn on_refused(
    shared: &Shared,
    repairs: &mut Repairs,
    origin: &str,
    key: &SegmentKey,
    reason: &str,
) {
    if repairs.pending.remove(&key.path).is_some() {
        raise_alarm(
            &shared.db,
            "repair_failed",
            Some(origin),
            Some(&key.path),
            &format!("the primary has no copy matching its log: {reason}"),
        );
    }
}

/// Checks the received copy against the logged leaf and the catalog, then replaces the damaged file.
fn finish(shared: &Shared, origin: &str, row: &SegmentRow, data: &[u8]) {
    let have = ring::digest::digest(&ring::digest::SHA256, data);
    let logged = lock(&shared.origins)
        .get(origin)
        .and_then(|l| l.logged.get(&row.path).copied());
    let verdict = match logged {
        None => Err("no logged leaf for it here".to_owned()),
        Some(leaf) if leaf != have.as_ref() => Err(format!(
            "the primary's copy hashes to {}, the logged leaf says {}",
            base::hex::encode(have.as_ref()),
            base::hex::encode(&leaf)
        )),
        Some(_) => tokio::task::block_in_place(|| shared.store.restore_sealed(&row.path, data))
            .map_err(|e| e.to_string()),
    };
    match verdict {
        Ok(()) => raise_alarm(
            &shared.db,
            "repaired",
            Some(origin),
            Some(&row.path),
            "damaged copy replaced by the primary's copy matching the log (the damaged file kept in quarantine)",
        ),
        Err(reason) => raise_alarm(
            &shared.db,
            "repair_failed",
            Some(origin),
            Some(&row.path),
            &reason,
        ),
    }
}
