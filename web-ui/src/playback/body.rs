//! The bytes of a [`Plan`]: any byte range of the output, read from the segment files fragment by
//! fragment with each `moof` patched (`mfhd` sequence number, `tfdt` decode times), and the HTTP
//! `Range` header (one range; several are answered with the whole file, as RFC 9110 allows).

use std::os::unix::fs::FileExt;

use super::{Piece, Plan};

/// An inclusive byte range of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

/// What a `Range` header asks of a body of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: the whole body, 200.
    Whole,
    /// One satisfiable range, 206.
    Part(ByteRange),
    /// Nothing of the body, 416.
    Unsatisfiable,
}

/// Parses `bytes=A-B`, `bytes=A-` and `bytes=-N` against a body of `total` bytes.
pub fn parse_range(header: Option<&str>, total: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => b.parse::<u64>().ok().map(|n| {
            if n == 0 {
                None
            } else {
                Some((total.saturating_sub(n), total.saturating_sub(1)))
            }
        }),
        (false, _) => a.parse::<u64>().ok().and_then(|first| {
            let last = if b.is_empty() {
                Some(total.saturating_sub(1))
            } else {
                b.parse::<u64>()
                    .ok()
                    .map(|l| l.min(total.saturating_sub(1)))
            };
            last.map(|last| (first < total && first <= last).then_some((first, last)))
        }),
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Whole,
        Some(None) => RangeRequest::Unsatisfiable,
        Some(Some((first, last))) => RangeRequest::Part(ByteRange { first, last }),
    }
}

/// Reads `range` of the plan's output and hands it to `sink` in chunks (about one fragment each);
/// stops early when `sink` returns false.
pub fn produce(
    plan: &Plan,
    range: ByteRange,
    sink: &mut dyn FnMut(Vec<u8>) -> bool,
) -> std::io::Result<()> {
    let end = range.last + 1;
    let init_len = plan.init.len() as u64;
    if range.first < init_len {
        let to = end.min(init_len);
        if !sink(plan.init[range.first as usize..to as usize].to_vec()) {
            return Ok(());
        }
    }
    let mut open: Option<(usize, std::fs::File)> = None;
    let start = plan
        .pieces
        .partition_point(|p| p.out_offset + p.len <= range.first);
    for piece in &plan.pieces[start..] {
        if piece.out_offset >= end {
            break;
        }
        let file = match &open {
            Some((i, f)) if *i == piece.segment => f,
            _ => {
                let path = &plan.segments[piece.segment].1;
                let f = std::fs::File::open(path).map_err(|e| with_path(path, e))?;
                &open.insert((piece.segment, f)).1
            }
        };
        let bytes =
            read_piece(file, piece).map_err(|e| with_path(&plan.segments[piece.segment].1, e))?;
        let from = range.first.saturating_sub(piece.out_offset) as usize;
        let to = (end - piece.out_offset).min(piece.len) as usize;
        if !sink(bytes[from..to].to_vec()) {
            return Ok(());
        }
    }
    Ok(())
}

fn with_path(path: &std::path::Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// One fragment as it goes out: read from its file, `moof` patched.
fn read_piece(file: &std::fs::File, piece: &Piece) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(piece.len).unwrap_or(0)];
    file.read_exact_at(&mut buf, piece.offset)?;
    patch_moof(&mut buf, piece)
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m))?;
    Ok(buf)
}

/// `(type, start, end)` of each box in `buf[from..to]`.
fn boxes(buf: &[u8], from: usize, to: usize) -> Result<Vec<([u8; 4], usize, usize)>, String> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos + 8 <= to {
        let size =
            u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        if size < 8 || pos + size > to {
            return Err(format!("box of size {size} at {pos} does not fit"));
        }
        out.push((
            [buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]],
            pos,
            pos + size,
        ));
        pos += size;
    }
    Ok(out)
}

/// Sets the `mfhd` sequence number and shifts each `traf`'s `tfdt` (a fragment the scanner accepted:
/// 32-bit box sizes, as the recorder writes them).
fn patch_moof(buf: &mut [u8], piece: &Piece) -> Result<(), String> {
    let moof = boxes(buf, 0, buf.len())?
        .into_iter()
        .find(|b| &b.0 == b"moof")
        .ok_or("no moof")?;
    for (kind, start, end) in boxes(buf, moof.1 + 8, moof.2)? {
        match &kind {
            b"mfhd" if end - start >= 16 => {
                buf[start + 12..start + 16].copy_from_slice(&piece.sequence.to_be_bytes());
            }
            b"traf" => patch_traf(buf, start, end, piece)?,
            _ => {}
        }
    }
    Ok(())
}

fn patch_traf(buf: &mut [u8], start: usize, end: usize, piece: &Piece) -> Result<(), String> {
    let children = boxes(buf, start + 8, end)?;
    let track = children
        .iter()
        .find(|b| &b.0 == b"tfhd" && b.2 - b.1 >= 16)
        .map(|b| u32::from_be_bytes([buf[b.1 + 12], buf[b.1 + 13], buf[b.1 + 14], buf[b.1 + 15]]))
        .ok_or("traf without tfhd")?;
    let shift = piece
        .decode_shift
        .iter()
        .find(|(t, _)| *t == track)
        .map_or(0, |(_, s)| *s);
    let tfdt = children
        .iter()
        .find(|b| &b.0 == b"tfdt")
        .ok_or("traf without tfdt")?;
    let at = tfdt.1 + 12;
    if buf[tfdt.1 + 8] == 1 && tfdt.2 - tfdt.1 >= 20 {
        let old = u64::from_be_bytes(buf[at..at + 8].try_into().map_err(|_| "tfdt")?);
        let new = u64::try_from(old as i128 + shift as i128).map_err(|_| "tfdt below 0")?;
        buf[at..at + 8].copy_from_slice(&new.to_be_bytes());
    } else if tfdt.2 - tfdt.1 >= 16 {
        let old = u32::from_be_bytes(buf[at..at + 4].try_into().map_err(|_| "tfdt")?);
        let new = u32::try_from(i64::from(old) + shift).map_err(|_| "tfdt out of 32 bits")?;
        buf[at..at + 4].copy_from_slice(&new.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        let p = |h: &str| parse_range(Some(h), 100);
        let part = |first, last| RangeRequest::Part(ByteRange { first, last });
        assert_eq!(parse_range(None, 100), RangeRequest::Whole);
        assert_eq!(p("bytes=0-"), part(0, 99));
        assert_eq!(p("bytes=10-19"), part(10, 19));
        assert_eq!(p("bytes=90-200"), part(90, 99));
        assert_eq!(p("bytes=-10"), part(90, 99));
        assert_eq!(p("bytes=-500"), part(0, 99));
        assert_eq!(p("bytes=100-"), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=20-10"), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=-0"), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=0-1,5-6"), RangeRequest::Whole);
        assert_eq!(p("items=0-1"), RangeRequest::Whole);
        assert_eq!(p("bytes=x-1"), RangeRequest::Whole);
    }
}
