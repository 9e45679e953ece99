//! `GET /v1/watch`: the local API's live feed of bulletins, one JSON line
//! each (`application/x-ndjson`): those created (or come) since a given time
//! first, oldest first, then each new one as the node takes it in, as
//! `herald watch` prints them. A feed that cannot go on ends with a
//! [`FeedEnd`] line.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use herald_keys::Registry;
use herald_protocol::{BulletinId, MemberId, Severity, SignedBulletin, Timestamp, Tlp};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::{Failure, Params, off_workers, query_of};
use crate::events::{EventCounts, NodeEvent};
use crate::node::Node;
use crate::store::{Order, PageLimits, Query, Store};
use crate::view::BulletinView;

/// The header with which earlier builds of the node marked a
/// `GET /v1/watch` answer that did not list every bulletin created since the
/// time asked for (value `cut`): only the newest [`WATCH_BACKLOG`] of them,
/// or a text search stopped early. Nodes now list every one, page by page,
/// and never send it; `herald watch` still reads it from older nodes.
pub const BACKLOG_HEADER: &str = "herald-watch-backlog";

/// The most bulletins created since the time asked for that earlier builds
/// of the node listed first ([`BACKLOG_HEADER`]).
pub const WATCH_BACKLOG: usize = 10_000;

/// How many of the node's reports of new bulletins a feed holds while its
/// client reads (about 70 bytes each): an import or a catch-up of as many at
/// once does not make it fall behind (and list again what came).
pub const FEED_QUEUE: usize = 65_536;

/// How long before a feed last had every report in hand the bulletins that
/// came are listed again when it falls behind (reports were lost): a bulletin
/// is given its arrival time as it is held, and reported once it is durable,
/// which can be later (a sync page or an import, after its flush), and the
/// report may still be on its way to the feed (the node's channel, the
/// forwarder) when the feed's queue looks empty. Both must take less.
pub const RESUME_SLACK_MS: u64 = 30_000;

/// Most feeds open at once; one more is refused (503) until one ends. Each
/// holds up to about 15 MB at worst (its queue, the ids it remembers, and a
/// page of a listing).
pub const MAX_FEEDS: u64 = 64;

/// A feed writes an empty line after this long without a bulletin, so that a
/// client gone without closing its connection is noticed (its write fails)
/// and its feed ends.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Most reports of new bulletins a feed reads from the store in one go (one
/// hop to the blocking pool).
const READ_BATCH: usize = 256;

/// How much a feed lists in one page of what was created since `since` or
/// came since `arrived_since` (read as its client takes the page before;
/// every page is listed): at most 1,000 bulletins, or 4 MiB of them (one
/// more at most, up to 256 KiB), looking at most at 10,000 index entries
/// (filters that let little through).
const BACKLOG_PAGE: PageLimits = PageLimits {
    items: 1_000,
    bytes: 4 << 20,
    reads: 10_000,
};

/// How many ids a feed remembers, so as not to look at a bulletin twice
/// (from the listing and as it arrives; as it is held and as it is folded).
const REMEMBERED: usize = 65_536;

/// Filters of `GET /v1/watch`: as `GET /v1/bulletins`, with `since` and
/// `arrived_since` saying what to list first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WatchParams {
    /// Kind name.
    pub kind: Option<String>,
    /// Member id (hex).
    pub member: Option<MemberId>,
    /// TLP label.
    pub tlp: Option<Tlp>,
    /// Minimum severity.
    pub min_severity: Option<Severity>,
    /// Text the title, references or content must hold, letter case aside.
    pub text: Option<String>,
    /// List the bulletins created at or after this time (ms since the epoch)
    /// first, oldest first: all of them, page by page as the client reads;
    /// without it (or `arrived_since`), the feed starts with the next new
    /// bulletin. With `arrived_since`, a filter on what that lists.
    pub since: Option<u64>,
    /// List the bulletins that came to the node at or after this time (ms
    /// since the epoch, its clock) first, whenever made, oldest arrival
    /// first: all of them, page by page as the client reads. How a feed that
    /// earlier builds ended for falling behind is taken up again
    /// ([`FeedEnd::arrived_since`]).
    pub arrived_since: Option<u64>,
    /// Once what `since` or `arrived_since` list is listed, list every
    /// bulletin that came to the node at or after this time (its clock),
    /// whenever made and whatever `since` says, oldest arrival first: how a
    /// watch cut off by the node's stop carries on where it was
    /// ([`FeedEnd::resume`], [`RESUME_HEADER`]).
    pub resume: Option<u64>,
    /// Send a [`Mark`] now and then, saying where to carry on should the
    /// feed be cut off from here on, in place of the empty keepalive line.
    pub marks: Option<bool>,
}

/// A line of a feed asked for `marks`: where to carry on, as a stopping
/// node's [`FeedEnd`] says it, should the feed be cut off from here on
/// (sent every [`KEEPALIVE`], quiet or busy; while reports wait, from
/// where the feed last had every report in hand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Watch again with this as `resume`.
    pub resume: u64,
    /// And this as `since`: the creation time a listing by creation got to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<u64>,
}

/// The header of a `GET /v1/watch` answer that says where to carry on, by
/// arrival (`resume`), should the feed be cut off without a [`FeedEnd`]: the
/// node's arrival time from which everything not sent yet came (a little
/// before the feed began, or the earliest of what it was asked to list).
pub const RESUME_HEADER: &str = "herald-watch-resume";

/// The last line of a feed that ends: the node stops, or cannot read its
/// store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEnd {
    /// Why, and what to do.
    pub error: String,
    /// The feed fell behind the node's events (bulletins may have been
    /// missed): watch again from when this feed began. Sent by earlier
    /// builds of the node only: a feed now lists again what it missed and
    /// goes on.
    pub fell_behind: bool,
    /// When it fell behind: watch again with this as `arrived_since` to miss
    /// nothing (from a little before the feed was last caught up; a client
    /// skips what it printed). Absent from builds older than the index of
    /// arrivals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_since: Option<u64>,
    /// Where to carry on, by arrival: watch again with this as `resume` (and
    /// `listing` as `since`, if given) to miss nothing. Given when the node
    /// stops, and only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<u64>,
    /// The feed was still listing what was created since `since`, and got to
    /// this creation time: watch again with this as `since`, and `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<u64>,
}

/// Tells the feeds that the API is stopping, so that each ends (the server's
/// graceful stop waits for every answer to finish).
#[derive(Clone)]
pub(crate) struct Closing(pub(crate) watch::Receiver<bool>);

/// Ids seen, the oldest forgotten first.
#[derive(Default)]
pub struct Remembered {
    ids: HashSet<BulletinId>,
    order: VecDeque<BulletinId>,
    capacity: usize,
}

impl Remembered {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Remembered {
            capacity,
            ..Remembered::default()
        }
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &BulletinId) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`; whether it was new.
    pub fn insert(&mut self, id: BulletinId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

/// A bulletin the node reports new, with its member when the report names it.
#[derive(Debug)]
struct Arrival {
    id: BulletinId,
    member: Option<MemberId>,
}

/// The node's reports of new bulletins, forwarded as they come into a queue
/// of `capacity` for the feed to read at its pace (forwarding is quick: the
/// node's own channel seldom overflows). A report that finds the queue full,
/// or that the node's channel let go before it was forwarded, is lost:
/// `lost` then says so, and forwarding goes on. Ends when the API stops or
/// the feed goes.
fn forward(
    mut events: broadcast::Receiver<NodeEvent>,
    closing: watch::Receiver<bool>,
    capacity: usize,
    lost: Arc<AtomicBool>,
) -> mpsc::Receiver<Arrival> {
    let (queue, arrivals) = mpsc::channel(capacity);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = closed(closing.clone()) => return,
                () = queue.closed() => return,
                event = events.recv() => event,
            };
            let arrival = match event {
                Ok(NodeEvent::BulletinReceived { bulletin, member, .. }) => Arrival {
                    id: bulletin.id(),
                    member: Some(member),
                },
                Ok(NodeEvent::BulletinStored { id, member, .. }) => Arrival {
                    id,
                    member: Some(member),
                },
                // A second body for a key and number, kept as evidence (in
                // no index: no listing finds it later).
                Ok(NodeEvent::Equivocation { second, .. }) => Arrival {
                    id: second,
                    member: None,
                },
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {
                    lost.store(true, Ordering::Release);
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            match queue.try_send(arrival) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => lost.store(true, Ordering::Release),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    arrivals
}

/// A feed counted as open while it lives ([`EventCounts::watches_open`]).
struct Open(Arc<EventCounts>);

impl Open {
    /// Counts one more feed, if fewer than `most` are open.
    fn new(counts: Arc<EventCounts>, most: u64) -> Option<Open> {
        counts
            .watches_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < most).then_some(open + 1)
            })
            .ok()?;
        Some(Open(counts))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.watches_open.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Feed {
    _open: Open,
    store: Store,
    registry: Arc<RwLock<Registry>>,
    /// The filters, without `since`: a new bulletin is sent whenever it was made.
    filters: Query,
    arrivals: mpsc::Receiver<Arrival>,
    /// Whether reports were lost since this was last cleared (the queue of
    /// arrivals was full, or the node's channel let them go).
    lost: Arc<AtomicBool>,
    closing: watch::Receiver<bool>,
    queued: VecDeque<Vec<u8>>,
    /// Bulletins sent (they passed the filters).
    seen: Remembered,
    ended: bool,
    /// The arrival time from which what came is listed again if reports are
    /// lost: a little before the feed last had every report in hand (or
    /// began, or noticed a loss and let its queue go), so that every report
    /// not handled since is of a bulletin that came after.
    resume: u64,
    /// Where a listing again of what came must start, once the listing under
    /// way ends: reports were lost.
    relist: Option<u64>,
    /// How much a page of such a listing holds ([`BACKLOG_PAGE`]).
    relist_page: PageLimits,
    /// Second bodies of equivocations reported while the queue was let go
    /// (no listing finds them): read with the next reports.
    evidence: Vec<Arrival>,
    /// When it last wrote a line.
    written: tokio::time::Instant,
    /// Whether it sends [`Mark`]s, and when it last did.
    marks: bool,
    marked: tokio::time::Instant,
    /// What was created, or came, since the time asked for, still to list,
    /// page by page, before the feed goes live.
    backlog: Option<Backlog>,
}

/// What a feed still has to list of what was created, or came, since a time.
struct Backlog {
    order: Order,
    /// The filters (with `since`, when listing what came since, if asked
    /// for too).
    query: Query,
    since: Timestamp,
    /// Where the last page ended.
    after: Option<(Timestamp, BulletinId)>,
    /// How much a page lists ([`BACKLOG_PAGE`]).
    page: PageLimits,
}

impl Backlog {
    /// What a feed with `filters` lists first when asked for those created
    /// since `since` or come since `arrived_since` (both: those come since
    /// then that were created since `since`): everything, page by page as
    /// the client reads.
    fn asked(filters: Query, since: Option<u64>, arrived_since: Option<u64>) -> Option<Backlog> {
        let (order, start, query) = match (arrived_since, since) {
            (Some(arrived_since), since) => (
                Order::Arrived,
                arrived_since,
                Query {
                    since: since.map(Timestamp),
                    ..filters
                },
            ),
            (None, Some(since)) => (Order::Created, since, filters),
            (None, None) => return None,
        };
        Some(Backlog {
            order,
            query,
            since: Timestamp(start),
            after: None,
            page: BACKLOG_PAGE,
        })
    }
}

impl Feed {
    /// Queues `bulletin` if it passes the filters and was not sent yet.
    fn offer(&mut self, bulletin: &SignedBulletin, member: MemberId) {
        if !self.filters.matches(bulletin, &member) || !self.seen.insert(bulletin.id()) {
            return;
        }
        let named = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            let name = registry.current().member(&member).map(|m| m.name.clone());
            name.map(|name| (member, name))
        };
        let view = BulletinView::new(bulletin, named, false);
        self.queue_line(&view);
    }

    /// Ends the feed with `error`; `stopping`: the node stops, and the line
    /// says where to carry on once it runs again.
    fn end(&mut self, error: String, stopping: bool) {
        let Mark { resume, listing } = self.mark();
        self.queue_line(&FeedEnd {
            error,
            fell_behind: false,
            arrived_since: None,
            resume: stopping.then_some(resume),
            listing: listing.filter(|_| stopping),
        });
        self.ended = true;
    }

    /// Where a new feed carries on from: [`Feed::resume_from`], and where a
    /// listing by creation under way got to.
    fn mark(&self) -> Mark {
        Mark {
            resume: self.resume_from(),
            listing: self.backlog.as_ref().and_then(|b| match b.order {
                Order::Created => Some(b.after.map_or(b.since.0, |(at, _)| at.0)),
                Order::Arrived => None,
            }),
        }
    }

    /// The line written after [`KEEPALIVE`] without one: a [`Mark`] if asked
    /// for, else an empty line (clients skip it).
    fn keepalive(&mut self) -> Vec<u8> {
        let now = tokio::time::Instant::now();
        self.written = now;
        if !self.marks {
            return b"\n".to_vec();
        }
        self.marked = now;
        let mut line = serde_json::to_vec(&self.mark()).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Whether the feed's next line is [`Feed::keepalive`]'s: nothing
    /// written for [`KEEPALIVE`], or no mark for as long when asked for.
    fn keepalive_due(&self) -> bool {
        let now = tokio::time::Instant::now();
        now >= self.written + KEEPALIVE || (self.marks && now >= self.marked + KEEPALIVE)
    }

    /// The arrival time from which everything this feed has not queued yet
    /// came to the node, but for the rest of a listing by creation: where a
    /// new feed carries on ([`WatchParams::resume`]).
    fn resume_from(&self) -> u64 {
        let listing = self.backlog.as_ref().and_then(|b| match (b.order, b.after) {
            (Order::Created, _) => None,
            (Order::Arrived, None) => Some(b.since.0),
            // Past the last page's end, and what was held just before it
            // but reported after (as for `resume`).
            (Order::Arrived, Some((at, _))) => Some(at.0.saturating_sub(RESUME_SLACK_MS).max(b.since.0)),
        });
        [Some(self.resume), self.relist, listing]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.resume)
    }

    fn queue_line(&mut self, value: &impl Serialize) {
        match serde_json::to_vec(value) {
            Ok(mut line) => {
                line.push(b'\n');
                self.queued.push_back(line);
            }
            Err(e) => tracing::error!(error = %e, "a watch line could not be written"),
        }
    }
}

/// The API is stopping.
async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// The feed's next line, waiting for the next bulletin that passes its
/// filters; `None` once it ends.
async fn next_line(mut feed: Feed) -> Option<(Result<Vec<u8>, std::io::Error>, Feed)> {
    loop {
        // A stopping API ends the feed: what it holds, and a line saying
        // where to carry on (the API drops a client that does not take them
        // within 2 s).
        if *feed.closing.borrow() && !feed.ended {
            // Second bodies of equivocations still waiting first: no listing
            // finds them later. (What else waits came after `resume`.)
            let mut evidence = std::mem::take(&mut feed.evidence);
            while let Ok(arrival) = feed.arrivals.try_recv() {
                if arrival.member.is_none() && evidence.len() < READ_BATCH {
                    evidence.push(arrival);
                }
            }
            take_in(&mut feed, evidence).await;
            if !feed.ended {
                feed.end(STOPPING.into(), true);
            }
        }
        if let Some(line) = feed.queued.pop_front() {
            feed.written = tokio::time::Instant::now();
            return Some((Ok(line), feed));
        }
        if feed.ended {
            return None;
        }
        // Reports lost (its client fell behind): what came from before them
        // is listed again once the listing under way ends, then it goes on
        // live. Those it sent are not sent again (within what it remembers).
        if feed.lost.swap(false, Ordering::AcqRel) {
            let from = feed.relist.map_or(feed.resume, |r| r.min(feed.resume));
            feed.relist = Some(from);
            // What waits is of bulletins that came since `from`: the listing
            // again finds them (but second bodies of equivocations, kept
            // aside). Letting it go makes room, so that what comes while it
            // lists is not lost in turn; what is reported from here on is of
            // a bulletin that comes later.
            let point = resume_point(&feed.store);
            while let Ok(arrival) = feed.arrivals.try_recv() {
                if arrival.member.is_none() && feed.evidence.len() < READ_BATCH {
                    feed.evidence.push(arrival);
                }
            }
            feed.resume = point;
            tracing::debug!(from, "a watch fell behind; it lists again what came since");
        }
        if feed.backlog.is_none()
            && let Some(from) = feed.relist.take()
        {
            feed.backlog = Some(Backlog {
                order: Order::Arrived,
                query: feed.filters.clone(),
                since: Timestamp(from),
                after: None,
                page: feed.relist_page,
            });
        }
        if let Some(backlog) = feed.backlog.take() {
            // Pages that list little still keep the client told; a feed
            // asked for marks says where it got to however much it lists.
            if feed.keepalive_due() {
                feed.backlog = Some(backlog);
                let line = feed.keepalive();
                return Some((Ok(line), feed));
            }
            // The next page, oldest first; what arrives meanwhile waits in
            // the queue.
            let store = feed.store.clone();
            let page = off_workers(move || {
                let page = store.listing_page(
                    backlog.order,
                    &backlog.query,
                    backlog.since,
                    backlog.after,
                    backlog.page,
                )?;
                Ok::<_, crate::store::StoreError>((page, backlog))
            })
            .await;
            match page {
                Ok((page, mut backlog)) => {
                    for (bulletin, member) in &page.items {
                        feed.offer(bulletin, *member);
                    }
                    if page.next.is_some() {
                        backlog.after = page.next;
                        feed.backlog = Some(backlog);
                    }
                }
                Err(Failure(_, e)) => feed.end(format!("the node could not read its store: {e}"), false),
            }
            continue;
        }
        // Every report so far is handled: what is lost from here on came
        // from here on. (Not if some were lost meanwhile: the loop above
        // lists them first.)
        let point = resume_point(&feed.store);
        if feed.arrivals.is_empty() && !feed.lost.load(Ordering::Acquire) {
            feed.resume = point;
        }
        // A busy feed says so now and then too: from where it was last in
        // hand while reports wait.
        if feed.marks && tokio::time::Instant::now() >= feed.marked + KEEPALIVE {
            let line = feed.keepalive();
            return Some((Ok(line), feed));
        }
        // Second bodies of equivocations kept aside first, then the reports.
        let mut arrivals = std::mem::take(&mut feed.evidence);
        if arrivals.is_empty() {
            let got = tokio::select! {
                () = closed(feed.closing.clone()) => continue,
                got = feed.arrivals.recv_many(&mut arrivals, READ_BATCH) => got,
                // Nothing written for a while: an empty line, which clients skip.
                () = tokio::time::sleep_until(feed.written + KEEPALIVE) => {
                    let line = feed.keepalive();
                    return Some((Ok(line), feed));
                }
            };
            if got == 0 {
                // The node or its API is stopping.
                if !feed.ended {
                    feed.end(STOPPING.into(), true);
                }
                continue;
            }
        }
        take_in(&mut feed, arrivals).await;
    }
}

/// Reads what `arrivals` report from the store, each once, in one hop, and
/// queues what passes the filters: received by gossip (reported as soon as
/// it is held, before its fold), published here, pulled by sync, imported,
/// or kept as a second body of an equivocation.
async fn take_in(feed: &mut Feed, arrivals: Vec<Arrival>) {
    let mut wanted: Vec<(BulletinId, Option<MemberId>)> = Vec::new();
    for Arrival { id, member } in arrivals {
        if !feed.seen.contains(&id) && !wanted.iter().any(|(w, _)| *w == id) {
            wanted.push((id, member));
        }
    }
    if wanted.is_empty() {
        return;
    }
    let store = feed.store.clone();
    let read = off_workers(move || {
        let mut found = Vec::with_capacity(wanted.len());
        for (id, member) in wanted {
            let member = match member {
                Some(member) => Some(member),
                None => store.signer_of(&id)?,
            };
            if let (Some(bulletin), Some(member)) = (store.get(&id)?, member) {
                found.push((bulletin, member));
            }
        }
        Ok::<_, crate::store::StoreError>(found)
    })
    .await;
    match read {
        Ok(found) => {
            for (bulletin, member) in found {
                feed.offer(&bulletin, member);
            }
        }
        Err(Failure(_, e)) => feed.end(format!("the node could not read its store: {e}"), false),
    }
}

/// The error of a feed's last line when the node stops.
const STOPPING: &str = "the node is stopping: watch again once it runs, with this resume (herald watch --reconnect does so by itself)";

/// Where a feed is listed again from if reports it is given from now on
/// are lost.
fn resume_point(store: &Store) -> u64 {
    store.arrival_now().0.saturating_sub(RESUME_SLACK_MS)
}

/// `GET /v1/watch`.
pub(crate) async fn watch(
    State(node): State<Arc<Node>>,
    Extension(Closing(closing)): Extension<Closing>,
    Params(params): Params<WatchParams>,
) -> Result<Response, Failure> {
    let filters = query_of(
        params.kind,
        params.member,
        params.tlp,
        params.min_severity,
        params.text,
    )?;
    // Subscribed before the listing: nothing falls between the two.
    let open = Open::new(node.shared_event_counts(), MAX_FEEDS).ok_or_else(|| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_FEEDS} watches are open on this node already: end one, then watch again"),
        )
    })?;
    let lost = Arc::new(AtomicBool::new(false));
    let feed = Feed {
        _open: open,
        arrivals: forward(node.subscribe(), closing.clone(), FEED_QUEUE, Arc::clone(&lost)),
        lost,
        // Once what it was asked to list first is listed.
        relist: params.resume,
        relist_page: BACKLOG_PAGE,
        evidence: Vec::new(),
        store: node.store().clone(),
        registry: node.registry(),
        filters: filters.clone(),
        closing,
        queued: VecDeque::new(),
        seen: Remembered::new(REMEMBERED),
        ended: false,
        // After subscribing: what comes from here on is reported to it.
        resume: resume_point(node.store()),
        written: tokio::time::Instant::now(),
        marks: params.marks.unwrap_or(false),
        marked: tokio::time::Instant::now(),
        backlog: Backlog::asked(filters, params.since, params.arrived_since),
    };
    tracing::debug!(since = ?params.since, arrived_since = ?params.arrived_since, resume = ?params.resume, "a watch began");
    let resume = feed.resume_from();
    let body = axum::body::Body::from_stream(futures::stream::unfold(feed, next_line));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(RESUME_HEADER, HeaderValue::from(resume));
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_network::one_member;

    /// A feed of bulletins whose text holds "number 2", on a fresh store, and
    /// what sends it events and tells it the API stops.
    fn feed(
        net: &crate::test_network::OneMember,
        dir: &std::path::Path,
        capacity: usize,
        queue: usize,
    ) -> (Feed, broadcast::Sender<NodeEvent>, watch::Sender<bool>) {
        let store = Store::open(dir, herald_protocol::NetworkId::from_genesis(net.genesis.hash())).unwrap();
        // What the reports name is held.
        let held: Vec<_> = net.chain(5).into_iter().map(|b| (b, net.member_id())).collect();
        store.insert_verified(&held).unwrap();
        let (events, receiver) = broadcast::channel(capacity);
        let (closing, closing_rx) = watch::channel(false);
        let lost = Arc::new(AtomicBool::new(false));
        let feed = Feed {
            _open: Open::new(Arc::default(), MAX_FEEDS).unwrap(),
            store,
            registry: Arc::new(RwLock::new(net.registry.clone())),
            filters: Query {
                text: Some("number 2".into()),
                ..Query::default()
            },
            arrivals: forward(receiver, closing_rx.clone(), queue, Arc::clone(&lost)),
            lost,
            relist: None,
            relist_page: BACKLOG_PAGE,
            evidence: Vec::new(),
            closing: closing_rx,
            queued: VecDeque::new(),
            seen: Remembered::new(REMEMBERED),
            ended: false,
            resume: 0,
            written: tokio::time::Instant::now(),
            marks: false,
            marked: tokio::time::Instant::now(),
            backlog: None,
        };
        (
            Feed {
                resume: resume_point(&feed.store),
                ..feed
            },
            events,
            closing,
        )
    }

    fn received(net: &crate::test_network::OneMember, bulletin: &SignedBulletin) -> NodeEvent {
        NodeEvent::BulletinReceived {
            bulletin: Arc::new(bulletin.clone()),
            member: net.member_id(),
            from: libp2p::PeerId::random(),
            held_at: std::time::SystemTime::now(),
        }
    }

    fn stored(
        net: &crate::test_network::OneMember,
        bulletin: &SignedBulletin,
        origin: crate::events::Origin,
    ) -> NodeEvent {
        let body = bulletin.body();
        NodeEvent::BulletinStored {
            id: bulletin.id(),
            member: net.member_id(),
            signer: body.signer,
            seq: body.seq,
            kind: body.kind.name(),
            created: body.created,
            origin,
        }
    }

    async fn line(feed: Feed) -> Option<(serde_json::Value, Feed)> {
        let (line, feed) = tokio::time::timeout(std::time::Duration::from_secs(10), next_line(feed))
            .await
            .unwrap()?;
        Some((serde_json::from_slice(&line.unwrap()).unwrap(), feed))
    }

    #[tokio::test]
    async fn a_feed_sends_each_bulletin_that_passes_its_filters_once_and_ends_as_the_api_stops() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, closing) = feed(&net, dir.path(), 16, 16);
        let chain = net.chain(4);
        // Made from the second on: the first does not pass.
        feed.filters.text = None;
        feed.filters.since = Some(chain[1].body().created);
        for b in [&chain[0], &chain[1], &chain[1], &chain[2]] {
            events.send(received(&net, b)).unwrap();
        }
        // Folded: looked at already, so not read again.
        events
            .send(stored(
                &net,
                &chain[1],
                crate::events::Origin::Gossip(libp2p::PeerId::random()),
            ))
            .unwrap();
        events.send(received(&net, &chain[3])).unwrap();
        let mut ids = Vec::new();
        let mut feed = Some(feed);
        for _ in 0..3 {
            let (line, rest) = line(feed.take().unwrap()).await.unwrap();
            assert_eq!(line["member_name"], "member-1");
            ids.push(line["id"].as_str().unwrap().to_string());
            feed = Some(rest);
        }
        let expected: Vec<String> = chain[1..].iter().map(|b| b.id().to_string()).collect();
        assert_eq!(ids, expected, "each once, in order; the first filtered out");
        // A stopping API ends it, saying where to carry on: from before what
        // it has not read (a little before it last had every report in hand).
        let last_caught_up = feed.as_ref().unwrap().resume;
        events.send(received(&net, &net.chain(5)[4])).unwrap();
        closing.send(true).unwrap();
        let (end, feed) = line(feed.unwrap()).await.unwrap();
        let end: FeedEnd = serde_json::from_value(end).unwrap();
        assert!(
            end.error.contains("stopping")
                && end.resume == Some(last_caught_up)
                && end.listing.is_none()
                && !end.fell_behind,
            "{end:?}"
        );
        assert!(line(feed).await.is_none());
    }

    #[tokio::test]
    async fn a_bulletin_first_reported_as_stored_is_read_from_the_store_once() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (feed, events, _closing) = feed(&net, dir.path(), 16, 16);
        let chain = net.chain(2);
        let stored = || stored(&net, &chain[1], crate::events::Origin::Local);
        // Published here (or received signed with the node's own key): only its fold is
        // reported. Then reported again, and received: sent once all the same.
        events.send(stored()).unwrap();
        events.send(stored()).unwrap();
        events.send(received(&net, &chain[1])).unwrap();
        let (line, feed) = line(feed).await.unwrap();
        assert_eq!(line["id"], chain[1].id().to_string());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), next_line(feed))
                .await
                .is_err(),
            "nothing more"
        );
    }

    /// The next `n` lines' ids, and the feed.
    async fn ids(mut feed: Feed, n: usize) -> (Vec<String>, Feed) {
        let mut ids = Vec::new();
        for _ in 0..n {
            let (line, next) = line(feed).await.unwrap();
            ids.push(line["id"].as_str().unwrap().to_string());
            feed = next;
        }
        (ids, feed)
    }

    /// Waits (bounded) for a feed's forwarder to lose a report.
    async fn lost(flag: &AtomicBool) {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !flag.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    /// The ids of `bulletins`, sorted.
    fn sorted_ids(bulletins: &[SignedBulletin]) -> Vec<String> {
        sorted(bulletins.iter().map(|b| b.id().to_string()).collect())
    }

    /// Sent live once `feed` has nothing else to send.
    async fn goes_on_live(
        net: &crate::test_network::OneMember,
        feed: Feed,
        events: &broadcast::Sender<NodeEvent>,
    ) {
        let more = net.chain(20).pop().unwrap();
        feed.store
            .insert_verified(&[(more.clone(), net.member_id())])
            .unwrap();
        events.send(received(net, &more)).unwrap();
        let (line, _feed) = line(feed).await.unwrap();
        assert_eq!(line["id"].as_str(), Some(more.id().to_string().as_str()));
    }

    #[tokio::test]
    async fn a_feed_whose_reports_the_node_let_go_lists_again_what_came_and_goes_on() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        // The node's channel holds 2 reports: the feed misses 5 of 7.
        let (mut feed, events, _closing) = feed(&net, dir.path(), 2, 16);
        feed.filters.text = None;
        // Held while the feed runs (made whenever): listed again, by arrival.
        let chain = net.chain(7);
        let late: Vec<_> = chain[5..].iter().map(|b| (b.clone(), net.member_id())).collect();
        feed.store.insert_verified(&late).unwrap();
        for b in &chain {
            let _ = events.send(received(&net, b));
        }
        let (sent, feed) = ids(feed, 7).await;
        assert_eq!(sorted(sent), sorted_ids(&chain), "each once, none missed");
        goes_on_live(&net, feed, &events).await;
    }

    #[tokio::test]
    async fn a_feed_whose_queue_fills_lists_again_what_came_since_it_was_caught_up() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        // Its queue holds 2 reports: it loses 3 of 5.
        let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 2);
        feed.filters.text = None;
        let chain = net.chain(5);
        for b in &chain {
            events.send(received(&net, b)).unwrap();
        }
        lost(&feed.lost).await;
        // What came since it began (when the five were held), by arrival:
        // one time, so by id; then the two queued, sent already.
        let (sent, feed) = ids(feed, 5).await;
        assert_eq!(sent, sorted_ids(&chain), "each once, none missed");
        assert!(!feed.lost.load(Ordering::Acquire) && feed.relist.is_none());
        goes_on_live(&net, feed, &events).await;
    }

    #[tokio::test]
    async fn a_loss_lists_again_from_where_the_feed_last_had_every_report_in_hand() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 2);
        feed.filters.text = None;
        feed.resume = 7;
        feed.relist_page.items = 1;
        let chain = net.chain(5);
        let lose = |feed: &Feed, reports: &[SignedBulletin]| {
            for b in reports {
                events.send(received(&net, b)).unwrap();
            }
            let flag = Arc::clone(&feed.lost);
            async move { lost(&flag).await }
        };
        let began = crate::node::now().0;
        lose(&feed, &chain).await;
        let (first, feed) = ids(feed, 1).await;
        let listing = feed.backlog.as_ref().unwrap();
        assert_eq!(
            (listing.order, listing.since),
            (Order::Arrived, Timestamp(7)),
            "from before"
        );
        assert!(
            feed.resume + RESUME_SLACK_MS >= began,
            "moved on as the loss was noticed"
        );
        assert!(feed.arrivals.is_empty(), "what waited was let go");
        // Lost again while it lists: listed again after, from where the first
        // loss left it.
        let at_first_loss = feed.resume;
        let mut feed = feed;
        lose(&feed, &chain[..3]).await;
        let (second, next) = ids(feed, 1).await;
        feed = next;
        assert_eq!(feed.relist, Some(at_first_loss));
        assert_eq!(
            feed.backlog.as_ref().unwrap().since,
            Timestamp(7),
            "the first still lists"
        );
        let (rest, feed) = ids(feed, 3).await;
        let sent: Vec<String> = first.into_iter().chain(second).chain(rest).collect();
        assert_eq!(sorted(sent), sorted_ids(&chain), "each once, none missed");
        goes_on_live(&net, feed, &events).await;
    }

    #[tokio::test]
    async fn reports_lost_while_it_lists_are_listed_after() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 2);
        feed.filters.text = None;
        // It lists what was created since the start, 2 a page.
        let mut backlog = Backlog::asked(feed.filters.clone(), Some(0), None).unwrap();
        backlog.page.items = 2;
        feed.backlog = Some(backlog);
        let held: Vec<String> = net.chain(5).iter().map(|b| b.id().to_string()).collect();
        let (first, feed) = ids(feed, 2).await;
        assert_eq!(first, held[..2]);
        // Meanwhile, more come than its queue holds, one of them made before
        // all it holds (behind its listing by creation).
        let early = net.chain_from(10, 1_600_000_000_000).pop().unwrap();
        // Reported last, when the queue is full: only a listing again by
        // arrival finds it.
        let came: Vec<_> = net.chain(8)[5..].iter().cloned().chain([early]).collect();
        for b in &came {
            feed.store
                .insert_verified(&[(b.clone(), net.member_id())])
                .unwrap();
            events.send(received(&net, b)).unwrap();
        }
        lost(&feed.lost).await;
        // The rest of the listing (with those made after what it held), then
        // what came while it listed, each once.
        let (rest, feed) = ids(feed, 3 + came.len()).await;
        let expected = held[2..].iter().cloned().chain(sorted_ids(&came)).collect();
        assert_eq!(sorted(rest.clone()), sorted(expected), "each once, none missed");
        assert_eq!(rest[..3], held[2..], "the listing first");
        goes_on_live(&net, feed, &events).await;
    }

    #[tokio::test]
    async fn the_second_body_of_an_equivocation_is_sent_as_it_is_found() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 16);
        feed.filters.text = None;
        // Number 3 again, another body: kept as evidence, in no index.
        let first = net.chain(3).pop().unwrap();
        let second = net.chain_from(3, 1_600_000_000_000).pop().unwrap();
        let outcome = feed
            .store
            .insert_verified(&[(second.clone(), net.member_id())])
            .unwrap();
        assert!(
            matches!(outcome[..], [crate::Stored::Equivocation { .. }]),
            "{outcome:?}"
        );
        events
            .send(NodeEvent::Equivocation {
                signer: net.signing.id(),
                seq: herald_protocol::Seq(3),
                first: first.id(),
                second: second.id(),
            })
            .unwrap();
        let (line, feed) = line(feed).await.unwrap();
        assert_eq!(
            (line["id"].as_str(), line["member_name"].as_str()),
            (Some(second.id().to_string().as_str()), Some("member-1"))
        );
        goes_on_live(&net, feed, &events).await;
    }

    #[tokio::test]
    async fn a_feed_asked_to_resume_lists_what_came_since_after_its_listing() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 16);
        feed.filters.text = None;
        // As `watch` makes it for `since` (none held: nothing made since
        // then) and `resume` (all five came since then).
        feed.backlog = Backlog::asked(feed.filters.clone(), Some(u64::MAX), None);
        feed.relist = Some(0);
        assert_eq!(feed.resume_from(), 0);
        let (sent, feed) = ids(feed, 5).await;
        assert_eq!(sorted(sent), sorted_ids(&net.chain(5)));
        goes_on_live(&net, feed, &events).await;
    }

    #[test]
    fn where_a_feed_carries_on_covers_what_it_has_not_listed() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let (mut feed, _events, _closing) = feed(&net, dir.path(), 16, 16);
        feed.resume = 100_000;
        assert_eq!(
            feed.resume_from(),
            100_000,
            "live: from before it last had every report"
        );
        feed.backlog = Backlog::asked(feed.filters.clone(), None, Some(50_000));
        assert_eq!(feed.resume_from(), 50_000, "listing by arrival: from its start");
        let at = |ms| Some((Timestamp(ms), BulletinId::from_bytes([7; 32])));
        feed.backlog.as_mut().unwrap().after = at(95_000);
        assert_eq!(
            feed.resume_from(),
            95_000 - RESUME_SLACK_MS,
            "from before where its pages got to"
        );
        feed.backlog.as_mut().unwrap().after = at(60_000);
        assert_eq!(feed.resume_from(), 50_000, "never before what it was asked for");
        feed.relist = Some(10);
        assert_eq!(feed.resume_from(), 10, "a listing again still to come");
        feed.relist = None;
        feed.backlog = Backlog::asked(feed.filters.clone(), Some(5), None);
        assert_eq!(
            feed.resume_from(),
            100_000,
            "listing by creation: said apart (listing)"
        );
        // Said apart when the node stops: where the listing by creation got to.
        let stop_line = |feed: &mut Feed| {
            feed.end(STOPPING.into(), true);
            let end: FeedEnd = serde_json::from_slice(&feed.queued.pop_back().unwrap()).unwrap();
            feed.ended = false;
            (end.resume, end.listing)
        };
        assert_eq!(stop_line(&mut feed), (Some(100_000), Some(5)));
        feed.backlog.as_mut().unwrap().after = at(70_000);
        assert_eq!(stop_line(&mut feed), (Some(100_000), Some(70_000)));
    }

    #[tokio::test]
    async fn a_stopping_feed_sends_the_second_body_of_an_equivocation_still_waiting() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, closing) = feed(&net, dir.path(), 16, 16);
        feed.filters.text = None;
        let second = net.chain_from(3, 1_600_000_000_000).pop().unwrap();
        feed.store
            .insert_verified(&[(second.clone(), net.member_id())])
            .unwrap();
        events
            .send(NodeEvent::Equivocation {
                signer: net.signing.id(),
                seq: herald_protocol::Seq(3),
                first: net.chain(3)[2].id(),
                second: second.id(),
            })
            .unwrap();
        // Forwarded, not read yet, when the API stops.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while feed.arrivals.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        closing.send(true).unwrap();
        let (sent, feed) = line(feed).await.unwrap();
        assert_eq!(sent["id"].as_str(), Some(second.id().to_string().as_str()));
        let (end, feed) = line(feed).await.unwrap();
        assert!(end["resume"].is_u64(), "{end}");
        assert!(line(feed).await.is_none());
    }

    #[tokio::test]
    async fn a_feed_that_goes_takes_its_forwarding_task_with_it() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (feed, events, _closing) = feed(&net, dir.path(), 16, 16);
        assert_eq!(events.receiver_count(), 1, "the forwarder listens");
        drop(feed);
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while events.receiver_count() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    #[test]
    fn a_watch_lists_first_by_creation_or_by_arrival_as_asked() {
        let filters = Query {
            kind: Some("outreach".into()),
            ..Query::default()
        };
        assert!(Backlog::asked(filters.clone(), None, None).is_none(), "live only");
        let listed = |b: Backlog| (b.order, b.since, b.query.since, b.query.kind, b.after, b.page);
        let by = |order, since: u64, created_since: Option<u64>| {
            (
                order,
                Timestamp(since),
                created_since.map(Timestamp),
                Some("outreach".to_string()),
                None,
                BACKLOG_PAGE,
            )
        };
        let asked =
            |since, arrived_since| listed(Backlog::asked(filters.clone(), since, arrived_since).unwrap());
        assert_eq!(asked(Some(5), None), by(Order::Created, 5, None));
        assert_eq!(asked(None, Some(7)), by(Order::Arrived, 7, None));
        // Both: what came since, of what was created since.
        assert_eq!(asked(Some(5), Some(7)), by(Order::Arrived, 7, Some(5)));
    }

    #[tokio::test]
    async fn a_feed_lists_all_created_or_come_since_page_by_page_then_goes_live() {
        for order in [Order::Arrived, Order::Created] {
            let net = one_member();
            let dir = tempfile::tempdir().unwrap();
            let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 16);
            feed.filters.text = None;
            let (since, arrived_since) = match order {
                Order::Created => (Some(0), None),
                Order::Arrived => (None, Some(0)),
            };
            let mut backlog = Backlog::asked(feed.filters.clone(), since, arrived_since).unwrap();
            backlog.page.items = 2;
            feed.backlog = Some(backlog);
            let held: Vec<String> = net.chain(5).iter().map(|b| b.id().to_string()).collect();
            let mut lines = Vec::new();
            let mut feed = feed;
            // The first page.
            for _ in 0..2 {
                let (line, next) = line(feed).await.unwrap();
                lines.push(line["id"].as_str().unwrap().to_string());
                feed = next;
            }
            // Held and reported while it lists, a millisecond after the
            // fixture's five (which share theirs): one created before
            // everything (its place by creation is behind the listing: sent
            // live), then one created after.
            let early = net.chain_from(7, 1_600_000_000_000).pop().unwrap();
            let late = net.chain(6).pop().unwrap();
            for bulletin in [&early, &late] {
                let now = feed.store.arrival_now();
                while feed.store.arrival_now() == now {}
                feed.store
                    .insert_verified(&[(bulletin.clone(), net.member_id())])
                    .unwrap();
                events.send(received(&net, bulletin)).unwrap();
            }
            for _ in 0..5 {
                let (line, next) = line(feed).await.unwrap();
                lines.push(line["id"].as_str().unwrap().to_string());
                feed = next;
            }
            let mut expected = held.clone();
            match order {
                Order::Arrived => {
                    // One arrival time: by id; then the two, as they came.
                    expected.sort();
                    expected.extend([early.id().to_string(), late.id().to_string()]);
                }
                Order::Created => {
                    expected.extend([late.id().to_string(), early.id().to_string()]);
                }
            }
            assert_eq!(lines, expected, "{order:?}: oldest first, each once");
            assert!(feed.backlog.is_none());
            // And then live, nothing sent twice.
            let more = net.chain(8).pop().unwrap();
            feed.store
                .insert_verified(&[(more.clone(), net.member_id())])
                .unwrap();
            events.send(received(&net, &more)).unwrap();
            let (line, _feed) = line(feed).await.unwrap();
            assert_eq!(line["id"].as_str(), Some(more.id().to_string().as_str()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_feed_writes_an_empty_line_now_and_then() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (feed, events, _closing) = feed(&net, dir.path(), 16, 16);
        let started = tokio::time::Instant::now();
        // A report it does not send (its filters) does not put the line off.
        tokio::time::advance(KEEPALIVE / 2).await;
        events.send(received(&net, &net.chain(1)[0])).unwrap();
        let (line, feed) = tokio::time::timeout(KEEPALIVE * 2, next_line(feed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line.unwrap(), b"\n");
        let waited = started.elapsed();
        assert!(waited >= KEEPALIVE && waited < KEEPALIVE * 3 / 2, "{waited:?}");
        assert!(!feed.ended, "and it goes on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_asked_for_marks_says_now_and_then_where_to_carry_on() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let (mut feed, events, _closing) = feed(&net, dir.path(), 16, 16);
        feed.marks = true;
        feed.filters.text = None;
        // Quiet: a mark in place of the empty line.
        let (line, mut feed) = tokio::time::timeout(KEEPALIVE * 2, next_line(feed))
            .await
            .unwrap()
            .unwrap();
        let mark: Mark = serde_json::from_slice(&line.unwrap()).unwrap();
        assert_eq!(
            mark,
            Mark {
                resume: feed.resume,
                listing: None
            }
        );
        // While it lists by creation: where the listing got to.
        feed.backlog = Backlog::asked(feed.filters.clone(), Some(0), None);
        feed.backlog.as_mut().unwrap().after = Some((Timestamp(1_234), BulletinId::from_bytes([7; 32])));
        tokio::time::advance(KEEPALIVE).await;
        // However much it lists (a line written just now), before its next page.
        feed.written = tokio::time::Instant::now();
        let (line, mut feed) = next_line(feed).await.unwrap();
        let mark: Mark = serde_json::from_slice(&line.unwrap()).unwrap();
        assert_eq!(mark.listing, Some(1_234));
        assert!(!feed.ended);
        // Live with reports waiting: from where it was last in hand, then
        // what waits.
        feed.backlog = None;
        let resume = feed.resume;
        let held = net.chain(2).pop().unwrap();
        events.send(received(&net, &held)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while feed.arrivals.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        tokio::time::advance(KEEPALIVE).await;
        feed.written = tokio::time::Instant::now();
        let (marked, feed) = next_line(feed).await.unwrap();
        let mark: Mark = serde_json::from_slice(&marked.unwrap()).unwrap();
        assert_eq!(
            mark,
            Mark {
                resume,
                listing: None
            }
        );
        let (sent, _feed) = self::line(feed).await.unwrap();
        assert_eq!(sent["id"].as_str(), Some(held.id().to_string().as_str()));
    }

    #[test]
    fn a_feed_counts_as_open_while_it_lives() {
        let counts = Arc::new(EventCounts::default());
        let open = |c: &EventCounts| c.watches_open.load(Ordering::Relaxed);
        let (first, second) = (
            Open::new(Arc::clone(&counts), 2).unwrap(),
            Open::new(Arc::clone(&counts), 2).unwrap(),
        );
        assert_eq!(open(&counts), 2);
        assert!(Open::new(Arc::clone(&counts), 2).is_none(), "two at most");
        assert_eq!(open(&counts), 2, "a refusal counts nothing");
        drop(first);
        assert_eq!(open(&counts), 1);
        assert!(
            Open::new(Arc::clone(&counts), 2).is_some(),
            "one ended, one more may open"
        );
        drop(second);
        assert_eq!(open(&counts), 0);
    }

    #[test]
    fn remembered_ids_forget_the_oldest_first() {
        let mut seen = Remembered::new(2);
        let id = |n: u8| BulletinId::from_bytes([n; 32]);
        assert!(seen.insert(id(1)) && seen.insert(id(2)) && !seen.insert(id(1)));
        assert!(seen.insert(id(3)), "1 is forgotten");
        assert!(seen.insert(id(1)) && !seen.insert(id(3)));
    }
}
