//! File and directory naming under the data directory: every entry of it is named here, and nowhere else.
//!
//! ```text
//! <data_dir>/catalog.db (+ -wal, -shm)   the catalog (recorder writes, everyone else reads)
//! <data_dir>/media/…                      segment files (see below)
//! <data_dir>/incoming/<origin>/media/…    staging copies of segments mirrored from another node
//! <data_dir>/quarantine/…                 refused mirrored bytes, displaced damaged files
//! <data_dir>/incoming/.tmp/               restore's temporary files
//! <data_dir>/status.json                  the recorder's status, rewritten every second
//! <data_dir>/control.sock                 the recorder's control socket
//! <data_dir>/sync.db (+ -wal, -shm)       the sync agent's own database
//! <data_dir>/sync-status.json             the sync agent's status
//! <data_dir>/arbiter.json                 the arbiter's holders and epochs of streams (fencing tokens)
//! <data_dir>/arbiter-status.json          the arbiter's status (peers, holders, recent events)
//! <data_dir>/arbiter.sock                 the arbiter's operator socket
//! ```
//!
//! `media/<camera>/<stream>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSmmmZ>_<node>.mp4`, times in UTC. The node name in
//! the file name lets copies of the same stream recorded by several nodes live side by side.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

pub const CATALOG_FILE: &str = "catalog.db";
pub const MEDIA_DIR: &str = "media";
/// Staging copies of segments being mirrored from another node (`incoming/<origin>/media/...`).
pub const INCOMING_DIR: &str = "incoming";
/// Refused mirrored bytes and displaced damaged files, kept for inspection.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Temporary files of restore (under `incoming/`), linked into `media/` when complete.
pub const RESTORE_TMP_DIR: &str = ".tmp";
/// The recorder's status document.
pub const STATUS_FILE: &str = "status.json";
/// The sync agent's database.
pub const SYNC_DB_FILE: &str = "sync.db";
/// The recorder's control socket (`docs/control.md`).
pub const CONTROL_SOCKET_FILE: &str = "control.sock";
/// The sync agent's status document.
pub const SYNC_STATUS_FILE: &str = "sync-status.json";
/// The arbiter's persisted holders and epochs.
pub const ARBITER_STATE_FILE: &str = "arbiter.json";
/// The arbiter's status document.
pub const ARBITER_STATUS_FILE: &str = "arbiter-status.json";
/// The arbiter's operator socket (`nvr-arbiter takeover`).
pub const ARBITER_SOCKET_FILE: &str = "arbiter.sock";
const NAME_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%3fZ";

/// The relative path (to the data directory) of a segment.
pub fn segment_relative_path(camera: &str, stream: &str, start_ms: i64, node: &str) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(start_ms).unwrap_or_default();
    format!(
        "{MEDIA_DIR}/{camera}/{stream}/{}/{}_{node}.mp4",
        t.format("%Y-%m-%d"),
        t.format(NAME_TIME_FORMAT)
    )
}

/// What a media path says about its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPathInfo {
    pub camera: String,
    pub stream: String,
    pub start_ms: i64,
    pub node: String,
}

/// Parses a path relative to the data directory, as written by [`segment_relative_path`].
pub fn parse_media_path(relative: &Path) -> Option<MediaPathInfo> {
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let [media, camera, stream, _date, file] = parts.as_slice() else {
        return None;
    };
    if *media != MEDIA_DIR {
        return None;
    }
    let stem = file.strip_suffix(".mp4")?;
    let (time, node) = stem.split_once('_')?;
    let t = NaiveDateTime::parse_from_str(time, NAME_TIME_FORMAT).ok()?;
    if node.is_empty() {
        return None;
    }
    Some(MediaPathInfo {
        camera: (*camera).to_owned(),
        stream: (*stream).to_owned(),
        start_ms: t.and_utc().timestamp_millis(),
        node: node.to_owned(),
    })
}

/// All `.mp4` files under `media/`, as paths relative to `data_dir`.
pub fn list_media_files(data_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let root = data_dir.join(MEDIA_DIR);
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && path.extension().is_some_and(|e| e == "mp4") {
                if let Ok(rel) = path.strip_prefix(data_dir) {
                    out.push(rel.to_owned());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_round_trips() {
        let p = segment_relative_path("front-door", "main", 1_795_000_000_123, "nvr_a");
        assert_eq!(
            p,
            "media/front-door/main/2026-11-18/20261118T110640123Z_nvr_a.mp4"
        );
        let info = parse_media_path(Path::new(&p)).expect("parse");
        assert_eq!(
            info,
            MediaPathInfo {
                camera: "front-door".into(),
                stream: "main".into(),
                start_ms: 1_795_000_000_123,
                node: "nvr_a".into()
            }
        );
        assert_eq!(
            parse_media_path(Path::new("media/a/main/x/garbage.mp4")),
            None
        );
        assert_eq!(
            parse_media_path(Path::new("../a/main/x/20261117T080640123Z_n.mp4")),
            None
        );
    }
}
