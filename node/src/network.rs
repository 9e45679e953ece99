//! The libp2p side of a node: the behaviour (member-only connections, gossip
//! with application validation, discovery), and the event loop that owns the
//! swarm. The rest of the node talks to it through `Command`s and hears from
//! it through [`NodeEvent`]s; it never sees libp2p's own event types.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use herald_keys::{Registry, SecretKey};
use herald_protocol::{MAX_BULLETIN_BYTES, NetworkId, NodeId};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, gossipsub, identify,
    identity, kad, mdns, noise, ping, request_response, tcp, yamux,
};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::chain_check::ChainCheck;
use crate::events::{NodeEvent, Origin};
use crate::inbound_limit::InboundLimit;
pub use crate::inbound_limit::{DEFAULT_HANDSHAKES_PER_ADDRESS, MAX_PENDING_INCOMING};
use crate::peer_gate::{PeerGate, TARGET_PEERS};
use crate::push::{Push, PushEvent};
use crate::store::Store;
use crate::sync::{SessionContext, SyncCodec, SyncReport, run_session};
use crate::validate::Verdict;
use crate::validators::{Carrier, Job, Validated, Validators};
use crate::writer::WriteRequest;

/// Commands queued to the event loop.
pub(crate) const COMMAND_CAPACITY: usize = 4096;
/// Validation results queued back to the event loop.
const VALIDATED_CAPACITY: usize = 1024;
/// Invalid messages after which a peer is disconnected.
const MAX_INVALID_BEFORE_BAN: u32 = 3;
/// Longest a connection's handshakes may take ([`GossipTiming::handshake_timeout`]):
/// ample for a noise handshake over a slow satellite link, short enough that
/// connections which send nothing do not hold their place for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a disconnected offender stays refused.
const BAN_DURATION: Duration = Duration::from_secs(600);
/// How long a peer's offences are remembered after its last one: a peer
/// that sends something invalid now and then is not banned for it days on.
const OFFENCE_MEMORY: Duration = Duration::from_secs(600);
/// How often bulletins a peer sends that this node's registry does not
/// admit start a sync with it, at most.
const NOT_ADMITTED_SYNC_EVERY: Duration = Duration::from_secs(30);
/// Connections a node opens itself, at most: a bound on what configured
/// bootstrap peers and discovery may open together (discovery alone stops at
/// [`TARGET_PEERS`]); others still dial in.
const MAX_OUTGOING: u32 = 8;
/// How often a node short of peers looks for more.
const TOP_UP_EVERY: Duration = Duration::from_secs(30);
/// Tree message limit: one whole bulletin, and headroom so that an oversize
/// one reaches the check and is refused with its reason.
const MAX_TREE_MESSAGE: usize = MAX_BULLETIN_BYTES + 16 * 1024;
/// Gossipsub frame limit: gossipsub carries registry updates (bulletins go
/// by the tree), so one whole update, plus protobuf framing headroom.
const MAX_TRANSMIT_SIZE: usize = herald_protocol::MAX_REGISTRY_UPDATE_BYTES + 16 * 1024;
/// What a rejected message takes off its sender's score.
const REJECTION_PENALTY: f64 = 100.0;

/// The stream protocol of the tree dissemination of bulletins.
pub fn push_protocol(network: NetworkId) -> Result<StreamProtocol, String> {
    StreamProtocol::try_from_owned(format!("/herald/{}/push/1", network.fmt_short()))
        .map_err(|e| e.to_string())
}

/// Gossip timing. Production uses the defaults; tests and the devnet use
/// shorter heartbeats so that meshes form quickly.
#[derive(Debug, Clone, Copy)]
pub struct GossipTiming {
    /// Delay before the first heartbeat.
    pub heartbeat_initial_delay: Duration,
    /// Interval between heartbeats.
    pub heartbeat_interval: Duration,
    /// Interval between catch-up syncs with a random connected peer.
    pub sync_interval: Duration,
    /// How long the first publication of a node that holds no bulletin of its
    /// signing key waits for a sync session ([`crate::KeyPast`]).
    pub first_sync_wait: Duration,
    /// The tree dissemination's settings.
    pub tree: crate::tree::TreeConfig,
    /// Longest a received bulletin stays staged before it is folded into the
    /// chains and indexes ([`crate::store::FOLD_DELAY`]; tests lengthen it to
    /// hold bulletins staged).
    pub fold_delay: Duration,
    /// Longest a connection may take from its first byte to the end of its
    /// noise and yamux handshakes, in both directions; one that takes longer
    /// is dropped, freeing its place ([`crate::inbound_limit`]).
    pub handshake_timeout: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self {
            heartbeat_initial_delay: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            sync_interval: crate::sync::DEFAULT_SYNC_INTERVAL,
            first_sync_wait: Duration::from_secs(10),
            tree: crate::tree::TreeConfig::default(),
            fold_delay: crate::store::FOLD_DELAY,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl GossipTiming {
    /// Short timings for local networks on one machine.
    pub fn fast() -> Self {
        Self {
            heartbeat_initial_delay: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(250),
            sync_interval: Duration::from_secs(5),
            first_sync_wait: Duration::from_secs(2),
            tree: crate::tree::TreeConfig::default(),
            fold_delay: crate::store::FOLD_DELAY,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// The behaviours a node runs, in the order connections meet them: the allow
/// list gates first.
#[derive(NetworkBehaviour)]
pub(crate) struct NodeBehaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    inbound: InboundLimit,
    gate: PeerGate,
    gossipsub: gossipsub::Behaviour,
    /// Streams for the tree dissemination of bulletins (`push`).
    push: libp2p_stream::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The peer id at the end of an address (`/p2p/<id>`), if it names one.
fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// A node id from the registry as a libp2p peer id.
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(identity::PublicKey::from(key).to_peer_id())
}

/// The node id of a libp2p peer id, if it names an Ed25519 key (as every
/// member's node's does: its key is inlined in the id).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let key = identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    Some(NodeId::from_bytes(key.try_into_ed25519().ok()?.to_bytes()))
}

/// The current member whose nodes include `peer`, if any.
fn member_of_node(registry: &RwLock<Registry>, peer: &PeerId) -> Option<herald_protocol::MemberId> {
    let node = node_id_of(peer)?;
    let registry = registry.read().unwrap_or_else(|e| e.into_inner());
    registry
        .current()
        .allowed_nodes()
        .find(|(_, n)| **n == node)
        .map(|(m, _)| m.id)
}

/// The libp2p identity for a node key.
pub fn keypair_of(key: &SecretKey) -> Result<identity::Keypair, identity::DecodingError> {
    let mut seed = *key.to_seed();
    identity::Keypair::ed25519_from_bytes(&mut seed)
}

/// The gossip topic for registry updates of a network.
pub fn registry_topic(network: NetworkId) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("herald/{network}/registry/v1"))
}

/// The gossip topic for bulletins of a network.
pub fn bulletin_topic(network: NetworkId) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("herald/{network}/bulletins/v1"))
}

fn build_gossipsub(
    timing: GossipTiming,
    topic: &gossipsub::IdentTopic,
) -> Result<gossipsub::Behaviour, String> {
    let config = gossipsub::ConfigBuilder::default()
        // The bulletin's own signature authenticates it; libp2p's per-message
        // signature would be a second, slower check of nothing we rely on.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()))
        .max_transmit_size(MAX_TRANSMIT_SIZE)
        .duplicate_cache_time(Duration::from_secs(120))
        .heartbeat_initial_delay(timing.heartbeat_initial_delay)
        .heartbeat_interval(timing.heartbeat_interval)
        // Per-peer send queue: bounded memory even with the largest bulletins.
        .connection_handler_queue_len(512)
        .build()
        .map_err(|e| e.to_string())?;
    let mut gs = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)?;
    let mut params = gossipsub::PeerScoreParams {
        // Loopback tests and NATed LANs put many members behind one address.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    params.topics.insert(topic.hash(), topic_score_params());
    params
        .topics
        .insert(registry_topic_of(topic).hash(), topic_score_params());
    gs.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
    Ok(gs)
}

/// The registry topic that goes with a bulletin topic.
fn registry_topic_of(bulletins: &gossipsub::IdentTopic) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(bulletins.to_string().replace("/bulletins/v1", "/registry/v1"))
}

fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        // Quiet topics are normal here: do not punish honest peers for silence.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // No reward for time in the mesh (the default earns up to +1800), and a
        // small cap on first deliveries: good behaviour earns at most +10, so
        // one invalid message always takes a peer below zero.
        time_in_mesh_weight: 0.0,
        first_message_deliveries_cap: 20.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    }
}

/// Everything needed to start the network.
pub(crate) struct NetworkParts {
    pub(crate) node_key: SecretKey,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) mdns: bool,
    pub(crate) handshakes_per_address: usize,
    pub(crate) timing: GossipTiming,
    pub(crate) registry: Arc<RwLock<Registry>>,
    pub(crate) store: Store,
    pub(crate) events: crate::events::Events,
    pub(crate) writer: mpsc::Sender<WriteRequest>,
    /// Told when bulletins are staged, to fold them.
    pub(crate) indexer: std::sync::mpsc::SyncSender<crate::indexer::Signal>,
    /// The node's own signing key: its bulletins coming back by gossip go to
    /// the writer, which numbers the node's chain, rather than to staging.
    pub(crate) own_key: herald_protocol::KeyId,
    /// A sender to this network's own command queue, for sync sessions.
    pub(crate) commands: mpsc::Sender<Command>,
    /// Told how far sync sessions have checked for the node's own chain.
    pub(crate) chain_check: watch::Sender<ChainCheck>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The node key is not usable by libp2p.
    #[error("node key: {0}")]
    Key(String),
    /// The transport or a behaviour could not be built.
    #[error("cannot build the network: {0}")]
    Build(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason} (is another node using the port?)")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// Builds the swarm.
fn build_swarm(parts: &NetworkParts, network: NetworkId) -> Result<Swarm<NodeBehaviour>, NetworkError> {
    let keypair = keypair_of(&parts.node_key).map_err(|e| NetworkError::Key(e.to_string()))?;
    let local = keypair.public().to_peer_id();
    let allowed: Vec<PeerId> = {
        let registry = parts.registry.read().unwrap_or_else(|e| e.into_inner());
        registry
            .current()
            .allowed_nodes()
            .filter_map(|(_, n)| peer_id_of(n))
            .collect()
    };
    let timing = parts.timing;
    let mdns_on = parts.mdns;
    let handshakes_per_address = parts.handshakes_per_address;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Build(e.to_string()))?
        .with_quic()
        .with_dns()
        .map_err(|e| NetworkError::Build(e.to_string()))?
        .with_behaviour(|key| {
            let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
            for peer in &allowed {
                allow.allow_peer(*peer);
            }
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(2))
                    .with_max_established_outgoing(Some(MAX_OUTGOING))
                    .with_max_established_incoming(Some(128))
                    .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
            );
            let topic = bulletin_topic(network);
            let mut gossipsub = build_gossipsub(timing, &topic)?;
            gossipsub
                .subscribe(&registry_topic(network))
                .map_err(|e| e.to_string())?;
            let protocol =
                StreamProtocol::try_from_owned(format!("/herald/{}/kad/1.0.0", network.fmt_short()))
                    .map_err(|e| e.to_string())?;
            let mut kad = kad::Behaviour::with_config(
                local,
                kad::store::MemoryStore::new(local),
                kad::Config::new(protocol),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let identify = identify::Behaviour::new(identify::Config::new(
                format!("/herald/{}/1.0.0", network.fmt_short()),
                key.public(),
            ));
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local).map_err(|e| e.to_string())?)
            } else {
                None
            };
            let sync = request_response::Behaviour::with_codec(
                SyncCodec,
                [(
                    crate::sync::protocol_name(&network)?,
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(32),
            );
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(NodeBehaviour {
                allow,
                limits,
                inbound: InboundLimit::new(handshakes_per_address),
                gate: PeerGate::new(TARGET_PEERS),
                gossipsub,
                push: libp2p_stream::Behaviour::new(),
                sync,
                kad,
                identify,
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|e| NetworkError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(timing.handshake_timeout)
        .build();
    Ok(swarm)
}

/// A command for the event loop.
pub(crate) enum Command {
    /// A sync session holds all `peer` has of the node's own chain.
    OwnChainFetched {
        /// The peer.
        peer: PeerId,
    },
    /// Gossip a registry update this node has applied and saved.
    GossipRegistry(Vec<u8>),
    /// Dial an address.
    Dial(Multiaddr),
    /// The addresses the node listens on.
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    /// Peers with an open connection.
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    /// The node's score of a peer ([`crate::Node::peer_score`]).
    PeerScore(PeerId, oneshot::Sender<Option<f64>>),
    /// Send a sync request; the answer (or why none came) goes to `reply`.
    SyncRequest {
        peer: PeerId,
        request: herald_protocol::sync::SyncRequest,
        reply: oneshot::Sender<Result<herald_protocol::sync::SyncResponse, String>>,
    },
    /// Start a catch-up session with a peer (a gap was seen in its gossip).
    SyncWith(PeerId),
    /// A session ended.
    SyncDone {
        peer: PeerId,
        result: Result<SyncReport, crate::sync::SyncError>,
    },
    /// The registry changed: recompute who may connect.
    RegistryChanged,
    /// What the network knows for the status page.
    Status(oneshot::Sender<NetworkStatus>),
    /// Test hook: gossip bytes without storing or checking them, as a hostile
    /// member would.
    #[cfg(feature = "test-hooks")]
    InjectUnchecked(Vec<u8>),
    /// Test hook: write raw bytes to every linked peer as tree frames.
    #[cfg(feature = "test-hooks")]
    InjectFrames(Vec<u8>),
    /// Test hook: answer sync requests with these raw responses, in order, as a
    /// hostile member would.
    #[cfg(feature = "test-hooks")]
    HostileSyncAnswers(Vec<herald_protocol::sync::SyncResponse>),
    /// Test hook: send raw bytes to a peer as a sync request, on a stream
    /// of the sync protocol.
    #[cfg(feature = "test-hooks")]
    RawSyncRequest {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

/// What the network reports for the node's status.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkStatus {
    /// Connected peers.
    pub connected: Vec<String>,
    /// Own bulletins stored but not yet sent (no peer linked yet, or every
    /// link's queue more than half full).
    pub pending_gossip: usize,
    /// Catch-up sessions running.
    pub syncing: usize,
    /// The last finished session: peer, when (ms since the epoch), new bulletins.
    pub last_sync: Option<LastSync>,
    /// Bulletins the last session's peer held that this node lacked when it began.
    pub behind: u64,
    /// The tree dissemination of bulletins.
    pub tree: TreeStatus,
}

/// How the node's links carry bulletins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeStatus {
    /// Peers the node pushes bulletins to in full.
    pub pushes_to: usize,
    /// Peers the node tells of bulletin ids only (they pruned it).
    pub announces_to: usize,
    /// Peers that push bulletins to the node in full.
    pub receives_from: usize,
    /// Bulletins received in full more than once, since start.
    pub duplicates: u64,
    /// Bulletin ids asked for by graft since start (the tree mending).
    pub grafted: u64,
    /// Frames dropped since start because a peer's queue was full (a slow or
    /// stalled peer; it gets what it missed by sync).
    pub frames_dropped: u64,
    /// Since start: announced ids not followed, held bulletins not sent for
    /// grafts, and `IHave` and `Graft` frames skipped, by the bounds a peer
    /// may use (PROTOCOL.md, 11B). Growing fast, it points at a member's node
    /// that misbehaves.
    pub held_back: u64,
    /// Of `held_back`: announced ids not followed (beyond the sender's share,
    /// or the node's bound on ids awaited).
    #[serde(default)]
    pub announcements_ignored: u64,
    /// Of `held_back`: held bulletins not sent in answer to grafts (beyond the
    /// asker's allowance).
    #[serde(default)]
    pub graft_answers_refused: u64,
    /// Of `held_back`: `IHave` and `Graft` frames skipped (beyond their
    /// stream's budget).
    #[serde(default)]
    pub control_frames_skipped: u64,
}

/// The last finished catch-up session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastSync {
    /// The peer.
    pub peer: String,
    /// When it finished, ms since the epoch.
    pub at_ms: u64,
    /// New bulletins it brought.
    pub new_bulletins: u64,
    /// Whether it failed, and why.
    pub error: Option<String>,
}

/// The running network: its peer id, the event loop's task, the drain of its
/// checks, and the handle through which the store's writer sends the node's
/// own bulletins (straight to the tree, with no hop through the loop).
pub(crate) type Spawned = (
    PeerId,
    tokio::task::JoinHandle<()>,
    crate::validators::Drain,
    crate::push::Publisher,
);

/// Starts the network: binds the listen addresses, dials bootstrap peers and
/// spawns the event loop, which serves `commands` until shutdown.
pub(crate) fn spawn(
    parts: NetworkParts,
    commands: mpsc::Receiver<Command>,
    mut shutdown: broadcast::Receiver<()>,
) -> Result<Spawned, NetworkError> {
    let network = parts.registry.read().unwrap_or_else(|e| e.into_inner()).network();
    let mut swarm = build_swarm(&parts, network)?;
    for addr in &parts.listen {
        swarm.listen_on(addr.clone()).map_err(|e| NetworkError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    let local = *swarm.local_peer_id();
    // Bootstrap peers whose first dial has neither connected nor failed: the
    // check for the node's own chain waits for them too.
    let mut bootstrap_pending = HashSet::new();
    for addr in &parts.bootstrap {
        if let Some(peer) = peer_in(addr) {
            swarm.behaviour_mut().gate.want(peer);
        }
        match swarm.dial(addr.clone()) {
            Ok(()) => bootstrap_pending.extend(peer_in(addr).filter(|p| *p != local)),
            Err(e) => tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer"),
        }
    }
    let (validated_tx, validated) = mpsc::channel(VALIDATED_CAPACITY);
    let (validators, validation) = crate::validators::new(crate::validators::Context {
        registry: Arc::clone(&parts.registry),
        store: parts.store.clone(),
        own_key: parts.own_key,
        verdicts: validated_tx,
    });
    // Bulletins from the tree go from the task that read them to a check.
    let sink: crate::push::Sink = {
        let validators = validators.clone();
        Arc::new(move |source, id, data: Arc<[u8]>, forwarder| {
            let job = Job {
                source,
                data,
                carrier: Carrier::Push(id, forwarder),
            };
            validators.submit(job).is_ok()
        })
    };
    let (push, pushed) = Push::start(
        swarm.behaviour().push.new_control(),
        push_protocol(network).map_err(NetworkError::Build)?,
        parts.timing.tree,
        MAX_TREE_MESSAGE,
        sink,
    )
    .map_err(NetworkError::Build)?;
    let publisher = push.publisher();
    let session = SessionContext {
        commands: parts.commands.clone(),
        writer: parts.writer.clone(),
        store: parts.store.clone(),
        registry: Arc::clone(&parts.registry),
        own_key: parts.own_key,
        fork_searches: Arc::default(),
    };
    let (served_tx, served) = mpsc::channel(VALIDATED_CAPACITY);
    let sync_interval = parts.timing.sync_interval;
    let registry_reported = {
        let registry = parts.registry.read().unwrap_or_else(|e| e.into_inner());
        (registry.hash(), registry.switches())
    };
    let event_loop = EventLoop {
        swarm,
        session,
        served,
        served_tx,
        serving: Serving::new(),
        sync_interval,
        sync_replies: HashMap::new(),
        syncing: HashSet::new(),
        resync: HashSet::new(),
        last_sync: None,
        behind: 0,
        #[cfg(feature = "test-hooks")]
        hostile_answers: std::collections::VecDeque::new(),
        push,
        pushed,
        registry_topic: registry_topic(network),
        commands,
        validated,
        validators,
        ignored_busy: 0,
        registry_reported,
        registry: parts.registry,
        store: parts.store,
        events: parts.events,
        writer: parts.writer,
        indexer: parts.indexer,
        offences: HashMap::new(),
        banned: HashMap::new(),
        listen_addrs: Vec::new(),
        connected: HashSet::new(),
        bootstrap: parts.bootstrap.clone(),
        last_top_up: tokio::time::Instant::now(),
        chain_check: parts.chain_check,
        sessions_completed: HashSet::new(),
        bootstrap_pending,
    };
    let span = tracing::info_span!("network", peer = %short_peer(&local));
    let handle = tokio::spawn(
        async move {
            tokio::select! {
                () = event_loop.run() => {}
                _ = shutdown.recv() => {}
            }
        }
        .instrument(span),
    );
    Ok((local, handle, validation, publisher))
}

/// The last 8 characters of a peer id, for logs.
pub fn short_peer(peer: &PeerId) -> String {
    let s = peer.to_base58();
    s[s.len().saturating_sub(8)..].to_string()
}

/// A sync answer computed off the loop, on its way back to the swarm; or,
/// without one, word that the asker went away before it was computed.
struct Served {
    request: request_response::InboundRequestId,
    answer: Option<(
        request_response::ResponseChannel<herald_protocol::sync::SyncResponse>,
        herald_protocol::sync::SyncResponse,
    )>,
}

/// Sync requests a peer may have answered at once. A node runs one session
/// per peer, and a session sends one request at a time: a second one is
/// allowed for a session that gave up on an answer and asked again.
const MAX_SERVING_PER_PEER: usize = 2;

/// Sync answers computed at once, for all peers together: each reads the
/// store on a blocking thread, up to a page of 4 MiB.
const MAX_SERVING: usize = 4;

/// The sync requests being answered, from when they arrive until their
/// answer is written (or fails): at most [`MAX_SERVING_PER_PEER`] per peer
/// (others are refused at once) and [`MAX_SERVING`] computed at once in all
/// (others wait their turn). Counting until the answer is written, not only
/// computed, keeps a peer that does not read its answers from piling them up.
struct Serving<R = request_response::InboundRequestId> {
    per_peer: HashMap<PeerId, usize>,
    answering: HashMap<R, PeerId>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl<R: std::hash::Hash + Eq> Serving<R> {
    fn new() -> Self {
        Self {
            per_peer: HashMap::new(),
            answering: HashMap::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_SERVING)),
        }
    }

    /// Counts `request` from `peer`, unless the peer has as many being
    /// answered as it may.
    fn begin(&mut self, peer: PeerId, request: R) -> bool {
        let serving = self.per_peer.entry(peer).or_insert(0);
        if *serving >= MAX_SERVING_PER_PEER {
            return false;
        }
        *serving += 1;
        self.answering.insert(request, peer);
        true
    }

    /// `request`'s answer is written, or failed (nothing if it was not
    /// counted: refused as busy, or ended already).
    fn end(&mut self, request: &R) {
        let Some(peer) = self.answering.remove(request) else {
            return;
        };
        if let Some(serving) = self.per_peer.get_mut(&peer) {
            *serving = serving.saturating_sub(1);
            if *serving == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }
}

type SyncReply = oneshot::Sender<Result<herald_protocol::sync::SyncResponse, String>>;

struct EventLoop {
    swarm: Swarm<NodeBehaviour>,
    registry_topic: gossipsub::IdentTopic,
    session: SessionContext,
    served: mpsc::Receiver<Served>,
    served_tx: mpsc::Sender<Served>,
    serving: Serving,
    sync_interval: Duration,
    sync_replies: HashMap<request_response::OutboundRequestId, SyncReply>,
    syncing: HashSet<PeerId>,
    resync: HashSet<PeerId>,
    last_sync: Option<LastSync>,
    behind: u64,
    #[cfg(feature = "test-hooks")]
    hostile_answers: std::collections::VecDeque<herald_protocol::sync::SyncResponse>,
    /// The tree dissemination of bulletins.
    push: Push,
    /// Bulletins new to the node, from the tree.
    pushed: mpsc::Receiver<PushEvent>,
    commands: mpsc::Receiver<Command>,
    validated: mpsc::Receiver<Validated>,
    validators: Validators,
    /// Messages ignored because every validation slot was taken, since start.
    ignored_busy: u64,
    /// The registry as last reported to subscribers ([`Self::registry_moved`]):
    /// its hash, and how many times it took another branch
    /// ([`Registry::switches`]). At first, as it was when the network
    /// started (a switch at the node's start is not news).
    registry_reported: (herald_protocol::RegistryHash, u64),
    registry: Arc<RwLock<Registry>>,
    store: Store,
    events: crate::events::Events,
    writer: mpsc::Sender<WriteRequest>,
    indexer: std::sync::mpsc::SyncSender<crate::indexer::Signal>,
    offences: HashMap<PeerId, Offences>,
    banned: HashMap<PeerId, tokio::time::Instant>,
    listen_addrs: Vec<Multiaddr>,
    connected: HashSet<PeerId>,
    /// Configured bootstrap addresses, dialled again whenever they are not connected.
    bootstrap: Vec<Multiaddr>,
    last_top_up: tokio::time::Instant,
    /// How far sync sessions have checked for the node's own chain.
    chain_check: watch::Sender<ChainCheck>,
    /// Peers whose sync session since start has brought back all they hold
    /// of the node's own chain, or completed (until the check is done).
    sessions_completed: HashSet<PeerId>,
    /// Bootstrap peers whose first dial has neither connected nor failed.
    bootstrap_pending: HashSet<PeerId>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut periodic_sync = tokio::time::interval(self.sync_interval);
        periodic_sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => return,
                },
                Some(validated) = self.validated.recv() => self.handle_validated(validated),
                Some(pushed) = self.pushed.recv() => self.handle_push(pushed),
                Some(served) = self.served.recv() => self.handle_served(served),
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = retry.tick() => self.handle_tick(),
                _ = periodic_sync.tick() => self.sync_with_random_peer(),
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::GossipRegistry(bytes) => {
                // Peers that miss it get it by sync, registry first.
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.registry_topic.clone(), bytes)
                {
                    tracing::info!(error = %e, "registry update not gossiped; peers will get it by sync");
                }
            }
            Command::Dial(addr) => {
                if let Some(peer) = peer_in(&addr) {
                    self.swarm.behaviour_mut().gate.want(peer);
                }
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, error = %e, "dial failed");
                }
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.connected.iter().copied().collect());
            }
            Command::PeerScore(peer, reply) => {
                let now = tokio::time::Instant::now();
                let rejected = self
                    .offences
                    .get(&peer)
                    .map_or(0, |o| o.invalid.at(now).saturating_add(o.not_admitted.at(now)));
                let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
                let _ = reply.send(score.map(|s| s - REJECTION_PENALTY * f64::from(rejected)));
            }
            Command::SyncRequest { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, Ok(request));
                self.sync_replies.insert(id, reply);
            }
            Command::SyncWith(peer) => self.start_sync(peer),
            Command::SyncDone { peer, result } => self.handle_sync_done(peer, result),
            Command::OwnChainFetched { peer } => {
                if !self.chain_check.borrow().done {
                    self.sessions_completed.insert(peer);
                    self.update_chain_check();
                }
            }
            Command::RegistryChanged => self.registry_moved(),
            Command::Status(reply) => {
                let stats = self.push.stats();
                let _ = reply.send(NetworkStatus {
                    connected: self.connected.iter().map(|p| p.to_string()).collect(),
                    pending_gossip: stats.pending,
                    syncing: self.syncing.len(),
                    last_sync: self.last_sync.clone(),
                    behind: self.behind,
                    tree: {
                        TreeStatus {
                            pushes_to: stats.eager,
                            announces_to: stats.lazy,
                            receives_from: stats.inbound,
                            duplicates: stats.counts.duplicates,
                            grafted: stats.counts.grafted,
                            frames_dropped: stats.dropped_frames,
                            held_back: stats.counts.ihaves_ignored
                                + stats.counts.grafts_refused
                                + stats.skipped_control,
                            announcements_ignored: stats.counts.ihaves_ignored,
                            graft_answers_refused: stats.counts.grafts_refused,
                            control_frames_skipped: stats.skipped_control,
                        }
                    },
                });
            }
            #[cfg(feature = "test-hooks")]
            Command::HostileSyncAnswers(answers) => self.hostile_answers.extend(answers),
            #[cfg(feature = "test-hooks")]
            Command::InjectUnchecked(bytes) => self.push.publish(Arc::from(bytes)),
            #[cfg(feature = "test-hooks")]
            Command::InjectFrames(bytes) => self.push.send_raw(bytes),
            #[cfg(feature = "test-hooks")]
            Command::RawSyncRequest { peer, bytes, reply } => {
                let network = self.registry.read().unwrap_or_else(|e| e.into_inner()).network();
                match crate::sync::protocol_name(&network) {
                    Ok(protocol) => self.push.send_raw_stream(peer, protocol, bytes, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    fn handle_tick(&mut self) {
        self.top_up();
        let now = tokio::time::Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            self.offences.remove(&peer);
            if self.is_member_node(&peer) {
                self.swarm.behaviour_mut().allow.allow_peer(peer);
            }
        }
    }

    /// Every [`TOP_UP_EVERY`]: configured bootstrap peers that are not
    /// connected are dialled again (they are kept, whatever the count), and
    /// below [`TARGET_PEERS`] connections a Kademlia bootstrap looks for more
    /// members (the gate lets its dials through until the target is reached).
    fn top_up(&mut self) {
        if self.last_top_up.elapsed() < TOP_UP_EVERY {
            return;
        }
        self.last_top_up = tokio::time::Instant::now();
        for addr in self.bootstrap.clone() {
            let connected = match peer_in(&addr) {
                Some(peer) => self.connected.contains(&peer),
                None => !self.connected.is_empty(),
            };
            if !connected && let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        if self.swarm.behaviour().gate.wants_more() {
            tracing::debug!(
                connected = self.connected.len(),
                "short of peers; looking for more"
            );
            // No known peers yet is not an error here: the bootstrap list is dialled above.
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    fn is_member_node(&self, peer: &PeerId) -> bool {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        registry
            .current()
            .allowed_nodes()
            .any(|(_, n)| peer_id_of(n).as_ref() == Some(peer))
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.push(address.clone());
                self.events.send(NodeEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if self.connected.insert(peer_id) => {
                tracing::info!(peer = %short_peer(&peer_id), addr = %endpoint.get_remote_address(), "peer connected");
                self.events.send(NodeEvent::PeerConnected(peer_id));
                self.bootstrap_pending.remove(&peer_id);
                // Catch up with every member's node as it (re)connects.
                if self.is_member_node(&peer_id) {
                    // Also sends what the node published while no peer was linked.
                    self.push.add_peer(peer_id);
                    self.events.send(NodeEvent::PeerSubscribed(peer_id));
                    self.start_sync(peer_id);
                } else {
                    self.update_chain_check();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if self.connected.remove(&peer_id) => {
                tracing::info!(peer = %short_peer(&peer_id), "peer disconnected");
                self.push.remove_peer(peer_id);
                self.events.send(NodeEvent::PeerDisconnected(peer_id));
                self.update_chain_check();
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(addr = %send_back_addr, error = %error, "incoming connection refused");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id.map(|p| short_peer(&p)), error = %error, "outgoing connection failed");
                if let Some(peer) = peer_id
                    && self.bootstrap_pending.remove(&peer)
                {
                    self.update_chain_check();
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Gossipsub(event)) => self.handle_gossip(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(event)) => self.handle_sync_event(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if self.is_member_node(&peer) && !self.connected.contains(&peer) {
                        tracing::info!(peer = %short_peer(&peer), %addr, "member node found on the LAN");
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        if message.topic == self.registry_topic.hash() {
            self.validate_off_loop(propagation_source, message_id, message.data);
            return;
        }
        // Bulletins travel by the tree; the node subscribes to no other topic.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(
                &message_id,
                &propagation_source,
                gossipsub::MessageAcceptance::Reject,
            );
        self.penalise(
            propagation_source,
            "a message on a topic the node does not take".into(),
        );
    }

    fn handle_push(&mut self, event: PushEvent) {
        match event {
            PushEvent::Malformed { from, reason } => {
                self.penalise(from, format!("a malformed tree frame: {reason}"))
            }
            PushEvent::BacklogSent { count } => {
                self.events.send(NodeEvent::BacklogSent { count });
            }
            PushEvent::Pruned { peer } => {
                tracing::debug!(peer = %short_peer(&peer), "pruned: the peer sends ids only from now on");
                self.events.send(NodeEvent::PeerPruned(peer));
            }
        }
    }

    /// Reports a verdict the way the message came: gossipsub forwards or
    /// drops it, the tree forwards an accepted bulletin to its peers.
    fn report(&mut self, carrier: &Carrier, source: &PeerId, acceptance: gossipsub::MessageAcceptance) {
        match carrier {
            Carrier::Gossip(message_id) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(message_id, source, acceptance);
            }
            // The check reported it to the tree itself.
            Carrier::Push(..) => {}
        }
    }

    /// Each message is checked in a task of its own (`validators.rs`): the
    /// loop hands it over and goes on forwarding and answering; the verdict
    /// comes back through a channel.
    ///
    /// An accepted bulletin is staged in the store by that task before the
    /// verdict comes back, so it is held (readable by id) before it is
    /// forwarded, with no write and no hand-off to the writer (the indexer
    /// folds staged bulletins in groups).
    fn validate_off_loop(&mut self, source: PeerId, message_id: gossipsub::MessageId, data: Vec<u8>) {
        let job = Job {
            source,
            carrier: Carrier::Gossip(message_id),
            data: Arc::from(data),
        };
        let Err(job) = self.validators.submit(job) else {
            return;
        };
        // Logged at the 1st, 2nd, 4th, 8th... so that a flood does not flood the log.
        self.ignored_busy += 1;
        if self.ignored_busy.is_power_of_two() {
            tracing::warn!(
                peer = %short_peer(&source),
                ignored = self.ignored_busy,
                "too many messages being checked; message ignored (sync fetches it later)"
            );
        }
        // Not forwarded, and the sender is not blamed for our backlog.
        self.report(&job.carrier, &job.source, gossipsub::MessageAcceptance::Ignore);
    }

    fn handle_validated(&mut self, v: Validated) {
        let acceptance = match &v.verdict {
            Verdict::Accept(..) | Verdict::RegistryAdvanced(_) | Verdict::RegistryFork(_) => {
                gossipsub::MessageAcceptance::Accept
            }
            Verdict::Duplicate
            | Verdict::Behind
            | Verdict::NotSaved(_)
            | Verdict::NotAdmitted(_)
            | Verdict::OtherBranch(_)
            | Verdict::Unproven(_) => gossipsub::MessageAcceptance::Ignore,
            Verdict::Reject(_) => gossipsub::MessageAcceptance::Reject,
        };
        // A bulletin staged by its check is held from then on (one from the
        // tree was forwarded by its check already): subscribers are told when,
        // and before a registry update's forward.
        let verdict = match v.verdict {
            Verdict::Accept(bulletin, member) if v.staged.is_some() => {
                self.events.send(NodeEvent::BulletinReceived {
                    bulletin: Arc::from(bulletin),
                    member,
                    from: v.source,
                    held_at: v.held_at,
                });
                None
            }
            verdict => Some(verdict),
        };
        self.report(&v.carrier, &v.source, acceptance);
        let Some(verdict) = verdict else {
            // The first staged since a fold wakes the indexer, and so does a
            // full group. If its queue is full it is awake already.
            if v.staged == Some(true) || self.store.staged_count() >= crate::store::FOLD_GROUP {
                let _ = self.indexer.try_send(crate::indexer::Signal::Staged);
            }
            return;
        };
        match verdict {
            Verdict::Accept(bulletin, member) => {
                let request = WriteRequest::Verified {
                    bulletin,
                    member,
                    origin: Origin::Gossip(v.source),
                };
                // Never wait on the writer here: it may itself be waiting for
                // this loop to take a gossip command.
                match self.writer.try_send(request) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(request)) => {
                        let writer = self.writer.clone();
                        tokio::spawn(async move {
                            let _ = writer.send(request).await;
                        });
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => tracing::error!("store writer has stopped"),
                }
            }
            Verdict::RegistryAdvanced(update) => {
                tracing::info!(version = %update.body().version, "registry advanced by gossip");
                self.registry_moved();
            }
            Verdict::RegistryFork(reason) => {
                tracing::error!(%reason, "REGISTRY FORK: two approved updates for one version; evidence kept");
                self.events.send(NodeEvent::RegistryFork(reason));
                // The rest of the sender's branch may settle the split one
                // way or the other: its session reads it.
                let now = tokio::time::Instant::now();
                if self.offences.entry(v.source).or_default().sync_due(now) {
                    self.start_sync(v.source);
                }
            }
            Verdict::Behind => self.start_sync(v.source),
            Verdict::Duplicate => {}
            Verdict::NotSaved(reason) => tracing::error!(%reason, "a registry update was not taken"),
            Verdict::OtherBranch(reason) => {
                tracing::warn!(
                    peer = %short_peer(&v.source),
                    %reason,
                    "a registry update of another branch (a registry fork earlier on); not taken"
                );
                // Its session finds where the branches part, and takes the
                // sender's if the branch rule says so.
                let now = tokio::time::Instant::now();
                if self.offences.entry(v.source).or_default().sync_due(now) {
                    self.start_sync(v.source);
                }
            }
            Verdict::Unproven(reason) => tracing::debug!(
                peer = %short_peer(&v.source),
                %reason,
                "a registry update of another history that no member approved; dropped"
            ),
            Verdict::NotAdmitted(reason) => self.not_admitted(v.source, reason),
            Verdict::Reject(reason) => self.penalise(v.source, reason),
        }
    }

    fn start_sync(&mut self, peer: PeerId) {
        if !self.connected.contains(&peer) {
            return;
        }
        if !self.syncing.insert(peer) {
            // One session per peer; run again when this one ends.
            self.resync.insert(peer);
            return;
        }
        self.update_chain_check();
        let ctx = self.session.clone();
        let done = self.session.commands.clone();
        tokio::spawn(async move {
            // A session that panics still reports back, so the peer is not
            // left marked as syncing for good.
            let result = match tokio::spawn(run_session(peer, ctx)).await {
                Ok(result) => result,
                Err(e) => Err(crate::sync::SyncError::Request(format!(
                    "sync session failed: {e}"
                ))),
            };
            let _ = done.send(Command::SyncDone { peer, result }).await;
        });
    }

    fn sync_with_random_peer(&mut self) {
        use rand::seq::IteratorRandom;
        let peer = self.connected.iter().copied().choose(&mut rand::rng());
        if let Some(peer) = peer {
            self.start_sync(peer);
        }
    }

    /// After a sync session starts, reaches the end of the node's own chain,
    /// or ends, a peer connects or leaves, or a bootstrap dial fails: the
    /// node's own chain is checked once every connected peer's session has
    /// brought back all the peer holds of it ([`crate::KeyPast`]).
    fn update_chain_check(&mut self) {
        if self.chain_check.borrow().done {
            return;
        }
        // Sessions still fetching the chain: those that have it may go on
        // with the rest of a long catch-up.
        let running = self
            .syncing
            .iter()
            .filter(|p| !self.sessions_completed.contains(p))
            .count();
        let check = ChainCheck::from_sessions(
            &self.sessions_completed,
            &self.connected,
            running,
            !self.bootstrap_pending.is_empty(),
        );
        self.chain_check.send_if_modified(|c| {
            // Never undoes a check the node ended meanwhile.
            let changed = !c.done && *c != check;
            if changed {
                *c = check;
            }
            changed
        });
        if check.done {
            self.sessions_completed = HashSet::new();
        }
    }

    fn handle_sync_done(&mut self, peer: PeerId, result: Result<SyncReport, crate::sync::SyncError>) {
        self.syncing.remove(&peer);
        // The session tells of registry versions it takes in as it goes, by
        // a command that a full queue drops: what it changed is reported by
        // its end at the latest.
        self.registry_moved();
        // A session counts for the node's own chain once it holds all the
        // peer has of it (told early by `OwnChainFetched` as well).
        if result.as_ref().is_ok_and(|r| r.first_chain_fetched) && !self.chain_check.borrow().done {
            self.sessions_completed.insert(peer);
        }
        self.update_chain_check();
        let at_ms = crate::node::now().0;
        match result {
            Ok(report) => {
                if report.new_bulletins > 0 || report.registry_updates > 0 {
                    tracing::info!(
                        peer = %short_peer(&peer),
                        new = report.new_bulletins,
                        registry = report.registry_updates,
                        round_trips = report.round_trips,
                        "caught up"
                    );
                }
                self.behind = report.behind.saturating_sub(report.new_bulletins);
                self.last_sync = Some(LastSync {
                    peer: peer.to_string(),
                    at_ms,
                    new_bulletins: report.new_bulletins,
                    error: None,
                });
                self.events.send(NodeEvent::SyncCompleted {
                    peer,
                    new_bulletins: report.new_bulletins,
                    registry_updates: report.registry_updates,
                    round_trips: report.round_trips,
                    in_step: report.in_step,
                });
            }
            Err(e) => {
                tracing::warn!(peer = %short_peer(&peer), error = %e, "sync failed");
                self.last_sync = Some(LastSync {
                    peer: peer.to_string(),
                    at_ms,
                    new_bulletins: 0,
                    error: Some(e.to_string()),
                });
                self.events.send(NodeEvent::SyncFailed {
                    peer,
                    reason: e.to_string(),
                });
                if let crate::sync::SyncError::Hostile(reason) = e {
                    // Invalid sync data counts like invalid gossip.
                    self.penalise(peer, reason);
                    self.resync.remove(&peer);
                    return;
                }
            }
        }
        if self.resync.remove(&peer) {
            self.start_sync(peer);
        }
    }

    fn handle_sync_event(
        &mut self,
        event: request_response::Event<
            Result<herald_protocol::sync::SyncRequest, crate::sync::BadRequest>,
            herald_protocol::sync::SyncResponse,
        >,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.serve(peer, request_id, request, channel),
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.sync_replies.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.sync_replies.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                // A frame over its limit or one that does not decode is the
                // peer's doing; a timeout or a closed connection may not be.
                if let request_response::OutboundFailure::Io(e) = &error
                    && crate::sync::is_bad_frame(e)
                {
                    self.penalise(peer, format!("invalid sync response: {e}"));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.serving.end(&request_id);
                tracing::debug!(peer = %short_peer(&peer), error = %error, "sync request failed");
            }
            request_response::Event::ResponseSent { request_id, .. } => self.serving.end(&request_id),
        }
    }

    fn serve(
        &mut self,
        peer: PeerId,
        request_id: request_response::InboundRequestId,
        request: Result<herald_protocol::sync::SyncRequest, crate::sync::BadRequest>,
        channel: request_response::ResponseChannel<herald_protocol::sync::SyncResponse>,
    ) {
        // A frame over its limit, or one that is no request of this
        // protocol version, counts against the peer that sent it, as an
        // invalid answer does (a new kind of request comes with a new
        // protocol name: docs/PROTOCOL.md, section 12.1).
        let request = match request {
            Ok(request) => request,
            Err(bad) => {
                self.penalise(peer, format!("invalid sync request: {bad}"));
                let refused = herald_protocol::sync::SyncResponse::Refused {
                    reason: "invalid request: not a request of this protocol version, or over its limit"
                        .into(),
                };
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, refused);
                return;
            }
        };
        #[cfg(feature = "test-hooks")]
        if let Some(response) = self.hostile_answers.pop_front() {
            let _ = self.swarm.behaviour_mut().sync.send_response(channel, response);
            return;
        }
        if !self.serving.begin(peer, request_id) {
            // Not an offence: a later version of the protocol may ask more at once.
            tracing::debug!(peer = %short_peer(&peer), "sync request refused: too many from this peer at once");
            let busy = herald_protocol::sync::SyncResponse::Refused {
                reason: format!(
                    "busy: {MAX_SERVING_PER_PEER} requests from this node are being answered; ask one at a time"
                ),
            };
            let _ = self.swarm.behaviour_mut().sync.send_response(channel, busy);
            return;
        }
        tracing::debug!(peer = %short_peer(&peer), "serving sync");
        let permits = Arc::clone(&self.serving.permits);
        let store = self.store.clone();
        let registry = Arc::clone(&self.registry);
        let reply = self.served_tx.clone();
        let indexer = self.indexer.clone();
        let local = *self.swarm.local_peer_id();
        tokio::spawn(async move {
            // Held until the answer is computed; the semaphore is never closed.
            let permit = permits.acquire_owned().await.ok();
            if !channel.is_open() {
                // The asker gave up while the request waited its turn. Its
                // failure usually ends the count; this ends it whatever
                // libp2p reports.
                drop(permit);
                let _ = reply
                    .send(Served {
                        request: request_id,
                        answer: None,
                    })
                    .await;
                return;
            }
            let response = tokio::task::spawn_blocking(move || {
                // Summaries list folded chains. Bulletins still staged (held
                // for less than a second) are folded first when the asking
                // node's member or this node's signed some: a node checking
                // its own chain (after losing its store) must learn of its
                // last bulletins, and a peer connecting just after this node
                // published must get them now, not at a later sync (the tree
                // sends a new link nothing from before). Others' wait for the
                // next fold, so that a peer asking again and again cannot
                // make the node fold for every bulletin it receives.
                use herald_protocol::sync::SyncRequest;
                if matches!(request, SyncRequest::Hello { .. } | SyncRequest::Chains { .. })
                    && [peer, local]
                        .iter()
                        .any(|p| member_of_node(&registry, p).is_some_and(|m| store.stages_from(&m)))
                {
                    crate::indexer::fold_now(&indexer);
                }
                crate::sync::answer(request, &store, &registry)
            })
            .await
            .unwrap_or_else(|_| herald_protocol::sync::SyncResponse::Refused {
                reason: "internal error".into(),
            });
            drop(permit);
            let _ = reply
                .send(Served {
                    request: request_id,
                    answer: Some((channel, response)),
                })
                .await;
        });
    }

    fn handle_served(&mut self, served: Served) {
        let Some((channel, response)) = served.answer else {
            self.serving.end(&served.request);
            return;
        };
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response)
            .is_err()
        {
            // (libp2p reports the failure too; `end` is taken once.)
            self.serving.end(&served.request);
            tracing::debug!("sync answer dropped: the requester went away");
        }
    }

    /// Allows the nodes the registry now lists; refuses and disconnects the rest.
    fn refresh_allowed_peers(&mut self) {
        let allowed: HashSet<PeerId> = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            registry
                .current()
                .allowed_nodes()
                .filter_map(|(_, n)| peer_id_of(n))
                .collect()
        };
        let before: Vec<PeerId> = self
            .swarm
            .behaviour()
            .allow
            .allowed_peers()
            .iter()
            .copied()
            .collect();
        for peer in before {
            if !allowed.contains(&peer) {
                self.swarm.behaviour_mut().allow.disallow_peer(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        for peer in allowed {
            if !self.banned.contains_key(&peer) {
                self.swarm.behaviour_mut().allow.allow_peer(peer);
            }
        }
    }

    /// A bulletin of `peer`'s signed by a key this node's registry does not
    /// admit ([`Verdict::NotAdmitted`]): reported and scored, never a cause
    /// to ban (the two registries may differ for a while). The node syncs
    /// with the peer, at most every [`NOT_ADMITTED_SYNC_EVERY`]: one of the
    /// two registries is behind the other's.
    fn not_admitted(&mut self, peer: PeerId, reason: String) {
        let now = tokio::time::Instant::now();
        let offences = self.offences.entry(peer).or_default();
        let count = offences.not_admitted.add(now);
        let sync = offences.sync_due(now);
        tracing::info!(peer = %short_peer(&peer), %reason, not_admitted = count, "a bulletin this registry does not admit; not forwarded");
        self.events.send(NodeEvent::Rejected { peer, reason });
        if sync {
            self.start_sync(peer);
        }
    }

    /// After the registry may have changed (by gossip, a sync session, a
    /// bundle, the local API): if it did since it was last reported,
    /// recomputes who may connect and reports it, with
    /// [`NodeEvent::RegistrySwitched`] first if it took another branch (the
    /// last switch, should there have been several), then
    /// [`NodeEvent::RegistryAdvanced`] with its version, all as read at one
    /// moment.
    fn registry_moved(&mut self) {
        let (position, version, last) = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            (
                (registry.hash(), registry.switches()),
                registry.version(),
                registry.last_switch(),
            )
        };
        if position == self.registry_reported {
            return;
        }
        let switched = position.1 != self.registry_reported.1;
        self.registry_reported = position;
        self.refresh_allowed_peers();
        if switched && let Some(herald_keys::Applied::Switched { from, to, dropped }) = last {
            self.events
                .send(NodeEvent::RegistrySwitched { from, to, dropped });
        }
        self.events.send(NodeEvent::RegistryAdvanced(version));
    }

    fn penalise(&mut self, peer: PeerId, reason: String) {
        let count = self
            .offences
            .entry(peer)
            .or_default()
            .invalid
            .add(tokio::time::Instant::now());
        let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
        tracing::warn!(peer = %short_peer(&peer), %reason, invalid = count, score = ?score, "rejected input from a peer");
        self.events.send(NodeEvent::Rejected { peer, reason });
        if count >= MAX_INVALID_BEFORE_BAN {
            tracing::warn!(peer = %short_peer(&peer), "disconnecting a peer that keeps sending invalid input");
            self.swarm.behaviour_mut().allow.disallow_peer(peer);
            self.push.remove_peer(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            self.banned
                .insert(peer, tokio::time::Instant::now() + BAN_DURATION);
            self.events.send(NodeEvent::PeerBanned(peer));
        }
    }
}

/// What a peer did wrong lately.
#[derive(Debug, Default)]
struct Offences {
    /// Invalid input: [`MAX_INVALID_BEFORE_BAN`] of these ban the peer.
    invalid: Count,
    /// Bulletins signed by keys this node's registry does not admit.
    not_admitted: Count,
    /// When such a bulletin last started a sync with the peer.
    synced: Option<tokio::time::Instant>,
}

impl Offences {
    /// Whether a bulletin not admitted at `now` starts a sync with the peer:
    /// the first, and then one every [`NOT_ADMITTED_SYNC_EVERY`] at most.
    fn sync_due(&mut self, now: tokio::time::Instant) -> bool {
        let due = self.synced.is_none_or(|at| now >= at + NOT_ADMITTED_SYNC_EVERY);
        if due {
            self.synced = Some(now);
        }
        due
    }
}

/// Offences of one kind, forgotten [`OFFENCE_MEMORY`] after the last.
#[derive(Debug, Default)]
struct Count {
    count: u32,
    last: Option<tokio::time::Instant>,
}

impl Count {
    /// One more at `now`; how many are remembered now.
    fn add(&mut self, now: tokio::time::Instant) -> u32 {
        self.count = self.at(now).saturating_add(1);
        self.last = Some(now);
        self.count
    }

    /// How many are remembered at `now`.
    fn at(&self, now: tokio::time::Instant) -> u32 {
        match self.last {
            Some(last) if now < last + OFFENCE_MEMORY => self.count,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_peer_has_at_most_two_sync_requests_answered_at_once() {
        let mut serving = Serving::<u64>::new();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(serving.begin(a, 1));
        assert!(serving.begin(a, 2));
        assert!(!serving.begin(a, 3), "a third request at once is refused");
        assert!(serving.begin(b, 4), "another peer is not affected");
        serving.end(&3);
        assert!(!serving.begin(a, 5), "the end of a refused request frees nothing");
        serving.end(&1);
        assert!(serving.begin(a, 6), "an answered request frees its place");
        serving.end(&2);
        serving.end(&2);
        serving.end(&6);
        serving.end(&6);
        assert!(serving.begin(a, 7) && serving.begin(a, 8) && !serving.begin(a, 9));
        serving.end(&4);
        assert!(!serving.per_peer.contains_key(&b));
        assert_eq!(serving.permits.available_permits(), MAX_SERVING);
    }

    #[test]
    fn a_node_id_and_its_peer_id_name_each_other() {
        let node = NodeId::from_bytes(SecretKey::from_seed(&[7; 32]).public().to_bytes());
        let peer = peer_id_of(&node).unwrap();
        assert_eq!(node_id_of(&peer), Some(node));
        // A peer id that inlines no Ed25519 key names no node.
        assert_eq!(node_id_of(&PeerId::random()), None);
    }
}

#[cfg(test)]
mod offence_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn offences_are_forgotten_some_time_after_the_last_of_their_kind() {
        let start = tokio::time::Instant::now();
        let mut count = Count::default();
        assert_eq!(count.at(start), 0);
        assert_eq!(count.add(start), 1);
        assert_eq!(count.add(start + OFFENCE_MEMORY / 2), 2);
        // Counted from the last one.
        assert_eq!(count.at(start + OFFENCE_MEMORY), 2);
        let later = start + OFFENCE_MEMORY / 2 + OFFENCE_MEMORY;
        assert_eq!(count.at(later), 0);
        assert_eq!(count.add(later), 1, "counted afresh");
    }

    #[tokio::test(start_paused = true)]
    async fn bulletins_not_admitted_start_a_sync_at_most_every_so_often() {
        let start = tokio::time::Instant::now();
        let mut offences = Offences::default();
        let due = |offences: &mut Offences, after: Duration| offences.sync_due(start + after);
        assert!(due(&mut offences, Duration::ZERO), "the first");
        assert!(!due(&mut offences, Duration::from_secs(1)));
        assert!(!due(
            &mut offences,
            NOT_ADMITTED_SYNC_EVERY - Duration::from_millis(1)
        ));
        assert!(due(&mut offences, NOT_ADMITTED_SYNC_EVERY));
        assert!(!due(
            &mut offences,
            NOT_ADMITTED_SYNC_EVERY + Duration::from_secs(1)
        ));
    }
}
