//! Shared fixtures of the node benchmarks: a deterministic genesis registry of many
//! members, pre-signed bulletin chains with pseudo-random payloads, node settings,
//! quick-mode detection, and small measuring helpers.
#![allow(dead_code)]

/// The allocator the `herald` binary uses (node/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Duration;

use herald_keys::{Founder, Registry, SecretKey, founding_genesis, sign_bulletin};
use herald_node::{GossipTiming, KeyPast, NodeSettings};
use herald_protocol::{
    AdvisoryStatus, BulletinBody, BulletinId, IncidentPhase, Kind, MemberId, NetworkId, Payload, Seq,
    Severity, SignedBulletin, SignedRegistryUpdate, Timestamp, Tlp, UpdateStage,
};

/// Creation time of every bulletin's chain start (2026-01-01T00:00:00Z, in ms).
pub(crate) const EPOCH_MS: u64 = 1_767_225_600_000;

/// SplitMix64: a fixed-seed source of random-looking bytes.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Whether to run tiny sizes: `HERALD_BENCH_QUICK=1`, `--quick`, or no `--bench` flag
/// (that is, run by `cargo test --all-targets` rather than `cargo bench`).
pub(crate) fn quick_mode(args: &[String]) -> bool {
    let quick_env = std::env::var("HERALD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let quick_arg = args.iter().any(|a| a == "--quick");
    let under_cargo_test = !args.iter().any(|a| a == "--bench");
    quick_env || quick_arg || under_cargo_test
}

/// Logical cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A member's member, signing and node keys, from fixed seeds.
fn member_keys(index: usize) -> [SecretKey; 3] {
    let mut rng = SplitMix64(0x4845_5241_4c44_0100 ^ (index as u64).wrapping_mul(0x1_0000_0001));
    [0, 1, 2].map(|_| {
        let seed: [u8; 32] = rng.bytes(32).try_into().unwrap();
        SecretKey::from_seed(&seed)
    })
}

/// A genesis registry of `members` founders (each with one signing key), threshold
/// above half, approved by every key; the same for the same `members` in every process.
pub(crate) struct Fixture {
    /// Member, signing and node key of each member.
    pub(crate) keys: Vec<[SecretKey; 3]>,
    /// Each member's id.
    pub(crate) members: Vec<MemberId>,
    pub(crate) genesis: SignedRegistryUpdate,
    pub(crate) registry: Registry,
}

impl Fixture {
    pub(crate) fn new(members: usize) -> Self {
        let keys: Vec<[SecretKey; 3]> = (0..members).map(member_keys).collect();
        let ids: Vec<MemberId> = keys.iter().map(|[m, _, _]| MemberId::derive(&m.id())).collect();
        let names: Vec<String> = (0..members).map(|i| format!("member-{i:03}")).collect();
        let founders: Vec<Founder<'_>> = keys
            .iter()
            .zip(&names)
            .map(|(keys, name)| Founder::from_keys(name, keys))
            .collect();
        let genesis = founding_genesis(&founders, (members / 2 + 1) as u32, Timestamp(EPOCH_MS)).unwrap();
        let registry = Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap();
        Self {
            keys,
            members: ids,
            genesis,
            registry,
        }
    }

    pub(crate) fn network(&self) -> NetworkId {
        self.registry.network()
    }

    /// Settings of a node of member 0 on 127.0.0.1 (TCP, any port), mDNS off.
    pub(crate) fn node_settings(&self, data_dir: &Path) -> NodeSettings {
        self.member_node_settings(0, data_dir)
    }

    /// Settings of member `m`'s node on 127.0.0.1 (TCP, any port), mDNS off.
    pub(crate) fn member_node_settings(&self, m: usize, data_dir: &Path) -> NodeSettings {
        let [_, signing, node] = &self.keys[m];
        NodeSettings {
            data_dir: data_dir.to_path_buf(),
            genesis: self.genesis.clone(),
            genesis_hash: self.genesis.hash(),
            signing_key: SecretKey::from_seed(&signing.to_seed()),
            node_key: SecretKey::from_seed(&node.to_seed()),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: Vec::new(),
            mdns: false,
            handshakes_per_address: herald_node::network::DEFAULT_HANDSHAKES_PER_ADDRESS,
            timing: GossipTiming::default(),
            key_past: KeyPast::New,
        }
    }
}

/// The kind, TLP and severity of a bulletin, varied so the query indexes fill evenly.
pub(crate) fn labels(n: u64) -> (Kind, Tlp, Severity) {
    let kind = match n % 6 {
        0 => Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::Confirmed,
        },
        1 => Kind::SoftwareUpdate {
            stage: UpdateStage::Released,
        },
        2 => Kind::IncidentReport {
            phase: IncidentPhase::Ongoing,
        },
        3 => Kind::EmergencyAlert,
        4 => Kind::ProductSecurity,
        _ => Kind::Outreach,
    };
    let tlp = [Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::Red][(n / 6 % 4) as usize];
    let severity = [
        Severity::Informational,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ][(n / 24 % 5) as usize];
    (kind, tlp, severity)
}

/// The `i`-th draft the benchmarks publish through a node (a payload of
/// `payload_len` pseudo-random bytes).
pub(crate) fn draft(i: usize, payload_len: usize) -> herald_node::Draft {
    let (kind, tlp, severity) = labels(i as u64);
    herald_node::Draft {
        kind,
        tlp,
        severity,
        title: format!("Published bulletin {i}: advisory on a widely deployed product"),
        references: Vec::new(),
        supersedes: None,
        expires: None,
        audience: Vec::new(),
        payload: Payload {
            content_type: "application/octet-stream".into(),
            bytes: payload_bytes(1_000, i as u64, payload_len),
        },
        created: Some(Timestamp(EPOCH_MS + i as u64)),
    }
}

/// `payload_len` pseudo-random bytes, different for each (key, seq).
pub(crate) fn payload_bytes(key: usize, seq: u64, payload_len: usize) -> Vec<u8> {
    SplitMix64(((key as u64) << 40) ^ seq ^ 0x5041_594c_4f41_4400).bytes(payload_len)
}

/// The body of bulletin `seq` of member `key`'s signing key.
pub(crate) fn body(
    fx: &Fixture,
    key: usize,
    seq: u64,
    prev: Option<BulletinId>,
    payload_len: usize,
) -> BulletinBody {
    let (kind, tlp, severity) = labels(seq + key as u64);
    BulletinBody {
        format: herald_protocol::bulletin::BULLETIN_FORMAT,
        network: fx.network(),
        signer: fx.keys[key][1].id(),
        seq: Seq(seq),
        prev,
        // One bulletin per key per second, keys a millisecond apart.
        created: Timestamp(EPOCH_MS + seq * 1000 + key as u64),
        kind,
        tlp,
        severity,
        title: format!("Bulletin {seq} of member {key:03}: advisory on a widely deployed product"),
        references: Vec::new(),
        supersedes: None,
        expires: None,
        audience: Vec::new(),
        payload: Payload {
            content_type: "application/octet-stream".into(),
            bytes: payload_bytes(key, seq, payload_len),
        },
    }
}

/// Signs bulletins `from..from + count` of every key's chain, continuing from
/// `prevs` (each key's last id, `None` before seq 1), on `threads` threads.
/// Returns them in time order: seq by seq, all keys at each seq.
pub(crate) fn sign_block(
    fx: &Fixture,
    from: u64,
    count: u64,
    prevs: &mut [Option<BulletinId>],
    payload_len: usize,
    threads: usize,
) -> Vec<SignedBulletin> {
    let keys = prevs.len();
    let threads = threads.clamp(1, keys.max(1));
    let mut per_key: Vec<Vec<SignedBulletin>> = Vec::with_capacity(keys);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let starts: Vec<(usize, Option<BulletinId>)> =
                    (t..keys).step_by(threads).map(|k| (k, prevs[k])).collect();
                s.spawn(move || {
                    starts
                        .into_iter()
                        .map(|(k, mut prev)| {
                            let mut chain = Vec::with_capacity(count as usize);
                            for seq in from..from + count {
                                let b = sign_bulletin(&fx.keys[k][1], &body(fx, k, seq, prev, payload_len))
                                    .unwrap();
                                prev = Some(b.id());
                                chain.push(b);
                            }
                            (k, chain)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Vec<SignedBulletin>)> =
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_by_key(|(k, _)| *k);
        per_key.extend(all.into_iter().map(|(_, c)| c));
    });
    for (k, chain) in per_key.iter().enumerate() {
        if let Some(last) = chain.last() {
            prevs[k] = Some(last.id());
        }
    }
    let mut iters: Vec<_> = per_key.into_iter().map(|c| c.into_iter()).collect();
    let mut out = Vec::with_capacity(keys * count as usize);
    for _ in 0..count {
        for it in &mut iters {
            out.extend(it.next());
        }
    }
    out
}

/// One `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`, ...).
/// Bytes of every file below `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

pub(crate) fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// The `p`-th percentile (0..=100) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The machine, for the report.
pub(crate) fn describe_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{} logical cores ({cpu}); load average {load}", cores())
}
