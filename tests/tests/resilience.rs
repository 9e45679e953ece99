//! Resilience end to end: a partition that heals, an outage caught up by sync, a gap in a chain
//! filled at once, bundles carried between nodes that never meet (and damaged bundles refused),
//! hostile sync peers, a burst of sync requests answered or refused as busy, nodes in step settling in one round trip, publishing while alone, a node
//! restarting again and again taken back on the tree, and an export that holds what gossip
//! brought a moment ago.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use herald_keys::SecretKey;
use herald_node::bundle::{self, BundleError, ExportFilter};
use herald_node::store::ChainHead;
use herald_node::{Draft, Node, NodeEvent, Origin, Query, Store};
use herald_protocol::sync::{ChainSummary, MAX_SYNC_RESPONSE_BYTES, SyncResponse};
use herald_protocol::{
    BulletinId, FollowUpAction, IncidentPhase, KeyId, Kind, MemberId, MetricCount, NetworkId, RegistryOp,
    RegistryVersion, Seq, SignedBulletin, SignedRegistryUpdate, Timestamp, UpdateStage,
};
use herald_tests::{
    GENESIS_TIME, TestNode, TestRegistry, connect, connect_edges, fast_timing_with_sync_every, origin_peer,
    sample_draft, signed_sample, start_nodes, stop_all,
};
use libp2p::PeerId;
use sha2::{Digest, Sha256};

/// The most any test here may take.
const LIMIT: Duration = Duration::from_secs(90);

/// How long one wait for convergence may take (generous: two cores, other builds running).
const CONVERGE: Duration = Duration::from_secs(45);

/// A periodic sync interval no test lives to see: only the trigger under test starts a session.
const NEVER: Duration = Duration::from_secs(3600);

/// Runs a test body, failing it if it takes longer than [`LIMIT`].
async fn within(body: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {LIMIT:?}"));
}

/// The ids of every bulletin a store holds.
fn held_ids(store: &Store) -> BTreeSet<BulletinId> {
    store
        .query(&Query {
            limit: 0,
            ..Query::default()
        })
        .unwrap()
        .iter()
        .map(SignedBulletin::id)
        .collect()
}

fn ids_of(node: &Node) -> BTreeSet<BulletinId> {
    held_ids(node.store())
}

/// Waits until `node` has reported storing every bulletin of `ids`; returns where each came from.
async fn wait_all_stored(
    node: &TestNode,
    ids: &BTreeSet<BulletinId>,
    limit: Duration,
) -> Vec<(BulletinId, Origin)> {
    node.events
        .wait_for_n(
            &format!("node {} to store {} bulletins", node.index, ids.len()),
            ids.len(),
            limit,
            |e| match e {
                NodeEvent::BulletinStored { id, origin, .. } if ids.contains(id) => Some((*id, *origin)),
                _ => None,
            },
        )
        .await
        .unwrap_or_else(|e| {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !node.reported_stored(**id))
                .map(|id| id.fmt_short().to_string())
                .collect();
            panic!("{e}; missing {missing:?}")
        })
}

/// Waits for the next end of a catch-up session with `peer` at or after cursor `from`.
async fn next_session_end(node: &TestNode, peer: PeerId, from: usize) -> NodeEvent {
    node.events
        .wait_for_from(
            &format!("node {} to end a sync session", node.index),
            from,
            CONVERGE,
            |e| match e {
                NodeEvent::SyncCompleted { peer: p, .. } | NodeEvent::SyncFailed { peer: p, .. }
                    if *p == peer =>
                {
                    Some(e.clone())
                }
                _ => None,
            },
        )
        .await
        .unwrap()
}

/// The bytes of a bundle (the layout of `herald_node::bundle`), with a correct checksum.
fn bundle_bytes(network: NetworkId, updates: &[&SignedRegistryUpdate], bulletins: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(bundle::MAGIC);
    out.extend_from_slice(&bundle::VERSION.to_le_bytes());
    out.extend_from_slice(network.as_bytes());
    out.extend_from_slice(&(updates.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bulletins.len() as u64).to_le_bytes());
    for update in updates {
        let bytes = update.to_bytes();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    for bytes in bulletins {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

/// A chain of `n` bulletins of `key`, created long ago (so that nodes that take them from a bundle
/// or by sync do not gossip them on: only fresh news is re-gossiped).
fn old_chain(network: NetworkId, key: &SecretKey, n: u64, title: &str) -> Vec<SignedBulletin> {
    let mut chain: Vec<SignedBulletin> = Vec::new();
    for seq in 1..=n {
        let prev = chain.last().map(SignedBulletin::id);
        let created = Timestamp(GENESIS_TIME.0 + seq * 1000);
        chain.push(signed_sample(network, key, Seq(seq), prev, created, &format!("{title} {seq}")).unwrap());
    }
    chain
}

/// Writes a bundle of `bulletins` with the genesis of `registry` to `dir/name`.
fn write_bundle(
    dir: &Path,
    name: &str,
    registry: &TestRegistry,
    bulletins: &[SignedBulletin],
) -> std::path::PathBuf {
    let path = dir.join(name);
    let bytes: Vec<Vec<u8>> = bulletins.iter().map(SignedBulletin::to_bytes).collect();
    std::fs::write(
        &path,
        bundle_bytes(registry.network(), &[&registry.genesis], &bytes),
    )
    .unwrap();
    path
}

fn head(node: &Node, key: &KeyId) -> ChainHead {
    node.store().head(key).unwrap()
}

/// Six nodes in two halves of three (a triangle each) that never meet, each half publishing from
/// two members; then one node of each half connects to one of the other. Every node ends with every
/// bulletin. Each node's registry lists only the nodes it may connect with, so discovery cannot
/// join the halves behind the test's back (nor join them other than through the one bridge).
///
/// The nodes sync periodically every second here, not every 5 s as with `GossipTiming::fast`:
/// what crosses the cut first must be pulled by a bridge node, and while a new connection starts
/// no session (see `a_new_connection_starts_a_sync_session`) only the periodic trigger does that,
/// with one random peer of three per tick: at 5 s a tick, the heal would take 20 s on average
/// and now and then over a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_heals_and_every_node_ends_with_every_bulletin() {
    within(async {
        let registry = TestRegistry::new(6).with_timing(fast_timing_with_sync_every(Duration::from_secs(1)));
        // Halves {0, 1, 2} and {3, 4, 5}; 2 and 3 may also connect with each other (the bridge).
        let allowed: [&[usize]; 6] = [&[1, 2], &[0, 2], &[0, 1, 3], &[2, 4, 5], &[3, 5], &[3, 4]];
        let mut nodes = Vec::new();
        for (i, peers) in allowed.iter().enumerate() {
            nodes.push(
                TestNode::start_allowing(&registry, i, peers)
                    .await
                    .expect("start"),
            );
        }
        connect_edges(&nodes, &[(1, 0), (2, 0), (2, 1), (4, 3), (5, 3), (5, 4)])
            .await
            .expect("connect the halves");
        let halves: [&[usize]; 2] = [&[0, 1, 2], &[3, 4, 5]];
        // (publisher, how many): two members per half, and a bridge node too.
        let publishers: [&[(usize, usize)]; 2] = [&[(0, 3), (1, 2), (2, 1)], &[(3, 1), (4, 2), (5, 3)]];
        let mut half_ids: [BTreeSet<BulletinId>; 2] = Default::default();
        for (h, plan) in publishers.iter().enumerate() {
            for &(publisher, count) in *plan {
                for k in 0..count {
                    let b = nodes[publisher]
                        .node
                        .publish(sample_draft(&format!("half {h}, node {publisher}, #{k}")))
                        .await
                        .expect("publish");
                    half_ids[h].insert(b.id());
                }
            }
        }
        for (h, half) in halves.iter().enumerate() {
            for &i in *half {
                wait_all_stored(&nodes[i], &half_ids[h], CONVERGE).await;
            }
        }
        // Apart: no node holds anything of the other half, and the bridge is down.
        for (h, half) in halves.iter().enumerate() {
            for &i in *half {
                assert_eq!(ids_of(&nodes[i].node), half_ids[h], "node {i} before the heal");
            }
        }
        assert!(
            !nodes[2]
                .node
                .connected_peers()
                .await
                .contains(&nodes[3].peer_id())
        );

        let healing = Instant::now();
        connect(&nodes[2], &nodes[3]).await.expect("heal");
        let all: BTreeSet<BulletinId> = half_ids[0].union(&half_ids[1]).copied().collect();
        let mut by_sync = 0;
        for (h, half) in halves.iter().enumerate() {
            for &i in *half {
                let origins = wait_all_stored(&nodes[i], &half_ids[1 - h], CONVERGE).await;
                by_sync += origins
                    .iter()
                    .filter(|(_, o)| matches!(o, Origin::Sync(_)))
                    .count();
            }
        }
        let healed = healing.elapsed();
        eprintln!(
            "partition: {} bulletins on 6 nodes reconciled {healed:?} after the heal ({by_sync} of {} \
             deliveries across the cut by sync, the rest by gossip)",
            all.len(),
            3 * all.len()
        );
        assert!(by_sync >= 2, "each half's first crossing is a sync pull");
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(ids_of(&node.node), all, "node {i} after the heal");
            assert_eq!(node.node.store().count().unwrap(), all.len() as u64, "node {i}");
        }
        stop_all(nodes).await;
    })
    .await;
}

/// A node stopped while the others publish far more than gossip remembers (gossip keeps messages
/// for seconds; the stopped node simply misses them), then restarted on its old directory: it
/// catches up completely, by sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_from_an_outage_catches_up_by_sync() {
    within(async {
        const EACH: usize = 20;
        let registry = TestRegistry::new(3);
        let mut nodes = start_nodes(&registry, &[0, 1, 2]).await.expect("start");
        connect_edges(&nodes, &[(1, 0), (2, 1), (2, 0)])
            .await
            .expect("connect");
        let mut before = BTreeSet::new();
        for node in &nodes[..2] {
            let b = node
                .node
                .publish(sample_draft(&format!("before, {}", node.index)))
                .await
                .expect("publish");
            before.insert(b.id());
        }
        for node in &nodes {
            wait_all_stored(node, &before, CONVERGE).await;
        }

        let c = nodes.pop().expect("C");
        let c_id = c.peer_id();
        let marks: Vec<usize> = nodes.iter().map(|n| n.events.len()).collect();
        let dir = c.stop().await;
        for (node, mark) in nodes.iter().zip(&marks) {
            node.wait_disconnected(c_id, *mark).await.expect("C is gone");
        }

        // A and B publish while C is down, interleaved.
        let mut missed = BTreeSet::new();
        for k in 0..EACH {
            for node in &nodes {
                let b = node
                    .node
                    .publish(sample_draft(&format!("during the outage, {} #{k}", node.index)))
                    .await
                    .expect("publish");
                missed.insert(b.id());
            }
        }
        for node in &nodes {
            wait_all_stored(node, &missed, CONVERGE).await;
        }

        let c = TestNode::start_in(&registry, 2, dir).await.expect("restart C");
        assert_eq!(ids_of(&c.node), before, "C kept what it held");
        let back = Instant::now();
        connect(&c, &nodes[0]).await.expect("C reconnects");
        let origins = wait_all_stored(&c, &missed, CONVERGE).await;
        let caught_up = back.elapsed();
        eprintln!(
            "outage: {} bulletins missed, caught up {caught_up:?} after reconnecting",
            missed.len()
        );
        let peers = [nodes[0].peer_id(), nodes[1].peer_id()];
        for (id, origin) in &origins {
            assert!(
                matches!(origin, Origin::Sync(p) if peers.contains(p)),
                "{} reached C by {origin:?}, not by sync from A or B",
                id.fmt_short()
            );
        }
        let all: BTreeSet<BulletinId> = before.union(&missed).copied().collect();
        nodes.push(c);
        for node in &nodes {
            assert_eq!(ids_of(&node.node), all, "node {}", node.index);
        }
        for i in 0..2 {
            let key = registry.member(i).signing_key.id();
            let h = head(&nodes[2].node, &key);
            assert_eq!(h.contiguous, h.highest, "C's copy of chain {i} is whole");
            assert_eq!(h.highest, Seq(1 + EACH as u64));
        }
        stop_all(nodes).await;
    })
    .await;
}

/// A node that missed bulletin 3 of a chain but receives bulletin 4 by gossip fills the gap at
/// once, by sync with the peer that sent 4, without waiting for the periodic sync (an hour here).
///
/// Construction: A and B connect while neither holds anything of member 2's chain (member 2 runs no
/// node), so whatever the nodes do on connecting brings nothing. Then A imports a bundle with
/// bulletins 1-2 and B one with 1-4; they were created long ago, so neither node gossips them on.
/// Then B sends bulletin 4, and only 4, by gossip (the hostile-member hook sends bytes without
/// storing them, but these are valid: A validates and stores 4 as any gossip). A now holds 1, 2
/// and 4: the gap makes it sync with B at once, and 3 arrives by sync from B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_in_a_chain_is_filled_at_once_by_sync() {
    within(async {
        let registry = TestRegistry::new(3).with_timing(fast_timing_with_sync_every(NEVER));
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let b = TestNode::start(&registry, 1).await.expect("start B");
        connect(&a, &b).await.expect("connect");

        let chain = old_chain(registry.network(), &registry.member(2).signing_key, 4, "old news");
        let files = tempfile::tempdir().unwrap();
        let to_a = write_bundle(files.path(), "a.bundle", &registry, &chain[..2]);
        let to_b = write_bundle(files.path(), "b.bundle", &registry, &chain);
        assert_eq!(a.node.import_bundle(to_a).await.expect("A imports").new, 2);
        assert_eq!(b.node.import_bundle(to_b).await.expect("B imports").new, 4);
        let key = registry.member(2).signing_key.id();
        assert_eq!(
            head(&a.node, &key),
            ChainHead {
                contiguous: Seq(2),
                highest: Seq(2)
            }
        );

        let mark = a.events.len();
        let started = Instant::now();
        b.node.inject_unchecked(chain[3].to_bytes()).await;
        let b_id = b.peer_id();
        let (n3, n4) = (chain[2].id(), chain[3].id());
        let stored = a
            .events
            .wait_for_n_from("A to store 3 and 4", mark, 2, CONVERGE, |e| match e {
                NodeEvent::BulletinStored { id, origin, .. } if *id == n3 || *id == n4 => {
                    Some((*id, *origin))
                }
                _ => None,
            })
            .await
            .unwrap();
        let filled = started.elapsed();
        eprintln!("gap: bulletin 3 arrived by sync {filled:?} after 4 was gossiped");
        assert_eq!(
            stored[0],
            (n4, Origin::Gossip(b_id)),
            "4 first, by gossip: {stored:?}"
        );
        assert_eq!(
            stored[1],
            (n3, Origin::Sync(b_id)),
            "then 3, by sync from B: {stored:?}"
        );
        let session = next_session_end(&a, b_id, mark).await;
        assert!(
            matches!(session, NodeEvent::SyncCompleted { new_bulletins: 1, .. }),
            "{session:?}"
        );
        // Far sooner than any periodic sync could explain.
        assert!(filled < CONVERGE, "{filled:?}");
        assert_eq!(
            head(&a.node, &key),
            ChainHead {
                contiguous: Seq(4),
                highest: Seq(4)
            }
        );
        assert_eq!(ids_of(&a.node), ids_of(&b.node));
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// Section 12.4: a session runs on every new connection to a member's node. B connects to A, which
/// holds old bulletins (which nobody gossips); with periodic sync an hour away, only the connection
/// can start the session that brings them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_connection_starts_a_sync_session() {
    within(async {
        let registry = TestRegistry::new(3).with_timing(fast_timing_with_sync_every(NEVER));
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let chain = old_chain(registry.network(), &registry.member(2).signing_key, 3, "old news");
        let files = tempfile::tempdir().unwrap();
        let path = write_bundle(files.path(), "a.bundle", &registry, &chain);
        assert_eq!(a.node.import_bundle(path).await.expect("import").new, 3);
        let b = TestNode::start(&registry, 1).await.expect("start B");
        connect(&b, &a).await.expect("connect");
        let ids: BTreeSet<BulletinId> = chain.iter().map(SignedBulletin::id).collect();
        for (id, origin) in wait_all_stored(&b, &ids, Duration::from_secs(20)).await {
            assert_eq!(origin, Origin::Sync(a.peer_id()), "{}", id.fmt_short());
        }
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A draft of `kind` titled `title`.
fn draft(kind: Kind, title: &str) -> Draft {
    Draft {
        kind,
        ..sample_draft(title)
    }
}

/// A bundle carries bulletins of several kinds and the registry history that verifies them
/// between two nodes that never connect. Version 2 of A's registry gives member 2 a new signing
/// key; B starts at the genesis, so it can verify what that key signed only by applying the
/// version 2 that the bundle carries. Importing the same bundle again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_carries_bulletins_and_registry_between_nodes_that_never_meet() {
    within(async {
        let registry = TestRegistry::new(3);
        let network = registry.network();
        let member2 = registry.member(2);
        let new_key = SecretKey::from_seed(&[0x77; 32]);
        let mut v2 = registry
            .approved_update(
                (RegistryVersion::GENESIS, registry.genesis_hash),
                Timestamp(GENESIS_TIME.0 + 1),
                vec![RegistryOp::AddSigningKey {
                    member: member2.id(),
                    key: new_key.id(),
                }],
            )
            .unwrap();
        let approval = herald_keys::approve(&new_key, &v2);
        v2.push_approval(approval).unwrap();
        // A's store before it starts: registry at version 2 and three bulletins of the new key.
        let a_dir = tempfile::Builder::new()
            .prefix("herald-e2e-0-")
            .tempdir()
            .unwrap();
        let by_new_key = old_chain(network, &new_key, 3, "signed by a key of version 2");
        {
            let store = Store::open(a_dir.path(), network).unwrap();
            store.save_registry_update(&registry.genesis).unwrap();
            store.save_registry_update(&v2).unwrap();
            let items: Vec<(SignedBulletin, MemberId)> =
                by_new_key.iter().map(|b| (b.clone(), member2.id())).collect();
            store.insert_verified(&items).unwrap();
            store.flush().unwrap();
        }
        let a = TestNode::start_in(&registry, 0, a_dir).await.expect("start A");
        assert_eq!(a.node.registry().read().unwrap().version(), RegistryVersion(2));
        let first = a
            .node
            .publish(sample_draft("an advisory"))
            .await
            .expect("publish");
        let kinds = [
            Kind::SoftwareUpdate {
                stage: UpdateStage::Released,
            },
            Kind::IncidentReport {
                phase: IncidentPhase::Ongoing,
            },
            Kind::IncidentMetrics {
                period_start: GENESIS_TIME,
                period_end: Timestamp(GENESIS_TIME.0 + 86_400_000),
                counts: vec![MetricCount {
                    name: "phishing-reports".into(),
                    value: 12,
                }],
            },
            Kind::EmergencyAlert,
            Kind::Outreach,
            Kind::FollowUp {
                on: first.id(),
                action: FollowUpAction::Update,
            },
            Kind::Withdrawal {
                of: first.id(),
                reason: "superseded by the update".into(),
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            a.node
                .publish(draft(kind, &format!("kind {i}")))
                .await
                .expect("publish");
        }
        let own = 1 + 7u64;
        let a_ids = ids_of(&a.node);
        let total = a_ids.len() as u64;
        assert_eq!(total, own + 3);

        let files = tempfile::tempdir().unwrap();
        let path = files.path().join("carried.bundle");
        let exported = a
            .node
            .export_bundle(path.clone(), ExportFilter::default())
            .await
            .expect("export");
        assert_eq!((exported.registry_updates, exported.bulletins), (2, total));

        let b = TestNode::start(&registry, 1).await.expect("start B");
        assert_eq!(
            b.node.registry().read().unwrap().version(),
            RegistryVersion::GENESIS
        );
        let report = b.node.import_bundle(path.clone()).await.expect("import");
        assert_eq!(report.new, total, "{report:?}");
        assert_eq!(
            (
                report.already_held,
                report.equivocations,
                report.registry_applied,
                report.registry_held
            ),
            (0, 0, 1, 1),
            "{report:?}"
        );
        assert!(report.rejected.is_empty(), "{report:?}");
        for (id, origin) in wait_all_stored(&b, &a_ids, CONVERGE).await {
            assert_eq!(origin, Origin::Bundle, "{}", id.fmt_short());
        }
        assert_eq!(b.node.registry().read().unwrap().version(), RegistryVersion(2));
        assert_eq!(ids_of(&b.node), a_ids);
        for id in &a_ids {
            assert_eq!(
                b.node.store().get_bytes(id).unwrap(),
                a.node.store().get_bytes(id).unwrap(),
                "{}",
                id.fmt_short()
            );
        }
        let a_key = registry.member(0).signing_key.id();
        for (key, n) in [(a_key, own), (new_key.id(), 3)] {
            let h = head(&b.node, &key);
            assert_eq!(
                h,
                ChainHead {
                    contiguous: Seq(n),
                    highest: Seq(n)
                },
                "B's copy of chain {}",
                key.fmt_short()
            );
        }
        let count = b.node.store().count().unwrap();
        assert_eq!(count, total);

        // Again: nothing new, nothing changes.
        let mark = b.events.len();
        let again = b.node.import_bundle(path).await.expect("import again");
        assert_eq!(
            (
                again.new,
                again.already_held,
                again.registry_applied,
                again.registry_held
            ),
            (0, total, 0, 2),
            "{again:?}"
        );
        assert!(again.rejected.is_empty(), "{again:?}");
        assert_eq!(ids_of(&b.node), a_ids);
        assert_eq!(b.node.store().count().unwrap(), count);
        // A marker after the second import: any event of it would have been recorded before this.
        let marker = b.node.publish(sample_draft("marker")).await.expect("publish");
        b.wait_stored(marker.id()).await.unwrap();
        let stored_since: Vec<BulletinId> = b.events.all_from(mark, |e| match e {
            NodeEvent::BulletinStored { id, .. } => Some(*id),
            _ => None,
        });
        assert_eq!(
            stored_since,
            vec![marker.id()],
            "the second import stored nothing"
        );

        // The two never met.
        for node in [&a, &b] {
            assert!(node.node.connected_peers().await.is_empty());
            assert!(
                node.events
                    .find(|e| matches!(e, NodeEvent::PeerConnected(_)).then_some(()))
                    .is_none()
            );
        }
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// The library import on a bare store, as `herald import` runs it.
fn import_into(
    path: &Path,
    store: &Store,
    registry: &RwLock<herald_keys::Registry>,
) -> Result<bundle::ImportReport, BundleError> {
    let mut sink = |items: Vec<(SignedBulletin, MemberId)>| store.insert_verified(&items);
    bundle::import(path, store, registry, &mut sink, |_, _| {})
}

/// What a store and its registry hold, for before/after comparisons.
fn state(
    store: &Store,
    registry: &RwLock<herald_keys::Registry>,
) -> (u64, BTreeSet<BulletinId>, RegistryVersion) {
    (
        store.count().unwrap(),
        held_ids(store),
        registry.read().unwrap().version(),
    )
}

/// Every single-byte change, truncation or extra byte in a small bundle is refused, and no damaged
/// bundle changes the store; a bundle of another network is refused as such; a bulletin with an
/// altered signature in a bundle whose checksum was recomputed is refused alone, with a reason.
#[test]
fn damaged_and_foreign_bundles_change_nothing() {
    let registry = TestRegistry::new(3);
    let network = registry.network();
    let chain = old_chain(network, &registry.member(1).signing_key, 3, "b");
    let member = registry.member(1).id();
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<Vec<u8>> = chain.iter().map(SignedBulletin::to_bytes).collect();
    let bytes = bundle_bytes(network, &[&registry.genesis], &good);

    // The bytes written here are exactly what the node's export writes.
    {
        let source = Store::open(&dir.path().join("source"), network).unwrap();
        let items: Vec<(SignedBulletin, MemberId)> = chain.iter().map(|b| (b.clone(), member)).collect();
        source.insert_verified(&items).unwrap();
        let exported = dir.path().join("exported.bundle");
        bundle::export(
            &exported,
            &source,
            &registry.registry().unwrap(),
            &ExportFilter::default(),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(
            std::fs::read(&exported).unwrap(),
            bytes,
            "export and this test agree on the layout"
        );
    }

    let store = Store::open(&dir.path().join("target"), network).unwrap();
    let reg = RwLock::new(registry.registry().unwrap());
    let before = state(&store, &reg);
    let path = dir.path().join("damaged.bundle");
    let try_import = |damaged: &[u8], what: &str| -> bool {
        std::fs::write(&path, damaged).unwrap();
        let result = import_into(&path, &store, &reg);
        assert_eq!(
            state(&store, &reg),
            before,
            "{what} changed the store: {result:?}"
        );
        result.is_err()
    };
    let started = Instant::now();
    let mut refused = 0;
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        refused += usize::from(try_import(&damaged, &format!("a flip at byte {at}")));
    }
    let cuts = [
        0,
        1,
        7,
        8,
        41,
        53,
        54,
        58,
        bytes.len() / 2,
        bytes.len() - 33,
        bytes.len() - 32,
        bytes.len() - 1,
    ];
    for cut in cuts {
        assert!(
            try_import(&bytes[..cut], &format!("a cut at {cut}")),
            "a cut at {cut} was accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(try_import(&longer, "an extra byte"), "an extra byte was accepted");
    eprintln!(
        "bundle damage: {refused} of {} single-byte flips refused, {} cuts and an extra byte refused, in {:?}",
        bytes.len(),
        cuts.len(),
        started.elapsed()
    );
    assert_eq!(refused, bytes.len(), "the checksum covers every byte");

    // Another network's bundle.
    let other = TestRegistry::new(2);
    let theirs = old_chain(other.network(), &other.member(0).signing_key, 2, "theirs");
    let foreign = write_bundle(dir.path(), "foreign.bundle", &other, &theirs);
    match import_into(&foreign, &store, &reg) {
        Err(BundleError::WrongNetwork { expected, found, .. }) => {
            assert_eq!((expected, found), (network, other.network()));
        }
        other => panic!("a foreign bundle gave {other:?}"),
    }
    assert_eq!(state(&store, &reg), before);

    // One altered signature under a recomputed checksum: that item refused, the others stored.
    let mut altered = good.clone();
    let r = altered[1].len() - 64;
    altered[1][r] ^= 0x01;
    let path = dir.path().join("altered.bundle");
    std::fs::write(&path, bundle_bytes(network, &[&registry.genesis], &altered)).unwrap();
    let report = import_into(&path, &store, &reg).expect("a well-formed bundle imports");
    assert_eq!(
        (report.new, report.already_held, report.registry_held),
        (2, 0, 1),
        "{report:?}"
    );
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    let (position, reason) = &report.rejected[0];
    assert_eq!(*position, 2, "the genesis is item 0, the altered bulletin item 2");
    assert!(reason.contains("signature"), "{reason}");
    let expected: BTreeSet<BulletinId> = [chain[0].id(), chain[2].id()].into();
    assert_eq!(held_ids(&store), expected);

    // And the intact bundle brings the missing one, nothing else.
    std::fs::write(&path, &bytes).unwrap();
    let report = import_into(&path, &store, &reg).expect("the intact bundle");
    assert_eq!((report.new, report.already_held), (1, 2), "{report:?}");
    assert_eq!(
        held_ids(&store),
        chain.iter().map(SignedBulletin::id).collect::<BTreeSet<_>>()
    );
}

/// A seeded generator for the crafted bundles below (splitmix64).
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whoever carries a bundle can recompute its checksum. 800 seeded changes of a bundle (bytes
/// changed, lengths and counts rewritten, stretches cut out, repeated or inserted, two items
/// swapped), each under a recomputed checksum, are imported (into a fresh store every 50 rounds,
/// so that changed copies meet both an empty chain and one that holds the originals): nothing
/// panics, a refused bundle changes nothing, and the store (bulletins, equivocation evidence,
/// registry history) and the registry never hold a bulletin or an update body that was not signed
/// as it is.
#[test]
fn crafted_bundles_under_a_valid_checksum_store_only_what_was_signed() {
    let registry = TestRegistry::new(3);
    let network = registry.network();
    let chain = old_chain(network, &registry.member(1).signing_key, 4, "crafted");
    let update = registry.nodes_only(&[0, 1]).unwrap();
    let signed: Vec<Vec<u8>> = chain.iter().map(SignedBulletin::to_bytes).collect();
    let bodies: Vec<Vec<u8>> = vec![
        registry.genesis.body_bytes().to_vec(),
        update.body_bytes().to_vec(),
    ];
    let bytes = bundle_bytes(network, &[&registry.genesis, &update], &signed);
    let body = &bytes[..bytes.len() - 32];
    // Where each item's length starts, for changes aimed at the framing.
    let mut frames = Vec::new();
    let mut at = 54;
    for item in [registry.genesis.to_bytes(), update.to_bytes()]
        .iter()
        .chain(&signed)
    {
        frames.push((at, 4 + item.len()));
        at += 4 + item.len();
    }

    let dir = tempfile::tempdir().unwrap();
    // As a node's first start leaves them: the genesis applied and saved.
    let fresh = |round: usize| {
        let store = Store::open(&dir.path().join(format!("store-{round}")), network).unwrap();
        store.save_registry_update(&registry.genesis).unwrap();
        (store, RwLock::new(registry.registry().unwrap()))
    };
    let versions = [registry.genesis.body().version, update.body().version];
    let path = dir.path().join("crafted.bundle");
    let mut rng = Seeded(20_261_126);
    let (mut refused, mut imported) = (0, 0);
    let mut current = None;
    for round in 0..800 {
        if round % 50 == 0 {
            current = Some(fresh(round));
        }
        let (store, reg) = current.as_ref().unwrap();
        let mut crafted = body.to_vec();
        let len = crafted.len();
        let what = match rng.below(7) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(len);
                    crafted[i] ^= 1 << rng.below(8);
                }
                "bytes changed"
            }
            1 => {
                let (start, _) = frames[rng.below(frames.len())];
                let value = match rng.below(4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => rng.below(len) as u32,
                    _ => u32::from_le_bytes(crafted[start..start + 4].try_into().unwrap()) ^ 1,
                };
                crafted[start..start + 4].copy_from_slice(&value.to_le_bytes());
                "an item's length rewritten"
            }
            2 => {
                if rng.below(2) == 0 {
                    let value = [0, 1, 3, u32::MAX][rng.below(4)];
                    crafted[42..46].copy_from_slice(&value.to_le_bytes());
                } else {
                    let value = [0, 1, 5, 7, u64::MAX][rng.below(5)];
                    crafted[46..54].copy_from_slice(&value.to_le_bytes());
                }
                "a count rewritten"
            }
            3 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                crafted.drain(from..to);
                "a stretch cut out"
            }
            4 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(256)).min(len);
                let copy = crafted[from..to].to_vec();
                let at = rng.below(len);
                crafted.splice(at..at, copy);
                "a stretch repeated"
            }
            5 => {
                let at = rng.below(len);
                let garbage: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                crafted.splice(at..at, garbage);
                "garbage inserted"
            }
            _ => {
                let (a, b) = (2 + rng.below(signed.len()), 2 + rng.below(signed.len()));
                let (a, b) = (a.min(b), a.max(b));
                if a != b {
                    let (sa, la) = frames[a];
                    let (sb, lb) = frames[b];
                    let mut swapped = crafted[..sa].to_vec();
                    swapped.extend_from_slice(&crafted[sb..sb + lb]);
                    swapped.extend_from_slice(&crafted[sa + la..sb]);
                    swapped.extend_from_slice(&crafted[sa..sa + la]);
                    swapped.extend_from_slice(&crafted[sb + lb..]);
                    crafted = swapped;
                }
                "two bulletins swapped"
            }
        };
        let checksum = Sha256::digest(&crafted);
        crafted.extend_from_slice(&checksum);
        std::fs::write(&path, &crafted).unwrap();
        let before = state(store, reg);
        match import_into(&path, store, reg) {
            Ok(_) => imported += 1,
            Err(e) => {
                refused += 1;
                assert_eq!(
                    state(store, reg),
                    before,
                    "round {round} ({what}): a refused bundle changed the store: {e}"
                );
            }
        }
        let held = held_ids(store);
        for id in &held {
            let bytes = store.get_bytes(id).unwrap().unwrap();
            assert!(
                signed.contains(&bytes),
                "round {round} ({what}): the store holds a bulletin that was not signed as it is"
            );
        }
        assert_eq!(
            store.count().unwrap(),
            held.len() as u64,
            "round {round} ({what}): the store counts a bulletin its queries do not list"
        );
        assert!(
            store.equivocations().unwrap().is_empty(),
            "round {round} ({what}): a changed copy was kept as a second bulletin for a number"
        );
        assert!(
            versions.contains(&reg.read().unwrap().version()),
            "round {round} ({what}): the registry reached a version no update signed"
        );
        // An update's approvals beyond those that verify are ignored by design (a relay may
        // append junk), so what must be as signed is its body.
        for update in store.registry_history().unwrap() {
            assert!(
                bodies.contains(&update.body_bytes().to_vec()),
                "round {round} ({what}): the registry holds an update whose body was not signed as it is"
            );
        }
    }
    eprintln!("crafted bundles: {imported} imported, {refused} refused");
    assert!(
        imported > 0 && refused > 0,
        "the changes both keep and break the structure"
    );
}

/// A bundle larger than one import group is verified on several threads and still stored and
/// reported in file order: bad items at group edges are named by their position, everything else
/// is stored, and the chains have exactly the holes the bad items leave.
#[test]
fn a_bundle_of_many_groups_is_reported_in_file_order() {
    let registry = TestRegistry::new(3);
    let network = registry.network();
    // Three chains interleaved, 1,100 bulletins: groups of 1,000 and 100.
    let chains: Vec<Vec<SignedBulletin>> = (0..3)
        .map(|m| old_chain(network, &registry.member(m).signing_key, 367, &format!("m{m}")))
        .collect();
    let mut wires: Vec<Vec<u8>> = Vec::new();
    let mut order: Vec<&SignedBulletin> = Vec::new();
    for seq in 0..367 {
        for chain in &chains {
            if order.len() < 1100 {
                order.push(&chain[seq]);
                wires.push(chain[seq].to_bytes());
            }
        }
    }
    let bad = [0usize, 999, 1000, 1099];
    for &at in &bad {
        let r = wires[at].len() - 64;
        wires[at][r] ^= 0x01;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.bundle");
    std::fs::write(&path, bundle_bytes(network, &[&registry.genesis], &wires)).unwrap();
    let store = Store::open(&dir.path().join("store"), network).unwrap();
    let reg = RwLock::new(registry.registry().unwrap());
    let report = import_into(&path, &store, &reg).expect("a well-formed bundle imports");
    assert_eq!(report.new, 1100 - bad.len() as u64, "{:?}", report.rejected);
    let positions: Vec<u64> = report.rejected.iter().map(|(at, _)| *at).collect();
    // The genesis is item 0; bulletin i is item i + 1.
    assert_eq!(positions, bad.iter().map(|&i| i as u64 + 1).collect::<Vec<_>>());
    assert!(
        report.rejected.iter().all(|(_, why)| why.contains("signature")),
        "{:?}",
        report.rejected
    );
    let expected: BTreeSet<BulletinId> = order
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad.contains(i))
        .map(|(_, b)| b.id())
        .collect();
    assert_eq!(held_ids(&store), expected);
    // Item 0 was seq 1 of the first chain: that chain starts with a hole.
    let first = registry.member(0).signing_key.id();
    assert_eq!(store.head(&first).unwrap().contiguous, Seq(0));
}

/// A hostile member's claim: one chain of `key` held up to `u64::MAX`.
fn huge_claim(registry: (RegistryVersion, herald_protocol::RegistryHash), key: KeyId) -> SyncResponse {
    SyncResponse::Summary {
        registry_version: registry.0,
        registry_hash: registry.1,
        chains: vec![ChainSummary {
            key,
            contiguous: Seq(u64::MAX),
            highest: Seq(u64::MAX),
            count: u64::MAX,
            fingerprint: [0xAB; 32],
            evidence: 0,
        }],
    }
}

/// Honest H is connected to honest Y and to two hostile members X and X2, whose sync answers are
/// forged (the test hook answers H's requests with queued raw responses). H asks each in turn
/// (periodic sync is an hour away, so only the test starts sessions):
///
/// - X: a claim of a chain up to u64::MAX, then an empty page that says it is not complete (a
///   stall: the session ends, no offence); the claim with a page of garbage; the claim with a
///   well-encoded bulletin whose signature is bad; the claim with a valid bulletin of another
///   chain, not asked for. Three offences: X is banned and disconnected.
/// - X2: a page in answer to hello; a claim of a registry version ahead, then a garbage registry
///   update; a frame over the response limit. Three offences: banned.
///
/// H stores nothing of it, keeps its legitimate bulletins, and still serves and publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_sync_peers_are_refused_and_banned() {
    within(async {
        const H: usize = 0;
        const X: usize = 1;
        const X2: usize = 2;
        const Y: usize = 3;
        const K: usize = 4; // a member that runs no node: the chain X claims
        let registry = TestRegistry::new(5).with_timing(fast_timing_with_sync_every(NEVER));
        let network = registry.network();
        let h = TestNode::start_allowing(&registry, H, &[X, X2, Y])
            .await
            .expect("start H");
        let x = TestNode::start_allowing(&registry, X, &[H])
            .await
            .expect("start X");
        let x2 = TestNode::start_allowing(&registry, X2, &[H])
            .await
            .expect("start X2");
        let y = TestNode::start_allowing(&registry, Y, &[H])
            .await
            .expect("start Y");
        for other in [&x, &x2, &y] {
            connect(other, &h).await.expect("connect to H");
        }
        // Legitimate traffic first.
        let from_y = y
            .node
            .publish(sample_draft("legit from Y"))
            .await
            .expect("publish");
        h.wait_stored(from_y.id()).await.expect("H takes Y's");
        let from_h = h
            .node
            .publish(sample_draft("legit from H"))
            .await
            .expect("publish");
        y.wait_stored(from_h.id()).await.expect("Y takes H's");
        let legit = ids_of(&h.node);
        assert_eq!(legit.len(), 2);

        let reg = {
            let r = h.node.registry();
            let r = r.read().unwrap();
            (r.version(), r.hash())
        };
        let k_key = &registry.member(K).signing_key;
        let claim = huge_claim(reg, k_key.id());
        let forged = {
            let genuine =
                signed_sample(network, k_key, Seq(1), None, herald_node::node::now(), "forged").unwrap();
            let mut bytes = genuine.to_bytes();
            let r = bytes.len() - 64;
            bytes[r] ^= 0x01;
            (genuine.id(), bytes)
        };
        let unasked = signed_sample(
            network,
            &registry.member(X).signing_key,
            Seq(1),
            None,
            herald_node::node::now(),
            "not asked for",
        )
        .unwrap();
        let page = |bulletins: Vec<Vec<u8>>, complete: bool| SyncResponse::Page { bulletins, complete };
        x.node
            .hostile_sync_answers(vec![
                claim.clone(),
                page(Vec::new(), false),
                claim.clone(),
                page(
                    vec![vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], b"garbage".to_vec()],
                    false,
                ),
                claim.clone(),
                page(vec![forged.1.clone()], true),
                claim.clone(),
                page(vec![unasked.to_bytes()], true),
            ])
            .await;
        x2.node
            .hostile_sync_answers(vec![
                page(Vec::new(), true),
                SyncResponse::Summary {
                    registry_version: RegistryVersion(reg.0.0 + 5),
                    registry_hash: reg.1,
                    chains: Vec::new(),
                },
                SyncResponse::Registry {
                    updates: vec![b"not a registry update".to_vec()],
                },
                page(vec![vec![0x55; MAX_SYNC_RESPONSE_BYTES + 1]], true),
            ])
            .await;

        // (hostile node, what each session should end with: None for a clean end, or a part of
        // the failure's reason)
        let plans: [(&TestNode, &[Option<&str>]); 2] = [
            (
                &x,
                &[
                    None,
                    Some("undecodable"),
                    Some("signature"),
                    Some("not asked for"),
                ],
            ),
            (
                &x2,
                &[
                    Some("unexpected answer to hello"),
                    Some("registry update"),
                    Some("limit"),
                ],
            ),
        ];
        for (hostile, plan) in plans {
            let peer = hostile.peer_id();
            for (session, expected) in plan.iter().enumerate() {
                let mark = h.events.len();
                h.node.sync_with(peer).await;
                let end = next_session_end(&h, peer, mark).await;
                eprintln!("hostile peer {}, session {session}: {end:?}", hostile.index);
                match (expected, &end) {
                    (
                        None,
                        NodeEvent::SyncCompleted {
                            new_bulletins,
                            round_trips,
                            ..
                        },
                    ) => {
                        // Hello, then one fetch: an empty page ends the session.
                        assert_eq!((*new_bulletins, *round_trips), (0, 2), "{end:?}");
                    }
                    (Some(part), NodeEvent::SyncFailed { reason, .. }) => {
                        assert!(
                            reason.contains(part),
                            "session {session}: {reason:?}, expected {part:?}"
                        );
                    }
                    _ => panic!(
                        "session {session} with node {}: {end:?}, expected {expected:?}",
                        hostile.index
                    ),
                }
            }
            h.events
                .wait_for("H to ban the hostile peer", CONVERGE, |e| {
                    matches!(e, NodeEvent::PeerBanned(p) if *p == peer).then_some(())
                })
                .await
                .unwrap();
            h.wait_disconnected(peer, 0).await.expect("H lets it go");
            let banned_at = h
                .events
                .snapshot()
                .iter()
                .position(|e| matches!(e, NodeEvent::PeerBanned(p) if *p == peer))
                .unwrap();
            let offences = h.events.all(|e| match e {
                NodeEvent::Rejected { peer: p, .. } if *p == peer => Some(()),
                _ => None,
            });
            assert_eq!(offences.len(), 3, "three offences each, no more, no fewer");
            let before_ban = h.events.snapshot()[..banned_at]
                .iter()
                .filter(|e| matches!(e, NodeEvent::Rejected { peer: p, .. } if *p == peer))
                .count();
            assert_eq!(before_ban, 3, "banned at the third offence");
            assert!(!h.node.connected_peers().await.contains(&peer));
        }

        // Nothing hostile stored; the legitimate data is intact.
        assert_eq!(ids_of(&h.node), legit);
        assert_eq!(h.node.store().held_count().unwrap(), 2);
        for id in [forged.0, unasked.id()] {
            assert!(!h.node.store().contains(&id).unwrap());
        }
        assert_eq!(
            head(&h.node, &k_key.id()),
            ChainHead {
                contiguous: Seq(0),
                highest: Seq(0)
            }
        );

        // H still publishes and serves.
        let after = h
            .node
            .publish(sample_draft("still standing"))
            .await
            .expect("publish");
        assert_eq!(
            origin_peer(y.wait_stored(after.id()).await.expect("Y takes it")),
            Some(h.peer_id())
        );
        let mark = y.events.len();
        y.node.sync_with(h.peer_id()).await;
        let end = next_session_end(&y, h.peer_id(), mark).await;
        assert!(
            matches!(end, NodeEvent::SyncCompleted { .. }),
            "H serves Y: {end:?}"
        );
        assert_eq!(ids_of(&y.node), ids_of(&h.node));

        stop_all(vec![h, x, x2, y]).await;
    })
    .await;
}

/// Two nodes in step settle in one round trip; a node that lacks something needs a fetch too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_in_step_settle_in_one_round_trip() {
    within(async {
        let registry = TestRegistry::new(3).with_timing(fast_timing_with_sync_every(NEVER));
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let b = TestNode::start(&registry, 1).await.expect("start B");
        connect(&a, &b).await.expect("connect");
        let bulletin = a.node.publish(sample_draft("shared")).await.expect("publish");
        b.wait_stored(bulletin.id()).await.expect("B takes it");

        let mark = b.events.len();
        b.node.sync_with(a.peer_id()).await;
        let end = next_session_end(&b, a.peer_id(), mark).await;
        match end {
            NodeEvent::SyncCompleted {
                in_step,
                round_trips,
                new_bulletins,
                registry_updates,
                ..
            } => assert_eq!(
                (in_step, round_trips, new_bulletins, registry_updates),
                (true, 1, 0, 0)
            ),
            other => panic!("{other:?}"),
        }

        // B now holds an old bulletin A lacks (from a bundle: nobody gossips it): A needs a fetch.
        let old = old_chain(registry.network(), &registry.member(2).signing_key, 1, "old");
        let files = tempfile::tempdir().unwrap();
        let path = write_bundle(files.path(), "old.bundle", &registry, &old);
        assert_eq!(b.node.import_bundle(path).await.expect("import").new, 1);
        let mark = a.events.len();
        a.node.sync_with(b.peer_id()).await;
        let end = next_session_end(&a, b.peer_id(), mark).await;
        match end {
            NodeEvent::SyncCompleted {
                in_step,
                round_trips,
                new_bulletins,
                ..
            } => assert_eq!((in_step, round_trips, new_bulletins), (false, 2, 1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(ids_of(&a.node), ids_of(&b.node));
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A node with no peers still takes local publications (stored, and queued for gossip) and
/// delivers them once a peer connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_alone_publishes_and_delivers_when_it_connects() {
    within(async {
        let registry = TestRegistry::new(2).with_timing(fast_timing_with_sync_every(NEVER));
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let mut ids = BTreeSet::new();
        for i in 0..3 {
            let b = a
                .node
                .publish(sample_draft(&format!("alone {i}")))
                .await
                .expect("publish alone");
            ids.insert(b.id());
        }
        assert_eq!(ids_of(&a.node), ids, "stored while alone");
        let status = a.node.network_status().await;
        assert!(status.connected.is_empty(), "{status:?}");
        assert_eq!(status.pending_gossip, 3, "{status:?}");

        let b = TestNode::start(&registry, 1).await.expect("start B");
        connect(&b, &a).await.expect("connect");
        for (id, origin) in wait_all_stored(&b, &ids, CONVERGE).await {
            assert_eq!(
                origin_peer(origin),
                Some(a.peer_id()),
                "{}: {origin:?}",
                id.fmt_short()
            );
        }
        assert_eq!(ids_of(&b.node), ids);
        let status = a.node.network_status().await;
        assert_eq!(status.pending_gossip, 0, "{status:?}");
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A long queue of own bulletins kept while alone (more than the tree sends at once: 256) goes
/// out in batches once a peer is linked: the queue empties, and the peer holds them all (by the
/// tree or by its catch-up, whichever comes first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_queue_kept_while_alone_goes_out_in_batches() {
    within(async {
        const QUEUED: usize = 600;
        let registry = TestRegistry::new(2).with_timing(fast_timing_with_sync_every(NEVER));
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let mut ids = BTreeSet::new();
        for i in 0..QUEUED {
            let b = a
                .node
                .publish(sample_draft(&format!("queued {i}")))
                .await
                .expect("publish alone");
            ids.insert(b.id());
        }
        assert_eq!(a.node.network_status().await.pending_gossip, QUEUED);

        let b = TestNode::start(&registry, 1).await.expect("start B");
        connect(&b, &a).await.expect("connect");
        wait_all_stored(&b, &ids, CONVERGE).await;
        // The queue empties within a few of the tree's ticks (100 ms each), and A says so once,
        // with every bulletin it held.
        let sent = a
            .events
            .wait_for("A to send its queue", CONVERGE, |e| match e {
                NodeEvent::BacklogSent { count } => Some(*count),
                _ => None,
            })
            .await
            .expect("the queue sent");
        assert_eq!(sent, QUEUED);
        assert_eq!(a.node.network_status().await.pending_gossip, 0);
        let notices = a
            .events
            .all_from(0, |e| matches!(e, NodeEvent::BacklogSent { .. }).then_some(()));
        assert_eq!(notices.len(), 1, "told once");
        // Every bulletin taken from the queue went into the link's queue. (B may have got them
        // first by its catch-up: this test does not tell which; push.rs's unit tests check the
        // batches and their order.)
        let tree = a.node.network_status().await.tree;
        assert_eq!(tree.frames_dropped, 0, "{tree:?}");
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A node that restarts again and again is taken back on the tree each time: the streams its
/// earlier runs opened free their reading slots (two per peer) when their connections close, so
/// the new run's bulletins come pushed by the tree, not by sync (which runs only on connecting
/// here, before each bulletin is published).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarting_again_and_again_is_taken_back_on_the_tree() {
    within(async {
        let registry = TestRegistry::new(2).with_timing(fast_timing_with_sync_every(NEVER));
        let b = TestNode::start(&registry, 1).await.expect("start B");
        let mut a = TestNode::start(&registry, 0).await.expect("start A");
        // More runs than a peer has reading slots.
        for run in 0..4 {
            let mark = b.events.len();
            connect(&a, &b).await.expect("connect");
            b.wait_subscribed(a.peer_id(), mark).await.expect("B links A");
            let bulletin = a
                .node
                .publish(sample_draft(&format!("run {run}")))
                .await
                .expect("publish");
            let origin = b.wait_stored(bulletin.id()).await.expect("B stores it");
            assert_eq!(
                origin,
                Origin::Gossip(a.peer_id()),
                "run {run}: pushed by the tree"
            );
            let mark = b.events.len();
            let dir = a.stop().await;
            b.wait_disconnected(registry.peer_id(0).unwrap(), mark)
                .await
                .expect("B sees A go");
            a = TestNode::start_in(&registry, 0, dir).await.expect("restart A");
        }
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A member may number a bulletin u64::MAX (the format allows any number from 1): a valid chain
/// entry at the very top of the range must not break catch-up. H and Y both hold member 2's
/// bulletin u64::MAX (from bundles; a member can as well gossip it to everyone), and Y also holds
/// its bulletin 7: H syncs with Y and gets 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulletin_numbered_u64_max_does_not_break_sync() {
    within(async {
        let registry = TestRegistry::new(3).with_timing(fast_timing_with_sync_every(NEVER));
        let network = registry.network();
        let key = &registry.member(2).signing_key;
        let top = signed_sample(
            network,
            key,
            Seq(u64::MAX),
            Some(BulletinId::from_bytes([7; 32])),
            Timestamp(GENESIS_TIME.0 + 1000),
            "the top of the range",
        )
        .unwrap();
        let seven = signed_sample(
            network,
            key,
            Seq(7),
            Some(BulletinId::from_bytes([6; 32])),
            Timestamp(GENESIS_TIME.0 + 2000),
            "number seven",
        )
        .unwrap();
        let h = TestNode::start(&registry, 0).await.expect("start H");
        let y = TestNode::start(&registry, 1).await.expect("start Y");
        connect(&h, &y).await.expect("connect");
        let files = tempfile::tempdir().unwrap();
        let to_h = write_bundle(files.path(), "h.bundle", &registry, std::slice::from_ref(&top));
        let to_y = write_bundle(files.path(), "y.bundle", &registry, &[seven.clone(), top.clone()]);
        assert_eq!(h.node.import_bundle(to_h).await.expect("H imports").new, 1);
        assert_eq!(y.node.import_bundle(to_y).await.expect("Y imports").new, 2);

        let mark = h.events.len();
        h.node.sync_with(y.peer_id()).await;
        let end = next_session_end(&h, y.peer_id(), mark).await;
        assert!(
            matches!(end, NodeEvent::SyncCompleted { new_bulletins: 1, .. }),
            "H could not fetch bulletin 7 from Y: {end:?}"
        );
        assert!(h.node.store().contains(&seven.id()).unwrap());
        stop_all(vec![h, y]).await;
    })
    .await;
}

/// A member that claims its chain reaches u64::MAX and sends its own valid bulletin numbered
/// u64::MAX (no forgery: members may sign any number) gives the asker a session that ends, like
/// any other, and the next session with that member runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_at_the_top_of_the_range_ends_the_session() {
    within(async {
        let registry = TestRegistry::new(3).with_timing(fast_timing_with_sync_every(NEVER));
        let h = TestNode::start(&registry, 0).await.expect("start H");
        let x = TestNode::start(&registry, 1).await.expect("start X");
        connect(&h, &x).await.expect("connect");
        let key = &registry.member(1).signing_key;
        let top = signed_sample(
            registry.network(),
            key,
            Seq(u64::MAX),
            Some(BulletinId::from_bytes([7; 32])),
            Timestamp(GENESIS_TIME.0 + 1000),
            "the top of the range",
        )
        .unwrap();
        let reg = {
            let r = h.node.registry();
            let r = r.read().unwrap();
            (r.version(), r.hash())
        };
        x.node
            .hostile_sync_answers(vec![
                huge_claim(reg, key.id()),
                SyncResponse::Page {
                    bulletins: vec![top.to_bytes()],
                    complete: false,
                },
            ])
            .await;
        let mark = h.events.len();
        h.node.sync_with(x.peer_id()).await;
        let end = next_session_end(&h, x.peer_id(), mark).await;
        assert!(
            matches!(end, NodeEvent::SyncCompleted { new_bulletins: 1, .. }),
            "a valid, asked-for bulletin: {end:?}"
        );
        assert!(h.node.store().contains(&top.id()).unwrap());
        // The next session (X answers honestly now) runs too.
        let mark = h.events.len();
        h.node.sync_with(x.peer_id()).await;
        next_session_end(&h, x.peer_id(), mark).await;
        stop_all(vec![h, x]).await;
    })
    .await;
}

/// A bulletin received by gossip a moment ago is held (staged) before the indexer folds it into
/// the store's indexes, which exports read. An export folds what is staged first, so the bundle
/// holds everything `list` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_holds_what_gossip_brought_a_moment_ago() {
    within(async {
        let registry = TestRegistry::new(2).with_timing(fast_timing_with_sync_every(NEVER));
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let b = TestNode::start(&registry, 1).await.expect("start B");
        connect(&a, &b).await.expect("connect");
        let mark = b.events.len();
        let sent = a.node.publish(sample_draft("just now")).await.expect("publish");
        b.events
            .wait_for_from("B to receive the bulletin", mark, CONVERGE, |e| match e {
                NodeEvent::BulletinReceived { bulletin, .. } if bulletin.id() == sent.id() => Some(()),
                _ => None,
            })
            .await
            .expect("received");
        // At once: the indexer waits for a quiet moment before it folds.
        let files = tempfile::tempdir().unwrap();
        let path = files.path().join("now.bundle");
        let exported = b
            .node
            .export_bundle(path.clone(), ExportFilter::default())
            .await
            .expect("export");
        assert_eq!(
            exported.bulletins, 1,
            "the bulletin received a moment ago is in the bundle"
        );
        let report = herald_node::audit::audit(&path, registry.genesis_hash, None, |_| {}).expect("audit");
        assert_eq!((report.verified, report.clean()), (1, true));
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A peer that sends many sync requests at once has two answered at a time and the rest refused
/// as busy, without blame: every request gets an answer, the asker stays connected with its
/// score intact, and its next request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_sync_requests_is_answered_or_refused_as_busy() {
    use herald_protocol::sync::SyncRequest;
    within(async {
        let registry = TestRegistry::new(2).with_timing(fast_timing_with_sync_every(NEVER));
        let nodes = start_nodes(&registry, &[0, 1]).await.expect("start");
        connect(&nodes[0], &nodes[1]).await.expect("connect");
        let (a, b) = (&nodes[0], &nodes[1]);
        let hello = || SyncRequest::Hello {
            registry_version: RegistryVersion(1),
            digest: [0; 32],
        };
        let answers =
            futures::future::join_all((0..24).map(|_| a.node.sync_request(b.peer_id(), hello()))).await;
        let (mut answered, mut busy) = (0, 0);
        for answer in answers {
            match answer {
                Ok(SyncResponse::Summary { .. }) => answered += 1,
                Ok(SyncResponse::Refused { reason }) if reason.starts_with("busy") => busy += 1,
                other => panic!("neither an answer nor a refusal as busy: {other:?}"),
            }
        }
        assert!(
            answered >= 1,
            "none of the burst was answered ({busy} refused as busy)"
        );
        eprintln!("{answered} answered, {busy} refused as busy");
        assert!(
            matches!(
                a.node.sync_request(b.peer_id(), hello()).await,
                Ok(SyncResponse::Summary { .. })
            ),
            "the request after the burst is answered"
        );
        assert_eq!(b.node.connected_peers().await, vec![a.peer_id()]);
        assert!(
            b.node
                .peer_score(a.peer_id())
                .await
                .is_some_and(|score| score >= 0.0),
            "asking too much at once is not an offence"
        );
        stop_all(nodes).await;
    })
    .await;
}
