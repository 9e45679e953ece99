//! Herald's wire protocol: the bytes members sign, exchange and keep.
//!
//! This crate does no I/O. It defines
//! - [`ids`]: identifier newtypes ([`BulletinId`], [`KeyId`], [`MemberId`],
//!   [`NodeId`], [`Seq`], [`Timestamp`], ...);
//! - [`bulletin`]: the [`BulletinBody`] a member writes, the [`SignedBulletin`] that
//!   travels, and the rules every body obeys;
//! - [`registry`]: the signed [`RegistryUpdate`]s that make up the member registry;
//! - [`signing`]: what exactly a signature covers (domain prefix + body bytes);
//! - the canonical encoding (bincode 2.0.1, fixed-width little-endian integers,
//!   explicit limits, no trailing bytes, re-encoding check), reported through
//!   [`DecodeError`].
//!
//! The byte-level format is specified in `docs/PROTOCOL.md`, with golden vectors.
//!
//! ```
//! use herald_protocol::{SignedBulletin, DecodeError};
//! // A length prefix claiming 2^40 bytes is refused before any allocation.
//! let hostile = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
//! assert!(matches!(SignedBulletin::from_bytes(&hostile), Err(DecodeError::LengthOverLimit { .. })));
//! ```

pub mod bulletin;
mod codec;
pub mod ids;
pub mod registry;
pub mod signing;
pub mod sync;

pub use bulletin::{
    AdvisoryStatus, BulletinBody, FollowUpAction, IncidentPhase, Kind, MAX_BULLETIN_BYTES, MetricCount,
    Payload, Reference, Severity, SignedBulletin, Tlp, UpdateStage, check_title, is_cve_id,
};
pub use codec::DecodeError;
pub use ids::{
    BulletinId, KeyId, MemberId, NetworkId, NodeId, RegistryHash, RegistryVersion, Seq, Timestamp,
};
pub use registry::{
    Approval, MAX_REGISTRY_UPDATE_BYTES, MemberEntry, RegistryOp, RegistryUpdate, RevocationPoint,
    SignedRegistryUpdate, check_member_name,
};
pub use signing::{BULLETIN_DOMAIN, REGISTRY_DOMAIN, Signature, signing_input};
