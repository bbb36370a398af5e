//! The primary serving a `FetchRequest` of the standby: the standby's scrub found its verified copy
//! damaged and asks for this node's copy. It is sent only if it still matches the leaf logged for it
//! (the file is re-hashed), so a primary whose file was altered cannot feed the repair.

use store::{SegmentState, Store};
use tokio::io::AsyncWrite;

use super::Log;
use crate::agent::{AgentError, CHUNK_BYTES};
use crate::merkle::SegmentLeaf;
use crate::proto::{Message, SegmentKey};
use crate::syncdb::SyncDb;

/// This node's copy of `key` if it hashes to its logged leaf, else why not.
fn copy_matching_log(
    store: &Store,
    db: &SyncDb,
    log: &Log,
    key: &SegmentKey,
) -> Result<Result<Vec<u8>, String>, AgentError> {
    if key.origin_node != log.node {
        return Ok(Err(format!("{} is not this node's segment", key.path)));
    }
    let Some(index) = log.leaf_index(&key.path) else {
        return Ok(Err(format!("{} is not in this node's log", key.path)));
    };
    let leaf = db
        .leaves_range(log.key(), index, index + 1)?
        .first()
        .and_then(|(bytes, _)| SegmentLeaf::decode(bytes).ok());
    let Some(leaf) = leaf else {
        return Ok(Err(format!("leaf {index} of {} unreadable", key.path)));
    };
    let row = store.catalog().segment_by_path(&key.path)?;
    if row.is_none_or(|r| r.state != SegmentState::Sealed) {
        return Ok(Err(format!("{} is not sealed here", key.path)));
    }
    let path = store.absolute_path(&key.path);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("cannot read {}: {e}", path.display()))),
    };
    let have = ring::digest::digest(&ring::digest::SHA256, &data);
    if have.as_ref() != leaf.sha256 {
        return Ok(Err(format!(
            "this node's copy of {} no longer matches its logged leaf",
            key.path
        )));
    }
    Ok(Ok(data))
}

/// Answers a `FetchRequest` with `FetchData` chunks of the requested range, or `Refused`.
pub(super) async fn serve<W: AsyncWrite + Unpin>(
    writer: &mut W,
    store: &Store,
    db: &SyncDb,
    log: &Log,
    key: SegmentKey,
    offset: u64,
    len: u64,
) -> Result<(), AgentError> {
    let copy = tokio::task::block_in_place(|| copy_matching_log(store, db, log, &key))?;
    let data = match copy {
        Ok(d) => d,
        Err(reason) => {
            tracing::warn!(path = %key.path, %reason, "fetch by the standby refused");
            let msg = Message::Refused {
                key: Some(key),
                reason,
            };
            return Ok(crate::proto::write_message(writer, &msg).await?);
        }
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = usize::try_from(offset.saturating_add(len))
        .unwrap_or(usize::MAX)
        .min(data.len());
    let mut pos = start;
    loop {
        let next = (pos + CHUNK_BYTES).min(end);
        let last = next == end;
        let msg = Message::FetchData {
            key: key.clone(),
            offset: pos as u64,
            data: bytes::Bytes::copy_from_slice(&data[pos..next]),
            last,
        };
        crate::proto::write_message(writer, &msg).await?;
        pos = next;
        if last {
            return Ok(());
        }
    }
}
