//! Version snapshots: an append-only, signed Merkle log of sealed segments.
//!
//! Every segment the primary seals becomes one leaf of an append-only Merkle tree (the "log"). The
//! primary periodically signs a *tree head* (log size, root hash, timestamp, hash of the previous
//! head). The standby keeps the last head it accepted and only accepts a new head that provably
//! extends it. The construction follows RFC 6962 / RFC 9162 (Certificate Transparency) with SHA-256.
//!
//! # Formats (all integers big-endian, all strings UTF-8 with a `u32` byte-length prefix)
//!
//! * Leaf ([`SegmentLeaf::encode`]): `0x01` (version) ‖ `origin_node` ‖ `camera` ‖ `stream` ‖
//!   `path` ‖ `start_ms: i64` ‖ `end_ms: i64` ‖ `size_bytes: u64` ‖ `sha256: [u8; 32]`.
//!   Strings are at most [`MAX_FIELD_LEN`] bytes. Decoding is strict: unknown version, truncated or
//!   overlong fields, invalid UTF-8 and trailing bytes are errors, so each leaf has exactly one
//!   encoding.
//! * Leaf hash: `SHA-256(0x00 ‖ leaf encoding)`; interior node: `SHA-256(0x01 ‖ left ‖ right)`;
//!   the empty tree's root is `SHA-256("")`. Tree shape, audit paths and consistency proofs are
//!   exactly those of RFC 6962 section 2.1, verified with the RFC 9162 section 2.1.3.2 / 2.1.4.2
//!   algorithms ([`verify_inclusion`], [`verify_consistency`]).
//! * Tree head ([`TreeHead::encode`]): `0x01` ‖ `log_node` ‖ `tree_size: u64` ‖
//!   `root_hash: [u8; 32]` ‖ `timestamp_ms: i64` ‖ `prev_head_hash: [u8; 32]` (zeros for the
//!   first head). Head hash: `SHA-256(0x02 ‖ head encoding)`, so heads form a hash chain.
//! * Signature: Ed25519 over `b"nvr-sync tree head v1\0"` ‖ head encoding.
//! * Countersignature: Ed25519 over `b"nvr-sync countersign v1\0"` ‖ head hash.
//!
//! The three hash prefixes (`0x00`, `0x01`, `0x02`) separate domains: a leaf can never be
//! reinterpreted as an interior node or a head, and vice versa.
//!
//! # What the checks guarantee
//!
//! [`check_new_head`] accepts a new signed head over a held one only if it is signed by the log's
//! key, names the same log node, is not smaller than the held head (no replay of an old head, no
//! rollback), has the same root if it has the same size (no fork), has a timestamp no older than
//! the held one, chains to the held head through `prev_head_hash`, and comes with a valid
//! consistency proof: the held tree is a prefix of the new tree, so no leaf the standby already
//! trusts was changed, removed or reordered. [`check_leaves`] then confirms that the leaves the
//! standby actually received, appended to its own copy of the tree, give exactly the signed root.
//! Together: anything the standby has accepted can only ever be extended. A rewritten, truncated or
//! forked history is refused even if it is signed with the primary's real key (passing the
//! consistency check would take a SHA-256 collision); without that key no new head is accepted.
//!
//! The first head a standby sees is trusted on its signature alone (trust on first use).

mod check;
mod codec;
mod head;
mod hex;
mod leaf;
mod tree;

#[cfg(test)]
mod tests;

pub use check::{check_leaves, check_new_head, HeadCheck, HeadRejection, LeafRejection};
pub use head::{
    Countersignature, SignedTreeHead, TreeHead, COUNTERSIGN_CONTEXT, HEAD_HASH_PREFIX,
    TREE_HEAD_CONTEXT, TREE_HEAD_VERSION,
};
pub use leaf::{DecodeError, SegmentLeaf, LEAF_VERSION, MAX_FIELD_LEN};
pub use tree::{
    empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion, MerkleTree,
    LEAF_HASH_PREFIX, NODE_HASH_PREFIX,
};

/// A SHA-256 digest.
pub type Hash = [u8; 32];
