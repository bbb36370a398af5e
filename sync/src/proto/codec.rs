//! Frame encoding and decoding, in memory and over async streams.

use std::io::Read;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Limits, Message, MessageType, ProtoError, SegmentKey, FRAME_PREFIX_BYTES};

/// zstd level for metadata bodies: they are small and latency matters more than ratio.
const ZSTD_LEVEL: i32 = 3;

/// Initial growth step of a frame buffer; it then doubles as bytes arrive, never past the frame's
/// announced length.
const FRAME_BUF_STEP: usize = 64 * 1024;

/// Length of the binary header of a media body (`SegmentData` or `FetchData`) for `key`: u16
/// length + origin node, u16 length + path, u64 offset, plus the u8 `last` flag for `FetchData`.
/// A sender keeps `FRAME_PREFIX_BYTES - 4 + media_header_len(..) + data.len()` within the peer's
/// [`Limits::max_frame_bytes`].
pub fn media_header_len(msg_type: MessageType, key: &SegmentKey) -> usize {
    let last = usize::from(msg_type == MessageType::FetchData);
    2 + key.origin_node.len() + 2 + key.path.len() + 8 + last
}

/// Encodes `msg` as a whole frame: length, type byte and body. Media data is copied into the
/// frame; [`write_message`] avoids that copy. Fails with [`ProtoError::InvalidKey`] (or
/// [`ProtoError::Malformed`]) if the message would be rejected by a peer's decoder, and with
/// [`ProtoError::FrameTooLarge`] if it does not fit in a u32 length.
pub fn encode(msg: &Message) -> Result<Vec<u8>, ProtoError> {
    match media_parts(msg)? {
        Some((prefix, data)) => {
            let mut frame = Vec::with_capacity(prefix.len() + data.len());
            frame.extend_from_slice(&prefix);
            frame.extend_from_slice(data);
            Ok(frame)
        }
        None => encode_metadata(msg),
    }
}

/// Writes `msg` as one frame and flushes. Media data is written straight from the message's
/// buffer after its header, without copying it into a new buffer (wrap a TLS stream in a
/// `tokio::io::BufWriter` so the small header does not become a record of its own).
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
) -> Result<(), ProtoError> {
    match media_parts(msg)? {
        Some((prefix, data)) => {
            w.write_all(&prefix).await?;
            w.write_all(data).await?;
        }
        None => {
            let frame = encode_metadata(msg)?;
            w.write_all(&frame).await?;
        }
    }
    w.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it. Returns `Ok(None)` on end of stream at a frame boundary; end
/// of stream inside a frame is [`ProtoError::Truncated`]. The length is checked against
/// `limits.max_frame_bytes` and the type byte against the known types before any buffer is
/// allocated, and the frame buffer then grows only as bytes arrive. Media data in the returned
/// message shares the frame buffer (no copy).
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
) -> Result<Option<Message>, ProtoError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < len_buf.len() {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ProtoError::Truncated("end of stream inside a frame length"));
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf);
    check_frame_len(u64::from(len), limits)?;

    let mut type_buf = [0u8; 1];
    if r.read(&mut type_buf).await? == 0 {
        return Err(ProtoError::Truncated(
            "end of stream before the message type",
        ));
    }
    let frame_type = type_buf[0];
    if MessageType::from_u8(frame_type).is_none() {
        return Err(ProtoError::UnknownType(frame_type));
    }

    // `len` was checked against `max_frame_bytes` (a usize), so it fits.
    let body_len = usize::try_from(len - 1).map_err(|_| ProtoError::FrameTooLarge {
        len: u64::from(len),
        max: limits.max_frame_bytes as u64,
    })?;
    let mut body: Vec<u8> = Vec::with_capacity(body_len.min(FRAME_BUF_STEP));
    while body.len() < body_len {
        let remaining = body_len - body.len();
        if body.len() == body.capacity() {
            body.reserve_exact(remaining.min(body.len().max(FRAME_BUF_STEP)));
        }
        // `take` keeps the read inside this frame whatever spare capacity the allocator gave.
        let n = (&mut *r).take(remaining as u64).read_buf(&mut body).await?;
        if n == 0 {
            return Err(ProtoError::Truncated("end of stream inside a frame body"));
        }
    }
    let body = Bytes::from(body);
    decode_with(frame_type, &body, limits, |start| body.slice(start..)).map(Some)
}

/// Decodes one frame's body, given its type byte. `body` is everything after the type byte.
/// Checks the frame size against `limits` as [`read_message`] does; media data is copied out of
/// `body` (use [`read_message`] to avoid that).
pub fn decode_frame(frame_type: u8, body: &[u8], limits: &Limits) -> Result<Message, ProtoError> {
    check_frame_len((body.len() as u64).saturating_add(1), limits)?;
    decode_with(frame_type, body, limits, |start| {
        Bytes::copy_from_slice(body.get(start..).unwrap_or_default())
    })
}

fn check_frame_len(len: u64, limits: &Limits) -> Result<(), ProtoError> {
    let max = limits.max_frame_bytes as u64;
    if len > max {
        return Err(ProtoError::FrameTooLarge { len, max });
    }
    if len == 0 {
        return Err(ProtoError::Malformed(
            "zero-length frame (no message type)".into(),
        ));
    }
    Ok(())
}

/// Decodes a body; `data` turns the start offset of a media body's raw bytes into the `Bytes` to
/// put in the message (a slice of a shared buffer, or a copy). The offset is always within
/// `body`.
fn decode_with(
    frame_type: u8,
    body: &[u8],
    limits: &Limits,
    data: impl FnOnce(usize) -> Bytes,
) -> Result<Message, ProtoError> {
    let t = MessageType::from_u8(frame_type).ok_or(ProtoError::UnknownType(frame_type))?;
    let msg = if t.is_media() {
        decode_media(t, body, data)?
    } else {
        decode_metadata(t, body, limits)?
    };
    msg.validate()?;
    Ok(msg)
}

// ---- metadata ----

fn encode_metadata(msg: &Message) -> Result<Vec<u8>, ProtoError> {
    msg.validate()?;
    let json = serde_json::to_vec(msg).map_err(|e| ProtoError::Json(e.to_string()))?;
    let compressed = zstd::bulk::compress(&json, ZSTD_LEVEL)?;
    let len = compressed.len() as u64 + 1;
    let len = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge {
        len,
        max: u64::from(u32::MAX),
    })?;
    let mut frame = Vec::with_capacity(FRAME_PREFIX_BYTES + compressed.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(msg.message_type().as_u8());
    frame.extend_from_slice(&compressed);
    Ok(frame)
}

/// Largest zstd window the decoder accepts for a decompressed-size cap: the smallest power of two
/// holding `cap` (at least 1 KiB, at most zstd's default 128 MiB). A window larger than the whole
/// allowed output is never needed, and refusing it keeps the decoder's own memory bounded.
fn window_log_max(cap: usize) -> u32 {
    let log = usize::BITS - cap.saturating_sub(1).leading_zeros();
    log.clamp(10, 27)
}

/// Decompresses at most `cap` bytes; more is [`ProtoError::DecompressedTooLarge`]. The output
/// buffer never exceeds about twice `cap`.
fn decompress_capped(body: &[u8], cap: usize) -> Result<Vec<u8>, ProtoError> {
    let dec_err = |e: std::io::Error| ProtoError::Decompress(e.to_string());
    let mut dec = zstd::stream::read::Decoder::with_buffer(body).map_err(dec_err)?;
    dec.window_log_max(window_log_max(cap)).map_err(dec_err)?;
    let mut out = Vec::new();
    (&mut dec)
        .take((cap as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(dec_err)?;
    if out.len() > cap {
        return Err(ProtoError::DecompressedTooLarge { max: cap });
    }
    Ok(out)
}

fn decode_metadata(t: MessageType, body: &[u8], limits: &Limits) -> Result<Message, ProtoError> {
    let json = decompress_capped(body, limits.max_metadata_decompressed_bytes)?;
    let msg: Message =
        serde_json::from_slice(&json).map_err(|e| ProtoError::Json(e.to_string()))?;
    let body_type = msg.message_type();
    if body_type != t {
        return Err(ProtoError::Malformed(format!(
            "type byte {} ({t:?}) but the body is a {body_type:?}",
            t.as_u8()
        )));
    }
    Ok(msg)
}

// ---- media ----

/// For a media message: the frame prefix plus binary header, and the data to follow it.
/// `None` for metadata messages.
fn media_parts(msg: &Message) -> Result<Option<(Vec<u8>, &Bytes)>, ProtoError> {
    let (key, offset, data, last) = match msg {
        Message::SegmentData { key, offset, data } => (key, *offset, data, None),
        Message::FetchData {
            key,
            offset,
            data,
            last,
        } => (key, *offset, data, Some(*last)),
        _ => return Ok(None),
    };
    msg.validate()?;
    let t = msg.message_type();
    let header_len = media_header_len(t, key);
    let len = 1 + header_len as u64 + data.len() as u64;
    let len = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge {
        len,
        max: u64::from(u32::MAX),
    })?;
    let mut out = Vec::with_capacity(FRAME_PREFIX_BYTES + header_len);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(t.as_u8());
    put_str16(&mut out, &key.origin_node, "key.origin_node")?;
    put_str16(&mut out, &key.path, "key.path")?;
    out.extend_from_slice(&offset.to_be_bytes());
    if let Some(last) = last {
        out.push(u8::from(last));
    }
    Ok(Some((out, data)))
}

fn put_str16(out: &mut Vec<u8>, s: &str, field: &str) -> Result<(), ProtoError> {
    let len = u16::try_from(s.len()).map_err(|_| ProtoError::InvalidKey {
        field: field.to_owned(),
        reason: "longer than 65535 bytes".into(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Reads a media header from the front of a body.
struct HeaderReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> HeaderReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or(ProtoError::Truncated("media header"))?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, ProtoError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn str16(&mut self, field: &str) -> Result<String, ProtoError> {
        let n = self.u16()?;
        let b = self.take(usize::from(n))?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(ProtoError::InvalidKey {
                field: field.to_owned(),
                reason: "not UTF-8".into(),
            }),
        }
    }
}

fn decode_media(
    t: MessageType,
    body: &[u8],
    data: impl FnOnce(usize) -> Bytes,
) -> Result<Message, ProtoError> {
    let mut h = HeaderReader { buf: body, pos: 0 };
    let origin_node = h.str16("key.origin_node")?;
    let path = h.str16("key.path")?;
    let key = SegmentKey { origin_node, path };
    // Validate before handing out anything (and before touching the data).
    key.validate("key")?;
    let offset = h.u64()?;
    let msg = if t == MessageType::FetchData {
        let last = match h.u8()? {
            0 => false,
            1 => true,
            b => {
                return Err(ProtoError::Malformed(format!(
                    "FetchData last flag is {b}, not 0 or 1"
                )))
            }
        };
        Message::FetchData {
            key,
            offset,
            data: data(h.pos),
            last,
        }
    } else {
        Message::SegmentData {
            key,
            offset,
            data: data(h.pos),
        }
    };
    Ok(msg)
}
