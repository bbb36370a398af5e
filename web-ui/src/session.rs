//! Session cookies: `base64url(JSON) "." base64url(HMAC-SHA256)` under a secret that every node of the
//! cluster shares (`[web] session_secret_file`), so a session made on one node is good on all of them.
//! Each session carries its own CSRF token, which every state-changing request must echo in the
//! `X-CSRF-Token` header.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::users::Role;
use crate::WebError;

/// The cookie's name.
pub const COOKIE: &str = "nvr_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Shortest accepted secret.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a session cookie says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_ms: i64,
}

impl Session {
    pub fn new(user: &str, role: Role, expires_ms: i64) -> Session {
        Session {
            user: user.to_owned(),
            role,
            csrf: random_token(),
            expires_ms,
        }
    }
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The signing secret.
#[derive(Clone)]
pub struct SessionKey(Vec<u8>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// A secret of at least [`MIN_SECRET_BYTES`]; otherwise what is wrong.
    pub fn new(secret: Vec<u8>) -> Result<SessionKey, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "session secret of {} bytes: at least {MIN_SECRET_BYTES} needed",
                secret.len()
            ));
        }
        Ok(SessionKey(secret))
    }

    /// The configured shared secret (its bytes as they are, surrounding white space removed), or
    /// `<state_dir>/session.key`, made with 32 random bytes (mode 0600) if it does not exist.
    pub fn load(configured: Option<&Path>, state_dir: &Path) -> Result<SessionKey, WebError> {
        if let Some(path) = configured {
            let bytes = std::fs::read(path).map_err(WebError::io(path))?;
            let trimmed = bytes.trim_ascii().to_vec();
            return SessionKey::new(trimmed).map_err(|message| WebError::BadFile {
                path: path.to_owned(),
                message,
            });
        }
        let path = state_dir.join("session.key");
        match std::fs::read(&path) {
            Ok(bytes) => SessionKey::new(bytes).map_err(|message| WebError::BadFile {
                path: path.clone(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                base::fs::write_new(&path, &bytes, 0o600).map_err(WebError::io(&path))?;
                SessionKey::new(bytes).map_err(|message| WebError::BadFile { path, message })
            }
            Err(e) => Err(WebError::io(path)(e)),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    pub fn sign(&self, session: &Session) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The session of a cookie value whose signature holds and that has not expired at `now_ms`.
    pub fn verify(&self, cookie: &str, now_ms: i64) -> Option<Session> {
        let (body, tag) = cookie.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).ok()?;
        let session: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (session.expires_ms > now_ms).then_some(session)
    }
}

/// Compares two strings in time that depends on their lengths only.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_session_verifies_until_it_expires_and_not_after_any_change() {
        let key = SessionKey::new(vec![7u8; 32]).expect("key");
        let s = Session::new("alice", Role::Operator, 10_000);
        let cookie = key.sign(&s);
        assert_eq!(key.verify(&cookie, 9_999), Some(s.clone()));
        assert_eq!(key.verify(&cookie, 10_000), None, "expired");
        let other = SessionKey::new(vec![8u8; 32]).expect("key");
        assert_eq!(other.verify(&cookie, 0), None, "another cluster's secret");
        // A cookie whose body claims admin keeps the old tag: refused.
        let forged_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Session {
                role: Role::Admin,
                ..s
            })
            .expect("json"),
        );
        let tag = cookie.split_once('.').expect("dot").1;
        assert_eq!(key.verify(&format!("{forged_body}.{tag}"), 0), None);
        assert_eq!(key.verify("garbage", 0), None);
        assert!(SessionKey::new(vec![1u8; 31]).is_err());
    }

    #[test]
    fn the_per_node_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SessionKey::load(None, dir.path()).expect("make");
        let b = SessionKey::load(None, dir.path()).expect("read");
        assert_eq!(a.0, b.0);
        let shared = dir.path().join("shared.key");
        std::fs::write(&shared, b"too short\n").expect("write");
        let err = SessionKey::load(Some(&shared), dir.path()).expect_err("short");
        assert!(err.to_string().contains("shared.key"), "{err}");
    }
}
