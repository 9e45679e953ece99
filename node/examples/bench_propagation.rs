//! Propagation benchmark: N node processes on loopback, Herald against raw libp2p gossipsub.
//!
//! Modes:
//! - `coordinator` runs, for each N and each system, a network of N child
//!   processes of itself on 127.0.0.1 and prints the figures (Markdown tables).
//!   Each child listens on a free port (port 0) and reports its address; the
//!   coordinator picks for each child 3 others to dial (pseudo-randomly from
//!   the seed, never the same pair twice), waits until every child has heard
//!   each of its neighbours subscribe, lets the meshes settle for the warm-up,
//!   then has the children publish `--messages` messages with 256-byte payloads
//!   at `--rate` per second, message `k` from node `k mod N` at `t0 + k / rate`.
//!   The payload carries the send time (µs since the Unix epoch, taken just
//!   before the publish call; all processes share the machine clock). Each
//!   child keeps, per message received, the send and receive times in memory
//!   and prints them as JSON lines when the run ends; it also reports the CPU
//!   time it used (from /proc). Children exit when their stdin closes, the
//!   coordinator kills them at the end of each run, and everything is bounded
//!   by timeouts.
//! - `child` is one node (started by the coordinator).
//! - `store-probe` times the store calls of the publish and receive paths in
//!   one process, without the network.
//!
//! Systems:
//! - `herald`: a `herald_node::Node` per process, store in a temporary
//!   directory on disk, mDNS off. A message is sent when `Node::publish` is
//!   called (it signs, stores and flushes, then gossips) and delivered when the
//!   receiver reports `BulletinReceived` (validated and written to its store,
//!   readable with `Store::get`; durable within sled's background flush; in
//!   the chains and query indexes within `FOLD_DELAY`); the event carries the
//!   bulletin, whose payload holds the send time.
//! - `gossipsub-check`: the baseline of the goal, the issue's reference
//!   workload: raw libp2p gossipsub with its default message signing
//!   (`MessageAuthenticity::Signed`, `ValidationMode::Strict`), default
//!   configuration otherwise, no gossipsub validation (a message is forwarded
//!   as it arrives), no storage; each payload carries an application Ed25519
//!   signature by its publisher (signed in the publish path), which the
//!   receiver checks (strictly) when gossipsub hands the message over;
//!   delivered once the check passes. Same transport as Herald (TCP with
//!   nodelay, noise, yamux) and the same heartbeat timing.
//! - `gossipsub`: the same without the application signature and check;
//!   delivered at the `Message` event. Printed beside the goal's ratio.
//! - Diagnostics, to find where Herald's time goes:
//!   - `herald-shm`: `herald` with the stores on /dev/shm (tmpfs).
//!   - `appval-inline`: gossipsub configured as `node/src/network.rs` does
//!     (anonymous, content ids, application validation, scoring); the messages
//!     are signed Herald bulletins, checked with `validate_bulletin` on the
//!     swarm loop; no storage; delivered when accepted.
//!   - `appval-offloop`: the same, validated off the loop as an earlier node
//!     did (a task, a permit, `spawn_blocking`, the verdict sent back to the
//!     loop), kept as it was so that its figures compare with the earlier
//!     records.
//!   - `appval-store`: `appval-offloop` plus a storage path on disk: a writer
//!     thread signs own bulletins and makes them durable before they are
//!     gossiped (`Store::publish_own`: since the journal of own bulletins, a
//!     journal write and sync, then staged), and stores and flushes received
//!     ones in groups (`insert_verified` + `flush`); delivered once flushed.
//!     Kept as a diagnostic of sled's costs; the node itself stages received
//!     gossip.
//!   - `appval-store-noflush`: `appval-store` without the flush of received
//!     bulletins (sled flushes on its own every 500 ms).
//!
//! Run (from the workspace root):
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-helper-bench cargo run --release -p herald-node \
//!     --example bench_propagation -- coordinator
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The allocator the `herald` binary uses (node/src/main.rs), for every system measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use herald_keys::{Founder, Registry, SecretKey, founding_genesis};
use herald_node::push::{Push, PushEvent};
use herald_node::tree::TreeConfig;
use herald_node::validate::{Verdict, validate_bulletin};
use herald_node::{Draft, GossipTiming, KeyPast, Node, NodeEvent, NodeSettings, Store};
use herald_protocol::{
    BulletinBody, BulletinId, Kind, MemberId, NetworkId, Payload, Seq, Severity, SignedRegistryUpdate,
    Timestamp, Tlp,
};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, gossipsub, identity, noise, tcp, yamux};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Bytes of every message payload: send time, message number, publisher, padding.
const PAYLOAD_BYTES: usize = 256;
/// How long a child may take to listen, and the network to connect.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long after the last scheduled delivery the coordinator waits for results.
const RESULTS_GRACE: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "Propagation benchmark: N node processes on loopback, Herald against raw gossipsub")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Runs the benchmark (spawns the children) and prints the figures.
    Coordinator(CoordinatorArgs),
    /// One node; started by the coordinator, speaks JSON lines on stdin/stdout.
    Child(ChildArgs),
    /// Times the store operations of the publish and receive paths alone, in
    /// one process: `publish_own` (sign, journal, stage) and `insert_verified` +
    /// `flush` of one received bulletin, and the same without the flush.
    StoreProbe(StoreProbeArgs),
}

#[derive(Args)]
struct StoreProbeArgs {
    /// Directory for the temporary store (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Operations of each kind.
    #[arg(long, default_value_t = 200)]
    count: u64,
    /// Pause between operations, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pause_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
enum System {
    /// Herald nodes, stores on disk.
    Herald,
    /// Herald nodes, stores on /dev/shm (tmpfs).
    HeraldShm,
    /// Raw libp2p gossipsub with message signing, and an application Ed25519
    /// signature on each message that every receiver checks when gossipsub
    /// hands it over (the workload of the issue's reference baseline).
    GossipsubCheck,
    /// Raw libp2p gossipsub with message signing, no application check.
    Gossipsub,
    /// Diagnostic: Herald's tree dissemination (`herald_node::push`, eager and
    /// lazy push over libp2p streams) carrying the `gossipsub-check` payload:
    /// each receiver checks the application signature, and forwards only what
    /// passes; no storage.
    TreeCheck,
    /// Diagnostic: gossipsub configured as in Herald (anonymous, content ids,
    /// application validation, scoring), messages are signed Herald bulletins
    /// validated with `validate_bulletin` inline on the swarm loop; no storage.
    AppvalInline,
    /// Diagnostic: as `appval-inline`, but each message is validated off the
    /// loop the way an earlier node did: a task, a permit, `spawn_blocking`,
    /// and the verdict sent back to the swarm loop through a channel.
    AppvalOffloop,
    /// Diagnostic: as `appval-offloop`, plus the node's storage path on disk: a
    /// writer thread signs, stores and flushes the node's own bulletins before
    /// they are gossiped, and stores and flushes received ones in groups; a
    /// delivery counts once flushed (as `BulletinStored`).
    AppvalStore,
    /// Diagnostic: as `appval-store`, but received bulletins are not flushed
    /// before they count as delivered (sled's own background flush, every
    /// 500 ms, makes them durable); own bulletins are still flushed before gossip.
    AppvalStoreNoflush,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Herald => "herald",
            System::HeraldShm => "herald-shm",
            System::GossipsubCheck => "gossipsub-check",
            System::Gossipsub => "gossipsub",
            System::TreeCheck => "tree-check",
            System::AppvalInline => "appval-inline",
            System::AppvalOffloop => "appval-offloop",
            System::AppvalStore => "appval-store",
            System::AppvalStoreNoflush => "appval-store-noflush",
        }
    }

    fn is_herald(self) -> bool {
        matches!(self, System::Herald | System::HeraldShm)
    }

    fn is_appval(self) -> bool {
        matches!(
            self,
            System::AppvalInline | System::AppvalOffloop | System::AppvalStore | System::AppvalStoreNoflush
        )
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Timing {
    /// `GossipTiming::default()`: first heartbeat after 1 s, then every 1 s.
    Default,
    /// `GossipTiming::fast()`: first heartbeat after 100 ms, then every 250 ms.
    Fast,
}

impl Timing {
    fn gossip(self) -> GossipTiming {
        match self {
            Timing::Default => GossipTiming::default(),
            Timing::Fast => GossipTiming::fast(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Timing::Default => "default",
            Timing::Fast => "fast",
        }
    }
}

#[derive(Args)]
struct CoordinatorArgs {
    /// Network sizes.
    #[arg(long, value_delimiter = ',', default_value = "10,30,50")]
    nodes: Vec<usize>,
    /// Systems, run one after the other for each N (order alternates by round).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "herald,gossipsub-check,gossipsub"
    )]
    systems: Vec<System>,
    /// Rounds per N and system.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Messages per run.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Messages per second (whole network).
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Peers each node dials.
    #[arg(long, default_value_t = 3)]
    dials: usize,
    /// Warm-up after every node is connected, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    warmup_ms: u64,
    /// Time after the last publication before the children report, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    drain_ms: u64,
    /// Seed for keys and topology.
    #[arg(long, default_value_t = 20_261_126)]
    seed: u64,
    /// Gossip heartbeat timing (the same for every system).
    #[arg(long, value_enum, default_value = "default")]
    timing: Timing,
    /// Where the temporary directories of the `herald` system go (default: the
    /// system's temporary directory). `herald-shm` always uses /dev/shm.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Overall time limit, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
}

#[derive(Args)]
struct ChildArgs {
    #[arg(long, value_enum)]
    system: System,
    #[arg(long)]
    index: usize,
    #[arg(long)]
    nodes: usize,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_enum)]
    timing: Timing,
}

/// Child to coordinator, one JSON object a line on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Report {
    Listen {
        addr: String,
    },
    Ready,
    /// A message received: its number, send time and receive time (µs).
    Recv {
        k: u64,
        sent: u64,
        recv: u64,
    },
    /// A message published: its number, send time and when the publish call returned (µs).
    Pub {
        k: u64,
        sent: u64,
        acked: u64,
    },
    Error {
        msg: String,
    },
    /// End of the results; CPU time (ms) used in the warm-up, and in the
    /// measured window in all and by thread name (threads still alive at the end).
    Done {
        lagged: u64,
        warmup_cpu_ms: u64,
        cpu_ms: u64,
        threads: BTreeMap<String, u64>,
        /// Peers connected at the end.
        peers: usize,
    },
}

/// Coordinator to child, one JSON object a line on stdin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Order {
    Dial {
        addrs: Vec<String>,
        degree: usize,
    },
    /// Publish message `k` at `t0 + k * interval` for each `k < messages` with
    /// `k mod N == index`; report at `end` (times in µs since the epoch).
    Start {
        t0: u64,
        interval: u64,
        messages: u64,
        end: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Coordinator(args) => coordinator(&args),
        Mode::Child(args) => child(&args),
        Mode::StoreProbe(args) => store_probe(&args),
    }
}

fn store_probe(args: &StoreProbeArgs) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("herald-bench-store-")
        .tempdir_in(&base)?;
    let genesis = build_genesis(1, 2)?;
    let hash = genesis.hash();
    let registry = Registry::from_genesis(genesis, hash)?;
    let network = registry.network();
    let store = Store::open(tmp.path(), network)?;
    let member_of = |key: &SecretKey| registry.current().signing_key(&key.id()).map(|(m, _)| m.id);
    let (own, other) = (herald_key(1, 0, 1), herald_key(1, 1, 1));
    let (own_member, other_member) = (
        member_of(&own).ok_or_else(|| anyhow!("key"))?,
        member_of(&other).ok_or_else(|| anyhow!("key"))?,
    );
    // The other member's chain, signed in advance (a scratch store numbers it).
    let scratch_dir = tempfile::Builder::new()
        .prefix("herald-bench-store-")
        .tempdir_in(&base)?;
    let scratch = Store::open(scratch_dir.path(), network)?;
    let body = |k: u64| bench_body(network, &own, k, 1, now_us());
    let mut received = Vec::new();
    for k in 0..(2 + FOLDED as u64) * args.count {
        received.push(scratch.publish_own(&other, &other_member, body(k))?);
    }
    let mut received = received.into_iter();
    let mut next = || received.next().ok_or_else(|| anyhow!("out of bulletins"));
    let peer = libp2p::PeerId::random().to_bytes();
    // Wall time of each call, and CPU time of the whole process (every
    // thread, sled's included) from the call until the next one starts; the
    // row `nothing` is what the pause and the reading of /proc cost alone.
    let mut times: BTreeMap<&str, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    let pause = Duration::from_millis(args.pause_ms);
    let mut measure = |name: &'static str, op: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let cpu = process_cpu_us();
        let t = Instant::now();
        op()?;
        let wall = t.elapsed().as_micros() as u64;
        std::thread::sleep(pause);
        let entry = times.entry(name).or_default();
        entry.0.push(wall);
        entry.1.push(process_cpu_us().saturating_sub(cpu));
        Ok(())
    };
    for k in 0..args.count {
        measure("publish_own (sign, journal, stage)", &mut || {
            store.publish_own(&own, &own_member, body(k))?;
            Ok(())
        })?;
        let b = next()?;
        measure("insert_verified + flush (1 received)", &mut || {
            store.insert_verified(&[(b.clone(), other_member)])?;
            store.flush()?;
            Ok(())
        })?;
        let b = next()?;
        measure("insert_verified alone (1 received, no flush)", &mut || {
            store.insert_verified(&[(b.clone(), other_member)])?;
            Ok(())
        })?;
        for _ in 0..FOLDED {
            let b = next()?;
            measure("stage (1 received)", &mut || {
                store.stage(&b, &other_member, &peer);
                Ok(())
            })?;
        }
        measure("nothing (the idle process over the same pause)", &mut || Ok(()))?;
        measure("fold_staged (5 staged)", &mut || {
            store.fold_staged(FOLDED)?;
            Ok(())
        })?;
    }
    println!(
        "store probe in {} ({} operations of each kind, {} ms apart), µs of wall time and of process CPU time:",
        base.display(),
        args.count,
        args.pause_ms
    );
    println!("| operation | wall p50 | p90 | p99 | CPU p50 | p90 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (mut wall, mut cpu)) in times {
        wall.sort_unstable();
        cpu.sort_unstable();
        let w = |q| percentile(&wall, q).unwrap_or(0);
        let c = |q| percentile(&cpu, q).unwrap_or(0);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            w(0.5),
            w(0.9),
            w(0.99),
            c(0.5),
            c(0.9)
        );
    }
    Ok(())
}

/// Bulletins staged between two folds in the store probe (20 a second for 250 ms).
const FOLDED: usize = 5;

/// CPU time of this process's live threads (sled's included), in µs, from
/// the scheduler's nanosecond counters in /proc.
fn process_cpu_us() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns / 1000
}

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The tokio instant of a wall-clock time in µs since the epoch.
fn instant_of(at_us: u64) -> tokio::time::Instant {
    let now = now_us();
    let base = tokio::time::Instant::now();
    if at_us >= now {
        base + Duration::from_micros(at_us - now)
    } else {
        base.checked_sub(Duration::from_micros(now - at_us))
            .unwrap_or(base)
    }
}

/// A key of node `index`, derived from the seed: 0 member key, 1 signing key,
/// 2 node key (Herald), 3 libp2p identity (baseline).
fn derived_seed(seed: u64, index: usize, role: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"herald bench_propagation key");
    h.update(seed.to_be_bytes());
    h.update((index as u64).to_be_bytes());
    h.update([role]);
    h.finalize().into()
}

fn herald_key(seed: u64, index: usize, role: u8) -> SecretKey {
    SecretKey::from_seed(&derived_seed(seed, index, role))
}

/// The genesis of a network of `n` members, one node each, all keys from the seed.
fn build_genesis(seed: u64, n: usize) -> Result<SignedRegistryUpdate> {
    let keys: Vec<[SecretKey; 3]> = (0..n)
        .map(|i| {
            [
                herald_key(seed, i, 0),
                herald_key(seed, i, 1),
                herald_key(seed, i, 2),
            ]
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let founders: Vec<Founder<'_>> = keys
        .iter()
        .zip(&names)
        .map(|(keys, name)| Founder::from_keys(name, keys))
        .collect();
    founding_genesis(&founders, (n / 2 + 1) as u32, herald_node::node::now())
        .map_err(|e| anyhow!("genesis: {e}"))
}

/// The payload of message `k`: send time, number, publisher, then padding.
fn payload(k: u64, publisher: usize, sent: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_BYTES);
    p.extend_from_slice(&sent.to_be_bytes());
    p.extend_from_slice(&k.to_be_bytes());
    p.extend_from_slice(&(publisher as u64).to_be_bytes());
    p.resize(PAYLOAD_BYTES, 0xa5);
    p
}

/// The application key of publisher `index` in `gossipsub-check` (role 4).
fn app_key(seed: u64, index: usize) -> SecretKey {
    herald_key(seed, index, 4)
}

/// `payload` followed by the publisher's application signature over it.
fn signed_payload(key: &SecretKey, k: u64, publisher: usize, sent: u64) -> Vec<u8> {
    let mut p = payload(k, publisher, sent);
    let signature = key.sign_raw(&p);
    p.extend_from_slice(signature.as_bytes());
    p
}

/// Checks the application signature of a `signed_payload` against its
/// publisher's key (strict verification, as Herald checks bulletins) and
/// returns its send time and number.
fn check_signed_payload(p: &[u8], keys: &[herald_keys::PublicKey]) -> Result<(u64, u64), String> {
    if p.len() != PAYLOAD_BYTES + 64 {
        return Err(format!("{} bytes, not a signed payload", p.len()));
    }
    let (body, signature) = p.split_at(PAYLOAD_BYTES);
    let publisher = u64::from_be_bytes(body[16..24].try_into().expect("8 bytes")) as usize;
    let key = keys
        .get(publisher)
        .ok_or_else(|| format!("unknown publisher {publisher}"))?;
    let signature = herald_protocol::Signature::from_bytes(signature.try_into().expect("64 bytes"));
    key.verify(body, &signature)
        .map_err(|e| format!("application signature of publisher {publisher}: {e}"))?;
    decode_payload(body).ok_or_else(|| "short payload".into())
}

/// Send time and number from a payload.
fn decode_payload(p: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_be_bytes(p.get(0..8)?.try_into().ok()?);
    let k = u64::from_be_bytes(p.get(8..16)?.try_into().ok()?);
    Some((sent, k))
}

// ---------------------------------------------------------------------------
// Child
// ---------------------------------------------------------------------------

/// Writes one report line now (used outside the measured window).
fn emit(report: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(report).unwrap_or_default());
    let _ = out.flush();
}

/// Reads orders from stdin on a thread; the process exits when stdin closes
/// (the coordinator is gone), so no child outlives it.
fn stdin_orders() -> mpsc::UnboundedReceiver<Order> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Order>(&line) {
                Ok(order) => {
                    let _ = tx.send(order);
                }
                Err(e) => emit(&Report::Error {
                    msg: format!("bad order {line:?}: {e}"),
                }),
            }
        }
        std::process::exit(3);
    });
    rx
}

/// CPU time of this process (user + system, clock ticks of 10 ms) and of
/// each of its live threads (µs, from the scheduler's nanosecond counter),
/// from /proc.
#[derive(Default)]
struct CpuSnapshot {
    process: u64,
    threads: HashMap<String, (String, u64)>,
}

/// A thread's name without a trailing number, so that numbered pool threads
/// (`sled-io-3`) are counted together.
fn thread_group(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() < name.len() {
        format!("{trimmed}*")
    } else {
        name.to_string()
    }
}

fn ticks_of(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // After "pid (comm) ": state is field 0, utime field 11, stime field 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn cpu_snapshot() -> CpuSnapshot {
    let mut snap = CpuSnapshot::default();
    if let Some((_, t)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(ticks_of)
    {
        snap.process = t;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let tid = entry.file_name().to_string_lossy().into_owned();
            let name = std::fs::read_to_string(entry.path().join("comm"));
            let ns = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let (Ok(name), Some(ns)) = (name, ns) {
                snap.threads.insert(tid, (thread_group(name.trim()), ns / 1000));
            }
        }
    }
    snap
}

/// What a child keeps during the measured window, printed at the end.
#[derive(Default)]
struct Records {
    lines: Vec<Report>,
    /// Messages whose send time could not be read.
    lagged: u64,
    /// CPU time when the start order came (the warm-up begins).
    cpu_order: CpuSnapshot,
    /// CPU time at the first publication slot (the measured window begins).
    cpu_start: Option<CpuSnapshot>,
}

impl Records {
    fn print_and_exit(self, peers: usize) -> ! {
        let end = cpu_snapshot();
        let start = self.cpu_start.unwrap_or_default();
        let mut threads = BTreeMap::new();
        for (tid, (name, t)) in &end.threads {
            let before = start.threads.get(tid).map_or(0, |(_, b)| *b);
            *threads.entry(name.clone()).or_insert(0) += (t - before.min(*t)) / 1000;
        }
        let done = Report::Done {
            lagged: self.lagged,
            peers,
            warmup_cpu_ms: start.process.saturating_sub(self.cpu_order.process) * 10,
            cpu_ms: end.process.saturating_sub(start.process) * 10,
            threads,
        };
        let mut out = std::io::stdout().lock();
        for r in self.lines.iter().chain(std::iter::once(&done)) {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        }
        let _ = out.flush();
        std::process::exit(0);
    }
}

/// The publication schedule of one child, once started.
struct Schedule {
    start: tokio::time::Instant,
    t0: u64,
    interval: u64,
    messages: u64,
    end: tokio::time::Instant,
    next: u64,
    step: u64,
}

impl Schedule {
    fn new(index: usize, nodes: usize, t0: u64, interval: u64, messages: u64, end: u64) -> Self {
        Self {
            start: instant_of(t0),
            t0,
            interval,
            messages,
            end: instant_of(end),
            next: index as u64,
            step: nodes as u64,
        }
    }

    /// The next message to publish and when.
    fn next(&self) -> Option<(u64, tokio::time::Instant)> {
        (self.next < self.messages).then(|| (self.next, instant_of(self.t0 + self.next * self.interval)))
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

/// What every child's loop shares: the coordinator's orders, the publication
/// schedule, the records, and when to report ready.
struct Driver {
    index: usize,
    nodes: usize,
    degree: Option<usize>,
    ready_sent: bool,
    schedule: Option<Schedule>,
    records: Records,
}

/// The driver's timers for one turn of a child's loop.
struct Timers {
    /// The next publication, if one is left.
    next: Option<u64>,
    publish_at: tokio::time::Instant,
    /// When the measured window starts, while it has not.
    start_at: Option<tokio::time::Instant>,
    /// When the run ends, once started.
    end_at: Option<tokio::time::Instant>,
}

impl Timers {
    fn start_at(&self) -> tokio::time::Instant {
        self.start_at.unwrap_or_else(far_future)
    }

    fn end_at(&self) -> tokio::time::Instant {
        self.end_at.unwrap_or_else(far_future)
    }
}

impl Driver {
    fn new(args: &ChildArgs) -> Self {
        Driver {
            index: args.index,
            nodes: args.nodes,
            degree: None,
            ready_sent: false,
            schedule: None,
            records: Records::default(),
        }
    }

    fn timers(&self) -> Timers {
        let next = self.schedule.as_ref().and_then(Schedule::next);
        Timers {
            next: next.map(|(k, _)| k),
            publish_at: next.map_or_else(far_future, |(_, at)| at),
            start_at: self
                .schedule
                .as_ref()
                .filter(|_| self.records.cpu_start.is_none())
                .map(|s| s.start),
            end_at: self.schedule.as_ref().map(|s| s.end),
        }
    }

    /// Takes an order from the coordinator; returns the addresses to dial.
    fn order(&mut self, order: Option<Order>) -> Result<Vec<Multiaddr>> {
        match order {
            Some(Order::Dial { addrs, degree }) => {
                self.degree = Some(degree);
                addrs.iter().map(|a| Ok(a.parse::<Multiaddr>()?)).collect()
            }
            Some(Order::Start {
                t0,
                interval,
                messages,
                end,
            }) => {
                self.records.cpu_order = cpu_snapshot();
                self.schedule = Some(Schedule::new(self.index, self.nodes, t0, interval, messages, end));
                Ok(Vec::new())
            }
            None => bail!("orders closed"),
        }
    }

    /// Moves past the publication now due.
    fn published(&mut self) {
        if let Some(s) = self.schedule.as_mut() {
            s.next += s.step;
        }
    }

    /// The measured window starts.
    fn window_started(&mut self) {
        self.records.cpu_start = Some(cpu_snapshot());
    }

    /// Reports ready once the node has as many peers as it dialled and was dialled by.
    fn ready_when(&mut self, linked: usize) {
        if !self.ready_sent && self.degree.is_some_and(|d| linked >= d) {
            emit(&Report::Ready);
            self.ready_sent = true;
        }
    }
}

fn child(args: &ChildArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        // A child never runs longer than this, whatever happens to the coordinator.
        tokio::time::timeout(Duration::from_secs(600), async {
            if args.system.is_herald() {
                child_herald(args).await
            } else if args.system == System::TreeCheck {
                child_tree(args).await
            } else {
                child_gossipsub(args).await
            }
        })
        .await
        .map_err(|_| anyhow!("child timed out"))?
    });
    if let Err(e) = &result {
        emit(&Report::Error {
            msg: format!("{e:#}"),
        });
        std::process::exit(2);
    }
    Ok(())
}

fn herald_draft(k: u64, publisher: usize, sent: u64) -> Draft {
    Draft {
        kind: Kind::Outreach,
        tlp: Tlp::Clear,
        severity: Severity::Informational,
        title: format!("propagation benchmark message {k}"),
        references: Vec::new(),
        supersedes: None,
        expires: None,
        audience: Vec::new(),
        payload: Payload {
            content_type: "application/octet-stream".into(),
            bytes: payload(k, publisher, sent),
        },
        created: Some(Timestamp(sent / 1000)),
    }
}

/// The body of message `k` as the first of `key`'s chain (`publish_own`
/// renumbers it).
fn bench_body(network: NetworkId, key: &SecretKey, k: u64, publisher: usize, sent: u64) -> BulletinBody {
    herald_draft(k, publisher, sent).into_body(network, key.id(), Seq(1), None)
}

async fn child_herald(args: &ChildArgs) -> Result<()> {
    let genesis_bytes = std::fs::read(args.dir.join("genesis.bin")).context("reading the genesis")?;
    let genesis = SignedRegistryUpdate::from_bytes(&genesis_bytes).map_err(|e| anyhow!("genesis: {e}"))?;
    let settings = NodeSettings {
        data_dir: args.dir.join(format!("node-{}", args.index)),
        genesis_hash: genesis.hash(),
        genesis,
        signing_key: herald_key(args.seed, args.index, 1),
        node_key: herald_key(args.seed, args.index, 2),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: Vec::new(),
        mdns: false,
        handshakes_per_address: herald_node::network::DEFAULT_HANDSHAKES_PER_ADDRESS,
        timing: GossipTiming {
            tree: tree_config(),
            // `FOLD_MS` changes how long received bulletins stay staged
            // (to compare settings).
            fold_delay: std::env::var("FOLD_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(herald_node::store::FOLD_DELAY, Duration::from_millis),
            ..args.timing.gossip()
        },
        key_past: KeyPast::New,
    };
    let node = Node::start(settings).await?;
    let mut events = node.subscribe();
    let mut orders = stdin_orders();
    let peer_id = node.peer_id();

    let mut subscribed = HashSet::new();
    let mut listen_sent = false;
    let mut driver = Driver::new(args);
    let mut publishing = FuturesUnordered::new();
    // Ask for the listen address until the listener is up.
    let mut poll_listen = tokio::time::interval(Duration::from_millis(20));

    loop {
        let t = driver.timers();
        tokio::select! {
            event = events.recv() => match event {
                Ok(NodeEvent::BulletinReceived { bulletin, held_at, .. }) => {
                    // When the node accepted and held it, as the baseline's
                    // `Message` event is when gossipsub did; this task hears
                    // of it later, after the node's other tasks.
                    let recv = held_at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                    match decode_payload(&bulletin.body().payload.bytes) {
                        Some((sent, k)) => driver.records.lines.push(Report::Recv { k, sent, recv }),
                        None => driver.records.lagged += 1,
                    }
                }
                Ok(NodeEvent::PeerSubscribed(peer)) => {
                    subscribed.insert(peer);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => driver.records.lagged += n,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => bail!("node stopped"),
            },
            _ = poll_listen.tick(), if !listen_sent => {
                if let Some(addr) = node.listen_addrs().await.into_iter().next() {
                    emit(&Report::Listen { addr: addr.with(Protocol::P2p(peer_id)).to_string() });
                    listen_sent = true;
                }
            }
            order = orders.recv() => for a in driver.order(order)? {
                node.dial(a).await;
            },
            Some((k, sent, result)) = publishing.next(), if !publishing.is_empty() => {
                let acked = now_us();
                let result: Result<_, herald_node::PublishError> = result;
                result.map_err(|e| anyhow!("publish {k}: {e}"))?;
                driver.records.lines.push(Report::Pub { k, sent, acked });
            }
            () = tokio::time::sleep_until(t.publish_at), if t.next.is_some() => {
                let k = t.next.expect("checked");
                driver.published();
                let sent = now_us();
                let draft = herald_draft(k, args.index, sent);
                let node = &node;
                publishing.push(async move { (k, sent, node.publish(draft).await) });
            }
            () = tokio::time::sleep_until(t.start_at()), if t.start_at.is_some() => driver.window_started(),
            () = tokio::time::sleep_until(t.end_at()), if t.end_at.is_some() => {
                if std::env::var_os("TREE_STATS").is_some() {
                    eprintln!("herald tree {}: {:?}", args.index, node.network_status().await.tree);
                }
                driver.records.print_and_exit(node.connected_peers().await.len());
            }
        }
        driver.ready_when(subscribed.len());
    }
}

/// Gossipsub as Herald's network configures it (see `node/src/network.rs`):
/// anonymous messages with content ids, application validation, the same
/// queue length, frame limit, duplicate cache and peer scoring.
fn herald_like_gossipsub(
    timing: GossipTiming,
    topic: &gossipsub::IdentTopic,
) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()))
        .max_transmit_size(herald_protocol::MAX_BULLETIN_BYTES + 16 * 1024)
        .duplicate_cache_time(Duration::from_secs(120))
        .heartbeat_initial_delay(timing.heartbeat_initial_delay)
        .heartbeat_interval(timing.heartbeat_interval)
        .connection_handler_queue_len(512)
        .build()?;
    let mut gs = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)?;
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    params.topics.insert(
        topic.hash(),
        gossipsub::TopicScoreParams {
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.5,
            ..Default::default()
        },
    );
    gs.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
    Ok(gs)
}

/// The swarm of the baseline and of the diagnostic systems: TCP (nodelay),
/// noise, yamux, and gossipsub; heartbeat as in Herald. The baseline uses
/// gossipsub's default signing and strict validation.
fn gossip_swarm(
    args: &ChildArgs,
    topic: &gossipsub::IdentTopic,
) -> Result<libp2p::Swarm<gossipsub::Behaviour>> {
    let mut secret = derived_seed(args.seed, args.index, 3);
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret)?;
    let timing = args.timing.gossip();
    let system = args.system;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            if system.is_appval() {
                return herald_like_gossipsub(timing, topic);
            }
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .heartbeat_initial_delay(timing.heartbeat_initial_delay)
                .heartbeat_interval(timing.heartbeat_interval)
                .build()?;
            let behaviour =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(behaviour)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// What the diagnostic systems need to sign and check Herald bulletins.
struct AppVal {
    registry: Arc<RwLock<Registry>>,
    store: Store,
    network: NetworkId,
    key: SecretKey,
    seq: Seq,
    prev: Option<BulletinId>,
    validators: Arc<tokio::sync::Semaphore>,
    verdicts_tx: mpsc::Sender<(gossipsub::MessageId, PeerId, Verdict)>,
    /// `appval-store`: the writer thread.
    writer: Option<std_mpsc::Sender<WriterJob>>,
}

/// Work for the `appval-store` writer thread.
enum WriterJob {
    Store(Box<herald_protocol::SignedBulletin>, MemberId),
    Publish {
        k: u64,
        sent: u64,
        body: Box<BulletinBody>,
    },
}

/// What the `appval-store` writer thread hands back to the swarm loop.
enum Written {
    /// A received message is on disk: its number and send time.
    Stored { k: u64, sent: u64 },
    /// An own bulletin is on disk: gossip it now.
    Published { k: u64, sent: u64, bytes: Vec<u8> },
}

/// The `appval-store` writer: the same store calls as the node's writer
/// (`publish_own` = sign, journal, stage; `insert_verified` + `flush` per group).
fn store_writer(
    store: Store,
    key: SecretKey,
    member: MemberId,
    flush_received: bool,
    jobs: std_mpsc::Receiver<WriterJob>,
    out: mpsc::Sender<Written>,
) {
    while let Ok(first) = jobs.recv() {
        let mut received = Vec::new();
        let mut publish = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriterJob::Store(b, m) => received.push((*b, m)),
                WriterJob::Publish { k, sent, body } => publish.push((k, sent, body)),
            }
            if received.len() + publish.len() < 512 {
                next = jobs.try_recv().ok();
            }
        }
        if !received.is_empty() {
            let outcomes = store.insert_verified(&received).and_then(|o| {
                if flush_received {
                    store.flush().map(|()| o)
                } else {
                    Ok(o)
                }
            });
            if let Ok(outcomes) = outcomes {
                for ((b, _), o) in received.iter().zip(outcomes) {
                    if o == herald_node::Stored::New
                        && let Some((sent, k)) = decode_payload(&b.body().payload.bytes)
                    {
                        let _ = out.blocking_send(Written::Stored { k, sent });
                    }
                }
            }
        }
        for (k, sent, body) in publish {
            if let Ok(b) = store.publish_own(&key, &member, *body) {
                let _ = out.blocking_send(Written::Published {
                    k,
                    sent,
                    bytes: b.to_bytes(),
                });
            }
        }
    }
}

impl AppVal {
    fn open(
        args: &ChildArgs,
        verdicts_tx: mpsc::Sender<(gossipsub::MessageId, PeerId, Verdict)>,
        written_tx: mpsc::Sender<Written>,
    ) -> Result<Self> {
        let bytes = std::fs::read(args.dir.join("genesis.bin")).context("reading the genesis")?;
        let genesis = SignedRegistryUpdate::from_bytes(&bytes).map_err(|e| anyhow!("genesis: {e}"))?;
        let hash = genesis.hash();
        let registry = Registry::from_genesis(genesis, hash)?;
        let network = registry.network();
        // Read for the "already held" check, as in the node; written only by
        // the `appval-store` writer.
        let store = Store::open(&args.dir.join(format!("node-{}", args.index)), network)?;
        let key = herald_key(args.seed, args.index, 1);
        let writer = if matches!(args.system, System::AppvalStore | System::AppvalStoreNoflush) {
            let flush_received = args.system == System::AppvalStore;
            let member = registry
                .current()
                .signing_key(&key.id())
                .map(|(m, _)| m.id)
                .ok_or_else(|| anyhow!("not a member"))?;
            let (tx, rx) = std_mpsc::channel();
            let (store, key) = (store.clone(), herald_key(args.seed, args.index, 1));
            std::thread::Builder::new()
                .name("appval-writer".into())
                .spawn(move || store_writer(store, key, member, flush_received, rx, written_tx))?;
            Some(tx)
        } else {
            None
        };
        Ok(Self {
            registry: Arc::new(RwLock::new(registry)),
            store,
            network,
            key,
            writer,
            seq: Seq(0),
            prev: None,
            validators: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            )),
            verdicts_tx,
        })
    }

    /// The body of message `k` (number and previous id still to fill in).
    fn body(&self, k: u64, publisher: usize, sent: u64) -> BulletinBody {
        bench_body(self.network, &self.key, k, publisher, sent)
    }

    /// The next bulletin of this node's chain, signed, as wire bytes.
    fn sign(&mut self, k: u64, publisher: usize, sent: u64) -> Result<Vec<u8>> {
        self.seq = Seq(self.seq.0 + 1);
        let body = BulletinBody {
            seq: self.seq,
            prev: self.prev,
            ..self.body(k, publisher, sent)
        };
        let bulletin = herald_keys::sign_bulletin(&self.key, &body).map_err(|e| anyhow!("sign: {e}"))?;
        self.prev = Some(bulletin.id());
        Ok(bulletin.to_bytes())
    }

    fn validate_inline(&self, data: &[u8]) -> Verdict {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        validate_bulletin(data, &registry, &self.store)
    }

    /// What `network.rs` does with each message (`validate_off_loop`).
    fn validate_off_loop(&self, source: PeerId, message_id: gossipsub::MessageId, data: Vec<u8>) {
        let registry = Arc::clone(&self.registry);
        let store = self.store.clone();
        let validators = Arc::clone(&self.validators);
        let reply = self.verdicts_tx.clone();
        tokio::spawn(async move {
            let Ok(_permit) = validators.acquire_owned().await else {
                return;
            };
            let verdict = tokio::task::spawn_blocking(move || {
                let registry = registry.read().unwrap_or_else(|e| e.into_inner());
                validate_bulletin(&data, &registry, &store)
            })
            .await
            .unwrap_or_else(|e| Verdict::Reject(format!("validation task failed: {e}")));
            let _ = reply.send((message_id, source, verdict)).await;
        });
    }
}

/// Reports a verdict to gossipsub and records an accepted message.
fn settle(
    swarm: &mut libp2p::Swarm<gossipsub::Behaviour>,
    records: &mut Records,
    writer: Option<&std_mpsc::Sender<WriterJob>>,
    message_id: &gossipsub::MessageId,
    source: &PeerId,
    verdict: Verdict,
) {
    // Only bulletins travel here: everything but accept and reject is ignored.
    let acceptance = match &verdict {
        Verdict::Accept(..) => gossipsub::MessageAcceptance::Accept,
        Verdict::Reject(_) => gossipsub::MessageAcceptance::Reject,
        _ => gossipsub::MessageAcceptance::Ignore,
    };
    swarm
        .behaviour_mut()
        .report_message_validation_result(message_id, source, acceptance);
    let recv = now_us();
    match verdict {
        Verdict::Accept(bulletin, member) if writer.is_some() => {
            if let Some(w) = writer {
                let _ = w.send(WriterJob::Store(bulletin, member));
            }
        }
        Verdict::Accept(bulletin, _) => match decode_payload(&bulletin.body().payload.bytes) {
            Some((sent, k)) => records.lines.push(Report::Recv { k, sent, recv }),
            None => records.lagged += 1,
        },
        Verdict::Reject(reason) => records.lines.push(Report::Error { msg: reason }),
        _ => {}
    }
}

async fn child_gossipsub(args: &ChildArgs) -> Result<()> {
    let topic = gossipsub::IdentTopic::new("herald-bench/propagation/v1");
    let mut swarm = gossip_swarm(args, &topic)?;
    swarm.behaviour_mut().subscribe(&topic)?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let peer_id = *swarm.local_peer_id();
    let mut orders = stdin_orders();
    let (verdicts_tx, mut verdicts) = mpsc::channel(1024);
    let (written_tx, mut written) = mpsc::channel(1024);
    let mut appval = if args.system.is_appval() {
        Some(AppVal::open(args, verdicts_tx, written_tx)?)
    } else {
        None
    };
    // gossipsub-check: this node's application key and every publisher's.
    let app_keys: Vec<herald_keys::PublicKey> =
        (0..args.nodes).map(|i| app_key(args.seed, i).public()).collect();
    let own_app_key = app_key(args.seed, args.index);

    let mut subscribed = HashSet::new();
    let mut driver = Driver::new(args);

    loop {
        let t = driver.timers();
        tokio::select! {
            Some((message_id, source, verdict)) = verdicts.recv() => {
                let writer = appval.as_ref().and_then(|v| v.writer.as_ref());
                settle(&mut swarm, &mut driver.records, writer, &message_id, &source, verdict);
            }
            Some(w) = written.recv() => match w {
                Written::Stored { k, sent } => driver.records.lines.push(Report::Recv { k, sent, recv: now_us() }),
                Written::Published { k, sent, bytes } => {
                    swarm.behaviour_mut().publish(topic.clone(), bytes).map_err(|e| anyhow!("publish {k}: {e}"))?;
                    driver.records.lines.push(Report::Pub { k, sent, acked: now_us() });
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(gossipsub::Event::Message { propagation_source, message_id, message }) => {
                    match (&appval, args.system) {
                        (Some(v), System::AppvalInline) => {
                            let verdict = v.validate_inline(&message.data);
                            settle(&mut swarm, &mut driver.records, None, &message_id, &propagation_source, verdict);
                        }
                        (Some(v), _) => v.validate_off_loop(propagation_source, message_id, message.data),
                        (None, System::GossipsubCheck) => match check_signed_payload(&message.data, &app_keys) {
                            // Received once the application has checked it.
                            Ok((sent, k)) => driver.records.lines.push(Report::Recv { k, sent, recv: now_us() }),
                            Err(msg) => driver.records.lines.push(Report::Error { msg }),
                        },
                        (None, _) => {
                            let recv = now_us();
                            match decode_payload(&message.data) {
                                Some((sent, k)) => driver.records.lines.push(Report::Recv { k, sent, recv }),
                                None => driver.records.lagged += 1,
                            }
                        }
                    }
                }
                SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) => {
                    subscribed.insert(peer_id);
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    emit(&Report::Listen { addr: address.with(Protocol::P2p(peer_id)).to_string() });
                }
                _ => {}
            },
            order = orders.recv() => for a in driver.order(order)? {
                swarm.dial(a)?;
            },
            () = tokio::time::sleep_until(t.publish_at), if t.next.is_some() => {
                let k = t.next.expect("checked");
                driver.published();
                let sent = now_us();
                if let Some(w) = appval.as_ref().and_then(|v| v.writer.as_ref()) {
                    let body = Box::new(appval.as_ref().expect("checked").body(k, args.index, sent));
                    w.send(WriterJob::Publish { k, sent, body })?;
                    continue;
                }
                let data = match appval.as_mut() {
                    Some(v) => v.sign(k, args.index, sent)?,
                    None if args.system == System::GossipsubCheck => signed_payload(&own_app_key, k, args.index, sent),
                    None => payload(k, args.index, sent),
                };
                swarm.behaviour_mut().publish(topic.clone(), data).map_err(|e| anyhow!("publish {k}: {e}"))?;
                driver.records.lines.push(Report::Pub { k, sent, acked: now_us() });
            }
            () = tokio::time::sleep_until(t.start_at()), if t.start_at.is_some() => driver.window_started(),
            () = tokio::time::sleep_until(t.end_at()), if t.end_at.is_some() => {
                driver.records.print_and_exit(swarm.connected_peers().count());
            }
        }
        driver.ready_when(subscribed.len());
    }
}

/// The tree's settings: the defaults, or `TREE_MIN_INBOUND`, `TREE_IHAVE_MS`
/// and `TREE_GRAFT_MS` from the environment (to compare settings).
fn tree_config() -> TreeConfig {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut config = TreeConfig::default();
    if let Some(v) = var("TREE_MIN_INBOUND") {
        config.min_inbound = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = var("TREE_IHAVE_MS") {
        config.ihave_interval = Duration::from_millis(v);
    }
    if let Some(v) = var("TREE_GRAFT_MS") {
        config.graft_timeout = Duration::from_millis(v);
    }
    config
}

/// The `tree-check` child: the same transport as the baseline, the tree
/// dissemination in place of gossipsub, the application check before forwarding.
async fn child_tree(args: &ChildArgs) -> Result<()> {
    let mut secret = derived_seed(args.seed, args.index, 3);
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    // New messages come to this loop to be checked, as in `gossipsub-check`.
    let (new_tx, mut new_messages) = mpsc::channel(4096);
    let sink: herald_node::push::Sink =
        Arc::new(move |from, id, data, forwarder| new_tx.try_send((from, id, data, forwarder)).is_ok());
    let (push, mut pushed) = Push::start(
        swarm.behaviour().new_control(),
        libp2p::StreamProtocol::new("/herald-bench/push/1"),
        tree_config(),
        64 * 1024,
        sink,
    )
    .map_err(|e| anyhow!(e))?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let peer_id = *swarm.local_peer_id();
    let mut orders = stdin_orders();
    let app_keys: Vec<herald_keys::PublicKey> =
        (0..args.nodes).map(|i| app_key(args.seed, i).public()).collect();
    let own_app_key = app_key(args.seed, args.index);

    let mut linked = HashSet::new();
    let mut driver = Driver::new(args);

    loop {
        let t = driver.timers();
        tokio::select! {
            Some((from, id, data, forwarder)) = new_messages.recv() => match check_signed_payload(&data, &app_keys) {
                Ok((sent, k)) => {
                    driver.records.lines.push(Report::Recv { k, sent, recv: now_us() });
                    forwarder.accept(from, id, data);
                }
                Err(msg) => {
                    forwarder.drop_message(id);
                    driver.records.lines.push(Report::Error { msg });
                }
            },
            Some(PushEvent::Malformed { reason, .. }) = pushed.recv() => driver.records.lines.push(Report::Error { msg: reason }),
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    push.add_peer(peer_id);
                    linked.insert(peer_id);
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    push.remove_peer(peer_id);
                    linked.remove(&peer_id);
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    emit(&Report::Listen { addr: address.with(Protocol::P2p(peer_id)).to_string() });
                }
                _ => {}
            },
            order = orders.recv() => for a in driver.order(order)? {
                swarm.dial(a)?;
            },
            () = tokio::time::sleep_until(t.publish_at), if t.next.is_some() => {
                let k = t.next.expect("checked");
                driver.published();
                let sent = now_us();
                let data = signed_payload(&own_app_key, k, args.index, sent);
                let linked = push.stats();
                if linked.eager + linked.lazy == 0 {
                    bail!("publish {k}: no peer linked");
                }
                push.publish(Arc::from(data));
                driver.records.lines.push(Report::Pub { k, sent, acked: now_us() });
            }
            () = tokio::time::sleep_until(t.start_at()), if t.start_at.is_some() => driver.window_started(),
            () = tokio::time::sleep_until(t.end_at()), if t.end_at.is_some() => {
                if std::env::var_os("TREE_STATS").is_some() {
                    eprintln!("tree {}: {:?}", args.index, push.stats());
                }
                driver.records.print_and_exit(swarm.connected_peers().count());
            }
        }
        driver.ready_when(linked.len());
    }
}

// ---------------------------------------------------------------------------
// Coordinator
// ---------------------------------------------------------------------------

/// Who dials whom: node `i` dials `dials[i]`; no pair is linked twice.
fn topology(seed: u64, n: usize, dials_per_node: usize) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut linked: HashSet<(usize, usize)> = HashSet::new();
    let mut dials = vec![Vec::new(); n];
    for (i, out) in dials.iter_mut().enumerate() {
        let mut candidates: Vec<usize> = (0..n)
            .filter(|&j| j != i && !linked.contains(&(i.min(j), i.max(j))))
            .collect();
        for _ in 0..dials_per_node.min(candidates.len()) {
            let j = candidates.swap_remove(rng.random_range(0..candidates.len()));
            linked.insert((i.min(j), i.max(j)));
            out.push(j);
        }
    }
    dials
}

fn neighbours(dials: &[Vec<usize>]) -> Vec<HashSet<usize>> {
    let mut nb = vec![HashSet::new(); dials.len()];
    for (i, out) in dials.iter().enumerate() {
        for &j in out {
            nb[i].insert(j);
            nb[j].insert(i);
        }
    }
    nb
}

/// Hops from node 0 to the farthest node, or None if the graph is not connected.
fn diameter_from_each(nb: &[HashSet<usize>]) -> Option<usize> {
    let n = nb.len();
    let mut worst = 0;
    for start in 0..n {
        let mut dist = vec![usize::MAX; n];
        dist[start] = 0;
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(u) = queue.pop_front() {
            for &v in &nb[u] {
                if dist[v] == usize::MAX {
                    dist[v] = dist[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        if dist.contains(&usize::MAX) {
            return None;
        }
        worst = worst.max(dist.into_iter().max().unwrap_or(0));
    }
    Some(worst)
}

/// The children of one run; killed when dropped.
struct Children {
    procs: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
}

impl Children {
    fn send(&mut self, index: usize, order: &Order) -> Result<()> {
        let stdin = self.stdins[index]
            .as_mut()
            .ok_or_else(|| anyhow!("child {index}: stdin closed"))?;
        writeln!(stdin, "{}", serde_json::to_string(order)?)?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for s in &mut self.stdins {
            s.take();
        }
        for p in &mut self.procs {
            let _ = p.kill();
        }
        for p in &mut self.procs {
            let _ = p.wait();
        }
    }
}

/// A line from a child, or the end of its output.
enum Line {
    Report(usize, Report),
    Eof(usize),
}

/// One run's raw results.
struct RunResult {
    system: System,
    n: usize,
    messages: u64,
    /// (k, receiver) -> latency µs.
    recv: HashMap<(u64, usize), u64>,
    /// k -> publish call duration µs.
    publish_call: BTreeMap<u64, u64>,
    errors: Vec<String>,
    lagged: u64,
    /// CPU ms of all children in the warm-up.
    warmup_cpu_ms: u64,
    /// CPU ms of all children in the measured window, in all and by thread name.
    cpu_ms: u64,
    threads: BTreeMap<String, u64>,
    /// Connected peers per node at the end: minimum, mean, maximum.
    peers: (usize, f64, usize),
    /// Links dialled.
    links: usize,
    diameter: Option<usize>,
    setup: Duration,
}

fn spawn_children(
    system: System,
    n: usize,
    seed: u64,
    dir: &Path,
    timing: Timing,
) -> Result<(Children, std_mpsc::Receiver<Line>)> {
    let exe = std::env::current_exe()?;
    let (tx, rx) = std_mpsc::channel();
    let mut children = Children {
        procs: Vec::with_capacity(n),
        stdins: Vec::with_capacity(n),
    };
    for i in 0..n {
        let mut proc = Command::new(&exe)
            .args([
                "child",
                "--system",
                system.name(),
                "--index",
                &i.to_string(),
                "--nodes",
                &n.to_string(),
            ])
            .args(["--seed", &seed.to_string(), "--timing", timing.name()])
            .arg("--dir")
            .arg(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning child {i}"))?;
        let stdout = proc.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        children.stdins.push(proc.stdin.take());
        children.procs.push(proc);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Report>(&line) {
                    Ok(r) => {
                        let _ = tx.send(Line::Report(i, r));
                    }
                    Err(_) => {
                        let _ = tx.send(Line::Report(
                            i,
                            Report::Error {
                                msg: format!("unparsed: {line}"),
                            },
                        ));
                    }
                }
            }
            let _ = tx.send(Line::Eof(i));
        });
    }
    Ok((children, rx))
}

fn run_once(args: &CoordinatorArgs, system: System, n: usize, deadline: Instant) -> Result<RunResult> {
    let started = Instant::now();
    let base = match system {
        System::HeraldShm | System::AppvalInline | System::AppvalOffloop => PathBuf::from("/dev/shm"),
        System::Herald
        | System::GossipsubCheck
        | System::Gossipsub
        | System::TreeCheck
        | System::AppvalStore
        | System::AppvalStoreNoflush => args.dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    let tmp = tempfile::Builder::new()
        .prefix("herald-bench-prop-")
        .tempdir_in(&base)?;
    if system.is_herald() || system.is_appval() {
        let genesis = build_genesis(args.seed, n)?;
        std::fs::write(tmp.path().join("genesis.bin"), genesis.to_bytes())?;
    }
    let (mut children, lines) = spawn_children(system, n, args.seed, tmp.path(), args.timing)?;
    let phase_deadline = |d: Duration| (Instant::now() + d).min(deadline);
    let recv_until = |until: Instant| -> Result<Line> {
        let left = until.saturating_duration_since(Instant::now());
        lines
            .recv_timeout(left)
            .map_err(|_| anyhow!("timed out waiting for the children"))
    };
    let mut errors = Vec::new();

    // Phase 1: every child listens.
    let mut addrs: Vec<Option<String>> = vec![None; n];
    let until = phase_deadline(PHASE_TIMEOUT);
    while addrs.iter().any(Option::is_none) {
        match recv_until(until)? {
            Line::Report(i, Report::Listen { addr }) => addrs[i] = Some(addr),
            Line::Report(i, Report::Error { msg }) => bail!("child {i}: {msg}"),
            Line::Report(..) => {}
            Line::Eof(i) => bail!("child {i} exited while starting"),
        }
    }
    let addrs: Vec<String> = addrs.into_iter().flatten().collect();

    // Phase 2: connect; every child has heard each neighbour subscribe.
    let dials = topology(args.seed, n, args.dials);
    let nb = neighbours(&dials);
    let diameter = diameter_from_each(&nb);
    for i in 0..n {
        let order = Order::Dial {
            addrs: dials[i].iter().map(|&j| addrs[j].clone()).collect(),
            degree: nb[i].len(),
        };
        children.send(i, &order)?;
    }
    let mut ready = vec![false; n];
    let until = phase_deadline(PHASE_TIMEOUT);
    while ready.iter().any(|r| !r) {
        match recv_until(until)? {
            Line::Report(i, Report::Ready) => ready[i] = true,
            Line::Report(i, Report::Error { msg }) => bail!("child {i}: {msg}"),
            Line::Report(..) => {}
            Line::Eof(i) => bail!("child {i} exited while connecting"),
        }
    }
    let setup = started.elapsed();

    // Phase 3: warm-up, publish, drain, collect.
    let interval = 1_000_000 / args.rate.max(1);
    let t0 = now_us() + args.warmup_ms * 1000;
    let end = t0 + args.messages * interval + args.drain_ms * 1000;
    for i in 0..n {
        children.send(
            i,
            &Order::Start {
                t0,
                interval,
                messages: args.messages,
                end,
            },
        )?;
    }
    let until = phase_deadline(Duration::from_micros(end.saturating_sub(now_us())) + RESULTS_GRACE);
    let mut done = vec![false; n];
    let mut recv = HashMap::new();
    let mut publish_call = BTreeMap::new();
    let mut lagged = 0;
    let mut cpu_ms = 0;
    let mut warmup_cpu_ms = 0;
    let mut peer_counts = Vec::new();
    let mut threads = BTreeMap::new();
    while done.iter().any(|d| !d) {
        let line = match recv_until(until) {
            Ok(line) => line,
            Err(e) => {
                errors.push(format!(
                    "{e}: {} children did not report",
                    done.iter().filter(|d| !**d).count()
                ));
                break;
            }
        };
        match line {
            Line::Report(i, Report::Recv { k, sent, recv: at }) => {
                recv.insert((k, i), at.saturating_sub(sent));
            }
            Line::Report(_, Report::Pub { k, sent, acked }) => {
                publish_call.insert(k, acked.saturating_sub(sent));
            }
            Line::Report(
                i,
                Report::Done {
                    lagged: l,
                    warmup_cpu_ms: w,
                    cpu_ms: c,
                    threads: t,
                    peers: p,
                },
            ) => {
                done[i] = true;
                lagged += l;
                peer_counts.push(p);
                warmup_cpu_ms += w;
                cpu_ms += c;
                for (name, ms) in t {
                    *threads.entry(name).or_insert(0) += ms;
                }
            }
            Line::Report(i, Report::Error { msg }) => errors.push(format!("child {i}: {msg}")),
            Line::Report(..) => {}
            Line::Eof(i) if !done[i] => {
                errors.push(format!("child {i} exited without reporting"));
                done[i] = true;
            }
            Line::Eof(_) => {}
        }
    }
    drop(children);
    drop(tmp);
    Ok(RunResult {
        system,
        n,
        messages: args.messages,
        recv,
        publish_call,
        errors,
        lagged,
        warmup_cpu_ms,
        cpu_ms,
        threads,
        peers: (
            peer_counts.iter().copied().min().unwrap_or(0),
            peer_counts.iter().sum::<usize>() as f64 / peer_counts.len().max(1) as f64,
            peer_counts.iter().copied().max().unwrap_or(0),
        ),
        links: dials.iter().map(Vec::len).sum(),
        diameter,
        setup,
    })
}

impl RunResult {
    /// Messages that some node other than the publisher never reported, with those nodes.
    fn missing(&self) -> Vec<(u64, Vec<usize>)> {
        (0..self.messages)
            .filter_map(|k| {
                let publisher = (k % self.n as u64) as usize;
                let missed: Vec<usize> = (0..self.n)
                    .filter(|&i| i != publisher && !self.recv.contains_key(&(k, i)))
                    .collect();
                (!missed.is_empty()).then_some((k, missed))
            })
            .collect()
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "—".into(), |us| format!("{:.2}", us as f64 / 1000.0))
}

/// Summary figures of one or more runs of a system at one N.
#[derive(Default)]
struct Figures {
    deliveries: usize,
    expected: usize,
    per_delivery: Vec<u64>,
    /// Last-node latency per message; u64::MAX when some node never got it.
    last_node: Vec<u64>,
    complete: usize,
    /// Latency to the first node that got a message, per message.
    first_node: Vec<u64>,
    publish_call: Vec<u64>,
    /// Last-node latency minus the publish call, per complete message: the
    /// time the network took once the publisher let the message go.
    after_publish: Vec<u64>,
}

impl Figures {
    fn add(&mut self, r: &RunResult) {
        let n = r.n;
        self.expected += r.messages as usize * (n - 1);
        let mut per_message: HashMap<u64, (usize, u64, u64)> = HashMap::new();
        for (&(k, receiver), &lat) in &r.recv {
            if receiver == (k % n as u64) as usize {
                continue;
            }
            self.deliveries += 1;
            self.per_delivery.push(lat);
            let e = per_message.entry(k).or_insert((0, 0, u64::MAX));
            e.0 += 1;
            e.1 = e.1.max(lat);
            e.2 = e.2.min(lat);
        }
        self.first_node.extend(per_message.values().map(|e| e.2));
        for k in 0..r.messages {
            match per_message.get(&k) {
                Some(&(count, worst, _)) if count == n - 1 => {
                    self.complete += 1;
                    self.last_node.push(worst);
                    if let Some(call) = r.publish_call.get(&k) {
                        self.after_publish.push(worst.saturating_sub(*call));
                    }
                }
                _ => self.last_node.push(u64::MAX),
            }
        }
        self.publish_call.extend(r.publish_call.values());
    }

    fn finish(&mut self) {
        self.per_delivery.sort_unstable();
        self.last_node.sort_unstable();
        self.publish_call.sort_unstable();
        self.first_node.sort_unstable();
        self.after_publish.sort_unstable();
    }

    fn last(&self, p: f64) -> Option<u64> {
        percentile(&self.last_node, p).filter(|&v| v != u64::MAX)
    }
}

fn coordinator(args: &CoordinatorArgs) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench_propagation: nodes {:?}, systems {:?}, rounds {}, {} messages of {PAYLOAD_BYTES} payload bytes at {}/s, \
         {} dials per node, warm-up {} ms, drain {} ms, seed {}, heartbeat timing {}",
        args.nodes,
        args.systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
        args.rounds,
        args.messages,
        args.rate,
        args.dials,
        args.warmup_ms,
        args.drain_ms,
        args.seed,
        args.timing.name(),
    );
    println!(
        "machine: {} cpus, {}, load average {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu.trim(),
        load.trim()
    );
    println!();
    println!(
        "| N | system | round | setup s | diameter | deliveries | per-delivery p50 ms | p99 ms | last-node p50 ms | p99 ms | publish call p50 ms | p99 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all: Vec<RunResult> = Vec::new();
    for &n in &args.nodes {
        for round in 0..args.rounds {
            let mut order = args.systems.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for system in order {
                if Instant::now() >= deadline {
                    bail!("overall time limit of {} s reached", args.timeout_secs);
                }
                let r = run_once(args, system, n, deadline)
                    .with_context(|| format!("{} with N = {n}, round {round}", system.name()))?;
                let mut f = Figures::default();
                f.add(&r);
                f.finish();
                println!(
                    "| {n} | {} | {} | {:.1} | {} | {}/{} | {} | {} | {} | {} | {} | {} |",
                    system.name(),
                    round + 1,
                    r.setup.as_secs_f64(),
                    r.diameter
                        .map_or_else(|| "disconnected".into(), |d| d.to_string()),
                    f.deliveries,
                    f.expected,
                    ms(percentile(&f.per_delivery, 0.5)),
                    ms(percentile(&f.per_delivery, 0.99)),
                    ms(f.last(0.5)),
                    ms(f.last(0.99)),
                    ms(percentile(&f.publish_call, 0.5)),
                    ms(percentile(&f.publish_call, 0.99)),
                );
                for e in r.errors.iter().take(5) {
                    println!("  error: {e}");
                }
                for (k, missing) in r.missing().iter().take(10) {
                    let latest = r
                        .recv
                        .iter()
                        .filter(|((kk, _), _)| kk == k)
                        .map(|(_, l)| *l)
                        .max();
                    println!(
                        "  message {k} (from node {}) missed nodes {missing:?}; the latest other delivery after {} ms",
                        k % n as u64,
                        ms(latest)
                    );
                }
                let window = (args.messages * 1000 / args.rate.max(1) + args.drain_ms) as f64 / 1000.0;
                let mut by_thread: Vec<_> = r.threads.iter().filter(|(_, ms)| **ms > 0).collect();
                by_thread.sort_by(|a, b| b.1.cmp(a.1));
                println!(
                    "  CPU: warm-up {:.2} cores; measured {window:.0} s window {:.2} cores in all ({:.2} ms per node per message); by thread: {}",
                    r.warmup_cpu_ms as f64 / args.warmup_ms.max(1) as f64,
                    r.cpu_ms as f64 / 1000.0 / window,
                    r.cpu_ms as f64 / n as f64 / args.messages as f64,
                    by_thread
                        .iter()
                        .map(|(k, v)| format!("{k} {v} ms"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                println!(
                    "  connected peers per node at the end: min {}, mean {:.1}, max {} (dialled topology: mean degree {:.1})",
                    r.peers.0,
                    r.peers.1,
                    r.peers.2,
                    2.0 * r.links as f64 / n as f64
                );
                if r.lagged > 0 {
                    println!("  {} events lost or unreadable", r.lagged);
                }
                all.push(r);
            }
        }
    }

    println!();
    println!(
        "Summary (all rounds pooled; latencies in ms; last-node counts a message that missed a node as infinite):"
    );
    println!();
    println!(
        "| N | system | deliveries | per-delivery p50 | p99 | last-node p50 | p99 | complete messages | first-node p50 | p99 | publish call p50 | p99 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut pooled: BTreeMap<(usize, System), Figures> = BTreeMap::new();
    for r in &all {
        pooled.entry((r.n, r.system)).or_default().add(r);
    }
    for f in pooled.values_mut() {
        f.finish();
    }
    for ((n, system), f) in &pooled {
        println!(
            "| {n} | {} | {}/{} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            system.name(),
            f.deliveries,
            f.expected,
            ms(percentile(&f.per_delivery, 0.5)),
            ms(percentile(&f.per_delivery, 0.99)),
            ms(f.last(0.5)),
            ms(f.last(0.99)),
            f.complete,
            f.last_node.len(),
            ms(percentile(&f.first_node, 0.5)),
            ms(percentile(&f.first_node, 0.99)),
            ms(percentile(&f.publish_call, 0.5)),
            ms(percentile(&f.publish_call, 0.99)),
        );
    }
    println!();
    // The goal's baseline is gossipsub-check (the issue's reference baseline
    // checked an application Ed25519 signature on each message); the ratio
    // against gossipsub without that check is printed too.
    for (n, baseline) in args
        .nodes
        .iter()
        .flat_map(|&n| [(n, System::GossipsubCheck), (n, System::Gossipsub)])
    {
        let Some(base) = pooled.get(&(n, baseline)) else {
            continue;
        };
        for system in [
            System::Herald,
            System::HeraldShm,
            System::AppvalInline,
            System::AppvalOffloop,
            System::AppvalStore,
            System::AppvalStoreNoflush,
        ] {
            let Some(h) = pooled.get(&(n, system)) else {
                continue;
            };
            let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) if b > 0 => format!("{:.2}", a as f64 / b as f64),
                _ => "—".into(),
            };
            let last99 = h.last(0.99);
            let met_base = matches!((last99, base.last(0.99)), (Some(a), Some(b)) if a <= b);
            print!(
                "N = {n}: {}/{} last-node p99 {} (p50 {}), per-delivery p99 {} (p50 {}); \
                 last-node p99 <= {}: {}",
                system.name(),
                baseline.name(),
                ratio(last99, base.last(0.99)),
                ratio(h.last(0.5), base.last(0.5)),
                ratio(
                    percentile(&h.per_delivery, 0.99),
                    percentile(&base.per_delivery, 0.99)
                ),
                ratio(
                    percentile(&h.per_delivery, 0.5),
                    percentile(&base.per_delivery, 0.5)
                ),
                if baseline == System::GossipsubCheck {
                    "baseline (the goal)"
                } else {
                    "gossipsub without the application check"
                },
                if met_base { "MET" } else { "NOT MET" },
            );
            if n == 30 && baseline == System::GossipsubCheck {
                let met_abs = last99.is_some_and(|v| v <= 7000);
                print!(
                    "; last-node p99 <= 7 ms: {}",
                    if met_abs { "MET" } else { "NOT MET" }
                );
            }
            println!();
        }
    }
    println!();
    println!("Last-node latency net of the publish call (complete messages; ms): p50 / p99");
    for ((n, system), f) in &pooled {
        println!(
            "  N = {n} {}: {} / {}",
            system.name(),
            ms(percentile(&f.after_publish, 0.5)),
            ms(percentile(&f.after_publish, 0.99)),
        );
    }
    println!();
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
