//! Fixtures shared by the node's integration tests: a founded network of
//! named members, and the outreach bulletin bodies the tests sign.
#![allow(dead_code, clippy::unwrap_used)]

use herald_keys::{Founder, Registry, SecretKey, founding_genesis};
use herald_protocol::{
    BulletinBody, BulletinId, Kind, MemberId, NetworkId, Payload, Seq, Severity, Timestamp, Tlp,
};

/// A network founded by its members, each with a member, a signing and a node key.
pub(crate) struct Net {
    pub(crate) registry: Registry,
    /// Each member's signing key, id and name.
    pub(crate) signers: Vec<(SecretKey, MemberId, String)>,
}

/// A network of members named `names`, founded with a majority threshold;
/// `seed` sets the keys apart from other tests' networks.
pub(crate) fn founded(names: &[&str], seed: u8) -> Net {
    let keys: Vec<[SecretKey; 3]> = (0..names.len() as u8)
        .map(|i| {
            [0u8, 1, 2]
                .map(|r| SecretKey::from_seed(&[seed.wrapping_add(i.wrapping_mul(3)).wrapping_add(r); 32]))
        })
        .collect();
    let founders: Vec<Founder<'_>> = keys
        .iter()
        .zip(names)
        .map(|(keys, name)| Founder::from_keys(name, keys))
        .collect();
    let threshold = names.len() as u32 / 2 + 1;
    let genesis = founding_genesis(&founders, threshold, Timestamp(1)).unwrap();
    let hash = genesis.hash();
    let registry = Registry::from_genesis(genesis, hash).unwrap();
    let signers = keys
        .into_iter()
        .zip(names)
        .map(|([m, s, _], name)| (s, MemberId::derive(&m.id()), name.to_string()))
        .collect();
    Net { registry, signers }
}

/// An outreach bulletin body: number `seq` of `signer`'s chain after `prev`,
/// created at 1,000 + `seq` ms, with `text` as its title and its content.
pub(crate) fn outreach(
    network: NetworkId,
    signer: &SecretKey,
    seq: u64,
    prev: Option<BulletinId>,
    text: &str,
) -> BulletinBody {
    BulletinBody {
        format: 1,
        network,
        signer: signer.id(),
        seq: Seq(seq),
        prev,
        created: Timestamp(1_000 + seq),
        kind: Kind::Outreach,
        tlp: Tlp::Clear,
        severity: Severity::Low,
        title: text.into(),
        references: vec![],
        supersedes: None,
        expires: None,
        audience: vec![],
        payload: Payload {
            content_type: "text/plain".into(),
            bytes: text.as_bytes().to_vec(),
        },
    }
}
