//! Catch-up sync over libp2p request-response: the length-prefixed codec with
//! a limit on every read, the answers a node gives, and the session a node
//! runs to pull what it lacks from one peer (registry first, then bulletins in
//! bounded pages, each verified exactly like gossip).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use herald_keys::{Applied, Registry, RegistryError};
use herald_protocol::sync::{
    self, ChainSummary, MAX_PAGE_BULLETINS, MAX_REGISTRY_UPDATES, MAX_SYNC_REQUEST_BYTES,
    MAX_SYNC_RESPONSE_BYTES, PAGE_BUDGET_BYTES, SyncRequest, SyncResponse, Want,
};
use herald_protocol::{
    KeyId, MemberId, RegistryHash, RegistryVersion, Seq, SignedBulletin, SignedRegistryUpdate,
};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::events::Origin;
use crate::network::Command;
use crate::store::{Store, StoreError, Stored};
use crate::writer::WriteRequest;

/// How a request the peer refused as busy (too many of this node's at once)
/// begins its error.
const BUSY: &str = "peer busy: ";

/// Most pages one session pulls before it stops and waits for the next round.
const MAX_PAGES_PER_SESSION: usize = 100_000;
/// Most registry rounds one session makes.
const MAX_REGISTRY_ROUNDS: usize = 1024;
/// Summary pages one session reads, at most: about a million chains.
const MAX_SUMMARY_PAGES: usize = 256;

/// The sync protocol name for a network.
pub(crate) fn protocol_name(network: &herald_protocol::NetworkId) -> Result<StreamProtocol, String> {
    StreamProtocol::try_from_owned(format!("/herald/{}/sync/1.0.0", network.fmt_short()))
        .map_err(|e| e.to_string())
}

/// Frames: a u32 big-endian length, then a canonical bincode message. The
/// length is checked against the message's limit before anything is read.
#[derive(Clone, Default)]
pub(crate) struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!(
            "sync frame of {len} bytes over the {max}-byte limit"
        )));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

/// A frame the peer sent that breaks the protocol: over its limit, or not a
/// message of this protocol version. Marks the codec's own errors apart
/// from those of the connection under it, which may not be the peer's doing.
#[derive(Debug)]
struct BadFrame(String);

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadFrame {}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, BadFrame(e.to_string()))
}

/// Whether `e` is a frame the peer sent that breaks the protocol (over its
/// limit, or that does not decode), and so counts against it: a new kind
/// of request or answer comes with a new protocol name (docs/PROTOCOL.md,
/// section 12.1), never on this one.
pub(crate) fn is_bad_frame(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BadFrame>())
}

/// A request frame a peer sent that breaks the protocol (over its limit, or
/// no request of this version): why. Read as a request, not as a failure of
/// the stream, so that the node hears of it and counts it against the peer
/// (libp2p reports a request that fails to read to no one).
#[derive(Debug)]
pub(crate) struct BadRequest(String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    /// What the node sends is always `Ok`; what it reads may be a frame
    /// that breaks the protocol.
    type Request = Result<SyncRequest, BadRequest>;
    type Response = SyncResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        match read_frame(io, MAX_SYNC_REQUEST_BYTES).await {
            Ok(frame) => {
                Ok(SyncRequest::from_bytes(&frame).map_err(|e| BadRequest(format!("undecodable: {e}"))))
            }
            Err(e) if is_bad_frame(&e) => Ok(Err(BadRequest(e.to_string()))),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SyncResponse> {
        SyncResponse::from_bytes(&read_frame(io, MAX_SYNC_RESPONSE_BYTES).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Self::Request,
    ) -> io::Result<()> {
        match request {
            Ok(request) => write_frame(io, &request.to_bytes()).await,
            Err(bad) => Err(io::Error::new(io::ErrorKind::InvalidInput, bad.to_string())),
        }
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: SyncResponse,
    ) -> io::Result<()> {
        write_frame(io, &response.to_bytes()).await
    }
}

/// A registry's version and hash: where it stands.
type RegistryPosition = (RegistryVersion, RegistryHash);

/// A search for where two registries part: the peer's position (as it
/// claims it) and this node's.
type ForkSearch = (RegistryPosition, RegistryPosition);

/// This node's registry position and chain summaries, and their digest.
fn our_state(
    store: &Store,
    registry: &RwLock<Registry>,
) -> Result<(RegistryPosition, Vec<ChainSummary>, [u8; 32]), StoreError> {
    let position = {
        let registry = registry.read().unwrap_or_else(|e| e.into_inner());
        (registry.version(), registry.hash())
    };
    let chains = store.summaries()?;
    let digest = sync::state_digest(position, &chains);
    Ok((position, chains, digest))
}

/// The answer to a peer's request (runs on a blocking thread: it reads the store).
pub(crate) fn answer(request: SyncRequest, store: &Store, registry: &RwLock<Registry>) -> SyncResponse {
    let refused = |e: StoreError| {
        tracing::error!(error = %e, "cannot answer a sync request");
        SyncResponse::Refused {
            reason: "store error".into(),
        }
    };
    match request {
        SyncRequest::Hello { digest, .. } => match our_state(store, registry) {
            Ok((_, _, ours)) if ours == digest => SyncResponse::InStep,
            Ok(((registry_version, registry_hash), mut chains, _)) => {
                chains.truncate(sync::MAX_CHAINS);
                SyncResponse::Summary {
                    registry_version,
                    registry_hash,
                    chains,
                }
            }
            Err(e) => refused(e),
        },
        SyncRequest::Registry { from } => {
            let registry = registry.read().unwrap_or_else(|e| e.into_inner());
            SyncResponse::Registry {
                updates: registry_page(&registry, from, PAGE_BUDGET_BYTES),
            }
        }
        SyncRequest::Fetch { wants } => match store.page(&wants, PAGE_BUDGET_BYTES, MAX_PAGE_BULLETINS) {
            Ok((bulletins, complete)) => SyncResponse::Page { bulletins, complete },
            Err(e) => refused(e),
        },
        SyncRequest::Chains { after } => match store.summaries_after(&after, sync::MAX_CHAINS) {
            Ok(chains) => {
                let registry = registry.read().unwrap_or_else(|e| e.into_inner());
                SyncResponse::Summary {
                    registry_version: registry.version(),
                    registry_hash: registry.hash(),
                    chains,
                }
            }
            Err(e) => refused(e),
        },
    }
}

/// The registry updates from version `from` on, as many as fit `budget`
/// bytes (one at least; an update is at most MAX_REGISTRY_UPDATE_BYTES) and
/// MAX_REGISTRY_UPDATES: an answer stays within what the asker reads
/// (MAX_SYNC_RESPONSE_BYTES), however large the updates.
fn registry_page(registry: &Registry, from: RegistryVersion, budget: usize) -> Vec<Vec<u8>> {
    let skip = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
    let mut updates: Vec<Vec<u8>> = Vec::new();
    let mut used = 0;
    for update in registry.history().iter().skip(skip).take(MAX_REGISTRY_UPDATES) {
        let bytes = update.to_bytes();
        if !updates.is_empty() && used + bytes.len() > budget {
            break;
        }
        used += bytes.len();
        updates.push(bytes);
    }
    updates
}

/// Checks that a summary page lists its chains in ascending key order, after
/// the last key of the page before: what makes paging end.
fn check_key_order(page: &[ChainSummary], after: Option<KeyId>) -> Result<(), SyncError> {
    let mut last = after;
    for chain in page {
        if last.is_some_and(|l| chain.key.as_bytes() <= l.as_bytes()) {
            return Err(SyncError::Hostile(
                "summary chains out of key order, or repeated".into(),
            ));
        }
        last = Some(chain.key);
    }
    Ok(())
}

/// What a session achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Registry updates applied.
    pub registry_updates: usize,
    /// New bulletins stored.
    pub new_bulletins: u64,
    /// Request-response round trips made.
    pub round_trips: usize,
    /// Bulletins the peer had that this node lacked, when the session began.
    pub behind: u64,
    /// Whether the two nodes were already in step.
    pub in_step: bool,
    /// Whether the session holds all the peer has of
    /// [`SyncLink::first_chain`] (false when there is none).
    pub first_chain_fetched: bool,
    /// Bytes of requests sent, as framed on the wire.
    pub bytes_sent: u64,
    /// Bytes of responses received, as framed on the wire.
    pub bytes_received: u64,
}

/// One request and its answer, counted in the report.
async fn exchange<L: SyncLink>(
    link: &L,
    report: &mut SyncReport,
    request: SyncRequest,
) -> Result<SyncResponse, SyncError> {
    report.round_trips += 1;
    report.bytes_sent += 4 + request.to_bytes().len() as u64;
    let response = link.request(request).await?;
    report.bytes_received += 4 + response.to_bytes().len() as u64;
    Ok(response)
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The request failed on the way (connection closed, timeout, bad frame).
    #[error("request failed: {0}")]
    Request(String),
    /// The peer sent something invalid: it is penalised.
    #[error("peer sent invalid data: {0}")]
    Hostile(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node is shutting down.
    #[error("the node is stopping")]
    Stopped,
}

/// How a session reaches its peer and stores what it pulls: over the network
/// through the node's event loop and writer, or in process (tests, benchmarks).
pub trait SyncLink: Send + Sync {
    /// Sends one request and waits for the answer.
    fn request(&self, request: SyncRequest) -> impl Future<Output = Result<SyncResponse, SyncError>> + Send;
    /// Stores verified bulletins (one batch, flushed) and says what happened to each.
    fn store(
        &self,
        items: Vec<(SignedBulletin, MemberId)>,
    ) -> impl Future<Output = Result<Vec<Stored>, SyncError>> + Send;
    /// The registry advanced (who may connect may have changed).
    fn registry_changed(&self) {}
    /// Whether to search where the peer's registry parts from this node's,
    /// the two standing at `search`: once for each peer and pair of
    /// positions (a split lasts, and every session with the peer would
    /// search again; what one peer claims says nothing of another's).
    fn fork_search_due(&self, search: ForkSearch) -> bool {
        let _ = search;
        true
    }
    /// The search ended (found or not): not due again.
    fn fork_searched(&self, search: ForkSearch) {
        let _ = search;
    }
    /// A chain to fetch before the others: the node's own, whose bulletins it
    /// must hold before it numbers more of them ([`crate::KeyPast`]).
    fn first_chain(&self) -> Option<KeyId> {
        None
    }
    /// The session holds all the peer has of [`SyncLink::first_chain`].
    /// Called at most once a session, and awaited before the session goes on.
    fn first_chain_fetched(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The peer lists [`SyncLink::first_chain`] up to `highest`, above what
    /// this node holds: recorded durably before anything of it is fetched.
    fn first_chain_claimed(&self, highest: Seq) -> impl Future<Output = Result<(), SyncError>> + Send {
        let _ = highest;
        async { Ok(()) }
    }
}

/// A session over the network, for one peer.
#[derive(Clone)]
pub(crate) struct SessionContext {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) writer: mpsc::Sender<WriteRequest>,
    pub(crate) store: Store,
    pub(crate) registry: Arc<RwLock<Registry>>,
    /// The node's own signing key: its chain is fetched first.
    pub(crate) own_key: KeyId,
    /// Searches already made for where a peer's registry parts from this
    /// node's ([`SyncLink::fork_search_due`]), by peer.
    pub(crate) fork_searches: Arc<std::sync::Mutex<HashSet<(PeerId, ForkSearch)>>>,
}

/// Searches remembered, at most (then forgotten all at once, and made
/// again).
const MAX_FORK_SEARCHES: usize = 1024;

/// [`SessionContext`] bound to one peer.
pub(crate) struct NetworkLink {
    pub(crate) peer: PeerId,
    pub(crate) ctx: SessionContext,
}

impl SyncLink for NetworkLink {
    fn fork_search_due(&self, search: ForkSearch) -> bool {
        let searched = self.ctx.fork_searches.lock().unwrap_or_else(|e| e.into_inner());
        !searched.contains(&(self.peer, search))
    }

    fn fork_searched(&self, search: ForkSearch) {
        let mut searched = self.ctx.fork_searches.lock().unwrap_or_else(|e| e.into_inner());
        if searched.len() >= MAX_FORK_SEARCHES {
            searched.clear();
        }
        searched.insert((self.peer, search));
    }

    async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
        let (reply, response) = oneshot::channel();
        self.ctx
            .commands
            .send(Command::SyncRequest {
                peer: self.peer,
                request,
                reply,
            })
            .await
            .map_err(|_| SyncError::Stopped)?;
        match response.await {
            Ok(Ok(SyncResponse::Refused { reason })) if reason.starts_with("busy") => {
                Err(SyncError::Request(format!("{BUSY}{reason}")))
            }
            Ok(Ok(SyncResponse::Refused { reason })) => {
                Err(SyncError::Request(format!("peer refused: {reason}")))
            }
            Ok(result) => result.map_err(SyncError::Request),
            Err(_) => Err(SyncError::Stopped),
        }
    }

    async fn store(&self, items: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
        let (reply, stored) = oneshot::channel();
        self.ctx
            .writer
            .send(WriteRequest::Import {
                items,
                origin: Origin::Sync(self.peer),
                reply,
            })
            .await
            .map_err(|_| SyncError::Stopped)?;
        Ok(stored.await.map_err(|_| SyncError::Stopped)??)
    }

    fn registry_changed(&self) {
        let _ = self.ctx.commands.try_send(Command::RegistryChanged);
    }

    fn first_chain(&self) -> Option<KeyId> {
        Some(self.ctx.own_key)
    }

    async fn first_chain_fetched(&self) {
        // All the peer holds of the chain is here: its claim is met. Cleared
        // within the session (sessions with one peer never overlap), so that
        // no clear outlives it and erases a claim a later session noted.
        let (store, key, peer) = (self.ctx.store.clone(), self.ctx.own_key, self.peer);
        let cleared = blocking(move || store.clear_chain_claims(&key, Some(&peer.to_bytes()))).await;
        if let Err(e) = cleared.and_then(|r| r.map_err(SyncError::from)) {
            tracing::warn!(error = %e, "cannot clear a peer's claim on the node's chain");
        }
        // Not `try_send`: the queue may be full of the page's gossip.
        let _ = self.ctx.commands.send(Command::OwnChainFetched { peer }).await;
    }

    async fn first_chain_claimed(&self, highest: Seq) -> Result<(), SyncError> {
        let (store, key, peer) = (self.ctx.store.clone(), self.ctx.own_key, self.peer.to_bytes());
        blocking(move || store.note_chain_claim(&key, &peer, highest)).await??;
        Ok(())
    }
}

/// A peer in the same process: its answers come straight from its store and
/// registry, and what is pulled goes straight into the local store. Counts the
/// bytes each way as the network would frame them.
pub struct InProcessLink {
    /// The peer's store.
    pub peer_store: Store,
    /// The peer's registry.
    pub peer_registry: Arc<RwLock<Registry>>,
    /// The local store.
    pub local_store: Store,
    /// Bytes sent (requests, with their 4-byte frame headers).
    pub sent: std::sync::atomic::AtomicU64,
    /// Bytes received (responses, with their frame headers).
    pub received: std::sync::atomic::AtomicU64,
}

impl SyncLink for InProcessLink {
    async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
        use std::sync::atomic::Ordering::Relaxed;
        self.sent.fetch_add(4 + request.to_bytes().len() as u64, Relaxed);
        let (store, registry) = (self.peer_store.clone(), Arc::clone(&self.peer_registry));
        let response = tokio::task::spawn_blocking(move || answer(request, &store, &registry))
            .await
            .map_err(|_| SyncError::Stopped)?;
        self.received
            .fetch_add(4 + response.to_bytes().len() as u64, Relaxed);
        Ok(response)
    }

    async fn store(&self, items: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
        let store = self.local_store.clone();
        tokio::task::spawn_blocking(move || {
            let outcomes = store.insert_verified(&items)?;
            store.flush()?;
            Ok(outcomes)
        })
        .await
        .map_err(|_| SyncError::Stopped)?
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| SyncError::Stopped)
}

/// Runs a session with `peer` over the network.
pub(crate) async fn run_session(peer: PeerId, ctx: SessionContext) -> Result<SyncReport, SyncError> {
    let (store, registry) = (ctx.store.clone(), Arc::clone(&ctx.registry));
    pull(&NetworkLink { peer, ctx }, &store, &registry).await
}

/// The first chain: a peer listing more of it than this node holds says so
/// before any of it is stored, so that a session cut short (or failed) is not
/// taken for the whole. Whether `chains` lists it.
async fn note_first_chain_claim<L: SyncLink>(
    link: &L,
    local_store: &Store,
    chains: &[ChainSummary],
) -> Result<bool, SyncError> {
    if let Some(k) = link.first_chain()
        && let Some(listed) = chains.iter().find(|c| c.key == k).map(|c| c.highest)
    {
        let store = local_store.clone();
        if listed > blocking(move || store.numbered_up_to(&k)).await?? {
            link.first_chain_claimed(listed).await?;
        }
        return Ok(true);
    }
    Ok(false)
}

/// Pulls from the peer behind `link` what this node lacks: registry updates,
/// then bulletins in pages, each verified like gossip.
pub async fn pull<L: SyncLink>(
    link: &L,
    local_store: &Store,
    local_registry: &Arc<RwLock<Registry>>,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let (store, registry) = (local_store.clone(), Arc::clone(local_registry));
    let (ours, _, digest) = blocking(move || our_state(&store, &registry)).await??;
    let answer = exchange(
        link,
        &mut report,
        SyncRequest::Hello {
            registry_version: ours.0,
            digest,
        },
    )
    .await?;
    let (their_version, their_hash, chains) = match answer {
        SyncResponse::InStep => {
            report.in_step = true;
            // The same state: nothing of any chain to fetch.
            if link.first_chain().is_some() {
                report.first_chain_fetched = true;
                link.first_chain_fetched().await;
            }
            return Ok(report);
        }
        SyncResponse::Summary {
            registry_version,
            registry_hash,
            chains,
        } => (registry_version, registry_hash, chains),
        other => {
            return Err(SyncError::Hostile(format!(
                "unexpected answer to hello: {}",
                name(&other)
            )));
        }
    };
    check_key_order(&chains, None)?;
    // The first chain, if the first page lists it: noted before the registry
    // step, which may fail.
    let first_listed = note_first_chain_claim(link, local_store, &chains).await?;
    // Registry first: bulletins may be signed by keys only newer versions admit.
    let mut diverged = false;
    for _ in 0..MAX_REGISTRY_ROUNDS {
        let ours = local_registry.read().unwrap_or_else(|e| e.into_inner()).version();
        if ours >= their_version {
            break;
        }
        let updates = match exchange(
            link,
            &mut report,
            SyncRequest::Registry {
                from: herald_protocol::RegistryVersion(ours.0.saturating_add(1)),
            },
        )
        .await?
        {
            SyncResponse::Registry { updates } if !updates.is_empty() => updates,
            SyncResponse::Registry { .. } => break,
            other => {
                return Err(SyncError::Hostile(format!(
                    "unexpected answer to registry: {}",
                    name(&other)
                )));
            }
        };
        let (applied, other_branch) =
            apply_registry_updates(link, local_store, local_registry, updates).await?;
        report.registry_updates += applied;
        if other_branch {
            diverged = true;
            break;
        }
        // An answer that brings nothing new (what this node holds already)
        // would be asked for again and again.
        if local_registry.read().unwrap_or_else(|e| e.into_inner()).version() == ours {
            tracing::debug!("a registry answer brought nothing new; the session goes on without it");
            break;
        }
    }
    // A peer whose registry parted from this node's: where, kept as fork
    // evidence (so that both nodes report the split; nodes at one version
    // exchange no registry update otherwise).
    let (ours, our_hash, ours_at_theirs) = {
        let registry = local_registry.read().unwrap_or_else(|e| e.into_inner());
        (
            registry.version(),
            registry.hash(),
            registry.at_version(their_version).map(|s| s.hash()),
        )
    };
    let parted = if their_version > ours {
        diverged
    } else {
        ours_at_theirs != Some(their_hash)
    };
    let search = ((their_version, their_hash), (ours, our_hash));
    if parted && link.fork_search_due(search) {
        // A request that fails here ends the search, not the session: the
        // bulletins come next, and the next session searches again.
        match find_fork(
            link,
            &mut report,
            local_store,
            local_registry,
            ours.min(their_version),
            their_version,
        )
        .await
        {
            Err(e @ SyncError::Request(_)) => {
                tracing::debug!(error = %e, "the search for where the registries part stopped");
            }
            other => {
                other?;
                link.fork_searched(search);
            }
        }
    }
    // Then the bulletins this node lacks. Only chains of keys the registry
    // knows can bring anything valid (the rest would be refused item by
    // item), so each summary page keeps only those: what a session holds is
    // bounded by the registry, whatever the peer lists.
    let known = |page: Vec<ChainSummary>| -> Vec<ChainSummary> {
        let registry = local_registry.read().unwrap_or_else(|e| e.into_inner());
        page.into_iter()
            .filter(|c| registry.current().signing_key(&c.key).is_some())
            .collect()
    };
    // A full summary goes on in further pages, in key order.
    let mut after = chains.last().map(|c| c.key);
    let mut page_len = chains.len();
    let mut chains = known(chains);
    let mut pages = 1;
    // The last key of a summary cut short: chains above it were not read.
    let mut cut_after = None;
    while let Some(last) = after
        && page_len == sync::MAX_CHAINS
    {
        if pages == MAX_SUMMARY_PAGES {
            cut_after = Some(last);
            tracing::warn!(
                pages,
                "the peer's summary goes on past {MAX_SUMMARY_PAGES} pages; syncing the chains read so far"
            );
            break;
        }
        let page = match exchange(link, &mut report, SyncRequest::Chains { after: last }).await {
            Ok(SyncResponse::Summary { chains, .. }) => chains,
            Ok(other) => {
                return Err(SyncError::Hostile(format!(
                    "unexpected answer to chains: {}",
                    name(&other)
                )));
            }
            // A peer built before summaries had pages cannot read the
            // request: sync what its first page listed. (A peer that
            // refuses it as busy can read it: the session fails, and the
            // next one asks again.)
            Err(SyncError::Request(reason)) if !reason.starts_with(BUSY) => {
                tracing::info!(%reason, "the peer did not answer for more chains; syncing the chains read so far");
                cut_after = Some(last);
                break;
            }
            Err(e) => return Err(e),
        };
        check_key_order(&page, Some(last))?;
        pages += 1;
        page_len = page.len();
        after = page.last().map(|c| c.key);
        chains.extend(known(page));
    }
    // The first chain, if a later page listed it.
    if !first_listed {
        note_first_chain_claim(link, local_store, &chains).await?;
    }
    let first = link.first_chain();
    let store = local_store.clone();
    let mut wants = blocking(move || -> Result<Vec<Want>, StoreError> {
        let ours = store.summaries()?;
        let mut failure = None;
        let wants = sync::plan_wants(&ours, &chains, |key, from, to| {
            store.holes(key, from, to).unwrap_or_else(|e| {
                failure = Some(e);
                Vec::new()
            })
        });
        failure.map_or(Ok(wants), Err)
    })
    .await??;
    report.behind = wanted_count(&wants);
    // The first chain goes to the front: it is asked for, and stored, first.
    if let Some(i) = first.and_then(|k| wants.iter().position(|w| w.key == k)) {
        let want = wants.remove(i);
        wants.insert(0, want);
    }
    // Unless the summary was cut short before the chain's key: what the peer
    // holds of it is not known.
    let mut first_pending = first.is_some_and(|k| cut_after.is_none_or(|last| k <= last));
    // Whether the first chain is all fetched now (reported once).
    let mut first_done = |wants: &[Want], report: &mut SyncReport| {
        let done = first_pending && !wants.iter().any(|w| Some(w.key) == first);
        if done {
            first_pending = false;
            report.first_chain_fetched = true;
        }
        done
    };
    if first_done(&wants, &mut report) {
        link.first_chain_fetched().await;
    }
    let mut received: BTreeMap<KeyId, Vec<Seq>> = BTreeMap::new();
    for _ in 0..MAX_PAGES_PER_SESSION {
        if wants.is_empty() {
            break;
        }
        let request_wants = cap_ranges(&wants);
        let (pages, complete) = match exchange(
            link,
            &mut report,
            SyncRequest::Fetch {
                wants: request_wants.clone(),
            },
        )
        .await?
        {
            SyncResponse::Page { bulletins, complete } => (bulletins, complete),
            other => {
                return Err(SyncError::Hostile(format!(
                    "unexpected answer to fetch: {}",
                    name(&other)
                )));
            }
        };
        let accepted = verify_page(local_registry, pages, request_wants.clone()).await?;
        if accepted.is_empty() {
            // A page with nothing wanted: the peer has nothing more (or
            // stalls). Marked complete, it holds nothing more of what was
            // asked: the first chain may be all here (a peer listing more
            // than it serves must not keep its claim alive).
            if complete {
                wants = without_asked(wants, &request_wants);
                if first_done(&wants, &mut report) {
                    link.first_chain_fetched().await;
                }
            }
            break;
        }
        for (bulletin, _) in &accepted {
            received
                .entry(bulletin.body().signer)
                .or_default()
                .push(bulletin.body().seq);
        }
        let outcomes = link.store(accepted).await?;
        report.new_bulletins += outcomes.iter().filter(|o| matches!(o, Stored::New)).count() as u64;
        wants = sync::remaining_wants(&wants, &received);
        if complete {
            // The peer sent all it holds of what this request asked for.
            wants = without_asked(wants, &request_wants);
        }
        if first_done(&wants, &mut report) {
            link.first_chain_fetched().await;
        }
    }
    Ok(report)
}

/// `wants` less the ranges (and evidence) that `asked` covered.
fn without_asked(wants: Vec<Want>, asked: &[Want]) -> Vec<Want> {
    let asked: HashMap<KeyId, &Want> = asked.iter().map(|a| (a.key, a)).collect();
    wants
        .into_iter()
        .filter_map(|mut w| {
            let Some(a) = asked.get(&w.key) else {
                return Some(w);
            };
            w.ranges
                .retain(|r| !a.ranges.iter().any(|x| x.from <= r.from && r.to <= x.to));
            if a.evidence {
                w.evidence = false;
            }
            (!w.ranges.is_empty() || w.evidence).then_some(w)
        })
        .collect()
}

fn name(r: &SyncResponse) -> &'static str {
    match r {
        SyncResponse::InStep => "in-step",
        SyncResponse::Summary { .. } => "summary",
        SyncResponse::Registry { .. } => "registry",
        SyncResponse::Page { .. } => "page",
        SyncResponse::Refused { .. } => "refused",
    }
}

fn wanted_count(wants: &[Want]) -> u64 {
    wants
        .iter()
        .flat_map(|w| w.ranges.iter())
        .map(|r| r.to.0.saturating_sub(r.from.0).saturating_add(1))
        .fold(0u64, u64::saturating_add)
}

/// At most [`sync::MAX_RANGES`] ranges per request.
fn cap_ranges(wants: &[Want]) -> Vec<Want> {
    let mut left = sync::MAX_RANGES;
    let mut out = Vec::new();
    for w in wants.iter().take(sync::MAX_CHAINS) {
        if left == 0 {
            break;
        }
        let ranges: Vec<_> = w.ranges.iter().take(left).copied().collect();
        left -= ranges.len();
        out.push(Want {
            key: w.key,
            ranges,
            evidence: w.evidence,
        });
    }
    out
}

/// Applies `updates` (each saved and flushed before the registry moves on,
/// off the async workers: it holds the registry's write lock across a disk
/// sync); how many advanced the registry, and whether the peer's registry
/// turned out to follow another branch (a fork): then the registry step
/// ends there, without blaming the peer (its side of the fork is as valid
/// as this node's), and the session goes on with the bulletins.
async fn apply_registry_updates<L: SyncLink>(
    link: &L,
    store: &Store,
    registry: &Arc<RwLock<Registry>>,
    updates: Vec<Vec<u8>>,
) -> Result<(usize, bool), SyncError> {
    let (store, registry) = (store.clone(), Arc::clone(registry));
    let (applied, outcome) = blocking(move || {
        let mut applied = 0;
        for bytes in updates {
            let update = match SignedRegistryUpdate::from_bytes(&bytes) {
                Ok(update) => update,
                Err(e) => return (applied, Err(SyncError::Hostile(format!("registry update: {e}")))),
            };
            match crate::validate::apply_registry_update(&registry, &store, update) {
                Ok(Ok(Applied::Advanced(version))) => {
                    tracing::info!(%version, "registry advanced by sync");
                    applied += 1;
                }
                Ok(Ok(Applied::Switched { from, to, .. })) => {
                    tracing::warn!(%from, %to, "registry switched to the peer's branch by sync");
                    applied += 1;
                }
                Ok(Ok(Applied::AlreadyHeld)) => {}
                Ok(Err(e @ (RegistryError::Fork { .. } | RegistryError::WrongPrevious { .. }))) => {
                    tracing::warn!(reason = %e, "the peer's registry follows another branch (a registry fork); its later versions are not taken");
                    return (applied, Ok(true));
                }
                Ok(Err(e)) => {
                    return (
                        applied,
                        Err(SyncError::Hostile(format!("registry update refused: {e}"))),
                    );
                }
                Err(e) => return (applied, Err(e.into())),
            }
        }
        (applied, Ok(false))
    })
    .await?;
    // Who may connect may have changed with what was applied, even if a
    // later update was refused.
    if applied > 0 {
        link.registry_changed();
    }
    outcome.map(|diverged| (applied, diverged))
}

/// Most registry answers one session spends looking for where a peer's
/// registry parts from this node's.
const MAX_FORK_SEARCH: usize = 8;
/// Versions each step of that search goes back.
const FORK_SEARCH_STEP: u64 = 8;
/// Most further registry answers one session reads of the peer's branch
/// once it has found where the two part.
const MAX_BRANCH_PAGES: usize = 4;

/// Finds where the peer's registry parts from this node's, at version `at` or
/// below, and reads the peer's branch from there (towards `top`, its
/// version, within [`MAX_BRANCH_PAGES`] further answers). The branch rule
/// decides ([`crate::validate::adopt_registry_branch`]): the peer's branch
/// replaces this node's from there if it holds an update a threshold of
/// members approved and this node's holds only changes members made alone;
/// otherwise its first update is kept as fork evidence (reported, and kept
/// in the store). The peer is not blamed for its branch, only for answers
/// that do not decode.
async fn find_fork<L: SyncLink>(
    link: &L,
    report: &mut SyncReport,
    store: &Store,
    registry: &Arc<RwLock<Registry>>,
    at: RegistryVersion,
    top: RegistryVersion,
) -> Result<(), SyncError> {
    let mut at = at.0;
    let mut from = at.saturating_sub(FORK_SEARCH_STEP - 1).max(2);
    for _ in 0..MAX_FORK_SEARCH {
        // Version 1 is the network itself: it cannot part.
        if at < 2 || from > at {
            return Ok(());
        }
        let updates = registry_answer(link, report, RegistryVersion(from)).await?;
        // The first of its versions from `from` to `at` that is not this
        // node's (where in the answer, which version, and whether it builds
        // on this node's version before it); else the last version it
        // answered the same as this node's.
        let mut parting = None;
        let mut same_to = None;
        {
            let registry = registry.read().unwrap_or_else(|e| e.into_inner());
            for (i, (expected, update)) in (from..=at).zip(&updates).enumerate() {
                let version = update.body().version;
                let Some(ours) = registry.at_version(version).filter(|_| version.0 == expected) else {
                    break;
                };
                if ours.hash() != update.hash() {
                    let before = registry
                        .at_version(RegistryVersion(expected - 1))
                        .map(|s| s.hash());
                    parting = Some((i, expected, update.body().prev == before));
                    break;
                }
                same_to = Some(expected);
            }
        }
        match (parting, same_to) {
            // The first version asked for differs: they part lower still.
            (Some((_, expected, false)), _) if expected == from && from > 2 => {
                at = from - 1;
                from = at.saturating_sub(FORK_SEARCH_STEP - 1).max(2);
            }
            // An answer cut short by its budget, all of it the same: on from
            // where it stopped.
            (None, Some(same)) if same < at => from = same + 1,
            (Some((i, _, true)), _) => {
                let mut branch = Vec::new();
                extend_branch(&mut branch, updates.into_iter().skip(i));
                // The rest of the branch matters unless the peer's first
                // update needs the threshold (that decides): a later one that
                // does decides whether it displaces this node's branch, or,
                // if this node's holds one too, that the fork is not settled.
                let decided = branch.first().is_some_and(herald_keys::needs_threshold);
                for _ in 0..if decided { 0 } else { MAX_BRANCH_PAGES } {
                    let Some(next) = branch.last().and_then(|u| u.body().version.next()) else {
                        break;
                    };
                    if next > top {
                        break;
                    }
                    let held = branch.len();
                    extend_branch(&mut branch, registry_answer(link, report, next).await?);
                    if branch.len() == held {
                        break;
                    }
                }
                judge_branch(link, report, store, registry, branch).await?;
                return Ok(());
            }
            // Its answer shows no difference (it may have cut it short), or
            // one this node cannot place.
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The peer's registry updates from `from` on, decoded.
async fn registry_answer<L: SyncLink>(
    link: &L,
    report: &mut SyncReport,
    from: RegistryVersion,
) -> Result<Vec<SignedRegistryUpdate>, SyncError> {
    match exchange(link, report, SyncRequest::Registry { from }).await? {
        SyncResponse::Registry { updates } => updates
            .iter()
            .map(|bytes| {
                SignedRegistryUpdate::from_bytes(bytes)
                    .map_err(|e| SyncError::Hostile(format!("registry update: {e}")))
            })
            .collect(),
        other => Err(SyncError::Hostile(format!(
            "unexpected answer to registry: {}",
            name(&other)
        ))),
    }
}

/// Appends to `branch` the updates that follow its last one in turn, up to
/// the first that does not.
fn extend_branch(
    branch: &mut Vec<SignedRegistryUpdate>,
    updates: impl IntoIterator<Item = SignedRegistryUpdate>,
) {
    for update in updates {
        let follows = branch
            .last()
            .is_none_or(|last| last.body().version.next() == Some(update.body().version));
        if !follows {
            break;
        }
        branch.push(update);
    }
}

/// Takes in the peer's `branch` by the branch rule (off the async workers:
/// it holds the registry's write lock across a disk sync).
async fn judge_branch<L: SyncLink>(
    link: &L,
    report: &mut SyncReport,
    store: &Store,
    registry: &Arc<RwLock<Registry>>,
    branch: Vec<SignedRegistryUpdate>,
) -> Result<(), SyncError> {
    let Some(version) = branch.first().map(|u| u.body().version) else {
        return Ok(());
    };
    let (store, registry) = (store.clone(), Arc::clone(registry));
    let outcome =
        blocking(move || crate::validate::adopt_registry_branch(&registry, &store, branch)).await??;
    match outcome {
        Ok(Applied::Switched { from, to, .. }) => {
            tracing::warn!(%from, %to, "registry switched to the peer's branch by sync");
            report.registry_updates += (to.0 - from.0 + 1) as usize;
            link.registry_changed();
        }
        Err(e @ RegistryError::Fork { .. }) => {
            tracing::warn!(%version, reason = %e, "registry fork: the peer's registry parts from this node's here; the evidence is kept");
        }
        Err(e) => {
            tracing::warn!(%version, reason = %e, "the peer's registry parts from this node's here, on a branch this node does not take");
        }
        Ok(_) => {}
    }
    Ok(())
}

/// Checks a page exactly like gossip: every bulletin decodes, was asked for,
/// and verifies against the registry. One bad item condemns the page.
async fn verify_page(
    registry: &Arc<RwLock<Registry>>,
    page: Vec<Vec<u8>>,
    wants: Vec<Want>,
) -> Result<Vec<(SignedBulletin, MemberId)>, SyncError> {
    let registry = Arc::clone(registry);
    blocking(move || {
        let asked: HashSet<KeyId> = wants.iter().map(|w| w.key).collect();
        let mut out = Vec::with_capacity(page.len());
        for bytes in page {
            let bulletin = SignedBulletin::from_bytes(&bytes)
                .map_err(|e| SyncError::Hostile(format!("undecodable bulletin: {e}")))?;
            let body = bulletin.body();
            let want = wants.iter().find(|w| w.key == body.signer);
            let in_range = want.is_some_and(|w| {
                w.evidence || w.ranges.iter().any(|r| r.from <= body.seq && body.seq <= r.to)
            });
            if !asked.contains(&body.signer) || !in_range {
                return Err(SyncError::Hostile(format!(
                    "bulletin {} #{} was not asked for",
                    body.signer.fmt_short(),
                    body.seq
                )));
            }
            // The lock is taken per bulletin, not per page: a page takes up to
            // ~150 ms to verify, and a registry update waiting for the write
            // lock would hold up every other reader (the network loop) meanwhile.
            let verdict = registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .check_bulletin(&bulletin);
            match verdict {
                Ok(member) => out.push((bulletin, member)),
                // The peer may not know of a revocation or removal yet: skip
                // the item without holding it against the peer.
                Err(e) if crate::validate::is_standing_change(&e) => {
                    tracing::debug!(id = %bulletin.id().fmt_short(), reason = %e, "not accepted under this registry");
                }
                Err(e) => {
                    return Err(SyncError::Hostile(format!("bulletin {}: {e}", bulletin.id().fmt_short())));
                }
            }
        }
        Ok(out)
    })
    .await?
}

/// How often a node syncs with a random connected peer.
pub(crate) const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use herald_keys::{SecretKey, approve, propose_update};
    use herald_protocol::registry::REGISTRY_FORMAT;
    use herald_protocol::{RegistryOp, RegistryUpdate, Timestamp};

    /// `n` self-managed updates of the one member, each rotating its member key.
    fn rotations(net: &crate::test_network::OneMember, n: u8) -> Registry {
        let mut registry = net.registry.clone();
        let member = net.member_id();
        let mut current = net.member.clone();
        for i in 0..n {
            let next = SecretKey::from_seed(&[200 + i; 32]);
            let body = RegistryUpdate {
                format: REGISTRY_FORMAT,
                version: RegistryVersion(registry.version().0 + 1),
                prev: Some(registry.hash()),
                created: Timestamp(1_000 + u64::from(i)),
                ops: vec![RegistryOp::RotateMemberKey {
                    member,
                    new_key: next.id(),
                }],
            };
            let mut update = propose_update(&body).unwrap();
            for k in [&current, &next] {
                update.push_approval(approve(k, &update)).unwrap();
            }
            registry.apply(update).unwrap();
            current = next;
        }
        registry
    }

    /// A peer that claims registry version `version` and answers each
    /// request for it with `updates`, whatever it asks from; it holds no
    /// bulletins.
    struct RegistryPeer {
        version: u64,
        updates: Vec<Vec<u8>>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl RegistryPeer {
        fn new(version: u64, updates: Vec<Vec<u8>>) -> Self {
            RegistryPeer {
                version,
                updates,
                asked: Default::default(),
            }
        }
    }

    impl SyncLink for RegistryPeer {
        async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
            Ok(match request {
                SyncRequest::Hello { .. } => SyncResponse::Summary {
                    registry_version: RegistryVersion(self.version),
                    registry_hash: RegistryHash::from_bytes([7; 32]),
                    chains: Vec::new(),
                },
                SyncRequest::Registry { .. } => {
                    self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    SyncResponse::Registry {
                        updates: self.updates.clone(),
                    }
                }
                _ => SyncResponse::Page {
                    bulletins: Vec::new(),
                    complete: true,
                },
            })
        }

        async fn store(&self, _: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn a_registry_answer_that_brings_nothing_new_is_not_asked_for_again() {
        let net = crate::test_network::one_member();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        let registry = Arc::new(RwLock::new(net.registry.clone()));
        // It claims a later registry, and answers with what this node holds.
        let link = RegistryPeer::new(50, vec![net.genesis.to_bytes()]);
        let report = pull(&link, &store, &registry).await.unwrap();
        assert_eq!(report.registry_updates, 0);
        assert_eq!(link.asked.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_peer_on_another_branch_of_the_registry_is_not_blamed() {
        let net = crate::test_network::one_member();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        let ours = net.adding_key(&net.registry, &SecretKey::from_seed(&[60; 32]));
        let mut local = net.registry.clone();
        local.apply(ours).unwrap();
        let registry = Arc::new(RwLock::new(local));
        // Its version 2 (a fork of ours), then its 3 (chained on its 2).
        let theirs = net.adding_key(&net.registry, &SecretKey::from_seed(&[61; 32]));
        let mut branch = net.registry.clone();
        branch.apply(theirs.clone()).unwrap();
        let next = net.adding_key(&branch, &SecretKey::from_seed(&[62; 32]));
        for updates in [vec![theirs.to_bytes(), next.to_bytes()], vec![next.to_bytes()]] {
            // A peer whose registry forked from this node's: its version 2
            // is another, and it is at version 3.
            let link = RegistryPeer::new(3, updates);
            let report = pull(&link, &store, &registry).await.unwrap();
            assert_eq!(report.registry_updates, 0);
            assert_eq!(registry.read().unwrap().version(), RegistryVersion(2));
        }
    }

    /// A peer holding a registry of its own, answering as a node does, with
    /// registry answers of at most the given budget; it counts the registry
    /// requests it gets, and remembers the searches as a node does.
    struct BranchPeer(
        Registry,
        usize,
        std::sync::atomic::AtomicUsize,
        std::sync::Mutex<HashSet<ForkSearch>>,
    );

    impl BranchPeer {
        fn new(registry: Registry, budget: usize) -> Self {
            BranchPeer(registry, budget, Default::default(), Default::default())
        }
    }

    impl SyncLink for BranchPeer {
        fn fork_search_due(&self, search: ForkSearch) -> bool {
            !self.3.lock().unwrap().contains(&search)
        }

        fn fork_searched(&self, search: ForkSearch) {
            self.3.lock().unwrap().insert(search);
        }

        async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
            if matches!(request, SyncRequest::Registry { .. }) {
                self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(match request {
                SyncRequest::Hello { .. } => SyncResponse::Summary {
                    registry_version: self.0.version(),
                    registry_hash: self.0.hash(),
                    chains: Vec::new(),
                },
                SyncRequest::Registry { from } => SyncResponse::Registry {
                    updates: registry_page(&self.0, from, self.1),
                },
                _ => SyncResponse::Page {
                    bulletins: Vec::new(),
                    complete: true,
                },
            })
        }

        async fn store(&self, _: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
            Ok(Vec::new())
        }
    }

    /// The one member's registry with `n` keys added after the genesis, from seed `seed`
    /// on: a branch of its own for each seed.
    fn branch(net: &crate::test_network::OneMember, seed: u8, n: u8) -> Registry {
        extend(net, &net.registry, seed, n)
    }

    /// `registry` with `n` keys added, from seed `seed` on.
    fn extend(net: &crate::test_network::OneMember, registry: &Registry, seed: u8, n: u8) -> Registry {
        let mut registry = registry.clone();
        for i in 0..n {
            let update = net.adding_key(&registry, &SecretKey::from_seed(&[seed + i; 32]));
            registry.apply(update).unwrap();
        }
        registry
    }

    #[tokio::test]
    async fn a_peer_whose_registry_parted_from_this_nodes_leaves_the_fork_as_evidence() {
        let net = crate::test_network::one_member();
        // Ours and theirs part at version 2, whatever their lengths; the last case has
        // both at version 12, so the search steps back twice.
        for (ours, theirs) in [(1, 1), (1, 2), (2, 1), (11, 11)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), net.registry.network()).unwrap();
            let registry = Arc::new(RwLock::new(branch(&net, 60, ours)));
            let peer = branch(&net, 120, theirs);
            let report = pull(
                &BranchPeer::new(peer.clone(), PAGE_BUDGET_BYTES),
                &store,
                &registry,
            )
            .await
            .unwrap();
            let held = registry.read().unwrap();
            assert_eq!(report.registry_updates, 0, "{ours}/{theirs}");
            assert_eq!(held.version(), RegistryVersion(u64::from(ours) + 1), "unchanged");
            let forks: Vec<_> = held
                .forks()
                .iter()
                .map(|f| (f.version, f.theirs.hash()))
                .collect();
            assert_eq!(
                forks,
                vec![(RegistryVersion(2), peer.history()[1].hash())],
                "{ours}/{theirs}: the fork found where they part"
            );
            assert_eq!(
                store.registry_forks().unwrap(),
                vec![peer.history()[1].clone()],
                "and kept"
            );
        }
        // A peer on the same branch, behind or ahead, leaves no evidence.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        let registry = Arc::new(RwLock::new(branch(&net, 60, 2)));
        for length in [1, 3] {
            let peer = BranchPeer::new(branch(&net, 60, length), PAGE_BUDGET_BYTES);
            pull(&peer, &store, &registry).await.unwrap();
        }
        assert_eq!(registry.read().unwrap().version(), RegistryVersion(4));
        assert!(registry.read().unwrap().forks().is_empty());
        // Parted at version 7, both at 12, and one update to an answer: the search goes
        // on past answers that are the same as this node's.
        let common = branch(&net, 30, 5);
        let (ours, theirs) = (extend(&net, &common, 60, 6), extend(&net, &common, 120, 6));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        let registry = Arc::new(RwLock::new(ours));
        let peer = BranchPeer::new(theirs.clone(), 1);
        pull(&peer, &store, &registry).await.unwrap();
        let asked = peer.2.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            asked,
            3 + MAX_BRANCH_PAGES,
            "versions 5, 6, then 7 where they part, then as far into the peer's branch as it reads"
        );
        pull(&peer, &store, &registry).await.unwrap();
        assert_eq!(
            peer.2.load(std::sync::atomic::Ordering::Relaxed),
            asked,
            "not searched again while the peer stands where it stood"
        );
        let forks: Vec<_> = registry
            .read()
            .unwrap()
            .forks()
            .iter()
            .map(|f| (f.version, f.theirs.hash()))
            .collect();
        assert_eq!(forks, vec![(RegistryVersion(7), theirs.history()[6].hash())]);
    }

    #[tokio::test]
    async fn a_peers_branch_with_a_threshold_approved_update_displaces_changes_members_made_alone() {
        let net = crate::test_network::three_members();
        let key = |n: u8| SecretKey::from_seed(&[n; 32]);
        // Ours: two changes member 0 made alone. Theirs: member 1's own, then one
        // the threshold approved, then member 2's own.
        let mut ours = net.registry.clone();
        for n in [40, 41] {
            ours.apply(net.own_key(&ours, 0, &key(n))).unwrap();
        }
        let mut theirs = net.registry.clone();
        theirs.apply(net.own_key(&theirs, 1, &key(50))).unwrap();
        theirs.apply(net.by_threshold(&theirs)).unwrap();
        theirs.apply(net.own_key(&theirs, 2, &key(51))).unwrap();
        // In one answer, or one update to an answer (the branch read on in pages).
        for budget in [PAGE_BUDGET_BYTES, 1] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), net.registry.network()).unwrap();
            for update in ours.history() {
                store.save_registry_update(update).unwrap();
            }
            let registry = Arc::new(RwLock::new(ours.clone()));
            let report = pull(&BranchPeer::new(theirs.clone(), budget), &store, &registry)
                .await
                .unwrap();
            let held = registry.read().unwrap();
            assert_eq!(held.history(), theirs.history(), "budget {budget}");
            assert_eq!(report.registry_updates, 3);
            assert_eq!(store.registry_history().unwrap(), theirs.history());
            assert_eq!(
                store.registry_forks().unwrap(),
                vec![ours.history()[1].clone()],
                "what gave way is kept as evidence"
            );
            let restarted =
                crate::node::stored_registry(&store, net.genesis.hash(), crate::node::SavedForks::Settle)
                    .unwrap()
                    .unwrap();
            assert_eq!(restarted.history(), theirs.history());
            assert_eq!(restarted.forks().len(), 1, "and reported after a restart");
        }
        // The other way round, nothing changes. The peer's branch is read whole
        // (versions 2 and 3): it holds no change that needs the threshold, so the fork is
        // settled in this node's favour.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        let registry = Arc::new(RwLock::new(theirs.clone()));
        let peer = BranchPeer::new(ours.clone(), 1);
        let report = pull(&peer, &store, &registry).await.unwrap();
        assert_eq!(report.registry_updates, 0);
        assert_eq!(registry.read().unwrap().history(), theirs.history());
        assert_eq!(store.registry_forks().unwrap(), vec![ours.history()[1].clone()]);
        assert_eq!(peer.2.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(crate::view::forked_versions(&registry.read().unwrap()), (0, 1));

        // Both branches hold a change that needs the threshold after a member's own change:
        // neither gives way, and the fork is not settled on either side.
        let mut contested = ours.clone();
        contested.apply(net.by_threshold(&contested)).unwrap();
        for (held, other) in [(&theirs, &contested), (&contested, &theirs)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), net.registry.network()).unwrap();
            for update in held.history() {
                store.save_registry_update(update).unwrap();
            }
            let registry = Arc::new(RwLock::new(held.clone()));
            pull(&BranchPeer::new(other.clone(), 1), &store, &registry)
                .await
                .unwrap();
            let registry = registry.read().unwrap();
            assert_eq!(registry.history(), held.history());
            assert_eq!(crate::view::forked_versions(&registry), (1, 0));
            // And so after a restart, though the other branch is not read again.
            let restarted =
                crate::node::stored_registry(&store, net.genesis.hash(), crate::node::SavedForks::Settle)
                    .unwrap()
                    .unwrap();
            assert_eq!(restarted.history(), held.history());
            assert_eq!(
                crate::view::forked_versions(&restarted),
                (1, 0),
                "still contested"
            );
        }
    }

    #[test]
    fn a_registry_answer_holds_what_fits_its_budget_and_one_at_least() {
        let net = crate::test_network::one_member();
        let registry = rotations(&net, 4);
        let size = |v: u64| registry.history()[v as usize - 1].to_bytes().len();
        let page = |from: u64, budget: usize| registry_page(&registry, RegistryVersion(from), budget);
        assert_eq!(page(2, usize::MAX).len(), 4, "versions 2 to 5");
        assert_eq!(page(2, size(2) + size(3)).len(), 2);
        assert_eq!(page(2, size(2) + size(3) - 1).len(), 1);
        assert_eq!(page(3, 0), vec![registry.history()[2].to_bytes()], "one at least");
        assert!(page(6, usize::MAX).is_empty(), "nothing after the last");
        assert!(page(u64::MAX, usize::MAX).is_empty());
    }
}
