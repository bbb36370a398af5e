//! Writing one segment: create with its init section, append whole fragments, flush, seal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest;
use rustix::fs::FallocateFlags;

use super::catalog::{SegmentInsert, SegmentProgress};
use super::{layout, RunId, SegmentId, SegmentState, StorageError, Store, StreamId};
use crate::mp4::TrackSpec;

/// What a new segment is.
#[derive(Debug, Clone)]
pub struct NewSegment<'a> {
    pub stream_id: StreamId,
    pub run_id: RunId,
    pub camera: &'a str,
    pub stream: &'a str,
    /// Wall time of the first frame, ms UTC.
    pub start_ms: i64,
    pub tracks: &'a [TrackSpec],
    /// RFC 6381 codec string, e.g. `avc1.640028`.
    pub video_codec: &'a str,
    pub width: u32,
    pub height: u32,
    pub audio_codec: Option<&'a str>,
    /// The arbiter's epoch of the promotion this recording continues (`None`: no arbiter).
    pub epoch: Option<u64>,
}

/// A sealed segment, as recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub id: SegmentId,
    pub path: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub frames: i64,
    pub size_bytes: i64,
    pub sha256_hex: String,
}

/// Blocks reserved ahead of an open segment's end at a time (`fallocate` with `FALLOC_FL_KEEP_SIZE`):
/// the file system allocates a segment's blocks once per this many bytes instead of at every
/// append's write and flush. The file's length (what readers and the catalog see) is unchanged; the
/// unused part is released when the segment is sealed, and by recovery after a crash.
pub const PREALLOCATE_BYTES: u64 = 4 << 20;

/// An open segment being written. Only whole fragments are appended, each with one `write`.
pub struct SegmentWriter {
    store: Arc<Store>,
    id: SegmentId,
    relative_path: String,
    path: PathBuf,
    /// Shared with the store's set of files to flush (`flush.rs`).
    file: Arc<File>,
    hash: digest::Context,
    start_ms: i64,
    progress: SegmentProgress,
    /// End of the blocks reserved so far (0: none; `None`: the file system cannot preallocate).
    allocated_bytes: Option<u64>,
}

impl std::fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("path", &self.relative_path)
            .field("progress", &self.progress)
            .finish()
    }
}

impl Store {
    /// Creates the segment file with its init section and an `open` catalog row.
    pub fn create_segment(
        self: &Arc<Self>,
        new: &NewSegment<'_>,
    ) -> Result<SegmentWriter, StorageError> {
        let init = crate::mp4::init_segment(new.tracks).map_err(|source| StorageError::Mp4 {
            path: PathBuf::from(new.camera),
            source,
        })?;
        // File names carry the start time; should two starts share a millisecond, the next one is used.
        let mut name_ms = new.start_ms;
        let (relative_path, path, mut file) = loop {
            let relative =
                layout::segment_relative_path(new.camera, new.stream, name_ms, &self.node);
            let path = self.data_dir.join(&relative);
            // New directories and the new file's name are made durable before any of its data is,
            // so a crash cannot lose a file whose bytes were already flushed (and mirrored).
            if let Some(dir) = Path::new(&relative).parent() {
                create_dirs(&self.data_dir, dir)?;
            }
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => {
                    if let Some(dir) = path.parent() {
                        fsync_dir(dir)?;
                    }
                    break (relative, path, f);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => name_ms += 1,
                Err(e) => return Err(StorageError::io("create", &path, e)),
            }
        };
        if let Err(e) = file.write_all(&init) {
            let _ = std::fs::remove_file(&path);
            return Err(StorageError::io("write", &path, e));
        }
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(&init);
        let insert = SegmentInsert {
            stream_id: new.stream_id,
            run_id: Some(new.run_id),
            node: &self.node,
            path: &relative_path,
            state: SegmentState::Open,
            start_ms: new.start_ms,
            video_codec: new.video_codec,
            width: i64::from(new.width),
            height: i64::from(new.height),
            audio_codec: new.audio_codec,
            created_ms: self.now_utc_ms(),
        };
        let inserted = {
            let cat = self.catalog();
            cat.insert_segment(&insert).and_then(|id| {
                if let Some(epoch) = new.epoch {
                    cat.set_segment_epoch(id, epoch)?;
                }
                Ok(id)
            })
        };
        let id = match inserted {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(SegmentWriter {
            store: self.clone(),
            id,
            relative_path,
            path,
            file: Arc::new(file),
            hash,
            start_ms: new.start_ms,
            progress: SegmentProgress {
                end_ms: new.start_ms,
                media_duration_ms: 0,
                frames: 0,
                fragments: 0,
                size_bytes: init.len() as i64,
            },
            allocated_bytes: Some(0),
        })
    }
}

impl SegmentWriter {
    pub fn id(&self) -> SegmentId {
        self.id
    }

    pub fn relative_path(&self) -> &str {
        &self.relative_path
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    pub fn size_bytes(&self) -> i64 {
        self.progress.size_bytes
    }

    pub fn frames(&self) -> i64 {
        self.progress.frames
    }

    pub fn fragments(&self) -> i64 {
        self.progress.fragments
    }

    /// Appends one complete fragment (moof+mdat) with a single write.
    ///
    /// `frames` is the number of video frames in it; `media_duration_ms` is the segment's media duration
    /// after it. On a write error the file is cut back to its previous length, so it still ends on a whole
    /// fragment, and the error is returned.
    pub fn append_fragment(
        &mut self,
        fragment: &[u8],
        frames: u64,
        media_duration_ms: i64,
    ) -> Result<(), StorageError> {
        self.append_fragment_parts(&[fragment], frames, media_duration_ms)
    }

    /// [`Self::append_fragment`] for a fragment given as consecutive parts (e.g. a `moof` + `mdat`
    /// header and then each sample's data), written with vectored writes so the media is not copied
    /// into one buffer first.
    pub fn append_fragment_parts(
        &mut self,
        parts: &[&[u8]],
        frames: u64,
        media_duration_ms: i64,
    ) -> Result<(), StorageError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.preallocate(len as u64);
        if let Err(e) = write_all_vectored(&self.file, parts) {
            // Also releases the preallocated blocks past the end.
            let _ = self.file.set_len(self.progress.size_bytes as u64);
            self.allocated_bytes = self.allocated_bytes.map(|_| 0);
            return Err(StorageError::io("write", &self.path, e));
        }
        let mut fragment_bytes = 0usize;
        for part in parts {
            self.hash.update(part);
            fragment_bytes += part.len();
        }
        self.progress.size_bytes += fragment_bytes as i64;
        self.progress.frames += frames as i64;
        self.progress.fragments += 1;
        self.progress.media_duration_ms = media_duration_ms;
        self.progress.end_ms = self.start_ms + media_duration_ms;
        self.store.queue_progress(self.id, self.progress);
        // Flushed by the store's next grouped pass (`Store::sync_appended`).
        self.store.note_appended(self.id, &self.file, &self.path);
        Ok(())
    }

    /// Reserves blocks for the next `len` bytes if the reserved ones end before them:
    /// [`PREALLOCATE_BYTES`] at a time, without changing the file's length. A file system that cannot
    /// (`EOPNOTSUPP`) or a full disk only means no reservation: the write itself reports real errors.
    fn preallocate(&mut self, len: u64) {
        let Some(allocated) = self.allocated_bytes else {
            return;
        };
        let size = self.progress.size_bytes as u64;
        if size + len <= allocated {
            return;
        }
        let want = len.max(PREALLOCATE_BYTES);
        match rustix::fs::fallocate(&*self.file, FallocateFlags::KEEP_SIZE, size, want) {
            Ok(()) => self.allocated_bytes = Some(size + want),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                tracing::debug!(path = %self.relative_path, "file system cannot preallocate");
                self.allocated_bytes = None;
            }
            Err(e) => {
                tracing::debug!(path = %self.relative_path, error = %e, "preallocation failed");
            }
        }
    }

    /// Flushes appended data to disk now (fdatasync); recording leaves this to the grouped pass.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.path, e))
    }

    /// Seals the segment: preallocated blocks past its end released, fsync, read-only, directory
    /// fsync, catalog `sealed` with the SHA-256 (and marked for the de-duplication job, which it wakes:
    /// the seal itself never reads other copies).
    ///
    /// A segment that never received a fragment holds no media: its file and row are removed instead and
    /// `None` is returned.
    pub fn seal(self) -> Result<Option<SealedSegment>, StorageError> {
        self.store.forget_appended(self.id);
        if self.progress.fragments == 0 {
            drop(self.file);
            std::fs::remove_file(&self.path)
                .map_err(|e| StorageError::io("remove", &self.path, e))?;
            self.store.forget_progress(self.id);
            self.store.catalog().delete_segment_row(self.id)?;
            return Ok(None);
        }
        if self
            .allocated_bytes
            .is_some_and(|a| a > self.progress.size_bytes as u64)
        {
            // Truncating to its own length releases the blocks preallocated past the end.
            self.file
                .set_len(self.progress.size_bytes as u64)
                .map_err(|e| StorageError::io("truncate", &self.path, e))?;
        }
        self.file
            .sync_all()
            .map_err(|e| StorageError::io("fsync", &self.path, e))?;
        let sha256_hex = base::hex::encode(self.hash.finish().as_ref());
        seal_file(&self.path)?;
        let sealed_ms = self.store.now_utc_ms();
        self.store
            .catalog()
            .seal_segment(self.id, &self.progress, &sha256_hex, sealed_ms)?;
        self.store.forget_progress(self.id);
        // The row is marked to be de-duplicated; the store's job compares it, not this thread.
        self.store.dedup_marked();
        Ok(Some(SealedSegment {
            id: self.id,
            path: self.relative_path,
            start_ms: self.start_ms,
            end_ms: self.progress.end_ms,
            frames: self.progress.frames,
            size_bytes: self.progress.size_bytes,
            sha256_hex,
        }))
    }
}

/// Writes every part in order (the vectored counterpart of `write_all`).
fn write_all_vectored(mut file: &File, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| std::io::IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fsyncs directory `dir`, so the names created or removed in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Creates `root/rel_dir` component by component, fsyncing the parent of every directory created.
pub(crate) fn create_dirs(root: &Path, rel_dir: &Path) -> Result<(), StorageError> {
    let mut cur = root.to_path_buf();
    for c in rel_dir.components() {
        let parent = cur.clone();
        cur.push(c);
        match std::fs::create_dir(&cur) {
            Ok(()) => fsync_dir(&parent)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io("create directory", &cur, e)),
        }
    }
    Ok(())
}

/// Makes a (synced) file read-only and fsyncs its directory so its name and size are durable.
pub(crate) fn seal_file(path: &Path) -> Result<(), StorageError> {
    let mut perms = std::fs::metadata(path)
        .map_err(|e| StorageError::io("stat", path, e))?
        .permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(path, perms).map_err(|e| StorageError::io("chmod", path, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// SHA-256 of a whole file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, StorageError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| StorageError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(base::hex::encode(ctx.finish().as_ref()))
}
