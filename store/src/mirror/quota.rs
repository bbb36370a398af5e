//! Per-origin quota of unverified bytes on a standby: the staging copies under `incoming/<origin>/`
//! and the quarantined files of that origin together stay under a byte limit, so a primary cannot fill
//! the disk (whose free-space floor would then make retention delete verified copies). Over the quota
//! new bytes are refused; nothing held is deleted to make room.

use super::*;

impl Store {
    /// Sets the quota of unverified bytes per origin (0 = none).
    pub fn set_mirror_quota(&self, bytes: u64) {
        self.mirror_guard().quota_bytes = bytes;
    }

    /// Bytes of `origin` in staging and quarantine, as this store counts them (the directories are
    /// walked once per origin and process, then the count is kept up to date).
    pub fn mirror_unverified_bytes(&self, origin: &str) -> Result<u64, StorageError> {
        let mut guard = self.mirror_guard();
        self.unverified_bytes(&mut guard, origin)
    }

    pub(super) fn unverified_bytes(
        &self,
        state: &mut MirrorState,
        origin: &str,
    ) -> Result<u64, StorageError> {
        if let Some(n) = state.unverified.get(origin) {
            return Ok(*n);
        }
        let n = self.count_unverified(origin)?;
        state.unverified.insert(origin.to_owned(), n);
        Ok(n)
    }

    /// Refuses `extra` more unverified bytes of `origin` if they would pass the quota.
    pub(super) fn check_quota(
        &self,
        state: &mut MirrorState,
        origin: &str,
        path: &str,
        extra: u64,
    ) -> Result<(), MirrorError> {
        let quota = state.quota_bytes;
        if quota == 0 {
            return Ok(());
        }
        let used = self.unverified_bytes(state, origin)?;
        if used.saturating_add(extra) > quota {
            return Err(MirrorError::QuotaExceeded {
                origin: origin.to_owned(),
                path: path.to_owned(),
                used_bytes: used,
                quota_bytes: quota,
                extra_bytes: extra,
            });
        }
        Ok(())
    }

    /// Adds `delta` (may be negative) to `origin`'s count, if it is counted yet.
    pub(super) fn count_unverified_change(state: &mut MirrorState, origin: &str, delta: i64) {
        if let Some(n) = state.unverified.get_mut(origin) {
            *n = n.saturating_add_signed(delta);
        }
    }

    /// Walks `incoming/<origin>/` and the quarantine entries named `<ms>_<origin>_media~…`.
    fn count_unverified(&self, origin: &str) -> Result<u64, StorageError> {
        let staging = entries_below(&self.data_dir.join(INCOMING_DIR).join(origin))?;
        let mut total: u64 = staging.iter().map(|(_, meta)| meta.len()).sum();
        let quarantine = self.data_dir.join(QUARANTINE_DIR);
        let entries = match std::fs::read_dir(&quarantine) {
            Ok(e) => Some(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io("list", &quarantine, e)),
        };
        let infix = format!("_{origin}_media~");
        for entry in entries.into_iter().flatten() {
            let entry = entry.map_err(|e| StorageError::io("list", &quarantine, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.find(&infix).map(|i| &name[..i]) else {
                continue;
            };
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| StorageError::io("stat", &entry.path(), e))?;
            if meta.is_file() {
                total += meta.len();
            }
        }
        Ok(total)
    }
}
