//! Node identity, shared by the sync agent and the arbiter (crate `node-identity`): the keys a node
//! holds on disk and the public pins its peers trust.
//!
//! # Trust model
//!
//! There is no certificate authority. Every node generates, once (`nvr-sync keygen`, see
//! [`generate`]), two independent key pairs in its identity directory:
//!
//! * `signing.key`: an Ed25519 key that signs the log of sealed segments (version snapshots);
//! * `tls.key` + `tls.crt`: an ECDSA P-256 key and a self-signed certificate used only to
//!   authenticate the mutual-TLS connection between nodes.
//!
//! `identity.toml` holds the node name and the two *public pins*: the SHA-256 of the certificate
//! DER (`cert_sha256`) and the raw Ed25519 public key (`signing_public_key`). An operator copies a
//! node's pins to its peers out of band. **The pins are the trust**: a peer is accepted on TLS if
//! and only if the certificate it presents hashes to a pinned value, and a snapshot is accepted
//! if and only if it verifies under a pinned signing key. Names, validity dates and CA chains in
//! certificates are not consulted (the node name is only used for SNI).
//!
//! What a stolen key allows:
//!
//! * a stolen `tls.key` lets the thief impersonate that node on the wire to every peer that pins
//!   its certificate (receive a primary's mirrored recordings, or feed a standby data), until the
//!   peers drop the pin. It does *not* let the thief sign history: a standby still rejects
//!   snapshots not signed by the pinned signing key.
//! * a stolen `signing.key` lets the thief sign snapshots that peers accept as that node's, but
//!   only over a TLS connection they accept, i.e. together with a TLS key they pin.
//!
//! Recovery from either is the same: generate a new identity and re-pin it on every peer. The
//! private key files are created with mode 0600 (the directory 0700 when created here) and
//! [`load`] refuses key files readable by group or others.

mod tls;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::{Deserialize, Serialize};

pub use tls::{client_config, peer_of, server_config, server_name};

/// Ed25519 PKCS#8 (PEM, "PRIVATE KEY") signing key for the sealed-segment log. Mode 0600.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// TLS private key, PKCS#8 PEM. Mode 0600.
pub const TLS_KEY_FILE: &str = "tls.key";
/// Self-signed TLS certificate, PEM. Public.
pub const TLS_CERT_FILE: &str = "tls.crt";
/// Node name and public pins, TOML. Public: hand it to peers.
pub use cluster_config::IDENTITY_FILE;

const PRIVATE_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// A peer's pins in the cluster file (already checked as 64 hex digits by its parser) were refused.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: pins of node {node:?}: {source}")]
pub struct NodePinsError {
    pub origin: String,
    pub node: String,
    #[source]
    pub source: IdentityError,
}

/// Errors creating, loading or using a node identity. Each names the file or field involved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} already exists; refusing to overwrite an existing identity", path = .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{path} is not a directory", path = .path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} has mode {mode:04o}: a private key must not be accessible by group or others \
         (fix with: chmod 600 {path})",
        path = .path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: invalid private key: {reason}", path = .path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: invalid certificate: {reason}", path = .path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: invalid identity file: {reason}", path = .path.display())]
    BadIdentityFile { path: PathBuf, reason: String },
    #[error(
        "{path}: {field} does not match the key files in the same directory",
        path = .path.display()
    )]
    PinMismatch { path: PathBuf, field: &'static str },
    #[error("invalid node name {node:?}: {reason}")]
    InvalidNodeName { node: String, reason: &'static str },
    #[error("invalid {field}: {reason}")]
    BadHex { field: &'static str, reason: String },
    #[error("generating {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What a node trusts about one peer: its name (for SNI and logs) and its two public pins.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "PinsFile", into = "PinsFile")]
pub struct PeerPins {
    pub node: String,
    /// SHA-256 of the peer's TLS certificate (DER).
    pub cert_sha256: [u8; 32],
    /// The peer's raw Ed25519 public key for the sealed-segment log.
    pub signing_public_key: [u8; 32],
}

impl fmt::Debug for PeerPins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cert, key) = self.to_hex_strings();
        f.debug_struct("PeerPins")
            .field("node", &self.node)
            .field("cert_sha256", &cert)
            .field("signing_public_key", &key)
            .finish()
    }
}

impl PeerPins {
    /// `(cert_sha256, signing_public_key)` as lowercase hex.
    pub fn to_hex_strings(&self) -> (String, String) {
        (
            base::hex::encode(&self.cert_sha256),
            base::hex::encode(&self.signing_public_key),
        )
    }

    /// Parses pins from hex (either case). Errors name the bad field (`node`, `cert_sha256` or
    /// `signing_public_key`).
    pub fn from_hex(node: &str, cert_hex: &str, key_hex: &str) -> Result<PeerPins, IdentityError> {
        validate_node_name(node)?;
        Ok(PeerPins {
            node: node.to_owned(),
            cert_sha256: hex_decode_32("cert_sha256", cert_hex)?,
            signing_public_key: hex_decode_32("signing_public_key", key_hex)?,
        })
    }

    /// Parses the pins of node `node` as the cluster file `origin` gives them (see [`from_hex`]).
    ///
    /// [`from_hex`]: PeerPins::from_hex
    pub fn of_node(
        origin: &str,
        node: &str,
        cert_hex: &str,
        key_hex: &str,
    ) -> Result<PeerPins, NodePinsError> {
        PeerPins::from_hex(node, cert_hex, key_hex).map_err(|source| NodePinsError {
            origin: origin.to_owned(),
            node: node.to_owned(),
            source,
        })
    }

    /// Reads a peer's public `identity.toml` (as written by [`generate`]).
    pub fn read_file(path: &Path) -> Result<PeerPins, IdentityError> {
        let text = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let file: PinsFile = toml::from_str(&text).map_err(|e| IdentityError::BadIdentityFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        PeerPins::try_from(file).map_err(|e| IdentityError::BadIdentityFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The `identity.toml` text for these pins.
    pub fn to_toml(&self) -> String {
        let (cert_sha256, signing_public_key) = self.to_hex_strings();
        // Three plain string fields: formatting by hand cannot fail and keeps the comment.
        format!(
            "# nvr-sync node identity (public). Copy to peers so they can pin this node.\n\
             node = {node:?}\n\
             cert_sha256 = \"{cert_sha256}\"\n\
             signing_public_key = \"{signing_public_key}\"\n",
            node = self.node,
        )
    }
}

/// Serialised form of [`PeerPins`] (hex strings), used for `identity.toml` and serde.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    node: String,
    cert_sha256: String,
    signing_public_key: String,
}

impl TryFrom<PinsFile> for PeerPins {
    type Error = IdentityError;
    fn try_from(f: PinsFile) -> Result<Self, Self::Error> {
        PeerPins::from_hex(&f.node, &f.cert_sha256, &f.signing_public_key)
    }
}

impl From<PeerPins> for PinsFile {
    fn from(p: PeerPins) -> Self {
        let (cert_sha256, signing_public_key) = p.to_hex_strings();
        PinsFile {
            node: p.node,
            cert_sha256,
            signing_public_key,
        }
    }
}

/// This node's identity: its name, its signing key and its TLS certificate and key.
pub struct NodeIdentity {
    pub node: String,
    signing: Arc<Ed25519KeyPair>,
    cert: CertificateDer<'static>,
    tls_key: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("pins", &self.pins())
            .finish_non_exhaustive()
    }
}

// Manual: `PrivatePkcs8KeyDer` has `clone_key` rather than `Clone`.
impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            node: self.node.clone(),
            signing: Arc::clone(&self.signing),
            cert: self.cert.clone(),
            tls_key: self.tls_key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// Signs `message` with the node's Ed25519 signing key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.signing.sign(message).as_ref());
        out
    }

    /// The raw Ed25519 public key matching [`NodeIdentity::sign`].
    pub fn signing_public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.signing.public_key().as_ref());
        out
    }

    /// The TLS certificate (DER) this node presents.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The TLS private key (PKCS#8 DER).
    pub fn tls_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.tls_key.clone_key())
    }

    /// SHA-256 of [`NodeIdentity::cert_der`]: the pin peers use to accept this node on TLS.
    pub fn cert_sha256(&self) -> [u8; 32] {
        sha256(&self.cert)
    }

    /// The public pins to hand to peers.
    pub fn pins(&self) -> PeerPins {
        PeerPins {
            node: self.node.clone(),
            cert_sha256: self.cert_sha256(),
            signing_public_key: self.signing_public_key(),
        }
    }
}

/// Verifies an Ed25519 `signature` over `message` under a raw 32-byte `public_key`.
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// Creates a new identity for `node` in `dir` (created with mode 0700 if missing).
///
/// Refuses to overwrite: if any of the identity files exists, nothing is written. If writing
/// fails half way, the files written by this call are removed again.
pub fn generate(dir: &Path, node: &str) -> Result<NodeIdentity, IdentityError> {
    validate_node_name(node)?;
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(IdentityError::NotADirectory {
                path: dir.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| io_err(dir, e))?,
        Err(e) => return Err(io_err(dir, e)),
    }
    for name in [SIGNING_KEY_FILE, TLS_KEY_FILE, TLS_CERT_FILE, IDENTITY_FILE] {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Err(IdentityError::AlreadyExists { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
    }

    // Signing key (ring), stored as PKCS#8 PEM. rcgen only re-encodes it as PEM.
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| {
        IdentityError::Generate {
            what: "Ed25519 signing key",
            reason: e.to_string(),
        }
    })?;
    let signing =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| IdentityError::Generate {
            what: "Ed25519 signing key",
            reason: e.to_string(),
        })?;
    let signing_pem = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| IdentityError::Generate {
        what: "Ed25519 signing key PEM",
        reason: e.to_string(),
    })?
    .serialize_pem();

    // TLS key and self-signed certificate. rcgen's defaults give a validity of 1975..4096;
    // validity is not checked anyway (the pin is the trust).
    let gen_err = |what| {
        move |e: rcgen::Error| IdentityError::Generate {
            what,
            reason: e.to_string(),
        }
    };
    let tls_key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err("TLS key"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![node.to_owned()]).map_err(gen_err("certificate"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    let cert = params
        .self_signed(&tls_key)
        .map_err(gen_err("certificate"))?;

    let identity = NodeIdentity {
        node: node.to_owned(),
        signing: Arc::new(signing),
        cert: cert.der().clone(),
        tls_key: PrivatePkcs8KeyDer::from(tls_key.serialize_der()),
    };

    let files: [(&str, Vec<u8>, u32); 4] = [
        (SIGNING_KEY_FILE, signing_pem.into_bytes(), PRIVATE_MODE),
        (
            TLS_KEY_FILE,
            tls_key.serialize_pem().into_bytes(),
            PRIVATE_MODE,
        ),
        (TLS_CERT_FILE, cert.pem().into_bytes(), PUBLIC_MODE),
        (
            IDENTITY_FILE,
            identity.pins().to_toml().into_bytes(),
            PUBLIC_MODE,
        ),
    ];
    let mut written = Vec::new();
    for (name, contents, mode) in &files {
        let path = dir.join(name);
        if let Err(e) = write_new(&path, contents, *mode) {
            // Don't remove a file another process created in the meantime.
            if !matches!(e, IdentityError::AlreadyExists { .. }) {
                written.push(path);
            }
            for p in &written {
                let _ = fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(path);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    Ok(identity)
}

/// Loads the identity in `dir` written by [`generate`].
///
/// Refuses private key files accessible by group or others, and checks that `identity.toml`'s
/// pins match the key files and that the TLS key matches the certificate.
pub fn load(dir: &Path) -> Result<NodeIdentity, IdentityError> {
    let id_path = dir.join(IDENTITY_FILE);
    let pins = PeerPins::read_file(&id_path)?;

    let signing_path = dir.join(SIGNING_KEY_FILE);
    let signing_pem = read_private(&signing_path)?;
    let bad_signing = |reason: String| IdentityError::BadKey {
        path: signing_path.clone(),
        reason,
    };
    let signing_der =
        PrivatePkcs8KeyDer::from_pem_slice(&signing_pem).map_err(|e| bad_signing(e.to_string()))?;
    let signing = Ed25519KeyPair::from_pkcs8(signing_der.secret_pkcs8_der())
        .map_err(|e| bad_signing(format!("not an Ed25519 PKCS#8 v2 key: {e}")))?;

    let key_path = dir.join(TLS_KEY_FILE);
    let key_pem = read_private(&key_path)?;
    let tls_key =
        PrivatePkcs8KeyDer::from_pem_slice(&key_pem).map_err(|e| IdentityError::BadKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;

    let cert_path = dir.join(TLS_CERT_FILE);
    let cert_pem = fs::read(&cert_path).map_err(|e| io_err(&cert_path, e))?;
    let cert =
        CertificateDer::from_pem_slice(&cert_pem).map_err(|e| IdentityError::BadCertificate {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;

    // The key must be usable with the ring provider and match the certificate.
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(
        vec![cert.clone()],
        PrivateKeyDer::Pkcs8(tls_key.clone_key()),
        &provider,
    )
    .map_err(|e| IdentityError::BadKey {
        path: key_path.clone(),
        reason: format!("unusable or does not match {TLS_CERT_FILE}: {e}"),
    })?;

    let identity = NodeIdentity {
        node: pins.node.clone(),
        signing: Arc::new(signing),
        cert,
        tls_key,
    };
    if identity.cert_sha256() != pins.cert_sha256 {
        return Err(IdentityError::PinMismatch {
            path: id_path,
            field: "cert_sha256",
        });
    }
    if identity.signing_public_key() != pins.signing_public_key {
        return Err(IdentityError::PinMismatch {
            path: id_path,
            field: "signing_public_key",
        });
    }
    Ok(identity)
}

/// Node names go into the certificate's DNS SAN and the TLS SNI: they must be DNS names.
fn validate_node_name(node: &str) -> Result<(), IdentityError> {
    let invalid = |reason| IdentityError::InvalidNodeName {
        node: node.to_owned(),
        reason,
    };
    if let Err(e) = base::names::check(node) {
        return Err(invalid(match e {
            base::names::NameError::Empty => "empty",
            base::names::NameError::TooLong(_) => "longer than 63 bytes",
            base::names::NameError::Invalid(_) => {
                "must match [a-z0-9][a-z0-9_-]{0,62} (the one name rule of the cluster)"
            }
        }));
    }
    match ServerName::try_from(node) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        Ok(_) => Err(invalid("must be a DNS name, not an IP address")),
        Err(_) => Err(invalid("not a valid DNS name")),
    }
}

fn io_err(path: &Path, source: io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// Creates `path` with `mode` (never an existing file) and writes `contents` durably.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    base::fs::write_new(path, contents, mode).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            IdentityError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            io_err(path, e)
        }
    })
}

/// Reads a private key file, refusing it if group or others have any access to it.
fn read_private(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let meta = f.metadata().map_err(|e| io_err(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
    Ok(buf)
}

fn hex_decode_32(field: &'static str, s: &str) -> Result<[u8; 32], IdentityError> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(IdentityError::BadHex {
            field,
            reason: format!(
                "expected 64 hex digits (32 bytes), got {} characters",
                s.len()
            ),
        });
    }
    match s.bytes().find(|c| !c.is_ascii_hexdigit()) {
        Some(c) => Err(IdentityError::BadHex {
            field,
            reason: format!("{:?} is not a hex digit", char::from(c)),
        }),
        None => base::hex::decode_32(s).ok_or(IdentityError::BadHex {
            field,
            reason: "not 32 bytes".to_owned(),
        }),
    }
}
