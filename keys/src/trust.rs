//! Trust decisions: given the registry and a signed bulletin, accept it (naming
//! the member who signed) or reject it with a reason. Checks run cheap to dear:
//! network, signer standing, then the signature.

use herald_protocol::{
    BULLETIN_DOMAIN, BulletinBody, KeyId, MemberId, NetworkId, RevocationPoint, SignedBulletin, Timestamp,
};

use crate::key::PublicKey;
use crate::registry::Registry;

/// Why a bulletin is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The bulletin belongs to another network.
    #[error("bulletin is for network {found}, not this one ({expected})")]
    WrongNetwork {
        /// This node's network.
        expected: NetworkId,
        /// The bulletin's.
        found: NetworkId,
    },
    /// No member holds the signing key (a member key or node key counts as unknown here).
    #[error("signing key {0} is not a signing key of any member")]
    UnknownKey(KeyId),
    /// The key was revoked from a point at or before this bulletin.
    #[error("signing key {key} is revoked from {from:?}; this bulletin falls after that point")]
    Revoked {
        /// The key.
        key: KeyId,
        /// From where.
        from: RevocationPoint,
    },
    /// The member was removed before the bulletin's creation time.
    #[error("member {member} was removed at {at}; this bulletin was created after")]
    MemberRemoved {
        /// The member.
        member: MemberId,
        /// When it was removed.
        at: Timestamp,
    },
    /// The signature does not verify (strict).
    #[error("signature does not verify")]
    BadSignature,
}

/// A signer in good standing for one bulletin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The member whose key signed.
    pub member: MemberId,
    /// The key to verify with.
    pub key: PublicKey,
}

impl Registry {
    /// Whether the body's signer may sign it, without checking the signature.
    pub fn standing(&self, body: &BulletinBody) -> Result<Standing, Rejection> {
        if body.network != self.network() {
            return Err(Rejection::WrongNetwork {
                expected: self.network(),
                found: body.network,
            });
        }
        let (member, state) = self
            .current()
            .signing_key(&body.signer)
            .ok_or(Rejection::UnknownKey(body.signer))?;
        if let Some(from) = state.revoked {
            let after = match from {
                RevocationPoint::Seq(seq) => body.seq >= seq,
                RevocationPoint::Time(t) => body.created >= t,
            };
            if after {
                return Err(Rejection::Revoked {
                    key: body.signer,
                    from,
                });
            }
        }
        if let Some(at) = member.removed_at
            && body.created >= at
        {
            return Err(Rejection::MemberRemoved {
                member: member.id,
                at,
            });
        }
        Ok(Standing {
            member: member.id,
            key: state.key,
        })
    }

    /// Accepts a bulletin whose signer is in standing and whose signature
    /// verifies strictly; returns the signing member.
    pub fn check_bulletin(&self, bulletin: &SignedBulletin) -> Result<MemberId, Rejection> {
        let standing = self.standing(bulletin.body())?;
        standing
            .key
            .verify_with_domain(BULLETIN_DOMAIN, bulletin.body_bytes(), bulletin.signature())
            .map_err(|_| Rejection::BadSignature)?;
        Ok(standing.member)
    }
}
