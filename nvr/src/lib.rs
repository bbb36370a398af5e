//! The `nvr` recorder: pulls H.264/H.265 (+AAC) from RTSP cameras with `retina` and writes them, without
//! transcoding, into crash-safe fragmented MP4 segments through the [`store`] crate. This crate holds the
//! recorder's own parts: [`config`] (the configuration file), [`ingest`] (one RTSP session per stream
//! turned into fragments and segments) and [`recorder`] (the process: recovery, streams, retention,
//! status, systemd), the [`supervisor`] of stream tasks with its [`control`] socket and [`live`]
//! fan-out, [`frame`] identity, [`frames`] (`nvr frames`: camsim frame stamps in recorded segments),
//! [`demo_viewer`] (the web viewer of `nvr demo`, run as the separate `nvr-web` binary) and [`floor`]
//! (`nvr floor`: the benchmark's receive-only floor).

pub mod config;
pub mod control;
pub mod demo_viewer;
pub mod floor;
pub mod frame;
pub mod frames;
pub mod ingest;
pub mod live;
pub mod recorder;
pub mod supervisor;
