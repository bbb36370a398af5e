//! Mirrored segments on a standby, quarantine, and restoring damaged or missing segment files.
//!
//! The sync agent copies the sealed (and growing) segment files of a primary node to a standby. On the
//! standby every byte goes through this module:
//!
//! - [`Store::mirror_append`] appends to a staging copy under `incoming/<origin>/<path>`, refusing bytes
//!   that contradict what is already held (they are kept in `quarantine/` instead);
//! - [`Store::mirror_seal`] checks size and SHA-256 of the staging copy, publishes it at `<path>` with
//!   no-replace semantics (a hard link), read-only, and catalogs it (`node` = origin, `sealed`); a
//!   staging copy that contradicts the seal stays where it is (acknowledged bytes are never dropped);
//!   [`Store::mirror_check_seal`] checks a seal without publishing;
//! - [`Store::restore_sealed`] and [`Store::restore_missing`] put known-good bytes back in place of a
//!   damaged or lost file (the damaged file is moved to quarantine, never deleted).
//!
//! Paths are the primary's catalog paths (`media/<camera>/<stream>/<date>/<start>_<origin>.mp4`). The
//! origin's name is in the file name, so a mirrored segment never clashes with the standby's own
//! recordings. Mirror operations of one store are serialized by a lock (the sync agent's calls may
//! come from several tasks).
//!
//! Files: this one (types, errors, path checks, holdings), `staging.rs`, `sealing.rs`, `quarantine.rs`,
//! `quota.rs` (per-origin quota of unverified bytes), `expiry.rs` (stale staging copies), `restore.rs`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use expiry::ExpiredStaging;
use ring::digest;
use serde::Serialize;

use crate::catalog::{SegmentInsert, SegmentProgress};
use crate::layout::{INCOMING_DIR, QUARANTINE_DIR, RESTORE_TMP_DIR};
use crate::mp4;
use crate::recovery::ScannedSegment;
use crate::segment::{create_dirs, fsync_dir, sha256_file};
use crate::{layout, MediaPathInfo, SegmentRow, SegmentState, StorageError, Store};

mod expiry;
mod quarantine;
mod quota;
mod restore;
mod sealing;
mod staging;

/// State kept under the mirror lock: a running SHA-256 of each staging copy appended to by this
/// process, so sealing need not re-hash the file (after a restart, the first seal of a partial copy
/// hashes it from disk).
#[derive(Default)]
pub(crate) struct MirrorState {
    /// Staging path -> (bytes hashed, hash state over exactly those bytes).
    hashes: HashMap<PathBuf, (u64, digest::Context)>,
    /// Unverified bytes (staging and quarantine) per origin, once counted ([`quota`]).
    unverified: HashMap<String, u64>,
    /// Per-origin quota of unverified bytes; 0 = none.
    quota_bytes: u64,
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
    /// The arbiter's epoch under which the origin wrote the segment (its catalog row's `epoch`), kept
    /// in the mirrored row so a node's catalog shows which holder wrote each part of a timeline.
    pub epoch: Option<u64>,
}

/// What sealing a mirrored segment did besides publishing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealOutcome {
    /// The staging copy was longer than the sealed size: the tail beyond it was kept in quarantine.
    pub cut_tail: Option<CutTail>,
}

/// Bytes held beyond a seal's size (the primary lost them in a crash), kept in quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutTail {
    pub quarantine_path: PathBuf,
    pub bytes: u64,
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
    /// The origin's unverified bytes (staging and quarantine) would pass the quota: refused, nothing
    /// written, nothing held deleted.
    #[error("{path}: {extra_bytes} more bytes of {origin} refused: {used_bytes} unverified bytes held, quota {quota_bytes}")]
    QuotaExceeded {
        origin: String,
        path: String,
        used_bytes: u64,
        quota_bytes: u64,
        extra_bytes: u64,
    },
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
    pub(super) fn mirror_guard(&self) -> std::sync::MutexGuard<'_, MirrorState> {
        match self.mirror_lock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Checks `path` is a canonical media path written by `origin`, which is not this node.
    pub(super) fn check_mirror_path(
        &self,
        origin: &str,
        path: &str,
    ) -> Result<MediaPathInfo, MirrorError> {
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

    pub(super) fn staging_path(&self, origin: &str, path: &str) -> PathBuf {
        self.data_dir.join(INCOMING_DIR).join(origin).join(path)
    }

    /// Where `origin`'s staging copy of `path` is kept (read-only use: a complete copy whose seal
    /// waits for its leaf is served from there to a restore).
    pub fn mirror_staging_file(&self, origin: &str, path: &str) -> PathBuf {
        self.staging_path(origin, path)
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
        for (rel, meta) in staging_files(&root)? {
            // Left over by a crash between catalog row and staging removal: the sealed row counts.
            if sealed_paths.contains(rel.as_str()) {
                continue;
            }
            out.push(MirrorHolding {
                path: rel,
                bytes_held: meta.len(),
                sealed_sha256: None,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Every entry below `root` that is not a directory, with its metadata (links not followed); a
/// missing `root`, or a directory gone meanwhile, holds nothing. The one walk of a staging tree
/// (`incoming/<origin>/`), for holdings, expiry and the quota's count.
fn entries_below(root: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, StorageError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
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
            } else {
                out.push((p, meta));
            }
        }
    }
    Ok(out)
}

/// Staging copies under `root`: files at canonical segment paths, relative to `root`, with their
/// metadata.
fn staging_files(root: &Path) -> Result<Vec<(String, std::fs::Metadata)>, StorageError> {
    let staged = entries_below(root)?.into_iter().filter_map(|(p, meta)| {
        let rel = p.strip_prefix(root).ok()?.to_str()?;
        (meta.is_file() && parse_canonical(rel).is_ok()).then(|| (rel.to_owned(), meta))
    });
    Ok(staged.collect())
}
