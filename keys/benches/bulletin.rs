//! Bulletin codec and verification throughput for a 1 KiB signed bulletin, with the raw
//! ed25519-dalek `verify_strict` rate measured in the same run as the baseline.
//!
//! No criterion: a small self-contained harness. The machine this runs on is shared and
//! noisy, so the operations are interleaved in several rounds (within a round, raw
//! `verify_strict` and the full per-message path alternate in 10 ms slices), each figure is
//! the median over the rounds, and the full/raw ratio is the median of the per-round ratios.
//!
//! ```text
//! cargo bench -p herald-keys --bench bulletin             # 7 rounds of ~0.3 s per operation
//! HERALD_BENCH_QUICK=1 cargo bench -p herald-keys --bench bulletin   # 3 short rounds
//! cargo bench -p herald-keys --bench bulletin -- --quick  # same
//! ```
//!
//! Run without cargo's `--bench` flag (as `cargo test --all-targets` does), it also takes
//! the quick mode, so that it stays a smoke test there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use herald_keys::{PublicKey, Registry, SecretKey, sign};
use herald_protocol::{
    AdvisoryStatus, BULLETIN_DOMAIN, BulletinBody, BulletinId, Kind, MemberEntry, MemberId, Payload,
    Reference, RegistryOp, RegistryUpdate, RegistryVersion, Seq, Severity, SignedBulletin, Timestamp, Tlp,
    signing_input,
};

/// Size of the signed wire form the fixture aims at.
const TARGET_WIRE_BYTES: usize = 1024;
/// Seed of the payload's pseudo-random bytes.
const PAYLOAD_SEED: u64 = 0x4845_5241_4c44_0001;
/// Goal for full decode+id+verify against raw `verify_strict`.
const RATIO_GOAL: f64 = 0.90;
/// Length of one slice when raw and full verification alternate within a round.
const PAIR_SLICE: Duration = Duration::from_millis(10);

/// SplitMix64: a fixed-seed source of random-looking bytes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Everything the operations need, built once.
struct Fixture {
    registry: Registry,
    body: BulletinBody,
    /// The signed wire form (~1 KiB).
    wire: Vec<u8>,
    /// The body bytes the signature covers (after the domain prefix).
    body_bytes: Vec<u8>,
    /// `BULLETIN_DOMAIN || body_bytes`.
    signing_input: Vec<u8>,
    signature: herald_protocol::Signature,
    public: PublicKey,
    raw_key: ed25519_dalek::VerifyingKey,
    raw_signature: ed25519_dalek::Signature,
    member: MemberId,
}

fn genesis_registry(keys: &[[SecretKey; 3]]) -> Registry {
    let mut ops: Vec<RegistryOp> = keys
        .iter()
        .enumerate()
        .map(|(i, [m, s, n])| {
            RegistryOp::AddMember(MemberEntry {
                id: MemberId::derive(&m.id()),
                name: format!("member-{i}"),
                member_key: m.id(),
                signing_keys: vec![s.id()],
                node_ids: vec![n.public().node_id()],
            })
        })
        .collect();
    ops.push(RegistryOp::SetThreshold { threshold: 2 });
    let update = RegistryUpdate {
        format: 1,
        version: RegistryVersion(1),
        prev: None,
        created: Timestamp(0),
        ops,
    };
    let mut genesis = sign::propose_update(&update).unwrap();
    for k in keys.iter().flatten() {
        let approval = sign::approve(k, &genesis);
        genesis.push_approval(approval).unwrap();
    }
    let hash = genesis.hash();
    Registry::from_genesis(genesis, hash).unwrap()
}

fn body_with_payload(registry: &Registry, signer: &SecretKey, payload: Vec<u8>) -> BulletinBody {
    BulletinBody {
        format: 1,
        network: registry.network(),
        signer: signer.id(),
        seq: Seq(42),
        prev: Some(BulletinId::of_body(b"the previous bulletin of this chain")),
        created: Timestamp(1_767_225_600),
        kind: Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::Confirmed,
        },
        tlp: Tlp::Amber,
        severity: Severity::High,
        title: "Remote code execution in a widely deployed VPN appliance".into(),
        references: vec![
            Reference::Cve("CVE-2025-12345".into()),
            Reference::Url("https://example.invalid/advisories/2025-12345".into()),
        ],
        supersedes: None,
        expires: Some(Timestamp(1_767_225_600 + 30 * 86_400)),
        audience: vec![],
        payload: Payload {
            content_type: "application/octet-stream".into(),
            bytes: payload,
        },
    }
}

impl Fixture {
    fn new() -> Self {
        // Three founders (member, signing and node key each), threshold 2.
        let keys: Vec<[SecretKey; 3]> = (0..3u8)
            .map(|i| [1, 2, 3].map(|r| SecretKey::from_seed(&[i * 3 + r; 32])))
            .collect();
        let registry = genesis_registry(&keys);
        let signer = &keys[0][1];
        let member = MemberId::derive(&keys[0][0].id());

        // The payload's length prefix is fixed-width, so each payload byte adds one
        // wire byte: size the payload from an empty one to hit the target exactly.
        let empty = sign::sign_bulletin(signer, &body_with_payload(&registry, signer, Vec::new())).unwrap();
        let payload_len = TARGET_WIRE_BYTES.saturating_sub(empty.as_bytes().len());
        let payload = SplitMix64(PAYLOAD_SEED).bytes(payload_len);
        let body = body_with_payload(&registry, signer, payload);
        let bulletin = sign::sign_bulletin(signer, &body).unwrap();

        let wire = bulletin.to_bytes();
        let body_bytes = bulletin.body_bytes().to_vec();
        let signing_input = signing_input(BULLETIN_DOMAIN, &body_bytes);
        let signature = *bulletin.signature();
        let public = signer.public();
        let raw_key = ed25519_dalek::VerifyingKey::from_bytes(&public.to_bytes()).unwrap();
        let raw_signature = ed25519_dalek::Signature::from_bytes(signature.as_bytes());

        let fixture = Self {
            registry,
            body,
            wire,
            body_bytes,
            signing_input,
            signature,
            public,
            raw_key,
            raw_signature,
            member,
        };
        fixture.check();
        fixture
    }

    /// Every measured operation succeeds and agrees with the others.
    fn check(&self) {
        assert_eq!(self.body.to_bytes().unwrap(), self.body_bytes);
        let decoded = SignedBulletin::from_bytes(&self.wire).unwrap();
        assert_eq!(decoded.body(), &self.body);
        assert_eq!(decoded.id(), BulletinId::of_body(&self.body_bytes));
        assert_eq!(self.public.verify(&self.signing_input, &self.signature), Ok(()));
        assert!(
            self.raw_key
                .verify_strict(&self.signing_input, &self.raw_signature)
                .is_ok()
        );
        assert_eq!(self.registry.check_bulletin(&decoded), Ok(self.member));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Encode,
    Decode,
    Id,
    Verify,
    Full,
    Raw,
}

impl Op {
    const TABLE_ORDER: [Op; 6] = [Op::Encode, Op::Decode, Op::Id, Op::Verify, Op::Full, Op::Raw];

    fn label(self) -> &'static str {
        match self {
            Op::Encode => "encode (BulletinBody::to_bytes)",
            Op::Decode => "decode (SignedBulletin::from_bytes)",
            Op::Id => "id (BulletinId::of_body)",
            Op::Verify => "strict verify (PublicKey::verify)",
            Op::Full => "full decode+id+verify (from_bytes + check_bulletin)",
            Op::Raw => "raw ed25519-dalek verify_strict",
        }
    }

    fn index(self) -> usize {
        Self::TABLE_ORDER.iter().position(|o| *o == self).unwrap()
    }
}

/// One round's figures for one operation.
#[derive(Clone, Copy)]
struct Sample {
    /// Iterations over wall-clock time, preemptions included.
    ops_per_sec: f64,
    /// The fastest batch's time per iteration: the cost with the least interference.
    best_ns: f64,
}

/// One operation under measurement: a closure, its batch size, and what was
/// accumulated so far.
struct Meter<F> {
    f: F,
    batch: u64,
    iterations: u64,
    time: Duration,
    best_ns: f64,
}

impl<R, F: FnMut() -> R> Meter<F> {
    /// A short calibration, which doubles as warm-up, picks a batch of about a
    /// millisecond: the clock is read rarely, and many batches run unpreempted.
    fn new(mut f: F) -> Self {
        let mut batch: u64 = 1;
        loop {
            let start = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            if start.elapsed() >= Duration::from_millis(1) || batch >= 1 << 30 {
                break;
            }
            batch *= 2;
        }
        Self {
            f,
            batch,
            iterations: 0,
            time: Duration::ZERO,
            best_ns: f64::INFINITY,
        }
    }

    /// Runs whole batches for about `slice` more.
    fn run_for(&mut self, slice: Duration) {
        let start = Instant::now();
        loop {
            let batch_start = Instant::now();
            for _ in 0..self.batch {
                black_box((self.f)());
            }
            let batch_ns = batch_start.elapsed().as_nanos() as f64 / self.batch as f64;
            self.best_ns = self.best_ns.min(batch_ns);
            self.iterations += self.batch;
            let elapsed = start.elapsed();
            if elapsed >= slice {
                self.time += elapsed;
                return;
            }
        }
    }

    fn sample(&self) -> Sample {
        Sample {
            ops_per_sec: self.iterations as f64 / self.time.as_secs_f64(),
            best_ns: self.best_ns,
        }
    }
}

/// Runs `f` for about `target`.
fn measure<R>(f: impl FnMut() -> R, target: Duration) -> Sample {
    let mut meter = Meter::new(f);
    meter.run_for(target);
    meter.sample()
}

/// Runs `a` and `b` for about `target` each, alternating in slices of [`PAIR_SLICE`]
/// (`a` first) so that both see the same machine load.
fn measure_pair<R, S>(a: impl FnMut() -> R, b: impl FnMut() -> S, target: Duration) -> (Sample, Sample) {
    let mut a = Meter::new(a);
    let mut b = Meter::new(b);
    while a.time < target || b.time < target {
        a.run_for(PAIR_SLICE);
        b.run_for(PAIR_SLICE);
    }
    (a.sample(), b.sample())
}

/// Measures one of the unpaired operations.
fn run(op: Op, fx: &Fixture, target: Duration) -> Sample {
    match op {
        Op::Encode => measure(|| black_box(&fx.body).to_bytes().unwrap(), target),
        Op::Decode => measure(
            || SignedBulletin::from_bytes(black_box(&fx.wire)).unwrap(),
            target,
        ),
        Op::Id => measure(|| BulletinId::of_body(black_box(&fx.body_bytes)), target),
        Op::Verify => measure(
            || {
                black_box(&fx.public)
                    .verify(black_box(&fx.signing_input), black_box(&fx.signature))
                    .unwrap()
            },
            target,
        ),
        Op::Full => measure(|| full(fx), target),
        Op::Raw => measure(|| raw(fx), target),
    }
}

/// What a node does per received bulletin: decode (with the id) and check standing
/// and the signature.
fn full(fx: &Fixture) -> (BulletinId, MemberId) {
    let bulletin = SignedBulletin::from_bytes(black_box(&fx.wire)).unwrap();
    let member = black_box(&fx.registry).check_bulletin(&bulletin).unwrap();
    (bulletin.id(), member)
}

/// The baseline: ed25519-dalek's strict verification of the same signing input.
fn raw(fx: &Fixture) {
    black_box(&fx.raw_key)
        .verify_strict(black_box(&fx.signing_input), black_box(&fx.raw_signature))
        .unwrap();
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick_env = std::env::var("HERALD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let quick_arg = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; `cargo test` does not: keep that a smoke run.
    let under_cargo_test = !args.iter().any(|a| a == "--bench");
    let quick = quick_env || quick_arg || under_cargo_test;
    let (rounds, per_op) = if quick {
        (3, Duration::from_millis(50))
    } else {
        (7, Duration::from_millis(300))
    };

    let fx = Fixture::new();
    println!(
        "herald-keys bench `bulletin`: {}",
        if quick { "quick mode" } else { "full mode" }
    );
    println!(
        "fixture: signed wire form {} bytes, body {} bytes, payload {} bytes, signing input {} bytes",
        fx.wire.len(),
        fx.body_bytes.len(),
        fx.body.payload.bytes.len(),
        fx.signing_input.len()
    );
    println!(
        "{rounds} rounds of ~{} ms per operation, interleaved",
        per_op.as_millis()
    );

    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(rounds); Op::TABLE_ORDER.len()];
    for round in 0..rounds {
        // Raw and full alternate in short slices within the round, so that each round
        // gives a paired ratio under the same load; which starts alternates by round.
        let (raw_sample, full_sample) = if round % 2 == 0 {
            measure_pair(|| raw(&fx), || full(&fx), per_op)
        } else {
            let (f, r) = measure_pair(|| full(&fx), || raw(&fx), per_op);
            (r, f)
        };
        samples[Op::Raw.index()].push(raw_sample);
        samples[Op::Full.index()].push(full_sample);
        for op in [Op::Encode, Op::Decode, Op::Id, Op::Verify] {
            samples[op.index()].push(run(op, &fx, per_op));
        }
        eprintln!(
            "round {}/{rounds}: full/raw = {:.3}",
            round + 1,
            full_sample.ops_per_sec / raw_sample.ops_per_sec
        );
    }

    println!();
    println!(
        "{:<52} {:>14} {:>10} {:>12} {:>24}",
        "operation", "ops/s (median)", "ns/op", "best ns/op", "ops/s min..max"
    );
    for op in Op::TABLE_ORDER {
        let rates: Vec<f64> = samples[op.index()].iter().map(|s| s.ops_per_sec).collect();
        let best = samples[op.index()]
            .iter()
            .map(|s| s.best_ns)
            .fold(f64::INFINITY, f64::min);
        let med = median(&rates);
        let (min, max) = range(&rates);
        println!(
            "{:<52} {:>14.0} {:>10.0} {:>12.0} {:>24}",
            op.label(),
            med,
            1e9 / med,
            best,
            format!("{min:.0}..{max:.0}")
        );
    }

    let full = &samples[Op::Full.index()];
    let raw = &samples[Op::Raw.index()];
    let ratios: Vec<f64> = full
        .iter()
        .zip(raw)
        .map(|(f, r)| f.ops_per_sec / r.ops_per_sec)
        .collect();
    let ratio = median(&ratios);
    let (ratio_min, ratio_max) = range(&ratios);
    let best_ratios: Vec<f64> = full.iter().zip(raw).map(|(f, r)| r.best_ns / f.best_ns).collect();
    println!();
    println!(
        "full decode+id+verify / raw verify_strict = {ratio:.2} (goal >= {RATIO_GOAL:.2}) {}",
        if ratio >= RATIO_GOAL { "MET" } else { "NOT MET" }
    );
    println!(
        "  median of {rounds} paired rounds = {ratio:.3}; per-round range {ratio_min:.3}..{ratio_max:.3}; \
         from best batches (median of rounds) {:.3}",
        median(&best_ratios)
    );
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}
