//! Memory and start-up of a node: resident set size (`VmRSS`) of an idle node on an empty
//! store, on a store of 100,000 bulletins and after writing 100,000 itself, and the start-up
//! time over a store of 1,000,000 bulletins against an empty store measured in the same run.
//!
//! ```text
//! cargo bench -p herald-node --bench memory                          # full: 100k and 1M stores
//! HERALD_BENCH_QUICK=1 cargo bench -p herald-node --bench memory     # tiny sizes
//! cargo bench -p herald-node --bench memory -- --quick               # same
//! ```
//!
//! Each figure comes from a fresh child process (this same executable, told what to do by
//! `HERALD_BENCH_CHILD`), so that one measurement's memory and caches do not leak into the
//! next; the child reads its own `/proc/self/status`. Run without cargo's `--bench` flag
//! (as `cargo test --all-targets` does), it takes the quick mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, cores, describe_machine, dir_bytes, median, proc_status_kib, quick_mode, range};
use herald_keys::Registry;
use herald_node::{Node, Store};
use herald_protocol::{MemberId, Seq};

/// Payload bytes of every bulletin.
const PAYLOAD_LEN: usize = 200;
/// Environment variables of the child processes.
const CHILD: &str = "HERALD_BENCH_CHILD";
const CHILD_DIR: &str = "HERALD_BENCH_DIR";
const CHILD_MEMBERS: &str = "HERALD_BENCH_MEMBERS";
const CHILD_IDLE_MS: &str = "HERALD_BENCH_IDLE_MS";
const CHILD_READ_ALL: &str = "HERALD_BENCH_READ_ALL";
const CHILD_PUBLISH: &str = "HERALD_BENCH_PUBLISH";
/// Set for an export child that loads every bulletin before writing (the comparison).
const CHILD_EXPORT_LOADED: &str = "HERALD_BENCH_EXPORT_LOADED";

/// The sizes of one run.
struct Plan {
    quick: bool,
    members: usize,
    /// Bulletins per key in the "held" store (100 x 1,000 = 100,000).
    held_per_key: u64,
    /// Bulletins per key in the big store (100 x 10,000 = 1,000,000).
    big_per_key: u64,
    /// Seqs per key signed and inserted as one batch while building.
    build_block: u64,
    /// Publications of the node that writes its own bulletins.
    publish: usize,
    rounds: usize,
    idle_ms: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                members: 4,
                held_per_key: 10,
                big_per_key: 40,
                build_block: 10,
                publish: 20,
                rounds: 1,
                idle_ms: 100,
            }
        } else {
            Self {
                quick,
                members: 100,
                held_per_key: 1_000,
                big_per_key: 10_000,
                build_block: 100,
                publish: 100_000,
                rounds: 3,
                idle_ms: 2_000,
            }
        }
    }
}

/// Builds a store in `dir` holding `per_key` bulletins of every member's key (on proper
/// chains, 200-byte payloads), inserted with `insert_verified` in batches of
/// `block` x members and a flush per batch; the genesis is saved as a node saves it.
fn build_store(fx: &Fixture, dir: &Path, per_key: u64, block: u64) -> (Duration, Duration) {
    let store = Store::open(dir, fx.network()).unwrap();
    store.save_registry_update(&fx.genesis).unwrap();
    let member_of: HashMap<herald_protocol::KeyId, MemberId> = fx
        .keys
        .iter()
        .zip(&fx.members)
        .map(|([_, s, _], m)| (s.id(), *m))
        .collect();
    let mut prevs = vec![None; fx.keys.len()];
    let (mut sign, mut insert) = (Duration::ZERO, Duration::ZERO);
    let mut from = 1;
    while from <= per_key {
        let count = block.min(per_key - from + 1);
        let t = Instant::now();
        let signed = common::sign_block(fx, from, count, &mut prevs, PAYLOAD_LEN, cores());
        sign += t.elapsed();
        let t = Instant::now();
        let items: Vec<_> = signed
            .into_iter()
            .map(|b| {
                let member = member_of[&b.body().signer];
                (b, member)
            })
            .collect();
        store.insert_verified(&items).unwrap();
        store.flush().unwrap();
        insert += t.elapsed();
        from += count;
    }
    assert_eq!(store.count().unwrap(), per_key * fx.keys.len() as u64);
    (sign, insert)
}

/// What a child reported, `key=value` per line.
type Report = HashMap<String, f64>;

/// Runs this executable as a child in `mode` over `dir`, with extra environment.
fn child(mode: &str, dir: &Path, members: usize, env: &[(&str, String)]) -> Report {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, mode)
        .env(CHILD_DIR, dir)
        .env(CHILD_MEMBERS, members.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
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

fn rss_kib() -> f64 {
    proc_status_kib("VmRSS").unwrap_or(0) as f64
}

/// Child: `Store::open` and the registry load of `Node::start` (stored history, or the
/// genesis on first start), timed; nothing else.
fn child_open(fx: &Fixture, dir: &Path) {
    let t = Instant::now();
    let store = Store::open(dir, fx.network()).unwrap();
    let history = store.registry_history().unwrap();
    let registry = if history.is_empty() {
        let r = Registry::from_genesis(fx.genesis.clone(), fx.genesis.hash()).unwrap();
        store.save_registry_update(&fx.genesis).unwrap();
        store.flush().unwrap();
        r
    } else {
        Registry::from_history(history, fx.genesis.hash()).unwrap()
    };
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(registry.network(), fx.network());
    println!("open_ms={open_ms}");
    println!("count={}", store.count().unwrap());
    println!("rss_kib={}", rss_kib());
}

/// Child: `Node::start` timed, idle for a while, then optionally every held bulletin read
/// once, or publications written by the node itself; RSS at each step.
fn child_start(fx: &Fixture, dir: &Path) {
    let idle = Duration::from_millis(std::env::var(CHILD_IDLE_MS).map_or(0, |v| v.parse().unwrap()));
    let read_all = std::env::var(CHILD_READ_ALL).is_ok();
    let publish: usize = std::env::var(CHILD_PUBLISH).map_or(0, |v| v.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("rss_before_kib={}", rss_kib());
    let settings = fx.node_settings(dir);
    rt.block_on(async {
        let t = Instant::now();
        let node = Node::start(settings).await.unwrap();
        println!("start_ms={}", t.elapsed().as_secs_f64() * 1e3);
        println!("rss_started_kib={}", rss_kib());
        tokio::time::sleep(idle).await;
        println!("rss_idle_kib={}", rss_kib());
        println!("count={}", node.store().count().unwrap());
        if read_all {
            let store = node.store().clone();
            let t = Instant::now();
            let read = tokio::task::spawn_blocking(move || {
                let mut read = 0u64;
                let mut bytes = 0u64;
                for (key, head) in store.heads().unwrap() {
                    for (_, id) in store.chain_range(&key, Seq(1), head.highest).unwrap() {
                        bytes += store.get_bytes(&id).unwrap().unwrap().len() as u64;
                        read += 1;
                    }
                }
                std::hint::black_box(bytes);
                read
            })
            .await
            .unwrap();
            println!("read={read}");
            println!("read_ms={}", t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(idle).await;
            println!("rss_after_read_kib={}", rss_kib());
        }
        if publish > 0 {
            let node = Arc::new(node);
            let next = Arc::new(AtomicUsize::new(0));
            let t = Instant::now();
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (node, next) = (Arc::clone(&node), Arc::clone(&next));
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= publish {
                                break;
                            }
                            node.publish(common::draft(i, PAYLOAD_LEN)).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            println!("publish_per_s={}", publish as f64 / t.elapsed().as_secs_f64());
            println!("rss_after_publish_kib={}", rss_kib());
            tokio::time::sleep(idle).await;
            println!("count_after_publish={}", node.store().held_count().unwrap());
            println!("rss_after_publish_idle_kib={}", rss_kib());
            let node = Arc::try_unwrap(node).unwrap();
            node.shutdown().await;
        } else {
            node.shutdown().await;
        }
    });
    println!("hwm_kib={}", proc_status_kib("VmHWM").unwrap_or(0));
}

/// Child: `Store::open` and the registry load, then an export of every bulletin to a
/// bundle next to the store (`bundle::export`, as `herald export` does); peak RSS before
/// and after the export.
fn child_export(fx: &Fixture, dir: &Path) {
    let store = Store::open(dir, fx.network()).unwrap();
    let registry = Registry::from_history(store.registry_history().unwrap(), fx.genesis.hash()).unwrap();
    let _ = store.count().unwrap();
    println!("hwm_open_kib={}", proc_status_kib("VmHWM").unwrap_or(0));
    let out = dir.with_extension("bundle");
    let t = Instant::now();
    let report = if std::env::var(CHILD_EXPORT_LOADED).is_ok() {
        // The comparison: every bulletin loaded and sorted first, then written.
        let mut all = store.query(&herald_node::Query::default()).unwrap();
        all.sort_by_key(|b| (b.body().signer, b.body().seq));
        let wires: Vec<&[u8]> = all.iter().map(|b| b.as_bytes()).collect();
        herald_node::bundle::write(&out, registry.network(), registry.history(), &wires, |_, _| {}).unwrap()
    } else {
        herald_node::bundle::export(
            &out,
            &store,
            &registry,
            &herald_node::bundle::ExportFilter::default(),
            |_, _| {},
        )
        .unwrap()
    };
    println!("export_ms={}", t.elapsed().as_secs_f64() * 1e3);
    println!("exported={}", report.bulletins);
    println!("export_mib={}", report.bytes as f64 / (1 << 20) as f64);
    println!("hwm_export_kib={}", proc_status_kib("VmHWM").unwrap_or(0));
    std::fs::remove_file(&out).unwrap();
}

fn run_child(mode: &str) {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let members: usize = std::env::var(CHILD_MEMBERS).unwrap().parse().unwrap();
    let fx = Fixture::new(members);
    match mode {
        "open" => child_open(&fx, &dir),
        "start" => child_start(&fx, &dir),
        "export" => child_export(&fx, &dir),
        other => panic!("unknown child mode {other}"),
    }
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        run_child(&mode);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = Plan::new(quick_mode(&args));
    println!(
        "herald-node bench `memory`: {}",
        if plan.quick { "quick mode" } else { "full mode" }
    );
    println!("machine: {}", describe_machine());
    let fx = Fixture::new(plan.members);
    let root = tempfile::Builder::new()
        .prefix("herald-bench-memory-")
        .tempdir()
        .unwrap();
    let held_dir = root.path().join("held");
    let big_dir = root.path().join("big");
    let held_n = plan.held_per_key * plan.members as u64;
    let big_n = plan.big_per_key * plan.members as u64;
    for (dir, per_key, n) in [
        (&held_dir, plan.held_per_key, held_n),
        (&big_dir, plan.big_per_key, big_n),
    ] {
        let t = Instant::now();
        let (sign, insert) = build_store(&fx, dir, per_key, plan.build_block);
        println!(
            "built a store of {n} bulletins ({} keys x {per_key}) in {:.1} s: signing {:.1} s on {} threads, \
             insert_verified+flush {:.1} s in batches of {} ({:.0}/s); {:.0} MiB on disk",
            plan.members,
            t.elapsed().as_secs_f64(),
            sign.as_secs_f64(),
            cores(),
            insert.as_secs_f64(),
            plan.build_block * plan.members as u64,
            n as f64 / insert.as_secs_f64(),
            dir_bytes(dir) as f64 / (1 << 20) as f64
        );
    }

    // sled 0.34 writes its snapshot (page table) only when a store is opened, and replays
    // its log from the last snapshot on open: the first start after many writes replays
    // them all. Measure that first start on pristine copies of the 1M store, then the
    // steady state over the same stores.
    let copy = root.path().join("big-copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&big_dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let first_open = child("open", &copy, plan.members, &[]);
    assert_eq!(first_open["count"] as u64, big_n);
    let first_start = child("start", &big_dir, plan.members, &[]);
    assert_eq!(first_start["count"] as u64, big_n);
    std::fs::remove_dir_all(&copy).unwrap();
    // The one-time step from a store of schema 3 (which had no index of answers): on a copy
    // of the 1M store, marked 3, opened twice (the first open builds the index).
    let upgrade = root.path().join("big-upgrade");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&big_dir)
        .arg(&upgrade)
        .status()
        .unwrap();
    assert!(status.success());
    {
        let db = sled::open(&upgrade).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &3u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let upgrade_open = child("open", &upgrade, plan.members, &[]);
    assert_eq!(upgrade_open["count"] as u64, big_n);
    let after_upgrade = child("open", &upgrade, plan.members, &[]);
    std::fs::remove_dir_all(&upgrade).unwrap();
    eprintln!(
        "upgrade from schema 3: big Store::open+registry {:.1} ms, then {:.1} ms",
        upgrade_open["open_ms"], after_upgrade["open_ms"]
    );
    let first_held = child("open", &held_dir, plan.members, &[]);
    eprintln!(
        "first open after writing: big Store::open+registry {:.1} ms, big Node::start {:.1} ms, \
         held Store::open+registry {:.1} ms",
        first_open["open_ms"], first_start["start_ms"], first_held["open_ms"]
    );

    // Start-up: empty store (fresh directory each time) against the 1M store, alternating.
    let mut open_empty = Vec::new();
    let mut open_big = Vec::new();
    let mut start_empty = Vec::new();
    let mut start_big = Vec::new();
    let mut rss_started_big = Vec::new();
    for round in 0..plan.rounds {
        let fresh = |name: &str| root.path().join(format!("{name}-{round}"));
        let order: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for big in order {
            let dir = if big { big_dir.clone() } else { fresh("empty-open") };
            let r = child("open", &dir, plan.members, &[]);
            assert_eq!(r["count"] as u64, if big { big_n } else { 0 });
            if big { &mut open_big } else { &mut open_empty }.push(r["open_ms"]);
        }
        for big in order {
            let dir = if big {
                big_dir.clone()
            } else {
                fresh("empty-start")
            };
            let r = child("start", &dir, plan.members, &[]);
            assert_eq!(r["count"] as u64, if big { big_n } else { 0 });
            if big {
                start_big.push(r["start_ms"]);
                rss_started_big.push(r["rss_started_kib"]);
            } else {
                start_empty.push(r["start_ms"]);
            }
        }
        eprintln!(
            "round {}/{}: open empty {:.1} ms, big {:.1} ms; Node::start empty {:.1} ms, big {:.1} ms",
            round + 1,
            plan.rounds,
            open_empty[round],
            open_big[round],
            start_empty[round],
            start_big[round]
        );
    }

    // Memory: idle nodes, each in a fresh process.
    let idle = [(CHILD_IDLE_MS, plan.idle_ms.to_string())];
    let idle_read = [
        (CHILD_IDLE_MS, plan.idle_ms.to_string()),
        (CHILD_READ_ALL, "1".to_string()),
    ];
    let rss = |label: &str, dir: &Path, env: &[(&str, String)]| {
        let reports: Vec<Report> = (0..plan.rounds)
            .map(|_| child("start", dir, plan.members, env))
            .collect();
        let m = |k: &str| median(&reports.iter().map(|r| r[k]).collect::<Vec<_>>());
        eprintln!("{label}: idle RSS {:.1} MiB", mib(m("rss_idle_kib")));
        (m("rss_before_kib"), m("rss_idle_kib"), reports)
    };
    let empty_dir = root.path().join("empty-rss");
    let (before_empty, idle_empty, _) = rss("empty", &empty_dir, &idle);
    let (_, idle_held, held_reports) = rss("held", &held_dir, &idle_read);
    let (_, idle_big, big_reports) = rss("big", &big_dir, &idle_read);
    let publish_dir = root.path().join("publish");
    let publish_env = [
        (CHILD_IDLE_MS, plan.idle_ms.to_string()),
        (CHILD_PUBLISH, plan.publish.to_string()),
    ];
    let publish_report = child("start", &publish_dir, plan.members, &publish_env);
    assert_eq!(publish_report["count_after_publish"] as usize, plan.publish);
    let m = |reports: &[Report], k: &str| median(&reports.iter().map(|r| r[k]).collect::<Vec<_>>());

    println!();
    println!(
        "start-up (each in a fresh process; OS page cache warm), median of {} rounds:",
        plan.rounds
    );
    let show = |label: &str, v: &[f64]| {
        let (min, max) = range(v);
        println!("  {label:<58} {:>9.1} ms   ({min:.1}..{max:.1})", median(v));
    };
    show("Store::open + registry load, empty store (baseline)", &open_empty);
    show(
        &format!("Store::open + registry load, {big_n} bulletins"),
        &open_big,
    );
    show("Node::start, empty store (baseline)", &start_empty);
    show(&format!("Node::start, {big_n} bulletins"), &start_big);
    println!(
        "  first open after the store was written (sled replays its log since the last open):\n    \
         Store::open + registry load {:.1} ms and Node::start {:.1} ms over {big_n} bulletins; \
         Store::open + registry load {:.1} ms over {held_n}",
        first_open["open_ms"], first_start["start_ms"], first_held["open_ms"]
    );
    println!(
        "    RSS just after that first Node::start over {big_n}: {:.1} MiB (peak {:.1} MiB)",
        mib(first_start["rss_started_kib"]),
        mib(first_start["hwm_kib"])
    );
    println!(
        "  upgrade of the {big_n} bulletins' store from schema 3 (the index of answers is built, \
         once): Store::open + registry load {:.1} ms; the next open {:.1} ms",
        upgrade_open["open_ms"], after_upgrade["open_ms"]
    );
    let ratio = |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
    println!(
        "  ratio {big_n} / empty: Store::open + registry {:.2}, Node::start {:.2}",
        ratio(&open_big, &open_empty),
        ratio(&start_big, &start_empty)
    );

    println!();
    println!(
        "resident set size (VmRSS; each in a fresh process), median of {} rounds:",
        plan.rounds
    );
    println!(
        "  process before the node (runtime, registry of {} members) {:>8.1} MiB",
        plan.members,
        mib(before_empty)
    );
    println!(
        "  idle node, empty store (baseline)                         {:>8.1} MiB",
        mib(idle_empty)
    );
    println!(
        "  idle node, store of {held_n} bulletins                    {:>8.1} MiB  ({:.2} x baseline); \
         after reading each once {:.1} MiB ({:.2} x), read in {:.0} ms",
        mib(idle_held),
        idle_held / idle_empty,
        mib(m(&held_reports, "rss_after_read_kib")),
        m(&held_reports, "rss_after_read_kib") / idle_empty,
        m(&held_reports, "read_ms")
    );
    println!(
        "  idle node, store of {big_n} bulletins                  {:>8.1} MiB  ({:.2} x baseline); \
         after reading each once {:.1} MiB ({:.2} x), read in {:.0} ms; just after start {:.1} MiB",
        mib(idle_big),
        idle_big / idle_empty,
        mib(m(&big_reports, "rss_after_read_kib")),
        m(&big_reports, "rss_after_read_kib") / idle_empty,
        m(&big_reports, "read_ms"),
        mib(median(&rss_started_big))
    );
    println!(
        "  node that published {} bulletins itself ({:.0}/s, 64 tasks): {:.1} MiB right after, \
         {:.1} MiB idle ({:.2} x baseline); peak (VmHWM) {:.1} MiB",
        plan.publish,
        publish_report["publish_per_s"],
        mib(publish_report["rss_after_publish_kib"]),
        mib(publish_report["rss_after_publish_idle_kib"]),
        publish_report["rss_after_publish_idle_kib"] / idle_empty,
        mib(publish_report["hwm_kib"])
    );
    println!(
        "  peak (VmHWM) of the read-all children: {held_n} held {:.1} MiB, {big_n} held {:.1} MiB",
        mib(m(&held_reports, "hwm_kib")),
        mib(m(&big_reports, "hwm_kib"))
    );

    // Export of everything, in a fresh process each: peak RSS against the same process's
    // peak once the store is open (the baseline), and against loading every bulletin first.
    println!();
    println!("export of every bulletin to a bundle, peak RSS (VmHWM), each in a fresh process:");
    for (dir, n) in [(&held_dir, held_n), (&big_dir, big_n)] {
        for (how, env) in [
            ("bundle::export (streamed)", vec![]),
            (
                "loaded first (query, sort, write)",
                vec![(CHILD_EXPORT_LOADED, "1".to_string())],
            ),
        ] {
            let r = child("export", dir, plan.members, &env);
            assert_eq!(r["exported"] as u64, n);
            println!(
                "  {n} bulletins, {how} ({:.0} MiB bundle, {:.1} s): peak {:.1} MiB against {:.1} MiB \
                 with the store open ({:.2} x)",
                r["export_mib"],
                r["export_ms"] / 1e3,
                mib(r["hwm_export_kib"]),
                mib(r["hwm_open_kib"]),
                r["hwm_export_kib"] / r["hwm_open_kib"]
            );
        }
    }
}
