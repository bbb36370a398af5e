//! Which node of the cluster this machine is: the node named by the `identity.toml` in a node's
//! `identity_dir` (written by `nvr-sync keygen --dir DIR --node NAME`), or an explicit `--node NAME`.

use std::path::{Path, PathBuf};

use super::parse::ConfigError;
use super::{ClusterConfig, NodeConfig};

/// The file in an identity directory that names the node (and holds its public pins).
pub const IDENTITY_FILE: &str = "identity.toml";

/// The node named by `<dir>/identity.toml`, or `None` if there is no such file.
pub fn identity_node(dir: &Path) -> Result<Option<String>, std::io::Error> {
    let path = dir.join(IDENTITY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        bad(format!("not an identity file: {}", e.message().trim()))
    })?;
    match table.get("node").and_then(toml::Value::as_str) {
        Some(node) => Ok(Some(node.to_owned())),
        None => Err(bad("has no `node`".to_owned())),
    }
}

/// Loads the cluster file at `path` and picks this machine's node: `node` if given (the `--node`
/// option), else the node named by its `identity.toml`. Returns the cluster and the node's name.
pub fn load_with_node(
    path: &Path,
    node: Option<&str>,
) -> Result<(ClusterConfig, String), ConfigError> {
    let cluster = super::load(path)?;
    let name = cluster.select_node(node)?.name.clone();
    Ok((cluster, name))
}

impl ClusterConfig {
    /// The node this process runs as: `explicit` (the `--node` option) if given, else the one node whose
    /// `identity_dir` holds an `identity.toml` naming it.
    pub fn select_node(&self, explicit: Option<&str>) -> Result<&NodeConfig, ConfigError> {
        let err = |message: String| ConfigError::Node {
            origin: self.origin.clone(),
            message,
        };
        if let Some(name) = explicit {
            return self.node(name).ok_or_else(|| {
                err(format!(
                    "--node {name:?}: no such node (nodes: {})",
                    self.node_names().join(", ")
                ))
            });
        }
        let mut dirs: Vec<&PathBuf> = Vec::new();
        for n in &self.nodes {
            if !dirs.contains(&&n.identity_dir) {
                dirs.push(&n.identity_dir);
            }
        }
        let mut found: Vec<(&NodeConfig, &PathBuf)> = Vec::new();
        for dir in &dirs {
            let named =
                identity_node(dir).map_err(|e| err(format!("reading the node identity: {e}")))?;
            let Some(named) = named else { continue };
            let Some(node) = self.node(&named) else {
                return Err(err(format!(
                    "{} names node {named:?}, which is not in the configuration (nodes: {})",
                    dir.join(IDENTITY_FILE).display(),
                    self.node_names().join(", ")
                )));
            };
            if node.identity_dir != **dir {
                return Err(err(format!(
                    "{} names node {named:?}, but that node's identity_dir is {}",
                    dir.join(IDENTITY_FILE).display(),
                    node.identity_dir.display()
                )));
            }
            found.push((node, dir));
        }
        match found.as_slice() {
            [(node, _)] => Ok(node),
            [] => Err(err(format!(
                "no node identity on this machine (looked for {IDENTITY_FILE} in {}); create it with \
                 `nvr-sync keygen --dir DIR --node NAME`, or pass --node NAME",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            several => Err(err(format!(
                "identities of several nodes are on this machine ({}); pass --node NAME",
                several
                    .iter()
                    .map(|(n, d)| format!("{} in {}", n.name, d.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}
