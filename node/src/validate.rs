//! Validation of bulletins arriving from the network, cheap to dear: size,
//! decoding, already held, signer standing, signature. Pure decisions over the
//! registry and the store; the network runs them beside its polling loop, in
//! tasks (`validators.rs`).

use std::sync::RwLock;

use herald_keys::{Applied, Registry, RegistryError};
use herald_protocol::{
    MAX_BULLETIN_BYTES, MAX_REGISTRY_UPDATE_BYTES, MemberId, SignedBulletin, SignedRegistryUpdate,
};

use crate::store::Store;

/// The outcome for one message.
#[derive(Debug)]
pub enum Verdict {
    /// Valid and new: forward it and store it.
    Accept(Box<SignedBulletin>, MemberId),
    /// A registry update that advanced the registry: forward it; save it.
    RegistryAdvanced(Box<SignedRegistryUpdate>),
    /// A validly approved registry update that conflicts with the one held:
    /// forward it so every member learns of the fork; evidence is kept.
    RegistryFork(String),
    /// A registry update beyond the next version: catch up by sync first.
    Behind,
    /// Already held: do not forward again, no penalty.
    Duplicate,
    /// A registry update this node could not save (its store failed): not
    /// taken, not forwarded, no penalty; it comes again by gossip or sync.
    NotSaved(String),

    /// Invalid: drop it and count it against the sender.
    Reject(String),
}

/// Decides what to do with `data`, received from the network.
pub fn validate_bulletin(data: &[u8], registry: &Registry, store: &Store) -> Verdict {
    if data.len() > MAX_BULLETIN_BYTES {
        return Verdict::Reject(format!(
            "{} bytes, over the {MAX_BULLETIN_BYTES}-byte limit",
            data.len()
        ));
    }
    let bulletin = match SignedBulletin::from_bytes(data) {
        Ok(b) => b,
        Err(e) => return Verdict::Reject(format!("undecodable: {e}")),
    };
    match store.holds(&bulletin) {
        Ok(true) => return Verdict::Duplicate,
        Ok(false) => {}
        // A store that cannot answer must not make us forward unchecked data,
        // nor blame the sender: treat it as a duplicate and let sync retry.
        Err(e) => {
            tracing::error!(error = %e, "store lookup failed during validation");
            return Verdict::Duplicate;
        }
    }
    match registry.check_bulletin(&bulletin) {
        Ok(member) => Verdict::Accept(Box::new(bulletin), member),
        Err(reason) => Verdict::Reject(reason.to_string()),
    }
}

/// Decides what to do with a registry update from the network, applying it to
/// `registry` and saving it when it is the next approved version
/// ([`apply_registry_update`]). Size and decoding are checked before the
/// registry's write lock is taken.
pub fn validate_registry_update(data: &[u8], registry: &RwLock<Registry>, store: &Store) -> Verdict {
    if data.len() > MAX_REGISTRY_UPDATE_BYTES {
        return Verdict::Reject(format!("{} bytes, over the registry update limit", data.len()));
    }
    let update = match SignedRegistryUpdate::from_bytes(data) {
        Ok(u) => u,
        Err(e) => return Verdict::Reject(format!("undecodable registry update: {e}")),
    };
    let applied = match apply_registry_update(registry, store, update.clone()) {
        Ok(applied) => applied,
        Err(e) => return Verdict::NotSaved(format!("cannot save a registry update: {e}")),
    };
    match applied {
        Ok(Applied::Advanced(_)) => Verdict::RegistryAdvanced(Box::new(update)),
        Ok(Applied::AlreadyHeld) => Verdict::Duplicate,
        Err(RegistryError::Gap { .. }) => Verdict::Behind,
        Err(e @ RegistryError::Fork { .. }) => Verdict::RegistryFork(e.to_string()),
        Err(e) => Verdict::Reject(format!("registry update refused: {e}")),
    }
}

/// Applies `update` to `registry` if it is the next approved version, and
/// saves it: under the registry's write lock, the update is saved and the
/// store flushed before the registry moves on in memory. So versions reach
/// the disk in order (of two threads applying versions 2 and 3, the second
/// waits for the first's save), and a save that fails leaves the registry
/// as it was. Every path that takes registry updates in (gossip, sync,
/// bundles, the local API) goes through here.
pub fn apply_registry_update(
    registry: &RwLock<Registry>,
    store: &Store,
    update: SignedRegistryUpdate,
) -> Result<Result<Applied, RegistryError>, crate::store::StoreError> {
    let mut registry = registry.write().unwrap_or_else(|e| e.into_inner());
    if Some(update.body().version) != registry.version().next() {
        // Held already, a fork (its evidence kept in memory), a gap or a
        // rollback: nothing to save.
        return Ok(registry.apply(update));
    }
    let mut next = registry.clone();
    let applied = next.apply(update.clone());
    if let Ok(Applied::Advanced(_)) = applied {
        store.save_registry_update(&update)?;
        store.flush()?;
        *registry = next;
    }
    Ok(applied)
}

/// Whether a rejection follows from a registry change that the sender may not
/// know of yet, rather than from invalid data. Gossip rejects such bulletins
/// like any other (registry changes spread by gossip within seconds); sync,
/// which runs after partitions, skips them without blaming the peer.
pub fn is_standing_change(reason: &herald_keys::Rejection) -> bool {
    matches!(
        reason,
        herald_keys::Rejection::Revoked { .. } | herald_keys::Rejection::MemberRemoved { .. }
    )
}
