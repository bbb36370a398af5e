//! Evidence that recordings were not altered, in a crate below every program that needs it: the
//! signed segment log's formats and proofs ([`merkle`]: leaves, RFC 6962 Merkle tree, inclusion and
//! consistency proofs, signed tree heads), kept by the sync agent, and the signed manifest of an
//! exported recording ([`manifest`]), written by the web viewer and checked offline by
//! `nvr verify-export`. One implementation for the writers and the verifiers; no I/O but reading the
//! exported file.

pub mod manifest;
pub mod merkle;
