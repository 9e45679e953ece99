//! Shared helpers for the herald-protocol integration tests: proptest strategies
//! for valid wire values, fixed sample values, and byte-level helpers for crafting
//! hostile encodings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use herald_protocol::{
    AdvisoryStatus, Approval, BulletinBody, BulletinId, FollowUpAction, IncidentPhase, KeyId, Kind,
    MemberEntry, MemberId, MetricCount, NetworkId, NodeId, Payload, Reference, RegistryHash, RegistryOp,
    RegistryUpdate, RegistryVersion, RevocationPoint, Seq, Severity, Signature, SignedBulletin,
    SignedRegistryUpdate, Timestamp, Tlp, UpdateStage,
};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

/// The body format this crate writes (mirrors `bulletin::BULLETIN_FORMAT`).
pub(crate) const FORMAT: u16 = 1;

/// The bincode configuration the protocol documents: fixed-width little-endian
/// integers. Used to encode values *without* the crate's validation, so tests can
/// build well-formed but rule-breaking bodies.
pub(crate) fn raw_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Encodes any wire value with the documented configuration, skipping validation.
pub(crate) fn raw_encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, raw_config()).unwrap()
}

/// A signed-bulletin envelope around arbitrary body bytes: u64 LE length, body, signature.
pub(crate) fn envelope(body: &[u8], signature: [u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len() + 64);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&signature);
    out
}

/// A signed-registry-update envelope around arbitrary body bytes and approvals.
pub(crate) fn registry_envelope(body: &[u8], approvals: &[([u8; 32], [u8; 64])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&(approvals.len() as u64).to_le_bytes());
    for (key, sig) in approvals {
        out.extend_from_slice(key);
        out.extend_from_slice(sig);
    }
    out
}

/// Offset of the only occurrence of `needle` in `hay`; panics if absent or repeated,
/// so a test never silently patches the wrong field.
pub(crate) fn unique_offset(hay: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one occurrence of {needle:02x?}, found {hits:?}"
    );
    hits[0]
}

/// Offset of the u64 length prefix that precedes `content` (a string or byte vector).
pub(crate) fn len_prefix_offset(hay: &[u8], content: &[u8]) -> usize {
    let mut needle = (content.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(content);
    unique_offset(hay, &needle)
}

/// Overwrites the 8 bytes at `at` with `value` (u64 LE).
pub(crate) fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Overwrites the 4 bytes at `at` with `value` (u32 LE).
pub(crate) fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

// ---------------------------------------------------------------------------
// Fixed samples
// ---------------------------------------------------------------------------

/// Log4Shell, the CVE id used throughout.
pub(crate) const LOG4SHELL: &str = "CVE-2021-44228";
/// The sample title (unique bytes, so it can be located in an encoding).
pub(crate) const TITLE: &str = "Log4Shell exploitation observed";
/// The sample URL reference.
pub(crate) const URL: &str = "https://logging.apache.org/security.html";
/// The sample content type.
pub(crate) const CONTENT_TYPE: &str = "text/markdown";
/// The sample payload.
pub(crate) const PAYLOAD: &[u8] = b"# Patch now\n\nUpgrade to 2.17.1.";

pub(crate) fn member(byte: u8) -> MemberId {
    MemberId::from_bytes([byte; 32])
}

/// A first bulletin (seq 1, no prev) of kind `EmergencyAlert`, with a CVE, a URL and
/// a bulletin reference, an expiry, a two-member audience and a markdown payload.
pub(crate) fn sample_body() -> BulletinBody {
    BulletinBody {
        format: FORMAT,
        network: NetworkId::from_bytes([0x01; 32]),
        signer: KeyId::from_bytes([0x02; 32]),
        seq: Seq(1),
        prev: None,
        created: Timestamp(1_700_000_000_000),
        kind: Kind::EmergencyAlert,
        tlp: Tlp::Amber,
        severity: Severity::High,
        title: TITLE.into(),
        references: vec![
            Reference::Cve(LOG4SHELL.into()),
            Reference::Url(URL.into()),
            Reference::Bulletin(BulletinId::from_bytes([0x03; 32])),
        ],
        supersedes: None,
        expires: Some(Timestamp(1_700_000_001_000)),
        audience: vec![member(0x10), member(0x20)],
        payload: Payload {
            content_type: CONTENT_TYPE.into(),
            bytes: PAYLOAD.to_vec(),
        },
    }
}

/// The second bulletin of the same chain (seq 2, prev set, supersedes set).
pub(crate) fn sample_body_seq2() -> BulletinBody {
    BulletinBody {
        seq: Seq(2),
        prev: Some(BulletinId::from_bytes([0x04; 32])),
        supersedes: Some(BulletinId::from_bytes([0x05; 32])),
        ..sample_body()
    }
}

pub(crate) fn sample_signature() -> [u8; 64] {
    [0x5a; 64]
}

pub(crate) fn sample_signed() -> SignedBulletin {
    SignedBulletin::from_parts(
        sample_body().to_bytes().unwrap(),
        Signature::from_bytes(&sample_signature()),
    )
    .unwrap()
}

/// A member entry whose id is derived from its member key.
pub(crate) fn sample_member_entry(name: &str, key_byte: u8) -> MemberEntry {
    let member_key = KeyId::from_bytes([key_byte; 32]);
    MemberEntry {
        id: MemberId::derive(&member_key),
        name: name.into(),
        member_key,
        signing_keys: vec![KeyId::from_bytes([key_byte.wrapping_add(1); 32])],
        node_ids: vec![NodeId::from_bytes([key_byte.wrapping_add(2); 32])],
    }
}

/// A genesis registry update admitting two members and setting the threshold.
pub(crate) fn sample_genesis() -> RegistryUpdate {
    RegistryUpdate {
        format: FORMAT,
        version: RegistryVersion(1),
        prev: None,
        created: Timestamp(1_700_000_000_000),
        ops: vec![
            RegistryOp::AddMember(sample_member_entry("CERT-EU", 0x40)),
            RegistryOp::AddMember(sample_member_entry("CERT-FR", 0x50)),
            RegistryOp::SetThreshold { threshold: 2 },
        ],
    }
}

pub(crate) fn sample_approvals() -> Vec<Approval> {
    vec![
        Approval {
            key: KeyId::from_bytes([0x40; 32]),
            signature: Signature::from_bytes(&[0x41; 64]),
        },
        Approval {
            key: KeyId::from_bytes([0x50; 32]),
            signature: Signature::from_bytes(&[0x51; 64]),
        },
    ]
}

pub(crate) fn sample_signed_update() -> SignedRegistryUpdate {
    SignedRegistryUpdate::from_parts(sample_genesis().to_bytes().unwrap(), sample_approvals()).unwrap()
}

// ---------------------------------------------------------------------------
// Strategies for valid values
// ---------------------------------------------------------------------------

pub(crate) fn id32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

/// Text of 1 to `max_chars` characters, none of them a control character
/// (`\PC` excludes every Unicode "Other" character, a superset of `Cc`).
pub(crate) fn text(max_chars: usize) -> impl Strategy<Value = String> {
    let ascii = proptest::string::string_regex(&format!("[A-Za-z0-9 ._:-]{{1,{max_chars}}}")).unwrap();
    let unicode = proptest::string::string_regex(&format!("\\PC{{1,{max_chars}}}")).unwrap();
    prop_oneof![ascii, unicode]
}

pub(crate) fn tlp() -> impl Strategy<Value = Tlp> {
    prop_oneof![
        Just(Tlp::Clear),
        Just(Tlp::Green),
        Just(Tlp::Amber),
        Just(Tlp::AmberStrict),
        Just(Tlp::Red)
    ]
}

pub(crate) fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Informational),
        Just(Severity::Low),
        Just(Severity::Medium),
        Just(Severity::High),
        Just(Severity::Critical),
    ]
}

fn advisory_status() -> impl Strategy<Value = AdvisoryStatus> {
    prop_oneof![
        Just(AdvisoryStatus::UnderInvestigation),
        Just(AdvisoryStatus::Confirmed),
        Just(AdvisoryStatus::Mitigated),
        Just(AdvisoryStatus::Fixed),
        Just(AdvisoryStatus::NotAffected),
    ]
}

fn update_stage() -> impl Strategy<Value = UpdateStage> {
    prop_oneof![Just(UpdateStage::Upcoming), Just(UpdateStage::Released)]
}

fn incident_phase() -> impl Strategy<Value = IncidentPhase> {
    prop_oneof![
        Just(IncidentPhase::Detected),
        Just(IncidentPhase::Ongoing),
        Just(IncidentPhase::Contained),
        Just(IncidentPhase::Resolved),
    ]
}

fn follow_up_action() -> impl Strategy<Value = FollowUpAction> {
    prop_oneof![
        Just(FollowUpAction::Acknowledge),
        Just(FollowUpAction::Update),
        Just(FollowUpAction::RequestInformation),
        Just(FollowUpAction::Answer),
        Just(FollowUpAction::Close),
    ]
}

fn metric() -> impl Strategy<Value = MetricCount> {
    // Metric names are at most 64 bytes: 16 chars of up to 4 bytes each.
    (text(16), any::<u64>()).prop_map(|(name, value)| MetricCount { name, value })
}

/// Every `Kind` variant with valid contents.
pub(crate) fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        advisory_status().prop_map(|status| Kind::VulnerabilityAdvisory { status }),
        update_stage().prop_map(|stage| Kind::SoftwareUpdate { stage }),
        incident_phase().prop_map(|phase| Kind::IncidentReport { phase }),
        (0..u64::MAX)
            .prop_flat_map(|start| (Just(start), (start + 1)..=u64::MAX))
            .prop_flat_map(|(start, end)| (Just(start), Just(end), vec(metric(), 0..8)))
            .prop_map(|(start, end, counts)| Kind::IncidentMetrics {
                period_start: Timestamp(start),
                period_end: Timestamp(end),
                counts,
            }),
        Just(Kind::EmergencyAlert),
        Just(Kind::ProductSecurity),
        Just(Kind::Outreach),
        (id32(), follow_up_action()).prop_map(|(on, action)| Kind::FollowUp {
            on: BulletinId::from_bytes(on),
            action,
        }),
        (id32(), text(200)).prop_map(|(of, reason)| Kind::Withdrawal {
            of: BulletinId::from_bytes(of),
            reason,
        }),
    ]
}

/// References of all three kinds: CVE ids, http(s) URLs, bulletin ids.
pub(crate) fn reference() -> impl Strategy<Value = Reference> {
    prop_oneof![
        Just(Reference::Cve(LOG4SHELL.into())),
        "CVE-(19|20)[0-9]{2}-[0-9]{4,19}".prop_map(Reference::Cve),
        "https?://[a-z0-9-]{1,20}(\\.[a-z]{2,6}){1,2}(/[A-Za-z0-9._~%-]{0,16}){0,4}(\\?[a-z]{1,4}=[0-9]{1,6})?"
            .prop_map(Reference::Url),
        "https://[a-z]{1,10}\\.example/[^\\p{C} ]{0,30}".prop_map(Reference::Url),
        id32().prop_map(|b| Reference::Bulletin(BulletinId::from_bytes(b))),
    ]
}

pub(crate) fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("text/markdown".to_string()),
        Just("text/plain; charset=utf-8".to_string()),
        Just("application/csaf+json".to_string()),
        Just("application/octet-stream".to_string()),
        "[a-z]{1,12}/[a-z0-9.+-]{1,24}",
    ]
}

/// `(seq, prev)` with `prev` absent exactly when `seq` is 1.
fn seq_and_prev() -> impl Strategy<Value = (Seq, Option<BulletinId>)> {
    prop_oneof![
        Just((Seq(1), None)),
        (2..=u64::MAX, id32()).prop_map(|(s, p)| (Seq(s), Some(BulletinId::from_bytes(p)))),
    ]
}

/// `(created, expires)` with `expires` after `created` when present.
fn created_and_expires() -> impl Strategy<Value = (Timestamp, Option<Timestamp>)> {
    prop_oneof![
        any::<u64>().prop_map(|c| (Timestamp(c), None)),
        (0..u64::MAX)
            .prop_flat_map(|c| (Just(c), (c + 1)..=u64::MAX))
            .prop_map(|(c, e)| (Timestamp(c), Some(Timestamp(e)))),
    ]
}

/// Member ids sorted strictly ascending.
fn audience() -> impl Strategy<Value = Vec<MemberId>> {
    btree_set(id32(), 0..8)
        .prop_map(|set: BTreeSet<[u8; 32]>| set.into_iter().map(MemberId::from_bytes).collect())
}

fn payload() -> impl Strategy<Value = Payload> {
    (content_type(), vec(any::<u8>(), 0..2048))
        .prop_map(|(content_type, bytes)| Payload { content_type, bytes })
}

/// Arbitrary valid bulletin bodies.
pub(crate) fn bulletin_body() -> impl Strategy<Value = BulletinBody> {
    (
        (id32(), id32(), seq_and_prev(), created_and_expires()),
        (kind(), tlp(), severity(), text(60)),
        (
            vec(reference(), 0..8),
            proptest::option::of(id32()),
            audience(),
            payload(),
        ),
    )
        .prop_map(
            |(
                (network, signer, (seq, prev), (created, expires)),
                (kind, tlp, severity, title),
                (references, supersedes, audience, payload),
            )| BulletinBody {
                format: FORMAT,
                network: NetworkId::from_bytes(network),
                signer: KeyId::from_bytes(signer),
                seq,
                prev,
                created,
                kind,
                tlp,
                severity,
                title,
                references,
                supersedes: supersedes.map(BulletinId::from_bytes),
                expires,
                audience,
                payload,
            },
        )
}

/// Member entries whose id is derived from the member key; names non-empty, no
/// control characters, at most 128 bytes (32 chars of up to 4 bytes).
pub(crate) fn member_entry() -> impl Strategy<Value = MemberEntry> {
    (id32(), text(32), vec(id32(), 0..4), vec(id32(), 0..4)).prop_map(|(key, name, keys, nodes)| {
        let member_key = KeyId::from_bytes(key);
        MemberEntry {
            id: MemberId::derive(&member_key),
            name,
            member_key,
            signing_keys: keys.into_iter().map(KeyId::from_bytes).collect(),
            node_ids: nodes.into_iter().map(NodeId::from_bytes).collect(),
        }
    })
}

fn revocation_point() -> impl Strategy<Value = RevocationPoint> {
    prop_oneof![
        any::<u64>().prop_map(|s| RevocationPoint::Seq(Seq(s))),
        any::<u64>().prop_map(|t| RevocationPoint::Time(Timestamp(t))),
    ]
}

/// Every `RegistryOp` variant.
pub(crate) fn registry_op() -> impl Strategy<Value = RegistryOp> {
    let m = || id32().prop_map(MemberId::from_bytes);
    let k = || id32().prop_map(KeyId::from_bytes);
    let n = || id32().prop_map(NodeId::from_bytes);
    prop_oneof![
        member_entry().prop_map(RegistryOp::AddMember),
        (m(), any::<u64>()).prop_map(|(member, at)| RegistryOp::RemoveMember {
            member,
            at: Timestamp(at)
        }),
        any::<u32>().prop_map(|threshold| RegistryOp::SetThreshold { threshold }),
        (m(), k()).prop_map(|(member, key)| RegistryOp::AddSigningKey { member, key }),
        (m(), k(), revocation_point()).prop_map(|(member, key, from)| RegistryOp::RevokeSigningKey {
            member,
            key,
            from
        }),
        (m(), n()).prop_map(|(member, node)| RegistryOp::AddNode { member, node }),
        (m(), n()).prop_map(|(member, node)| RegistryOp::RemoveNode { member, node }),
        (m(), k()).prop_map(|(member, new_key)| RegistryOp::RotateMemberKey { member, new_key }),
    ]
}

/// Arbitrary valid registry update bodies: version 1 exactly when `prev` is absent.
pub(crate) fn registry_update() -> impl Strategy<Value = RegistryUpdate> {
    let version_and_prev = prop_oneof![
        Just((RegistryVersion(1), None)),
        (2..=u64::MAX, id32()).prop_map(|(v, p)| (RegistryVersion(v), Some(RegistryHash::from_bytes(p)))),
    ];
    (version_and_prev, any::<u64>(), vec(registry_op(), 1..6)).prop_map(|((version, prev), created, ops)| {
        RegistryUpdate {
            format: FORMAT,
            version,
            prev,
            created: Timestamp(created),
            ops,
        }
    })
}

pub(crate) fn approval() -> impl Strategy<Value = Approval> {
    (id32(), any::<[u8; 64]>()).prop_map(|(key, sig)| Approval {
        key: KeyId::from_bytes(key),
        signature: Signature::from_bytes(&sig),
    })
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

/// One corruption of a byte string.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    /// Flip one bit of one byte.
    FlipBit(prop::sample::Index, u8),
    /// Replace one byte.
    Overwrite(prop::sample::Index, u8),
    /// Keep only a prefix.
    Truncate(prop::sample::Index),
    /// Insert one byte.
    Insert(prop::sample::Index, u8),
    /// Append bytes.
    Append(Vec<u8>),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

impl Mutation {
    /// Applies the mutation to a non-empty input.
    pub(crate) fn apply(&self, input: &[u8]) -> Vec<u8> {
        assert!(!input.is_empty());
        let mut out = input.to_vec();
        match self {
            Mutation::FlipBit(i, bit) => out[i.index(input.len())] ^= 1 << bit,
            Mutation::Overwrite(i, byte) => out[i.index(input.len())] = *byte,
            Mutation::Truncate(i) => out.truncate(i.index(input.len())),
            Mutation::Insert(i, byte) => out.insert(i.index(input.len() + 1), *byte),
            Mutation::Append(extra) => out.extend_from_slice(extra),
        }
        out
    }
}
