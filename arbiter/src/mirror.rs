//! The last frame a standby holds from a primary for one stream: the end of the newest mirrored copy
//! of that stream, sealed (`media/…_<origin>.mp4`, cataloged with node = origin) or still staging
//! (`incoming/<origin>/media/…`), read through `store` (layout, read-only catalog access, frame
//! identity). A hot takeover promotes the standby's shadowed stream exactly after that frame.

use std::path::{Path, PathBuf};

use store::frame::{last_frame_in_file, FrameFileError, FrameId};
use store::layout::{list_media_files, parse_media_path, INCOMING_DIR};
use store::{Reader, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Frame(#[from] FrameFileError),
    #[error("listing {}: {source}", path.display())]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The copies of `camera/kind` recorded by `origin` (mirrored from it, or this node's own when `origin`
/// is this node), newest first: path and `start_ms`.
pub fn copies(
    reader: &Reader,
    origin: &str,
    camera: &str,
    kind: &str,
) -> Result<Vec<(PathBuf, i64)>, MirrorError> {
    let mut out: Vec<(PathBuf, i64)> = Vec::new();
    if let Some(id) = reader.find_stream(camera, kind)? {
        for s in reader.stream_segments(id)? {
            let readable = matches!(
                s.state,
                store::SegmentState::Sealed | store::SegmentState::Open
            );
            if s.node == origin && readable {
                out.push((reader.absolute_path(&s.path), s.start_ms));
            }
        }
    }
    let staging_root = reader.data_dir().join(INCOMING_DIR).join(origin);
    let staged = list_media_files(&staging_root).map_err(|source| MirrorError::List {
        path: staging_root.clone(),
        source,
    })?;
    for rel in staged {
        let Some(info) = parse_media_path(&rel) else {
            continue;
        };
        if info.camera == camera && info.stream == kind && info.node == origin {
            out.push((staging_root.join(&rel), info.start_ms));
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(out)
}

/// The id of the last frame held from `origin` for `camera/kind` (`None`: nothing held). The newest
/// copy may hold no complete fragment yet (a segment just begun): then the one before it counts.
pub fn last_frame(
    reader: &Reader,
    origin: &str,
    camera: &str,
    kind: &str,
) -> Result<Option<FrameId>, MirrorError> {
    for (path, start_ms) in copies(reader, origin, camera, kind)?.into_iter().take(3) {
        if let Some(id) = last_frame_in_file(Path::new(&path), start_ms)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The start (wall time of its first frame) of the first segment `node` wrote of `camera/kind` under
/// `epoch`, if any yet.
pub fn first_start_under(
    reader: &Reader,
    node: &str,
    camera: &str,
    kind: &str,
    epoch: u64,
) -> Result<Option<i64>, MirrorError> {
    let Some(id) = reader.find_stream(camera, kind)? else {
        return Ok(None);
    };
    Ok(reader
        .stream_segments(id)?
        .iter()
        .filter(|s| s.node == node && s.epoch == Some(epoch))
        .map(|s| s.start_ms)
        .min())
}
