//! What a node tells the rest of the program: bulletins stored, peers coming
//! and going, input rejected, equivocation found.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_protocol::{BulletinId, KeyId, MemberId, Seq, SignedBulletin, Timestamp};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::broadcast;

/// Where a stored bulletin came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Published by this node.
    Local,
    /// Received by gossip from this peer.
    Gossip(PeerId),
    /// Pulled by catch-up sync from this peer.
    Sync(PeerId),
    /// Read from a bundle file.
    Bundle,
}

/// An event from a running node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node listens on this address.
    Listening(Multiaddr),
    /// A member's node connected.
    PeerConnected(PeerId),
    /// A member's node disconnected.
    PeerDisconnected(PeerId),
    /// A member's node is linked for bulletins: the node pushes them to it
    /// from now on (the tree dissemination, `push`).
    PeerSubscribed(PeerId),
    /// The node asked this peer to stop pushing bulletins to it in full (its
    /// copies kept coming after others'): it sends ids only from now on, and
    /// the node asks for a bulletin by id if it does not get it otherwise.
    PeerPruned(PeerId),
    /// A bulletin new to this node arrived by gossip, passed validation and
    /// is staged in the store: readable with [`crate::Store::get`] and listed
    /// by queries from now on, written to sled and in chain heads once folded
    /// (within [`crate::store::FOLD_DELAY`]), when `BulletinStored` follows.
    BulletinReceived {
        /// The bulletin, as verified (shared, not copied, between subscribers).
        bulletin: Arc<SignedBulletin>,
        /// The signing member.
        member: MemberId,
        /// The peer it came from.
        from: PeerId,
        /// When this node accepted and held it, just before forwarding it (its
        /// system clock): the moment the bulletin reached the node, as the
        /// devnet and the propagation benchmark measure it. A subscriber may
        /// hear of it later, after the node's other tasks.
        held_at: std::time::SystemTime,
    },
    /// A new bulletin is on disk, in the chains and the query indexes.
    BulletinStored {
        /// Its id.
        id: BulletinId,
        /// The signing member.
        member: MemberId,
        /// The signing key.
        signer: KeyId,
        /// Its number in the key's chain.
        seq: Seq,
        /// Its kind's name.
        kind: &'static str,
        /// Its creation time.
        created: Timestamp,
        /// Where it came from.
        origin: Origin,
    },
    /// A peer sent something invalid.
    Rejected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A peer was disconnected for repeated invalid input.
    PeerBanned(PeerId),
    /// The registry changed: this is its current version (after a switch,
    /// [`NodeEvent::RegistrySwitched`], possibly lower than before).
    /// Changes that come closer together than the node reports them are
    /// told once.
    RegistryAdvanced(herald_protocol::RegistryVersion),
    /// The registry took another branch by the branch rule
    /// (docs/PROTOCOL.md, section 9): this node's versions from `from` on,
    /// members' own changes, gave way to a branch holding a change that
    /// needs the threshold. Its current version is now `to`, which may be
    /// lower than before; the members whose changes were dropped make them
    /// again. `RegistryAdvanced` follows. Switches that come closer together
    /// than the node reports them are told as the last of them; one at the
    /// node's start (evidence kept by an earlier run) is not told here, but
    /// counted in the status (`registry_switches`) and the log.
    RegistrySwitched {
        /// The first version replaced.
        from: herald_protocol::RegistryVersion,
        /// The current version after the switch.
        to: herald_protocol::RegistryVersion,
        /// How many of this node's versions were dropped.
        dropped: usize,
    },
    /// Two validly approved registry updates for one version: evidence kept.
    RegistryFork(String),
    /// A catch-up session with a peer finished.
    SyncCompleted {
        /// The peer.
        peer: PeerId,
        /// New bulletins stored.
        new_bulletins: u64,
        /// Registry updates applied.
        registry_updates: usize,
        /// Round trips made.
        round_trips: usize,
        /// Whether the nodes were already in step.
        in_step: bool,
    },
    /// A catch-up session failed.
    SyncFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The node's own bulletins kept while no peer was linked have all been
    /// sent to its peers: this many.
    BacklogSent {
        /// How many.
        count: usize,
    },
    /// Two different bulletins with one key and number: both kept as proof.
    Equivocation {
        /// The key.
        signer: KeyId,
        /// The number.
        seq: Seq,
        /// The bulletin held first.
        first: BulletinId,
        /// The other.
        second: BulletinId,
    },
}

/// How many of each event that counts a node has sent since it started (the
/// counters of `GET /metrics`).
#[derive(Debug, Default)]
pub struct EventCounts {
    /// Bulletins stored, by origin: published here, by gossip, by sync, from
    /// a bundle.
    pub stored_local: AtomicU64,
    pub stored_gossip: AtomicU64,
    pub stored_sync: AtomicU64,
    pub stored_bundle: AtomicU64,
    /// Messages or sync answers rejected, each counted against its sender.
    pub rejected: AtomicU64,
    /// Peers disconnected for repeated invalid input.
    pub banned: AtomicU64,
    /// Catch-up sessions that finished, and that failed.
    pub sync_completed: AtomicU64,
    pub sync_failed: AtomicU64,
    /// Equivocations found.
    pub equivocations: AtomicU64,
    /// Registry forks seen. (Versions taken in are not counted here: one
    /// notice may stand for several; the registry version says where it is.)
    pub registry_forks: AtomicU64,
    /// Not a count of events: the live feeds of new bulletins open now
    /// (`GET /v1/watch`), each counted while it lives.
    pub watches_open: AtomicU64,
}

/// The node's events as they are sent: broadcast to every subscriber (one
/// that falls behind misses some) and counted first, so that the counts miss
/// none.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<NodeEvent>,
    counts: Arc<EventCounts>,
}

impl Events {
    /// Events for subscribers that may fall `capacity` events behind.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Events {
            sender,
            counts: Arc::default(),
        }
    }

    /// Counts `event` and sends it to every subscriber (none is fine).
    pub fn send(&self, event: NodeEvent) {
        let c = &self.counts;
        let counter = match &event {
            NodeEvent::BulletinStored { origin, .. } => Some(match origin {
                Origin::Local => &c.stored_local,
                Origin::Gossip(_) => &c.stored_gossip,
                Origin::Sync(_) => &c.stored_sync,
                Origin::Bundle => &c.stored_bundle,
            }),
            NodeEvent::Rejected { .. } => Some(&c.rejected),
            NodeEvent::PeerBanned(_) => Some(&c.banned),
            NodeEvent::SyncCompleted { .. } => Some(&c.sync_completed),
            NodeEvent::SyncFailed { .. } => Some(&c.sync_failed),
            NodeEvent::Equivocation { .. } => Some(&c.equivocations),
            NodeEvent::RegistryFork(_) => Some(&c.registry_forks),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.sender.send(event);
    }

    /// A receiver of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.sender.subscribe()
    }

    /// The counts so far.
    pub fn counts(&self) -> &EventCounts {
        &self.counts
    }

    /// The counts, shared: for what counts itself while it lives.
    pub fn shared_counts(&self) -> Arc<EventCounts> {
        Arc::clone(&self.counts)
    }
}
