//! The audit log `<state_dir>/audit.log`: one JSON object a line (`time_ms`, `event`, `user`, `client`,
//! `ok`, `detail`), appended and flushed for every login, failed login, refused login and logout.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::WebError;

#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    pub time_ms: i64,
    pub event: &'a str,
    pub user: &'a str,
    pub client: &'a str,
    pub ok: bool,
    pub detail: &'a str,
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(state_dir: &Path) -> Result<AuditLog, WebError> {
        let path = state_dir.join("audit.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(WebError::io(&path))?;
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry`; a failure to write is logged (the request it records has happened anyway).
    pub fn record(&self, entry: &AuditEntry<'_>) {
        tracing::info!(
            event = entry.event,
            user = entry.user,
            client = entry.client,
            ok = entry.ok,
            "audit: {}",
            entry.detail
        );
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            tracing::error!("audit log {}: {e}", self.path.display());
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<serde_json::Value>, WebError> {
        let text = std::fs::read_to_string(&self.path).map_err(WebError::io(&self.path))?;
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines[lines.len().saturating_sub(n)..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}
