//! Tree dissemination (eager and lazy push, after Plumtree): the state of
//! which peers get a message in full at once and which only hear of its id,
//! with no I/O. `push` drives it over libp2p streams.
//!
//! Each direction of a link is eager or lazy on its own, and the receiving
//! end decides: every link starts eager, and a node asks a peer to stop
//! pushing to it (`Prune`) once that peer's last [`PRUNE_AFTER`] messages
//! all came second, as long as at least [`TreeConfig::min_inbound`] peers
//! (3) still push to it. So each node receives each message about that many
//! times, whatever the number of its links, from the peers that bring some
//! messages first. A group of nodes can still close itself off (each
//! member's pushers all inside it); bulletins from outside then reach it by
//! graft, within about half a second. A node or link that fails does not
//! cut a node off. A node pushes its own messages in full to every peer, so that
//! the first hop reaches them all at once. Peers that do not get a message in
//! full are told its id, in batches (`IHave`); a node that hears of an id it
//! does not get in full within the graft timeout asks the announcer for it
//! (`Graft`), which makes that peer push to it again: the tree mends itself.
//! A message is forwarded only after the node has accepted it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message's id: SHA-256 of its bytes.
pub type MessageId = [u8; 32];

/// Most ids in one `IHave` or `Graft` frame.
pub const MAX_IDS_PER_FRAME: usize = 1024;
/// Most ids heard of and not received that the node waits for at once;
/// announcements beyond it are not followed (sync fetches what they name).
pub const MAX_MISSING: usize = 16 * 1024;
/// Most of those ids one peer may have announced: a member that announces
/// ids it never sends cannot take the room honest peers' announcements need.
pub const MAX_MISSING_PER_PEER: usize = MAX_MISSING / 8;
/// Most ids remembered at once (about 120 bytes each); beyond it the oldest
/// are forgotten first. A copy of a forgotten message is checked again and
/// found already stored.
pub const MAX_SEEN: usize = 256 * 1024;
/// Bytes of held messages the node sends one peer in answer to its grafts:
/// at most this many at once, refilled at this many per second. A graft is a
/// few bytes asking for up to 1,024 messages; without a bound a member could
/// ask for the same ones again and again. What a graft does not get, sync
/// fetches.
pub const GRAFT_BURST_BYTES: usize = 8 * 1024 * 1024;
pub const GRAFT_BYTES_PER_SECOND: usize = 2 * 1024 * 1024;
/// Copies in a row that came second from a peer before the node prunes it.
pub const PRUNE_AFTER: u32 = 4;
/// Most bytes of accepted messages kept to answer grafts; beyond it the
/// oldest are let go first (their ids are still remembered).
pub const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

/// Timings of the tree.
#[derive(Debug, Clone, Copy)]
pub struct TreeConfig {
    /// How long ids wait to be announced to lazy peers, at most.
    pub ihave_interval: Duration,
    /// How long a node waits for a message it has heard of before it asks the
    /// announcer for it.
    pub graft_timeout: Duration,
    /// How long ids are remembered (duplicates are recognised) and accepted
    /// messages kept to answer grafts.
    pub remember: Duration,
    /// Peers that keep pushing to the node in full, at least (while it has
    /// that many links). With 2, groups of nodes that hear each other first
    /// now and then closed themselves off in the benchmark (each member's
    /// pushers all inside the group), and bulletins from outside waited for a
    /// graft; with 3, none did (docs/BENCHMARKS.md).
    pub min_inbound: usize,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            ihave_interval: Duration::from_millis(100),
            graft_timeout: Duration::from_millis(400),
            remember: Duration::from_secs(120),
            min_inbound: 3,
        }
    }
}

/// A frame between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message in full.
    Push(Arc<[u8]>),
    /// Ids of messages the sender has accepted.
    IHave(Vec<MessageId>),
    /// Stop pushing to the sender in full: it gets what you send by another link.
    Prune,
    /// Push to the sender in full from now on, starting with these messages.
    Graft(Vec<MessageId>),
}

/// What became of a message received in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First seen: check it, then report it with [`Tree::accept`] or [`Tree::drop_message`].
    New,
    /// Seen before (checked, being checked, or dropped): nothing to do.
    Duplicate,
}

#[derive(Debug, Clone)]
enum Seen {
    /// Received, being checked.
    Checking,
    /// Accepted: kept to answer grafts, within [`MAX_HELD_BYTES`].
    Held(Option<Arc<[u8]>>),
    /// Refused or ignored: not forwarded, not asked for again.
    Dropped,
    /// Received, and not checked (no free slot): taken as new if it comes again.
    Forgotten,
}

#[derive(Debug)]
struct Missing<P> {
    /// Peers that announced it, in order; the first is asked next.
    announcers: VecDeque<P>,
    /// The peer asked for it last; it still counts as an announcer (its
    /// share of awaited ids) until the next is asked or the id is done.
    asked: Option<P>,
    /// When to ask.
    deadline: Instant,
}

/// What the tree has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeCounts {
    /// Messages received in full for the first time.
    pub new: u64,
    /// Copies received of messages seen before.
    pub duplicates: u64,
    /// Prunes sent.
    pub prunes: u64,
    /// Ids asked for by graft.
    pub grafted: u64,
    /// `IHave` frames sent.
    pub ihaves: u64,
    /// Announced ids not followed: the node awaited too many, or too many from
    /// that peer.
    pub ihaves_ignored: u64,
    /// Held messages not sent in answer to a graft: the peer had used its
    /// graft allowance.
    pub grafts_refused: u64,
}

/// What a peer may still be sent in answer to its grafts.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    bytes: f64,
    at: Instant,
}

/// Frames to send: (peer, frame).
pub type Sends<P> = Vec<(P, Frame)>;

/// The tree's state for one node.
#[derive(Debug)]
pub struct Tree<P> {
    config: TreeConfig,
    /// Peers the node pushes to in full (they have not pruned it).
    eager: HashSet<P>,
    /// Peers the node tells of ids only (they pruned it).
    lazy: HashSet<P>,
    /// Peers that push to the node in full (it has not pruned them), with the
    /// copies in a row each brought second.
    inbound: HashMap<P, u32>,
    /// Peers asked by graft to push again, until their first message comes:
    /// a peer that announces and never delivers takes no pusher's place.
    grafted: HashSet<P>,
    seen: HashMap<MessageId, Seen>,
    /// When each id was first seen, oldest first, to forget them.
    seen_order: VecDeque<(Instant, MessageId)>,
    /// Ids to announce to each lazy peer.
    announce: HashMap<P, Vec<MessageId>>,
    missing: HashMap<MessageId, Missing<P>>,
    /// How many of the missing ids each peer is an announcer of (or was
    /// asked for last).
    announced: HashMap<P, usize>,
    /// Each peer's graft allowance.
    allowance: HashMap<P, Allowance>,
    /// Ids whose bytes are held, oldest first, and their total size.
    held_order: VecDeque<MessageId>,
    held_bytes: usize,
    counts: TreeCounts,
}

impl<P: Copy + Eq + Hash + Ord + std::fmt::Debug> Tree<P> {
    /// An empty tree.
    pub fn new(config: TreeConfig) -> Self {
        Tree {
            config,
            eager: HashSet::new(),
            lazy: HashSet::new(),
            inbound: HashMap::new(),
            grafted: HashSet::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            announce: HashMap::new(),
            missing: HashMap::new(),
            announced: HashMap::new(),
            allowance: HashMap::new(),
            held_order: VecDeque::new(),
            held_bytes: 0,
            counts: TreeCounts::default(),
        }
    }

    /// What the tree has done.
    pub fn counts(&self) -> TreeCounts {
        self.counts
    }

    /// The timings.
    pub fn config(&self) -> TreeConfig {
        self.config
    }

    /// A peer is linked: it starts eager.
    pub fn peer_up(&mut self, peer: P) {
        self.lazy.remove(&peer);
        self.eager.insert(peer);
        self.inbound.insert(peer, 0);
    }

    /// A peer's link is gone.
    pub fn peer_down(&mut self, peer: P) {
        self.eager.remove(&peer);
        self.lazy.remove(&peer);
        self.inbound.remove(&peer);
        self.grafted.remove(&peer);
        self.announce.remove(&peer);
        self.allowance.remove(&peer);
        if self.announced.remove(&peer).is_some() {
            for m in self.missing.values_mut() {
                m.announcers.retain(|p| *p != peer);
                if m.asked == Some(peer) {
                    m.asked = None;
                }
            }
        }
    }

    /// No longer waits for `id`.
    fn unmiss(&mut self, id: &MessageId) {
        if let Some(m) = self.missing.remove(id) {
            for p in m.announcers.into_iter().chain(m.asked) {
                self.unannounce(p);
            }
        }
    }

    fn unannounce(&mut self, peer: P) {
        if let Some(n) = self.announced.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.announced.remove(&peer);
            }
        }
    }

    /// Whether any peer is linked.
    pub fn has_peers(&self) -> bool {
        !self.eager.is_empty() || !self.lazy.is_empty()
    }

    /// Whether `peer` is linked.
    pub fn is_linked(&self, peer: &P) -> bool {
        self.eager.contains(peer) || self.lazy.contains(peer)
    }

    /// (eager, lazy, inbound) peer counts: peers the node pushes to in full,
    /// peers it tells of ids, peers that push to it in full.
    pub fn degrees(&self) -> (usize, usize, usize) {
        (self.eager.len(), self.lazy.len(), self.inbound.len())
    }

    /// Whether the node pushes to `peer` in full.
    pub fn is_eager(&self, peer: &P) -> bool {
        self.eager.contains(peer)
    }

    /// Whether `peer` pushes to the node in full.
    pub fn is_inbound(&self, peer: &P) -> bool {
        self.inbound.contains_key(peer)
    }

    /// Whether the message is known (being checked, held or dropped).
    pub fn knows(&self, id: &MessageId) -> bool {
        self.seen.get(id).is_some_and(|s| !matches!(s, Seen::Forgotten))
    }

    /// A message held, to answer a graft.
    pub fn held(&self, id: &MessageId) -> Option<Arc<[u8]>> {
        match self.seen.get(id) {
            Some(Seen::Held(data)) => data.clone(),
            _ => None,
        }
    }

    fn remember(&mut self, id: MessageId, state: Seen, now: Instant) {
        if self.seen.insert(id, state).is_none() {
            self.seen_order.push_back((now, id));
        }
        while self.seen.len() > MAX_SEEN {
            let Some((_, old)) = self.seen_order.pop_front() else {
                break;
            };
            self.let_go(&old);
            self.seen.remove(&old);
        }
    }

    /// A message arrived in full from `from`.
    pub fn receive_push(&mut self, from: P, id: MessageId, now: Instant) -> (Arrival, Sends<P>) {
        if self.knows(&id) {
            self.counts.duplicates += 1;
            let keep = self.config.min_inbound;
            let pushing = self.inbound.len();
            let linked = self.is_linked(&from);
            match self.inbound.get_mut(&from) {
                Some(second) => {
                    *second += 1;
                    if *second >= PRUNE_AFTER && pushing > keep {
                        // Its copies keep coming after others': it need not push.
                        self.inbound.remove(&from);
                        self.counts.prunes += 1;
                        return (Arrival::Duplicate, vec![(from, Frame::Prune)]);
                    }
                }
                // Pruned, and still pushing: the prune was lost (a full
                // queue, a stream that failed). Say it again.
                // Asked by graft, and pushing: it counts as pushing again,
                // and is pruned like the others if its copies keep coming second.
                None if self.grafted.remove(&from) => {
                    self.inbound.insert(from, 1);
                }
                None if linked => return (Arrival::Duplicate, vec![(from, Frame::Prune)]),
                None => {}
            }
            return (Arrival::Duplicate, Vec::new());
        }
        self.counts.new += 1;
        self.remember(id, Seen::Checking, now);
        self.unmiss(&id);
        if let Some(second) = self.inbound.get_mut(&from) {
            *second = 0;
        } else if self.grafted.remove(&from) {
            // It answered the graft: it pushes to the node again.
            self.inbound.insert(from, 0);
        }
        (Arrival::New, Vec::new())
    }

    /// The node accepted a message (received from `from`, or its own when
    /// `from` is `None`): push it to the eager peers, announce it to the
    /// lazy. The node's own messages go in full to every linked peer.
    pub fn accept(&mut self, id: MessageId, data: Arc<[u8]>, from: Option<P>, now: Instant) -> Sends<P> {
        let mut to: Vec<P> = match from {
            None => self.eager.iter().chain(self.lazy.iter()).copied().collect(),
            Some(from) => {
                for p in self.lazy.iter().copied().filter(|p| *p != from) {
                    self.announce.entry(p).or_default().push(id);
                }
                self.eager.iter().copied().filter(|p| *p != from).collect()
            }
        };
        to.sort();
        let sends = to.into_iter().map(|p| (p, Frame::Push(data.clone()))).collect();
        self.unmiss(&id);
        if matches!(self.seen.get(&id), Some(Seen::Held(_))) {
            return sends;
        }
        self.held_bytes += data.len();
        self.held_order.push_back(id);
        if let Some(state) = self.seen.get_mut(&id) {
            *state = Seen::Held(Some(data));
        } else {
            self.remember(id, Seen::Held(Some(data)), now);
        }
        while self.held_bytes > MAX_HELD_BYTES {
            let Some(old) = self.held_order.pop_front() else {
                break;
            };
            self.let_go(&old);
        }
        sends
    }

    /// Lets go of a held message's bytes.
    fn let_go(&mut self, id: &MessageId) {
        if let Some(Seen::Held(data)) = self.seen.get_mut(id)
            && let Some(data) = data.take()
        {
            self.held_bytes -= data.len();
        }
    }

    /// The node refused or ignored a message: it is not forwarded, and
    /// copies of it are duplicates.
    pub fn drop_message(&mut self, id: MessageId, now: Instant) {
        self.unmiss(&id);
        if let Some(state) = self.seen.get_mut(&id) {
            *state = Seen::Dropped;
        } else {
            self.remember(id, Seen::Dropped, now);
        }
    }

    /// A peer announced ids it holds.
    pub fn receive_ihave(&mut self, from: P, ids: &[MessageId], now: Instant) {
        if !self.is_linked(&from) {
            return;
        }
        let deadline = now + self.config.graft_timeout;
        for id in ids {
            if self.knows(id) {
                continue;
            }
            let by_peer = self.announced.get(&from).copied().unwrap_or(0);
            let room = by_peer < MAX_MISSING_PER_PEER
                && (self.missing.len() < MAX_MISSING || self.missing.contains_key(id));
            if !room {
                self.counts.ihaves_ignored += 1;
                // Logged at the 1st, 2nd, 4th, 8th...: a flood does not flood the log.
                if self.counts.ihaves_ignored.is_power_of_two() {
                    tracing::warn!(peer = ?from, ignored = self.counts.ihaves_ignored, "announced ids not followed: too many awaited (from this peer, or in all)");
                }
                continue;
            }
            let m = self.missing.entry(*id).or_insert_with(|| Missing {
                announcers: VecDeque::new(),
                asked: None,
                deadline,
            });
            if !m.announcers.contains(&from) && m.asked != Some(from) {
                m.announcers.push_back(from);
                *self.announced.entry(from).or_insert(0) += 1;
            }
        }
    }

    /// The node could not check a message (no free slot): forget it, so that
    /// a later copy or announcement is taken as new.
    pub fn forget(&mut self, id: MessageId) {
        if let Some(state @ Seen::Checking) = self.seen.get_mut(&id) {
            *state = Seen::Forgotten;
        }
    }

    /// A peer asked to be told of ids only.
    pub fn receive_prune(&mut self, from: P) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
        }
    }

    /// A peer asked to get messages in full again, starting with `ids`, of
    /// which it is sent those held, within its allowance
    /// ([`GRAFT_BURST_BYTES`], [`GRAFT_BYTES_PER_SECOND`]).
    pub fn receive_graft(&mut self, from: P, ids: &[MessageId], now: Instant) -> Sends<P> {
        if !self.is_linked(&from) {
            return Vec::new();
        }
        self.lazy.remove(&from);
        self.eager.insert(from);
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let burst = GRAFT_BURST_BYTES as f64;
        let allowance = self.allowance.entry(from).or_insert(Allowance {
            bytes: burst,
            at: now,
        });
        let refill =
            now.saturating_duration_since(allowance.at).as_secs_f64() * GRAFT_BYTES_PER_SECOND as f64;
        allowance.bytes = (allowance.bytes + refill).min(burst);
        allowance.at = now;
        let mut left = allowance.bytes;
        let mut sends = Vec::new();
        let mut refused = 0;
        for id in &ids {
            let Some(data) = self.held(id) else { continue };
            if data.len() as f64 > left {
                refused += 1;
                continue;
            }
            left -= data.len() as f64;
            sends.push((from, Frame::Push(data)));
        }
        if let Some(allowance) = self.allowance.get_mut(&from) {
            allowance.bytes = left;
        }
        if refused > 0 {
            let before = self.counts.grafts_refused;
            self.counts.grafts_refused += refused;
            // Logged each time the count passes a power of two.
            if before.checked_next_power_of_two() != self.counts.grafts_refused.checked_next_power_of_two() {
                tracing::warn!(peer = ?from, refused = self.counts.grafts_refused, "graft answers held back: the peer asked for more than its allowance");
            }
        }
        sends
    }

    /// Gives back to `peer`'s graft allowance the bytes of answers that were
    /// not sent after all (its queue had no room): the allowance pays for
    /// what reaches the peer.
    pub fn refund_graft(&mut self, peer: P, bytes: usize) {
        if let Some(allowance) = self.allowance.get_mut(&peer) {
            allowance.bytes = (allowance.bytes + bytes as f64).min(GRAFT_BURST_BYTES as f64);
        }
    }

    /// Periodic work: announce ids to lazy peers, ask for messages heard of
    /// and not received, forget old ids.
    pub fn tick(&mut self, now: Instant) -> Sends<P> {
        let mut sends: Sends<P> = Vec::new();
        let mut announce: Vec<(P, Vec<MessageId>)> = self.announce.drain().collect();
        announce.sort_by_key(|a| a.0);
        for (peer, ids) in announce {
            // A peer that asked for messages in full again since still gets
            // the ids of those accepted before.
            if !self.is_linked(&peer) {
                continue;
            }
            for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
                self.counts.ihaves += 1;
                sends.push((peer, Frame::IHave(chunk.to_vec())));
            }
        }

        let mut grafts: HashMap<P, Vec<MessageId>> = HashMap::new();
        let timeout = self.config.graft_timeout;
        // Peers asked before, whose time is up: they no longer count.
        let mut done: Vec<P> = Vec::new();
        self.missing.retain(|id, m| {
            if m.deadline > now {
                return true;
            }
            done.extend(m.asked.take());
            match m.announcers.pop_front() {
                Some(peer) => {
                    grafts.entry(peer).or_default().push(*id);
                    m.asked = Some(peer);
                    m.deadline = now + timeout;
                    true
                }
                None => false,
            }
        });
        for peer in done {
            self.unannounce(peer);
        }
        let mut grafts: Vec<(P, Vec<MessageId>)> = grafts.into_iter().collect();
        grafts.sort_by_key(|a| a.0);
        for (peer, ids) in grafts {
            if !self.is_linked(&peer) {
                continue;
            }
            if !self.inbound.contains_key(&peer) {
                self.grafted.insert(peer);
            }
            self.counts.grafted += ids.len() as u64;
            for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
                sends.push((peer, Frame::Graft(chunk.to_vec())));
            }
        }

        while self.held_order.front().is_some_and(|id| self.held(id).is_none()) {
            self.held_order.pop_front();
        }
        while let Some((at, id)) = self.seen_order.front().copied() {
            if now.saturating_duration_since(at) < self.config.remember {
                break;
            }
            self.seen_order.pop_front();
            self.let_go(&id);
            self.seen.remove(&id);
        }
        sends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        [n; 32]
    }

    fn data(n: u8) -> Arc<[u8]> {
        Arc::from(vec![n; 8])
    }

    fn tree(peers: &[u8]) -> Tree<u8> {
        let mut t = Tree::new(TreeConfig::default());
        for p in peers {
            t.peer_up(*p);
        }
        t
    }

    #[test]
    fn a_new_message_goes_in_full_to_every_eager_peer_but_its_sender() {
        let now = Instant::now();
        let mut t = tree(&[1, 2, 3]);
        assert_eq!(t.receive_push(1, id(9), now), (Arrival::New, vec![]));
        let sends = t.accept(id(9), data(9), Some(1), now);
        assert_eq!(sends, vec![(2, Frame::Push(data(9))), (3, Frame::Push(data(9)))]);
    }

    /// Copies of messages `first..first + n`, each first from `1` then from `from`.
    fn seconds(t: &mut Tree<u8>, from: u8, first: u8, n: u8, now: Instant) -> Vec<Sends<u8>> {
        (first..first + n)
            .map(|k| {
                t.receive_push(1, id(k), now);
                t.receive_push(from, id(k), now).1
            })
            .collect()
    }

    #[test]
    fn a_peer_whose_copies_keep_coming_second_is_pruned_while_enough_others_push() {
        let now = Instant::now();
        let mut t = tree(&[1, 2, 3, 4, 5]);
        let sends = seconds(&mut t, 2, 0, PRUNE_AFTER as u8, now);
        assert!(sends[..sends.len() - 1].iter().all(Vec::is_empty));
        assert_eq!(sends.last(), Some(&vec![(2, Frame::Prune)]));
        assert!(!t.is_inbound(&2));
        // The node still pushes to 2 until 2 prunes it.
        assert!(t.is_eager(&2));
        assert!(seconds(&mut t, 3, 10, PRUNE_AFTER as u8, now).last() == Some(&vec![(3, Frame::Prune)]));
        // Three peers (1, 4 and 5) still push to it: the minimum.
        assert!(
            seconds(&mut t, 4, 20, 2 * PRUNE_AFTER as u8, now)
                .iter()
                .all(Vec::is_empty)
        );
        assert_eq!(t.degrees(), (5, 0, 3));
    }

    #[test]
    fn a_peer_that_brings_a_message_first_now_and_then_is_kept() {
        let now = Instant::now();
        let mut t = tree(&[1, 2, 3, 4, 5]);
        for round in 0..4u8 {
            assert!(
                seconds(&mut t, 2, round * 10, PRUNE_AFTER as u8 - 1, now)
                    .iter()
                    .all(Vec::is_empty)
            );
            t.receive_push(2, id(round * 10 + 9), now);
        }
        assert!(t.is_inbound(&2));
    }

    #[test]
    fn peers_that_pruned_the_node_hear_of_what_it_forwards_and_get_its_own_in_full() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(2);
        assert!(!t.is_eager(&2));
        t.receive_push(1, id(9), now);
        assert_eq!(t.accept(id(9), data(9), Some(1), now), vec![]);
        assert_eq!(t.tick(now), vec![(2, Frame::IHave(vec![id(9)]))]);
        assert_eq!(t.tick(now), vec![]);
        let own = t.accept(id(8), data(8), None, now);
        assert_eq!(own, vec![(1, Frame::Push(data(8))), (2, Frame::Push(data(8)))]);
        assert_eq!(t.tick(now), vec![]);
    }

    #[test]
    fn a_pruned_peer_still_pushing_is_told_again_and_an_unchecked_message_is_forgotten() {
        let now = Instant::now();
        let mut t = tree(&[1, 2, 3, 4, 5]);
        seconds(&mut t, 2, 0, PRUNE_AFTER as u8, now);
        assert!(!t.is_inbound(&2));
        assert_eq!(t.receive_push(1, id(50), now).0, Arrival::New);
        assert_eq!(
            t.receive_push(2, id(50), now),
            (Arrival::Duplicate, vec![(2, Frame::Prune)])
        );
        t.forget(id(50));
        assert!(!t.knows(&id(50)));
        t.receive_ihave(3, &[id(50)], now);
        assert!(
            t.missing.contains_key(&id(50)),
            "an announcement of it is followed"
        );
        assert_eq!(t.receive_push(3, id(50), now).0, Arrival::New);
        assert_eq!(t.seen_order.len(), t.seen.len(), "seen once, remembered once");
    }

    #[test]
    fn a_message_heard_of_and_not_received_is_grafted_from_each_announcer_in_turn() {
        let now = Instant::now();
        let mut t = tree(&[1, 2, 3, 4, 5]);
        // 2 and 3 no longer push to the node.
        seconds(&mut t, 2, 0, PRUNE_AFTER as u8, now);
        seconds(&mut t, 3, 10, PRUNE_AFTER as u8, now);
        t.receive_ihave(2, &[id(70)], now);
        t.receive_ihave(3, &[id(70)], now);
        assert_eq!(t.tick(now), vec![]);
        let later = now + t.config().graft_timeout;
        assert_eq!(t.tick(later), vec![(2, Frame::Graft(vec![id(70)]))]);
        // Asked, but not counted as pushing until it delivers.
        assert!(!t.is_inbound(&2));
        let later2 = later + t.config().graft_timeout;
        assert_eq!(t.tick(later2), vec![(3, Frame::Graft(vec![id(70)]))]);
        assert_eq!(t.tick(later2 + t.config().graft_timeout), vec![]);
        assert_eq!(t.receive_push(3, id(70), later2).0, Arrival::New);
        assert!(t.is_inbound(&3) && !t.is_inbound(&2));
        // The graft's answer from 2, coming second, makes it a pusher again.
        assert_eq!(t.receive_push(2, id(70), later2), (Arrival::Duplicate, vec![]));
        assert!(t.is_inbound(&2));
    }

    #[test]
    fn a_message_received_in_time_is_not_grafted() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(2);
        t.receive_ihave(2, &[id(7)], now);
        t.receive_push(1, id(7), now);
        assert_eq!(t.tick(now + Duration::from_secs(1)), vec![]);
    }

    #[test]
    fn a_graft_makes_the_link_eager_and_sends_what_is_held() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(2);
        t.receive_push(1, id(3), now);
        t.accept(id(3), data(3), Some(1), now);
        assert_eq!(
            t.receive_graft(2, &[id(3), id(4)], now),
            vec![(2, Frame::Push(data(3)))]
        );
        assert!(t.is_eager(&2));
        // An unlinked peer's graft does nothing.
        assert_eq!(t.receive_graft(5, &[id(3)], now), vec![]);
        assert!(!t.is_linked(&5));
    }

    #[test]
    fn a_dropped_message_is_not_forwarded_nor_asked_for() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_push(1, id(3), now);
        t.drop_message(id(3), now);
        t.receive_ihave(2, &[id(3)], now);
        assert_eq!(t.tick(now + Duration::from_secs(1)), vec![]);
        assert_eq!(t.receive_push(2, id(3), now).0, Arrival::Duplicate);
        assert_eq!(t.receive_graft(2, &[id(3)], now), vec![]);
    }

    #[test]
    fn held_bytes_stay_within_the_bound_oldest_let_go_first() {
        let now = Instant::now();
        let mut t = tree(&[1]);
        let big = |n: u8| Arc::from(vec![n; MAX_HELD_BYTES / 2]);
        t.accept(id(1), big(1), None, now);
        t.accept(id(2), big(2), None, now);
        assert!(t.held(&id(1)).is_some());
        t.accept(id(3), big(3), None, now);
        assert!(t.held(&id(1)).is_none(), "the oldest is let go");
        assert!(t.knows(&id(1)), "its id is still remembered");
        assert!(t.held(&id(2)).is_some() && t.held(&id(3)).is_some());
        assert!(t.held_bytes <= MAX_HELD_BYTES);
    }

    fn many_ids(from: u32, n: usize) -> Vec<MessageId> {
        (from..from + n as u32)
            .map(|n| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&n.to_le_bytes());
                id
            })
            .collect()
    }

    #[test]
    fn announcements_beyond_the_bounds_are_not_followed() {
        let now = Instant::now();
        let peers: Vec<u8> = (1..=9).collect();
        let mut t = tree(&peers);
        // One peer fills its share and no more.
        let ids = many_ids(0, MAX_MISSING_PER_PEER + 10);
        for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
            t.receive_ihave(1, chunk, now);
        }
        assert_eq!(t.missing.len(), MAX_MISSING_PER_PEER);
        assert_eq!(t.counts().ihaves_ignored, 10);
        // Others still have room, up to the node's bound.
        for (k, peer) in peers.iter().enumerate().skip(1) {
            let ids = many_ids(100_000 * (k as u32 + 1), MAX_MISSING_PER_PEER);
            for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
                t.receive_ihave(*peer, chunk, now);
            }
        }
        assert_eq!(t.missing.len(), MAX_MISSING);
        // A message received frees its announcer's share.
        t.receive_push(2, ids[0], now);
        t.receive_push(2, ids[1], now);
        assert_eq!(t.announced[&1], MAX_MISSING_PER_PEER - 2);
        t.receive_ihave(1, &many_ids(900_000, 1), now);
        assert_eq!(t.announced[&1], MAX_MISSING_PER_PEER - 1);
        // A peer gone frees its share at once.
        t.peer_down(3);
        assert!(!t.announced.contains_key(&3));
        assert_eq!(t.announced[&4], MAX_MISSING_PER_PEER);
        // A peer asked by graft keeps its share until the time to deliver is
        // up: one that never delivers cannot refill it sooner.
        let first = now + t.config().graft_timeout;
        let asked = t.tick(first);
        assert!(asked.iter().any(|(p, f)| *p == 1 && matches!(f, Frame::Graft(_))));
        assert!(!asked.iter().any(|(p, _)| *p == 3));
        assert_eq!(t.announced[&1], MAX_MISSING_PER_PEER - 1);
        assert_eq!(t.missing.len(), MAX_MISSING - MAX_MISSING_PER_PEER - 2 + 1);
        t.receive_ihave(1, &many_ids(950_000, 2), first);
        assert_eq!(t.announced[&1], MAX_MISSING_PER_PEER, "one more fits, not two");
        // The time is up with no one else to ask: the ids are given up, the shares freed.
        t.tick(first + t.config().graft_timeout);
        assert_eq!(
            t.announced.get(&1),
            Some(&1),
            "the id announced last is now asked for"
        );
        assert_eq!(t.missing.len(), 1);
    }

    #[test]
    fn grafts_are_answered_within_each_peers_allowance() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(2);
        let size = 1024 * 1024;
        let ids = many_ids(0, 10);
        for (n, id) in ids.iter().enumerate() {
            t.accept(*id, Arc::from(vec![n as u8; size]), Some(1), now);
        }
        let fits = GRAFT_BURST_BYTES / size;
        assert_eq!(t.receive_graft(2, &ids, now).len(), fits);
        assert_eq!(t.counts().grafts_refused, (10 - fits) as u64);
        // Asking again at once gets nothing more...
        assert_eq!(t.receive_graft(2, &ids, now), vec![]);
        // ...and a second later, what a second's refill allows.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            t.receive_graft(2, &ids, later).len(),
            GRAFT_BYTES_PER_SECOND / size
        );
        // Another peer has an allowance of its own.
        assert_eq!(t.receive_graft(1, &ids, later).len(), fits);
    }

    #[test]
    fn graft_answers_not_sent_are_given_back_up_to_the_burst() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        let size = 1024 * 1024;
        let ids = many_ids(0, 10);
        for (n, id) in ids.iter().enumerate() {
            t.accept(*id, Arc::from(vec![n as u8; size]), Some(1), now);
        }
        let fits = GRAFT_BURST_BYTES / size;
        assert_eq!(t.receive_graft(2, &ids, now).len(), fits);
        // Two answers found no room in the peer's queue: they are paid back.
        t.refund_graft(2, 2 * size);
        assert_eq!(t.receive_graft(2, &ids, now).len(), 2);
        // A refund never lifts the allowance above the burst.
        t.refund_graft(2, 10 * GRAFT_BURST_BYTES);
        assert_eq!(t.receive_graft(2, &ids, now).len(), fits);
        // A peer that never grafted has nothing to be paid back.
        t.refund_graft(1, size);
        assert_eq!(t.receive_graft(1, &ids, now).len(), fits);
    }

    #[test]
    fn ids_beyond_the_bound_are_forgotten_oldest_first() {
        let now = Instant::now();
        let mut t = tree(&[1]);
        let ids = many_ids(0, MAX_SEEN + 1);
        for id in &ids {
            t.receive_push(1, *id, now);
        }
        assert_eq!(t.seen.len(), MAX_SEEN);
        assert!(!t.knows(&ids[0]));
        assert!(t.knows(&ids[1]) && t.knows(&ids[MAX_SEEN]));
    }

    #[test]
    fn ids_are_forgotten_after_the_remember_time() {
        let now = Instant::now();
        let mut t = tree(&[1]);
        t.receive_push(1, id(1), now);
        t.tick(now + t.config().remember - Duration::from_millis(1));
        assert!(t.knows(&id(1)));
        t.tick(now + t.config().remember);
        assert!(!t.knows(&id(1)));
    }

    #[test]
    fn a_peer_gone_is_neither_pushed_to_nor_asked() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(2);
        t.receive_ihave(2, &[id(4)], now);
        t.peer_down(2);
        assert_eq!(t.tick(now + Duration::from_secs(1)), vec![]);
        t.peer_down(1);
        assert!(!t.has_peers());
        assert_eq!(t.accept(id(5), data(5), None, now), vec![]);
    }
}
