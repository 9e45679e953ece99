//! A one-member network, and one of three members, for the crate's unit tests.

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

impl OneMember {
    /// The member's id in its registry.
    pub(crate) fn member_id(&self) -> herald_protocol::MemberId {
        self.registry
            .current()
            .signing_key(&self.signing.id())
            .map(|(m, _)| m.id)
            .unwrap()
    }

    /// The member's next registry version after `on`'s, adding `key` as a
    /// signing key (approved by the member key and `key`: self-managed).
    pub(crate) fn adding_key(&self, on: &Registry, key: &SecretKey) -> SignedRegistryUpdate {
        use herald_protocol::{RegistryOp, RegistryUpdate, RegistryVersion};
        let body = RegistryUpdate {
            format: herald_protocol::registry::REGISTRY_FORMAT,
            version: RegistryVersion(on.version().0 + 1),
            prev: Some(on.hash()),
            created: Timestamp(1_000),
            ops: vec![RegistryOp::AddSigningKey {
                member: self.member_id(),
                key: key.id(),
            }],
        };
        let mut update = herald_keys::propose_update(&body).unwrap();
        for k in [&self.member, key] {
            update.push_approval(herald_keys::approve(k, &update)).unwrap();
        }
        update
    }

    /// The first `n` bulletins of the signing key's chain, linked.
    pub(crate) fn chain(&self, n: u64) -> Vec<herald_protocol::SignedBulletin> {
        self.chain_from(n, 1_700_000_000_000)
    }

    /// [`OneMember::chain`], number `seq` created at `start + seq` (ms).
    pub(crate) fn chain_from(&self, n: u64, start: u64) -> Vec<herald_protocol::SignedBulletin> {
        use herald_protocol::{BulletinBody, Kind, Payload, Seq, Severity, Tlp};
        let mut prev = None;
        (1..=n)
            .map(|seq| {
                let body = BulletinBody {
                    format: herald_protocol::bulletin::BULLETIN_FORMAT,
                    network: self.registry.network(),
                    signer: self.signing.id(),
                    seq: Seq(seq),
                    prev,
                    created: Timestamp(start + seq),
                    kind: Kind::Outreach,
                    tlp: Tlp::Clear,
                    severity: Severity::Informational,
                    title: format!("number {seq}"),
                    references: Vec::new(),
                    supersedes: None,
                    expires: None,
                    audience: Vec::new(),
                    payload: Payload {
                        content_type: "text/plain".into(),
                        bytes: b"hello".to_vec(),
                    },
                };
                let signed = herald_keys::sign_bulletin(&self.signing, &body).unwrap();
                prev = Some(signed.id());
                signed
            })
            .collect()
    }
}

/// Three members founded with threshold 2: a change to one member's own keys
/// needs that member alone; any other, two of them.
pub(crate) struct ThreeMembers {
    /// Each member's member key.
    pub(crate) members: Vec<SecretKey>,
    pub(crate) genesis: SignedRegistryUpdate,
    pub(crate) registry: Registry,
}

pub(crate) fn three_members() -> ThreeMembers {
    let keys: Vec<[SecretKey; 3]> = (0..3u8)
        .map(|i| [10, 11, 12].map(|n| SecretKey::from_seed(&[n + 3 * i; 32])))
        .collect();
    let names = ["member-1", "member-2", "member-3"];
    let founders: Vec<Founder> = keys
        .iter()
        .zip(names)
        .map(|([member, signing, node], name)| Founder {
            name,
            member,
            signing,
            node,
        })
        .collect();
    let genesis = founding_genesis(&founders, 2, Timestamp(1_700_000_000_000)).unwrap();
    let registry = Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap();
    ThreeMembers {
        members: keys.into_iter().map(|[member, ..]| member).collect(),
        genesis,
        registry,
    }
}

impl ThreeMembers {
    fn next(
        &self,
        on: &Registry,
        ops: Vec<herald_protocol::RegistryOp>,
        approvers: &[&SecretKey],
    ) -> SignedRegistryUpdate {
        use herald_protocol::{RegistryUpdate, RegistryVersion};
        let body = RegistryUpdate {
            format: herald_protocol::registry::REGISTRY_FORMAT,
            version: RegistryVersion(on.version().0 + 1),
            prev: Some(on.hash()),
            created: Timestamp(2_000),
            ops,
        };
        let mut update = herald_keys::propose_update(&body).unwrap();
        for k in approvers {
            update.push_approval(herald_keys::approve(k, &update)).unwrap();
        }
        update
    }

    /// Member `i`'s next version after `on`'s, adding `key` as its signing
    /// key, approved by that member alone (and `key`).
    pub(crate) fn own_key(&self, on: &Registry, i: usize, key: &SecretKey) -> SignedRegistryUpdate {
        let member = herald_protocol::MemberId::derive(&self.members[i].id());
        let op = herald_protocol::RegistryOp::AddSigningKey {
            member,
            key: key.id(),
        };
        self.next(on, vec![op], &[&self.members[i], key])
    }

    /// The next version after `on`'s, setting the threshold to 2 again,
    /// approved by members 0 and 1: a change that needs the threshold.
    pub(crate) fn by_threshold(&self, on: &Registry) -> SignedRegistryUpdate {
        let op = herald_protocol::RegistryOp::SetThreshold { threshold: 2 };
        self.next(on, vec![op], &[&self.members[0], &self.members[1]])
    }
}
