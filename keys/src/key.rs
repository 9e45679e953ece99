//! Key newtypes: a validated Ed25519 [`PublicKey`] whose `verify` has strict
//! semantics, and a [`SecretKey`] that never prints and is zeroized on drop.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use herald_protocol::{KeyId, NodeId, Signature};
use zeroize::Zeroizing;

/// Why a public key or signature was refused. Deliberately coarse for
/// signatures: the reason a signature fails is not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The 32 bytes are not the encoding of a curve point.
    #[error("not a valid Ed25519 public key encoding")]
    InvalidPublicKey,
    /// The key is a small-order point: anyone can forge signatures that it
    /// "verifies", so Herald never admits one.
    #[error("weak Ed25519 public key (small-order point); generate a new key")]
    WeakKey,
    /// The signature does not verify under strict rules.
    #[error("signature does not verify")]
    BadSignature,
}

/// An Ed25519 public key that is a valid, non-weak curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses and checks a public key: the canonical encoding of a curve point
    /// (RFC 8032: y < p), not of small order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        // Decompression accepts some y >= p; only the canonical encoding of a
        // point may name a key, so each key has exactly one id.
        if key.to_edwards().compress().to_bytes() != *bytes {
            return Err(KeyError::InvalidPublicKey);
        }
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(key))
    }

    /// The key behind a key id.
    pub fn from_id(id: &KeyId) -> Result<Self, KeyError> {
        Self::from_bytes(id.as_bytes())
    }

    /// The key behind a node id.
    pub fn from_node_id(id: &NodeId) -> Result<Self, KeyError> {
        Self::from_bytes(id.as_bytes())
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// This key's id (its 32-byte encoding).
    pub fn id(&self) -> KeyId {
        KeyId::from_bytes(self.0.to_bytes())
    }

    /// This key as a node id.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_bytes(self.0.to_bytes())
    }

    /// Verifies `sig` over `msg` with strict semantics: rejects small-order R or
    /// A, non-canonical R and S >= L (`verify_strict`).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    /// Verifies a signature over `domain || body` without the caller building
    /// the concatenation.
    pub fn verify_with_domain(&self, domain: &[u8], body: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.verify(&herald_protocol::signing_input(domain, body), sig)
    }

    /// The first 5 bytes in hex, for logs.
    pub fn fmt_short(&self) -> String {
        self.id().fmt_short()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fmt_short())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id(), f)
    }
}

/// An Ed25519 secret key. Never printed; its bytes are zeroized on drop.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        Ok(Self::from_seed(&seed))
    }

    /// The key with this 32-byte seed (the RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed. Handle with care: it is the whole secret.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The matching key id.
    pub fn id(&self) -> KeyId {
        self.public().id()
    }

    /// Signs `msg` as it is (no domain prefix added).
    pub fn sign_raw(&self, msg: &[u8]) -> Signature {
        Signature::from_bytes(&self.0.sign(msg).to_bytes())
    }

    /// Signs `domain || body`.
    pub fn sign_with_domain(&self, domain: &[u8], body: &[u8]) -> Signature {
        self.sign_raw(&herald_protocol::signing_input(domain, body))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().fmt_short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let seed = [7u8; 32];
        let key = SecretKey::from_seed(&seed);
        let printed = format!("{key:?}");
        assert!(!printed.contains(&hex::encode(seed)));
        assert!(!printed.contains(&hex::encode(&seed[..5])));
        assert!(printed.starts_with("SecretKey(public "));
    }

    #[test]
    fn sign_and_verify_with_domain() {
        let key = SecretKey::from_seed(&[1u8; 32]);
        let sig = key.sign_with_domain(b"d\0", b"body");
        assert_eq!(key.public().verify_with_domain(b"d\0", b"body", &sig), Ok(()));
        assert_eq!(
            key.public().verify_with_domain(b"e\0", b"body", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        // y = p + 2 (non-canonical for y = 2, which is not on the curve) and
        // y = p + 3 encode points only if decompression reduces mod p.
        let p_plus = |k: u8| {
            let mut b = [0xffu8; 32];
            b[0] = 0xed + k;
            b[31] = 0x7f;
            b
        };
        for k in 0..=18u8 {
            let bytes = p_plus(k);
            if ed25519_dalek::VerifyingKey::from_bytes(&bytes).is_ok() {
                assert!(PublicKey::from_bytes(&bytes).is_err(), "y = p + {k} accepted");
            }
        }
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::WeakKey));
    }
}
