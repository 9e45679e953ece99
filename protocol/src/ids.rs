//! Identifier newtypes: content ids, key ids, member and node ids, sequence
//! numbers and timestamps. No bare `[u8; 32]` or `u64` crosses a module boundary.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

/// Error parsing an identifier from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {expected} hexadecimal characters, got {got:?}")]
pub struct ParseIdError {
    what: &'static str,
    expected: usize,
    got: String,
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The 32 raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 5 bytes in hex, for logs.
            pub fn fmt_short(&self) -> String {
                hex::encode(&self.0[..5])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.fmt_short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                match hex::decode_to_slice(s, &mut out) {
                    Ok(()) => Ok(Self(out)),
                    Err(_) => Err(ParseIdError {
                        what: $what,
                        expected: 64,
                        got: s.chars().take(80).collect(),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_string())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <String as serde::Deserialize>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let v = <Vec<u8> as serde::Deserialize>::deserialize(d)?;
                    let bytes: [u8; 32] = v
                        .try_into()
                        .map_err(|_| serde::de::Error::custom(concat!($what, " must be 32 bytes")))?;
                    Ok(Self(bytes))
                }
            }
        }
    };
}

hash_id!(
    /// A bulletin's content id: SHA-256 of its body bytes. It does not depend on
    /// the signature, which is not unique per message.
    BulletinId,
    "a bulletin id"
);
hash_id!(
    /// A signing or member key's id: the 32-byte Ed25519 public key itself, so a
    /// bulletin names the exact key that verifies it.
    KeyId,
    "a key id"
);
hash_id!(
    /// A member's stable id, derived once from the member key it was admitted with
    /// (see [`MemberId::derive`]); it survives member key rotation.
    MemberId,
    "a member id"
);
hash_id!(
    /// A node's id: the 32-byte Ed25519 public key of its libp2p identity.
    NodeId,
    "a node id"
);
hash_id!(
    /// The hash of one registry update body: SHA-256 of its bytes.
    RegistryHash,
    "a registry hash"
);
hash_id!(
    /// A network's id: the hash of its genesis registry update. Every bulletin
    /// names its network, so it cannot be replayed into another one.
    NetworkId,
    "a network id"
);

/// Domain prefix for deriving member ids.
const MEMBER_ID_DOMAIN: &[u8] = b"herald/v1/member-id\0";

impl BulletinId {
    /// The id of a bulletin body: SHA-256 of its exact bytes.
    pub fn of_body(body_bytes: &[u8]) -> Self {
        Self(Sha256::digest(body_bytes).into())
    }
}

impl RegistryHash {
    /// The hash of a registry update body: SHA-256 of its exact bytes.
    pub fn of_body(body_bytes: &[u8]) -> Self {
        Self(Sha256::digest(body_bytes).into())
    }
}

impl NetworkId {
    /// The network whose genesis registry update has this hash.
    pub const fn from_genesis(genesis: RegistryHash) -> Self {
        Self(genesis.0)
    }
}

impl MemberId {
    /// The id of a member admitted with `member_key`:
    /// SHA-256(`"herald/v1/member-id\0"` || key bytes).
    pub fn derive(member_key: &KeyId) -> Self {
        let mut h = Sha256::new();
        h.update(MEMBER_ID_DOMAIN);
        h.update(member_key.as_bytes());
        Self(h.finalize().into())
    }
}

/// A position in one signing key's chain: 1 for its first bulletin, then 2, 3...
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The first number of every chain.
    pub const FIRST: Seq = Seq(1);

    /// The number after this one, or `None` at the end of the range.
    pub fn next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registry version: 1 for genesis, then each accepted update adds one.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct RegistryVersion(pub u64);

impl RegistryVersion {
    /// The genesis version.
    pub const GENESIS: RegistryVersion = RegistryVersion(1);

    /// The version after this one, or `None` at the end of the range.
    pub fn next(self) -> Option<RegistryVersion> {
        self.0.checked_add(1).map(RegistryVersion)
    }
}

impl fmt::Display for RegistryVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A moment in time: milliseconds since 1970-01-01T00:00:00Z (UTC, no leap seconds).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T05:09:56.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 % 1000;
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (the well-known days-to-civil algorithm for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_658_996_123).to_string(),
            "2026-11-26T02:09:56.123Z"
        );
        assert_eq!(Timestamp(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = BulletinId::of_body(b"abc");
        assert_eq!(
            id.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id.to_string().parse::<BulletinId>(), Ok(id));
        assert!("zz".parse::<BulletinId>().is_err());
        assert!(id.to_string()[..62].parse::<BulletinId>().is_err());
    }
}
