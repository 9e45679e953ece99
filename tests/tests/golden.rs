//! Golden vectors: fixed inputs, the exact bytes Herald makes of them, and the checks that keep
//! the encoder, `tests/vectors/golden.json` and `docs/PROTOCOL.md` in agreement.
//!
//! Every value is rebuilt here from the inputs below (fixed seeds, fixed times; Ed25519 signing is
//! deterministic) and compared with the committed file; the committed wire bytes are decoded and
//! must equal the rebuilt values, and the registry and every bulletin must verify.
//!
//! After an intended change of the format, regenerate the file and update `docs/PROTOCOL.md`:
//!
//! ```text
//! HERALD_REGENERATE_GOLDEN=1 cargo test -p herald-tests --test golden -- --nocapture
//! ```
//!
//! That run writes the file and then fails on purpose, so that it can never pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_keys::{Applied, PublicKey, Registry, SecretKey, sign};
use herald_protocol::sync::{
    ChainSummary, SeqRange, SyncRequest, SyncResponse, Want, seq_fingerprint, state_digest, xor_into,
};
use herald_protocol::{
    AdvisoryStatus, BULLETIN_DOMAIN, BulletinBody, BulletinId, Kind, MemberEntry, MemberId, MetricCount,
    NetworkId, Payload, REGISTRY_DOMAIN, Reference, RegistryHash, RegistryOp, RegistryUpdate,
    RegistryVersion, Seq, Severity, SignedBulletin, SignedRegistryUpdate, Timestamp, Tlp, UpdateStage,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where the committed vectors live.
const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/golden.json");

/// The wire format specification, which quotes some of the vectors.
const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

/// Setting this variable to `1` rewrites the committed vectors instead of comparing.
const REGENERATE_VAR: &str = "HERALD_REGENERATE_GOLDEN";

/// The domain strings as the specification writes them, independent of the crate's constants.
const SPEC_BULLETIN_DOMAIN: &[u8] = b"herald/v1/bulletin\0";
const SPEC_REGISTRY_DOMAIN: &[u8] = b"herald/v1/registry\0";
const SPEC_MEMBER_ID_DOMAIN: &[u8] = b"herald/v1/member-id\0";

/// 2026-01-01T00:00:00Z: genesis.
const GENESIS_CREATED: Timestamp = Timestamp(1_767_225_600_000);
/// 2026-01-02T00:00:00Z: version 2 (CERT-A adds a signing key).
const UPDATE_2_CREATED: Timestamp = Timestamp(1_767_312_000_000);
/// 2026-01-06T12:00:00Z: bulletin 1.
const BULLETIN_1_CREATED: Timestamp = Timestamp(1_767_700_800_000);
/// 2026-01-08T09:30:00Z: bulletin 2.
const BULLETIN_2_CREATED: Timestamp = Timestamp(1_767_864_600_000);
/// 2026-07-01T00:00:00Z: bulletin 2 expires.
const BULLETIN_2_EXPIRES: Timestamp = Timestamp(1_782_864_000_000);
/// 2026-01-09T08:00:00Z: bulletin 3.
const BULLETIN_3_CREATED: Timestamp = Timestamp(1_767_945_600_000);
/// 2026-01-08T00:00:00Z: end of bulletin 3's metrics period (it starts at genesis time).
const METRICS_PERIOD_END: Timestamp = Timestamp(1_767_830_400_000);

/// Bulletin 1's contents, shared by the encoder path and the hand encoding.
const B1_TITLE: &str = "Remote code execution in Example Gateway 4.2";
const B1_CVE: &str = "CVE-2026-12345";
const B1_URL: &str = "https://cert-a.example/advisories/2026-001";
const B1_CONTENT_TYPE: &str = "text/markdown";
const B1_PAYLOAD: &str = "# Example Gateway 4.2\n\nUnder investigation. Restrict access to the admin port.\n";

/// One founding member and its three keys.
struct Founder {
    name: &'static str,
    member: SecretKey,
    signing: SecretKey,
    node: SecretKey,
}

impl Founder {
    fn new(name: &'static str, seeds: [u8; 3]) -> Self {
        let [m, s, n] = seeds.map(|b| SecretKey::from_seed(&[b; 32]));
        Self {
            name,
            member: m,
            signing: s,
            node: n,
        }
    }

    fn id(&self) -> MemberId {
        MemberId::derive(&self.member.id())
    }

    fn entry(&self) -> MemberEntry {
        MemberEntry {
            id: self.id(),
            name: self.name.into(),
            member_key: self.member.id(),
            signing_keys: vec![self.signing.id()],
            node_ids: vec![self.node.public().node_id()],
        }
    }
}

/// CERT-A (member, signing and node keys from seeds of bytes 1, 2, 3) and VENDOR-B (4, 5, 6).
fn founders() -> [Founder; 2] {
    [
        Founder::new("CERT-A", [1, 2, 3]),
        Founder::new("VENDOR-B", [4, 5, 6]),
    ]
}

/// The signing key CERT-A adds in version 2 (seed of bytes 7).
fn new_signing_key() -> SecretKey {
    SecretKey::from_seed(&[7; 32])
}

/// Everything rebuilt from the inputs.
struct Built {
    founders: [Founder; 2],
    genesis: SignedRegistryUpdate,
    update_2: SignedRegistryUpdate,
    bulletins: Vec<SignedBulletin>,
    json: Value,
}

fn approved(body: &RegistryUpdate, approvers: &[&SecretKey]) -> SignedRegistryUpdate {
    let mut update = sign::propose_update(body).unwrap();
    for key in approvers {
        let approval = sign::approve(key, &update);
        update.push_approval(approval).unwrap();
    }
    update
}

fn genesis_body(founders: &[Founder; 2]) -> RegistryUpdate {
    RegistryUpdate {
        format: 1,
        version: RegistryVersion(1),
        prev: None,
        created: GENESIS_CREATED,
        ops: vec![
            RegistryOp::AddMember(founders[0].entry()),
            RegistryOp::AddMember(founders[1].entry()),
            RegistryOp::SetThreshold { threshold: 2 },
        ],
    }
}

fn update_2_body(founders: &[Founder; 2], genesis: RegistryHash) -> RegistryUpdate {
    RegistryUpdate {
        format: 1,
        version: RegistryVersion(2),
        prev: Some(genesis),
        created: UPDATE_2_CREATED,
        ops: vec![RegistryOp::AddSigningKey {
            member: founders[0].id(),
            key: new_signing_key().id(),
        }],
    }
}

fn bulletin_1_body(network: NetworkId, signer: &SecretKey) -> BulletinBody {
    BulletinBody {
        format: 1,
        network,
        signer: signer.id(),
        seq: Seq(1),
        prev: None,
        created: BULLETIN_1_CREATED,
        kind: Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::UnderInvestigation,
        },
        tlp: Tlp::Green,
        severity: Severity::High,
        title: B1_TITLE.into(),
        references: vec![Reference::Cve(B1_CVE.into()), Reference::Url(B1_URL.into())],
        supersedes: None,
        expires: None,
        audience: vec![],
        payload: Payload {
            content_type: B1_CONTENT_TYPE.into(),
            bytes: B1_PAYLOAD.as_bytes().to_vec(),
        },
    }
}

fn bulletin_2_body(network: NetworkId, signer: &SecretKey, first: BulletinId) -> BulletinBody {
    BulletinBody {
        format: 1,
        network,
        signer: signer.id(),
        seq: Seq(2),
        prev: Some(first),
        created: BULLETIN_2_CREATED,
        kind: Kind::SoftwareUpdate {
            stage: UpdateStage::Released,
        },
        tlp: Tlp::Clear,
        severity: Severity::High,
        title: "Example Gateway 4.2.1 fixes CVE-2026-12345".into(),
        references: vec![Reference::Cve(B1_CVE.into()), Reference::Bulletin(first)],
        supersedes: Some(first),
        expires: Some(BULLETIN_2_EXPIRES),
        audience: vec![],
        payload: Payload {
            content_type: "text/plain".into(),
            bytes: b"Upgrade to 4.2.1. It fixes CVE-2026-12345.\n".to_vec(),
        },
    }
}

fn bulletin_3_body(
    network: NetworkId,
    signer: &SecretKey,
    second: BulletinId,
    founders: &[Founder; 2],
) -> BulletinBody {
    let mut audience: Vec<MemberId> = founders.iter().map(Founder::id).collect();
    audience.sort();
    BulletinBody {
        format: 1,
        network,
        signer: signer.id(),
        seq: Seq(3),
        prev: Some(second),
        created: BULLETIN_3_CREATED,
        kind: Kind::IncidentMetrics {
            period_start: GENESIS_CREATED,
            period_end: METRICS_PERIOD_END,
            counts: vec![
                MetricCount {
                    name: "phishing-reports".into(),
                    value: 42,
                },
                MetricCount {
                    name: "ransomware-incidents".into(),
                    value: 3,
                },
            ],
        },
        tlp: Tlp::Amber,
        severity: Severity::Medium,
        title: "Incident metrics, 2026-01-01 to 2026-01-08".into(),
        references: vec![],
        supersedes: None,
        expires: None,
        audience,
        payload: Payload {
            content_type: "application/json".into(),
            bytes: br#"{"period":"2026-W01","source":"CERT-A hotline"}"#.to_vec(),
        },
    }
}

fn key_json(label: &str, seed: u8, key: &SecretKey) -> Value {
    json!({
        "key": label,
        "seed": hex::encode([seed; 32]),
        "public": key.id().to_string(),
    })
}

fn registry_json(name: &str, update: &SignedRegistryUpdate) -> Value {
    json!({
        "name": name,
        "version": update.body().version.0,
        "value": serde_json::to_value(update.body()).unwrap(),
        "body": hex::encode(update.body_bytes()),
        "hash": update.hash().to_string(),
        "approvals": update.approvals().iter().map(|a| json!({
            "key": a.key.to_string(),
            "signature": a.signature.to_string(),
        })).collect::<Vec<_>>(),
        "wire": hex::encode(update.to_bytes()),
    })
}

fn bulletin_json(name: &str, bulletin: &SignedBulletin) -> Value {
    json!({
        "name": name,
        "seq": bulletin.body().seq.0,
        "created": bulletin.body().created.to_string(),
        "value": serde_json::to_value(bulletin.body()).unwrap(),
        "body": hex::encode(bulletin.body_bytes()),
        "id": bulletin.id().to_string(),
        "signature": bulletin.signature().to_string(),
        "wire": hex::encode(bulletin.as_bytes()),
    })
}

fn build() -> Built {
    let founders = founders();
    let [a, b] = &founders;

    // Genesis: every key it admits approves it.
    let genesis = approved(
        &genesis_body(&founders),
        &[&a.member, &a.signing, &a.node, &b.member, &b.signing, &b.node],
    );
    let network = NetworkId::from_genesis(genesis.hash());

    // Version 2: CERT-A adds a signing key, approved by its member key (self-managed) and by the
    // new key (proof of possession).
    let new_key = new_signing_key();
    let update_2 = approved(&update_2_body(&founders, genesis.hash()), &[&a.member, &new_key]);

    // Three bulletins on CERT-A's first signing key's chain.
    let b1 = sign::sign_bulletin(&a.signing, &bulletin_1_body(network, &a.signing)).unwrap();
    let b2 = sign::sign_bulletin(&a.signing, &bulletin_2_body(network, &a.signing, b1.id())).unwrap();
    let b3 = sign::sign_bulletin(
        &a.signing,
        &bulletin_3_body(network, &a.signing, b2.id(), &founders),
    )
    .unwrap();
    let bulletins = vec![b1, b2, b3];
    let sync = sync_messages(&a.signing, &update_2, &bulletins);

    let json = json!({
        "description": "Herald golden vectors: the exact bytes of registry updates and bulletins \
            built from fixed Ed25519 seeds and fixed times. The format is specified in docs/PROTOCOL.md. \
            All hex is lowercase; ids, keys and signatures are raw bytes in hex; times are milliseconds \
            since the Unix epoch. 'value' is the decoded content (informative JSON); 'body' is the \
            canonical body encoding; 'wire' is the signed envelope as it travels.",
        "domains": {
            "bulletin": hex::encode(SPEC_BULLETIN_DOMAIN),
            "registry": hex::encode(SPEC_REGISTRY_DOMAIN),
            "member_id": hex::encode(SPEC_MEMBER_ID_DOMAIN),
        },
        "keys": [
            key_json("CERT-A member key", 1, &a.member),
            key_json("CERT-A signing key", 2, &a.signing),
            key_json("CERT-A node key", 3, &a.node),
            key_json("VENDOR-B member key", 4, &b.member),
            key_json("VENDOR-B signing key", 5, &b.signing),
            key_json("VENDOR-B node key", 6, &b.node),
            key_json("CERT-A signing key added in version 2", 7, &new_key),
        ],
        "members": founders.iter().map(|f| json!({
            "name": f.name,
            "member_id": f.id().to_string(),
        })).collect::<Vec<_>>(),
        "network_id": network.to_string(),
        "registry": [
            registry_json("genesis", &genesis),
            registry_json("version 2: CERT-A adds a signing key (self-managed)", &update_2),
        ],
        "bulletins": [
            bulletin_json("1: vulnerability advisory", &bulletins[0]),
            bulletin_json("2: software update, supersedes 1", &bulletins[1]),
            bulletin_json("3: incident metrics with an audience", &bulletins[2]),
        ],
        "sync": sync.iter().map(|(name, wire)| json!({
            "name": name,
            "wire": hex::encode(wire),
        })).collect::<Vec<_>>(),
    });

    Built {
        founders,
        genesis,
        update_2,
        bulletins,
        json,
    }
}

/// One session's messages between two holders of the vectors' registry, one of
/// which has bulletin 1 only: every sync request and response variant, with its
/// canonical bytes (section 12 of the specification; the frame's length prefix
/// is not included).
fn sync_messages(
    signer: &SecretKey,
    registry: &SignedRegistryUpdate,
    bulletins: &[SignedBulletin],
) -> Vec<(&'static str, Vec<u8>)> {
    let key = signer.id();
    let mut fingerprint = [0u8; 32];
    for seq in 1..=3 {
        xor_into(&mut fingerprint, &seq_fingerprint(&key, Seq(seq)));
    }
    let held = ChainSummary {
        key,
        contiguous: Seq(3),
        highest: Seq(3),
        count: 3,
        fingerprint,
        evidence: 0,
    };
    let version = registry.body().version;
    let digest = state_digest((version, registry.hash()), &[held]);
    let requests = [
        (
            "request: Hello",
            SyncRequest::Hello {
                registry_version: version,
                digest,
            },
        ),
        (
            "request: Registry",
            SyncRequest::Registry {
                from: RegistryVersion(2),
            },
        ),
        (
            "request: Fetch",
            SyncRequest::Fetch {
                wants: vec![Want {
                    key,
                    ranges: vec![SeqRange {
                        from: Seq(2),
                        to: Seq(3),
                    }],
                    evidence: false,
                }],
            },
        ),
        ("request: Chains", SyncRequest::Chains { after: key }),
    ];
    let responses = [
        ("response: InStep", SyncResponse::InStep),
        (
            "response: Summary",
            SyncResponse::Summary {
                registry_version: version,
                registry_hash: registry.hash(),
                chains: vec![held],
            },
        ),
        (
            "response: Registry",
            SyncResponse::Registry {
                updates: vec![registry.to_bytes()],
            },
        ),
        (
            "response: Page",
            SyncResponse::Page {
                bulletins: bulletins[1..].iter().map(SignedBulletin::to_bytes).collect(),
                complete: true,
            },
        ),
        (
            "response: Refused",
            SyncResponse::Refused {
                reason: "another network".into(),
            },
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = requests
        .into_iter()
        .map(|(name, r)| (name, r.to_bytes()))
        .collect();
    out.extend(responses.into_iter().map(|(name, r)| (name, r.to_bytes())));
    out
}

/// Asserts that `committed` has exactly the shape and values of `built`, naming the first
/// difference by its JSON pointer.
fn assert_same(pointer: &str, built: &Value, committed: &Value) {
    let hint = format!(
        "golden vector mismatch at {pointer:?}: the encoding changed. If the change is intended, \
         regenerate with {REGENERATE_VAR}=1 and update docs/PROTOCOL.md; otherwise it breaks \
         every existing signature and id"
    );
    match (built, committed) {
        (Value::Object(b), Value::Object(c)) => {
            let mut built_keys: Vec<&String> = b.keys().collect();
            let mut committed_keys: Vec<&String> = c.keys().collect();
            built_keys.sort();
            committed_keys.sort();
            assert_eq!(built_keys, committed_keys, "{hint}");
            for (k, v) in b {
                assert_same(&format!("{pointer}/{k}"), v, &c[k]);
            }
        }
        (Value::Array(b), Value::Array(c)) => {
            assert_eq!(b.len(), c.len(), "{hint}");
            for (i, (bv, cv)) in b.iter().zip(c).enumerate() {
                assert_same(&format!("{pointer}/{i}"), bv, cv);
            }
        }
        _ => assert_eq!(built, committed, "{hint}"),
    }
}

fn hex_at(value: &Value, pointer: &str) -> Vec<u8> {
    let text = value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("golden.json has no string at {pointer}"));
    hex::decode(text).unwrap_or_else(|e| panic!("golden.json {pointer} is not hex: {e}"))
}

fn regenerating() -> bool {
    std::env::var(REGENERATE_VAR).as_deref() == Ok("1")
}

#[test]
fn golden_vectors_match_the_committed_file() {
    let built = build();
    if regenerating() {
        let text = serde_json::to_string_pretty(&built.json).unwrap() + "\n";
        std::fs::write(GOLDEN_PATH, text).unwrap();
        println!("{}", bulletin_1_breakdown().1);
        panic!(
            "regenerated {GOLDEN_PATH} ({REGENERATE_VAR}=1). Update docs/PROTOCOL.md from it \
             (the breakdown is printed above), unset {REGENERATE_VAR} and run the tests again."
        );
    }
    let text = std::fs::read_to_string(GOLDEN_PATH)
        .unwrap_or_else(|e| panic!("cannot read {GOLDEN_PATH}: {e}; create it with {REGENERATE_VAR}=1"));
    let committed: Value = serde_json::from_str(&text).unwrap();
    assert_same("", &built.json, &committed);

    // The committed wire bytes decode to exactly the rebuilt values, and so do the bodies.
    let genesis = SignedRegistryUpdate::from_bytes(&hex_at(&committed, "/registry/0/wire")).unwrap();
    assert_eq!(genesis, built.genesis);
    assert_eq!(genesis.to_bytes(), hex_at(&committed, "/registry/0/wire"));
    let update_2 = SignedRegistryUpdate::from_bytes(&hex_at(&committed, "/registry/1/wire")).unwrap();
    assert_eq!(update_2, built.update_2);
    for (i, update) in [&genesis, &update_2].into_iter().enumerate() {
        let body = RegistryUpdate::from_bytes(&hex_at(&committed, &format!("/registry/{i}/body"))).unwrap();
        assert_eq!(&body, update.body());
        let value: RegistryUpdate =
            serde_json::from_value(committed["registry"][i]["value"].clone()).unwrap();
        assert_eq!(&value, update.body());
        // The hash is SHA-256 of the body bytes.
        let digest: [u8; 32] = Sha256::digest(update.body_bytes()).into();
        assert_eq!(update.hash(), RegistryHash::from_bytes(digest));
    }
    let decoded: Vec<SignedBulletin> = (0..built.bulletins.len())
        .map(|i| SignedBulletin::from_bytes(&hex_at(&committed, &format!("/bulletins/{i}/wire"))).unwrap())
        .collect();
    assert_eq!(decoded, built.bulletins);
    for (i, bulletin) in decoded.iter().enumerate() {
        let body = BulletinBody::from_bytes(&hex_at(&committed, &format!("/bulletins/{i}/body"))).unwrap();
        assert_eq!(&body, bulletin.body());
        let value: BulletinBody = serde_json::from_value(committed["bulletins"][i]["value"].clone()).unwrap();
        assert_eq!(&value, bulletin.body());
        // The id is SHA-256 of the body bytes; the wire is u64 length || body || signature.
        let digest: [u8; 32] = Sha256::digest(bulletin.body_bytes()).into();
        assert_eq!(bulletin.id(), BulletinId::from_bytes(digest));
        let mut wire = (bulletin.body_bytes().len() as u64).to_le_bytes().to_vec();
        wire.extend_from_slice(bulletin.body_bytes());
        wire.extend_from_slice(bulletin.signature().as_bytes());
        assert_eq!(wire, bulletin.as_bytes());
    }

    // The committed sync messages decode, and each re-encodes to its bytes; the
    // first byte of each is its variant index (a u32, little-endian).
    let sync = committed["sync"].as_array().unwrap();
    for (i, message) in sync.iter().enumerate() {
        let wire = hex_at(&committed, &format!("/sync/{i}/wire"));
        let name = message["name"].as_str().unwrap();
        let reencoded = if name.starts_with("request") {
            SyncRequest::from_bytes(&wire).unwrap().to_bytes()
        } else {
            SyncResponse::from_bytes(&wire).unwrap().to_bytes()
        };
        assert_eq!(reencoded, wire, "{name}");
    }
    assert_eq!(
        &hex_at(&committed, "/sync/3/wire")[..4],
        &3u32.to_le_bytes(),
        "Chains is request 3"
    );
    // The specification quotes the shortest ones.
    for i in [1, 3, 4, 8] {
        let hex = hex::encode(hex_at(&committed, &format!("/sync/{i}/wire")));
        assert!(
            PROTOCOL_MD.contains(&format!("`{hex}`")),
            "docs/PROTOCOL.md section 13.5 does not quote sync vector {i} ({hex})"
        );
    }

    // The registry verifies: genesis by its configured hash, then version 2.
    let network_hash: RegistryHash = committed["network_id"].as_str().unwrap().parse().unwrap();
    let mut registry = Registry::from_genesis(genesis, network_hash).unwrap();
    assert_eq!(registry.network(), NetworkId::from_genesis(network_hash));
    for bulletin in &decoded {
        assert_eq!(registry.check_bulletin(bulletin), Ok(built.founders[0].id()));
    }
    assert_eq!(
        registry.apply(update_2),
        Ok(Applied::Advanced(RegistryVersion(2)))
    );
    let (owner, state) = registry.current().signing_key(&new_signing_key().id()).unwrap();
    assert_eq!((owner.id, state.revoked), (built.founders[0].id(), None));

    // Every bulletin verifies against the current registry, and they form one chain.
    let mut prev = None;
    for (i, bulletin) in decoded.iter().enumerate() {
        assert_eq!(registry.check_bulletin(bulletin), Ok(built.founders[0].id()));
        assert_eq!(bulletin.body().seq, Seq(i as u64 + 1));
        assert_eq!(bulletin.body().prev, prev);
        prev = Some(bulletin.id());
    }
}

#[test]
fn definitions_hold_independently_of_the_crate_constants() {
    let built = build();
    assert_eq!(BULLETIN_DOMAIN, SPEC_BULLETIN_DOMAIN);
    assert_eq!(REGISTRY_DOMAIN, SPEC_REGISTRY_DOMAIN);
    for founder in &built.founders {
        // MemberId = SHA-256("herald/v1/member-id\0" || member key).
        let mut h = Sha256::new();
        h.update(SPEC_MEMBER_ID_DOMAIN);
        h.update(founder.member.id().as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        assert_eq!(founder.id(), MemberId::from_bytes(digest));
        // KeyId and NodeId are the raw 32-byte public keys.
        assert_eq!(
            founder.signing.id().as_bytes(),
            &founder.signing.public().to_bytes()
        );
        assert_eq!(
            founder.node.public().node_id().as_bytes(),
            &founder.node.public().to_bytes()
        );
    }
    // Signatures cover domain || body, verified with the plain (strict) Ed25519 check; the
    // same signature under the other domain does not verify.
    for bulletin in &built.bulletins {
        let key = PublicKey::from_id(&bulletin.body().signer).unwrap();
        let mut input = SPEC_BULLETIN_DOMAIN.to_vec();
        input.extend_from_slice(bulletin.body_bytes());
        assert_eq!(key.verify(&input, bulletin.signature()), Ok(()));
        let mut other = SPEC_REGISTRY_DOMAIN.to_vec();
        other.extend_from_slice(bulletin.body_bytes());
        assert!(key.verify(&other, bulletin.signature()).is_err());
    }
    for update in [&built.genesis, &built.update_2] {
        let mut input = SPEC_REGISTRY_DOMAIN.to_vec();
        input.extend_from_slice(update.body_bytes());
        for approval in update.approvals() {
            let key = PublicKey::from_id(&approval.key).unwrap();
            assert_eq!(key.verify(&input, &approval.signature), Ok(()));
        }
    }
}

/// Bulletin 1's body encoded by hand from the rules in `docs/PROTOCOL.md`, without bincode, as
/// annotated rows: offset, bytes, meaning.
struct HandEncoder {
    bytes: Vec<u8>,
    rows: Vec<String>,
}

impl HandEncoder {
    /// Bytes shown per row of the breakdown.
    const ROW: usize = 32;

    fn put(&mut self, bytes: &[u8], note: &str) {
        for (i, chunk) in bytes.chunks(Self::ROW).enumerate() {
            let note = if i == 0 { note } else { "" };
            let row = format!("{:04x}  {:<64}  {note}", self.bytes.len(), hex::encode(chunk));
            self.rows.push(row.trim_end().to_string());
            self.bytes.extend_from_slice(chunk);
        }
    }

    fn u16(&mut self, v: u16, note: &str) {
        self.put(&v.to_le_bytes(), note);
    }

    fn u32(&mut self, v: u32, note: &str) {
        self.put(&v.to_le_bytes(), note);
    }

    fn u64(&mut self, v: u64, note: &str) {
        self.put(&v.to_le_bytes(), note);
    }

    fn tag(&mut self, v: u8, note: &str) {
        self.put(&[v], note);
    }

    /// A string: u64 byte length, then the UTF-8 bytes, one row per 32 bytes with the text shown.
    fn text(&mut self, field: &str, s: &str) {
        self.u64(s.len() as u64, &format!("{field}: length {} (u64)", s.len()));
        for chunk in s.as_bytes().chunks(Self::ROW) {
            let shown = String::from_utf8_lossy(chunk).escape_debug().to_string();
            self.put(chunk, &format!("  \"{shown}\""));
        }
    }
}

/// Hand-encodes bulletin 1's body; returns the bytes and the annotated breakdown.
fn bulletin_1_breakdown() -> (Vec<u8>, String) {
    let founders = founders();
    let a = &founders[0];
    let genesis = approved(&genesis_body(&founders), &[]);
    let mut e = HandEncoder {
        bytes: Vec::new(),
        rows: vec![format!("{:<4}  {:<64}  {}", "off", "bytes (hex)", "field")],
    };
    e.u16(1, "format: u16 = 1");
    e.put(
        genesis.hash().as_bytes(),
        "network: NetworkId, 32 bytes (genesis hash)",
    );
    e.put(
        a.signing.id().as_bytes(),
        "signer: KeyId, 32 bytes (CERT-A signing key)",
    );
    e.u64(1, "seq: u64 = 1");
    e.tag(0, "prev: Option tag 0 = None");
    e.u64(
        BULLETIN_1_CREATED.as_millis(),
        &format!("created: u64 ms = {BULLETIN_1_CREATED}"),
    );
    e.u32(0, "kind: variant 0 = VulnerabilityAdvisory");
    e.u32(0, "  status: AdvisoryStatus variant 0 = UnderInvestigation");
    e.u32(1, "tlp: variant 1 = Green");
    e.u32(3, "severity: variant 3 = High");
    e.text("title", B1_TITLE);
    e.u64(2, "references: count 2 (u64)");
    e.u32(0, "  [0] Reference variant 0 = Cve");
    e.text("  [0] Cve", B1_CVE);
    e.u32(1, "  [1] Reference variant 1 = Url");
    e.text("  [1] Url", B1_URL);
    e.tag(0, "supersedes: Option tag 0 = None");
    e.tag(0, "expires: Option tag 0 = None");
    e.u64(0, "audience: count 0 (u64) = every member");
    e.text("payload.content_type", B1_CONTENT_TYPE);
    e.text("payload.bytes", B1_PAYLOAD);
    let end = format!("{:04x}  (end: {} bytes)", e.bytes.len(), e.bytes.len());
    e.rows.push(end);
    let mut text = e.rows.join("\n");
    text.push('\n');
    (e.bytes, text)
}

/// The annotated wire form of bulletin 1: length prefix, body (abbreviated), signature.
fn bulletin_1_wire_breakdown(bulletin: &SignedBulletin) -> String {
    let body = bulletin.body_bytes();
    let sig = bulletin.signature().as_bytes();
    let n = body.len();
    let row = |off: usize, hex: String, note: String| format!("{off:04x}  {hex:<64}  {note}");
    let rows = [
        row(
            0,
            hex::encode((n as u64).to_le_bytes()),
            format!("body length: u64 = {n}"),
        ),
        row(
            8,
            format!("{}…{}", hex::encode(&body[..4]), hex::encode(&body[n - 2..])),
            format!("body: the {n} bytes above"),
        ),
        row(8 + n, hex::encode(&sig[..32]), "signature R, 32 bytes".into()),
        row(
            8 + n + 32,
            hex::encode(&sig[32..]),
            "signature S, 32 bytes".into(),
        ),
        format!("{:04x}  (end: {} bytes)", 8 + n + 64, 8 + n + 64),
    ];
    let header = format!("{:<4}  {:<64}  {}", "off", "bytes (hex)", "field");
    let mut text = std::iter::once(header).chain(rows).collect::<Vec<_>>().join("\n");
    text.push('\n');
    text
}

#[test]
fn bulletin_1_hand_encoding_matches_the_encoder() {
    let built = build();
    let (bytes, _) = bulletin_1_breakdown();
    assert_eq!(
        hex::encode(&bytes),
        hex::encode(built.bulletins[0].body_bytes()),
        "the hand encoding from the rules in docs/PROTOCOL.md disagrees with the encoder"
    );
}

#[test]
fn protocol_md_quotes_the_golden_vectors() {
    if regenerating() {
        return;
    }
    let built = build();
    let first = &built.bulletins[0];
    let mut quoted = vec![
        ("genesis hash (network id)", built.genesis.hash().to_string()),
        ("genesis body", hex::encode(built.genesis.body_bytes())),
        ("version 2 hash", built.update_2.hash().to_string()),
        ("bulletin 1 body", hex::encode(first.body_bytes())),
        ("bulletin 1 id", first.id().to_string()),
        ("bulletin 1 signature", first.signature().to_string()),
        ("bulletin 1 wire", hex::encode(first.as_bytes())),
        ("bulletin domain", hex::encode(SPEC_BULLETIN_DOMAIN)),
        ("registry domain", hex::encode(SPEC_REGISTRY_DOMAIN)),
        ("member id domain", hex::encode(SPEC_MEMBER_ID_DOMAIN)),
    ];
    for f in &built.founders {
        quoted.push(("member id", f.id().to_string()));
        for key in [&f.member, &f.signing, &f.node] {
            quoted.push(("public key", key.id().to_string()));
        }
    }
    for (what, hex) in quoted {
        assert!(
            PROTOCOL_MD.contains(&hex),
            "docs/PROTOCOL.md does not quote the {what} {hex}; update its golden vectors section"
        );
    }
    let wire_breakdown = bulletin_1_wire_breakdown(first);
    assert!(
        PROTOCOL_MD.contains(&wire_breakdown),
        "docs/PROTOCOL.md does not contain the current breakdown of bulletin 1's wire form:\n{wire_breakdown}"
    );
    let (_, breakdown) = bulletin_1_breakdown();
    assert!(
        PROTOCOL_MD.contains(&breakdown),
        "docs/PROTOCOL.md does not contain the current byte-by-byte breakdown of bulletin 1:\n{breakdown}"
    );
}

/// The `u32` at `offset`: where an encoded enum's variant index sits.
fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

/// Asserts that `indexes[i]` is `i` and that the doc lists variant `i` by `names[i]`
/// in the form `pattern(i, name)`.
fn assert_variants(what: &str, indexes: &[u32], names: &[&str], pattern: fn(usize, &str) -> String) {
    assert_eq!(indexes.len(), names.len());
    for (i, (&index, name)) in indexes.iter().zip(names).enumerate() {
        assert_eq!(
            index as usize, i,
            "{what}::{name} encodes as variant {index}, not {i}"
        );
        let listed = pattern(i, name);
        assert!(
            PROTOCOL_MD.contains(&listed),
            "docs/PROTOCOL.md does not list {what} variant {listed:?}"
        );
    }
}

fn inline_variant(i: usize, name: &str) -> String {
    format!("`{i}` {name}")
}

fn table_variant(i: usize, name: &str) -> String {
    format!("| {i} | {name} |")
}

#[test]
fn protocol_md_lists_every_enum_variant_index() {
    let founders = founders();
    let a = &founders[0];
    let network = NetworkId::from_genesis(approved(&genesis_body(&founders), &[]).hash());
    let base = bulletin_1_body(network, &a.signing);
    let encode = |f: &dyn Fn(&mut BulletinBody)| {
        let mut body = base.clone();
        f(&mut body);
        body.to_bytes().unwrap()
    };
    // Offsets in bulletin 1's layout (see the breakdown): kind, its first field, tlp,
    // severity, the first reference.
    let (kind, kind_field, tlp, severity, reference) = (0x53, 0x57, 0x5b, 0x5f, 0x9f);
    let id = BulletinId::from_bytes([9; 32]);

    let tlps = [Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::AmberStrict, Tlp::Red];
    let idx: Vec<u32> = tlps
        .iter()
        .map(|&t| u32_at(&encode(&|b| b.tlp = t), tlp))
        .collect();
    assert_variants(
        "Tlp",
        &idx,
        &["Clear", "Green", "Amber", "AmberStrict", "Red"],
        inline_variant,
    );

    let severities = [
        Severity::Informational,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
    let idx: Vec<u32> = severities
        .iter()
        .map(|&s| u32_at(&encode(&|b| b.severity = s), severity))
        .collect();
    let names = ["Informational", "Low", "Medium", "High", "Critical"];
    assert_variants("Severity", &idx, &names, inline_variant);

    use herald_protocol::{FollowUpAction as F, IncidentPhase as P};
    let statuses = [
        AdvisoryStatus::UnderInvestigation,
        AdvisoryStatus::Confirmed,
        AdvisoryStatus::Mitigated,
        AdvisoryStatus::Fixed,
        AdvisoryStatus::NotAffected,
    ];
    let at_field = |k: Kind, offset: usize| u32_at(&encode(&|b| b.kind = k.clone()), offset);
    let idx: Vec<u32> = statuses
        .iter()
        .map(|&status| at_field(Kind::VulnerabilityAdvisory { status }, kind_field))
        .collect();
    let names = [
        "UnderInvestigation",
        "Confirmed",
        "Mitigated",
        "Fixed",
        "NotAffected",
    ];
    assert_variants("AdvisoryStatus", &idx, &names, inline_variant);

    let idx: Vec<u32> = [UpdateStage::Upcoming, UpdateStage::Released]
        .iter()
        .map(|&stage| at_field(Kind::SoftwareUpdate { stage }, kind_field))
        .collect();
    assert_variants("UpdateStage", &idx, &["Upcoming", "Released"], inline_variant);

    let idx: Vec<u32> = [P::Detected, P::Ongoing, P::Contained, P::Resolved]
        .iter()
        .map(|&phase| at_field(Kind::IncidentReport { phase }, kind_field))
        .collect();
    assert_variants(
        "IncidentPhase",
        &idx,
        &["Detected", "Ongoing", "Contained", "Resolved"],
        inline_variant,
    );

    let idx: Vec<u32> = [
        F::Acknowledge,
        F::Update,
        F::RequestInformation,
        F::Answer,
        F::Close,
    ]
    .iter()
    .map(|&action| at_field(Kind::FollowUp { on: id, action }, kind_field + 32))
    .collect();
    let names = ["Acknowledge", "Update", "RequestInformation", "Answer", "Close"];
    assert_variants("FollowUpAction", &idx, &names, inline_variant);

    let kinds = [
        Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::Fixed,
        },
        Kind::SoftwareUpdate {
            stage: UpdateStage::Upcoming,
        },
        Kind::IncidentReport { phase: P::Detected },
        Kind::IncidentMetrics {
            period_start: Timestamp(0),
            period_end: Timestamp(1),
            counts: vec![],
        },
        Kind::EmergencyAlert,
        Kind::ProductSecurity,
        Kind::Outreach,
        Kind::FollowUp {
            on: id,
            action: F::Close,
        },
        Kind::Withdrawal {
            of: id,
            reason: "wrong product".into(),
        },
    ];
    let idx: Vec<u32> = kinds.into_iter().map(|k| at_field(k, kind)).collect();
    let names = [
        "VulnerabilityAdvisory",
        "SoftwareUpdate",
        "IncidentReport",
        "IncidentMetrics",
        "EmergencyAlert",
        "ProductSecurity",
        "Outreach",
        "FollowUp",
        "Withdrawal",
    ];
    assert_variants("Kind", &idx, &names, table_variant);

    let refs = [
        Reference::Cve(B1_CVE.into()),
        Reference::Url(B1_URL.into()),
        Reference::Bulletin(id),
    ];
    let idx: Vec<u32> = refs
        .into_iter()
        .map(|r| u32_at(&encode(&|b| b.references = vec![r.clone()]), reference))
        .collect();
    assert_variants("Reference", &idx, &["Cve", "Url", "Bulletin"], inline_variant);

    // A version-2 update with one op: format 2, version 8, prev 1 + 32, created 8, count 8.
    let op_at = 2 + 8 + 33 + 8 + 8;
    let encode_op = |op: RegistryOp| {
        let mut body = update_2_body(&founders, RegistryHash::from_bytes([8; 32]));
        body.ops = vec![op];
        body.to_bytes().unwrap()
    };
    let (member, key) = (a.id(), a.signing.id());
    let node = a.node.public().node_id();
    let ops = [
        RegistryOp::AddMember(a.entry()),
        RegistryOp::RemoveMember {
            member,
            at: Timestamp(5),
        },
        RegistryOp::SetThreshold { threshold: 1 },
        RegistryOp::AddSigningKey { member, key },
        RegistryOp::RevokeSigningKey {
            member,
            key,
            from: herald_protocol::RevocationPoint::Seq(Seq(1)),
        },
        RegistryOp::AddNode { member, node },
        RegistryOp::RemoveNode { member, node },
        RegistryOp::RotateMemberKey { member, new_key: key },
    ];
    let idx: Vec<u32> = ops.into_iter().map(|op| u32_at(&encode_op(op), op_at)).collect();
    let names = [
        "AddMember",
        "RemoveMember",
        "SetThreshold",
        "AddSigningKey",
        "RevokeSigningKey",
        "AddNode",
        "RemoveNode",
        "RotateMemberKey",
    ];
    assert_variants("RegistryOp", &idx, &names, table_variant);

    use herald_protocol::RevocationPoint as R;
    let idx: Vec<u32> = [R::Seq(Seq(1)), R::Time(Timestamp(1))]
        .into_iter()
        .map(|from| {
            u32_at(
                &encode_op(RegistryOp::RevokeSigningKey { member, key, from }),
                op_at + 4 + 64,
            )
        })
        .collect();
    assert_variants("RevocationPoint", &idx, &["Seq", "Time"], inline_variant);
}

/// `1234567` as `1 234 567`, as the limits table writes numbers (four digits stay together).
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    if digits.len() <= 4 {
        return digits;
    }
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[test]
fn protocol_md_states_the_limits() {
    use herald_protocol::{bulletin as b, registry as r};
    let limits = [
        ("MAX_BULLETIN_BYTES", b::MAX_BULLETIN_BYTES),
        ("MAX_TITLE_BYTES", b::MAX_TITLE_BYTES),
        ("MAX_REFERENCES", b::MAX_REFERENCES),
        ("MAX_REFERENCE_BYTES", b::MAX_REFERENCE_BYTES),
        ("MAX_AUDIENCE", b::MAX_AUDIENCE),
        ("MAX_CONTENT_TYPE_BYTES", b::MAX_CONTENT_TYPE_BYTES),
        ("MAX_REASON_BYTES", b::MAX_REASON_BYTES),
        ("MAX_METRICS", b::MAX_METRICS),
        ("MAX_METRIC_NAME_BYTES", b::MAX_METRIC_NAME_BYTES),
        ("MAX_REGISTRY_BODY_BYTES", r::MAX_REGISTRY_BODY_BYTES),
        ("MAX_REGISTRY_UPDATE_BYTES", r::MAX_REGISTRY_UPDATE_BYTES),
        ("MAX_OPS", r::MAX_OPS),
        ("MAX_APPROVALS", r::MAX_APPROVALS),
        ("MAX_KEYS_PER_MEMBER", r::MAX_KEYS_PER_MEMBER),
        ("MAX_MEMBER_NAME_BYTES", r::MAX_MEMBER_NAME_BYTES),
    ];
    for (name, value) in limits {
        let row = format!("| `{name}` | {} ", grouped(value));
        assert!(
            PROTOCOL_MD.contains(&row),
            "docs/PROTOCOL.md does not state {row:?}"
        );
    }
    assert_eq!(b::ENVELOPE_OVERHEAD, 72);
    assert!(PROTOCOL_MD.contains(&format!("| (body) | {} |", grouped(b::MAX_BULLETIN_BYTES - 72))));
    assert_eq!((b::BULLETIN_FORMAT, r::REGISTRY_FORMAT), (1, 1));
}
