//! Tree dissemination (eager and lazy push, after Plumtree): the state of
//! which peers get a message in full at once and which only hear of its id,
//! with no I/O. `push` drives it over libp2p streams.
//!
//! Every link starts eager: a new message goes in full to every eager peer
//! but the one it came from. A copy that arrives again over a link turns that
//! link lazy at both ends (`Prune`): the copy came by another path, so the
//! eager links settle into a spanning tree and each node receives each
//! message about once. A message that arrives first over a lazy link turns it
//! eager again. Lazy peers are told the ids of the messages a node accepts, in
//! batches (`IHave`); a node that hears of an id it does not get in full
//! within the graft timeout asks the announcer for it (`Graft`), which turns
//! that link eager: the tree mends itself when a node or a link on it fails.
//! Links are eager or lazy at both ends alike, so the eager links of the whole
//! network stay connected: a link is pruned only when both its ends were
//! reached by other eager links. A message is forwarded only after the node
//! has accepted it.

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
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            ihave_interval: Duration::from_millis(100),
            graft_timeout: Duration::from_millis(400),
            remember: Duration::from_secs(120),
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
}

#[derive(Debug)]
struct Missing<P> {
    /// Peers that announced it, in order; the first is asked next.
    announcers: VecDeque<P>,
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
}

/// Frames to send: (peer, frame).
pub type Sends<P> = Vec<(P, Frame)>;

/// The tree's state for one node.
#[derive(Debug)]
pub struct Tree<P> {
    config: TreeConfig,
    /// Peers on the tree: messages go to them in full.
    eager: HashSet<P>,
    /// Peers off the tree: they are told of ids only.
    lazy: HashSet<P>,
    seen: HashMap<MessageId, Seen>,
    /// When each id was first seen, oldest first, to forget them.
    seen_order: VecDeque<(Instant, MessageId)>,
    /// Ids to announce to each lazy peer.
    announce: HashMap<P, Vec<MessageId>>,
    missing: HashMap<MessageId, Missing<P>>,
    /// Ids whose bytes are held, oldest first, and their total size.
    held_order: VecDeque<MessageId>,
    held_bytes: usize,
    counts: TreeCounts,
}

impl<P: Copy + Eq + Hash + Ord> Tree<P> {
    /// An empty tree.
    pub fn new(config: TreeConfig) -> Self {
        Tree {
            config,
            eager: HashSet::new(),
            lazy: HashSet::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            announce: HashMap::new(),
            missing: HashMap::new(),
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
    }

    /// A peer's link is gone.
    pub fn peer_down(&mut self, peer: P) {
        self.eager.remove(&peer);
        self.lazy.remove(&peer);
        self.announce.remove(&peer);
        for m in self.missing.values_mut() {
            m.announcers.retain(|p| *p != peer);
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

    /// (eager, lazy) peer counts: peers on the tree, peers off it.
    pub fn degrees(&self) -> (usize, usize) {
        (self.eager.len(), self.lazy.len())
    }

    /// Whether the link to `peer` is on the tree.
    pub fn is_eager(&self, peer: &P) -> bool {
        self.eager.contains(peer)
    }

    fn make_eager(&mut self, peer: P) {
        if self.lazy.remove(&peer) {
            self.eager.insert(peer);
        }
    }

    fn make_lazy(&mut self, peer: P) {
        if self.eager.remove(&peer) {
            self.lazy.insert(peer);
        }
    }

    /// Whether the message is known (being checked, held or dropped).
    pub fn knows(&self, id: &MessageId) -> bool {
        self.seen.contains_key(id)
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
    }

    /// A message arrived in full from `from`.
    pub fn receive_push(&mut self, from: P, id: MessageId, now: Instant) -> (Arrival, Sends<P>) {
        if !self.is_linked(&from) {
            // A stream can outlive its link by a moment: take the message,
            // change nothing.
            return match self.seen.contains_key(&id) {
                true => (Arrival::Duplicate, Vec::new()),
                false => {
                    self.remember(id, Seen::Checking, now);
                    (Arrival::New, Vec::new())
                }
            };
        }
        if self.seen.contains_key(&id) {
            self.counts.duplicates += 1;
            // Another path brought it first: this link need not carry
            // messages in full.
            self.make_lazy(from);
            self.counts.prunes += 1;
            return (Arrival::Duplicate, vec![(from, Frame::Prune)]);
        }
        self.counts.new += 1;
        self.remember(id, Seen::Checking, now);
        self.missing.remove(&id);
        // It came first by this link: the link is on the tree.
        self.make_eager(from);
        (Arrival::New, Vec::new())
    }

    /// The node accepted a message (received from `from`, or its own when
    /// `from` is `None`): push it to the eager peers, announce it to the lazy.
    pub fn accept(&mut self, id: MessageId, data: Arc<[u8]>, from: Option<P>, now: Instant) -> Sends<P> {
        for p in self.lazy.iter().copied().filter(|p| Some(*p) != from) {
            self.announce.entry(p).or_default().push(id);
        }
        let mut to: Vec<P> = self.eager.iter().copied().filter(|p| Some(*p) != from).collect();
        to.sort();
        let sends = to.into_iter().map(|p| (p, Frame::Push(data.clone()))).collect();
        self.missing.remove(&id);
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
        self.missing.remove(&id);
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
            if self.seen.contains_key(id) {
                continue;
            }
            if self.missing.len() >= MAX_MISSING && !self.missing.contains_key(id) {
                continue;
            }
            let m = self.missing.entry(*id).or_insert_with(|| Missing {
                announcers: VecDeque::new(),
                deadline,
            });
            if !m.announcers.contains(&from) {
                m.announcers.push_back(from);
            }
        }
    }

    /// A peer asked to be told of ids only.
    pub fn receive_prune(&mut self, from: P) {
        self.make_lazy(from);
    }

    /// A peer asked to get messages in full again, starting with `ids`.
    pub fn receive_graft(&mut self, from: P, ids: &[MessageId]) -> Sends<P> {
        if !self.is_linked(&from) {
            return Vec::new();
        }
        self.make_eager(from);
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        ids.iter()
            .filter_map(|id| self.held(id))
            .map(|data| (from, Frame::Push(data)))
            .collect()
    }

    /// Periodic work: announce ids to lazy peers, ask for messages heard of
    /// and not received, forget old ids.
    pub fn tick(&mut self, now: Instant) -> Sends<P> {
        let mut sends: Sends<P> = Vec::new();
        let mut announce: Vec<(P, Vec<MessageId>)> = self.announce.drain().collect();
        announce.sort_by_key(|a| a.0);
        for (peer, ids) in announce {
            if !self.lazy.contains(&peer) {
                continue;
            }
            for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
                self.counts.ihaves += 1;
                sends.push((peer, Frame::IHave(chunk.to_vec())));
            }
        }

        let mut grafts: HashMap<P, Vec<MessageId>> = HashMap::new();
        let timeout = self.config.graft_timeout;
        self.missing.retain(|id, m| {
            if m.deadline > now {
                return true;
            }
            match m.announcers.pop_front() {
                Some(peer) => {
                    grafts.entry(peer).or_default().push(*id);
                    m.deadline = now + timeout;
                    true
                }
                None => false,
            }
        });
        let mut grafts: Vec<(P, Vec<MessageId>)> = grafts.into_iter().collect();
        grafts.sort_by_key(|a| a.0);
        for (peer, ids) in grafts {
            if !self.is_linked(&peer) {
                continue;
            }
            self.make_eager(peer);
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

    #[test]
    fn a_duplicate_prunes_the_link_it_came_on() {
        let now = Instant::now();
        let mut t = tree(&[1, 2, 3]);
        t.receive_push(1, id(9), now);
        assert_eq!(
            t.receive_push(2, id(9), now),
            (Arrival::Duplicate, vec![(2, Frame::Prune)])
        );
        assert!(!t.is_eager(&2));
        // Lazy peers hear of accepted messages at the next tick, once.
        t.accept(id(9), data(9), Some(1), now);
        assert_eq!(t.tick(now), vec![(2, Frame::IHave(vec![id(9)]))]);
        assert_eq!(t.tick(now), vec![]);
        assert_eq!(t.degrees(), (2, 1));
    }

    #[test]
    fn a_prune_takes_the_link_off_the_tree_and_a_first_copy_puts_it_back() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(2);
        assert!(!t.is_eager(&2));
        assert_eq!(
            t.accept(id(1), data(1), None, now),
            vec![(1, Frame::Push(data(1)))]
        );
        t.receive_push(2, id(2), now);
        assert!(t.is_eager(&2));
    }

    #[test]
    fn a_message_heard_of_and_not_received_is_grafted_from_each_announcer_in_turn() {
        let now = Instant::now();
        let mut t = tree(&[1, 2]);
        t.receive_prune(1);
        t.receive_prune(2);
        t.receive_ihave(1, &[id(7)], now);
        t.receive_ihave(2, &[id(7)], now);
        assert_eq!(t.tick(now), vec![]);
        let later = now + t.config().graft_timeout;
        assert_eq!(t.tick(later), vec![(1, Frame::Graft(vec![id(7)]))]);
        assert!(t.is_eager(&1));
        let later2 = later + t.config().graft_timeout;
        assert_eq!(t.tick(later2), vec![(2, Frame::Graft(vec![id(7)]))]);
        assert_eq!(t.tick(later2 + t.config().graft_timeout), vec![]);
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
            t.receive_graft(2, &[id(3), id(4)]),
            vec![(2, Frame::Push(data(3)))]
        );
        assert!(t.is_eager(&2));
        // An unlinked peer's graft does nothing.
        assert_eq!(t.receive_graft(5, &[id(3)]), vec![]);
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
        assert_eq!(t.receive_graft(2, &[id(3)]), vec![]);
    }

    #[test]
    fn a_stream_that_outlives_its_link_changes_nothing() {
        let now = Instant::now();
        let mut t = tree(&[1]);
        assert_eq!(t.receive_push(5, id(1), now), (Arrival::New, vec![]));
        assert_eq!(t.receive_push(5, id(1), now), (Arrival::Duplicate, vec![]));
        assert!(!t.is_linked(&5));
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

    #[test]
    fn announcements_beyond_the_bound_are_not_followed() {
        let now = Instant::now();
        let mut t = tree(&[1]);
        let ids: Vec<MessageId> = (0..MAX_MISSING as u32 + 10)
            .map(|n| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&n.to_le_bytes());
                id
            })
            .collect();
        for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
            t.receive_ihave(1, chunk, now);
        }
        assert_eq!(t.missing.len(), MAX_MISSING);
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
