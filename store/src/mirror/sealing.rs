//! Sealing a mirrored segment: size and SHA-256 checked, published write-once at its path, cataloged.

use super::*;

impl Store {
    /// Seals `origin`'s mirrored segment `path`.
    ///
    /// The staging copy must be exactly `size_bytes` long and hash to `sha256`: if it is shorter,
    /// `OffsetGap { held, offset: size_bytes }` (send the rest first, nothing is quarantined); if it is
    /// longer, its first `size_bytes` must hash to `sha256` (a primary whose crash cut back bytes it had
    /// already sent): the tail is then kept in quarantine and reported in [`SealOutcome::cut_tail`].
    /// A hash that differs is a `Contradiction` and leaves the staging copy as it is: bytes once
    /// acknowledged are never dropped, so the path cannot be started afresh with other bytes. Then: fsync,
    /// read-only, publish at `path` with a hard link (never replaces: an existing file with the same hash
    /// is an idempotent success, a different one is `Contradiction` and left untouched), fsync the
    /// directory, catalog row (`node` = origin, `epoch` = the origin's, `sealed`, no run), remove the
    /// staging copy.
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
    ) -> Result<SealOutcome, MirrorError> {
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
        let mut outcome = SealOutcome::default();
        let mut guard = self.mirror_guard();
        let staged = self.staging_path(origin, path);
        let target = self.data_dir.join(path);
        // Whatever happens below the staging copy is published, removed or quarantined, except
        // when it is still short (then the running hash goes back).
        let cached_hash = guard.hashes.remove(&staged);

        if let Some(row) = self.sealed_segment_by_path(path)? {
            if row.sha256.as_deref() == Some(sha.as_str()) && row.size_bytes as u64 == size_bytes {
                self.remove_staging(&mut guard, origin, &staged)?;
                return Ok(outcome);
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
                let mut data =
                    std::fs::read(&staged).map_err(|e| StorageError::io("read", &staged, e))?;
                let mut cached_hash = cached_hash;
                if held > size_bytes {
                    outcome.cut_tail = Some(
                        self.cut_crash_tail(origin, path, &staged, &mut data, size_bytes, &sha)?,
                    );
                    cached_hash = None;
                }
                let have = match &cached_hash {
                    Some((hashed, ctx)) if *hashed == data.len() as u64 => {
                        base::hex::encode(ctx.clone().finish().as_ref())
                    }
                    _ => sha256_hex(&data),
                };
                if have != sha {
                    // The held bytes were acknowledged: they stay staged (a seal cannot make the
                    // standby drop them and start the path afresh).
                    if let Some(cached) = cached_hash {
                        guard.hashes.insert(staged, cached);
                    }
                    tracing::error!(
                        path,
                        origin,
                        have,
                        want = sha,
                        "mirrored segment hash mismatch"
                    );
                    return Err(contradiction(
                        path,
                        format!("the {held} bytes held hash to {have}, seal says {sha}; the staging copy is kept"),
                        None,
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
        // Durable before the seal is acknowledged: the primary counts on it from then on.
        self.catalog().durably(|c| {
            c.put_sealed_segment_to_deduplicate(
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
                info.epoch,
            )
        })?;
        self.remove_staging(&mut guard, origin, &staged)?;
        self.log_event(
            Some(stream_id),
            "mirrored",
            &format!(
                "{path}: mirrored from {origin} ({} bytes, sha256 {sha})",
                data.len()
            ),
        );
        drop(guard);
        self.dedup_marked();
        Ok(outcome)
    }

    /// Checks a seal of `origin`'s segment `path` against what is held, without publishing or moving
    /// anything: `Ok` if a sealed copy has that size and hash, or the staging copy's first
    /// `size_bytes` hash to `sha256`; `OffsetGap` if fewer bytes are held; else `Contradiction`.
    pub fn mirror_check_seal(
        &self,
        origin: &str,
        path: &str,
        size_bytes: u64,
        sha256: &str,
    ) -> Result<(), MirrorError> {
        self.check_mirror_path(origin, path)?;
        let sha = normalize_sha256(path, sha256)?;
        let guard = self.mirror_guard();
        if let Some(row) = self.sealed_segment_by_path(path)? {
            if row.sha256.as_deref() == Some(sha.as_str()) && row.size_bytes as u64 == size_bytes {
                return Ok(());
            }
            return Err(contradiction(
                path,
                format!(
                    "sealed here with sha256 {} ({} bytes); seal says {sha} ({size_bytes} bytes)",
                    row.sha256.as_deref().unwrap_or("-"),
                    row.size_bytes
                ),
                None,
            ));
        }
        let staged = self.staging_path(origin, path);
        let held = match std::fs::metadata(&staged) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("stat", &staged, e).into()),
        };
        if held < size_bytes || size_bytes == 0 {
            return Err(MirrorError::OffsetGap {
                path: path.to_owned(),
                held,
                offset: size_bytes,
            });
        }
        let have = match guard.hashes.get(&staged) {
            Some((hashed, ctx)) if *hashed == size_bytes && held == size_bytes => {
                base::hex::encode(ctx.clone().finish().as_ref())
            }
            _ => {
                let data =
                    std::fs::read(&staged).map_err(|e| StorageError::io("read", &staged, e))?;
                let size = usize::try_from(size_bytes)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                sha256_hex(&data[..size])
            }
        };
        if have != sha {
            return Err(contradiction(
                path,
                format!("the first {size_bytes} of the {held} bytes held hash to {have}, seal says {sha}"),
                None,
            ));
        }
        Ok(())
    }

    /// The staging copy holds more than the seal says: the primary lost a tail it had already sent
    /// (a crash cut its file back to a fragment boundary before the bytes were durable there). If the
    /// first `size_bytes` held hash to the sealed `sha`, the tail beyond them is kept in quarantine and
    /// the staging copy (and `data`) cut to the sealed size; otherwise the seal is a `Contradiction`
    /// and the staging copy stays as it is.
    fn cut_crash_tail(
        &self,
        origin: &str,
        path: &str,
        staged: &Path,
        data: &mut Vec<u8>,
        size_bytes: u64,
        sha: &str,
    ) -> Result<CutTail, MirrorError> {
        let held = data.len() as u64;
        let size = usize::try_from(size_bytes)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let prefix = sha256_hex(&data[..size]);
        if prefix != sha {
            return Err(contradiction(
                path,
                format!(
                    "{held} bytes held, seal says {size_bytes}, and the first {size_bytes} hash to {prefix}, not {sha}; the staging copy is kept"
                ),
                None,
            ));
        }
        let quarantine_path = self.quarantine_bytes(origin, path, &data[size..])?;
        OpenOptions::new()
            .write(true)
            .open(staged)
            .and_then(|f| f.set_len(size_bytes).and_then(|()| f.sync_all()))
            .map_err(|e| StorageError::io("cut", staged, e))?;
        data.truncate(size);
        tracing::warn!(
            path,
            origin,
            held,
            size_bytes,
            quarantine = %quarantine_path.display(),
            "primary sealed a shorter segment than it sent (crash cut); tail kept in quarantine"
        );
        Ok(CutTail {
            quarantine_path,
            bytes: held - size_bytes,
        })
    }
}
