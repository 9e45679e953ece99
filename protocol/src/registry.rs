//! Registry updates as they travel: the genesis document and every later
//! membership change, each a body signed by the approving keys.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::ids::{KeyId, MemberId, NodeId, RegistryHash, RegistryVersion, Seq, Timestamp};
use crate::signing::Signature;

/// The registry update format this crate writes and reads.
pub const REGISTRY_FORMAT: u16 = 1;

/// Largest registry update body, in bytes. A genesis for a few hundred members
/// with several keys and nodes each fits easily.
pub const MAX_REGISTRY_BODY_BYTES: usize = 1024 * 1024;

/// Most operations in one update.
pub const MAX_OPS: usize = 1024;
/// Most approvals (signatures) on one update.
pub const MAX_APPROVALS: usize = 1024;
/// Bytes of one encoded approval: a 32-byte key and a 64-byte signature.
pub const APPROVAL_BYTES: usize = 32 + 64;

/// Largest signed registry update, in bytes: the largest body, its length
/// prefix, the approvals' length prefix and the most approvals.
pub const MAX_REGISTRY_UPDATE_BYTES: usize = MAX_REGISTRY_BODY_BYTES + 8 + 8 + MAX_APPROVALS * APPROVAL_BYTES;

/// Allocation bincode may claim while decoding: it claims a list's in-memory
/// size before decoding it, and an operation takes more room in memory (about
/// 140 bytes) than the smallest does on the wire; 1024 of them fit in the slack.
const MAX_REGISTRY_CLAIM: usize = MAX_REGISTRY_UPDATE_BYTES + 256 * 1024;
/// Most signing keys or node ids listed for one member in one operation.
pub const MAX_KEYS_PER_MEMBER: usize = 64;
/// Most keys (member keys, signing keys and node ids together) admitted to
/// one member over its life, rotated, revoked and removed ones included: a
/// bound on what a member, which manages its own keys alone, can make every
/// node's registry hold.
pub const MAX_KEYS_EVER_PER_MEMBER: usize = 4096;
/// Longest member name, in bytes.
pub const MAX_MEMBER_NAME_BYTES: usize = 128;

/// Whether `name` may name a member: 1 to [`MAX_MEMBER_NAME_BYTES`] bytes,
/// with no control or bidirectional-control characters. Says why not.
pub fn check_member_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > MAX_MEMBER_NAME_BYTES
        || name
            .chars()
            .any(|c| c.is_control() || crate::bulletin::is_bidi_control(c));
    match bad {
        true => Err(format!(
            "member name must be 1 to {MAX_MEMBER_NAME_BYTES} bytes without control characters"
        )),
        false => Ok(()),
    }
}

/// A member as admitted to the registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Stable id; must equal [`MemberId::derive`] of `member_key`.
    pub id: MemberId,
    /// Human-readable name, e.g. `CERT-EU`.
    pub name: String,
    /// The member's governance key: approves registry changes, manages the
    /// member's own signing keys and nodes.
    pub member_key: KeyId,
    /// Keys that sign the member's bulletins.
    pub signing_keys: Vec<KeyId>,
    /// The member's nodes (libp2p Ed25519 public keys).
    pub node_ids: Vec<NodeId>,
}

/// From which point a revocation takes effect. What the key signed before the
/// point stays valid; what it signs from the point on is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
pub enum RevocationPoint {
    /// Bulletins with this sequence number or later are rejected. Exact: a
    /// thief cannot sign around it.
    Seq(Seq),
    /// Bulletins created at or after this time are rejected. Relies on the
    /// creation time the key itself signed: prefer [`RevocationPoint::Seq`] when
    /// the key may be in other hands.
    Time(Timestamp),
}

/// One change to the registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum RegistryOp {
    /// Admits a member (threshold; every key in the entry must approve).
    AddMember(MemberEntry),
    /// Removes a member (threshold). Its bulletins created before `at` stay valid.
    RemoveMember {
        /// The member removed.
        member: MemberId,
        /// From when its bulletins are rejected.
        at: Timestamp,
    },
    /// Sets how many distinct members must approve a change (threshold).
    SetThreshold {
        /// The new threshold; more than half the members, at most all.
        threshold: u32,
    },
    /// Adds a bulletin signing key (the member itself; the key must approve).
    AddSigningKey {
        /// Whose key.
        member: MemberId,
        /// The key.
        key: KeyId,
    },
    /// Revokes a signing key from a point (the member itself, or threshold).
    RevokeSigningKey {
        /// Whose key.
        member: MemberId,
        /// The key.
        key: KeyId,
        /// From where the revocation takes effect.
        from: RevocationPoint,
    },
    /// Adds a node id (the member itself; the node key must approve).
    AddNode {
        /// Whose node.
        member: MemberId,
        /// The node's id.
        node: NodeId,
    },
    /// Removes a node id (the member itself, or threshold).
    RemoveNode {
        /// Whose node.
        member: MemberId,
        /// The node's id.
        node: NodeId,
    },
    /// Replaces the member key (the member itself with its current key; the new
    /// key must approve).
    RotateMemberKey {
        /// Whose key.
        member: MemberId,
        /// The new member key.
        new_key: KeyId,
    },
}

/// The body of a registry update: version `n` names the hash of version `n-1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct RegistryUpdate {
    /// Body format; [`REGISTRY_FORMAT`].
    pub format: u16,
    /// 1 for genesis, then one more for each update.
    pub version: RegistryVersion,
    /// Hash of the previous version's body; `None` exactly for genesis.
    pub prev: Option<RegistryHash>,
    /// When it was proposed.
    pub created: Timestamp,
    /// The changes, applied in order.
    pub ops: Vec<RegistryOp>,
}

impl RegistryUpdate {
    /// The canonical bytes of this update body.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        self.validate()?;
        let bytes = codec::encode(self);
        if bytes.len() > MAX_REGISTRY_BODY_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_REGISTRY_BODY_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Decodes and checks update body bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::check_size_and_format(bytes, MAX_REGISTRY_BODY_BYTES, REGISTRY_FORMAT, "registry")?;
        let update: Self =
            codec::decode_canonical::<Self, MAX_REGISTRY_BODY_BYTES, MAX_REGISTRY_CLAIM>(bytes)?;
        update.validate()?;
        Ok(update)
    }

    /// Checks the rules of the format (not whether the change is authorised:
    /// that needs the registry it applies to).
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |m: String| Err(DecodeError::Invalid(m));
        if self.format != REGISTRY_FORMAT {
            return invalid(format!(
                "registry format {} is not supported (this node reads format {REGISTRY_FORMAT}); upgrade Herald",
                self.format
            ));
        }
        if self.version.0 == 0 {
            return invalid("registry version 0; versions start at 1".into());
        }
        if self.prev.is_none() != (self.version == RegistryVersion::GENESIS) {
            return invalid("only the genesis update (version 1) has no previous hash".into());
        }
        if self.ops.is_empty() || self.ops.len() > MAX_OPS {
            return invalid(format!(
                "{} operations; an update has 1 to {MAX_OPS}",
                self.ops.len()
            ));
        }
        for op in &self.ops {
            if let RegistryOp::AddMember(m) = op {
                if let Err(e) = check_member_name(&m.name) {
                    return invalid(e);
                }
                if m.signing_keys.len() > MAX_KEYS_PER_MEMBER || m.node_ids.len() > MAX_KEYS_PER_MEMBER {
                    return invalid(format!(
                        "a member lists at most {MAX_KEYS_PER_MEMBER} signing keys and nodes"
                    ));
                }
                if m.id != MemberId::derive(&m.member_key) {
                    return invalid(format!(
                        "member id of {:?} is not derived from its member key",
                        m.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One approval of an update: a key and its signature over the update body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct Approval {
    /// The approving key.
    pub key: KeyId,
    /// Its signature over `REGISTRY_DOMAIN || body`.
    pub signature: Signature,
}

#[derive(Encode, Decode)]
struct Envelope {
    body: Vec<u8>,
    approvals: Vec<Approval>,
}

/// A registry update as it travels and is stored: the exact body bytes, the
/// approvals, the decoded body and its hash. Signatures are not verified here.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRegistryUpdate {
    body_bytes: Vec<u8>,
    body: RegistryUpdate,
    approvals: Vec<Approval>,
    hash: RegistryHash,
}

impl SignedRegistryUpdate {
    /// Decodes a signed update from its wire bytes (size, canonical form, rules).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope =
            codec::decode_prefix::<Envelope, MAX_REGISTRY_UPDATE_BYTES, MAX_REGISTRY_CLAIM>(bytes)?;
        Self::from_parts(envelope.body, envelope.approvals)
    }

    /// Assembles an update from body bytes and approvals.
    pub fn from_parts(body_bytes: Vec<u8>, approvals: Vec<Approval>) -> Result<Self, DecodeError> {
        check_approval_count(approvals.len())?;
        let body = RegistryUpdate::from_bytes(&body_bytes)?;
        let hash = RegistryHash::of_body(&body_bytes);
        Ok(Self {
            body_bytes,
            body,
            approvals,
            hash,
        })
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(&EnvelopeRef {
            body: &self.body_bytes,
            approvals: &self.approvals,
        })
    }

    /// The exact body bytes the approvals cover.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// The decoded body.
    pub fn body(&self) -> &RegistryUpdate {
        &self.body
    }

    /// The approvals, in the order received.
    pub fn approvals(&self) -> &[Approval] {
        &self.approvals
    }

    /// Adds an approval (a key's signature over the body), unless the update
    /// already carries the most approvals the format allows.
    pub fn push_approval(&mut self, approval: Approval) -> Result<(), DecodeError> {
        check_approval_count(self.approvals.len() + 1)?;
        self.approvals.push(approval);
        Ok(())
    }

    /// The hash of the body; for genesis, the network's id.
    pub fn hash(&self) -> RegistryHash {
        self.hash
    }
}

fn check_approval_count(count: usize) -> Result<(), DecodeError> {
    if count > MAX_APPROVALS {
        return Err(DecodeError::Invalid(format!(
            "{count} approvals; at most {MAX_APPROVALS}"
        )));
    }
    Ok(())
}

#[derive(Encode)]
struct EnvelopeRef<'a> {
    body: &'a [u8],
    approvals: &'a [Approval],
}

impl fmt::Debug for SignedRegistryUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRegistryUpdate")
            .field("version", &self.body.version)
            .field("hash", &self.hash)
            .field("approvals", &self.approvals.len())
            .finish_non_exhaustive()
    }
}
