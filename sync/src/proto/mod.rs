//! Wire protocol between a primary and a standby sync agent.
//!
//! One mutual-TLS connection per peer carries a sequence of frames:
//!
//! ```text
//! u32 big-endian length (of everything after it) | u8 message type | body
//! ```
//!
//! Bodies come in two kinds:
//!
//! * **metadata** messages: the [`Message`] serialized as JSON (externally tagged, so the body
//!   names its own type and is checked against the type byte), compressed with zstd. Decompression
//!   is streamed into a buffer capped at [`Limits::max_metadata_decompressed_bytes`] with the zstd
//!   window capped too, so a decompression bomb is rejected after at most that many bytes;
//! * **media** messages ([`Message::SegmentData`], [`Message::FetchData`]): a small fixed binary
//!   header ([`SegmentKey`] as two u16-length-prefixed UTF-8 strings, u64 offset, and for
//!   `FetchData` a u8 `last` flag), then the raw bytes, never compressed. [`read_message`] hands
//!   them out as a slice of the frame buffer and [`write_message`] writes them straight from the
//!   caller's buffer.
//!
//! Everything decoded here comes from a peer that may be compromised: decoding never panics, frame
//! lengths are checked against [`Limits::max_frame_bytes`] before anything is allocated, the frame
//! buffer grows only as bytes actually arrive, and every [`SegmentKey`] and node name is
//! validated (see [`SegmentKey::validate`]) so a key can be joined to a local directory safely.
//!
//! `docs/sync.md`, section "Wire protocol", describes the format for humans.

mod codec;
mod validate;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use codec::{decode_frame, encode, media_header_len, read_message, write_message};
pub use validate::{
    validate_hex, validate_node_name, validate_segment_path, MAX_PATH_BYTES,
    MAX_PATH_COMPONENT_BYTES,
};

/// Version of this protocol; sent in [`Message::Hello`] and [`Message::HelloAck`]. A peer speaking
/// another version is answered with [`Message::Error`] carrying [`ErrorCode::VersionMismatch`].
///
/// Version 2 pages what grows with history: `StandbyState` (holdings of open and recent segments plus
/// `sealed_below_leaf`), `TreeHead` (`first_leaf`) and `FetchListReply` (`more`), and adds `HeadChain`
/// (restore imports the chain of heads).
///
/// Version 3 adds `epoch` to `SegmentSealed` (the arbiter's epoch of the origin's catalog row) and the
/// flow-back connection: a primary connects to its standby with `Hello { role: Standby }` and receives
/// the standby's takeover segments of its cameras (`docs/sync.md`). A version 3 standby still accepts
/// a version 2 primary (no epochs, no flow-back: [`MIN_PROTOCOL_VERSION`]); a version 2 standby refuses
/// a version 3 primary, so standbys are upgraded first.
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest protocol version a standby still accepts from a primary (its `SegmentSealed` carries no
/// `epoch`, read as none).
pub const MIN_PROTOCOL_VERSION: u16 = 2;

/// The first protocol version with the flow-back connection.
pub const FLOWBACK_PROTOCOL_VERSION: u16 = 3;

/// Most entries in one page of a paged message (`StandbyState::holdings`, `TreeHead::leaves`,
/// `FetchListReply::segments`, `HeadChain::heads`); a decoded page with more is `Malformed`. Senders also keep a page's JSON
/// near [`PAGE_TARGET_BYTES`], well under the metadata limit, whatever the entries' size.
pub const MAX_PAGE_ITEMS: usize = 2000;

/// The JSON size a sender aims for in one page (see [`paginate`]).
pub const PAGE_TARGET_BYTES: usize = 1 << 20;

/// Splits `items` into pages of at most [`MAX_PAGE_ITEMS`] entries and about [`PAGE_TARGET_BYTES`] of
/// JSON each (an entry is never split; an empty input gives one empty page).
pub fn paginate<T: Serialize>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut pages = vec![Vec::new()];
    let mut bytes = 0usize;
    for item in items {
        let size = serde_json::to_vec(&item).map_or(0, |v| v.len()) + 1;
        let full = pages.last().is_some_and(|p: &Vec<T>| {
            !p.is_empty() && (p.len() >= MAX_PAGE_ITEMS || bytes + size > PAGE_TARGET_BYTES)
        });
        if full {
            pages.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(page) = pages.last_mut() {
            page.push(item);
        }
    }
    pages
}

/// Size of the frame prefix: the u32 length plus the u8 message type.
pub const FRAME_PREFIX_BYTES: usize = 5;

/// Limits applied while decoding frames from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted value of the frame's length field (message type byte plus body).
    /// Default 8 MiB.
    pub max_frame_bytes: usize,
    /// Largest accepted size of a metadata message's JSON once decompressed. Default 4 MiB.
    pub max_metadata_decompressed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 8 * 1024 * 1024,
            max_metadata_decompressed_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Errors from encoding or decoding frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The frame's length field exceeds the limit (or a frame to encode does not fit in a u32).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u64 },
    /// The message type byte is not one of [`MessageType`].
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The metadata body is not valid zstd (or needs a larger window than allowed).
    #[error("zstd decompression failed: {0}")]
    Decompress(String),
    /// The metadata body decompresses to more than the limit.
    #[error("metadata decompresses to more than {max} bytes")]
    DecompressedTooLarge { max: usize },
    /// The metadata JSON could not be produced or parsed.
    #[error("json: {0}")]
    Json(String),
    /// The stream ended inside a frame, or a media header is cut short.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// A segment key or node name is invalid; `field` names where it was found.
    #[error("invalid {field}: {reason}")]
    InvalidKey { field: String, reason: String },
    /// Any other structural problem (zero-length frame, type byte disagreeing with the body, a bad
    /// flag byte, offsets overflowing, a malformed hex digest...).
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl ProtoError {
    /// The [`ErrorCode`] to report to the peer for this error (when decoding what it sent)
    /// before closing the connection: [`ErrorCode::Internal`] for local I/O failures,
    /// [`ErrorCode::Malformed`] for everything else.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ProtoError::Io(_) => ErrorCode::Internal,
            _ => ErrorCode::Malformed,
        }
    }
}

/// The message type byte of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Hello = 1,
    HelloAck = 2,
    StandbyState = 3,
    SegmentOpen = 4,
    SegmentData = 5,
    SegmentSealed = 6,
    TreeHead = 7,
    Ack = 8,
    HeadAccepted = 9,
    Refused = 10,
    Ping = 11,
    Pong = 12,
    FetchRequest = 13,
    FetchData = 14,
    FetchList = 15,
    FetchListReply = 16,
    Error = 17,
    HeadChain = 18,
}

impl MessageType {
    /// Every message type, in type-byte order.
    pub const ALL: [MessageType; 18] = [
        MessageType::Hello,
        MessageType::HelloAck,
        MessageType::StandbyState,
        MessageType::SegmentOpen,
        MessageType::SegmentData,
        MessageType::SegmentSealed,
        MessageType::TreeHead,
        MessageType::Ack,
        MessageType::HeadAccepted,
        MessageType::Refused,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::FetchRequest,
        MessageType::FetchData,
        MessageType::FetchList,
        MessageType::FetchListReply,
        MessageType::Error,
        MessageType::HeadChain,
    ];

    /// The type for a type byte, if any.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| *t as u8 == b)
    }

    /// The type byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether the body is a binary media header plus raw bytes (rather than zstd JSON).
    pub fn is_media(self) -> bool {
        matches!(self, MessageType::SegmentData | MessageType::FetchData)
    }
}

/// Role a node announces in [`Message::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Standby,
}

/// Error codes carried by [`Message::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    VersionMismatch,
    Unauthorized,
    Malformed,
    Internal,
}

/// Identifies a segment file: the node that recorded it and its path relative to that node's
/// storage root. Validated on decode (see [`SegmentKey::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentKey {
    pub origin_node: String,
    pub path: String,
}

impl SegmentKey {
    /// Checks the node name (`[a-z0-9][a-z0-9_-]{0,62}`) and the path (relative, `/`-separated,
    /// no empty, `.` or `..` components, no NUL, control characters or backslashes, at most
    /// [`MAX_PATH_BYTES`] bytes and [`MAX_PATH_COMPONENT_BYTES`] per component). `field` prefixes
    /// the field names in the error (e.g. `"holdings[3].key"`).
    pub fn validate(&self, field: &str) -> Result<(), ProtoError> {
        validate_node_name(&self.origin_node, &format!("{field}.origin_node"))?;
        validate_segment_path(&self.path, &format!("{field}.path"))
    }
}

/// What the standby holds of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub key: SegmentKey,
    /// Bytes of the file the standby has durably written (a prefix of the primary's file).
    pub bytes_held: u64,
    /// For a segment the standby has seen sealed: the lowercase hex SHA-256 of the whole file.
    pub sealed_sha256: Option<String>,
}

/// Description of a segment, sent when it is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub camera: String,
    pub stream: String,
    pub start_ms: i64,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub audio_codec: Option<String>,
}

/// A protocol message. All variants but [`Message::SegmentData`] and [`Message::FetchData`] are
/// metadata (zstd JSON); those two are media (binary header plus raw bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// First message from each side.
    Hello {
        protocol_version: u16,
        node: String,
        role: Role,
        software: String,
    },
    /// Reply to a `Hello` of the same protocol version.
    HelloAck { protocol_version: u16, node: String },
    /// Standby to primary after the handshake: what it holds, so the primary resumes without
    /// re-sending. In pages: every page but the last has `more`; `head` and `sealed_below_leaf` are
    /// the same in every page.
    StandbyState {
        /// Open (partial) segments, and sealed ones not covered by `sealed_below_leaf`.
        holdings: Vec<Holding>,
        /// The standby's latest signed tree head (opaque here).
        head: Option<serde_json::Value>,
        /// Every segment logged at a leaf index below this is held sealed (or was deleted by the
        /// standby's own retention) and is not listed in `holdings`.
        sealed_below_leaf: u64,
        /// Another page follows.
        more: bool,
    },
    /// A segment starts (or the primary resumes mirroring it).
    SegmentOpen { key: SegmentKey, info: SegmentInfo },
    /// Bytes `offset..offset + data.len()` of a segment (media body).
    #[serde(skip)]
    SegmentData {
        key: SegmentKey,
        offset: u64,
        data: Bytes,
    },
    /// A segment is complete.
    SegmentSealed {
        key: SegmentKey,
        size_bytes: u64,
        /// Lowercase hex SHA-256 of the whole file.
        sha256: String,
        end_ms: i64,
        frames: i64,
        leaf_index: u64,
        /// The arbiter's epoch under which the origin wrote the segment (its catalog row's), if any;
        /// absent in version 2.
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// A new signed tree head with its consistency proof from the previous one and the new leaves
    /// (opaque JSON here; defined by the Merkle log module).
    TreeHead {
        head: serde_json::Value,
        /// Index of `leaves[0]` in the log (the size the leaves extend). A listing for restore sends
        /// the head once per page of leaves, `first_leaf` growing, until `tree_size` is reached.
        first_leaf: u64,
        /// Lowercase hex hashes.
        consistency_proof: Vec<String>,
        leaves: Vec<serde_json::Value>,
    },
    /// Standby to primary: this many bytes of the segment are durable.
    Ack { key: SegmentKey, bytes_durable: u64 },
    /// Standby to primary: the tree head was verified and countersigned.
    HeadAccepted { countersignature: serde_json::Value },
    /// The peer refuses something (a segment, or the whole stream when `key` is `None`).
    Refused {
        key: Option<SegmentKey>,
        reason: String,
    },
    /// Keep-alive / round-trip measurement.
    Ping { nonce: u64, sent_ms: i64 },
    /// Answer to a `Ping`, echoing it.
    Pong { nonce: u64, sent_ms: i64 },
    /// Ask for bytes `offset..offset + len` of a segment.
    FetchRequest {
        key: SegmentKey,
        offset: u64,
        len: u64,
    },
    /// Answer to a `FetchRequest`, possibly in several pieces; `last` marks the final one (media
    /// body).
    #[serde(skip)]
    FetchData {
        key: SegmentKey,
        offset: u64,
        data: Bytes,
        last: bool,
    },
    /// Ask for the list of segments matching the filters.
    FetchList {
        origin_node: Option<String>,
        camera: Option<String>,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
    },
    /// Answer to a `FetchList` (entries opaque here), in pages: every page but the last has `more`.
    FetchListReply {
        segments: Vec<serde_json::Value>,
        more: bool,
    },
    /// A fatal error; the sender closes the connection after it.
    Error { code: ErrorCode, message: String },
    /// For restore, before the log: every head the standby kept of the asking node's log, in the order
    /// it accepted them, each with its countersignature (entries opaque here), in pages: every page but
    /// the last has `more`.
    HeadChain {
        heads: Vec<serde_json::Value>,
        more: bool,
    },
}

impl Message {
    /// The message type (and so the type byte) of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello { .. } => MessageType::Hello,
            Message::HelloAck { .. } => MessageType::HelloAck,
            Message::StandbyState { .. } => MessageType::StandbyState,
            Message::SegmentOpen { .. } => MessageType::SegmentOpen,
            Message::SegmentData { .. } => MessageType::SegmentData,
            Message::SegmentSealed { .. } => MessageType::SegmentSealed,
            Message::TreeHead { .. } => MessageType::TreeHead,
            Message::Ack { .. } => MessageType::Ack,
            Message::HeadAccepted { .. } => MessageType::HeadAccepted,
            Message::Refused { .. } => MessageType::Refused,
            Message::Ping { .. } => MessageType::Ping,
            Message::Pong { .. } => MessageType::Pong,
            Message::FetchRequest { .. } => MessageType::FetchRequest,
            Message::FetchData { .. } => MessageType::FetchData,
            Message::FetchList { .. } => MessageType::FetchList,
            Message::FetchListReply { .. } => MessageType::FetchListReply,
            Message::Error { .. } => MessageType::Error,
            Message::HeadChain { .. } => MessageType::HeadChain,
        }
    }

    /// Checks everything a peer could get wrong beyond JSON syntax: segment keys, node names,
    /// hex digests, and offset arithmetic. Run on every decoded message and before encoding.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            Message::Hello { node, .. } | Message::HelloAck { node, .. } => {
                validate_node_name(node, "node")
            }
            Message::StandbyState { holdings, .. } => {
                check_page("holdings", holdings.len())?;
                for (i, h) in holdings.iter().enumerate() {
                    h.key.validate(&format!("holdings[{i}].key"))?;
                    if let Some(s) = &h.sealed_sha256 {
                        validate_hex(s, Some(32), &format!("holdings[{i}].sealed_sha256"))?;
                    }
                }
                Ok(())
            }
            Message::SegmentOpen { key, .. } | Message::Ack { key, .. } => key.validate("key"),
            Message::SegmentData {
                key, offset, data, ..
            }
            | Message::FetchData {
                key, offset, data, ..
            } => {
                key.validate("key")?;
                check_range(*offset, data.len() as u64)
            }
            Message::SegmentSealed { key, sha256, .. } => {
                key.validate("key")?;
                validate_hex(sha256, Some(32), "sha256")
            }
            Message::TreeHead {
                consistency_proof,
                leaves,
                first_leaf,
                ..
            } => {
                check_page("leaves", leaves.len())?;
                check_range(*first_leaf, leaves.len() as u64)?;
                for (i, h) in consistency_proof.iter().enumerate() {
                    validate_hex(h, None, &format!("consistency_proof[{i}]"))?;
                }
                Ok(())
            }
            Message::Refused { key, .. } => match key {
                Some(k) => k.validate("key"),
                None => Ok(()),
            },
            Message::FetchRequest {
                key, offset, len, ..
            } => {
                key.validate("key")?;
                check_range(*offset, *len)
            }
            Message::FetchList { origin_node, .. } => match origin_node {
                Some(n) => validate_node_name(n, "origin_node"),
                None => Ok(()),
            },
            Message::FetchListReply { segments, .. } => check_page("segments", segments.len()),
            Message::HeadChain { heads, .. } => check_page("heads", heads.len()),
            Message::HeadAccepted { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Error { .. } => Ok(()),
        }
    }
}

fn check_page(field: &str, len: usize) -> Result<(), ProtoError> {
    if len > MAX_PAGE_ITEMS {
        return Err(ProtoError::Malformed(format!(
            "{field}: {len} entries in one page, at most {MAX_PAGE_ITEMS}"
        )));
    }
    Ok(())
}

fn check_range(offset: u64, len: u64) -> Result<(), ProtoError> {
    match offset.checked_add(len) {
        Some(_) => Ok(()),
        None => Err(ProtoError::Malformed(format!(
            "offset {offset} + length {len} overflows"
        ))),
    }
}
