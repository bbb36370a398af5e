//! Mutual TLS 1.3 between sync nodes, authenticated by certificate pins.
//!
//! # Trust model
//!
//! Both directions use the same rule: the peer's end-entity certificate is accepted if and only
//! if SHA-256 of its DER equals a pinned `cert_sha256` ([`PeerPins`]). Issuer, chain, names and
//! validity dates are ignored; the certificate is only a container for the public key. The
//! handshake signature is still verified (with the ring provider's algorithms), so presenting a
//! pinned certificate requires the matching private key: a copied `tls.crt` is useless, a stolen
//! `tls.key` is not (see the parent module for what it allows and how to recover).
//!
//! Only TLS 1.3 is offered and accepted. Session resumption is disabled on both sides, so every
//! connection re-authenticates against the pins in force when its config was built.
//! Configs are built from an explicit ring [`CryptoProvider`], never a process-wide default.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{sha256, validate_node_name, IdentityError, NodeIdentity, PeerPins};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: TLS 1.3, requires a client certificate whose SHA-256 is one of `allowed`.
///
/// With an empty `allowed` every client is refused.
pub fn server_config(
    id: &NodeIdentity,
    allowed: &[PeerPins],
) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = provider();
    let verifier = PinnedClientVerifier::new(allowed, &provider);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![id.cert_der().clone()], id.tls_key_der())?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client side: TLS 1.3, presents our certificate, accepts only `server`'s pinned certificate.
///
/// Connect with [`server_name`]`(server)` as the SNI name.
pub fn client_config(
    id: &NodeIdentity,
    server: &PeerPins,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let provider = provider();
    let verifier = PinnedServerVerifier::new(server.cert_sha256, &provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![id.cert_der().clone()], id.tls_key_der())?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The SNI name to connect to `peer` with (its node name; not used for trust).
pub fn server_name(peer: &PeerPins) -> Result<ServerName<'static>, IdentityError> {
    validate_node_name(&peer.node)?;
    ServerName::try_from(peer.node.clone()).map_err(|_| IdentityError::InvalidNodeName {
        node: peer.node.clone(),
        reason: "not a valid DNS name",
    })
}

/// After the handshake: the pinned peer whose certificate the other end presented, if any.
///
/// Accepts a `&ServerConnection` or `&ClientConnection` through deref.
pub fn peer_of(conn: &CommonState, allowed: &[PeerPins]) -> Option<PeerPins> {
    let cert = conn.peer_certificates()?.first()?;
    let digest = sha256(cert);
    allowed.iter().find(|p| p.cert_sha256 == digest).cloned()
}

/// The one pin rule of both directions: a certificate is accepted if and only if SHA-256 of its
/// DER is pinned; handshake signatures are verified with the provider's algorithms; TLS 1.2 is
/// refused. [`PinnedClientVerifier`] and [`PinnedServerVerifier`] differ only in the trait they
/// answer for.
#[derive(Debug)]
struct PinCheck {
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinCheck {
    fn new(pins: Vec<[u8; 32]>, provider: &CryptoProvider) -> Self {
        PinCheck {
            pins,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.pins.contains(&sha256(end_entity)) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

/// The handshake-signature methods, the same in [`ClientCertVerifier`] and [`ServerCertVerifier`]:
/// TLS 1.2 refused, TLS 1.3 verified with the pinned check's algorithms.
macro_rules! pinned_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            // Unreachable: both configs offer only TLS 1.3. Refuse rather than trust it.
            Err(rustls::Error::General(
                "TLS 1.2 is not accepted between sync nodes".into(),
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.algorithms.supported_schemes()
        }
    };
}

/// Accepts client certificates by pin only.
#[derive(Debug)]
pub(super) struct PinnedClientVerifier(PinCheck);

impl PinnedClientVerifier {
    pub(super) fn new(allowed: &[PeerPins], provider: &CryptoProvider) -> Self {
        let pins = allowed.iter().map(|p| p.cert_sha256).collect();
        PinnedClientVerifier(PinCheck::new(pins, provider))
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    pinned_signature_checks!();
}

/// Accepts exactly one server certificate, by pin.
#[derive(Debug)]
pub(super) struct PinnedServerVerifier(PinCheck);

impl PinnedServerVerifier {
    pub(super) fn new(pin: [u8; 32], provider: &CryptoProvider) -> Self {
        PinnedServerVerifier(PinCheck::new(vec![pin], provider))
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    pinned_signature_checks!();
}
