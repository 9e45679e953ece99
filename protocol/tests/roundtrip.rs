//! Round-trip properties of the canonical encoding: every valid bulletin body,
//! signed bulletin, registry update and signed registry update encodes to bytes
//! that decode to the same value and re-encode to the same bytes, with ids and
//! hashes computed over the exact body bytes (architecture invariants 1 and 4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_protocol::{
    Approval, BulletinBody, BulletinId, DecodeError, KeyId, MAX_BULLETIN_BYTES, MAX_REGISTRY_UPDATE_BYTES,
    MemberEntry, MemberId, NodeId, RegistryHash, RegistryOp, RegistryUpdate, RegistryVersion, Signature,
    SignedBulletin, SignedRegistryUpdate, Timestamp, registry::MAX_REGISTRY_BODY_BYTES,
};
use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bulletin_body_round_trips(body in bulletin_body()) {
        let bytes = body.to_bytes().unwrap();
        let decoded = BulletinBody::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&decoded, &body);
        prop_assert_eq!(decoded.to_bytes().unwrap(), bytes.clone());
        // The crate's encoder is exactly bincode 2 with fixed-width little-endian ints.
        prop_assert_eq!(raw_encode(&body), bytes);
    }

    #[test]
    fn signed_bulletin_round_trips(body in bulletin_body(), sig_byte in any::<u8>()) {
        let body_bytes = body.to_bytes().unwrap();
        let signature = Signature::from_bytes(&[sig_byte; 64]);
        let signed = SignedBulletin::from_parts(body_bytes.clone(), signature).unwrap();

        // Envelope layout: u64 LE body length, body bytes, 64-byte signature.
        let wire = signed.as_bytes();
        prop_assert_eq!(wire.len(), 8 + body_bytes.len() + 64);
        prop_assert_eq!(&wire[..8], &(body_bytes.len() as u64).to_le_bytes()[..]);
        prop_assert_eq!(&wire[wire.len() - 64..], &[sig_byte; 64][..]);
        prop_assert!(wire.len() <= MAX_BULLETIN_BYTES);

        let decoded = SignedBulletin::from_bytes(wire).unwrap();
        prop_assert_eq!(&decoded, &signed);
        prop_assert_eq!(decoded.as_bytes(), wire);
        prop_assert_eq!(decoded.to_bytes(), wire.to_vec());
        prop_assert_eq!(decoded.body_bytes(), &body_bytes[..]);
        prop_assert_eq!(decoded.body(), &body);
        prop_assert_eq!(decoded.signature(), &signature);
        prop_assert_eq!(decoded.id(), BulletinId::of_body(&body_bytes));
        prop_assert_eq!(signed.id(), decoded.id());
    }

    #[test]
    fn bulletin_id_ignores_the_signature(body in bulletin_body(), a in any::<[u8; 64]>(), b in any::<[u8; 64]>()) {
        let body_bytes = body.to_bytes().unwrap();
        let one = SignedBulletin::from_parts(body_bytes.clone(), Signature::from_bytes(&a)).unwrap();
        let two = SignedBulletin::from_parts(body_bytes, Signature::from_bytes(&b)).unwrap();
        prop_assert_eq!(one.id(), two.id());
        prop_assert_eq!(one.body_bytes(), two.body_bytes());
        prop_assert_eq!(a == b, one.as_bytes() == two.as_bytes());
    }

    #[test]
    fn bulletin_body_json_round_trips(body in bulletin_body()) {
        let json = serde_json::to_string(&body).unwrap();
        let back: BulletinBody = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, body);
    }

    #[test]
    fn registry_update_round_trips(update in registry_update()) {
        let bytes = update.to_bytes().unwrap();
        let decoded = RegistryUpdate::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&decoded, &update);
        prop_assert_eq!(decoded.to_bytes().unwrap(), bytes.clone());
        prop_assert_eq!(raw_encode(&update), bytes);
    }

    #[test]
    fn signed_registry_update_round_trips(update in registry_update(), approvals in vec(approval(), 0..6)) {
        let body_bytes = update.to_bytes().unwrap();
        let signed = SignedRegistryUpdate::from_parts(body_bytes.clone(), approvals.clone()).unwrap();
        let wire = signed.to_bytes();
        prop_assert_eq!(wire.len(), 8 + body_bytes.len() + 8 + 96 * approvals.len());
        prop_assert_eq!(&wire[..8], &(body_bytes.len() as u64).to_le_bytes()[..]);

        let decoded = SignedRegistryUpdate::from_bytes(&wire).unwrap();
        prop_assert_eq!(&decoded, &signed);
        prop_assert_eq!(decoded.to_bytes(), wire);
        prop_assert_eq!(decoded.body_bytes(), &body_bytes[..]);
        prop_assert_eq!(decoded.body(), &update);
        prop_assert_eq!(decoded.approvals(), &approvals[..]);
        prop_assert_eq!(decoded.hash(), RegistryHash::of_body(&body_bytes));
    }

    #[test]
    fn pushed_approvals_round_trip(update in registry_update(), approvals in vec(approval(), 1..6)) {
        let body_bytes = update.to_bytes().unwrap();
        let mut signed = SignedRegistryUpdate::from_parts(body_bytes, Vec::new()).unwrap();
        let hash = signed.hash();
        for a in &approvals {
            signed.push_approval(*a).unwrap();
        }
        let decoded = SignedRegistryUpdate::from_bytes(&signed.to_bytes()).unwrap();
        prop_assert_eq!(decoded.approvals(), &approvals[..]);
        prop_assert_eq!(decoded.hash(), hash);
    }

    #[test]
    fn registry_update_json_round_trips(update in registry_update()) {
        let json = serde_json::to_string(&update).unwrap();
        let back: RegistryUpdate = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, update);
    }
}

// ---------------------------------------------------------------------------
// Fixed layout and size boundaries
// ---------------------------------------------------------------------------

/// The first bytes of a body, field by field, as docs/PROTOCOL.md must describe them.
#[test]
fn body_header_layout_is_fixed_width_little_endian() {
    let body = sample_body_seq2();
    let bytes = body.to_bytes().unwrap();
    assert_eq!(&bytes[0..2], &1u16.to_le_bytes(), "format");
    assert_eq!(&bytes[2..34], &[0x01; 32], "network");
    assert_eq!(&bytes[34..66], &[0x02; 32], "signer");
    assert_eq!(&bytes[66..74], &2u64.to_le_bytes(), "seq");
    assert_eq!(bytes[74], 1, "prev: Some");
    assert_eq!(&bytes[75..107], &[0x04; 32], "prev id");
    assert_eq!(&bytes[107..115], &1_700_000_000_000u64.to_le_bytes(), "created");
    assert_eq!(
        &bytes[115..119],
        &4u32.to_le_bytes(),
        "kind: EmergencyAlert is variant 4"
    );
    assert_eq!(&bytes[119..123], &2u32.to_le_bytes(), "tlp: Amber is variant 2");
    assert_eq!(
        &bytes[123..127],
        &3u32.to_le_bytes(),
        "severity: High is variant 3"
    );
    assert_eq!(
        &bytes[127..135],
        &(TITLE.len() as u64).to_le_bytes(),
        "title length"
    );
    assert_eq!(&bytes[135..135 + TITLE.len()], TITLE.as_bytes(), "title");
    // The payload bytes end the body.
    assert!(bytes.ends_with(PAYLOAD));
    let at = len_prefix_offset(&bytes, PAYLOAD);
    assert_eq!(at + 8 + PAYLOAD.len(), bytes.len());
}

#[test]
fn sample_values_round_trip() {
    let signed = sample_signed();
    assert_eq!(SignedBulletin::from_bytes(signed.as_bytes()).unwrap(), signed);
    let update = sample_signed_update();
    assert_eq!(
        SignedRegistryUpdate::from_bytes(&update.to_bytes()).unwrap(),
        update
    );
    let seq2 = sample_body_seq2();
    assert_eq!(BulletinBody::from_bytes(&seq2.to_bytes().unwrap()).unwrap(), seq2);
}

/// A body padded with payload bytes so that the signed bulletin is `total` bytes.
fn body_with_wire_size(total: usize) -> BulletinBody {
    let mut body = sample_body();
    body.payload.bytes.clear();
    let base = body.to_bytes().unwrap().len() + 8 + 64;
    body.payload.bytes = vec![0xab; total - base];
    body
}

#[test]
fn largest_bulletin_round_trips() {
    let body = body_with_wire_size(MAX_BULLETIN_BYTES);
    let body_bytes = body.to_bytes().unwrap();
    let signed = SignedBulletin::from_parts(body_bytes.clone(), Signature::from_bytes(&[7; 64])).unwrap();
    assert_eq!(signed.as_bytes().len(), MAX_BULLETIN_BYTES);
    let decoded = SignedBulletin::from_bytes(signed.as_bytes()).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(decoded.body_bytes(), &body_bytes[..]);
    assert_eq!(BulletinBody::from_bytes(&body_bytes).unwrap(), body);
}

#[test]
fn one_byte_over_the_largest_bulletin_is_refused_at_encoding() {
    let mut body = body_with_wire_size(MAX_BULLETIN_BYTES);
    body.payload.bytes.push(0);
    assert_eq!(
        body.to_bytes(),
        Err(DecodeError::TooLarge {
            len: MAX_BULLETIN_BYTES + 1,
            max: MAX_BULLETIN_BYTES
        })
    );
}

#[test]
fn every_kind_of_reference_and_kind_round_trips_in_one_body() {
    use herald_protocol::{FollowUpAction, Kind, MetricCount, Reference};
    let kinds = [
        Kind::IncidentMetrics {
            period_start: Timestamp(10),
            period_end: Timestamp(20),
            counts: vec![MetricCount {
                name: "phishing-reports".into(),
                value: u64::MAX,
            }],
        },
        Kind::FollowUp {
            on: BulletinId::from_bytes([9; 32]),
            action: FollowUpAction::RequestInformation,
        },
        Kind::Withdrawal {
            of: BulletinId::from_bytes([8; 32]),
            reason: "published to the wrong audience".into(),
        },
    ];
    for kind in kinds {
        let mut body = sample_body();
        body.kind = kind;
        body.references.push(Reference::Cve("CVE-2024-1234567".into()));
        body.references
            .push(Reference::Url("http://example.org/a?b=c".into()));
        let bytes = body.to_bytes().unwrap();
        assert_eq!(BulletinBody::from_bytes(&bytes).unwrap(), body);
    }
}

// ---------------------------------------------------------------------------
// Registry size boundary
// ---------------------------------------------------------------------------

/// An `AddMember` op with 64 signing keys and 64 nodes: about 4 KiB on the wire.
fn big_member(i: u32, name_len: usize) -> RegistryOp {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let member_key = KeyId::from_bytes(seed);
    RegistryOp::AddMember(MemberEntry {
        id: MemberId::derive(&member_key),
        name: "m".repeat(name_len),
        member_key,
        signing_keys: (0..64u8)
            .map(|k| {
                let mut b = seed;
                b[31] = k;
                KeyId::from_bytes(b)
            })
            .collect(),
        node_ids: (0..64u8)
            .map(|k| {
                let mut b = seed;
                b[30] = k;
                NodeId::from_bytes(b)
            })
            .collect(),
    })
}

/// A registry update body of exactly `target` bytes built from large `AddMember`
/// ops (whose names absorb the remainder), optionally followed by `small` tiny ops.
fn update_of_size(target: usize, small: usize) -> RegistryUpdate {
    let mut update = RegistryUpdate {
        format: FORMAT,
        version: RegistryVersion(2),
        prev: Some(RegistryHash::from_bytes([1; 32])),
        created: Timestamp(1),
        ops: (0..small)
            .map(|_| RegistryOp::SetThreshold { threshold: 2 })
            .collect(),
    };
    let base = raw_encode(&update).len();
    let per_op = {
        let mut u = update.clone();
        u.ops.push(big_member(0, 1));
        raw_encode(&u).len() - base
    };
    let count = (target - base) / per_op;
    for i in 0..count {
        update.ops.insert(0, big_member(u32::try_from(i).unwrap(), 1));
    }
    // Spread the remainder over the names (each may grow to 128 bytes).
    let mut rest = target - raw_encode(&update).len();
    for op in &mut update.ops {
        if let RegistryOp::AddMember(m) = op {
            let grow = rest.min(127);
            m.name.push_str(&"n".repeat(grow));
            rest -= grow;
        }
    }
    assert_eq!(rest, 0, "could not pad the update to {target} bytes");
    assert_eq!(update.to_bytes().unwrap().len(), target);
    update
}

/// A registry update body at the size limit minus its envelope decodes, signs
/// and round-trips.
#[test]
fn large_registry_update_round_trips() {
    let approvals = sample_approvals();
    let count = approvals.len();
    let update = update_of_size(MAX_REGISTRY_BODY_BYTES, 0);
    let bytes = update.to_bytes().unwrap();
    assert_eq!(RegistryUpdate::from_bytes(&bytes).unwrap(), update);
    let signed = SignedRegistryUpdate::from_parts(bytes, approvals).unwrap();
    assert_eq!(signed.to_bytes().len(), MAX_REGISTRY_BODY_BYTES + 16 + 96 * count);
    assert!(signed.to_bytes().len() <= MAX_REGISTRY_UPDATE_BYTES);
    assert_eq!(
        SignedRegistryUpdate::from_bytes(&signed.to_bytes()).unwrap(),
        signed
    );
}

/// The body limit leaves room for the envelope: an update that can be built and
/// signed at the largest body size can also be received.
#[test]
fn registry_update_at_the_body_limit_can_be_received_once_signed() {
    let update = update_of_size(MAX_REGISTRY_BODY_BYTES, 0);
    let bytes = update.to_bytes().unwrap();
    let signed = SignedRegistryUpdate::from_parts(bytes, sample_approvals()).unwrap();
    let received = SignedRegistryUpdate::from_bytes(&signed.to_bytes());
    assert!(received.as_ref() == Ok(&signed), "{:?}", received.err());
}

/// bincode claims each list's *in-memory* size (`len * size_of::<T>()`) up front;
/// `size_of::<RegistryOp>()` is far larger than a `SetThreshold` op on the wire,
/// so the allocation limit is kept apart from (and above) the input limit: a
/// valid body under the byte limit with many small ops decodes.
#[test]
fn registry_update_under_the_byte_limit_with_many_small_ops_decodes() {
    let small = 700;
    let target = MAX_REGISTRY_BODY_BYTES - 4096;
    let update = update_of_size(target, small);
    assert!(update.ops.len() <= 1024);
    let bytes = update.to_bytes().unwrap();
    assert!(bytes.len() < MAX_REGISTRY_BODY_BYTES);
    let decoded = RegistryUpdate::from_bytes(&bytes);
    assert!(decoded.as_ref() == Ok(&update), "{:?}", decoded.err());
}

/// A locally assembled update is always receivable: assembly refuses more
/// approvals than `from_bytes` accepts.
#[test]
fn assembled_update_with_too_many_approvals_is_refused_when_assembled() {
    let approvals: Vec<Approval> = (0..1025u32)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            Approval {
                key: KeyId::from_bytes(key),
                signature: Signature::from_bytes(&[1; 64]),
            }
        })
        .collect();
    let bytes = sample_genesis().to_bytes().unwrap();
    let assembled = SignedRegistryUpdate::from_parts(bytes, approvals);
    // Either assembly refuses it, or what was assembled can be received.
    if let Ok(signed) = assembled {
        let received = SignedRegistryUpdate::from_bytes(&signed.to_bytes());
        assert!(received.as_ref() == Ok(&signed), "{:?}", received.err());
    }
}

#[test]
fn the_list_of_kind_names_is_every_kind_in_order() {
    use herald_protocol::{AdvisoryStatus, FollowUpAction, IncidentPhase, Kind, UpdateStage};
    let id = BulletinId::from_bytes([1; 32]);
    let kinds = [
        Kind::VulnerabilityAdvisory {
            status: AdvisoryStatus::Confirmed,
        },
        Kind::SoftwareUpdate {
            stage: UpdateStage::Released,
        },
        Kind::IncidentReport {
            phase: IncidentPhase::Ongoing,
        },
        Kind::IncidentMetrics {
            period_start: Timestamp(1),
            period_end: Timestamp(2),
            counts: Vec::new(),
        },
        Kind::EmergencyAlert,
        Kind::ProductSecurity,
        Kind::Outreach,
        Kind::FollowUp {
            on: id,
            action: FollowUpAction::Acknowledge,
        },
        Kind::Withdrawal {
            of: id,
            reason: String::new(),
        },
    ];
    let names: Vec<&str> = kinds.iter().map(Kind::name).collect();
    assert_eq!(names, Kind::NAMES);
    for name in Kind::NAMES {
        assert_eq!(Kind::check_name(name), Ok(()));
    }
    let refused = Kind::check_name("advisories").unwrap_err();
    assert!(refused.contains("follow-up, withdrawal"), "{refused}");
}
