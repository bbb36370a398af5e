//! A recorded range of one stream as ONE continuous fragmented MP4, built from the stored fragments
//! without re-encoding: the init section of the first segment once, then every fragment of the range
//! in order, its `moof` patched so that decode times run on across segment boundaries (`tfdt`) and
//! sequence numbers count up (`mfhd`). Nothing else changes, so each output fragment has the length
//! of its stored one and the whole file's length is known before a byte is read ([`Plan`]: the
//! catalog's segments, and each file's `moof`s read by `store::mp4::scan_file_headers`). That is
//! what lets HTTP range requests be answered at once ([`body`]).
//!
//! Where a range starts: at the last fragment beginning with a key frame at or before `start_ms`
//! (the player seeks forward from it). Where it ends: at `end_ms`, or where the recording stops
//! being one stretch: a gap (the catalog's rule: a segment starting after everything before it
//! ended) or a segment whose init section differs (codec parameters changed). Playback stops there
//! and says where the recording goes on ([`Stop`]); an export runs across gaps (the file's timeline
//! closes them, the manifest lists them) and stops only at a change of codec parameters.

pub mod body;
mod dedup;
pub mod http;

use std::path::PathBuf;

use store::mp4::{scan_file_headers, Handler, ScanReport};
use store::{Reader, SegmentRow, StorageError, StreamId};

/// Why a plan ends before the range asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The range was covered (or the recording ends within it).
    End,
    /// No recording from `from_ms`; it goes on at `next_ms`.
    Gap { from_ms: i64, next_ms: i64 },
    /// The segment starting at `next_ms` has other codec parameters: ask again from there.
    CodecChange { next_ms: i64 },
}

/// One stored fragment in the output.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Index into [`Plan::segments`].
    pub segment: usize,
    /// Offset and length in the segment file (a whole `moof` + `mdat`).
    pub offset: u64,
    pub len: u64,
    /// Offset in the output.
    pub out_offset: u64,
    /// `mfhd` sequence number in the output (1, 2, …).
    pub sequence: u32,
    /// Per track: (track id, what to add to the stored `tfdt`).
    pub decode_shift: Vec<(u32, i64)>,
    /// Wall time of the fragment's first video frame.
    pub start_ms: i64,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The first segment's `ftyp` + `moov`.
    pub init: Vec<u8>,
    pub pieces: Vec<Piece>,
    /// The segments the pieces come from, in order, with their absolute paths.
    pub segments: Vec<(SegmentRow, PathBuf)>,
    pub total_len: u64,
    /// Wall time of media time 0 (the first fragment's first frame).
    pub start_ms: i64,
    /// Wall time where the file's media ends.
    pub end_ms: i64,
    /// Video frames in the file.
    pub frames: u64,
    /// Spans without recording the file runs across (export only).
    pub gaps: Vec<(i64, i64)>,
    pub stop: Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no stream {0} in the catalog")]
    NoStream(String),
    #[error("no recording in the range")]
    Empty,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// A segment's file as the plan reads it.
struct Scanned {
    init: Vec<u8>,
    report: ScanReport,
    /// Index of the video track (else the first) in `report.tracks`.
    clock_track: usize,
    /// Decode time of the clock track's first fragment.
    first_decode: u64,
}

impl Scanned {
    /// Wall time of clock-track decode time `decode` in a segment starting at `row_start_ms`.
    fn wall(&self, row_start_ms: i64, decode: u64) -> i64 {
        let timescale = i64::from(self.report.tracks[self.clock_track].timescale.max(1));
        row_start_ms + (decode.saturating_sub(self.first_decode) as i64) * 1000 / timescale
    }
}

fn scan(path: &std::path::Path) -> Result<Scanned, PlanError> {
    let bad = |message: String| PlanError::File {
        path: path.to_owned(),
        message,
    };
    let report = scan_file_headers(path).map_err(|e| bad(e.to_string()))?;
    let init = {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut buf = vec![0u8; usize::try_from(report.init_len).unwrap_or(0)];
        f.read_exact_at(&mut buf, 0)
            .map_err(|e| bad(e.to_string()))?;
        buf
    };
    let clock_track = report
        .tracks
        .iter()
        .position(|t| t.handler == Handler::Video)
        .unwrap_or(0);
    let first_decode = report
        .tracks
        .get(clock_track)
        .and_then(|clock| {
            report
                .fragments
                .iter()
                .find_map(|f| run_of(f, clock.track_id).map(|r| r.base_decode_time))
        })
        .unwrap_or(0);
    if report.tracks.is_empty() {
        return Err(bad("no track in the init section".to_owned()));
    }
    Ok(Scanned {
        init,
        report,
        clock_track,
        first_decode,
    })
}

/// What a plan is for: playback stops at gaps, an export runs across them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Playback,
    Export,
}

/// Plans `[start_ms, end_ms)` of `camera`/`stream` (see the module documentation).
pub fn plan(
    reader: &Reader,
    camera: &str,
    stream: &str,
    start_ms: i64,
    end_ms: i64,
    mode: Mode,
) -> Result<Plan, PlanError> {
    let id: StreamId = reader
        .find_stream(camera, stream)?
        .ok_or_else(|| PlanError::NoStream(format!("{camera}/{stream}")))?;
    let parts = dedup::parts(reader, reader.timeline(id, start_ms, end_ms)?, start_ms)?;
    let mut b = Builder::new(start_ms, end_ms);
    let mut covered_until_ms = i64::MIN;
    for part in parts {
        let row = &part.segment.row;
        if covered_until_ms != i64::MIN && row.start_ms > covered_until_ms && !b.is_empty() {
            if mode == Mode::Playback {
                b.stop = Stop::Gap {
                    from_ms: covered_until_ms,
                    next_ms: row.start_ms,
                };
                break;
            }
            b.gaps.push((covered_until_ms, row.start_ms));
        }
        covered_until_ms = covered_until_ms.max(row.end_ms);
        if !b.add_part(&part) {
            break;
        }
    }
    b.finish()
}

struct Builder {
    start_ms: i64,
    end_ms: i64,
    init: Vec<u8>,
    pieces: Vec<Piece>,
    segments: Vec<(SegmentRow, PathBuf)>,
    /// Per track: the output decode time the next segment starts at.
    next_decode: Vec<(u32, u64)>,
    out_len: u64,
    frames: u64,
    media_end_ms: i64,
    gaps: Vec<(i64, i64)>,
    stop: Stop,
}

impl Builder {
    fn new(start_ms: i64, end_ms: i64) -> Builder {
        Builder {
            start_ms,
            end_ms,
            init: Vec::new(),
            pieces: Vec::new(),
            segments: Vec::new(),
            next_decode: Vec::new(),
            out_len: 0,
            frames: 0,
            media_end_ms: start_ms,
            gaps: Vec::new(),
            stop: Stop::End,
        }
    }

    fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Adds the fragments of one part that fall in the range; false once the plan must end.
    fn add_part(&mut self, part: &dedup::Part) -> bool {
        let row = &part.segment.row;
        let s = &part.segment.scanned;
        if !self.pieces.is_empty() && s.init != self.init {
            self.stop = Stop::CodecChange {
                next_ms: part.start_ms,
            };
            return false;
        }
        let clock = &s.report.tracks[s.clock_track];
        let wall = |decode: u64| s.wall(row.start_ms, decode);
        let frags = &s.report.fragments;
        let sync_start = |i: usize| {
            run_of(&frags[i], clock.track_id)
                .filter(|r| r.first_sample_is_sync)
                .map(|r| wall(r.base_decode_time))
        };
        // The first fragment of the output: the last one starting with a key frame at or before
        // start_ms, else the first key frame after it.
        let from = if self.pieces.is_empty() {
            let before = (part.from..part.to)
                .rev()
                .find(|&i| sync_start(i).is_some_and(|t| t <= self.start_ms));
            match before.or_else(|| (part.from..part.to).find(|&i| sync_start(i).is_some())) {
                Some(i) => i,
                None => return true,
            }
        } else {
            part.from
        };
        let chosen: Vec<usize> = (from..part.to)
            .filter(|&i| run_of(&frags[i], clock.track_id).is_some())
            .take_while(|&i| {
                run_of(&frags[i], clock.track_id)
                    .is_some_and(|r| wall(r.base_decode_time) < self.end_ms)
            })
            .collect();
        if chosen.is_empty() {
            return true;
        }
        if self.pieces.is_empty() {
            self.init = s.init.clone();
            self.out_len = self.init.len() as u64;
            self.next_decode = s.report.tracks.iter().map(|t| (t.track_id, 0)).collect();
            self.start_ms = chosen
                .first()
                .and_then(|&i| run_of(&frags[i], clock.track_id))
                .map_or(row.start_ms, |r| wall(r.base_decode_time));
        }
        // Per track: the segment's first chosen decode time maps to where the output goes on.
        let mut shift: Vec<(u32, i64)> = Vec::new();
        let mut ends: Vec<(u32, u64)> = Vec::new();
        for &(track, next) in &self.next_decode {
            let first = chosen
                .iter()
                .find_map(|&i| run_of(&frags[i], track).map(|r| r.base_decode_time));
            if let Some(first) = first {
                shift.push((track, next as i64 - first as i64));
            }
            let end = chosen.iter().rev().find_map(|&i| {
                run_of(&frags[i], track).map(|r| r.base_decode_time + r.duration_sum)
            });
            ends.push((
                track,
                match (first, end) {
                    (Some(first), Some(end)) => next + (end - first),
                    _ => next,
                },
            ));
        }
        let segment = match self.segments.iter().position(|(r, _)| r.id == row.id) {
            Some(i) => i,
            None => {
                self.segments.push((row.clone(), part.segment.path.clone()));
                self.segments.len() - 1
            }
        };
        for &i in &chosen {
            let f = &frags[i];
            let run = run_of(f, clock.track_id);
            self.frames += run.map_or(0, |r| u64::from(r.sample_count));
            if let Some(r) = run {
                self.media_end_ms = wall(r.base_decode_time + r.duration_sum);
            }
            self.pieces.push(Piece {
                segment,
                offset: f.offset,
                len: f.len,
                out_offset: self.out_len,
                sequence: u32::try_from(self.pieces.len() + 1).unwrap_or(u32::MAX),
                decode_shift: shift.clone(),
                start_ms: run.map_or(row.start_ms, |r| wall(r.base_decode_time)),
            });
            self.out_len += f.len;
        }
        self.next_decode = ends;
        true
    }

    fn finish(self) -> Result<Plan, PlanError> {
        if self.pieces.is_empty() {
            return Err(PlanError::Empty);
        }
        Ok(Plan {
            init: self.init,
            pieces: self.pieces,
            segments: self.segments,
            total_len: self.out_len,
            start_ms: self.start_ms,
            end_ms: self.media_end_ms,
            frames: self.frames,
            gaps: self.gaps,
            stop: self.stop,
        })
    }
}

fn run_of(f: &store::mp4::ScannedFragment, track: u32) -> Option<&store::mp4::ScannedTrackRun> {
    f.tracks
        .iter()
        .find(|r| r.track_id == track && r.sample_count > 0)
}
