//! Tests for node identities and pinned mutual TLS: real TLS over loopback TCP with
//! tokio-rustls, real files with real modes in temporary directories.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tls::{PinnedClientVerifier, PinnedServerVerifier};
use super::*;

const LIMIT: Duration = Duration::from_secs(20);

fn new_identity(node: &str) -> (tempfile::TempDir, NodeIdentity) {
    let tmp = tempfile::tempdir().unwrap();
    let id = generate(&tmp.path().join("id"), node).unwrap();
    (tmp, id)
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// What the server side saw: the peer it identified and the bytes it received.
type ServerOutcome = Result<(Option<PeerPins>, Vec<u8>), String>;
/// What the client side saw: the peer it identified and the echoed bytes.
type ClientOutcome = Result<(Option<PeerPins>, Vec<u8>), String>;

/// One connection over loopback: the server accepts one TLS client, reads "ping", answers with
/// "pong:" + the peer's node name; the client (expecting the server `server_pins`, by name and
/// pins) sends "ping" and reads to EOF.
async fn exchange(
    server: Arc<ServerConfig>,
    server_allowed: Vec<PeerPins>,
    client: Arc<ClientConfig>,
    server_pins: PeerPins,
) -> (ServerOutcome, ClientOutcome) {
    let sni = server_name(&server_pins).unwrap();
    let server_pins_for_client = vec![server_pins];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| format!("server handshake: {e}"))?;
        let peer = peer_of(tls.get_ref().1, &server_allowed);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        let name = peer.as_ref().map_or("?", |p| p.node.as_str());
        tls.write_all(format!("pong:{name}").as_bytes())
            .await
            .map_err(|e| format!("server write: {e}"))?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((peer, buf.to_vec()))
    });
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(sni, tcp)
            .await
            .map_err(|e| format!("client handshake: {e}"))?;
        let peer = peer_of(tls.get_ref().1, &server_pins_for_client);
        tls.write_all(b"ping")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        Ok::<_, String>((peer, out))
    };
    let client_outcome = timeout(LIMIT, client_side).await.unwrap();
    let server_outcome = timeout(LIMIT, server_task).await.unwrap().unwrap();
    (server_outcome, client_outcome)
}

async fn pinned_exchange(
    server: &NodeIdentity,
    client: &NodeIdentity,
    extra_allowed: &[PeerPins],
) -> (ServerOutcome, ClientOutcome) {
    let mut allowed = extra_allowed.to_vec();
    allowed.push(client.pins());
    let sc = server_config(server, &allowed).unwrap();
    let cc = client_config(client, &server.pins()).unwrap();
    exchange(sc, allowed, cc, server.pins()).await
}

/// A client config at `version` that pins `server`'s certificate; how (or whether) the client
/// presents its own certificate is left to the test.
fn pinning_client_builder(
    server: &NodeIdentity,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedServerVerifier::new(server.cert_sha256(), &provider);
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
}

// (a) both directions, peer_of names the right peer, data round-trips.
#[tokio::test]
async fn pinned_handshake_both_ways() {
    let (_ta, a) = new_identity("node-a");
    let (_tb, b) = new_identity("node-b");
    let (_tc, c) = new_identity("node-c");
    for (server, client) in [(&a, &b), (&b, &a)] {
        // An unrelated pin in the allowed list must not be what peer_of returns.
        let (s, c_out) = pinned_exchange(server, client, &[c.pins()]).await;
        let (server_saw, received) = s.unwrap();
        assert_eq!(server_saw, Some(client.pins()));
        assert_eq!(received, b"ping");
        let (client_saw, echoed) = c_out.unwrap();
        assert_eq!(client_saw, Some(server.pins()));
        assert_eq!(echoed, format!("pong:{}", client.node).as_bytes());
    }
}

// (b) a client with an unpinned certificate is refused; the server never yields a stream.
#[tokio::test]
async fn unknown_client_is_refused() {
    let (_ta, server) = new_identity("server");
    let (_tb, known) = new_identity("known");
    let (_tc, stranger) = new_identity("stranger");
    let sc = server_config(&server, &[known.pins()]).unwrap();
    let cc = client_config(&stranger, &server.pins()).unwrap();
    let (s, c) = exchange(sc, vec![known.pins()], cc, server.pins()).await;
    let s = s.unwrap_err();
    assert!(s.starts_with("server handshake:"), "{s}");
    // TLS 1.3: the client may finish its half of the handshake before the server's alert
    // arrives, so the refusal can surface on the first read instead; no data ever arrives.
    let c = c.unwrap_err();
    assert!(
        c.starts_with("client handshake:") || c.starts_with("client read:"),
        "{c}"
    );
    assert!(c.contains("alert"), "{c}");
}

// An empty allow list refuses everyone, even a client that pins the server correctly.
#[tokio::test]
async fn empty_allow_list_refuses_all() {
    let (_ta, server) = new_identity("server");
    let (_tb, client) = new_identity("client");
    let sc = server_config(&server, &[]).unwrap();
    let cc = client_config(&client, &server.pins()).unwrap();
    let (s, c) = exchange(sc, vec![], cc, server.pins()).await;
    assert!(s.is_err());
    assert!(c.is_err());
}

// (c) a client refuses a server whose certificate is not the pinned one, even though the server
// would accept the client and answers to the expected name.
#[tokio::test]
async fn client_refuses_unpinned_server() {
    let (_ta, real) = new_identity("primary");
    let (_tb, impostor) = new_identity("primary"); // same name, different key
    let (_tc, client) = new_identity("standby");
    let sc = server_config(&impostor, &[client.pins()]).unwrap();
    let cc = client_config(&client, &real.pins()).unwrap();
    let (s, c) = exchange(sc, vec![client.pins()], cc, real.pins()).await;
    let c = c.unwrap_err();
    assert!(c.starts_with("client handshake:"), "{c}");
    assert!(
        c.contains("invalid peer certificate") || c.contains("ApplicationVerificationFailure"),
        "{c}"
    );
    let s = s.unwrap_err();
    assert!(s.starts_with("server handshake:"), "{s}");
}

// (d) a client presenting no certificate is refused.
#[tokio::test]
async fn client_without_certificate_is_refused() {
    let (_ta, server) = new_identity("server");
    let (_tb, client) = new_identity("client");
    let sc = server_config(&server, &[client.pins()]).unwrap();
    let cc = pinning_client_builder(&server, &rustls::version::TLS13).with_no_client_auth();
    let (s, c) = exchange(sc, vec![client.pins()], Arc::new(cc), server.pins()).await;
    let s = s.unwrap_err();
    assert!(s.contains("no certificates"), "{s}");
    assert!(c.is_err());
}

// (h) a TLS 1.2-only client is refused.
#[tokio::test]
async fn tls12_client_is_refused() {
    let (_ta, server) = new_identity("server");
    let (_tb, client) = new_identity("client");
    let sc = server_config(&server, &[client.pins()]).unwrap();
    let cc = pinning_client_builder(&server, &rustls::version::TLS12)
        .with_client_auth_cert(vec![client.cert_der().clone()], client.tls_key_der())
        .unwrap();
    let (s, c) = exchange(sc, vec![client.pins()], Arc::new(cc), server.pins()).await;
    let s = s.unwrap_err();
    assert!(s.starts_with("server handshake:"), "{s}");
    let c = c.unwrap_err();
    assert!(c.starts_with("client handshake:"), "{c}");
}

#[test]
fn generate_writes_files_with_modes_and_load_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/id");
    let id = generate(&dir, "nvr_1").unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join(SIGNING_KEY_FILE)), 0o600);
    assert_eq!(mode_of(&dir.join(TLS_KEY_FILE)), 0o600);
    let loaded = load(&dir).unwrap();
    assert_eq!(loaded.node, "nvr_1");
    assert_eq!(loaded.pins(), id.pins());
    assert_eq!(loaded.cert_der(), id.cert_der());
    assert_ne!(id.cert_sha256(), [0; 32]);
    // The public file alone yields the same pins.
    assert_eq!(
        PeerPins::read_file(&dir.join(IDENTITY_FILE)).unwrap(),
        id.pins()
    );
    // A signature made by the loaded key verifies under the generated public key.
    let sig = loaded.sign(b"log");
    assert!(verify_signature(&id.signing_public_key(), b"log", &sig));
}

// (e) a private key readable by group/other is refused, naming the file and its mode.
#[test]
fn load_refuses_world_readable_private_keys() {
    for file in [TLS_KEY_FILE, SIGNING_KEY_FILE] {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), "node").unwrap();
        let path = tmp.path().join(file);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, IdentityError::InsecurePermissions { path: p, mode: 0o644 } if *p == path),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("0644"), "{msg}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        load(tmp.path()).unwrap();
    }
}

// (f) generate refuses to overwrite, and leaves the existing identity untouched.
#[test]
fn generate_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let first = generate(tmp.path(), "node").unwrap();
    let err = generate(tmp.path(), "node").unwrap_err();
    assert!(
        matches!(err, IdentityError::AlreadyExists { .. }),
        "{err:?}"
    );
    assert_eq!(load(tmp.path()).unwrap().pins(), first.pins());

    // Any single existing file is enough to refuse, and nothing else gets written.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join(TLS_CERT_FILE), b"keep me").unwrap();
    let err = generate(other.path(), "node").unwrap_err();
    assert!(
        matches!(&err, IdentityError::AlreadyExists { path } if path.ends_with(TLS_CERT_FILE)),
        "{err:?}"
    );
    assert!(!other.path().join(SIGNING_KEY_FILE).exists());
    assert!(!other.path().join(TLS_KEY_FILE).exists());
    assert_eq!(
        fs::read(other.path().join(TLS_CERT_FILE)).unwrap(),
        b"keep me"
    );
}

// (g) sign/verify round trip; any flipped bit in message, signature or key fails.
#[test]
fn sign_verify_and_bit_flips() {
    let (_t, id) = new_identity("node");
    let msg = b"sealed segment 42".to_vec();
    let sig = id.sign(&msg);
    let pk = id.signing_public_key();
    assert!(verify_signature(&pk, &msg, &sig));
    for bit in 0..msg.len() * 8 {
        let mut m = msg.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        assert!(!verify_signature(&pk, &m, &sig), "message bit {bit}");
    }
    for bit in 0..sig.len() * 8 {
        let mut s = sig;
        s[bit / 8] ^= 1 << (bit % 8);
        assert!(!verify_signature(&pk, &msg, &s), "signature bit {bit}");
    }
    let mut k = pk;
    k[0] ^= 1;
    assert!(!verify_signature(&k, &msg, &sig));
    assert!(!verify_signature(&pk, &msg, &sig[..63]));
    let (_t2, other) = new_identity("other");
    assert!(!verify_signature(&other.signing_public_key(), &msg, &sig));
}

#[test]
fn load_detects_mismatched_pins() {
    let (ta, a) = new_identity("a");
    let (_tb, b) = new_identity("b");
    let dir = ta.path().join("id");
    // identity.toml claiming another node's pins.
    let mut forged = b.pins();
    forged.node = "a".into();
    fs::write(dir.join(IDENTITY_FILE), forged.to_toml()).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::PinMismatch {
                field: "cert_sha256",
                ..
            }
        ),
        "{err:?}"
    );
    let mut half = a.pins();
    half.signing_public_key = b.signing_public_key();
    fs::write(dir.join(IDENTITY_FILE), half.to_toml()).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::PinMismatch {
                field: "signing_public_key",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn load_detects_tls_key_not_matching_certificate() {
    let (ta, _a) = new_identity("a");
    let (tb, _b) = new_identity("b");
    let a_dir = ta.path().join("id");
    fs::remove_file(a_dir.join(TLS_KEY_FILE)).unwrap();
    fs::copy(
        tb.path().join("id").join(TLS_KEY_FILE),
        a_dir.join(TLS_KEY_FILE),
    )
    .unwrap();
    let err = load(&a_dir).unwrap_err();
    assert!(
        matches!(&err, IdentityError::BadKey { path, .. } if path.ends_with(TLS_KEY_FILE)),
        "{err:?}"
    );
}

#[test]
fn bad_node_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [
        "",
        "has space",
        "127.0.0.1",
        "x/y",
        "ünï",
        "nvr-1.example",
        "Upper",
        "-a",
    ] {
        let err = generate(tmp.path(), bad).unwrap_err();
        assert!(
            matches!(err, IdentityError::InvalidNodeName { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn from_hex_names_the_bad_field() {
    let good = "ab".repeat(32);
    let p = PeerPins::from_hex("n", &good, &good.to_uppercase()).unwrap();
    assert_eq!(p.cert_sha256, [0xab; 32]);
    let err = PeerPins::from_hex("n", "abc", &good).unwrap_err();
    assert!(err.to_string().contains("cert_sha256"), "{err}");
    let err = PeerPins::from_hex("n", &good, &"zz".repeat(32)).unwrap_err();
    assert!(err.to_string().contains("signing_public_key"), "{err}");
    let err = PeerPins::from_hex("bad name", &good, &good).unwrap_err();
    assert!(err.to_string().contains("node name"), "{err}");
}

proptest! {
    #[test]
    fn pins_hex_and_toml_round_trip(cert in any::<[u8; 32]>(), key in any::<[u8; 32]>()) {
        let pins = PeerPins { node: "peer-1".into(), cert_sha256: cert, signing_public_key: key };
        let (c, k) = pins.to_hex_strings();
        prop_assert_eq!(&PeerPins::from_hex("peer-1", &c, &k).unwrap(), &pins);
        let parsed: PeerPins = toml::from_str(&pins.to_toml()).unwrap();
        prop_assert_eq!(parsed, pins);
    }
}

/// Presents one node's certificate with another node's private key (a copied `tls.crt`).
#[derive(Debug)]
struct CopiedCert(Arc<rustls::sign::CertifiedKey>);

impl CopiedCert {
    fn new(victim: &NodeIdentity, thief: &NodeIdentity) -> Arc<Self> {
        let provider = rustls::crypto::ring::default_provider();
        let key = provider
            .key_provider
            .load_private_key(thief.tls_key_der())
            .unwrap();
        Arc::new(CopiedCert(Arc::new(rustls::sign::CertifiedKey::new(
            vec![victim.cert_der().clone()],
            key,
        ))))
    }
}

impl rustls::client::ResolvesClientCert for CopiedCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for CopiedCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

// A pinned certificate is worthless without its private key: the handshake signature is checked,
// in both directions.
#[tokio::test]
async fn pinned_certificate_without_its_key_is_refused() {
    let (_ta, server) = new_identity("server");
    let (_tb, victim) = new_identity("victim");
    let (_tc, thief) = new_identity("thief");
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    // Thief as client, claiming to be the pinned "victim" client.
    let sc = server_config(&server, &[victim.pins()]).unwrap();
    let cc = pinning_client_builder(&server, &rustls::version::TLS13)
        .with_client_cert_resolver(CopiedCert::new(&victim, &thief));
    let (s, c) = exchange(sc, vec![victim.pins()], Arc::new(cc), server.pins()).await;
    let s = s.unwrap_err();
    assert!(s.starts_with("server handshake:"), "{s}");
    assert!(c.is_err());

    // Thief as server, claiming to be the pinned "victim" server.
    let mut forged = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(PinnedClientVerifier::new(
            &[server.pins()],
            &provider,
        )))
        .with_cert_resolver(CopiedCert::new(&victim, &thief));
    forged.send_tls13_tickets = 0;
    let cc = client_config(&server, &victim.pins()).unwrap();
    let (s, c) = exchange(Arc::new(forged), vec![server.pins()], cc, victim.pins()).await;
    let c = c.unwrap_err();
    assert!(c.starts_with("client handshake:"), "{c}");
    assert!(s.is_err());
}
