//! Known-answer tests for `herald-keys` Ed25519: the reference `sign.input` vectors and Project Wycheproof.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_keys::{KeyError, PublicKey, SecretKey, Signature};

const SIGN_INPUT: &str = include_str!("data/ed25519_sign_input.txt");
const WYCHEPROOF: &str = include_str!("data/wycheproof_ed25519_test.json");

/// Lines in the copy of `sign.input` kept in `data/` (a prefix of the reference file).
const SIGN_INPUT_LINES: usize = 128;
/// Cases in the Wycheproof file, as its `numberOfTests` says.
const WYCHEPROOF_CASES: u64 = 151;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn array<const N: usize>(bytes: &[u8], what: &str) -> [u8; N] {
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("{what} is {} bytes, expected {N}", bytes.len()))
}

#[test]
fn sign_input_vectors_sign_and_verify_exactly() {
    let mut count = 0;
    for (n, line) in SIGN_INPUT.lines().enumerate() {
        let lineno = n + 1;
        let fields: Vec<&str> = line.split(':').collect();
        assert_eq!(
            fields.len(),
            5,
            "line {lineno}: expected 4 fields and a trailing colon"
        );
        assert!(
            fields[4].is_empty(),
            "line {lineno}: trailing data after the last colon"
        );
        let secret_public = unhex(fields[0]);
        let public: [u8; 32] = array(&unhex(fields[1]), "public key");
        let message = unhex(fields[2]);
        let signed = unhex(fields[3]);
        assert_eq!(secret_public.len(), 64, "line {lineno}: secret||public");
        assert_eq!(
            &secret_public[32..],
            &public,
            "line {lineno}: public key fields disagree"
        );
        assert_eq!(
            signed.len(),
            64 + message.len(),
            "line {lineno}: signature||message"
        );
        assert_eq!(
            &signed[64..],
            &message[..],
            "line {lineno}: message fields disagree"
        );
        let expected = Signature::from_bytes(&array(&signed[..64], "signature"));

        let secret = SecretKey::from_seed(&array(&secret_public[..32], "seed"));
        assert_eq!(
            secret.public().to_bytes(),
            public,
            "line {lineno}: derived public key"
        );
        assert_eq!(secret.sign_raw(&message), expected, "line {lineno}: signature");

        let key = PublicKey::from_bytes(&public).unwrap_or_else(|e| {
            panic!("line {lineno}: PublicKey::from_bytes refused the vector's key: {e:?}")
        });
        assert_eq!(key, secret.public(), "line {lineno}: parsed key");
        assert_eq!(key.verify(&message, &expected), Ok(()), "line {lineno}: verify");

        // The same signature must not verify a different message or after a flipped bit.
        let mut other = message.clone();
        other.push(0);
        assert_eq!(
            key.verify(&other, &expected),
            Err(KeyError::BadSignature),
            "line {lineno}"
        );
        let mut flipped = expected.to_bytes();
        flipped[n % 64] ^= 1 << (n % 8);
        assert_eq!(
            key.verify(&message, &Signature::from_bytes(&flipped)),
            Err(KeyError::BadSignature),
            "line {lineno}: flipped bit"
        );
        count += 1;
    }
    assert_eq!(count, SIGN_INPUT_LINES, "every line of sign.input is checked");
}

/// What the project's verification makes of one Wycheproof case.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    /// Refused by `PublicKey::from_bytes` (malformed or weak key).
    KeyRefused(KeyError),
    /// The signature is not 64 bytes, so it cannot be a `Signature`.
    WrongLength(usize),
    /// Refused by `PublicKey::verify`.
    SignatureRefused(KeyError),
}

fn judge(public: &[u8], msg: &[u8], sig: &[u8]) -> Outcome {
    let Ok(public) = <[u8; 32]>::try_from(public) else {
        return Outcome::KeyRefused(KeyError::InvalidPublicKey);
    };
    let key = match PublicKey::from_bytes(&public) {
        Ok(key) => key,
        Err(e) => return Outcome::KeyRefused(e),
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return Outcome::WrongLength(sig.len());
    };
    match key.verify(msg, &Signature::from_bytes(&sig)) {
        Ok(()) => Outcome::Accepted,
        Err(e) => Outcome::SignatureRefused(e),
    }
}

#[test]
fn wycheproof_valid_cases_verify_and_invalid_ones_are_rejected() {
    let doc: serde_json::Value = serde_json::from_str(WYCHEPROOF).unwrap();
    assert_eq!(doc["algorithm"], "EDDSA");
    let declared = doc["numberOfTests"].as_u64().expect("numberOfTests");
    assert_eq!(declared, WYCHEPROOF_CASES);

    let (mut valid, mut invalid) = (0u64, 0u64);
    let mut failures = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        assert_eq!(group["type"], "EddsaVerify");
        assert_eq!(group["publicKey"]["curve"], "edwards25519");
        let public = unhex(group["publicKey"]["pk"].as_str().expect("publicKey.pk"));
        for case in group["tests"].as_array().expect("tests") {
            let id = case["tcId"].as_u64().expect("tcId");
            assert!(ids.insert(id), "tcId {id} appears twice");
            let msg = unhex(case["msg"].as_str().expect("msg"));
            let sig = unhex(case["sig"].as_str().expect("sig"));
            let outcome = judge(&public, &msg, &sig);
            match case["result"].as_str().expect("result") {
                "valid" => {
                    valid += 1;
                    if outcome != Outcome::Accepted {
                        failures.push(format!(
                            "tcId {id} is valid but {outcome:?} ({})",
                            case["comment"]
                        ));
                    }
                }
                "invalid" => {
                    invalid += 1;
                    if outcome == Outcome::Accepted {
                        failures.push(format!("tcId {id} is invalid but accepted ({})", case["comment"]));
                    }
                }
                other => panic!("tcId {id}: result {other:?}; this suite has only valid and invalid"),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "Wycheproof failures:\n{}",
        failures.join("\n")
    );
    assert_eq!(valid + invalid, declared, "every case is counted; none skipped");
    assert_eq!((valid, invalid), (88, 63));
}

#[test]
fn wycheproof_invalid_cases_fail_for_the_expected_reason() {
    // Signatures of the wrong length never reach `verify`; the keys of this suite
    // are all well formed, so every other invalid case is refused by `verify`.
    let doc: serde_json::Value = serde_json::from_str(WYCHEPROOF).unwrap();
    let mut wrong_length = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let public = unhex(group["publicKey"]["pk"].as_str().unwrap());
        assert!(
            PublicKey::from_bytes(&array(&public, "pk")).is_ok(),
            "group key {} is refused",
            group["publicKey"]["pk"]
        );
        for case in group["tests"].as_array().unwrap() {
            if case["result"] != "invalid" {
                continue;
            }
            let msg = unhex(case["msg"].as_str().unwrap());
            let sig = unhex(case["sig"].as_str().unwrap());
            let outcome = judge(&public, &msg, &sig);
            if sig.len() == 64 {
                assert_eq!(
                    outcome,
                    Outcome::SignatureRefused(KeyError::BadSignature),
                    "tcId {}",
                    case["tcId"]
                );
            } else {
                assert_eq!(outcome, Outcome::WrongLength(sig.len()), "tcId {}", case["tcId"]);
                wrong_length += 1;
            }
        }
    }
    // tcId 30-41: truncated, padded and compressed signatures.
    assert_eq!(wrong_length, 12);
}

#[test]
fn weak_and_malformed_keys_are_refused_before_verification() {
    // The identity point (order 1) and the point of order 2 (y = -1).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    for weak in [identity, minus_one] {
        assert_eq!(
            PublicKey::from_bytes(&weak),
            Err(KeyError::WeakKey),
            "{}",
            hex::encode(weak)
        );
    }
    // y = 2 is not the y-coordinate of a curve point.
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    assert_eq!(PublicKey::from_bytes(&off_curve), Err(KeyError::InvalidPublicKey));
}
