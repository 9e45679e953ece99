//! What a node tells the rest of the program: bulletins stored, peers coming
//! and going, input rejected, equivocation found.

use std::sync::Arc;

use herald_protocol::{BulletinId, KeyId, MemberId, Seq, SignedBulletin, Timestamp};
use libp2p::{Multiaddr, PeerId};

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
    /// The registry advanced to this version.
    RegistryAdvanced(herald_protocol::RegistryVersion),
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
