//! Crash-recovery scanner for segment files: reads a possibly truncated or damaged file and reports
//! its tracks and every complete `moof`+`mdat` pair, so recovery can truncate at [`ScanReport::valid_len`].
//!
//! Layout expected (what [`super::init_segment`] and [`super::FragmentBuilder`] write):
//!
//! ```text
//! ftyp  [free|skip ...]  moov(mvhd, trak..., mvex(trex...))   <- init; damage here is an error
//! moof mdat  moof mdat  ...  [partial fragment or garbage]    <- damage here ends the valid region
//! ```
//!
//! `free`/`skip` boxes between fragments are stepped over. A fragment counts only if its `moof`
//! parses, every `traf` names a track of the `moov` and has `tfhd` and `tfdt`, the `mdat` follows
//! immediately and is complete (an `mdat` with size 0, "to end of file", is not accepted, as it
//! cannot be told apart from a cut-off append), and every `trun`'s data lies inside that `mdat`.
//!
//! Robustness: every read is bounds-checked, box sizes (32-bit, 64-bit `largesize`, or 0) are checked
//! against the enclosing box before use, `trun` sample counts are checked against the bytes present,
//! and nothing is allocated in proportion to a count read from the file (sample tables are summed,
//! not collected). Work is linear in the file size.

use std::path::Path;

use super::Mp4Error;

/// A track's media handler (`hdlr` handler_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    Video,
    Audio,
    Other([u8; 4]),
}

/// A track described in the `moov`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedTrack {
    pub track_id: u32,
    /// `mdhd` ticks per second.
    pub timescale: u32,
    pub handler: Handler,
    /// Type of the first sample entry in `stsd`: `avc1`, `hvc1`, `mp4a`, ...
    pub sample_entry_type: [u8; 4],
    /// Width and height in pixels from the visual sample entry (video tracks only).
    pub pixel_dimensions: Option<(u16, u16)>,
    /// Channel count from the audio sample entry (audio tracks only).
    pub channels: Option<u16>,
    /// Integer part of the audio sample entry's 16.16 sample rate (audio tracks only).
    pub sample_rate_hz: Option<u32>,
}

/// One track's samples within a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedTrackRun {
    pub track_id: u32,
    /// `tfdt` base media decode time, in the track's timescale.
    pub base_decode_time: u64,
    pub sample_count: u32,
    /// Sum of sample durations, in the track's timescale.
    pub duration_sum: u64,
    /// False if the fragment has no samples for this track.
    pub first_sample_is_sync: bool,
}

/// One complete `moof`+`mdat` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedFragment {
    /// File offset of the `moof`.
    pub offset: u64,
    /// Bytes of `moof` + `mdat`.
    pub len: u64,
    /// `mfhd` sequence number.
    pub sequence_number: u32,
    /// One entry per `traf`, in file order.
    pub tracks: Vec<ScannedTrackRun>,
}

/// What [`scan`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanReport {
    /// Bytes of ftyp+moov (and anything between them).
    pub init_len: u64,
    pub tracks: Vec<ScannedTrack>,
    /// Each complete moof+mdat pair, in file order.
    pub fragments: Vec<ScannedFragment>,
    /// End of the last complete fragment (or `init_len` if none): truncate here to recover.
    pub valid_len: u64,
    /// Bytes after `valid_len` (a partial fragment or garbage).
    pub trailing_bytes: u64,
}

/// One sample of a complete fragment, as listed by [`scan_samples`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedSample {
    pub track_id: u32,
    /// Index into [`ScanReport::fragments`] of the fragment holding the sample.
    pub fragment_index: usize,
    /// Absolute file offset of the sample's data.
    pub offset: u64,
    pub size: u32,
    /// Decode time in the track's timescale.
    pub decode_time: u64,
    pub is_sync: bool,
}

/// Reads the whole file at `path` into memory and [`scan`]s it.
pub fn scan_file(path: impl AsRef<Path>) -> Result<ScanReport, Mp4Error> {
    let data = std::fs::read(path)?;
    scan(&data)
}

/// [`scan_file`] without reading the media: the init and every `moof` (with the `mdat` header after
/// it) are read, each `mdat`'s payload is skipped by its size (checked against the file's length).
/// The same rules decide what counts as a complete fragment, except that the payload's bytes are not
/// looked at; for an hour of video it reads a few hundred kilobytes instead of the whole files (the
/// viewer plans a playback range from it). [`ScanReport::trailing_bytes`] counts from the file's
/// length when the scan started.
pub fn scan_file_headers(path: impl AsRef<Path>) -> Result<ScanReport, Mp4Error> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let read_at = |pos: u64, len: u64| -> Result<Vec<u8>, Mp4Error> {
        let len = len.min(file_len.saturating_sub(pos));
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    };
    // The init: every box up to and including the moov, read whole.
    let mut init = Vec::new();
    loop {
        let head = read_at(init.len() as u64, 16)?;
        let h = match read_header(&head, 0) {
            Ok(Some(h)) => h,
            _ => break,
        };
        if h.total_len > file_len - init.len() as u64 || matches!(&h.box_type, b"moof" | b"mdat") {
            break;
        }
        let is_moov = &h.box_type == b"moov";
        init.extend_from_slice(&read_at(init.len() as u64, h.total_len)?);
        if is_moov {
            break;
        }
    }
    let (init_len, tracks, trex) = scan_init(&init)?;
    let mut fragments = Vec::new();
    let mut pos = init_len as u64;
    let mut valid_len = pos;
    loop {
        let head = read_at(pos, 16)?;
        let h = match read_header(&head, 0) {
            Ok(Some(h)) => h,
            _ => break,
        };
        if matches!(&h.box_type, b"free" | b"skip") && h.size_field != 0 {
            if h.total_len > file_len - pos {
                break;
            }
            pos += h.total_len;
            continue;
        }
        if &h.box_type != b"moof" || h.size_field == 0 || h.total_len > file_len - pos {
            break;
        }
        let moof_len = h.total_len as usize;
        let buf = read_at(pos, h.total_len + 16)?;
        let Some(mh) = read_header(&buf, moof_len).ok().flatten() else {
            break;
        };
        let mdat_pos = pos + h.total_len;
        if &mh.box_type != b"mdat" || mh.size_field == 0 || mh.total_len > file_len - mdat_pos {
            break;
        }
        let moof = Bx {
            box_type: h.box_type,
            offset: pos,
            header_len: h.header_len,
            body: &buf[h.header_len..moof_len],
        };
        let payload = mdat_pos + mh.header_len as u64..mdat_pos + mh.total_len;
        let Ok((sequence_number, runs)) = parse_moof(&moof, payload, &trex, None) else {
            break;
        };
        let len = h.total_len + mh.total_len;
        fragments.push(ScannedFragment {
            offset: pos,
            len,
            sequence_number,
            tracks: runs,
        });
        pos += len;
        valid_len = pos;
    }
    Ok(ScanReport {
        init_len: init_len as u64,
        tracks,
        fragments,
        valid_len,
        trailing_bytes: file_len - valid_len,
    })
}

/// Reads a possibly truncated or damaged segment file.
///
/// Errors only if the init (`ftyp` + `moov`) is absent, truncated or malformed; anything wrong after
/// it ends the valid region and is reported as [`ScanReport::trailing_bytes`].
pub fn scan(data: &[u8]) -> Result<ScanReport, Mp4Error> {
    scan_into(data, None)
}

/// [`scan`], plus every sample of the complete fragments, in file order. The list is proportional to
/// the file's size: a sample needs at least 4 bytes of `trun` table or 1 byte of `mdat` (runs without a
/// table and with a default size of 0 end the valid region).
pub fn scan_samples(data: &[u8]) -> Result<(ScanReport, Vec<ScannedSample>), Mp4Error> {
    let mut samples = Vec::new();
    let report = scan_into(data, Some(&mut samples))?;
    Ok((report, samples))
}

fn scan_into(
    data: &[u8],
    mut samples: Option<&mut Vec<ScannedSample>>,
) -> Result<ScanReport, Mp4Error> {
    let (init_len, tracks, trex) = scan_init(data)?;
    let mut fragments = Vec::new();
    let mut pos = init_len;
    let mut valid_len = init_len;
    loop {
        match read_header(data, pos) {
            Ok(Some(h)) if matches!(&h.box_type, b"free" | b"skip") && h.size_field != 0 => {
                if h.total_len > (data.len() - pos) as u64 {
                    break;
                }
                pos += h.total_len as usize;
            }
            Ok(Some(h)) if &h.box_type == b"moof" => {
                let listed = samples.as_ref().map_or(0, |s| s.len());
                let sink = samples.as_deref_mut().map(|s| (fragments.len(), s));
                let Some(frag) = scan_fragment(data, pos, &h, &trex, sink) else {
                    // Samples of a damaged fragment are not listed.
                    if let Some(s) = samples.as_deref_mut() {
                        s.truncate(listed);
                    }
                    break;
                };
                pos += frag.len as usize;
                valid_len = pos;
                fragments.push(frag);
            }
            _ => break,
        }
    }
    Ok(ScanReport {
        init_len: init_len as u64,
        tracks,
        fragments,
        valid_len: valid_len as u64,
        trailing_bytes: (data.len() - valid_len) as u64,
    })
}

/// A box header read from `data` at some position.
struct Header {
    box_type: [u8; 4],
    /// 8, or 16 with a 64-bit largesize.
    header_len: usize,
    /// The raw 32-bit size field (0: box extends to the end of the enclosing data).
    size_field: u32,
    /// Total box length including the header; may exceed the bytes present.
    total_len: u64,
}

/// Reads a box header at `pos`. `Ok(None)`: not enough bytes for a header. `Err`: the size is smaller
/// than the header.
fn read_header(data: &[u8], pos: usize) -> Result<Option<Header>, String> {
    let rest = data.get(pos..).unwrap_or_default();
    let Some(h) = rest.get(..8) else {
        return Ok(None);
    };
    let size_field = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let box_type = [h[4], h[5], h[6], h[7]];
    let (header_len, total_len) = match size_field {
        0 => (8, rest.len() as u64),
        1 => {
            let Some(l) = rest.get(8..16) else {
                return Ok(None);
            };
            let large = u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]);
            (16, large)
        }
        n => (8, u64::from(n)),
    };
    if total_len < header_len as u64 {
        return Err(format!("size {total_len} is smaller than its header"));
    }
    Ok(Some(Header {
        box_type,
        header_len,
        size_field,
        total_len,
    }))
}

/// A complete box inside some parsed region.
struct Bx<'a> {
    box_type: [u8; 4],
    /// Absolute file offset of the box header.
    offset: u64,
    /// 8, or 16 with a largesize.
    header_len: usize,
    body: &'a [u8],
}

fn type_str(t: &[u8; 4]) -> String {
    t.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn malformed(box_type: &[u8; 4], offset: u64, reason: impl Into<String>) -> Mp4Error {
    Mp4Error::Malformed {
        box_type: type_str(box_type),
        offset,
        reason: reason.into(),
    }
}

/// Iterates the child boxes of a container body. Yields an error (then stops) if a child's header
/// or declared size does not fit the container.
struct Children<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute offset of `data[0]`.
    base: u64,
    parent: [u8; 4],
}

impl<'a> Children<'a> {
    fn of(parent: &Bx<'a>, body_offset: usize) -> Self {
        Children {
            data: parent.body.get(body_offset..).unwrap_or_default(),
            pos: 0,
            base: parent.offset + (parent.header_len + body_offset) as u64,
            parent: parent.box_type,
        }
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Bx<'a>, Mp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let at = self.base + self.pos as u64;
        let remaining = self.data.len() - self.pos;
        let res = match read_header(self.data, self.pos) {
            Ok(None) => Err(malformed(
                &self.parent,
                at,
                format!("{remaining} stray bytes at end of container"),
            )),
            Err(reason) => Err(malformed(&self.parent, at, reason)),
            Ok(Some(h)) if h.total_len > remaining as u64 => Err(malformed(
                &h.box_type,
                at,
                format!(
                    "size {} exceeds the {remaining} bytes left in its {}",
                    h.total_len,
                    type_str(&self.parent)
                ),
            )),
            Ok(Some(h)) => {
                let start = self.pos;
                self.pos += h.total_len as usize;
                Ok(Bx {
                    box_type: h.box_type,
                    offset: at,
                    header_len: h.header_len,
                    body: &self.data[start + h.header_len..self.pos],
                })
            }
        };
        if res.is_err() {
            self.pos = self.data.len();
        }
        Some(res)
    }
}

/// Bounds-checked big-endian reads from a box body.
struct Reader<'a, 'b> {
    bx: &'b Bx<'a>,
    pos: usize,
}

impl<'a, 'b> Reader<'a, 'b> {
    fn new(bx: &'b Bx<'a>) -> Self {
        Reader { bx, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        let body: &'a [u8] = self.bx.body;
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| body.get(self.pos..end))
            .ok_or_else(|| {
                malformed(
                    &self.bx.box_type,
                    self.bx.offset,
                    format!("body too short ({} bytes)", body.len()),
                )
            })?;
        self.pos += n;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> Result<(), Mp4Error> {
        self.take(n).map(|_| ())
    }
    fn u16(&mut self) -> Result<u16, Mp4Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Mp4Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Mp4Error> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
    fn fourcc(&mut self) -> Result<[u8; 4], Mp4Error> {
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }
    /// Full box header: (version, flags).
    fn full(&mut self) -> Result<(u8, u32), Mp4Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }
    fn remaining(&self) -> usize {
        self.bx.body.len() - self.pos
    }
}

/// `trex` defaults, keyed by track.
#[derive(Clone, Copy, Default)]
struct Trex {
    track_id: u32,
    default_sample_duration: u32,
    default_sample_size: u32,
    default_sample_flags: u32,
}

/// Finds and parses ftyp + moov. Returns the init length, tracks and their `trex` defaults.
fn scan_init(data: &[u8]) -> Result<(usize, Vec<ScannedTrack>, Vec<Trex>), Mp4Error> {
    match read_header(data, 0) {
        Ok(Some(h)) if &h.box_type == b"ftyp" => {
            if h.total_len > data.len() as u64 {
                return Err(malformed(b"ftyp", 0, "truncated"));
            }
        }
        Ok(Some(h)) => {
            return Err(Mp4Error::NotMp4(format!(
                "first box is {:?}, not ftyp",
                type_str(&h.box_type)
            )))
        }
        Ok(None) => return Err(Mp4Error::NotMp4(format!("only {} bytes", data.len()))),
        Err(reason) => return Err(Mp4Error::NotMp4(reason)),
    }
    let mut pos = 0usize;
    loop {
        let h = match read_header(data, pos) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(Mp4Error::MissingBox("moov")),
            Err(reason) => return Err(malformed(b"????", pos as u64, reason)),
        };
        if matches!(&h.box_type, b"moof" | b"mdat") {
            return Err(Mp4Error::MissingBox("moov"));
        }
        if h.total_len > (data.len() - pos) as u64 {
            return Err(malformed(&h.box_type, pos as u64, "truncated"));
        }
        let end = pos + h.total_len as usize;
        if &h.box_type == b"moov" {
            let moov = Bx {
                box_type: h.box_type,
                offset: pos as u64,
                header_len: h.header_len,
                body: &data[pos + h.header_len..end],
            };
            let (tracks, trex) = parse_moov(&moov)?;
            return Ok((end, tracks, trex));
        }
        pos = end;
    }
}

fn find<'a>(children: Children<'a>, box_type: &[u8; 4]) -> Result<Option<Bx<'a>>, Mp4Error> {
    for c in children {
        let c = c?;
        if &c.box_type == box_type {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn require<'a>(
    parent: &Bx<'a>,
    body_offset: usize,
    box_type: &'static [u8; 4],
    name: &'static str,
) -> Result<Bx<'a>, Mp4Error> {
    find(Children::of(parent, body_offset), box_type)?.ok_or(Mp4Error::MissingBox(name))
}

fn parse_moov(moov: &Bx<'_>) -> Result<(Vec<ScannedTrack>, Vec<Trex>), Mp4Error> {
    let mut tracks = Vec::new();
    let mut mvex = None;
    for c in Children::of(moov, 0) {
        let c = c?;
        match &c.box_type {
            b"trak" => tracks.push(parse_trak(&c)?),
            b"mvex" => mvex = Some(c),
            _ => {}
        }
    }
    if tracks.is_empty() {
        return Err(Mp4Error::MissingBox("trak"));
    }
    let mvex = mvex.ok_or(Mp4Error::MissingBox("mvex"))?;
    let mut trex = Vec::new();
    for c in Children::of(&mvex, 0) {
        let c = c?;
        if &c.box_type != b"trex" {
            continue;
        }
        let mut r = Reader::new(&c);
        r.full()?;
        let track_id = r.u32()?;
        r.skip(4)?; // default_sample_description_index
        trex.push(Trex {
            track_id,
            default_sample_duration: r.u32()?,
            default_sample_size: r.u32()?,
            default_sample_flags: r.u32()?,
        });
    }
    // Every track needs defaults to interpret its fragments; `trex` is mandatory per track in mvex.
    for t in &tracks {
        if !trex.iter().any(|x| x.track_id == t.track_id) {
            return Err(malformed(
                b"mvex",
                mvex.offset,
                format!("no trex for track {}", t.track_id),
            ));
        }
    }
    Ok((tracks, trex))
}

fn parse_trak(trak: &Bx<'_>) -> Result<ScannedTrack, Mp4Error> {
    let tkhd = require(trak, 0, b"tkhd", "tkhd")?;
    let mut r = Reader::new(&tkhd);
    let (version, _) = r.full()?;
    r.skip(if version == 1 { 16 } else { 8 })?; // creation, modification times
    let track_id = r.u32()?;
    if track_id == 0 {
        return Err(malformed(b"tkhd", tkhd.offset, "track_ID 0"));
    }

    let mdia = require(trak, 0, b"mdia", "mdia")?;
    let mdhd = require(&mdia, 0, b"mdhd", "mdhd")?;
    let mut r = Reader::new(&mdhd);
    let (version, _) = r.full()?;
    r.skip(if version == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return Err(malformed(b"mdhd", mdhd.offset, "timescale 0"));
    }

    let hdlr = require(&mdia, 0, b"hdlr", "hdlr")?;
    let mut r = Reader::new(&hdlr);
    r.full()?;
    r.skip(4)?; // pre_defined
    let handler = match &r.fourcc()? {
        b"vide" => Handler::Video,
        b"soun" => Handler::Audio,
        other => Handler::Other(*other),
    };

    let minf = require(&mdia, 0, b"minf", "minf")?;
    let stbl = require(&minf, 0, b"stbl", "stbl")?;
    let stsd = require(&stbl, 0, b"stsd", "stsd")?;
    let mut r = Reader::new(&stsd);
    r.full()?;
    if r.u32()? == 0 {
        return Err(malformed(b"stsd", stsd.offset, "no sample entries"));
    }
    // The entries follow the 8-byte full box header + entry_count.
    let entry = Children::of(&stsd, 8)
        .next()
        .ok_or_else(|| malformed(b"stsd", stsd.offset, "no sample entries"))??;

    let mut t = ScannedTrack {
        track_id,
        timescale,
        handler,
        sample_entry_type: entry.box_type,
        pixel_dimensions: None,
        channels: None,
        sample_rate_hz: None,
    };
    let mut r = Reader::new(&entry);
    r.skip(8)?; // SampleEntry: reserved[6], data_reference_index
    match handler {
        Handler::Video => {
            r.skip(16)?; // pre_defined, reserved, pre_defined[3]
            t.pixel_dimensions = Some((r.u16()?, r.u16()?));
        }
        Handler::Audio => {
            r.skip(8)?; // reserved[2] (QuickTime: version, revision, vendor)
            t.channels = Some(r.u16()?);
            r.skip(6)?; // samplesize, pre_defined, reserved
            t.sample_rate_hz = Some(r.u32()? >> 16);
        }
        Handler::Other(_) => {}
    }
    Ok(t)
}

const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_DURATION: u32 = 0x08;
const TFHD_DEFAULT_SIZE: u32 = 0x10;
const TFHD_DEFAULT_FLAGS: u32 = 0x20;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x004;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_CTO: u32 = 0x800;
const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

/// Parses the fragment whose `moof` header `h` is at `pos`; `None` if it is incomplete or damaged.
/// `samples`: where to list the fragment's samples (with the fragment's index), if wanted.
fn scan_fragment(
    data: &[u8],
    pos: usize,
    h: &Header,
    trex: &[Trex],
    samples: Option<(usize, &mut Vec<ScannedSample>)>,
) -> Option<ScannedFragment> {
    if h.size_field == 0 || h.total_len > (data.len() - pos) as u64 {
        return None;
    }
    let moof_len = h.total_len as usize;
    let mdat_pos = pos + moof_len;
    let mh = read_header(data, mdat_pos).ok()??;
    if &mh.box_type != b"mdat"
        || mh.size_field == 0
        || mh.total_len > (data.len() - mdat_pos) as u64
    {
        return None;
    }
    let moof = Bx {
        box_type: h.box_type,
        offset: pos as u64,
        header_len: h.header_len,
        body: &data[pos + h.header_len..mdat_pos],
    };
    let mdat_payload = (mdat_pos + mh.header_len) as u64..(mdat_pos as u64 + mh.total_len);
    let (sequence_number, tracks) = parse_moof(&moof, mdat_payload, trex, samples).ok()?;
    Some(ScannedFragment {
        offset: pos as u64,
        len: moof_len as u64 + mh.total_len,
        sequence_number,
        tracks,
    })
}

/// Parses a `moof`, checking that all sample data lies within `mdat_payload` (absolute offsets).
fn parse_moof(
    moof: &Bx<'_>,
    mdat_payload: std::ops::Range<u64>,
    trex: &[Trex],
    mut samples: Option<(usize, &mut Vec<ScannedSample>)>,
) -> Result<(u32, Vec<ScannedTrackRun>), Mp4Error> {
    let bad = |offset: u64, reason: &str| malformed(b"moof", offset, reason);
    let mut sequence_number = None;
    let mut runs = Vec::new();
    // End of the previous traf's data: the implicit base when a tfhd has neither
    // base-data-offset-present nor default-base-is-moof.
    let mut prev_traf_data_end = moof.offset;
    for c in Children::of(moof, 0) {
        let c = c?;
        match &c.box_type {
            b"mfhd" => {
                let mut r = Reader::new(&c);
                r.full()?;
                sequence_number = Some(r.u32()?);
            }
            b"traf" => {
                let (run, data_end) = parse_traf(
                    &c,
                    moof.offset,
                    runs.is_empty(),
                    prev_traf_data_end,
                    &mdat_payload,
                    trex,
                    samples.as_mut().map(|(i, s)| (*i, &mut **s)),
                )?;
                prev_traf_data_end = data_end;
                runs.push(run);
            }
            _ => {}
        }
    }
    let sequence_number = sequence_number.ok_or_else(|| bad(moof.offset, "no mfhd"))?;
    Ok((sequence_number, runs))
}

/// Parses one `traf`; returns its summary and the absolute end offset of its sample data.
fn parse_traf(
    traf: &Bx<'_>,
    moof_offset: u64,
    is_first_traf: bool,
    prev_traf_data_end: u64,
    mdat_payload: &std::ops::Range<u64>,
    trex: &[Trex],
    mut samples: Option<(usize, &mut Vec<ScannedSample>)>,
) -> Result<(ScannedTrackRun, u64), Mp4Error> {
    let bad = |reason: &str| malformed(b"traf", traf.offset, reason);
    let tfhd = require(traf, 0, b"tfhd", "tfhd")?;
    let mut r = Reader::new(&tfhd);
    let (_, tf_flags) = r.full()?;
    let track_id = r.u32()?;
    let defaults = trex
        .iter()
        .find(|t| t.track_id == track_id)
        .copied()
        .ok_or_else(|| bad("track not in moov"))?;
    let base = if tf_flags & TFHD_BASE_DATA_OFFSET != 0 {
        r.u64()?
    } else if tf_flags & TFHD_DEFAULT_BASE_IS_MOOF != 0 || is_first_traf {
        moof_offset
    } else {
        prev_traf_data_end
    };
    if tf_flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        r.skip(4)?;
    }
    let default_duration = if tf_flags & TFHD_DEFAULT_DURATION != 0 {
        r.u32()?
    } else {
        defaults.default_sample_duration
    };
    let default_size = if tf_flags & TFHD_DEFAULT_SIZE != 0 {
        r.u32()?
    } else {
        defaults.default_sample_size
    };
    let default_flags = if tf_flags & TFHD_DEFAULT_FLAGS != 0 {
        r.u32()?
    } else {
        defaults.default_sample_flags
    };

    let tfdt = require(traf, 0, b"tfdt", "tfdt")?;
    let mut r = Reader::new(&tfdt);
    let (version, _) = r.full()?;
    let base_decode_time = if version == 1 {
        r.u64()?
    } else {
        u64::from(r.u32()?)
    };

    let mut run = ScannedTrackRun {
        track_id,
        base_decode_time,
        sample_count: 0,
        duration_sum: 0,
        first_sample_is_sync: false,
    };
    let mut data_end = base;
    for c in Children::of(traf, 0) {
        let c = c?;
        if &c.box_type != b"trun" {
            continue;
        }
        let mut r = Reader::new(&c);
        let (_, flags) = r.full()?;
        let count = r.u32()?;
        let data_start = if flags & TRUN_DATA_OFFSET != 0 {
            let off = i128::from(r.u32()? as i32);
            u64::try_from(i128::from(base) + off).map_err(|_| bad("data offset out of range"))?
        } else {
            data_end
        };
        let first_flags = if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let per_sample_fields = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO]
            .iter()
            .filter(|&&f| flags & f != 0)
            .count();
        let per_sample_bytes = 4 * per_sample_fields as u64;
        if u64::from(count) * per_sample_bytes > r.remaining() as u64 {
            return Err(bad("trun sample count exceeds its box"));
        }
        // A damaged fragment's samples are dropped by `scan_into`.
        let want_samples = samples.is_some();
        let mut sample_at = data_start;
        let mut time_at = base_decode_time + run.duration_sum;
        let mut list = |size: u32, duration: u32, flags: u32| {
            if let Some((fragment_index, s)) = samples.as_mut() {
                s.push(ScannedSample {
                    track_id,
                    fragment_index: *fragment_index,
                    offset: sample_at,
                    size,
                    decode_time: time_at,
                    is_sync: flags & SAMPLE_IS_NON_SYNC == 0,
                });
            }
            sample_at = sample_at.saturating_add(u64::from(size));
            time_at = time_at.saturating_add(u64::from(duration));
        };
        let (duration_sum, size_sum, first_sample_flags) = if per_sample_fields == 0 {
            if want_samples {
                if default_size == 0 {
                    return Err(bad("samples of size 0 without a sample table"));
                }
                // Bounded by the mdat: count * default_size is checked against it below, before
                // anything is kept.
                if u64::from(count) * u64::from(default_size)
                    <= mdat_payload.end - mdat_payload.start
                {
                    for i in 0..count {
                        let f = if i == 0 {
                            first_flags.unwrap_or(default_flags)
                        } else {
                            default_flags
                        };
                        list(default_size, default_duration, f);
                    }
                }
            }
            // No per-sample table: sum arithmetically rather than looping `count` times.
            (
                u64::from(count) * u64::from(default_duration),
                u64::from(count) * u64::from(default_size),
                first_flags.unwrap_or(default_flags),
            )
        } else {
            let mut durations = 0u64;
            let mut sizes = 0u64;
            let mut first_sample_flags = default_flags;
            for i in 0..count {
                let duration = if flags & TRUN_DURATION != 0 {
                    r.u32()?
                } else {
                    default_duration
                };
                durations += u64::from(duration);
                let size = if flags & TRUN_SIZE != 0 {
                    r.u32()?
                } else {
                    default_size
                };
                sizes += u64::from(size);
                let sample_flags = if flags & TRUN_FLAGS != 0 {
                    r.u32()?
                } else {
                    default_flags
                };
                if i == 0 {
                    first_sample_flags = first_flags.unwrap_or(sample_flags);
                }
                list(
                    size,
                    duration,
                    if i == 0 {
                        first_sample_flags
                    } else {
                        sample_flags
                    },
                );
                if flags & TRUN_CTO != 0 {
                    r.skip(4)?;
                }
            }
            (durations, sizes, first_sample_flags)
        };
        let end = data_start
            .checked_add(size_sum)
            .ok_or_else(|| bad("data range overflows"))?;
        if data_start < mdat_payload.start || end > mdat_payload.end {
            return Err(bad("trun data lies outside the following mdat"));
        }
        if run.sample_count == 0 && count > 0 {
            run.first_sample_is_sync = first_sample_flags & SAMPLE_IS_NON_SYNC == 0;
        }
        run.sample_count = run
            .sample_count
            .checked_add(count)
            .ok_or_else(|| bad("sample count overflows"))?;
        run.duration_sum = run
            .duration_sum
            .checked_add(duration_sum)
            .ok_or_else(|| bad("duration sum overflows"))?;
        data_end = end;
    }
    Ok((run, data_end))
}
