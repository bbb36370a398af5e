//! Frame identity: the H.264 SEI NAL unit `camsim` puts into every access unit it sends, and the parsers
//! that read it back from an RTP payload or from a recorded MP4 sample.
//!
//! The SEI (nal_unit_type 6) holds one `user_data_unregistered` message (payload type 5): the 16-byte
//! [`STAMP_UUID`], then the frame's sequence number and its scheduled send time, both u64 big-endian.
//! Byte layout of the NAL unit before emulation prevention (36 bytes):
//!
//! ```text
//! 06                       NAL header: forbidden_zero_bit 0, nal_ref_idc 0, nal_unit_type 6 (SEI)
//! 05                       payloadType 5 (user_data_unregistered)
//! 20                       payloadSize 32
//! 2e 2b 97 d7 d8 a3 4e 9e 99 a9 84 8a 43 e7 10 e1   uuid_iso_iec_11578 (STAMP_UUID)
//! ss ss ss ss ss ss ss ss  seq: frame sequence number, u64 big-endian
//! tt tt tt tt tt tt tt tt  send_time_us: microseconds since the Unix epoch, u64 big-endian
//! 80                       rbsp_trailing_bits (stop bit, then alignment zeros)
//! ```
//!
//! Emulation prevention (H.264 section 7.4.1) inserts `03` after any two zero bytes that would otherwise
//! be followed by a byte `00`..`03`, so the NAL may be up to 12 bytes longer. See `docs/camsim.md`.

/// Identifies camsim's frame stamp among `user_data_unregistered` SEI messages (a random UUID,
/// `2e2b97d7-d8a3-4e9e-99a9-848a43e710e1`).
pub const STAMP_UUID: [u8; 16] = [
    0x2e, 0x2b, 0x97, 0xd7, 0xd8, 0xa3, 0x4e, 0x9e, 0x99, 0xa9, 0x84, 0x8a, 0x43, 0xe7, 0x10, 0xe1,
];

/// H.264 nal_unit_type of an SEI NAL unit.
const NAL_SEI: u8 = 6;
/// SEI payloadType of `user_data_unregistered` (H.264 Annex D.1.6).
const PAYLOAD_USER_DATA_UNREGISTERED: u32 = 5;
/// payloadSize of the stamp message: UUID + seq + send time.
const STAMP_PAYLOAD_BYTES: usize = 16 + 8 + 8;

/// Most bytes [`encode_sei`] produces: 36 before emulation prevention, plus at most one `03` per two of
/// the 16 variable bytes (the headers and the UUID contain no zero bytes).
pub const MAX_SEI_BYTES: usize = 36 + 8;

/// A frame's identity as stamped by camsim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameStamp {
    /// Frame number in the simulated stream, from 0 at the stream's start, never repeating.
    pub seq: u64,
    /// When the frame was scheduled to be sent: microseconds since the Unix epoch (wall clock).
    pub send_time_us: u64,
}

/// The SEI NAL unit carrying `stamp` (no start code or length prefix), with emulation prevention.
pub fn encode_sei(stamp: FrameStamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_SEI_BYTES);
    encode_sei_into(stamp, &mut out);
    out
}

/// Appends the SEI NAL unit carrying `stamp` to `out` (what [`encode_sei`] returns); no allocation when
/// `out` has [`MAX_SEI_BYTES`] spare capacity.
pub fn encode_sei_into(stamp: FrameStamp, out: &mut Vec<u8>) {
    let mut rbsp = [0u8; 2 + STAMP_PAYLOAD_BYTES + 1];
    rbsp[0] = PAYLOAD_USER_DATA_UNREGISTERED as u8;
    rbsp[1] = STAMP_PAYLOAD_BYTES as u8;
    rbsp[2..18].copy_from_slice(&STAMP_UUID);
    rbsp[18..26].copy_from_slice(&stamp.seq.to_be_bytes());
    rbsp[26..34].copy_from_slice(&stamp.send_time_us.to_be_bytes());
    rbsp[34] = 0x80;
    out.push(NAL_SEI);
    let mut zeros = 0;
    for &b in &rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Reads camsim's stamp from one H.264 NAL unit (no start code or length prefix). `None` if it is not an
/// SEI, or holds no `user_data_unregistered` message with [`STAMP_UUID`], or is malformed.
pub fn parse_sei(nal: &[u8]) -> Option<FrameStamp> {
    let (&header, body) = nal.split_first()?;
    if header & 0x80 != 0 || header & 0x1f != NAL_SEI {
        return None;
    }
    let rbsp = unescape(body);
    let mut pos = 0;
    // sei_rbsp: sei_message()s while more_rbsp_data(), then the trailing bits (0x80 and zeros).
    while !is_trailing_bits(rbsp.get(pos..)?) {
        let payload_type = read_sei_number(&rbsp, &mut pos)?;
        let payload_size = usize::try_from(read_sei_number(&rbsp, &mut pos)?).ok()?;
        let end = pos.checked_add(payload_size)?;
        let payload = rbsp.get(pos..end)?;
        if payload_type == PAYLOAD_USER_DATA_UNREGISTERED
            && payload_size == STAMP_PAYLOAD_BYTES
            && payload[..16] == STAMP_UUID
        {
            let u64_at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&payload[i..i + 8]);
                u64::from_be_bytes(b)
            };
            return Some(FrameStamp {
                seq: u64_at(16),
                send_time_us: u64_at(24),
            });
        }
        pos = end;
    }
    None
}

/// Finds camsim's stamp in an MP4 video sample: NAL units each preceded by a 4-byte big-endian length
/// (how the recorder stores H.264). Stops at the first malformed length.
pub fn find_in_length_prefixed(sample: &[u8]) -> Option<FrameStamp> {
    let mut rest = sample;
    while let Some((len, after)) = rest.split_first_chunk::<4>() {
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let nal = after.get(..len)?;
        if let Some(stamp) = parse_sei(nal) {
            return Some(stamp);
        }
        rest = &after[len..];
    }
    None
}

/// True if `rest` is just `rbsp_trailing_bits` (0x80 then zero bytes) or empty (a missing stop bit is
/// tolerated).
fn is_trailing_bits(rest: &[u8]) -> bool {
    match rest.split_first() {
        None => true,
        Some((&first, tail)) => first == 0x80 && tail.iter().all(|&b| b == 0),
    }
}

/// SEI payloadType / payloadSize: a run of 0xFF bytes (255 each) plus a final byte (H.264 section 7.3.2.3.1).
fn read_sei_number(rbsp: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    loop {
        let b = *rbsp.get(*pos)?;
        *pos += 1;
        v = v.checked_add(u32::from(b))?;
        if b != 0xff {
            return Some(v);
        }
    }
}

/// Removes emulation-prevention bytes: the `03` of every `00 00 03`.
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No `00 00 0x` (x <= 3) sequence inside the NAL: what a decoder would misread as a start code or
    /// as an escape.
    fn assert_escaped(nal: &[u8]) {
        for w in nal.windows(3) {
            assert!(!(w[0] == 0 && w[1] == 0 && w[2] <= 2), "{nal:02x?}");
        }
        for w in nal.windows(4) {
            if w[0] == 0 && w[1] == 0 && w[2] == 3 {
                assert!(w[3] <= 3, "needless escape in {nal:02x?}");
            }
        }
        assert_ne!(nal.last(), Some(&0), "{nal:02x?}");
    }

    #[test]
    fn layout_without_escapes() {
        let s = FrameStamp {
            seq: 0x0102_0304_0506_0708,
            send_time_us: 0x1112_1314_1516_1718,
        };
        let nal = encode_sei(s);
        let mut want = vec![0x06, 0x05, 0x20];
        want.extend_from_slice(&STAMP_UUID);
        want.extend_from_slice(&[
            1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
        ]);
        want.extend_from_slice(&[0x18, 0x80]);
        assert_eq!(nal, want);
        assert_eq!(parse_sei(&nal), Some(s));
    }

    #[test]
    fn escapes_zero_runs() {
        let s = FrameStamp {
            seq: 0,
            send_time_us: 0x0000_0100_0000_0300,
        };
        let nal = encode_sei(s);
        assert_escaped(&nal);
        // seq 0: eight zero bytes get escapes after each pair; the escaped NAL is longer than 36 bytes.
        assert!(nal.len() > 36, "{nal:02x?}");
        assert_eq!(
            &nal[19..30],
            &[0, 0, 3, 0, 0, 3, 0, 0, 3, 0, 0],
            "{nal:02x?}"
        );
        assert_eq!(parse_sei(&nal), Some(s));
    }

    /// Round trips over values built from byte runs that force emulation prevention (`00 00 00`,
    /// `00 00 01`, `00 00 02`, `00 00 03`) at every alignment, plus pseudo-random values.
    #[test]
    fn round_trip_property() {
        let mut values: Vec<u64> = vec![0, 1, 3, u64::MAX, 0x0000_0100, 0x0300_0000_0000_0000];
        for pattern in [0x00_0000u64, 0x00_0001, 0x00_0002, 0x00_0003] {
            for shift in 0..=5 {
                values.push(pattern << (shift * 8));
                values.push((pattern << (shift * 8)) | 0xff00_0000_0000_00ff);
                values.push(!(0xff_ffffu64 << (shift * 8)) | (pattern << (shift * 8)));
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            // xorshift; mask random bytes to zero to make zero runs common.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mask = (0..8).fold(0u64, |m, i| {
                if (x >> (i * 3)) & 1 == 0 {
                    m | (0xff << (i * 8))
                } else {
                    m
                }
            });
            values.push(x & mask);
        }
        let mut escaped = 0;
        for (i, &seq) in values.iter().enumerate() {
            let send_time_us = values[(i * 7 + 3) % values.len()];
            let s = FrameStamp { seq, send_time_us };
            let nal = encode_sei(s);
            assert!(nal.len() <= MAX_SEI_BYTES, "{nal:02x?}");
            assert_escaped(&nal);
            if nal.len() > 36 {
                escaped += 1;
            }
            assert_eq!(parse_sei(&nal), Some(s), "{nal:02x?}");
            // Also found among other NALs in a length-prefixed sample.
            let mut sample = Vec::new();
            for n in [
                &[0x06u8, 0x05, 0x02, 0xaa, 0xbb, 0x80][..],
                &nal,
                &[0x65, 0x88, 0x84],
            ] {
                sample.extend_from_slice(&(n.len() as u32).to_be_bytes());
                sample.extend_from_slice(n);
            }
            assert_eq!(find_in_length_prefixed(&sample), Some(s));
        }
        assert!(escaped > 100, "only {escaped} values needed escapes");
    }

    #[test]
    fn rejects_other_nals_and_damage() {
        let s = FrameStamp {
            seq: 7,
            send_time_us: 1_700_000_000_000_000,
        };
        let nal = encode_sei(s);
        // Not an SEI.
        let mut other = nal.clone();
        other[0] = 0x65;
        assert_eq!(parse_sei(&other), None);
        // Other UUID.
        let mut uuid = nal.clone();
        uuid[5] ^= 1;
        assert_eq!(parse_sei(&uuid), None);
        // Other payload type.
        let mut pt = nal.clone();
        pt[1] = 4;
        assert_eq!(parse_sei(&pt), None);
        // Truncated anywhere before the stop bit: never a stamp, never a panic.
        for n in 0..nal.len() - 1 {
            assert_eq!(parse_sei(&nal[..n]), None, "{n}");
        }
        assert_eq!(parse_sei(&[]), None);
        // A preceding message (payload type 1 with a 0xFF-extended size) is skipped.
        let mut two = vec![0x06, 0x01];
        two.push(0xff);
        two.push(0x01);
        two.extend(std::iter::repeat_n(0x11, 256));
        two.extend_from_slice(&nal[1..]);
        assert_eq!(parse_sei(&two), Some(s));
        // Length prefixes that overrun the sample.
        let mut sample = (nal.len() as u32 + 1).to_be_bytes().to_vec();
        sample.extend_from_slice(&nal);
        assert_eq!(find_in_length_prefixed(&sample), None);
        assert_eq!(find_in_length_prefixed(&[0, 0]), None);
        let mut ok = (nal.len() as u32).to_be_bytes().to_vec();
        ok.extend_from_slice(&nal);
        assert_eq!(find_in_length_prefixed(&ok), Some(s));
    }
}
