// Copyright (C) The Retina Authors
// SPDX-License-Identifier: MIT OR Apache-2.0

//! Opus audio as defined in [RFC 7587](https://datatracker.ietf.org/doc/html/rfc7587): each RTP
//! packet carries exactly one Opus packet ([RFC 6716](https://datatracker.ietf.org/doc/html/rfc6716)),
//! and the RTP clock always runs at 48 kHz.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::buf::PacketRef;

use super::{AudioParameters, CodecItem};

/// The RTP clock rate of Opus, whatever the audio's own sampling rate (RFC 7587 section 4.1).
const CLOCK_RATE: u32 = 48_000;

/// The longest duration an Opus packet may have: 120 ms (RFC 6716 section 3.2.5).
const MAX_PACKET_SAMPLES: u32 = 120 * 48;

#[derive(Debug)]
pub(crate) struct Depacketizer {
    parameters: AudioParameters,
    pending: Option<super::AudioFrame>,
}

impl Depacketizer {
    /// Creates a new Depacketizer.
    ///
    /// The `rtpmap` always says `opus/48000/2` (RFC 7587 section 7); whether the sender sends
    /// stereo is told by the `sprop-stereo` format parameter, mono when absent.
    pub(super) fn new(
        clock_rate: u32,
        format_specific_params: Option<&str>,
    ) -> Result<Self, String> {
        if clock_rate != CLOCK_RATE {
            return Err(format!(
                "Opus RTP clock rate must be {CLOCK_RATE}, not {clock_rate}"
            ));
        }
        let stereo = match format_specific_params {
            Some(p) => sprop_stereo(p)?,
            None => false,
        };
        Ok(Self {
            parameters: AudioParameters {
                rfc6381_codec: Some("opus".to_owned()),
                frame_length: None, // variable: every packet says its own.
                clock_rate: CLOCK_RATE,
                channels: if stereo {
                    const { NonZeroU16::new(2).unwrap() }
                } else {
                    const { NonZeroU16::new(1).unwrap() }
                },
                extra_data: Vec::new(),
                codec: super::AudioParametersCodec::Other,
            },
            pending: None,
        })
    }

    pub(super) fn parameters(&self) -> Option<super::ParametersRef<'_>> {
        Some(super::ParametersRef::Audio(&self.parameters))
    }

    pub(super) fn push(&mut self, pkt: &PacketRef<'_>) -> Result<(), String> {
        assert!(self.pending.is_none());
        let (s1, s2) = pkt.payload().slices();
        let mut payload = Vec::with_capacity(usize::from(pkt.payload_len()));
        payload.extend_from_slice(s1);
        payload.extend_from_slice(s2);
        let frame_length = packet_samples(&payload)?;
        self.pending = Some(super::AudioFrame {
            loss: pkt.meta.loss,
            ctx: pkt.meta.ctx,
            stream_id: pkt.meta.stream_id,
            timestamp: pkt.meta.timestamp,
            frame_length,
            data: Bytes::from(payload),
        });
        Ok(())
    }

    pub(super) fn pull(&mut self) -> Option<Result<super::CodecItem, super::DepacketizeError>> {
        self.pending.take().map(|f| Ok(CodecItem::AudioFrame(f)))
    }
}

/// Whether `sprop-stereo=1` is among the format-specific parameters. Empty parameters (a trailing
/// `;`) and other keys are skipped.
fn sprop_stereo(format_specific_params: &str) -> Result<bool, String> {
    let mut stereo = false;
    for p in format_specific_params.split(';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (key, value) = p
            .split_once('=')
            .ok_or_else(|| format!("bad format-specific-param {p}"))?;
        if key.trim().eq_ignore_ascii_case("sprop-stereo") {
            stereo = match value.trim() {
                "0" => false,
                "1" => true,
                v => return Err(format!("bad sprop-stereo {v:?}: must be 0 or 1")),
            };
        }
    }
    Ok(stereo)
}

/// The duration of an Opus packet in 48 kHz samples, from its table-of-contents byte and, for
/// code 3 packets, its frame count byte (RFC 6716 section 3.1 and 3.2.5).
fn packet_samples(packet: &[u8]) -> Result<NonZeroU32, String> {
    let toc = *packet
        .first()
        .ok_or_else(|| "empty Opus packet".to_owned())?;
    let config = toc >> 3;
    let frame_samples: u32 = match config {
        // SILK-only (NB, MB, WB): 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid (SWB, FB): 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only (NB, WB, SWB, FB): 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames: u32 = match toc & 0b11 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let count = packet
                .get(1)
                .ok_or_else(|| "Opus code 3 packet without its frame count byte".to_owned())?;
            u32::from(count & 0b0011_1111)
        }
    };
    let samples = frames * frame_samples;
    if samples > MAX_PACKET_SAMPLES {
        return Err(format!(
            "Opus packet of {frames} frames of {frame_samples} samples is longer than 120 ms"
        ));
    }
    NonZeroU32::new(samples).ok_or_else(|| "Opus code 3 packet with 0 frames".to_owned())
}

#[cfg(test)]
mod tests {
    use crate::buf::{MarkBuf, PacketRef};
    use crate::{PacketContext, rtp::ReceivedPacketBuilder};

    use super::*;

    #[test]
    fn packet_durations() {
        // config 1 (SILK NB 20 ms), code 0: one frame.
        assert_eq!(packet_samples(&[1 << 3]).unwrap().get(), 960);
        // config 3 (SILK NB 60 ms), stereo flag, code 1: two frames.
        assert_eq!(packet_samples(&[(3 << 3) | 0b101]).unwrap().get(), 5760);
        // config 13 (hybrid SWB 20 ms), code 2: two frames.
        assert_eq!(packet_samples(&[(13 << 3) | 2, 0]).unwrap().get(), 1920);
        // config 16 (CELT NB 2.5 ms), code 3 with 4 frames.
        assert_eq!(packet_samples(&[(16 << 3) | 3, 4]).unwrap().get(), 480);
        // config 31 (CELT FB 20 ms), code 0.
        assert_eq!(packet_samples(&[(31 << 3)]).unwrap().get(), 960);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(packet_samples(&[]).is_err());
        // Code 3 without its frame count byte, with 0 frames, and longer than 120 ms.
        assert!(packet_samples(&[(31 << 3) | 3]).is_err());
        assert!(packet_samples(&[(31 << 3) | 3, 0]).is_err());
        assert!(packet_samples(&[(31 << 3) | 3, 7]).is_err());
    }

    #[test]
    fn channels_from_sprop_stereo() {
        let channels = |fmtp| {
            Depacketizer::new(48_000, fmtp)
                .unwrap()
                .parameters
                .channels
                .get()
        };
        assert_eq!(channels(None), 1);
        assert_eq!(channels(Some("sprop-stereo=0")), 1);
        assert_eq!(channels(Some("sprop-stereo=1; useinbandfec=1;")), 2);
        assert!(Depacketizer::new(48_000, Some("sprop-stereo=2")).is_err());
        assert!(Depacketizer::new(90_000, None).is_err());
    }

    #[test]
    fn depacketize() {
        let mut d = Depacketizer::new(48_000, Some("sprop-stereo=0")).unwrap();
        let mut buf = MarkBuf::new(1024);
        let timestamp = crate::Timestamp {
            timestamp: 960,
            clock_rate: NonZeroU32::new(48_000).unwrap(),
            start: 0,
        };
        let pkt = ReceivedPacketBuilder {
            ctx: PacketContext::dummy(),
            stream_id: 0,
            sequence_number: 0,
            timestamp,
            payload_type: 96,
            ssrc: 0,
            mark: false,
            loss: 0,
        }
        .build([31 << 3, 0xaa, 0xbb])
        .unwrap();
        let pos = buf.end();
        buf.extend(pkt.payload());
        buf.advance_unparsed(buf.end());
        d.push(&PacketRef::new(
            crate::rtp::PacketMeta::from_received(&pkt),
            &buf,
            pos,
            3,
        ))
        .unwrap();
        let a = match d.pull() {
            Some(Ok(CodecItem::AudioFrame(a))) => a,
            _ => unreachable!(),
        };
        assert_eq!(a.timestamp, timestamp);
        assert_eq!(a.frame_length.get(), 960);
        assert_eq!(&a.data[..], &[31 << 3, 0xaa, 0xbb]);
        assert_eq!(d.pull(), None);
    }
}
