//! The users file (`<state_dir>/users.json`): names, roles and Argon2id password hashes. Changed only by
//! `nvr-web user add|passwd|del`; the server reads it on every request, so a change applies at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use crate::WebError;

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// What a user may do: viewers watch and browse, operators also export, admins also act on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, WebError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(WebError::BadRole(other.to_owned())),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub role: Role,
    /// PHC string of an Argon2id hash.
    pub hash: String,
}

/// The users file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Users {
    pub users: BTreeMap<String, User>,
}

/// `<state_dir>/users.json`.
pub fn users_path(state_dir: &Path) -> PathBuf {
    state_dir.join("users.json")
}

/// The users file of a cluster: `[web] users_file` (the same path on every node, so that every node
/// knows every user), or `<state_dir>/users.json`.
pub fn users_file(settings: &cluster_config::WebSettings) -> PathBuf {
    settings
        .users_file
        .clone()
        .unwrap_or_else(|| users_path(&settings.state_dir))
}

impl Users {
    /// The users of `path`; none when the file does not exist.
    pub fn load(path: &Path) -> Result<Users, WebError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(e) => return Err(WebError::io(path)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| WebError::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), WebError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| WebError::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        base::fs::write_atomic(path, &text, Some(0o600)).map_err(WebError::io(path))
    }

    pub fn add(&mut self, name: &str, role: Role, password: &str) -> Result<(), WebError> {
        base::names::check(name).map_err(|e| WebError::BadUserName {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        if self.users.contains_key(name) {
            return Err(WebError::UserExists(name.to_owned()));
        }
        let hash = hash_password(password)?;
        self.users.insert(name.to_owned(), User { role, hash });
        Ok(())
    }

    /// A new password and, if given, a new role.
    pub fn passwd(
        &mut self,
        name: &str,
        password: &str,
        role: Option<Role>,
    ) -> Result<(), WebError> {
        let hash = hash_password(password)?;
        let user = self
            .users
            .get_mut(name)
            .ok_or_else(|| WebError::NoUser(name.to_owned()))?;
        user.hash = hash;
        if let Some(role) = role {
            user.role = role;
        }
        Ok(())
    }

    pub fn del(&mut self, name: &str) -> Result<(), WebError> {
        self.users
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| WebError::NoUser(name.to_owned()))
    }

    /// The role of `name` if `password` is theirs. An unknown user costs one hash too, so that the
    /// answer's timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        match self.users.get(name) {
            Some(user) => {
                let parsed = PasswordHash::new(&user.hash).ok()?;
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .ok()
                    .map(|()| user.role)
            }
            None => {
                let _ = hash_password(password);
                None
            }
        }
    }
}

/// An Argon2id hash (the `argon2` crate's default parameters) with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, WebError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(WebError::WeakPassword {
            min: MIN_PASSWORD_CHARS,
        });
    }
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| WebError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| WebError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_passwd_del_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = users_path(dir.path());
        let mut users = Users::load(&path).expect("load empty");
        users
            .add("alice", Role::Viewer, "correct horse")
            .expect("add");
        assert!(matches!(
            users.add("alice", Role::Admin, "another password"),
            Err(WebError::UserExists(_))
        ));
        assert!(matches!(
            users.add("Bob", Role::Admin, "another password"),
            Err(WebError::BadUserName { .. })
        ));
        assert!(matches!(
            users.add("bob", Role::Admin, "short"),
            Err(WebError::WeakPassword { .. })
        ));
        users.save(&path).expect("save");
        let users = Users::load(&path).expect("load");
        assert!(users.users["alice"].hash.starts_with("$argon2id$"));
        assert_eq!(users.verify("alice", "correct horse"), Some(Role::Viewer));
        assert_eq!(users.verify("alice", "wrong horse!"), None);
        assert_eq!(users.verify("nobody", "correct horse"), None);
        let mut users = users;
        users
            .passwd("alice", "battery staple", Some(Role::Admin))
            .expect("passwd");
        assert_eq!(users.verify("alice", "correct horse"), None);
        assert_eq!(users.verify("alice", "battery staple"), Some(Role::Admin));
        users.del("alice").expect("del");
        assert!(matches!(users.del("alice"), Err(WebError::NoUser(_))));
    }

    #[test]
    fn a_damaged_users_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = users_path(dir.path());
        std::fs::write(&path, b"{not json").expect("write");
        let err = Users::load(&path).expect_err("damaged");
        assert!(err.to_string().contains("users.json"), "{err}");
    }
}
