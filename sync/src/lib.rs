//! The sync agent: mirrors a primary's segments, fragment by fragment while they are written, to a
//! standby over mutual TLS, and keeps a signed, hash-chained Merkle log of sealed segments ("version
//! snapshots") so the standby accepts nothing that contradicts history it already holds.
//!
//! Modules: [`identity`] (keys, pinned mutual TLS: the `node-identity` crate, re-exported),
//! [`proto`] (wire format), [`merkle`] (the log), [`config`], [`syncdb`] (the agent's own database:
//! logs, heads, alarms), [`agent`] (primary, standby, restore) and [`fixture`] (synthetic logged
//! histories for tests and the benchmark).

pub mod agent;
pub mod config;
pub mod fixture;
pub use node_identity as identity;
pub use nvr_evidence::merkle;
pub mod proto;
pub mod syncdb;
