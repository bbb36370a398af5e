//! Messages and framing of the control socket.
//!
//! Every message, both ways, is a frame (`base::frame`): a 4-byte big-endian length, then that many
//! bytes. Requests and responses are JSON objects; a request may be at most [`MAX_REQUEST_BYTES`].
//! After a successful `live` response the server sends media frames (fragmented MP4 bytes) until the
//! client closes.

pub use base::frame::{read_frame, write_frame, FrameError};
use serde::{Deserialize, Serialize};

use crate::frame::FrameId;
use crate::ingest::Mode;

/// Largest request frame.
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Largest response or media frame a client accepts.
pub const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every stream's status.
    Status {},
    /// Set a stream's mode now (`record` or `shadow`).
    Start {
        stream: String,
        #[serde(default = "record")]
        mode: Mode,
    },
    /// Set a stream's mode to `off` (its segment is sealed).
    Stop { stream: String },
    /// Shadow → record, exactly after a frame.
    Promote {
        stream: String,
        #[serde(default)]
        after: Option<FrameId>,
        /// The arbiter's epoch (fencing token): recorded with every segment of this holding.
        #[serde(default)]
        epoch: Option<u64>,
        /// Why the stream is promoted (logged as a `takeover` event with the epoch).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Record → `to` (default shadow) at the next key frame.
    Release {
        stream: String,
        #[serde(default = "shadow")]
        to: Mode,
    },
    /// Live fMP4 of a stream.
    Live { stream: String },
}

fn record() -> Mode {
    Mode::Record
}

fn shadow() -> Mode {
    Mode::Shadow
}

/// A response: `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: impl Serialize) -> Response {
        match serde_json::to_value(result) {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response::error(format!("cannot encode the answer: {e}")),
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_defaults_and_refuse_unknown_fields() {
        let r: Request =
            serde_json::from_str(r#"{"op":"start","stream":"a/main"}"#).expect("parse");
        assert_eq!(
            r,
            Request::Start {
                stream: "a/main".into(),
                mode: Mode::Record
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"op":"release","stream":"a/main"}"#).expect("parse");
        assert_eq!(
            r,
            Request::Release {
                stream: "a/main".into(),
                to: Mode::Shadow
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }
}
