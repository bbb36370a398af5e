//! The arbiter (`nvr-arbiter`): one process per node, beside the recorder and the sync agent. It sends
//! heartbeats to the arbiters of its peers every 200 ms over its own pinned mutual-TLS connection (the
//! node identities of `node-identity`, not the media connection), carrying the health of its
//! recorder's streams and its view of who holds each stream under which epoch (fencing token). On a
//! standby it detects a dead primary (heartbeats missing for 1 s) or a failed session on a living one,
//! and promotes the protected streams in its own recorder, each exactly after the last frame mirrored
//! from the primary (read through `store`'s read-only access), with a new epoch. Its crash never stops
//! recording: the recorder keeps its modes.
//!
//! Modules: [`core`] (the pure decision state machine), [`heartbeat`] (message, framing), [`state`]
//! (persisted holders and epochs), [`recorder`] (the local recorder's control socket), [`mirror`]
//! (the last frame held from a primary), [`config`] (this node's view of the cluster file),
//! [`status`] (the status document and `nvr-arbiter status`), [`net`] (the TLS links), [`takeover`]
//! (carrying out a promotion, the gap it left), [`operator`] (the operator socket) and [`run`] (the
//! I/O shell around the core).

pub mod config;
pub mod core;
pub mod heartbeat;
pub mod mirror;
pub mod net;
pub mod operator;
pub mod recorder;
pub mod run;
pub mod state;
pub mod status;
pub mod takeover;
