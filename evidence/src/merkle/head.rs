//! Signed tree heads and countersignatures.

use ring::digest::{Context, SHA256};
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::codec::{put_i64, put_str, put_u64, Reader};
use super::{DecodeError, Hash};

/// Version byte at the start of every tree head encoding.
pub const TREE_HEAD_VERSION: u8 = 1;
/// Domain-separation prefix of head hashes.
pub const HEAD_HASH_PREFIX: u8 = 0x02;
/// Prepended to the head encoding before signing.
pub const TREE_HEAD_CONTEXT: &[u8] = b"nvr-sync tree head v1\0";
/// Prepended to the head hash before countersigning.
pub const COUNTERSIGN_CONTEXT: &[u8] = b"nvr-sync countersign v1\0";

fn ed25519_verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// The log's state at one point in time, as signed by the log's node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeHead {
    /// The node that keeps (and signs) this log.
    pub log_node: String,
    pub tree_size: u64,
    #[serde(with = "super::hex::hash")]
    pub root_hash: Hash,
    pub timestamp_ms: i64,
    /// [`head_hash`](Self::head_hash) of the previous head; zeros for the first head.
    #[serde(with = "super::hex::hash")]
    pub prev_head_hash: Hash,
}

impl TreeHead {
    /// The canonical encoding (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 4 + self.log_node.len() + 8 + 32 + 8 + 32);
        out.push(TREE_HEAD_VERSION);
        put_str(&mut out, &self.log_node);
        put_u64(&mut out, self.tree_size);
        out.extend_from_slice(&self.root_hash);
        put_i64(&mut out, self.timestamp_ms);
        out.extend_from_slice(&self.prev_head_hash);
        out
    }

    /// Strict inverse of [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != TREE_HEAD_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let head = TreeHead {
            log_node: r.string("log_node")?,
            tree_size: r.u64("tree_size")?,
            root_hash: r.hash("root_hash")?,
            timestamp_ms: r.i64("timestamp_ms")?,
            prev_head_hash: r.hash("prev_head_hash")?,
        };
        r.finish()?;
        Ok(head)
    }

    /// `SHA-256(0x02 ‖ encode())`.
    pub fn head_hash(&self) -> Hash {
        let mut ctx = Context::new(&SHA256);
        ctx.update(&[HEAD_HASH_PREFIX]);
        ctx.update(&self.encode());
        let mut h = [0u8; 32];
        h.copy_from_slice(ctx.finish().as_ref());
        h
    }

    /// The exact bytes that are signed: `TREE_HEAD_CONTEXT ‖ encode()`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = TREE_HEAD_CONTEXT.to_vec();
        m.extend_from_slice(&self.encode());
        m
    }

    /// Signs the head; `signer` produces an Ed25519 signature of the message it is given.
    pub fn sign(&self, signer: &dyn Fn(&[u8]) -> [u8; 64]) -> SignedTreeHead {
        SignedTreeHead {
            head: self.clone(),
            signature: signer(&self.signing_message()).to_vec(),
        }
    }
}

/// A tree head with the log node's Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedTreeHead {
    pub head: TreeHead,
    #[serde(with = "super::hex::bytes")]
    pub signature: Vec<u8>,
}

impl SignedTreeHead {
    /// True if `signature` is a valid Ed25519 signature by `public_key` over the head.
    pub fn verify_signature(&self, public_key: &[u8; 32]) -> bool {
        ed25519_verify(public_key, &self.head.signing_message(), &self.signature)
    }
}

/// Another node's signature over a head hash ("I have seen and accepted this head").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Countersignature {
    pub signer_node: String,
    #[serde(with = "super::hex::hash")]
    pub head_hash: Hash,
    #[serde(with = "super::hex::bytes")]
    pub signature: Vec<u8>,
}

impl Countersignature {
    fn message(head_hash: &Hash) -> Vec<u8> {
        let mut m = COUNTERSIGN_CONTEXT.to_vec();
        m.extend_from_slice(head_hash);
        m
    }

    /// Countersigns `head` as `signer_node`; `signer` produces an Ed25519 signature.
    pub fn create(
        signer_node: &str,
        head: &TreeHead,
        signer: &dyn Fn(&[u8]) -> [u8; 64],
    ) -> Countersignature {
        let head_hash = head.head_hash();
        Countersignature {
            signer_node: signer_node.to_owned(),
            head_hash,
            signature: signer(&Self::message(&head_hash)).to_vec(),
        }
    }

    /// True if `signature` is a valid Ed25519 signature by `public_key` over `head_hash`.
    pub fn verify(&self, public_key: &[u8; 32]) -> bool {
        ed25519_verify(public_key, &Self::message(&self.head_hash), &self.signature)
    }

    /// True if the signature is valid and it is over `head`.
    pub fn verify_for(&self, head: &TreeHead, public_key: &[u8; 32]) -> bool {
        self.head_hash == head.head_hash() && self.verify(public_key)
    }
}
