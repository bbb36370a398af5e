//! Segments built for tests (feature `test-support`, enabled by the dev-dependencies of the crates
//! whose tests use it, and in this crate's own tests): a segment of `cam/main` opened through the
//! store as a recorder opens it, pictures appended to it at 25 fps, a test camera's pictures, and a
//! catalog row made up in memory. Never part of a build that ships.

use std::sync::Arc;

use crate::mp4::{
    synthetic_avc1_sample_entry, synthetic_video_track, FragmentBuilder, SampleInfo, TrackSpec,
};
use crate::{NewSegment, SegmentId, SegmentRow, SegmentState, SegmentWriter, Store, StreamId};

/// The video track of a test camera's `cam/main`.
pub struct TestVideo {
    pub width: u16,
    pub height: u16,
    /// RFC 6381 codec string.
    pub codec: &'static str,
    /// The track's sample entry (`avc1` box).
    pub sample_entry: Vec<u8>,
}

impl TestVideo {
    /// 64×64 H.264 with the synthetic sample entry of [`synthetic_avc1_sample_entry`].
    pub fn synthetic() -> Self {
        TestVideo {
            width: 64,
            height: 64,
            codec: "avc1.64001f",
            sample_entry: synthetic_avc1_sample_entry(64, 64),
        }
    }

    /// Track 1 of a segment: [`synthetic_video_track`] with this sample entry.
    pub fn track(&self) -> TrackSpec {
        TrackSpec {
            sample_entry: self.sample_entry.clone(),
            ..synthetic_video_track(self.width, self.height)
        }
    }
}

/// Picture `n` of the synthetic test camera: one length-prefixed slice (an IDR every 25 pictures)
/// naming `n`, padded to at least `size_bytes` (a camera's bitrate).
pub fn picture(n: u32, size_bytes: usize) -> Vec<u8> {
    let mut nal = vec![if n % 25 == 0 { 0x65 } else { 0x41 }];
    nal.extend_from_slice(&n.to_be_bytes());
    nal.resize(size_bytes.max(nal.len()), (n % 251) as u8);
    let mut data = (nal.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(&nal);
    data
}

/// Opens a segment of `cam/main` (the stream made if new) starting at `start_ms`, in a new run of
/// the store's node, under `epoch`, with `video` as its one track.
pub fn create_segment(
    store: &Arc<Store>,
    video: &TestVideo,
    start_ms: i64,
    epoch: Option<u64>,
) -> SegmentWriter {
    let stream_id = store.ensure_stream("cam", "main").expect("stream");
    let run_id = store
        .catalog()
        .insert_run(stream_id, store.node(), start_ms)
        .expect("run");
    let tracks = [video.track()];
    store
        .create_segment(&NewSegment {
            stream_id,
            run_id,
            camera: "cam",
            stream: "main",
            start_ms,
            tracks: &tracks,
            video_codec: video.codec,
            width: u32::from(video.width),
            height: u32::from(video.height),
            audio_codec: None,
            epoch,
        })
        .expect("create")
}

/// Appends `pictures` (data, key frame) at 25 fps (3600 ticks of 90 kHz each) in fragments of
/// `per_fragment` pictures, the first fragment's decode time 0.
pub fn append_pictures(w: &mut SegmentWriter, pictures: &[(Vec<u8>, bool)], per_fragment: usize) {
    for (i, chunk) in pictures.chunks(per_fragment).enumerate() {
        let first = (per_fragment * i) as u64;
        let mut b = FragmentBuilder::new(i as u32 + 1, &[(1, 3600 * first)]);
        for (data, key) in chunk {
            let info = SampleInfo {
                duration: 3600,
                size: data.len() as u32,
                is_sync: *key,
                composition_offset: 0,
            };
            b.push_sample(0, info, data);
        }
        let done_ms = 40 * (per_fragment * i + chunk.len()) as i64;
        w.append_fragment(&b.finish(), chunk.len() as u64, done_ms)
            .expect("append");
    }
}

/// A sealed row of stream 1 covering `start_ms..end_ms` with no node, path, frames or epoch: the
/// fields a test cares about are set over it (`SegmentRow { epoch, ..sealed_row(a, b) }`).
pub fn sealed_row(start_ms: i64, end_ms: i64) -> SegmentRow {
    SegmentRow {
        id: SegmentId(0),
        stream_id: StreamId(1),
        run_id: None,
        node: String::new(),
        path: String::new(),
        state: SegmentState::Sealed,
        start_ms,
        end_ms,
        media_duration_ms: end_ms - start_ms,
        frames: 0,
        fragments: 0,
        size_bytes: 0,
        sha256: None,
        video_codec: String::new(),
        width: 0,
        height: 0,
        audio_codec: None,
        epoch: None,
    }
}
