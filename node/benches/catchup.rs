//! Catch-up sync: two nodes holding the same 1,000,000 bulletins (100 keys x 10,000,
//! 200-byte payloads) except for k that one lacks, scattered through history or all
//! recent; time to converge, round trips and bytes each way, in one process
//! (`InProcessLink`) and over loopback TCP (two real nodes), store building timed apart.
//!
//! ```text
//! cargo bench -p herald-node --bench catchup                          # full: 1M bulletins
//! HERALD_BENCH_QUICK=1 cargo bench -p herald-node --bench catchup     # 10,000 bulletins
//! cargo bench -p herald-node --bench catchup -- --quick               # same
//! ```
//!
//! The bulletins are signed once per run (on all cores) and written to a file that every
//! step reads. The full store A is built once; for every (k, layout) the lacking store B is
//! built by inserting every bulletin but the missing ones (`insert_verified` in batches, a
//! flush per batch), reopened once (sled writes its snapshot on open), then copied with
//! `cp -a` for each measurement, since a session fills the store it runs on. In step
//! (k = 0), B is a copy of A. Every build and every measurement runs in a fresh child
//! process (this executable, told what to do by `HERALD_BENCH_CHILD`), so that sled's
//! memory from one step neither carries over nor starves the OS page cache of the next.
//! Run without cargo's `--bench` flag (as `cargo test --all-targets` does, in a debug
//! build), it takes a smaller smoke mode (10 keys x 20), so that it stays a smoke test there.
//! The stores go under the system temporary directory, or `HERALD_BENCH_TMP` if set (the
//! full run needs ~15 GB there).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::{Fixture, cores, describe_machine, dir_bytes, median, proc_status_kib, quick_mode, range};
use herald_keys::Registry;
use herald_node::sync::{InProcessLink, SyncError, SyncLink, pull};
use herald_node::{Node, NodeEvent, Store, Stored};
use herald_protocol::sync::{MAX_PAGE_BULLETINS, SyncRequest, SyncResponse, state_digest};
use herald_protocol::{MemberId, SignedBulletin};
use libp2p::multiaddr::Protocol;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Payload bytes of every bulletin.
const PAYLOAD_LEN: usize = 200;
/// Bulletins per `insert_verified` batch (and flush) while building stores.
const BUILD_BATCH: usize = 5_000;
/// Seed of the scattered layouts (xored with k).
const SEED: u64 = 0x4845_5241_4c44_5359;
/// Goal: bytes beyond the missing bulletins themselves at k = 1,000.
const OVERHEAD_GOAL: u64 = 64 * 1024;
/// Goal: bytes of a session between nodes in step.
const IN_STEP_GOAL: u64 = 1024;
/// Goal: round trips beyond the payload pages.
const RECONCILE_RT_GOAL: usize = 3;
/// Longest wait for a session over TCP.
const TCP_TIMEOUT: Duration = Duration::from_secs(600);
/// Environment of the child processes.
const CHILD: &str = "HERALD_BENCH_CHILD";
const CHILD_KEYS: &str = "HERALD_BENCH_KEYS";
const CHILD_PER_KEY: &str = "HERALD_BENCH_PER_KEY";
const CHILD_ITEMS: &str = "HERALD_BENCH_ITEMS";
const CHILD_K: &str = "HERALD_BENCH_K";
const CHILD_LAYOUT: &str = "HERALD_BENCH_LAYOUT";
const CHILD_A: &str = "HERALD_BENCH_A";
const CHILD_B: &str = "HERALD_BENCH_B";

/// How big a run is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// 100 keys x 10,000 = 1,000,000 bulletins.
    Full,
    /// 100 keys x 100 = 10,000 bulletins.
    Quick,
    /// Without `--bench` (a debug build under `cargo test`, where a signature check costs
    /// ~10 ms and starting a node on a 100-member genesis seconds): 10 keys x 20.
    Smoke,
}

/// The sizes of one run.
struct Plan {
    mode: Mode,
    keys: usize,
    per_key: u64,
    /// Missing counts; 0 is the in-step case.
    ks: Vec<usize>,
    /// In-process and TCP sessions per case (each on its own copy of the lacking store).
    reps: usize,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        let (keys, per_key, ks, reps) = match mode {
            Mode::Full => (100, 10_000, vec![0, 100, 1_000, 10_000], 3),
            Mode::Quick => (100, 100, vec![0, 100, 1_000], 1),
            Mode::Smoke => (10, 20, vec![0, 10, 50], 1),
        };
        Self {
            mode,
            keys,
            per_key,
            ks,
            reps,
        }
    }

    fn total(&self) -> usize {
        self.keys * self.per_key as usize
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    InStep,
    Scattered,
    Recent,
}

impl Layout {
    fn token(self) -> &'static str {
        match self {
            Layout::InStep => "in-step",
            Layout::Scattered => "scattered",
            Layout::Recent => "recent",
        }
    }

    fn from_token(t: &str) -> Self {
        match t {
            "in-step" => Layout::InStep,
            "scattered" => Layout::Scattered,
            "recent" => Layout::Recent,
            other => panic!("unknown layout {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Layout::InStep => "in step",
            Layout::Scattered => "scattered",
            Layout::Recent => "recent",
        }
    }
}

/// Indexes (into the time-ordered bulletins: seq by seq, every key at each seq) of the
/// bulletins the lacking store does not hold, ascending.
fn missing_set(layout: Layout, k: usize, n: usize, keys: usize) -> Vec<usize> {
    match layout {
        Layout::InStep => Vec::new(),
        Layout::Scattered => {
            let mut rng = StdRng::seed_from_u64(SEED ^ k as u64);
            let mut v = rand::seq::index::sample(&mut rng, n, k).into_vec();
            v.sort_unstable();
            v
        }
        // The last k/keys numbers of every chain are the last k in time order.
        Layout::Recent => {
            assert_eq!(k % keys, 0, "k must be a multiple of the number of keys");
            (n - k..n).collect()
        }
    }
}

/// Appends bulletins' wire bytes to the items file, each after its `u32` LE length.
fn append_items(out: &mut impl Write, bulletins: &[SignedBulletin], lens: &mut Vec<u32>) {
    for b in bulletins {
        let bytes = b.as_bytes();
        let len = u32::try_from(bytes.len()).unwrap();
        out.write_all(&len.to_le_bytes()).unwrap();
        out.write_all(bytes).unwrap();
        lens.push(len);
    }
}

/// Every bulletin's wire bytes, in the order written.
fn read_items(path: &Path) -> Vec<Vec<u8>> {
    let mut input = BufReader::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    let mut len = [0u8; 4];
    loop {
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("items file: {e}"),
        }
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        input.read_exact(&mut bytes).unwrap();
        out.push(bytes);
    }
    out
}

/// Decodes fixture bulletins (signed by this run: not checked again) with their members.
fn decode(fx: &Fixture, wire: &[&Vec<u8>]) -> Vec<(SignedBulletin, MemberId)> {
    let member_of: HashMap<_, _> = fx
        .keys
        .iter()
        .zip(&fx.members)
        .map(|([_, s, _], m)| (s.id(), *m))
        .collect();
    wire.iter()
        .map(|bytes| {
            let b = SignedBulletin::from_bytes(bytes).unwrap();
            let m = member_of[&b.body().signer];
            (b, m)
        })
        .collect()
}

/// Builds a store in `dir` from the bulletins less the indexes in `missing` (ascending),
/// with `insert_verified` in batches of [`BUILD_BATCH`] and a flush after each, as a
/// node's writer stores them; the genesis is saved as a node saves it. Decoding the wire
/// bytes of each batch (about 1 µs a bulletin) is inside the time.
fn build_store(fx: &Fixture, dir: &Path, wire: &[Vec<u8>], missing: &[usize]) -> Duration {
    let t = Instant::now();
    let store = Store::open(dir, fx.network()).unwrap();
    store.save_registry_update(&fx.genesis).unwrap();
    let mut skip = missing.iter().copied().peekable();
    let mut batch: Vec<&Vec<u8>> = Vec::with_capacity(BUILD_BATCH);
    let insert = |batch: &mut Vec<&Vec<u8>>| {
        store.insert_verified(&decode(fx, batch)).unwrap();
        store.flush().unwrap();
        batch.clear();
    };
    for (i, bytes) in wire.iter().enumerate() {
        if skip.peek() == Some(&i) {
            skip.next();
            continue;
        }
        batch.push(bytes);
        if batch.len() == BUILD_BATCH {
            insert(&mut batch);
        }
    }
    if !batch.is_empty() {
        insert(&mut batch);
    }
    assert_eq!(store.count().unwrap(), (wire.len() - missing.len()) as u64);
    store.flush().unwrap();
    t.elapsed()
}

/// Opens and closes a store (sled replays its log and writes a snapshot on the first
/// open after writing), timed.
fn reopen(fx: &Fixture, dir: &Path) -> Duration {
    let t = Instant::now();
    let store = Store::open(dir, fx.network()).unwrap();
    store.count().unwrap();
    drop(store);
    t.elapsed()
}

/// Copies a store directory, then writes every dirty page back (`sync`), so that no
/// session pays for the copy's writeback in its own flushes (sled's flush is an fsync of
/// the file the copy just wrote). Returns the time of both.
fn copy_dir(from: &Path, to: &Path) -> Duration {
    let t = Instant::now();
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
    let status = Command::new("sync").status().unwrap();
    assert!(status.success(), "sync");
    t.elapsed()
}

/// Reads every file under `dir` once, so that the OS page cache holds the store and
/// every session starts from the same state (sled's own cache is empty after each open).
fn warm_page_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            warm_page_cache(&path);
        } else {
            let mut f = std::fs::File::open(&path).unwrap();
            std::io::copy(&mut f, &mut std::io::sink()).unwrap();
        }
    }
}

/// What the lacking store's start-of-session work costs, measured apart on the pristine
/// store (each on a fresh open, so sled's cache is cold as in a session).
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    /// `Store::summaries` + `state_digest`.
    summaries: Duration,
    /// `Store::holes(key, contiguous + 1, highest)` for every key with a gap: what
    /// `plan_wants` asks (the peer's highest is the same or above).
    holes: Duration,
    /// Chain entries between the first gap and the highest number, summed over keys:
    /// what `holes` scans.
    span: u64,
    /// Holes found (ranges).
    ranges: usize,
    /// `Store::chain_entry` for every number from contiguous + 1 to highest: the point
    /// lookups `advance_head` makes, in total, while the gaps are filled in order.
    walk: Duration,
}

fn scan_costs(fx: &Fixture, dir: &Path) -> Scan {
    let mut scan = Scan::default();
    let store = Store::open(dir, fx.network()).unwrap();
    let t = Instant::now();
    let chains = store.summaries().unwrap();
    std::hint::black_box(state_digest((fx.registry.version(), fx.registry.hash()), &chains));
    scan.summaries = t.elapsed();
    let t = Instant::now();
    for c in chains.iter().filter(|c| c.contiguous < c.highest) {
        let from = herald_protocol::Seq(c.contiguous.0 + 1);
        scan.ranges += store.holes(&c.key, from, c.highest).unwrap().len();
        scan.span += c.highest.0 - c.contiguous.0;
    }
    scan.holes = t.elapsed();
    drop(store);
    let store = Store::open(dir, fx.network()).unwrap();
    let chains = store.summaries().unwrap();
    let t = Instant::now();
    let mut held = 0u64;
    for c in chains.iter().filter(|c| c.contiguous < c.highest) {
        for seq in c.contiguous.0 + 1..=c.highest.0 {
            held += u64::from(
                store
                    .chain_entry(&c.key, herald_protocol::Seq(seq))
                    .unwrap()
                    .is_some(),
            );
        }
    }
    scan.walk = t.elapsed();
    std::hint::black_box(held);
    scan
}

impl Scan {
    fn print(&self) {
        for (k, v) in [
            ("summaries_ms", ms(self.summaries)),
            ("holes_ms", ms(self.holes)),
            ("span", self.span as f64),
            ("ranges", self.ranges as f64),
            ("walk_ms", ms(self.walk)),
        ] {
            println!("{k}={v}");
        }
    }

    fn parse(r: &Report) -> Self {
        Self {
            summaries: dur(r, "summaries_ms"),
            holes: dur(r, "holes_ms"),
            span: r["span"] as u64,
            ranges: r["ranges"] as usize,
            walk: dur(r, "walk_ms"),
        }
    }
}

/// What happened when, during one in-process session.
#[derive(Clone, Copy, Debug)]
enum Mark {
    RequestStart(&'static str),
    RequestEnd,
    StoreStart,
    StoreEnd,
}

/// [`InProcessLink`] with a timestamp at every request and store, to split the session's
/// time into its phases.
struct TimedLink {
    inner: InProcessLink,
    marks: Mutex<Vec<(Mark, Instant)>>,
}

impl TimedLink {
    fn mark(&self, m: Mark) {
        self.marks.lock().unwrap().push((m, Instant::now()));
    }
}

impl SyncLink for TimedLink {
    async fn request(&self, request: SyncRequest) -> Result<SyncResponse, SyncError> {
        self.mark(Mark::RequestStart(match request {
            SyncRequest::Hello { .. } => "hello",
            SyncRequest::Registry { .. } => "registry",
            SyncRequest::Fetch { .. } => "fetch",
            SyncRequest::Chains { .. } => "chains",
        }));
        let response = self.inner.request(request).await;
        self.mark(Mark::RequestEnd);
        response
    }

    async fn store(&self, items: Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, SyncError> {
        self.mark(Mark::StoreStart);
        let stored = self.inner.store(items).await;
        self.mark(Mark::StoreEnd);
        stored
    }
}

/// Where an in-process session's time went.
#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    /// Start to the hello: the local summaries and digest.
    local_state: Duration,
    /// The hello exchange: the peer's summaries, digest and answer encoding.
    hello: Duration,
    /// Summary received to first fetch: local summaries again, holes, plan.
    plan: Duration,
    /// Fetch exchanges: the peer reading pages (`Store::page`) and encoding.
    fetch: Duration,
    /// Page received to store: decoding and signature checks of every bulletin.
    verify: Duration,
    /// `insert_verified` and a flush per page.
    store: Duration,
    /// The rest (`remaining_wants` and the like).
    other: Duration,
}

fn phases(start: Instant, end: Instant, marks: &[(Mark, Instant)]) -> Phases {
    let mut p = Phases::default();
    let mut last = start;
    let mut after_hello = false;
    let mut current = "";
    for (mark, at) in marks {
        let gap = at.saturating_duration_since(last);
        match mark {
            Mark::RequestStart(kind) => {
                if !after_hello {
                    p.local_state += gap;
                } else if *kind == "fetch" && current == "hello" {
                    p.plan += gap;
                } else {
                    p.other += gap;
                }
                current = kind;
            }
            Mark::RequestEnd => {
                if current == "hello" {
                    p.hello += gap;
                    after_hello = true;
                } else if current == "fetch" {
                    p.fetch += gap;
                } else {
                    p.other += gap;
                }
            }
            Mark::StoreStart => {
                p.verify += gap;
                current = "store";
            }
            Mark::StoreEnd => p.store += gap,
        }
        last = *at;
    }
    p.other += end.saturating_duration_since(last);
    p
}

/// One in-process session.
struct InProcess {
    time: Duration,
    round_trips: usize,
    new_bulletins: u64,
    in_step: bool,
    sent: u64,
    received: u64,
    phases: Phases,
    open: Duration,
}

async fn in_process(fx: &Fixture, a_dir: &Path, b_dir: &Path, n: usize) -> InProcess {
    let t = Instant::now();
    let a = Store::open(a_dir, fx.network()).unwrap();
    let b = Store::open(b_dir, fx.network()).unwrap();
    let open = t.elapsed();
    let link = TimedLink {
        inner: InProcessLink {
            peer_store: a.clone(),
            peer_registry: Arc::new(RwLock::new(fx.registry.clone())),
            local_store: b.clone(),
            sent: Default::default(),
            received: Default::default(),
        },
        marks: Mutex::new(Vec::new()),
    };
    let registry = Arc::new(RwLock::new(fx.registry.clone()));
    let start = Instant::now();
    let report = pull(&link, &b, &registry).await.unwrap();
    let end = Instant::now();
    let (sent, received) = (link.inner.sent.load(Relaxed), link.inner.received.load(Relaxed));
    assert_eq!((sent, received), (report.bytes_sent, report.bytes_received));
    assert_eq!(b.count().unwrap(), n as u64, "converged");
    assert_eq!(a.summaries().unwrap(), b.summaries().unwrap(), "same chains");
    let marks = link.marks.lock().unwrap().clone();
    InProcess {
        time: end - start,
        round_trips: report.round_trips,
        new_bulletins: report.new_bulletins,
        in_step: report.in_step,
        sent,
        received,
        phases: phases(start, end, &marks),
        open,
    }
}

impl InProcess {
    fn print(&self) {
        let p = &self.phases;
        for (k, v) in [
            ("time_ms", ms(self.time)),
            ("round_trips", self.round_trips as f64),
            ("new", self.new_bulletins as f64),
            ("in_step", f64::from(u8::from(self.in_step))),
            ("sent", self.sent as f64),
            ("received", self.received as f64),
            ("open_ms", ms(self.open)),
            ("local_state_ms", ms(p.local_state)),
            ("hello_ms", ms(p.hello)),
            ("plan_ms", ms(p.plan)),
            ("fetch_ms", ms(p.fetch)),
            ("verify_ms", ms(p.verify)),
            ("store_ms", ms(p.store)),
            ("other_ms", ms(p.other)),
        ] {
            println!("{k}={v}");
        }
    }

    fn parse(r: &Report) -> Self {
        Self {
            time: dur(r, "time_ms"),
            round_trips: r["round_trips"] as usize,
            new_bulletins: r["new"] as u64,
            in_step: r["in_step"] > 0.0,
            sent: r["sent"] as u64,
            received: r["received"] as u64,
            open: dur(r, "open_ms"),
            phases: Phases {
                local_state: dur(r, "local_state_ms"),
                hello: dur(r, "hello_ms"),
                plan: dur(r, "plan_ms"),
                fetch: dur(r, "fetch_ms"),
                verify: dur(r, "verify_ms"),
                store: dur(r, "store_ms"),
                other: dur(r, "other_ms"),
            },
        }
    }
}

/// One session over loopback TCP between two real nodes.
struct Tcp {
    /// Dial to the lacking node's `SyncCompleted`.
    time: Duration,
    /// Dial to `PeerConnected` on the lacking node.
    connect: Duration,
    round_trips: usize,
    new_bulletins: u64,
    in_step: bool,
    /// The full node's own session (it pulls from the lacking one): round trips.
    peer_round_trips: usize,
    /// Both nodes' `Node::start`.
    start: Duration,
    /// TCP payload bytes of the connection (`ss`: lacking to full, full to lacking),
    /// every protocol on it, both sessions included.
    wire: Option<(u64, u64)>,
}

/// Bytes sent (acked) and received on established TCP sockets whose peer port is `port`.
fn socket_bytes(port: u16) -> Option<(u64, u64)> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u64> {
        let mut total = None;
        for tok in text.split_whitespace() {
            if let Some(v) = tok.strip_prefix(name).and_then(|v| v.strip_prefix(':')) {
                *total.get_or_insert(0) += v.parse::<u64>().ok()?;
            }
        }
        total
    };
    Some((field("bytes_acked")?, field("bytes_received")?))
}

async fn wait_session(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    peer: libp2p::PeerId,
) -> (usize, u64, bool, Option<Instant>, Instant) {
    let mut connected = None;
    loop {
        match events.recv().await {
            Ok(NodeEvent::PeerConnected(p)) if p == peer => connected = Some(Instant::now()),
            Ok(NodeEvent::SyncCompleted {
                peer: p,
                new_bulletins,
                round_trips,
                in_step,
                ..
            }) if p == peer => return (round_trips, new_bulletins, in_step, connected, Instant::now()),
            Ok(NodeEvent::SyncFailed { peer: p, reason }) if p == peer => panic!("sync failed: {reason}"),
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("events: {e}"),
        }
    }
}

async fn over_tcp(fx: &Fixture, a_dir: &Path, b_dir: &Path, n: usize) -> Tcp {
    let t = Instant::now();
    let a = Node::start(fx.member_node_settings(0, a_dir)).await.unwrap();
    let b = Node::start(fx.member_node_settings(1, b_dir)).await.unwrap();
    let start = t.elapsed();
    let addr = loop {
        if let Some(addr) = a.listen_addrs().await.into_iter().next() {
            break addr;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let port = addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let addr = addr.with(Protocol::P2p(a.peer_id()));
    let (a_peer, b_peer) = (a.peer_id(), b.peer_id());
    let mut b_events = b.subscribe();
    let mut a_events = a.subscribe();
    let peer_side = tokio::spawn(async move { wait_session(&mut a_events, b_peer).await });
    let t0 = Instant::now();
    b.dial(addr).await;
    let (round_trips, new_bulletins, in_step, connected, done) =
        tokio::time::timeout(TCP_TIMEOUT, wait_session(&mut b_events, a_peer))
            .await
            .expect("the lacking node's session ended in time");
    let (peer_round_trips, peer_new, ..) = tokio::time::timeout(TCP_TIMEOUT, peer_side)
        .await
        .expect("the full node's session ended in time")
        .unwrap();
    assert_eq!(peer_new, 0, "the full node lacks nothing");
    let wire = port.and_then(socket_bytes);
    assert_eq!(b.store().count().unwrap(), n as u64, "converged over TCP");
    a.shutdown().await;
    b.shutdown().await;
    Tcp {
        time: done - t0,
        connect: connected.map_or(Duration::ZERO, |c| c - t0),
        round_trips,
        new_bulletins,
        in_step,
        peer_round_trips,
        start,
        wire,
    }
}

impl Tcp {
    fn print(&self) {
        let (to, from) = self.wire.unwrap_or((0, 0));
        for (k, v) in [
            ("time_ms", ms(self.time)),
            ("connect_ms", ms(self.connect)),
            ("round_trips", self.round_trips as f64),
            ("new", self.new_bulletins as f64),
            ("in_step", f64::from(u8::from(self.in_step))),
            ("peer_round_trips", self.peer_round_trips as f64),
            ("start_ms", ms(self.start)),
            ("wire", f64::from(u8::from(self.wire.is_some()))),
            ("wire_to", to as f64),
            ("wire_from", from as f64),
        ] {
            println!("{k}={v}");
        }
    }

    fn parse(r: &Report) -> Self {
        Self {
            time: dur(r, "time_ms"),
            connect: dur(r, "connect_ms"),
            round_trips: r["round_trips"] as usize,
            new_bulletins: r["new"] as u64,
            in_step: r["in_step"] > 0.0,
            peer_round_trips: r["peer_round_trips"] as usize,
            start: dur(r, "start_ms"),
            wire: (r["wire"] > 0.0).then(|| (r["wire_to"] as u64, r["wire_from"] as u64)),
        }
    }
}

/// The irreducible work of receiving the missing bulletins without any protocol: decode
/// their wire bytes, check each against the registry (signature included), store them
/// with `insert_verified` and a flush per page of [`MAX_PAGE_BULLETINS`].
fn direct_ingest(fx: &Fixture, b_dir: &Path, wire: &[&Vec<u8>], n: usize) -> Duration {
    let store = Store::open(b_dir, fx.network()).unwrap();
    let registry: &Registry = &fx.registry;
    let t = Instant::now();
    for page in wire.chunks(MAX_PAGE_BULLETINS) {
        let items: Vec<(SignedBulletin, MemberId)> = page
            .iter()
            .map(|bytes| {
                let b = SignedBulletin::from_bytes(bytes).unwrap();
                let member = registry.check_bulletin(&b).unwrap();
                (b, member)
            })
            .collect();
        store.insert_verified(&items).unwrap();
        store.flush().unwrap();
    }
    let time = t.elapsed();
    assert_eq!(store.count().unwrap(), n as u64);
    time
}

/// Everything measured for one (k, layout).
struct Case {
    k: usize,
    layout: Layout,
    missing_bytes: u64,
    build: Duration,
    first_open: Duration,
    scan: Scan,
    copy: Vec<Duration>,
    in_process: Vec<InProcess>,
    tcp: Vec<Tcp>,
    direct: Vec<Duration>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "median (min–max)" of durations in ms.
fn spread(ds: &[Duration]) -> String {
    let v: Vec<f64> = ds.iter().map(|d| ms(*d)).collect();
    if v.len() == 1 {
        return format!("{:.0}", v[0]);
    }
    let (lo, hi) = range(&v);
    format!("{:.0} ({:.0}–{:.0})", median(&v), lo, hi)
}

fn med(ds: impl IntoIterator<Item = Duration>) -> f64 {
    median(&ds.into_iter().map(ms).collect::<Vec<_>>())
}

/// Thousands separated by commas.
fn num(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a child reported, `key=value` per line.
type Report = HashMap<String, f64>;

fn dur(r: &Report, key: &str) -> Duration {
    Duration::from_secs_f64(r[key].max(0.0) / 1e3)
}

/// One step, as a child process is told it.
struct Job {
    keys: usize,
    per_key: u64,
    items: PathBuf,
    k: usize,
    layout: Layout,
    a: PathBuf,
    b: PathBuf,
}

impl Job {
    fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} unset"));
        Self {
            keys: var(CHILD_KEYS).parse().unwrap(),
            per_key: var(CHILD_PER_KEY).parse().unwrap(),
            items: var(CHILD_ITEMS).into(),
            k: var(CHILD_K).parse().unwrap(),
            layout: Layout::from_token(&var(CHILD_LAYOUT)),
            a: var(CHILD_A).into(),
            b: var(CHILD_B).into(),
        }
    }

    fn n(&self) -> usize {
        self.keys * self.per_key as usize
    }

    fn missing(&self) -> Vec<usize> {
        missing_set(self.layout, self.k, self.n(), self.keys)
    }

    /// Runs this executable as a child doing `mode` for this job.
    fn run(&self, mode: &str) -> Report {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, mode)
            .env(CHILD_KEYS, self.keys.to_string())
            .env(CHILD_PER_KEY, self.per_key.to_string())
            .env(CHILD_ITEMS, &self.items)
            .env(CHILD_K, self.k.to_string())
            .env(CHILD_LAYOUT, self.layout.token())
            .env(CHILD_A, &self.a)
            .env(CHILD_B, &self.b)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child {mode} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap()))
            .collect()
    }
}

/// A child: one build or one measurement, reported on stdout as `key=value` lines.
fn run_child(mode: &str) {
    let job = Job::from_env();
    let fx = Fixture::new(job.keys);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    match mode {
        "build" => {
            let wire = read_items(&job.items);
            let build = build_store(&fx, &job.b, &wire, &job.missing());
            drop(wire);
            let first_open = reopen(&fx, &job.b);
            println!("build_ms={}", ms(build));
            println!("first_open_ms={}", ms(first_open));
        }
        "scan" => scan_costs(&fx, &job.b).print(),
        "in-process" => runtime()
            .block_on(in_process(&fx, &job.a, &job.b, job.n()))
            .print(),
        "tcp" => runtime().block_on(over_tcp(&fx, &job.a, &job.b, job.n())).print(),
        "direct" => {
            let wire = read_items(&job.items);
            let missing: Vec<&Vec<u8>> = job.missing().into_iter().map(|i| &wire[i]).collect();
            println!("direct_ms={}", ms(direct_ingest(&fx, &job.b, &missing, job.n())));
        }
        other => panic!("unknown child mode {other}"),
    }
    println!("hwm_kib={}", proc_status_kib("VmHWM").unwrap_or(0));
}

fn run_case(plan: &Plan, root: &Path, items: &Path, lens: &[u32], k: usize, layout: Layout) -> Case {
    let b_dir = root.join(format!("b-{k}-{}", layout.token()));
    let mut job = Job {
        keys: plan.keys,
        per_key: plan.per_key,
        items: items.to_path_buf(),
        k,
        layout,
        a: root.join("a"),
        b: b_dir.clone(),
    };
    let missing = job.missing();
    let missing_bytes: u64 = missing.iter().map(|i| u64::from(lens[*i])).sum();
    let (build, first_open) = if layout == Layout::InStep {
        // A copy of the full store.
        (copy_dir(&job.a, &b_dir), Duration::ZERO)
    } else {
        let r = job.run("build");
        (dur(&r, "build_ms"), dur(&r, "first_open_ms"))
    };
    eprintln!(
        "  k = {k} {}: lacking store built in {:.1} s, first reopen {:.2} s, {:.0} MiB",
        layout.name(),
        build.as_secs_f64(),
        first_open.as_secs_f64(),
        dir_bytes(&b_dir) as f64 / (1 << 20) as f64
    );
    warm_page_cache(&job.a);
    warm_page_cache(&b_dir);
    let scan = Scan::parse(&job.run("scan"));
    eprintln!("    lacking store, apart: {scan:?}");
    let mut case = Case {
        k,
        layout,
        missing_bytes,
        build,
        first_open,
        scan,
        copy: Vec::new(),
        in_process: Vec::new(),
        tcp: Vec::new(),
        direct: Vec::new(),
    };
    for rep in 0..plan.reps {
        // Alternate which kind of session comes first; the direct-ingest baseline once.
        let mut order = if rep % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        if rep == 0 && k > 0 {
            order.push(2);
        }
        for what in order {
            let copy = root.join(format!("copy-{rep}-{what}"));
            case.copy.push(copy_dir(&b_dir, &copy));
            job.b = copy.clone();
            match what {
                0 => {
                    let r = InProcess::parse(&job.run("in-process"));
                    assert_eq!(r.new_bulletins, k as u64);
                    assert_eq!(r.in_step, k == 0);
                    eprintln!(
                        "    in process: {:.1} ms, {} round trips, {} B sent, {} B received; {:?}",
                        ms(r.time),
                        r.round_trips,
                        r.sent,
                        r.received,
                        r.phases
                    );
                    case.in_process.push(r);
                }
                1 => {
                    let r = Tcp::parse(&job.run("tcp"));
                    assert_eq!(r.new_bulletins, k as u64);
                    assert_eq!(r.in_step, k == 0);
                    eprintln!(
                        "    over TCP: {:.1} ms (connected at {:.1} ms), {} round trips (the full node's own: {}), \
                         TCP payload bytes {:?}, nodes started in {:.0} ms",
                        ms(r.time),
                        ms(r.connect),
                        r.round_trips,
                        r.peer_round_trips,
                        r.wire,
                        ms(r.start)
                    );
                    case.tcp.push(r);
                }
                _ => {
                    let d = dur(&job.run("direct"), "direct_ms");
                    eprintln!("    direct ingest of the {k} bulletins: {:.1} ms", ms(d));
                    case.direct.push(d);
                }
            }
            std::fs::remove_dir_all(&copy).unwrap();
        }
    }
    std::fs::remove_dir_all(&b_dir).unwrap();
    case
}

fn print_results(plan: &Plan, cases: &[Case]) {
    println!();
    println!(
        "| k | layout | in-process time, ms | TCP time, ms | TCP connect, ms | round trips | bytes sent | bytes received | missing bulletins' bytes | bytes beyond them | TCP payload bytes on the connection (→ / ←) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in cases {
        let r = &c.in_process[0];
        let tcp_times: Vec<Duration> = c.tcp.iter().map(|t| t.time).collect();
        let wire = c.tcp[0]
            .wire
            .map_or("n/a".to_string(), |(s, r)| format!("{} / {}", num(s), num(r)));
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            num(c.k as u64),
            c.layout.name(),
            spread(&c.in_process.iter().map(|r| r.time).collect::<Vec<_>>()),
            spread(&tcp_times),
            med(c.tcp.iter().map(|t| t.connect)),
            r.round_trips,
            num(r.sent),
            num(r.received),
            num(c.missing_bytes),
            num(r.sent + r.received - c.missing_bytes),
            wire
        );
    }
    println!();
    println!(
        "| k | layout | local state | hello (peer's summary) | plan (holes) | fetch (peer's pages) | verify | store | other | direct ingest baseline | in-process / direct |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in cases {
        let p = |f: fn(&Phases) -> Duration| med(c.in_process.iter().map(|r| f(&r.phases)));
        let direct = med(c.direct.iter().copied());
        let ratio = med(c.in_process.iter().map(|r| r.time)) / direct;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            num(c.k as u64),
            c.layout.name(),
            p(|x| x.local_state),
            p(|x| x.hello),
            p(|x| x.plan),
            p(|x| x.fetch),
            p(|x| x.verify),
            p(|x| x.store),
            p(|x| x.other),
            if c.direct.is_empty() {
                "–".to_string()
            } else {
                format!("{direct:.1}")
            },
            if c.direct.is_empty() {
                "–".to_string()
            } else {
                format!("{ratio:.2}")
            },
        );
    }
    println!();
    println!(
        "| k | layout | summaries + digest, ms | holes, ms | entries scanned | hole ranges | head walk (point lookups), ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for c in cases {
        println!(
            "| {} | {} | {:.2} | {:.1} | {} | {} | {:.1} |",
            num(c.k as u64),
            c.layout.name(),
            ms(c.scan.summaries),
            ms(c.scan.holes),
            num(c.scan.span),
            num(c.scan.ranges as u64),
            ms(c.scan.walk)
        );
    }
    println!();
    for c in cases {
        println!(
            "k = {} {}: lacking store built in {:.1} s ({:.0}/s), first reopen {:.2} s; copies {}; stores opened in process in {} ms; nodes started in {} ms; TCP round trips {:?}, the full node's own session {:?}",
            c.k,
            c.layout.name(),
            c.build.as_secs_f64(),
            (plan.total() - c.k) as f64 / c.build.as_secs_f64(),
            c.first_open.as_secs_f64(),
            spread(&c.copy),
            spread(&c.in_process.iter().map(|r| r.open).collect::<Vec<_>>()),
            spread(&c.tcp.iter().map(|t| t.start).collect::<Vec<_>>()),
            c.tcp.iter().map(|t| t.round_trips).collect::<Vec<_>>(),
            c.tcp.iter().map(|t| t.peer_round_trips).collect::<Vec<_>>(),
        );
    }
    println!();
    // Goals.
    let pages = |k: usize| k.div_ceil(MAX_PAGE_BULLETINS);
    let mut all_rt = true;
    for c in cases {
        let rt = c.in_process[0].round_trips;
        let reconcile = rt - pages(c.k);
        let tcp_ok = c.tcp.iter().all(|t| t.round_trips == rt);
        all_rt &= reconcile <= RECONCILE_RT_GOAL && tcp_ok;
        println!(
            "k = {} {}: {rt} round trips = {} payload page(s) + {reconcile} (TCP the same: {tcp_ok})",
            c.k,
            c.layout.name(),
            pages(c.k)
        );
    }
    println!(
        "goal: at most {RECONCILE_RT_GOAL} round trips plus payload pages: {}",
        if all_rt { "MET" } else { "NOT MET" }
    );
    for c in cases.iter().filter(|c| c.k == 1_000) {
        let r = &c.in_process[0];
        let beyond = r.sent + r.received - c.missing_bytes;
        println!(
            "goal: bytes beyond the missing bulletins < {} at k = 1,000 ({}): {} B: {}",
            num(OVERHEAD_GOAL),
            c.layout.name(),
            num(beyond),
            if beyond < OVERHEAD_GOAL { "MET" } else { "NOT MET" }
        );
    }
    for c in cases.iter().filter(|c| c.k == 0) {
        let r = &c.in_process[0];
        let bytes = r.sent + r.received;
        let ok = r.in_step && r.round_trips == 1 && bytes < IN_STEP_GOAL;
        println!(
            "goal: in step, one round trip under {} B: {} round trip(s), {} B: {}",
            num(IN_STEP_GOAL),
            r.round_trips,
            bytes,
            if ok { "MET" } else { "NOT MET" }
        );
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        run_child(&mode);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if !args.iter().any(|a| a == "--bench") {
        Mode::Smoke
    } else if quick_mode(&args) {
        Mode::Quick
    } else {
        Mode::Full
    };
    let plan = Plan::new(mode);
    println!(
        "herald-node bench `catchup`: {:?} mode ({} keys x {} = {} bulletins)",
        plan.mode,
        plan.keys,
        plan.per_key,
        num(plan.total() as u64)
    );
    println!("machine: {}", describe_machine());
    let tmp = std::env::var_os("HERALD_BENCH_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
    let root = tempfile::Builder::new()
        .prefix("herald-bench-catchup-")
        .tempdir_in(tmp)
        .unwrap();
    let fx = Fixture::new(plan.keys);

    // Sign every chain once, in blocks of numbers (all keys at each number), to a file.
    let t = Instant::now();
    let items = root.path().join("bulletins.bin");
    let mut lens = Vec::with_capacity(plan.total());
    {
        let mut out = BufWriter::new(std::fs::File::create(&items).unwrap());
        let mut prevs = vec![None; plan.keys];
        let block = 500.min(plan.per_key);
        let mut from = 1;
        while from <= plan.per_key {
            let count = block.min(plan.per_key - from + 1);
            let signed = common::sign_block(&fx, from, count, &mut prevs, PAYLOAD_LEN, cores());
            append_items(&mut out, &signed, &mut lens);
            from += count;
        }
        out.flush().unwrap();
    }
    let sign_time = t.elapsed();
    let wire_total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
    println!(
        "signed {} bulletins in {:.1} s on {} threads; {:.0} wire bytes each on average",
        num(lens.len() as u64),
        sign_time.as_secs_f64(),
        cores(),
        wire_total as f64 / lens.len() as f64
    );

    let full = Job {
        keys: plan.keys,
        per_key: plan.per_key,
        items: items.clone(),
        k: 0,
        layout: Layout::InStep,
        a: root.path().join("a"),
        b: root.path().join("a"),
    };
    let r = full.run("build");
    let (build_a, first_open_a) = (dur(&r, "build_ms"), dur(&r, "first_open_ms"));
    warm_page_cache(&full.a);
    let scan_a = Scan::parse(&full.run("scan"));
    println!(
        "full store: built in {:.1} s ({:.0} bulletins/s: insert_verified in batches of {BUILD_BATCH}, a flush \
         each, in a child process of {:.0} MiB peak RSS), first reopen {:.2} s, {:.0} MiB on disk; \
         Store::summaries + state_digest {:.2} ms on a fresh open",
        build_a.as_secs_f64(),
        plan.total() as f64 / build_a.as_secs_f64(),
        r["hwm_kib"] / 1024.0,
        first_open_a.as_secs_f64(),
        dir_bytes(&full.a) as f64 / (1 << 20) as f64,
        ms(scan_a.summaries),
    );

    let mut cases = Vec::new();
    let mut layouts = vec![(0, Layout::InStep)];
    for &k in plan.ks.iter().filter(|k| **k > 0) {
        layouts.push((k, Layout::Scattered));
        layouts.push((k, Layout::Recent));
    }
    for (k, layout) in layouts {
        eprintln!("case k = {k}, {}", layout.name());
        cases.push(run_case(&plan, root.path(), &items, &lens, k, layout));
    }
    print_results(&plan, &cases);
    println!(
        "\nsigning {:.1} s; full store build {:.1} s; total {:.0} s",
        sign_time.as_secs_f64(),
        build_a.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}
