//! End-to-end network tests: real nodes on loopback TCP in one process. A bulletin crossing a line
//! of nodes; hostile input from members rejected at the first hop and never forwarded; a member
//! that keeps sending invalid input disconnected, one whose bulletins the registry does not admit
//! not; its gossip score below zero after one rejection; a
//! flood of tree announcements and grafts held to its bounds without an offence; a non-member
//! refused at the connection; connections that never finish their handshake dropped; a registry
//! fork still reported after a restart; a split of members' own registry changes settled by the
//! branch a threshold approved; a restart that keeps the store and continues the chain; a node that
//! lost its store numbering nothing before a peer gives its chain back; a ring whose links settle
//! into a tree, which mends when a node on it stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use herald_keys::SecretKey;
use herald_node::{KeyPast, Node, NodeEvent, Origin, PublishError, Query};
use herald_protocol::{
    BulletinId, KeyId, MAX_BULLETIN_BYTES, RegistryOp, RegistryVersion, RevocationPoint, Seq, SignedBulletin,
    Timestamp,
};
use herald_tests::{
    GENESIS_TIME, TestNode, TestRegistry, WAIT, connect, connect_edges, connect_line,
    fast_timing_with_sync_every, line_neighbours, origin_peer, sample_draft, signed_sample, start_line,
    stop_all,
};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, noise, ping, tcp, yamux};

/// The most any test here may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body, failing it if it takes longer than [`LIMIT`].
async fn within(body: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {LIMIT:?}"));
}

fn sorted(mut peers: Vec<PeerId>) -> Vec<PeerId> {
    peers.sort();
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulletin_crosses_a_line_of_six_nodes() {
    within(async {
        const N: usize = 6;
        let registry = TestRegistry::new(N);
        let nodes = start_line(&registry, N).await.expect("start the nodes");
        connect_line(&nodes).await.expect("connect the line");

        // One bulletin from each end.
        let from_first = nodes[0]
            .node
            .publish(sample_draft("from the first node"))
            .await
            .expect("publish");
        let from_last = nodes[N - 1]
            .node
            .publish(sample_draft("from the last node"))
            .await
            .expect("publish");
        for (i, node) in nodes.iter().enumerate() {
            // In a line, each node can only have it from the neighbour nearer the source.
            let origin = node
                .wait_stored(from_first.id())
                .await
                .expect("the first node's bulletin arrives");
            if i == 0 {
                assert_eq!(origin, Origin::Local);
            } else {
                assert_eq!(
                    origin_peer(origin),
                    Some(nodes[i - 1].peer_id()),
                    "node {i}: {origin:?}"
                );
            }
            let origin = node
                .wait_stored(from_last.id())
                .await
                .expect("the last node's bulletin arrives");
            if i == N - 1 {
                assert_eq!(origin, Origin::Local);
            } else {
                assert_eq!(
                    origin_peer(origin),
                    Some(nodes[i + 1].peer_id()),
                    "node {i}: {origin:?}"
                );
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            let store = node.node.store();
            for bulletin in [&from_first, &from_last] {
                assert_eq!(
                    store.get_bytes(&bulletin.id()).unwrap().as_deref(),
                    Some(bulletin.as_bytes()),
                    "node {i} holds exactly the bytes that were signed"
                );
            }
            assert_eq!(store.count().unwrap(), 2, "node {i}");
        }
        // The line held all along: every node is connected with its neighbours only.
        for (i, around) in line_neighbours(N).iter().enumerate() {
            let expected = sorted(around.iter().map(|&j| nodes[j].peer_id()).collect());
            assert_eq!(
                sorted(nodes[i].node.connected_peers().await),
                expected,
                "node {i}'s peers"
            );
        }
        stop_all(nodes).await;
    })
    .await;
}

/// Sends `bytes` (the `what` message) from `attacker` as unchecked gossip and waits for `at` to
/// reject it, naming the attacker, for a reason that contains `reason`.
async fn expect_rejected(at: &TestNode, attacker: &TestNode, what: &str, bytes: Vec<u8>, reason: &str) {
    let mark = at.events.len();
    attacker.node.inject_unchecked(bytes).await;
    let attacker_id = attacker.peer_id();
    let got = at
        .events
        .wait_for_from(
            &format!("the {what} message to be rejected"),
            mark,
            WAIT,
            |e| match e {
                NodeEvent::Rejected { peer, reason } if *peer == attacker_id => Some(reason.clone()),
                _ => None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        got.contains(reason),
        "the {what} message was rejected for {got:?}, expected a reason with {reason:?}"
    );
}

/// Members of the hostile-input test: six attackers, B, C, and two members that run no node.
const ATTACKERS: usize = 6;
const B: usize = 6;
const C: usize = 7;
const REVOKED: usize = 8;
const REMOVED: usize = 9;

/// Each attacker (one per kind of hostile input) is connected only to B, and C only to B:
/// A_i - B - C. Each attacker sends one message, so the node's ban does not get in the way of B judging every kind of input. B's registry says that member REVOKED's
/// key is revoked from its second bulletin and that member REMOVED was removed; C's registry does
/// not, so anything B forwarded would be stored at C: what C does not store, B did not forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_rejected_at_the_first_hop_and_never_forwarded() {
    within(async {
        let registry = TestRegistry::new(REMOVED + 1);
        let network = registry.network();
        let mut attackers = Vec::new();
        for i in 0..ATTACKERS {
            attackers.push(
                TestNode::start_allowing(&registry, i, &[B])
                    .await
                    .expect("start an attacker"),
            );
        }
        // B's registry knows that member REVOKED's key is revoked from its second bulletin and
        // that member REMOVED was removed (version 2, loaded from B's store at start).
        let (revoked_member, removed_member) = (registry.member(REVOKED), registry.member(REMOVED));
        let removed_at = Timestamp(GENESIS_TIME.0 + 60_000);
        let update = registry
            .approved_update(
                (RegistryVersion::GENESIS, registry.genesis_hash),
                Timestamp(GENESIS_TIME.0 + 1),
                vec![
                    RegistryOp::RevokeSigningKey {
                        member: revoked_member.id(),
                        key: revoked_member.signing_key.id(),
                        from: RevocationPoint::Seq(Seq(2)),
                    },
                    RegistryOp::RemoveMember {
                        member: removed_member.id(),
                        at: removed_at,
                    },
                ],
            )
            .expect("registry update");
        let b = TestNode::start_with_history(&registry, B, &[update])
            .await
            .expect("start B");
        assert_eq!(b.node.registry().read().unwrap().version(), RegistryVersion(2));
        let c = TestNode::start_allowing(&registry, C, &[B])
            .await
            .expect("start C");
        for attacker in &attackers {
            connect(attacker, &b).await.expect("attacker - B");
        }
        connect(&c, &b).await.expect("C - B");

        let now = herald_node::node::now();
        let sign = |key: &SecretKey, seq: u64, prev: Option<BulletinId>, created: Timestamp, title: &str| {
            signed_sample(network, key, Seq(seq), prev, created, title).expect("sign")
        };
        // A valid bulletin of the first attacker with one bit of its signature's R flipped.
        let genuine = sign(&registry.member(0).signing_key, 1, None, now, "forged");
        let mut forged = genuine.to_bytes();
        let r = forged.len() - 64;
        forged[r] ^= 0x01;
        let unknown = sign(
            &SecretKey::from_seed(&[0xEE; 32]),
            1,
            None,
            now,
            "signed by a stranger",
        );
        let before_revocation = sign(&revoked_member.signing_key, 1, None, now, "before the revocation");
        let after_revocation = sign(
            &revoked_member.signing_key,
            2,
            Some(before_revocation.id()),
            now,
            "after the revocation",
        );
        let after_removal = sign(
            &removed_member.signing_key,
            1,
            None,
            Timestamp(removed_at.0 + 1),
            "after the removal",
        );
        // (what, bytes, expected reason, the bulletin id it would have if it were stored)
        let attacks: [(&str, Vec<u8>, &str, Option<BulletinId>); ATTACKERS] = [
            (
                "forged signature",
                forged,
                "signature does not verify",
                Some(genuine.id()),
            ),
            (
                "unknown key",
                unknown.to_bytes(),
                "not a signing key of any member",
                Some(unknown.id()),
            ),
            (
                "revoked key",
                after_revocation.to_bytes(),
                "revoked",
                Some(after_revocation.id()),
            ),
            (
                "removed member",
                after_removal.to_bytes(),
                "was removed",
                Some(after_removal.id()),
            ),
            // One byte over the bulletin limit, well within the gossip frame limit: it reaches B.
            ("oversize", vec![0x55; MAX_BULLETIN_BYTES + 1], "byte limit", None),
            // Twelve bytes claiming a 2^40-byte body.
            (
                "garbage",
                vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
                "undecodable",
                None,
            ),
        ];

        // What the revoked key signed before its revocation point stays valid, from any sender.
        attackers[2]
            .node
            .inject_unchecked(before_revocation.to_bytes())
            .await;
        assert_eq!(
            b.wait_stored(before_revocation.id()).await.expect("B takes it"),
            Origin::Gossip(attackers[2].peer_id())
        );
        let origin = c
            .wait_stored(before_revocation.id())
            .await
            .expect("C gets it through B");
        assert_eq!(origin_peer(origin), Some(b.peer_id()), "{origin:?}");

        for ((what, bytes, reason, _), attacker) in attacks.iter().zip(&attackers) {
            expect_rejected(&b, attacker, what, bytes.clone(), reason).await;
        }

        // The honest nodes keep working, both ways.
        let from_b = b
            .node
            .publish(sample_draft("still here"))
            .await
            .expect("B publishes");
        let origin = c.wait_stored(from_b.id()).await.expect("C gets B's bulletin");
        assert_eq!(origin_peer(origin), Some(b.peer_id()), "{origin:?}");
        let from_c = c
            .node
            .publish(sample_draft("so are we"))
            .await
            .expect("C publishes");
        let origin = b.wait_stored(from_c.id()).await.expect("B gets C's bulletin");
        assert_eq!(origin_peer(origin), Some(c.peer_id()), "{origin:?}");

        // Nothing hostile was stored anywhere honest, and C never even saw it.
        for (node, name) in [(&b, "B"), (&c, "C")] {
            for (what, _, _, id) in &attacks {
                if let Some(id) = id {
                    assert!(!node.reported_stored(*id), "{name} stored the {what} bulletin");
                    assert!(
                        !node.node.store().contains(id).unwrap(),
                        "{name} holds the {what} bulletin"
                    );
                }
            }
            // Held, folded or not: a node's own last bulletin may still be staged.
            assert_eq!(
                node.node.store().held_count().unwrap(),
                3,
                "{name} holds only the valid bulletins"
            );
        }
        let rejected_at_b = b.events.all(|e| match e {
            NodeEvent::Rejected { .. } => Some(()),
            _ => None,
        });
        assert_eq!(
            rejected_at_b.len(),
            ATTACKERS,
            "B rejected each hostile message once"
        );
        let seen_at_c: Vec<String> = c.events.all(|e| match e {
            NodeEvent::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        assert!(seen_at_c.is_empty(), "C was sent invalid input: {seen_at_c:?}");
        assert_eq!(c.node.connected_peers().await, vec![b.peer_id()]);

        attackers.extend([b, c]);
        stop_all(attackers).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_keeps_sending_invalid_input_is_disconnected() {
    within(async {
        let registry = TestRegistry::new(3);
        let nodes = start_line(&registry, 3).await.expect("start");
        connect_line(&nodes).await.expect("connect");
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        let a_id = a.peer_id();
        let banned = b.events.wait_for("B to ban A", WAIT, |e| {
            matches!(e, NodeEvent::PeerBanned(p) if *p == a_id).then_some(())
        });
        // A persistent attacker: a new piece of garbage every 100 ms until it is thrown out.
        let attack = async {
            for i in 0u32.. {
                a.node.inject_unchecked(format!("garbage {i}").into_bytes()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            result = banned => result.expect("the attacker is banned"),
            () = attack => unreachable!("the attack loop never ends"),
        }
        // Counted for metrics as they were reported.
        let counts = b.node.event_counts();
        assert_eq!(counts.banned.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(counts.rejected.load(std::sync::atomic::Ordering::Relaxed) >= 3);
        b.wait_disconnected(a_id, 0).await.expect("B lets A go");
        a.wait_disconnected(b.peer_id(), 0)
            .await
            .expect("A is disconnected");
        // Banned at the third rejection (messages already on the way may add more after).
        let events = b.events.snapshot();
        let banned_at = events
            .iter()
            .position(|e| matches!(e, NodeEvent::PeerBanned(p) if *p == a_id))
            .expect("the ban is recorded");
        let rejections_before = events[..banned_at]
            .iter()
            .filter(|e| matches!(e, NodeEvent::Rejected { peer, .. } if *peer == a_id))
            .count();
        assert_eq!(rejections_before, 3, "banned at the third rejection");
        assert!(!b.node.connected_peers().await.contains(&a_id));

        // B and C carry on.
        let bulletin = c
            .node
            .publish(sample_draft("after the ban"))
            .await
            .expect("publish");
        b.wait_stored(bulletin.id())
            .await
            .expect("B still takes valid bulletins");
        stop_all(nodes).await;
    })
    .await;
}

/// The node's score of a member whose bulletin was rejected is below zero (each rejection takes
/// 100 off it), even when it was a member in good standing before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejection_makes_the_senders_score_negative() {
    within(async {
        let registry = TestRegistry::new(2);
        let nodes = start_line(&registry, 2).await.expect("start");
        connect_line(&nodes).await.expect("connect");
        let (a, b) = (&nodes[0], &nodes[1]);
        let valid = a
            .node
            .publish(sample_draft("in good standing"))
            .await
            .expect("publish");
        b.wait_stored(valid.id()).await.expect("B takes it");
        let before = b.node.peer_score(a.peer_id()).await;
        assert!(before.is_some_and(|s| s >= 0.0), "in good standing: {before:?}");
        let genuine = signed_sample(
            registry.network(),
            &registry.member(0).signing_key,
            Seq(2),
            Some(valid.id()),
            herald_node::node::now(),
            "forged",
        )
        .expect("sign");
        let mut forged = genuine.to_bytes();
        let r = forged.len() - 64;
        forged[r] ^= 0x01;
        expect_rejected(b, a, "forged signature", forged, "signature does not verify").await;
        let after = b.node.peer_score(a.peer_id()).await;
        assert!(
            after.is_some_and(|s| s < 0.0),
            "B's score for A: {before:?} before the rejection, {after:?} after"
        );
        stop_all(nodes).await;
    })
    .await;
}

/// A member whose bulletins are signed by keys the node's registry does not admit (the two
/// registries may differ for a while: a key added by an update the node lacks, a fork) lowers its
/// score but is not banned for it, however many it sends: it stays connected and its valid
/// bulletins still come.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulletins_by_keys_the_registry_does_not_admit_do_not_ban_their_sender() {
    within(async {
        let registry = TestRegistry::new(2);
        let nodes = start_line(&registry, 2).await.expect("start");
        connect_line(&nodes).await.expect("connect");
        let (a, b) = (&nodes[0], &nodes[1]);
        let a_id = a.peer_id();
        let stranger = SecretKey::from_seed(&[0xEE; 32]);
        let now = herald_node::node::now();
        let mut prev = None;
        for seq in 1..=5 {
            let bulletin = signed_sample(registry.network(), &stranger, Seq(seq), prev, now, "not admitted")
                .expect("sign");
            prev = Some(bulletin.id());
            expect_rejected(
                b,
                a,
                "not admitted",
                bulletin.to_bytes(),
                "not a signing key of any member",
            )
            .await;
        }
        let score = b.node.peer_score(a_id).await;
        assert!(score.is_some_and(|s| s < 0.0), "B's score for A: {score:?}");
        let valid = a
            .node
            .publish(sample_draft("still a member in good standing"))
            .await
            .expect("publish");
        // By gossip, or by the sync each refusal starts with A.
        let origin = b.wait_stored(valid.id()).await.expect("B takes it");
        assert_eq!(origin_peer(origin), Some(a_id), "{origin:?}");
        assert!(
            !b.events
                .snapshot()
                .iter()
                .any(|e| matches!(e, NodeEvent::PeerBanned(p) if *p == a_id)),
            "A was banned"
        );
        assert!(b.node.connected_peers().await.contains(&a_id));
        stop_all(nodes).await;
    })
    .await;
}

/// Has `a` send each case to `b` (`send` gets its index, what it is and its bytes) and checks
/// what `b` makes of it: each is refused with its reason (naming `offence`), `a`'s score is below
/// zero after the first two while it is still connected and not banned, and the third gets `a`
/// banned.
async fn each_offence_counts_until_a_ban<'a, F, Fut>(
    a: &'a TestNode,
    b: &TestNode,
    offence: &str,
    cases: [(&'static str, Vec<u8>, &'static str); 3],
    send: F,
) where
    F: Fn(usize, &'static str, Vec<u8>) -> Fut,
    Fut: Future<Output = ()> + 'a,
{
    let a_id = a.peer_id();
    for (n, (what, bytes, reason)) in cases.into_iter().enumerate() {
        let mark = b.events.len();
        send(n, what, bytes).await;
        let got = b
            .events
            .wait_for_from(&format!("{what} to be refused"), mark, WAIT, |e| match e {
                NodeEvent::Rejected { peer, reason } if *peer == a_id => Some(reason.clone()),
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            got.contains(offence) && got.contains(reason),
            "{what} was refused for {got:?}"
        );
        if n < 2 {
            let score = b.node.peer_score(a_id).await;
            assert!(
                score.is_some_and(|s| s < 0.0),
                "B's score for A after {what}: {score:?}"
            );
            assert!(
                !b.events
                    .snapshot()
                    .iter()
                    .any(|e| matches!(e, NodeEvent::PeerBanned(p) if *p == a_id)),
                "A was banned after {what}"
            );
            assert!(
                b.node.connected_peers().await.contains(&a_id),
                "A is still connected after {what}"
            );
        }
    }
    b.events
        .wait_for("B to ban A", WAIT, |e| {
            matches!(e, NodeEvent::PeerBanned(p) if *p == a_id).then_some(())
        })
        .await
        .expect("the third offence bans its sender");
}

/// Frames that break the tree's layout (docs/PROTOCOL.md, 11B) count against the member that
/// sent them, like invalid bulletins: each is refused with its reason, and the third gets the
/// sender banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_tree_frames_count_against_their_sender() {
    within(async {
        let registry = TestRegistry::new(2);
        let nodes = start_line(&registry, 2).await.expect("start");
        connect_line(&nodes).await.expect("connect");
        let (a, b) = (&nodes[0], &nodes[1]);
        let a_id = a.peer_id();
        b.wait_subscribed(a_id, 0).await.expect("B links A");
        let frame = |len: u32, rest: &[u8]| [&len.to_le_bytes()[..], rest].concat();
        let cases = [
            ("an unknown tag", frame(2, &[9, 0]), "unknown frame tag 9"),
            (
                "an id list of 31 bytes",
                frame(32, &[1; 32]),
                "an id list of 31 bytes",
            ),
            (
                "a length beyond the limit",
                frame(u32::MAX, &[0]),
                "a frame of 4294967295 bytes",
            ),
        ];
        each_offence_counts_until_a_ban(a, b, "malformed tree frame", cases, |_, _, bytes| async move {
            a.node.inject_frames(bytes).await;
        })
        .await;
        stop_all(nodes).await;
    })
    .await;
}

/// Sync requests that break the protocol (docs/PROTOCOL.md, 12.1) count against the member that
/// sent them, as invalid answers do: each is answered `Refused` and reported with its reason, and
/// the third gets the sender banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_sync_requests_count_against_their_sender() {
    within(async {
        let registry = TestRegistry::new(2);
        let nodes = start_line(&registry, 2).await.expect("start");
        connect_line(&nodes).await.expect("connect");
        let (a, b) = (&nodes[0], &nodes[1]);
        let b_id = b.peer_id();
        let answer = a
            .node
            .sync_request(
                b_id,
                herald_protocol::sync::SyncRequest::Registry {
                    from: RegistryVersion(1),
                },
            )
            .await;
        assert!(
            matches!(answer, Ok(herald_protocol::sync::SyncResponse::Registry { .. })),
            "a well-formed request is answered: {answer:?}"
        );
        let frame = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
        let mut trailing = herald_protocol::sync::SyncRequest::Registry {
            from: RegistryVersion(1),
        }
        .to_bytes();
        trailing.push(0);
        let cases = [
            ("an unknown kind of request", frame(&[9, 0, 0, 0]), "undecodable"),
            ("a request with a byte after it", frame(&trailing), "undecodable"),
            (
                "a length beyond the limit",
                u32::MAX.to_be_bytes().to_vec(),
                "over the 524288-byte limit",
            ),
        ];
        each_offence_counts_until_a_ban(a, b, "invalid sync request", cases, |n, what, bytes| async move {
            let answer = a.node.raw_sync_request(b_id, bytes).await;
            if n < 2 {
                // Refused, saying why. (The third offence disconnects A first.)
                let answer = answer.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
                let refused = answer
                    .get(4..)
                    .and_then(|body| herald_protocol::sync::SyncResponse::from_bytes(body).ok());
                assert!(
                    matches!(&refused, Some(herald_protocol::sync::SyncResponse::Refused { reason }) if reason.contains("invalid request")),
                    "{what} was answered {refused:?}"
                );
            }
        })
        .await;
        stop_all(nodes).await;
    })
    .await;
}

/// A member's node that floods `IHave` and `Graft` frames with ids of bulletins that do not exist
/// is held to its bounds (docs/PROTOCOL.md, 11B): frames beyond its budget are skipped, and of the
/// ids it announces the node follows its share alone. Floods are counted, not penalised (an honest
/// burst can look the same): the sender stays connected, with no offence against it, and the node
/// goes on taking its bulletins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_announcements_and_grafts_is_held_to_its_bounds() {
    within(async {
        /// Ids per frame, and ids from one stream at once (PROTOCOL 11B).
        const PER_FRAME: usize = 1024;
        const BUDGET: usize = 16_384;
        /// Announced ids followed for one peer at most.
        const SHARE: usize = 2048;
        let registry = TestRegistry::new(2);
        let nodes = start_line(&registry, 2).await.expect("start");
        connect_line(&nodes).await.expect("connect");
        let (a, b) = (&nodes[0], &nodes[1]);
        let a_id = a.peer_id();
        b.wait_subscribed(a_id, 0).await.expect("B links A");
        let frame = |tag: u8, first: usize| {
            let mut bytes = ((1 + PER_FRAME * 32) as u32).to_le_bytes().to_vec();
            bytes.push(tag);
            for n in first..first + PER_FRAME {
                let mut id = [0xf1; 32];
                id[..8].copy_from_slice(&(n as u64).to_le_bytes());
                bytes.extend_from_slice(&id);
            }
            bytes
        };
        // 24 IHave frames and 8 Graft frames, twice the budget, then a valid bulletin of A's, all
        // on one stream: B reads a stream's frames in order, so once it stores the bulletin it has
        // taken in the whole flood.
        let frames = 32;
        let mut flood: Vec<u8> = (0..frames)
            .flat_map(|f| frame(if f < 24 { 1 } else { 3 }, f * PER_FRAME))
            .collect();
        let bulletin = signed_sample(
            registry.network(),
            &registry.member(0).signing_key,
            Seq(1),
            None,
            herald_node::node::now(),
            "after the flood",
        )
        .expect("sign");
        let bytes = bulletin.to_bytes();
        flood.extend_from_slice(&(1 + bytes.len() as u32).to_le_bytes());
        flood.push(0);
        flood.extend_from_slice(&bytes);
        let before = b.node.network_status().await.tree;
        a.node.inject_frames(flood).await;
        let origin = b
            .wait_stored(bulletin.id())
            .await
            .expect("B still takes A's bulletins");
        assert_eq!(origin, Origin::Gossip(a_id));

        // The first 16 frames (the budget, all IHave) were read: of their ids, those beyond A's
        // share were not followed. Frames beyond the budget were skipped; the budget refills at
        // 16,384 ids a second, so a slow read may let one or two more through.
        let tree = b.node.network_status().await.tree;
        let ignored = tree.announcements_ignored - before.announcements_ignored;
        let skipped = tree.control_frames_skipped - before.control_frames_skipped;
        assert!(
            ignored >= (BUDGET - SHARE) as u64,
            "B followed more of A's announcements than its share: {tree:?}"
        );
        assert!(
            (1..=(frames - BUDGET / PER_FRAME) as u64).contains(&skipped),
            "B skipped {skipped} frames of the flood, beyond the budget: {tree:?}"
        );
        let refused = tree.graft_answers_refused - before.graft_answers_refused;
        assert_eq!(tree.held_back - before.held_back, ignored + skipped + refused);

        // No offence: A is still connected and in good standing.
        let score = b.node.peer_score(a_id).await;
        assert!(
            score.is_some_and(|s| s >= 0.0),
            "B's score for A after the flood: {score:?}"
        );
        assert!(
            b.node
                .network_status()
                .await
                .connected
                .iter()
                .any(|p| p.contains(&a_id.to_string())),
            "A stays connected to B"
        );
        stop_all(nodes).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_not_in_the_registry_cannot_connect() {
    within(async {
        let registry = TestRegistry::new(2);
        let member = TestNode::start(&registry, 0).await.expect("start the member");
        let other = TestNode::start(&registry, 1)
            .await
            .expect("start the other member");
        let target = member.dial_addr().await.expect("the member's address");

        // A well-formed libp2p peer (TCP, noise, yamux) with an identity no member listed.
        let mut outsider = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("transport")
            .with_behaviour(|_| ping::Behaviour::default())
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
        let outsider_id = *outsider.local_peer_id();
        outsider.dial(target).expect("dial");
        let member_id = member.peer_id();
        tokio::time::timeout(WAIT, async {
            loop {
                match outsider.select_next_some().await {
                    // Refused after the handshake, when the member learns who dialled.
                    SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == member_id => return,
                    SwarmEvent::OutgoingConnectionError { .. } => return,
                    SwarmEvent::Behaviour(ping::Event { result: Ok(rtt), .. }) => {
                        panic!("the outsider pinged a member through an open connection ({rtt:?})")
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("the outsider's connection ends");

        // A member's node connects to the same node: its events come after any the outsider caused.
        connect(&other, &member).await.expect("a member connects");
        let outsider_seen = member.events.find(|e| match e {
            NodeEvent::PeerConnected(p) | NodeEvent::PeerSubscribed(p) if *p == outsider_id => {
                Some(e.clone())
            }
            _ => None,
        });
        assert!(
            outsider_seen.is_none(),
            "the member reported the outsider: {outsider_seen:?}"
        );
        assert_eq!(member.node.connected_peers().await, vec![other.peer_id()]);

        stop_all(vec![member, other]).await;
    })
    .await;
}

/// Connections that open and then send nothing hold a node's handshake places only until the
/// handshake timeout: the node drops every one of them, and a member then dials in. (Loopback is
/// not held to the limit per address, so here one host can fill every place.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_that_never_finish_their_handshake_are_dropped_and_members_get_in() {
    use tokio::io::AsyncReadExt;
    within(async {
        let registry = TestRegistry::new(2).with_timing(herald_node::GossipTiming {
            handshake_timeout: Duration::from_secs(2),
            ..herald_node::GossipTiming::fast()
        });
        let member = TestNode::start(&registry, 0).await.expect("start the member");
        let other = TestNode::start(&registry, 1)
            .await
            .expect("start the other member");
        let target = member.dial_addr().await.expect("the member's address");
        let port = target
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .expect("a TCP port");

        let places = herald_node::network::MAX_PENDING_INCOMING as usize;
        let mut silent = Vec::new();
        for _ in 0..places + 8 {
            silent.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("open a TCP connection"),
            );
        }
        // Each ends from the node's side: refused at once beyond the places, dropped at the
        // timeout within them. A read returns nothing more once it has.
        for (i, stream) in silent.iter_mut().enumerate() {
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => continue,
                    Err(_) => panic!("silent connection {i} was still open after {WAIT:?}"),
                }
            }
        }

        connect(&other, &member).await.expect("a member connects");
        assert_eq!(member.node.connected_peers().await, vec![other.peer_id()]);
        stop_all(vec![member, other]).await;
    })
    .await;
}

/// A registry fork is still reported after the node restarts: nodes at one version do not
/// exchange registry updates again, so the evidence is kept on disk and taken in at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_fork_is_still_reported_after_a_restart() {
    within(async {
        let registry = TestRegistry::new(2);
        let node = TestNode::start(&registry, 0).await.expect("start");
        let genesis = (RegistryVersion::GENESIS, registry.genesis_hash);
        let threshold = RegistryOp::SetThreshold { threshold: 2 };
        let ours = registry
            .approved_update(genesis, Timestamp(GENESIS_TIME.0 + 1), vec![threshold.clone()])
            .unwrap();
        let theirs = registry
            .approved_update(genesis, Timestamp(GENESIS_TIME.0 + 2), vec![threshold])
            .unwrap();
        node.node
            .submit_registry_update(ours.clone())
            .await
            .expect("version 2");
        let refused = node.node.submit_registry_update(theirs.clone()).await;
        assert!(
            matches!(refused, Err(PublishError::Invalid(ref e)) if e.contains("fork")),
            "{refused:?}"
        );
        let forks = |node: &TestNode| {
            let registry = node.node.registry();
            let registry = registry.read().unwrap();
            registry
                .forks()
                .iter()
                .map(|f| (f.version, f.ours.hash(), f.theirs.hash()))
                .collect::<Vec<_>>()
        };
        let expected = vec![(RegistryVersion(2), ours.hash(), theirs.hash())];
        assert_eq!(forks(&node), expected);

        let dir = node.stop().await;
        let node = TestNode::start_in(&registry, 0, dir).await.expect("restart");
        assert_eq!(node.node.registry().read().unwrap().version(), RegistryVersion(2));
        assert_eq!(forks(&node), expected, "the fork is reported again");
        node.stop().await;
    })
    .await;
}

/// A partition in which two members each add a signing key alone (two versions 2), and on
/// one side two members approve a change (version 3): when the sides meet, the other side's
/// node takes that branch in place of its own member's change, which is kept as evidence, and
/// the key only that branch admits signs bulletins it accepts.
#[tokio::test]
async fn a_split_of_members_own_changes_settles_on_the_branch_a_threshold_approved() {
    within(async {
        let registry = TestRegistry::new(3);
        let a = TestNode::start(&registry, 0).await.expect("start a");
        let b = TestNode::start(&registry, 1).await.expect("start b");
        // A member's own change, approved by its member key and the key it adds.
        let own_key = |member: usize, key: &SecretKey| {
            let body = herald_protocol::RegistryUpdate {
                format: herald_protocol::registry::REGISTRY_FORMAT,
                version: RegistryVersion(2),
                prev: Some(registry.genesis_hash),
                created: Timestamp(GENESIS_TIME.0 + 1 + member as u64),
                ops: vec![RegistryOp::AddSigningKey {
                    member: registry.member(member).id(),
                    key: key.id(),
                }],
            };
            let mut update = herald_keys::propose_update(&body).unwrap();
            for k in [&registry.member(member).member_key, key] {
                update.push_approval(herald_keys::approve(k, &update)).unwrap();
            }
            update
        };
        let (key_a, key_b) = (SecretKey::from_seed(&[201; 32]), SecretKey::from_seed(&[202; 32]));
        let on_a = own_key(0, &key_a);
        let on_b = own_key(1, &key_b);
        a.node
            .submit_registry_update(on_a.clone())
            .await
            .expect("a's version 2");
        b.node
            .submit_registry_update(on_b.clone())
            .await
            .expect("b's version 2");
        let settled = registry
            .approved_update(
                (RegistryVersion(2), on_b.hash()),
                Timestamp(GENESIS_TIME.0 + 9),
                vec![RegistryOp::SetThreshold { threshold: 2 }],
            )
            .unwrap();
        b.node
            .submit_registry_update(settled.clone())
            .await
            .expect("b's version 3");

        let from = a.events.len();
        connect(&a, &b).await.expect("a connects to b");
        a.events
            .wait_for_from("a to take b's branch", from, WAIT, |e| {
                matches!(e, NodeEvent::RegistryAdvanced(v) if *v == RegistryVersion(3)).then_some(())
            })
            .await
            .expect("a's registry takes b's branch");
        // Subscribers hear of the switch, on a and only there.
        let switches = |node: &TestNode| {
            node.events
                .snapshot()
                .into_iter()
                .filter_map(|e| match e {
                    NodeEvent::RegistrySwitched { from, to, dropped } => Some((from, to, dropped)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(switches(&a), vec![(RegistryVersion(2), RegistryVersion(3), 1)]);
        assert_eq!(switches(&b), vec![]);
        let history = |node: &TestNode| node.node.registry().read().unwrap().history().to_vec();
        let expected = vec![registry.genesis.clone(), on_b.clone(), settled.clone()];
        assert_eq!(history(&a), expected);
        assert_eq!(history(&b), expected);
        assert_eq!(
            a.node.store().registry_history().unwrap(),
            expected,
            "on disk too"
        );
        let evidence = |node: &TestNode| {
            let registry = node.node.registry();
            let registry = registry.read().unwrap();
            registry
                .forks()
                .iter()
                .map(|f| f.theirs.hash())
                .collect::<Vec<_>>()
        };
        assert_eq!(evidence(&a), vec![on_a.hash()], "a's member's change, given way");

        // Member 1's new key signs; a takes its bulletin from b, by sync.
        let bulletin = signed_sample(
            registry.network(),
            &key_b,
            Seq(1),
            None,
            herald_node::node::now(),
            "by the new key",
        )
        .expect("sign");
        b.node
            .store()
            .insert_verified(&[(bulletin.clone(), registry.member(1).id())])
            .expect("b holds it");
        a.node.sync_with(b.peer_id()).await;
        a.wait_stored(bulletin.id())
            .await
            .expect("a accepts the new key's bulletin");
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A node whose signing key the registry no longer admits (here revoked by the members)
/// refuses to publish, saying why, rather than sign what every peer would refuse.
#[tokio::test]
async fn a_node_whose_key_is_not_admitted_refuses_to_publish() {
    within(async {
        let registry = TestRegistry::new(2);
        let node = TestNode::start(&registry, 0).await.expect("start");
        let revocation = registry
            .approved_update(
                (RegistryVersion::GENESIS, registry.genesis_hash),
                Timestamp(GENESIS_TIME.0 + 1),
                vec![RegistryOp::RevokeSigningKey {
                    member: registry.member(0).id(),
                    key: registry.member(0).signing_key.id(),
                    from: RevocationPoint::Seq(Seq(1)),
                }],
            )
            .unwrap();
        node.node.submit_registry_update(revocation).await.expect("version 2");
        let refused = node.node.publish(sample_draft("by a revoked key")).await;
        assert!(
            matches!(refused, Err(PublishError::Invalid(ref e)) if e.contains("is not admitted by the registry")),
            "{refused:?}"
        );
        assert_eq!(node.node.store().count().unwrap(), 0, "nothing was published");
        node.stop().await;
    })
    .await;
}

/// Kademlia finds members' nodes beyond those a node is told of: C is connected to B, A is told
/// only of B, and A and C (each short of the peers it seeks) find each other through B and
/// connect; whichever dials, neither was told of the other.
#[tokio::test]
async fn kademlia_finds_a_member_the_node_was_not_told_of() {
    within(async {
        let registry = TestRegistry::new(3);
        let a = TestNode::start(&registry, 0).await.expect("start a");
        let b = TestNode::start(&registry, 1).await.expect("start b");
        let c = TestNode::start(&registry, 2).await.expect("start c");
        // B learns C's listening address from identify as the connection opens, before the
        // catch-up sessions that `connect` waits for end.
        connect(&c, &b).await.expect("c connects to b");
        connect(&a, &b).await.expect("a connects to b");
        // A's first Kademlia bootstrap follows B's entry into its routing table; should it miss C,
        // the next comes with the network's top-up (every 30 s while short of peers).
        a.events
            .wait_for("a to find c through b", Duration::from_secs(45), |e| {
                matches!(e, NodeEvent::PeerConnected(p) if *p == c.peer_id()).then_some(())
            })
            .await
            .expect("a and c connect, though neither was told of the other");
        stop_all(vec![a, b, c]).await;
    })
    .await;
}

/// Everything a node holds that a restart must keep.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    count: u64,
    heads: Vec<(KeyId, herald_node::store::ChainHead)>,
    bulletins: Vec<(BulletinId, Vec<u8>)>,
}

fn held(node: &Node) -> Held {
    let store = node.store();
    let mut heads = store.heads().unwrap();
    heads.sort_by_key(|(k, _)| *k);
    let bulletins = store
        .query(&Query::default())
        .unwrap()
        .into_iter()
        .map(|b| (b.id(), store.get_bytes(&b.id()).unwrap().unwrap()))
        .collect();
    Held {
        count: store.count().unwrap(),
        heads,
        bulletins,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_the_store_and_continues_the_chain() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;

        let mut own = Vec::new();
        for i in 1..=3 {
            let bulletin = a
                .node
                .publish(sample_draft(&format!("before the restart, {i}")))
                .await
                .expect("publish");
            b.wait_stored(bulletin.id()).await.expect("B gets it");
            own.push(bulletin);
        }
        let from_b = b.node.publish(sample_draft("from B")).await.expect("B publishes");
        a.wait_stored(from_b.id()).await.expect("A gets B's bulletin");
        let before = held(&a.node);
        assert_eq!(before.count, 4);

        let a_id = a.peer_id();
        let b_mark = b.events.len();
        let dir = a.stop().await;
        b.wait_disconnected(a_id, b_mark).await.expect("B sees A go");

        let a = TestNode::start_in(&registry, 0, dir)
            .await
            .expect("restart A on its data directory");
        assert_eq!(a.peer_id(), a_id);
        assert_eq!(held(&a.node), before, "the restarted node holds what it held");

        // Published while alone: stored at once, gossiped once a peer is there.
        let next = a
            .node
            .publish(sample_draft("after the restart"))
            .await
            .expect("publish after restart");
        assert_eq!(next.body().signer, own[2].body().signer);
        assert_eq!(next.body().seq, Seq(4), "the chain continues");
        assert_eq!(
            next.body().prev,
            Some(own[2].id()),
            "linked to the last bulletin before the restart"
        );
        // Journaled and held at once (the count follows with the next fold).
        assert_eq!(
            a.node.store().get_bytes(&next.id()).unwrap().as_deref(),
            Some(next.as_bytes())
        );

        connect(&a, &b).await.expect("reconnect");
        let origin = b.wait_stored(next.id()).await.expect("B gets the new bulletin");
        assert_eq!(origin_peer(origin), Some(a_id), "{origin:?}");
        assert_eq!(
            b.node.store().get_bytes(&next.id()).unwrap().as_deref(),
            Some(next.as_bytes())
        );

        stop_all(vec![a, b]).await;
    })
    .await;
}

/// Members 0 and 1's nodes (A and B), started and connected.
async fn connected_pair(registry: &TestRegistry) -> (TestNode, TestNode) {
    let a = TestNode::start(registry, 0).await.expect("start A");
    let b = TestNode::start(registry, 1).await.expect("start B");
    connect(&a, &b).await.expect("connect");
    (a, b)
}

/// `n` bulletins published by `from` (of `payload` bytes each if given), each waited for at `to`.
async fn publish_seen_by(
    from: &TestNode,
    to: &TestNode,
    n: usize,
    payload: Option<usize>,
) -> Vec<SignedBulletin> {
    let mut published = Vec::with_capacity(n);
    for i in 1..=n {
        let mut draft = sample_draft(&format!("own {i}"));
        if let Some(bytes) = payload {
            draft.payload.bytes = vec![b'x'; bytes];
        }
        let bulletin = from.node.publish(draft).await.expect("publish");
        to.wait_stored(bulletin.id()).await.expect("the peer gets it");
        published.push(bulletin);
    }
    published
}

/// A node whose key's past is known from its store folder only (as `herald run` starts one).
fn marked(settings: &mut herald_node::NodeSettings) {
    settings.key_past = KeyPast::Marked;
}

/// Matches the store of a bulletin of `key` numbered `seq` or above.
fn own_stored(key: KeyId, seq: u64) -> impl Fn(&NodeEvent) -> Option<()> {
    move |e| match e {
        NodeEvent::BulletinStored { signer, seq: s, .. } if *signer == key && s.0 >= seq => Some(()),
        _ => None,
    }
}

/// A node whose store was lost (its keys kept, no mark that the key is new) numbers nothing on its
/// own: alone, its publication waits for a sync session and is refused, changing nothing. A
/// publication made before it connects waits for the session, and continues the chain the peer
/// gave back instead of signing number 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_store_numbers_nothing_before_a_peer_gives_its_chain_back() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;
        let own = publish_seen_by(&a, &b, 2, None).await;
        let a_id = a.peer_id();
        let b_mark = b.events.len();
        drop(a.stop().await);
        b.wait_disconnected(a_id, b_mark).await.expect("B sees A go");

        // The store is lost: a new, empty directory with no mark.
        let a = TestNode::start_in_with(&registry, 0, tempfile::tempdir().unwrap(), marked)
            .await
            .expect("start A on an empty store");
        let refused = a
            .node
            .publish(sample_draft("alone"))
            .await
            .expect_err("numbered with no chain checked");
        assert!(
            matches!(refused, PublishError::ChainUnchecked { peers: 0, .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("--new-chain"), "{refused}");
        assert_eq!(a.node.store().held_count().unwrap(), 0, "nothing stored");
        let dir = a.stop().await;

        // Published, then connected: the publication waits for the session.
        let a = TestNode::start_in_with(&registry, 0, dir, |s| {
            s.key_past = KeyPast::Marked;
            s.timing.first_sync_wait = WAIT;
        })
        .await
        .expect("restart A");
        let (next, connected) = tokio::join!(a.node.publish(sample_draft("after the loss")), connect(&a, &b));
        connected.expect("connect again");
        let next = next.expect("publish");
        assert_eq!(
            (next.body().seq, next.body().prev),
            (Seq(3), Some(own[1].id())),
            "the chain the peer gave back continues"
        );
        b.wait_stored(next.id()).await.expect("B gets it");
        assert!(b.node.store().equivocations().unwrap().is_empty());
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// Timing under which nothing received is folded but when a request forces it: received
/// bulletins stay staged for the length of a test.
fn folding_only_when_forced() -> herald_node::network::GossipTiming {
    herald_node::network::GossipTiming {
        fold_delay: Duration::from_secs(600),
        // No periodic sync either: its requests would fold too, at any moment.
        sync_interval: Duration::from_secs(3600),
        ..herald_node::network::GossipTiming::fast()
    }
}

/// Waits until `node` has received, by gossip and after cursor `from`, the bulletin `id` (held
/// staged: under [`folding_only_when_forced`] no `BulletinStored` follows soon).
async fn wait_received(node: &TestNode, id: BulletinId, from: usize) {
    node.events
        .wait_for_from("the bulletin to arrive", from, WAIT, |e| match e {
            NodeEvent::BulletinReceived { bulletin, .. } if bulletin.id() == id => Some(()),
            _ => None,
        })
        .await
        .expect("received");
}

/// A node whose store is lost a moment after it published: its peer holds its last bulletins
/// received, not yet folded into its chains (held so here for the whole test). The peer folds them
/// before it answers the node's summary request, so the node numbers after them, not over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_lost_just_after_publishing_numbers_after_its_last_bulletin() {
    within(async {
        let registry = TestRegistry::new(2).with_timing(folding_only_when_forced());
        let (a, b) = connected_pair(&registry).await;
        b.wait_subscribed(a.peer_id(), 0).await.expect("B links A");
        let mut last = None;
        for i in 0..2 {
            let mark = b.events.len();
            let bulletin = a
                .node
                .publish(sample_draft(&format!("own {i}")))
                .await
                .expect("publish");
            wait_received(&b, bulletin.id(), mark).await;
            last = Some(bulletin.id());
        }
        let last_id = last.unwrap();
        assert!(b.node.store().is_staged(&last_id), "held staged by B");
        let bootstrap = vec![b.dial_addr().await.expect("B's address")];
        drop(a.stop().await);

        let a = TestNode::start_in_with(&registry, 0, tempfile::tempdir().unwrap(), |s| {
            s.key_past = KeyPast::Marked;
            s.timing.first_sync_wait = WAIT;
            s.bootstrap = bootstrap.clone();
        })
        .await
        .expect("start A on an empty store");
        let mark = b.events.len();
        let next = a
            .node
            .publish(sample_draft("after the loss"))
            .await
            .expect("publish");
        assert_eq!(
            (next.body().seq, next.body().prev),
            (Seq(3), Some(last_id)),
            "numbered over the last bulletin"
        );
        wait_received(&b, next.id(), mark).await;
        drop(a.stop().await);
        // B folds everything as it stops: no two bulletins share a number.
        let dir = b.stop().await;
        let store = herald_tests::open_store_when_free(dir.path(), registry.network())
            .await
            .expect("B's store");
        assert_eq!(store.count().unwrap(), 3);
        assert!(store.equivocations().unwrap().is_empty());
    })
    .await;
}

/// A peer's summary request makes the answering node fold, before it answers, only the staged
/// bulletins that the asking node's member or its own signed: a node that connects just after
/// its peer published gets that bulletin at once, and a member asking again and again cannot make
/// a node fold for every bulletin others send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_summary_folds_first_only_the_askers_and_the_answerers_own_bulletins() {
    within(async {
        let registry = TestRegistry::new(3).with_timing(folding_only_when_forced());
        // A and C reach each other only through B.
        let a = TestNode::start_allowing(&registry, 0, &[1])
            .await
            .expect("start A");
        let b = TestNode::start_allowing(&registry, 1, &[0, 2])
            .await
            .expect("start B");
        connect(&a, &b).await.expect("connect A and B");
        b.wait_subscribed(a.peer_id(), 0).await.expect("B links A");
        let mark = b.events.len();
        let from_a = a.node.publish(sample_draft("from A")).await.expect("publish");
        wait_received(&b, from_a.id(), mark).await;

        // C connects and syncs: B holds only A's staged, and folds nothing for C.
        let c = TestNode::start_allowing(&registry, 2, &[1])
            .await
            .expect("start C");
        let mark = c.events.len();
        connect(&c, &b).await.expect("connect C and B");
        c.wait_sync_ended(b.peer_id(), mark)
            .await
            .expect("C syncs with B");
        assert!(b.node.store().is_staged(&from_a.id()), "B did not fold A's for C");
        assert!(
            !c.node.store().contains(&from_a.id()).unwrap(),
            "A's waits for B's next fold"
        );

        // B publishes: its own staged bulletin makes it fold (everything staged) for C's next
        // request, which brings both.
        let from_b = b.node.publish(sample_draft("from B")).await.expect("publish");
        assert!(b.node.store().is_staged(&from_b.id()));
        let mark = c.events.len();
        c.node.sync_with(b.peer_id()).await;
        c.wait_sync_ended(b.peer_id(), mark)
            .await
            .expect("C syncs with B again");
        assert!(!b.node.store().is_staged(&from_a.id()), "folded");
        for id in [from_a.id(), from_b.id()] {
            assert!(c.node.store().contains(&id).unwrap(), "{}", id.fmt_short());
        }
        stop_all(vec![a, b, c]).await;
    })
    .await;
}

/// A peer whose catch-up sessions fail brings nothing back. A node that holds no chain of its
/// key is refused at the end of the wait, saying why the sync failed, and stores nothing; a node
/// whose chain was checked before numbers on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_sessions_bring_no_chain_back() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;
        let first = publish_seen_by(&a, &b, 1, None).await.pop().unwrap();
        let dir = a.stop().await;
        let refusal = herald_protocol::sync::SyncResponse::Refused {
            reason: "busy for the test".into(),
        };
        b.node.hostile_sync_answers(vec![refusal; 16]).await;
        let bootstrap = vec![b.dial_addr().await.expect("B's address")];
        let settings = |s: &mut herald_node::NodeSettings| {
            s.key_past = KeyPast::Marked;
            s.timing.first_sync_wait = Duration::from_secs(1);
            s.bootstrap = bootstrap.clone();
        };

        let lost = TestNode::start_in_with(&registry, 0, tempfile::tempdir().unwrap(), settings)
            .await
            .expect("start A on an empty store");
        match lost.node.publish(sample_draft("lost")).await {
            Err(PublishError::ChainUnchecked {
                peers: 1,
                running: 0,
                last_sync_error: Some(error),
                ..
            }) => assert!(error.contains("busy for the test"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(lost.node.store().held_count().unwrap(), 0, "nothing stored");
        drop(lost.stop().await);

        let a = TestNode::start_in_with(&registry, 0, dir, settings)
            .await
            .expect("restart A");
        let next = a.node.publish(sample_draft("held")).await.expect("publish");
        assert_eq!((next.body().seq, next.body().prev), (Seq(2), Some(first.id())));
        assert!(!a.node.own_chain().unwrap().checked, "shown as checked by peers");
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A claim its peer no longer backs (the peer lists less of the node's chain than it once
/// claimed, or claimed more than it held) is cleared by that peer's next session, before the
/// session ends: publishing goes on after it, and is refused before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_its_peer_no_longer_backs_is_cleared_by_its_next_session() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;
        let own = publish_seen_by(&a, &b, 2, None).await;
        let dir = a.stop().await;
        let key = registry.member(0).signing_key.id();
        let store = herald_tests::open_store_when_free(dir.path(), registry.network())
            .await
            .expect("open A's store");
        store
            .note_chain_claim(&key, &b.peer_id().to_bytes(), Seq(9))
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let a = TestNode::start_in(&registry, 0, dir).await.expect("restart A");
        let refused = a
            .node
            .publish(sample_draft("claimed"))
            .await
            .expect_err("numbered inside a claim");
        assert!(matches!(refused, PublishError::ChainBehind { .. }), "{refused}");
        connect(&a, &b).await.expect("connect again");
        assert!(
            a.node.own_chain().unwrap().claims.is_empty(),
            "the claim outlived B's session"
        );
        let next = a.node.publish(sample_draft("after")).await.expect("publish");
        assert_eq!((next.body().seq, next.body().prev), (Seq(3), Some(own[1].id())));
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A key marked new in its store folder (as `herald init` leaves a key it makes) starts its chain
/// with no peer (once the wait for one is over); a draft refused before signing leaves the mark,
/// which goes as the key signs its first bulletin, and a mark left beside a chain already held
/// goes at start. Without the mark, the operator's word that the key never published does the
/// same, and numbering goes on from that bulletin at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_key_starts_its_chain_alone_when_marked_or_confirmed() {
    within(async {
        let registry = TestRegistry::new(2);
        let dir = tempfile::tempdir().unwrap();
        let key = registry.member(0).signing_key.id();
        let mark = herald_node::chain_check::unused_key_mark(dir.path(), &key);
        herald_node::chain_check::mark_key_unused(dir.path(), &key).unwrap();
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("start A");
        let refused = a
            .node
            .publish(sample_draft(&"a title far too long ".repeat(20)))
            .await
            .expect_err("a 400-byte title");
        assert!(matches!(refused, PublishError::Invalid(_)), "{refused}");
        assert!(mark.exists(), "a draft refused before signing took the mark");
        // One too large for a bulletin is refused before signing too, saying what to do.
        let mut oversize = sample_draft("oversize");
        oversize.payload.bytes = vec![b'x'; MAX_BULLETIN_BYTES];
        let refused = a.node.publish(oversize).await.expect_err("an oversize draft");
        assert!(
            matches!(&refused, PublishError::Invalid(m) if m.contains("shorten its content")),
            "{refused}"
        );
        assert!(mark.exists(), "an oversize draft took the mark");
        // So is one with a blank title.
        let refused = a
            .node
            .publish(sample_draft("   "))
            .await
            .expect_err("a blank title");
        assert!(
            matches!(&refused, PublishError::Invalid(m) if m.contains("the title is blank")),
            "{refused}"
        );
        // So is one meant for a member the registry does not list.
        let mut astray = sample_draft("for nobody");
        astray.audience = vec![herald_protocol::MemberId::from_bytes([0xab; 32])];
        let refused = a.node.publish(astray).await.expect_err("an unknown audience");
        assert!(
            matches!(&refused, PublishError::Invalid(m) if m.contains("no current member has this id")),
            "{refused}"
        );
        let first = a
            .node
            .publish(sample_draft("first"))
            .await
            .expect("publish alone");
        assert_eq!((first.body().seq, first.body().prev), (Seq(1), None));
        assert!(!mark.exists(), "the mark outlived the key's first bulletin");

        // A mark beside a chain already held (a crash between the two) goes at start.
        let dir = a.stop().await;
        herald_node::chain_check::mark_key_unused(dir.path(), &key).unwrap();
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("restart A");
        assert!(!mark.exists(), "a stale mark was kept");

        let b = TestNode::start_in_with(&registry, 1, tempfile::tempdir().unwrap(), marked)
            .await
            .expect("start B");
        let first = b
            .node
            .publish_new_chain(sample_draft("first of B"))
            .await
            .expect("publish alone");
        assert_eq!(first.body().seq, Seq(1));
        // Numbered on from it at once, though not folded yet.
        let second = b
            .node
            .publish(sample_draft("second of B"))
            .await
            .expect("publish");
        assert_eq!(
            (second.body().seq, second.body().prev),
            (Seq(2), Some(first.id()))
        );
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// A node that lost its store, started with two bootstrap peers, one of which missed its last
/// bulletin: the check waits for both peers' sessions (not only the first peer up), so the node
/// numbers after the last bulletin the network holds. On loopback both peers connect before the
/// first session ends, so this does not isolate the wait for bootstrap dials (the unit test of
/// `ChainCheck::from_sessions` does); taking one completed session as enough fails it about one
/// run in four.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_store_waits_for_every_bootstrap_peer() {
    within(async {
        let registry = TestRegistry::new(3);
        let a = TestNode::start(&registry, 0).await.expect("start A");
        let b = TestNode::start(&registry, 1).await.expect("start B");
        let c = TestNode::start(&registry, 2).await.expect("start C");
        connect(&a, &b).await.expect("connect A and B");
        connect(&a, &c).await.expect("connect A and C");
        let first = a.node.publish(sample_draft("first")).await.expect("publish");
        b.wait_stored(first.id()).await.expect("B gets it");
        c.wait_stored(first.id()).await.expect("C gets it");
        // C goes away; the second bulletin reaches B only.
        let c_dir = c.stop().await;
        let second = a.node.publish(sample_draft("second")).await.expect("publish");
        b.wait_stored(second.id()).await.expect("B gets it");
        drop(a.stop().await);
        let c = TestNode::start_in(&registry, 2, c_dir).await.expect("restart C");
        assert!(c.node.store().get_bytes(&second.id()).unwrap().is_none());

        // A's store is lost; it starts with C and B as bootstrap peers, C first.
        let bootstrap = vec![
            c.dial_addr().await.expect("C's address"),
            b.dial_addr().await.expect("B's address"),
        ];
        let a = TestNode::start_in_with(&registry, 0, tempfile::tempdir().unwrap(), |s| {
            s.key_past = KeyPast::Marked;
            s.timing.first_sync_wait = WAIT;
            s.bootstrap = bootstrap.clone();
        })
        .await
        .expect("start A on an empty store");
        let next = a
            .node
            .publish(sample_draft("after the loss"))
            .await
            .expect("publish");
        assert_eq!(
            (next.body().seq, next.body().prev),
            (Seq(3), Some(second.id())),
            "numbered after what B holds, not what C holds"
        );
        b.wait_stored(next.id()).await.expect("B gets it");
        assert!(b.node.store().equivocations().unwrap().is_empty());
        stop_all(vec![a, b, c]).await;
    })
    .await;
}

/// In a network of one node there is no one to ask for a lost chain: an unmarked key is refused
/// at once, saying what to do, and a marked one publishes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_network_has_no_one_to_ask() {
    within(async {
        let registry = TestRegistry::new(1);
        let dir = tempfile::tempdir().unwrap();
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("start");
        let refused = a
            .node
            .publish(sample_draft("alone"))
            .await
            .expect_err("unchecked");
        assert!(matches!(refused, PublishError::NoOneToAsk), "{refused}");
        assert!(refused.to_string().contains("herald import"), "{refused}");
        let dir = a.stop().await;
        let key = registry.member(0).signing_key.id();
        herald_node::chain_check::mark_key_unused(dir.path(), &key).unwrap();
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("restart");
        let first = a.node.publish(sample_draft("first")).await.expect("publish");
        assert_eq!(first.body().seq, Seq(1));
        stop_all(vec![a]).await;
    })
    .await;
}

/// A node that lost its store catches up on a chain of its own longer than a sync page: a
/// publication made as soon as the first page is stored waits for the rest, and numbers after the
/// last bulletin, not after the first page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catch_up_under_way_does_not_end_the_chain_check() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;
        // 24 bulletins of 200 KB: 4.8 MB, two pages (4 MiB a page).
        let last = publish_seen_by(&a, &b, 24, Some(200_000)).await.pop().unwrap();
        drop(a.stop().await);

        let key = registry.member(0).signing_key.id();
        let a = TestNode::start_in_with(&registry, 0, tempfile::tempdir().unwrap(), |s| {
            s.key_past = KeyPast::Marked;
            s.timing.first_sync_wait = WAIT;
        })
        .await
        .expect("start A on an empty store");
        let mark = a.events.len();
        // Dialled, not `connect`ed: that would wait for the catch-up to end.
        a.node.dial(b.dial_addr().await.expect("B's address")).await;
        // Published as soon as the catch-up has stored a bulletin of A's.
        a.events
            .wait_for_from("A to store one of its own", mark, WAIT, own_stored(key, 1))
            .await
            .expect("the catch-up stores A's chain");
        let next = a
            .node
            .publish(sample_draft("after the loss"))
            .await
            .expect("publish");
        assert_eq!((next.body().seq, next.body().prev), (Seq(25), Some(last.id())));
        stop_all(vec![a, b]).await;
    })
    .await;
}

/// The marks that keep the check across restarts. A node that starts on an empty store beside a
/// stale mark that its key is new (restored from a backup), and is stopped with part of its chain
/// (as a catch-up cut short leaves it), checks again at the next start: alone, it is refused and
/// numbers nothing. A check that passed, with a bulletin numbered on, is not made again: alone
/// after a restart, the node publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_cut_short_is_checked_again_after_a_restart() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;
        let own = publish_seen_by(&a, &b, 3, None).await;
        drop(a.stop().await);
        let key = registry.member(0).signing_key.id();

        // A new store beside a stale mark that the key is new.
        let dir = tempfile::tempdir().unwrap();
        herald_node::chain_check::mark_key_unused(dir.path(), &key).unwrap();
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("start A");
        let dir = a.stop().await;
        // What a catch-up cut short leaves: the first two of three.
        let items: Vec<_> = own[..2]
            .iter()
            .map(|b| (b.clone(), registry.member(0).id()))
            .collect();
        let store = herald_tests::open_store_when_free(dir.path(), registry.network())
            .await
            .expect("open A's store");
        store.insert_verified(&items).unwrap();
        store.flush().unwrap();
        drop(store);
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("restart A alone");
        assert!(
            !herald_node::chain_check::unused_key_mark(a.dir.path(), &key).exists(),
            "a mark that the key is new, beside a chain of it, is stale"
        );
        let refused = a
            .node
            .publish(sample_draft("alone"))
            .await
            .expect_err("a chain cut short taken as checked");
        assert!(
            matches!(refused, PublishError::ChainUnchecked { .. }),
            "{refused}"
        );

        // Checked with B and numbered on: not checked again after a restart.
        connect(&a, &b).await.expect("connect");
        let next = a.node.publish(sample_draft("checked")).await.expect("publish");
        assert_eq!((next.body().seq, next.body().prev), (Seq(4), Some(own[2].id())));
        let dir = a.stop().await;
        let b_id = b.peer_id();
        drop(b.stop().await);
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("restart A alone");
        assert!(!a.node.connected_peers().await.contains(&b_id));
        let alone = a
            .node
            .publish(sample_draft("alone, checked"))
            .await
            .expect("publish alone");
        assert_eq!(alone.body().seq, Seq(5));
        stop_all(vec![a]).await;
    })
    .await;
}

/// A store restored from a backup holds the chain as it was then. Started with a peer that
/// holds the key's later bulletins, the node's first publication waits for the peer's session and
/// numbers after them, rather than signing their numbers a second time; started alone, it numbers
/// on from what it holds once the wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_restored_from_a_backup_numbers_after_the_chain_its_peers_hold() {
    within(async {
        let registry = TestRegistry::new(2);
        let (a, b) = connected_pair(&registry).await;
        let older = publish_seen_by(&a, &b, 2, None).await;
        let dir = a.stop().await;
        // The backup: the stopped node's directory, copied whole.
        drop(
            herald_tests::open_store_when_free(dir.path(), registry.network())
                .await
                .expect("A's store is released"),
        );
        let backup = tempfile::tempdir().unwrap();
        herald_tests::copy_dir(dir.path(), backup.path()).expect("back up A's store");
        let a = TestNode::start_in(&registry, 0, dir).await.expect("restart A");
        connect(&a, &b).await.expect("connect again");
        let later = publish_seen_by(&a, &b, 2, None).await;
        drop(a.stop().await);

        // Restored from the backup, published as it starts, then connected.
        let a = TestNode::start_in_with(&registry, 0, backup, |s| {
            s.key_past = KeyPast::Marked;
            s.timing.first_sync_wait = WAIT;
        })
        .await
        .expect("start A on the restored store");
        let own_chain = a.node.own_chain().unwrap();
        assert_eq!((own_chain.numbered_up_to, own_chain.checked), (2, false));
        let (next, connected) =
            tokio::join!(a.node.publish(sample_draft("after the restore")), connect(&a, &b));
        connected.expect("connect A and B");
        let next = next.expect("publish");
        assert_eq!(
            (next.body().seq, next.body().prev),
            (Seq(5), Some(later[1].id())),
            "numbered after the bulletins the backup lacks (the first two: {:?})",
            older.iter().map(|b| b.id()).collect::<Vec<_>>()
        );
        b.wait_stored(next.id()).await.expect("B gets it");
        assert!(b.node.store().equivocations().unwrap().is_empty());
        assert!(a.node.own_chain().unwrap().checked);
        let dir = a.stop().await;

        // Alone, a chain checked before will do once the wait is over.
        let b_id = b.peer_id();
        drop(b.stop().await);
        let a = TestNode::start_in_with(&registry, 0, dir, marked)
            .await
            .expect("restart A alone");
        assert!(!a.node.connected_peers().await.contains(&b_id));
        let alone = a
            .node
            .publish(sample_draft("alone"))
            .await
            .expect("publish alone");
        assert_eq!((alone.body().seq, alone.body().prev), (Seq(6), Some(next.id())));
        assert!(!a.node.own_chain().unwrap().checked, "shown as checked by peers");
        stop_all(vec![a]).await;
    })
    .await;
}

/// After the check has passed with a peer that holds none of the node's chain, a peer that holds
/// it connects and a catch-up brings it: a publication during that catch-up is refused (a peer
/// listed numbers the node lacks), never numbered inside the chain, and once the catch-up is done
/// the chain goes on. A claim a session left unmet (as one cut short by a crash leaves it) holds
/// across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_a_peer_has_listed_are_not_signed_again() {
    within(async {
        let registry = TestRegistry::new(3);
        let (a, b) = connected_pair(&registry).await;
        // 24 bulletins of 200 KB: two pages or more of A's chain.
        let own = publish_seen_by(&a, &b, 24, Some(200_000)).await;
        drop(a.stop().await);
        let c = TestNode::start(&registry, 2).await.expect("start C");
        let key = registry.member(0).signing_key.id();

        // A's store is lost; it checks with C, which holds none of A's chain.
        let a = TestNode::start_in_with(&registry, 0, tempfile::tempdir().unwrap(), marked)
            .await
            .expect("start A on an empty store");
        connect(&a, &c).await.expect("connect A and C");
        // Then B, which holds all of it, connects: published once the
        // catch-up has stored one of A's.
        let mark = a.events.len();
        a.node.dial(b.dial_addr().await.expect("B's address")).await;
        a.events
            .wait_for_from("A to store one of its own", mark, WAIT, own_stored(key, 1))
            .await
            .expect("the catch-up stores A's chain");
        match a.node.publish(sample_draft("during the catch-up")).await {
            Err(PublishError::ChainBehind { claimed, .. }) => assert_eq!(claimed, Seq(24)),
            Ok(b) => panic!("numbered {} while B's chain of 24 was coming", b.body().seq),
            Err(e) => panic!("{e}"),
        }
        a.events
            .wait_for_from("A to store its 24th", mark, WAIT, own_stored(key, 24))
            .await
            .expect("the catch-up ends");
        let next = a.node.publish(sample_draft("after it")).await.expect("publish");
        assert_eq!((next.body().seq, next.body().prev), (Seq(25), Some(own[23].id())));
        drop(a.stop().await);

        // A claim left unmet holds across a restart: a store with the first
        // two of A's chain and B's claim to 24, started alone.
        let dir = tempfile::tempdir().unwrap();
        let store = herald_tests::open_store_when_free(dir.path(), registry.network())
            .await
            .expect("open a store");
        let items: Vec<_> = own[..2]
            .iter()
            .map(|b| (b.clone(), registry.member(0).id()))
            .collect();
        store.insert_verified(&items).unwrap();
        store
            .note_chain_claim(&key, &b.peer_id().to_bytes(), Seq(24))
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let a = TestNode::start_in_with(&registry, 0, dir, |s| s.key_past = KeyPast::New)
            .await
            .expect("start A alone");
        let refused = a
            .node
            .publish(sample_draft("alone"))
            .await
            .expect_err("numbered inside B's chain");
        assert!(matches!(refused, PublishError::ChainBehind { .. }), "{refused}");
        // `herald status` shows why.
        let own_chain = a.node.own_chain().unwrap();
        assert_eq!(own_chain.numbered_up_to, 2);
        assert_eq!(
            own_chain.claims,
            vec![herald_node::view::ChainClaimView {
                peer: b.peer_id().to_string(),
                up_to: 24
            }]
        );
        // The operator's word overrides it.
        let forced = a
            .node
            .publish_new_chain(sample_draft("the operator's word"))
            .await
            .expect("publish");
        assert_eq!(forced.body().seq, Seq(3));
        let own_chain = a.node.own_chain().unwrap();
        assert_eq!((own_chain.numbered_up_to, own_chain.claims.len()), (3, 0));
        stop_all(vec![a, b, c]).await;
    })
    .await;
}

/// A ring of five, where each node needs one peer pushing to it in full: the bulletins of node 0
/// reach nodes 2 and 3 first from its side and then again from the far side, so 2 and 3 prune
/// each other, and the link between them carries ids only. When node 0 stops, what is left is a
/// line with that link in its middle: a bulletin from node 1 crosses it once node 3 asks for it
/// (graft), by gossip alone (periodic sync is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ring_settles_into_a_tree_that_mends_when_a_node_on_it_stops() {
    within(async {
        const N: usize = 5;
        let mut timing = fast_timing_with_sync_every(Duration::from_secs(3600));
        timing.tree.min_inbound = 1;
        let registry = TestRegistry::new(N).with_timing(timing);
        // Each node may connect only with its two neighbours around the ring.
        let mut nodes = Vec::new();
        for i in 0..N {
            let around = [(i + N - 1) % N, (i + 1) % N];
            nodes.push(
                TestNode::start_allowing(&registry, i, &around)
                    .await
                    .expect("start"),
            );
        }
        let ring: Vec<(usize, usize)> = (0..N).map(|i| (i, (i + 1) % N)).collect();
        connect_edges(&nodes, &ring).await.expect("connect the ring");

        // Each prune is reported as it is made: 2 prunes 3, and 3 prunes 2.
        let pruned = |i: usize, peer: usize| {
            let peer = nodes[peer].peer_id();
            nodes[i]
                .events
                .find(|e| matches!(e, NodeEvent::PeerPruned(p) if *p == peer).then_some(()))
                .is_some()
        };
        let mut published = 0;
        while !(pruned(2, 3) && pruned(3, 2)) {
            assert!(
                published < 20,
                "2 and 3 did not prune each other after {published} bulletins"
            );
            let b = nodes[0]
                .node
                .publish(sample_draft(&format!("around the ring {published}")))
                .await
                .expect("publish");
            published += 1;
            for node in &nodes {
                node.wait_stored(b.id()).await.expect("every node has it");
            }
        }
        for i in [2, 3] {
            assert_eq!(
                nodes[i].node.network_status().await.tree.receives_from,
                1,
                "{i} keeps one peer pushing to it"
            );
        }
        for node in &nodes {
            assert_eq!(
                node.node.connected_peers().await.len(),
                2,
                "a ring: two links each"
            );
        }

        let stopped = nodes[0].peer_id();
        let marks = (nodes[1].events.len(), nodes[4].events.len());
        nodes.remove(0).stop().await;
        nodes[0]
            .wait_disconnected(stopped, marks.0)
            .await
            .expect("1 lets 0 go");
        nodes[3]
            .wait_disconnected(stopped, marks.1)
            .await
            .expect("4 lets 0 go");

        let grafted_before = nodes[2].node.network_status().await.tree.grafted;
        let across = nodes[0]
            .node
            .publish(sample_draft("across the pruned link"))
            .await
            .expect("publish");
        for node in &nodes {
            let origin = node
                .wait_stored(across.id())
                .await
                .expect("every node left has it");
            assert!(
                matches!(origin, Origin::Gossip(_) | Origin::Local),
                "it came by gossip, not by catch-up: {origin:?}"
            );
        }
        let grafted = nodes[2].node.network_status().await.tree.grafted;
        assert!(grafted > grafted_before, "node 3 asked node 2 for the bulletin");
        stop_all(nodes).await;
    })
    .await;
}
