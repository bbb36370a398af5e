//! Validated names: nodes, cameras and stream kinds share ONE rule, [`NAME_RULE`], because each of them
//! becomes a path component (`media/<camera>/<stream>/…_<node>.mp4`), a catalog key, a TLS server name
//! (nodes) and a word in peer messages. Every place that accepts a name (configuration, key generation,
//! peer messages, mirrored paths) checks it here.

use std::fmt;

/// The rule, as shown in error messages.
pub const NAME_RULE: &str = "[a-z0-9][a-z0-9_-]{0,62}";
/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name {0:?} is longer than {MAX_NAME_BYTES} bytes")]
    TooLong(String),
    #[error("invalid name {0:?}: must match {NAME_RULE} (lower-case letters, digits, '_' and '-', not starting with '_' or '-', at most 63 characters)")]
    Invalid(String),
}

/// Checks `s` against [`NAME_RULE`].
pub fn check(s: &str) -> Result<(), NameError> {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return Err(NameError::Empty);
    };
    if b.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(s.to_owned()));
    }
    let ok = (first.is_ascii_lowercase() || first.is_ascii_digit())
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid(s.to_owned()))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` against [`NAME_RULE`].
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check(&s)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A node of the cluster (also its TLS server name and the suffix of the files it records).
    NodeName
);
name_type!(
    /// A camera.
    CameraName
);
name_type!(
    /// A stream of a camera (`main`, `sub`, …).
    StreamName
);

/// One stream of one camera, written `camera/stream`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    pub camera: CameraName,
    pub stream: StreamName,
}

impl StreamKey {
    pub fn new(camera: &str, stream: &str) -> Result<Self, NameError> {
        Ok(StreamKey {
            camera: CameraName::new(camera)?,
            stream: StreamName::new(stream)?,
        })
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.camera, self.stream)
    }
}

/// Parses `camera/stream`.
impl std::str::FromStr for StreamKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (camera, stream) = s
            .split_once('/')
            .ok_or_else(|| NameError::Invalid(s.to_owned()))?;
        StreamKey::new(camera, stream)
    }
}

impl serde::Serialize for StreamKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_name() {
        for good in ["a", "0", "nvr-a", "nvr_a", "cam01", &"a".repeat(63)] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        assert_eq!(check(""), Err(NameError::Empty));
        assert!(matches!(check(&"a".repeat(64)), Err(NameError::TooLong(_))));
        for bad in ["-a", "_a", "A", "a.b", "a/b", "a b", "..", "é", "a\0"] {
            assert!(matches!(check(bad), Err(NameError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn stream_keys_parse_and_print() {
        let k: StreamKey = "front-door/main".parse().expect("key");
        assert_eq!(k.camera.as_str(), "front-door");
        assert_eq!(k.to_string(), "front-door/main");
        assert!("front-door".parse::<StreamKey>().is_err());
        assert!("Front/main".parse::<StreamKey>().is_err());
    }
}
