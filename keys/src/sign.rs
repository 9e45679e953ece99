//! Producing signed objects: bulletins signed by a signing key, and approvals
//! of registry updates.

use herald_protocol::{
    Approval, BULLETIN_DOMAIN, BulletinBody, DecodeError, REGISTRY_DOMAIN, RegistryUpdate, SignedBulletin,
    SignedRegistryUpdate,
};

use crate::key::SecretKey;

/// Why a bulletin could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The body names another key as its signer.
    #[error("the body names signer {named}, but the key given is {given}")]
    SignerMismatch {
        /// The key the body names.
        named: herald_protocol::KeyId,
        /// The key given.
        given: herald_protocol::KeyId,
    },
    /// The body breaks a rule of the format.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

/// Encodes `body` and signs it with `key`, which the body must name as signer.
pub fn sign_bulletin(key: &SecretKey, body: &BulletinBody) -> Result<SignedBulletin, SignError> {
    if body.signer != key.id() {
        return Err(SignError::SignerMismatch {
            named: body.signer,
            given: key.id(),
        });
    }
    let bytes = body.to_bytes()?;
    let signature = key.sign_with_domain(BULLETIN_DOMAIN, &bytes);
    Ok(SignedBulletin::from_parts(bytes, signature)?)
}

/// A registry update with no approvals yet, ready to be passed around for them.
pub fn propose_update(update: &RegistryUpdate) -> Result<SignedRegistryUpdate, DecodeError> {
    SignedRegistryUpdate::from_parts(update.to_bytes()?, Vec::new())
}

/// `key`'s approval of a registry update.
pub fn approve(key: &SecretKey, update: &SignedRegistryUpdate) -> Approval {
    Approval {
        key: key.id(),
        signature: key.sign_with_domain(REGISTRY_DOMAIN, update.body_bytes()),
    }
}

/// A founding member's keys, as a genesis admits them.
#[derive(Debug, Clone, Copy)]
pub struct Founder<'a> {
    /// The member's name.
    pub name: &'a str,
    /// Its member (governance) key.
    pub member: &'a SecretKey,
    /// Its bulletin signing key.
    pub signing: &'a SecretKey,
    /// Its node key.
    pub node: &'a SecretKey,
}

impl<'a> Founder<'a> {
    /// A founder named `name` with its member, signing and node keys, in that order.
    pub fn from_keys(name: &'a str, [member, signing, node]: &'a [SecretKey; 3]) -> Self {
        Self {
            name,
            member,
            signing,
            node,
        }
    }
}

/// A genesis registry update admitting `founders` with `threshold`, approved
/// by every key it admits: for local networks, tests and benchmarks, where one
/// party holds all the keys. (Real founders each approve with their own keys:
/// see `herald genesis`.)
pub fn founding_genesis(
    founders: &[Founder<'_>],
    threshold: u32,
    created: herald_protocol::Timestamp,
) -> Result<SignedRegistryUpdate, DecodeError> {
    let mut ops: Vec<herald_protocol::RegistryOp> = founders
        .iter()
        .map(|f| {
            herald_protocol::RegistryOp::AddMember(herald_protocol::MemberEntry {
                id: herald_protocol::MemberId::derive(&f.member.id()),
                name: f.name.to_string(),
                member_key: f.member.id(),
                signing_keys: vec![f.signing.id()],
                node_ids: vec![f.node.public().node_id()],
            })
        })
        .collect();
    ops.push(herald_protocol::RegistryOp::SetThreshold { threshold });
    let body = RegistryUpdate {
        format: herald_protocol::registry::REGISTRY_FORMAT,
        version: herald_protocol::RegistryVersion::GENESIS,
        prev: None,
        created,
        ops,
    };
    let mut genesis = propose_update(&body)?;
    for f in founders {
        for key in [f.member, f.signing, f.node] {
            let approval = approve(key, &genesis);
            genesis.push_approval(approval)?;
        }
    }
    Ok(genesis)
}
