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
    /// A registry update of another branch than this node's (a fork
    /// earlier on), approved by a member this node knows: not taken, not
    /// forwarded, no penalty; the node syncs with the sender.
    OtherBranch(String),
    /// A registry update of another history that no current member of this
    /// node's registry approved: it may be valid on its branch (a member key
    /// rotated there, a member removed here), or junk, which costs nothing
    /// to make. Not taken, not forwarded, no penalty, no sync.
    Unproven(String),

    /// A bulletin signed by a key this node's registry does not admit for
    /// it (unknown, revoked, or its member removed), where the sender may
    /// hold a later registry than this node, or this node one the sender
    /// lacks: not forwarded; it lowers the sender's score but does not
    /// count towards a ban, and the node syncs with the sender.
    NotAdmitted(String),
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
    let held = match store.holds_as(&bulletin) {
        Ok(held) => held,
        // A store that cannot answer must not make us forward unchecked data,
        // nor blame the sender: treat it as a duplicate and let sync retry.
        Err(e) => {
            tracing::error!(error = %e, "store lookup failed during validation");
            return Verdict::Duplicate;
        }
    };
    if held == Some(true) {
        return Verdict::Duplicate;
    }
    match registry.check_bulletin(&bulletin) {
        // A held body under another signature that verifies too (only its
        // signer can make one): nothing new.
        Ok(_) if held.is_some() => Verdict::Duplicate,
        Ok(member) => Verdict::Accept(Box::new(bulletin), member),
        Err(reason) if registries_may_differ(&reason) => Verdict::NotAdmitted(reason.to_string()),
        Err(reason) => Verdict::Reject(reason.to_string()),
    }
}

/// Whether a bulletin's rejection may come from a registry the sender holds
/// and this node does not yet (a key it admits, a revocation or removal it
/// lacks), or the other way round: its signer unknown, revoked or removed
/// here. Such input is not proof that the sender misbehaves.
fn registries_may_differ(reason: &herald_keys::Rejection) -> bool {
    matches!(reason, herald_keys::Rejection::UnknownKey(_)) || is_standing_change(reason)
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
    // A fork already known (any copy of its body, whatever approvals it
    // carries) was forwarded once: copies of it are duplicates, not news.
    // Once as many forks are remembered as may be, any update for a past
    // version is taken as a copy: new forks still come by sync.
    // (Except one that the branch rule may take: it needs the threshold,
    // and this node's branch holds no such update from its version on.)
    let known_fork = {
        let registry = registry.read().unwrap_or_else(|e| e.into_inner());
        let version = update.body().version;
        let may_displace = registry.may_give_way_to(&update);
        registry.knows_fork(version, update.hash())
            || (registry.fork_memory_full() && version <= registry.version() && !may_displace)
    };
    if known_fork {
        return Verdict::Duplicate;
    }
    let applied = match apply_registry_update(registry, store, update.clone()) {
        Ok(applied) => applied,
        Err(e) => return Verdict::NotSaved(format!("cannot save a registry update: {e}")),
    };
    match applied {
        Ok(Applied::Advanced(_) | Applied::Switched { .. }) => Verdict::RegistryAdvanced(Box::new(update)),
        Ok(Applied::AlreadyHeld) => Verdict::Duplicate,
        Err(RegistryError::Gap { .. }) => Verdict::Behind,
        Err(e @ RegistryError::Fork { .. }) => Verdict::RegistryFork(e.to_string()),
        // An update of another branch: the sender's registry forked from
        // this node's earlier, as validly as this one (nothing to blame).
        // Only one a member approved is worth a sync: anything else costs
        // nothing to make.
        Err(e @ RegistryError::WrongPrevious { .. }) => {
            if registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .approved_by_a_member(&update)
            {
                Verdict::OtherBranch(e.to_string())
            } else {
                Verdict::Unproven(format!("{e}, approved by no current member"))
            }
        }
        Err(e) => Verdict::Reject(format!("registry update refused: {e}")),
    }
}

/// Applies `update` to `registry` if it is the next approved version, and
/// saves it: under the registry's write lock, the update is saved and the
/// store flushed before the registry moves on in memory. So versions reach
/// the disk in order (of two threads applying versions 2 and 3, the second
/// waits for the first's save), and a save that fails leaves the registry
/// as it was. An update for a version held that forks this registry is
/// judged by the branch rule ([`adopt_registry_branch`]). Every path that
/// takes registry updates in (gossip, sync, bundles, the local API) goes
/// through here.
pub fn apply_registry_update(
    registry: &RwLock<Registry>,
    store: &Store,
    update: SignedRegistryUpdate,
) -> Result<Result<Applied, RegistryError>, crate::store::StoreError> {
    let mut registry = registry.write().unwrap_or_else(|e| e.into_inner());
    let mut before = evidence_held(&registry);
    let applied = registry.apply_saving(update.clone(), |update| {
        store.save_registry_update(update)?;
        store.flush()
    });
    let applied = match applied {
        // A fork that the branch rule may settle this way: checked under
        // the lock, as `apply_saving` checked it (one update).
        Ok(Err(RegistryError::Fork { .. })) if registry.may_give_way_to(&update) => {
            match registry.check_branch(vec![update]) {
                Ok(checked) => take_branch(&mut registry, store, checked, &mut before),
                Err(e) => Ok(Err(e)),
            }
        }
        other => other,
    };
    save_new_evidence(&registry, store, &before);
    applied
}

/// Takes in `branch`, the versions of another branch of the registry from
/// where it parts from this node's on, by the branch rule
/// ([`Registry::adopt_branch_saving`]): checked under the registry's read
/// lock (every approval verified), then judged and taken under the write
/// lock. When it displaces this node's versions from there, the version
/// that gives way is saved as fork evidence, then the store's versions are
/// replaced in one batch and flushed, before the registry changes in
/// memory. Otherwise its first update is kept as fork evidence. A registry
/// that changed between the two steps refuses the branch
/// ([`RegistryError::NotABranch`]): the next session brings it again.
pub fn adopt_registry_branch(
    registry: &RwLock<Registry>,
    store: &Store,
    branch: Vec<SignedRegistryUpdate>,
) -> Result<Result<Applied, RegistryError>, crate::store::StoreError> {
    let checked = registry
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .check_branch(branch);
    let checked = match checked {
        Ok(checked) => checked,
        Err(e) => return Ok(Err(e)),
    };
    let mut registry = registry.write().unwrap_or_else(|e| e.into_inner());
    let mut before = evidence_held(&registry);
    let applied = take_branch(&mut registry, store, checked, &mut before);
    save_new_evidence(&registry, store, &before);
    applied
}

/// [`adopt_registry_branch`] under the write lock. `saved` is the fork
/// evidence held on disk: the version that gives way is added to it.
fn take_branch(
    registry: &mut Registry,
    store: &Store,
    checked: herald_keys::CheckedBranch,
    saved: &mut std::collections::HashSet<herald_protocol::RegistryHash>,
) -> Result<Result<Applied, RegistryError>, crate::store::StoreError> {
    let from = checked.from();
    // What may give way: named in the log if it does. The first is saved as
    // evidence before the history changes on disk: a crash in between
    // leaves evidence of a version still held, which the next start
    // forgets ([`crate::node::stored_registry`]).
    let held_from: Vec<SignedRegistryUpdate> = registry
        .history()
        .get((from.0 - 1) as usize..)
        .map(<[SignedRegistryUpdate]>::to_vec)
        .unwrap_or_default();
    let giving_way = held_from.first().cloned();
    let contested: std::collections::BTreeSet<_> = registry.contested().collect();
    let applied = registry.adopt_checked_saving(checked, |from, updates| {
        if let Some(update) = &giving_way {
            store.save_registry_fork(update)?;
        }
        store.replace_registry_from(from, updates)
    })?;
    // A fork found contested is still reported so after a restart.
    for version in registry.contested().filter(|v| !contested.contains(v)) {
        if let Err(e) = store.save_registry_contested(version) {
            tracing::warn!(error = %e, %version, "cannot note a contested registry fork: after a restart it is reported as settled until a peer offers the other branch again");
        }
    }
    if let Ok(Applied::Switched { from, to, dropped }) = applied {
        saved.extend(giving_way.as_ref().map(SignedRegistryUpdate::hash));
        tracing::warn!(
            %from,
            %to,
            dropped,
            "REGISTRY BRANCH SWITCHED: members' own changes gave way to a branch holding a change that needs the threshold; the members whose changes were dropped must make them again"
        );
        for update in &held_from {
            let body = update.body();
            let member = herald_keys::self_managed_by(&body.ops).map_or_else(String::new, |m| m.to_string());
            tracing::warn!(version = %body.version, hash = %update.hash(), %member, "a member's own change that gave way: that member makes it again");
        }
        // What was saved as the other side of a fork is now the history.
        for update in &registry.history()[(from.0 - 1) as usize..] {
            if let Err(e) = store.drop_registry_fork(update) {
                tracing::warn!(error = %e, "cannot forget a fork's evidence that is now the history held");
            }
        }
    }
    Ok(applied)
}

fn evidence_held(registry: &Registry) -> std::collections::HashSet<herald_protocol::RegistryHash> {
    registry.forks().iter().map(|f| f.theirs.hash()).collect()
}

/// Keeps on disk too the fork evidence the registry took in since `before`,
/// so that the fork is still reported after a restart. A failed save loses
/// only that.
fn save_new_evidence(
    registry: &Registry,
    store: &Store,
    before: &std::collections::HashSet<herald_protocol::RegistryHash>,
) {
    for fork in registry.forks() {
        if !before.contains(&fork.theirs.hash())
            && let Err(e) = store.save_registry_fork(&fork.theirs)
        {
            tracing::warn!(error = %e, version = %fork.version, "cannot save a registry fork's evidence: it is reported until the node stops");
        }
    }
}

/// Whether a rejection follows from a registry change that the sender may not
/// know of yet (a revocation, a removal), rather than from invalid data.
/// Gossip does not forward such bulletins and does not count them towards a
/// ban ([`Verdict::NotAdmitted`], with unknown keys too); sync skips them
/// without blaming the peer.
pub fn is_standing_change(reason: &herald_keys::Rejection) -> bool {
    matches!(
        reason,
        herald_keys::Rejection::Revoked { .. } | herald_keys::Rejection::MemberRemoved { .. }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use herald_keys::{SecretKey, approve};
    use herald_protocol::RegistryVersion;

    use crate::test_network::{OneMember, one_member};

    fn store_of(net: &OneMember, dir: &std::path::Path) -> Store {
        Store::open(dir, net.registry.network()).unwrap()
    }

    /// Version 2 of the one member's registry, adding `key` as a signing key.
    fn adding(net: &OneMember, key: &SecretKey) -> SignedRegistryUpdate {
        net.adding_key(&net.registry, key)
    }

    #[test]
    fn a_copy_of_a_held_bulletin_is_a_duplicate_only_with_a_signature_that_verifies() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(&net, dir.path());
        let held = net.chain(1).remove(0);
        let mut forged = held.to_bytes();
        *forged.last_mut().unwrap() ^= 0x01;
        let verdict = |store: &Store, bytes: &[u8]| validate_bulletin(bytes, &net.registry, store);
        assert!(
            matches!(verdict(&store, &forged), Verdict::Reject(_)),
            "not held yet"
        );
        // Staged, then folded: the same bytes are a duplicate, a forged copy
        // of them is refused.
        store.stage(&held, &net.member_id(), b"peer");
        assert!(matches!(verdict(&store, &held.to_bytes()), Verdict::Duplicate));
        let refused = verdict(&store, &forged);
        assert!(
            matches!(&refused, Verdict::Reject(r) if r.contains("signature")),
            "{refused:?}"
        );
        store.fold_staged(16).unwrap();
        assert!(matches!(verdict(&store, &held.to_bytes()), Verdict::Duplicate));
        assert!(matches!(verdict(&store, &forged), Verdict::Reject(_)));
    }

    #[test]
    fn a_bulletin_by_a_key_this_registry_does_not_admit_is_not_held_against_its_sender() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(&net, dir.path());
        let key = SecretKey::from_seed(&[77; 32]);
        let mut later = net.registry.clone();
        later.apply(adding(&net, &key)).unwrap();
        let mut body = net.chain(1).remove(0).body().clone();
        body.signer = key.id();
        let bytes = herald_keys::sign_bulletin(&key, &body).unwrap().to_bytes();
        assert!(matches!(
            validate_bulletin(&bytes, &later, &store),
            Verdict::Accept(..)
        ));
        let verdict = validate_bulletin(&bytes, &net.registry, &store);
        assert!(
            matches!(&verdict, Verdict::NotAdmitted(r) if r.contains("not a signing key")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_threshold_approved_update_displaces_a_members_own_change_for_its_version() {
        let net = crate::test_network::three_members();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        store.save_registry_update(&net.genesis).unwrap();
        let registry = RwLock::new(net.registry.clone());
        let own = net.own_key(&net.registry, 0, &SecretKey::from_seed(&[70; 32]));
        let by_threshold = net.by_threshold(&net.registry);
        let verdict =
            |update: &SignedRegistryUpdate| validate_registry_update(&update.to_bytes(), &registry, &store);
        assert!(matches!(verdict(&own), Verdict::RegistryAdvanced(_)));
        // Forwarded as news, and taken: the member's own change gives way.
        assert!(matches!(verdict(&by_threshold), Verdict::RegistryAdvanced(_)));
        assert_eq!(registry.read().unwrap().hash(), by_threshold.hash());
        assert_eq!(
            store.registry_history().unwrap(),
            vec![net.genesis.clone(), by_threshold.clone()]
        );
        assert_eq!(store.registry_forks().unwrap(), vec![own.clone()]);
        // The change that gave way is a known fork now, not news.
        assert!(matches!(verdict(&own), Verdict::Duplicate));
        assert!(matches!(verdict(&by_threshold), Verdict::Duplicate));
    }

    /// A build before the branch rule kept a shared change for a version as a fork
    /// of a member's own change: at start, the rule settles it.
    #[test]
    fn a_fork_kept_before_the_branch_rule_is_settled_at_start() {
        let net = crate::test_network::three_members();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net.registry.network()).unwrap();
        let own = net.own_key(&net.registry, 0, &SecretKey::from_seed(&[70; 32]));
        let shared = net.by_threshold(&net.registry);
        for update in [&net.genesis, &own] {
            store.save_registry_update(update).unwrap();
        }
        store.save_registry_fork(&shared).unwrap();
        let registry =
            crate::node::stored_registry(&store, net.genesis.hash(), crate::node::SavedForks::Settle)
                .unwrap()
                .unwrap();
        let settled = vec![net.genesis.clone(), shared.clone()];
        assert_eq!(registry.history(), settled);
        assert_eq!(store.registry_history().unwrap(), settled);
        assert_eq!(store.registry_forks().unwrap(), vec![own.clone()]);
        assert_eq!(crate::view::forked_versions(&registry), (0, 1));
        // And so it stays at the next start.
        let again = crate::node::stored_registry(&store, net.genesis.hash(), crate::node::SavedForks::Settle)
            .unwrap()
            .unwrap();
        assert_eq!(again.history(), settled);
        assert_eq!(again.forks().len(), 1);
    }

    #[test]
    fn a_registry_fork_is_forwarded_once() {
        let net = one_member();
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(&net, dir.path());
        store.save_registry_update(&net.genesis).unwrap();
        let registry = RwLock::new(net.registry.clone());
        let (one, other) = (SecretKey::from_seed(&[80; 32]), SecretKey::from_seed(&[81; 32]));
        let (ours, theirs) = (adding(&net, &one), adding(&net, &other));
        let verdict =
            |update: &SignedRegistryUpdate| validate_registry_update(&update.to_bytes(), &registry, &store);
        assert!(matches!(verdict(&ours), Verdict::RegistryAdvanced(_)));
        assert!(matches!(verdict(&theirs), Verdict::RegistryFork(_)));
        assert_eq!(registry.read().unwrap().forks().len(), 1);
        // Again, and with one more approval (a new message, the same body).
        assert!(matches!(verdict(&theirs), Verdict::Duplicate));
        let mut more = theirs.clone();
        more.push_approval(approve(&SecretKey::from_seed(&[82; 32]), &theirs))
            .unwrap();
        assert_ne!(more.to_bytes(), theirs.to_bytes());
        assert!(matches!(verdict(&more), Verdict::Duplicate));
        // Past the evidence kept, a new fork is still news, once.
        for n in 0..herald_keys::MAX_FORK_EVIDENCE as u8 {
            let another = adding(&net, &SecretKey::from_seed(&[120 + n; 32]));
            assert!(matches!(verdict(&another), Verdict::RegistryFork(_)), "fork {n}");
            assert!(matches!(verdict(&another), Verdict::Duplicate), "fork {n} again");
        }
        // (All by the one member: it gets a few places of evidence.)
        assert_eq!(
            registry.read().unwrap().forks().len(),
            herald_keys::MAX_FORK_EVIDENCE_PER_MEMBER
        );
        // The next version of the other branch: not this node's to take, and
        // nothing to blame its sender for.
        let mut branch = net.registry.clone();
        branch.apply(theirs.clone()).unwrap();
        let next = net.adding_key(&branch, &SecretKey::from_seed(&[90; 32]));
        assert!(matches!(verdict(&next), Verdict::OtherBranch(_)));
        // The same claim approved by no member of this registry: dropped, without a
        // sync (it costs nothing to make) and without blame (it may be valid there).
        let unapproved = SignedRegistryUpdate::from_parts(next.body_bytes().to_vec(), Vec::new()).unwrap();
        assert!(matches!(verdict(&unapproved), Verdict::Unproven(_)));
        assert_eq!(registry.read().unwrap().version(), RegistryVersion(2));
    }
}
