//! What gets signed: a domain prefix followed by the exact body bytes, and the
//! 64-byte signature as it travels. The cryptography itself lives in `herald-keys`.

use std::fmt;

use bincode::{Decode, Encode};

/// Domain prefix of a bulletin signature.
pub const BULLETIN_DOMAIN: &[u8] = b"herald/v1/bulletin\0";

/// Domain prefix of an approval (signature) on a registry update.
pub const REGISTRY_DOMAIN: &[u8] = b"herald/v1/registry\0";

/// The exact bytes an Ed25519 signature covers: `domain || body`.
pub fn signing_input(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain.len() + body.len());
    input.extend_from_slice(domain);
    input.extend_from_slice(body);
    input
}

/// An Ed25519 signature as 64 bytes (R || S). Whether it verifies is for
/// `herald-keys` to say.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps 64 raw bytes.
    pub const fn from_bytes(bytes: &[u8; 64]) -> Self {
        Self(*bytes)
    }

    /// The 64 raw bytes.
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// The raw bytes by reference.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = if d.is_human_readable() {
            let s = <String as serde::Deserialize>::deserialize(d)?;
            hex::decode(s).map_err(serde::de::Error::custom)?
        } else {
            <Vec<u8> as serde::Deserialize>::deserialize(d)?
        };
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a signature must be 64 bytes"))?;
        Ok(Self(bytes))
    }
}
