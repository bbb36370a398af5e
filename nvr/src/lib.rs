//! The `nvr` recorder: pulls H.264/H.265 (+AAC) from RTSP cameras with `retina` and writes them, without
//! transcoding, into crash-safe fragmented MP4 segments indexed by a SQLite catalog. This crate owns storage
//! (catalog + media files); other crates (sync agent, web viewer) go through [`storage`].

pub mod camsim;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod job;
pub mod mp4;
pub mod process;
pub mod recorder;
pub mod storage;
