//! The node's export key: an Ed25519 key that signs export manifests, held by the viewer in
//! `<state_dir>/export.key` (PKCS#8, mode 0600), made at first start. Its public half is written to
//! `<state_dir>/export.pub` (hex, one line) and printed at every start; `nvr verify-export` needs it
//! beside the node's signing key (docs/web.md, "Exports").

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::WebError;

pub const KEY_FILE: &str = "export.key";
pub const PUBLIC_FILE: &str = "export.pub";

/// See the module documentation.
pub struct ExportKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ExportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportKey({})", self.public_hex())
    }
}

impl ExportKey {
    /// Loads `<state_dir>/export.key`, or makes it (and `export.pub`) if it does not exist.
    pub fn load_or_create(state_dir: &Path) -> Result<ExportKey, WebError> {
        let path = state_dir.join(KEY_FILE);
        let bad = |message: String| WebError::BadFile {
            path: path.clone(),
            message,
        };
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| bad("cannot generate a key".into()))?;
                base::fs::write_new(&path, doc.as_ref(), 0o600).map_err(WebError::io(&path))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(WebError::io(&path)(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| bad(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let key = ExportKey { pair };
        let public = state_dir.join(PUBLIC_FILE);
        base::fs::write_atomic(
            &public,
            format!("{}\n", key.public_hex()).as_bytes(),
            Some(0o644),
        )
        .map_err(WebError::io(&public))?;
        Ok(key)
    }

    pub fn public(&self) -> [u8; 32] {
        let mut p = [0u8; 32];
        p.copy_from_slice(self.pair.public_key().as_ref());
        p
    }

    pub fn public_hex(&self) -> String {
        base::hex::encode(self.pair.public_key().as_ref())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(self.pair.sign(message).as_ref());
        s
    }
}
