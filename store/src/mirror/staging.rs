//! Staging: appending mirrored bytes to a copy under `incoming/<origin>/…` (refusing any that
//! contradict what is held) and flushing it.

use super::*;

impl Store {
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
            return self.append_to_sealed(&mut guard, origin, &row, offset, data);
        }
        let staged = self.staging_path(origin, path);
        let (file, created) = match OpenOptions::new().read(true).write(true).open(&staged) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.staging_expired(origin, path) {
                    return Err(contradiction(
                        path,
                        "its staging copy expired and was kept in quarantine; the path cannot be started again",
                        None,
                    ));
                }
                if offset > 0 {
                    return Err(MirrorError::OffsetGap {
                        path: path.to_owned(),
                        held: 0,
                        offset,
                    });
                }
                self.check_quota(&mut guard, origin, path, data.len() as u64)?;
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
                let q = self.quarantine_refused(&mut guard, origin, path, data)?;
                let reason = format!(
                    "bytes at offset {offset} (chunk of {} bytes) differ from the {held} bytes held",
                    data.len()
                );
                tracing::error!(path, origin, %reason, quarantine = ?q, "mirrored data refused");
                return Err(contradiction(path, reason, q));
            }
        }
        let tail = &data[overlap..];
        if !tail.is_empty() {
            if !created {
                self.check_quota(&mut guard, origin, path, tail.len() as u64)?;
            }
            if let Err(e) = file.write_all_at(tail, held) {
                let _ = file.set_len(held);
                guard.hashes.remove(&staged);
                return Err(StorageError::io("write", &staged, e).into());
            }
            Self::count_unverified_change(&mut guard, origin, tail.len() as i64);
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
    pub(super) fn append_to_sealed(
        &self,
        state: &mut MirrorState,
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
                let q = self.quarantine_refused(state, origin, &row.path, data)?;
                tracing::error!(path = %row.path, origin, %reason, quarantine = ?q, "data for a sealed segment refused");
                Err(contradiction(&row.path, reason, q))
            }
        }
    }

    /// Removes `origin`'s staging copy `staged` (if any; its bytes leave the origin's unverified
    /// count) and fsyncs its directory.
    pub(super) fn remove_staging(
        &self,
        state: &mut MirrorState,
        origin: &str,
        staged: &Path,
    ) -> Result<(), StorageError> {
        let len = match std::fs::metadata(staged) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io("stat", staged, e)),
        };
        match std::fs::remove_file(staged) {
            Ok(()) => {
                Self::count_unverified_change(
                    state,
                    origin,
                    -i64::try_from(len).unwrap_or(i64::MAX),
                );
                if let Some(dir) = staged.parent() {
                    fsync_dir(dir)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("remove", staged, e)),
        }
    }
}
