//! Log leaves: one per sealed segment.

use serde::{Deserialize, Serialize};

use super::codec::{put_i64, put_str, put_u64, Reader};
use super::Hash;

/// Version byte at the start of every leaf encoding.
pub const LEAF_VERSION: u8 = 1;

/// Maximum length in bytes of any string field in a leaf or tree head.
pub const MAX_FIELD_LEN: usize = 4096;

/// Why a leaf or tree head encoding was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported encoding version {0}")]
    UnsupportedVersion(u8),
    #[error("truncated input in field `{field}`")]
    Truncated { field: &'static str },
    #[error("field `{field}` is longer than {MAX_FIELD_LEN} bytes")]
    FieldTooLong { field: &'static str },
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("{0} trailing byte(s) after the encoding")]
    TrailingBytes(usize),
}

/// One sealed segment as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentLeaf {
    /// The node that recorded the segment.
    pub origin_node: String,
    pub camera: String,
    pub stream: String,
    /// Path of the segment file relative to the storage root.
    pub path: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub size_bytes: u64,
    /// SHA-256 of the segment file's contents.
    #[serde(with = "super::hex::hash")]
    pub sha256: Hash,
}

impl SegmentLeaf {
    /// The canonical encoding (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            1 + 16
                + self.origin_node.len()
                + self.camera.len()
                + self.stream.len()
                + self.path.len()
                + 24
                + 32,
        );
        out.push(LEAF_VERSION);
        put_str(&mut out, &self.origin_node);
        put_str(&mut out, &self.camera);
        put_str(&mut out, &self.stream);
        put_str(&mut out, &self.path);
        put_i64(&mut out, self.start_ms);
        put_i64(&mut out, self.end_ms);
        put_u64(&mut out, self.size_bytes);
        out.extend_from_slice(&self.sha256);
        out
    }

    /// Strict inverse of [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != LEAF_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let leaf = SegmentLeaf {
            origin_node: r.string("origin_node")?,
            camera: r.string("camera")?,
            stream: r.string("stream")?,
            path: r.string("path")?,
            start_ms: r.i64("start_ms")?,
            end_ms: r.i64("end_ms")?,
            size_bytes: r.u64("size_bytes")?,
            sha256: r.hash("sha256")?,
        };
        r.finish()?;
        Ok(leaf)
    }

    /// `SHA-256(0x00 ‖ encode())`, the value stored in the [`MerkleTree`](super::MerkleTree).
    pub fn leaf_hash(&self) -> Hash {
        super::leaf_hash(&self.encode())
    }
}
