//! The looped H.264 clip: Annex-B parsing into access units, parameter sets, IDR detection, and the one-time
//! RTP packetization (RFC 6184) that every session shares.

use bytes::Bytes;
use std::sync::Arc;

/// The clip shipped with the project: 1280x720, 25 fps, 4 s (100 frames), IDR every 50 frames, no B-frames,
/// ~2 Mbit/s, SPS/PPS before every IDR. Generated once with ffmpeg (see `docs/camsim.md`).
static EMBEDDED_CLIP: &[u8] = include_bytes!("../assets/clip-720p25.h264");

/// Frame rate of [`EMBEDDED_CLIP`].
pub const EMBEDDED_FPS: u32 = 25;

/// RTP clock rate for H.264 (RFC 6184 section 8.2.1).
pub const RTP_CLOCK_HZ: u32 = 90_000;

/// Largest RTP payload; NAL units longer than this are split into FU-A fragments. Keeps interleaved packets
/// below a typical 1500-byte MTU if a client ever relays them over UDP.
pub const MAX_RTP_PAYLOAD_BYTES: usize = 1400;

/// Length of an RTP header without CSRCs or extensions (RFC 3550 section 5.1).
pub(crate) const RTP_HEADER_BYTES: usize = 12;

/// Length of the `$`, channel, length prefix of an interleaved frame (RFC 2326 section 10.12).
pub(crate) const INTERLEAVED_PREFIX_BYTES: usize = 4;

/// RTP payload type announced in the SDP (dynamic range).
pub const RTP_PAYLOAD_TYPE: u8 = 96;

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FU_A: u8 = 28;

/// Why an Annex-B byte stream was rejected by [`Clip::parse`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClipError {
    #[error("clip is empty")]
    Empty,
    #[error("clip does not start with an Annex-B start code")]
    NoStartCode,
    #[error("NAL unit at byte {offset_bytes} has the forbidden_zero_bit set")]
    ForbiddenBit { offset_bytes: usize },
    #[error("clip has no sequence parameter set (SPS)")]
    NoSps,
    #[error("clip has no picture parameter set (PPS)")]
    NoPps,
    #[error("SPS is too short ({len_bytes} bytes)")]
    ShortSps { len_bytes: usize },
    #[error("clip has no IDR frame")]
    NoIdr,
    #[error("first frame is not an IDR, so the clip cannot loop cleanly")]
    FirstFrameNotIdr,
    #[error(
        "clip has B-slices (frame {frame_index}); only I/P streams can be paced by decode order"
    )]
    BFrames { frame_index: usize },
    #[error("slice header of frame {frame_index} cannot be parsed")]
    BadSliceHeader { frame_index: usize },
    #[error("frame rate {fps} is not usable (must divide 90000 evenly)")]
    BadFps { fps: u32 },
}

/// One coded picture: its NAL units (without start codes; AUDs removed) and whether it is an IDR.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub nals: Vec<Bytes>,
    pub idr: bool,
}

/// Pre-packetized access unit: interleaved RTP frames (`$`, channel 0, length, RTP header, payload) laid out
/// back to back, with zero sequence number, timestamp and SSRC. Sessions copy the block and patch those.
#[derive(Debug)]
pub(crate) struct AuTemplate {
    pub(crate) bytes: Box<[u8]>,
    /// Byte offset in `bytes` of the first packet of the first slice NAL: where a session inserts the
    /// frame's stamp SEI packet (after any SPS, PPS and SEI of the clip, before the picture).
    pub(crate) sei_offset: usize,
    pub(crate) packet_count: u32,
    /// Sum of RTP payload sizes, for RTCP sender report octet counts.
    pub(crate) payload_bytes: u32,
}

/// A parsed, pre-packetized H.264 clip, shared by every stream and session through an `Arc`.
#[derive(Debug)]
pub struct Clip {
    fps: u32,
    sps: Bytes,
    pps: Bytes,
    access_units: Vec<AccessUnit>,
    templates: Vec<AuTemplate>,
}

impl Clip {
    /// The clip shipped in `camsim/assets/`, parsed and packetized on first use and shared afterwards. It is a
    /// compile-time constant checked by tests, so a parse failure means a broken build: that panics with a
    /// clear message rather than serving nothing.
    pub fn embedded() -> Arc<Clip> {
        static CLIP: std::sync::OnceLock<Arc<Clip>> = std::sync::OnceLock::new();
        CLIP.get_or_init(|| match Clip::parse(EMBEDDED_CLIP, EMBEDDED_FPS) {
            Ok(c) => Arc::new(c),
            Err(e) => panic!("embedded camsim clip is invalid: {e}"),
        })
        .clone()
    }

    /// Parses an Annex-B H.264 byte stream (3- or 4-byte start codes) at `fps` frames per second.
    pub fn parse(annexb: &[u8], fps: u32) -> Result<Clip, ClipError> {
        if fps == 0 || RTP_CLOCK_HZ % fps != 0 {
            return Err(ClipError::BadFps { fps });
        }
        let nals = split_annexb(annexb)?;
        let mut sps: Option<Bytes> = None;
        let mut pps: Option<Bytes> = None;
        let mut access_units: Vec<AccessUnit> = Vec::new();
        let mut cur = AccessUnit {
            nals: Vec::new(),
            idr: false,
        };
        let mut cur_has_vcl = false;
        for (offset_bytes, nal) in nals {
            let header = nal[0];
            if header & 0x80 != 0 {
                return Err(ClipError::ForbiddenBit { offset_bytes });
            }
            let nal_type = header & 0x1f;
            let is_vcl = nal_type == NAL_SLICE || nal_type == NAL_IDR;
            // H.264 section 7.4.1.2.3: these begin a new access unit after a VCL NAL, as does a slice with
            // first_mb_in_slice == 0 (ue(v) code "1", i.e. top bit of the first header byte set).
            let starts_au = match nal_type {
                NAL_AUD | NAL_SEI | NAL_SPS | NAL_PPS | 14..=18 => true,
                NAL_SLICE | NAL_IDR => nal.get(1).is_some_and(|b| b & 0x80 != 0),
                _ => false,
            };
            if cur_has_vcl && starts_au {
                access_units.push(std::mem::replace(
                    &mut cur,
                    AccessUnit {
                        nals: Vec::new(),
                        idr: false,
                    },
                ));
                cur_has_vcl = false;
            }
            match nal_type {
                NAL_AUD => continue, // Useless over RTP.
                NAL_SPS if sps.is_none() => sps = Some(nal.clone()),
                NAL_PPS if pps.is_none() => pps = Some(nal.clone()),
                _ => {}
            }
            if is_vcl {
                cur_has_vcl = true;
                if nal_type == NAL_IDR {
                    cur.idr = true;
                }
            }
            cur.nals.push(nal);
        }
        if cur_has_vcl {
            access_units.push(cur);
        }
        let sps = sps.ok_or(ClipError::NoSps)?;
        let pps = pps.ok_or(ClipError::NoPps)?;
        if sps.len() < 4 {
            return Err(ClipError::ShortSps {
                len_bytes: sps.len(),
            });
        }
        if !access_units.iter().any(|au| au.idr) {
            return Err(ClipError::NoIdr);
        }
        if !access_units[0].idr {
            return Err(ClipError::FirstFrameNotIdr);
        }
        for (frame_index, au) in access_units.iter_mut().enumerate() {
            for nal in &au.nals {
                let t = nal[0] & 0x1f;
                if t == NAL_SLICE || t == NAL_IDR {
                    let slice_type =
                        slice_type(nal).ok_or(ClipError::BadSliceHeader { frame_index })?;
                    if slice_type % 5 == 1 {
                        return Err(ClipError::BFrames { frame_index });
                    }
                }
            }
            // Make every IDR self-contained so a client joining at any key frame can decode.
            if au.idr {
                let has = |t: u8| au.nals.iter().any(|n| n[0] & 0x1f == t);
                let (has_sps, has_pps) = (has(NAL_SPS), has(NAL_PPS));
                if !has_pps {
                    au.nals.insert(0, pps.clone());
                }
                if !has_sps {
                    au.nals.insert(0, sps.clone());
                }
            }
        }
        let templates = access_units.iter().map(packetize).collect();
        Ok(Clip {
            fps,
            sps,
            pps,
            access_units,
            templates,
        })
    }

    pub fn fps(&self) -> u32 {
        self.fps
    }

    /// RTP timestamp increment per frame (90 kHz clock).
    pub fn frame_duration_ticks(&self) -> u32 {
        RTP_CLOCK_HZ / self.fps
    }

    pub fn frame_count(&self) -> usize {
        self.access_units.len()
    }

    pub fn access_units(&self) -> &[AccessUnit] {
        &self.access_units
    }

    pub fn sps(&self) -> &[u8] {
        &self.sps
    }

    pub fn pps(&self) -> &[u8] {
        &self.pps
    }

    /// Indices of IDR access units.
    pub fn idr_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.access_units
            .iter()
            .enumerate()
            .filter(|(_, au)| au.idr)
            .map(|(i, _)| i)
    }

    /// The last IDR at or before `frame_index` (wrapped into the clip). Frame 0 is always an IDR.
    pub fn idr_at_or_before(&self, frame_index: usize) -> usize {
        let i = frame_index % self.access_units.len();
        (0..=i)
            .rev()
            .find(|&j| self.access_units[j].idr)
            .unwrap_or(0)
    }

    /// `profile-level-id` for the SDP fmtp line (RFC 6184 section 8.1): SPS bytes 1..4 in hex.
    pub fn profile_level_id(&self) -> String {
        format!("{:02X}{:02X}{:02X}", self.sps[1], self.sps[2], self.sps[3])
    }

    /// `sprop-parameter-sets` for the SDP fmtp line: base64 SPS, comma, base64 PPS.
    pub fn sprop_parameter_sets(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("{},{}", b64.encode(&self.sps), b64.encode(&self.pps))
    }

    pub(crate) fn template(&self, frame_index: usize) -> &AuTemplate {
        &self.templates[frame_index % self.templates.len()]
    }
}

/// Splits Annex-B into NAL units (without start codes or trailing zero bytes), with each NAL's byte offset.
fn split_annexb(data: &[u8]) -> Result<Vec<(usize, Bytes)>, ClipError> {
    if data.iter().all(|&b| b == 0) {
        return Err(ClipError::Empty);
    }
    // Positions just after each `00 00 01`; a 4-byte start code is a 3-byte one preceded by a zero byte,
    // which the trailing-zero trim below removes from the previous NAL.
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let first = *starts.first().ok_or(ClipError::NoStartCode)?;
    if data[..first - 3].iter().any(|&b| b != 0) {
        return Err(ClipError::NoStartCode);
    }
    let shared = Bytes::copy_from_slice(data);
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            nals.push((s, shared.slice(s..end)));
        }
    }
    if nals.is_empty() {
        return Err(ClipError::Empty);
    }
    Ok(nals)
}

/// Reads `slice_type` (second ue(v) of the slice header) from a slice NAL, undoing emulation prevention in
/// the few bytes needed.
fn slice_type(nal: &[u8]) -> Option<u32> {
    let mut rbsp = Vec::with_capacity(16);
    let mut zeros = 0;
    for &b in nal.iter().skip(1).take(24) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut bits = BitReader {
        data: &rbsp,
        pos_bits: 0,
    };
    let _first_mb_in_slice = bits.ue()?;
    bits.ue()
}

struct BitReader<'a> {
    data: &'a [u8],
    pos_bits: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos_bits / 8)?;
        let b = (byte >> (7 - (self.pos_bits % 8))) & 1;
        self.pos_bits += 1;
        Some(u32::from(b))
    }

    /// Exp-Golomb unsigned (H.264 section 9.1).
    fn ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let mut v: u32 = 0;
        for _ in 0..leading_zeros {
            v = (v << 1) | self.bit()?;
        }
        Some((1u32 << leading_zeros) - 1 + v)
    }
}

/// Packetizes one access unit (RFC 6184): single NAL unit packets, FU-A for NALs over
/// [`MAX_RTP_PAYLOAD_BYTES`], marker on the last packet.
fn packetize(au: &AccessUnit) -> AuTemplate {
    let mut payloads: Vec<(Option<[u8; 2]>, &[u8])> = Vec::new();
    let mut first_vcl_payload = None;
    for nal in &au.nals {
        let t = nal[0] & 0x1f;
        if first_vcl_payload.is_none() && (t == NAL_SLICE || t == NAL_IDR) {
            first_vcl_payload = Some(payloads.len());
        }
        if nal.len() <= MAX_RTP_PAYLOAD_BYTES {
            payloads.push((None, nal));
            continue;
        }
        let indicator = (nal[0] & 0xe0) | NAL_FU_A;
        let nal_type = nal[0] & 0x1f;
        let body = &nal[1..];
        let chunk_bytes = MAX_RTP_PAYLOAD_BYTES - 2;
        let chunk_count = body.len().div_ceil(chunk_bytes);
        for (k, chunk) in body.chunks(chunk_bytes).enumerate() {
            let mut fu_header = nal_type;
            if k == 0 {
                fu_header |= 0x80;
            }
            if k + 1 == chunk_count {
                fu_header |= 0x40;
            }
            payloads.push((Some([indicator, fu_header]), chunk));
        }
    }
    let mut bytes = Vec::new();
    let mut payload_bytes = 0u32;
    let mut sei_offset = None;
    let last = payloads.len().saturating_sub(1);
    for (k, (prefix, data)) in payloads.iter().enumerate() {
        if first_vcl_payload == Some(k) {
            sei_offset = Some(bytes.len());
        }
        let payload_len = data.len() + prefix.map_or(0, |p| p.len());
        payload_bytes += payload_len as u32;
        let frame_len = (RTP_HEADER_BYTES + payload_len) as u16;
        bytes.extend_from_slice(&[b'$', 0]);
        bytes.extend_from_slice(&frame_len.to_be_bytes());
        let marker = if k == last { 0x80 } else { 0 };
        bytes.extend_from_slice(&[0x80, marker | RTP_PAYLOAD_TYPE]);
        bytes.extend_from_slice(&[0; 10]); // seq, timestamp, ssrc: patched per session.
        if let Some(p) = prefix {
            bytes.extend_from_slice(p);
        }
        bytes.extend_from_slice(data);
    }
    AuTemplate {
        // Every access unit of a parsed clip has a slice; the end is a safe fallback.
        sei_offset: sei_offset.unwrap_or(bytes.len()),
        bytes: bytes.into_boxed_slice(),
        packet_count: payloads.len() as u32,
        payload_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    /// IDR slice: first_mb_in_slice=0 ("1"), slice_type=7 (I, "0001000").
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x21];
    /// P slice: first_mb_in_slice=0 ("1"), slice_type=5 (P, "00110").
    const P: &[u8] = &[0x41, 0x98, 0x84];
    /// B slice: first_mb_in_slice=0 ("1"), slice_type=6 (B, "00111").
    const B: &[u8] = &[0x01, 0x9c, 0x84];

    fn annexb(nals: &[&[u8]], four_byte: bool) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            if four_byte {
                v.push(0);
            }
            v.extend_from_slice(&[0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn embedded_clip_parses() {
        let c = Clip::embedded();
        assert_eq!(c.fps(), 25);
        assert_eq!(c.frame_count(), 100);
        assert_eq!(c.idr_indices().collect::<Vec<_>>(), vec![0, 50]);
        assert_eq!(c.frame_duration_ticks(), 3600);
        assert_eq!(c.idr_at_or_before(49), 0);
        assert_eq!(c.idr_at_or_before(77), 50);
        assert_eq!(c.idr_at_or_before(100), 0);
        for i in c.idr_indices() {
            let types: Vec<u8> = c.access_units()[i]
                .nals
                .iter()
                .map(|n| n[0] & 0x1f)
                .collect();
            assert_eq!(&types[..2], &[NAL_SPS, NAL_PPS], "frame {i}: {types:?}");
        }
        // ~2 Mbit/s for 4 s.
        let total: usize = c.templates.iter().map(|t| t.bytes.len()).sum();
        assert!((700_000..1_300_000).contains(&total), "{total}");
    }

    #[test]
    fn three_and_four_byte_start_codes_and_aud() {
        let aud: &[u8] = &[0x09, 0xf0];
        for four in [false, true] {
            let c = Clip::parse(&annexb(&[aud, SPS, PPS, IDR, aud, P, aud, P], four), 25)
                .expect("valid clip");
            assert_eq!(c.frame_count(), 3);
            assert!(c.access_units()[0].idr);
            assert!(!c.access_units()[1].idr);
            assert_eq!(c.access_units()[0].nals.len(), 3, "AUD dropped");
            assert_eq!(c.sps(), SPS);
            assert_eq!(c.pps(), PPS);
            assert_eq!(c.profile_level_id(), "42C01F");
        }
    }

    #[test]
    fn parameter_sets_inserted_before_idr() {
        let c = Clip::parse(&annexb(&[SPS, PPS, IDR, P, IDR, P], false), 25).expect("valid");
        let second = &c.access_units()[2];
        assert!(second.idr);
        let types: Vec<u8> = second.nals.iter().map(|n| n[0] & 0x1f).collect();
        assert_eq!(types, vec![NAL_SPS, NAL_PPS, NAL_IDR]);
    }

    #[test]
    fn errors() {
        assert_eq!(Clip::parse(&[], 25).err(), Some(ClipError::Empty));
        assert_eq!(Clip::parse(&[0, 0, 0, 0], 25).err(), Some(ClipError::Empty));
        assert_eq!(
            Clip::parse(b"not h264 at all", 25).err(),
            Some(ClipError::NoStartCode)
        );
        assert_eq!(
            Clip::parse(&[1, 2, 0, 0, 1, 0x65, 0x88], 25).err(),
            Some(ClipError::NoStartCode)
        );
        assert_eq!(
            Clip::parse(&annexb(&[PPS, IDR], false), 25).err(),
            Some(ClipError::NoSps)
        );
        assert_eq!(
            Clip::parse(&annexb(&[SPS, IDR], false), 25).err(),
            Some(ClipError::NoPps)
        );
        assert_eq!(
            Clip::parse(&annexb(&[SPS, PPS, P, P], false), 25).err(),
            Some(ClipError::NoIdr)
        );
        assert_eq!(
            Clip::parse(&annexb(&[SPS, PPS, P, IDR], false), 25).err(),
            Some(ClipError::FirstFrameNotIdr)
        );
        assert_eq!(
            Clip::parse(&annexb(&[SPS, PPS, IDR, B], false), 25).err(),
            Some(ClipError::BFrames { frame_index: 1 })
        );
        assert_eq!(
            Clip::parse(&annexb(&[SPS, PPS, IDR], false), 7).err(),
            Some(ClipError::BadFps { fps: 7 })
        );
        assert_eq!(
            Clip::parse(&annexb(&[SPS, PPS, &[0xe5, 0x88]], false), 25).err(),
            Some(ClipError::ForbiddenBit { offset_bytes: 19 })
        );
        assert_eq!(
            Clip::parse(&annexb(&[&[0x67, 0x42], PPS, IDR], false), 25).err(),
            Some(ClipError::ShortSps { len_bytes: 2 })
        );
        // Truncated slice header.
        assert_eq!(
            Clip::parse(&annexb(&[SPS, PPS, &[0x65, 0x80]], false), 25).err(),
            Some(ClipError::BadSliceHeader { frame_index: 0 })
        );
    }

    #[test]
    fn fu_a_fragmentation() {
        let mut big = vec![0x65, 0x88];
        big.extend((0..5000u32).map(|i| (i % 251) as u8 + 1));
        let c = Clip::parse(&annexb(&[SPS, PPS, &big], false), 25).expect("valid");
        let t = c.template(0);
        // SPS, PPS single packets, then ceil(5001 / 1398) = 4 FU-A fragments.
        assert_eq!(t.packet_count, 6);
        // The stamp SEI goes after the SPS and PPS packets, before the slice's first fragment.
        assert_eq!(t.sei_offset, (4 + 12 + SPS.len()) + (4 + 12 + PPS.len()));
        let mut off = 0;
        let mut reassembled = Vec::new();
        let mut markers = Vec::new();
        while off < t.bytes.len() {
            assert_eq!(t.bytes[off], b'$');
            let len = u16::from_be_bytes([t.bytes[off + 2], t.bytes[off + 3]]) as usize;
            let pkt = &t.bytes[off + 4..off + 4 + len];
            assert!(len - RTP_HEADER_BYTES <= MAX_RTP_PAYLOAD_BYTES);
            markers.push(pkt[1] & 0x80 != 0);
            let payload = &pkt[RTP_HEADER_BYTES..];
            if payload[0] & 0x1f == NAL_FU_A {
                if payload[1] & 0x80 != 0 {
                    reassembled.push((payload[0] & 0xe0) | (payload[1] & 0x1f));
                }
                reassembled.extend_from_slice(&payload[2..]);
            }
            off += 4 + len;
        }
        assert_eq!(reassembled, big);
        assert_eq!(markers, vec![false, false, false, false, false, true]);
    }

    /// Corrupted clips parse or fail with an error, never panic.
    #[test]
    fn fuzz_no_panic() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6184);
        let base = &EMBEDDED_CLIP[..60_000];
        for _ in 0..200 {
            let mut buf = base.to_vec();
            for _ in 0..rng.random_range(1..50) {
                let i = rng.random_range(0..buf.len());
                buf[i] = if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random()
                };
            }
            buf.truncate(rng.random_range(0..=buf.len()));
            let _ = Clip::parse(&buf, 25);
        }
    }
}
