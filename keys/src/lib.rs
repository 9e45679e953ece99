//! Herald's keys and the member registry: who may say what.
//!
//! - [`key`]: [`PublicKey`] (valid, non-weak, strict `verify`) and [`SecretKey`]
//!   (never printed, zeroized on drop).
//! - [`keyfile`]: versioned key files, written atomically with owner-only
//!   permissions, optionally sealed with a passphrase.
//! - [`registry`]: the [`Registry`] of members, changed only by approved updates.
//! - [`trust`]: the decision to accept or reject a bulletin, with a reason.
//! - [`sign`]: signing bulletins and approving registry updates.
//!
//! ```
//! use herald_keys::{SecretKey, sign};
//! use herald_protocol::*;
//!
//! // Two founders, each with a member key, a signing key and a node key.
//! let keys: Vec<[SecretKey; 3]> = (0..2u8)
//!     .map(|i| [1, 2, 3].map(|r| SecretKey::from_seed(&[i * 3 + r; 32])))
//!     .collect();
//! let mut ops: Vec<RegistryOp> = keys.iter().enumerate().map(|(i, [m, s, n])| {
//!     RegistryOp::AddMember(MemberEntry {
//!         id: MemberId::derive(&m.id()),
//!         name: format!("member-{i}"),
//!         member_key: m.id(),
//!         signing_keys: vec![s.id()],
//!         node_ids: vec![n.public().node_id()],
//!     })
//! }).collect();
//! ops.push(RegistryOp::SetThreshold { threshold: 2 });
//! let body = RegistryUpdate { format: 1, version: RegistryVersion(1), prev: None,
//!                             created: Timestamp(0), ops };
//! let mut genesis = sign::propose_update(&body).unwrap();
//! for k in keys.iter().flatten() {
//!     let approval = sign::approve(k, &genesis);
//!     genesis.push_approval(approval).unwrap();
//! }
//! let hash = genesis.hash();
//! let registry = herald_keys::Registry::from_genesis(genesis, hash).unwrap();
//!
//! // The first member's signing key signs its first bulletin.
//! let signer = &keys[0][1];
//! let bulletin = sign::sign_bulletin(signer, &BulletinBody {
//!     format: 1, network: registry.network(), signer: signer.id(), seq: Seq(1), prev: None,
//!     created: Timestamp(1), kind: Kind::EmergencyAlert, tlp: Tlp::Green,
//!     severity: Severity::High, title: "Grid operator under attack".into(),
//!     references: vec![], supersedes: None, expires: None, audience: vec![],
//!     payload: Payload { content_type: "text/plain".into(), bytes: b"details".to_vec() },
//! }).unwrap();
//! let received = SignedBulletin::from_bytes(bulletin.as_bytes()).unwrap();
//! assert_eq!(registry.check_bulletin(&received), Ok(MemberId::derive(&keys[0][0].id())));
//! ```

pub mod key;
pub mod keyfile;
pub mod registry;
pub mod sign;
pub mod trust;

pub use key::{KeyError, PublicKey, SecretKey};
pub use keyfile::{KdfParams, KeyFileError, KeyRole};
pub use registry::{
    Applied, CheckedBranch, ForkEvidence, MAX_FORK_EVIDENCE, MAX_FORK_EVIDENCE_PER_MEMBER, MAX_FORKS_SEEN,
    Member, Registry, RegistryError, RegistryState, needs_threshold, self_managed_by,
};
pub use sign::{Founder, SignError, approve, founding_genesis, propose_update, sign_bulletin};
pub use trust::{Rejection, Standing};

/// Re-exported wire newtypes that keys and signatures travel as.
pub use herald_protocol::{KeyId, Signature};
