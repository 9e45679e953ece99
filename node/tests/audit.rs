//! Offline audit of bundles: a clean bundle verifies from the genesis hash
//! alone with a provenance record per bulletin; another network's hash, a
//! damaged file, a forged signature, an equivocation and a broken chain link
//! are each reported for what they are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_keys::{SecretKey, sign_bulletin};
use herald_node::audit::{AuditError, Provenance, audit};
use herald_node::bundle::{self, BundleError};
use herald_protocol::{BulletinBody, BulletinId, RegistryHash, SignedBulletin};
use tempfile::TempDir;

mod common;

use common::{Net, founded, outreach};

fn network() -> Net {
    founded(&["CERT-A", "VENDOR-B"], 100)
}

fn genesis(net: &Net) -> RegistryHash {
    net.registry.history()[0].hash()
}

fn body(net: &Net, signer: &SecretKey, seq: u64, prev: Option<BulletinId>, title: &str) -> BulletinBody {
    outreach(net.registry.network(), signer, seq, prev, title)
}

/// `n` linked bulletins on `signer`'s chain.
fn chain(net: &Net, signer: &SecretKey, n: u64) -> Vec<SignedBulletin> {
    let mut out: Vec<SignedBulletin> = Vec::new();
    for seq in 1..=n {
        let prev = out.last().map(SignedBulletin::id);
        out.push(sign_bulletin(signer, &body(net, signer, seq, prev, &format!("bulletin {seq}"))).unwrap());
    }
    out
}

fn write(dir: &TempDir, net: &Net, items: &[Vec<u8>]) -> std::path::PathBuf {
    let path = dir.path().join("bundle.hrld");
    let items: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    bundle::write(
        &path,
        net.registry.network(),
        net.registry.history(),
        &items,
        |_, _| {},
    )
    .unwrap();
    path
}

fn run(
    path: &std::path::Path,
    genesis: RegistryHash,
) -> (
    Result<herald_node::audit::AuditReport, AuditError>,
    Vec<Provenance>,
) {
    let mut seen = Vec::new();
    let report = audit(path, genesis, None, |p| seen.push(p.clone()));
    (report, seen)
}

#[test]
fn a_clean_bundle_verifies_from_the_genesis_hash_alone() {
    let net = network();
    let dir = TempDir::new().unwrap();
    let a = chain(&net, &net.signers[0].0, 3);
    let b = chain(&net, &net.signers[1].0, 2);
    let items: Vec<Vec<u8>> = a.iter().chain(&b).map(SignedBulletin::to_bytes).collect();
    let path = write(&dir, &net, &items);
    let (report, seen) = run(&path, genesis(&net));
    let report = report.unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(
        (report.verified, report.chains, report.missing_numbers),
        (5, 2, 0)
    );
    assert_eq!((report.registry_version, report.registry_updates), (1, 1));
    assert_eq!(report.network, net.registry.network().to_string());
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0].id, a[0].id().to_string());
    assert_eq!(seen[0].member, net.signers[0].1.to_string());
    assert_eq!(seen[0].member_name, "CERT-A");
    assert_eq!(seen[4].member_name, "VENDOR-B");
    assert_eq!(
        (seen[1].seq, seen[1].prev.clone()),
        (2, Some(a[0].id().to_string()))
    );
    assert_eq!(seen[2].title, "bulletin 3");
}

#[test]
fn another_networks_hash_or_a_damaged_file_is_refused() {
    let net = network();
    let dir = TempDir::new().unwrap();
    let items = vec![chain(&net, &net.signers[0].0, 1)[0].to_bytes()];
    let path = write(&dir, &net, &items);
    let other = RegistryHash::from_bytes([7; 32]);
    match run(&path, other).0 {
        Err(AuditError::Bundle(BundleError::WrongNetwork { .. })) => {}
        other => panic!("expected another network, got {other:?}"),
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match run(&path, genesis(&net)).0 {
        Err(AuditError::Bundle(BundleError::Damaged { reason, .. })) => {
            assert!(reason.contains("checksum"), "{reason}")
        }
        other => panic!("expected a damaged bundle, got {other:?}"),
    }
}

#[test]
fn a_forged_signature_is_rejected_and_named_by_position() {
    let net = network();
    let dir = TempDir::new().unwrap();
    let good = chain(&net, &net.signers[0].0, 2);
    // Number 3 with one bit of its signature changed.
    let honest = sign_bulletin(
        &net.signers[0].0,
        &body(&net, &net.signers[0].0, 3, Some(good[1].id()), "forged"),
    )
    .unwrap();
    let mut forged = honest.to_bytes();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let items = vec![good[0].to_bytes(), good[1].to_bytes(), forged];
    let path = write(&dir, &net, &items);
    let (report, seen) = run(&path, genesis(&net));
    let report = report.unwrap();
    assert!(!report.clean());
    assert_eq!(report.verified, 2);
    assert_eq!(seen.len(), 2);
    assert_eq!(report.rejected.len(), 1);
    // Position 1 + 2: after the one registry update and two bulletins.
    assert_eq!(report.rejected[0].0, 3, "{:?}", report.rejected);
}

#[test]
fn equivocation_and_a_broken_link_are_reported() {
    let net = network();
    let dir = TempDir::new().unwrap();
    let key = &net.signers[0].0;
    let honest = chain(&net, key, 3);
    // A second body for number 2, and a number 4 naming a bulletin that is not number 3.
    let twin = sign_bulletin(key, &body(&net, key, 2, Some(honest[0].id()), "the other story")).unwrap();
    let stray = sign_bulletin(
        key,
        &body(&net, key, 4, Some(BulletinId::from_bytes([9; 32])), "stray"),
    )
    .unwrap();
    // Number 6 with no number 5 in the bundle: a gap, not a fault.
    let after_gap = sign_bulletin(
        key,
        &body(&net, key, 6, Some(BulletinId::from_bytes([5; 32])), "later"),
    )
    .unwrap();
    let items: Vec<Vec<u8>> = honest
        .iter()
        .chain([&twin, &stray, &after_gap])
        .map(SignedBulletin::to_bytes)
        .collect();
    let path = write(&dir, &net, &items);
    let report = run(&path, genesis(&net)).0.unwrap();
    assert_eq!(report.verified, 6);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.equivocations.len(), 1);
    assert_eq!(report.equivocations[0].seq, 2);
    let mut ids = report.equivocations[0].ids.clone();
    ids.sort();
    let mut expected = vec![honest[1].id().to_string(), twin.id().to_string()];
    expected.sort();
    assert_eq!(ids, expected);
    // Number 3 names the honest number 2, which is held: linked. Number 4 names
    // something that is not number 3.
    assert_eq!(report.broken_links.len(), 1, "{:?}", report.broken_links);
    assert_eq!(report.broken_links[0].id, stray.id().to_string());
    assert_eq!(report.missing_numbers, 1);
    assert!(!report.clean());
}

#[test]
fn a_bundle_must_reach_the_registry_the_auditor_knows() {
    let net = network();
    let dir = TempDir::new().unwrap();
    let items = vec![chain(&net, &net.signers[0].0, 1)[0].to_bytes()];
    let path = write(&dir, &net, &items);
    // The bundle's registry is genesis only: naming genesis is satisfied...
    let report = audit(&path, genesis(&net), Some(genesis(&net)), |_| {}).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.registry_hash, genesis(&net).to_string());
    // ...naming a later registry it does not carry is a finding.
    let later = RegistryHash::from_bytes([3; 32]);
    let report = audit(&path, genesis(&net), Some(later), |_| {}).unwrap();
    assert!(!report.clean());
    let problem = report.registry_not_reached.unwrap();
    assert!(
        problem.contains(&later.to_string()) && problem.contains("revocations"),
        "{problem}"
    );
}

#[test]
fn a_bulletin_twice_in_a_bundle_is_counted_once() {
    let net = network();
    let dir = TempDir::new().unwrap();
    let one = chain(&net, &net.signers[0].0, 1)[0].to_bytes();
    let path = write(&dir, &net, &[one.clone(), one]);
    let (report, seen) = run(&path, genesis(&net));
    let report = report.unwrap();
    assert_eq!((report.verified, seen.len()), (1, 1));
    assert!(report.clean(), "{report:?}");
}
