//! Mirrored segments on a standby, quarantine, and restoring damaged or missing segment files.
//!
//! The sync agent copies the sealed (and growing) segment files of a primary node to a standby. On the
//! standby every byte goes through this module:
//!
//! - [`Store::mirror_append`] appends to a staging copy under `incoming/<origin>/<path>`, refusing bytes
//!   that contradict what is already held (they are kept in `quarantine/` instead);
//! - [`Store::mirror_seal`] checks size and SHA-256 of the staging copy, publishes it at `<path>` with
//!   no-replace semantics (a hard link), read-only, and catalogs it (`node` = origin, `sealed`);
//! - [`Store::restore_sealed`] and [`Store::restore_missing`] put known-good bytes back in place of a
//!   damaged or lost file (the damaged file is moved to quarantine, never deleted).
//!
//! Paths are the primary's catalog paths (`media/<camera>/<stream>/<date>/<start>_<origin>.mp4`). The
//! origin's name is in the file name, so a mirrored segment never clashes with the standby's own
//! recordings. Mirror operations of one store are serialized by a lock (the sync agent's calls may
//! come from several tasks).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ring::digest;
use serde::Serialize;

use super::catalog::{SegmentInsert, SegmentProgress};
use super::layout::{INCOMING_DIR, QUARANTINE_DIR, RESTORE_TMP_DIR};
use super::recovery::scanned_video_totals;
use super::segment::sha256_file;
use super::{layout, MediaPathInfo, SegmentRow, SegmentState, StorageError, Store};
use crate::mp4;

/// State kept under the mirror lock: a running SHA-256 of each staging copy appended to by this
/// process, so sealing need not re-hash the file (after a restart, the first seal of a partial copy
/// hashes it from disk).
#[derive(Default)]
pub(crate) struct MirrorState {
    /// Staging path -> (bytes hashed, hash state over exactly those bytes).
    hashes: HashMap<PathBuf, (u64, digest::Context)>,
}

/// What the primary says about a mirrored segment, for its catalog row on the standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorInfo {
    pub camera: String,
    pub stream: String,
    pub start_ms: i64,
    /// RFC 6381 codec string, as in the primary's catalog.
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub audio_codec: Option<String>,
}

/// One segment of an origin held by this store: sealed (`sealed_sha256` set) or partial (staging).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorHolding {
    pub path: String,
    pub bytes_held: u64,
    pub sealed_sha256: Option<String>,
}

/// Errors of the mirror and restore operations.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The bytes contradict what is already held (different bytes at the same offset, a different hash
    /// at seal, data for a sealed segment). `quarantine_path` is where the refused bytes were kept.
    #[error("{path}: refused, contradicts what is held: {reason}{}", quarantine_note(.quarantine_path))]
    Contradiction {
        path: String,
        reason: String,
        quarantine_path: Option<PathBuf>,
    },
    /// A gap: data starts after the end of what is held (the sender must resend from `held`).
    #[error("{path}: data at offset {offset}, but only {held} bytes are held")]
    OffsetGap {
        path: String,
        held: u64,
        offset: u64,
    },
    /// Not a valid media path of that origin (absolute, `..`, another node's file name, ...).
    #[error("bad mirrored path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn quarantine_note(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" (kept in {})", p.display()),
        None => String::new(),
    }
}

fn bad_path(path: &str, reason: impl Into<String>) -> MirrorError {
    MirrorError::BadPath {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn contradiction(path: &str, reason: impl Into<String>, q: Option<PathBuf>) -> MirrorError {
    MirrorError::Contradiction {
        path: path.to_owned(),
        reason: reason.into(),
        quarantine_path: q,
    }
}

/// A node name usable as a path component and in file names (the one rule, [`base::names`]).
fn valid_node_name(name: &str) -> bool {
    base::names::check(name).is_ok()
}

/// Parses `path` as a canonical media path (exactly as [`layout::segment_relative_path`] writes it).
fn parse_canonical(path: &str) -> Result<MediaPathInfo, MirrorError> {
    if path.starts_with('/') {
        return Err(bad_path(path, "absolute path"));
    }
    let info = layout::parse_media_path(Path::new(path))
        .ok_or_else(|| bad_path(path, "not a media segment path"))?;
    if !valid_node_name(&info.node) {
        return Err(bad_path(path, "bad node name in the file name"));
    }
    let canonical =
        layout::segment_relative_path(&info.camera, &info.stream, info.start_ms, &info.node);
    if canonical != path {
        return Err(bad_path(
            path,
            format!("not in canonical form ({canonical})"),
        ));
    }
    Ok(info)
}

/// Lower-case hex SHA-256, or an error for anything that is not 64 hex digits.
fn normalize_sha256(path: &str, sha256: &str) -> Result<String, MirrorError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_path(
            path,
            format!("sha256 {sha256:?} is not 64 hex digits"),
        ));
    }
    Ok(sha256.to_ascii_lowercase())
}

fn sha256_hex(data: &[u8]) -> String {
    base::hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Creates `root/rel_dir` component by component, fsyncing the parent of every directory created.
fn create_dirs(root: &Path, rel_dir: &Path) -> Result<(), StorageError> {
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

fn set_read_only(path: &Path) -> Result<(), StorageError> {
    let mut perms = std::fs::metadata(path)
        .map_err(|e| StorageError::io("stat", path, e))?
        .permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(path, perms).map_err(|e| StorageError::io("chmod", path, e))
}

/// `<now_ms>_<origin>_<path with / replaced by ~>`, limited to a safe file name length.
fn quarantine_name(now_ms: i64, origin: &str, path: &str) -> String {
    let clean = |s: &str| s.replace(['/', '\\', '\0'], "~");
    let mut name = format!("{now_ms}_{}_{}", clean(origin), clean(path));
    if name.len() > 200 {
        let mut cut = 200;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

impl Store {
    fn mirror_guard(&self) -> std::sync::MutexGuard<'_, MirrorState> {
        match self.mirror_lock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Checks `path` is a canonical media path written by `origin`, which is not this node.
    fn check_mirror_path(&self, origin: &str, path: &str) -> Result<MediaPathInfo, MirrorError> {
        if !valid_node_name(origin) {
            return Err(bad_path(path, format!("bad origin node name {origin:?}")));
        }
        if origin == self.node {
            return Err(bad_path(path, "origin is this node itself"));
        }
        let info = parse_canonical(path)?;
        if info.node != origin {
            return Err(bad_path(
                path,
                format!("file of node {:?}, not of origin {origin:?}", info.node),
            ));
        }
        Ok(info)
    }

    fn staging_path(&self, origin: &str, path: &str) -> PathBuf {
        self.data_dir.join(INCOMING_DIR).join(origin).join(path)
    }

    /// The sealed row of `path`, if any (a lookup by the unique path index).
    pub fn sealed_segment_by_path(&self, path: &str) -> Result<Option<SegmentRow>, StorageError> {
        Ok(self
            .catalog()
            .segment_by_path(path)?
            .filter(|r| r.state == SegmentState::Sealed))
    }

    /// What this store holds of `origin`'s segments: sealed ones (catalog rows with node = origin,
    /// state sealed, with size and SHA-256) and partial ones (staging files under
    /// `incoming/<origin>/`, bytes = file length). Sorted by path.
    pub fn mirror_holdings(&self, origin: &str) -> Result<Vec<MirrorHolding>, StorageError> {
        if !valid_node_name(origin) {
            return Err(StorageError::BadMediaPath(PathBuf::from(origin)));
        }
        let sealed = self
            .catalog()
            .node_segments_in_state(origin, SegmentState::Sealed)?;
        let sealed_paths: HashSet<&str> = sealed.iter().map(|s| s.path.as_str()).collect();
        let mut out: Vec<MirrorHolding> = sealed
            .iter()
            .map(|s| MirrorHolding {
                path: s.path.clone(),
                bytes_held: s.size_bytes.max(0) as u64,
                sealed_sha256: s.sha256.clone(),
            })
            .collect();
        let root = self.data_dir.join(INCOMING_DIR).join(origin);
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
                let p = entry.path();
                let meta = entry
                    .metadata()
                    .map_err(|e| StorageError::io("stat", &p, e))?;
                if meta.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Some(rel) = p.strip_prefix(&root).ok().and_then(|r| r.to_str()) else {
                    continue;
                };
                // Left over by a crash between catalog row and staging removal: the sealed row counts.
                if !meta.is_file() || sealed_paths.contains(rel) || parse_canonical(rel).is_err() {
                    continue;
                }
                out.push(MirrorHolding {
                    path: rel.to_owned(),
                    bytes_held: meta.len(),
                    sealed_sha256: None,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Appends `data` at `offset` to the staging copy of `origin`'s segment `path` and returns the new
    /// held length.
    ///
    /// - Already sealed here: `Ok(size)` if `data` equals the sealed file's bytes at `offset` (nothing
    ///   written), else the chunk is quarantined and `Contradiction`.
    /// - `offset` < held: the overlapping bytes must equal those held (an identical re-send is fine and
    ///   only the new tail is appended); else the whole chunk is quarantined and `Contradiction`, the
    ///   staging copy untouched.
    /// - `offset` > held: `OffsetGap` (nothing written).
    ///
    /// With `sync`, the staging copy is flushed (`fdatasync`) before returning, so the sender may be
    /// acknowledged; callers may batch several appends and sync the last one.
    pub fn mirror_append(
        &self,
        origin: &str,
        path: &str,
        offset: u64,
        data: &[u8],
        sync: bool,
    ) -> Result<u64, MirrorError> {
        self.check_mirror_path(origin, path)?;
        let mut guard = self.mirror_guard();
        if let Some(row) = self.sealed_segment_by_path(path)? {
            return self.append_to_sealed(origin, &row, offset, data);
        }
        let staged = self.staging_path(origin, path);
        let (file, created) = match OpenOptions::new().read(true).write(true).open(&staged) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if offset > 0 {
                    return Err(MirrorError::OffsetGap {
                        path: path.to_owned(),
                        held: 0,
                        offset,
                    });
                }
                let rel_dir = Path::new(INCOMING_DIR).join(origin).join(path);
                if let Some(parent) = rel_dir.parent() {
                    create_dirs(&self.data_dir, parent)?;
                }
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&staged)
                    .map_err(|e| StorageError::io("create", &staged, e))?;
                (f, true)
            }
            Err(e) => return Err(StorageError::io("open", &staged, e).into()),
        };
        let held = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &staged, e))?
            .len();
        if offset > held {
            return Err(MirrorError::OffsetGap {
                path: path.to_owned(),
                held,
                offset,
            });
        }
        let overlap = (held - offset).min(data.len() as u64) as usize;
        if overlap > 0 {
            let mut have = vec![0u8; overlap];
            file.read_exact_at(&mut have, offset)
                .map_err(|e| StorageError::io("read", &staged, e))?;
            if have[..] != data[..overlap] {
                let q = self.quarantine_bytes(origin, path, data)?;
                let reason = format!(
                    "bytes at offset {offset} (chunk of {} bytes) differ from the {held} bytes held",
                    data.len()
                );
                tracing::error!(path, origin, %reason, quarantine = %q.display(), "mirrored data refused");
                return Err(contradiction(path, reason, Some(q)));
            }
        }
        let tail = &data[overlap..];
        if !tail.is_empty() {
            if let Err(e) = file.write_all_at(tail, held) {
                let _ = file.set_len(held);
                guard.hashes.remove(&staged);
                return Err(StorageError::io("write", &staged, e).into());
            }
            if created {
                guard
                    .hashes
                    .insert(staged.clone(), (0, digest::Context::new(&digest::SHA256)));
            }
            match guard.hashes.get_mut(&staged) {
                Some((hashed, ctx)) if *hashed == held => {
                    ctx.update(tail);
                    *hashed += tail.len() as u64;
                }
                Some(_) => {
                    guard.hashes.remove(&staged);
                }
                None => {}
            }
        }
        if sync {
            file.sync_data()
                .map_err(|e| StorageError::io("fdatasync", &staged, e))?;
        }
        if created {
            if let Some(dir) = staged.parent() {
                fsync_dir(dir)?;
            }
        }
        Ok(held + tail.len() as u64)
    }

    /// Flushes (`fdatasync`) the staging copy of `origin`'s segment `path`, after appends made
    /// without `sync`; nothing to do if there is none (sealed meanwhile, or never started). Covers
    /// every byte appended before the call; may run while other appends go on.
    pub fn mirror_sync(&self, origin: &str, path: &str) -> Result<(), MirrorError> {
        self.check_mirror_path(origin, path)?;
        let staged = self.staging_path(origin, path);
        // Opened under the lock; synced without it, so appends to other files (or this one) go on.
        let file = {
            let _guard = self.mirror_guard();
            match File::open(&staged) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StorageError::io("open", &staged, e).into()),
            }
        };
        file.sync_data()
            .map_err(|e| StorageError::io("fdatasync", &staged, e).into())
    }

    /// `mirror_append` for a segment sealed here: only bytes equal to the sealed file's are accepted.
    fn append_to_sealed(
        &self,
        origin: &str,
        row: &SegmentRow,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, MirrorError> {
        let size = row.size_bytes.max(0) as u64;
        let end = offset.checked_add(data.len() as u64);
        let reason = if end.is_none_or(|end| end > size) {
            Some(format!(
                "{} bytes at offset {offset} reach beyond the end of the sealed segment ({size} bytes)",
                data.len()
            ))
        } else {
            let file_path = self.data_dir.join(&row.path);
            let mut have = vec![0u8; data.len()];
            File::open(&file_path)
                .and_then(|f| f.read_exact_at(&mut have, offset))
                .map_err(|e| StorageError::io("read", &file_path, e))?;
            (have != data).then(|| {
                format!(
                    "{} bytes at offset {offset} differ from the sealed segment's",
                    data.len()
                )
            })
        };
        match reason {
            None => Ok(size),
            Some(reason) => {
                let q = self.quarantine_bytes(origin, &row.path, data)?;
                tracing::error!(path = %row.path, origin, %reason, quarantine = %q.display(), "data for a sealed segment refused");
                Err(contradiction(&row.path, reason, Some(q)))
            }
        }
    }

    /// Seals `origin`'s mirrored segment `path`.
    ///
    /// The staging copy must be exactly `size_bytes` long and hash to `sha256`: if it is shorter,
    /// `OffsetGap { held, offset: size_bytes }` (send the rest first, nothing is quarantined); if it is
    /// longer or hashes differently it is moved to quarantine and `Contradiction`. Then: fsync,
    /// read-only, publish at `path` with a hard link (never replaces: an existing file with the same hash
    /// is an idempotent success, a different one is `Contradiction` and left untouched), fsync the
    /// directory, catalog row (`node` = origin, `sealed`, no run), remove the staging copy.
    /// Sealing again with the same hash succeeds without doing anything.
    #[allow(clippy::too_many_arguments)]
    pub fn mirror_seal(
        &self,
        origin: &str,
        path: &str,
        info: &MirrorInfo,
        size_bytes: u64,
        sha256: &str,
        end_ms: i64,
        frames: i64,
    ) -> Result<(), MirrorError> {
        let pinfo = self.check_mirror_path(origin, path)?;
        if info.camera != pinfo.camera
            || info.stream != pinfo.stream
            || info.start_ms != pinfo.start_ms
        {
            return Err(bad_path(
                path,
                format!(
                    "info says {}/{} starting {}, the path {}/{} starting {}",
                    info.camera,
                    info.stream,
                    info.start_ms,
                    pinfo.camera,
                    pinfo.stream,
                    pinfo.start_ms
                ),
            ));
        }
        let sha = normalize_sha256(path, sha256)?;
        let mut guard = self.mirror_guard();
        let staged = self.staging_path(origin, path);
        let target = self.data_dir.join(path);
        // Whatever happens below the staging copy is published, removed or quarantined, except
        // when it is still short (then the running hash goes back).
        let cached_hash = guard.hashes.remove(&staged);

        if let Some(row) = self.sealed_segment_by_path(path)? {
            if row.sha256.as_deref() == Some(sha.as_str()) && row.size_bytes as u64 == size_bytes {
                self.remove_staging(&staged)?;
                return Ok(());
            }
            let q = self.quarantine_staging(origin, path, &staged)?;
            return Err(contradiction(
                path,
                format!(
                    "already sealed here with sha256 {} ({} bytes); seal says {sha} ({size_bytes} bytes)",
                    row.sha256.as_deref().unwrap_or("-"),
                    row.size_bytes
                ),
                q,
            ));
        }

        let held = match std::fs::metadata(&staged) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io("stat", &staged, e).into()),
        };
        let data = match held {
            None if target.exists() => {
                // Published before a crash that came before the catalog row: index it if it matches.
                let have = sha256_file(&target)?;
                if have != sha {
                    return Err(contradiction(
                        path,
                        format!("a different file (sha256 {have}) is already at this path; left untouched"),
                        None,
                    ));
                }
                let data =
                    std::fs::read(&target).map_err(|e| StorageError::io("read", &target, e))?;
                if data.len() as u64 != size_bytes {
                    return Err(contradiction(
                        path,
                        format!(
                            "the file here has {} bytes, seal says {size_bytes}",
                            data.len()
                        ),
                        None,
                    ));
                }
                data
            }
            None if size_bytes == 0 => {
                return Err(contradiction(
                    path,
                    "an empty segment cannot be sealed",
                    None,
                ));
            }
            None => {
                return Err(MirrorError::OffsetGap {
                    path: path.to_owned(),
                    held: 0,
                    offset: size_bytes,
                });
            }
            Some(held) if held < size_bytes => {
                if let Some(cached) = cached_hash {
                    guard.hashes.insert(staged, cached);
                }
                return Err(MirrorError::OffsetGap {
                    path: path.to_owned(),
                    held,
                    offset: size_bytes,
                });
            }
            Some(held) => {
                if held > size_bytes {
                    let q = self.quarantine_staging(origin, path, &staged)?;
                    return Err(contradiction(
                        path,
                        format!("{held} bytes held, seal says {size_bytes}"),
                        q,
                    ));
                }
                let data =
                    std::fs::read(&staged).map_err(|e| StorageError::io("read", &staged, e))?;
                let have = match cached_hash {
                    Some((hashed, ctx)) if hashed == data.len() as u64 => {
                        base::hex::encode(ctx.finish().as_ref())
                    }
                    _ => sha256_hex(&data),
                };
                if have != sha {
                    let q = self.quarantine_staging(origin, path, &staged)?;
                    tracing::error!(
                        path,
                        origin,
                        have,
                        want = sha,
                        "mirrored segment hash mismatch"
                    );
                    return Err(contradiction(
                        path,
                        format!("the {held} bytes held hash to {have}, seal says {sha}"),
                        q,
                    ));
                }
                File::open(&staged)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StorageError::io("fsync", &staged, e))?;
                set_read_only(&staged)?;
                if let Some(parent) = Path::new(path).parent() {
                    create_dirs(&self.data_dir, parent)?;
                }
                match std::fs::hard_link(&staged, &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let existing = sha256_file(&target)?;
                        if existing != sha {
                            let q = self.quarantine_staging(origin, path, &staged)?;
                            return Err(contradiction(
                                path,
                                format!("a different file (sha256 {existing}) is already at this path; left untouched"),
                                q,
                            ));
                        }
                    }
                    Err(e) => return Err(StorageError::io("link", &target, e).into()),
                }
                if let Some(dir) = target.parent() {
                    fsync_dir(dir)?;
                }
                data
            }
        };

        let fragments = mp4::scan(&data).map_or(0, |r| r.fragments.len() as i64);
        let stream_id = self.ensure_stream(&info.camera, &info.stream)?;
        let now_ms = self.now_utc_ms();
        self.catalog().put_sealed_segment(
            &SegmentInsert {
                stream_id,
                run_id: None,
                node: origin,
                path,
                state: SegmentState::Sealed,
                start_ms: info.start_ms,
                video_codec: &info.video_codec,
                width: i64::from(info.width),
                height: i64::from(info.height),
                audio_codec: info.audio_codec.as_deref(),
                created_ms: now_ms,
            },
            &SegmentProgress {
                end_ms,
                media_duration_ms: end_ms - info.start_ms,
                frames,
                fragments,
                size_bytes: data.len() as i64,
            },
            &sha,
            now_ms,
        )?;
        self.remove_staging(&staged)?;
        self.log_event(
            Some(stream_id),
            "mirrored",
            &format!(
                "{path}: mirrored from {origin} ({} bytes, sha256 {sha})",
                data.len()
            ),
        );
        Ok(())
    }

    /// Removes a staging copy (if any) and fsyncs its directory.
    fn remove_staging(&self, staged: &Path) -> Result<(), StorageError> {
        match std::fs::remove_file(staged) {
            Ok(()) => {
                if let Some(dir) = staged.parent() {
                    fsync_dir(dir)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("remove", staged, e)),
        }
    }

    /// Moves a staging copy (if any) into quarantine.
    fn quarantine_staging(
        &self,
        origin: &str,
        path: &str,
        staged: &Path,
    ) -> Result<Option<PathBuf>, StorageError> {
        if !staged.exists() {
            return Ok(None);
        }
        self.move_to_quarantine(origin, path, staged).map(Some)
    }

    /// A fresh name in the quarantine directory (created if needed), tried by `attempt` until it does
    /// not report `AlreadyExists`.
    fn quarantine_slot<T>(
        &self,
        origin: &str,
        path: &str,
        mut attempt: impl FnMut(&Path) -> std::io::Result<T>,
    ) -> Result<(PathBuf, T), StorageError> {
        create_dirs(&self.data_dir, Path::new(QUARANTINE_DIR))?;
        let dir = self.data_dir.join(QUARANTINE_DIR);
        let base = quarantine_name(self.now_utc_ms(), origin, path);
        for n in 0u32.. {
            let candidate = if n == 0 {
                dir.join(&base)
            } else {
                dir.join(format!("{base}.{n}"))
            };
            match attempt(&candidate) {
                Ok(v) => return Ok((candidate, v)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::io("quarantine", &candidate, e)),
            }
        }
        Err(StorageError::io(
            "quarantine",
            &dir,
            std::io::Error::other("no free name"),
        ))
    }

    /// Moves `file` into quarantine (link, then unlink: never replaces anything there).
    fn move_to_quarantine(
        &self,
        origin: &str,
        path: &str,
        file: &Path,
    ) -> Result<PathBuf, StorageError> {
        let (q, ()) = self.quarantine_slot(origin, path, |c| std::fs::hard_link(file, c))?;
        fsync_dir(&self.data_dir.join(QUARANTINE_DIR))?;
        std::fs::remove_file(file).map_err(|e| StorageError::io("remove", file, e))?;
        if let Some(dir) = file.parent() {
            fsync_dir(dir)?;
        }
        tracing::warn!(path, origin, quarantine = %q.display(), "file moved to quarantine");
        Ok(q)
    }

    /// Keeps `data` aside in `quarantine/<now_ms>_<origin>_<path with / replaced by ~>` (a `.N` suffix is
    /// added if that name is taken), durably, and returns that path. Never touches the good copy.
    pub fn quarantine_bytes(
        &self,
        origin: &str,
        path: &str,
        data: &[u8],
    ) -> Result<PathBuf, StorageError> {
        let (q, mut file) = self.quarantine_slot(origin, path, |c| {
            OpenOptions::new().write(true).create_new(true).open(c)
        })?;
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| StorageError::io("write", &q, e))?;
        fsync_dir(&self.data_dir.join(QUARANTINE_DIR))?;
        Ok(q)
    }

    /// Writes `data` to a temporary file, fsyncs it, makes it read-only and publishes it at `target`
    /// without replacing anything. `Ok(false)` if `target` already exists (nothing changed).
    fn place_file(&self, target: &Path, data: &[u8]) -> Result<bool, StorageError> {
        let tmp_rel = Path::new(INCOMING_DIR).join(RESTORE_TMP_DIR);
        create_dirs(&self.data_dir, &tmp_rel)?;
        let tmp_dir = self.data_dir.join(tmp_rel);
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| StorageError::io("create temporary file", &tmp_dir, e))?;
        tmp.write_all(data)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| StorageError::io("write", tmp.path(), e))?;
        let mut perms = tmp
            .as_file()
            .metadata()
            .map_err(|e| StorageError::io("stat", tmp.path(), e))?
            .permissions();
        perms.set_readonly(true);
        tmp.as_file()
            .set_permissions(perms)
            .map_err(|e| StorageError::io("chmod", tmp.path(), e))?;
        if let Some(parent) = target
            .parent()
            .and_then(|p| p.strip_prefix(&self.data_dir).ok())
        {
            create_dirs(&self.data_dir, parent)?;
        }
        match tmp.persist_noclobber(target) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(StorageError::io("publish", target, e.error)),
        }
        if let Some(dir) = target.parent() {
            fsync_dir(dir)?;
        }
        fsync_dir(&tmp_dir)?;
        Ok(true)
    }

    /// Replaces the file of a cataloged segment (`sealed`, or `missing`/`damaged` with a hash) whose
    /// content no longer matches the catalog with `good`, which must hash to the catalog's SHA-256 (else
    /// `Contradiction` and nothing changes). The damaged file is moved to quarantine first, never
    /// deleted. If the file already matches, nothing is done. The row ends `sealed`.
    pub fn restore_sealed(&self, path: &str, good: &[u8]) -> Result<(), MirrorError> {
        parse_canonical(path)?;
        let _guard = self.mirror_guard();
        self.restore_sealed_locked(path, good)
    }

    fn restore_sealed_locked(&self, path: &str, good: &[u8]) -> Result<(), MirrorError> {
        let row = self
            .catalog()
            .segment_by_path(path)?
            .filter(|r| {
                matches!(
                    r.state,
                    SegmentState::Sealed | SegmentState::Missing | SegmentState::Damaged
                )
            })
            .ok_or_else(|| bad_path(path, "no sealed segment at this path"))?;
        let Some(want) = row.sha256.clone() else {
            return Err(bad_path(path, "the catalog has no hash for this segment"));
        };
        let have = sha256_hex(good);
        if have != want {
            return Err(contradiction(
                path,
                format!("restore bytes hash to {have}, the catalog says {want}"),
                None,
            ));
        }
        let target = self.data_dir.join(path);
        let mut displaced = None;
        if std::fs::symlink_metadata(&target).is_ok() {
            if std::fs::metadata(&target).is_ok_and(|m| m.is_file())
                && sha256_file(&target)? == want
            {
                if row.state != SegmentState::Sealed {
                    self.catalog().set_segment_state(
                        row.id,
                        SegmentState::Sealed,
                        self.now_utc_ms(),
                    )?;
                }
                return Ok(());
            }
            displaced = Some(self.move_to_quarantine(&row.node, path, &target)?);
        }
        if !self.place_file(&target, good)? {
            return Err(contradiction(
                path,
                "another file appeared at this path during the restore; left untouched",
                None,
            ));
        }
        if row.state != SegmentState::Sealed {
            self.catalog()
                .set_segment_state(row.id, SegmentState::Sealed, self.now_utc_ms())?;
        }
        let msg = match &displaced {
            Some(q) => format!(
                "{path}: restored from a good copy; the damaged file was kept in {}",
                q.display()
            ),
            None => format!("{path}: restored from a good copy (the file was gone)"),
        };
        self.log_event(Some(row.stream_id), "restored", &msg);
        tracing::warn!("{msg}");
        Ok(())
    }

    /// Places the file of a segment this store has no live row for (restore onto a wiped data
    /// directory): verifies `good` hashes to `sha256`, writes it through a temporary file, publishes it
    /// with no-replace semantics, read-only, and indexes it as recovery indexes orphan files (node,
    /// camera, stream and start from the path; frames, duration and codecs from a scan).
    ///
    /// If a row with a hash exists, this is [`Store::restore_sealed`] when the hash is the same and a
    /// `Contradiction` otherwise. An existing file at the path with another hash is left untouched
    /// (`Contradiction`); with the same hash it is just indexed.
    pub fn restore_missing(
        &self,
        path: &str,
        good: &[u8],
        sha256: &str,
    ) -> Result<(), MirrorError> {
        let info = parse_canonical(path)?;
        let want = normalize_sha256(path, sha256)?;
        let have = sha256_hex(good);
        if have != want {
            return Err(contradiction(
                path,
                format!("restore bytes hash to {have}, expected {want}"),
                None,
            ));
        }
        let _guard = self.mirror_guard();
        // Bound first: the catalog guard must be released before restore_sealed_locked takes it.
        let existing = self.catalog().segment_by_path(path)?;
        if let Some(row) = existing {
            if row.state != SegmentState::Deleted && row.sha256.is_some() {
                if row.sha256.as_deref() == Some(want.as_str()) {
                    return self.restore_sealed_locked(path, good);
                }
                return Err(contradiction(
                    path,
                    format!(
                        "the catalog has sha256 {} for this path, restore says {want}",
                        row.sha256.as_deref().unwrap_or("-")
                    ),
                    None,
                ));
            }
        }
        let target = self.data_dir.join(path);
        if !self.place_file(&target, good)? {
            let existing = sha256_file(&target)?;
            if existing != want {
                return Err(contradiction(
                    path,
                    format!("a different file (sha256 {existing}) is already at this path; left untouched"),
                    None,
                ));
            }
        }
        let stream_id = self.ensure_stream(&info.camera, &info.stream)?;
        let (frames, media_duration_ms, fragments, codec, audio_codec, (width, height)) =
            match mp4::scan(good) {
                Ok(scan) => {
                    let (frames, duration) = scanned_video_totals(&scan);
                    let fourcc = |h: mp4::Handler| {
                        scan.tracks
                            .iter()
                            .find(|t| t.handler == h)
                            .map(|t| String::from_utf8_lossy(&t.sample_entry_type).into_owned())
                    };
                    let dims = scan
                        .tracks
                        .iter()
                        .find(|t| t.handler == mp4::Handler::Video)
                        .and_then(|v| v.pixel_dimensions)
                        .unwrap_or((0, 0));
                    (
                        frames,
                        duration,
                        scan.fragments.len() as i64,
                        fourcc(mp4::Handler::Video).unwrap_or_default(),
                        fourcc(mp4::Handler::Audio),
                        dims,
                    )
                }
                Err(e) => {
                    tracing::warn!(path, error = %e, "restored file is not a readable MP4; indexed by hash only");
                    (0, 0, 0, String::new(), None, (0, 0))
                }
            };
        let now_ms = self.now_utc_ms();
        self.catalog().put_sealed_segment(
            &SegmentInsert {
                stream_id,
                run_id: None,
                node: &info.node,
                path,
                state: SegmentState::Sealed,
                start_ms: info.start_ms,
                video_codec: &codec,
                width: i64::from(width),
                height: i64::from(height),
                audio_codec: audio_codec.as_deref(),
                created_ms: now_ms,
            },
            &SegmentProgress {
                end_ms: info.start_ms + media_duration_ms,
                media_duration_ms,
                frames,
                fragments,
                size_bytes: good.len() as i64,
            },
            &want,
            now_ms,
        )?;
        self.log_event(
            Some(stream_id),
            "restored",
            &format!(
                "{path}: restored missing segment ({} bytes, sha256 {want})",
                good.len()
            ),
        );
        Ok(())
    }
}
