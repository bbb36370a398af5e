//! Tests for the wire protocol: round trips, framing errors, limits, key validation, and
//! property/fuzz-style tests that decoding hostile input never panics.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::executor::block_on;
use proptest::prelude::*;
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};

use super::*;

fn key(origin: &str, path: &str) -> SegmentKey {
    SegmentKey {
        origin_node: origin.into(),
        path: path.into(),
    }
}

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// One message of every type.
fn samples() -> Vec<Message> {
    let k = key("nvr-a1", "cam1/main/2024/05/01/12-00-00.mp4");
    vec![
        Message::Hello {
            protocol_version: PROTOCOL_VERSION,
            node: "nvr-a1".into(),
            role: Role::Primary,
            software: "nvr-sync 0.1.0".into(),
        },
        Message::HelloAck {
            protocol_version: PROTOCOL_VERSION,
            node: "nvr_b2".into(),
        },
        Message::StandbyState {
            holdings: vec![
                Holding {
                    key: k.clone(),
                    bytes_held: 123_456,
                    sealed_sha256: None,
                },
                Holding {
                    key: key("nvr-a1", "cam2/x.mp4"),
                    bytes_held: 9,
                    sealed_sha256: Some(sha('a')),
                },
            ],
            head: Some(json!({"size": 3, "root": "ab", "sig": [1, 2]})),
            sealed_below_leaf: 41,
            more: true,
        },
        Message::SegmentOpen {
            key: k.clone(),
            info: SegmentInfo {
                camera: "cam1".into(),
                stream: "main".into(),
                start_ms: -5,
                video_codec: "h264".into(),
                width: 1920,
                height: 1080,
                audio_codec: Some("aac".into()),
            },
        },
        Message::SegmentData {
            key: k.clone(),
            offset: 4096,
            data: Bytes::from_static(b"\0moof\xff\x00data"),
        },
        Message::SegmentSealed {
            key: k.clone(),
            size_bytes: 1 << 40,
            sha256: sha('0'),
            end_ms: i64::MAX,
            frames: 900,
            leaf_index: 7,
            epoch: Some(3),
        },
        Message::TreeHead {
            head: json!({"size": 8}),
            first_leaf: 5,
            consistency_proof: vec![sha('1'), "00ff".into()],
            leaves: vec![json!({"k": 1}), json!(null), json!("x")],
        },
        Message::Ack {
            key: k.clone(),
            bytes_durable: u64::MAX,
        },
        Message::HeadAccepted {
            countersignature: json!({"by": "nvr_b2", "sig": "00"}),
        },
        Message::Refused {
            key: Some(k.clone()),
            reason: "disk full".into(),
        },
        Message::Ping {
            nonce: 1,
            sent_ms: 1_700_000_000_000,
        },
        Message::Pong {
            nonce: u64::MAX,
            sent_ms: i64::MIN,
        },
        Message::FetchRequest {
            key: k.clone(),
            offset: 10,
            len: 20,
        },
        Message::FetchData {
            key: k.clone(),
            offset: 10,
            data: Bytes::new(),
            last: true,
        },
        Message::FetchList {
            origin_node: Some("nvr-a1".into()),
            camera: None,
            start_ms: Some(0),
            end_ms: None,
        },
        Message::FetchListReply {
            segments: vec![json!({"path": "a"}), json!([])],
            more: false,
        },
        Message::Error {
            code: ErrorCode::VersionMismatch,
            message: "want 1".into(),
        },
        Message::HeadChain {
            heads: vec![json!({"head": {"size": 1}, "countersignature": null})],
            more: true,
        },
    ]
}

/// Splits an encoded frame into (type byte, body) after checking its length field.
fn split(frame: &[u8]) -> (u8, &[u8]) {
    assert!(frame.len() >= FRAME_PREFIX_BYTES);
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - 4, "length field counts type byte + body");
    (frame[4], &frame[5..])
}

fn frame(t: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(t);
    f.extend_from_slice(body);
    f
}

fn zstd_body(json: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(json, 3).unwrap()
}

/// Decodes all frames from a byte stream until clean EOF or the first error.
fn read_all(bytes: &[u8], limits: &Limits) -> (Vec<Message>, Option<ProtoError>) {
    let mut r = bytes;
    let mut out = Vec::new();
    loop {
        match block_on(read_message(&mut r, limits)) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

#[test]
fn samples_cover_every_type() {
    let types: Vec<MessageType> = samples().iter().map(Message::message_type).collect();
    assert_eq!(types, MessageType::ALL.to_vec());
    for t in MessageType::ALL {
        assert_eq!(MessageType::from_u8(t.as_u8()), Some(t));
    }
    assert_eq!(MessageType::from_u8(0), None);
    assert_eq!(MessageType::from_u8(19), None);
}

#[test]
fn round_trip_every_message_in_memory() {
    let limits = Limits::default();
    for msg in samples() {
        let f = encode(&msg).unwrap();
        let (t, body) = split(&f);
        assert_eq!(t, msg.message_type().as_u8());
        let back = decode_frame(t, body, &limits).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn round_trip_every_message_over_a_stream() {
    let msgs = samples();
    let mut wire: Vec<u8> = Vec::new();
    for m in &msgs {
        block_on(write_message(&mut wire, m)).unwrap();
    }
    // write_message and encode produce the same bytes.
    let concat: Vec<u8> = msgs.iter().flat_map(|m| encode(m).unwrap()).collect();
    assert_eq!(wire, concat);
    let (back, err) = read_all(&wire, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(back, msgs);
}

#[test]
fn metadata_bodies_are_zstd_json_naming_their_type() {
    let msg = Message::Ping {
        nonce: 42,
        sent_ms: 7,
    };
    let f = encode(&msg).unwrap();
    let (t, body) = split(&f);
    assert_eq!(t, 11);
    let json: serde_json::Value =
        serde_json::from_slice(&zstd::stream::decode_all(body).unwrap()).unwrap();
    assert_eq!(json, json!({"ping": {"nonce": 42, "sent_ms": 7}}));
}

#[test]
fn media_header_layout_is_as_documented() {
    let msg = Message::FetchData {
        key: key("n1", "a/b"),
        offset: 0x0102_0304_0506_0708,
        data: Bytes::from_static(b"XYZ"),
        last: true,
    };
    let f = encode(&msg).unwrap();
    let expected: Vec<u8> = [
        &[0, 0, 0, 22][..],        // length: 1 + 18 + 3
        &[14],                     // FetchData
        &[0, 2, b'n', b'1'],       // origin node
        &[0, 3, b'a', b'/', b'b'], // path
        &[1, 2, 3, 4, 5, 6, 7, 8], // offset
        &[1],                      // last
        b"XYZ",                    // raw data
    ]
    .concat();
    assert_eq!(f, expected);
    assert_eq!(
        media_header_len(MessageType::FetchData, &key("n1", "a/b")),
        18
    );
    assert_eq!(
        media_header_len(MessageType::SegmentData, &key("n1", "a/b")),
        17
    );
}

#[test]
fn large_media_round_trips_over_a_stream() {
    let data = Bytes::from((0..1_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let msg = Message::SegmentData {
        key: key("n", "s.mp4"),
        offset: 1 << 33,
        data,
    };
    let mut wire = Vec::new();
    block_on(write_message(&mut wire, &msg)).unwrap();
    let (back, err) = read_all(&wire, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(back, vec![msg]);
}

// ---- framing errors ----

#[test]
fn clean_eof_is_none_and_eof_mid_frame_is_truncated() {
    let limits = Limits::default();
    let mut empty: &[u8] = &[];
    assert!(block_on(read_message(&mut empty, &limits))
        .unwrap()
        .is_none());

    let f = encode(&samples()[3]).unwrap();
    for cut in 1..f.len() {
        let mut r = &f[..cut];
        match block_on(read_message(&mut r, &limits)) {
            Err(ProtoError::Truncated(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // A whole frame followed by a partial one: the first decodes, then Truncated.
    let mut two = f.clone();
    two.extend_from_slice(&f[..7]);
    let (msgs, err) = read_all(&two, &limits);
    assert_eq!(msgs.len(), 1);
    assert!(matches!(err, Some(ProtoError::Truncated(_))), "{err:?}");
}

/// Serves `prefix`, then fails any further read: proves the decoder did not read (or wait for)
/// the body.
struct PrefixThenFail<'a> {
    prefix: &'a [u8],
}

impl AsyncRead for PrefixThenFail<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Poll::Ready(Err(std::io::Error::other("read past the frame header")));
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix = &self.prefix[n..];
        Poll::Ready(Ok(()))
    }
}

#[test]
fn frame_announcing_4_gib_is_rejected_before_reading_or_allocating() {
    let mut r = PrefixThenFail {
        prefix: &[0xff, 0xff, 0xff, 0xff],
    };
    match block_on(read_message(&mut r, &Limits::default())) {
        Err(ProtoError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u64::from(u32::MAX));
            assert_eq!(max, 8 * 1024 * 1024);
        }
        other => panic!("{other:?}"),
    }
    // Just over the limit.
    let limits = Limits {
        max_frame_bytes: 100,
        ..Limits::default()
    };
    let mut r = PrefixThenFail {
        prefix: &[0, 0, 0, 101],
    };
    assert!(matches!(
        block_on(read_message(&mut r, &limits)),
        Err(ProtoError::FrameTooLarge { len: 101, max: 100 })
    ));
    // decode_frame applies the same limit.
    assert!(matches!(
        decode_frame(5, &[0u8; 100], &limits),
        Err(ProtoError::FrameTooLarge { len: 101, max: 100 })
    ));
}

#[test]
fn huge_allowed_frame_with_little_data_is_truncated() {
    // With the limit lifted, a 4 GiB announcement followed by a few bytes ends in Truncated.
    // (That the buffer grows with the data instead of being reserved up front is not observable
    // here without a counting allocator, which would need unsafe code; this checks the outcome.)
    let limits = Limits {
        max_frame_bytes: usize::MAX,
        ..Limits::default()
    };
    let mut wire = vec![0xff, 0xff, 0xff, 0xff, 5];
    wire.extend_from_slice(&[0u8; 1000]);
    let mut r = &wire[..];
    assert!(matches!(
        block_on(read_message(&mut r, &limits)),
        Err(ProtoError::Truncated(_))
    ));
}

#[test]
fn unknown_type_is_rejected_before_the_body() {
    for t in [0u8, 19, 200, 255] {
        let mut hdr = 1000u32.to_be_bytes().to_vec();
        hdr.push(t);
        let mut r = PrefixThenFail { prefix: &hdr };
        assert!(
            matches!(block_on(read_message(&mut r, &Limits::default())), Err(ProtoError::UnknownType(x)) if x == t)
        );
        assert!(matches!(
            decode_frame(t, &[], &Limits::default()),
            Err(ProtoError::UnknownType(x)) if x == t
        ));
    }
}

#[test]
fn zero_length_frame_is_malformed() {
    let mut r: &[u8] = &[0, 0, 0, 0];
    assert!(matches!(
        block_on(read_message(&mut r, &Limits::default())),
        Err(ProtoError::Malformed(_))
    ));
}

// ---- metadata limits ----

/// Peak resident memory of this process (VmHWM), in bytes.
#[cfg(target_os = "linux")]
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn zstd_bomb_is_rejected_with_bounded_memory() {
    // 1 GiB of zeros, compressed while streaming from a 1 MiB buffer.
    const GIB: usize = 1 << 30;
    let zeros = vec![0u8; 1 << 20];
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    for _ in 0..GIB / zeros.len() {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 256 * 1024, "bomb is {} bytes", bomb.len());

    #[cfg(target_os = "linux")]
    let before = peak_rss();
    let limits = Limits::default();
    for t in [MessageType::Hello, MessageType::FetchListReply] {
        match decode_frame(t.as_u8(), &bomb, &limits) {
            Err(ProtoError::DecompressedTooLarge { max }) => {
                assert_eq!(max, limits.max_metadata_decompressed_bytes)
            }
            other => panic!("{other:?}"),
        }
    }
    let mut r = &frame(MessageType::TreeHead.as_u8(), &bomb)[..];
    assert!(matches!(
        block_on(read_message(&mut r, &limits)),
        Err(ProtoError::DecompressedTooLarge { .. })
    ));
    #[cfg(target_os = "linux")]
    {
        // Decoding the whole bomb would need >= 1 GiB; the cap allows ~2 x 4 MiB of output plus
        // the zstd window. Other tests run concurrently, hence the slack.
        let grown = peak_rss().saturating_sub(before);
        assert!(grown < 128 << 20, "peak RSS grew by {grown} bytes");
    }
}

#[test]
fn zstd_frame_needing_a_huge_window_is_refused() {
    // A frame that declares a 128 MiB window (the encoder does not know the content size).
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.window_log(27).unwrap();
    enc.include_contentsize(false).unwrap();
    enc.write_all(br#"{"ping":{"nonce":1,"sent_ms":2}}"#)
        .unwrap();
    let body = enc.finish().unwrap();
    // It is a valid frame for an unrestricted decoder.
    assert!(zstd::stream::decode_all(&body[..]).is_ok());
    match decode_frame(MessageType::Ping.as_u8(), &body, &Limits::default()) {
        Err(ProtoError::Decompress(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn decompressed_size_limit_is_exact() {
    let json = br#"{"ping":{"nonce":1,"sent_ms":2}}"#;
    let limits = Limits {
        max_metadata_decompressed_bytes: 100,
        ..Limits::default()
    };
    let pad = |n: usize| {
        let mut j = json.to_vec();
        j.resize(n, b' ');
        zstd_body(&j)
    };
    assert_eq!(
        decode_frame(11, &pad(100), &limits).unwrap(),
        Message::Ping {
            nonce: 1,
            sent_ms: 2
        }
    );
    assert!(matches!(
        decode_frame(11, &pad(101), &limits),
        Err(ProtoError::DecompressedTooLarge { max: 100 })
    ));
}

#[test]
fn bad_metadata_bodies_are_errors() {
    let l = Limits::default();
    // Not zstd.
    assert!(matches!(
        decode_frame(11, b"{\"ping\":{}}", &l),
        Err(ProtoError::Decompress(_))
    ));
    // Empty body.
    assert!(decode_frame(11, b"", &l).is_err());
    // zstd, not JSON.
    assert!(matches!(
        decode_frame(11, &zstd_body(b"\xff\xfe"), &l),
        Err(ProtoError::Json(_))
    ));
    // Type byte disagrees with the body.
    assert!(matches!(
        decode_frame(12, &zstd_body(br#"{"ping":{"nonce":1,"sent_ms":2}}"#), &l),
        Err(ProtoError::Malformed(_))
    ));
    // A media variant inside a metadata body.
    assert!(matches!(
        decode_frame(
            11,
            &zstd_body(br#"{"segment_data":{"key":{"origin_node":"a","path":"b"},"offset":0}}"#),
            &l
        ),
        Err(ProtoError::Json(_))
    ));
    // Missing field, wrong type, out-of-range integer.
    for j in [
        &br#"{"ping":{"nonce":1}}"#[..],
        br#"{"ping":{"nonce":"1","sent_ms":2}}"#,
        br#"{"hello_ack":{"protocol_version":65536,"node":"a"}}"#,
        br#"{"error":{"code":"nope","message":""}}"#,
    ] {
        assert!(
            matches!(
                decode_frame(11, &zstd_body(j), &l),
                Err(ProtoError::Json(_))
            ),
            "{}",
            String::from_utf8_lossy(j)
        );
    }
    // Deeply nested opaque JSON is refused (serde_json's depth limit), not a stack overflow.
    let mut deep = br#"{"head_accepted":{"countersignature":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.extend_from_slice(b"}}");
    assert!(matches!(
        decode_frame(9, &zstd_body(&deep), &l),
        Err(ProtoError::Json(_))
    ));
    // Bad digests.
    let sealed = |sha: &str| {
        format!(
            r#"{{"segment_sealed":{{"key":{{"origin_node":"a","path":"b"}},"size_bytes":1,"sha256":"{sha}","end_ms":0,"frames":0,"leaf_index":0}}}}"#
        )
    };
    // A version 2 seal has no epoch: read as none.
    match decode_frame(6, &zstd_body(sealed(&sha('a')).as_bytes()), &l) {
        Ok(Message::SegmentSealed { epoch: None, .. }) => {}
        other => panic!("version 2 seal: {other:?}"),
    }
    for bad in [sha('A'), sha('g'), "ab".into(), String::new()] {
        assert!(matches!(
            decode_frame(6, &zstd_body(sealed(&bad).as_bytes()), &l),
            Err(ProtoError::Malformed(_))
        ));
    }
}

#[test]
fn bad_media_bodies_are_errors() {
    let l = Limits::default();
    let good = encode(&samples()[13]).unwrap(); // FetchData
    let (_, body) = split(&good);
    // last flag other than 0/1.
    let mut b = body.to_vec();
    // The sample's data is empty, so the flag is the last byte.
    let flag_at = b.len() - 1;
    assert_eq!(b[flag_at], 1);
    b[flag_at] = 2;
    assert!(matches!(
        decode_frame(14, &b, &l),
        Err(ProtoError::Malformed(_))
    ));
    // Every truncation of the header.
    for cut in 0..body.len() {
        assert!(matches!(
            decode_frame(14, &body[..cut], &l),
            Err(ProtoError::Truncated(_))
        ));
    }
    // Offset + length overflowing u64.
    let mut hdr = vec![0, 1, b'n', 0, 1, b'p'];
    hdr.extend_from_slice(&(u64::MAX - 1).to_be_bytes());
    hdr.extend_from_slice(b"abc");
    assert!(matches!(
        decode_frame(5, &hdr, &l),
        Err(ProtoError::Malformed(_))
    ));
    // Non-UTF-8 path.
    let hdr = [0, 1, b'n', 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        decode_frame(5, &hdr, &l),
        Err(ProtoError::InvalidKey { field, .. }) if field == "key.path"
    ));
}

// ---- key validation ----

const BAD_PATHS: &[&str] = &[
    "../x", "a/../b", "..", "x/..", "/abs", "/", "a//b", "a/", "", "a\0b", "./a", "a/./b", "a\\b",
    "a\nb",
];

const BAD_NODES: &[&str] = &[
    "", "Upper", "-lead", "_lead", "a b", "node.x", "nodé", "a/b", "a\0",
];

fn long_node() -> String {
    "a".repeat(64)
}

fn media_body(origin: &str, path: &str) -> Vec<u8> {
    let mut b = (origin.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(origin.as_bytes());
    b.extend_from_slice(&(path.len() as u16).to_be_bytes());
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&0u64.to_be_bytes());
    b.extend_from_slice(b"data");
    b
}

fn ack_body(origin: &str, path: &str) -> Vec<u8> {
    zstd_body(
        json!({"ack": {"key": {"origin_node": origin, "path": path}, "bytes_durable": 1}})
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn good_keys_are_accepted() {
    let l = Limits::default();
    let max_node = "a".repeat(63);
    let max_path = [
        "b".repeat(255),
        "c".repeat(255),
        "d".repeat(255),
        "e".repeat(256),
    ]
    .join("/");
    assert_eq!(max_path.len(), 1024);
    for (o, p) in [
        ("a", "x"),
        ("0", "x.mp4"),
        ("nvr-1_b", "cam/2024/..hidden/x..y/.z"),
        (max_node.as_str(), "x"),
    ] {
        assert!(decode_frame(5, &media_body(o, p), &l).is_ok(), "{o} {p}");
        assert!(decode_frame(8, &ack_body(o, p), &l).is_ok(), "{o} {p}");
    }
    // One component over 255 bytes.
    assert!(decode_frame(5, &media_body("a", &max_path), &l).is_err());
    let ok_long = [
        "b".repeat(255),
        "c".repeat(255),
        "d".repeat(255),
        "e".repeat(255),
    ]
    .join("/");
    assert!(decode_frame(5, &media_body("a", &ok_long), &l).is_ok());
}

#[test]
fn bad_keys_are_decode_errors_naming_the_field() {
    let l = Limits::default();
    let too_long_path = "a/".repeat(600);
    let mut paths: Vec<&str> = BAD_PATHS.to_vec();
    paths.push(&too_long_path);
    for p in paths {
        for (t, body) in [(5u8, media_body("a", p)), (8, ack_body("a", p))] {
            match decode_frame(t, &body, &l) {
                Err(ProtoError::InvalidKey { field, .. }) => {
                    assert_eq!(field, "key.path", "{p:?}")
                }
                other => panic!("type {t} path {p:?}: {other:?}"),
            }
        }
    }
    let long = long_node();
    let mut nodes: Vec<&str> = BAD_NODES.to_vec();
    nodes.push(&long);
    for n in nodes {
        for (t, body) in [(5u8, media_body(n, "x")), (8, ack_body(n, "x"))] {
            match decode_frame(t, &body, &l) {
                Err(ProtoError::InvalidKey { field, .. }) => {
                    assert_eq!(field, "key.origin_node", "{n:?}")
                }
                other => panic!("type {t} node {n:?}: {other:?}"),
            }
        }
        let hello =
            json!({"hello": {"protocol_version": 1, "node": n, "role": "primary", "software": ""}});
        assert!(matches!(
            decode_frame(1, &zstd_body(hello.to_string().as_bytes()), &l),
            Err(ProtoError::InvalidKey { field, .. }) if field == "node"
        ));
    }
    // Field path inside a list.
    let state = json!({"standby_state": {"holdings": [
        {"key": {"origin_node": "a", "path": "ok"}, "bytes_held": 1, "sealed_sha256": null},
        {"key": {"origin_node": "a", "path": "../etc/passwd"}, "bytes_held": 1, "sealed_sha256": null},
    ], "head": null, "sealed_below_leaf": 0, "more": false}});
    match decode_frame(3, &zstd_body(state.to_string().as_bytes()), &l) {
        Err(ProtoError::InvalidKey { field, reason }) => {
            assert_eq!(field, "holdings[1].key.path");
            assert!(reason.contains(".."), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let list = json!({"fetch_list": {"origin_node": "BAD", "camera": null, "start_ms": null, "end_ms": null}});
    assert!(matches!(
        decode_frame(15, &zstd_body(list.to_string().as_bytes()), &l),
        Err(ProtoError::InvalidKey { field, .. }) if field == "origin_node"
    ));
}

#[test]
fn encode_refuses_what_a_peer_would_reject() {
    for p in BAD_PATHS {
        let m = Message::SegmentData {
            key: key("a", p),
            offset: 0,
            data: Bytes::new(),
        };
        assert!(matches!(encode(&m), Err(ProtoError::InvalidKey { .. })));
        let m = Message::Ack {
            key: key("a", p),
            bytes_durable: 0,
        };
        assert!(matches!(encode(&m), Err(ProtoError::InvalidKey { .. })));
        let mut sink = Vec::new();
        assert!(block_on(write_message(&mut sink, &m)).is_err());
        assert!(sink.is_empty());
    }
    let m = Message::FetchRequest {
        key: key("a", "b"),
        offset: u64::MAX,
        len: 1,
    };
    assert!(matches!(encode(&m), Err(ProtoError::Malformed(_))));
}

/// What grows with history travels in pages: 100 000 holdings split by `paginate` each fit the
/// metadata limit and decode; a page over `MAX_PAGE_ITEMS` is refused both ways.
#[test]
fn histories_travel_in_bounded_pages() {
    let holdings: Vec<Holding> = (0..100_000)
        .map(|i| Holding {
            key: key(
                "nvr-a1",
                &format!("media/cam1/main/2026/01/01/{i:09}_nvr-a1.mp4"),
            ),
            bytes_held: i,
            sealed_sha256: Some(sha('b')),
        })
        .collect();
    let whole = Message::StandbyState {
        holdings: holdings.clone(),
        head: None,
        sealed_below_leaf: 0,
        more: false,
    };
    assert!(matches!(encode(&whole), Err(ProtoError::Malformed(_))));
    let pages = paginate(holdings.clone());
    assert_eq!(pages.len(), 100_000usize.div_ceil(MAX_PAGE_ITEMS));
    let l = Limits::default();
    let mut back = Vec::new();
    let n = pages.len();
    for (i, page) in pages.into_iter().enumerate() {
        let m = Message::StandbyState {
            holdings: page,
            head: None,
            sealed_below_leaf: 7,
            more: i + 1 < n,
        };
        let frame = encode(&m).unwrap();
        let (t, body) = split(&frame);
        match decode_frame(t, body, &l).unwrap() {
            Message::StandbyState { holdings, more, .. } => {
                assert_eq!(more, i + 1 < n);
                back.extend(holdings);
            }
            other => panic!("decoded {other:?}"),
        }
    }
    assert_eq!(back, holdings);

    // Large entries: pages stay near the byte target, one entry per page at worst.
    let big: Vec<String> = (0..7).map(|i| "x".repeat(300_000 + i)).collect();
    let pages = paginate(big.clone());
    assert!(pages.iter().all(|p| !p.is_empty()
        && (p.len() == 1 || p.iter().map(String::len).sum::<usize>() <= PAGE_TARGET_BYTES)));
    assert_eq!(pages.concat(), big);
    assert_eq!(paginate(Vec::<u8>::new()), vec![Vec::<u8>::new()]);

    // A decoded page over the limit is malformed (the peer's encoder would refuse it too).
    let leaves: Vec<serde_json::Value> = (0..=MAX_PAGE_ITEMS).map(|i| json!(i)).collect();
    let body = json!({"tree_head": {"head": null, "first_leaf": 0, "consistency_proof": [], "leaves": leaves}});
    assert!(matches!(
        decode_frame(
            MessageType::TreeHead.as_u8(),
            &zstd_body(body.to_string().as_bytes()),
            &l
        ),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn error_codes_for_errors() {
    assert_eq!(
        ProtoError::Io(std::io::Error::other("x")).error_code(),
        ErrorCode::Internal
    );
    assert_eq!(
        ProtoError::UnknownType(0).error_code(),
        ErrorCode::Malformed
    );
}

// ---- property tests ----

fn node_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,12}"
}

fn segment_key() -> impl Strategy<Value = SegmentKey> {
    (
        node_name(),
        "[a-z0-9_-][a-z0-9_.-]{0,10}(/[a-zA-Z0-9_-][a-zA-Z0-9 _.-]{0,10}){0,3}",
    )
        .prop_map(|(origin_node, path)| SegmentKey { origin_node, path })
}

fn hex(bytes: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), bytes)
        .prop_map(|v| v.iter().map(|b| format!("{b:02x}")).collect())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn non_null_json() -> impl Strategy<Value = serde_json::Value> {
    json_value().prop_filter("not null", |v| !v.is_null())
}

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn message() -> impl Strategy<Value = Message> {
    let small = any::<u32>().prop_map(u64::from);
    prop_oneof![
        (any::<u16>(), node_name(), any::<bool>(), ".{0,20}").prop_map(|(v, node, p, software)| {
            Message::Hello {
                protocol_version: v,
                node,
                role: if p { Role::Primary } else { Role::Standby },
                software,
            }
        }),
        (any::<u16>(), node_name()).prop_map(|(protocol_version, node)| Message::HelloAck {
            protocol_version,
            node
        }),
        (
            prop::collection::vec(
                (segment_key(), any::<u64>(), prop::option::of(hex(32..=32))).prop_map(
                    |(key, bytes_held, sealed_sha256)| Holding {
                        key,
                        bytes_held,
                        sealed_sha256
                    }
                ),
                0..4
            ),
            prop::option::of(non_null_json()),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(holdings, head, sealed_below_leaf, more)| Message::StandbyState {
                    holdings,
                    head,
                    sealed_below_leaf,
                    more
                }
            ),
        (
            segment_key(),
            ".{0,8}",
            ".{0,8}",
            any::<i64>(),
            ".{0,8}",
            any::<u32>(),
            any::<u32>(),
            prop::option::of(".{0,8}")
        )
            .prop_map(
                |(key, camera, stream, start_ms, video_codec, width, height, audio_codec)| {
                    Message::SegmentOpen {
                        key,
                        info: SegmentInfo {
                            camera,
                            stream,
                            start_ms,
                            video_codec,
                            width,
                            height,
                            audio_codec,
                        },
                    }
                }
            ),
        (segment_key(), small.clone(), data())
            .prop_map(|(key, offset, data)| Message::SegmentData { key, offset, data }),
        (
            segment_key(),
            any::<u64>(),
            hex(32..=32),
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
            any::<Option<u64>>()
        )
            .prop_map(
                |(key, size_bytes, sha256, end_ms, frames, leaf_index, epoch)| {
                    Message::SegmentSealed {
                        key,
                        size_bytes,
                        sha256,
                        end_ms,
                        frames,
                        leaf_index,
                        epoch,
                    }
                }
            ),
        (
            json_value(),
            0..u64::MAX / 2,
            prop::collection::vec(hex(1..=64), 0..5),
            prop::collection::vec(json_value(), 0..4)
        )
            .prop_map(
                |(head, first_leaf, consistency_proof, leaves)| Message::TreeHead {
                    head,
                    first_leaf,
                    consistency_proof,
                    leaves
                }
            ),
        (segment_key(), any::<u64>())
            .prop_map(|(key, bytes_durable)| Message::Ack { key, bytes_durable }),
        json_value().prop_map(|countersignature| Message::HeadAccepted { countersignature }),
        (prop::option::of(segment_key()), ".{0,30}")
            .prop_map(|(key, reason)| Message::Refused { key, reason }),
        (any::<u64>(), any::<i64>()).prop_map(|(nonce, sent_ms)| Message::Ping { nonce, sent_ms }),
        (any::<u64>(), any::<i64>()).prop_map(|(nonce, sent_ms)| Message::Pong { nonce, sent_ms }),
        (segment_key(), small.clone(), small.clone())
            .prop_map(|(key, offset, len)| Message::FetchRequest { key, offset, len }),
        (segment_key(), small, data(), any::<bool>()).prop_map(|(key, offset, data, last)| {
            Message::FetchData {
                key,
                offset,
                data,
                last,
            }
        }),
        (
            prop::option::of(node_name()),
            prop::option::of(".{0,8}"),
            prop::option::of(any::<i64>()),
            prop::option::of(any::<i64>())
        )
            .prop_map(
                |(origin_node, camera, start_ms, end_ms)| Message::FetchList {
                    origin_node,
                    camera,
                    start_ms,
                    end_ms
                }
            ),
        (prop::collection::vec(json_value(), 0..4), any::<bool>())
            .prop_map(|(segments, more)| Message::FetchListReply { segments, more }),
        (prop::collection::vec(json_value(), 0..4), any::<bool>())
            .prop_map(|(heads, more)| Message::HeadChain { heads, more }),
        (
            prop_oneof![
                Just(ErrorCode::VersionMismatch),
                Just(ErrorCode::Unauthorized),
                Just(ErrorCode::Malformed),
                Just(ErrorCode::Internal)
            ],
            ".{0,30}"
        )
            .prop_map(|(code, message)| Message::Error { code, message }),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Anything decoded is valid and re-encodes to something that decodes to the same message.
fn check_decoded(msg: &Message, limits: &Limits) -> Result<(), TestCaseError> {
    prop_assert!(msg.validate().is_ok());
    let f = encode(msg).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
    let (t, body) = split(&f);
    let back = decode_frame(t, body, limits);
    prop_assert!(matches!(&back, Ok(m) if m == msg), "{back:?}");
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len();
    match *m {
        Mutation::Set(i, b) => buf[i % n] = b,
        Mutation::Flip(i, bit) => buf[i % n] ^= 1 << bit,
        Mutation::Truncate(i) => buf.truncate(i % n),
        Mutation::Insert(i, b) => buf.insert(i % (n + 1), b),
        Mutation::Remove(i) => {
            buf.remove(i % n);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn prop_round_trip(msgs in prop::collection::vec(message(), 1..5)) {
        let limits = Limits::default();
        let mut wire = Vec::new();
        for m in &msgs {
            let f = encode(m).unwrap();
            let (t, body) = split(&f);
            prop_assert_eq!(&decode_frame(t, body, &limits).unwrap(), m);
            block_on(write_message(&mut wire, m)).unwrap();
        }
        let (back, err) = read_all(&wire, &limits);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn prop_arbitrary_stream_never_panics_and_respects_limits(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        max_frame in 1usize..4096,
        max_meta in 0usize..4096,
    ) {
        let limits = Limits { max_frame_bytes: max_frame, max_metadata_decompressed_bytes: max_meta };
        let (msgs, err) = read_all(&bytes, &limits);
        for m in &msgs {
            check_decoded(m, &Limits::default())?;
        }
        if msgs.is_empty() && bytes.len() >= 4 {
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len > max_frame {
                let too_large = matches!(err, Some(ProtoError::FrameTooLarge { .. }));
                prop_assert!(too_large, "{:?}", err);
            }
        }
    }

    #[test]
    fn prop_arbitrary_frames_never_panic(
        t in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let limits = Limits::default();
        if let Ok(m) = decode_frame(t, &body, &limits) {
            prop_assert_eq!(m.message_type().as_u8(), t);
            check_decoded(&m, &limits)?;
        }
        // Same body framed and read from a stream: same outcome.
        let f = frame(t, &body);
        let mut r = &f[..];
        let streamed = block_on(read_message(&mut r, &limits));
        prop_assert_eq!(
            format!("{:?}", streamed.map(|o| o.map(|m| m.message_type()))),
            format!("{:?}", decode_frame(t, &body, &limits).map(|m| Some(m.message_type())))
        );
    }

    #[test]
    fn prop_mutated_valid_frames_never_panic(
        msgs in prop::collection::vec(message(), 1..4),
        mutations in prop::collection::vec(mutation(), 1..4),
        small_limits in any::<bool>(),
    ) {
        let limits = if small_limits {
            Limits { max_frame_bytes: 200, max_metadata_decompressed_bytes: 150 }
        } else {
            Limits::default()
        };
        let mut wire: Vec<u8> = msgs.iter().flat_map(|m| encode(m).unwrap()).collect();
        for m in &mutations {
            apply(&mut wire, m);
        }
        let (decoded, _err) = read_all(&wire, &limits);
        for m in &decoded {
            check_decoded(m, &Limits::default())?;
            if let Message::SegmentData { data, .. } | Message::FetchData { data, .. } = m {
                prop_assert!(data.len() < limits.max_frame_bytes);
            }
        }
        // Each single frame, mutated, through decode_frame.
        for m in &msgs {
            let mut f = encode(m).unwrap();
            for mu in &mutations {
                apply(&mut f, mu);
            }
            if f.len() > 4 {
                if let Ok(d) = decode_frame(f[4], &f[5..], &limits) {
                    check_decoded(&d, &Limits::default())?;
                }
            }
        }
    }
}

/// Bodies for the fuzz smoke test: raw bytes, zstd of raw bytes, zstd of JSON-ish token soup
/// (often valid JSON naming a real message), and media-like headers.
fn fuzz_body() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("null".to_owned()),
        Just("\"key\":{\"origin_node\":\"a\",\"path\":\"b\"}".to_owned()),
        Just("\"origin_node\"".to_owned()),
        Just("\"path\"".to_owned()),
        Just("\"../x\"".to_owned()),
        prop::sample::select(
            MessageType::ALL
                .iter()
                .map(|t| format!("{{\"{}\":", snake(&format!("{t:?}"))))
                .collect::<Vec<_>>()
        ),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[a-z_]{0,12}\"".prop_map(|s| s),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| zstd_body(&b)),
        prop::collection::vec(token, 0..40).prop_map(|t| zstd_body(t.concat().as_bytes())),
        (
            node_name(),
            ".{0,20}",
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..20)
        )
            .prop_map(|(n, p, off, tail)| {
                let mut b = (n.len() as u16).to_be_bytes().to_vec();
                b.extend_from_slice(n.as_bytes());
                b.extend_from_slice(&(p.len() as u16).to_be_bytes());
                b.extend_from_slice(p.as_bytes());
                b.extend_from_slice(&off.to_be_bytes());
                b.extend_from_slice(&tail);
                b
            }),
        message().prop_map(|m| encode(&m).unwrap()[5..].to_vec()),
    ]
}

fn snake(camel: &str) -> String {
    let mut s = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Fuzz smoke test (no cargo-fuzz needed): 10,000 hostile frames through `decode_frame`.
    #[test]
    fn fuzz_smoke_decode_frame(
        t in prop_oneof![0u8..=19, any::<u8>()],
        body in fuzz_body(),
        tight in any::<bool>(),
    ) {
        let limits = if tight {
            Limits { max_frame_bytes: 128, max_metadata_decompressed_bytes: 64 }
        } else {
            Limits::default()
        };
        if let Ok(m) = decode_frame(t, &body, &limits) {
            prop_assert_eq!(m.message_type().as_u8(), t);
            prop_assert!(body.len() < limits.max_frame_bytes);
            check_decoded(&m, &Limits::default())?;
        }
    }
}
