//! `nvr check`: compare the catalog with the media files and re-hash sealed segments.

use std::collections::HashSet;

use serde::Serialize;

use super::segment::sha256_file;
use super::{layout, SegmentRow, SegmentState, StorageError, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckProblem {
    pub path: String,
    pub problem: String,
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
        let path = self.data_dir.join(&row.path);
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("sealed segment file unreadable: {e}"))?;
        if meta.len() != row.size_bytes as u64 {
            return Err(format!(
                "size {} bytes, catalog says {}",
                meta.len(),
                row.size_bytes
            ));
        }
        if !meta.permissions().readonly() {
            return Err("sealed segment is writable".to_owned());
        }
        Ok(())
    }

    /// Re-hashes a sealed segment's file against the SHA-256 in its catalog row: the one scrubbing
    /// rule, used by `nvr check` and the sync agent's scrub on both nodes.
    pub fn verify_sealed_hash(&self, row: &SegmentRow) -> Result<(), String> {
        match sha256_file(&self.data_dir.join(&row.path)) {
            Ok(h) if Some(h.as_str()) == row.sha256.as_deref() => Ok(()),
            Ok(h) => Err(format!(
                "sha256 {h}, catalog says {}",
                row.sha256.as_deref().unwrap_or("nothing")
            )),
            Err(e) => Err(format!("cannot hash: {e}")),
        }
    }

    /// One scrub pass: re-hashes every sealed segment (only those recorded by `node`, if given) at no
    /// more than `bytes_per_s` on average. Returns the bytes hashed and the damaged segments with what
    /// is wrong with each.
    pub fn scrub_pass(
        &self,
        node: Option<&str>,
        bytes_per_s: u64,
    ) -> Result<(u64, Vec<(SegmentRow, String)>), StorageError> {
        let sealed = self.catalog().segments_in_state(SegmentState::Sealed)?;
        let mut hashed = 0u64;
        let mut damaged = Vec::new();
        let started = std::time::Instant::now();
        for row in sealed
            .into_iter()
            .filter(|r| node.is_none_or(|n| r.node == n))
        {
            let result = self.verify_sealed_hash(&row);
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
