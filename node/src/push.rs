//! Tree dissemination over libp2p streams: one long-lived stream each way
//! between two linked nodes, carrying the frames of [`crate::tree`]. Frames
//! are read and written by tasks of their own, off the swarm's polling loop:
//! what arrives new goes from the task that read it straight to the node's
//! check (the [`Sink`]), whose verdict forwards it ([`Forwarder`]), so a hop
//! never waits for the swarm's loop.
//!
//! Frame layout (integers little-endian; docs/PROTOCOL.md, section 11B):
//!
//! ```text
//! frame:  length n (u32, of what follows) | tag (u8) | payload (n - 1)
//! tag 0   Push:  the message
//! tag 1   IHave: 1 to 1024 message ids (32 bytes each, SHA-256 of the message)
//! tag 2   Prune: empty
//! tag 3   Graft: 1 to 1024 message ids
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::tree::{Arrival, Frame, MAX_IDS_PER_FRAME, MessageId, Sends, Tree, TreeConfig};

/// Frames queued for one peer at most, and their bytes at most; beyond
/// either, frames are dropped (the sync protocol brings back what a slow
/// peer missed).
const LINK_QUEUE: usize = 1024;
const LINK_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// How long one batch of frames may take to write. A peer that stops
/// reading has its stream dropped after it, and another opened; meanwhile
/// its queue fills and frames for it are dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the rest of a frame may take to come once its length has: a
/// frame cannot stay half-read, holding what has come of it. (Between
/// frames, and within the four bytes of a length, a stream may wait for as
/// long as its connection lives; it holds one of its peer's two reading
/// slots, not another's.)
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Ids in `IHave` and `Graft` frames taken from one stream at once, at most,
/// and per second after: frames beyond are skipped unread by the tree, so a
/// member flooding them costs the node little more than reading the bytes.
/// Honest peers announce what they forward, far below this.
const CONTROL_IDS_BURST: f64 = 16_384.0;
const CONTROL_IDS_PER_SECOND: f64 = 16_384.0;

/// Messages sent from the queue of those kept while no peer was linked, at
/// most, at each tick of the tree (100 ms), when a peer is linked, and with
/// each new one; the rest wait while every link's queue is more than half
/// full. The queue holds the node's own bulletins and fresh ones it took in
/// by sync or from a bundle, in the order they came.
const PENDING_BATCH: usize = 256;

/// Bytes gathered into one write at most.
const WRITE_BATCH: usize = 64 * 1024;

/// The node's own messages kept while no peer is linked, at most, and their
/// bytes at most; beyond either the oldest is let go (it is stored, and
/// travels by sync).
pub const MAX_PENDING: usize = 10_000;
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Streams from one peer read at once, at most (one is the protocol; a
/// second covers a reconnection whose old stream has not ended yet).
const MAX_STREAMS_PER_PEER: usize = 2;

/// What the links report to the node.
#[derive(Debug)]
pub enum PushEvent {
    /// A peer sent a frame that breaks the layout; its stream is closed.
    Malformed {
        /// The peer.
        from: PeerId,
        /// What was wrong.
        reason: String,
    },
    /// The node asked this peer to stop pushing to it in full (a prune).
    Pruned {
        /// The peer.
        peer: PeerId,
    },
    /// The node's own messages held back while no peer was linked (or while
    /// every link's queue was full) have all gone out: this many.
    BacklogSent {
        /// How many went out from the backlog since it was last empty.
        count: usize,
    },
}

/// A message seen for the first time, handed to the node's check: the peer
/// that sent it, its id, its bytes, and the handle that reports the verdict
/// ([`Forwarder::accept`] or [`Forwarder::drop_message`]). Returns false if
/// the node cannot check it now; the message is then dropped (not
/// forwarded; sync fetches it later if it was good).
pub type Sink = Arc<dyn Fn(PeerId, MessageId, Arc<[u8]>, Forwarder) -> bool + Send + Sync>;

/// Reports the node's verdict on a message to the tree.
#[derive(Clone)]
pub struct Forwarder {
    inner: Weak<Mutex<Inner>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarder")
    }
}

impl Forwarder {
    /// A handle tied to no tree: its reports go nowhere.
    #[cfg(test)]
    pub(crate) fn detached() -> Forwarder {
        Forwarder { inner: Weak::new() }
    }

    /// The node accepted the message from `from`: forward it.
    pub fn accept(&self, from: PeerId, id: MessageId, data: Arc<[u8]>) {
        if let Some(inner) = self.inner.upgrade() {
            let mut inner = lock(&inner);
            let sends = inner.tree.accept(id, data, Some(from), Instant::now());
            inner.dispatch(sends);
        }
    }

    /// The node refused or ignored the message: it goes no further.
    pub fn drop_message(&self, id: MessageId) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner).tree.drop_message(id, Instant::now());
        }
    }
}

/// Publishes the node's own messages ([`Push::publisher`]).
#[derive(Clone)]
pub struct Publisher {
    inner: Weak<Mutex<Inner>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Publisher {
    /// [`Push::publish`]; does nothing once the tree has stopped (the
    /// message is stored and travels by sync).
    pub fn publish(&self, data: Arc<[u8]>) {
        if let Some(inner) = self.inner.upgrade() {
            let id = message_id(&data);
            lock(&inner).publish(id, data);
        }
    }
}

/// The id of a message.
pub fn message_id(data: &[u8]) -> MessageId {
    Sha256::digest(data).into()
}

struct Link {
    queue: mpsc::Sender<Frame>,
    /// Bytes of the frames in `queue`.
    queued: Arc<AtomicUsize>,
    /// Tells apart a link from the one that replaced it.
    generation: u64,
}

/// The bytes a frame takes on the wire.
fn wire_len(frame: &Frame) -> usize {
    5 + match frame {
        Frame::Push(data) => data.len(),
        Frame::IHave(ids) | Frame::Graft(ids) => ids.len() * 32,
        Frame::Prune => 0,
    }
}

struct Inner {
    tree: Tree<PeerId>,
    links: HashMap<PeerId, Link>,
    next_generation: u64,
    dropped_frames: u64,
    /// Messages the node could not check (its checks were all busy).
    unchecked: u64,
    /// Streams being read, by peer.
    reading: HashMap<PeerId, usize>,
    /// Own messages waiting for a linked peer (or for room in the links'
    /// queues), oldest first, and their bytes.
    pending: VecDeque<(MessageId, Arc<[u8]>)>,
    pending_bytes: usize,
    /// Of those, how many went out since `pending` was last empty.
    pending_sent: usize,
    /// A [`PushEvent::BacklogSent`] count not yet delivered (the channel was
    /// full): tried again at each tick.
    unsent_notice: usize,
    /// Where [`PushEvent::BacklogSent`] goes (none in unit tests).
    events: Option<mpsc::Sender<PushEvent>>,
    /// Control frames skipped: their sender was over its budget.
    skipped_control: u64,
}

impl Inner {
    fn new(config: TreeConfig) -> Self {
        Inner {
            tree: Tree::new(config),
            links: HashMap::new(),
            next_generation: 0,
            dropped_frames: 0,
            unchecked: 0,
            reading: HashMap::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_sent: 0,
            unsent_notice: 0,
            events: None,
            skipped_control: 0,
        }
    }

    /// Links a peer: its queue, and its place in the tree; sends it what
    /// waits. Returns the link's generation and the queue's receiving end,
    /// for its writer.
    fn link(&mut self, peer: PeerId) -> (u64, Queue) {
        let (queue, frames) = mpsc::channel(LINK_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let generation = self.next_generation;
        self.next_generation += 1;
        self.links.insert(
            peer,
            Link {
                queue,
                queued: Arc::clone(&queued),
                generation,
            },
        );
        self.tree.peer_up(peer);
        self.send_pending();
        (generation, Queue { frames, queued })
    }

    /// Sends the node's own message, after those still waiting; keeps it
    /// while no peer is linked.
    fn publish(&mut self, id: MessageId, data: Arc<[u8]>) {
        if self.pending.is_empty() && self.tree.has_peers() {
            let sends = self.tree.accept(id, data, None, Instant::now());
            self.dispatch(sends);
            return;
        }
        self.pending_bytes += data.len();
        self.pending.push_back((id, data));
        while self.pending.len() > MAX_PENDING || self.pending_bytes > MAX_PENDING_BYTES {
            let Some((_, old)) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= old.len();
            tracing::warn!("publish queue full; the oldest queued bulletin waits for sync");
        }
        self.send_pending();
    }

    /// Sends a batch of the messages waiting, while some link's queue is at
    /// most half full (a stalled peer does not hold the others back: frames
    /// for it are dropped, as for any message, and it gets them by sync).
    fn send_pending(&mut self) {
        for _ in 0..PENDING_BATCH {
            let roomy = self.links.values().any(|l| {
                l.queued.load(Ordering::Relaxed) <= LINK_QUEUE_BYTES / 2
                    && l.queue.capacity() >= LINK_QUEUE / 2
            });
            if !self.tree.has_peers() || !roomy {
                break;
            }
            let Some((id, data)) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= data.len();
            self.pending_sent += 1;
            let sends = self.tree.accept(id, data, None, Instant::now());
            self.dispatch(sends);
        }
        if self.pending.is_empty() && self.pending_sent > 0 {
            let count = std::mem::take(&mut self.pending_sent);
            tracing::info!(
                count,
                "own bulletins held back (no peer linked, or every link's queue full): all sent"
            );
            self.unsent_notice += count;
        }
        if self.unsent_notice > 0
            && let Some(events) = &self.events
        {
            match events.try_send(PushEvent::BacklogSent {
                count: self.unsent_notice,
            }) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => self.unsent_notice = 0,
                // Full: the next tick tries again.
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
    }

    /// Answers a peer's graft; answers its queue had no room for cost it
    /// nothing of its allowance.
    fn graft(&mut self, peer: PeerId, ids: &[MessageId], now: Instant) {
        let sends = self.tree.receive_graft(peer, ids, now);
        let dropped = self.dispatch(sends);
        self.tree.refund_graft(peer, dropped);
    }

    /// Queues each frame for its peer. Returns the bytes of the messages
    /// dropped for want of room.
    fn dispatch(&mut self, sends: Sends<PeerId>) -> usize {
        let mut dropped = 0;
        for (peer, frame) in sends {
            let Some(link) = self.links.get(&peer) else {
                continue;
            };
            let size = wire_len(&frame);
            // Counted before the writer can take it, and given back if it is not queued.
            let before = link.queued.fetch_add(size, Ordering::Relaxed);
            let refused = if before + size > LINK_QUEUE_BYTES {
                Some(frame)
            } else {
                link.queue.try_send(frame).err().map(|e| e.into_inner())
            };
            if let Some(frame) = refused {
                link.queued.fetch_sub(size, Ordering::Relaxed);
                self.dropped_frames += 1;
                if let Frame::Push(data) = frame {
                    dropped += data.len();
                }
                tracing::debug!(peer = %crate::network::short_peer(&peer), "push queue full: frame dropped");
            }
        }
        dropped
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Nothing here panics while holding the lock; if something did, the
    // state is still a set of peers and ids that later operations keep
    // usable: go on with it rather than stop disseminating.
    inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tree dissemination of one node. Dropping it ends its tasks.
pub struct Push {
    inner: Arc<Mutex<Inner>>,
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    /// Set when the handle is dropped: every task of the tree ends.
    closed: watch::Sender<bool>,
}

impl Drop for Push {
    fn drop(&mut self) {
        self.closed.send_replace(true);
    }
}

/// Runs `task` until the tree is closed.
async fn until_closed(task: impl std::future::Future<Output = ()>, mut closed: watch::Receiver<bool>) {
    tokio::select! {
        () = task => {}
        // An error means the sender is gone: closed too.
        _ = closed.wait_for(|c| *c) => {}
    }
}

/// Counts for status and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Peers the node pushes to in full.
    pub eager: usize,
    /// Peers that get ids only.
    pub lazy: usize,
    /// Peers that push to the node in full.
    pub inbound: usize,
    /// Frames dropped because a peer's queue was full.
    pub dropped_frames: u64,
    /// Messages dropped because the node's checks were all busy.
    pub unchecked: u64,
    /// Own messages waiting for a linked peer, or for room in the links' queues.
    pub pending: usize,
    /// `IHave` and `Graft` frames skipped: their sender was over its budget.
    pub skipped_control: u64,
    /// What the tree has done.
    pub counts: crate::tree::TreeCounts,
}

impl Push {
    /// Starts accepting `protocol` streams from peers; new messages go to
    /// `sink`. Returns the handle and the node's receiver of [`PushEvent`]s.
    /// Must run inside a tokio runtime.
    pub fn start(
        mut control: libp2p_stream::Control,
        protocol: StreamProtocol,
        config: TreeConfig,
        max_message: usize,
        sink: Sink,
    ) -> Result<(Push, mpsc::Receiver<PushEvent>), String> {
        let (events_tx, events) = mpsc::channel(64);
        let mut state = Inner::new(config);
        state.events = Some(events_tx.clone());
        let inner = Arc::new(Mutex::new(state));
        let mut incoming = control
            .accept(protocol.clone())
            .map_err(|_| format!("the stream protocol {protocol} is already in use"))?;
        let (closed, closed_rx) = watch::channel(false);
        let weak = Arc::downgrade(&inner);
        let readers_closed = closed_rx.clone();
        let accept = async move {
            while let Some((peer, stream)) = incoming.next().await {
                let Some(inner) = weak.upgrade() else { break };
                {
                    let mut state = lock(&inner);
                    let reading = state.reading.entry(peer).or_insert(0);
                    if *reading >= MAX_STREAMS_PER_PEER {
                        tracing::debug!(peer = %crate::network::short_peer(&peer), "push stream refused: too many from this peer");
                        continue;
                    }
                    *reading += 1;
                }
                let reader = read_loop(inner, peer, stream, events_tx.clone(), sink.clone(), max_message);
                tokio::spawn(until_closed(reader, readers_closed.clone()));
            }
        };
        tokio::spawn(until_closed(accept, closed_rx.clone()));
        tokio::spawn(until_closed(tick_loop(Arc::downgrade(&inner), config), closed_rx));
        Ok((
            Push {
                inner,
                control,
                protocol,
                closed,
            },
            events,
        ))
    }

    /// Links a peer (a member's node, connected): opens the stream to it.
    pub fn add_peer(&self, peer: PeerId) {
        let mut inner = lock(&self.inner);
        if inner.links.contains_key(&peer) {
            return;
        }
        let (generation, queue) = inner.link(peer);
        let writer = write_loop(
            Arc::downgrade(&self.inner),
            self.control.clone(),
            self.protocol.clone(),
            peer,
            generation,
            queue,
        );
        tokio::spawn(until_closed(writer, self.closed.subscribe()));
    }

    /// Unlinks a peer (disconnected or banned).
    pub fn remove_peer(&self, peer: PeerId) {
        let mut inner = lock(&self.inner);
        inner.links.remove(&peer);
        inner.tree.peer_down(peer);
    }

    /// Sends the node's own message to every linked peer; while none is,
    /// keeps it (up to [`MAX_PENDING`] and [`MAX_PENDING_BYTES`]) and sends it,
    /// in order, once a peer is linked.
    pub fn publish(&self, data: Arc<[u8]>) {
        let id = message_id(&data);
        lock(&self.inner).publish(id, data);
    }

    /// A handle that publishes from any thread (the store's writer), without
    /// a hop through the swarm's loop.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Test hook: writes raw bytes to every linked peer, on a stream of their
    /// own, as if they were frames.
    #[cfg(feature = "test-hooks")]
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let peers: Vec<PeerId> = lock(&self.inner).links.keys().copied().collect();
        for peer in peers {
            let mut control = self.control.clone();
            let protocol = self.protocol.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move {
                if let Ok(mut stream) = control.open_stream(peer, protocol).await {
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.close().await;
                }
            });
        }
    }

    /// Test hook: writes raw bytes to `peer` on a stream of its own under
    /// `protocol` (another of the node's protocols), closes its side, and
    /// replies with what the peer writes back (up to 1 MiB) until it closes
    /// its own.
    #[cfg(feature = "test-hooks")]
    pub fn send_raw_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
        bytes: Vec<u8>,
        reply: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    ) {
        let mut control = self.control.clone();
        tokio::spawn(async move {
            let answer = async {
                let mut stream = control
                    .open_stream(peer, protocol)
                    .await
                    .map_err(|e| e.to_string())?;
                stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
                stream.close().await.map_err(|e| e.to_string())?;
                let mut answer = Vec::new();
                stream
                    .take(1 << 20)
                    .read_to_end(&mut answer)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(answer)
            };
            let _ = reply.send(answer.await);
        });
    }

    /// A handle that reports verdicts to the tree.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Counts.
    pub fn stats(&self) -> PushStats {
        let inner = lock(&self.inner);
        let (eager, lazy, inbound) = inner.tree.degrees();
        PushStats {
            eager,
            lazy,
            inbound,
            dropped_frames: inner.dropped_frames,
            unchecked: inner.unchecked,
            pending: inner.pending.len(),
            skipped_control: inner.skipped_control,
            counts: inner.tree.counts(),
        }
    }
}

async fn tick_loop(inner: Weak<Mutex<Inner>>, config: TreeConfig) {
    let period = config.ihave_interval.max(std::time::Duration::from_millis(1));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut inner = lock(&inner);
        let sends = inner.tree.tick(Instant::now());
        inner.dispatch(sends);
        inner.send_pending();
    }
}

/// Pause before opening a link's stream again after it failed, first and most.
const REOPEN_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const REOPEN_MOST: std::time::Duration = std::time::Duration::from_secs(5);

/// A link's queue, as its writer sees it.
struct Queue {
    frames: mpsc::Receiver<Frame>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn took(&self, frame: &Frame) {
        self.queued.fetch_sub(wire_len(frame), Ordering::Relaxed);
    }
}

async fn write_loop(
    inner: Weak<Mutex<Inner>>,
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    peer: PeerId,
    generation: u64,
    mut queue: Queue,
) {
    let linked = || {
        inner.upgrade().is_some_and(|inner| {
            lock(&inner)
                .links
                .get(&peer)
                .is_some_and(|l| l.generation == generation)
        })
    };
    let mut pause = REOPEN_FIRST;
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    // A stream fails when the peer drops it (its node was busy when it came,
    // or it restarted): open another while the peer is linked. Frames queued
    // meanwhile wait; frames lost with the stream come back by sync.
    loop {
        let reason = match control.open_stream(peer, protocol.clone()).await {
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                // A node that does not speak the protocol cannot be on the tree.
                tracing::warn!(peer = %crate::network::short_peer(&peer), "peer does not take bulletins by the tree; it gets them by sync");
                if let Some(inner) = inner.upgrade() {
                    let mut inner = lock(&inner);
                    if inner.links.get(&peer).is_some_and(|l| l.generation == generation) {
                        inner.links.remove(&peer);
                        inner.tree.peer_down(peer);
                    }
                }
                return;
            }
            Ok(mut stream) => {
                pause = REOPEN_FIRST;
                loop {
                    let Some(frame) = queue.frames.recv().await else {
                        return;
                    };
                    queue.took(&frame);
                    buf.clear();
                    encode(&frame, &mut buf);
                    while buf.len() < WRITE_BATCH {
                        match queue.frames.try_recv() {
                            Ok(frame) => {
                                queue.took(&frame);
                                encode(&frame, &mut buf);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(reason) = write_batch(&mut stream, &buf, WRITE_TIMEOUT).await {
                        break reason;
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        tracing::debug!(peer = %crate::network::short_peer(&peer), %reason, "push stream closed");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(REOPEN_MOST);
        if !linked() {
            return;
        }
    }
}

/// Writes one batch of frames and flushes it, within `limit`; says why not.
/// (The caller then drops the stream, closing it.)
async fn write_batch<W: futures::AsyncWrite + Unpin>(
    stream: &mut W,
    buf: &[u8],
    limit: Duration,
) -> Result<(), String> {
    let written = async {
        stream.write_all(buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(limit, written).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("a write took over {} ms", limit.as_millis())),
    }
}

/// Counts a stream being read from a peer, while it lives.
struct Reading {
    inner: Weak<Mutex<Inner>>,
    peer: PeerId,
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut state = lock(&inner);
            if let Some(reading) = state.reading.get_mut(&self.peer) {
                *reading = reading.saturating_sub(1);
                if *reading == 0 {
                    state.reading.remove(&self.peer);
                }
            }
        }
    }
}

async fn read_loop(
    inner: Arc<Mutex<Inner>>,
    peer: PeerId,
    mut stream: Stream,
    events: mpsc::Sender<PushEvent>,
    sink: Sink,
    max_message: usize,
) {
    let forwarder = Forwarder {
        inner: Arc::downgrade(&inner),
    };
    let _reading = Reading {
        inner: Arc::downgrade(&inner),
        peer,
    };
    let mut budget = Budget::new(Instant::now());
    loop {
        let frame = match read_frame(&mut stream, max_message, FRAME_TIMEOUT).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(ReadError::Io(_)) => return,
            Err(ReadError::Malformed(reason)) => {
                let _ = events.send(PushEvent::Malformed { from: peer, reason }).await;
                return;
            }
        };
        let now = Instant::now();
        match frame {
            Frame::Push(data) => {
                let id = message_id(&data);
                let (arrival, pruned) = {
                    let mut inner = lock(&inner);
                    let prunes = inner.tree.counts().prunes;
                    let (arrival, sends) = inner.tree.receive_push(peer, id, now);
                    inner.dispatch(sends);
                    (arrival, inner.tree.counts().prunes > prunes)
                };
                if pruned {
                    // Waits for room (rarely: a prune is made once per peer
                    // until the links change), so that the report is not lost.
                    let _ = events.send(PushEvent::Pruned { peer }).await;
                }
                if arrival == Arrival::New && !sink(peer, id, data, forwarder.clone()) {
                    let mut inner = lock(&inner);
                    inner.tree.forget(id);
                    inner.unchecked += 1;
                    // Logged at the 1st, 2nd, 4th, 8th... so that a flood does not flood the log.
                    if inner.unchecked.is_power_of_two() {
                        tracing::warn!(
                            peer = %crate::network::short_peer(&peer),
                            ignored = inner.unchecked,
                            "too many messages being checked; message ignored (sync fetches it later)"
                        );
                    }
                }
            }
            Frame::IHave(ids) | Frame::Graft(ids) if !budget.take(ids.len(), now) => {
                let mut inner = lock(&inner);
                inner.skipped_control += 1;
                // Logged at the 1st, 2nd, 4th, 8th... so that a flood does not flood the log.
                if inner.skipped_control.is_power_of_two() {
                    tracing::warn!(
                        peer = %crate::network::short_peer(&peer),
                        skipped = inner.skipped_control,
                        "announcements and grafts beyond the peer's budget skipped"
                    );
                }
            }
            Frame::IHave(ids) => lock(&inner).tree.receive_ihave(peer, &ids, now),
            Frame::Prune => lock(&inner).tree.receive_prune(peer),
            Frame::Graft(ids) => lock(&inner).graft(peer, &ids, now),
        }
    }
}

/// What a stream may still send of ids in control frames.
struct Budget {
    ids: f64,
    at: Instant,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            ids: CONTROL_IDS_BURST,
            at: now,
        }
    }

    /// Takes `n` ids from the budget if it holds them.
    fn take(&mut self, n: usize, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * CONTROL_IDS_PER_SECOND;
        self.ids = (self.ids + refill).min(CONTROL_IDS_BURST);
        self.at = now;
        let n = n as f64;
        if n > self.ids {
            return false;
        }
        self.ids -= n;
        true
    }
}

/// Appends a frame's bytes.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let (tag, payload): (u8, &[u8]) = match frame {
        Frame::Push(data) => (0, data),
        Frame::IHave(ids) => (1, ids.as_flattened()),
        Frame::Prune => (2, &[]),
        Frame::Graft(ids) => (3, ids.as_flattened()),
    };
    // Frames are built from messages of at most the node's size limit and
    // from at most MAX_IDS_PER_FRAME ids: far below u32::MAX.
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(payload);
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The stream failed or ended inside a frame.
    Io(std::io::Error),
    /// The bytes break the layout.
    Malformed(String),
}

/// Decodes a frame's tag and payload.
pub fn decode(tag: u8, payload: Vec<u8>) -> Result<Frame, String> {
    let ids = |payload: &[u8]| -> Result<Vec<MessageId>, String> {
        if payload.is_empty() || !payload.len().is_multiple_of(32) || payload.len() / 32 > MAX_IDS_PER_FRAME {
            return Err(format!(
                "an id list of {} bytes (1 to {MAX_IDS_PER_FRAME} ids of 32 bytes)",
                payload.len()
            ));
        }
        Ok(payload
            .chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                id
            })
            .collect())
    };
    match tag {
        0 if payload.is_empty() => Err("an empty message".into()),
        0 => Ok(Frame::Push(Arc::from(payload))),
        1 => Ok(Frame::IHave(ids(&payload)?)),
        2 if payload.is_empty() => Ok(Frame::Prune),
        2 => Err("a prune with a payload".into()),
        3 => Ok(Frame::Graft(ids(&payload)?)),
        other => Err(format!("unknown frame tag {other}")),
    }
}

/// Reads one frame; `None` at a clean end of the stream. Once its length
/// has come, the rest must come within `timeout`.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_message: usize,
    timeout: Duration,
) -> Result<Option<Frame>, ReadError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match stream.read(&mut len[got..]).await.map_err(ReadError::Io)? {
            0 if got == 0 => return Ok(None),
            0 => return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    let max = max_message.max(MAX_IDS_PER_FRAME * 32) + 1;
    if len == 0 || len > max {
        return Err(ReadError::Malformed(format!(
            "a frame of {len} bytes (1 to {max})"
        )));
    }
    // Read as the bytes come: a peer that announces a large frame and stalls
    // holds no more memory than it has sent.
    let rest = async {
        let mut tag = [0u8; 1];
        stream.read_exact(&mut tag).await?;
        let want = (len - 1) as u64;
        let mut payload = Vec::new();
        let got = (&mut *stream).take(want).read_to_end(&mut payload).await?;
        if got as u64 != want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok((tag[0], payload))
    };
    let (tag, payload) = match tokio::time::timeout(timeout, rest).await {
        Ok(read) => read.map_err(ReadError::Io)?,
        Err(_) => return Err(ReadError::Io(std::io::ErrorKind::TimedOut.into())),
    };
    decode(tag, payload).map(Some).map_err(ReadError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_what_was_encoded() {
        let frames = [
            Frame::Push(Arc::from(vec![1u8, 2, 3])),
            Frame::IHave(vec![[7u8; 32], [8u8; 32]]),
            Frame::Prune,
            Frame::Graft(vec![[9u8; 32]]),
        ];
        for frame in frames {
            let mut buf = Vec::new();
            encode(&frame, &mut buf);
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            assert_eq!(len, buf.len() - 4);
            assert_eq!(decode(buf[4], buf[5..].to_vec()), Ok(frame));
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert!(decode(0, vec![]).is_err());
        assert!(decode(1, vec![0; 31]).is_err());
        assert!(decode(1, vec![]).is_err());
        assert!(decode(3, vec![0; 32 * (MAX_IDS_PER_FRAME + 1)]).is_err());
        assert!(decode(2, vec![1]).is_err());
        assert!(decode(4, vec![1]).is_err());
    }

    /// A stream that has sent what it had and sends nothing more.
    struct Stall;

    impl AsyncRead for Stall {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Pending
        }
    }

    impl futures::AsyncWrite for Stall {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Pending
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_write_to_a_peer_that_stopped_reading_times_out() {
        let mut frames = Vec::new();
        encode(&Frame::Prune, &mut frames);
        // A stream that takes the bytes: written.
        let mut open = futures::io::Cursor::new(Vec::new());
        assert_eq!(write_batch(&mut open, &frames, T).await, Ok(()));
        assert_eq!(open.into_inner(), frames);
        // A stream that takes nothing (the peer stopped reading and its window is full): the
        // write gives up after its limit, with the reason.
        let limit = Duration::from_millis(50);
        match tokio::time::timeout(T, write_batch(&mut Stall, &frames, limit)).await {
            Ok(Err(reason)) => assert_eq!(reason, "a write took over 50 ms"),
            other => panic!("expected the write to time out, got {other:?}"),
        }
    }

    async fn read(bytes: Vec<u8>, max_message: usize) -> Result<Option<Frame>, ReadError> {
        read_frame(&mut futures::io::Cursor::new(bytes), max_message, T).await
    }

    fn length(n: u32) -> Vec<u8> {
        n.to_le_bytes().to_vec()
    }

    #[tokio::test]
    async fn frames_are_read_within_their_limits() {
        let max = 1000;
        let mut bytes = Vec::new();
        encode(&Frame::Push(Arc::from(vec![1u8; max])), &mut bytes);
        // The largest id list: 1,024 ids (above the message limit here).
        let ids = Frame::IHave(vec![[2u8; 32]; MAX_IDS_PER_FRAME]);
        encode(&ids, &mut bytes);
        encode(&Frame::Prune, &mut bytes);
        let mut stream = futures::io::Cursor::new(bytes);
        let mut next = async || read_frame(&mut stream, max, T).await;
        assert!(matches!(next().await, Ok(Some(Frame::Push(d))) if d.len() == max));
        assert!(matches!(next().await, Ok(Some(f)) if f == ids));
        assert!(matches!(next().await, Ok(Some(Frame::Prune))));
        assert!(matches!(next().await, Ok(None)), "a clean end");

        // An empty frame, and one longer than the limit (refused from its
        // length alone: nothing follows it).
        assert!(matches!(read(length(0), max).await, Err(ReadError::Malformed(_))));
        let limit = (MAX_IDS_PER_FRAME * 32 + 1) as u32;
        match read(length(limit + 1), max).await {
            Err(ReadError::Malformed(reason)) => {
                assert!(reason.contains(&format!("{}", limit + 1)), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A stream that ends inside a frame, or inside its length.
        let mut cut = length(10);
        cut.extend_from_slice(&[0, 1, 2, 3]);
        assert!(matches!(read(cut, max).await, Err(ReadError::Io(_))));
        assert!(matches!(read(vec![5, 0], max).await, Err(ReadError::Io(_))));
        // A bad tag once the frame is whole.
        let mut tagged = length(2);
        tagged.extend_from_slice(&[9, 0]);
        assert!(matches!(read(tagged, max).await, Err(ReadError::Malformed(r)) if r.contains("tag 9")));
    }

    #[test]
    fn control_frames_beyond_the_budget_are_refused_until_it_refills() {
        let now = Instant::now();
        let mut budget = Budget::new(now);
        let burst = CONTROL_IDS_BURST as usize;
        assert!(budget.take(burst - MAX_IDS_PER_FRAME, now));
        assert!(budget.take(MAX_IDS_PER_FRAME, now));
        assert!(!budget.take(1, now), "spent");
        let half = now + Duration::from_millis(500);
        let refilled = (CONTROL_IDS_PER_SECOND / 2.0) as usize;
        assert!(!budget.take(refilled + 1, half));
        assert!(budget.take(refilled, half));
        // Never more than the burst, however long the stream was quiet.
        let later = half + Duration::from_secs(3600);
        assert!(!budget.take(burst + 1, later));
        assert!(budget.take(burst, later));
    }

    /// Takes what a link's writer would, now.
    fn drain(queue: &mut Queue) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Ok(frame) = queue.frames.try_recv() {
            queue.took(&frame);
            frames.push(frame);
        }
        frames
    }

    fn own(inner: &mut Inner, data: Vec<u8>) {
        let data: Arc<[u8]> = Arc::from(data);
        inner.publish(message_id(&data), data);
    }

    #[test]
    fn a_links_queue_is_bounded_in_bytes() {
        let mut inner = Inner::new(TreeConfig::default());
        let (_, mut queue) = inner.link(PeerId::random());
        // Frames of 1 MiB on the wire: eight fill the queue's bytes.
        let size = 1024 * 1024 - 5;
        for n in 0..10u8 {
            own(&mut inner, vec![n; size]);
        }
        assert_eq!(inner.dropped_frames, 2);
        assert_eq!(queue.queued.load(Ordering::Relaxed), LINK_QUEUE_BYTES);
        let sent = drain(&mut queue);
        assert_eq!(sent.len(), 8);
        assert_eq!(
            queue.queued.load(Ordering::Relaxed),
            0,
            "what the writer took is counted out"
        );
        own(&mut inner, vec![10; size]);
        assert_eq!(drain(&mut queue).len(), 1);
        assert_eq!(inner.dropped_frames, 2);
    }

    #[test]
    fn graft_answers_dropped_for_want_of_room_cost_no_allowance() {
        let mut inner = Inner::new(TreeConfig::default());
        let peer = PeerId::random();
        let (_, mut queue) = inner.link(peer);
        // Messages of 1 MiB on the wire: the allowance (8 MiB) pays for eight
        // answers, and eight fill the queue's bytes.
        let size = 1024 * 1024 - 5;
        let mut ids = Vec::new();
        for n in 0..12u8 {
            let data: Arc<[u8]> = Arc::from(vec![n; size]);
            ids.push(message_id(&data));
            inner.publish(message_id(&data), data);
            drain(&mut queue);
        }
        let now = Instant::now();
        inner.graft(peer, &ids[..4], now);
        assert_eq!(drain(&mut queue).len(), 4, "half the allowance spent");
        // The queue fills with other messages: the next answers find no room.
        for n in 12..20u8 {
            own(&mut inner, vec![n; size]);
        }
        inner.graft(peer, &ids[4..8], now);
        assert_eq!(inner.dropped_frames, 4);
        assert_eq!(drain(&mut queue).len(), 8, "the other messages only");
        // The dropped answers were paid back: the other half is still there.
        inner.graft(peer, &ids[4..8], now);
        assert_eq!(drain(&mut queue).len(), 4);
        inner.graft(peer, &ids[8..12], now);
        assert_eq!(drain(&mut queue).len(), 0, "the allowance is spent");
    }

    #[test]
    fn the_notice_that_the_backlog_went_out_waits_for_room_in_the_channel() {
        let mut inner = Inner::new(TreeConfig::default());
        let (events, mut notices) = mpsc::channel(1);
        // The channel is full (a flood of other reports).
        assert!(events.try_send(PushEvent::BacklogSent { count: 0 }).is_ok());
        inner.events = Some(events);
        for n in 0..3u8 {
            own(&mut inner, vec![n; 4]);
        }
        let (_, _queue) = inner.link(PeerId::random());
        assert!(inner.pending.is_empty(), "all sent");
        assert!(matches!(
            notices.try_recv(),
            Ok(PushEvent::BacklogSent { count: 0 })
        ));
        // The next tick tells it.
        inner.send_pending();
        assert!(matches!(
            notices.try_recv(),
            Ok(PushEvent::BacklogSent { count: 3 })
        ));
        inner.send_pending();
        assert!(notices.try_recv().is_err(), "once");
    }

    #[test]
    fn own_messages_kept_while_alone_go_out_in_order_while_some_link_has_room() {
        let mut inner = Inner::new(TreeConfig::default());
        let (events, mut notices) = mpsc::channel(8);
        inner.events = Some(events);
        let all = 600u32;
        for n in 0..all {
            own(&mut inner, n.to_le_bytes().to_vec());
        }
        assert_eq!(inner.pending.len(), all as usize);
        let (_, mut stalled) = inner.link(PeerId::random());
        // Linked: one batch at once.
        assert_eq!(inner.pending.len(), all as usize - PENDING_BATCH);
        // The next goes to the end of the queue, not ahead of those waiting.
        own(&mut inner, all.to_le_bytes().to_vec());
        assert_eq!(inner.pending.len(), all as usize + 1 - 2 * PENDING_BATCH);
        // A link more than half full holds the rest back while it is the only one.
        inner.send_pending();
        let held_back = LINK_QUEUE / 2 + 1;
        assert_eq!(stalled.frames.len(), held_back);
        inner.send_pending();
        assert_eq!(stalled.frames.len(), held_back);
        // A second link with room lets the rest go, to both (the first still
        // has room for them in its queue).
        assert!(notices.try_recv().is_err(), "not all sent yet");
        let (_, open) = inner.link(PeerId::random());
        assert!(inner.pending.is_empty());
        // Told once, with every message the backlog held.
        assert!(matches!(
            notices.try_recv(),
            Ok(PushEvent::BacklogSent { count }) if count == all as usize + 1
        ));
        assert!(notices.try_recv().is_err(), "told once");
        let numbers = |queue: &mut Queue| -> Vec<u32> {
            drain(queue)
                .into_iter()
                .map(|f| match f {
                    Frame::Push(d) => u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let mut open = open;
        assert_eq!(
            numbers(&mut stalled),
            (0..=all).collect::<Vec<_>>(),
            "all of them, in order"
        );
        assert_eq!(
            numbers(&mut open),
            (held_back as u32..=all).collect::<Vec<_>>(),
            "the rest, in order"
        );
        assert_eq!(inner.pending_bytes, 0);
    }

    #[tokio::test]
    async fn a_frame_whose_rest_never_comes_times_out() {
        let mut started = length(10);
        started.push(0);
        let mut stream = futures::io::Cursor::new(started).chain(Stall);
        let read = read_frame(&mut stream, 1000, Duration::from_millis(50));
        match tokio::time::timeout(T, read).await {
            Ok(Err(ReadError::Io(e))) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Idle between frames is no error: the wait for a length has no limit.
        let mut idle = futures::io::Cursor::new(Vec::new()).chain(Stall);
        let waiting = read_frame(&mut idle, 1000, Duration::from_millis(50));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), waiting)
                .await
                .is_err()
        );
    }
}
