//! The standby's acceptance rules, as pure functions.

use super::{empty_root, verify_consistency, Hash, MerkleTree, SignedTreeHead, TreeHead};

/// Outcome of accepting a new head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadCheck {
    /// Nothing was held: the head is accepted on its signature alone (trust on first use).
    First,
    /// The new head is identical to the held one (a re-send); nothing changes.
    AlreadyHeld,
    /// The new head chains to and extends the held one (`old_size == new_size` for a re-signed
    /// head with the same root and a newer timestamp).
    Extends { old_size: u64, new_size: u64 },
}

/// Why a new head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadRejection {
    #[error("tree head signature does not verify with the log's public key")]
    BadSignature,
    #[error("tree head is from log node `{new}`, but the held head is from `{held}`")]
    WrongLogNode { held: String, new: String },
    #[error("tree head claims size 0 but its root is not the empty-tree root")]
    MalformedEmptyHead,
    #[error(
        "tree size {new_size} is smaller than the held size {held_size}: \
         replay of an old head or rollback of the log"
    )]
    Rollback { held_size: u64, new_size: u64 },
    #[error("tree head has the held size {size} but a different root: fork or rewritten history")]
    Fork { size: u64 },
    #[error("tree head timestamp {new_ms} ms is older than the held head's {held_ms} ms")]
    TimestampRegressed { held_ms: i64, new_ms: i64 },
    #[error("tree head's prev_head_hash does not match the held head: broken or forked chain")]
    BrokenChain,
    #[error(
        "consistency proof from size {old_size} to {new_size} does not verify: \
         the held history was rewritten"
    )]
    Inconsistent { old_size: u64, new_size: u64 },
}

/// Why received leaves do not match a head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafRejection {
    #[error("{held} held + {received} received leaves do not make the head's size {expected}")]
    SizeMismatch {
        held: u64,
        received: u64,
        expected: u64,
    },
    #[error("received leaves do not produce the head's root hash")]
    RootMismatch,
}

/// Decides whether the standby may replace `held` by `new`.
///
/// Checks, in order: the signature of `new` under `public_key`; for a size-0 head, the empty root;
/// then, if a head is held: same log node, identical head (→ [`HeadCheck::AlreadyHeld`]), size not
/// smaller, same root at the same size, timestamp not older, `prev_head_hash == held.head_hash()`,
/// and `consistency_proof` from the held size/root to the new size/root (RFC 9162).
///
/// Whether `held` itself is valid is the caller's business: it was accepted earlier by this same
/// function.
pub fn check_new_head(
    held: Option<&SignedTreeHead>,
    new: &SignedTreeHead,
    consistency_proof: &[Hash],
    public_key: &[u8; 32],
) -> Result<HeadCheck, HeadRejection> {
    if !new.verify_signature(public_key) {
        return Err(HeadRejection::BadSignature);
    }
    let n = &new.head;
    if n.tree_size == 0 && n.root_hash != empty_root() {
        return Err(HeadRejection::MalformedEmptyHead);
    }
    let Some(held) = held else {
        return Ok(HeadCheck::First);
    };
    let h = &held.head;
    if n.log_node != h.log_node {
        return Err(HeadRejection::WrongLogNode {
            held: h.log_node.clone(),
            new: n.log_node.clone(),
        });
    }
    if n == h {
        return Ok(HeadCheck::AlreadyHeld);
    }
    if n.tree_size < h.tree_size {
        return Err(HeadRejection::Rollback {
            held_size: h.tree_size,
            new_size: n.tree_size,
        });
    }
    if n.tree_size == h.tree_size && n.root_hash != h.root_hash {
        return Err(HeadRejection::Fork { size: n.tree_size });
    }
    if n.timestamp_ms < h.timestamp_ms {
        return Err(HeadRejection::TimestampRegressed {
            held_ms: h.timestamp_ms,
            new_ms: n.timestamp_ms,
        });
    }
    if n.prev_head_hash != h.head_hash() {
        return Err(HeadRejection::BrokenChain);
    }
    if !verify_consistency(
        h.tree_size,
        n.tree_size,
        &h.root_hash,
        &n.root_hash,
        consistency_proof,
    ) {
        return Err(HeadRejection::Inconsistent {
            old_size: h.tree_size,
            new_size: n.tree_size,
        });
    }
    Ok(HeadCheck::Extends {
        old_size: h.tree_size,
        new_size: n.tree_size,
    })
}

/// Verifies that the standby's own tree (`held`, the leaves it already has) plus the newly
/// received leaf hashes `new_leaves` is exactly the tree described by `head`: same size, same root.
/// Does not modify `held`; on success the caller appends `new_leaves` to it.
pub fn check_leaves(
    held: &MerkleTree,
    new_leaves: &[Hash],
    head: &TreeHead,
) -> Result<(), LeafRejection> {
    let received = new_leaves.len() as u64;
    if held.len().checked_add(received) != Some(head.tree_size) {
        return Err(LeafRejection::SizeMismatch {
            held: held.len(),
            received,
            expected: head.tree_size,
        });
    }
    if held.root_with_appended(new_leaves) != head.root_hash {
        return Err(LeafRejection::RootMismatch);
    }
    Ok(())
}
