//! `nvr frames`: frame identity in recorded segments. Lists each video sample of a segment file with the
//! stamp `camsim` put into it (an H.264 SEI with the frame's sequence number and send time, see
//! [`camsim::stamp`]) and summarizes a set of samples: the sequence range, missing and duplicated frames.
//! Used to check that recording loses or repeats no frame, across the segments of a run or across the
//! files of two nodes recording the same simulated stream.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use camsim::stamp::{find_in_length_prefixed, FrameStamp};
use store::mp4::{scan_samples, Handler, Mp4Error};

/// Why a file could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum FramesError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Mp4 { path: PathBuf, source: Mp4Error },
    #[error("{}: no video track", path.display())]
    NoVideoTrack { path: PathBuf },
    #[error(transparent)]
    Store(#[from] store::StorageError),
    #[error("the catalog has no stream {0}")]
    UnknownStream(String),
    #[error("bad stream {0:?}: expected CAMERA/STREAM")]
    BadStream(String),
}

/// One video sample of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// The camsim stamp, if the sample carries one.
    pub stamp: Option<FrameStamp>,
    /// A sync sample (key frame).
    pub key: bool,
    /// Decode time in the video track's timescale (90 kHz for H.264 from RTSP).
    pub decode_time: u64,
}

/// Sequence-number statistics over a set of frames (one file, or several together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lowest and highest stamped sequence number (`None` without stamped frames).
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// Frames (samples) in the set, stamped or not.
    pub count: u64,
    /// Sequence numbers in `first..=last` that no frame carries.
    pub missing: u64,
    /// Stamped frames whose sequence number an earlier frame of the set already carried.
    pub duplicated: u64,
    /// Frames without a camsim stamp.
    pub unstamped: u64,
}

/// Lists the video samples of the complete fragments of the segment file at `path`, in file order.
pub fn list(path: &Path) -> Result<Vec<FrameInfo>, FramesError> {
    Ok(list_with_timescale(path)?.1)
}

/// [`list`], with the video track's timescale.
fn list_with_timescale(path: &Path) -> Result<(u32, Vec<FrameInfo>), FramesError> {
    let data = std::fs::read(path).map_err(|source| FramesError::Io {
        path: path.to_owned(),
        source,
    })?;
    let (report, samples) = scan_samples(&data).map_err(|source| FramesError::Mp4 {
        path: path.to_owned(),
        source,
    })?;
    let video = report
        .tracks
        .iter()
        .find(|t| t.handler == Handler::Video)
        .ok_or_else(|| FramesError::NoVideoTrack {
            path: path.to_owned(),
        })?;
    let frames = samples
        .iter()
        .filter(|s| s.track_id == video.track_id)
        .map(|s| {
            // scan_samples only lists samples inside the data it was given.
            let start = usize::try_from(s.offset).unwrap_or(usize::MAX);
            let bytes = start
                .checked_add(s.size as usize)
                .and_then(|end| data.get(start..end))
                .unwrap_or_default();
            FrameInfo {
                stamp: find_in_length_prefixed(bytes),
                key: s.is_sync,
                decode_time: s.decode_time,
            }
        })
        .collect();
    Ok((video.timescale, frames))
}

/// The frames of a stream's de-duplicated timeline in the data directory `reader` reads: every open
/// and sealed segment, oldest first, without the frames trimmed from it because another node's copy
/// holds them (`store::timeline`). Each frame with its file; also the number of trimmed frames.
pub fn list_timeline(
    reader: &store::Reader,
    stream: &str,
) -> Result<(Vec<(FrameInfo, PathBuf)>, u64), FramesError> {
    let (camera, kind) = stream
        .split_once('/')
        .ok_or_else(|| FramesError::BadStream(stream.to_owned()))?;
    let id = reader
        .find_stream(camera, kind)?
        .ok_or_else(|| FramesError::UnknownStream(stream.to_owned()))?;
    let mut out = Vec::new();
    let mut trimmed = 0;
    for part in reader.timeline(id, i64::MIN, i64::MAX)? {
        let path = reader.absolute_path(&part.segment.path);
        let (timescale, frames) = list_with_timescale(&path)?;
        let first = frames.first().map_or(0, |f| f.decode_time);
        for f in frames {
            let offset = store::frame::to_90k(f.decode_time.saturating_sub(first), timescale);
            if part.keeps(offset) {
                out.push((f, path.clone()));
            } else {
                trimmed += 1;
            }
        }
    }
    Ok((out, trimmed))
}

/// Sequence range, missing and duplicated frames of `frames` (in any order; pass several files'
/// frames together to check them as one recording).
pub fn summarize(frames: &[FrameInfo]) -> Summary {
    let mut seen = HashSet::with_capacity(frames.len());
    let mut s = Summary {
        count: frames.len() as u64,
        ..Summary::default()
    };
    for f in frames {
        let Some(stamp) = f.stamp else {
            s.unstamped += 1;
            continue;
        };
        if !seen.insert(stamp.seq) {
            s.duplicated += 1;
        }
        s.first = Some(s.first.map_or(stamp.seq, |v| v.min(stamp.seq)));
        s.last = Some(s.last.map_or(stamp.seq, |v| v.max(stamp.seq)));
    }
    if let (Some(first), Some(last)) = (s.first, s.last) {
        s.missing = (last - first + 1).saturating_sub(seen.len() as u64);
    }
    s
}

/// One output line per frame: `SEQ SEND_TIME_US KEY FILE` (`-` for both numbers when unstamped; KEY 1 for
/// a key frame, else 0).
pub fn frame_line(f: &FrameInfo, file: &str) -> String {
    let key = u8::from(f.key);
    match f.stamp {
        Some(st) => format!("{} {} {key} {file}", st.seq, st.send_time_us),
        None => format!("- - {key} {file}"),
    }
}

/// The summary line: `# NAME: N frames, seq FIRST..LAST, M missing, D duplicated, U unstamped`.
pub fn summary_line(s: &Summary, name: &str) -> String {
    let range = match (s.first, s.last) {
        (Some(a), Some(b)) => format!("{a}..{b}"),
        _ => "-".to_owned(),
    };
    format!(
        "# {name}: {} frames, seq {range}, {} missing, {} duplicated, {} unstamped",
        s.count, s.missing, s.duplicated, s.unstamped
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use camsim::stamp::encode_sei;
    use store::mp4::{init_segment, FragmentBuilder, SampleInfo};

    fn stamped(seq: u64) -> FrameInfo {
        FrameInfo {
            stamp: Some(FrameStamp {
                seq,
                send_time_us: 1_000 + seq,
            }),
            key: false,
            decode_time: 0,
        }
    }

    #[test]
    fn summary_counts_missing_and_duplicates() {
        assert_eq!(summarize(&[]), Summary::default());
        let mut frames: Vec<FrameInfo> = [5, 6, 7, 9, 9, 12].into_iter().map(stamped).collect();
        frames.push(FrameInfo {
            stamp: None,
            key: true,
            decode_time: 0,
        });
        let s = summarize(&frames);
        assert_eq!(
            s,
            Summary {
                first: Some(5),
                last: Some(12),
                count: 7,
                missing: 3, // 8, 10, 11
                duplicated: 1,
                unstamped: 1,
            }
        );
        assert_eq!(
            summary_line(&s, "x"),
            "# x: 7 frames, seq 5..12, 3 missing, 1 duplicated, 1 unstamped"
        );
        assert_eq!(frame_line(&frames[0], "f.mp4"), "5 1005 0 f.mp4");
        assert_eq!(frame_line(&frames[6], "f.mp4"), "- - 1 f.mp4");
        // Order does not matter: two files' frames together.
        let mut rev = frames.clone();
        rev.reverse();
        assert_eq!(summarize(&rev), s);
    }

    /// A segment written with the store's own MP4 writer, with stamped samples (SEI, then a slice, each
    /// length-prefixed) and one without: `list` reads back the stamps, key flags and times.
    #[test]
    fn lists_stamps_of_a_written_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg.mp4");
        let mut file = init_segment(&[store::mp4::synthetic_video_track(64, 64)]).expect("init");
        let mut b = FragmentBuilder::new(1, &[(1, 0)]);
        for seq in [0u64, 1, 0x0000_0100, 3] {
            let mut data = Vec::new();
            let nals: [Vec<u8>; 2] = [
                encode_sei(FrameStamp {
                    seq,
                    send_time_us: 7,
                }),
                vec![0x65, 0x88, 0x84, 0x21],
            ];
            for nal in &nals {
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(nal);
            }
            let info = SampleInfo {
                duration: 3600,
                size: data.len() as u32,
                is_sync: seq == 0,
                composition_offset: 0,
            };
            b.push_sample(0, info, &data);
        }
        let plain = [0, 0, 0, 4, 0x41, 0x9a, 0x02, 0x03];
        let info = SampleInfo {
            duration: 3600,
            size: plain.len() as u32,
            is_sync: false,
            composition_offset: 0,
        };
        b.push_sample(0, info, &plain);
        file.extend_from_slice(&b.finish());
        std::fs::write(&path, &file).expect("write");
        let frames = list(&path).expect("list");
        let seqs: Vec<Option<u64>> = frames.iter().map(|f| f.stamp.map(|s| s.seq)).collect();
        assert_eq!(seqs, vec![Some(0), Some(1), Some(256), Some(3), None]);
        assert!(frames[0].key && !frames[1].key);
        assert_eq!(frames[4].decode_time, 4 * 3600);
        assert_eq!(frames[0].stamp.map(|s| s.send_time_us), Some(7));
        let s = summarize(&frames);
        assert_eq!(
            (s.first, s.last, s.missing, s.unstamped),
            (Some(0), Some(256), 253, 1)
        );

        assert!(matches!(
            list(&dir.path().join("absent.mp4")),
            Err(FramesError::Io { .. })
        ));
        std::fs::write(dir.path().join("junk.mp4"), b"junk").expect("write");
        assert!(matches!(
            list(&dir.path().join("junk.mp4")),
            Err(FramesError::Mp4 { .. })
        ));
    }

    /// Stamped frames `first..last` of `cam/main` recorded by `store`'s node into one sealed segment,
    /// de-duplicated.
    fn record(
        store: &std::sync::Arc<store::Store>,
        first: u64,
        last: u64,
        start_ms: i64,
        epoch: Option<u64>,
    ) {
        let video = store::test_support::TestVideo::synthetic();
        let mut w = store::test_support::create_segment(store, &video, start_ms, epoch);
        let pictures: Vec<(Vec<u8>, bool)> = (first..last)
            .map(|seq| {
                let mut data = Vec::new();
                let slice = [vec![0x65], seq.to_be_bytes().to_vec()].concat();
                // Each node's session stamps its own send time: only the slice names the frame.
                let sei = encode_sei(FrameStamp {
                    seq,
                    send_time_us: start_ms as u64,
                });
                for nal in [&sei, &slice] {
                    data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    data.extend_from_slice(nal);
                }
                (data, seq == first)
            })
            .collect();
        // One fragment holding them all.
        store::test_support::append_pictures(&mut w, &pictures, pictures.len());
        w.seal().expect("seal");
        // What the store's de-duplication job does after a seal.
        store.deduplicate_pending().expect("de-duplication pass");
    }

    /// Two nodes' overlapping copies in one catalog: the timeline lists each stamped frame once and
    /// counts what was trimmed; the files, listed one by one, still hold every frame.
    #[test]
    fn the_timeline_of_a_stream_skips_trimmed_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: std::sync::Arc<dyn base::clock::Clock> =
            std::sync::Arc::new(base::clock::ManualClock::new(1_700_000_100_000));
        let open = |node: &str| {
            std::sync::Arc::new(store::Store::open(dir.path(), node, clock.clone()).expect("store"))
        };
        let (a, s) = (open("node-a"), open("node-s"));
        record(&a, 0, 50, 1_700_000_000_000, None);
        record(&s, 30, 80, 1_700_000_000_000 + 30 * 40 + 4, Some(1));
        let reader = store::Reader::open(dir.path(), clock.clone()).expect("reader");
        let (frames, trimmed) = list_timeline(&reader, "cam/main").expect("timeline");
        let infos: Vec<FrameInfo> = frames.into_iter().map(|(f, _)| f).collect();
        let sum = summarize(&infos);
        assert_eq!(
            (
                sum.first,
                sum.last,
                sum.count,
                sum.missing,
                sum.duplicated,
                trimmed
            ),
            (Some(0), Some(79), 80, 0, 0, 20)
        );
        assert!(matches!(
            list_timeline(&reader, "cam/sub"),
            Err(FramesError::UnknownStream(_))
        ));
        assert!(matches!(
            list_timeline(&reader, "cam"),
            Err(FramesError::BadStream(_))
        ));
    }
}
