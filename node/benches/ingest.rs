//! Ingest throughput of one node, against the raw ed25519-dalek `verify_strict` rate of
//! the same machine measured in the same run: (a) local bulk import of pre-signed
//! bulletins (decode and check on all cores, then `Store::insert_verified` and a flush
//! per group) and (b) publishing through the local HTTP API, acknowledged once
//! durable (the journal of own bulletins, synced).
//!
//! ```text
//! cargo bench -p herald-node --bench ingest                          # full: 100 keys x 1,000
//! HERALD_BENCH_QUICK=1 cargo bench -p herald-node --bench ingest     # tiny sizes
//! cargo bench -p herald-node --bench ingest -- --quick               # same
//! ```
//!
//! Run without cargo's `--bench` flag (as `cargo test --all-targets` does), it takes the
//! quick mode, so that it stays a smoke test there. No criterion: a self-contained
//! harness; the baselines are measured in each round, interleaved with the code under
//! test, because the machine is shared and noisy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{Fixture, cores, describe_machine, median, percentile, quick_mode, range};
use herald_node::api::{self, Published};
use herald_node::bundle;
use herald_node::{Draft, Node, Store};
use herald_protocol::{BULLETIN_DOMAIN, BulletinId, MemberId, SignedBulletin, signing_input};

/// Goal of the local bulk import, in bulletins per second.
const IMPORT_GOAL: f64 = 25_000.0;
/// Goal of acknowledged publications through the API, per second.
const API_GOAL: f64 = 5_000.0;
/// Payload bytes of every bulletin.
const PAYLOAD_LEN: usize = 200;

/// The sizes of one run.
struct Plan {
    quick: bool,
    members: usize,
    per_key: u64,
    group: usize,
    rounds: usize,
    api_total: usize,
    api_clients: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                members: 4,
                per_key: 10,
                group: 16,
                rounds: 1,
                api_total: 24,
                api_clients: 4,
            }
        } else {
            Self {
                quick,
                members: 100,
                per_key: 1_000,
                group: 1_000,
                rounds: 3,
                api_total: 20_000,
                api_clients: 64,
            }
        }
    }
}

/// The raw baseline's inputs: the same messages as ed25519-dalek sees them.
struct RawSet {
    keys: Vec<ed25519_dalek::VerifyingKey>,
    /// (key index, signing input, signature) per message.
    messages: Vec<(usize, Vec<u8>, ed25519_dalek::Signature)>,
}

impl RawSet {
    fn new(fx: &Fixture, wires: &[Vec<u8>]) -> Self {
        let keys: Vec<ed25519_dalek::VerifyingKey> = fx
            .keys
            .iter()
            .map(|[_, s, _]| ed25519_dalek::VerifyingKey::from_bytes(&s.public().to_bytes()).unwrap())
            .collect();
        let index: std::collections::HashMap<[u8; 32], usize> = fx
            .keys
            .iter()
            .enumerate()
            .map(|(i, [_, s, _])| (s.public().to_bytes(), i))
            .collect();
        let messages = wires
            .iter()
            .map(|w| {
                let b = SignedBulletin::from_bytes(w).unwrap();
                let k = index[b.body().signer.as_bytes()];
                let sig = ed25519_dalek::Signature::from_bytes(b.signature().as_bytes());
                (k, signing_input(BULLETIN_DOMAIN, b.body_bytes()), sig)
            })
            .collect();
        Self { keys, messages }
    }

    fn verify_range(&self, from: usize, to: usize) -> usize {
        let mut ok = 0;
        for (k, msg, sig) in &self.messages[from..to] {
            if black_box(&self.keys[*k])
                .verify_strict(black_box(msg), black_box(sig))
                .is_ok()
            {
                ok += 1;
            }
        }
        ok
    }

    /// Messages per second, single thread, over every message.
    fn single(&self) -> f64 {
        let start = Instant::now();
        let ok = self.verify_range(0, self.messages.len());
        let elapsed = start.elapsed();
        assert_eq!(ok, self.messages.len());
        ok as f64 / elapsed.as_secs_f64()
    }

    /// Messages per second on `threads` threads, over every message.
    fn parallel(&self, threads: usize) -> f64 {
        let n = self.messages.len();
        let start = Instant::now();
        let ok: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || self.verify_range(n * t / threads, n * (t + 1) / threads)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let elapsed = start.elapsed();
        assert_eq!(ok, n);
        ok as f64 / elapsed.as_secs_f64()
    }
}

/// What one bulk import measured.
#[derive(Default, Clone, Copy)]
struct ImportRun {
    elapsed: Duration,
    /// On the importing thread, inside the sink: `insert_verified` and flush.
    insert: Duration,
    flush: Duration,
}

impl ImportRun {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

/// Local bulk import into a fresh store, as `herald import` does it offline: the
/// product's `bundle::import` on a bundle of the whole set (checked whole first, then
/// read by one thread, decoded and verified on every core in groups, stored in file
/// order with one `insert_verified` batch and one flush per group).
fn bulk_import(fx: &Fixture, bundle: &Path, n: usize) -> ImportRun {
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-import-")
        .tempdir()
        .unwrap();
    let store = Store::open(dir.path(), fx.network()).unwrap();
    let registry = RwLock::new(fx.registry.clone());
    let mut run = ImportRun::default();
    let start = Instant::now();
    let mut sink = |items: Vec<(SignedBulletin, MemberId)>| {
        let t0 = Instant::now();
        let outcomes = store.insert_verified(&items)?;
        let t1 = Instant::now();
        store.flush()?;
        run.flush += t1.elapsed();
        run.insert += t1 - t0;
        Ok(outcomes)
    };
    let report = bundle::import(bundle, &store, &registry, &mut sink, |_, _| {}).unwrap();
    run.elapsed = start.elapsed();
    assert_eq!(report.new, n as u64);
    assert!(report.rejected.is_empty());
    assert_eq!(store.count().unwrap(), n as u64);
    for (_, head) in store.heads().unwrap() {
        assert_eq!(head.contiguous, head.highest);
    }
    run
}

/// The same work, one stage at a time on one thread: where the time goes.
struct Stages {
    decode: Duration,
    check: Duration,
    insert: Duration,
    flush: Duration,
}

fn stages(fx: &Fixture, wires: &[Vec<u8>], group: usize) -> Stages {
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-stages-")
        .tempdir()
        .unwrap();
    let store = Store::open(dir.path(), fx.network()).unwrap();
    let t = Instant::now();
    let decoded: Vec<SignedBulletin> = wires
        .iter()
        .map(|w| SignedBulletin::from_bytes(w).unwrap())
        .collect();
    let decode = t.elapsed();
    let t = Instant::now();
    let members: Vec<MemberId> = decoded
        .iter()
        .map(|b| fx.registry.check_bulletin(b).unwrap())
        .collect();
    let check = t.elapsed();
    let items: Vec<(SignedBulletin, MemberId)> = decoded.into_iter().zip(members).collect();
    let (mut insert, mut flush) = (Duration::ZERO, Duration::ZERO);
    for chunk in items.chunks(group) {
        let t0 = Instant::now();
        store.insert_verified(chunk).unwrap();
        let t1 = Instant::now();
        store.flush().unwrap();
        flush += t1.elapsed();
        insert += t1 - t0;
    }
    assert_eq!(store.count().unwrap(), wires.len() as u64);
    Stages {
        decode,
        check,
        insert,
        flush,
    }
}

/// What one run of HTTP clients measured.
struct ApiRun {
    elapsed: Duration,
    acknowledged: usize,
    latencies: Vec<Duration>,
}

impl ApiRun {
    fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64()
    }
}

/// The API token of the benchmark's node (the API checks it like any other).
const BENCH_TOKEN: &str = "ingest-benchmark-token";

/// `clients` threads, each with its own keep-alive connection, POST the prepared JSON
/// bodies to `addr` until all are sent; counts `201 Created` answers.
fn post_all(addr: SocketAddr, bodies: &[Vec<u8>], clients: usize) -> ApiRun {
    let url = format!("http://{addr}/v1/bulletins");
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_client: Vec<(usize, Vec<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (url, next) = (&url, &next);
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(60)))
                        .build()
                        .into();
                    let mut acknowledged = 0;
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { break };
                        let t = Instant::now();
                        let mut response = agent
                            .post(url)
                            .header("content-type", "application/json")
                            .header("authorization", format!("Bearer {BENCH_TOKEN}"))
                            .send(body.as_slice())
                            .unwrap();
                        let answer = response.body_mut().read_to_vec().unwrap();
                        latencies.push(t.elapsed());
                        assert_eq!(
                            response.status().as_u16(),
                            201,
                            "{}",
                            String::from_utf8_lossy(&answer)
                        );
                        let _: Published = serde_json::from_slice(&answer).unwrap();
                        acknowledged += 1;
                    }
                    (acknowledged, latencies)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let acknowledged = per_client.iter().map(|(a, _)| a).sum();
    let mut latencies: Vec<Duration> = per_client.into_iter().flat_map(|(_, l)| l).collect();
    latencies.sort();
    ApiRun {
        elapsed,
        acknowledged,
        latencies,
    }
}

/// Starts a node of member 0 on a fresh store with the API on 127.0.0.1:0, runs the
/// clients against it, checks that every acknowledged bulletin is held, and stops it.
fn api_publish(rt: &tokio::runtime::Runtime, fx: &Fixture, bodies: &[Vec<u8>], clients: usize) -> ApiRun {
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-api-")
        .tempdir()
        .unwrap();
    let settings = fx.node_settings(dir.path());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (node, addr, server) = rt.block_on(async {
        let node = Arc::new(Node::start(settings).await.unwrap());
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (addr, server) = api::serve(
            "127.0.0.1:0".parse().unwrap(),
            BENCH_TOKEN.into(),
            None,
            Arc::clone(&node),
            shutdown,
        )
        .await
        .unwrap();
        (node, addr, server)
    });
    let run = post_all(addr, bodies, clients);
    let store = node.store().clone();
    rt.block_on(async {
        let _ = stop.send(());
        server.await.unwrap();
        let node = Arc::try_unwrap(node).expect("the API server still holds the node");
        node.shutdown().await;
    });
    // Every acknowledged publication is in the chain once the node has
    // folded what it staged (a clean stop folds everything).
    let head = store.head(&fx.keys[0][1].id()).unwrap();
    assert_eq!(head.contiguous.0, run.acknowledged as u64);
    assert_eq!(store.count().unwrap(), run.acknowledged as u64);
    run
}

/// The same publications without HTTP: `tasks` concurrent `Node::publish` calls.
fn direct_publish(rt: &tokio::runtime::Runtime, fx: &Fixture, drafts: &[Draft], tasks: usize) -> f64 {
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-direct-")
        .tempdir()
        .unwrap();
    let settings = fx.node_settings(dir.path());
    rt.block_on(async {
        let node = Arc::new(Node::start(settings).await.unwrap());
        let drafts = Arc::new(drafts.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (node, drafts, next) = (Arc::clone(&node), Arc::clone(&drafts), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(d) = drafts.get(i) else { break };
                        node.publish(d.clone()).await.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let rate = drafts.len() as f64 / start.elapsed().as_secs_f64();
        let store = node.store().clone();
        Arc::try_unwrap(node).unwrap().shutdown().await;
        // Folded by the clean stop.
        assert_eq!(store.count().unwrap(), drafts.len() as u64);
        rate
    })
}

/// The HTTP and JSON part alone: a server that decodes the same `Draft` and answers
/// `201` with a `Published`, without signing or storing.
fn null_http(rt: &tokio::runtime::Runtime, bodies: &[Vec<u8>], clients: usize) -> ApiRun {
    use axum::Json;
    use axum::http::StatusCode;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = rt.block_on(async {
        let app = axum::Router::new().route(
            "/v1/bulletins",
            axum::routing::post(|Json(draft): Json<Draft>| async move {
                let id = BulletinId::of_body(&draft.payload.bytes);
                (StatusCode::CREATED, Json(Published { id, seq: 1 }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        (addr, server)
    });
    let run = post_all(addr, bodies, clients);
    rt.block_on(async {
        let _ = stop.send(());
        server.await.unwrap();
    });
    run
}

/// The store's own part of a publication: sign, journal (one synchronous write
/// a group) and stage groups of `group` drafts with `Store::publish_own_group`
/// on one thread, folding what is staged as the node's indexer would (every
/// `FOLD_GROUP`, and at the end), with a flush after each fold.
fn store_publish(fx: &Fixture, drafts: &[Draft], group: usize) -> f64 {
    let dir = tempfile::Builder::new()
        .prefix("herald-bench-own-")
        .tempdir()
        .unwrap();
    let store = Store::open(dir.path(), fx.network()).unwrap();
    let bodies: Vec<herald_protocol::BulletinBody> = drafts
        .iter()
        .map(|d| herald_protocol::BulletinBody {
            format: herald_protocol::bulletin::BULLETIN_FORMAT,
            network: fx.network(),
            signer: fx.keys[0][1].id(),
            seq: herald_protocol::Seq(1),
            prev: None,
            created: d.created.unwrap(),
            kind: d.kind.clone(),
            tlp: d.tlp,
            severity: d.severity,
            title: d.title.clone(),
            references: Vec::new(),
            supersedes: None,
            expires: None,
            audience: Vec::new(),
            payload: d.payload.clone(),
        })
        .collect();
    let start = Instant::now();
    let fold = |store: &Store| {
        while !store
            .fold_staged(herald_node::store::FOLD_GROUP)
            .unwrap()
            .is_empty()
        {}
        store.flush().unwrap();
    };
    for chunk in bodies.chunks(group) {
        for outcome in store
            .publish_own_group(&fx.keys[0][1], &fx.members[0], chunk.to_vec())
            .unwrap()
        {
            outcome.unwrap();
        }
        if store.staged_count() >= herald_node::store::FOLD_GROUP {
            fold(&store);
        }
    }
    fold(&store);
    let rate = bodies.len() as f64 / start.elapsed().as_secs_f64();
    assert_eq!(store.count().unwrap(), bodies.len() as u64);
    rate
}

fn per_item_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn verdict(rate: f64, goal: f64, quick: bool) -> &'static str {
    if quick {
        "(quick mode: too small to judge)"
    } else if rate >= goal {
        "MET"
    } else {
        "NOT MET"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = Plan::new(quick_mode(&args));
    let cores = cores();
    let n = plan.members * plan.per_key as usize;
    println!(
        "herald-node bench `ingest`: {}",
        if plan.quick { "quick mode" } else { "full mode" }
    );
    println!("machine: {}", describe_machine());

    let t = Instant::now();
    let fx = Fixture::new(plan.members);
    let genesis_time = t.elapsed();
    let t = Instant::now();
    let mut prevs = vec![None; plan.members];
    let signed = common::sign_block(&fx, 1, plan.per_key, &mut prevs, PAYLOAD_LEN, cores);
    let wires: Vec<Vec<u8>> = signed.iter().map(|b| b.to_bytes()).collect();
    drop(signed);
    let sign_time = t.elapsed();
    let mean_wire = wires.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!(
        "fixture: {} members, genesis built and checked in {:.2} s; {n} bulletins ({} keys x {}), \
         {PAYLOAD_LEN}-byte payloads, {mean_wire:.0} wire bytes on average, signed on {cores} threads in {:.2} s",
        plan.members,
        genesis_time.as_secs_f64(),
        plan.members,
        plan.per_key,
        sign_time.as_secs_f64()
    );
    let raw = RawSet::new(&fx, &wires);
    let drafts: Vec<Draft> = (0..plan.api_total)
        .map(|i| common::draft(i, PAYLOAD_LEN))
        .collect();
    let bodies: Vec<Vec<u8>> = drafts.iter().map(|d| serde_json::to_vec(d).unwrap()).collect();
    println!(
        "API: {} publications, JSON bodies of {} bytes on average, {} client threads (ureq, keep-alive)",
        plan.api_total,
        bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1),
        plan.api_clients
    );
    let bundle_dir = tempfile::Builder::new()
        .prefix("herald-bench-bundle-")
        .tempdir()
        .unwrap();
    let bundle_path = bundle_dir.path().join("set.herald");
    let wire_refs: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
    let written = bundle::write(
        &bundle_path,
        fx.network(),
        fx.registry.history(),
        &wire_refs,
        |_, _| {},
    )
    .unwrap();
    println!("bundle: {} bytes", written.bytes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let (mut raw1, mut rawn, mut import, mut publish) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut imports = Vec::new();
    let mut api_runs = Vec::new();
    for round in 0..plan.rounds {
        let r1 = raw.single();
        let imp = bulk_import(&fx, &bundle_path, n);
        let rn = raw.parallel(cores);
        let api = api_publish(&rt, &fx, &bodies, plan.api_clients);
        eprintln!(
            "round {}/{}: raw 1 thread {r1:.0}/s, raw {cores} threads {rn:.0}/s, bulk import {:.0}/s, API {:.0}/s",
            round + 1,
            plan.rounds,
            imp.rate(n),
            api.rate()
        );
        raw1.push(r1);
        rawn.push(rn);
        import.push(imp.rate(n));
        publish.push(api.rate());
        imports.push(imp);
        api_runs.push(api);
    }

    println!();
    println!(
        "{:<62} {:>12} {:>22}",
        "measure (per second)", "median", "min..max over rounds"
    );
    for (label, values) in [
        ("raw ed25519-dalek verify_strict, 1 thread (baseline)", &raw1),
        ("raw ed25519-dalek verify_strict, all cores", &rawn),
        (
            "(a) bulk import (`bundle::import`, store+flush per group)",
            &import,
        ),
        ("(b) API publications acknowledged once durable", &publish),
    ] {
        let (min, max) = range(values);
        println!(
            "{label:<62} {:>12.0} {:>22}",
            median(values),
            format!("{min:.0}..{max:.0}")
        );
    }
    let ratio = |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
    println!();
    println!(
        "(a) bulk import = {:.0}/s: {:.2} x raw verify_strict on 1 thread, {:.2} x raw on all {cores} cores \
         (goal >= {IMPORT_GOAL:.0}/s) {}",
        median(&import),
        ratio(&import, &raw1),
        ratio(&import, &rawn),
        verdict(median(&import), IMPORT_GOAL, plan.quick)
    );
    println!(
        "(b) API publishing = {:.0}/s: {:.2} x raw verify_strict on 1 thread (goal >= {API_GOAL:.0}/s) {}",
        median(&publish),
        ratio(&publish, &raw1),
        verdict(median(&publish), API_GOAL, plan.quick)
    );

    // Where the time of the bulk import goes, from the timed runs themselves.
    println!();
    println!("bulk import, per bulletin (median run; the importing thread):");
    let mid = {
        let mut order: Vec<usize> = (0..imports.len()).collect();
        order.sort_by(|a, b| import[*a].total_cmp(&import[*b]));
        imports[order[order.len() / 2]]
    };
    println!(
        "  wall {:.1} us: insert_verified {:.1} us, flush {:.1} us ({} flushes), waiting for reading and \
         verification {:.1} us (the whole-file check first, then the pipeline's fill and stalls)",
        per_item_us(mid.elapsed, n),
        per_item_us(mid.insert, n),
        per_item_us(mid.flush, n),
        n.div_ceil(1000),
        per_item_us(mid.elapsed.saturating_sub(mid.insert + mid.flush), n),
    );
    let api_mid = {
        let mut order: Vec<usize> = (0..api_runs.len()).collect();
        order.sort_by(|a, b| publish[*a].total_cmp(&publish[*b]));
        &api_runs[order[order.len() / 2]]
    };
    println!(
        "API latency (median run): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&api_mid.latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&api_mid.latencies, 90.0).as_secs_f64() * 1e3,
        percentile(&api_mid.latencies, 99.0).as_secs_f64() * 1e3,
        percentile(&api_mid.latencies, 100.0).as_secs_f64() * 1e3,
    );

    // One stage at a time, one thread, and the publication path without HTTP / without
    // the node, so that each part's cost is seen on its own.
    println!();
    println!("breakdown (one pass each, after the rounds):");
    let st = stages(&fx, &wires, plan.group);
    let raw_after = raw.single();
    println!(
        "  1 thread, stage by stage, per bulletin: decode {:.2} us, check_bulletin {:.2} us, \
         insert_verified {:.2} us, flush {:.2} us ({:.1} ms per group of {}); raw verify_strict {:.2} us",
        per_item_us(st.decode, n),
        per_item_us(st.check, n),
        per_item_us(st.insert, n),
        per_item_us(st.flush, n),
        st.flush.as_secs_f64() * 1e3 / n.div_ceil(plan.group) as f64,
        plan.group,
        1e6 / raw_after
    );
    let direct = direct_publish(&rt, &fx, &drafts, plan.api_clients);
    let null = null_http(&rt, &bodies, plan.api_clients);
    let own64 = store_publish(&fx, &drafts, plan.api_clients);
    let own1 = store_publish(
        &fx,
        &drafts[..drafts.len().min(if plan.quick { 8 } else { 500 })],
        1,
    );
    println!(
        "  Node::publish in-process, {} concurrent tasks, no HTTP: {direct:.0}/s",
        plan.api_clients
    );
    println!(
        "  HTTP+JSON alone (axum server decoding the Draft, no node), same clients: {:.0}/s",
        null.rate()
    );
    println!(
        "  Store::publish_own_group on 1 thread (sign+journal+stage, folds+flushes), groups of {}: {own64:.0}/s; \
         groups of 1: {own1:.0}/s",
        plan.api_clients
    );
    println!(
        "  raw verify_strict 1 thread: {raw_after:.0}/s; ratios: bulk import {:.2}, API {:.2}",
        median(&import) / raw_after,
        median(&publish) / raw_after
    );
}
