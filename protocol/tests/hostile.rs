//! Hostile-input unit tests for every decoder: each crafted input is refused with
//! the specific `DecodeError` variant, before any large allocation (architecture
//! invariant 2: every decode has a limit; invariant 1: no trailing bytes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_protocol::{
    BulletinBody, BulletinId, DecodeError, FollowUpAction, KeyId, Kind, MAX_BULLETIN_BYTES,
    MAX_REGISTRY_UPDATE_BYTES, MemberId, MetricCount, Payload, Reference, RegistryHash, RegistryOp,
    RegistryUpdate, RegistryVersion, RevocationPoint, Seq, Signature, SignedBulletin, SignedRegistryUpdate,
    Timestamp,
};

/// 2^40: the element count that aborts a decoder without limits.
const HUGE: u64 = 1 << 40;
/// Largest body: the bulletin limit minus the 8-byte length prefix and 64-byte signature.
const MAX_BODY_BYTES: usize = MAX_BULLETIN_BYTES - 8 - 64;

/// The 12-byte input: a u64 LE length of 2^40 and four more bytes.
fn twelve_bytes_claiming_2_pow_40() -> [u8; 12] {
    let mut input = [0u8; 12];
    input[..8].copy_from_slice(&HUGE.to_le_bytes());
    assert_eq!(input, [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    input
}

/// A length claim beyond the limit is refused before allocation. Claims above
/// the decoder's allocation bound (the input limit plus a small slack for
/// in-memory list sizes) give `LengthOverLimit`; claims within that bound but
/// beyond the input fail when the input runs out (`Truncated`), or earlier
/// when the bytes that follow do not decode (`Malformed`). All are refusals
/// with no allocation beyond the bound.
fn assert_over_limit<T: std::fmt::Debug>(result: Result<T, DecodeError>, max: usize) {
    match result {
        Err(DecodeError::LengthOverLimit { max: m }) => assert_eq!(m, max),
        Err(DecodeError::Truncated) | Err(DecodeError::Malformed(_)) => {}
        other => panic!("expected LengthOverLimit {{ max: {max} }} or Truncated, got {other:?}"),
    }
}

/// A claim far beyond any bound (2^40, u64::MAX) is always `LengthOverLimit`.
fn assert_far_over_limit<T: std::fmt::Debug>(result: Result<T, DecodeError>, max: usize) {
    match result {
        Err(DecodeError::LengthOverLimit { max: m }) => assert_eq!(m, max),
        other => panic!("expected LengthOverLimit {{ max: {max} }}, got {other:?}"),
    }
}

fn assert_malformed<T: std::fmt::Debug>(result: Result<T, DecodeError>) {
    assert!(
        matches!(result, Err(DecodeError::Malformed(_))),
        "expected Malformed, got {result:?}"
    );
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, DecodeError>, needle: &str) {
    match result {
        Err(DecodeError::Invalid(msg)) => assert!(msg.contains(needle), "Invalid({msg:?}) lacks {needle:?}"),
        other => panic!("expected Invalid(..{needle}..), got {other:?}"),
    }
}

/// Checks a crafted body through all three bulletin entry points: the body
/// decoder, `SignedBulletin::from_parts`, and a hand-made envelope.
fn check_body<F: Fn(Result<(), DecodeError>)>(body: &[u8], check: F) {
    check(BulletinBody::from_bytes(body).map(drop));
    check(SignedBulletin::from_parts(body.to_vec(), Signature::from_bytes(&[0; 64])).map(drop));
    check(SignedBulletin::from_bytes(&envelope(body, [0; 64])).map(drop));
}

/// Checks a crafted registry body through the body decoder, `from_parts` and an envelope.
fn check_registry_body<F: Fn(Result<(), DecodeError>)>(body: &[u8], check: F) {
    check(RegistryUpdate::from_bytes(body).map(drop));
    check(SignedRegistryUpdate::from_parts(body.to_vec(), Vec::new()).map(drop));
    check(SignedRegistryUpdate::from_bytes(&registry_envelope(body, &[([1; 32], [2; 64])])).map(drop));
}

// ---------------------------------------------------------------------------
// Length claims over the limit
// ---------------------------------------------------------------------------

#[test]
fn twelve_bytes_claiming_2_pow_40_elements_are_refused_without_allocating() {
    // With bincode's default configuration this input aborts the process on the
    // allocation; reaching the assertions at all shows it did not allocate.
    let input = twelve_bytes_claiming_2_pow_40();
    assert_far_over_limit(SignedBulletin::from_bytes(&input), MAX_BULLETIN_BYTES);
    assert_far_over_limit(
        SignedRegistryUpdate::from_bytes(&input),
        MAX_REGISTRY_UPDATE_BYTES,
    );
    // The body decoders need more than 12 bytes before their first length field.
    assert_eq!(BulletinBody::from_bytes(&input), Err(DecodeError::Truncated));
    assert_eq!(RegistryUpdate::from_bytes(&input), Err(DecodeError::Truncated));
}

#[test]
fn envelope_lengths_just_over_and_far_over_the_limit() {
    for claim in [
        MAX_BULLETIN_BYTES as u64,
        u64::from(u32::MAX),
        u64::MAX / 2,
        u64::MAX,
    ] {
        let mut input = claim.to_le_bytes().to_vec();
        input.extend_from_slice(&[0; 64]);
        assert_over_limit(SignedBulletin::from_bytes(&input), MAX_BULLETIN_BYTES);
    }
    for claim in [MAX_REGISTRY_UPDATE_BYTES as u64, u64::MAX] {
        let mut input = claim.to_le_bytes().to_vec();
        input.extend_from_slice(&[0; 64]);
        assert_over_limit(
            SignedRegistryUpdate::from_bytes(&input),
            MAX_REGISTRY_UPDATE_BYTES,
        );
    }
    // A claim within the limit but beyond the input is merely truncated.
    let mut input = 1000u64.to_le_bytes().to_vec();
    input.extend_from_slice(&[0; 64]);
    assert_eq!(SignedBulletin::from_bytes(&input), Err(DecodeError::Truncated));
    assert_eq!(
        SignedRegistryUpdate::from_bytes(&input).err(),
        Some(DecodeError::Truncated)
    );
}

#[test]
fn approvals_count_over_the_limit() {
    let body = sample_genesis().to_bytes().unwrap();
    let mut wire = registry_envelope(&body, &[]);
    let at = 8 + body.len();
    for claim in [HUGE, u64::MAX, (MAX_REGISTRY_UPDATE_BYTES / 96) as u64 + 1] {
        put_u64(&mut wire, at, claim);
        assert_over_limit(SignedRegistryUpdate::from_bytes(&wire), MAX_REGISTRY_UPDATE_BYTES);
    }
    // Within the byte limit but over MAX_APPROVALS, with the approvals present.
    let approvals: Vec<([u8; 32], [u8; 64])> = (0..1025u32)
        .map(|i| {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            (key, [3; 64])
        })
        .collect();
    let wire = registry_envelope(&body, &approvals);
    assert_invalid(SignedRegistryUpdate::from_bytes(&wire), "approvals");
    let wire = registry_envelope(&body, &approvals[..1024]);
    assert_eq!(
        SignedRegistryUpdate::from_bytes(&wire).unwrap().approvals().len(),
        1024
    );
}

/// Overwrites the length prefix of `content` inside a valid body with each hostile
/// claim and checks the body is refused with LengthOverLimit.
fn assert_body_length_field_is_limited(body: &BulletinBody, content: &[u8]) {
    let bytes = body.to_bytes().unwrap();
    let at = len_prefix_offset(&bytes, content);
    for claim in [HUGE, u64::MAX, MAX_BODY_BYTES as u64 + 1] {
        let mut hostile = bytes.clone();
        put_u64(&mut hostile, at, claim);
        check_body(&hostile, |r| assert_over_limit(r, MAX_BODY_BYTES));
    }
    // A claim one past the real length, within the limit, is truncated instead.
    let mut hostile = bytes.clone();
    put_u64(&mut hostile, at, content.len() as u64 + (bytes.len() - at) as u64);
    check_body(&hostile, |r| assert_eq!(r, Err(DecodeError::Truncated)));
}

#[test]
fn body_string_lengths_over_the_limit() {
    let body = sample_body();
    for content in [
        TITLE.as_bytes(),
        LOG4SHELL.as_bytes(),
        URL.as_bytes(),
        CONTENT_TYPE.as_bytes(),
        PAYLOAD,
    ] {
        assert_body_length_field_is_limited(&body, content);
    }
}

#[test]
fn body_vector_lengths_over_the_limit() {
    let body = sample_body();
    let bytes = body.to_bytes().unwrap();
    // The references vector: its count (3) precedes the first reference (CVE, tag 0).
    let mut refs = 3u64.to_le_bytes().to_vec();
    refs.extend_from_slice(&0u32.to_le_bytes());
    refs.extend_from_slice(&(LOG4SHELL.len() as u64).to_le_bytes());
    let refs_at = unique_offset(&bytes, &refs);
    // The audience vector: its count (2) precedes the first member id.
    let mut aud = 2u64.to_le_bytes().to_vec();
    aud.extend_from_slice(member(0x10).as_bytes());
    let aud_at = unique_offset(&bytes, &aud);
    for at in [refs_at, aud_at] {
        for claim in [HUGE, u64::MAX, (MAX_BODY_BYTES / 32) as u64 + 1] {
            let mut hostile = bytes.clone();
            put_u64(&mut hostile, at, claim);
            check_body(&hostile, |r| assert_over_limit(r, MAX_BODY_BYTES));
        }
    }
}

#[test]
fn kind_field_lengths_over_the_limit() {
    let reason = "sent to the wrong audience";
    let mut body = sample_body();
    body.kind = Kind::Withdrawal {
        of: BulletinId::from_bytes([0x66; 32]),
        reason: reason.into(),
    };
    assert_body_length_field_is_limited(&body, reason.as_bytes());

    let name = "phishing-reports";
    body.kind = Kind::IncidentMetrics {
        period_start: Timestamp(1),
        period_end: Timestamp(2),
        counts: vec![MetricCount {
            name: name.into(),
            value: 7,
        }],
    };
    assert_body_length_field_is_limited(&body, name.as_bytes());
    // The counters vector: count 1, then the first name's length.
    let bytes = body.to_bytes().unwrap();
    let mut counts = 1u64.to_le_bytes().to_vec();
    counts.extend_from_slice(&(name.len() as u64).to_le_bytes());
    let at = unique_offset(&bytes, &counts);
    for claim in [HUGE, u64::MAX] {
        let mut hostile = bytes.clone();
        put_u64(&mut hostile, at, claim);
        check_body(&hostile, |r| assert_over_limit(r, MAX_BODY_BYTES));
    }
}

#[test]
fn registry_lengths_over_the_limit() {
    let update = sample_genesis();
    let bytes = update.to_bytes().unwrap();
    // Genesis layout: format u16, version u64, prev tag (0), created u64, then the ops count.
    assert_eq!(&bytes[19..27], &3u64.to_le_bytes());
    let RegistryOp::AddMember(first) = &update.ops[0] else {
        unreachable!()
    };
    let name_at = len_prefix_offset(&bytes, first.name.as_bytes());
    // signing_keys count (1) is right after member_key; node_ids count after that key.
    let keys_at = name_at + 8 + first.name.len() + 32;
    let nodes_at = keys_at + 8 + 32;
    assert_eq!(&bytes[keys_at..keys_at + 8], &1u64.to_le_bytes());
    assert_eq!(&bytes[nodes_at..nodes_at + 8], &1u64.to_le_bytes());
    for at in [19, name_at, keys_at, nodes_at] {
        for claim in [HUGE, u64::MAX, MAX_REGISTRY_UPDATE_BYTES as u64] {
            let mut hostile = bytes.clone();
            put_u64(&mut hostile, at, claim);
            check_registry_body(&hostile, |r| {
                assert_over_limit(r, herald_protocol::registry::MAX_REGISTRY_BODY_BYTES)
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Truncation, trailing bytes, oversize input
// ---------------------------------------------------------------------------

#[test]
fn one_byte_short_is_truncated() {
    let signed = sample_signed().to_bytes();
    let body = sample_body().to_bytes().unwrap();
    let update = sample_genesis().to_bytes().unwrap();
    let signed_update = sample_signed_update().to_bytes();
    assert_eq!(
        SignedBulletin::from_bytes(&signed[..signed.len() - 1]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        BulletinBody::from_bytes(&body[..body.len() - 1]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        RegistryUpdate::from_bytes(&update[..update.len() - 1]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        SignedRegistryUpdate::from_bytes(&signed_update[..signed_update.len() - 1]).err(),
        Some(DecodeError::Truncated)
    );
    assert_eq!(SignedBulletin::from_bytes(&[]), Err(DecodeError::Truncated));
    assert_eq!(BulletinBody::from_bytes(&[]), Err(DecodeError::Truncated));
}

#[test]
fn every_prefix_is_truncated() {
    let signed = sample_signed().to_bytes();
    for cut in 0..signed.len() {
        assert_eq!(
            SignedBulletin::from_bytes(&signed[..cut]),
            Err(DecodeError::Truncated),
            "cut {cut}"
        );
    }
    let body = sample_body_seq2().to_bytes().unwrap();
    for cut in 0..body.len() {
        assert_eq!(
            BulletinBody::from_bytes(&body[..cut]),
            Err(DecodeError::Truncated),
            "cut {cut}"
        );
    }
    let update = sample_genesis().to_bytes().unwrap();
    for cut in 0..update.len() {
        assert_eq!(
            RegistryUpdate::from_bytes(&update[..cut]),
            Err(DecodeError::Truncated),
            "cut {cut}"
        );
    }
    let signed_update = sample_signed_update().to_bytes();
    for cut in 0..signed_update.len() {
        let result = SignedRegistryUpdate::from_bytes(&signed_update[..cut]).err();
        assert_eq!(result, Some(DecodeError::Truncated), "cut {cut}");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let extra = |bytes: &[u8], n: usize| {
        let mut v = bytes.to_vec();
        v.extend(std::iter::repeat_n(0u8, n));
        v
    };
    let signed = sample_signed().to_bytes();
    let body = sample_body().to_bytes().unwrap();
    let update = sample_genesis().to_bytes().unwrap();
    let signed_update = sample_signed_update().to_bytes();
    for n in [1, 2, 64] {
        assert_eq!(
            SignedBulletin::from_bytes(&extra(&signed, n)),
            Err(DecodeError::TrailingBytes { extra: n })
        );
        assert_eq!(
            BulletinBody::from_bytes(&extra(&body, n)),
            Err(DecodeError::TrailingBytes { extra: n })
        );
        assert_eq!(
            RegistryUpdate::from_bytes(&extra(&update, n)),
            Err(DecodeError::TrailingBytes { extra: n })
        );
        assert_eq!(
            SignedRegistryUpdate::from_bytes(&extra(&signed_update, n)).err(),
            Some(DecodeError::TrailingBytes { extra: n })
        );
    }
    // Two bulletins concatenated.
    let mut two = signed.clone();
    two.extend_from_slice(&signed);
    assert_eq!(
        SignedBulletin::from_bytes(&two),
        Err(DecodeError::TrailingBytes { extra: signed.len() })
    );
    // Trailing bytes inside the envelope, after the body, are the body's problem.
    let padded_body = extra(&body, 1);
    assert_eq!(
        SignedBulletin::from_bytes(&envelope(&padded_body, [0; 64])),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    assert_eq!(
        SignedBulletin::from_parts(padded_body, Signature::from_bytes(&[0; 64])),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn oversize_input_is_refused_unread() {
    let big = vec![0u8; MAX_BULLETIN_BYTES + 1];
    assert_eq!(
        SignedBulletin::from_bytes(&big),
        Err(DecodeError::TooLarge {
            len: MAX_BULLETIN_BYTES + 1,
            max: MAX_BULLETIN_BYTES
        })
    );
    assert_eq!(
        BulletinBody::from_bytes(&big[..MAX_BODY_BYTES + 1]),
        Err(DecodeError::TooLarge {
            len: MAX_BODY_BYTES + 1,
            max: MAX_BODY_BYTES
        })
    );
    // A well-formed bulletin that is one byte too long is refused for its size,
    // not parsed: the first check is the cheapest.
    let mut signed = sample_signed().to_bytes();
    signed.resize(MAX_BULLETIN_BYTES + 1, 0);
    assert!(matches!(
        SignedBulletin::from_bytes(&signed),
        Err(DecodeError::TooLarge { .. })
    ));

    let big = vec![0u8; MAX_REGISTRY_UPDATE_BYTES + 1];
    let too_large: Result<(), DecodeError> = Err(DecodeError::TooLarge {
        len: MAX_REGISTRY_UPDATE_BYTES + 1,
        max: MAX_REGISTRY_UPDATE_BYTES,
    });
    assert_eq!(
        RegistryUpdate::from_bytes(&big),
        Err(DecodeError::TooLarge {
            len: MAX_REGISTRY_UPDATE_BYTES + 1,
            max: herald_protocol::registry::MAX_REGISTRY_BODY_BYTES,
        })
    );
    assert_eq!(
        SignedRegistryUpdate::from_bytes(&big).map(drop),
        too_large.map(drop)
    );
}

#[test]
fn oversize_body_is_refused_at_encoding_and_assembly() {
    let mut body = sample_body();
    body.payload.bytes = vec![0; MAX_BULLETIN_BYTES];
    assert!(matches!(
        body.to_bytes(),
        Err(DecodeError::TooLarge {
            max: MAX_BULLETIN_BYTES,
            ..
        })
    ));
    let raw = raw_encode(&body);
    assert!(matches!(
        SignedBulletin::from_parts(raw, Signature::from_bytes(&[0; 64])),
        Err(DecodeError::TooLarge { .. })
    ));
}

// ---------------------------------------------------------------------------
// Malformed: tags and variants out of range, bad UTF-8
// ---------------------------------------------------------------------------

/// Offsets in the encoding of `sample_body()` (seq 1, no prev, EmergencyAlert).
mod at {
    pub(crate) const FORMAT: usize = 0;
    pub(crate) const SEQ: usize = 66;
    pub(crate) const PREV_TAG: usize = 74;
    pub(crate) const KIND: usize = 83;
    pub(crate) const TLP: usize = 87;
    pub(crate) const SEVERITY: usize = 91;
    pub(crate) const TITLE_LEN: usize = 95;
}

#[test]
fn sample_body_offsets_are_as_documented() {
    let bytes = sample_body().to_bytes().unwrap();
    assert_eq!(&bytes[at::FORMAT..at::FORMAT + 2], &1u16.to_le_bytes());
    assert_eq!(&bytes[at::SEQ..at::SEQ + 8], &1u64.to_le_bytes());
    assert_eq!(bytes[at::PREV_TAG], 0);
    assert_eq!(&bytes[at::KIND..at::KIND + 4], &4u32.to_le_bytes());
    assert_eq!(&bytes[at::TLP..at::TLP + 4], &2u32.to_le_bytes());
    assert_eq!(&bytes[at::SEVERITY..at::SEVERITY + 4], &3u32.to_le_bytes());
    assert_eq!(len_prefix_offset(&bytes, TITLE.as_bytes()), at::TITLE_LEN);
}

/// Offsets of the option tags that follow the references in `sample_body()`.
fn supersedes_and_expires_tags(bytes: &[u8]) -> (usize, usize) {
    let mut needle = vec![2, 0, 0, 0];
    needle.extend_from_slice(&[0x03; 32]);
    let last_reference = unique_offset(bytes, &needle);
    let supersedes = last_reference + needle.len();
    assert_eq!(bytes[supersedes], 0);
    assert_eq!(bytes[supersedes + 1], 1);
    (supersedes, supersedes + 1)
}

#[test]
fn option_tag_out_of_range_is_malformed() {
    let bytes = sample_body().to_bytes().unwrap();
    let (supersedes, expires) = supersedes_and_expires_tags(&bytes);
    for at in [at::PREV_TAG, supersedes, expires] {
        for tag in [2u8, 3, 0x80, 0xff] {
            let mut hostile = bytes.clone();
            hostile[at] = tag;
            check_body(&hostile, assert_malformed);
        }
    }
    // Registry: genesis prev tag at offset 10.
    let update = sample_genesis().to_bytes().unwrap();
    assert_eq!(update[10], 0);
    let mut hostile = update.clone();
    hostile[10] = 2;
    check_registry_body(&hostile, assert_malformed);
}

#[test]
fn enum_variant_out_of_range_is_malformed() {
    let bytes = sample_body().to_bytes().unwrap();
    // (offset, first out-of-range variant) for Kind (9 variants), Tlp (5), Severity (5).
    for (at, first_bad) in [(at::KIND, 9u32), (at::TLP, 5), (at::SEVERITY, 5)] {
        for variant in [first_bad, first_bad + 1, 0x100, u32::MAX] {
            let mut hostile = bytes.clone();
            put_u32(&mut hostile, at, variant);
            check_body(&hostile, assert_malformed);
        }
    }
    // Reference (3 variants): the first reference's tag follows the count.
    let mut refs = 3u64.to_le_bytes().to_vec();
    refs.extend_from_slice(&0u32.to_le_bytes());
    let tag_at = unique_offset(&bytes, &refs) + 8;
    for variant in [3u32, u32::MAX] {
        let mut hostile = bytes.clone();
        put_u32(&mut hostile, tag_at, variant);
        check_body(&hostile, assert_malformed);
    }
}

#[test]
fn nested_enum_variants_out_of_range_are_malformed() {
    // Kind::FollowUp's action (5 variants) is the last 4 bytes of the kind.
    let mut body = sample_body();
    body.kind = Kind::FollowUp {
        on: BulletinId::from_bytes([0x77; 32]),
        action: FollowUpAction::Close,
    };
    let bytes = body.to_bytes().unwrap();
    let mut needle = [0x77u8; 32].to_vec();
    needle.extend_from_slice(&4u32.to_le_bytes());
    let action_at = unique_offset(&bytes, &needle) + 32;
    let mut hostile = bytes.clone();
    put_u32(&mut hostile, action_at, 5);
    check_body(&hostile, assert_malformed);

    // Kind::VulnerabilityAdvisory's status (5), SoftwareUpdate's stage (2),
    // IncidentReport's phase (4): each directly after the kind tag.
    for (kind, bad) in [
        (
            Kind::VulnerabilityAdvisory {
                status: herald_protocol::AdvisoryStatus::Fixed,
            },
            5u32,
        ),
        (
            Kind::SoftwareUpdate {
                stage: herald_protocol::UpdateStage::Released,
            },
            2,
        ),
        (
            Kind::IncidentReport {
                phase: herald_protocol::IncidentPhase::Resolved,
            },
            4,
        ),
    ] {
        let mut body = sample_body();
        body.kind = kind;
        let mut hostile = body.to_bytes().unwrap();
        put_u32(&mut hostile, at::KIND + 4, bad);
        check_body(&hostile, assert_malformed);
    }

    // RegistryOp (8 variants) and RevocationPoint (2 variants).
    let member = MemberId::from_bytes([0x31; 32]);
    let key = KeyId::from_bytes([0x32; 32]);
    let update = RegistryUpdate {
        ops: vec![RegistryOp::RevokeSigningKey {
            member,
            key,
            from: RevocationPoint::Seq(Seq(9)),
        }],
        ..sample_genesis()
    };
    let bytes = update.to_bytes().unwrap();
    let op_at = 27;
    assert_eq!(&bytes[op_at..op_at + 4], &4u32.to_le_bytes());
    let point_at = op_at + 4 + 32 + 32;
    assert_eq!(&bytes[point_at..point_at + 4], &0u32.to_le_bytes());
    for (at, bad) in [(op_at, 8u32), (point_at, 2)] {
        let mut hostile = bytes.clone();
        put_u32(&mut hostile, at, bad);
        check_registry_body(&hostile, assert_malformed);
    }
}

#[test]
fn invalid_utf8_is_malformed() {
    let bytes = sample_body().to_bytes().unwrap();
    for bad in [[0xff, 0xfe], [0xc0, 0x80], [0xed, 0xa0]] {
        let mut hostile = bytes.clone();
        let start = at::TITLE_LEN + 8;
        hostile[start..start + 2].copy_from_slice(&bad);
        check_body(&hostile, assert_malformed);
    }
    let update = sample_genesis().to_bytes().unwrap();
    let name_at = len_prefix_offset(&update, b"CERT-EU") + 8;
    let mut hostile = update.clone();
    hostile[name_at] = 0xff;
    check_registry_body(&hostile, assert_malformed);
}

// ---------------------------------------------------------------------------
// Invalid: well-formed bytes that break a rule
// ---------------------------------------------------------------------------

#[test]
fn body_format_2_is_invalid() {
    let mut hostile = sample_body().to_bytes().unwrap();
    hostile[0..2].copy_from_slice(&2u16.to_le_bytes());
    check_body(&hostile, |r| assert_invalid(r, "format 2"));
    let mut hostile = sample_genesis().to_bytes().unwrap();
    hostile[0..2].copy_from_slice(&2u16.to_le_bytes());
    check_registry_body(&hostile, |r| assert_invalid(r, "format 2"));
}

#[test]
fn chain_position_and_prev_must_agree() {
    // seq 1 with a prev: take a seq-2 body and set its seq to 1.
    let mut hostile = sample_body_seq2().to_bytes().unwrap();
    put_u64(&mut hostile, at::SEQ, 1);
    check_body(&hostile, |r| assert_invalid(r, "must not name a previous"));
    // seq 2 without a prev.
    let mut hostile = sample_body().to_bytes().unwrap();
    put_u64(&mut hostile, at::SEQ, 2);
    check_body(&hostile, |r| assert_invalid(r, "name a previous"));
    // seq 0.
    let mut hostile = sample_body().to_bytes().unwrap();
    put_u64(&mut hostile, at::SEQ, 0);
    check_body(&hostile, |r| assert_invalid(r, "sequence number 0"));

    // Registry: version 1 with a prev, version 2 without, version 0.
    let genesis = sample_genesis();
    let with_prev = RegistryUpdate {
        prev: Some(RegistryHash::from_bytes([9; 32])),
        ..genesis.clone()
    };
    check_registry_body(&raw_encode(&with_prev), |r| assert_invalid(r, "genesis"));
    let without_prev = RegistryUpdate {
        version: RegistryVersion(2),
        ..genesis.clone()
    };
    check_registry_body(&raw_encode(&without_prev), |r| assert_invalid(r, "genesis"));
    let zero = RegistryUpdate {
        version: RegistryVersion(0),
        ..genesis
    };
    check_registry_body(&raw_encode(&zero), |r| assert_invalid(r, "version 0"));
}

#[test]
fn unsorted_or_repeated_audience_is_invalid() {
    let bytes = sample_body().to_bytes().unwrap();
    let first = unique_offset(&bytes, member(0x10).as_bytes());
    assert_eq!(&bytes[first + 32..first + 64], member(0x20).as_bytes());
    // Swap the two member ids.
    let mut swapped = bytes.clone();
    swapped[first..first + 32].copy_from_slice(member(0x20).as_bytes());
    swapped[first + 32..first + 64].copy_from_slice(member(0x10).as_bytes());
    check_body(&swapped, |r| assert_invalid(r, "ascending"));
    // Name the same member twice.
    let mut repeated = bytes.clone();
    repeated[first + 32..first + 64].copy_from_slice(member(0x10).as_bytes());
    check_body(&repeated, |r| assert_invalid(r, "ascending"));
    // The encoder refuses the same.
    let mut body = sample_body();
    body.audience.reverse();
    assert_invalid(body.to_bytes(), "ascending");
}

#[test]
fn bad_cve_ids_are_invalid() {
    // Patched in place: same length, a letter in the number.
    let bytes = sample_body().to_bytes().unwrap();
    let at = len_prefix_offset(&bytes, LOG4SHELL.as_bytes()) + 8;
    let mut hostile = bytes.clone();
    hostile[at + LOG4SHELL.len() - 1] = b'X';
    check_body(&hostile, |r| assert_invalid(r, "CVE-2021-4422X"));

    // Encoded without validation, decoded with it.
    for bad in [
        "",
        "CVE",
        "CVE-",
        "cve-2021-44228",
        "CVE-21-44228",
        "CVE-20211-44228",
        "CVE-2021-123",
        "CVE-2021-44228 ",
        " CVE-2021-44228",
        "CVE-2021-4422a",
        "CVE-2021_44228",
        "CVE-2021-44228-1",
        "CVE-2021-\u{0663}\u{0663}\u{0663}\u{0663}",
        "CVE-2021-123456789012345678901234",
    ] {
        let mut body = sample_body();
        body.references = vec![Reference::Cve(bad.into())];
        assert_invalid(body.to_bytes(), "not a CVE id");
        check_body(&raw_encode(&body), |r| assert_invalid(r, "not a CVE id"));
    }
}

#[test]
fn other_rule_breaks_are_invalid() {
    type Breaker = fn(&mut BulletinBody);
    let cases: [(Breaker, &str); 12] = [
        (|b| b.title = String::new(), "title"),
        (|b| b.title = "x".repeat(257), "title"),
        (|b| b.title = "line\nbreak".into(), "control"),
        (
            |b| b.references = vec![Reference::Url("ftp://example.org".into())],
            "URL",
        ),
        (
            |b| b.references = vec![Reference::Url("https://a b".into())],
            "URL",
        ),
        (
            |b| b.references = vec![Reference::Cve(LOG4SHELL.into()); 65],
            "references",
        ),
        (|b| b.expires = Some(b.created), "expiry"),
        (
            |b| {
                b.payload = Payload {
                    content_type: "markdown".into(),
                    bytes: vec![],
                }
            },
            "content type",
        ),
        (|b| b.payload.content_type = "text/\u{e9}".into(), "content type"),
        (
            |b| {
                b.audience = (0..=256u16)
                    .map(|i| {
                        let mut id = [0; 32];
                        id[..2].copy_from_slice(&i.to_be_bytes());
                        MemberId::from_bytes(id)
                    })
                    .collect()
            },
            "audience",
        ),
        (
            |b| {
                b.kind = Kind::IncidentMetrics {
                    period_start: Timestamp(5),
                    period_end: Timestamp(5),
                    counts: vec![],
                }
            },
            "period",
        ),
        (
            |b| {
                b.kind = Kind::Withdrawal {
                    of: BulletinId::from_bytes([1; 32]),
                    reason: String::new(),
                }
            },
            "reason",
        ),
    ];
    for (brk, needle) in cases {
        let mut body = sample_body();
        brk(&mut body);
        assert_invalid(body.to_bytes(), needle);
        check_body(&raw_encode(&body), |r| assert_invalid(r, needle));
    }

    // Registry rules.
    type RegBreaker = fn(&mut RegistryUpdate);
    let reg_cases: [(RegBreaker, &str); 5] = [
        (|u| u.ops.clear(), "operations"),
        (
            |u| u.ops = vec![RegistryOp::SetThreshold { threshold: 1 }; 1025],
            "operations",
        ),
        (
            |u| {
                if let RegistryOp::AddMember(m) = &mut u.ops[0] {
                    m.id = MemberId::from_bytes([0; 32]);
                }
            },
            "not derived",
        ),
        (
            |u| {
                if let RegistryOp::AddMember(m) = &mut u.ops[0] {
                    m.name = "tab\there".into();
                }
            },
            "member name",
        ),
        (
            |u| {
                if let RegistryOp::AddMember(m) = &mut u.ops[0] {
                    m.signing_keys = vec![KeyId::from_bytes([1; 32]); 65];
                }
            },
            "at most 64",
        ),
    ];
    for (brk, needle) in reg_cases {
        let mut update = sample_genesis();
        brk(&mut update);
        assert_invalid(update.to_bytes(), needle);
        check_registry_body(&raw_encode(&update), |r| assert_invalid(r, needle));
    }
}

// ---------------------------------------------------------------------------
// Pathological buffers
// ---------------------------------------------------------------------------

fn every_decoder_refuses(input: &[u8]) {
    assert!(SignedBulletin::from_bytes(input).is_err());
    assert!(BulletinBody::from_bytes(input).is_err());
    assert!(RegistryUpdate::from_bytes(input).is_err());
    assert!(SignedRegistryUpdate::from_bytes(input).is_err());
}

#[test]
fn a_64_kib_buffer_of_0xff_is_refused() {
    let input = vec![0xffu8; 64 * 1024];
    assert_over_limit(SignedBulletin::from_bytes(&input), MAX_BULLETIN_BYTES);
    assert_over_limit(
        SignedRegistryUpdate::from_bytes(&input),
        MAX_REGISTRY_UPDATE_BYTES,
    );
    // The body decoders read format 0xffff first: a newer format, so "upgrade".
    assert_invalid(BulletinBody::from_bytes(&input), "upgrade");
    assert_invalid(RegistryUpdate::from_bytes(&input), "upgrade");
}

/// Buffers made of nothing but length claims: no recursive type lets them nest,
/// and every claim is checked against the limit before allocating.
#[test]
fn buffers_of_repeated_length_claims_are_refused() {
    let patterns: [&[u8]; 6] = [
        &[0x00],
        &[0x01],
        &[0x01, 0, 0, 0, 0, 0, 0, 0],
        &[0xff, 0xff, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0, 0, 1, 0, 0],
        &[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
    ];
    for pattern in patterns {
        let input: Vec<u8> = pattern.iter().copied().cycle().take(64 * 1024).collect();
        every_decoder_refuses(&input);
    }
}

/// A body whose every length field claims the most the limit still allows: the
/// decoder must stop at the first one that cannot be satisfied.
#[test]
fn near_limit_claims_in_every_field_are_refused() {
    let bytes = sample_body().to_bytes().unwrap();
    let claim = (MAX_BODY_BYTES - bytes.len()) as u64;
    let mut hostile = bytes.clone();
    for content in [
        TITLE.as_bytes(),
        LOG4SHELL.as_bytes(),
        URL.as_bytes(),
        CONTENT_TYPE.as_bytes(),
        PAYLOAD,
    ] {
        let at = len_prefix_offset(&bytes, content);
        put_u64(&mut hostile, at, claim);
    }
    check_body(&hostile, |r| assert_eq!(r, Err(DecodeError::Truncated)));
    // Over the limit with a full-size buffer behind it.
    let mut full = hostile.clone();
    put_u64(&mut full, at::TITLE_LEN, MAX_BODY_BYTES as u64);
    full.resize(MAX_BODY_BYTES, b'a');
    assert_over_limit(BulletinBody::from_bytes(&full), MAX_BODY_BYTES);
}

#[test]
fn sixty_four_kib_of_signed_bulletins_back_to_back_is_one_bulletin_plus_trailing_bytes() {
    let one = sample_signed().to_bytes();
    let many: Vec<u8> = one.iter().copied().cycle().take(64 * 1024).collect();
    assert_eq!(
        SignedBulletin::from_bytes(&many),
        Err(DecodeError::TrailingBytes {
            extra: many.len() - one.len()
        })
    );
}
