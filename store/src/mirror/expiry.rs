//! Stale staging copies: a copy nothing was appended to for longer than a bound (an abandoned
//! segment) is moved to quarantine, never deleted, and a marker keeps its path from being started
//! again with other bytes.

use super::*;

/// Suffix of the marker left at an expired staging copy's path.
const EXPIRED_SUFFIX: &str = ".expired";

/// A staging copy that expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredStaging {
    pub path: String,
    pub bytes: u64,
    pub quarantine_path: PathBuf,
}

impl Store {
    /// Moves `origin`'s staging copies last written more than `max_idle_ms` ago to quarantine (they
    /// still count against the quota) and marks their paths as expired.
    pub fn mirror_expire_staging(
        &self,
        origin: &str,
        max_idle_ms: u64,
    ) -> Result<Vec<ExpiredStaging>, StorageError> {
        if !valid_node_name(origin) {
            return Err(StorageError::BadMediaPath(PathBuf::from(origin)));
        }
        let now_ms = self.now_utc_ms();
        let idle_ms = i64::try_from(max_idle_ms).unwrap_or(i64::MAX);
        let mut guard = self.mirror_guard();
        let root = self.data_dir.join(INCOMING_DIR).join(origin);
        let mut expired = Vec::new();
        for (rel, meta) in staging_files(&root)? {
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(now_ms, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            if now_ms.saturating_sub(modified_ms) <= idle_ms {
                continue;
            }
            let staged = root.join(&rel);
            let marker = expired_marker(&staged);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&marker)
                .and_then(|f| f.sync_all())
                .map_err(|e| StorageError::io("create", &marker, e))?;
            guard.hashes.remove(&staged);
            let q = self.move_to_quarantine(origin, &rel, &staged)?;
            tracing::warn!(path = %rel, origin, quarantine = %q.display(), "stale staging copy expired");
            expired.push(ExpiredStaging {
                path: rel,
                bytes: meta.len(),
                quarantine_path: q,
            });
        }
        Ok(expired)
    }

    /// Whether `origin`'s staging copy of `path` expired (see [`Store::mirror_expire_staging`]).
    pub(super) fn staging_expired(&self, origin: &str, path: &str) -> bool {
        expired_marker(&self.staging_path(origin, path)).exists()
    }
}

fn expired_marker(staged: &Path) -> PathBuf {
    let mut name = staged.as_os_str().to_owned();
    name.push(EXPIRED_SUFFIX);
    PathBuf::from(name)
}
