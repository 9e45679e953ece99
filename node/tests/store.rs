//! Store tests through the node crate's public API: what `insert_verified` does with new, repeated
//! and equivocating bulletins, chain heads with gaps, numbering of the node's own chain, queries,
//! the registry history, and what survives closing and reopening a store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use herald_keys::{Registry, SecretKey};
use herald_node::store::{ChainHead, Order, PageLimits};
use herald_node::{Query, Store, StoreError, Stored};
use herald_protocol::{
    AdvisoryStatus, BulletinBody, BulletinId, IncidentPhase, Kind, MemberEntry, MemberId, NetworkId, Payload,
    RegistryOp, RegistryUpdate, RegistryVersion, RevocationPoint, Seq, Severity, SignedBulletin,
    SignedRegistryUpdate, Timestamp, Tlp, UpdateStage,
};
use tempfile::TempDir;

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Other users cannot read the store: a new one is made its owner's only, and
/// an existing one others could read is narrowed as it opens.
#[test]
fn the_store_directory_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    drop(Store::open(&dir, NETWORK).unwrap());
    assert_eq!(mode(&dir), 0o700);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // (Opening waits, bounded, for sled to release the lock of the store
    // just closed.)
    drop(Store::open(&dir, NETWORK).unwrap());
    assert_eq!(mode(&dir), 0o700);
}

const NETWORK: NetworkId = NetworkId::from_bytes([0x11; 32]);
const OTHER_NETWORK: NetworkId = NetworkId::from_bytes([0x22; 32]);

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32])
}

/// The store trusts its caller for the signing member; any id will do.
fn member_of(key: &SecretKey) -> MemberId {
    MemberId::derive(&key.id())
}

/// What varies between test bulletins.
#[derive(Clone)]
struct Spec {
    seq: u64,
    prev: Option<BulletinId>,
    created: u64,
    kind: Kind,
    tlp: Tlp,
    severity: Severity,
    title: String,
}

impl Spec {
    fn new(seq: u64, prev: Option<BulletinId>, created: u64) -> Self {
        Self {
            seq,
            prev,
            created,
            kind: Kind::VulnerabilityAdvisory {
                status: AdvisoryStatus::Confirmed,
            },
            tlp: Tlp::Green,
            severity: Severity::Medium,
            title: format!("bulletin {seq} at {created}"),
        }
    }

    fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    fn tlp(mut self, tlp: Tlp) -> Self {
        self.tlp = tlp;
        self
    }

    fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    fn title(mut self, title: &str) -> Self {
        self.title = title.to_string();
        self
    }

    fn body(&self, signer: &SecretKey) -> BulletinBody {
        BulletinBody {
            format: herald_protocol::bulletin::BULLETIN_FORMAT,
            network: NETWORK,
            signer: signer.id(),
            seq: Seq(self.seq),
            prev: self.prev,
            created: Timestamp(self.created),
            kind: self.kind.clone(),
            tlp: self.tlp,
            severity: self.severity,
            title: self.title.clone(),
            references: Vec::new(),
            supersedes: None,
            expires: None,
            audience: Vec::new(),
            payload: Payload {
                content_type: "text/plain".into(),
                bytes: self.title.as_bytes().to_vec(),
            },
        }
    }

    fn sign(&self, signer: &SecretKey) -> SignedBulletin {
        herald_keys::sign_bulletin(signer, &self.body(signer)).unwrap()
    }
}

/// A properly linked chain of `n` bulletins of `signer`, created at `start`, `start + 1`, ...
fn chain(signer: &SecretKey, n: u64, start: u64) -> Vec<SignedBulletin> {
    let mut out: Vec<SignedBulletin> = Vec::new();
    for seq in 1..=n {
        let prev = out.last().map(SignedBulletin::id);
        out.push(Spec::new(seq, prev, start + seq - 1).sign(signer));
    }
    out
}

/// Opens a store, waiting (at most 5 s) while sled still holds the directory's lock.
///
/// Dropping every handle of a sled database does not release its lock at once: sled's background
/// threads finish their writes holding the file. A reopen in the same process right after a drop
/// can therefore meet "could not acquire lock"; only that error is waited out.
fn open_in(dir: &TempDir, network: NetworkId) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir.path(), network) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

fn open(dir: &TempDir) -> Store {
    open_in(dir, NETWORK).unwrap()
}

fn insert(store: &Store, signer: &SecretKey, bulletins: &[&SignedBulletin]) -> Vec<Stored> {
    let items: Vec<(SignedBulletin, MemberId)> = bulletins
        .iter()
        .map(|b| ((*b).clone(), member_of(signer)))
        .collect();
    store.insert_verified(&items).unwrap()
}

fn head(contiguous: u64, highest: u64) -> ChainHead {
    ChainHead {
        contiguous: Seq(contiguous),
        highest: Seq(highest),
    }
}

fn ids(bulletins: &[SignedBulletin]) -> Vec<BulletinId> {
    bulletins.iter().map(SignedBulletin::id).collect()
}

#[test]
fn insert_new_then_already_held() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(1);
    let [b1, b2] = <[SignedBulletin; 2]>::try_from(chain(&signer, 2, 1_000)).unwrap();
    assert_eq!(store.count().unwrap(), 0);
    assert!(!store.contains(&b1.id()).unwrap());
    assert_eq!(store.get(&b1.id()).unwrap(), None);

    assert_eq!(insert(&store, &signer, &[&b1]), vec![Stored::New]);
    assert_eq!(insert(&store, &signer, &[&b1]), vec![Stored::AlreadyHeld]);
    // Within one batch the second copy is seen as held too, and counted once.
    assert_eq!(
        insert(&store, &signer, &[&b2, &b2]),
        vec![Stored::New, Stored::AlreadyHeld]
    );

    assert_eq!(store.count().unwrap(), 2);
    for b in [&b1, &b2] {
        assert!(store.contains(&b.id()).unwrap());
        assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
        assert_eq!(store.get(&b.id()).unwrap().as_ref(), Some(b));
        assert_eq!(store.signer_of(&b.id()).unwrap(), Some(member_of(&signer)));
    }
    assert_eq!(store.chain_entry(&signer.id(), Seq(1)).unwrap(), Some(b1.id()));
    assert_eq!(store.chain_entry(&signer.id(), Seq(2)).unwrap(), Some(b2.id()));
    assert!(store.equivocations().unwrap().is_empty());
}

#[test]
fn equivocation_keeps_both_bodies_as_evidence() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(2);
    let first = Spec::new(1, None, 1_000).title("the first story").sign(&signer);
    let second = Spec::new(1, None, 1_000).title("a different story").sign(&signer);
    assert_ne!(first.id(), second.id());

    assert_eq!(insert(&store, &signer, &[&first]), vec![Stored::New]);
    assert_eq!(
        insert(&store, &signer, &[&second]),
        vec![Stored::Equivocation { other: first.id() }]
    );
    // Offering the second body again changes nothing.
    assert_eq!(insert(&store, &signer, &[&second]), vec![Stored::AlreadyHeld]);
    assert_eq!(insert(&store, &signer, &[&first]), vec![Stored::AlreadyHeld]);

    assert_eq!(store.count().unwrap(), 2);
    for b in [&first, &second] {
        assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
        assert_eq!(store.signer_of(&b.id()).unwrap(), Some(member_of(&signer)));
    }
    // The first body stays the chain entry; the chain itself is one long.
    assert_eq!(store.chain_entry(&signer.id(), Seq(1)).unwrap(), Some(first.id()));
    assert_eq!(store.head(&signer.id()).unwrap(), head(1, 1));

    let evidence = store.equivocations().unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!(store.evidence_held().unwrap(), 1, "what a node's status reports");
    let (k, seq, both) = &evidence[0];
    assert_eq!((*k, *seq), (signer.id(), Seq(1)));
    assert_eq!(
        both.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([first.id(), second.id()])
    );
}

#[test]
fn equivocation_within_one_batch() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(3);
    let b1 = Spec::new(1, None, 10).sign(&signer);
    let a2 = Spec::new(2, Some(b1.id()), 11)
        .title("two, version a")
        .sign(&signer);
    let b2 = Spec::new(2, Some(b1.id()), 11)
        .title("two, version b")
        .sign(&signer);

    assert_eq!(
        insert(&store, &signer, &[&b1, &a2, &b2]),
        vec![Stored::New, Stored::New, Stored::Equivocation { other: a2.id() }]
    );
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));
    let evidence = store.equivocations().unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!(store.evidence_held().unwrap(), 1);
    assert_eq!((evidence[0].0, evidence[0].1), (signer.id(), Seq(2)));
    assert_eq!(
        evidence[0].2.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([a2.id(), b2.id()])
    );
}

#[test]
fn evidence_is_listed_key_by_key() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (one, two) = (key(6), key(7));
    let mut expected = Vec::new();
    for signer in [&one, &two] {
        let a = Spec::new(1, None, 10).title("version a").sign(signer);
        let b = Spec::new(1, None, 10).title("version b").sign(signer);
        insert(&store, signer, &[&a, &b]);
        expected.push((signer.id(), BTreeSet::from([a.id(), b.id()])));
    }
    assert_eq!(store.equivocations().unwrap().len(), 2);
    for (key, both) in expected {
        let evidence = store.equivocations_of(&key).unwrap();
        assert_eq!(evidence.len(), 1, "only this key's evidence");
        assert_eq!((evidence[0].0, evidence[0].1), (key, Seq(1)));
        assert_eq!(evidence[0].2.iter().copied().collect::<BTreeSet<_>>(), both);
    }
    assert!(store.equivocations_of(&key(8).id()).unwrap().is_empty());
}

#[test]
fn chain_heads_track_gaps_and_fill_them() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(4);
    let other = key(5);
    let c = chain(&signer, 6, 2_000);
    assert_eq!(store.head(&signer.id()).unwrap(), head(0, 0));

    insert(&store, &signer, &[&c[0], &c[1]]);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));

    // 3 missing: the contiguous head stays at 2 while the highest moves on.
    insert(&store, &signer, &[&c[3]]);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 4));
    insert(&store, &signer, &[&c[4]]);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 5));

    // Another key's chain is separate and starts with a gap.
    let o = chain(&other, 2, 3_000);
    insert(&store, &other, &[&o[1]]);
    assert_eq!(store.head(&other.id()).unwrap(), head(0, 2));

    let heads: Vec<(herald_protocol::KeyId, ChainHead)> = store.heads().unwrap();
    assert_eq!(heads.len(), 2);
    assert!(heads.contains(&(signer.id(), head(2, 5))));
    assert!(heads.contains(&(other.id(), head(0, 2))));

    // Filling 3 advances the contiguous head past 4 and 5, which were already held.
    assert_eq!(insert(&store, &signer, &[&c[2]]), vec![Stored::New]);
    assert_eq!(store.head(&signer.id()).unwrap(), head(5, 5));
    assert_eq!(
        store.chain_range(&signer.id(), Seq(1), Seq(6)).unwrap(),
        (1..=5)
            .map(|s| (Seq(s), c[s as usize - 1].id()))
            .collect::<Vec<_>>()
    );

    // Gap filled and extended in one batch, out of order.
    insert(&store, &other, &[&o[0]]);
    assert_eq!(store.head(&other.id()).unwrap(), head(2, 2));
    insert(&store, &signer, &[&c[5]]);
    assert_eq!(store.head(&signer.id()).unwrap(), head(6, 6));
    assert_eq!(store.count().unwrap(), 8);
}

#[test]
fn gap_filled_within_one_batch() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(6);
    let c = chain(&signer, 4, 100);
    // Arrival order 4, 2, 1, 3 in one batch: every step sees what the batch wrote before it.
    assert_eq!(
        insert(&store, &signer, &[&c[3], &c[1], &c[0], &c[2]]),
        vec![Stored::New; 4]
    );
    assert_eq!(store.head(&signer.id()).unwrap(), head(4, 4));
    assert_eq!(store.count().unwrap(), 4);
}

#[test]
fn publish_own_numbers_and_links_the_chain() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(7);
    let me = member_of(&signer);
    let mut published = Vec::new();
    for i in 0..3u64 {
        // Whatever the draft says about signer, number and previous id is replaced.
        let mut draft = Spec::new(99, Some(BulletinId::from_bytes([9; 32])), 500 + i).body(&signer);
        draft.signer = key(99).id();
        let b = store.publish_own(&signer, &me, draft).unwrap();
        published.push(b);
    }
    // Journaled and staged: readable at once, numbered on from the journal,
    // in the chains after the next fold.
    for b in &published {
        assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
    }
    assert_eq!(store.head(&signer.id()).unwrap(), head(0, 0));
    let folded = store.fold_staged(1024).unwrap();
    assert_eq!(folded.len(), 3);
    assert!(folded.iter().all(|f| f.own && f.outcome == Stored::New));
    for (i, b) in published.iter().enumerate() {
        let body = b.body();
        assert_eq!(body.signer, signer.id());
        assert_eq!(body.seq, Seq(i as u64 + 1));
        assert_eq!(body.prev, i.checked_sub(1).map(|p| published[p].id()));
        assert_eq!(store.chain_entry(&signer.id(), body.seq).unwrap(), Some(b.id()));
        assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
        assert_eq!(store.signer_of(&b.id()).unwrap(), Some(me));
        // It verifies: what is stored is really signed by the key.
        assert!(
            signer
                .public()
                .verify_with_domain(herald_protocol::BULLETIN_DOMAIN, b.body_bytes(), b.signature())
                .is_ok()
        );
    }
    assert_eq!(store.head(&signer.id()).unwrap(), head(3, 3));
    assert_eq!(store.count().unwrap(), 3);
}

#[test]
fn publish_own_refuses_to_sign_over_a_gap() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(8);
    let c = chain(&signer, 3, 100);
    // The node's own 1 and 3 came back by sync, 2 did not: numbering on would fork the chain.
    insert(&store, &signer, &[&c[0], &c[2]]);
    let draft = Spec::new(1, None, 200).body(&signer);
    match store.publish_own(&signer, &member_of(&signer), draft) {
        Err(StoreError::Chain(message)) => assert!(message.contains("gap"), "{message}"),
        other => panic!("expected a chain error, got {other:?}"),
    }
    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(store.head(&signer.id()).unwrap(), head(1, 3));

    // Once the gap is filled, the next number is 4, linked to 3.
    insert(&store, &signer, &[&c[1]]);
    assert_eq!(store.head(&signer.id()).unwrap(), head(3, 3));
    let b = store
        .publish_own(
            &signer,
            &member_of(&signer),
            Spec::new(1, None, 201).body(&signer),
        )
        .unwrap();
    assert_eq!((b.body().seq, b.body().prev), (Seq(4), Some(c[2].id())));
}

#[test]
fn bulletins_are_found_by_the_start_of_their_id() {
    use herald_node::store::IdLookupError;
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(11);
    let c = chain(&signer, 3, 100);
    insert(&store, &signer, &[&c[0], &c[1]]);
    // The third is staged (received, not yet folded).
    store.stage(&c[2], &member_of(&signer), b"peer");
    for b in &c {
        let hex = b.id().to_string();
        for text in [
            hex.clone(),
            hex[..10].to_string(),
            hex[..9].to_uppercase(),
            hex[..8].to_string(),
        ] {
            assert_eq!(store.resolve_id(&text).unwrap(), b.id(), "{text}");
        }
    }
    let absent = "f".repeat(12);
    assert!(c.iter().all(|b| !b.id().to_string().starts_with(&absent)));
    assert!(matches!(
        store.resolve_id(&absent),
        Err(IdLookupError::NotHeld(_))
    ));
    for bad in ["", "abc1234", "not-an-id", &"0".repeat(65)] {
        let e = store.resolve_id(bad).unwrap_err();
        assert!(matches!(e, IdLookupError::Invalid(_)), "{bad}: {e}");
        assert!(e.to_string().contains("at least the first 8"), "{e}");
    }
}

#[test]
fn publish_own_signs_no_number_a_peer_has_listed() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(12);
    let me = member_of(&signer);
    let c = chain(&signer, 3, 100);
    insert(&store, &signer, &[&c[0], &c[1], &c[2]]);
    // A peer listed the chain up to 5, and has not brought 4 and 5 back yet.
    store.note_chain_claim(&signer.id(), b"peer", Seq(5)).unwrap();
    match store.publish_own(&signer, &me, Spec::new(1, None, 200).body(&signer)) {
        Err(StoreError::ChainClaimed { held, claimed }) => assert_eq!((held, claimed), (Seq(3), Seq(5))),
        other => panic!("numbered inside a chain a peer listed: {other:?}"),
    }
    assert_eq!(store.count().unwrap(), 3, "the refusal stored something");
    // A claim at or below what is held does not stop it; nor does a cleared one.
    store.note_chain_claim(&signer.id(), b"peer", Seq(3)).unwrap();
    let b = store
        .publish_own(&signer, &me, Spec::new(1, None, 201).body(&signer))
        .unwrap();
    assert_eq!(b.body().seq, Seq(4));
    store.note_chain_claim(&signer.id(), b"other", Seq(9)).unwrap();
    assert!(
        store
            .publish_own(&signer, &me, Spec::new(1, None, 202).body(&signer))
            .is_err()
    );
    store.clear_chain_claims(&signer.id(), Some(b"other")).unwrap();
    let b = store
        .publish_own(&signer, &me, Spec::new(1, None, 203).body(&signer))
        .unwrap();
    assert_eq!(b.body().seq, Seq(5));
}

/// A draft of `signer`'s with a 200 KiB payload: about 20 fill the journal
/// of own bulletins (4 MiB).
fn big_draft(signer: &SecretKey, n: u64) -> BulletinBody {
    sized_draft(signer, 1_000 + n, 200 * 1024)
}

/// A draft of `signer`'s created at `created`, with a payload of `bytes` bytes.
fn sized_draft(signer: &SecretKey, created: u64, bytes: usize) -> BulletinBody {
    let mut body = Spec::new(1, None, created).body(signer);
    body.payload.bytes = vec![b'x'; bytes];
    body
}

/// The journal of own bulletins fills up (large bulletins, never folded): the
/// store settles it into sled and starts a new epoch, mid-group too. Closed
/// without a fold, the store opens with the whole chain, and numbering goes on.
#[test]
fn own_bulletins_outlive_a_full_journal_and_a_close_without_fold() {
    let dir = TempDir::new().unwrap();
    let signer = key(9);
    let me = member_of(&signer);
    let big = |n: u64| big_draft(&signer, n);
    let mut published = Vec::new();
    {
        let store = open(&dir);
        // 4 MiB hold about 20 of these: the third group crosses the end.
        for group in 0..5u64 {
            let drafts = (0..7).map(|i| big(group * 7 + i)).collect();
            for outcome in store.publish_own_group(&signer, &me, drafts).unwrap() {
                published.push(outcome.unwrap());
            }
        }
        for (i, b) in published.iter().enumerate() {
            assert_eq!(b.body().seq, Seq(i as u64 + 1));
            assert_eq!(b.body().prev, i.checked_sub(1).map(|p| published[p].id()));
        }
    }
    let store = open(&dir);
    assert_eq!(store.head(&signer.id()).unwrap(), head(35, 35));
    assert_eq!(store.count().unwrap(), 35);
    for b in &published {
        assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
    }
    assert!(store.equivocations().unwrap().is_empty());
    let next = store.publish_own(&signer, &me, big(99)).unwrap();
    assert_eq!(
        (next.body().seq, next.body().prev),
        (Seq(36), Some(published[34].id()))
    );
}

/// `held_count` counts what `list` can show, each bulletin once: staged ones
/// before their fold, and the node's own that a full journal stored in sled
/// while they were still staged.
#[test]
fn held_count_counts_staged_bulletins_once() {
    let dir = TempDir::new().unwrap();
    let signer = key(15);
    let me = member_of(&signer);
    let store = open(&dir);
    let small = store
        .publish_own_group(&signer, &me, vec![Spec::new(1, None, 10).body(&signer)])
        .unwrap();
    assert!(small[0].is_ok());
    assert_eq!((store.count().unwrap(), store.held_count().unwrap()), (0, 1));
    // About 20 fill the journal: it settles the staged ones into sled.
    for n in 0..29 {
        store.publish_own(&signer, &me, big_draft(&signer, n)).unwrap();
    }
    let folded = store.count().unwrap();
    assert!(
        (1..30).contains(&folded),
        "the journal settled once: {folded} in sled"
    );
    assert_eq!(store.staged_count(), 30);
    assert_eq!(store.held_count().unwrap(), 30);
    store.fold_staged(1024).unwrap();
    assert_eq!(
        (
            store.count().unwrap(),
            store.staged_count(),
            store.held_count().unwrap()
        ),
        (30, 0, 30)
    );
}

/// A damaged store's journal of own bulletins carried into a new store
/// (docs/OPERATIONS.md, "A damaged store"): the bulletins of its current epoch
/// come back, and the store will not number a new bulletin while the chain
/// before them is missing, so it cannot sign a number it used; once sync or a
/// bundle brings that back, numbering goes on after the last one.
#[test]
fn a_journal_carried_into_a_new_store_keeps_numbers_from_being_signed_twice() {
    let damaged = TempDir::new().unwrap();
    let signer = key(14);
    let me = member_of(&signer);
    let big = |n: u64| big_draft(&signer, n);
    // About 20 of these fill the journal: it settles and starts a new epoch.
    let published: Vec<SignedBulletin> = {
        let store = open(&damaged);
        (0..30)
            .map(|n| store.publish_own(&signer, &me, big(n)).unwrap())
            .collect()
    };
    let fresh = TempDir::new().unwrap();
    std::fs::copy(
        damaged.path().join("own-journal"),
        fresh.path().join("own-journal"),
    )
    .unwrap();
    let store = open(&fresh);
    // The journal's current epoch: the last bulletins, not the first.
    let held = store.count().unwrap() as usize;
    assert!((1..30).contains(&held), "the journal settled once: {held} held");
    assert_eq!(store.head(&signer.id()).unwrap(), head(0, 30));
    let (missing, back) = published.split_at(30 - held);
    for b in back {
        assert!(store.get_bytes(&b.id()).unwrap().as_deref() == Some(b.as_bytes()));
    }
    let refused = store.publish_own(&signer, &me, big(99)).unwrap_err();
    assert!(refused.to_string().contains("wait for sync"), "{refused}");
    // What sync would bring: the chain before the journal's epoch.
    insert(&store, &signer, &missing.iter().collect::<Vec<_>>());
    assert_eq!(store.head(&signer.id()).unwrap(), head(30, 30));
    let next = store.publish_own(&signer, &me, big(99)).unwrap();
    assert_eq!(
        (next.body().seq, next.body().prev),
        (Seq(31), Some(published[29].id()))
    );
}

/// A journal of own bulletins carried from a store of another network (the wrong file) is
/// refused as the store opens, and left as it was.
#[test]
fn a_journal_of_another_network_is_refused() {
    let other = TempDir::new().unwrap();
    let signer = key(15);
    {
        let store = open(&other);
        store
            .publish_own(&signer, &member_of(&signer), big_draft(&signer, 1))
            .unwrap();
    }
    let fresh = TempDir::new().unwrap();
    let journal = fresh.path().join("own-journal");
    std::fs::copy(other.path().join("own-journal"), &journal).unwrap();
    let before = std::fs::read(&journal).unwrap();
    let Err(refused) = open_in(&fresh, OTHER_NETWORK) else {
        panic!("a journal of another network was taken in")
    };
    assert!(
        matches!(&refused, StoreError::Corrupt(r) if r.contains("another network") && r.contains("own-journal")),
        "{refused}"
    );
    assert_eq!(std::fs::read(&journal).unwrap(), before);
}

/// A crash while a group of own bulletins went to the disk: the blocks of one
/// write reach it in any order, so a torn record can have whole ones of the
/// same group after it. None of the group was acknowledged or gossiped. The
/// store opens with the bulletins before the tear, and numbers on from them.
#[test]
fn a_group_torn_by_a_crash_leaves_a_store_that_opens() {
    let dir = TempDir::new().unwrap();
    let signer = key(15);
    let me = member_of(&signer);
    // About 3.3 KiB each: the group spans the journal's blocks 0 to 3.
    let draft = |n: u64| sized_draft(&signer, 2_000 + n, 3_000);
    let published: Vec<SignedBulletin> = {
        let store = open(&dir);
        let outcomes = store
            .publish_own_group(&signer, &me, (0..4).map(draft).collect())
            .unwrap();
        outcomes.into_iter().map(Result::unwrap).collect()
    };
    // Closed without a fold, as a crash leaves it; then the write's second
    // block never reached the disk (zeros, as the journal was made): the
    // second and third records are torn, the fourth is whole.
    let path = dir.path().join("own-journal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096..8192].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let store = open(&dir);
    assert_eq!(store.head(&signer.id()).unwrap(), head(1, 1));
    assert_eq!(store.held_count().unwrap(), 1);
    assert!(store.get_bytes(&published[0].id()).unwrap().is_some());
    for b in &published[1..] {
        assert!(store.get_bytes(&b.id()).unwrap().is_none());
    }
    let next = store.publish_own(&signer, &me, draft(9)).unwrap();
    assert_eq!(
        (next.body().seq, next.body().prev),
        (Seq(2), Some(published[0].id()))
    );
    drop(store);
    let store = open(&dir);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));
    assert!(store.equivocations().unwrap().is_empty());
}

/// A crash that tears a group at its first record, whole records of it after: the store opens
/// with none of it, and its next group, written at the same offset and ending where a leftover
/// starts (whole blocks, as direct I/O writes them), is all that is read after another crash.
/// The leftovers, never acknowledged, are neither held nor numbered on from.
#[test]
fn a_group_torn_at_its_first_record_leaves_nothing_to_number_on_from() {
    let signer = key(16);
    let me = member_of(&signer);
    let draft = |n: u64, payload: usize| sized_draft(&signer, 3_000 + n, payload);
    // The first two records (24 + member + bulletin each) end at byte 8,192.
    let trial = TempDir::new().unwrap();
    let sizes: Vec<usize> = open(&trial)
        .publish_own_group(&signer, &me, vec![draft(0, 3_000), draft(1, 3_000)])
        .unwrap()
        .into_iter()
        .map(|b| b.unwrap().as_bytes().len())
        .collect();
    let short = 8_192 - 32 - 2 * (24 + 32) - sizes[0] - sizes[1];
    let payloads = [3_000 + short / 2, 3_000 + short - short / 2, 3_000, 3_000];
    let dir = TempDir::new().unwrap();
    let first: Vec<SignedBulletin> = {
        let store = open(&dir);
        let drafts = (0..4).map(|n| draft(n as u64, payloads[n])).collect();
        let outcomes = store.publish_own_group(&signer, &me, drafts).unwrap();
        outcomes.into_iter().map(Result::unwrap).collect()
    };
    assert_eq!(
        first[0].as_bytes().len() + first[1].as_bytes().len(),
        8_192 - 32 - 2 * 56
    );
    // The write's first block never reached the disk.
    let path = dir.path().join("own-journal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[32..4096].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let second: Vec<SignedBulletin> = {
        let store = open(&dir);
        assert_eq!(store.head(&signer.id()).unwrap(), head(0, 0));
        let drafts = (10..12).map(|n| draft(n, payloads[n as usize - 10])).collect();
        let outcomes = store.publish_own_group(&signer, &me, drafts).unwrap();
        outcomes.into_iter().map(Result::unwrap).collect()
    };
    let store = open(&dir);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));
    for b in &first {
        assert!(
            store.get_bytes(&b.id()).unwrap().is_none(),
            "never acknowledged, yet held"
        );
    }
    let next = store.publish_own(&signer, &me, draft(20, 10)).unwrap();
    assert_eq!(
        (next.body().seq, next.body().prev),
        (Seq(3), Some(second[1].id()))
    );
    assert!(store.equivocations().unwrap().is_empty());
}

/// A journal the build before wrote (layout `HRLDJNL2`: records without a group) holding two
/// bulletins the store lacks: the store takes them in, starts the journal's next epoch in the
/// current layout, and numbers on after them.
#[test]
fn a_journal_of_the_layout_before_is_taken_in_and_numbering_goes_on() {
    use sha2::{Digest, Sha256};
    let dir = TempDir::new().unwrap();
    let signer = key(17);
    let me = member_of(&signer);
    drop(open(&dir));
    let own = chain(&signer, 2, 3_000);
    let (epoch, journal_key) = (5u64, [7u8; 8]);
    let mut bytes = vec![0u8; 4 << 20];
    bytes[..8].copy_from_slice(b"HRLDJNL2");
    bytes[8..16].copy_from_slice(&epoch.to_le_bytes());
    bytes[16..24].copy_from_slice(&journal_key);
    let header_check = Sha256::new()
        .chain_update(b"HRLDJNL2")
        .chain_update(epoch.to_le_bytes())
        .chain_update(journal_key)
        .finalize();
    bytes[24..32].copy_from_slice(&header_check[..8]);
    let mut at = 32;
    for b in &own {
        let signed = b.as_bytes();
        let length = (32 + signed.len()) as u32;
        let check = Sha256::new()
            .chain_update(journal_key)
            .chain_update(length.to_le_bytes())
            .chain_update(epoch.to_le_bytes())
            .chain_update(me.as_bytes())
            .chain_update(signed)
            .finalize();
        for part in [
            &length.to_le_bytes()[..],
            &epoch.to_le_bytes(),
            &check[..8],
            me.as_bytes(),
            signed,
        ] {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }
    std::fs::write(dir.path().join("own-journal"), &bytes).unwrap();

    let store = open(&dir);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));
    assert_eq!(
        &std::fs::read(dir.path().join("own-journal")).unwrap()[..8],
        b"HRLDJNL3"
    );
    let next = store
        .publish_own(&signer, &me, Spec::new(1, None, 3_100).body(&signer))
        .unwrap();
    assert_eq!((next.body().seq, next.body().prev), (Seq(3), Some(own[1].id())));
    drop(store);
    assert_eq!(open(&dir).head(&signer.id()).unwrap(), head(3, 3));
}

/// One group larger than the whole journal: its first part is journaled, the
/// journal settles mid-group, and the rest follows. Closed without a fold, the
/// store opens with every bulletin of the group.
#[test]
fn a_group_larger_than_the_journal_outlives_a_close_without_fold() {
    let dir = TempDir::new().unwrap();
    let signer = key(13);
    let me = member_of(&signer);
    let drafts: Vec<_> = (0..25u64).map(|n| big_draft(&signer, n)).collect();
    let published: Vec<_> = {
        let store = open(&dir);
        // About 20 of these fill 4 MiB.
        let outcomes = store.publish_own_group(&signer, &me, drafts).unwrap();
        outcomes.into_iter().map(Result::unwrap).collect()
    };
    let store = open(&dir);
    assert_eq!(store.head(&signer.id()).unwrap(), head(25, 25));
    for b in &published {
        assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
    }
}

/// `holds` answers as `contains` does, asking sled only for numbers not above
/// the highest held: after batches, after a reopen, for staged bulletins and
/// for an equivocating twin. The chain summaries kept in memory are those a
/// reopen reads from sled.
#[test]
fn holds_answers_as_contains() {
    let dir = TempDir::new().unwrap();
    let signer = key(12);
    let c = chain(&signer, 6, 100);
    let twin = Spec::new(2, Some(c[0].id()), 999)
        .title("the other second")
        .sign(&signer);
    let answers = |store: &Store| -> Vec<bool> {
        c.iter()
            .chain([&twin])
            .map(|b| {
                let held = store.holds(b).unwrap();
                assert_eq!(held, store.contains(&b.id()).unwrap(), "seq {}", b.body().seq);
                held
            })
            .collect()
    };
    let in_memory = {
        let store = open(&dir);
        assert_eq!(answers(&store), vec![false; 7]);
        insert(&store, &signer, &[&c[0], &c[1], &c[2]]);
        assert_eq!(answers(&store), [true, true, true, false, false, false, false]);
        // Above the highest, staged: held.
        store.stage(&c[4], &member_of(&signer), b"peer");
        assert_eq!(answers(&store), [true, true, true, false, true, false, false]);
        store.fold_staged(16).unwrap();
        insert(&store, &signer, &[&c[3]]);
        assert_eq!(answers(&store), [true, true, true, true, true, false, false]);
        store.flush().unwrap();
        store.summaries().unwrap()
    };
    // The heads in memory were sled's: a reopen reads the same from sled.
    let store = open(&dir);
    assert_eq!(store.summaries().unwrap(), in_memory);
    assert_eq!(answers(&store), [true, true, true, true, true, false, false]);
    insert(&store, &signer, &[&twin, &c[5]]);
    assert_eq!(answers(&store), vec![true; 7]);
    assert_eq!(store.summary(&signer.id()).evidence, 1);
    store.flush().unwrap();
    drop(store);
    let reopened = open(&dir);
    assert_eq!(reopened.summary(&signer.id()).evidence, 1);
}

#[test]
fn query_filters_newest_first() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (k1, k2) = (key(10), key(11));
    let emergency = Kind::EmergencyAlert;
    let update = Kind::SoftwareUpdate {
        stage: UpdateStage::Released,
    };
    let incident = Kind::IncidentReport {
        phase: IncidentPhase::Ongoing,
    };
    // (signer, kind, tlp, severity, created); created times all differ.
    let plan: Vec<(&SecretKey, Kind, Tlp, Severity, u64)> = vec![
        (&k1, emergency.clone(), Tlp::Red, Severity::Critical, 1_000),
        (&k2, update.clone(), Tlp::Green, Severity::Low, 1_001),
        (&k1, incident.clone(), Tlp::Amber, Severity::High, 1_002),
        (&k2, emergency.clone(), Tlp::Green, Severity::Medium, 1_003),
        (&k1, update.clone(), Tlp::Clear, Severity::Informational, 1_004),
        (&k2, incident.clone(), Tlp::Red, Severity::High, 1_005),
        (&k1, emergency.clone(), Tlp::Green, Severity::High, 1_006),
    ];
    let mut next_seq = std::collections::HashMap::new();
    let mut all: Vec<SignedBulletin> = Vec::new();
    for (signer, kind, tlp, severity, created) in &plan {
        let (seq, prev) = next_seq.get(&signer.id()).copied().unwrap_or((1, None));
        let b = Spec::new(seq, prev, *created)
            .kind(kind.clone())
            .tlp(*tlp)
            .severity(*severity)
            .sign(signer);
        next_seq.insert(signer.id(), (seq + 1, Some(b.id())));
        all.push(b);
    }
    // Inserted newest first: the order of results comes from the index, not from arrival.
    for (i, b) in all.iter().enumerate().rev() {
        let signer = plan[i].0;
        insert(&store, signer, &[b]);
    }
    let newest_first = |pred: &dyn Fn(usize) -> bool| -> Vec<BulletinId> {
        (0..all.len())
            .rev()
            .filter(|&i| pred(i))
            .map(|i| all[i].id())
            .collect()
    };
    let run = |q: Query| ids(&store.query(&q).unwrap());

    assert_eq!(run(Query::default()), newest_first(&|_| true));
    assert_eq!(
        run(Query {
            kind: Some("emergency".into()),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].1 == emergency)
    );
    assert_eq!(
        run(Query {
            member: Some(member_of(&k2)),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].0.id() == k2.id())
    );
    assert_eq!(
        run(Query {
            tlp: Some(Tlp::Red),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].2 == Tlp::Red)
    );
    assert_eq!(
        run(Query {
            min_severity: Some(Severity::High),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].3 >= Severity::High)
    );
    assert_eq!(
        run(Query {
            since: Some(Timestamp(1_004)),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].4 >= 1_004)
    );
    assert_eq!(
        run(Query {
            until: Some(Timestamp(1_002)),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].4 < 1_002)
    );
    assert_eq!(
        run(Query {
            limit: 2,
            ..Query::default()
        }),
        newest_first(&|_| true)[..2].to_vec()
    );
    // Several filters at once.
    assert_eq!(
        run(Query {
            member: Some(member_of(&k1)),
            min_severity: Some(Severity::High),
            since: Some(Timestamp(1_001)),
            ..Query::default()
        }),
        newest_first(&|i| plan[i].0.id() == k1.id() && plan[i].3 >= Severity::High && plan[i].4 >= 1_001)
    );
    assert_eq!(
        run(Query {
            kind: Some("emergency".into()),
            tlp: Some(Tlp::Green),
            limit: 1,
            ..Query::default()
        }),
        vec![all[6].id()]
    );
    assert!(
        run(Query {
            kind: Some("withdrawal".into()),
            ..Query::default()
        })
        .is_empty()
    );
}

/// A genesis of three members (threshold 2) and a second version revoking a signing key.
fn registry_history() -> (SignedRegistryUpdate, SignedRegistryUpdate) {
    let members: Vec<[SecretKey; 3]> = (0..3u8)
        .map(|i| [1, 2, 3].map(|r| key(100 + i * 3 + r)))
        .collect();
    let mut ops: Vec<RegistryOp> = members
        .iter()
        .enumerate()
        .map(|(i, [m, s, n])| {
            RegistryOp::AddMember(MemberEntry {
                id: MemberId::derive(&m.id()),
                name: format!("member-{i}"),
                member_key: m.id(),
                signing_keys: vec![s.id()],
                node_ids: vec![n.public().node_id()],
            })
        })
        .collect();
    ops.push(RegistryOp::SetThreshold { threshold: 2 });
    let body = RegistryUpdate {
        format: herald_protocol::registry::REGISTRY_FORMAT,
        version: RegistryVersion::GENESIS,
        prev: None,
        created: Timestamp(1),
        ops,
    };
    let mut genesis = herald_keys::propose_update(&body).unwrap();
    for k in members.iter().flatten() {
        let a = herald_keys::approve(k, &genesis);
        genesis.push_approval(a).unwrap();
    }
    let body = RegistryUpdate {
        format: herald_protocol::registry::REGISTRY_FORMAT,
        version: RegistryVersion(2),
        prev: Some(genesis.hash()),
        created: Timestamp(2),
        ops: vec![RegistryOp::RevokeSigningKey {
            member: MemberId::derive(&members[0][0].id()),
            key: members[0][1].id(),
            from: RevocationPoint::Seq(Seq(5)),
        }],
    };
    let mut v2 = herald_keys::propose_update(&body).unwrap();
    for m in &members[..2] {
        let a = herald_keys::approve(&m[0], &v2);
        v2.push_approval(a).unwrap();
    }
    (genesis, v2)
}

#[test]
fn registry_history_saves_and_loads() {
    let dir = TempDir::new().unwrap();
    let (genesis, v2) = registry_history();
    {
        let store = open(&dir);
        assert!(store.registry_history().unwrap().is_empty());
        store.save_registry_update(&genesis).unwrap();
        store.save_registry_update(&v2).unwrap();
        // Saving the same version again is harmless.
        store.save_registry_update(&v2).unwrap();
        assert_eq!(
            store.registry_history().unwrap(),
            vec![genesis.clone(), v2.clone()]
        );
        store.flush().unwrap();
    }
    let store = open(&dir);
    let history = store.registry_history().unwrap();
    assert_eq!(history, vec![genesis.clone(), v2.clone()]);
    for (loaded, original) in history.iter().zip([&genesis, &v2]) {
        assert_eq!(loaded.to_bytes(), original.to_bytes());
    }
    // The loaded history rebuilds the registry it came from.
    let registry = Registry::from_history(history, genesis.hash()).unwrap();
    assert_eq!(registry.version(), RegistryVersion(2));
    assert_eq!(registry.hash(), v2.hash());
}

#[test]
fn registry_history_is_read_up_to_a_missing_version() {
    let dir = TempDir::new().unwrap();
    let (genesis, v2) = registry_history();
    let store = open(&dir);
    // Version 2 saved before the genesis (an earlier build's crash between
    // two saves): left out until the genesis is there.
    store.save_registry_update(&v2).unwrap();
    assert!(store.registry_history().unwrap().is_empty());
    store.save_registry_update(&genesis).unwrap();
    assert_eq!(store.registry_history().unwrap(), vec![genesis, v2]);
}

#[test]
fn stored_registry_versions_that_do_not_follow_are_dropped() {
    let dir = TempDir::new().unwrap();
    let (genesis, v2) = registry_history();
    let store = open(&dir);
    // What an earlier build could leave: a version 3 of another branch after 2, and a 4 after it.
    let stray = |version: u64| {
        herald_keys::propose_update(&RegistryUpdate {
            format: herald_protocol::registry::REGISTRY_FORMAT,
            version: RegistryVersion(version),
            prev: Some(herald_protocol::RegistryHash::from_bytes([9; 32])),
            created: Timestamp(version),
            ops: vec![RegistryOp::SetThreshold { threshold: 2 }],
        })
        .unwrap()
    };
    for update in [&genesis, &v2, &stray(3), &stray(4)] {
        store.save_registry_update(update).unwrap();
    }
    // Evidence of a fork at version 3, which is no fork of the history taken (version 2 is
    // the last).
    store.save_registry_fork(&stray(3)).unwrap();
    // And a mark of it as contested (the other branch holding a change that needs the
    // threshold too), which stands for no fork held either.
    store.save_registry_contested(RegistryVersion(3)).unwrap();
    // A command that only reads builds the registry the same way and changes nothing: the
    // store may be a copy kept as evidence.
    let read =
        herald_node::node::stored_registry(&store, genesis.hash(), herald_node::node::SavedForks::ReadOnly)
            .unwrap()
            .expect("a registry");
    assert_eq!(read.version(), RegistryVersion(2));
    assert_eq!(store.registry_history().unwrap().len(), 4, "nothing dropped");
    assert_eq!(
        store.registry_forks().unwrap(),
        vec![stray(3)],
        "no evidence dropped"
    );
    assert_eq!(
        store.registry_contested().unwrap(),
        vec![RegistryVersion(3)],
        "no mark dropped"
    );
    assert_eq!(read.contested().count(), 0, "a mark of no fork held is not taken");
    let registry =
        herald_node::node::stored_registry(&store, genesis.hash(), herald_node::node::SavedForks::Settle)
            .unwrap()
            .expect("a registry");
    assert_eq!(registry.version(), RegistryVersion(2));
    assert_eq!(
        store.registry_history().unwrap(),
        vec![genesis.clone(), v2.clone()]
    );
    assert_eq!(
        store.registry_forks().unwrap(),
        vec![],
        "evidence of no fork held"
    );
    assert_eq!(store.registry_contested().unwrap(), vec![], "nor its mark");
    // Version 4 went too: a version 3 saved now is the last.
    store.save_registry_update(&stray(3)).unwrap();
    assert_eq!(store.registry_history().unwrap().len(), 3);
    store.drop_registry_after(RegistryVersion(2)).unwrap();
    // A version that chains on the one before but that the rules refuse (here, approved by
    // no one; in practice a rule this build has and the one that stored it had not): the start
    // fails, and the store is left as it is.
    let unapproved = herald_keys::propose_update(&RegistryUpdate {
        format: herald_protocol::registry::REGISTRY_FORMAT,
        version: RegistryVersion(3),
        prev: Some(v2.hash()),
        created: Timestamp(3),
        ops: vec![RegistryOp::SetThreshold { threshold: 3 }],
    })
    .unwrap();
    store.save_registry_update(&unapproved).unwrap();
    let Err(refused) =
        herald_node::node::stored_registry(&store, genesis.hash(), herald_node::node::SavedForks::Settle)
    else {
        panic!("a version the rules refuse was taken")
    };
    assert!(refused.to_string().contains("version 3"), "{refused}");
    assert_eq!(
        store.registry_history().unwrap(),
        vec![genesis.clone(), v2.clone(), unapproved]
    );
    // An empty store holds none.
    let empty = TempDir::new().unwrap();
    assert!(
        herald_node::node::stored_registry(
            &open(&empty),
            genesis.hash(),
            herald_node::node::SavedForks::Settle
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn registry_updates_are_saved_before_the_registry_moves_on() {
    let dir = TempDir::new().unwrap();
    let (genesis, v2) = registry_history();
    let store = open(&dir);
    store.save_registry_update(&genesis).unwrap();
    let registry = std::sync::RwLock::new(Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap());
    let apply = |update: &SignedRegistryUpdate| {
        herald_node::validate::apply_registry_update(&registry, &store, update.clone()).unwrap()
    };
    assert!(matches!(
        apply(&v2),
        Ok(herald_keys::Applied::Advanced(RegistryVersion(2)))
    ));
    assert_eq!(registry.read().unwrap().version(), RegistryVersion(2));
    assert_eq!(
        store.registry_history().unwrap(),
        vec![genesis.clone(), v2.clone()]
    );
    // Again: held, nothing saved twice.
    assert!(matches!(apply(&v2), Ok(herald_keys::Applied::AlreadyHeld)));
    // Beyond the next version: a gap, nothing saved.
    let mut body = v2.body().clone();
    body.version = RegistryVersion(4);
    let v4 = herald_keys::propose_update(&body).unwrap();
    assert!(matches!(apply(&v4), Err(herald_keys::RegistryError::Gap { .. })));
    assert_eq!(registry.read().unwrap().version(), RegistryVersion(2));
    assert_eq!(store.registry_history().unwrap(), vec![genesis, v2]);
}

#[test]
fn a_store_left_half_created_by_a_crash_is_created_again() {
    let dir = TempDir::new().unwrap();
    // What an earlier build could leave: the schema written, the network
    // not yet (it wrote them apart), nothing else.
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(b"schema", &5u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.count().unwrap(), 0);
    drop(store);
    // Created for its network, as a new store is.
    assert!(matches!(
        open_in(&dir, NetworkId::from_bytes([9; 32])),
        Err(StoreError::WrongNetwork { .. })
    ));
    assert!(open_in(&dir, NETWORK).is_ok());
}

#[test]
fn reopen_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (key(20), key(21));
    let ca = chain(&a, 3, 10_000);
    let cb = chain(&b, 4, 20_000);
    let twin = Spec::new(2, Some(ca[0].id()), 10_001)
        .title("the other second")
        .sign(&a);
    let (genesis, _) = registry_history();
    let before = {
        let store = open(&dir);
        insert(&store, &a, &[&ca[0], &ca[1], &ca[2], &twin]);
        // b's 3 is missing: a gap that must survive too.
        insert(&store, &b, &[&cb[0], &cb[1], &cb[3]]);
        let own = store
            .publish_own(
                &key(22),
                &member_of(&key(22)),
                Spec::new(1, None, 30_000).body(&key(22)),
            )
            .unwrap();
        store.save_registry_update(&genesis).unwrap();
        store.flush().unwrap();
        let mut heads = store.heads().unwrap();
        heads.sort_by_key(|(k, _)| *k);
        (
            store.count().unwrap(),
            heads,
            store.equivocations().unwrap(),
            ids(&store.query(&Query::default()).unwrap()),
            own,
        )
    };
    let (count, mut heads, equivocations, listed, own) = before;
    // The own bulletin was journaled and staged, not folded: the store was
    // closed as a crash would leave it. Opening replays the journal.
    assert_eq!(count, 7);

    let store = open(&dir);
    assert_eq!(store.count().unwrap(), count + 1);
    heads.push((key(22).id(), head(1, 1)));
    heads.sort_by_key(|(k, _)| *k);
    let mut reopened_heads = store.heads().unwrap();
    reopened_heads.sort_by_key(|(k, _)| *k);
    assert_eq!(reopened_heads, heads);
    assert!(heads.contains(&(b.id(), head(2, 4))));
    assert_eq!(store.equivocations().unwrap(), equivocations);
    assert_eq!(ids(&store.query(&Query::default()).unwrap()), listed);
    for bulletin in ca.iter().chain(&cb).chain([&twin, &own]) {
        if bulletin.id() == cb[2].id() {
            assert!(!store.contains(&bulletin.id()).unwrap());
            continue;
        }
        assert_eq!(
            store.get_bytes(&bulletin.id()).unwrap().as_deref(),
            Some(bulletin.as_bytes())
        );
    }
    assert_eq!(store.registry_history().unwrap(), vec![genesis]);

    // The own chain continues where it stopped.
    let next = store
        .publish_own(
            &key(22),
            &member_of(&key(22)),
            Spec::new(1, None, 30_001).body(&key(22)),
        )
        .unwrap();
    assert_eq!((next.body().seq, next.body().prev), (Seq(2), Some(own.id())));
    // And b's gap is filled as it would be by sync.
    insert(&store, &b, &[&cb[2]]);
    assert_eq!(store.head(&b.id()).unwrap(), head(4, 4));
}

#[test]
fn opening_with_another_network_fails() {
    let dir = TempDir::new().unwrap();
    let b = chain(&key(30), 1, 1).remove(0);
    {
        let store = open(&dir);
        insert(&store, &key(30), &[&b]);
        store.flush().unwrap();
    }
    match open_in(&dir, OTHER_NETWORK) {
        Err(StoreError::WrongNetwork { expected, found }) => {
            assert_eq!((expected, found), (OTHER_NETWORK, NETWORK));
        }
        other => panic!("expected WrongNetwork, got {other:?}"),
    }
    // The refusal changed nothing: the right network still opens with its data.
    let store = open(&dir);
    assert_eq!(store.count().unwrap(), 1);
    assert_eq!(store.get_bytes(&b.id()).unwrap().as_deref(), Some(b.as_bytes()));
}

#[test]
fn kinds_are_indexed_by_name() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(40);
    let kinds = [
        Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::Fixed,
        },
        Kind::ProductSecurity,
        Kind::Outreach,
        Kind::EmergencyAlert,
    ];
    let mut prev = None;
    for (i, kind) in kinds.iter().enumerate() {
        let b = Spec::new(i as u64 + 1, prev, 50 + i as u64)
            .kind(kind.clone())
            .sign(&signer);
        prev = Some(b.id());
        insert(&store, &signer, &[&b]);
    }
    for kind in &kinds {
        let found = store
            .query(&Query {
                kind: Some(kind.name().into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(found.len(), 1, "{}", kind.name());
        assert_eq!(found[0].body().kind.name(), kind.name());
    }
}

#[test]
fn equivocating_body_twice_in_one_batch_counts_once() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(41);
    let first = Spec::new(1, None, 1).title("first").sign(&signer);
    let second = Spec::new(1, None, 1).title("second").sign(&signer);
    insert(&store, &signer, &[&first]);
    // The same equivocating body validated twice (say from two peers) before the writer ran.
    let outcomes = insert(&store, &signer, &[&second, &second]);
    assert_eq!(
        outcomes,
        vec![Stored::Equivocation { other: first.id() }, Stored::AlreadyHeld]
    );
    assert_eq!(store.count().unwrap(), 2);
}

/// A sender's peer id bytes, as the network stages them (any bytes will do for the store).
const FROM: &[u8] = b"peer that sent it";

#[test]
fn a_staged_bulletin_is_readable_at_once_and_indexed_when_folded() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(1);
    let c = chain(&signer, 3, 100);
    assert!(
        store.stage(&c[0], &member_of(&signer), FROM),
        "the first staged says so"
    );
    assert!(!store.stage(&c[1], &member_of(&signer), FROM));
    // Staging the same bulletin again counts it once.
    assert!(!store.stage(&c[1], &member_of(&signer), FROM));
    assert_eq!(store.staged_count(), 2);
    assert!(store.stages_from(&member_of(&signer)));
    assert!(!store.stages_from(&member_of(&key(2))));

    // Held and readable, byte for byte, before any fold.
    assert!(store.contains(&c[1].id()).unwrap());
    assert_eq!(store.get_bytes(&c[1].id()).unwrap().unwrap(), c[1].to_bytes());
    assert_eq!(store.signer_of(&c[0].id()).unwrap(), Some(member_of(&signer)));
    // Listed at once, but not yet in the chains or the count.
    assert_eq!(store.query(&Query::default()).unwrap().len(), 2);
    assert_eq!(store.count().unwrap(), 0);
    assert_eq!(store.head(&signer.id()).unwrap(), head(0, 0));

    let folded = store.fold_staged(1024).unwrap();
    assert_eq!(folded.len(), 2);
    assert!(folded.iter().all(|f| f.outcome == Stored::New && f.from == FROM));
    assert_eq!(store.staged_count(), 0);
    assert!(!store.stages_from(&member_of(&signer)));
    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));
    assert_eq!(store.query(&Query::default()).unwrap().len(), 2);
    assert_eq!(store.get_bytes(&c[0].id()).unwrap().unwrap(), c[0].to_bytes());
    assert!(
        store.fold_staged(1024).unwrap().is_empty(),
        "nothing left to fold"
    );

    // Folding the same bulletin again (staged twice, say by two paths) changes nothing.
    store.stage(&c[0], &member_of(&signer), FROM);
    let again = store.fold_staged(1024).unwrap();
    assert_eq!(again[0].outcome, Stored::AlreadyHeld);
    assert_eq!(store.count().unwrap(), 2);
}

#[test]
fn a_fold_takes_the_oldest_staged_first_and_leaves_the_rest_readable() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(9);
    let c = chain(&signer, 5, 900);
    for b in &c {
        store.stage(b, &member_of(&signer), FROM);
    }
    // Staging the same bulletin twice holds it once.
    assert!(!store.stage(&c[0], &member_of(&signer), FROM));
    assert_eq!(store.staged_count(), 5);

    let first = store.fold_staged(2).unwrap();
    let folded: Vec<_> = first.iter().map(|f| f.bulletin.id()).collect();
    assert_eq!(folded, vec![c[0].id(), c[1].id()], "oldest first");
    assert_eq!(store.staged_count(), 3);
    assert_eq!(store.head(&signer.id()).unwrap(), head(2, 2));
    // What is still staged is readable, and not yet in the chain.
    assert_eq!(store.get_bytes(&c[4].id()).unwrap().unwrap(), c[4].to_bytes());
    assert_eq!(store.chain_entry(&signer.id(), Seq(5)).unwrap(), None);

    assert_eq!(store.fold_staged(1024).unwrap().len(), 3);
    assert_eq!(store.staged_count(), 0);
    assert_eq!(store.head(&signer.id()).unwrap(), head(5, 5));
    assert_eq!(store.count().unwrap(), 5);
}

#[test]
fn listings_merge_staged_bulletins_in_order_with_filters_and_limit() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(10);
    // Created at 1000, 1001, ... : folded ones and staged ones interleave.
    let c = chain(&signer, 6, 1000);
    insert(&store, &signer, &[&c[0], &c[2], &c[4]]);
    for b in [&c[1], &c[3], &c[5]] {
        store.stage(b, &member_of(&signer), FROM);
    }
    let all = ids(&store.query(&Query::default()).unwrap());
    let newest_first: Vec<_> = c.iter().rev().map(|b| b.id()).collect();
    assert_eq!(all, newest_first);

    let limited = Query {
        limit: 3,
        ..Query::default()
    };
    assert_eq!(ids(&store.query(&limited).unwrap()), newest_first[..3].to_vec());
    let window = Query {
        since: Some(c[1].body().created),
        until: Some(c[4].body().created),
        ..Query::default()
    };
    assert_eq!(
        ids(&store.query(&window).unwrap()),
        vec![c[3].id(), c[2].id(), c[1].id()]
    );
    let elsewhere = Query {
        member: Some(member_of(&key(11))),
        ..Query::default()
    };
    assert!(store.query(&elsewhere).unwrap().is_empty());

    // Once folded, each is listed once.
    store.fold_staged(1024).unwrap();
    assert_eq!(ids(&store.query(&Query::default()).unwrap()), newest_first);
}

#[test]
fn folding_finds_equivocation_and_keeps_both_bodies() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(2);
    let first = Spec::new(1, None, 10).sign(&signer);
    let second = Spec::new(1, None, 10).title("the other body").sign(&signer);
    insert(&store, &signer, &[&first]);
    store.stage(&second, &member_of(&signer), FROM);
    let folded = store.fold_staged(1024).unwrap();
    assert_eq!(folded[0].outcome, Stored::Equivocation { other: first.id() });
    assert_eq!(store.get_bytes(&second.id()).unwrap().unwrap(), second.to_bytes());
    assert_eq!(store.chain_entry(&signer.id(), Seq(1)).unwrap(), Some(first.id()));
    assert_eq!(store.equivocations().unwrap().len(), 1);
}

/// Writes `bulletins` into the store in `dir` as earlier builds staged them in
/// sled (`s` id -> sender length, sender, member, signed bytes).
fn leave_staged(dir: &TempDir, signer: &SecretKey, bulletins: &[&SignedBulletin]) {
    let db = raw_sled(dir);
    let tree = db.open_tree("bulletins/v1").unwrap();
    for b in bulletins {
        let mut key = vec![b's'];
        key.extend_from_slice(b.id().as_bytes());
        let mut value = vec![FROM.len() as u8];
        value.extend_from_slice(FROM);
        value.extend_from_slice(member_of(signer).as_bytes());
        value.extend_from_slice(&b.to_bytes());
        tree.insert(key, value).unwrap();
    }
    db.flush().unwrap();
}

#[test]
fn staged_bulletins_are_folded_by_a_clean_stop_and_not_kept_by_a_crash() {
    let dir = TempDir::new().unwrap();
    let signer = key(8);
    let c = chain(&signer, 3, 800);
    {
        let store = open(&dir);
        store.stage(&c[0], &member_of(&signer), FROM);
        store.fold_staged(1024).unwrap();
        store.stage(&c[1], &member_of(&signer), FROM);
        store.stage(&c[2], &member_of(&signer), FROM);
        store.flush().unwrap();
        // Dropped with two staged and not folded, as by a crash: staging is in
        // memory, like sled's unflushed writes, so they are gone; sync fetches
        // them again.
    }
    let store = open(&dir);
    assert_eq!(store.staged_count(), 0);
    assert_eq!(store.count().unwrap(), 1);
    assert!(store.contains(&c[0].id()).unwrap());
    assert!(!store.contains(&c[1].id()).unwrap());
    assert_eq!(store.head(&signer.id()).unwrap(), head(1, 1));
}

#[test]
fn what_an_earlier_build_left_staged_is_folded_on_open() {
    let dir = TempDir::new().unwrap();
    let signer = key(3);
    let c = chain(&signer, 4, 500);
    {
        let store = open(&dir);
        insert(&store, &signer, &[&c[0]]);
        store.flush().unwrap();
    }
    leave_staged(&dir, &signer, &[&c[1], &c[2], &c[3]]);
    let store = open(&dir);
    assert_eq!(store.staged_count(), 0);
    assert_eq!(store.count().unwrap(), 4);
    assert_eq!(store.head(&signer.id()).unwrap(), head(4, 4));
    assert_eq!(ids(&store.query(&Query::default()).unwrap()).len(), 4);
    // The next number of this chain follows the folded head.
    let next = store.publish_own(
        &signer,
        &member_of(&signer),
        Spec::new(0, None, 600).body(&signer),
    );
    assert_eq!(next.unwrap().body().seq, Seq(5));
}

/// The store's sled database itself, waiting (at most 5 s) for the lock as [`open_in`] does.
fn raw_sled(dir: &TempDir) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(dir.path()) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result.unwrap(),
        }
    }
}

/// A follow-up by `by` on `target`, numbered `seq` (after `prev`).
fn follow_up_on(
    by: &SecretKey,
    seq: u64,
    prev: Option<BulletinId>,
    target: BulletinId,
    created: u64,
) -> SignedBulletin {
    Spec::new(seq, prev, created)
        .kind(Kind::FollowUp {
            on: target,
            action: herald_protocol::FollowUpAction::Acknowledge,
        })
        .sign(by)
}

/// The ids of what came at or after `since` (ms), latest arrival first.
fn arrived_since(store: &Store, since: u64) -> Vec<BulletinId> {
    let query = Query {
        arrived_since: Some(Timestamp(since)),
        ..Query::default()
    };
    store
        .query(&query)
        .unwrap()
        .iter()
        .map(SignedBulletin::id)
        .collect()
}

fn now_ms() -> u64 {
    herald_node::node::now().0
}

#[test]
fn a_store_of_an_older_schema_opens_gets_its_indexes_and_is_marked_current() {
    for old in [2u32, 3, 4] {
        let dir = TempDir::new().unwrap();
        let (author, other) = (key(4), key(5));
        let c = chain(&author, 2, 50);
        let answer = follow_up_on(&other, 1, None, c[0].id(), 60);
        // Made a day ahead of this clock: it counts as arriving at the upgrade.
        let ahead = Spec::new(3, Some(c[1].id()), now_ms() + 86_400_000).sign(&author);
        {
            let store = open(&dir);
            insert(&store, &author, &[&c[0], &c[1], &ahead]);
            insert(&store, &other, &[&answer]);
            store.flush().unwrap();
        }
        // Make it as an older schema left it: no index of arrivals (nor of
        // answers, before schema 4), or part of one (an upgrade stopped
        // part way).
        {
            let db = raw_sled(&dir);
            let bulletins = db.open_tree("bulletins/v1").unwrap();
            let arrivals: Vec<_> = bulletins.scan_prefix(b"r").keys().map(Result::unwrap).collect();
            assert_eq!(arrivals.len(), 4, "one entry per bulletin");
            for k in &arrivals[1..] {
                bulletins.remove(k).unwrap();
            }
            let answers: Vec<_> = bulletins.scan_prefix(b"a").keys().map(Result::unwrap).collect();
            assert_eq!(answers.len(), 1, "one follow-up, one entry");
            for k in answers.into_iter().filter(|_| old < 4) {
                bulletins.remove(k).unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert("schema", &old.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let before = now_ms();
        let store = open(&dir);
        assert_eq!(store.count().unwrap(), 4);
        assert_eq!(
            store.answers_to(&c[0]).unwrap().follow_ups,
            vec![answer.id()],
            "from schema {old}"
        );
        // Each once, as arriving when it was made, or at the upgrade.
        assert_eq!(
            arrived_since(&store, 0),
            vec![ahead.id(), answer.id(), c[1].id(), c[0].id()],
            "from schema {old}"
        );
        assert_eq!(
            arrived_since(&store, 51),
            vec![ahead.id(), answer.id(), c[1].id()]
        );
        assert_eq!(arrived_since(&store, before), vec![ahead.id()]);
        // What comes next arrives after all of them.
        let next = Spec::new(4, Some(ahead.id()), 70).sign(&author);
        next_millisecond(&store);
        insert(&store, &author, &[&next]);
        assert_eq!(arrived_since(&store, before)[..], [next.id(), ahead.id()]);
        drop(store);
        let db = raw_sled(&dir);
        let schema = db.open_tree("meta").unwrap().get("schema").unwrap().unwrap();
        assert_eq!(schema.as_ref(), &herald_node::store::SCHEMA_VERSION.to_be_bytes());
        assert_eq!(herald_node::store::SCHEMA_VERSION, 5);
    }
}

#[test]
fn a_listing_by_arrival_has_what_came_since_whenever_it_was_made_staged_ones_too() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (a, b) = (key(6), key(7));
    // Made long ago, held for a while.
    let old = chain(&a, 3, 1_000);
    insert(&store, &a, &[&old[0]]);
    // The next millisecond (arrivals are told apart to the millisecond).
    let start = next_millisecond(&store);
    // A member back from a partition: made long ago, arriving now.
    insert(&store, &a, &[&old[1], &old[2]]);
    next_millisecond(&store);
    let fresh = Spec::new(1, None, now_ms()).severity(Severity::High).sign(&b);
    assert!(store.stage(&fresh, &member_of(&b), b"peer"));
    let listed = arrived_since(&store, start);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0], fresh.id(), "staged, and the latest to come");
    assert!(!listed.contains(&old[0].id()), "it came before");
    // Filters and the limit apply; folding changes nothing listed.
    for folded in [false, true] {
        if folded {
            assert_eq!(store.fold_staged(16).unwrap().len(), 1);
        }
        let query = |q: Query| -> Vec<BulletinId> {
            let q = Query {
                arrived_since: Some(Timestamp(start)),
                ..q
            };
            store.query(&q).unwrap().iter().map(SignedBulletin::id).collect()
        };
        assert_eq!(arrived_since(&store, start), listed, "folded: {folded}");
        assert_eq!(
            query(Query {
                member: Some(member_of(&a)),
                ..Query::default()
            }),
            listed[1..]
        );
        assert_eq!(
            query(Query {
                min_severity: Some(Severity::High),
                ..Query::default()
            }),
            [fresh.id()]
        );
        assert_eq!(
            query(Query {
                since: Some(Timestamp(1_002)),
                limit: 1,
                ..Query::default()
            }),
            [fresh.id()]
        );
        assert_eq!(
            query(Query {
                limit: 2,
                ..Query::default()
            }),
            listed[..2]
        );
    }
    // Nothing comes from the future.
    assert!(arrived_since(&store, store.arrival_now().0 + 1).is_empty());
    // An export of what came: in chain order (key, then number).
    let exported = store
        .export_ids(&Query {
            arrived_since: Some(Timestamp(start)),
            ..Query::default()
        })
        .unwrap();
    let mut expected = vec![(a.id(), old[1].id()), (a.id(), old[2].id()), (b.id(), fresh.id())];
    expected.sort_by_key(|(key, _)| *key.as_bytes());
    assert_eq!(
        exported,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
}

#[test]
fn listings_are_paged_oldest_first_each_once_staged_ones_too() {
    for order in [Order::Arrived, Order::Created] {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let (a, b) = (key(11), key(12));
        let c = chain(&a, 7, 100);
        // Arrivals over several milliseconds, some in one.
        insert(&store, &a, &[&c[0], &c[1]]);
        next_millisecond(&store);
        insert(&store, &a, &[&c[2]]);
        next_millisecond(&store);
        insert(&store, &a, &[&c[3], &c[4], &c[5]]);
        next_millisecond(&store);
        // Created with c[3], arrived after most.
        let staged = Spec::new(1, None, 103).title("staged").sign(&b);
        store.stage(&staged, &member_of(&b), b"peer");
        next_millisecond(&store);
        insert(&store, &a, &[&c[6]]);
        // Oldest first: the order a listing gives, reversed.
        let mut all = match order {
            Order::Arrived => arrived_since(&store, 0),
            Order::Created => ids(&store.query(&Query::default()).unwrap()),
        };
        all.reverse();
        assert_eq!(all.len(), 8);
        let staged_at = all.iter().position(|id| *id == staged.id()).unwrap();
        let expected_at = match order {
            Order::Arrived => 6..=6,
            // By id among those created at 103.
            Order::Created => 3..=4,
        };
        assert!(expected_at.contains(&staged_at), "{order:?}: {staged_at}");
        // In one page and in pages while one is staged (a page that ends past
        // it lists it), then in pages folding between them.
        for (limit, reads) in [(100, 100), (7, 100), (3, 2), (1, 1), (2, 100)] {
            assert_eq!(store.staged_count(), 1, "still staged");
            // A fold between pages changes nothing listed.
            let fold = || {
                if limit == 2 {
                    store.fold_staged(16).unwrap();
                }
            };
            let (paged, sizes) = read_pages(&store, order, &Query::default(), limits(limit, reads), fold);
            assert_eq!(paged, all, "{order:?}: pages of {limit}, reading {reads}");
            assert!(
                sizes.iter().all(|n| *n <= limit + 1),
                "at most the limit, and a staged one: {sizes:?}"
            );
            assert!(sizes.len() > 1 || limit >= 7, "pages of {limit}");
        }
        // Filters apply; a page that reads little still moves on.
        let query = Query {
            text: Some("staged".into()),
            ..Query::default()
        };
        let (found, _) = read_pages(&store, order, &query, limits(10, 2), || {});
        assert_eq!(found, [staged.id()], "{order:?}");
        // A start past some: only the rest (every arrival is later than 103 ms).
        let page = store
            .listing_page(order, &Query::default(), Timestamp(103), None, limits(100, 100))
            .unwrap();
        let listed = page.items.iter().map(|(b, _)| b.id()).collect::<Vec<_>>();
        let expected = match order {
            Order::Created => all[3..].to_vec(),
            Order::Arrived => all.clone(),
        };
        assert_eq!(listed, expected, "{order:?}");
        // A page ends once it holds its bytes' worth (with the bulletin that
        // reaches them); none are lost to the next.
        let bytes = PageLimits {
            items: 100,
            bytes: c[0].as_bytes().len() + 1,
            reads: 100,
        };
        let (paged, sizes) = read_pages(&store, order, &Query::default(), bytes, || {});
        assert_eq!(paged, all, "{order:?}: pages of a size");
        assert!(sizes.iter().all(|n| *n <= 2), "two each: {sizes:?}");
    }
}

/// Every page of a listing from the start, read to its end (`between` runs
/// between two pages): the ids listed, and how many each page held.
fn read_pages(
    store: &Store,
    order: Order,
    query: &Query,
    limits: PageLimits,
    mut between: impl FnMut(),
) -> (Vec<BulletinId>, Vec<usize>) {
    let (mut listed, mut sizes, mut after) = (Vec::new(), Vec::new(), None);
    loop {
        let page = store
            .listing_page(order, query, Timestamp(0), after, limits)
            .unwrap();
        listed.extend(page.items.iter().map(|(b, _)| b.id()));
        sizes.push(page.items.len());
        match page.next {
            Some(next) => after = Some(next),
            None => return (listed, sizes),
        }
        between();
    }
}

fn limits(items: usize, reads: usize) -> PageLimits {
    PageLimits {
        items,
        bytes: usize::MAX,
        reads,
    }
}

/// Waits (at most a few ms) for the arrival clock to move past its reading now.
fn next_millisecond(store: &Store) -> u64 {
    let held = store.arrival_now().0;
    std::iter::repeat_with(|| store.arrival_now().0)
        .find(|t| *t > held)
        .unwrap()
}

#[test]
fn a_staged_bulletin_arrives_when_it_was_staged_not_when_it_is_folded() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (a, b) = (key(9), key(10));
    let staged = Spec::new(1, None, 5).sign(&a);
    let direct = Spec::new(1, None, 5).sign(&b);
    store.stage(&staged, &member_of(&a), b"peer");
    let between = next_millisecond(&store);
    next_millisecond(&store);
    insert(&store, &b, &[&direct]);
    store.fold_staged(16).unwrap();
    assert_eq!(arrived_since(&store, 0), [direct.id(), staged.id()]);
    assert_eq!(arrived_since(&store, between), [direct.id()]);
}

#[test]
fn the_arrival_clock_never_goes_back_across_a_restart() {
    let dir = TempDir::new().unwrap();
    let signer = key(8);
    let c = chain(&signer, 2, 10);
    {
        let store = open(&dir);
        insert(&store, &signer, &[&c[0]]);
        store.flush().unwrap();
    }
    // As if the last run's clock was a day ahead of this one.
    let ahead = now_ms() + 86_400_000;
    {
        let db = raw_sled(&dir);
        let bulletins = db.open_tree("bulletins/v1").unwrap();
        let (k, v) = bulletins.scan_prefix(b"r").next().unwrap().unwrap();
        bulletins.remove(&k).unwrap();
        let mut moved = vec![b'r'];
        moved.extend_from_slice(&ahead.to_be_bytes());
        moved.extend_from_slice(&k[9..]);
        bulletins.insert(moved, v).unwrap();
        db.flush().unwrap();
    }
    let store = open(&dir);
    assert!(store.arrival_now().0 >= ahead);
    insert(&store, &signer, &[&c[1]]);
    // Both at that time (the clock is behind it), told apart by id.
    let mut both = arrived_since(&store, ahead);
    both.sort_by_key(|id| *id.as_bytes());
    let mut expected = vec![c[0].id(), c[1].id()];
    expected.sort_by_key(|id| *id.as_bytes());
    assert_eq!(both, expected);
}

#[test]
fn a_store_of_a_schema_this_herald_does_not_read_is_refused_and_left_as_it_was() {
    for found in [1u32, 6] {
        let dir = TempDir::new().unwrap();
        drop(open(&dir));
        {
            let db = raw_sled(&dir);
            db.open_tree("meta")
                .unwrap()
                .insert("schema", &found.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        match open_in(&dir, NETWORK) {
            Err(e @ StoreError::Schema { .. }) => {
                assert!(e.to_string().contains(&format!("schema version {found}")), "{e}")
            }
            Err(e) => panic!("schema {found}: {e}"),
            Ok(_) => panic!("a store of schema {found} was opened"),
        }
        let db = raw_sled(&dir);
        let schema = db.open_tree("meta").unwrap().get("schema").unwrap().unwrap();
        assert_eq!(schema.as_ref(), &found.to_be_bytes());
    }
}

#[test]
fn export_ids_are_in_chain_order_with_evidence_and_filters() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (a, b) = (key(5), key(6));
    let chain_a = chain(&a, 3, 1000);
    let chain_b = chain(&b, 2, 10);
    // Inserted out of order, across two batches.
    insert(&store, &b, &[&chain_b[1], &chain_b[0]]);
    insert(&store, &a, &[&chain_a[2], &chain_a[0], &chain_a[1]]);
    // A second body for a's number 2: evidence.
    let other = Spec::new(2, Some(chain_a[0].id()), 1001)
        .title("other body")
        .sign(&a);
    assert!(matches!(
        insert(&store, &a, &[&other])[0],
        Stored::Equivocation { .. }
    ));

    let mut by_key = [(a.id(), &chain_a), (b.id(), &chain_b)];
    by_key.sort_by_key(|(k, _)| *k);
    let mut expected: Vec<BulletinId> = by_key.iter().flat_map(|(_, c)| ids(c)).collect();
    expected.push(other.id());
    assert_eq!(store.export_ids(&Query::default()).unwrap(), expected);

    // Only a's bulletins created from 1001 on: its numbers 2 and 3, then the evidence.
    let since = Query {
        since: Some(Timestamp(1001)),
        ..Query::default()
    };
    assert_eq!(
        store.export_ids(&since).unwrap(),
        vec![chain_a[1].id(), chain_a[2].id(), other.id()]
    );
    // Only b's member: no evidence, as b has none.
    let member = Query {
        member: Some(member_of(&b)),
        ..Query::default()
    };
    assert_eq!(store.export_ids(&member).unwrap(), ids(&chain_b));
    // Filters that match nothing give nothing.
    let none = Query {
        kind: Some("emergency".into()),
        ..Query::default()
    };
    assert!(store.export_ids(&none).unwrap().is_empty());
}

#[test]
fn a_damaged_staged_entry_is_dropped_and_the_rest_folded() {
    let dir = TempDir::new().unwrap();
    let signer = key(7);
    let c = chain(&signer, 2, 70);
    {
        let store = open(&dir);
        store.flush().unwrap();
    }
    leave_staged(&dir, &signer, &[&c[0], &c[1]]);
    {
        // Damage one staged entry: its value no longer decodes.
        let db = raw_sled(&dir);
        let tree = db.open_tree("bulletins/v1").unwrap();
        let mut key = vec![b's'];
        key.extend_from_slice(c[1].id().as_bytes());
        assert!(tree.insert(key, b"\x05garbage".to_vec()).unwrap().is_some());
        db.flush().unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.count().unwrap(), 1);
    assert!(store.contains(&c[0].id()).unwrap());
    assert!(
        !store.contains(&c[1].id()).unwrap(),
        "dropped, for sync to fetch again"
    );
    assert_eq!(store.head(&signer.id()).unwrap(), head(1, 1));
}

#[test]
fn holes_are_the_missing_numbers_as_ranges() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(40);
    let chain = chain(&signer, 12, 1_000);
    // Held: 1, 2, 5, 6, 9, 12.
    let held: Vec<&SignedBulletin> = [1, 2, 5, 6, 9, 12].iter().map(|&n| &chain[n - 1]).collect();
    insert(&store, &signer, &held);
    let range = |from, to| herald_protocol::sync::SeqRange {
        from: Seq(from),
        to: Seq(to),
    };
    let id = signer.id();
    assert_eq!(
        store.holes(&id, Seq(1), Seq(12)).unwrap(),
        vec![range(3, 4), range(7, 8), range(10, 11)]
    );
    // A window that starts and ends inside holes.
    assert_eq!(
        store.holes(&id, Seq(4), Seq(10)).unwrap(),
        vec![range(4, 4), range(7, 8), range(10, 10)]
    );
    // Past the highest number held, everything is missing.
    assert_eq!(store.holes(&id, Seq(12), Seq(15)).unwrap(), vec![range(13, 15)]);
    // A key with nothing held.
    assert_eq!(
        store.holes(&key(41).id(), Seq(1), Seq(3)).unwrap(),
        vec![range(1, 3)]
    );
    // Nothing missing once the chain is whole.
    let rest: Vec<&SignedBulletin> = [3, 4, 7, 8, 10, 11].iter().map(|&n| &chain[n - 1]).collect();
    insert(&store, &signer, &rest);
    assert!(store.holes(&id, Seq(1), Seq(12)).unwrap().is_empty());
}

#[test]
fn answers_to_a_bulletin_are_found_from_its_member_and_anyone_following_up() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (author, other) = (key(1), key(2));
    let day = 24 * 3600 * 1000;
    let created = 10 * day;
    let first = Spec::new(1, None, created).sign(&author);
    let id = first.id();
    // The author supersedes it, then withdraws it; another member follows up on it (with a clock
    // an hour behind) and also claims to supersede it, which only the author can.
    let mut superseding = Spec::new(2, Some(id), created + 10).body(&author);
    superseding.supersedes = Some(id);
    let superseding = herald_keys::sign_bulletin(&author, &superseding).unwrap();
    let withdrawal = Spec::new(3, Some(superseding.id()), created + 20)
        .kind(Kind::Withdrawal {
            of: id,
            reason: "wrong product".into(),
        })
        .sign(&author);
    let follow_up = follow_up_on(&other, 1, None, id, created - 3600 * 1000);
    let mut impostor = Spec::new(2, Some(follow_up.id()), created + 30).body(&other);
    impostor.supersedes = Some(id);
    let impostor = herald_keys::sign_bulletin(&other, &impostor).unwrap();
    // Unrelated, and a follow-up whose clock is two days behind (still an answer).
    let unrelated = Spec::new(3, Some(impostor.id()), created + 40).sign(&other);
    let early = follow_up_on(&key(3), 1, None, id, created - 2 * day);
    // A follow-up that also supersedes it counts once, as the follow-up; a withdrawal of
    // another bulletin that supersedes this one counts as superseding it.
    let mut both = follow_up_on(&author, 4, Some(withdrawal.id()), id, created + 50)
        .body()
        .clone();
    both.supersedes = Some(id);
    let both = herald_keys::sign_bulletin(&author, &both).unwrap();
    let mut withdraws_other = Spec::new(5, Some(both.id()), created + 60)
        .kind(Kind::Withdrawal {
            of: unrelated.id(),
            reason: "not ours".into(),
        })
        .body(&author);
    withdraws_other.supersedes = Some(id);
    let withdraws_other = herald_keys::sign_bulletin(&author, &withdraws_other).unwrap();

    insert(&store, &author, &[&first, &superseding]);
    insert(&store, &other, &[&follow_up, &impostor, &unrelated]);
    insert(&store, &key(3), &[&early]);
    // The withdrawal and the last two are staged, not yet folded: they count too.
    for b in [&withdrawal, &both, &withdraws_other] {
        store.stage(b, &member_of(&author), b"peer");
    }

    let answers = store.answers_to(&first).unwrap();
    assert_eq!(
        answers,
        herald_node::store::Answers {
            superseded_by: vec![superseding.id(), withdraws_other.id()],
            withdrawn_by: vec![withdrawal.id()],
            follow_ups: vec![early.id(), follow_up.id(), both.id()],
            complete: true,
        }
    );
    // The same once folded, and after a restart.
    store.fold_staged(1024).unwrap();
    assert_eq!(store.answers_to(&first).unwrap(), answers);
    store.flush().unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.answers_to(&first).unwrap(), answers);
    // A second body for a number already held (equivocation evidence) answers too: its
    // member signed it.
    let twin = follow_up_on(&author, 5, Some(both.id()), id, created + 65);
    assert!(matches!(
        insert(&store, &author, &[&twin])[..],
        [Stored::Equivocation { .. }]
    ));
    let mut with_twin = answers.clone();
    with_twin.follow_ups.push(twin.id());
    assert_eq!(store.answers_to(&first).unwrap(), with_twin);
    // Only its own member may withdraw a bulletin: another's withdrawal of it is no answer.
    assert_eq!(
        store.answers_to(&unrelated).unwrap(),
        herald_node::store::Answers {
            complete: true,
            ..Default::default()
        }
    );
    // A look that stops early says so.
    let short = store.answers_reading_at_most(&first, 2).unwrap();
    let listed = short.follow_ups.len() + short.superseded_by.len() + short.withdrawn_by.len();
    assert!(!short.complete && listed <= 2, "{short:?}");
    // Answers that arrived before what they answer are found once it arrives.
    let later = Spec::new(6, Some(withdraws_other.id()), created + 70).sign(&author);
    let answer = follow_up_on(&other, 4, Some(unrelated.id()), later.id(), created + 80);
    insert(&store, &other, &[&answer]);
    insert(&store, &author, &[&later]);
    assert_eq!(store.answers_to(&later).unwrap().follow_ups, vec![answer.id()]);
}

#[test]
fn a_query_for_text_looks_in_titles_references_and_text_content() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let signer = key(1);
    let mut bodies = vec![
        Spec::new(1, None, 100)
            .title("Log4Shell in the logging library")
            .body(&signer),
        Spec::new(2, None, 200).title("a patch").body(&signer),
        Spec::new(3, None, 300).title("a note").body(&signer),
        Spec::new(4, None, 400).title("binary").body(&signer),
    ];
    bodies[1].references = vec![herald_protocol::Reference::Cve("CVE-2021-44228".into())];
    bodies[2].payload.bytes = b"affects LOG4J 2.14".to_vec();
    // Not UTF-8: its content is not searched.
    bodies[3].payload.bytes = vec![0xff, b'l', b'o', b'g', b'4', b'j'];
    let mut signed = Vec::new();
    let mut prev = None;
    for mut body in bodies {
        body.prev = prev;
        let b = herald_keys::sign_bulletin(&signer, &body).unwrap();
        prev = Some(b.id());
        signed.push(b);
    }
    insert(&store, &signer, &[&signed[0], &signed[1], &signed[2]]);
    // Staged bulletins are searched too.
    store.stage(&signed[3], &member_of(&signer), FROM);
    let found = |text: &str, limit: usize| -> Vec<u64> {
        store
            .query(&Query {
                text: Some(text.into()),
                limit,
                ..Query::default()
            })
            .unwrap()
            .iter()
            .map(|b| b.body().seq.0)
            .collect()
    };
    assert_eq!(found("log4j", 0), [3]);
    assert_eq!(found("LOG4", 0), [3, 1]);
    assert_eq!(found("cve-2021-44228", 0), [2]);
    assert_eq!(found("binary", 0), [4]);
    assert_eq!(found("log4", 1), [3], "the limit counts matches");
    assert!(found("nowhere", 0).is_empty());
    // A search that may read only the newest two folded bulletins says it stopped there.
    let searched = |text: Option<&str>, limit: usize| {
        let query = Query {
            text: text.map(str::to_string),
            limit,
            ..Query::default()
        };
        let (found, complete) = store.search(&query, 2).unwrap();
        (found.iter().map(|b| b.body().seq.0).collect::<Vec<_>>(), complete)
    };
    assert_eq!(
        searched(Some("log4"), 0),
        (vec![3], false),
        "the first is past the cap"
    );
    assert_eq!(
        searched(Some("log4"), 1),
        (vec![3], true),
        "the limit was met first"
    );
    assert!(searched(None, 0).1, "no text, no cap");
}
