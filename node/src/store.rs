//! The node's store on sled: bulletins by id (the exact signed bytes, verified
//! once on the way in), per-key chains and heads, query indexes, equivocation
//! evidence, the registry history and node metadata.
//!
//! All bulletin data lives in one tree under one-byte key prefixes, so that a
//! group of bulletins with every index entry is written by one atomic batch.
//! sled makes a batch durable only on flush: callers flush before they
//! acknowledge anything (see [`Store::flush`]).
//!
//! The node's own bulletins are made durable another way: each group is
//! written to the journal of own bulletins with one synchronous write (a
//! fraction of a sled batch and flush), then staged like received gossip
//! (see [`Store::publish_own_group`]). Opening the store stores whatever the
//! journal holds.
//!
//! Bulletins received by gossip are first *staged*: held in memory, verified,
//! readable at once by [`Store::contains`], [`Store::get`] and
//! [`Store::query`], and folded into
//! the chains and indexes a group at a time by [`Store::fold_staged`] (the
//! node's indexer does it within [`FOLD_DELAY`], and
//! on stop). A sled batch costs two log buffer writes and wakes all of sled's
//! I/O threads, on every node, for every message; staging costs neither, and
//! writes nothing to sled until the fold. sled itself keeps writes in memory
//! until its next flush, so a crash loses staged bulletins as it loses
//! unflushed writes: received gossip, which nobody acknowledged and sync
//! fetches again. (Earlier builds staged in sled under the `s` prefix;
//! opening a store folds whatever they left there.)

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::journal::Journal;
pub use crate::journal::JournalError;
use herald_keys::SecretKey;
use herald_protocol::sync::{ChainSummary, SeqRange, Want, seq_fingerprint, xor_into};
use herald_protocol::{
    BulletinBody, BulletinId, KeyId, MemberId, NetworkId, RegistryVersion, Seq, SignedBulletin,
    SignedRegistryUpdate, Timestamp,
};

/// Tree names, in one place.
pub mod trees {
    /// Bulletins and everything derived from them, under the prefixes below.
    pub const BULLETINS: &str = "bulletins/v1";
    /// Registry updates: version (u64 big-endian) -> signed update bytes.
    pub const REGISTRY: &str = "registry/v1";
    /// Node metadata: schema version, network.
    pub const META: &str = "meta";
    /// Numbers of a key's chain that a peer listed and this node lacked:
    /// key (32) || peer (its id's bytes) -> highest number listed (u64).
    pub const CLAIMS: &str = "chain-claims/v1";
    /// Registry forks found: version (u64 big-endian) || the other update's
    /// hash (32) -> the other update's signed bytes, the evidence a start
    /// takes in again (at most as many as the registry keeps).
    pub const REGISTRY_FORKS: &str = "registry-forks/v1";
    /// Versions where the registry forks and the other branch, as far as it
    /// was read, holds a change that needs the threshold, as this node's does
    /// from there (a fork the branch rule does not settle): version (u64
    /// big-endian) -> nothing.
    pub const REGISTRY_CONTESTED: &str = "registry-contested/v1";
}

/// The key of a registry fork's other update in [`trees::REGISTRY_FORKS`].
fn fork_key(theirs: &SignedRegistryUpdate) -> Vec<u8> {
    key_of(&[&theirs.body().version.0.to_be_bytes(), theirs.hash().as_bytes()])
}

/// Key prefixes inside [`trees::BULLETINS`]. Integers are big-endian so that
/// keys sort in numeric order.
///
/// Every stored key costs sled several microseconds to write (it copies the
/// leaf it lands in), so a bulletin writes four: its data, its chain entry,
/// its time index entry and its arrival (and one more for each bulletin it supersedes,
/// withdraws or follows up on: most name none). The time index and the index of
/// arrivals are covering indexes: their values carry kind, TLP, severity and
/// signing member (and an arrival's, the creation time), so every filter of
/// [`Store::query`] but the text is decided from the index before a bulletin
/// is read.
mod prefix {
    /// `b` id -> signing member (32) || signed bulletin bytes.
    pub(super) const DATA: u8 = b'b';
    /// `c` key seq -> id (the first bulletin held for that number).
    pub(super) const CHAIN: u8 = b'c';
    /// `h` key -> contiguous (u64), highest (u64), numbers held (u64),
    /// fingerprint of them (32), extra bodies held as evidence (u32): the
    /// chain's head and what sync compares.
    pub(super) const HEAD: u8 = b'h';
    /// `t` created id -> kind code, TLP code, severity code, signing member (32).
    pub(super) const BY_TIME: u8 = b't';
    /// `e` key seq id -> (): every body held for a (key, seq) that has more than one.
    pub(super) const EQUIVOCATION: u8 = b'e';
    /// `n` -> how many bulletins are held (u64), kept in the same batches.
    pub(super) const COUNT: u8 = b'n';
    /// `s` id -> length of the sender (u8) || sender (peer id bytes) ||
    /// signing member (32) || signed bulletin bytes: verified, not yet folded
    /// into the chains and indexes above. Written by earlier builds of schema
    /// 3 only (staging is in memory now); folded and removed when a store is
    /// opened.
    pub(super) const STAGED: u8 = b's';
    /// `a` answered id || answering id -> how it answers (u8: 0 supersedes,
    /// 1 withdraws, 2 follows up), answering member (32), created (u64): each
    /// bulletin held (equivocation evidence included) that names another as
    /// superseded, withdrawn or followed up, so that a bulletin's answers are
    /// one prefix read (schema 4).
    pub(super) const ANSWER: u8 = b'a';
    /// `r` arrived (u64, ms since the epoch on this node's clock, never
    /// going back) id -> kind code, TLP code, severity code, signing member
    /// (32), created (u64): when each bulletin in the time index came to this
    /// node, whenever it was made; covering, as the time index (schema 5).
    pub(super) const ARRIVAL: u8 = b'r';
}

/// Longest a staged bulletin waits to be folded into the chains and indexes
/// (chain heads and sync see it from then on; queries list it at once, and an
/// export folds first). Each fold costs a sled batch whatever it holds (two log
/// writes, each waking sled's I/O threads), so folds are not made more often
/// than a listing needs.
pub const FOLD_DELAY: Duration = Duration::from_secs(1);

/// Most staged bulletins folded by one batch.
pub const FOLD_GROUP: usize = 1024;

/// sled's page cache: bounded, so a node holding millions of bulletins does
/// not grow towards sled's 1 GiB default as they are read.
const CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// sled flushes on its own this often: a safety net for writes nobody
/// flushes, the pace of its log cleaning, and, during a bulk import, log
/// writes that overlap the inserts. Every write that matters is flushed by its
/// writer: own publications, imports and sync pages before they are
/// acknowledged, received gossip by the indexer right after its fold; so the
/// background flush usually finds nothing to write. (Measured at 10 s: no
/// change in gossip's CPU, and a bulk import about 9 % slower.)
const FLUSH_EVERY_MS: u64 = 1000;

/// The store schema this node writes. Schema 5 added the index of arrivals
/// and schema 4 the index of answers (each built when an older store is
/// opened); schema 3 the staged prefix (which this build only reads, when it
/// opens a store); a schema 2 store has nothing staged.
pub const SCHEMA_VERSION: u32 = 5;

/// The oldest schema this node opens (and upgrades to [`SCHEMA_VERSION`]).
pub const OLDEST_SCHEMA: u32 = 2;

const META_SCHEMA: &[u8] = b"schema";
const META_NETWORK: &[u8] = b"network";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled reported an error (I/O, corruption).
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    /// The store was written by another schema version.
    #[error(
        "the store has schema version {found}; this Herald reads versions {OLDEST_SCHEMA} to {SCHEMA_VERSION}. Use a matching Herald, or carry the bulletins over with a bundle (docs/OPERATIONS.md, Upgrades)"
    )]
    Schema {
        /// The store's schema.
        found: u32,
    },
    /// The store belongs to another network.
    #[error("the store belongs to network {found}, not {expected}; use the data directory of this network")]
    WrongNetwork {
        /// Configured network.
        expected: NetworkId,
        /// The store's.
        found: NetworkId,
    },
    /// Another process has the store open.
    #[error("another Herald process is using the store in {0}; stop it or choose another data directory")]
    Locked(std::path::PathBuf),
    /// A stored value does not decode: the store is damaged.
    #[error(
        "the store is damaged: {0}. Keep a copy of the node's directory and see docs/OPERATIONS.md, \"A damaged store\""
    )]
    Corrupt(String),
    /// The node's own chain is exhausted (2^64 bulletins) or inconsistent.
    #[error("cannot extend the local chain: {0}")]
    Chain(String),
    /// A peer listed more of the signing key's chain than the node holds,
    /// and has not brought it back yet ([`Store::note_chain_claim`]): the
    /// node numbers nothing of the key meanwhile.
    #[error("a peer listed number {claimed} of this node's signing key, and this node holds up to {held}")]
    ChainClaimed {
        /// The highest number held.
        held: Seq,
        /// The highest number a peer listed.
        claimed: Seq,
    },
    /// Signing failed (the draft breaks a rule of the format).
    #[error("cannot sign the bulletin: {0}")]
    Sign(#[from] herald_keys::SignError),
    /// The journal of own bulletins cannot be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The shortest start of a bulletin id [`Store::resolve_id`] looks up.
pub const MIN_ID_PREFIX: usize = 8;

/// Why a bulletin could not be looked up by its id or the start of it.
#[derive(Debug, thiserror::Error)]
pub enum IdLookupError {
    /// Not an id, nor the start of one.
    #[error(
        "{0:?} is not a bulletin id: give its 64 hexadecimal characters, or at least the first {MIN_ID_PREFIX} (herald list shows the first 10)"
    )]
    Invalid(String),
    /// No bulletin held has an id that starts so.
    #[error("no bulletin whose id starts with {0} is held here")]
    NotHeld(String),
    /// More than one does.
    #[error("more than one bulletin held has an id that starts with {0}: give more of it")]
    Ambiguous(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to one bulletin offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// It was new and is now held.
    New,
    /// The same bulletin was already held.
    AlreadyHeld,
    /// Another bulletin with the same key and number is held: both are kept as
    /// evidence of equivocation.
    Equivocation {
        /// The bulletin held before for that (key, seq).
        other: BulletinId,
    },
}

/// A signing key's chain as held here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Every number from 1 to this one is held (0 if not even 1 is).
    pub contiguous: Seq,
    /// The highest number held.
    pub highest: Seq,
}

/// Filters for [`Store::query`]; all that are set must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Kind name, as [`herald_protocol::Kind::name`].
    pub kind: Option<String>,
    /// Signing member.
    pub member: Option<MemberId>,
    /// TLP label.
    pub tlp: Option<herald_protocol::Tlp>,
    /// Minimum severity.
    pub min_severity: Option<herald_protocol::Severity>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
    /// Arrived at this node at or after (its clock): the bulletins that came
    /// since, whenever they were made, newest arrival first.
    pub arrived_since: Option<Timestamp>,
    /// Most results (newest first); 0 means no limit.
    pub limit: usize,
    /// Only bulletins whose title, references, withdrawal reason or text
    /// content contain this, letter case aside (ASCII letters). Looked for in
    /// each bulletin the other filters let through, newest first, at most
    /// [`TEXT_SCAN_LIMIT`] of them.
    pub text: Option<String>,
}

impl Query {
    /// Whether `bulletin`, signed by `member`, passes every filter but the
    /// limit: the index's filters first, then the text.
    pub fn matches(&self, bulletin: &SignedBulletin, member: &MemberId) -> bool {
        self.matches_indexed(bulletin, member) && self.text.as_deref().is_none_or(|t| holds_text(bulletin, t))
    }

    /// [`Query::matches`] without the text.
    fn matches_indexed(&self, bulletin: &SignedBulletin, member: &MemberId) -> bool {
        let b = bulletin.body();
        self.since.is_none_or(|t| b.created >= t)
            && self.until.is_none_or(|t| b.created < t)
            && self.kind.as_deref().is_none_or(|k| k == b.kind.name())
            && self.tlp.is_none_or(|t| t == b.tlp)
            && self
                .min_severity
                .is_none_or(|s| severity_code(b.severity) >= severity_code(s))
            && self.member.is_none_or(|m| m == *member)
    }
}

/// Most bulletins one text query reads ([`Query::text`]); older ones are found
/// by narrowing the query in time.
pub const TEXT_SCAN_LIMIT: usize = 100_000;
/// Longest text a query looks for.
pub const MAX_QUERY_TEXT_BYTES: usize = 256;

/// Whether `bulletin` holds `text` ([`Query::text`]) in its title, its
/// references or its content (when that is UTF-8).
pub fn holds_text(bulletin: &SignedBulletin, text: &str) -> bool {
    let needle = text.as_bytes();
    let has = |haystack: &[u8]| {
        needle.is_empty()
            || haystack
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
    };
    let body = bulletin.body();
    has(body.title.as_bytes())
        || matches!(&body.kind, herald_protocol::Kind::Withdrawal { reason, .. } if has(reason.as_bytes()))
        || body.references.iter().any(|r| match r {
            herald_protocol::Reference::Cve(v) | herald_protocol::Reference::Url(v) => has(v.as_bytes()),
            herald_protocol::Reference::Bulletin(id) => has(id.to_string().as_bytes()),
        })
        || (std::str::from_utf8(&body.payload.bytes).is_ok() && has(&body.payload.bytes))
}

/// The time a listing goes by: when each bulletin says it was made (the
/// time index), or when it came to this node (the index of arrivals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By creation time, as the bulletin says (`since`, `until`).
    Created,
    /// By arrival time, on this node's clock (`arrived_since`).
    Arrived,
}

/// The keys of an index a listing walks.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

impl Order {
    fn prefix(self) -> u8 {
        match self {
            Order::Created => prefix::BY_TIME,
            Order::Arrived => prefix::ARRIVAL,
        }
    }

    fn index_name(self) -> &'static str {
        match self {
            Order::Created => "time index",
            Order::Arrived => "index of arrivals",
        }
    }

    /// A bulletin's key in this order's index: its time, then its id.
    fn key(self, at: Timestamp, id: &BulletinId) -> Vec<u8> {
        key_of(&[&[self.prefix()], &at.0.to_be_bytes(), id.as_bytes()])
    }

    /// Where a staged bulletin will be placed.
    fn of(self, item: &StagedItem) -> Timestamp {
        match self {
            Order::Created => item.bulletin.body().created,
            Order::Arrived => item.arrived,
        }
    }

    /// Just past the last key of this order's index.
    fn end(self) -> Bound<Vec<u8>> {
        Bound::Excluded(vec![self.prefix() + 1])
    }

    /// The keys placed at or after `since`.
    fn from(self, since: Timestamp) -> KeyRange {
        (
            Bound::Included(self.key(since, &BulletinId::from_bytes([0; 32]))),
            self.end(),
        )
    }

    /// The index a search of `query` walks, and its keys there: those that
    /// came since `arrived_since`, or else those created from `since` to
    /// `until`.
    fn asked(query: &Query) -> (Order, KeyRange) {
        match query.arrived_since {
            Some(since) => (Order::Arrived, Order::Arrived.from(since)),
            None => (Order::Created, Order::Created.within(query.since, query.until)),
        }
    }

    /// The keys placed at or after `since` (or from the first) and before
    /// `until` (or to the last).
    fn within(self, since: Option<Timestamp>, until: Option<Timestamp>) -> KeyRange {
        let (low, end) = self.from(since.unwrap_or(Timestamp(0)));
        let high = until.map_or(end, |until| {
            Bound::Excluded(self.key(until, &BulletinId::from_bytes([0; 32])))
        });
        (low, high)
    }
}

/// How much one page of a listing holds and reads ([`Store::listing_page`]);
/// each at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Most bulletins from the index.
    pub items: usize,
    /// Most bytes of them (signed bulletins): the page ends with the
    /// bulletin that reaches it.
    pub bytes: usize,
    /// Most index entries looked at: a page that finds little (filters, a
    /// text search) still ends.
    pub reads: usize,
}

/// A page of a listing in time order ([`Store::listing_page`]).
#[derive(Debug)]
pub struct ListingPage {
    /// The bulletins and their members, oldest first in the listing's order.
    pub items: Vec<(SignedBulletin, MemberId)>,
    /// Where the next page starts (after this time and id); `None` when this
    /// page read to the end of the index.
    pub next: Option<(Timestamp, BulletinId)>,
}

/// The bulletins held that answer one bulletin ([`Store::answers_to`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answers {
    /// Its member's bulletins that supersede it.
    pub superseded_by: Vec<BulletinId>,
    /// Its member's withdrawals of it.
    pub withdrawn_by: Vec<BulletinId>,
    /// Follow-ups on it, from any member.
    pub follow_ups: Vec<BulletinId>,
    /// Whether every answer held is listed (false: only the first
    /// [`ANSWERS_LIMIT`] index entries were read).
    pub complete: bool,
}

/// Most index entries one look for a bulletin's answers reads
/// ([`Store::answers_to`]): any member may follow up, as often as it likes.
pub const ANSWERS_LIMIT: usize = 10_000;

/// How a bulletin answers another; the code is the first byte of its
/// [`prefix::ANSWER`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Supersedes = 0,
    Withdrawal = 1,
    FollowUp = 2,
}

impl Answer {
    fn from_code(code: u8) -> Option<Self> {
        [Self::Supersedes, Self::Withdrawal, Self::FollowUp]
            .into_iter()
            .find(|a| *a as u8 == code)
    }

    /// Whether only the answered bulletin's member may answer it this way
    /// (as its node checks when it publishes); anyone may follow up.
    fn members_only(self) -> bool {
        self != Self::FollowUp
    }
}

/// The bulletins `body` answers, and how: at most one entry per bulletin
/// (a follow-up or withdrawal that also supersedes what it names counts as the
/// follow-up or withdrawal).
fn answered_by(body: &BulletinBody) -> impl Iterator<Item = (BulletinId, Answer)> {
    let named = match &body.kind {
        herald_protocol::Kind::FollowUp { on, .. } => Some((*on, Answer::FollowUp)),
        herald_protocol::Kind::Withdrawal { of, .. } => Some((*of, Answer::Withdrawal)),
        _ => None,
    };
    let superseded = body
        .supersedes
        .filter(|s| named.is_none_or(|(n, _)| n != *s))
        .map(|s| (s, Answer::Supersedes));
    named.into_iter().chain(superseded)
}

/// The [`prefix::ANSWER`] entries of a bulletin being indexed.
fn answer_entries(bulletin: &SignedBulletin, member: &MemberId) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    let body = bulletin.body();
    let (id, created) = (bulletin.id(), body.created.0.to_be_bytes());
    answered_by(body).map(move |(target, answer)| {
        (
            key_of(&[&[prefix::ANSWER], target.as_bytes(), id.as_bytes()]),
            key_of(&[&[answer as u8], member.as_bytes(), &created]),
        )
    })
}

/// The node's store. Cheap to clone; reads may happen from any thread.
/// Batches that change chains and indexes (stores, folds, settling the
/// journal) take the store's index lock, so each reads the chain summaries and
/// the count that the one before it wrote. Numbering the node's own chain
/// ([`Store::publish_own_group`]) holds the journal's lock.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    bulletins: sled::Tree,
    registry: sled::Tree,
    /// [`trees::REGISTRY_FORKS`].
    registry_forks: sled::Tree,
    /// [`trees::REGISTRY_CONTESTED`].
    registry_contested: sled::Tree,
    /// [`trees::CLAIMS`].
    claims: sled::Tree,
    /// Whether `claims` may hold any (spares a scan on every publication).
    claims_present: Arc<std::sync::atomic::AtomicBool>,
    /// Held while the claims change, so that `claims_present` follows them.
    claims_lock: Arc<Mutex<()>>,
    /// Bulletins staged: verified, readable, not yet folded.
    staged: Arc<Mutex<Staged>>,
    /// Held by a fold from its look at the staged set until it lets go of
    /// what it folded, so that two folds never take the same bulletins.
    fold_lock: Arc<Mutex<()>>,
    /// Held by every batch that changes chains and indexes.
    index_lock: Arc<Mutex<()>>,
    /// Every chain summary (head) held, as in sled: loaded at open, replaced
    /// by each batch right after it is applied. The paths a message waits on
    /// (the duplicate check of validation, numbering a publication) read it
    /// here, never in sled, whose every read waits while a fold's batch is
    /// applied. One entry per signing key that ever signed a bulletin held.
    chains: Arc<RwLock<BTreeMap<KeyId, ChainSummary>>>,
    /// When the last bulletin was staged, in µs after `opened`.
    last_stage: Arc<AtomicU64>,
    /// The latest arrival time given ([`Store::arrival_now`]).
    last_arrival: Arc<AtomicU64>,
    opened: Instant,
    /// Where the node's own bulletins are made durable before they leave.
    journal: Arc<Mutex<Journal>>,
}

/// Bulletins received and verified, held until folded.
#[derive(Default)]
struct Staged {
    /// Ids in the order they were staged.
    order: VecDeque<BulletinId>,
    items: HashMap<BulletinId, StagedItem>,
    /// How many of `items` each member signed.
    by_member: HashMap<MemberId, usize>,
}

struct StagedItem {
    bulletin: SignedBulletin,
    member: MemberId,
    from: Vec<u8>,
    /// Signed here and journaled (reported when it was published).
    own: bool,
    /// When it came ([`Store::arrival_now`]).
    arrived: Timestamp,
}

/// A staged bulletin after [`Store::fold_staged`].
#[derive(Debug)]
pub struct Folded {
    /// The bulletin.
    pub bulletin: SignedBulletin,
    /// Its signing member.
    pub member: MemberId,
    /// Who sent it, as staged (peer id bytes; empty if unknown).
    pub from: Vec<u8>,
    /// Whether the node signed it ([`Store::publish_own_group`]): it was
    /// reported when it was published.
    pub own: bool,
    /// What folding it did.
    pub outcome: Stored,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn kind_code(name: &str) -> u8 {
    match name {
        "advisory" => 0,
        "update" => 1,
        "incident" => 2,
        "metrics" => 3,
        "emergency" => 4,
        "product" => 5,
        "outreach" => 6,
        "follow-up" => 7,
        "withdrawal" => 8,
        _ => 255,
    }
}

fn tlp_code(tlp: herald_protocol::Tlp) -> u8 {
    tlp as u8
}

fn severity_code(s: herald_protocol::Severity) -> u8 {
    s as u8
}

fn key_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn chain_key(key: &KeyId, seq: Seq) -> Vec<u8> {
    key_of(&[&[prefix::CHAIN], key.as_bytes(), &seq.0.to_be_bytes()])
}

fn head_key(key: &KeyId) -> Vec<u8> {
    key_of(&[&[prefix::HEAD], key.as_bytes()])
}

/// The chain summary in a head entry (key and value as stored).
fn head_entry(k: &[u8], v: &[u8]) -> Result<ChainSummary, StoreError> {
    let key: [u8; 32] = k
        .get(1..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("head key".into()))?;
    decode_head(KeyId::from_bytes(key), v)
}

/// What a fold did to each bulletin, with who sent it and whether it is own.
fn folded(
    items: Vec<(SignedBulletin, MemberId)>,
    from: Vec<(Vec<u8>, bool)>,
    outcomes: Vec<Stored>,
) -> Vec<Folded> {
    items
        .into_iter()
        .zip(from)
        .zip(outcomes)
        .map(|(((bulletin, member), (from, own)), outcome)| Folded {
            bulletin,
            member,
            from,
            own,
            outcome,
        })
        .collect()
}

/// Splits a staged value into sender, member and bulletin bytes.
fn split_staged(v: &[u8]) -> Result<(&[u8], MemberId, &[u8]), StoreError> {
    let corrupt = || StoreError::Corrupt("staged bulletin".into());
    let (&len, rest) = v.split_first().ok_or_else(corrupt)?;
    let from = rest.get(..usize::from(len)).ok_or_else(corrupt)?;
    let (member, bytes) = split_data(&rest[usize::from(len)..])?;
    Ok((from, member, bytes))
}

/// Writes to a tree applied a batch of 4,096 at a time: for a pass over
/// many entries (an upgrade), whose writes need not be one atomic batch.
struct Batched<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    pending: usize,
    written: u64,
}

impl<'a> Batched<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Batched {
            tree,
            batch: sled::Batch::default(),
            pending: 0,
            written: 0,
        }
    }

    fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) -> Result<(), StoreError> {
        self.batch.insert(key, value);
        self.added()
    }

    fn remove(&mut self, key: impl Into<sled::IVec>) -> Result<(), StoreError> {
        self.batch.remove(key);
        self.added()
    }

    fn added(&mut self) -> Result<(), StoreError> {
        self.pending += 1;
        if self.pending >= 4096 {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.written += self.pending as u64;
            self.pending = 0;
        }
        Ok(())
    }

    /// Applies what is left; how many writes were made in all.
    fn finish(mut self) -> Result<u64, StoreError> {
        self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        Ok(self.written + self.pending as u64)
    }
}

/// The value of a time index entry (and the start of an arrival's): kind
/// code, TLP code, severity code, signing member.
fn indexed_value(bulletin: &SignedBulletin, member: &MemberId) -> Vec<u8> {
    let body = bulletin.body();
    key_of(&[
        &[
            kind_code(body.kind.name()),
            tlp_code(body.tlp),
            severity_code(body.severity),
        ],
        member.as_bytes(),
    ])
}

/// Whether an index entry's value ([`indexed_value`]) passes `query`'s
/// filters on kind code (`kind`), TLP, severity and member.
fn passes_index(v: &[u8], query: &Query, kind: Option<u8>) -> Result<bool, StoreError> {
    let [entry_kind, tlp, severity, member @ ..] = v else {
        return Err(StoreError::Corrupt("index entry cut short".into()));
    };
    let member = member
        .get(..32)
        .ok_or_else(|| StoreError::Corrupt("index entry without its member".into()))?;
    Ok(!(kind.is_some_and(|k| k != *entry_kind)
        || query.tlp.is_some_and(|t| tlp_code(t) != *tlp)
        || query.min_severity.is_some_and(|s| *severity < severity_code(s))
        || query.member.as_ref().is_some_and(|m| m.as_bytes() != member)))
}

fn data_key(id: &BulletinId) -> Vec<u8> {
    key_of(&[&[prefix::DATA], id.as_bytes()])
}

fn id_from(bytes: &[u8]) -> Result<BulletinId, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("an index entry does not hold a 32-byte id".into()))?;
    Ok(BulletinId::from_bytes(arr))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, StoreError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("a number in the store is cut short".into()))
}

const HEAD_LEN: usize = 8 + 8 + 8 + 32 + 4;

fn encode_head(c: &ChainSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_LEN);
    out.extend_from_slice(&c.contiguous.0.to_be_bytes());
    out.extend_from_slice(&c.highest.0.to_be_bytes());
    out.extend_from_slice(&c.count.to_be_bytes());
    out.extend_from_slice(&c.fingerprint);
    out.extend_from_slice(&c.evidence.to_be_bytes());
    out
}

fn decode_head(key: KeyId, v: &[u8]) -> Result<ChainSummary, StoreError> {
    if v.len() != HEAD_LEN {
        return Err(StoreError::Corrupt("chain head entry".into()));
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&v[24..56]);
    Ok(ChainSummary {
        key,
        contiguous: Seq(u64_at(v, 0)?),
        highest: Seq(u64_at(v, 8)?),
        count: u64_at(v, 16)?,
        fingerprint,
        evidence: u32::from_be_bytes([v[56], v[57], v[58], v[59]]),
    })
}

/// The member and the wire bytes of a data entry.
fn split_data(v: &[u8]) -> Result<(MemberId, &[u8]), StoreError> {
    let member: [u8; 32] = v
        .get(..32)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("bulletin entry cut short".into()))?;
    Ok((MemberId::from_bytes(member), &v[32..]))
}

/// Checks what the journal of own bulletins holds before the store takes it
/// in: bulletins of this network, each signed by its key (strictly). A
/// journal carried from a store of another network by mistake, or damaged
/// past its checks, is refused, with nothing of it written. (One from
/// another node of this network passes: its bulletins are valid ones.)
fn check_journaled(journaled: &[(SignedBulletin, MemberId)], network: NetworkId) -> Result<(), StoreError> {
    for (bulletin, _) in journaled {
        let body = bulletin.body();
        let refused = |what: &str| {
            StoreError::Corrupt(format!(
                "the journal of own bulletins ({}) holds {what} ({} number {}): it is not this store's; put back this node's own journal file",
                crate::journal::FILE_NAME,
                body.signer.fmt_short(),
                body.seq
            ))
        };
        if body.network != network {
            return Err(refused("a bulletin of another network"));
        }
        let signed = herald_keys::PublicKey::from_bytes(body.signer.as_bytes()).is_ok_and(|key| {
            key.verify_with_domain(
                herald_protocol::BULLETIN_DOMAIN,
                bulletin.body_bytes(),
                bulletin.signature(),
            )
            .is_ok()
        });
        if !signed {
            return Err(refused("a bulletin whose signature does not verify"));
        }
    }
    Ok(())
}

fn data_value(member: &MemberId, bulletin: &SignedBulletin) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + bulletin.as_bytes().len());
    v.extend_from_slice(member.as_bytes());
    v.extend_from_slice(bulletin.as_bytes());
    v
}

impl Store {
    /// Opens (or creates) the store in `dir` for `network`.
    pub fn open(dir: &Path, network: NetworkId) -> Result<Self, StoreError> {
        // The store holds every bulletin, TLP:RED included: its directory is
        // the owner's alone whatever the umask, and one made wider (by an
        // earlier build, or by hand) is narrowed.
        let io = |e| StoreError::Sled(sled::Error::Io(e));
        crate::owner_only::create_dir_all(dir).map_err(io)?;
        match crate::owner_only::narrow_dir(dir) {
            Ok(None) => {}
            Ok(Some(was)) => tracing::warn!(
                dir = %dir.display(),
                was = %format!("{was:o}"),
                "other users could read the store; its directory is now its owner's only (0700)"
            ),
            // Not this user's to change (a copy opened by another user, say):
            // said, and opened as it is.
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "other users can read the store, and its mode could not be narrowed; make it its owner's only (chmod 700)"
            ),
        }
        // sled's background threads release the directory lock a moment after
        // the last handle is dropped: a restart in the same process may wait.
        let deadline = Instant::now() + Duration::from_secs(3);
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_BYTES)
                .flush_every_ms(Some(FLUSH_EVERY_MS))
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked(dir.to_path_buf()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let meta = db.open_tree(trees::META)?;
        // A new store's schema and network in one batch: a crash leaves both
        // or neither (sled's background flush may come between two inserts).
        let create = || -> Result<(), StoreError> {
            let mut batch = sled::Batch::default();
            batch.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes());
            batch.insert(META_NETWORK, network.as_bytes());
            meta.apply_batch(batch)?;
            db.flush()?;
            Ok(())
        };
        let found = match meta.get(META_SCHEMA)? {
            None => {
                create()?;
                SCHEMA_VERSION
            }
            // Left by a crash while an earlier build created the store (it
            // wrote the two apart), before anything else was written: created
            // again.
            Some(_) if meta.get(META_NETWORK)?.is_none() && db.tree_names().len() == 2 && db.is_empty() => {
                tracing::warn!("the store was left half created by a crash; creating it again");
                create()?;
                SCHEMA_VERSION
            }
            Some(v) => {
                let found = v
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("schema version".into()))?;
                if !(OLDEST_SCHEMA..=SCHEMA_VERSION).contains(&found) {
                    return Err(StoreError::Schema { found });
                }
                let stored = meta
                    .get(META_NETWORK)?
                    .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
                    .map(NetworkId::from_bytes)
                    .ok_or_else(|| StoreError::Corrupt("network id missing".into()))?;
                if stored != network {
                    return Err(StoreError::WrongNetwork {
                        expected: network,
                        found: stored,
                    });
                }
                found
            }
        };
        // After sled (its lock on the directory keeps other processes out) and
        // the checks above (a store of another network is left as it was).
        let (journal, journaled) = Journal::open(dir)?;
        check_journaled(&journaled, network)?;
        let bulletins = db.open_tree(trees::BULLETINS)?;
        // One entry per signing key: as many as the registry ever listed.
        let chains = bulletins
            .scan_prefix([prefix::HEAD])
            .map(|entry| {
                let (k, v) = entry?;
                head_entry(&k, &v).map(|s| (s.key, s))
            })
            .collect::<Result<BTreeMap<_, _>, StoreError>>()?;
        let claims = db.open_tree(trees::CLAIMS)?;
        let store = Self {
            bulletins,
            registry: db.open_tree(trees::REGISTRY)?,
            registry_forks: db.open_tree(trees::REGISTRY_FORKS)?,
            registry_contested: db.open_tree(trees::REGISTRY_CONTESTED)?,
            claims_present: Arc::new(std::sync::atomic::AtomicBool::new(!claims.is_empty())),
            claims,
            claims_lock: Arc::new(Mutex::new(())),
            db,
            staged: Arc::new(Mutex::new(Staged::default())),
            fold_lock: Arc::new(Mutex::new(())),
            index_lock: Arc::new(Mutex::new(())),
            chains: Arc::new(RwLock::new(chains)),
            last_stage: Arc::new(AtomicU64::new(0)),
            last_arrival: Arc::new(AtomicU64::new(0)),
            opened: Instant::now(),
            journal: Arc::new(Mutex::new(journal)),
        };
        // Arrivals are numbered on from the last one held (the clock may have
        // gone back since).
        if let Some(entry) = store.bulletins.scan_prefix([prefix::ARRIVAL]).next_back() {
            let (k, _) = entry?;
            let last = u64_at(&k, 1)?;
            store.last_arrival.store(last, Ordering::Release);
            let now = crate::node::now().0;
            if last > now.saturating_add(60_000) {
                tracing::warn!(
                    ahead_s = (last - now) / 1000,
                    "the last bulletin held arrived ahead of this clock (it went back, or was ahead then): new ones count as arriving then until the clock gets there"
                );
            }
        }
        // Fold what earlier builds left staged in sled, before anyone reads.
        let left = store.bulletins.scan_prefix([prefix::STAGED]).count();
        if left > 0 {
            // Each fold removes what it reads, damaged entries included.
            while store.bulletins.scan_prefix([prefix::STAGED]).next().is_some() {
                for f in store.fold_left_staged(FOLD_GROUP)? {
                    if let Stored::Equivocation { other } = f.outcome {
                        let body = f.bulletin.body();
                        tracing::error!(
                            signer = %body.signer.fmt_short(),
                            seq = %body.seq,
                            first = %other.fmt_short(),
                            second = %f.bulletin.id().fmt_short(),
                            "EQUIVOCATION (found folding what was staged before the last stop): both kept as proof"
                        );
                    }
                }
            }
            store.flush()?;
            tracing::info!(count = left, "folded bulletins staged before the last stop");
        }
        if found < SCHEMA_VERSION {
            if found < 4 {
                store.index_answers()?;
            }
            store.index_arrivals()?;
            meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            store.flush()?;
            tracing::info!(from = found, to = SCHEMA_VERSION, "store schema upgraded");
        }
        // Bulletins the journal held are stored as arriving now, after the
        // index of arrivals is built.
        store.replay_journal(journaled)?;
        Ok(store)
    }

    /// Writes the index of answers of every bulletin held: the step from a
    /// store of schema 2 or 3, made once (whoever stops it part way, by a
    /// crash or otherwise, leaves the schema as it was, so it runs again).
    /// Reads every bulletin once, in the order of their ids (one pass over
    /// the data, not a read for each).
    fn index_answers(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let (mut read, mut damaged) = (0u64, 0u64);
        let mut batch = Batched::new(&self.bulletins);
        for entry in self.bulletins.scan_prefix([prefix::DATA]) {
            let (k, v) = entry?;
            // A damaged entry is left as it is (reading it fails as before),
            // counted and reported: it keeps no store from opening.
            let decoded = (|| {
                let member = <[u8; 32]>::try_from(v.get(..32)?)
                    .ok()
                    .map(MemberId::from_bytes)?;
                let bulletin = SignedBulletin::from_bytes(v.get(32..)?).ok()?;
                Some((member, bulletin))
            })();
            let Some((member, bulletin)) = decoded else {
                damaged += 1;
                // The first few by name; the count says the rest.
                if damaged <= 10 {
                    tracing::warn!(key = %hex::encode(&k), "a stored bulletin does not decode: left out of the index of answers");
                }
                continue;
            };
            read += 1;
            for (k, v) in answer_entries(&bulletin, &member) {
                batch.insert(k, v)?;
            }
        }
        let written = batch.finish()?;
        self.flush()?;
        tracing::info!(
            bulletins = read,
            answers = written,
            damaged,
            took_ms = started.elapsed().as_millis() as u64,
            "indexed what answers what (once, upgrading the store)"
        );
        Ok(())
    }

    /// Writes the index of arrivals of every bulletin held: the step from a
    /// store of schema 4 or older, made once (a stop part way leaves the
    /// schema as it was, and it runs again from the start). When they came
    /// was not recorded: each counts as arriving when it says it was made,
    /// or at the upgrade if that is later. One pass over the time index.
    fn index_arrivals(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        // What a run stopped part way wrote.
        let mut batch = Batched::new(&self.bulletins);
        for entry in self.bulletins.scan_prefix([prefix::ARRIVAL]) {
            batch.remove(entry?.0)?;
        }
        batch.finish()?;
        let upgrade = self.arrival_now();
        let mut damaged = 0u64;
        let mut batch = Batched::new(&self.bulletins);
        for entry in self.bulletins.scan_prefix([prefix::BY_TIME]) {
            let (k, v) = entry?;
            let (created, id) = match (u64_at(&k, 1), k.get(9..).map(id_from)) {
                (Ok(created), Some(Ok(id))) if passes_index(&v, &Query::default(), None).is_ok() => {
                    (created, id)
                }
                // Left as it is (a listing that reaches it fails, as
                // before), counted: it keeps no store from opening.
                _ => {
                    damaged += 1;
                    if damaged <= 10 {
                        tracing::warn!(key = %hex::encode(&k), "a time index entry does not decode: left out of the index of arrivals");
                    }
                    continue;
                }
            };
            // In the time index's order, so never going back.
            batch.insert(
                Order::Arrived.key(Timestamp(created.min(upgrade.0)), &id),
                key_of(&[&v, &created.to_be_bytes()]),
            )?;
        }
        let written = batch.finish()?;
        self.flush()?;
        tracing::info!(
            bulletins = written,
            damaged,
            took_ms = started.elapsed().as_millis() as u64,
            "indexed when each bulletin came (once, upgrading the store; those held before count as arriving when they were made)"
        );
        Ok(())
    }

    /// Now on this node's clock, for a bulletin that arrives: never before
    /// the last time given, should the clock go back.
    pub fn arrival_now(&self) -> Timestamp {
        let now = crate::node::now().0;
        Timestamp(self.last_arrival.fetch_max(now, Ordering::AcqRel).max(now))
    }

    /// Stores the bulletins the journal held at open (own bulletins that the
    /// last run had not folded, if it stopped without folding), flushes, and
    /// starts the journal's next epoch.
    fn replay_journal(&self, journaled: Vec<(SignedBulletin, MemberId)>) -> Result<(), StoreError> {
        if journaled.is_empty() {
            return Ok(());
        }
        let outcomes = self.insert_verified(&journaled)?;
        self.flush()?;
        self.journal().start_epoch()?;
        let mut restored = 0usize;
        for ((bulletin, _), outcome) in journaled.iter().zip(outcomes) {
            match outcome {
                Stored::New => restored += 1,
                Stored::AlreadyHeld => {}
                Stored::Equivocation { other } => {
                    let body = bulletin.body();
                    tracing::error!(
                        signer = %body.signer.fmt_short(),
                        seq = %body.seq,
                        first = %other.fmt_short(),
                        second = %bulletin.id().fmt_short(),
                        "EQUIVOCATION (found replaying the journal of own bulletins): both kept as proof"
                    );
                }
            }
        }
        if restored > 0 {
            tracing::info!(
                count = restored,
                "stored own bulletins from the journal (the last run stopped before folding them)"
            );
        }
        Ok(())
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every write so far durable. Call before acknowledging.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signing member and signed bytes of a held bulletin, staged or folded.
    ///
    /// The staged set is read first: a fold removes a bulletin from it only
    /// after its batch is applied, so one of the two reads sees it.
    fn held(&self, id: &BulletinId) -> Result<Option<(MemberId, sled::IVec, usize)>, StoreError> {
        if let Some(item) = self.staged().items.get(id) {
            return Ok(Some((item.member, sled::IVec::from(item.bulletin.as_bytes()), 0)));
        }
        match self.bulletins.get(data_key(id))? {
            None => Ok(None),
            Some(v) => {
                let (member, _) = split_data(&v)?;
                Ok(Some((member, v, 32)))
            }
        }
    }

    /// Whether the bulletin with this id is held (staged or folded).
    pub fn contains(&self, id: &BulletinId) -> Result<bool, StoreError> {
        Ok(self.staged().items.contains_key(id) || self.bulletins.contains_key(data_key(id))?)
    }

    /// Whether `bulletin` is held (staged or folded), as [`Store::contains`],
    /// but without a sled read when its number is above the highest its key
    /// holds (the common case for news): the check each gossiped message
    /// makes, which must not wait while a fold's batch is applied. Every
    /// bulletin in sled is numbered at most its key's highest, which the
    /// batch that stored it raised.
    pub fn holds(&self, bulletin: &SignedBulletin) -> Result<bool, StoreError> {
        Ok(self.holds_as(bulletin)?.is_some())
    }

    /// [`Store::holds`], and if held, whether with the same signed bytes
    /// (`Some(true)`) or its body under another signature (`Some(false)`:
    /// the id does not cover the signature, so a copy with a forged one
    /// names a held bulletin too).
    pub fn holds_as(&self, bulletin: &SignedBulletin) -> Result<Option<bool>, StoreError> {
        let id = bulletin.id();
        if let Some(item) = self.staged().items.get(&id) {
            return Ok(Some(item.bulletin.as_bytes() == bulletin.as_bytes()));
        }
        let body = bulletin.body();
        if body.seq > self.summary(&body.signer).highest {
            return Ok(None);
        }
        match self.bulletins.get(data_key(&id))? {
            None => Ok(None),
            Some(v) => Ok(Some(split_data(&v)?.1 == bulletin.as_bytes())),
        }
    }

    fn chains(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<KeyId, ChainSummary>> {
        self.chains.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of the bulletin held whose id is `text` (64 hexadecimal
    /// characters) or starts with it (at least [`MIN_ID_PREFIX`]: `herald
    /// list` shows the first ten). A full id is returned whether it is held
    /// or not.
    pub fn resolve_id(&self, text: &str) -> Result<BulletinId, IdLookupError> {
        let text = text.trim().to_ascii_lowercase();
        if let Ok(id) = text.parse::<BulletinId>() {
            return Ok(id);
        }
        if text.len() < MIN_ID_PREFIX || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdLookupError::Invalid(text));
        }
        let whole = hex::decode(&text[..text.len() - text.len() % 2])
            .map_err(|_| IdLookupError::Invalid(text.clone()))?;
        let mut found: BTreeSet<BulletinId> = self
            .staged()
            .items
            .keys()
            .filter(|id| hex::encode(id.as_bytes()).starts_with(&text))
            .copied()
            .collect();
        for entry in self.bulletins.scan_prefix(key_of(&[&[prefix::DATA], &whole])) {
            let (key, _) = entry.map_err(StoreError::from)?;
            let id = id_from(key.get(1..).unwrap_or_default())?;
            if hex::encode(id.as_bytes()).starts_with(&text) {
                found.insert(id);
            }
            if found.len() > 1 {
                break;
            }
        }
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id),
            (None, _) => Err(IdLookupError::NotHeld(text)),
            (Some(_), Some(_)) => Err(IdLookupError::Ambiguous(text)),
        }
    }

    /// The bulletin with this id, if held (staged or folded).
    pub fn get(&self, id: &BulletinId) -> Result<Option<SignedBulletin>, StoreError> {
        match self.held(id)? {
            None => Ok(None),
            Some((_, v, at)) => SignedBulletin::from_bytes(&v[at..])
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("bulletin {id}: {e}"))),
        }
    }

    /// The exact stored bytes of a bulletin (staged or folded).
    pub fn get_bytes(&self, id: &BulletinId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.held(id)?.map(|(_, v, at)| v[at..].to_vec()))
    }

    /// The member that signed a held bulletin (staged or folded).
    pub fn signer_of(&self, id: &BulletinId) -> Result<Option<MemberId>, StoreError> {
        Ok(self.held(id)?.map(|(member, ..)| member))
    }

    /// Stages a bulletin received from `from` (peer id bytes) after it passed
    /// validation: readable at once through [`Store::get`],
    /// [`Store::contains`] and [`Store::query`]; in the chains and indexes,
    /// and on disk, after the next [`Store::fold_staged`] and flush. Returns
    /// whether it was the first staged since the last fold (whoever folds
    /// should be told).
    pub fn stage(&self, bulletin: &SignedBulletin, member: &MemberId, from: &[u8]) -> bool {
        self.stage_item(bulletin, member, from, false)
    }

    fn stage_item(&self, bulletin: &SignedBulletin, member: &MemberId, from: &[u8], own: bool) -> bool {
        let id = bulletin.id();
        let arrived = self.arrival_now();
        let first = {
            let mut staged = self.staged();
            let first = staged.items.is_empty();
            // Staged once: a second copy changes nothing (the same body,
            // so the same signing member).
            if let std::collections::hash_map::Entry::Vacant(slot) = staged.items.entry(id) {
                slot.insert(StagedItem {
                    bulletin: bulletin.clone(),
                    member: *member,
                    from: from.to_vec(),
                    own,
                    arrived,
                });
                staged.order.push_back(id);
                *staged.by_member.entry(*member).or_default() += 1;
            }
            first
        };
        let at = u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_stage.fetch_max(at, Ordering::AcqRel);
        first
    }

    /// How long ago the last bulletin was staged (since the store was opened,
    /// if none was).
    pub fn since_last_stage(&self) -> Duration {
        let at = Duration::from_micros(self.last_stage.load(Ordering::Acquire));
        self.opened.elapsed().saturating_sub(at)
    }

    /// Whether the bulletin with this id is staged (held, not yet folded).
    pub fn is_staged(&self, id: &BulletinId) -> bool {
        self.staged().items.contains_key(id)
    }

    /// How many bulletins wait to be folded.
    pub fn staged_count(&self) -> usize {
        self.staged().items.len()
    }

    /// Whether a bulletin `member` signed is staged.
    pub fn stages_from(&self, member: &MemberId) -> bool {
        self.staged().by_member.contains_key(member)
    }

    /// How many bulletins are held: folded or staged, each once, the second
    /// bodies of equivocations included (kept as evidence: `list` does not
    /// show them). Read between two folds; a staged bulletin already
    /// stored (the node's own, when its journal was settled) is not counted
    /// again.
    pub fn held_count(&self) -> Result<u64, StoreError> {
        let _fold = self.fold_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<BulletinId> = self.staged().items.keys().copied().collect();
        let mut held = self.count()?;
        for id in ids {
            if !self.bulletins.contains_key(data_key(&id))? {
                held += 1;
            }
        }
        Ok(held)
    }

    /// Folds the first `limit` staged bulletins into the chains and indexes,
    /// in one atomic batch, and then lets go of them. Not durable until
    /// [`Store::flush`]. Returns what happened to each. If the batch fails they
    /// stay staged.
    pub fn fold_staged(&self, limit: usize) -> Result<Vec<Folded>, StoreError> {
        let _fold = self.fold_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (items, from, arrived) = {
            let staged = self.staged();
            let mut taken = (Vec::new(), Vec::new(), Vec::new());
            for i in staged
                .order
                .iter()
                .take(limit)
                .filter_map(|id| staged.items.get(id))
            {
                taken.0.push((i.bulletin.clone(), i.member));
                taken.1.push((i.from.clone(), i.own));
                taken.2.push(i.arrived);
            }
            taken
        };
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = self.insert_batch(&items, Some(&arrived), &[], sled::Batch::default())?;
        {
            // Taken from the front: staging only appends, and only a fold,
            // one at a time, removes. Each id is in `order` once while it is
            // in `items`.
            let mut staged = self.staged();
            let Staged {
                order,
                items: held,
                by_member,
            } = &mut *staged;
            for id in order.drain(..items.len().min(order.len())) {
                if let Some(item) = held.remove(&id)
                    && let std::collections::hash_map::Entry::Occupied(mut count) =
                        by_member.entry(item.member)
                {
                    *count.get_mut() -= 1;
                    if *count.get() == 0 {
                        count.remove();
                    }
                }
            }
        }
        Ok(folded(items, from, outcomes))
    }

    /// Folds up to `limit` bulletins that earlier builds staged in sled, in one
    /// batch that also removes their entries (and any that do not decode).
    fn fold_left_staged(&self, limit: usize) -> Result<Vec<Folded>, StoreError> {
        let (items, from, keys) = self.read_left_staged(limit)?;
        let outcomes = self.insert_batch(&items, None, &keys, sled::Batch::default())?;
        let from = from.into_iter().map(|f| (f, false)).collect();
        Ok(folded(items, from, outcomes))
    }

    /// Up to `limit` bulletins staged in sled by earlier builds, with their
    /// senders, and the staged keys to remove: theirs, in the same order, then
    /// any that do not decode.
    #[allow(clippy::type_complexity)]
    fn read_left_staged(
        &self,
        limit: usize,
    ) -> Result<(Vec<(SignedBulletin, MemberId)>, Vec<Vec<u8>>, Vec<sled::IVec>), StoreError> {
        let mut items = Vec::new();
        let mut senders = Vec::new();
        let mut keys = Vec::new();
        let mut damaged = Vec::new();
        for entry in self.bulletins.scan_prefix([prefix::STAGED]).take(limit) {
            let (k, v) = entry?;
            let decoded = split_staged(&v).and_then(|(from, member, bytes)| {
                SignedBulletin::from_bytes(bytes)
                    .map(|b| (from.to_vec(), member, b))
                    .map_err(|e| StoreError::Corrupt(format!("staged bulletin: {e}")))
            });
            match decoded {
                Ok((from, member, bulletin)) => {
                    items.push((bulletin, member));
                    senders.push(from);
                    keys.push(k);
                }
                // Received by gossip and acknowledged to no one: drop it, and
                // let sync fetch it again, rather than stop every fold.
                Err(e) => {
                    tracing::error!(error = %e, "dropping a damaged staged bulletin; sync fetches it again");
                    damaged.push(k);
                }
            }
        }
        keys.extend(damaged);
        Ok((items, senders, keys))
    }

    /// The id held for `key` at `seq` (the first one, if it equivocated).
    pub fn chain_entry(&self, key: &KeyId, seq: Seq) -> Result<Option<BulletinId>, StoreError> {
        self.bulletins
            .get(chain_key(key, seq))?
            .map(|v| id_from(&v))
            .transpose()
    }

    /// The highest number of `key`'s chain this node holds or has journaled
    /// (its own bulletins are journaled before they are folded).
    pub fn numbered_up_to(&self, key: &KeyId) -> Result<Seq, StoreError> {
        let folded = self.head(key)?.highest;
        let journaled = self.journal().tip(key).map_or(Seq(0), |(seq, _)| seq);
        Ok(folded.max(journaled))
    }

    /// Records, durably, that `peer` listed `key`'s chain up to `highest`,
    /// above what this node holds: until that peer's session has brought
    /// back all it holds of the chain, the node numbers nothing of `key`
    /// ([`Store::chain_claimed`]).
    pub fn note_chain_claim(&self, key: &KeyId, peer: &[u8], highest: Seq) -> Result<(), StoreError> {
        let claims = &self.claims;
        // Not while a publication numbers (it holds the journal's lock).
        let _numbering = self.journal();
        let _changing = self.claims_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.claims_present
            .store(true, std::sync::atomic::Ordering::Release);
        claims.insert([key.as_bytes(), peer].concat(), &highest.0.to_be_bytes())?;
        claims.flush()?;
        Ok(())
    }

    /// Forgets `peer`'s claim on `key`'s chain (its session brought back all
    /// it holds), or every peer's with `peer` `None`.
    pub fn clear_chain_claims(&self, key: &KeyId, peer: Option<&[u8]>) -> Result<(), StoreError> {
        let claims = &self.claims;
        let _changing = self.claims_lock.lock().unwrap_or_else(|e| e.into_inner());
        match peer {
            Some(peer) => {
                claims.remove([key.as_bytes(), peer].concat())?;
            }
            None => {
                for entry in claims.scan_prefix(key.as_bytes()) {
                    claims.remove(entry?.0)?;
                }
            }
        }
        claims.flush()?;
        if claims.is_empty() {
            self.claims_present
                .store(false, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// The highest number of `key`'s chain a peer listed that the node has
    /// not yet brought back from it (0 if none).
    pub fn chain_claimed(&self, key: &KeyId) -> Result<Seq, StoreError> {
        Ok(self
            .chain_claims(key)?
            .into_iter()
            .map(|(_, highest)| highest)
            .max()
            .unwrap_or(Seq(0)))
    }

    /// The claims on `key`'s chain not yet brought back: each peer (its id's
    /// bytes, as noted) with the highest number it listed.
    pub fn chain_claims(&self, key: &KeyId) -> Result<Vec<(Vec<u8>, Seq)>, StoreError> {
        if !self.claims_present.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let mut claims = Vec::new();
        for entry in self.claims.scan_prefix(key.as_bytes()) {
            let (k, value) = entry?;
            let bytes: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("a chain claim is not 8 bytes".into()))?;
            let peer = k.get(key.as_bytes().len()..).unwrap_or_default().to_vec();
            claims.push((peer, Seq(u64::from_be_bytes(bytes))));
        }
        Ok(claims)
    }

    /// What is held of `key`'s chain.
    pub fn head(&self, key: &KeyId) -> Result<ChainHead, StoreError> {
        let s = self.summary(key);
        Ok(ChainHead {
            contiguous: s.contiguous,
            highest: s.highest,
        })
    }

    /// Every key's chain head.
    pub fn heads(&self) -> Result<Vec<(KeyId, ChainHead)>, StoreError> {
        Ok(self
            .chains()
            .values()
            .map(|s| {
                (
                    s.key,
                    ChainHead {
                        contiguous: s.contiguous,
                        highest: s.highest,
                    },
                )
            })
            .collect())
    }

    /// How many bulletins are folded into the store. Staged ones count from
    /// their fold; [`Store::held_count`] counts them too.
    pub fn count(&self) -> Result<u64, StoreError> {
        match self.bulletins.get([prefix::COUNT])? {
            None => Ok(0),
            Some(v) => u64_at(&v, 0),
        }
    }

    /// Stores verified bulletins (each with the member that signed it) in one
    /// atomic batch. Not durable until [`Store::flush`].
    pub fn insert_verified(&self, items: &[(SignedBulletin, MemberId)]) -> Result<Vec<Stored>, StoreError> {
        self.insert_batch(items, None, &[], sled::Batch::default())
    }

    /// Adds `items` to `batch` (which may already hold other writes), removes
    /// the staged `unstage` keys in it, and applies it. Each new bulletin
    /// arrived at its time in `arrived` (in the order of `items`), or now.
    fn insert_batch(
        &self,
        items: &[(SignedBulletin, MemberId)],
        arrived: Option<&[Timestamp]>,
        unstage: &[sled::IVec],
        mut batch: sled::Batch,
    ) -> Result<Vec<Stored>, StoreError> {
        // Chain summaries and the count are read, updated and written back:
        // one batch at a time. A panic while holding it left nothing written.
        let _index = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Once the batch may go ahead: as close as can be to when it is held.
        let now = match arrived {
            Some(_) => Timestamp(0),
            None => self.arrival_now(),
        };
        let mut outcomes = Vec::with_capacity(items.len());
        // What this batch has written so far, which the tree does not show yet.
        let mut chain_overlay: HashMap<(KeyId, Seq), BulletinId> = HashMap::new();
        let mut chains: HashMap<KeyId, ChainSummary> = HashMap::new();
        let mut in_batch: HashSet<BulletinId> = HashSet::new();
        let mut added = 0u64;
        for (at, (bulletin, member)) in items.iter().enumerate() {
            let body = bulletin.body();
            let id = bulletin.id();
            let arrived = arrived.and_then(|a| a.get(at)).copied().unwrap_or(now);
            let held = match chain_overlay.get(&(body.signer, body.seq)) {
                Some(other) => Some(*other),
                // Above the chain's highest number nothing can be held: skip
                // the read (the common case for new bulletins).
                None if body.seq > self.chain_in(&mut chains, &body.signer)?.highest => None,
                None => self.chain_entry(&body.signer, body.seq)?,
            };
            let outcome = match held {
                Some(other) if other == id => Stored::AlreadyHeld,
                Some(other) => {
                    if in_batch.contains(&id) || self.bulletins.contains_key(data_key(&id))? {
                        Stored::AlreadyHeld
                    } else {
                        Stored::Equivocation { other }
                    }
                }
                None => Stored::New,
            };
            if outcome != Stored::AlreadyHeld {
                in_batch.insert(id);
            }
            match outcome {
                Stored::AlreadyHeld => {}
                Stored::Equivocation { other } => {
                    // Keep the second body too (the first stays the chain entry):
                    // the two signed bodies together are the proof. What it
                    // answers, it answers too: its member signed it.
                    batch.insert(data_key(&id), data_value(member, bulletin));
                    for (k, v) in answer_entries(bulletin, member) {
                        batch.insert(k, v);
                    }
                    for evidence in [other, id] {
                        batch.insert(
                            key_of(&[
                                &[prefix::EQUIVOCATION],
                                body.signer.as_bytes(),
                                &body.seq.0.to_be_bytes(),
                                evidence.as_bytes(),
                            ]),
                            &[],
                        );
                    }
                    self.chain_in(&mut chains, &body.signer)?.evidence += 1;
                    added += 1;
                }
                Stored::New => {
                    self.index_new(&mut batch, bulletin, member, arrived);
                    chain_overlay.insert((body.signer, body.seq), id);
                    let chain = self.chain_in(&mut chains, &body.signer)?;
                    chain.count += 1;
                    xor_into(&mut chain.fingerprint, &seq_fingerprint(&body.signer, body.seq));
                    chain.highest = chain.highest.max(body.seq);
                    let (mut contiguous, highest) = (chain.contiguous, chain.highest);
                    if chain.count == highest.0 {
                        // Every number from 1 to the highest is held: no walk needed.
                        contiguous = highest;
                    }
                    while let Some(next) = contiguous.next() {
                        let held = chain_overlay.contains_key(&(body.signer, next))
                            || (next <= highest && self.chain_entry(&body.signer, next)?.is_some());
                        if !held {
                            break;
                        }
                        contiguous = next;
                    }
                    self.chain_in(&mut chains, &body.signer)?.contiguous = contiguous;
                    added += 1;
                }
            }
            outcomes.push(outcome);
        }
        if added > 0 {
            let count = self.count()? + added;
            batch.insert(&[prefix::COUNT], &count.to_be_bytes());
        }
        for (key, chain) in &chains {
            batch.insert(head_key(key), encode_head(chain));
        }
        for key in unstage {
            batch.remove(key);
        }
        let applied = self.bulletins.apply_batch(batch);
        // Still under the index lock: the next batch starts from these.
        let mut held = self.chains.write().unwrap_or_else(|e| e.into_inner());
        match applied {
            Ok(()) => {
                held.extend(chains);
                Ok(outcomes)
            }
            Err(e) => {
                // sled may have written part of the batch before failing:
                // keep the heads it holds now, as a read from sled would.
                for key in chains.keys() {
                    match self.bulletins.get(head_key(key)) {
                        Ok(Some(v)) => {
                            if let Ok(s) = decode_head(*key, &v) {
                                held.insert(*key, s);
                            }
                        }
                        Ok(None) => {
                            held.remove(key);
                        }
                        Err(_) => {}
                    }
                }
                Err(e.into())
            }
        }
    }

    /// The batch's working copy of `key`'s chain summary, loaded on first use.
    fn chain_in<'a>(
        &self,
        chains: &'a mut HashMap<KeyId, ChainSummary>,
        key: &KeyId,
    ) -> Result<&'a mut ChainSummary, StoreError> {
        if !chains.contains_key(key) {
            chains.insert(*key, self.summary(key));
        }
        chains
            .get_mut(key)
            .ok_or_else(|| StoreError::Corrupt("chain summary vanished".into()))
    }

    /// What is held of `key`'s chain, as sync compares it (from memory: the
    /// copy of every head kept beside sled's).
    pub fn summary(&self, key: &KeyId) -> ChainSummary {
        self.chains()
            .get(key)
            .copied()
            .unwrap_or_else(|| ChainSummary::empty(*key))
    }

    /// Summaries of every chain held.
    pub fn summaries(&self) -> Result<Vec<ChainSummary>, StoreError> {
        Ok(self.chains().values().copied().collect())
    }

    /// Bulletins held as equivocation evidence beyond the first of each key
    /// and number, over every chain (from the summaries in memory).
    pub fn evidence_held(&self) -> Result<usize, StoreError> {
        Ok(self
            .chains()
            .values()
            .map(|s| s.evidence as usize)
            .fold(0usize, usize::saturating_add))
    }

    /// At most `limit` chain summaries with keys above `after`, in key order.
    pub fn summaries_after(&self, after: &KeyId, limit: usize) -> Result<Vec<ChainSummary>, StoreError> {
        use std::ops::Bound;
        Ok(self
            .chains()
            .range((Bound::Excluded(*after), Bound::Unbounded))
            .take(limit)
            .map(|(_, s)| *s)
            .collect())
    }

    /// The numbers of `key`'s chain in `from..=to` that are not held, as ranges.
    pub fn holes(&self, key: &KeyId, from: Seq, to: Seq) -> Result<Vec<SeqRange>, StoreError> {
        let mut out = Vec::new();
        let summary = self.summary(key);
        if summary.count == summary.highest.0 && to <= summary.highest {
            // Every number from 1 to the highest is held.
            return Ok(out);
        }
        // u128: the number after u64::MAX must not wrap. The range is walked
        // as it is read (a long chain with an early gap is not collected).
        let mut next = u128::from(from.0);
        for entry in self.bulletins.range(chain_key(key, from)..=chain_key(key, to)) {
            let (k, _) = entry?;
            let seq = Seq(u64_at(&k, 33)?);
            if u128::from(seq.0) > next {
                out.push(SeqRange {
                    from: Seq(next as u64),
                    to: Seq(seq.0 - 1),
                });
            }
            next = u128::from(seq.0) + 1;
        }
        if next <= u128::from(to.0) {
            out.push(SeqRange {
                from: Seq(next as u64),
                to,
            });
        }
        Ok(out)
    }

    /// The bulletins (wire bytes) held in the wanted ranges, in order, up to
    /// `budget` bytes and `max_items`; `true` if everything wanted that is held
    /// fitted. Evidence bodies of a chain come with its first range.
    pub fn page(
        &self,
        wants: &[Want],
        budget: usize,
        max_items: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let mut out = Vec::new();
        let mut used = 0usize;
        // Takes the bulletin `id` into the page; `false` once it is full.
        let mut take = |id: BulletinId| -> Result<bool, StoreError> {
            let Some(bytes) = self.get_bytes(&id)? else {
                return Ok(true);
            };
            if out.len() >= max_items || (used + bytes.len() > budget && !out.is_empty()) {
                return Ok(false);
            }
            used += bytes.len();
            out.push(bytes);
            Ok(true)
        };
        for want in wants {
            if want.evidence {
                for (_, _, evidence) in self.equivocations_of(&want.key)? {
                    for id in evidence {
                        if !take(id)? {
                            return Ok((out, false));
                        }
                    }
                }
            }
            // Each range read as far as the page goes, not whole: a request
            // for a wide range costs no more than the page it gets.
            for range in &want.ranges {
                let (start, end) = (chain_key(&want.key, range.from), chain_key(&want.key, range.to));
                for entry in self.bulletins.range(start..=end) {
                    if !take(id_from(&entry?.1)?)? {
                        return Ok((out, false));
                    }
                }
            }
        }
        Ok((out, true))
    }

    /// Equivocation evidence of one key: (key, seq, ids) for each number with
    /// more than one body.
    /// (A scan of that key's entries only: sync pages and exports ask for it
    /// key by key.)
    pub fn equivocations_of(&self, key: &KeyId) -> Result<Vec<(KeyId, Seq, Vec<BulletinId>)>, StoreError> {
        self.evidence_under(&key_of(&[&[prefix::EQUIVOCATION], key.as_bytes()]))
    }

    fn index_new(
        &self,
        batch: &mut sled::Batch,
        bulletin: &SignedBulletin,
        member: &MemberId,
        arrived: Timestamp,
    ) {
        let body = bulletin.body();
        let id = bulletin.id();
        let indexed = indexed_value(bulletin, member);
        batch.insert(data_key(&id), data_value(member, bulletin));
        batch.insert(chain_key(&body.signer, body.seq), id.as_bytes());
        batch.insert(
            Order::Arrived.key(arrived, &id),
            key_of(&[&indexed, &body.created.0.to_be_bytes()]),
        );
        batch.insert(Order::Created.key(body.created, &id), indexed);
        for (k, v) in answer_entries(bulletin, member) {
            batch.insert(k, v);
        }
    }

    /// Signs the next bulletin of `key`'s chain from `draft` (whose `signer`,
    /// `seq` and `prev` are filled in here) and makes it durable in the
    /// journal before anyone sees it; see [`Store::publish_own_group`].
    pub fn publish_own(
        &self,
        key: &SecretKey,
        member: &MemberId,
        draft: BulletinBody,
    ) -> Result<SignedBulletin, StoreError> {
        self.publish_own_group(key, member, vec![draft])?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Chain("nothing was signed".into())))
    }

    /// Signs the next bulletins of `key`'s chain from `drafts`, in order,
    /// writes them to the journal of own bulletins with one sync (group
    /// commit), and stages them. On return they survive a crash or a power
    /// cut, and the store reads them at once (`get`, `contains`, `query`);
    /// the next fold puts them in the chains and indexes (the node's indexer
    /// does it within [`FOLD_DELAY`]), and opening the store after a crash
    /// stores whatever the journal holds. A draft that breaks a rule gets its
    /// own error and uses no number; the others go on. The outer error means
    /// nothing was stored.
    ///
    /// Numbering continues from the last bulletin of `key` journaled, or the
    /// chain as folded if that is further on. One thread at a time publishes
    /// (the journal's lock is held throughout). A store that holds no bulletin
    /// of `key` numbers from 1: the check that the key is new, or that peers
    /// gave its chain back, is the node's ([`crate::KeyPast`]), made before
    /// it calls this.
    pub fn publish_own_group(
        &self,
        key: &SecretKey,
        member: &MemberId,
        drafts: Vec<BulletinBody>,
    ) -> Result<Vec<Result<SignedBulletin, StoreError>>, StoreError> {
        let mut journal = self.journal();
        let head = self.head(&key.id())?;
        if head.contiguous != head.highest {
            return Err(StoreError::Chain(format!(
                "the local chain has a gap after {}; wait for sync to repair it",
                head.contiguous
            )));
        }
        // Numbers a peer has listed and not brought back yet are not signed
        // again. (Claims are noted under the journal's lock: none lands
        // between this look and the numbering.)
        let claimed = self.chain_claimed(&key.id())?;
        let held = journal
            .tip(&key.id())
            .map_or(head.highest, |(seq, _)| seq.max(head.highest));
        if claimed > held {
            return Err(StoreError::ChainClaimed { held, claimed });
        }
        let (mut seq, mut prev) = match journal.tip(&key.id()) {
            Some((seq, id)) if seq >= head.highest => (seq, Some(id)),
            _ => match head.highest.0 {
                0 => (head.highest, None),
                _ => (
                    head.highest,
                    Some(
                        self.chain_entry(&key.id(), head.highest)?
                            .ok_or_else(|| StoreError::Corrupt("chain head without an entry".into()))?,
                    ),
                ),
            },
        };
        let mut outcomes = Vec::with_capacity(drafts.len());
        let mut signed = Vec::with_capacity(drafts.len());
        for mut draft in drafts {
            let next = seq
                .next()
                .ok_or_else(|| StoreError::Chain("sequence numbers exhausted".into()))?;
            draft.signer = key.id();
            draft.seq = next;
            draft.prev = prev;
            match herald_keys::sign_bulletin(key, &draft) {
                Ok(bulletin) => {
                    seq = next;
                    prev = Some(bulletin.id());
                    signed.push((bulletin.clone(), *member));
                    outcomes.push(Ok(bulletin));
                }
                Err(e) => outcomes.push(Err(StoreError::Sign(e))),
            }
        }
        let (journaled, result) = self.journal_own(&mut journal, &signed);
        match result {
            Ok(()) => Ok(outcomes),
            Err(e) if journaled == 0 => Err(e),
            // Part of a group larger than the journal is durable (and
            // numbered): those are published; the rest are not.
            Err(e) => {
                let message = e.to_string();
                let mut ok = 0;
                Ok(outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Ok(bulletin) if ok < journaled => {
                            ok += 1;
                            Ok(bulletin)
                        }
                        Ok(_) => Err(StoreError::Chain(format!("not published: {message}"))),
                        Err(e) => Err(e),
                    })
                    .collect())
            }
        }
    }

    /// Appends `items` to the journal, as few syncs as room allows; when it is
    /// full, first settles it ([`Store::settle_journal`]). A group that does
    /// not fit in what is left settles first, so it is one write unless it is
    /// larger than the whole journal. Each part is staged as soon as it is
    /// appended. Returns how many were appended, and the error that stopped
    /// the rest.
    fn journal_own(
        &self,
        journal: &mut Journal,
        items: &[(SignedBulletin, MemberId)],
    ) -> (usize, Result<(), StoreError>) {
        let total: usize = items.iter().map(|(b, _)| Journal::record_len(b)).sum();
        if !journal.fits(total)
            && !journal.is_empty()
            && let Err(e) = self.settle_journal(journal)
        {
            return (0, Err(e));
        }
        let mut from = 0;
        while from < items.len() {
            let (mut to, mut bytes) = (from, 0);
            while let Some((bulletin, _)) = items.get(to) {
                let more = bytes + Journal::record_len(bulletin);
                if !journal.fits(more) {
                    break;
                }
                (to, bytes) = (to + 1, more);
            }
            let step = if to > from {
                journal
                    .append(&items[from..to])
                    .map_err(StoreError::from)
                    .map(|()| {
                        // Staged at once: a settle later in this group stores
                        // what is staged, and must find these.
                        for (bulletin, member) in &items[from..to] {
                            self.stage_item(bulletin, member, &[], true);
                        }
                    })
            } else if journal.is_empty() {
                // Not reached: a journal that cannot hold the largest
                // bulletin is refused at open.
                Err(StoreError::Chain(
                    "a bulletin does not fit in an empty journal".into(),
                ))
            } else {
                self.settle_journal(journal)
            };
            if let Err(e) = step {
                return (from, Err(e));
            }
            from = to;
        }
        (from, Ok(()))
    }

    /// Settles the journal of own bulletins ([`Store::settle_journal`]): on
    /// a clean stop, once everything is folded, so the next open has nothing
    /// to replay.
    pub(crate) fn settle_journal_now(&self) -> Result<(), StoreError> {
        self.settle_journal(&mut self.journal())
    }

    /// Makes every bulletin of the journal's current epoch durable in sled,
    /// then starts a new epoch: the journal is empty again and nothing it held
    /// is lost. Each journaled bulletin was staged at once, and leaves the
    /// staged set only when a fold has put it in sled; so storing the own
    /// bulletins still staged (the fold that follows finds them held) and
    /// flushing covers the journal without reading it.
    fn settle_journal(&self, journal: &mut Journal) -> Result<(), StoreError> {
        if journal.is_empty() {
            return Ok(());
        }
        let (own, arrived): (Vec<(SignedBulletin, MemberId)>, Vec<Timestamp>) = self
            .staged()
            .items
            .values()
            .filter(|item| item.own)
            .map(|item| ((item.bulletin.clone(), item.member), item.arrived))
            .unzip();
        if !own.is_empty() {
            self.insert_batch(&own, Some(&arrived), &[], sled::Batch::default())?;
        }
        self.flush()?;
        journal.start_epoch()?;
        Ok(())
    }

    /// Bulletins matching `query`, newest first, staged ones included.
    ///
    /// Walks the time index backwards from `until` down to `since` (or the
    /// index of arrivals down to `arrived_since`); every filter but the text
    /// is decided from the index entry, so only the bulletins that pass are
    /// read. A selective filter (a rare kind, a quiet member) still walks
    /// every entry in the range: about a microsecond each. Staged bulletins
    /// (at most about a second's worth) are checked one by one and merged in.
    pub fn query(&self, query: &Query) -> Result<Vec<SignedBulletin>, StoreError> {
        Ok(self.search(query, TEXT_SCAN_LIMIT)?.0)
    }

    /// [`Store::query`], reading at most `text_scan` bulletins when the query
    /// looks for text, and saying whether that was all it had to read
    /// (`false`: older bulletins, or earlier arrivals, were not searched).
    pub fn search(&self, query: &Query, text_scan: usize) -> Result<(Vec<SignedBulletin>, bool), StoreError> {
        let (order, range) = Order::asked(query);
        // Staged first: a bulletin folded meanwhile is then in the index.
        let mut staged = self.staged_in(order, query, &range);
        let mut found = Vec::new();
        let mut complete = true;
        let mut read = 0;
        for entry in self.index_entries(order, range, query).rev() {
            let (at, id, passes) = entry?;
            if !passes {
                continue;
            }
            if query.text.is_some() && read == text_scan {
                complete = false;
                break;
            }
            read += 1;
            let Some((bulletin, member)) = self.indexed(&id)? else {
                continue;
            };
            // Unknown kind names share one code: confirmed on the body, with the text.
            if query.matches(&bulletin, &member) {
                found.push((order.key(at, &id), bulletin, member));
                if query.limit != 0 && found.len() >= query.limit {
                    break;
                }
            }
        }
        // In the index's order, newest first; a bulletin folded since the
        // staged ones were read is listed once.
        let listed: HashSet<BulletinId> = found.iter().map(|(_, b, _)| b.id()).collect();
        staged.retain(|(_, b, _)| !listed.contains(&b.id()));
        found.extend(staged);
        found.sort_by(|(a, _, _), (b, _, _)| b.cmp(a));
        if query.limit != 0 {
            found.truncate(query.limit);
        }
        Ok((found.into_iter().map(|(_, b, _)| b).collect(), complete))
    }

    /// The entries of `order`'s index in `range` (keys), each with whether it
    /// passes `query`'s filters but the text and its `arrived_since`: decided
    /// from the entry (an unknown kind name is confirmed by the caller, as
    /// such names share one code).
    fn index_entries<'a>(
        &self,
        order: Order,
        range: KeyRange,
        query: &'a Query,
    ) -> impl DoubleEndedIterator<Item = Result<(Timestamp, BulletinId, bool), StoreError>> + use<'a> {
        let kind = query.kind.as_deref().map(kind_code);
        self.bulletins.range(range).map(move |entry| {
            let (k, v) = entry?;
            let (at, id) = match (u64_at(&k, 1), k.get(1 + 8..).map(id_from)) {
                (Ok(at), Some(Ok(id))) => (Timestamp(at), id),
                _ => return Err(StoreError::Corrupt(format!("{} entry", order.index_name()))),
            };
            let created = match order {
                Order::Created => at,
                Order::Arrived => Timestamp(u64_at(&v, 3 + 32)?),
            };
            let passes = passes_index(&v, query, kind)?
                && query.since.is_none_or(|t| created >= t)
                && query.until.is_none_or(|t| created < t);
            Ok((at, id, passes))
        })
    }

    /// The staged bulletins (not yet in the indexes) whose place in `order`
    /// is in `range` and that match `query` (its `arrived_since` aside), with
    /// their places (the keys they will have in `order`'s index).
    fn staged_in(
        &self,
        order: Order,
        query: &Query,
        range: &KeyRange,
    ) -> Vec<(Vec<u8>, SignedBulletin, MemberId)> {
        let matching: Vec<_> = self
            .staged()
            .items
            .iter()
            .filter(|(_, i)| query.matches_indexed(&i.bulletin, &i.member))
            .filter_map(|(id, i)| {
                let place = order.key(order.of(i), id);
                range
                    .contains(&place)
                    .then(|| (place, i.bulletin.clone(), i.member))
            })
            .collect();
        // Searched once the staged set is let go.
        matching
            .into_iter()
            .filter(|(_, b, _)| query.text.as_deref().is_none_or(|t| holds_text(b, t)))
            .collect()
    }

    /// A page of a listing in `order`, oldest first: the bulletins placed at
    /// or after `since` and after `after` (a time and id, as
    /// [`ListingPage::next`] gives them) that match `query` (its
    /// `arrived_since` and `limit` aside). As many from the index as
    /// `limits` let it hold and read, and the staged ones placed up to where
    /// the page ends. Read page after page, it lists each bulletin held when
    /// it began once, however many there are.
    pub fn listing_page(
        &self,
        order: Order,
        query: &Query,
        since: Timestamp,
        after: Option<(Timestamp, BulletinId)>,
        limits: PageLimits,
    ) -> Result<ListingPage, StoreError> {
        let range = match after {
            Some((at, id)) => (Bound::Excluded(order.key(at, &id)), order.end()),
            None => order.from(since),
        };
        // Staged first: a bulletin folded meanwhile is then in the index.
        let mut staged = self.staged_in(order, query, &range);
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        let mut exhausted = true;
        for (read, entry) in self.index_entries(order, range, query).enumerate() {
            // Each page moves on by one entry at least.
            if read > 0 && (read >= limits.reads || items.len() >= limits.items || bytes >= limits.bytes) {
                exhausted = false;
                break;
            }
            let (at, id, passes) = entry?;
            last = Some((at, id));
            if !passes {
                continue;
            }
            if let Some((bulletin, member)) = self.indexed(&id)?
                && query.matches(&bulletin, &member)
            {
                bytes += bulletin.as_bytes().len();
                items.push((order.key(at, &id), bulletin, member));
            }
        }
        let next = if exhausted { None } else { last };
        // The staged ones up to where this page ends (the rest come later,
        // staged or folded, in the same place); each once.
        let listed: HashSet<BulletinId> = items.iter().map(|(_, b, _)| b.id()).collect();
        let end = next.map(|(at, id)| order.key(at, &id));
        staged
            .retain(|(place, b, _)| end.as_ref().is_none_or(|end| place <= end) && !listed.contains(&b.id()));
        items.extend(staged);
        items.sort_by(|(a, _, _), (b, _, _)| a.cmp(b));
        Ok(ListingPage {
            items: items.into_iter().map(|(_, b, m)| (b, m)).collect(),
            next,
        })
    }

    /// The bulletin an index entry names, with its member.
    fn indexed(&self, id: &BulletinId) -> Result<Option<(SignedBulletin, MemberId)>, StoreError> {
        let Some(v) = self.bulletins.get(data_key(id))? else {
            // Damage, but one lost bulletin must not make every listing fail.
            tracing::error!(%id, "the store is damaged: an index names a bulletin it does not hold");
            return Ok(None);
        };
        let (member, bytes) = split_data(&v)?;
        let bulletin = SignedBulletin::from_bytes(bytes)
            .map_err(|e| StoreError::Corrupt(format!("stored bulletin {id}: {e}")))?;
        Ok(Some((bulletin, member)))
    }

    /// The held bulletins that answer `target`: those of its member that
    /// supersede or withdraw it, and follow-ups on it from any member, oldest
    /// first (by the time they say they were made, then by id). One prefix
    /// read of the index of answers, and a look at the staged bulletins.
    pub fn answers_to(&self, target: &SignedBulletin) -> Result<Answers, StoreError> {
        self.answers_reading_at_most(target, ANSWERS_LIMIT)
    }

    /// [`Store::answers_to`], reading at most `limit` index entries.
    pub fn answers_reading_at_most(
        &self,
        target: &SignedBulletin,
        limit: usize,
    ) -> Result<Answers, StoreError> {
        let id = target.id();
        let member = self.signer_of(&id)?;
        // Only the member's own bulletins may supersede or withdraw it.
        let counts = |answer: Answer, by: &MemberId| !answer.members_only() || member == Some(*by);
        let mut found: BTreeSet<(Timestamp, BulletinId, Answer)> = BTreeSet::new();
        let mut out = Answers {
            complete: true,
            ..Answers::default()
        };
        let entries = self
            .bulletins
            .scan_prefix(key_of(&[&[prefix::ANSWER], id.as_bytes()]));
        for (read, entry) in entries.enumerate() {
            if read == limit {
                out.complete = false;
                break;
            }
            let (k, v) = entry?;
            let answering = k
                .get(1 + 32..)
                .ok_or_else(|| StoreError::Corrupt("answer index key cut short".into()))
                .and_then(id_from)?;
            let (answer, by, created) = match v.as_ref() {
                [code, by @ .., _, _, _, _, _, _, _, _] if by.len() == 32 => (
                    Answer::from_code(*code),
                    <[u8; 32]>::try_from(by).map(MemberId::from_bytes).ok(),
                    u64_at(&v, 1 + 32)?,
                ),
                _ => (None, None, 0),
            };
            let (Some(answer), Some(by)) = (answer, by) else {
                return Err(StoreError::Corrupt("answer index entry".into()));
            };
            if counts(answer, &by) {
                found.insert((Timestamp(created), answering, answer));
            }
        }
        // Staged ones are not indexed yet (looked at in place: no copy is made
        // while the staged set is held).
        found.extend(self.staged().items.iter().flat_map(|(staged_id, i)| {
            let body = i.bulletin.body();
            answered_by(body)
                .filter(|(t, answer)| *t == id && counts(*answer, &i.member))
                .map(move |(_, answer)| (body.created, *staged_id, answer))
        }));
        for (_, id, answer) in found {
            match answer {
                Answer::Supersedes => out.superseded_by.push(id),
                Answer::Withdrawal => out.withdrawn_by.push(id),
                Answer::FollowUp => out.follow_ups.push(id),
            }
        }
        Ok(out)
    }

    /// The ids of what an export of `query` (its filters; no limit) writes,
    /// without reading any bulletin: the matching bulletins in chain order
    /// (key, then number), then the other bodies held as equivocation
    /// evidence on the keys they belong to. Holds 32 bytes per bulletin (and
    /// a set of the matches when there are filters), not the bulletins.
    pub fn export_ids(&self, query: &Query) -> Result<Vec<BulletinId>, StoreError> {
        // An export's filters are indexed ones; a text filter is not applied.
        debug_assert!(query.text.is_none(), "exports do not search text");
        let filtered = query.kind.is_some()
            || query.member.is_some()
            || query.tlp.is_some()
            || query.min_severity.is_some()
            || query.since.is_some()
            || query.until.is_some()
            || query.arrived_since.is_some();
        let wanted: Option<HashSet<BulletinId>> = match filtered {
            false => None,
            true => Some(self.matching_ids(query)?),
        };
        let mut out = Vec::new();
        let mut keys: Vec<KeyId> = Vec::new();
        for entry in self.bulletins.scan_prefix([prefix::CHAIN]) {
            let (k, v) = entry?;
            let id = id_from(&v)?;
            if wanted.as_ref().is_some_and(|w| !w.contains(&id)) {
                continue;
            }
            let key: [u8; 32] = k
                .get(1..33)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt("chain key cut short".into()))?;
            let key = KeyId::from_bytes(key);
            if keys.last() != Some(&key) {
                keys.push(key);
            }
            out.push(id);
        }
        for key in keys {
            for (_, seq, ids) in self.equivocations_of(&key)? {
                let first = self.chain_entry(&key, seq)?;
                for id in ids {
                    // The chain's own body is listed above when it matched.
                    let listed = first == Some(id) && wanted.as_ref().is_none_or(|w| w.contains(&id));
                    if !listed {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The ids of the bulletins matching `query`'s filters, from the time
    /// index (or the index of arrivals, for `arrived_since`).
    fn matching_ids(&self, query: &Query) -> Result<HashSet<BulletinId>, StoreError> {
        let (order, range) = Order::asked(query);
        // Unknown kind names share one code: confirmed on the body.
        let shared = query.kind.as_deref().map(kind_code) == Some(kind_code(""));
        let mut out = HashSet::new();
        for entry in self.index_entries(order, range, query) {
            let (_, id, passes) = entry?;
            if !passes
                || shared
                    && self
                        .get(&id)?
                        .is_none_or(|b| Some(b.body().kind.name()) != query.kind.as_deref())
            {
                continue;
            }
            out.insert(id);
        }
        Ok(out)
    }

    /// The ids of `key`'s bulletins with numbers in `from..=to` that are held,
    /// in order (the chain entries, not the equivocating extras).
    pub fn chain_range(&self, key: &KeyId, from: Seq, to: Seq) -> Result<Vec<(Seq, BulletinId)>, StoreError> {
        let start = chain_key(key, from);
        let end = chain_key(key, to);
        let mut out = Vec::new();
        for entry in self.bulletins.range(start..=end) {
            let (k, v) = entry?;
            out.push((Seq(u64_at(&k, 33)?), id_from(&v)?));
        }
        Ok(out)
    }

    /// Every (key, seq) with more than one body held, with the bodies' ids.
    pub fn equivocations(&self) -> Result<Vec<(KeyId, Seq, Vec<BulletinId>)>, StoreError> {
        self.evidence_under(&[prefix::EQUIVOCATION])
    }

    /// The evidence entries under `prefix` (all of them, or one key's),
    /// grouped by (key, seq).
    fn evidence_under(&self, prefix: &[u8]) -> Result<Vec<(KeyId, Seq, Vec<BulletinId>)>, StoreError> {
        let mut out: Vec<(KeyId, Seq, Vec<BulletinId>)> = Vec::new();
        for entry in self.bulletins.scan_prefix(prefix) {
            let (k, _) = entry?;
            if k.len() != 1 + 32 + 8 + 32 {
                return Err(StoreError::Corrupt("equivocation entry".into()));
            }
            let key = KeyId::from_bytes(*id_from(&k[1..33])?.as_bytes());
            let seq = Seq(u64_at(&k, 33)?);
            let id = id_from(&k[41..])?;
            match out.last_mut() {
                Some((lk, ls, ids)) if *lk == key && *ls == seq => ids.push(id),
                _ => out.push((key, seq, vec![id])),
            }
        }
        Ok(out)
    }

    /// Saves an accepted registry update.
    pub fn save_registry_update(&self, update: &SignedRegistryUpdate) -> Result<(), StoreError> {
        self.registry
            .insert(update.body().version.0.to_be_bytes(), update.to_bytes())?;
        Ok(())
    }

    /// Replaces the stored registry versions from `from` on with `updates`
    /// (another branch the registry took, [`herald_keys::Registry::adopt_branch_saving`]),
    /// in one batch, and flushes: a crash leaves one branch or the other.
    pub fn replace_registry_from(
        &self,
        from: RegistryVersion,
        updates: &[SignedRegistryUpdate],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        // What it replaces, to put back if the flush fails: the registry
        // then stays on its branch in memory, and the store must too, or
        // later versions would be saved on top of the other branch's.
        let mut undo = sled::Batch::default();
        for entry in self.registry.range(from.0.to_be_bytes()..) {
            let (key, value) = entry?;
            batch.remove(key.clone());
            undo.insert(key, value);
        }
        for update in updates {
            let key = update.body().version.0.to_be_bytes();
            batch.insert(&key, update.to_bytes());
            if !self.registry.contains_key(key)? {
                undo.remove(&key);
            }
        }
        self.registry.apply_batch(batch)?;
        self.flush().inspect_err(|_| {
            if let Err(e) = self.registry.apply_batch(undo) {
                tracing::error!(error = %e, "cannot put the registry versions back after a failed flush: restart the node");
            }
        })
    }

    /// Saves the other update of a registry fork the registry has just kept
    /// evidence of, and flushes: a restarted node still reports the fork
    /// (two nodes at one version do not exchange registry updates again).
    pub fn save_registry_fork(&self, theirs: &SignedRegistryUpdate) -> Result<(), StoreError> {
        self.registry_forks.insert(fork_key(theirs), theirs.to_bytes())?;
        self.flush()
    }

    /// The other updates of the registry forks saved, by version.
    pub fn registry_forks(&self) -> Result<Vec<SignedRegistryUpdate>, StoreError> {
        self.registry_forks
            .iter()
            .values()
            .map(|v| {
                let v = v?;
                SignedRegistryUpdate::from_bytes(&v)
                    .map_err(|e| StoreError::Corrupt(format!("registry fork evidence: {e}")))
            })
            .collect()
    }

    /// Forgets a saved fork that no longer is one against the history held.
    pub fn drop_registry_fork(&self, theirs: &SignedRegistryUpdate) -> Result<(), StoreError> {
        self.registry_forks.remove(fork_key(theirs))?;
        Ok(())
    }

    /// Notes that the registry's fork at `version` is contested: the other
    /// branch holds a change that needs the threshold too
    /// ([`herald_keys::Registry::contested`]), so that a restarted node
    /// still does not report it as settled. Made durable by the next flush
    /// (it is a mark for the status, not evidence).
    pub fn save_registry_contested(&self, version: RegistryVersion) -> Result<(), StoreError> {
        self.registry_contested.insert(version.0.to_be_bytes(), &[])?;
        Ok(())
    }

    /// The versions noted by [`Store::save_registry_contested`], in order.
    pub fn registry_contested(&self) -> Result<Vec<RegistryVersion>, StoreError> {
        self.registry_contested
            .iter()
            .keys()
            .map(|key| {
                let key = key?;
                let bytes: [u8; 8] = key
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("a contested registry version's key".into()))?;
                Ok(RegistryVersion(u64::from_be_bytes(bytes)))
            })
            .collect()
    }

    /// Forgets a contested mark that no longer stands for a fork held.
    pub fn drop_registry_contested(&self, version: RegistryVersion) -> Result<(), StoreError> {
        self.registry_contested.remove(version.0.to_be_bytes())?;
        Ok(())
    }

    /// Removes the stored registry versions after `version` (and flushes if
    /// there were any): what does not follow the history the node holds.
    pub fn drop_registry_after(&self, version: RegistryVersion) -> Result<(), StoreError> {
        let Some(next) = version.0.checked_add(1) else {
            return Ok(());
        };
        let later: Vec<sled::IVec> = self
            .registry
            .range(next.to_be_bytes()..)
            .keys()
            .collect::<Result<_, _>>()?;
        if later.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in later {
            batch.remove(key);
        }
        self.registry.apply_batch(batch)?;
        self.flush()
    }

    /// The stored registry history, genesis first: the versions from 1 on,
    /// up to the first one missing. The node saves them in order, but earlier
    /// builds could save two out of order and crash between them: what
    /// follows such a gap is left out here, with a warning, and the node's
    /// start drops it from the store ([`crate::node::stored_registry`]); sync
    /// and gossip bring the network's versions again.
    pub fn registry_history(&self) -> Result<Vec<SignedRegistryUpdate>, StoreError> {
        let mut out = Vec::new();
        for (i, entry) in self.registry.iter().enumerate() {
            let (k, v) = entry?;
            let version = RegistryVersion(u64_at(&k, 0)?);
            if version.0 != i as u64 + 1 {
                tracing::warn!(
                    "the stored registry history skips from version {i} to {version}: versions from {version} on are left out until they come again"
                );
                break;
            }
            out.push(
                SignedRegistryUpdate::from_bytes(&v)
                    .map_err(|e| StoreError::Corrupt(format!("registry version {version}: {e}")))?,
            );
        }
        Ok(out)
    }
}
