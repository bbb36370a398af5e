//! The bottom layer of the NVR workspace: what every other crate shares and nothing here depends on
//! them. The injectable wall [`clock`], the one background-[`job`] shape (run / wait for work / backoff
//! / status), [`process`] helpers (logging, signals), validated [`names`] (nodes, cameras, stream
//! kinds: one rule), [`hex`] encoding, [`fs`] (atomic file replacement) and [`frame`] (the
//! length-prefixed frames of the control and operator sockets and heartbeats).

pub mod clock;
pub mod frame;
pub mod fs;
pub mod hex;
pub mod job;
pub mod names;
pub mod process;
