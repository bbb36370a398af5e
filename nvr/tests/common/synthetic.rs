//! Recording without a camera: synthetic frames pushed straight into `nvr::ingest::Recording`
//! (the storage and mirror tests), with the ingest settings those tests share.

use nvr::config::RecordingConfig;
use nvr::ingest::{IngestSettings, Recording, VideoTrack};

/// Ingest settings for synthetic recordings: segments of `segment_duration_ms`, the rest as
/// configured by default.
pub fn ingest_settings(segment_duration_ms: u64) -> IngestSettings {
    IngestSettings {
        recording: RecordingConfig {
            segment_duration_ms,
            ..RecordingConfig::default()
        },
        ..IngestSettings::default()
    }
}

/// Frame `i`'s data: 1000 to 1006 bytes of `i % 251`.
pub fn frame_data(i: i64) -> Vec<u8> {
    vec![(i % 251) as u8; 1000 + (i % 7) as usize]
}

/// Pushes `frames` frames at 25 fps starting at `first_frame`, a key frame every `gop` frames (the
/// first with 320×240 parameters).
pub fn push_frames(rec: &mut Recording, first_frame: i64, frames: i64, gop: i64) {
    for i in first_frame..first_frame + frames {
        let params = (i == first_frame).then(|| VideoTrack::synthetic_avc1(320, 240));
        rec.push_video(i * 3600, i % gop == 0, frame_data(i), params)
            .expect("push");
    }
}
