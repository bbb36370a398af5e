//! The recorder's configuration: its node's view of the cluster configuration file (crate
//! `cluster-config`, shared with the sync agent). Every key is documented in `config.example.toml` at the
//! repository root.

use std::path::Path;

pub use cluster_config::{
    load, parse, parse_byte_size, CameraConfig, ClusterConfig, ConfigError, IngestConfig,
    PasswordFile, RecorderConfig as Config, RecordingConfig, RetentionConfig, Role, Secret,
    StreamConfig, StreamKind, Takeover, Transport, UdpReorder,
};

/// Loads the cluster file at `path` and returns the recorder configuration of this machine's node:
/// `node` if given (the `--node` option), else the node named by its `identity.toml`.
pub fn load_node(path: &Path, node: Option<&str>) -> Result<Config, ConfigError> {
    let (cluster, name) = cluster_config::load_with_node(path, node)?;
    cluster.recorder(&name)
}

/// The embedded default of `nvr demo`: one camera per simulated stream URL, recording main streams into
/// `data_dir` with segments of `segment_duration_ms`. No free-space floor (a demo must not delete).
pub fn demo(data_dir: &Path, urls: &[url::Url], segment_duration_ms: u64) -> Config {
    Config {
        node_name: "demo".to_owned(),
        data_dir: data_dir.to_owned(),
        recording: RecordingConfig {
            segment_duration_ms,
            ..RecordingConfig::default()
        },
        ingest: IngestConfig::default(),
        retention: RetentionConfig {
            min_free_bytes: 0,
            ..RetentionConfig::default()
        },
        cameras: urls
            .iter()
            .enumerate()
            .map(|(i, url)| CameraConfig {
                name: format!("sim{}", i + 1),
                node: "demo".to_owned(),
                username: None,
                password: None,
                password_file: None,
                transport: Transport::Tcp,
                udp_reorder: UdpReorder::default(),
                takeover: cluster_config::Takeover::Hot,
                priority: cluster_config::DEFAULT_PRIORITY,
                bitrate_kbps: None,
                streams: vec![StreamConfig {
                    kind: StreamKind::Main,
                    url: url.clone(),
                    record: true,
                    max_age_days: None,
                    max_bytes: None,
                }],
            })
            .collect(),
        protected: Vec::new(),
    }
}
