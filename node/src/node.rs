//! A running node: the handle the rest of the program holds. It owns the store
//! writer and indexer threads and the network event loop, and offers publishing, queries,
//! live events and a clean shutdown.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use herald_keys::{Registry, RegistryError, SecretKey};
use herald_protocol::{
    BulletinBody, Kind, MemberId, NetworkId, Payload, Reference, RegistryHash, Seq, Severity, SignedBulletin,
    SignedRegistryUpdate, Timestamp, Tlp,
};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::chain_check::ChainCheck;
use crate::events::NodeEvent;
use crate::indexer::{Indexer, Signal};
use crate::network::{self, Command, GossipTiming, NetworkError, NetworkParts};
use crate::store::{Store, StoreError};
use crate::writer::{WRITER_CAPACITY, WriteRequest, Writer};

/// Events buffered per subscriber before a slow one starts missing some.
const EVENT_CAPACITY: usize = 4096;

/// What a node knows of its signing key's past: whether its chain may start
/// at number 1 (the checks are in [`crate::chain_check`]).
///
/// When the store holds no bulletin of the key and the key is not known to
/// be new, the node numbers nothing until it has checked with the network:
/// its first publication waits (at most [`GossipTiming::first_sync_wait`],
/// 10 s by default) until every connected peer's catch-up sync session has
/// brought back what the peer holds of the key's chain (fetched first), the
/// chain the key signed before the store was lost. Bulletins of the key in
/// the store do not end the check (a catch-up under way holds the first
/// pages of the chain before the last); a mark in the store folder keeps a
/// restart from taking a chain cut short for a checked one
/// ([`crate::chain_check::unchecked_key_mark`]). At the end of the wait one
/// peer's chain will do if no session is still under way; otherwise the
/// publication is refused
/// ([`PublishError::ChainUnchecked`]). [`Node::publish_new_chain`] is the
/// operator's word that the key never published. Without this check a lost
/// store would have the key sign its numbers a second time: equivocation.
///
/// A node whose store holds a chain of the key, checked before, asks the
/// same at every start: its first publication waits the same way (a store
/// restored from a backup lacks the key's last bulletins, which the peers
/// bring back), but numbers on from what it holds if no peer brings its
/// chain back within the wait (none connected, or their sessions failed; a
/// session still under way refuses, as above), or at once when the registry
/// lists no other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPast {
    /// Made for this run (a devnet, a test): it has signed nothing.
    New,
    /// New if the store folder holds the mark `herald init` writes for a key
    /// it makes ([`crate::chain_check::unused_key_mark`]). Even so the first
    /// publication asks the connected peers first (a mark can come back with
    /// a store restored from a backup); the mark only lets it go ahead when
    /// no peer answers within the wait, or at once when the registry lists
    /// no other node. The node removes the mark before it signs the key's
    /// first bulletin (or at start, if the store holds one already).
    Marked,
}

/// What a node needs to start.
#[derive(Debug)]
pub struct NodeSettings {
    /// The store directory.
    pub data_dir: PathBuf,
    /// The genesis registry update.
    pub genesis: SignedRegistryUpdate,
    /// The configured genesis hash: the root of trust.
    pub genesis_hash: RegistryHash,
    /// This member's bulletin signing key.
    pub signing_key: SecretKey,
    /// This node's libp2p identity key.
    pub node_key: SecretKey,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// mDNS discovery on the LAN.
    pub mdns: bool,
    /// Incoming connections one address may hold in their handshake at once
    /// (0: no limit); see [`crate::network::DEFAULT_HANDSHAKES_PER_ADDRESS`].
    pub handshakes_per_address: usize,
    /// Gossip heartbeat timing.
    pub timing: GossipTiming,
    /// Whether the signing key has signed before.
    pub key_past: KeyPast,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry (genesis or stored history) is not valid.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// The signing key is not a signing key of a current member.
    #[error(
        "the signing key {0} is not a signing key of any member in the registry; check keys/signing.key and the genesis (if the log said REGISTRY BRANCH SWITCHED, the change that added it gave way: the member adds a signing key again, docs/OPERATIONS.md)"
    )]
    NotAMember(herald_protocol::KeyId),
    /// The node key is not usable as a libp2p identity.
    #[error("the node key {0} is not a usable libp2p identity; check keys/node.key")]
    BadNodeKey(herald_protocol::NodeId),
    /// The node key is not listed for this member.
    #[error(
        "the node id {0} is not in the registry, so other members would refuse it; add it to the registry first (if the log said REGISTRY BRANCH SWITCHED, the change that added it gave way: docs/OPERATIONS.md)"
    )]
    NodeNotListed(PeerId),
    /// The network could not start.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A mark in the store folder about the signing key's chain (that the key
    /// is new, beside a chain of it; or that the chain is not checked yet)
    /// could not be removed or written.
    #[error(
        "cannot update {path}, the store folder's record of the signing key's chain ({reason}); nothing was started. Fix the store folder's permissions"
    )]
    Mark {
        /// The mark.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The system refused a thread the node needs.
    #[error("cannot start the node's {0}; the system may be out of threads or memory")]
    Resources(String),
    /// A stored registry version that this build's rules refuse: the store
    /// is left as it is.
    #[error(
        "the stored registry's version {version} is refused by this build's rules ({reason}); nothing was started and the store is unchanged. Registry rules must be the same on every node: run the build the other members run"
    )]
    StoredRegistry {
        /// The version refused.
        version: herald_protocol::RegistryVersion,
        /// Why.
        reason: RegistryError,
    },
}

/// Why a publication failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The draft breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing was published.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopped,
    /// The node could not check the signing key's chain with its peers
    /// since it started, and what its store holds will not do: no bulletin
    /// of a key not known to be new, a chain a catch-up not yet checked
    /// brought, or any chain while a peer's session is still fetching it
    /// ([`KeyPast`]).
    #[error(
        "this node could not check its signing key's chain with its peers within {} s ({peers} peers connected, {running} sync sessions still fetching it{}). It holds the chain up to number {held}, and numbers bulletins of the key only after its peers have brought back what they hold of it: if its store was lost, cut short, or restored from a backup, publishing now could sign numbers of the key a second time. Connect the node to a peer (or let its sessions end) and try again; or, once the store holds the whole chain, or if the key has never published, say so: herald publish --new-chain (API: POST /v1/bulletins?new_chain=true)",
        waited.as_secs_f64(),
        last_sync_error.as_deref().map(|e| format!("; the last sync failed: {e}")).unwrap_or_default()
    )]
    ChainUnchecked {
        /// How long the publication waited.
        waited: std::time::Duration,
        /// Peers connected when it gave up.
        peers: usize,
        /// Sync sessions still under way.
        running: usize,
        /// Why the last sync session failed, if it did.
        last_sync_error: Option<String>,
        /// The highest number of the chain the node holds (0 for none).
        held: Seq,
    },
    /// A peer listed more of the signing key's chain than this node holds,
    /// and its session has not brought it back yet.
    #[error(
        "a peer listed number {claimed} of this node's signing key, and this node holds up to {held}: its catch-up is bringing the rest (see herald status). Publish again once it has; publishing now would sign those numbers a second time. If the peer is wrong and the store holds the whole chain, say so: herald publish --new-chain (API: POST /v1/bulletins?new_chain=true)"
    )]
    ChainBehind {
        /// The highest number this node holds.
        held: Seq,
        /// The highest number a peer listed.
        claimed: Seq,
    },
    /// As [`PublishError::ChainUnchecked`], in a network whose registry lists
    /// no other node to ask.
    #[error(
        "this node has not checked its signing key's chain with another node, and the registry lists no other node to ask. If the key has published before, with a store since lost, publishing now could sign its numbers a second time: import its whole chain from a bundle first (herald import). Once the store holds the whole chain, or if the key has never published, say so: herald publish --new-chain (API: POST /v1/bulletins?new_chain=true)"
    )]
    NoOneToAsk,
    /// The mark saying the key is new could not be removed before signing.
    #[error(
        "cannot remove {path} before signing the key's first bulletin ({reason}); nothing was published. Fix the store folder's permissions, or remove the file by hand"
    )]
    Mark {
        /// The mark.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
}

/// What an author writes; the node fills in the network, signer, number,
/// previous id and (unless given) the creation time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Draft {
    /// Kind, with its kind-specific facts.
    pub kind: Kind,
    /// TLP label.
    pub tlp: Tlp,
    /// Severity.
    pub severity: Severity,
    /// Title.
    pub title: String,
    /// References.
    #[serde(default)]
    pub references: Vec<Reference>,
    /// An earlier bulletin of this member that this one replaces.
    #[serde(default)]
    pub supersedes: Option<herald_protocol::BulletinId>,
    /// Expiry.
    #[serde(default)]
    pub expires: Option<Timestamp>,
    /// Intended members (empty: all).
    #[serde(default)]
    pub audience: Vec<MemberId>,
    /// Content.
    pub payload: Payload,
    /// Creation time; now if absent.
    #[serde(default)]
    pub created: Option<Timestamp>,
}

impl Draft {
    /// The body this draft becomes as number `seq` of `signer`'s chain in
    /// `network`, after `prev`; created now unless the draft says when.
    pub fn into_body(
        self,
        network: NetworkId,
        signer: herald_protocol::KeyId,
        seq: Seq,
        prev: Option<herald_protocol::BulletinId>,
    ) -> BulletinBody {
        BulletinBody {
            format: herald_protocol::bulletin::BULLETIN_FORMAT,
            network,
            signer,
            seq,
            prev,
            created: self.created.unwrap_or_else(now),
            kind: self.kind,
            tlp: self.tlp,
            severity: self.severity,
            title: self.title,
            references: self.references,
            supersedes: self.supersedes,
            expires: self.expires,
            audience: self.audience,
            payload: self.payload,
        }
    }
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// A running node.
pub struct Node {
    member: MemberId,
    peer_id: PeerId,
    store: Store,
    registry: Arc<RwLock<Registry>>,
    commands: mpsc::Sender<Command>,
    writer: mpsc::Sender<WriteRequest>,
    events: crate::events::Events,
    shutdown: broadcast::Sender<()>,
    network_task: tokio::task::JoinHandle<()>,
    validation: crate::validators::Drain,
    writer_thread: std::thread::JoinHandle<()>,
    indexer: std::sync::mpsc::SyncSender<Signal>,
    indexer_thread: std::thread::JoinHandle<()>,
    /// The signing key's id.
    own_key: herald_protocol::KeyId,
    /// The store folder.
    data_dir: PathBuf,
    /// How far the network was checked for the key's chain (set by the
    /// network's sync sessions).
    chain_check: watch::Sender<ChainCheck>,
    /// The mark saying the key is new, until the node removes it as it signs
    /// the first bulletin. The lock also keeps two first publications from
    /// racing past it.
    unused_mark: tokio::sync::Mutex<Option<PathBuf>>,
    /// Whether `unused_mark` may hold a mark (spares the lock otherwise).
    mark_pending: std::sync::atomic::AtomicBool,
    /// Whether the mark that the chain is unchecked may be in the store
    /// folder (removed with the first bulletin numbered, if not before).
    unchecked_pending: std::sync::atomic::AtomicBool,
    /// Whether the store held a chain of the key, checked before, when the
    /// node started: what it numbers on from if no peer answers.
    held_checked: bool,
    /// Whether a publication may number without waiting for the check: it
    /// has passed, or a publication went ahead (the store's chain would
    /// do), or one was numbered.
    may_number: std::sync::atomic::AtomicBool,
    /// [`GossipTiming::first_sync_wait`].
    first_sync_wait: std::time::Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the store, loads the registry, and starts the writer, the indexer and the network.
    pub async fn start(settings: NodeSettings) -> Result<Node, StartError> {
        let network = NetworkId::from_genesis(settings.genesis_hash);
        let store = Store::open(&settings.data_dir, network)?;
        let registry = load_registry(&store, settings.genesis, settings.genesis_hash)?;
        let member = registry
            .current()
            .signing_key(&settings.signing_key.id())
            .filter(|(m, k)| m.is_current() && k.revoked.is_none())
            .map(|(m, _)| m.id)
            .ok_or(StartError::NotAMember(settings.signing_key.id()))?;
        let node_id = settings.node_key.public().node_id();
        let peer_id = network::peer_id_of(&node_id).ok_or(StartError::BadNodeKey(node_id))?;
        if !registry.current().allowed_nodes().any(|(_, n)| *n == node_id) {
            return Err(StartError::NodeNotListed(peer_id));
        }
        let registry = Arc::new(RwLock::new(registry));
        let events = crate::events::Events::new(EVENT_CAPACITY);
        let (shutdown, _) = broadcast::channel(1);
        let (commands, command_rx) = mpsc::channel(network::COMMAND_CAPACITY);
        let (writer, writer_rx) = mpsc::channel(WRITER_CAPACITY);
        let own_key = settings.signing_key.id();
        let first_sync_wait = settings.timing.first_sync_wait;
        let data_dir = settings.data_dir.clone();
        let chain_held = store.head(&own_key)?.highest.0 > 0;
        let mark = crate::chain_check::unused_key_mark(&settings.data_dir, &own_key);
        let marked = settings.key_past == KeyPast::Marked && mark.exists();
        let unchecked = crate::chain_check::unchecked_key_mark(&settings.data_dir, &own_key);
        let mark_failed = |path: &PathBuf| {
            let path = path.clone();
            move |e: std::io::Error| StartError::Mark {
                path,
                reason: e.to_string(),
            }
        };
        // Until the check passes, a mark says it has not: a catch-up cut
        // short by a crash must not count as a checked chain at the next
        // start. Written at every start with no chain of the key, and when a
        // chain lies beside a mark that the key is new: that mark goes before
        // the key's first bulletin is signed, so the chain came from peers or
        // a bundle, and the mark is stale (restored from a backup, say).
        if settings.key_past == KeyPast::Marked && (!chain_held || marked) {
            crate::chain_check::mark_key_unchecked(&settings.data_dir, &own_key)
                .map_err(mark_failed(&unchecked))?;
        }
        if chain_held && marked {
            crate::chain_check::remove_mark(&mark).map_err(mark_failed(&mark))?;
        }
        let unchecked_pending = unchecked.exists();
        // A chain held and checked before is asked about again at every
        // start (a store restored from a backup lacks the last bulletins),
        // but numbers on from what it holds if no peer answers.
        let checked = settings.key_past == KeyPast::New;
        let held_checked = chain_held && !unchecked_pending;
        let (chain_check, _) = watch::channel(if checked {
            ChainCheck::DONE
        } else {
            ChainCheck::default()
        });
        if unchecked_pending {
            // Removed once the check passes, however it does.
            let mut check = chain_check.subscribe();
            let path = unchecked.clone();
            tokio::spawn(async move {
                if check.wait_for(|c| c.done).await.is_ok()
                    && let Err(e) = crate::chain_check::remove_mark(&path)
                {
                    // Kept: the next start checks again, which is safe.
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove the mark that the chain is unchecked");
                }
            });
        }
        let unused_mark = (marked && !chain_held).then_some(mark);
        let (indexer, indexer_thread) = crate::indexer::spawn(Indexer {
            store: store.clone(),
            events: events.clone(),
            network: commands.clone(),
            fold_delay: settings.timing.fold_delay,
        })
        .map_err(|e| StartError::Resources(format!("store indexer thread: {e}")))?;
        let parts = NetworkParts {
            node_key: settings.node_key,
            listen: settings.listen,
            bootstrap: settings.bootstrap,
            mdns: settings.mdns,
            handshakes_per_address: settings.handshakes_per_address,
            timing: settings.timing,
            registry: Arc::clone(&registry),
            store: store.clone(),
            events: events.clone(),
            writer: writer.clone(),
            indexer: indexer.clone(),
            own_key,
            commands: commands.clone(),
            chain_check: chain_check.clone(),
        };
        let (local, network_task, validation, publisher) =
            network::spawn(parts, command_rx, shutdown.subscribe())?;
        // After the network: what the writer makes durable goes straight to
        // the tree. (Requests sent meanwhile wait in its channel.)
        let writer_thread = {
            let w = Writer {
                publisher,
                store: store.clone(),
                signing_key: settings.signing_key,
                member,
                events: events.clone(),
                network: commands.clone(),
                indexer: indexer.clone(),
            };
            match std::thread::Builder::new()
                .name("herald-store-writer".into())
                .spawn(move || w.run(writer_rx))
            {
                Ok(thread) => thread,
                Err(e) => {
                    // The network runs already: stop it and wait, so that a
                    // start tried again finds its ports and store free.
                    let _ = shutdown.send(());
                    let _ = network_task.await;
                    validation.wait().await;
                    return Err(StartError::Resources(format!("store writer thread: {e}")));
                }
            }
        };
        debug_assert_eq!(local, peer_id);
        tracing::info!(peer = %local, member = %member.fmt_short(), "node started");
        Ok(Node {
            member,
            peer_id,
            store,
            registry,
            commands,
            writer,
            events,
            shutdown,
            network_task,
            validation,
            writer_thread,
            indexer,
            indexer_thread,
            own_key,
            data_dir,
            chain_check,
            mark_pending: std::sync::atomic::AtomicBool::new(unused_mark.is_some()),
            unused_mark: tokio::sync::Mutex::new(unused_mark),
            unchecked_pending: std::sync::atomic::AtomicBool::new(unchecked_pending),
            held_checked,
            may_number: std::sync::atomic::AtomicBool::new(checked),
            first_sync_wait,
        })
    }

    /// Waits until the node may number bulletins of its key ([`KeyPast`]):
    /// until every connected peer's session has brought back all it holds
    /// of the chain. At the end of the wait, with no session under way, one
    /// peer's will do, and so will none if what the store holds will
    /// (`fallback`: the key is marked new, or its chain was checked before).
    async fn chain_checked(&self, fallback: bool) -> Result<(), PublishError> {
        if self.chain_check.borrow().done {
            return Ok(());
        }
        // Bulletins of the key in the store do not end the check: a catch-up
        // under way holds the first pages of the chain before the last.
        // With no other node in the registry there is no one to ask.
        let alone = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            !registry
                .current()
                .allowed_nodes()
                .any(|(_, n)| network::peer_id_of(n) != Some(self.peer_id))
        };
        match (alone, fallback) {
            (true, true) => return Ok(()),
            (true, false) => return Err(PublishError::NoOneToAsk),
            (false, _) => {}
        }
        let mut check = self.chain_check.subscribe();
        let wait = self.first_sync_wait;
        // The `Ref` wait_for returns is not `Send`: dropped at once.
        let waited = tokio::time::timeout(wait, check.wait_for(|c| c.done))
            .await
            .map(|done| done.map(drop));
        match waited {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => return Err(PublishError::Stopped),
            Err(_) => {}
        }
        let now = *self.chain_check.borrow();
        if now.settled() || (fallback && now.running == 0) {
            if !now.settled() {
                tracing::warn!(
                    waited_s = wait.as_secs_f64(),
                    "no peer brought back this node's chain in time: numbering on from what the store holds (if it was restored from a backup, it may lack the key's last bulletins)"
                );
            }
            return Ok(());
        }
        let status = self.network_status().await;
        Err(PublishError::ChainUnchecked {
            waited: wait,
            peers: self.connected_peers().await.len(),
            running: now.running,
            last_sync_error: status.last_sync.and_then(|s| s.error),
            held: self.store.numbered_up_to(&self.own_key)?,
        })
    }

    /// This node's member.
    pub fn member(&self) -> MemberId {
        self.member
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The store (reads are safe from any thread).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The registry.
    pub fn registry(&self) -> Arc<RwLock<Registry>> {
        Arc::clone(&self.registry)
    }

    /// The network id.
    pub fn network(&self) -> NetworkId {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).network()
    }

    /// Live events; each subscriber gets every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// How many of each counted event the node has sent since it started.
    pub fn event_counts(&self) -> &crate::events::EventCounts {
        self.events.counts()
    }

    /// [`Node::event_counts`], shared.
    pub fn shared_event_counts(&self) -> Arc<crate::events::EventCounts> {
        self.events.shared_counts()
    }

    /// Publishes a bulletin: numbers and signs it, makes it durable (the
    /// journal of own bulletins, synced), then gossips it. Returns once it is
    /// on disk. While the store holds no bulletin of the key, first checks
    /// the network for its chain ([`KeyPast`]).
    pub async fn publish(&self, draft: Draft) -> Result<SignedBulletin, PublishError> {
        self.publish_checked(draft, false).await
    }

    /// [`Node::publish`] on the operator's word that the store holds the
    /// signing key's whole chain (none, for a key that never published): the
    /// node numbers on from what it holds without checking with the network
    /// first. Nothing else changes.
    pub async fn publish_new_chain(&self, draft: Draft) -> Result<SignedBulletin, PublishError> {
        self.publish_checked(draft, true).await
    }

    async fn publish_checked(&self, draft: Draft, new_chain: bool) -> Result<SignedBulletin, PublishError> {
        // The format allows any title of 1 to 256 bytes; a blank one is a
        // mistake this node need not sign (a rule for own bulletins only:
        // others' are judged by the format).
        if !draft.title.is_empty() && draft.title.trim().is_empty() {
            return Err(PublishError::Invalid(
                "the title is blank; give a line that says what the bulletin is about".into(),
            ));
        }
        // A CSAF document is not shared more widely than its own TLP label
        // allows (own bulletins only, as above).
        crate::csaf::check_tlp(&draft.payload.bytes, draft.tlp)
            .map_err(|e| PublishError::Invalid(e.to_string()))?;
        // An audience is named by member id: one no current member has is a
        // mistake the node can see (a bulletin for nobody).
        {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            // Peers would refuse what a key the registry does not admit signs.
            let admitted = registry
                .current()
                .signing_key(&self.own_key)
                .is_some_and(|(m, k)| m.is_current() && k.revoked.is_none());
            if !admitted {
                return Err(PublishError::Invalid(format!(
                    "this node's signing key {} is not admitted by the registry it holds (revoked, its member removed, or the change that added it gave way to another branch: the log says REGISTRY BRANCH SWITCHED); nothing was published. Add a signing key (herald registry propose --new-signing-key) and point [keys] signing to it",
                    self.own_key
                )));
            }
            if let Some(id) = draft
                .audience
                .iter()
                .find(|id| !registry.current().member(id).is_some_and(|m| m.is_current()))
            {
                return Err(PublishError::Invalid(format!(
                    "audience {id}: no current member has this id (`herald registry show` lists them; a member admitted a moment ago counts once this node has the registry update)"
                )));
            }
        }
        for (what, id) in [
            ("supersedes", draft.supersedes),
            (
                "withdraws",
                match &draft.kind {
                    Kind::Withdrawal { of, .. } => Some(*of),
                    _ => None,
                },
            ),
        ] {
            if let Some(id) = id
                && self.store.signer_of(&id)? != Some(self.member)
            {
                return Err(PublishError::Invalid(format!(
                    "{what} {id}: not a bulletin of this member held here"
                )));
            }
        }
        if !new_chain
            && !self.may_number.load(std::sync::atomic::Ordering::Acquire)
            && !self.chain_check.borrow().done
        {
            let marked = self.mark_pending.load(std::sync::atomic::Ordering::Acquire)
                && self.unused_mark.lock().await.is_some();
            self.chain_checked(marked || self.held_checked).await?;
            self.may_number.store(true, std::sync::atomic::Ordering::Release);
        }
        // Whatever the check said, numbers a peer has listed and not yet
        // brought back are not signed again: the store refuses them as it
        // numbers (`StoreError::ChainClaimed`). The operator's word clears
        // the claims.
        if new_chain {
            self.store.clear_chain_claims(&self.own_key, None)?;
        }
        // A first publication removes the mark before anything is signed (if
        // it cannot, nothing is), and writes it back if the writer refuses
        // the draft before signing (it breaks a rule). Not after a refusal
        // for a peer's claim: the key has a chain. The lock is held until
        // then, so that no other publication goes past the mark meanwhile.
        use std::sync::atomic::Ordering;
        let (removed, mark) = if self.mark_pending.load(Ordering::Acquire) {
            let mut mark = self.unused_mark.lock().await;
            let removed = match mark.take() {
                Some(path) => match crate::chain_check::remove_mark(&path) {
                    Ok(()) => Some(path),
                    Err(e) => {
                        let reason = e.to_string();
                        *mark = Some(path.clone());
                        return Err(PublishError::Mark { path, reason });
                    }
                },
                None => None,
            };
            self.mark_pending.store(false, Ordering::Release);
            (removed.clone(), removed.is_some().then_some(mark))
        } else {
            (None, None)
        };
        // The writer fills in the signer, the number and the link.
        let body = draft.into_body(
            self.network(),
            herald_protocol::KeyId::from_bytes([0; 32]),
            Seq(1),
            None,
        );
        let (reply, response) = oneshot::channel();
        self.writer
            .send(WriteRequest::Publish {
                draft: Box::new(body),
                reply,
            })
            .await
            .map_err(|_| PublishError::Stopped)?;
        let result = match response.await {
            Ok(Ok(bulletin)) => {
                // Numbered on from what the store held: nothing more to wait
                // for (after `--new-chain`, the operator's word), at the next
                // start either. (Whether peers have checked the chain is still
                // shown: `own_chain`.)
                self.may_number.store(true, Ordering::Release);
                if self.unchecked_pending.swap(false, Ordering::AcqRel) {
                    let unchecked = crate::chain_check::unchecked_key_mark(&self.data_dir, &self.own_key);
                    if let Err(e) = crate::chain_check::remove_mark(&unchecked) {
                        tracing::warn!(path = %unchecked.display(), error = %e, "cannot remove the mark that the chain is unchecked");
                    }
                }
                return Ok(bulletin);
            }
            Ok(Err(StoreError::Sign(e))) => {
                // Refused before signing: the key is as new as it was.
                if let (Some(path), Some(mut mark)) = (removed, mark)
                    && crate::chain_check::mark_key_unused(&self.data_dir, &self.own_key).is_ok()
                {
                    *mark = Some(path);
                    self.mark_pending.store(true, Ordering::Release);
                }
                return Err(PublishError::Invalid(match e {
                    herald_keys::SignError::Invalid(herald_protocol::DecodeError::TooLarge { len, max }) => {
                        format!(
                            "the bulletin would be {len} bytes, and one holds at most {max} in all (content, title and the rest): shorten its content, or publish a summary with a link to the full document"
                        )
                    }
                    other => other.to_string(),
                }));
            }
            Ok(Err(StoreError::ChainClaimed { held, claimed })) => {
                PublishError::ChainBehind { held, claimed }
            }
            Ok(Err(e)) => PublishError::Store(e),
            Err(_) => PublishError::Stopped,
        };
        Err(result)
    }

    /// Folds what is staged into the chains and indexes now, and waits for it.
    async fn fold_now(&self) {
        let indexer = self.indexer.clone();
        let _ = tokio::task::spawn_blocking(move || crate::indexer::fold_now(&indexer)).await;
    }

    /// Where the node's own chain stands: the number it would go on from,
    /// whether it has checked the chain with its peers since it started, and
    /// peers' claims not yet brought back.
    pub fn own_chain(&self) -> Result<crate::view::OwnChainView, StoreError> {
        let claims = self
            .store
            .chain_claims(&self.own_key)?
            .into_iter()
            .map(|(peer, up_to)| crate::view::ChainClaimView {
                peer: PeerId::from_bytes(&peer).map_or_else(|_| hex::encode(&peer), |p| p.to_string()),
                up_to: up_to.0,
            })
            .collect();
        Ok(crate::view::OwnChainView {
            numbered_up_to: self.store.numbered_up_to(&self.own_key)?.0,
            checked: self.chain_check.borrow().done,
            claims,
        })
    }

    /// Dials an address (with `/p2p/<peer id>` for a known member).
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.commands.send(Command::Dial(addr)).await;
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.ask(Command::ConnectedPeers).await.unwrap_or_default()
    }

    /// What the network reports: peers, pending gossip, last sync, how far behind.
    pub async fn network_status(&self) -> crate::network::NetworkStatus {
        self.try_network_status().await.unwrap_or_default()
    }

    /// [`Node::network_status`], or `None` once the network has stopped.
    pub async fn try_network_status(&self) -> Option<crate::network::NetworkStatus> {
        self.ask(Command::Status).await
    }

    /// Applies a registry update approved by the members (the next version),
    /// saves it, and spreads it by gossip (peers that miss it get it by sync).
    pub async fn submit_registry_update(
        &self,
        update: SignedRegistryUpdate,
    ) -> Result<herald_protocol::RegistryVersion, PublishError> {
        let (registry, store, commands) = (
            Arc::clone(&self.registry),
            self.store.clone(),
            self.commands.clone(),
        );
        // In a task of its own: once applied, the update is spread and the
        // peers allowed updated even if the caller (an API client that went
        // away) stops waiting.
        let applying = tokio::spawn(async move {
            // Off the async workers: it holds the registry's write lock
            // across a disk sync.
            let bytes = update.to_bytes();
            let held = update.body().version;
            let outcome = tokio::task::spawn_blocking(move || {
                crate::validate::apply_registry_update(&registry, &store, update)
            })
            .await
            .map_err(|_| PublishError::Stopped)??;
            match outcome {
                Ok(
                    herald_keys::Applied::Advanced(version)
                    | herald_keys::Applied::Switched { to: version, .. },
                ) => {
                    let _ = commands.send(Command::RegistryChanged).await;
                    let _ = commands.send(Command::GossipRegistry(bytes)).await;
                    Ok(version)
                }
                Ok(herald_keys::Applied::AlreadyHeld) => Ok(held),
                Err(e) => Err(PublishError::Invalid(e.to_string())),
            }
        });
        applying.await.map_err(|_| PublishError::Stopped)?
    }

    /// Imports a bundle file: checked whole first, then every item verified
    /// like network input and stored through the writer.
    pub async fn import_bundle(
        &self,
        path: PathBuf,
    ) -> Result<crate::bundle::ImportReport, crate::bundle::BundleError> {
        let store = self.store.clone();
        let registry = Arc::clone(&self.registry);
        let writer = self.writer.clone();
        let report = tokio::task::spawn_blocking(move || {
            let mut sink =
                |items: Vec<(SignedBulletin, MemberId)>| -> Result<Vec<crate::store::Stored>, StoreError> {
                    let (reply, stored) = oneshot::channel();
                    writer
                        .blocking_send(WriteRequest::Import {
                            items,
                            origin: crate::events::Origin::Bundle,
                            reply,
                        })
                        .map_err(|_| StoreError::Chain("the node is stopping".into()))?;
                    stored
                        .blocking_recv()
                        .map_err(|_| StoreError::Chain("the node is stopping".into()))?
                };
            crate::bundle::import(&path, &store, &registry, &mut sink, |done, total| {
                tracing::info!(done, total, "importing");
            })
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("import task failed: {e}")))?;
        // Registry versions taken in count even if the import failed later
        // (the network reports only a registry that moved).
        let _ = self.commands.send(Command::RegistryChanged).await;
        report
    }

    /// Exports the bulletins matching `filter`, with the registry history, to a
    /// bundle file; what is staged is folded first, so the bundle holds every
    /// bulletin the node holds.
    pub async fn export_bundle(
        &self,
        path: PathBuf,
        filter: crate::bundle::ExportFilter,
    ) -> Result<crate::bundle::ExportReport, crate::bundle::BundleError> {
        self.export_bundle_to(path, crate::bundle::Replace::Yes, filter)
            .await
    }

    /// [`Node::export_bundle`], replacing a file at `path` only if `replace`
    /// says so.
    pub async fn export_bundle_to(
        &self,
        path: PathBuf,
        replace: crate::bundle::Replace,
        filter: crate::bundle::ExportFilter,
    ) -> Result<crate::bundle::ExportReport, crate::bundle::BundleError> {
        // What was received in the last second is still staged: fold it
        // first, so that the bundle holds everything `list` shows.
        self.fold_now().await;
        let store = self.store.clone();
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || {
            // The registry as it is now, after the fold: it verifies every
            // bulletin the fold brought.
            let registry = registry.read().unwrap_or_else(|e| e.into_inner()).clone();
            crate::bundle::export_to(&path, replace, &store, &registry, &filter, |done, total| {
                tracing::info!(done, total, "exporting");
            })
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("export task failed: {e}")))?
    }

    /// Starts a catch-up session with a connected peer.
    pub async fn sync_with(&self, peer: PeerId) {
        let _ = self.commands.send(Command::SyncWith(peer)).await;
    }

    /// Test hook: answer the next sync requests with these responses.
    #[cfg(feature = "test-hooks")]
    pub async fn hostile_sync_answers(&self, answers: Vec<herald_protocol::sync::SyncResponse>) {
        let _ = self.commands.send(Command::HostileSyncAnswers(answers)).await;
    }

    /// Test hook: sends one sync request to a connected peer and returns its
    /// answer, or why there is none.
    #[cfg(feature = "test-hooks")]
    pub async fn sync_request(
        &self,
        peer: PeerId,
        request: herald_protocol::sync::SyncRequest,
    ) -> Result<herald_protocol::sync::SyncResponse, String> {
        self.ask(|reply| Command::SyncRequest { peer, request, reply })
            .await
            .unwrap_or_else(|| Err("the node stopped".into()))
    }

    /// The node's score for a connected peer: gossipsub's (registry topic)
    /// less 100 for each message it sent that the node rejected (bulletins,
    /// tree frames, registry updates, sync pages), counted until a ban ends.
    pub async fn peer_score(&self, peer: PeerId) -> Option<f64> {
        self.ask(|reply| Command::PeerScore(peer, reply)).await.flatten()
    }

    /// Test hook: gossips raw bytes without checking or storing them.
    #[cfg(feature = "test-hooks")]
    pub async fn inject_unchecked(&self, bytes: Vec<u8>) {
        let _ = self.commands.send(Command::InjectUnchecked(bytes)).await;
    }

    /// Test hook: writes raw bytes to a connected peer as a sync request (the
    /// frame's length prefix included, or not), on a stream of the sync
    /// protocol (docs/PROTOCOL.md, section 12.1), and returns the raw bytes
    /// of its answer (empty if it wrote none).
    #[cfg(feature = "test-hooks")]
    pub async fn raw_sync_request(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        self.ask(|reply| Command::RawSyncRequest { peer, bytes, reply })
            .await
            .unwrap_or_else(|| Err("the node stopped".into()))
    }

    /// Test hook: writes raw bytes to every linked peer, on a stream of their
    /// own, as if they were tree frames (docs/PROTOCOL.md, section 11B).
    #[cfg(feature = "test-hooks")]
    pub async fn inject_frames(&self, bytes: Vec<u8>) {
        let _ = self.commands.send(Command::InjectFrames(bytes)).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Stops the network and waits for its running checks, lets the writer finish
    /// what it was given and the indexer fold what is staged, and releases the
    /// store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.network_task.await;
        // The loop is gone (and with it the tree, whose tasks end); the checks
        // still running finish (their verdicts go nowhere) and the drain then
        // closes the slots, so nothing is staged after the indexer's last fold.
        self.validation.wait().await;
        drop(self.commands);
        drop(self.writer);
        let writer_thread = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        let (indexer, indexer_thread) = (self.indexer, self.indexer_thread);
        let _ = tokio::task::spawn_blocking(move || {
            // Waits for room if the indexer's queue is full; it stops anyway
            // once every sender is gone.
            let _ = indexer.send(Signal::Stop);
            drop(indexer);
            indexer_thread.join()
        })
        .await;
        // Everything journaled is folded and flushed now: start the journal
        // afresh, so that the next start has nothing to replay.
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        } else if let Err(e) = self.store.settle_journal_now() {
            // The next start replays it: nothing is lost.
            tracing::error!(error = %e, "cannot empty the journal of own bulletins on stop");
        }
        tracing::info!("node stopped");
    }
}

/// What [`stored_registry`] does with the fork evidence the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedForks {
    /// Judges each by the branch rule, which may replace stored versions,
    /// and drops from the store what no longer fits the history (versions
    /// after a gap, evidence of a version no longer held): the node's start,
    /// and commands that write to a stopped node's store (what they write
    /// then follows the branch the node keeps).
    Settle,
    /// Reports each and writes nothing to the store, whatever it holds
    /// (what no longer fits is left, and not taken in): commands that only
    /// read a stopped node's store, which may be a copy kept as evidence.
    ReadOnly,
}

/// The registry from the store's history, or from genesis on first start.
fn load_registry(
    store: &Store,
    genesis: SignedRegistryUpdate,
    genesis_hash: RegistryHash,
) -> Result<Registry, StartError> {
    if let Some(registry) = stored_registry(store, genesis_hash, SavedForks::Settle)? {
        return Ok(registry);
    }
    let registry = Registry::from_genesis(genesis.clone(), genesis_hash)?;
    store.save_registry_update(&genesis)?;
    store.flush()?;
    Ok(registry)
}

/// The registry the store's history builds, or `None` if it holds none yet.
/// The genesis must be the one `genesis_hash` names. A later version that
/// does not chain on the one before (an earlier build could leave a gap and
/// have it filled by another branch's update for that version) is dropped
/// from the store (left there with [`SavedForks::ReadOnly`]), with what
/// comes after it, with a warning: sync and gossip bring the network's
/// versions again. A version refused for any
/// other reason (a rule this build has that the one which stored it did not)
/// fails the start and leaves the store as it is: dropping it would take the
/// registry back, revocations and removals with it.
pub fn stored_registry(
    store: &Store,
    genesis_hash: RegistryHash,
    saved_forks: SavedForks,
) -> Result<Option<Registry>, StartError> {
    let mut history = store.registry_history()?.into_iter();
    let Some(genesis) = history.next() else {
        return Ok(None);
    };
    let mut registry = Registry::from_genesis(genesis, genesis_hash)?;
    let writes = saved_forks != SavedForks::ReadOnly;
    for update in history {
        let version = update.body().version;
        match registry.apply(update) {
            Ok(_) => {}
            Err(e @ RegistryError::WrongPrevious { .. }) if writes => {
                tracing::warn!(
                    %version,
                    reason = %e,
                    "a stored registry version does not follow the one before: it and every later one are dropped (sync brings the network's again)"
                );
                break;
            }
            Err(e @ RegistryError::WrongPrevious { .. }) => {
                tracing::warn!(
                    %version,
                    reason = %e,
                    "a stored registry version does not follow the one before: it and every later one are not taken (the node drops them when it starts)"
                );
                break;
            }
            Err(e) => return Err(StartError::StoredRegistry { version, reason: e }),
        }
    }
    // What follows the last version taken (after a gap, or another branch).
    if writes {
        store.drop_registry_after(registry.version())?;
    }
    // The forks found before, reported again; at the node's start by the
    // branch rule as any update (one kept by a build before the rule may
    // settle its split, and so may one whose switch could not be saved).
    // Those that no longer are forks of the history held (a version dropped
    // above) are forgotten (but with `SavedForks::ReadOnly`).
    let registry = RwLock::new(registry);
    for theirs in store.registry_forks()? {
        let version = theirs.body().version;
        let held = registry.read().unwrap_or_else(|e| e.into_inner()).version();
        let outcome = match saved_forks {
            _ if version > held => Ok(herald_keys::Applied::AlreadyHeld),
            SavedForks::Settle => crate::validate::apply_registry_update(&registry, store, theirs.clone())?,
            SavedForks::ReadOnly => {
                let mut registry = registry.write().unwrap_or_else(|e| e.into_inner());
                if registry.may_give_way_to(&theirs) {
                    tracing::warn!(
                        %version,
                        hash = %theirs.hash(),
                        "saved fork evidence holds a change that needs the threshold: the node may take that branch at its next start (the branch rule); start it before building on this history"
                    );
                }
                registry.apply(theirs.clone())
            }
        };
        match outcome {
            Err(RegistryError::Fork { .. }) => {}
            Ok(herald_keys::Applied::Switched { .. }) => {}
            _ if writes => store.drop_registry_fork(&theirs)?,
            _ => {}
        }
    }
    // Forks found contested (the other branch holds a change that needs the
    // threshold too) stay so; a mark for a version where no fork is held any
    // more, or where this node's branch holds no such change (its history
    // was cut above), is forgotten.
    {
        let mut registry = registry.write().unwrap_or_else(|e| e.into_inner());
        for version in store.registry_contested()? {
            if registry.forks().iter().any(|f| f.version == version)
                && registry.holds_threshold_change_from(version)
            {
                registry.mark_contested(version);
            } else if writes {
                store.drop_registry_contested(version)?;
            }
        }
    }
    Ok(Some(registry.into_inner().unwrap_or_else(|e| e.into_inner())))
}
