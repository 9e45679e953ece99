//! Robustness properties of every decoder against random and corrupted input:
//! no panic, and anything accepted re-encodes to exactly the bytes received
//! (architecture invariants 1 and 2); corrupting a body changes its id, while
//! corrupting a signature leaves the id alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use herald_protocol::sync::{ChainSummary, SeqRange, SyncRequest, SyncResponse, Want};
use herald_protocol::{
    BulletinBody, BulletinId, KeyId, RegistryHash, RegistryUpdate, RegistryVersion, Seq, Signature,
    SignedBulletin, SignedRegistryUpdate,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Feeds `input` to every decoder; whatever is accepted must re-encode to `input`.
fn check_all_decoders(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(signed) = SignedBulletin::from_bytes(input) {
        prop_assert_eq!(signed.as_bytes(), input);
        prop_assert_eq!(signed.to_bytes(), input.to_vec());
        prop_assert_eq!(signed.body().to_bytes().unwrap(), signed.body_bytes().to_vec());
        prop_assert_eq!(signed.id(), BulletinId::of_body(signed.body_bytes()));
    }
    if let Ok(body) = BulletinBody::from_bytes(input) {
        prop_assert_eq!(body.to_bytes().unwrap(), input.to_vec());
    }
    if let Ok(update) = RegistryUpdate::from_bytes(input) {
        prop_assert_eq!(update.to_bytes().unwrap(), input.to_vec());
    }
    if let Ok(signed) = SignedRegistryUpdate::from_bytes(input) {
        prop_assert_eq!(signed.to_bytes(), input.to_vec());
        prop_assert_eq!(signed.body().to_bytes().unwrap(), signed.body_bytes().to_vec());
        prop_assert_eq!(signed.hash(), RegistryHash::of_body(signed.body_bytes()));
    }
    if let Ok(request) = SyncRequest::from_bytes(input) {
        prop_assert_eq!(request.to_bytes(), input.to_vec());
    }
    if let Ok(response) = SyncResponse::from_bytes(input) {
        prop_assert_eq!(response.to_bytes(), input.to_vec());
    }
    Ok(())
}

/// A fetch of `chains` keys with ascending ranges, and a summary of as many chains.
fn sync_samples(chains: &[([u8; 32], u64, u64)]) -> (SyncRequest, SyncResponse) {
    let wants = chains
        .iter()
        .map(|&(key, from, len)| Want {
            key: KeyId::from_bytes(key),
            ranges: vec![
                SeqRange {
                    from: Seq(from.max(1)),
                    to: Seq(from.max(1) + len),
                },
                SeqRange {
                    from: Seq(from.max(1) + len + 2),
                    to: Seq(from.max(1) + 2 * len + 2),
                },
            ],
            evidence: len % 2 == 0,
        })
        .collect();
    let summaries = chains
        .iter()
        .map(|&(key, from, len)| ChainSummary {
            key: KeyId::from_bytes(key),
            contiguous: Seq(from),
            highest: Seq(from + len),
            count: from + 1,
            fingerprint: key,
            evidence: len as u32,
        })
        .collect();
    (
        SyncRequest::Fetch { wants },
        SyncResponse::Summary {
            registry_version: RegistryVersion(chains.len() as u64 + 1),
            registry_hash: RegistryHash::of_body(b"sample"),
            chains: summaries,
        },
    )
}

fn signed_bulletin_bytes(body: &BulletinBody, sig: [u8; 64]) -> Vec<u8> {
    SignedBulletin::from_parts(body.to_bytes().unwrap(), Signature::from_bytes(&sig))
        .unwrap()
        .to_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Property 2: random bytes never panic any decoder.
    #[test]
    fn random_bytes_never_panic(input in vec(any::<u8>(), 0..2048)) {
        check_all_decoders(&input)?;
    }

    /// Random bytes behind a length prefix that matches them, so decoding gets past
    /// the envelope and into the body decoder.
    #[test]
    fn random_bodies_in_a_consistent_envelope_never_panic(
        body in vec(any::<u8>(), 0..2048),
        sig in any::<[u8; 64]>(),
        approvals in vec((any::<[u8; 32]>(), any::<[u8; 64]>()), 0..3),
    ) {
        check_all_decoders(&body)?;
        check_all_decoders(&envelope(&body, sig))?;
        check_all_decoders(&registry_envelope(&body, &approvals))?;
    }

    /// A valid body header followed by random bytes reaches deep into the body decoder.
    #[test]
    fn valid_header_then_random_tail_never_panics(
        body in bulletin_body(),
        cut in any::<prop::sample::Index>(),
        tail in vec(any::<u8>(), 0..512),
    ) {
        let bytes = body.to_bytes().unwrap();
        let mut input = bytes[..cut.index(bytes.len())].to_vec();
        input.extend_from_slice(&tail);
        check_all_decoders(&input)?;
        check_all_decoders(&envelope(&input, [0; 64]))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Property 3: mutated valid bulletin encodings never panic and are never
    /// accepted in a form that re-encodes differently.
    #[test]
    fn mutated_signed_bulletins_are_refused_or_canonical(
        body in bulletin_body(),
        sig in any::<[u8; 64]>(),
        m in mutation(),
    ) {
        let wire = signed_bulletin_bytes(&body, sig);
        let mutated = m.apply(&wire);
        check_all_decoders(&mutated)?;
        let body_bytes = body.to_bytes().unwrap();
        check_all_decoders(&m.apply(&body_bytes))?;
    }

    #[test]
    fn mutated_registry_updates_are_refused_or_canonical(
        update in registry_update(),
        approvals in vec(approval(), 0..4),
        m in mutation(),
    ) {
        let body_bytes = update.to_bytes().unwrap();
        let wire = SignedRegistryUpdate::from_parts(body_bytes.clone(), approvals).unwrap().to_bytes();
        check_all_decoders(&m.apply(&wire))?;
        check_all_decoders(&m.apply(&body_bytes))?;
    }

    /// Mutated sync requests and responses (the catch-up protocol, read from
    /// any connected peer) never panic and are accepted only in canonical form.
    #[test]
    fn mutated_sync_messages_are_refused_or_canonical(
        chains in vec((any::<[u8; 32]>(), 0u64..1_000_000, 0u64..1_000), 1..6),
        page in vec(vec(any::<u8>(), 0..64), 0..4),
        m in mutation(),
    ) {
        let (request, response) = sync_samples(&chains);
        prop_assert!(SyncRequest::from_bytes(&request.to_bytes()).is_ok());
        prop_assert!(SyncResponse::from_bytes(&response.to_bytes()).is_ok());
        check_all_decoders(&m.apply(&request.to_bytes()))?;
        check_all_decoders(&m.apply(&response.to_bytes()))?;
        let page = SyncResponse::Page { bulletins: page, complete: chains.len() % 2 == 0 };
        check_all_decoders(&m.apply(&page.to_bytes()))?;
        let next = SyncRequest::Chains { after: KeyId::from_bytes(chains[0].0) };
        prop_assert!(SyncRequest::from_bytes(&next.to_bytes()).is_ok());
        check_all_decoders(&m.apply(&next.to_bytes()))?;
    }

    /// A flipped bit in the body is refused or yields a different id.
    #[test]
    fn flipped_body_bit_changes_the_id_or_is_refused(
        body in bulletin_body(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let wire = signed_bulletin_bytes(&body, [0x11; 64]);
        let original = SignedBulletin::from_bytes(&wire).unwrap();
        let body_len = wire.len() - 8 - 64;
        let pos = 8 + at.index(body_len);
        let mut mutated = wire.clone();
        mutated[pos] ^= 1 << bit;
        match SignedBulletin::from_bytes(&mutated) {
            Ok(decoded) => {
                prop_assert_ne!(decoded.id(), original.id());
                prop_assert_eq!(decoded.as_bytes(), &mutated[..]);
                prop_assert_eq!(decoded.signature(), original.signature());
            }
            Err(_) => {
                // The body alone must be refused too.
                prop_assert!(BulletinBody::from_bytes(&mutated[8..mutated.len() - 64]).is_err());
            }
        }
    }

    /// A flipped bit in the length prefix always makes the envelope unreadable.
    #[test]
    fn flipped_length_bit_is_refused(body in bulletin_body(), byte in 0usize..8, bit in 0u8..8) {
        let mut wire = signed_bulletin_bytes(&body, [0x22; 64]);
        wire[byte] ^= 1 << bit;
        prop_assert!(SignedBulletin::from_bytes(&wire).is_err());
    }

    /// A flipped bit in the signature decodes to the same id and body with a
    /// different signature (whether it verifies is herald-keys' business).
    #[test]
    fn flipped_signature_bit_keeps_the_id(
        body in bulletin_body(),
        sig in any::<[u8; 64]>(),
        at in 0usize..64,
        bit in 0u8..8,
    ) {
        let wire = signed_bulletin_bytes(&body, sig);
        let original = SignedBulletin::from_bytes(&wire).unwrap();
        let mut mutated = wire.clone();
        let pos = wire.len() - 64 + at;
        mutated[pos] ^= 1 << bit;
        let decoded = SignedBulletin::from_bytes(&mutated).unwrap();
        prop_assert_eq!(decoded.id(), original.id());
        prop_assert_eq!(decoded.body(), original.body());
        prop_assert_eq!(decoded.body_bytes(), original.body_bytes());
        prop_assert_ne!(decoded.signature(), original.signature());
        prop_assert_eq!(decoded.as_bytes(), &mutated[..]);
    }

    /// Registry updates: a flipped body bit is refused or changes the hash; a
    /// flipped approval bit keeps the hash and changes the approvals.
    #[test]
    fn flipped_registry_bits(
        update in registry_update(),
        approvals in vec(approval(), 1..4),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let body_bytes = update.to_bytes().unwrap();
        let signed = SignedRegistryUpdate::from_parts(body_bytes.clone(), approvals).unwrap();
        let wire = signed.to_bytes();

        let mut in_body = wire.clone();
        in_body[8 + at.index(body_bytes.len())] ^= 1 << bit;
        if let Ok(decoded) = SignedRegistryUpdate::from_bytes(&in_body) {
            prop_assert_ne!(decoded.hash(), signed.hash());
            prop_assert_eq!(decoded.to_bytes(), in_body);
        }

        let approvals_start = 8 + body_bytes.len() + 8;
        let mut in_approval = wire.clone();
        in_approval[approvals_start + at.index(wire.len() - approvals_start)] ^= 1 << bit;
        let decoded = SignedRegistryUpdate::from_bytes(&in_approval).unwrap();
        prop_assert_eq!(decoded.hash(), signed.hash());
        prop_assert_eq!(decoded.body(), signed.body());
        prop_assert_ne!(decoded.approvals(), signed.approvals());
        prop_assert_eq!(decoded.to_bytes(), in_approval);
    }
}

/// Every single-bit flip of one sample bulletin, exhaustively.
#[test]
fn every_bit_flip_of_a_sample_bulletin() {
    let signed = sample_signed();
    let wire = signed.to_bytes();
    let body_end = wire.len() - 64;
    for pos in 0..wire.len() {
        for bit in 0..8 {
            let mut mutated = wire.clone();
            mutated[pos] ^= 1 << bit;
            let result = SignedBulletin::from_bytes(&mutated);
            match pos {
                0..8 => assert!(result.is_err(), "length flip at {pos}.{bit} accepted"),
                p if p < body_end => {
                    if let Ok(decoded) = result {
                        assert_ne!(decoded.id(), signed.id(), "body flip at {pos}.{bit}");
                        assert_eq!(decoded.as_bytes(), &mutated[..]);
                    }
                }
                _ => {
                    let decoded = result.unwrap();
                    assert_eq!(decoded.id(), signed.id());
                    assert_ne!(decoded.signature(), signed.signature());
                }
            }
        }
    }
}

/// Every truncation and every single-byte insertion of one sample bulletin and
/// one sample registry update is refused by the matching decoder.
#[test]
fn every_truncation_and_insertion_of_the_samples() {
    type Decoder = fn(&[u8]) -> bool;
    let bulletin: Decoder = |b| SignedBulletin::from_bytes(b).is_ok();
    let registry: Decoder = |b| SignedRegistryUpdate::from_bytes(b).is_ok();
    let cases = [
        (sample_signed().to_bytes(), bulletin),
        (sample_signed_update().to_bytes(), registry),
    ];
    for (input, accepts) in cases {
        assert!(accepts(&input));
        for cut in 0..input.len() {
            assert!(!accepts(&input[..cut]), "prefix of {cut} bytes accepted");
        }
        for at in 0..=input.len() {
            for byte in [0x00, 0x01, 0x7f, 0xff] {
                let mut mutated = input.clone();
                mutated.insert(at, byte);
                assert!(!accepts(&mutated), "insertion of {byte:#x} at {at} accepted");
            }
        }
    }
}
