//! Quarantine: bytes and files that were refused or displaced are kept aside, never deleted.

use super::*;

impl Store {
    /// Moves a staging copy (if any) into quarantine.
    pub(super) fn quarantine_staging(
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
    pub(super) fn quarantine_slot<T>(
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
    pub(super) fn move_to_quarantine(
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

    /// [`Store::quarantine_bytes`] for refused bytes of `origin`, counted against its quota: over the
    /// quota they are not kept (`None`), since nothing held may be deleted to make room.
    pub(super) fn quarantine_refused(
        &self,
        state: &mut MirrorState,
        origin: &str,
        path: &str,
        data: &[u8],
    ) -> Result<Option<PathBuf>, StorageError> {
        match self.check_quota(state, origin, path, data.len() as u64) {
            Ok(()) => {}
            Err(MirrorError::Storage(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(path, origin, error = %e, "refused bytes not kept in quarantine");
                return Ok(None);
            }
        }
        let q = self.quarantine_bytes(origin, path, data)?;
        Self::count_unverified_change(state, origin, data.len() as i64);
        Ok(Some(q))
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
}
