//! A one-member network for the crate's unit tests.

#![allow(clippy::unwrap_used)]

use herald_keys::{Founder, Registry, SecretKey, founding_genesis};
use herald_protocol::{SignedRegistryUpdate, Timestamp};

/// The member's keys, its genesis and the registry it founds.
pub(crate) struct OneMember {
    pub(crate) member: SecretKey,
    pub(crate) signing: SecretKey,
    pub(crate) genesis: SignedRegistryUpdate,
    pub(crate) registry: Registry,
}

/// "member-1", founded alone (threshold 1), with keys from fixed seeds.
pub(crate) fn one_member() -> OneMember {
    let [member, signing, node] = [1u8, 2, 3].map(|n| SecretKey::from_seed(&[n; 32]));
    let founder = Founder {
        name: "member-1",
        member: &member,
        signing: &signing,
        node: &node,
    };
    let genesis = founding_genesis(&[founder], 1, Timestamp(1_700_000_000_000)).unwrap();
    let registry = Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap();
    OneMember {
        member,
        signing,
        genesis,
        registry,
    }
}
