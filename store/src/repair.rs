//! Repair of a sealed segment against a reference (the sync agent's signed log): the catalog row is put
//! back to what the reference says, then the good bytes replace the damaged file.

use crate::segment::sha256_file;
use crate::{MirrorError, SealedReference, SegmentState, Store};

impl Store {
    /// Repairs the sealed segment at `path` with `good`, which must match `reference` (size and SHA-256;
    /// else `Contradiction` and nothing changes). A catalog row that disagrees with the reference (a
    /// rewritten hash or size) is set back to it first, and the change is logged as an event; the
    /// damaged file is then moved to quarantine and replaced ([`Store::restore_sealed`]). A file whose
    /// contents were already right but which was made writable is made read-only again.
    pub fn repair_sealed(
        &self,
        path: &str,
        good: &[u8],
        reference: &SealedReference,
    ) -> Result<(), MirrorError> {
        let contradiction = |reason: String| MirrorError::Contradiction {
            path: path.to_owned(),
            reason,
            quarantine_path: None,
        };
        let have = base::hex::encode(ring::digest::digest(&ring::digest::SHA256, good).as_ref());
        if have != reference.sha256 || good.len() as u64 != reference.size_bytes {
            return Err(contradiction(format!(
                "repair bytes hash to {have} ({} bytes), the reference says {} ({} bytes)",
                good.len(),
                reference.sha256,
                reference.size_bytes
            )));
        }
        let row = self
            .catalog()
            .segment_by_path(path)?
            .filter(|r| r.state != SegmentState::Deleted && r.state != SegmentState::Open)
            .ok_or_else(|| contradiction("no sealed segment at this path".to_owned()))?;
        if row.sha256.as_deref() != Some(reference.sha256.as_str())
            || row.size_bytes.max(0) as u64 != reference.size_bytes
        {
            let size = i64::try_from(reference.size_bytes)
                .map_err(|_| contradiction("reference size out of range".to_owned()))?;
            self.catalog()
                .set_segment_hash(row.id, &reference.sha256, size)?;
            let msg = format!(
                "{path}: catalog row (sha256 {}, {} bytes) set back to the signed log (sha256 {}, {} bytes)",
                row.sha256.as_deref().unwrap_or("-"),
                row.size_bytes,
                reference.sha256,
                reference.size_bytes
            );
            self.log_event(Some(row.stream_id), "catalog_repaired", &msg);
            tracing::warn!("{msg}");
        }
        self.restore_sealed(path, good)?;
        // restore_sealed leaves a file with the right contents in place; make sure it is read-only.
        let target = self.data_dir.join(path);
        if let Ok(meta) = std::fs::metadata(&target) {
            if !meta.permissions().readonly() && sha256_file(&target)? == reference.sha256 {
                let mut perms = meta.permissions();
                perms.set_readonly(true);
                std::fs::set_permissions(&target, perms)
                    .map_err(|e| crate::StorageError::io("chmod", &target, e))?;
            }
        }
        Ok(())
    }
}
