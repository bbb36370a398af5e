//! `nvr check`: compare the catalog with the media files and re-hash sealed segments; the one rule for
//! what is wrong with a sealed segment ([`Store::verify_sealed`]), optionally against a reference such as
//! the sync agent's signed log.

use std::collections::HashSet;

use serde::Serialize;

use super::segment::sha256_file;
use super::{layout, SegmentRow, SegmentState, StorageError, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckProblem {
    pub path: String,
    pub problem: String,
}

/// What a sealed segment is, according to an authority other than the catalog: the sync agent's signed
/// log (its leaf for the path). See [`Store::verify_sealed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealedReference {
    pub size_bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub sealed_checked: usize,
    pub open_checked: usize,
    pub bytes_hashed: u64,
    pub problems: Vec<CheckProblem>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks every segment: sealed files exist with the cataloged size, read-only, and (if `rehash`) the
    /// cataloged SHA-256; open files exist; every media file has a row.
    pub fn check(&self, rehash: bool) -> Result<CheckReport, StorageError> {
        let mut report = CheckReport::default();
        let sealed = self.catalog().segments_in_state(SegmentState::Sealed)?;
        let open = self.catalog().segments_in_state(SegmentState::Open)?;
        let mut problem = |path: &str, p: String| {
            report.problems.push(CheckProblem {
                path: path.to_owned(),
                problem: p,
            })
        };
        let mut bytes_hashed = 0u64;
        for s in &sealed {
            let present = self.data_dir.join(&s.path).exists();
            if let Err(p) = self.verify_sealed_file(s) {
                problem(&s.path, p);
            }
            if rehash && present {
                if let Err(p) = self.verify_sealed_hash(s) {
                    problem(&s.path, p);
                }
                bytes_hashed += s.size_bytes.max(0) as u64;
            }
        }
        for s in &open {
            if !self.data_dir.join(&s.path).exists() {
                problem(&s.path, "open segment file is missing".to_owned());
            }
        }
        let known: HashSet<String> = self
            .catalog()
            .all_segment_paths()?
            .into_iter()
            .filter(|(_, _, st)| *st != SegmentState::Deleted)
            .map(|(_, p, _)| p)
            .collect();
        let files = layout::list_media_files(&self.data_dir)
            .map_err(|e| StorageError::io("list", &self.data_dir, e))?;
        for f in files {
            let rel = f.to_string_lossy();
            if !known.contains(rel.as_ref()) {
                problem(&rel, "media file has no catalog row".to_owned());
            }
        }
        report.sealed_checked = sealed.len();
        report.open_checked = open.len();
        report.bytes_hashed = bytes_hashed;
        Ok(report)
    }

    /// What is wrong with a sealed segment's file next to its catalog row, without reading it: the file
    /// is missing, has another size or is writable.
    pub fn verify_sealed_file(&self, row: &SegmentRow) -> Result<(), String> {
        self.file_problem(&row.path, row.size_bytes.max(0) as u64, "catalog")
    }

    /// Re-hashes a sealed segment's file against the SHA-256 in its catalog row (`nvr check`).
    pub fn verify_sealed_hash(&self, row: &SegmentRow) -> Result<(), String> {
        self.hash_problem(&row.path, row.sha256.as_deref(), "catalog")
    }

    /// The one scrubbing rule, used by `nvr check`, the sync agent's scrub on both nodes and the
    /// primary's tamper watch: what is wrong with a sealed segment.
    ///
    /// With a `reference` (the signed log's leaf for this path), the catalog row itself must agree with
    /// it (hash and size), and the file is compared with the reference, so a rewritten catalog row
    /// cannot hide an altered file. Without one, the file is compared with the catalog row. The file
    /// must exist, be read-only and have the expected size; with `rehash`, its contents must hash to
    /// the expected SHA-256.
    pub fn verify_sealed(
        &self,
        row: &SegmentRow,
        reference: Option<&SealedReference>,
        rehash: bool,
    ) -> Result<(), String> {
        let (size_bytes, sha256, by) = match reference {
            Some(r) => {
                if row.sha256.as_deref() != Some(r.sha256.as_str())
                    || row.size_bytes.max(0) as u64 != r.size_bytes
                {
                    return Err(format!(
                        "catalog row says sha256 {} and {} bytes, the signed log says sha256 {} and {} bytes",
                        row.sha256.as_deref().unwrap_or("nothing"),
                        row.size_bytes,
                        r.sha256,
                        r.size_bytes
                    ));
                }
                (r.size_bytes, Some(r.sha256.as_str()), "signed log")
            }
            None => (
                row.size_bytes.max(0) as u64,
                row.sha256.as_deref(),
                "catalog",
            ),
        };
        self.file_problem(&row.path, size_bytes, by)?;
        if rehash {
            self.hash_problem(&row.path, sha256, by)?;
        }
        Ok(())
    }

    fn file_problem(&self, path: &str, size_bytes: u64, by: &str) -> Result<(), String> {
        let path = self.data_dir.join(path);
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("sealed segment file unreadable: {e}"))?;
        if meta.len() != size_bytes {
            return Err(format!("size {} bytes, {by} says {size_bytes}", meta.len()));
        }
        if !meta.permissions().readonly() {
            return Err("sealed segment is writable".to_owned());
        }
        Ok(())
    }

    fn hash_problem(&self, path: &str, sha256: Option<&str>, by: &str) -> Result<(), String> {
        match sha256_file(&self.data_dir.join(path)) {
            Ok(h) if Some(h.as_str()) == sha256 => Ok(()),
            Ok(h) => Err(format!(
                "sha256 {h}, {by} says {}",
                sha256.unwrap_or("nothing")
            )),
            Err(e) => Err(format!("cannot hash: {e}")),
        }
    }

    /// One scrub pass against the catalog: [`Store::scrub_pass_against`] without a reference.
    pub fn scrub_pass(
        &self,
        node: Option<&str>,
        bytes_per_s: u64,
    ) -> Result<(u64, Vec<(SegmentRow, String)>), StorageError> {
        self.scrub_pass_against(node, bytes_per_s, &|_| None)
    }

    /// One scrub pass: checks every sealed segment (only those recorded by `node`, if given) by
    /// [`Store::verify_sealed`] with the reference `reference` gives for it (re-hashing the file) at no
    /// more than `bytes_per_s` on average. Returns the bytes hashed and the damaged segments with what
    /// is wrong with each.
    pub fn scrub_pass_against(
        &self,
        node: Option<&str>,
        bytes_per_s: u64,
        reference: &dyn Fn(&SegmentRow) -> Option<SealedReference>,
    ) -> Result<(u64, Vec<(SegmentRow, String)>), StorageError> {
        let sealed = self.catalog().segments_in_state(SegmentState::Sealed)?;
        let mut hashed = 0u64;
        let mut damaged = Vec::new();
        let started = std::time::Instant::now();
        for row in sealed
            .into_iter()
            .filter(|r| node.is_none_or(|n| r.node == n))
        {
            let result = self.verify_sealed(&row, reference(&row).as_ref(), true);
            hashed += row.size_bytes.max(0) as u64;
            if let Err(detail) = result {
                damaged.push((row, detail));
            }
            let due = std::time::Duration::from_secs_f64(hashed as f64 / bytes_per_s.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok((hashed, damaged))
    }
}
