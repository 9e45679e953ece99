//! Test harness for Herald's end-to-end suites: a member registry built from fixed seeds, real
//! nodes started in one process on loopback TCP (each in its own temporary directory), topologies
//! wired by dialing, and bounded waits on the events the nodes report.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_tests::HarnessError> {
//! use herald_tests::{TestRegistry, connect_line, sample_draft, start_line};
//!
//! // Three members; node i may connect only with nodes i - 1 and i + 1.
//! let registry = TestRegistry::new(3);
//! let nodes = start_line(&registry, 3).await?;
//! connect_line(&nodes).await?;
//! let bulletin = nodes[0].node.publish(sample_draft("hello")).await.expect("publish");
//! for node in &nodes {
//!     node.wait_stored(bulletin.id()).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every wait is bounded ([`WAIT`] unless told otherwise) and waits on an event, never on a
//! sleep; the one retry is [`TestNode::start_in`] waiting for sled to release a store closed just
//! before, which no event announces. Each node's events are recorded from the moment it starts, so
//! a wait also sees events that happened before it began.
//!
//! Discovery (Kademlia fed by identify) connects every pair of members that hear of each other
//! within a second; a test that needs a topology starts its nodes with
//! [`TestNode::start_allowing`], whose registry lists only the nodes each may connect with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_keys::{Registry, RegistryError, SecretKey, SignError};
use herald_node::{Draft, GossipTiming, KeyPast, Node, NodeEvent, NodeSettings, StartError};
use herald_protocol::{
    AdvisoryStatus, BulletinBody, BulletinId, DecodeError, Kind, MemberEntry, MemberId, NetworkId, Payload,
    RegistryHash, RegistryOp, RegistryUpdate, RegistryVersion, Seq, Severity, SignedBulletin,
    SignedRegistryUpdate, Timestamp, Tlp,
};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tempfile::TempDir;
use tokio::sync::{broadcast, watch};

/// How long a single wait lasts by default before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long a start waits for a just-closed store to release its directory.
pub const STORE_RELEASE: Duration = Duration::from_secs(5);

/// Whether a start failed only because the store's directory is still locked.
fn is_store_locked(e: &StartError) -> bool {
    matches!(e, StartError::Store(_)) && e.to_string().contains("could not acquire lock")
}

/// Opens the store in `dir` once a node stopped just before has released it (at most
/// [`STORE_RELEASE`]; see [`TestNode::start_in`]).
pub async fn open_store_when_free(
    dir: &std::path::Path,
    network: NetworkId,
) -> Result<herald_node::Store, herald_node::StoreError> {
    let deadline = tokio::time::Instant::now() + STORE_RELEASE;
    loop {
        match herald_node::Store::open(dir, network) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return result,
        }
    }
}

/// Copies the directory `from`, with everything under it, into `to` (created if need be): a
/// backup of a stopped node's store.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// 2026-01-01T00:00:00Z, the genesis time of test registries.
pub const GENESIS_TIME: Timestamp = Timestamp(1_767_225_600_000);

/// Why a harness step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A node would not start.
    #[error("node {index} did not start: {source}")]
    Start {
        /// The member's index.
        index: usize,
        /// Why.
        source: StartError,
    },
    /// A temporary directory could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// A registry update was refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Something could not be encoded.
    #[error(transparent)]
    Encode(#[from] DecodeError),
    /// A bulletin could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The store could not be prepared.
    #[error(transparent)]
    Store(#[from] herald_node::StoreError),
    /// The node's peer id is not a valid libp2p identity.
    #[error("node key {0} has no libp2p peer id")]
    NoPeerId(usize),
}

/// The roles a member's keys play; each gets its own seed.
#[derive(Debug, Clone, Copy)]
enum Role {
    Member = 1,
    Signing = 2,
    Node = 3,
}

/// The fixed seed of member `index`'s key for `role`: deterministic keys, so peer ids and
/// member ids are the same in every run.
fn seed(index: usize, role: Role) -> [u8; 32] {
    let mut seed = [0x48u8; 32];
    seed[0] = role as u8;
    seed[1..9].copy_from_slice(&(index as u64).to_le_bytes());
    seed
}

/// One member's secrets: member (governance) key, bulletin signing key and node key.
#[derive(Debug, Clone)]
pub struct TestMember {
    /// The member's name in the registry.
    pub name: String,
    /// Governance key: approves registry updates.
    pub member_key: SecretKey,
    /// Signs the member's bulletins.
    pub signing_key: SecretKey,
    /// The node's libp2p identity.
    pub node_key: SecretKey,
}

impl TestMember {
    /// Member `index` of a test registry, from fixed seeds.
    pub fn from_index(index: usize) -> Self {
        Self {
            name: format!("member-{index}"),
            member_key: SecretKey::from_seed(&seed(index, Role::Member)),
            signing_key: SecretKey::from_seed(&seed(index, Role::Signing)),
            node_key: SecretKey::from_seed(&seed(index, Role::Node)),
        }
    }

    /// The member's id.
    pub fn id(&self) -> MemberId {
        MemberId::derive(&self.member_key.id())
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> Option<PeerId> {
        herald_node::network::peer_id_of(&self.node_key.public().node_id())
    }

    /// The registry entry admitting this member.
    pub fn entry(&self) -> MemberEntry {
        MemberEntry {
            id: self.id(),
            name: self.name.clone(),
            member_key: self.member_key.id(),
            signing_keys: vec![self.signing_key.id()],
            node_ids: vec![self.node_key.public().node_id()],
        }
    }
}

/// A genesis registry of `n` members, approved by every key it admits, with the smallest
/// threshold above half.
#[derive(Debug, Clone)]
pub struct TestRegistry {
    /// The members, in index order.
    pub members: Vec<TestMember>,
    /// The approved genesis update.
    pub genesis: SignedRegistryUpdate,
    /// Its hash: the root of trust every node is configured with.
    pub genesis_hash: RegistryHash,
    /// The gossip and sync timing of every node started from this registry.
    timing: GossipTiming,
}

impl TestRegistry {
    /// The registry of members `0..n`.
    ///
    /// # Panics
    ///
    /// If `n` is 0 (a registry needs a member).
    pub fn new(n: usize) -> Self {
        assert!(n > 0, "a registry needs at least one member");
        let members: Vec<TestMember> = (0..n).map(TestMember::from_index).collect();
        let mut ops: Vec<RegistryOp> = members.iter().map(|m| RegistryOp::AddMember(m.entry())).collect();
        ops.push(RegistryOp::SetThreshold {
            threshold: (n / 2 + 1) as u32,
        });
        let body = RegistryUpdate {
            format: herald_protocol::registry::REGISTRY_FORMAT,
            version: RegistryVersion::GENESIS,
            prev: None,
            created: GENESIS_TIME,
            ops,
        };
        // A fixed, valid body: encoding cannot fail, and every admitted key approves.
        let mut genesis = herald_keys::propose_update(&body).unwrap_or_else(|e| panic!("genesis body: {e}"));
        for m in &members {
            for key in [&m.member_key, &m.signing_key, &m.node_key] {
                let approval = herald_keys::approve(key, &genesis);
                genesis
                    .push_approval(approval)
                    .unwrap_or_else(|e| panic!("genesis approval: {e}"));
            }
        }
        let genesis_hash = genesis.hash();
        Self {
            members,
            genesis,
            genesis_hash,
            timing: GossipTiming::fast(),
        }
    }

    /// The same registry, whose nodes start with `timing` instead of [`GossipTiming::fast`] (for
    /// example a sync interval of an hour, so that only the triggers under test start a session).
    pub fn with_timing(mut self, timing: GossipTiming) -> Self {
        self.timing = timing;
        self
    }

    /// The network these members form.
    pub fn network(&self) -> NetworkId {
        NetworkId::from_genesis(self.genesis_hash)
    }

    /// The registry at genesis.
    pub fn registry(&self) -> Result<Registry, HarnessError> {
        Ok(Registry::from_genesis(self.genesis.clone(), self.genesis_hash)?)
    }

    /// Member `index`.
    ///
    /// # Panics
    ///
    /// If there is no such member.
    pub fn member(&self, index: usize) -> &TestMember {
        &self.members[index]
    }

    /// Member `index`'s node peer id.
    pub fn peer_id(&self, index: usize) -> Result<PeerId, HarnessError> {
        self.member(index).peer_id().ok_or(HarnessError::NoPeerId(index))
    }

    /// The update with `ops` that follows `after` (a version and its hash), approved by every
    /// member key of this registry (above any threshold) and by every key it adds.
    pub fn approved_update(
        &self,
        after: (RegistryVersion, RegistryHash),
        created: Timestamp,
        ops: Vec<RegistryOp>,
    ) -> Result<SignedRegistryUpdate, HarnessError> {
        let (version, hash) = after;
        let body = RegistryUpdate {
            format: herald_protocol::registry::REGISTRY_FORMAT,
            version: RegistryVersion(version.0 + 1),
            prev: Some(hash),
            created,
            ops,
        };
        let mut update = herald_keys::propose_update(&body)?;
        for m in &self.members {
            let approval = herald_keys::approve(&m.member_key, &update);
            update.push_approval(approval)?;
        }
        Ok(update)
    }

    /// Version 2 of the registry with every node removed except those of members `keep`.
    ///
    /// A node started with it (see [`TestNode::start_allowing`]) refuses connections with all
    /// other nodes, so discovery cannot add links to a test's topology; every member and signing
    /// key stays as it was, so bulletins are judged as with the genesis. The update always
    /// restates the threshold, so that even a node that keeps every other node is at version 2:
    /// catch-up sync moves registry updates only to nodes at a lower version, so nodes started
    /// this way never hand each other their different versions 2.
    pub fn nodes_only(&self, keep: &[usize]) -> Result<SignedRegistryUpdate, HarnessError> {
        let threshold = (self.members.len() / 2 + 1) as u32;
        let ops: Vec<RegistryOp> = std::iter::once(RegistryOp::SetThreshold { threshold })
            .chain(
                self.members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !keep.contains(i))
                    .map(|(_, m)| RegistryOp::RemoveNode {
                        member: m.id(),
                        node: m.node_key.public().node_id(),
                    }),
            )
            .collect();
        self.approved_update((RegistryVersion::GENESIS, self.genesis_hash), GENESIS_TIME, ops)
    }

    /// Settings for member `index`'s node in `data_dir`: loopback TCP on a free port, no mDNS,
    /// fast gossip heartbeats (or the timing given to [`TestRegistry::with_timing`]), no bootstrap
    /// peers.
    pub fn settings(&self, index: usize, data_dir: &std::path::Path) -> NodeSettings {
        let m = self.member(index);
        NodeSettings {
            data_dir: data_dir.to_path_buf(),
            genesis: self.genesis.clone(),
            genesis_hash: self.genesis_hash,
            signing_key: m.signing_key.clone(),
            node_key: m.node_key.clone(),
            listen: vec![loopback_any_port()],
            bootstrap: Vec::new(),
            mdns: false,
            handshakes_per_address: herald_node::network::DEFAULT_HANDSHAKES_PER_ADDRESS,
            timing: self.timing,
            // Keys made for the test: they have signed nothing.
            key_past: KeyPast::New,
        }
    }
}

/// [`GossipTiming::fast`] with periodic catch-up sync every `interval` instead of every 5 s.
pub fn fast_timing_with_sync_every(interval: Duration) -> GossipTiming {
    GossipTiming {
        sync_interval: interval,
        ..GossipTiming::fast()
    }
}

/// `/ip4/127.0.0.1/tcp/0`.
pub fn loopback_any_port() -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
        .with(Protocol::Tcp(0))
}

/// Every event a node reported since it started, and a signal when another arrives.
#[derive(Debug, Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<NodeEvent>>>,
    /// Events the recorder missed because it fell behind (then "never happened" proves nothing).
    missed: Arc<AtomicU64>,
    arrived: watch::Sender<usize>,
}

impl EventLog {
    /// Starts recording `receiver` in a background task that ends with the node.
    pub fn record(mut receiver: broadcast::Receiver<NodeEvent>) -> Self {
        let log = Self {
            events: Arc::new(Mutex::new(Vec::new())),
            missed: Arc::new(AtomicU64::new(0)),
            arrived: watch::Sender::new(0),
        };
        let writer = log.clone();
        tokio::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => writer.push(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        writer.missed.fetch_add(missed, Ordering::Relaxed);
                        writer.arrived.send_modify(|n| *n += 1);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        log
    }

    /// The recorded events, checked to be complete.
    ///
    /// # Panics
    ///
    /// If the recorder fell behind and missed events: a log with holes cannot show that
    /// something never happened.
    fn lock_complete(&self) -> std::sync::MutexGuard<'_, Vec<NodeEvent>> {
        let missed = self.missed.load(Ordering::Relaxed);
        assert_eq!(missed, 0, "the event log fell behind and missed {missed} events");
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, event: NodeEvent) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        self.arrived.send_modify(|n| *n += 1);
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<NodeEvent> {
        self.lock_complete().clone()
    }

    /// The first recorded event `matcher` maps to a value.
    pub fn find<T>(&self, matcher: impl Fn(&NodeEvent) -> Option<T>) -> Option<T> {
        self.lock_complete().iter().find_map(matcher)
    }

    /// Every recorded event `matcher` maps to a value, in order.
    pub fn all<T>(&self, matcher: impl Fn(&NodeEvent) -> Option<T>) -> Vec<T> {
        self.all_from(0, matcher)
    }

    /// How many events are recorded so far: a cursor for waits on what happens next.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every event recorded at or after cursor `from` that `matcher` maps to a value, in order.
    pub fn all_from<T>(&self, from: usize, matcher: impl Fn(&NodeEvent) -> Option<T>) -> Vec<T> {
        self.lock_complete()
            .iter()
            .skip(from)
            .filter_map(matcher)
            .collect()
    }

    /// Waits until at least `count` events recorded at or after cursor `from` match, at most
    /// `limit`; returns every match.
    pub async fn wait_for_n_from<T>(
        &self,
        what: &str,
        from: usize,
        count: usize,
        limit: Duration,
        matcher: impl Fn(&NodeEvent) -> Option<T>,
    ) -> Result<Vec<T>, HarnessError> {
        let mut arrived = self.arrived.subscribe();
        let wait = async {
            loop {
                // Subscribed before looking: an event pushed after the look marks a change.
                let found = self.all_from(from, &matcher);
                if found.len() >= count {
                    return found;
                }
                if arrived.changed().await.is_err() {
                    // Unreachable while `self` holds the sender; wait out the limit.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| HarnessError::Timeout {
                what: what.to_string(),
                after: limit,
            })
    }

    /// Waits until at least `count` recorded events match, at most `limit`; returns them.
    pub async fn wait_for_n<T>(
        &self,
        what: &str,
        count: usize,
        limit: Duration,
        matcher: impl Fn(&NodeEvent) -> Option<T>,
    ) -> Result<Vec<T>, HarnessError> {
        self.wait_for_n_from(what, 0, count, limit, matcher).await
    }

    /// Waits until an event recorded at or after cursor `from` matches, at most `limit`;
    /// returns the first such match.
    pub async fn wait_for_from<T>(
        &self,
        what: &str,
        from: usize,
        limit: Duration,
        matcher: impl Fn(&NodeEvent) -> Option<T>,
    ) -> Result<T, HarnessError> {
        let mut found = self.wait_for_n_from(what, from, 1, limit, matcher).await?;
        Ok(found.swap_remove(0))
    }

    /// Waits until a recorded event matches, at most `limit`; returns the first match.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        matcher: impl Fn(&NodeEvent) -> Option<T>,
    ) -> Result<T, HarnessError> {
        self.wait_for_from(what, 0, limit, matcher).await
    }
}

/// A running node with its recorded events and its data directory.
#[derive(Debug)]
pub struct TestNode {
    /// The member's index in the registry.
    pub index: usize,
    /// The node.
    pub node: Node,
    /// Everything it reported since it started.
    pub events: EventLog,
    /// Its data directory, removed when dropped.
    pub dir: TempDir,
}

impl TestNode {
    /// Starts member `index`'s node in a new temporary directory.
    pub async fn start(registry: &TestRegistry, index: usize) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("herald-e2e-{index}-"))
            .tempdir()?;
        Self::start_in(registry, index, dir).await
    }

    /// Starts member `index`'s node on an existing data directory (a restart).
    ///
    /// Waits (at most [`STORE_RELEASE`]) while the directory's store is still locked by a store
    /// closed just before: sled's background threads release the lock a moment after the last
    /// handle is dropped.
    pub async fn start_in(registry: &TestRegistry, index: usize, dir: TempDir) -> Result<Self, HarnessError> {
        Self::start_in_with(registry, index, dir, |_| {}).await
    }

    /// [`TestNode::start_in`] with settings changed by `adjust` first.
    pub async fn start_in_with(
        registry: &TestRegistry,
        index: usize,
        dir: TempDir,
        adjust: impl Fn(&mut NodeSettings),
    ) -> Result<Self, HarnessError> {
        let deadline = tokio::time::Instant::now() + STORE_RELEASE;
        let node = loop {
            let mut settings = registry.settings(index, dir.path());
            adjust(&mut settings);
            match Node::start(settings).await {
                Ok(node) => break node,
                Err(e) if is_store_locked(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(source) => return Err(HarnessError::Start { index, source }),
            }
        };
        let events = EventLog::record(node.subscribe());
        Ok(Self {
            index,
            node,
            events,
            dir,
        })
    }

    /// Starts member `index`'s node with a registry history of the genesis followed by `updates`,
    /// written to a new data directory before the node opens it.
    pub async fn start_with_history(
        registry: &TestRegistry,
        index: usize,
        updates: &[SignedRegistryUpdate],
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("herald-e2e-{index}-"))
            .tempdir()?;
        {
            let store = herald_node::Store::open(dir.path(), registry.network())?;
            for update in std::iter::once(&registry.genesis).chain(updates) {
                store.save_registry_update(update)?;
            }
            store.flush()?;
        }
        Self::start_in(registry, index, dir).await
    }

    /// Starts member `index`'s node so that it connects only with the nodes of members `peers`
    /// (see [`TestRegistry::nodes_only`]).
    pub async fn start_allowing(
        registry: &TestRegistry,
        index: usize,
        peers: &[usize],
    ) -> Result<Self, HarnessError> {
        let keep: Vec<usize> = peers.iter().copied().chain([index]).collect();
        let update = registry.nodes_only(&keep)?;
        Self::start_with_history(registry, index, &[update]).await
    }

    /// Shuts the node down cleanly and hands back its data directory.
    pub async fn stop(self) -> TempDir {
        self.node.shutdown().await;
        self.dir
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// An address other nodes can dial: the first listen address with `/p2p/<peer id>`.
    pub async fn dial_addr(&self) -> Result<Multiaddr, HarnessError> {
        // The loop records the address before it reports it, and the log was subscribed before
        // this call: either the list has it or the event is still to come.
        let addr = match self.node.listen_addrs().await.into_iter().next() {
            Some(addr) => addr,
            None => {
                self.events
                    .wait_for("a listen address", WAIT, |e| match e {
                        NodeEvent::Listening(a) => Some(a.clone()),
                        _ => None,
                    })
                    .await?
            }
        };
        Ok(addr.with(Protocol::P2p(self.peer_id())))
    }

    /// Waits until this node has stored bulletin `id`; returns where it came from.
    pub async fn wait_stored(&self, id: BulletinId) -> Result<herald_node::Origin, HarnessError> {
        self.events
            .wait_for(
                &format!("node {} to store {}", self.index, id.fmt_short()),
                WAIT,
                |e| match e {
                    NodeEvent::BulletinStored { id: got, origin, .. } if *got == id => Some(*origin),
                    _ => None,
                },
            )
            .await
    }

    /// Whether this node reported storing bulletin `id`.
    pub fn reported_stored(&self, id: BulletinId) -> bool {
        self.events
            .find(|e| match e {
                NodeEvent::BulletinStored { id: got, .. } if *got == id => Some(()),
                _ => None,
            })
            .is_some()
    }

    /// Waits until this node reports, at or after event cursor `from`, that `peer` connected and
    /// is linked for bulletins (the tree's link).
    pub async fn wait_peer_ready(&self, peer: PeerId, from: usize) -> Result<(), HarnessError> {
        let short = herald_node::network::short_peer(&peer);
        self.events
            .wait_for_from(
                &format!("node {} to see {short} connected", self.index),
                from,
                WAIT,
                |e| matches!(e, NodeEvent::PeerConnected(p) if *p == peer).then_some(()),
            )
            .await?;
        self.wait_subscribed(peer, from).await
    }

    /// Waits until this node reports, at or after event cursor `from`, that a catch-up session
    /// with `peer` ended (completed or failed).
    pub async fn wait_sync_ended(&self, peer: PeerId, from: usize) -> Result<(), HarnessError> {
        let short = herald_node::network::short_peer(&peer);
        self.events
            .wait_for_from(
                &format!("node {} to end a sync session with {short}", self.index),
                from,
                WAIT,
                |e| match e {
                    NodeEvent::SyncCompleted { peer: p, .. } | NodeEvent::SyncFailed { peer: p, .. }
                        if *p == peer =>
                    {
                        Some(())
                    }
                    _ => None,
                },
            )
            .await
    }

    /// Waits until this node reports, at or after event cursor `from`, that `peer` is linked for
    /// bulletins (`NodeEvent::PeerSubscribed`: the tree pushes bulletins to it from then on).
    pub async fn wait_subscribed(&self, peer: PeerId, from: usize) -> Result<(), HarnessError> {
        let short = herald_node::network::short_peer(&peer);
        self.events
            .wait_for_from(
                &format!("node {} to link {short} for bulletins", self.index),
                from,
                WAIT,
                |e| matches!(e, NodeEvent::PeerSubscribed(p) if *p == peer).then_some(()),
            )
            .await
    }

    /// Waits until this node reports `peer` disconnected at or after event cursor `from`.
    pub async fn wait_disconnected(&self, peer: PeerId, from: usize) -> Result<(), HarnessError> {
        let short = herald_node::network::short_peer(&peer);
        self.events
            .wait_for_from(
                &format!("node {} to see {short} disconnected", self.index),
                from,
                WAIT,
                |e| matches!(e, NodeEvent::PeerDisconnected(p) if *p == peer).then_some(()),
            )
            .await
    }
}

/// The peer a bulletin came from, by gossip or by catch-up sync; `None` for the node's own or a
/// bundle's. Tests assert on who handed a bulletin over, not on which mechanism won the race.
pub fn origin_peer(origin: herald_node::Origin) -> Option<PeerId> {
    match origin {
        herald_node::Origin::Gossip(peer) | herald_node::Origin::Sync(peer) => Some(peer),
        _ => None,
    }
}

/// Dials `to` from `from` and waits until each sees the other connected and linked, so that
/// gossip flows both ways. If discovery connected them already, waits for the links only.
pub async fn connect(from: &TestNode, to: &TestNode) -> Result<(), HarnessError> {
    // Cursors first: whatever connects them from here on is seen by the waits below.
    let (from_mark, to_mark) = (from.events.len(), to.events.len());
    let already = from.node.connected_peers().await.contains(&to.peer_id())
        && to.node.connected_peers().await.contains(&from.peer_id());
    if already {
        from.wait_subscribed(to.peer_id(), 0).await?;
        return to.wait_subscribed(from.peer_id(), 0).await;
    }
    let addr = to.dial_addr().await?;
    from.node.dial(addr).await;
    from.wait_peer_ready(to.peer_id(), from_mark).await?;
    to.wait_peer_ready(from.peer_id(), to_mark).await?;
    // Each side starts a catch-up session on connecting: let both end, so that
    // what a test does next is not raced by them.
    from.wait_sync_ended(to.peer_id(), from_mark).await?;
    to.wait_sync_ended(from.peer_id(), to_mark).await
}

/// Connects the nodes with the given edges (pairs of positions in `nodes`).
pub async fn connect_edges(nodes: &[TestNode], edges: &[(usize, usize)]) -> Result<(), HarnessError> {
    for &(a, b) in edges {
        connect(&nodes[a], &nodes[b]).await?;
    }
    Ok(())
}

/// Connects the nodes in a line: each dials the one before it.
///
/// Discovery (Kademlia fed by identify) soon connects members that learn of each other; to keep a
/// line a line, start the nodes with [`TestNode::start_allowing`].
pub async fn connect_line(nodes: &[TestNode]) -> Result<(), HarnessError> {
    let edges: Vec<(usize, usize)> = (1..nodes.len()).map(|i| (i, i - 1)).collect();
    connect_edges(nodes, &edges).await
}

/// The neighbours of each position in a line of `n`.
pub fn line_neighbours(n: usize) -> Vec<Vec<usize>> {
    (0..n)
        .map(|i| {
            let mut around = Vec::new();
            if i > 0 {
                around.push(i - 1);
            }
            if i + 1 < n {
                around.push(i + 1);
            }
            around
        })
        .collect()
}

/// Starts the nodes of members `0..n` of `registry` so that each can connect only with its
/// neighbours in a line.
pub async fn start_line(registry: &TestRegistry, n: usize) -> Result<Vec<TestNode>, HarnessError> {
    let mut nodes = Vec::with_capacity(n);
    for (index, around) in line_neighbours(n).iter().enumerate() {
        nodes.push(TestNode::start_allowing(registry, index, around).await?);
    }
    Ok(nodes)
}

/// Starts the nodes of members `indexes` of `registry`.
pub async fn start_nodes(registry: &TestRegistry, indexes: &[usize]) -> Result<Vec<TestNode>, HarnessError> {
    let mut nodes = Vec::with_capacity(indexes.len());
    for &index in indexes {
        nodes.push(TestNode::start(registry, index).await?);
    }
    Ok(nodes)
}

/// Shuts every node down.
pub async fn stop_all(nodes: Vec<TestNode>) {
    for node in nodes {
        node.stop().await;
    }
}

/// A small valid draft: an advisory under investigation, TLP:GREEN, medium severity.
pub fn sample_draft(title: &str) -> Draft {
    Draft {
        kind: Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::UnderInvestigation,
        },
        tlp: Tlp::Green,
        severity: Severity::Medium,
        title: title.to_string(),
        references: Vec::new(),
        supersedes: None,
        expires: None,
        audience: Vec::new(),
        payload: Payload {
            content_type: "text/plain".into(),
            bytes: format!("details of {title}").into_bytes(),
        },
        created: None,
    }
}

/// A valid body for `network` signed by `signer` at `seq` (naming `prev`), created at `created`.
pub fn sample_body(
    network: NetworkId,
    signer: &SecretKey,
    seq: Seq,
    prev: Option<BulletinId>,
    created: Timestamp,
    title: &str,
) -> BulletinBody {
    Draft {
        created: Some(created),
        ..sample_draft(title)
    }
    .into_body(network, signer.id(), seq, prev)
}

/// Signs [`sample_body`] with `signer`.
pub fn signed_sample(
    network: NetworkId,
    signer: &SecretKey,
    seq: Seq,
    prev: Option<BulletinId>,
    created: Timestamp,
    title: &str,
) -> Result<SignedBulletin, HarnessError> {
    Ok(herald_keys::sign_bulletin(
        signer,
        &sample_body(network, signer, seq, prev, created, title),
    )?)
}
