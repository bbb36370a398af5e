//! The evidence manifest of an exported recording: which logged segments the exported MP4 was built
//! from, their leaves in the recording node's signed log with inclusion proofs under one signed tree
//! head, the exported file's SHA-256, the range, who exported it and when; signed with the node's
//! export key. [`verify`] checks a manifest and its MP4 offline, with two public keys: the node's
//! signing key (it signs the log's heads) and its export key (it signs manifests).
//!
//! # Format
//!
//! A JSON document ([`Manifest`], `format` = [`MANIFEST_FORMAT`]) written exactly as
//! [`Manifest::to_file_bytes`] writes it (serde_json's pretty form and one newline). The signature
//! is Ed25519 over [`MANIFEST_CONTEXT`] ‖ the same bytes with `signature` empty. The verifier refuses
//! a file that is not byte for byte the canonical form of what it parses, so no byte of a manifest
//! can change (not even white space) and still verify.
//!
//! # What a verified manifest proves
//!
//! - The MP4 is the file the export key signed (size and SHA-256).
//! - Every listed source segment is a leaf of the recording node's log (leaf index and audit path,
//!   RFC 6962) under a tree head signed with the node's signing key, so its size and SHA-256 are what
//!   the node logged when the segment was sealed (and what its standby holds).
//! - The export key vouches that the MP4 was built from those segments over the range; anyone holding
//!   the segments (the node, or its standby's copies) can rebuild the export and compare.

use serde::{Deserialize, Serialize};

use crate::merkle::{verify_inclusion, Hash, SegmentLeaf, SignedTreeHead};

/// The `format` of every manifest this crate writes.
pub const MANIFEST_FORMAT: &str = "nvr export manifest v1";
/// Prepended to the canonical bytes before signing.
pub const MANIFEST_CONTEXT: &[u8] = b"nvr export manifest v1\0";

/// An exported file as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedFile {
    /// The file name the export was offered under.
    pub name: String,
    /// `fragmented mp4`: one init section, then the recorded fragments with continuous timestamps.
    pub layout: String,
    pub size_bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// A span of wall time, milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// One segment the export was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSegment {
    /// The segment's leaf as the node logged it (path, times, size, SHA-256).
    pub leaf: SegmentLeaf,
    /// Its index in the node's log, `None` if the log has no leaf for it (not verifiable).
    pub leaf_index: Option<u64>,
    /// Audit path of the leaf in the tree of [`Manifest::tree_head`], leaf to root, hex.
    pub inclusion_proof: Vec<String>,
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The node that recorded (and logged) the segments.
    pub node: String,
    pub camera: String,
    pub stream: String,
    /// The range asked for.
    pub requested: Span,
    /// What the file covers: its first and last source segments' recorded times within the range.
    pub covered: Span,
    /// Spans of `covered` without recording: the exported file runs straight across them.
    pub gaps: Vec<Span>,
    pub exported_by: String,
    pub exported_at_ms: i64,
    pub file: ExportedFile,
    pub segments: Vec<SourceSegment>,
    /// The node's latest signed tree head when the export was made; `None` if it has no log.
    pub tree_head: Option<SignedTreeHead>,
    /// Ed25519 public key of the export key that signed this manifest, hex.
    pub export_public_key: String,
    /// Ed25519 signature, hex (see the module documentation).
    pub signature: String,
}

/// Why a manifest or its file did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("manifest is not valid JSON of the manifest format: {0}")]
    Malformed(String),
    #[error("manifest is not in its canonical form (changed after it was written)")]
    NotCanonical,
    #[error("unknown manifest format {0:?} (this program reads {MANIFEST_FORMAT:?})")]
    Format(String),
    #[error("manifest was signed by export key {found}, not the given {expected}")]
    WrongExportKey { expected: String, found: String },
    #[error("manifest signature does not verify with the export key")]
    BadSignature,
    #[error("reading the exported file: {0}")]
    Read(String),
    #[error("exported file does not match the manifest: {0}")]
    FileMismatch(String),
    #[error("manifest has no signed tree head: its segments cannot be checked against the log")]
    NoTreeHead,
    #[error("tree head signature does not verify with node {node}'s signing key")]
    BadHeadSignature { node: String },
    #[error("segment {path}: {reason}")]
    Segment { path: String, reason: String },
    #[error("manifest lists no source segment")]
    NoSegments,
}

/// What [`verify`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub segments: usize,
    pub tree_size: u64,
    pub head_timestamp_ms: i64,
    pub file_sha256: String,
}

fn hex32(s: &str) -> Option<Hash> {
    base::hex::decode(s).and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
}

impl Manifest {
    /// The bytes the signature covers: [`MANIFEST_CONTEXT`] ‖ the file form with `signature` empty.
    pub fn signing_message(&self) -> Vec<u8> {
        let unsigned = Manifest {
            signature: String::new(),
            ..self.clone()
        };
        let mut m = MANIFEST_CONTEXT.to_vec();
        m.extend_from_slice(&unsigned.to_file_bytes());
        m
    }

    /// Sets `export_public_key` and `signature`; `signer` makes an Ed25519 signature of its input.
    pub fn sign(&mut self, public_key: &[u8; 32], signer: &dyn Fn(&[u8]) -> [u8; 64]) {
        self.export_public_key = base::hex::encode(public_key);
        self.signature = base::hex::encode(&signer(&self.signing_message()));
    }

    /// The manifest file: serde_json's pretty form and a newline.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a manifest file, refusing any form but the canonical one.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Manifest, VerifyError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if m.to_file_bytes() != bytes {
            return Err(VerifyError::NotCanonical);
        }
        Ok(m)
    }
}

/// Checks `manifest_bytes` and the exported file `mp4` offline: the manifest is canonical and signed
/// by `export_key`; the file has the listed size and SHA-256; the tree head is signed by
/// `node_key`; every source segment's leaf belongs to the manifest's node, camera and stream and is
/// included in the head's tree.
pub fn verify(
    manifest_bytes: &[u8],
    mp4: &std::path::Path,
    node_key: &[u8; 32],
    export_key: &[u8; 32],
) -> Result<Verified, VerifyError> {
    let m = Manifest::from_file_bytes(manifest_bytes)?;
    if m.format != MANIFEST_FORMAT {
        return Err(VerifyError::Format(m.format));
    }
    let expected = base::hex::encode(export_key);
    if m.export_public_key != expected {
        return Err(VerifyError::WrongExportKey {
            expected,
            found: m.export_public_key,
        });
    }
    let signature = base::hex::decode(&m.signature).ok_or(VerifyError::BadSignature)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, export_key)
        .verify(&m.signing_message(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    check_file(&m.file, mp4)?;
    let sth = m.tree_head.as_ref().ok_or(VerifyError::NoTreeHead)?;
    if !sth.verify_signature(node_key) || sth.head.log_node != m.node {
        return Err(VerifyError::BadHeadSignature {
            node: m.node.clone(),
        });
    }
    if m.segments.is_empty() {
        return Err(VerifyError::NoSegments);
    }
    for s in &m.segments {
        check_segment(&m, s, sth)?;
    }
    Ok(Verified {
        segments: m.segments.len(),
        tree_size: sth.head.tree_size,
        head_timestamp_ms: sth.head.timestamp_ms,
        file_sha256: m.file.sha256,
    })
}

fn check_file(file: &ExportedFile, mp4: &std::path::Path) -> Result<(), VerifyError> {
    let size_bytes = std::fs::metadata(mp4)
        .map_err(|e| VerifyError::Read(format!("{}: {e}", mp4.display())))?
        .len();
    if size_bytes != file.size_bytes {
        return Err(VerifyError::FileMismatch(format!(
            "{size_bytes} bytes, the manifest says {}",
            file.size_bytes
        )));
    }
    let sha256 = store::sha256_file(mp4).map_err(|e| VerifyError::Read(e.to_string()))?;
    if sha256 != file.sha256 {
        return Err(VerifyError::FileMismatch(format!(
            "SHA-256 {sha256}, the manifest says {}",
            file.sha256
        )));
    }
    Ok(())
}

fn check_segment(m: &Manifest, s: &SourceSegment, sth: &SignedTreeHead) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::Segment {
        path: s.leaf.path.clone(),
        reason,
    };
    let l = &s.leaf;
    if l.origin_node != m.node || l.camera != m.camera || l.stream != m.stream {
        return Err(bad(format!(
            "its leaf is of {}'s {}/{}, not the manifest's stream",
            l.origin_node, l.camera, l.stream
        )));
    }
    let index = s
        .leaf_index
        .ok_or_else(|| bad("not in the node's signed log (no leaf index)".into()))?;
    let proof = s
        .inclusion_proof
        .iter()
        .map(|h| hex32(h))
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| bad("inclusion proof is not a list of SHA-256 hashes".into()))?;
    if !verify_inclusion(
        &l.leaf_hash(),
        index,
        sth.head.tree_size,
        &proof,
        &sth.head.root_hash,
    ) {
        return Err(bad(format!(
            "leaf {index} is not included in the signed tree of {} leaves",
            sth.head.tree_size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MerkleTree, TreeHead};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("key")
    }

    fn signer(k: &Ed25519KeyPair) -> impl Fn(&[u8]) -> [u8; 64] + '_ {
        move |m| {
            let mut s = [0u8; 64];
            s.copy_from_slice(k.sign(m).as_ref());
            s
        }
    }

    fn public(k: &Ed25519KeyPair) -> [u8; 32] {
        let mut p = [0u8; 32];
        p.copy_from_slice(k.public_key().as_ref());
        p
    }

    fn leaf(i: i64) -> SegmentLeaf {
        SegmentLeaf {
            origin_node: "node-a".into(),
            camera: "cam".into(),
            stream: "main".into(),
            path: format!("media/cam/main/{i}.mp4"),
            start_ms: i * 1000,
            end_ms: i * 1000 + 1000,
            size_bytes: 100,
            sha256: [i as u8; 32],
        }
    }

    /// A manifest of leaves 2 and 3 of a 5-leaf log, for `file`, signed; the node and export keys.
    fn signed(file: &std::path::Path) -> (Vec<u8>, [u8; 32], [u8; 32]) {
        let (node, export) = (key(1), key(2));
        let mut tree = MerkleTree::new();
        for i in 0..5 {
            tree.push(leaf(i).leaf_hash());
        }
        let head = TreeHead {
            log_node: "node-a".into(),
            tree_size: 5,
            root_hash: tree.root(),
            timestamp_ms: 9_000,
            prev_head_hash: [0; 32],
        }
        .sign(&signer(&node));
        let segments = [2u64, 3]
            .iter()
            .map(|&i| SourceSegment {
                leaf: leaf(i as i64),
                leaf_index: Some(i),
                inclusion_proof: tree
                    .inclusion_proof(i, 5)
                    .expect("proof")
                    .iter()
                    .map(|h| base::hex::encode(h))
                    .collect(),
            })
            .collect();
        let bytes = std::fs::read(file).expect("file");
        let mut m = Manifest {
            format: MANIFEST_FORMAT.into(),
            node: "node-a".into(),
            camera: "cam".into(),
            stream: "main".into(),
            requested: Span {
                start_ms: 2000,
                end_ms: 4000,
            },
            covered: Span {
                start_ms: 2000,
                end_ms: 4000,
            },
            gaps: vec![],
            exported_by: "bob".into(),
            exported_at_ms: 10_000,
            file: ExportedFile {
                name: "x.mp4".into(),
                layout: "fragmented mp4".into(),
                size_bytes: bytes.len() as u64,
                sha256: store::sha256_file(file).expect("hash"),
            },
            segments,
            tree_head: Some(head),
            export_public_key: String::new(),
            signature: String::new(),
        };
        m.sign(&public(&export), &signer(&export));
        (m.to_file_bytes(), public(&node), public(&export))
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_changed_byte_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("x.mp4");
        std::fs::write(&file, b"exported bytes").expect("write");
        let (bytes, node, export) = signed(&file);
        let ok = verify(&bytes, &file, &node, &export).expect("verifies");
        assert_eq!((ok.segments, ok.tree_size), (2, 5));
        // Every single changed byte of the manifest is refused.
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            assert!(
                verify(&changed, &file, &node, &export).is_err(),
                "byte {i} ({:?}) changed and still verified",
                bytes[i] as char
            );
        }
        // The wrong keys, a changed file.
        assert!(matches!(
            verify(&bytes, &file, &export, &export),
            Err(VerifyError::BadHeadSignature { .. })
        ));
        assert!(matches!(
            verify(&bytes, &file, &node, &node),
            Err(VerifyError::WrongExportKey { .. })
        ));
        std::fs::write(&file, b"exported bytez").expect("write");
        assert!(matches!(
            verify(&bytes, &file, &node, &export),
            Err(VerifyError::FileMismatch(_))
        ));
    }
}
