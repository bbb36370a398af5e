//! Restore: known-good bytes put back in place of a damaged or missing sealed file.

use super::*;

impl Store {
    /// Writes `data` to a temporary file, fsyncs it, makes it read-only and publishes it at `target`
    /// without replacing anything. `Ok(false)` if `target` already exists (nothing changed).
    pub(super) fn place_file(&self, target: &Path, data: &[u8]) -> Result<bool, StorageError> {
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

    pub(super) fn restore_sealed_locked(&self, path: &str, good: &[u8]) -> Result<(), MirrorError> {
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
        let scanned = match mp4::scan(good) {
            Ok(scan) => ScannedSegment::of(&scan),
            Err(e) => {
                tracing::warn!(path, error = %e, "restored file is not a readable MP4; indexed by hash only");
                ScannedSegment::default()
            }
        };
        let now_ms = self.now_utc_ms();
        self.catalog().put_sealed_segment(
            &scanned.row(
                stream_id,
                &info.node,
                path,
                SegmentState::Sealed,
                info.start_ms,
                now_ms,
            ),
            &scanned.progress(info.start_ms, good.len() as i64),
            &want,
            now_ms,
            None,
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
