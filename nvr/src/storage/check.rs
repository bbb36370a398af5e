//! `nvr check`: compare the catalog with the media files and re-hash sealed segments.

use std::collections::HashSet;

use serde::Serialize;

use super::segment::sha256_file;
use super::{layout, SegmentState, StorageError, Store};

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
            let path = self.data_dir.join(&s.path);
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    problem(&s.path, format!("sealed segment file unreadable: {e}"));
                    continue;
                }
            };
            if meta.len() != s.size_bytes as u64 {
                problem(
                    &s.path,
                    format!("size {} bytes, catalog says {}", meta.len(), s.size_bytes),
                );
            }
            if !meta.permissions().readonly() {
                problem(&s.path, "sealed segment is writable".to_owned());
            }
            if rehash {
                match sha256_file(&path) {
                    Ok(h) if Some(h.as_str()) == s.sha256.as_deref() => {}
                    Ok(h) => problem(
                        &s.path,
                        format!(
                            "sha256 {h}, catalog says {}",
                            s.sha256.as_deref().unwrap_or("nothing")
                        ),
                    ),
                    Err(e) => problem(&s.path, format!("cannot hash: {e}")),
                }
                bytes_hashed += meta.len();
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
}
