//! Registry scenarios (genesis, threshold approvals, rollback, forks, key rotation and revocation) and trust decisions.
//!
//! In the style of TUF's key-rotation tests: every scenario builds a small network
//! from deterministic keys, applies signed updates and asserts the exact outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_keys::{
    Applied, KeyError, MAX_FORK_EVIDENCE, MAX_FORK_EVIDENCE_PER_MEMBER, Registry, RegistryError, Rejection,
    SecretKey, approve, needs_threshold, propose_update, sign_bulletin,
};
use herald_protocol::{
    Approval, BulletinBody, BulletinId, KeyId, Kind, MemberEntry, MemberId, NetworkId, NodeId, Payload,
    RegistryHash, RegistryOp, RegistryUpdate, RegistryVersion, RevocationPoint, Seq, Severity, Signature,
    SignedBulletin, SignedRegistryUpdate, Timestamp, Tlp,
};

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// What a fixture key is for; with an index it picks one deterministic seed.
#[derive(Clone, Copy)]
enum Role {
    Member = 1,
    Signing = 2,
    Node = 3,
    /// Keys added later (new signing keys, rotated member keys, new nodes).
    Fresh = 4,
    /// Keys no member holds.
    Outsider = 5,
}

fn key(role: Role, index: u8) -> SecretKey {
    let mut seed = [0x5a; 32];
    seed[0] = role as u8;
    seed[1] = index;
    SecretKey::from_seed(&seed)
}

/// A founding (or later admitted) member: a member key, a signing key and a node key.
struct Founder {
    member: SecretKey,
    signing: SecretKey,
    node: SecretKey,
}

impl Founder {
    fn new(index: u8) -> Self {
        Self {
            member: key(Role::Member, index),
            signing: key(Role::Signing, index),
            node: key(Role::Node, index),
        }
    }

    fn id(&self) -> MemberId {
        MemberId::derive(&self.member.id())
    }

    fn entry(&self) -> MemberEntry {
        MemberEntry {
            id: self.id(),
            name: format!("member-{}", self.member.public().fmt_short()),
            member_key: self.member.id(),
            signing_keys: vec![self.signing.id()],
            node_ids: vec![self.node.public().node_id()],
        }
    }

    /// Every key the entry admits (they all approve an update that admits it).
    fn keys(&self) -> [&SecretKey; 3] {
        [&self.member, &self.signing, &self.node]
    }
}

/// `body` with an approval from each of `approvers`, in order.
fn signed(body: &RegistryUpdate, approvers: &[&SecretKey]) -> SignedRegistryUpdate {
    let mut update = propose_update(body).unwrap();
    for key in approvers {
        let approval = approve(key, &update);
        update.push_approval(approval).unwrap();
    }
    update
}

fn genesis_body(founders: &[Founder], threshold: u32) -> RegistryUpdate {
    let mut ops: Vec<RegistryOp> = founders
        .iter()
        .map(|f| RegistryOp::AddMember(f.entry()))
        .collect();
    ops.push(RegistryOp::SetThreshold { threshold });
    RegistryUpdate {
        format: 1,
        version: RegistryVersion::GENESIS,
        prev: None,
        created: Timestamp(0),
        ops,
    }
}

/// A genesis approved by every key it admits.
fn genesis(founders: &[Founder], threshold: u32) -> SignedRegistryUpdate {
    let keys: Vec<&SecretKey> = founders.iter().flat_map(Founder::keys).collect();
    signed(&genesis_body(founders, threshold), &keys)
}

/// A network of founders 0..n with a threshold, started from its genesis.
struct Net {
    founders: Vec<Founder>,
    genesis: SignedRegistryUpdate,
    registry: Registry,
}

fn net(n: u8, threshold: u32) -> Net {
    let founders: Vec<Founder> = (0..n).map(Founder::new).collect();
    let genesis = genesis(&founders, threshold);
    let registry = Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap();
    Net {
        founders,
        genesis,
        registry,
    }
}

/// Five founders, threshold 3: the network most scenarios start from.
fn five() -> Net {
    net(5, 3)
}

impl Net {
    fn f(&self, i: usize) -> &Founder {
        &self.founders[i]
    }

    /// The body of the next version, building on the current one.
    fn next(&self, ops: Vec<RegistryOp>) -> RegistryUpdate {
        let version = self.registry.version().next().unwrap();
        RegistryUpdate {
            format: 1,
            version,
            prev: Some(self.registry.hash()),
            created: Timestamp(version.0 * 1000),
            ops,
        }
    }

    /// Member keys of the founders at `indices`.
    fn members(&self, indices: &[usize]) -> Vec<&SecretKey> {
        indices.iter().map(|&i| &self.founders[i].member).collect()
    }

    /// The next version with `ops`, approved by the member keys of `indices`, then by `extra`.
    fn update(&self, ops: Vec<RegistryOp>, indices: &[usize], extra: &[&SecretKey]) -> SignedRegistryUpdate {
        let mut approvers = self.members(indices);
        approvers.extend_from_slice(extra);
        signed(&self.next(ops), &approvers)
    }

    /// Applies an update that must be accepted.
    fn advance(&mut self, update: SignedRegistryUpdate) {
        let version = update.body().version;
        assert_eq!(self.registry.apply(update), Ok(Applied::Advanced(version)));
        assert_eq!(self.registry.version(), version);
    }

    /// Applies an update that must be refused with `expected`, and checks nothing changed.
    fn refuse(&mut self, update: SignedRegistryUpdate, expected: RegistryError) {
        let (version, hash, state) = (
            self.registry.version(),
            self.registry.hash(),
            self.registry.current().clone(),
        );
        assert_eq!(self.registry.apply(update), Err(expected));
        assert_eq!(self.registry.version(), version);
        assert_eq!(self.registry.hash(), hash);
        assert_eq!(self.registry.current(), &state);
    }

    fn bulletin(&self, signer: &SecretKey, seq: u64, created: u64) -> SignedBulletin {
        bulletin_on(self.registry.network(), signer, seq, created)
    }

    fn check(&self, bulletin: &SignedBulletin) -> Result<MemberId, Rejection> {
        // Always through the wire form, as a node receives it.
        let received = SignedBulletin::from_bytes(bulletin.as_bytes()).unwrap();
        self.registry.check_bulletin(&received)
    }
}

fn bulletin_body(network: NetworkId, signer: &SecretKey, seq: u64, created: u64) -> BulletinBody {
    BulletinBody {
        format: 1,
        network,
        signer: signer.id(),
        seq: Seq(seq),
        // Any id will do for a trust decision; only its presence is a format rule.
        prev: (seq > 1).then(|| BulletinId::of_body(format!("bulletin {}", seq - 1).as_bytes())),
        created: Timestamp(created),
        kind: Kind::EmergencyAlert,
        tlp: Tlp::Green,
        severity: Severity::High,
        title: format!("bulletin {seq}"),
        references: vec![],
        supersedes: None,
        expires: None,
        audience: vec![],
        payload: Payload {
            content_type: "text/plain".into(),
            bytes: b"details".to_vec(),
        },
    }
}

fn bulletin_on(network: NetworkId, signer: &SecretKey, seq: u64, created: u64) -> SignedBulletin {
    sign_bulletin(signer, &bulletin_body(network, signer, seq, created)).unwrap()
}

/// The identity point: a valid encoding of a point of order 1 (a weak key).
fn identity_point() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
}

fn weak_key() -> RegistryError {
    RegistryError::BadKey {
        key: KeyId::from_bytes(identity_point()),
        reason: KeyError::WeakKey,
    }
}

fn not_met(approvals: usize, threshold: u32) -> RegistryError {
    RegistryError::ThresholdNotMet { approvals, threshold }
}

fn set_threshold(threshold: u32) -> Vec<RegistryOp> {
    vec![RegistryOp::SetThreshold { threshold }]
}

fn add_signing_key(member: MemberId, key: &SecretKey) -> RegistryOp {
    RegistryOp::AddSigningKey {
        member,
        key: key.id(),
    }
}

// ---------------------------------------------------------------------------
// Genesis
// ---------------------------------------------------------------------------

#[test]
fn genesis_with_the_configured_hash_is_accepted() {
    let n = five();
    let registry = &n.registry;
    assert_eq!(registry.version(), RegistryVersion::GENESIS);
    assert_eq!(registry.hash(), n.genesis.hash());
    assert_eq!(registry.network(), NetworkId::from_genesis(n.genesis.hash()));
    assert_eq!(registry.history(), std::slice::from_ref(&n.genesis));
    assert!(registry.forks().is_empty());
    let state = registry.current();
    assert_eq!(state.threshold(), 3);
    assert_eq!(state.current_members().count(), 5);
    assert_eq!(state.allowed_nodes().count(), 5);
    for f in &n.founders {
        let member = state.member(&f.id()).unwrap();
        assert_eq!(member.member_key, f.member.public());
        assert!(member.is_current());
        let (holder, key) = state.signing_key(&f.signing.id()).unwrap();
        assert_eq!(holder.id, f.id());
        assert_eq!(key.revoked, None);
        for k in f.keys() {
            assert!(state.is_known_key(&k.public().to_bytes()));
        }
        assert_eq!(n.check(&n.bulletin(&f.signing, 1, 1)), Ok(f.id()));
    }
    // The genesis also survives the trip through its wire bytes.
    let wire = SignedRegistryUpdate::from_bytes(&n.genesis.to_bytes()).unwrap();
    assert!(Registry::from_genesis(wire, n.genesis.hash()).is_ok());
}

#[test]
fn genesis_hash_mismatch_is_refused() {
    let n = five();
    let other = RegistryHash::of_body(b"some other genesis");
    assert_eq!(
        Registry::from_genesis(n.genesis.clone(), other).unwrap_err(),
        RegistryError::GenesisMismatch {
            expected: other,
            found: n.genesis.hash(),
        }
    );
}

#[test]
fn genesis_missing_one_founders_approval_is_refused() {
    let founders: Vec<Founder> = (0..5).map(Founder::new).collect();
    let body = genesis_body(&founders, 3);
    for (i, f) in founders.iter().enumerate() {
        for (role, missing) in f.keys().into_iter().enumerate() {
            let approvers: Vec<&SecretKey> = founders
                .iter()
                .flat_map(Founder::keys)
                .filter(|k| k.id() != missing.id())
                .collect();
            let update = signed(&body, &approvers);
            assert_eq!(
                Registry::from_genesis(update.clone(), update.hash()).unwrap_err(),
                RegistryError::MissingProofOfPossession(missing.id()),
                "founder {i}, key {role}"
            );
        }
    }
}

#[test]
fn genesis_with_a_weak_key_is_refused() {
    let founders: Vec<Founder> = (0..3).map(Founder::new).collect();
    let approvers: Vec<&SecretKey> = founders.iter().flat_map(Founder::keys).collect();
    let weak = identity_point();
    let mut entries = Vec::new();
    // The weak key as a signing key, as a node, and as the member key itself.
    let mut e = founders[2].entry();
    e.signing_keys.push(KeyId::from_bytes(weak));
    entries.push(e);
    let mut e = founders[2].entry();
    e.node_ids.push(NodeId::from_bytes(weak));
    entries.push(e);
    let mut e = founders[2].entry();
    e.member_key = KeyId::from_bytes(weak);
    e.id = MemberId::derive(&e.member_key);
    entries.push(e);
    for entry in entries {
        let mut body = genesis_body(&founders, 2);
        body.ops[2] = RegistryOp::AddMember(entry);
        let update = signed(&body, &approvers);
        assert_eq!(
            Registry::from_genesis(update.clone(), update.hash()).unwrap_err(),
            weak_key()
        );
    }
}

#[test]
fn genesis_with_a_key_that_is_not_a_point_is_refused() {
    let founders: Vec<Founder> = (0..3).map(Founder::new).collect();
    let approvers: Vec<&SecretKey> = founders.iter().flat_map(Founder::keys).collect();
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    let mut body = genesis_body(&founders, 2);
    let mut entry = founders[0].entry();
    entry.signing_keys = vec![KeyId::from_bytes(off_curve)];
    body.ops[0] = RegistryOp::AddMember(entry);
    let update = signed(&body, &approvers);
    assert_eq!(
        Registry::from_genesis(update.clone(), update.hash()).unwrap_err(),
        RegistryError::BadKey {
            key: KeyId::from_bytes(off_curve),
            reason: KeyError::InvalidPublicKey,
        }
    );
}

#[test]
fn genesis_may_only_admit_members_and_set_the_threshold() {
    let founders: Vec<Founder> = (0..3).map(Founder::new).collect();
    let approvers: Vec<&SecretKey> = founders.iter().flat_map(Founder::keys).collect();
    let mut body = genesis_body(&founders, 2);
    body.ops.push(RegistryOp::RemoveMember {
        member: founders[2].id(),
        at: Timestamp(5),
    });
    let update = signed(&body, &approvers);
    assert!(matches!(
        Registry::from_genesis(update.clone(), update.hash()),
        Err(RegistryError::NotGenesis(_))
    ));
    // A later version is not a genesis either.
    let n = five();
    let v2 = n.update(set_threshold(4), &[0, 1, 2], &[]);
    assert!(matches!(
        Registry::from_genesis(v2.clone(), v2.hash()),
        Err(RegistryError::NotGenesis(_))
    ));
}

#[test]
fn genesis_threshold_must_be_above_half() {
    let founders: Vec<Founder> = (0..4).map(Founder::new).collect();
    for (threshold, ok) in [
        (0, false),
        (1, false),
        (2, false),
        (3, true),
        (4, true),
        (5, false),
    ] {
        let update = genesis(&founders, threshold);
        let result = Registry::from_genesis(update.clone(), update.hash());
        if ok {
            assert!(result.is_ok(), "threshold {threshold}");
        } else {
            assert_eq!(
                result.unwrap_err(),
                RegistryError::ThresholdOutOfRange {
                    threshold,
                    members: 4
                },
                "threshold {threshold}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Counting approvals
// ---------------------------------------------------------------------------

#[test]
fn threshold_met_advances() {
    let mut n = five();
    let update = n.update(set_threshold(4), &[0, 2, 4], &[]);
    let hash = update.hash();
    n.advance(update);
    assert_eq!(n.registry.version(), RegistryVersion(2));
    assert_eq!(n.registry.hash(), hash);
    assert_eq!(n.registry.current().threshold(), 4);
    assert_eq!(n.registry.at_version(RegistryVersion(1)).unwrap().threshold(), 3);
    assert_eq!(n.registry.history().len(), 2);
}

#[test]
fn threshold_not_met_is_refused() {
    let mut n = five();
    let update = n.update(set_threshold(4), &[1, 3], &[]);
    n.refuse(update, not_met(2, 3));
}

#[test]
fn threshold_decision_for_every_subset_of_members() {
    let n = five();
    for mask in 0u32..32 {
        let indices: Vec<usize> = (0..5).filter(|i| mask & (1 << i) != 0).collect();
        let mut registry = n.registry.clone();
        let result = registry.apply(n.update(set_threshold(4), &indices, &[]));
        if indices.len() >= 3 {
            assert_eq!(result, Ok(Applied::Advanced(RegistryVersion(2))), "{indices:?}");
        } else {
            assert_eq!(result, Err(not_met(indices.len(), 3)), "{indices:?}");
        }
    }
}

#[test]
fn a_member_approving_twice_counts_once() {
    let mut n = five();
    let f0 = n.f(0);
    // Member 0 approves three times with its member key, and with its signing and node keys.
    let update = n.update(set_threshold(4), &[0, 0, 1, 0], &[&f0.signing, &f0.node]);
    n.refuse(update, not_met(2, 3));
    // Duplicates do no harm once the threshold is met.
    let update = n.update(set_threshold(4), &[0, 0, 1, 2, 2], &[]);
    n.advance(update);
}

#[test]
fn approvals_by_non_members_are_ignored() {
    let mut n = five();
    let outsiders: Vec<SecretKey> = (0..5).map(|i| key(Role::Outsider, i)).collect();
    let outsider_refs: Vec<&SecretKey> = outsiders.iter().collect();
    let update = n.update(set_threshold(4), &[0, 1], &outsider_refs);
    n.refuse(update, not_met(2, 3));
    let update = n.update(set_threshold(4), &[], &outsider_refs);
    n.refuse(update, not_met(0, 3));
}

#[test]
fn approvals_by_signing_keys_do_not_count() {
    let mut n = five();
    let f = &n.founders;
    let update = n.update(
        set_threshold(4),
        &[0, 1],
        &[&f[2].signing, &f[3].signing, &f[4].signing],
    );
    n.refuse(update, not_met(2, 3));
    let all_signing: Vec<&SecretKey> = n.founders.iter().map(|f| &f.signing).collect();
    let update = n.update(set_threshold(4), &[], &all_signing);
    n.refuse(update, not_met(0, 3));
    // Node keys do not vote either.
    let all_nodes: Vec<&SecretKey> = n.founders.iter().map(|f| &f.node).collect();
    let update = n.update(set_threshold(4), &[], &all_nodes);
    n.refuse(update, not_met(0, 3));
}

#[test]
fn approvals_with_bad_signatures_are_ignored() {
    let mut n = five();
    let body = n.next(set_threshold(4));
    let mut update = signed(&body, &n.members(&[0, 1]));

    // Member 2's approval with one bit flipped.
    let mut flipped = approve(&n.f(2).member, &update);
    let mut bytes = flipped.signature.to_bytes();
    bytes[10] ^= 0x04;
    flipped.signature = Signature::from_bytes(&bytes);
    update.push_approval(flipped).unwrap();
    // Member 3's signature over a different body.
    let other = signed(&n.next(set_threshold(5)), &[]);
    update.push_approval(approve(&n.f(3).member, &other)).unwrap();
    // Member 4's key id with an outsider's signature.
    let outsider = approve(&key(Role::Outsider, 0), &update);
    update
        .push_approval(Approval {
            key: n.f(4).member.id(),
            signature: outsider.signature,
        })
        .unwrap();
    // Member 2's key with an all-zero signature, and a weak key as approver.
    update
        .push_approval(Approval {
            key: n.f(2).member.id(),
            signature: Signature::from_bytes(&[0; 64]),
        })
        .unwrap();
    update
        .push_approval(Approval {
            key: KeyId::from_bytes(identity_point()),
            signature: Signature::from_bytes(&[0; 64]),
        })
        .unwrap();
    n.refuse(update.clone(), not_met(2, 3));

    // A good approval after the bad ones still counts.
    let good = approve(&n.f(2).member, &update);
    update.push_approval(good).unwrap();
    n.advance(update);
}

#[test]
fn approvals_survive_the_wire() {
    let mut n = five();
    let update = n.update(set_threshold(4), &[0, 1, 2], &[]);
    let received = SignedRegistryUpdate::from_bytes(&update.to_bytes()).unwrap();
    assert_eq!(received, update);
    n.advance(received);
}

// ---------------------------------------------------------------------------
// Admitting members
// ---------------------------------------------------------------------------

#[test]
fn adding_a_member_needs_every_new_key_to_approve() {
    let mut n = five();
    let new = Founder::new(5);
    let ops = vec![
        RegistryOp::AddMember(new.entry()),
        RegistryOp::SetThreshold { threshold: 4 },
    ];
    // None of the new member's keys approve.
    let update = n.update(ops.clone(), &[0, 1, 2, 3, 4], &[]);
    n.refuse(update, RegistryError::MissingProofOfPossession(new.member.id()));
    // All but the node key.
    let update = n.update(ops.clone(), &[0, 1, 2, 3, 4], &[&new.member, &new.signing]);
    n.refuse(
        update,
        RegistryError::MissingProofOfPossession(KeyId::from_bytes(new.node.public().to_bytes())),
    );
    // All but the signing key.
    let update = n.update(ops.clone(), &[0, 1, 2], &[&new.member, &new.node]);
    n.refuse(update, RegistryError::MissingProofOfPossession(new.signing.id()));
    // The new member's own approvals do not count towards the threshold.
    let update = n.update(ops.clone(), &[0, 1], &new.keys());
    n.refuse(update, not_met(2, 3));
    // With all of them.
    let update = n.update(ops, &[0, 1, 2], &new.keys());
    n.advance(update);
    let state = n.registry.current();
    assert_eq!(state.current_members().count(), 6);
    assert_eq!(state.threshold(), 4);
    assert_eq!(n.check(&n.bulletin(&new.signing, 1, 1)), Ok(new.id()));
}

#[test]
fn adding_a_member_without_raising_the_threshold_is_out_of_range() {
    // 3 of 6 is not above half.
    let mut n = five();
    let new = Founder::new(5);
    let update = n.update(vec![RegistryOp::AddMember(new.entry())], &[0, 1, 2], &new.keys());
    n.refuse(
        update,
        RegistryError::ThresholdOutOfRange {
            threshold: 3,
            members: 6,
        },
    );
}

#[test]
fn adding_a_member_twice_is_refused() {
    let mut n = five();
    let update = n.update(
        vec![RegistryOp::AddMember(n.f(4).entry())],
        &[0, 1, 2],
        &n.f(4).keys(),
    );
    n.refuse(update, RegistryError::DuplicateMember(n.f(4).id()));
}

// ---------------------------------------------------------------------------
// Versions: already held, rollback, gap, wrong previous, fork
// ---------------------------------------------------------------------------

/// Five founders advanced to version 3.
fn at_version_3() -> (Net, SignedRegistryUpdate, SignedRegistryUpdate) {
    let mut n = five();
    let v2 = n.update(set_threshold(4), &[0, 1, 2], &[]);
    n.advance(v2.clone());
    let v3 = n.update(set_threshold(3), &[0, 1, 2, 3], &[]);
    n.advance(v3.clone());
    (n, v2, v3)
}

#[test]
fn reapplying_a_held_update_is_already_held() {
    let (mut n, v2, v3) = at_version_3();
    let genesis = n.genesis.clone();
    for update in [v3.clone(), v2.clone(), genesis] {
        assert_eq!(n.registry.apply(update), Ok(Applied::AlreadyHeld));
    }
    // The same body with fewer approvals is still the update held.
    let stripped = SignedRegistryUpdate::from_parts(v2.body_bytes().to_vec(), vec![]).unwrap();
    assert_eq!(n.registry.apply(stripped), Ok(Applied::AlreadyHeld));
    assert_eq!(n.registry.version(), RegistryVersion(3));
    assert_eq!(n.registry.history(), &[n.genesis.clone(), v2, v3][..]);
    assert!(n.registry.forks().is_empty());
}

#[test]
fn an_older_different_update_is_a_rollback() {
    let (mut n, v2, _) = at_version_3();
    let rollback = |got| RegistryError::Rollback {
        have: RegistryVersion(3),
        got: RegistryVersion(got),
    };
    // A different version 2, approved by too few.
    let mut body = v2.body().clone();
    body.ops = set_threshold(5);
    n.refuse(signed(&body, &n.members(&[0, 1])), rollback(2));
    // A different version 2, properly approved but building on another history: of
    // another branch, from further back.
    body.prev = Some(RegistryHash::of_body(b"elsewhere"));
    n.refuse(
        signed(&body, &n.members(&[0, 1, 2, 3, 4])),
        RegistryError::WrongPrevious {
            version: RegistryVersion(2),
        },
    );
    // A different version 2 that is approved but cannot apply (threshold 1 of 5).
    let mut body = v2.body().clone();
    body.ops = set_threshold(1);
    n.refuse(signed(&body, &n.members(&[0, 1, 2, 3, 4])), rollback(2));
    // A different genesis.
    let other = genesis(&n.founders, 4);
    n.refuse(other, rollback(1));
    assert!(n.registry.forks().is_empty());
}

#[test]
fn an_unapproved_update_for_the_current_version_is_a_rollback() {
    let mut n = five();
    n.advance(n.update(set_threshold(4), &[0, 1, 2], &[]));
    let mut body = n.registry.history()[1].body().clone();
    body.ops = set_threshold(5);
    n.refuse(
        signed(&body, &n.members(&[0])),
        RegistryError::Rollback {
            have: RegistryVersion(2),
            got: RegistryVersion(2),
        },
    );
}

#[test]
fn skipping_a_version_is_a_gap() {
    let mut n = five();
    let mut body = n.next(set_threshold(4));
    body.version = RegistryVersion(3);
    let update = signed(&body, &n.members(&[0, 1, 2, 3, 4]));
    n.refuse(
        update,
        RegistryError::Gap {
            have: RegistryVersion(1),
            got: RegistryVersion(3),
        },
    );
}

#[test]
fn building_on_another_history_is_wrong_previous() {
    let mut n = five();
    let mut body = n.next(set_threshold(4));
    body.prev = Some(RegistryHash::of_body(b"not our genesis"));
    let update = signed(&body, &n.members(&[0, 1, 2, 3, 4]));
    n.refuse(
        update,
        RegistryError::WrongPrevious {
            version: RegistryVersion(2),
        },
    );
}

#[test]
fn two_approved_updates_for_one_version_are_a_fork_with_evidence() {
    let mut n = five();
    // Member 2 approves both: it is the equivocating overlap any two majorities share.
    let ours = n.update(set_threshold(4), &[0, 1, 2], &[]);
    let theirs = n.update(
        vec![RegistryOp::RemoveMember {
            member: n.f(0).id(),
            at: Timestamp(7),
        }],
        &[2, 3, 4],
        &[],
    );
    n.advance(ours.clone());
    let fork = RegistryError::Fork {
        version: RegistryVersion(2),
        ours: ours.hash(),
        theirs: theirs.hash(),
    };
    n.refuse(theirs.clone(), fork.clone());
    assert_eq!(n.registry.forks().len(), 1);
    let evidence = &n.registry.forks()[0];
    assert_eq!(evidence.version, RegistryVersion(2));
    assert_eq!(evidence.ours, ours);
    assert_eq!(evidence.theirs, theirs);
    // Seeing it again does not duplicate the evidence, nor after advancing further.
    n.refuse(theirs.clone(), fork.clone());
    assert_eq!(n.registry.forks().len(), 1);
    n.advance(n.update(set_threshold(5), &[0, 1, 2, 3], &[]));
    assert_eq!(n.registry.apply(theirs.clone()), Err(fork));
    assert_eq!(n.registry.forks().len(), 1);
    // The registry still holds our version 2.
    assert_eq!(n.registry.history()[1], ours);
    assert_eq!(
        n.registry.at_version(RegistryVersion(2)).unwrap().hash(),
        ours.hash()
    );
}

#[test]
fn concurrent_self_managed_updates_by_two_members_fork() {
    // Two members each manage their own keys at the same time, each alone, as the
    // design allows. Both updates are validly approved for version 2, so whichever a
    // node sees second is reported as a fork, although nobody equivocated: the
    // "threshold above half" argument does not cover self-managed changes. The fork
    // lasts until a threshold-approved update on one side settles it (below).
    let mut n = five();
    let k0 = key(Role::Fresh, 0);
    let k1 = key(Role::Fresh, 1);
    let a = n.update(vec![add_signing_key(n.f(0).id(), &k0)], &[0], &[&k0]);
    let b = n.update(vec![add_signing_key(n.f(1).id(), &k1)], &[1], &[&k1]);
    let mut other = n.registry.clone();
    n.advance(a.clone());
    n.refuse(
        b.clone(),
        RegistryError::Fork {
            version: RegistryVersion(2),
            ours: a.hash(),
            theirs: b.hash(),
        },
    );
    // A node that saw them in the other order holds the other version 2.
    assert_eq!(other.apply(b.clone()), Ok(Applied::Advanced(RegistryVersion(2))));
    assert_ne!(other.hash(), n.registry.hash());
    // Neither branch displaces the other: each was approved by its member alone.
    let before = n.registry.hash();
    assert_eq!(
        n.registry
            .adopt_branch_saving(vec![b.clone()], |_, _| Err("not called")),
        Ok(Err(RegistryError::Fork {
            version: RegistryVersion(2),
            ours: a.hash(),
            theirs: b.hash(),
        }))
    );
    assert!(matches!(
        other.adopt_branch_saving(vec![a.clone()], |_, _| Err("not called")),
        Ok(Err(RegistryError::Fork { .. }))
    ));
    assert_eq!(n.registry.hash(), before);
}

/// The next version on `registry` with `ops`, approved by `approvers`.
fn on(registry: &Registry, ops: Vec<RegistryOp>, approvers: &[&SecretKey]) -> SignedRegistryUpdate {
    let version = registry.version().next().unwrap();
    let body = RegistryUpdate {
        format: 1,
        version,
        prev: Some(registry.hash()),
        created: Timestamp(version.0 * 1000 + 7),
        ops,
    };
    signed(&body, approvers)
}

/// Two sides of a split over version 2, each a change one member made
/// alone, and on side `b` a threshold-approved version 3 that settles it.
struct Split {
    /// Version 2 and 3 of side `a`: member 0's own changes.
    a: Vec<SignedRegistryUpdate>,
    /// Version 2 of side `b` (member 1's own change), then version 3 (the threshold's).
    b: Vec<SignedRegistryUpdate>,
    /// Side `a`'s registry and side `b`'s.
    on_a: Registry,
    on_b: Registry,
}

fn split() -> (Net, Split) {
    let n = five();
    let (k0, k0b, k1) = (key(Role::Fresh, 0), key(Role::Fresh, 2), key(Role::Fresh, 1));
    let mut on_a = n.registry.clone();
    let a2 = on(
        &on_a,
        vec![add_signing_key(n.f(0).id(), &k0)],
        &[&n.f(0).member, &k0],
    );
    on_a.apply(a2.clone()).unwrap();
    let a3 = on(
        &on_a,
        vec![add_signing_key(n.f(0).id(), &k0b)],
        &[&n.f(0).member, &k0b],
    );
    on_a.apply(a3.clone()).unwrap();
    let mut on_b = n.registry.clone();
    let b2 = on(
        &on_b,
        vec![add_signing_key(n.f(1).id(), &k1)],
        &[&n.f(1).member, &k1],
    );
    on_b.apply(b2.clone()).unwrap();
    let b3 = on(&on_b, set_threshold(3), &n.members(&[2, 3, 4]));
    on_b.apply(b3.clone()).unwrap();
    let split = Split {
        a: vec![a2, a3],
        b: vec![b2, b3],
        on_a,
        on_b,
    };
    (n, split)
}

#[test]
fn a_branch_a_threshold_approved_displaces_changes_members_made_alone() {
    let (
        n,
        Split {
            a,
            b,
            mut on_a,
            mut on_b,
        },
    ) = split();
    assert!(on_b.holds_threshold_change_from(RegistryVersion(2)));
    assert!(!on_a.holds_threshold_change_from(RegistryVersion(2)));
    assert!(needs_threshold(&b[1]) && !needs_threshold(&b[0]));
    // Side a takes side b's branch: both its own versions give way.
    let mut saved = Vec::new();
    let switched = on_a.adopt_branch_saving(b.clone(), |from, updates| {
        saved.push((from, updates.to_vec()));
        Ok::<(), &str>(())
    });
    assert_eq!(
        switched,
        Ok(Ok(Applied::Switched {
            from: RegistryVersion(2),
            to: RegistryVersion(3),
            dropped: 2,
        }))
    );
    assert_eq!(saved, vec![(RegistryVersion(2), b.clone())]);
    assert_eq!(on_a.history(), on_b.history());
    assert_eq!(on_a.current(), on_b.current());
    // What was dropped is kept as evidence, and known as a fork.
    assert_eq!(on_a.forks().len(), 1);
    assert_eq!(on_a.forks()[0].version, RegistryVersion(2));
    assert_eq!(on_a.forks()[0].ours, b[0]);
    assert_eq!(on_a.forks()[0].theirs, a[0]);
    assert!(on_a.knows_fork(RegistryVersion(2), a[0].hash()));
    // Member 0's key of the dropped branch no longer signs; member 1's does.
    let dropped_key = key(Role::Fresh, 0);
    assert!(
        on_a.check_bulletin(&bulletin_on(n.registry.network(), &dropped_key, 1, 1))
            .is_err()
    );
    assert!(
        on_a.check_bulletin(&bulletin_on(n.registry.network(), &key(Role::Fresh, 1), 1, 1))
            .is_ok()
    );
    // Side b keeps its branch whichever way it sees side a's: one update or all.
    let held = on_b.hash();
    assert!(matches!(
        on_b.adopt_branch_saving(a.clone(), |_, _| Err("not called")),
        Ok(Err(RegistryError::Fork { .. }))
    ));
    assert!(matches!(
        on_b.apply(a[0].clone()),
        Err(RegistryError::Fork { .. })
    ));
    assert_eq!(on_b.hash(), held);
    // Member 0 makes its change again, on the branch that stayed.
    let again = on(
        &on_b,
        vec![add_signing_key(n.f(0).id(), &dropped_key)],
        &[&n.f(0).member, &dropped_key],
    );
    assert_eq!(
        on_a.apply(again.clone()),
        Ok(Applied::Advanced(RegistryVersion(4)))
    );
    assert_eq!(on_b.apply(again), Ok(Applied::Advanced(RegistryVersion(4))));
    assert_eq!(on_a.hash(), on_b.hash());
}

#[test]
fn evidence_held_from_where_a_branch_gives_way_is_judged_against_the_new_one() {
    let (n, Split { a, b, mut on_a, .. }) = split();
    // Another version 3 on side a's branch, and member 2's own version 2.
    let a3_rival = {
        let mut after_a2 = n.registry.clone();
        after_a2.apply(a[0].clone()).unwrap();
        let k = key(Role::Fresh, 30);
        on(
            &after_a2,
            vec![add_signing_key(n.f(0).id(), &k)],
            &[&n.f(0).member, &k],
        )
    };
    let c2 = {
        let k = key(Role::Fresh, 31);
        on(
            &n.registry,
            vec![add_signing_key(n.f(2).id(), &k)],
            &[&n.f(2).member, &k],
        )
    };
    for rival in [&a3_rival, &c2] {
        assert!(matches!(
            on_a.apply(rival.clone()),
            Err(RegistryError::Fork { .. })
        ));
    }
    assert!(matches!(
        on_a.adopt_branch_saving(b.clone(), |_, _| Ok::<(), &str>(())),
        Ok(Ok(Applied::Switched { .. }))
    ));
    // The version 3 rival built on a's version 2, gone; c's version 2, a fork of b's now;
    // and a's version 2, which gave way.
    let forks: Vec<_> = on_a
        .forks()
        .iter()
        .map(|f| (f.version, f.ours.hash(), f.theirs.hash()))
        .collect();
    assert_eq!(
        forks,
        vec![
            (RegistryVersion(2), b[0].hash(), c2.hash()),
            (RegistryVersion(2), b[0].hash(), a[0].hash()),
        ]
    );
}

#[test]
fn one_threshold_approved_update_displaces_a_change_a_member_made_alone() {
    // The common race: a threshold-approved version 2 comes after a member's own.
    let mut n = five();
    let k0 = key(Role::Fresh, 0);
    let own = n.update(vec![add_signing_key(n.f(0).id(), &k0)], &[0], &[&k0]);
    let threshold = n.update(set_threshold(4), &[1, 2, 3], &[]);
    let mut first_own = n.registry.clone();
    first_own.apply(own.clone()).unwrap();
    assert_eq!(
        first_own.adopt_branch_saving(vec![threshold.clone()], |_, _| Ok::<(), &str>(())),
        Ok(Ok(Applied::Switched {
            from: RegistryVersion(2),
            to: RegistryVersion(2),
            dropped: 1,
        }))
    );
    n.advance(threshold.clone());
    assert!(matches!(
        n.registry
            .adopt_branch_saving(vec![own], |_, _| Err("not called")),
        Ok(Err(RegistryError::Fork { .. }))
    ));
    assert_eq!(first_own.hash(), n.registry.hash());
    assert_eq!(first_own.hash(), threshold.hash());
}

#[test]
fn a_members_own_change_gives_way_however_many_members_approved_the_copy_held() {
    // Which branch stays goes by the bodies: a copy of a member's own change that
    // carries every member's approval (or a relay's stripped copy of it) is judged alike.
    let n = five();
    let k0 = key(Role::Fresh, 0);
    let everyone = n.update(vec![add_signing_key(n.f(0).id(), &k0)], &[0, 1, 2, 3, 4], &[&k0]);
    let stripped = SignedRegistryUpdate::from_parts(
        everyone.body_bytes().to_vec(),
        everyone.approvals()[..1]
            .iter()
            .chain(everyone.approvals().iter().filter(|a| a.key == k0.id()))
            .cloned()
            .collect(),
    )
    .unwrap();
    assert_eq!(stripped.hash(), everyone.hash());
    let shared = n.update(set_threshold(3), &[1, 2, 3], &[]);
    for copy in [everyone, stripped] {
        let mut held = n.registry.clone();
        held.apply(copy).unwrap();
        assert!(!held.holds_threshold_change_from(RegistryVersion(2)));
        assert!(matches!(
            held.adopt_branch_saving(vec![shared.clone()], |_, _| Ok::<(), &str>(())),
            Ok(Ok(Applied::Switched { .. }))
        ));
        assert_eq!(held.hash(), shared.hash());
    }
}

#[test]
fn two_branches_each_with_a_threshold_approved_update_stay_a_fork() {
    // Member 2 approved on both sides: nothing a threshold approved is undone.
    let mut n = five();
    let ours = n.update(set_threshold(4), &[0, 1, 2], &[]);
    let theirs = n.update(set_threshold(5), &[2, 3, 4], &[]);
    n.advance(ours.clone());
    assert!(matches!(
        n.registry
            .adopt_branch_saving(vec![theirs], |_, _| Err("not called")),
        Ok(Err(RegistryError::Fork { .. }))
    ));
    assert_eq!(n.registry.hash(), ours.hash());
    assert_eq!(n.registry.forks().len(), 1);
}

#[test]
fn a_branch_is_judged_as_far_as_its_updates_are_valid() {
    let (n, Split { a, b, mut on_a, .. }) = split();
    let held = on_a.history().to_vec();
    // Its threshold update approved by too few: the rest is member 1's own change alone,
    // which does not displace member 0's.
    let mut short = b.clone();
    let unapproved = {
        let mut after_b2 = n.registry.clone();
        after_b2.apply(b[0].clone()).unwrap();
        on(&after_b2, set_threshold(3), &n.members(&[2, 3]))
    };
    short[1] = unapproved;
    assert_eq!(on_a.check_branch(short.clone()).unwrap().updates(), &b[..1]);
    assert!(matches!(
        on_a.adopt_branch_saving(short, |_, _| Err("not called")),
        Ok(Err(RegistryError::Fork { .. }))
    ));
    assert_eq!(on_a.history(), &held[..]);
    // A valid update after one that is not is not reached.
    let mut cut = b.clone();
    cut.insert(1, a[1].clone());
    assert_eq!(on_a.check_branch(cut).unwrap().updates(), &b[..1]);
    // Refused: one that starts on another history, empty, the one held.
    let reversed: Vec<_> = b.iter().rev().cloned().collect();
    assert!(matches!(
        on_a.adopt_branch_saving(reversed, |_, _| Err("not called")),
        Ok(Err(RegistryError::WrongPrevious { .. }))
    ));
    assert!(matches!(
        on_a.adopt_branch_saving(vec![], |_, _| Err("not called")),
        Ok(Err(RegistryError::NotABranch(_)))
    ));
    assert!(matches!(
        on_a.adopt_branch_saving(a.clone(), |_, _| Err("not called")),
        Ok(Err(RegistryError::NotABranch(_)))
    ));
    // The genesis of another network.
    let other = net(3, 2);
    assert!(matches!(
        on_a.adopt_branch_saving(vec![other.genesis], |_, _| Err("not called")),
        Ok(Err(RegistryError::Rollback { .. }))
    ));
    // A save that fails changes nothing.
    assert_eq!(
        on_a.adopt_branch_saving(b.clone(), |_, _| Err("disk full")),
        Err("disk full")
    );
    assert_eq!(on_a.history(), &held[..]);
    assert_eq!(on_a.forks().len(), 1, "b's version 2, from the branch cut short");
    // A branch checked, then the registry changed: checked again, not taken as it was.
    let checked = on_a.check_branch(b.clone()).unwrap();
    assert!(matches!(
        on_a.adopt_branch_saving(b.clone(), |_, _| Ok::<(), &str>(())),
        Ok(Ok(Applied::Switched { .. }))
    ));
    assert!(matches!(
        on_a.adopt_checked_saving(checked, |_, _| Err("not called")),
        Ok(Err(RegistryError::NotABranch(_)))
    ));
}

#[test]
fn fork_evidence_is_kept_up_to_a_bound() {
    // One member alone can approve any number of its own updates for a past version: it
    // gets a few places, and the others' forks are still kept.
    let mut n = five();
    // Version 2 in as many forms as there is room for evidence, and more, by each member.
    let updates: Vec<SignedRegistryUpdate> = (0..=MAX_FORK_EVIDENCE + 3)
        .map(|i| {
            let k = key(Role::Fresh, i as u8);
            let member = i % 5;
            n.update(vec![add_signing_key(n.f(member).id(), &k)], &[member], &[&k])
        })
        .collect();
    let late = key(Role::Fresh, 200);
    let by_another = n.update(
        vec![
            RegistryOp::SetThreshold { threshold: 3 },
            add_signing_key(n.f(1).id(), &late),
        ],
        &[0, 1, 2],
        &[&late],
    );
    n.advance(updates[0].clone());
    for update in &updates[1..] {
        assert!(matches!(
            n.registry.apply(update.clone()),
            Err(RegistryError::Fork { .. })
        ));
    }
    // Five members, four places each.
    assert_eq!(n.registry.forks().len(), 5 * MAX_FORK_EVIDENCE_PER_MEMBER);
    assert!(matches!(
        n.registry.apply(by_another.clone()),
        Err(RegistryError::Fork { .. })
    ));
    assert!(
        n.registry
            .forks()
            .iter()
            .any(|f| f.theirs.hash() == by_another.hash()),
        "a fork approved by the threshold is kept, however many the members made"
    );
    assert_eq!(n.registry.version(), RegistryVersion(2));
    // Each is known as a fork, kept or not; the version held is not one.
    for update in &updates[1..] {
        assert!(n.registry.knows_fork(RegistryVersion(2), update.hash()));
    }
    assert!(!n.registry.knows_fork(RegistryVersion(2), updates[0].hash()));
}

#[test]
fn an_update_is_saved_before_the_registry_moves_on() {
    let mut n = five();
    let update = n.update(set_threshold(4), &[0, 1, 2], &[]);
    // A save that fails leaves the registry as it was.
    let failed = n.registry.apply_saving(update.clone(), |_| Err("disk full"));
    assert_eq!(failed, Err("disk full"));
    assert_eq!(n.registry.version(), RegistryVersion::GENESIS);
    assert_eq!(n.registry.history().len(), 1);
    // One that works is given the update, and then it counts.
    let mut saved = Vec::new();
    let applied = n.registry.apply_saving(update.clone(), |u| {
        saved.push(u.clone());
        Ok::<(), &str>(())
    });
    assert_eq!(applied, Ok(Ok(Applied::Advanced(RegistryVersion(2)))));
    assert_eq!(saved, vec![update.clone()]);
    // Nothing to save for what does not advance it.
    let again = n.registry.apply_saving(update, |_| Err("not called"));
    assert_eq!(again, Ok(Ok(Applied::AlreadyHeld)));
}

// ---------------------------------------------------------------------------
// Threshold range
// ---------------------------------------------------------------------------

#[test]
fn threshold_of_half_or_fewer_is_out_of_range() {
    let mut n = five();
    for threshold in [0, 1, 2, 6] {
        let update = n.update(set_threshold(threshold), &[0, 1, 2, 3, 4], &[]);
        n.refuse(
            update,
            RegistryError::ThresholdOutOfRange {
                threshold,
                members: 5,
            },
        );
    }
    let mut n = net(4, 3);
    let update = n.update(set_threshold(2), &[0, 1, 2, 3], &[]);
    n.refuse(
        update,
        RegistryError::ThresholdOutOfRange {
            threshold: 2,
            members: 4,
        },
    );
}

#[test]
fn removing_members_without_lowering_the_threshold_is_out_of_range() {
    let mut n = five();
    let remove = |n: &Net, i: usize| RegistryOp::RemoveMember {
        member: n.f(i).id(),
        at: Timestamp(100),
    };
    // Removing three of five leaves two members with threshold 3.
    let ops = vec![remove(&n, 2), remove(&n, 3), remove(&n, 4)];
    let update = n.update(ops.clone(), &[0, 1, 2], &[]);
    n.refuse(
        update,
        RegistryError::ThresholdOutOfRange {
            threshold: 3,
            members: 2,
        },
    );
    // One at a time: 4 and 3 members keep threshold 3 valid, 2 do not.
    n.advance(n.update(vec![remove(&n, 4)], &[0, 1, 2], &[]));
    n.advance(n.update(vec![remove(&n, 3)], &[0, 1, 2], &[]));
    let update = n.update(vec![remove(&n, 2)], &[0, 1, 2], &[]);
    n.refuse(
        update,
        RegistryError::ThresholdOutOfRange {
            threshold: 3,
            members: 2,
        },
    );
    // Lowering the threshold in the same update works: 2 of 2.
    let mut ops = vec![remove(&n, 2)];
    ops.push(RegistryOp::SetThreshold { threshold: 2 });
    n.advance(n.update(ops, &[0, 1, 2], &[]));
    assert_eq!(n.registry.current().threshold(), 2);
    assert_eq!(n.registry.current().current_members().count(), 2);
    // Removing an already removed member.
    let update = n.update(vec![remove(&n, 4)], &[0, 1], &[]);
    n.refuse(update, RegistryError::UnknownMember(n.f(4).id()));
}

// ---------------------------------------------------------------------------
// Self-managed keys: signing keys, nodes, member key rotation
// ---------------------------------------------------------------------------

#[test]
fn a_member_adds_its_own_signing_key_alone() {
    let mut n = five();
    let new = key(Role::Fresh, 0);
    let member = n.f(0).id();
    // Without the new key's approval: no proof of possession.
    let update = n.update(vec![add_signing_key(member, &new)], &[0], &[]);
    n.refuse(update, RegistryError::MissingProofOfPossession(new.id()));
    // Approved by the member key and the new key: accepted.
    n.advance(n.update(vec![add_signing_key(member, &new)], &[0], &[&new]));
    let (holder, state) = n.registry.current().signing_key(&new.id()).unwrap();
    assert_eq!(holder.id, member);
    assert_eq!(state.revoked, None);
    assert_eq!(n.check(&n.bulletin(&new, 1, 1)), Ok(member));
    // The old signing key keeps working.
    assert_eq!(n.check(&n.bulletin(&n.f(0).signing, 1, 1)), Ok(member));
}

#[test]
fn another_member_alone_cannot_manage_someones_keys() {
    let mut n = five();
    let new = key(Role::Fresh, 0);
    let victim = n.f(0).id();
    let update = n.update(vec![add_signing_key(victim, &new)], &[1], &[&new]);
    n.refuse(update, not_met(1, 3));
    // Nor by the member's own signing key.
    let update = n.update(vec![add_signing_key(victim, &new)], &[], &[&n.f(0).signing, &new]);
    n.refuse(update, not_met(0, 3));
    // Nor two members' changes in one update, each approved by only its owner.
    let other = key(Role::Fresh, 1);
    let ops = vec![
        add_signing_key(victim, &new),
        add_signing_key(n.f(1).id(), &other),
    ];
    let update = n.update(ops.clone(), &[0, 1], &[&new, &other]);
    n.refuse(update, not_met(2, 3));
    // A threshold may do it.
    n.advance(n.update(ops, &[0, 1, 2], &[&new, &other]));
}

#[test]
fn a_member_manages_its_own_nodes() {
    let mut n = five();
    let member = n.f(0).id();
    let new_node = key(Role::Fresh, 0).public().node_id();
    let ops = vec![
        RegistryOp::AddNode {
            member,
            node: new_node,
        },
        RegistryOp::RemoveNode {
            member,
            node: n.f(0).node.public().node_id(),
        },
    ];
    let update = n.update(ops.clone(), &[0], &[]);
    n.refuse(
        update,
        RegistryError::MissingProofOfPossession(KeyId::from_bytes(*new_node.as_bytes())),
    );
    n.advance(n.update(ops, &[0], &[&key(Role::Fresh, 0)]));
    let nodes: Vec<_> = n
        .registry
        .current()
        .member(&member)
        .unwrap()
        .node_ids
        .iter()
        .copied()
        .collect();
    assert_eq!(nodes, vec![new_node]);
    // Removing a node it does not have.
    let update = n.update(
        vec![RegistryOp::RemoveNode {
            member,
            node: n.f(1).node.public().node_id(),
        }],
        &[0],
        &[],
    );
    n.refuse(
        update,
        RegistryError::NotOwned {
            member,
            what: "node",
            key: KeyId::from_bytes(n.f(1).node.public().to_bytes()),
        },
    );
}

#[test]
fn rotating_the_member_key_needs_old_and_new_and_retires_the_old() {
    let mut n = five();
    let member = n.f(0).id();
    let new = key(Role::Fresh, 0);
    let rotate = vec![RegistryOp::RotateMemberKey {
        member,
        new_key: new.id(),
    }];
    // The new key alone is not the member.
    let update = n.update(rotate.clone(), &[], &[&new]);
    n.refuse(update, not_met(0, 3));
    // The old key alone lacks proof of possession of the new one.
    let update = n.update(rotate.clone(), &[0], &[]);
    n.refuse(update, RegistryError::MissingProofOfPossession(new.id()));
    // Old and new: accepted.
    n.advance(n.update(rotate, &[0], &[&new]));
    let state = n.registry.current();
    let m = state.member(&member).unwrap();
    assert_eq!(m.member_key, new.public());
    assert_eq!(
        m.id,
        MemberId::derive(&n.f(0).member.id()),
        "the member id survives rotation"
    );

    // The old member key no longer counts...
    let update = n.update(set_threshold(4), &[0, 1, 2], &[]);
    n.refuse(update, not_met(2, 3));
    // ...and no longer manages the member's keys...
    let k = key(Role::Fresh, 1);
    let update = n.update(vec![add_signing_key(member, &k)], &[0], &[&k]);
    n.refuse(update, not_met(0, 3));
    // ...while the new one does both.
    n.advance(n.update(vec![add_signing_key(member, &k)], &[], &[&new, &k]));
    n.advance(n.update(set_threshold(4), &[1, 2], &[&new]));
}

// ---------------------------------------------------------------------------
// Keys are never reused
// ---------------------------------------------------------------------------

#[test]
fn keys_are_never_reused() {
    let mut n = five();
    let m0 = n.f(0).id();

    // Another member's signing key.
    let theirs = &n.f(1).signing;
    let update = n.update(vec![add_signing_key(m0, theirs)], &[0], &[theirs]);
    n.refuse(update, RegistryError::KeyInUse(theirs.id()));
    // Its own node key as a signing key.
    let node = &n.f(0).node;
    let update = n.update(vec![add_signing_key(m0, node)], &[0], &[node]);
    n.refuse(update, RegistryError::KeyInUse(node.id()));
    // Another member's member key as a node.
    let other_member = &n.f(2).member;
    let update = n.update(
        vec![RegistryOp::AddNode {
            member: m0,
            node: other_member.public().node_id(),
        }],
        &[0],
        &[other_member],
    );
    n.refuse(update, RegistryError::KeyInUse(other_member.id()));
    // A new member whose member key is an existing node key.
    let mut entry = Founder::new(5).entry();
    let reused = &n.f(3).node;
    entry.member_key = reused.id();
    entry.id = MemberId::derive(&entry.member_key);
    let new = Founder::new(5);
    let ops = vec![
        RegistryOp::AddMember(entry),
        RegistryOp::SetThreshold { threshold: 4 },
    ];
    let update = n.update(ops, &[0, 1, 2], &[reused, &new.signing, &new.node]);
    n.refuse(update, RegistryError::KeyInUse(reused.id()));
    // One key twice in one entry.
    let mut entry = new.entry();
    entry.signing_keys.push(new.signing.id());
    let ops = vec![
        RegistryOp::AddMember(entry),
        RegistryOp::SetThreshold { threshold: 4 },
    ];
    let update = n.update(ops, &[0, 1, 2], &new.keys());
    n.refuse(update, RegistryError::KeyInUse(new.signing.id()));
}

#[test]
fn a_revoked_or_retired_key_is_never_readmitted() {
    let mut n = five();
    let m0 = n.f(0).id();
    let signing = n.f(0).signing.clone();
    n.advance(n.update(
        vec![RegistryOp::RevokeSigningKey {
            member: m0,
            key: signing.id(),
            from: RevocationPoint::Seq(Seq(1)),
        }],
        &[0],
        &[],
    ));
    // Re-adding the revoked key, by the member or by everyone.
    let update = n.update(vec![add_signing_key(m0, &signing)], &[0], &[&signing]);
    n.refuse(update, RegistryError::KeyInUse(signing.id()));
    let update = n.update(vec![add_signing_key(m0, &signing)], &[0, 1, 2, 3, 4], &[&signing]);
    n.refuse(update, RegistryError::KeyInUse(signing.id()));

    // Rotating the member key, then rotating back to the old one.
    let old = n.f(0).member.clone();
    let new = key(Role::Fresh, 0);
    n.advance(n.update(
        vec![RegistryOp::RotateMemberKey {
            member: m0,
            new_key: new.id(),
        }],
        &[0],
        &[&new],
    ));
    let update = n.update(
        vec![RegistryOp::RotateMemberKey {
            member: m0,
            new_key: old.id(),
        }],
        &[],
        &[&new, &old],
    );
    n.refuse(update, RegistryError::KeyInUse(old.id()));

    // The keys of a removed member.
    let f4 = &n.founders[4];
    let (gone_signing, gone_member) = (f4.signing.clone(), f4.member.clone());
    n.advance(n.update(
        vec![RegistryOp::RemoveMember {
            member: f4.id(),
            at: Timestamp(1),
        }],
        &[1, 2, 3],
        &[],
    ));
    let update = n.update(
        vec![add_signing_key(n.f(1).id(), &gone_signing)],
        &[1],
        &[&gone_signing],
    );
    n.refuse(update, RegistryError::KeyInUse(gone_signing.id()));
    let update = n.update(
        vec![RegistryOp::AddMember(n.f(4).entry())],
        &[1, 2, 3],
        &[&gone_member, &gone_signing, &n.f(4).node],
    );
    n.refuse(update, RegistryError::DuplicateMember(n.f(4).id()));
}

#[test]
fn a_weak_key_is_refused_when_added_later() {
    let mut n = five();
    let m0 = n.f(0).id();
    let weak = identity_point();
    let ops = [
        RegistryOp::AddSigningKey {
            member: m0,
            key: KeyId::from_bytes(weak),
        },
        RegistryOp::AddNode {
            member: m0,
            node: NodeId::from_bytes(weak),
        },
        RegistryOp::RotateMemberKey {
            member: m0,
            new_key: KeyId::from_bytes(weak),
        },
    ];
    for op in ops {
        let update = n.update(vec![op], &[0, 1, 2, 3, 4], &[]);
        n.refuse(update, weak_key());
    }
}

// ---------------------------------------------------------------------------
// Revocation and removal: what the key signed before stays valid
// ---------------------------------------------------------------------------

fn revoke(n: &Net, i: usize, from: RevocationPoint) -> Vec<RegistryOp> {
    vec![RegistryOp::RevokeSigningKey {
        member: n.f(i).id(),
        key: n.f(i).signing.id(),
        from,
    }]
}

#[test]
fn revocation_from_a_sequence_number() {
    let mut n = five();
    let signer = n.f(0).signing.clone();
    let member = n.f(0).id();
    // Signed before the revocation.
    let early: Vec<SignedBulletin> = (1..=4).map(|seq| n.bulletin(&signer, seq, seq * 10)).collect();
    let from = RevocationPoint::Seq(Seq(3));
    n.advance(n.update(revoke(&n, 0, from), &[0], &[]));
    assert_eq!(
        n.registry.current().signing_key(&signer.id()).unwrap().1.revoked,
        Some(from)
    );
    let revoked = Err(Rejection::Revoked {
        key: signer.id(),
        from,
    });
    assert_eq!(n.check(&early[0]), Ok(member));
    assert_eq!(n.check(&early[1]), Ok(member));
    assert_eq!(n.check(&early[2]), revoked);
    assert_eq!(n.check(&early[3]), revoked);
    // A sequence point is exact, whatever time the bulletin claims.
    assert_eq!(n.check(&n.bulletin(&signer, 2, 1_000_000)), Ok(member));
    assert_eq!(n.check(&n.bulletin(&signer, 3, 0)), revoked);
    assert_eq!(n.check(&n.bulletin(&signer, 1000, 0)), revoked);
    // Other members' keys are unaffected.
    assert_eq!(n.check(&n.bulletin(&n.f(1).signing, 3, 0)), Ok(n.f(1).id()));
    // Revoking it again is refused.
    let update = n.update(revoke(&n, 0, RevocationPoint::Seq(Seq(2))), &[0], &[]);
    n.refuse(update, RegistryError::AlreadyRevoked(signer.id()));
}

#[test]
fn revocation_from_a_time() {
    let mut n = five();
    let signer = n.f(1).signing.clone();
    let member = n.f(1).id();
    let from = RevocationPoint::Time(Timestamp(10_000));
    n.advance(n.update(revoke(&n, 1, from), &[1], &[]));
    let revoked = Err(Rejection::Revoked {
        key: signer.id(),
        from,
    });
    assert_eq!(n.check(&n.bulletin(&signer, 1, 0)), Ok(member));
    assert_eq!(n.check(&n.bulletin(&signer, 50, 9_999)), Ok(member));
    assert_eq!(n.check(&n.bulletin(&signer, 1, 10_000)), revoked);
    assert_eq!(n.check(&n.bulletin(&signer, 2, 10_001)), revoked);
}

#[test]
fn revocation_by_others_needs_the_threshold() {
    let mut n = five();
    let from = RevocationPoint::Seq(Seq(1));
    // One other member alone cannot revoke member 0's key.
    let update = n.update(revoke(&n, 0, from), &[1], &[]);
    n.refuse(update, not_met(1, 3));
    // A threshold can, without member 0.
    n.advance(n.update(revoke(&n, 0, from), &[1, 2, 3], &[]));
    let signer = &n.f(0).signing;
    assert_eq!(
        n.check(&n.bulletin(signer, 1, 0)),
        Err(Rejection::Revoked {
            key: signer.id(),
            from
        })
    );
    // A key the member does not have.
    let ops = vec![RegistryOp::RevokeSigningKey {
        member: n.f(2).id(),
        key: n.f(3).signing.id(),
        from,
    }];
    let update = n.update(ops, &[2], &[]);
    n.refuse(
        update,
        RegistryError::NotOwned {
            member: n.f(2).id(),
            what: "signing key",
            key: n.f(3).signing.id(),
        },
    );
}

#[test]
fn a_removed_member_keeps_what_it_signed_before() {
    let mut n = five();
    let gone = n.f(4).id();
    let signer = n.f(4).signing.clone();
    let at = Timestamp(50_000);
    n.advance(n.update(
        vec![RegistryOp::RemoveMember { member: gone, at }],
        &[0, 1, 2],
        &[],
    ));
    let state = n.registry.current();
    assert!(!state.member(&gone).unwrap().is_current());
    assert_eq!(state.current_members().count(), 4);
    assert!(state.allowed_nodes().all(|(m, _)| m.id != gone));

    assert_eq!(n.check(&n.bulletin(&signer, 1, 0)), Ok(gone));
    assert_eq!(n.check(&n.bulletin(&signer, 7, 49_999)), Ok(gone));
    let removed = Err(Rejection::MemberRemoved { member: gone, at });
    assert_eq!(n.check(&n.bulletin(&signer, 8, 50_000)), removed);
    assert_eq!(n.check(&n.bulletin(&signer, 1, 60_000)), removed);

    // Its approvals no longer count, and it no longer manages its own keys.
    let update = n.update(set_threshold(4), &[4, 0, 1], &[]);
    n.refuse(update, not_met(2, 3));
    let k = key(Role::Fresh, 4);
    let update = n.update(vec![add_signing_key(gone, &k)], &[4], &[&k]);
    n.refuse(update, not_met(0, 3));
    let update = n.update(vec![add_signing_key(gone, &k)], &[0, 1, 2], &[&k]);
    n.refuse(update, RegistryError::UnknownMember(gone));
}

// ---------------------------------------------------------------------------
// Trust decisions on bulletins
// ---------------------------------------------------------------------------

#[test]
fn a_key_no_member_holds_is_unknown() {
    let n = five();
    let stranger = key(Role::Outsider, 9);
    assert_eq!(
        n.check(&n.bulletin(&stranger, 1, 0)),
        Err(Rejection::UnknownKey(stranger.id()))
    );
}

#[test]
fn member_and_node_keys_cannot_sign_bulletins() {
    let n = five();
    for k in [&n.f(0).member, &n.f(0).node] {
        assert_eq!(n.check(&n.bulletin(k, 1, 0)), Err(Rejection::UnknownKey(k.id())));
    }
}

#[test]
fn a_bulletin_for_another_network_is_refused() {
    let n = five();
    // The same founders with another threshold make another network.
    let other = genesis(&n.founders, 4);
    let found = NetworkId::from_genesis(other.hash());
    assert_ne!(found, n.registry.network());
    let other_registry = Registry::from_genesis(other.clone(), other.hash()).unwrap();
    let signer = &n.f(0).signing;
    let bulletin = bulletin_on(found, signer, 1, 0);
    // Valid there, refused here.
    assert_eq!(other_registry.check_bulletin(&bulletin), Ok(n.f(0).id()));
    assert_eq!(
        n.check(&bulletin),
        Err(Rejection::WrongNetwork {
            expected: n.registry.network(),
            found,
        })
    );
}

#[test]
fn a_flipped_signature_bit_is_a_bad_signature() {
    let n = five();
    let signer = &n.f(0).signing;
    let bulletin = n.bulletin(signer, 1, 0);
    assert_eq!(n.check(&bulletin), Ok(n.f(0).id()));
    for bit in [0, 7, 100, 255, 256, 300, 511] {
        let mut sig = bulletin.signature().to_bytes();
        sig[bit / 8] ^= 1 << (bit % 8);
        let tampered =
            SignedBulletin::from_parts(bulletin.body_bytes().to_vec(), Signature::from_bytes(&sig)).unwrap();
        assert_eq!(n.check(&tampered), Err(Rejection::BadSignature), "bit {bit}");
    }
}

#[test]
fn a_signature_by_another_key_or_over_another_body_is_bad() {
    let n = five();
    let signer = &n.f(0).signing;
    let body = bulletin_body(n.registry.network(), signer, 1, 0);
    let bytes = body.to_bytes().unwrap();
    // Signed by member 1's signing key while naming member 0's.
    let forged = n
        .f(1)
        .signing
        .sign_with_domain(herald_protocol::BULLETIN_DOMAIN, &bytes);
    let bulletin = SignedBulletin::from_parts(bytes.clone(), forged).unwrap();
    assert_eq!(n.check(&bulletin), Err(Rejection::BadSignature));
    // The right key without the domain prefix, or with the registry's.
    let raw = signer.sign_raw(&bytes);
    assert_eq!(
        n.check(&SignedBulletin::from_parts(bytes.clone(), raw).unwrap()),
        Err(Rejection::BadSignature)
    );
    let cross = signer.sign_with_domain(herald_protocol::REGISTRY_DOMAIN, &bytes);
    assert_eq!(
        n.check(&SignedBulletin::from_parts(bytes, cross).unwrap()),
        Err(Rejection::BadSignature)
    );
    // A genuine signature moved onto a different body.
    let genuine = n.bulletin(signer, 1, 0);
    let mut other = body.clone();
    other.title = "changed".into();
    let moved = SignedBulletin::from_parts(other.to_bytes().unwrap(), *genuine.signature()).unwrap();
    assert_eq!(n.check(&moved), Err(Rejection::BadSignature));
}

#[test]
fn standing_is_checked_before_the_signature() {
    let mut n = five();
    let signer = n.f(0).signing.clone();
    let from = RevocationPoint::Seq(Seq(1));
    n.advance(n.update(revoke(&n, 0, from), &[0], &[]));
    let bulletin = n.bulletin(&signer, 1, 0);
    let mut sig = bulletin.signature().to_bytes();
    sig[0] ^= 1;
    let tampered =
        SignedBulletin::from_parts(bulletin.body_bytes().to_vec(), Signature::from_bytes(&sig)).unwrap();
    assert_eq!(
        n.check(&tampered),
        Err(Rejection::Revoked {
            key: signer.id(),
            from
        })
    );
    let standing = n.registry.standing(bulletin.body());
    assert_eq!(
        standing,
        Err(Rejection::Revoked {
            key: signer.id(),
            from
        })
    );
}

// ---------------------------------------------------------------------------
// Replaying a history
// ---------------------------------------------------------------------------

/// A network taken through six versions of varied changes.
fn long_history() -> Net {
    let mut n = five();
    // v2: member 0 adds a signing key (self-managed).
    let k0 = key(Role::Fresh, 0);
    n.advance(n.update(vec![add_signing_key(n.f(0).id(), &k0)], &[0], &[&k0]));
    // v3: member 5 joins; the threshold goes to 4 of 6.
    let new = Founder::new(5);
    n.advance(n.update(
        vec![
            RegistryOp::AddMember(new.entry()),
            RegistryOp::SetThreshold { threshold: 4 },
        ],
        &[1, 2, 3],
        &new.keys(),
    ));
    n.founders.push(new);
    // v4: member 1 rotates its member key.
    let m1 = key(Role::Fresh, 1);
    n.advance(n.update(
        vec![RegistryOp::RotateMemberKey {
            member: n.f(1).id(),
            new_key: m1.id(),
        }],
        &[1],
        &[&m1],
    ));
    n.founders[1].member = m1;
    // v5: a threshold revokes member 2's signing key from seq 5.
    n.advance(n.update(revoke(&n, 2, RevocationPoint::Seq(Seq(5))), &[0, 1, 3, 4], &[]));
    // v6: member 3 is removed at time 70 000; 4 of 5 is still in range.
    n.advance(n.update(
        vec![RegistryOp::RemoveMember {
            member: n.f(3).id(),
            at: Timestamp(70_000),
        }],
        &[0, 1, 4, 5],
        &[],
    ));
    // v7: member 0 replaces its node.
    let node = key(Role::Fresh, 2);
    n.advance(n.update(
        vec![
            RegistryOp::AddNode {
                member: n.f(0).id(),
                node: node.public().node_id(),
            },
            RegistryOp::RemoveNode {
                member: n.f(0).id(),
                node: n.f(0).node.public().node_id(),
            },
        ],
        &[0],
        &[&node],
    ));
    assert_eq!(n.registry.version(), RegistryVersion(7));
    n
}

#[test]
fn from_history_replays_to_the_same_state() {
    let n = long_history();
    // Through the wire form, as a node loads its store.
    let stored: Vec<SignedRegistryUpdate> = n
        .registry
        .history()
        .iter()
        .map(|u| SignedRegistryUpdate::from_bytes(&u.to_bytes()).unwrap())
        .collect();
    let replayed = Registry::from_history(stored, n.genesis.hash()).unwrap();
    assert_eq!(replayed.network(), n.registry.network());
    assert_eq!(replayed.version(), RegistryVersion(7));
    assert_eq!(replayed.hash(), n.registry.hash());
    assert_eq!(replayed.history(), n.registry.history());
    assert_eq!(replayed.current(), n.registry.current());
    for v in 1..=7 {
        let v = RegistryVersion(v);
        assert_eq!(replayed.at_version(v), n.registry.at_version(v), "version {v}");
    }
    assert_eq!(replayed.at_version(RegistryVersion(0)), None);
    assert_eq!(replayed.at_version(RegistryVersion(8)), None);
    assert!(replayed.forks().is_empty());

    // The same trust decisions.
    let net = n.registry.network();
    let cases = [
        bulletin_on(net, &key(Role::Fresh, 0), 1, 0),
        bulletin_on(net, &n.f(2).signing, 4, 0),
        bulletin_on(net, &n.f(2).signing, 5, 0),
        bulletin_on(net, &n.f(3).signing, 1, 69_999),
        bulletin_on(net, &n.f(3).signing, 2, 70_000),
        bulletin_on(net, &n.f(5).signing, 1, 0),
        bulletin_on(net, &n.f(1).member, 1, 0),
    ];
    let decisions: Vec<_> = cases.iter().map(|b| replayed.check_bulletin(b)).collect();
    assert_eq!(
        decisions,
        vec![
            Ok(n.f(0).id()),
            Ok(n.f(2).id()),
            Err(Rejection::Revoked {
                key: n.f(2).signing.id(),
                from: RevocationPoint::Seq(Seq(5)),
            }),
            Ok(n.f(3).id()),
            Err(Rejection::MemberRemoved {
                member: n.f(3).id(),
                at: Timestamp(70_000),
            }),
            Ok(n.f(5).id()),
            Err(Rejection::UnknownKey(n.f(1).member.id())),
        ]
    );
    for (b, d) in cases.iter().zip(&decisions) {
        assert_eq!(&n.registry.check_bulletin(b), d);
    }
}

#[test]
fn from_history_refuses_a_broken_history() {
    let n = long_history();
    let history = n.registry.history().to_vec();
    assert_eq!(
        Registry::from_history(Vec::new(), n.genesis.hash()).unwrap_err(),
        RegistryError::NotGenesis("the history is empty")
    );
    let wrong = RegistryHash::of_body(b"other");
    assert_eq!(
        Registry::from_history(history.clone(), wrong).unwrap_err(),
        RegistryError::GenesisMismatch {
            expected: wrong,
            found: n.genesis.hash(),
        }
    );
    // A missing update.
    let mut gap = history.clone();
    gap.remove(3);
    assert_eq!(
        Registry::from_history(gap, n.genesis.hash()).unwrap_err(),
        RegistryError::Gap {
            have: RegistryVersion(3),
            got: RegistryVersion(5),
        }
    );
    // An update stripped of its approvals.
    let mut stripped = history;
    stripped[4] = SignedRegistryUpdate::from_parts(stripped[4].body_bytes().to_vec(), vec![]).unwrap();
    assert_eq!(
        Registry::from_history(stripped, n.genesis.hash()).unwrap_err(),
        not_met(0, 4)
    );
}

// ---------------------------------------------------------------------------
// Once-known gaps, kept as regression tests
// ---------------------------------------------------------------------------

#[test]
fn a_removed_members_signing_key_can_still_be_revoked() {
    // A removed member's bulletins created before `at` stay valid, and `created` is
    // what the key itself signs: whoever holds the key can keep backdating. Revoking
    // the key from a sequence number is the exact defence, and must stay possible.
    let mut n = five();
    let gone = n.f(4).id();
    let signer = n.f(4).signing.clone();
    n.advance(n.update(
        vec![RegistryOp::RemoveMember {
            member: gone,
            at: Timestamp(50_000),
        }],
        &[0, 1, 2],
        &[],
    ));
    let backdated = n.bulletin(&signer, 9, 1);
    assert_eq!(n.check(&backdated), Ok(gone));
    let from = RevocationPoint::Seq(Seq(9));
    n.advance(n.update(revoke(&n, 4, from), &[0, 1, 2], &[]));
    assert_eq!(
        n.check(&backdated),
        Err(Rejection::Revoked {
            key: signer.id(),
            from
        })
    );
}

#[test]
fn revoked_signing_keys_do_not_use_up_the_key_limit() {
    let mut n = five();
    let member = n.f(0).id();
    let max = u8::try_from(herald_protocol::registry::MAX_KEYS_PER_MEMBER).unwrap();
    // Rotate the signing key `max` times: add a new key, revoke the previous one.
    let mut current = n.f(0).signing.clone();
    for i in 0..max {
        let next = key(Role::Fresh, i);
        let ops = vec![
            add_signing_key(member, &next),
            RegistryOp::RevokeSigningKey {
                member,
                key: current.id(),
                from: RevocationPoint::Seq(Seq(1)),
            },
        ];
        let update = n.update(ops, &[0], &[&next]);
        assert_eq!(
            n.registry.apply(update),
            Ok(Applied::Advanced(RegistryVersion(u64::from(i) + 2))),
            "rotation {i}: the member holds one unrevoked signing key"
        );
        current = next;
    }
}
