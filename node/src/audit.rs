//! Offline audit of a bundle: with nothing but the file and the network's
//! genesis hash, prove who signed what. The registry history the bundle
//! carries must start at that genesis and advance by approved updates; every
//! bulletin is verified against it as a node would verify it; chains are
//! checked for equivocation and for links that do not match; and each verified
//! bulletin gets a provenance record (signer, member, number, time, kind,
//! title). No store and no node are needed, so an auditor who is not a member
//! can run it years later.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::RwLock;

use herald_keys::{Applied, Registry};
use herald_protocol::{
    BulletinId, KeyId, MAX_REGISTRY_UPDATE_BYTES, MemberId, NetworkId, RegistryHash, SignedBulletin,
    SignedRegistryUpdate,
};
use serde::Serialize;

use crate::bundle::{self, BundleError, ImportReport};
use crate::store::Stored;

/// Why a bundle could not be audited at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file cannot be read, is not a bundle, is damaged, or is of another network.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The registry in the bundle does not start from the given genesis.
    #[error(
        "{path}: the bundle's registry does not start from genesis {genesis}: {reason}; check the genesis hash you were given"
    )]
    NotRooted {
        /// The file.
        path: std::path::PathBuf,
        /// The genesis hash the auditor trusts.
        genesis: RegistryHash,
        /// What is wrong.
        reason: String,
    },
}

/// What the audit found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AuditReport {
    /// The network (from the genesis hash).
    pub network: String,
    /// The registry version the bundle's history reaches.
    pub registry_version: u64,
    /// The registry's hash at that version: compare it with the network's
    /// current registry, since a bundle that leaves out later updates (a
    /// revocation, say) is judged by the registry it carries.
    pub registry_hash: String,
    /// The registry the auditor named as known (`known_registry`) is not in
    /// the bundle's history: the bundle may leave out later updates.
    pub registry_not_reached: Option<String>,
    /// Registry updates applied (genesis included).
    pub registry_updates: u32,
    /// Bulletins whose signature and signer verify.
    pub verified: u64,
    /// Items refused, by position in the bundle (registry updates first, then
    /// bulletins), with the reason.
    pub rejected: Vec<(u64, String)>,
    /// Signing keys with at least one verified bulletin.
    pub chains: u64,
    /// Numbers of a chain with two or more different verified bodies: the
    /// signer contradicted itself, and the bodies are the proof.
    pub equivocations: Vec<Equivocation>,
    /// Verified bulletins whose `prev` is not the bundle's bulletin before it
    /// on the same chain.
    pub broken_links: Vec<BrokenLink>,
    /// Numbers below a chain's highest that the bundle does not hold (an
    /// export filtered by time or kind leaves such gaps; not a fault).
    pub missing_numbers: u64,
}

impl AuditReport {
    /// Whether everything in the bundle verified and every chain is
    /// consistent.
    pub fn clean(&self) -> bool {
        self.rejected.is_empty()
            && self.equivocations.is_empty()
            && self.broken_links.is_empty()
            && self.registry_not_reached.is_none()
    }
}

/// Two or more bodies for one number of one key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Equivocation {
    /// The signing key.
    pub key: String,
    /// The number.
    pub seq: u64,
    /// The bodies' ids.
    pub ids: Vec<String>,
}

/// A bulletin whose link to its predecessor does not match.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokenLink {
    /// The bulletin.
    pub id: String,
    /// Its key and number.
    pub key: String,
    /// Its number.
    pub seq: u64,
    /// What it names as its predecessor (none for a first bulletin).
    pub prev: Option<String>,
}

/// Where one verified bulletin comes from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Provenance {
    /// The bulletin id (SHA-256 of its signed body).
    pub id: String,
    /// The signing member's id.
    pub member: String,
    /// The member's name in the registry.
    pub member_name: String,
    /// The signing key.
    pub key: String,
    /// Its number on the key's chain.
    pub seq: u64,
    /// The bulletin before it on the chain.
    pub prev: Option<String>,
    /// Creation time (ms since the Unix epoch), as the signer stated it.
    pub created: u64,
    /// Kind.
    pub kind: &'static str,
    /// Title.
    pub title: String,
}

/// One chain entry as the audit keeps it: 72 bytes a bulletin.
struct Entry {
    id: BulletinId,
    prev: Option<BulletinId>,
}

/// Audits the bundle at `path` against the network rooted in `genesis`,
/// calling `each` with the provenance of every verified bulletin (once per
/// bulletin), in file order. With `known_registry`, the hash of a registry
/// version the auditor knows the network reached, the bundle's history must
/// include it.
pub fn audit(
    path: &Path,
    genesis: RegistryHash,
    known_registry: Option<RegistryHash>,
    mut each: impl FnMut(&Provenance),
) -> Result<AuditReport, AuditError> {
    let network = NetworkId::from_genesis(genesis);
    let (registry_count, bulletin_count) = bundle::check(path, network)?;
    let not_rooted = |reason: String| AuditError::NotRooted {
        path: path.to_path_buf(),
        genesis,
        reason,
    };
    let mut frames = bundle::open(path)?;
    frames.header()?;
    let mut report = AuditReport {
        network: network.to_string(),
        ..AuditReport::default()
    };
    if registry_count == 0 {
        return Err(not_rooted("it carries no registry updates".into()));
    }
    let first = frames.frame(MAX_REGISTRY_UPDATE_BYTES, "registry update")?;
    let first =
        SignedRegistryUpdate::from_bytes(&first).map_err(|e| not_rooted(format!("its first update: {e}")))?;
    let mut registry = Registry::from_genesis(first, genesis).map_err(|e| not_rooted(e.to_string()))?;
    report.registry_updates = 1;
    for i in 1..registry_count {
        let bytes = frames.frame(MAX_REGISTRY_UPDATE_BYTES, "registry update")?;
        let outcome = SignedRegistryUpdate::from_bytes(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|u| registry.apply(u).map_err(|e| e.to_string()));
        match outcome {
            // (`apply` only advances: a bundle's history is one branch.)
            Ok(Applied::Advanced(_) | Applied::Switched { .. }) => report.registry_updates += 1,
            Ok(Applied::AlreadyHeld) => {}
            Err(reason) => report
                .rejected
                .push((u64::from(i), format!("registry update: {reason}"))),
        }
    }
    report.registry_version = registry.version().0;
    report.registry_hash = registry.hash().to_string();
    if let Some(known) = known_registry
        && !registry.history().iter().any(|u| u.hash() == known)
    {
        report.registry_not_reached = Some(format!(
            "the bundle's registry history (up to version {}) does not include registry {known}: it may leave out later updates, such as revocations",
            report.registry_version
        ));
    }

    let names: HashMap<MemberId, String> = registry
        .current()
        .members()
        .map(|m| (m.id, m.name.clone()))
        .collect();
    let mut chains: HashMap<KeyId, BTreeMap<u64, Vec<Entry>>> = HashMap::new();
    let registry = RwLock::new(registry);
    let mut imported = ImportReport::default();
    let mut sink = |items: Vec<(SignedBulletin, MemberId)>| {
        let mut outcomes = Vec::with_capacity(items.len());
        for (bulletin, member) in &items {
            let body = bulletin.body();
            let (id, prev) = (bulletin.id(), body.prev);
            let held = chains
                .entry(body.signer)
                .or_default()
                .entry(body.seq.0)
                .or_default();
            if held.iter().any(|e| e.id == id) {
                // The same bulletin twice in the file: counted and described once.
                outcomes.push(Stored::AlreadyHeld);
                continue;
            }
            held.push(Entry { id, prev });
            outcomes.push(Stored::New);
            each(&Provenance {
                id: id.to_string(),
                member: member.to_string(),
                member_name: names.get(member).cloned().unwrap_or_default(),
                key: body.signer.to_string(),
                seq: body.seq.0,
                prev: prev.map(|p| p.to_string()),
                created: body.created.0,
                kind: body.kind.name(),
                title: body.title.clone(),
            });
        }
        Ok(outcomes)
    };
    bundle::verify_bulletins(
        frames,
        bulletin_count,
        u64::from(registry_count),
        &registry,
        &mut sink,
        &mut imported,
    )?;
    report.verified = imported.new;
    report.rejected.extend(imported.rejected);
    report.chains = chains.len() as u64;
    let mut keys: Vec<&KeyId> = chains.keys().collect();
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for key in keys {
        let chain = &chains[key];
        let highest = chain.keys().next_back().copied().unwrap_or(0);
        report.missing_numbers = report
            .missing_numbers
            .saturating_add(highest.saturating_sub(chain.len() as u64));
        for (seq, entries) in chain {
            if entries.len() > 1 {
                report.equivocations.push(Equivocation {
                    key: key.to_string(),
                    seq: *seq,
                    ids: entries.iter().map(|e| e.id.to_string()).collect(),
                });
            }
            let before = seq.checked_sub(1).and_then(|s| chain.get(&s));
            for entry in entries {
                let linked = match (before, entry.prev) {
                    // A first bulletin names nothing.
                    _ if *seq == 1 => entry.prev.is_none(),
                    (Some(before), Some(prev)) => before.iter().any(|b| b.id == prev),
                    (Some(_), None) => false,
                    // The bulletin before it is not in the bundle: nothing to compare.
                    (None, _) => true,
                };
                if !linked {
                    report.broken_links.push(BrokenLink {
                        id: entry.id.to_string(),
                        key: key.to_string(),
                        seq: *seq,
                        prev: entry.prev.map(|p| p.to_string()),
                    });
                }
            }
        }
    }
    Ok(report)
}
