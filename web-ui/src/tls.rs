//! The server's certificate: the configured PEM files, or a self-signed one made at first start and
//! kept in the state directory (`tls.crt`, `tls.key` 0600). Its SHA-256 fingerprint is printed at
//! start so that users can check what their browser shows.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::WebError;

/// A certificate chain and its key, ready for rustls.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Whether it was made here (self-signed) rather than configured.
    pub self_signed: bool,
}

impl ServerCert {
    /// SHA-256 of the leaf certificate, upper-case hex pairs joined by ':' (as browsers show it).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.chain.first().map_or(&[][..], |c| c.as_ref()));
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The rustls configuration (ring provider; TLS 1.2 and 1.3).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, WebError> {
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), self.key.clone_key())
        .map_err(|e| WebError::Tls(e.to_string()))
    }
}

/// The configured certificate and key files.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerCert, WebError> {
    let bad = |path: &Path, message: String| WebError::BadFile {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(cert_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert_file, "no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| bad(key_file, e.to_string()))?;
    Ok(ServerCert {
        chain,
        key,
        self_signed: false,
    })
}

/// `<state_dir>/tls.crt` and `tls.key`, made (self-signed, for `names`) if they do not exist.
pub fn self_signed(state_dir: &Path, names: Vec<String>) -> Result<ServerCert, WebError> {
    let cert_path = state_dir.join("tls.crt");
    let key_path = state_dir.join("tls.key");
    if !cert_path.exists() || !key_path.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| WebError::Tls(format!("key generation: {e}")))?;
        let params = rcgen::CertificateParams::new(names)
            .map_err(|e| WebError::Tls(format!("certificate names: {e}")))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| WebError::Tls(format!("self-signing: {e}")))?;
        base::fs::write_atomic(&key_path, key.serialize_pem().as_bytes(), Some(0o600))
            .map_err(WebError::io(&key_path))?;
        base::fs::write_atomic(&cert_path, cert.pem().as_bytes(), Some(0o644))
            .map_err(WebError::io(&cert_path))?;
    }
    let mut cert = load(&cert_path, &key_path)?;
    cert.self_signed = true;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_certificate_is_made_once_and_its_fingerprint_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = self_signed(dir.path(), vec!["localhost".into()]).expect("make");
        let b = self_signed(dir.path(), vec!["localhost".into()]).expect("read");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32 * 3 - 1);
        a.server_config().expect("rustls accepts it");
        std::fs::write(dir.path().join("bad.pem"), b"nothing").expect("write");
        let err = load(&dir.path().join("bad.pem"), &dir.path().join("tls.key"))
            .err()
            .expect("no certificate");
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
