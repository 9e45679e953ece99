//! Catch-up sync between two stores in one process (no network): exact
//! reconciliation of scattered and recent gaps, one small round trip when in
//! step, registry updates first, the byte and round-trip budgets, and a
//! summary too long for one answer read in pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};

use herald_keys::sign_bulletin;
use herald_node::sync::{InProcessLink, SyncError, SyncLink, pull};
use herald_node::{Store, Stored};
use herald_protocol::sync::{ChainSummary, MAX_CHAINS, SyncRequest, SyncResponse};
use herald_protocol::{KeyId, MemberId, Seq, SignedBulletin};

mod common;

use common::{Net, founded, outreach};

fn network(members: u8) -> Net {
    let names: Vec<String> = (0..members).map(|i| format!("member-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    founded(&names, 1)
}

/// `per_key` bulletins on each signer's chain.
fn chains(net: &Net, per_key: u64) -> Vec<(SignedBulletin, MemberId)> {
    let mut out = Vec::new();
    for (key, member, _) in &net.signers {
        let mut prev = None;
        for seq in 1..=per_key {
            let body = outreach(net.registry.network(), key, seq, prev, &format!("bulletin {seq}"));
            let b = sign_bulletin(key, &body).unwrap();
            prev = Some(b.id());
            out.push((b, *member));
        }
    }
    out
}

fn store_with(net: &Net, items: &[(SignedBulletin, MemberId)]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), net.registry.network()).unwrap();
    store.save_registry_update(&net.registry.history()[0]).unwrap();
    for chunk in items.chunks(1000) {
        store.insert_verified(chunk).unwrap();
    }
    store.flush().unwrap();
    (dir, store)
}

fn ids(store: &Store) -> std::collections::BTreeSet<herald_protocol::BulletinId> {
    store
        .query(&herald_node::Query::default())
        .unwrap()
        .iter()
        .map(|b| b.id())
        .collect()
}

async fn pull_from(net: &Net, from: &Store, into: &Store) -> (herald_node::sync::SyncReport, u64, u64) {
    let link = InProcessLink {
        peer_store: from.clone(),
        peer_registry: Arc::new(RwLock::new(net.registry.clone())),
        local_store: into.clone(),
        sent: Default::default(),
        received: Default::default(),
    };
    let registry = Arc::new(RwLock::new(net.registry.clone()));
    let report = pull(&link, into, &registry).await.unwrap();
    (report, link.sent.load(Relaxed), link.received.load(Relaxed))
}

#[tokio::test]
async fn nodes_in_step_settle_in_one_small_round_trip() {
    let net = network(4);
    let all = chains(&net, 20);
    let (_a, a) = store_with(&net, &all);
    let (_b, b) = store_with(&net, &all);
    let (report, sent, received) = pull_from(&net, &a, &b).await;
    assert!(report.in_step);
    assert_eq!(report.round_trips, 1);
    assert!(sent + received < 1024, "{sent} + {received} bytes");
}

#[tokio::test]
async fn scattered_and_recent_gaps_are_filled_exactly() {
    let net = network(10);
    let all = chains(&net, 100);
    // Scattered: every 7th bulletin missing; recent: the last 10 of each chain.
    for (name, missing) in [
        (
            "scattered",
            all.iter()
                .enumerate()
                .filter(|(i, _)| i % 7 == 3)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
        ),
        (
            "recent",
            all.iter()
                .enumerate()
                .filter(|(_, (b, _))| b.body().seq.0 > 90)
                .map(|(i, _)| i)
                .collect(),
        ),
    ] {
        let (_a, a) = store_with(&net, &all);
        let partial: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !missing.contains(i))
            .map(|(_, x)| x.clone())
            .collect();
        let (_b, b) = store_with(&net, &partial);
        let (report, sent, received) = pull_from(&net, &a, &b).await;
        assert_eq!(report.new_bulletins, missing.len() as u64, "{name}");
        assert_eq!(ids(&a), ids(&b), "{name}: same set after sync");
        for (key, _, _) in &net.signers {
            let head = b.head(&key.id()).unwrap();
            assert_eq!((head.contiguous, head.highest), (Seq(100), Seq(100)), "{name}");
        }
        // Hello + summary, then one page.
        assert!(
            report.round_trips <= 3,
            "{name}: {} round trips",
            report.round_trips
        );
        let payload: u64 = missing
            .iter()
            .map(|i| all[*i].0.as_bytes().len() as u64 + 8)
            .sum();
        let overhead = sent + received - payload;
        assert!(
            overhead < 64 * 1024,
            "{name}: {overhead} bytes beyond the bulletins"
        );
        eprintln!(
            "{name}: {} missing, {} round trips, {sent} B sent, {received} B received, {overhead} B overhead",
            missing.len(),
            report.round_trips
        );
        // And again: now in step.
        let (again, _, _) = pull_from(&net, &a, &b).await;
        assert!(again.in_step, "{name}");
    }
}

#[tokio::test]
async fn equivocation_evidence_travels_by_sync() {
    let net = network(2);
    let all = chains(&net, 3);
    let (key, member, _) = &net.signers[0];
    // A second, different body for number 2 of the first key.
    let mut body = all[1].0.body().clone();
    body.title = "a different story".into();
    let twin = sign_bulletin(key, &body).unwrap();
    let mut with_twin = all.clone();
    with_twin.push((twin.clone(), *member));
    let (_a, a) = store_with(&net, &with_twin);
    assert_eq!(a.equivocations().unwrap().len(), 1);
    let (_b, b) = store_with(&net, &all);
    let (report, _, _) = pull_from(&net, &a, &b).await;
    assert!(!report.in_step);
    assert!(
        b.contains(&twin.id()).unwrap(),
        "the second body arrives as proof"
    );
    assert_eq!(b.equivocations().unwrap(), a.equivocations().unwrap());
}

/// Answers like the peer's store behind `inner`, except that the first summary
/// is a full page of `padding` chains (nothing held, keys below every real
/// key), so the asker must read the real chains on the next page.
struct PaddedLink {
    inner: InProcessLink,
    padding: Vec<ChainSummary>,
    next_page: NextPage,
    asked: std::sync::Mutex<Vec<&'static str>>,
}

/// How the padded peer answers `Chains`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NextPage {
    /// With the real chains.
    Honest,
    /// Repeating the last padding key first.
    Disorder,
    /// Not at all, as a peer built before summaries had pages.
    Unknown,
}

impl PaddedLink {
    fn new(inner: InProcessLink, next_page: NextPage) -> Self {
        let padding = (0..MAX_CHAINS as u32)
            .map(|i| {
                let mut key = [0u8; 32];
                key[28..].copy_from_slice(&i.to_be_bytes());
                ChainSummary::empty(KeyId::from_bytes(key))
            })
            .collect();
        PaddedLink {
            inner,
            padding,
            next_page,
            asked: Default::default(),
        }
    }
}

impl SyncLink for PaddedLink {
    async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
        let (name, answer) = match request {
            SyncRequest::Hello { .. } => match self.inner.request(request).await? {
                SyncResponse::Summary {
                    registry_version,
                    registry_hash,
                    ..
                } => (
                    "hello",
                    SyncResponse::Summary {
                        registry_version,
                        registry_hash,
                        chains: self.padding.clone(),
                    },
                ),
                other => ("hello", other),
            },
            SyncRequest::Chains { after } => {
                assert_eq!(
                    after,
                    self.padding[MAX_CHAINS - 1].key,
                    "the next page starts after the last key"
                );
                if self.next_page == NextPage::Unknown {
                    self.asked.lock().unwrap().push("chains");
                    return Err(SyncError::Request("the stream was closed".into()));
                }
                let mut answer = self.inner.request(request).await?;
                if self.next_page == NextPage::Disorder
                    && let SyncResponse::Summary { chains, .. } = &mut answer
                {
                    chains.insert(0, self.padding[MAX_CHAINS - 1]);
                }
                ("chains", answer)
            }
            other => ("other", self.inner.request(other).await?),
        };
        self.asked.lock().unwrap().push(name);
        Ok(answer)
    }

    async fn store(&self, items: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
        self.inner.store(items).await
    }
}

fn link(net: &Net, from: &Store, into: &Store) -> InProcessLink {
    InProcessLink {
        peer_store: from.clone(),
        peer_registry: Arc::new(RwLock::new(net.registry.clone())),
        local_store: into.clone(),
        sent: Default::default(),
        received: Default::default(),
    }
}

#[tokio::test]
async fn a_full_summary_is_read_in_pages() {
    let net = network(3);
    let all = chains(&net, 4);
    for (key, _, _) in &net.signers {
        assert_ne!(
            key.id().as_bytes()[..28],
            [0u8; 28],
            "real keys sort after the padding"
        );
    }
    let (_a, a) = store_with(&net, &all);
    let (_b, b) = store_with(&net, &[]);
    let padded = PaddedLink::new(link(&net, &a, &b), NextPage::Honest);
    let registry = Arc::new(RwLock::new(net.registry.clone()));
    let report = pull(&padded, &b, &registry).await.unwrap();
    assert_eq!(report.new_bulletins, all.len() as u64);
    assert_eq!(ids(&a), ids(&b));
    let asked = padded.asked.lock().unwrap().clone();
    assert_eq!(&asked[..2], ["hello", "chains"], "{asked:?}");
}

#[tokio::test]
async fn a_summary_page_out_of_key_order_is_hostile() {
    let net = network(2);
    let all = chains(&net, 2);
    let (_a, a) = store_with(&net, &all);
    let (_b, b) = store_with(&net, &[]);
    let padded = PaddedLink::new(link(&net, &a, &b), NextPage::Disorder);
    let registry = Arc::new(RwLock::new(net.registry.clone()));
    match pull(&padded, &b, &registry).await {
        Err(SyncError::Hostile(reason)) => assert!(reason.contains("key order"), "{reason}"),
        other => panic!("expected a hostile-peer error, got {other:?}"),
    }
    assert!(ids(&b).is_empty(), "nothing stored from a session that failed");
}

#[tokio::test]
async fn chains_after_a_key_come_in_key_order() {
    let net = network(5);
    let all = chains(&net, 1);
    let (_a, a) = store_with(&net, &all);
    let (_b, b) = store_with(&net, &[]);
    let inner = link(&net, &a, &b);
    let mut keys: Vec<KeyId> = net.signers.iter().map(|(k, _, _)| k.id()).collect();
    keys.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    for (i, after) in keys.iter().enumerate() {
        match inner
            .request(SyncRequest::Chains { after: *after })
            .await
            .unwrap()
        {
            SyncResponse::Summary { chains, .. } => {
                let got: Vec<KeyId> = chains.iter().map(|c| c.key).collect();
                assert_eq!(got, keys[i + 1..].to_vec());
            }
            other => panic!("expected a summary, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_peer_that_cannot_page_is_synced_from_its_first_page() {
    let net = network(2);
    let all = chains(&net, 2);
    let (_a, a) = store_with(&net, &all);
    let (_b, b) = store_with(&net, &[]);
    let padded = PaddedLink::new(link(&net, &a, &b), NextPage::Unknown);
    let registry = Arc::new(RwLock::new(net.registry.clone()));
    // Its first page lists only chains of keys nobody registered: nothing to
    // fetch, and no fault.
    let report = pull(&padded, &b, &registry).await.unwrap();
    assert_eq!(report.new_bulletins, 0);
    assert_eq!(padded.asked.lock().unwrap().clone(), ["hello", "chains"]);
}

/// A link that names a chain to fetch first and logs the session: each fetch's first chain, and
/// when the first chain was all fetched.
struct FirstChainLink {
    inner: InProcessLink,
    first: KeyId,
    log: std::sync::Mutex<Vec<String>>,
    /// Lists the first chain up to this number in the peer's summaries, as a
    /// peer listing more than it holds would.
    inflate: Option<u64>,
    /// Lists a newer registry version in the peer's summaries, and fails the
    /// requests for it.
    registry_fails: bool,
}

impl SyncLink for FirstChainLink {
    async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
        if let SyncRequest::Fetch { wants } = &request {
            let first = wants.first().map(|w| w.key == self.first);
            self.log
                .lock()
                .unwrap()
                .push(format!("fetch, own chain first: {first:?}"));
        }
        if self.registry_fails && matches!(request, SyncRequest::Registry { .. }) {
            return Err(SyncError::Request("the registry is unavailable".into()));
        }
        let mut response = self.inner.request(request).await?;
        if let (Some(highest), SyncResponse::Summary { chains, .. }) = (self.inflate, &mut response) {
            for chain in chains.iter_mut().filter(|c| c.key == self.first) {
                chain.highest = Seq(highest);
            }
        }
        if let (true, SyncResponse::Summary { registry_version, .. }) = (self.registry_fails, &mut response) {
            registry_version.0 += 1;
        }
        Ok(response)
    }

    async fn store(&self, items: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
        self.inner.store(items).await
    }

    fn first_chain(&self) -> Option<KeyId> {
        Some(self.first)
    }

    async fn first_chain_fetched(&self) {
        let held = self.inner.local_store.head(&self.first).unwrap().highest;
        self.log
            .lock()
            .unwrap()
            .push(format!("own chain fetched, held to {}", held.0));
    }

    async fn first_chain_claimed(&self, highest: Seq) -> Result<(), SyncError> {
        let held = self.inner.local_store.head(&self.first).unwrap().highest;
        self.log.lock().unwrap().push(format!(
            "peer lists own chain to {}, held to {}",
            highest.0, held.0
        ));
        Ok(())
    }
}

/// A node catching up on its own chain (last in key order, longer than a page) and another
/// member's fetches its own first, and says so once it holds all of it, while the rest is still
/// to come: a node that lost its store numbers on from its chain without waiting for the whole
/// catch-up, and never from part of it. A peer with none of its chain says so before any fetch.
#[tokio::test]
async fn the_own_chain_is_fetched_first_and_reported_before_the_rest() {
    let net = network(2);
    let mut signers: Vec<_> = net.signers.iter().collect();
    signers.sort_by_key(|(key, ..)| key.id());
    let [(other, other_member, _), (own, own_member, _)] = signers[..] else {
        unreachable!()
    };
    let chain_of = |key: &herald_keys::SecretKey, member: &MemberId, n: u64| {
        let mut prev = None;
        (1..=n)
            .map(|seq| {
                let mut body = outreach(net.registry.network(), key, seq, prev, "b");
                body.payload.bytes = vec![b'x'; 20_000];
                let b = sign_bulletin(key, &body).unwrap();
                prev = Some(b.id());
                (b, *member)
            })
            .collect::<Vec<_>>()
    };
    // About 6 MB of the own chain and 3 MB of the other: pages hold 4 MiB.
    let own_chain = chain_of(own, own_member, 300);
    let other_chain = chain_of(other, other_member, 150);
    let link_to = |peer: &Store, local: &Store| FirstChainLink {
        inner: InProcessLink {
            peer_store: peer.clone(),
            peer_registry: Arc::new(RwLock::new(net.registry.clone())),
            local_store: local.clone(),
            sent: Default::default(),
            received: Default::default(),
        },
        first: own.id(),
        log: Default::default(),
        inflate: None,
        registry_fails: false,
    };
    let registry = Arc::new(RwLock::new(net.registry.clone()));
    let (_a, a) = store_with(&net, &[own_chain.clone(), other_chain.clone()].concat());
    let (_b, b) = store_with(&net, &[]);
    let link = link_to(&a, &b);
    let report = pull(&link, &b, &registry).await.unwrap();
    assert_eq!(report.new_bulletins, 450);
    assert!(report.first_chain_fetched);
    let log = link.log.into_inner().unwrap();
    assert_eq!(
        log,
        [
            "peer lists own chain to 300, held to 0",
            "fetch, own chain first: Some(true)",
            "fetch, own chain first: Some(true)",
            "own chain fetched, held to 300",
            "fetch, own chain first: Some(false)",
        ],
        "{log:?}"
    );
    // In step with its peer: nothing to fetch, reported at once.
    let link = link_to(&a, &b);
    pull(&link, &b, &registry).await.unwrap();
    assert_eq!(link.log.into_inner().unwrap(), ["own chain fetched, held to 300"]);
    // A peer with none of the own chain: reported before any fetch.
    let (_c, c) = store_with(&net, &other_chain);
    let (_d, d) = store_with(&net, &[]);
    let link = link_to(&c, &d);
    pull(&link, &d, &registry).await.unwrap();
    let log = link.log.into_inner().unwrap();
    assert_eq!(log[0], "own chain fetched, held to 0", "{log:?}");

    // A peer listing more of the chain than it serves (an empty page marked
    // complete): the session still ends the fetch of the chain, so that the
    // peer's claim does not stay.
    let (_e, e) = store_with(&net, &own_chain[..3]);
    let (_f, f) = store_with(&net, &[&own_chain[..3], &other_chain[..2]].concat());
    let mut link = link_to(&e, &f);
    link.inflate = Some(5);
    let report = pull(&link, &f, &registry).await.unwrap();
    assert!(report.first_chain_fetched);
    assert_eq!(
        link.log.into_inner().unwrap(),
        [
            "peer lists own chain to 5, held to 3",
            "fetch, own chain first: Some(true)",
            "own chain fetched, held to 3",
        ]
    );

    // A session that fails at the registry step, before any fetch: the peer's claim is noted
    // first, so that the failed session is not taken for a peer with nothing more.
    let mut link = link_to(&e, &f);
    link.inflate = Some(5);
    link.registry_fails = true;
    let failed = pull(&link, &f, &registry).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        link.log.into_inner().unwrap(),
        ["peer lists own chain to 5, held to 3"]
    );
}
