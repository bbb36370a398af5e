//! The command-line options every binary takes to pick the cluster file and this machine's node
//! (`--config FILE [--node NAME]`), flattened into their subcommands.

use std::path::PathBuf;

use super::parse::ConfigError;
use super::select::load_with_node;
use super::ClusterConfig;

// Not a doc comment: clap would take it as the help text of every subcommand it is flattened into.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The cluster configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Act as this node instead of the one named by its identity (`identity.toml` in the node's
    /// identity_dir); for tests and several nodes on one machine.
    #[arg(long)]
    pub node: Option<String>,
}

impl NodeArgs {
    /// `--node`, if given.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Loads the cluster file and picks the node (see [`load_with_node`]).
    pub fn load(&self) -> Result<(ClusterConfig, String), ConfigError> {
        load_with_node(&self.config, self.node())
    }
}
