//! Lower-case hex for hashes and signatures in JSON (serde `with` modules).

pub(crate) use base::hex::{decode, encode};

/// `#[serde(with = "hex::hash")]` for `[u8; 32]`.
pub(crate) mod hash {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(h))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = super::decode(&s).ok_or_else(|| D::Error::custom("invalid hex"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| D::Error::custom("expected 32 bytes (64 hex digits)"))
    }
}

/// `#[serde(with = "hex::bytes")]` for `Vec<u8>`.
pub(crate) mod bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(b))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::decode(&s).ok_or_else(|| D::Error::custom("invalid hex"))
    }
}
