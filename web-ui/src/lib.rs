//! `nvr-web`: the web viewer of a node. It serves a JSON API and an embedded page (no build step) over
//! HTTPS (rustls with ring; a configured certificate or a self-signed one made at first start), with
//! users whose passwords are Argon2id hashes, signed session cookies that every node sharing the
//! cluster's secret accepts, CSRF tokens on every state change, login rate limiting and an audit log.
//! It reads the catalog only through `store::Reader` and live video only through the recorder's control
//! socket (`docs/control.md`): it never writes recordings, and its crash never touches recording.

pub mod alarm_history;
pub mod alarm_watch;
pub mod alarms;
pub mod api;
pub mod arbiter;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod cluster_api;
pub mod control;
pub mod error;
pub mod export;
pub mod peers;
pub mod playback;
pub mod ratelimit;
pub mod recordings;
pub mod server;
pub mod session;
pub mod timeline_alarms;
pub mod tls;
pub mod users;

pub use error::WebError;
