//! Audio sample entries that retina does not build (it builds `mp4a` for AAC only): G.711 as
//! `alaw`/`ulaw` (ISO/IEC 14496-12 `AudioSampleEntry` as QuickTime and ffmpeg write them) and Opus
//! as `Opus` with its `dOps` box ("Encapsulation of Opus in ISO Base Media File Format").

/// G.711 companding law of a [`g711_sample_entry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G711 {
    /// A-law (RTP `PCMA`): sample entry `alaw`.
    ALaw,
    /// µ-law (RTP `PCMU`): sample entry `ulaw`.
    MuLaw,
}

/// An `alaw`/`ulaw` audio sample entry (ISO/IEC 14496-12 `AudioSampleEntry` v0: 16-bit sample
/// size as QuickTime and ffmpeg write it, the rate as 16.16). Each MP4 sample then holds one RTP
/// packet's 8-bit samples, its duration their count.
pub fn g711_sample_entry(law: G711, channels: u16, sample_rate_hz: u32) -> Vec<u8> {
    let mut e = Vec::with_capacity(36);
    e.extend_from_slice(&36u32.to_be_bytes());
    e.extend_from_slice(match law {
        G711::ALaw => b"alaw",
        G711::MuLaw => b"ulaw",
    });
    e.extend_from_slice(&[0; 6]); // reserved
    e.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    e.extend_from_slice(&[0; 8]); // reserved
    e.extend_from_slice(&channels.to_be_bytes());
    e.extend_from_slice(&16u16.to_be_bytes()); // samplesize
    e.extend_from_slice(&[0; 4]); // pre_defined, reserved
    let rate = u32::try_from(u64::from(sample_rate_hz) << 16).unwrap_or(0);
    e.extend_from_slice(&rate.to_be_bytes());
    e
}

/// The `dOps` pre-skip: 48 kHz samples a player discards from the decoder's output at the start.
/// It is meant for the encoder's priming samples, which come only at the start of the encoder's
/// stream; a recording joins a camera's stream somewhere in the middle and a segment starts at an
/// arbitrary packet, so none of its samples are priming samples and nothing is to be discarded.
pub const OPUS_PRE_SKIP: u16 = 0;

/// An `Opus` audio sample entry with its `dOps` box (channel mapping family 0: mono or stereo).
/// The track's timescale must be 48000 (Opus over RTP always has a 48 kHz clock); each MP4 sample
/// holds one RTP packet's Opus packet, its duration in 48 kHz samples. `channels` is 1 or 2 (more
/// needs a channel mapping table, which RTP does not carry).
pub fn opus_sample_entry(channels: u16) -> Result<Vec<u8>, super::Mp4Error> {
    let channels = match u8::try_from(channels) {
        Ok(c @ 1..=2) => c,
        _ => {
            return Err(super::Mp4Error::InvalidInput(format!(
                "Opus with {channels} channels: only mono and stereo can be described"
            )))
        }
    };
    const DOPS_LEN: u32 = 8 + 11;
    const ENTRY_LEN: u32 = 36 + DOPS_LEN;
    let mut e = Vec::with_capacity(ENTRY_LEN as usize);
    e.extend_from_slice(&ENTRY_LEN.to_be_bytes());
    e.extend_from_slice(b"Opus");
    e.extend_from_slice(&[0; 6]); // reserved
    e.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    e.extend_from_slice(&[0; 8]); // reserved
    e.extend_from_slice(&u16::from(channels).to_be_bytes());
    e.extend_from_slice(&16u16.to_be_bytes()); // samplesize
    e.extend_from_slice(&[0; 4]); // pre_defined, reserved
    e.extend_from_slice(&(48_000u32 << 16).to_be_bytes()); // samplerate, 16.16
    e.extend_from_slice(&DOPS_LEN.to_be_bytes());
    e.extend_from_slice(b"dOps");
    e.push(0); // Version
    e.push(channels); // OutputChannelCount
    e.extend_from_slice(&OPUS_PRE_SKIP.to_be_bytes());
    e.extend_from_slice(&48_000u32.to_be_bytes()); // InputSampleRate (informational)
    e.extend_from_slice(&0i16.to_be_bytes()); // OutputGain
    e.push(0); // ChannelMappingFamily
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_sample_entry_layout() {
        let e = opus_sample_entry(2).expect("stereo");
        assert_eq!(e.len(), 55);
        assert_eq!(u32::from_be_bytes([e[0], e[1], e[2], e[3]]), 55);
        assert_eq!(&e[4..8], b"Opus");
        assert_eq!(u16::from_be_bytes([e[24], e[25]]), 2, "channelcount");
        assert_eq!(&e[32..36], &[0xbb, 0x80, 0, 0], "48000 as 16.16");
        assert_eq!(&e[40..44], b"dOps");
        assert_eq!(
            &e[44..],
            &[0, 2, 0, 0, 0, 0, 0xbb, 0x80, 0, 0, 0],
            "version, channels, pre-skip, input rate, gain, mapping family"
        );
        assert!(opus_sample_entry(0).is_err());
        assert!(opus_sample_entry(3).is_err());
    }
}
