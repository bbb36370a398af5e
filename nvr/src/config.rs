//! Configuration file (TOML): types, defaults and validation.
//!
//! Every key is documented in `config.example.toml` at the repository root.

use std::path::{Path, PathBuf};

/// The whole configuration of one recorder node.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Name of this node; recorded with every segment and part of every file name.
    pub node_name: String,
    /// Root of the media files and the catalog (`catalog.db`).
    pub data_dir: PathBuf,
    pub recording: RecordingConfig,
    pub ingest: IngestConfig,
    pub retention: RetentionConfig,
    pub cameras: Vec<CameraConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordingConfig {
    /// Target segment length; a segment is cut on the first key frame at or after it. Default 60 000.
    pub segment_duration_ms: u64,
    /// Appended data is flushed to disk (fdatasync) at most this long after it was written. Default 1 000.
    pub flush_interval_ms: u64,
    /// A fragment is closed at a key frame or once it holds this much media, whichever comes first: the
    /// bound on frames held in memory, on the mirroring lag and on the loss at a crash. Default 1 000.
    pub fragment_max_ms: u64,
    /// Shadow mode keeps the last this-many ms of a stream (but at least two GOPs). Default 5 000.
    pub shadow_ring_ms: u64,
    /// Cap of a shadow ring, bytes (wins over the two GOPs). Default 16 MiB.
    pub shadow_ring_max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Timeout of each of connect+DESCRIBE, SETUP and PLAY. Default 10 000.
    pub connect_timeout_ms: u64,
    /// No-frame watchdog: a session that delivers no frame for this long is dropped and reconnected. Default 10 000.
    pub frame_timeout_ms: u64,
    /// First reconnect delay; doubled on each failure (plus jitter) up to `backoff_max_ms`. Default 1 000.
    pub backoff_initial_ms: u64,
    /// Cap of the reconnect delay, also used after an authentication failure. Default 30 000.
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Default per-stream maximum age of sealed segments, in days. `None`: no age limit.
    pub max_age_days: Option<u64>,
    /// Default per-stream maximum bytes of sealed segments. `None`: no byte limit.
    pub max_bytes_per_stream: Option<u64>,
    /// Global floor of free bytes on the data directory's file system. Default 1 GiB.
    pub min_free_bytes: u64,
    /// How often the retention pass runs. Default 60 000.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamKind {
    Main,
    Sub,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Main => "main",
            StreamKind::Sub => "sub",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// Unique name: `[a-z0-9][a-z0-9_-]{0,62}` (used in paths).
    pub name: String,
    pub username: Option<String>,
    /// Never logged or printed (its `Debug` is redacted).
    pub password: Option<Secret>,
    pub transport: Transport,
    /// At least one stream; at most one `main` and one `sub`.
    pub streams: Vec<StreamConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub kind: StreamKind,
    /// `rtsp://` URL without credentials (credentials in the URL are refused: they would end up in logs).
    pub url: url::Url,
    /// Default true.
    pub record: bool,
    /// Overrides `retention.max_age_days` for this stream.
    pub max_age_days: Option<u64>,
    /// Overrides `retention.max_bytes_per_stream` for this stream.
    pub max_bytes: Option<u64>,
}

/// A password; `Debug` and `Display` print `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// The password itself, for the RTSP client only. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            segment_duration_ms: 60_000,
            flush_interval_ms: 1_000,
            fragment_max_ms: 1_000,
            shadow_ring_ms: 5_000,
            shadow_ring_max_bytes: 16 << 20,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            connect_timeout_ms: 10_000,
            frame_timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_days: None,
            max_bytes_per_stream: None,
            min_free_bytes: 1 << 30,
            interval_ms: 60_000,
        }
    }
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

mod parse;

pub use parse::{load, parse, parse_byte_size, ConfigError};

impl Config {
    /// A few human-readable lines describing the configuration (no secrets), for `nvr check-config`.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "node {} data_dir {}",
            self.node_name,
            self.data_dir.display()
        );
        let _ = writeln!(
            s,
            "recording: segment {} ms, fragment at most {} ms, flush {} ms",
            self.recording.segment_duration_ms,
            self.recording.fragment_max_ms,
            self.recording.flush_interval_ms
        );
        let _ = writeln!(
            s,
            "retention: max age {}, max bytes/stream {}, min free {} B, every {} ms",
            self.retention
                .max_age_days
                .map_or_else(|| "none".to_owned(), |d| format!("{d} d")),
            self.retention
                .max_bytes_per_stream
                .map_or_else(|| "none".to_owned(), |b| format!("{b} B")),
            self.retention.min_free_bytes,
            self.retention.interval_ms
        );
        let _ = writeln!(s, "{} camera(s)", self.cameras.len());
        for c in &self.cameras {
            let streams: Vec<String> = c
                .streams
                .iter()
                .map(|st| {
                    format!(
                        "{}{}",
                        st.kind.as_str(),
                        if st.record { "" } else { " (not recorded)" }
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "  {} [{}] {}: {}",
                c.name,
                c.transport.as_str(),
                if c.password.is_some() {
                    "with password"
                } else {
                    "no password"
                },
                streams.join(", ")
            );
        }
        s
    }
}

impl Config {
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
                    username: None,
                    password: None,
                    transport: Transport::Tcp,
                    streams: vec![StreamConfig {
                        kind: StreamKind::Main,
                        url: url.clone(),
                        record: true,
                        max_age_days: None,
                        max_bytes: None,
                    }],
                })
                .collect(),
        }
    }
}
