//! The holders and epochs persisted in `<data_dir>/arbiter.json` (`store::layout::ARBITER_STATE_FILE`),
//! replaced atomically (`base::fs::write_atomic`) before any promotion or release is carried out, so a
//! restarted arbiter never hands out an epoch twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::Holding;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an arbiter state file: {source}", path.display())]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    node: String,
    streams: BTreeMap<String, Holding>,
}

/// The state file of the data directory `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(store::layout::ARBITER_STATE_FILE)
}

/// Reads the holdings (none if the file does not exist yet).
pub fn load(data_dir: &Path) -> Result<BTreeMap<String, Holding>, StateError> {
    let path = path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| StateError::Malformed { path, source })?;
    Ok(file.streams)
}

/// Replaces the state file with `streams`, durably.
pub fn save(
    data_dir: &Path,
    node: &str,
    streams: &BTreeMap<String, Holding>,
) -> Result<(), StateError> {
    let path = path(data_dir);
    let file = StateFile {
        node: node.to_owned(),
        streams: streams.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|source| StateError::Malformed {
        path: path.clone(),
        source,
    })?;
    base::fs::write_atomic(&path, &bytes, Some(0o640))
        .map_err(|source| StateError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("absent").is_empty());
        let mut m = BTreeMap::new();
        m.insert(
            "cam/main".to_owned(),
            Holding {
                holder: "s".into(),
                epoch: 7,
            },
        );
        save(dir.path(), "s", &m).expect("save");
        assert_eq!(load(dir.path()).expect("load"), m);
        std::fs::write(path(dir.path()), b"{not json").expect("write");
        let e = load(dir.path()).expect_err("malformed").to_string();
        assert!(
            e.contains("arbiter.json") && e.contains("not an arbiter state file"),
            "{e}"
        );
    }
}
