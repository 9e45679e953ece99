//! The member registry: the only root of trust. It starts from a genesis update
//! whose hash every node is configured with, and changes only by signed updates
//! that a threshold of members approved (or, for a member's own keys and nodes,
//! that member). Versions follow one another; conflicting updates are kept as
//! evidence. Where two branches part, one holding a change that needs the
//! threshold displaces one of members' own changes only
//! ([`Registry::adopt_branch_saving`]); no other change is ever undone.
//!
//! Every version's state is kept (to judge a fork against the state before it,
//! and for [`Registry::at_version`]). The collections that grow with the
//! history (keys ever used, the signing key index, members and each member's
//! signing keys) are persistent maps from `imbl`: a version's state shares
//! everything it did not change with the state before it, so a history costs
//! memory in proportion to what its updates change, not to versions times keys.
//! Each key an update changes copies one path of each map it touches (about a
//! kilobyte or two in a large history), which is more than a key admitted in
//! a map of its own would cost, but it keeps every state a plain value that
//! answers with references into itself, as the public methods do. A single
//! index of when each key was first used, shared by all versions, would be
//! smaller but would need a lock and care on every path that applies an
//! update speculatively (fork checks, a registry cloned before a save).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use herald_protocol::{
    KeyId, MemberEntry, MemberId, NetworkId, NodeId, REGISTRY_DOMAIN, RegistryHash, RegistryOp,
    RegistryVersion, RevocationPoint, SignedRegistryUpdate, Timestamp,
};

use crate::key::{KeyError, PublicKey};

/// Why a registry update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The genesis update does not hash to the configured value.
    #[error(
        "genesis hash is {found}, but this node is configured for {expected}; check the genesis file and hash"
    )]
    GenesisMismatch {
        /// Configured.
        expected: RegistryHash,
        /// Computed.
        found: RegistryHash,
    },
    /// Not a genesis update (version 1) where one was needed, or a genesis with
    /// operations other than admitting members and setting the threshold.
    #[error("not a valid genesis update: {0}")]
    NotGenesis(&'static str),
    /// An update that skips versions.
    #[error("registry update {got} does not follow {have}; fetch the versions in between first")]
    Gap {
        /// Current version.
        have: RegistryVersion,
        /// The update's version.
        got: RegistryVersion,
    },
    /// An update for a version already passed that is not the one held and is not
    /// validly approved: refused as a rollback.
    #[error("registry update {got} is older than the current version {have} and not approved; refused")]
    Rollback {
        /// Current version.
        have: RegistryVersion,
        /// The update's version.
        got: RegistryVersion,
    },
    /// The update names a previous version other than the one held.
    #[error("registry update {version} builds on a different history than this node's")]
    WrongPrevious {
        /// The update's version.
        version: RegistryVersion,
    },
    /// Two validly approved, different updates for the same version: kept as
    /// evidence ([`Registry::forks`]).
    #[error(
        "registry fork at version {version}: {ours} is held, {theirs} is also approved; evidence kept, tell the members"
    )]
    Fork {
        /// The version.
        version: RegistryVersion,
        /// The held update's hash.
        ours: RegistryHash,
        /// The conflicting update's hash.
        theirs: RegistryHash,
    },
    /// Not enough distinct members approved.
    #[error(
        "{approvals} distinct members approved; {threshold} needed (a member's own key changes need that member's key)"
    )]
    ThresholdNotMet {
        /// Distinct members with a valid approval.
        approvals: usize,
        /// Needed.
        threshold: u32,
    },
    /// A key being added did not sign the update.
    #[error("key {0} is being added but did not approve the update (proof of possession missing)")]
    MissingProofOfPossession(KeyId),
    /// A key being added is weak or malformed.
    #[error("key {key} is refused: {reason}")]
    BadKey {
        /// The key.
        key: KeyId,
        /// Why.
        reason: KeyError,
    },
    /// A key that some member already uses, or used before.
    #[error("key {0} is already in the registry (keys are never reused)")]
    KeyInUse(KeyId),
    /// A member id that is already taken.
    #[error("member {0} is already in the registry")]
    DuplicateMember(MemberId),
    /// An operation on a member the registry does not have, or has removed.
    #[error("no current member {0}")]
    UnknownMember(MemberId),
    /// An operation on a key or node the member does not have.
    #[error("member {member} has no {what} {key}")]
    NotOwned {
        /// The member.
        member: MemberId,
        /// "signing key" or "node".
        what: &'static str,
        /// The key or node id.
        key: KeyId,
    },
    /// Revoking a key twice.
    #[error("signing key {0} is already revoked")]
    AlreadyRevoked(KeyId),
    /// The threshold would not be above half of the members.
    #[error("threshold {threshold} with {members} members: it must be above half and at most all of them")]
    ThresholdOutOfRange {
        /// Threshold after the update.
        threshold: u32,
        /// Members after the update.
        members: usize,
    },
    /// A member would hold too many keys or nodes.
    #[error("member {0} would hold more than {max} signing keys or nodes", max = herald_protocol::registry::MAX_KEYS_PER_MEMBER)]
    TooManyKeys(MemberId),
    /// A member would have been admitted more keys over its life than any may.
    #[error(
        "member {0} would have been admitted more than {max} keys over its life (member keys, signing keys and nodes, rotated and revoked ones included)",
        max = herald_protocol::registry::MAX_KEYS_EVER_PER_MEMBER
    )]
    TooManyKeysEver(MemberId),
    /// A branch offered to [`Registry::adopt_branch_saving`] that does not
    /// part from this registry's history within it.
    #[error("not another branch of this registry's history: {0}")]
    NotABranch(&'static str),
}

/// A signing key's standing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyState {
    /// The key, parsed once.
    pub key: PublicKey,
    /// From where it is revoked, if it is.
    pub revoked: Option<RevocationPoint>,
}

/// A member as the registry knows it at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable id.
    pub id: MemberId,
    /// Name.
    pub name: String,
    /// Current governance key.
    pub member_key: PublicKey,
    /// Signing keys, revoked ones included (what they signed before stays valid).
    /// Revoked keys pile up without bound, so this is a persistent map that a
    /// version shares with the one before; each key's standing sits behind an
    /// `Arc` so that a change copies pointers, not parsed keys.
    pub signing_keys: imbl::OrdMap<KeyId, Arc<SigningKeyState>>,
    /// Current nodes. At most [`herald_protocol::registry::MAX_KEYS_PER_MEMBER`]
    /// of them, so a plain set that a change copies whole.
    pub node_ids: BTreeSet<NodeId>,
    /// When the member was removed, if it was.
    pub removed_at: Option<Timestamp>,
    /// How many of `signing_keys` are not revoked, kept as keys come and go so
    /// that admitting a key never walks the revoked ones.
    active_signing_keys: usize,
    /// Keys admitted to the member over its life, in any role
    /// ([`herald_protocol::registry::MAX_KEYS_EVER_PER_MEMBER`]).
    keys_admitted: usize,
}

impl Member {
    /// Whether the member is still a member.
    pub fn is_current(&self) -> bool {
        self.removed_at.is_none()
    }
}

/// The registry's content at one version.
///
/// Cloning it is cheap: the collections are persistent (`imbl`), so the next
/// version starts as a clone that shares all of them and copies only the
/// parts its operations change. Plain maps here would make each version a
/// full copy of every key ever admitted, and a history's memory quadratic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryState {
    version: RegistryVersion,
    hash: RegistryHash,
    threshold: u32,
    /// Members behind an `Arc`, so that changing one copies that member only.
    members: imbl::OrdMap<MemberId, Arc<Member>>,
    /// Every signing key ever admitted, to its member.
    signing_index: imbl::HashMap<KeyId, MemberId>,
    /// Every key or node id ever admitted in any role: never reused.
    used: imbl::HashSet<[u8; 32]>,
}

impl RegistryState {
    fn empty() -> Self {
        Self {
            version: RegistryVersion(0),
            hash: RegistryHash::from_bytes([0; 32]),
            threshold: 0,
            members: imbl::OrdMap::new(),
            signing_index: imbl::HashMap::new(),
            used: imbl::HashSet::new(),
        }
    }

    /// This state's version.
    pub fn version(&self) -> RegistryVersion {
        self.version
    }

    /// The hash of the update that produced this state.
    pub fn hash(&self) -> RegistryHash {
        self.hash
    }

    /// Distinct members needed to approve a change.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// All members, removed ones included.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|m| &**m)
    }

    /// Members that are still members.
    pub fn current_members(&self) -> impl Iterator<Item = &Member> {
        self.members().filter(|m| m.is_current())
    }

    /// One member by id.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.get(id).map(|m| &**m)
    }

    /// The member holding a signing key, and the key's standing.
    pub fn signing_key(&self, key: &KeyId) -> Option<(&Member, &SigningKeyState)> {
        let member = self.member(self.signing_index.get(key)?)?;
        Some((member, &**member.signing_keys.get(key)?))
    }

    /// Node ids of current members: the peers allowed to connect.
    pub fn allowed_nodes(&self) -> impl Iterator<Item = (&Member, &NodeId)> {
        self.current_members()
            .flat_map(|m| m.node_ids.iter().map(move |n| (m, n)))
    }

    /// Whether the key ever held any role here (member key, signing key or node).
    pub fn is_known_key(&self, key: &[u8; 32]) -> bool {
        self.used.contains(key)
    }

    fn check_current_member(&self, id: &MemberId) -> Result<(), RegistryError> {
        match self.member(id) {
            Some(m) if m.is_current() => Ok(()),
            _ => Err(RegistryError::UnknownMember(*id)),
        }
    }

    /// A member to change, copied out of what this state shares with the
    /// version before if it is not this state's own copy yet.
    fn member_mut(&mut self, id: &MemberId) -> Result<&mut Member, RegistryError> {
        self.members
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or(RegistryError::UnknownMember(*id))
    }

    fn current_member_mut(&mut self, id: &MemberId) -> Result<&mut Member, RegistryError> {
        self.check_current_member(id)?;
        self.member_mut(id)
    }

    fn claim_key(&mut self, key: [u8; 32]) -> Result<PublicKey, RegistryError> {
        let id = KeyId::from_bytes(key);
        let public =
            PublicKey::from_bytes(&key).map_err(|reason| RegistryError::BadKey { key: id, reason })?;
        if self.used.insert(key).is_some() {
            return Err(RegistryError::KeyInUse(id));
        }
        Ok(public)
    }

    fn apply_op(&mut self, op: &RegistryOp) -> Result<(), RegistryError> {
        match op {
            RegistryOp::AddMember(entry) => self.add_member(entry),
            RegistryOp::RemoveMember { member, at } => {
                self.current_member_mut(member)?.removed_at = Some(*at);
                Ok(())
            }
            RegistryOp::SetThreshold { threshold } => {
                self.threshold = *threshold;
                Ok(())
            }
            RegistryOp::AddSigningKey { member, key } => {
                self.check_current_member(member)?;
                let public = self.claim_key(*key.as_bytes())?;
                let m = self.current_member_mut(member)?;
                m.signing_keys.insert(
                    *key,
                    Arc::new(SigningKeyState {
                        key: public,
                        revoked: None,
                    }),
                );
                m.active_signing_keys += 1;
                check_key_count(m)?;
                admitted_one_more(m)?;
                self.signing_index.insert(*key, *member);
                Ok(())
            }
            RegistryOp::RevokeSigningKey { member, key, from } => {
                // A removed member's keys can still be revoked (by threshold):
                // removal is by time, which a key holder can backdate; a
                // revocation by number cannot be signed around.
                let m = self.member_mut(member)?;
                let state = m.signing_keys.get_mut(key).ok_or(RegistryError::NotOwned {
                    member: *member,
                    what: "signing key",
                    key: *key,
                })?;
                if state.revoked.is_some() {
                    return Err(RegistryError::AlreadyRevoked(*key));
                }
                Arc::make_mut(state).revoked = Some(*from);
                m.active_signing_keys -= 1;
                Ok(())
            }
            RegistryOp::AddNode { member, node } => {
                self.check_current_member(member)?;
                self.claim_key(*node.as_bytes())?;
                let m = self.current_member_mut(member)?;
                m.node_ids.insert(*node);
                check_key_count(m)?;
                admitted_one_more(m)
            }
            RegistryOp::RemoveNode { member, node } => {
                let m = self.current_member_mut(member)?;
                if !m.node_ids.remove(node) {
                    return Err(RegistryError::NotOwned {
                        member: *member,
                        what: "node",
                        key: KeyId::from_bytes(*node.as_bytes()),
                    });
                }
                Ok(())
            }
            RegistryOp::RotateMemberKey { member, new_key } => {
                self.check_current_member(member)?;
                let public = self.claim_key(*new_key.as_bytes())?;
                let m = self.current_member_mut(member)?;
                m.member_key = public;
                admitted_one_more(m)
            }
        }
    }

    fn add_member(&mut self, entry: &MemberEntry) -> Result<(), RegistryError> {
        if self.members.contains_key(&entry.id) {
            return Err(RegistryError::DuplicateMember(entry.id));
        }
        let member_key = self.claim_key(*entry.member_key.as_bytes())?;
        let mut member = Member {
            id: entry.id,
            name: entry.name.clone(),
            member_key,
            signing_keys: imbl::OrdMap::new(),
            node_ids: BTreeSet::new(),
            removed_at: None,
            active_signing_keys: 0,
            keys_admitted: 1 + entry.signing_keys.len() + entry.node_ids.len(),
        };
        for key in &entry.signing_keys {
            let public = self.claim_key(*key.as_bytes())?;
            member.signing_keys.insert(
                *key,
                Arc::new(SigningKeyState {
                    key: public,
                    revoked: None,
                }),
            );
            member.active_signing_keys += 1;
            self.signing_index.insert(*key, entry.id);
        }
        for node in &entry.node_ids {
            self.claim_key(*node.as_bytes())?;
            member.node_ids.insert(*node);
        }
        self.members.insert(entry.id, Arc::new(member));
        Ok(())
    }

    fn check_threshold(&self) -> Result<(), RegistryError> {
        let members = self.current_members().count();
        let t = self.threshold as usize;
        if members == 0 || t == 0 || t > members || 2 * t <= members {
            return Err(RegistryError::ThresholdOutOfRange {
                threshold: self.threshold,
                members,
            });
        }
        Ok(())
    }
}

/// Counts one more key admitted to `m` over its life.
fn admitted_one_more(m: &mut Member) -> Result<(), RegistryError> {
    m.keys_admitted += 1;
    if m.keys_admitted > herald_protocol::registry::MAX_KEYS_EVER_PER_MEMBER {
        return Err(RegistryError::TooManyKeysEver(m.id));
    }
    Ok(())
}

fn check_key_count(m: &Member) -> Result<(), RegistryError> {
    let max = herald_protocol::registry::MAX_KEYS_PER_MEMBER;
    // Revoked keys stay listed (what they signed stays valid) but do not count.
    if m.active_signing_keys > max || m.node_ids.len() > max {
        return Err(RegistryError::TooManyKeys(m.id));
    }
    Ok(())
}

/// Keys an update adds, each of which must approve it (proof of possession).
fn keys_added(ops: &[RegistryOp]) -> Vec<[u8; 32]> {
    let mut keys = Vec::new();
    for op in ops {
        match op {
            RegistryOp::AddMember(e) => {
                keys.push(*e.member_key.as_bytes());
                keys.extend(e.signing_keys.iter().map(|k| *k.as_bytes()));
                keys.extend(e.node_ids.iter().map(|n| *n.as_bytes()));
            }
            RegistryOp::AddSigningKey { key, .. } => keys.push(*key.as_bytes()),
            RegistryOp::AddNode { node, .. } => keys.push(*node.as_bytes()),
            RegistryOp::RotateMemberKey { new_key, .. } => keys.push(*new_key.as_bytes()),
            RegistryOp::RemoveMember { .. }
            | RegistryOp::SetThreshold { .. }
            | RegistryOp::RevokeSigningKey { .. }
            | RegistryOp::RemoveNode { .. } => {}
        }
    }
    keys
}

/// The one member whose own keys and nodes every op concerns, if the update is
/// that kind of self-managed change (that member's approval is enough).
pub fn self_managed_by(ops: &[RegistryOp]) -> Option<MemberId> {
    let mut owner = None;
    for op in ops {
        let member = match op {
            RegistryOp::AddSigningKey { member, .. }
            | RegistryOp::RevokeSigningKey { member, .. }
            | RegistryOp::AddNode { member, .. }
            | RegistryOp::RemoveNode { member, .. }
            | RegistryOp::RotateMemberKey { member, .. } => *member,
            RegistryOp::AddMember(_) | RegistryOp::RemoveMember { .. } | RegistryOp::SetThreshold { .. } => {
                return None;
            }
        };
        if *owner.get_or_insert(member) != member {
            return None;
        }
    }
    owner
}

/// The keys whose approval on `update` verifies (strictly), among the keys
/// that matter: `state`'s current member keys and the keys the update adds.
/// Other approvals are ignored unverified, so a relay that appends junk costs
/// nothing; approvals that do not verify are ignored too.
fn verified_approvers(state: Option<&RegistryState>, update: &SignedRegistryUpdate) -> HashSet<[u8; 32]> {
    let mut relevant: HashSet<[u8; 32]> = keys_added(&update.body().ops).into_iter().collect();
    if let Some(state) = state {
        relevant.extend(state.current_members().map(|m| m.member_key.to_bytes()));
    }
    let input = herald_protocol::signing_input(REGISTRY_DOMAIN, update.body_bytes());
    let mut ok = HashSet::new();
    for approval in update.approvals() {
        let key = approval.key.as_bytes();
        if ok.contains(key) || !relevant.contains(key) {
            continue;
        }
        if let Ok(public) = PublicKey::from_id(&approval.key)
            && public.verify(&input, &approval.signature).is_ok()
        {
            ok.insert(*key);
        }
    }
    ok
}

fn check_proof_of_possession(
    update: &SignedRegistryUpdate,
    approvers: &HashSet<[u8; 32]>,
) -> Result<(), RegistryError> {
    for key in keys_added(&update.body().ops) {
        let id = KeyId::from_bytes(key);
        PublicKey::from_bytes(&key).map_err(|reason| RegistryError::BadKey { key: id, reason })?;
        if !approvers.contains(&key) {
            return Err(RegistryError::MissingProofOfPossession(id));
        }
    }
    Ok(())
}

/// Whether `update` needs a threshold of members to approve it: its
/// operations are not all one member's own keys and nodes
/// ([`self_managed_by`]). The branch rule ([`Registry::adopt_branch_saving`])
/// goes by this, which the body alone decides, and not by the approvals a
/// copy carries: a relay can strip approvals, and every node must judge
/// every copy of an update alike.
pub fn needs_threshold(update: &SignedRegistryUpdate) -> bool {
    self_managed_by(&update.body().ops).is_none()
}

/// Whether `update` is approved by enough of `state`'s members.
fn check_approval(state: &RegistryState, update: &SignedRegistryUpdate) -> Result<(), RegistryError> {
    let approvers = verified_approvers(Some(state), update);
    check_proof_of_possession(update, &approvers)?;
    // Each current member counts once, by its current member key, however many
    // approvals it sent. Signing keys do not vote: they are online, hot keys.
    let members_approving = state
        .current_members()
        .filter(|m| approvers.contains(&m.member_key.to_bytes()))
        .count();
    if members_approving >= state.threshold as usize {
        return Ok(());
    }
    if let Some(owner) = self_managed_by(&update.body().ops)
        && let Some(m) = state.member(&owner)
        && m.is_current()
        && approvers.contains(&m.member_key.to_bytes())
    {
        return Ok(());
    }
    Err(RegistryError::ThresholdNotMet {
        approvals: members_approving,
        threshold: state.threshold,
    })
}

/// What [`Registry::apply`] did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The update was new and is now the current version.
    Advanced(RegistryVersion),
    /// The same update was already held.
    AlreadyHeld,
    /// Another branch replaced this registry's versions from `from` on
    /// ([`Registry::adopt_branch_saving`]): `dropped` of them, each one
    /// member's change to its own keys and nodes, gave way to a branch
    /// holding an update that needs the threshold. The current version is
    /// now `to`.
    Switched {
        /// The first version replaced.
        from: RegistryVersion,
        /// The current version after the switch.
        to: RegistryVersion,
        /// How many versions of this registry's own were dropped.
        dropped: usize,
    },
}

/// Two validly approved, different updates for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    /// The version both claim.
    pub version: RegistryVersion,
    /// The update this node holds.
    pub ours: SignedRegistryUpdate,
    /// The other one.
    pub theirs: SignedRegistryUpdate,
}

/// Another branch of a registry's history, checked against it
/// ([`Registry::check_branch`]) and not yet taken in.
#[derive(Debug, Clone)]
pub struct CheckedBranch {
    from: RegistryVersion,
    /// The hash of the version it builds on (`from` − 1).
    base: RegistryHash,
    updates: Vec<SignedRegistryUpdate>,
    /// `states[i]` is the state after `updates[i]`.
    states: Vec<Arc<RegistryState>>,
}

impl CheckedBranch {
    /// The version where it parts from the registry it was checked against.
    pub fn from(&self) -> RegistryVersion {
        self.from
    }

    /// Its updates, as far as they are valid in turn.
    pub fn updates(&self) -> &[SignedRegistryUpdate] {
        &self.updates
    }
}

/// Most forks a registry keeps the evidence of ([`Registry::forks`]); later
/// ones are still refused as forks, and not kept.
pub const MAX_FORK_EVIDENCE: usize = 32;
/// Most of that evidence whose other update is one member's own change
/// ([`self_managed_by`]; updates that need the threshold count together):
/// one member, which can sign any number of its own rival updates, cannot
/// take every place and hide another's fork.
pub const MAX_FORK_EVIDENCE_PER_MEMBER: usize = 4;
/// Most forks a registry remembers having seen ([`Registry::knows_fork`]):
/// 40 bytes each.
pub const MAX_FORKS_SEEN: usize = 65_536;

/// The member registry with its full history.
#[derive(Debug, Clone)]
pub struct Registry {
    network: NetworkId,
    history: Vec<SignedRegistryUpdate>,
    /// `states[i]` is the state after `history[i]`.
    states: Vec<Arc<RegistryState>>,
    forks: Vec<ForkEvidence>,
    /// Every fork seen (its version and the other update's hash), up to
    /// [`MAX_FORKS_SEEN`]: what [`Registry::knows_fork`] answers from, apart
    /// from the evidence kept, so that one member's many forks do not hide
    /// another's.
    forks_seen: std::collections::HashSet<(RegistryVersion, RegistryHash)>,
    /// Versions where another branch was seen (as far as it was read) that
    /// holds a change that needs the threshold, as this registry's does:
    /// forks the branch rule does not settle ([`Registry::fork_settled`]).
    /// Found in this run, or restored from an earlier one
    /// ([`Registry::mark_contested`]).
    contested: BTreeSet<RegistryVersion>,
    /// Times another branch was taken ([`Registry::switches`]).
    switches: u64,
    /// The last of them ([`Registry::last_switch`]).
    last_switch: Option<Applied>,
}

impl Registry {
    /// Checks what a genesis with `ops` would set up, its approvals aside:
    /// what [`Registry::from_genesis`] checks of its operations (members and
    /// keys admitted once each, the threshold above half and at most all), so
    /// that a proposal is refused before it goes round for approvals.
    pub fn check_genesis_ops(ops: &[RegistryOp]) -> Result<(), RegistryError> {
        let mut state = RegistryState::empty();
        for op in ops {
            state.apply_op(op)?;
        }
        state.check_threshold()
    }

    /// Starts a registry from its genesis update, which must hash to `expected`
    /// and be approved by every key it admits.
    pub fn from_genesis(
        genesis: SignedRegistryUpdate,
        expected: RegistryHash,
    ) -> Result<Self, RegistryError> {
        if genesis.hash() != expected {
            return Err(RegistryError::GenesisMismatch {
                expected,
                found: genesis.hash(),
            });
        }
        let body = genesis.body();
        if body.version != RegistryVersion::GENESIS {
            return Err(RegistryError::NotGenesis("its version is not 1"));
        }
        if !body
            .ops
            .iter()
            .all(|op| matches!(op, RegistryOp::AddMember(_) | RegistryOp::SetThreshold { .. }))
        {
            return Err(RegistryError::NotGenesis(
                "it may only admit members and set the threshold",
            ));
        }
        // Every key admitted at genesis approves it: founders consent, and each
        // proves possession.
        check_proof_of_possession(&genesis, &verified_approvers(None, &genesis))?;
        let mut state = RegistryState::empty();
        for op in &body.ops {
            state.apply_op(op)?;
        }
        state.check_threshold()?;
        state.version = RegistryVersion::GENESIS;
        state.hash = genesis.hash();
        Ok(Self {
            network: NetworkId::from_genesis(genesis.hash()),
            history: vec![genesis],
            states: vec![Arc::new(state)],
            forks: Vec::new(),
            forks_seen: std::collections::HashSet::new(),
            contested: BTreeSet::new(),
            switches: 0,
            last_switch: None,
        })
    }

    /// Rebuilds a registry from a stored history (genesis first).
    pub fn from_history(
        updates: impl IntoIterator<Item = SignedRegistryUpdate>,
        genesis_hash: RegistryHash,
    ) -> Result<Self, RegistryError> {
        let mut updates = updates.into_iter();
        let genesis = updates
            .next()
            .ok_or(RegistryError::NotGenesis("the history is empty"))?;
        let mut registry = Self::from_genesis(genesis, genesis_hash)?;
        for update in updates {
            registry.apply(update)?;
        }
        Ok(registry)
    }

    /// Applies the next update, if it is approved and follows the current version.
    pub fn apply(&mut self, update: SignedRegistryUpdate) -> Result<Applied, RegistryError> {
        match self.apply_saving(update, |_| Ok::<(), std::convert::Infallible>(())) {
            Ok(applied) => applied,
            Err(never) => match never {},
        }
    }

    /// Applies the next update as [`Registry::apply`] does, calling `save`
    /// with it once it has passed every check and before the registry moves
    /// on: if `save` fails, the registry stays as it was and `save`'s error
    /// is returned. A node makes each version durable so before it counts,
    /// without copying the registry to have something to go back to.
    pub fn apply_saving<E>(
        &mut self,
        update: SignedRegistryUpdate,
        save: impl FnOnce(&SignedRegistryUpdate) -> Result<(), E>,
    ) -> Result<Result<Applied, RegistryError>, E> {
        let have = self.version();
        let got = update.body().version;
        if got <= have {
            return Ok(self.check_past_update(update));
        }
        if Some(got) != have.next() {
            return Ok(Err(RegistryError::Gap { have, got }));
        }
        if update.body().prev != Some(self.hash()) {
            return Ok(Err(RegistryError::WrongPrevious { version: got }));
        }
        let current = self.current();
        if let Err(e) = check_approval(current, &update) {
            return Ok(Err(e));
        }
        let mut next = current.clone();
        let checked = update
            .body()
            .ops
            .iter()
            .try_for_each(|op| next.apply_op(op))
            .and_then(|()| next.check_threshold());
        if let Err(e) = checked {
            return Ok(Err(e));
        }
        next.version = got;
        next.hash = update.hash();
        save(&update)?;
        self.history.push(update);
        self.states.push(Arc::new(next));
        Ok(Ok(Applied::Advanced(got)))
    }

    fn check_past_update(&mut self, update: SignedRegistryUpdate) -> Result<Applied, RegistryError> {
        let got = update.body().version;
        let index = (got.0 - 1) as usize;
        let ours = &self.history[index];
        if ours.hash() == update.hash() {
            return Ok(Applied::AlreadyHeld);
        }
        let rollback = RegistryError::Rollback {
            have: self.version(),
            got,
        };
        // A different genesis is a different network, not a fork of this one.
        if index == 0 {
            return Err(rollback);
        }
        let before = &self.states[index - 1];
        // An update of another branch, from further back: not this node's
        // to judge here (sync finds where the branches part).
        if update.body().prev != Some(before.hash()) {
            return Err(RegistryError::WrongPrevious { version: got });
        }
        if check_approval(before, &update).is_err() {
            return Err(rollback);
        }
        let mut after = (**before).clone();
        let consistent = update
            .body()
            .ops
            .iter()
            .try_for_each(|op| after.apply_op(op))
            .is_ok()
            && after.check_threshold().is_ok();
        if !consistent {
            return Err(rollback);
        }
        let (version, ours_hash, theirs) = (got, ours.hash(), update.hash());
        let ours = ours.clone();
        self.keep_evidence(ours, update);
        Err(RegistryError::Fork {
            version,
            ours: ours_hash,
            theirs,
        })
    }

    /// Notes a fork seen, and keeps its evidence up to the bounds: a member
    /// key, even one rotated away since, can approve any number of its
    /// member's own updates for a past version.
    fn keep_evidence(&mut self, ours: SignedRegistryUpdate, theirs: SignedRegistryUpdate) {
        let (version, hash) = (theirs.body().version, theirs.hash());
        if self.forks_seen.len() < MAX_FORKS_SEEN {
            self.forks_seen.insert((version, hash));
        }
        let author = self_managed_by(&theirs.body().ops);
        let by_author = self
            .forks
            .iter()
            .filter(|f| self_managed_by(&f.theirs.body().ops) == author)
            .count();
        if self.forks.len() < MAX_FORK_EVIDENCE
            && by_author < MAX_FORK_EVIDENCE_PER_MEMBER
            && !self
                .forks
                .iter()
                .any(|f| f.version == version && f.theirs.hash() == hash)
        {
            self.forks.push(ForkEvidence {
                version,
                ours,
                theirs,
            });
        }
    }

    /// Takes in `branch`, another branch of this registry's history from the
    /// version where the two part on (its first update is for a version
    /// held, builds on the version before it, and is not the update held),
    /// by the branch rule (PROTOCOL §9). The branch replaces this registry's
    /// versions from there when none of them needs the threshold (each is
    /// one member's change to its own keys and nodes, [`needs_threshold`])
    /// and the branch holds an update that does; the first version dropped
    /// is kept as fork evidence. Otherwise the registry stays as it is and
    /// the branch's first update is kept as evidence
    /// ([`RegistryError::Fork`]), as [`Registry::apply`] would.
    ///
    /// So two nodes that see the same two branches end on the same one, and
    /// no update that needed the threshold is ever undone: only members' own
    /// changes give way, and those members make them again. Two branches
    /// that each hold an update that needs the threshold (some member
    /// approved on both sides) stay a fork.
    ///
    /// The branch is judged as far as its updates are valid in turn
    /// ([`Registry::check_branch`]); a first update that is not valid
    /// refuses it. `save` is called with the first version replaced and the
    /// updates that replace it before the registry changes: if it fails,
    /// nothing changes.
    pub fn adopt_branch_saving<E>(
        &mut self,
        branch: Vec<SignedRegistryUpdate>,
        save: impl FnOnce(RegistryVersion, &[SignedRegistryUpdate]) -> Result<(), E>,
    ) -> Result<Result<Applied, RegistryError>, E> {
        match self.check_branch(branch) {
            Ok(checked) => self.adopt_checked_saving(checked, save),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Checks `branch` against this registry for
    /// [`Registry::adopt_checked_saving`]: where it parts, and each update
    /// valid in turn from the state before (built on the one before,
    /// approved, its operations applying, the threshold rule holding). The
    /// costly part of taking a branch in (every approval verified), done
    /// without changing the registry, so that a node can do it under a
    /// read lock. The branch is cut before its first update that is not
    /// valid; if that is its first, it is refused with that update's error
    /// (as [`Registry::apply`] refuses it).
    pub fn check_branch(
        &self,
        mut branch: Vec<SignedRegistryUpdate>,
    ) -> Result<CheckedBranch, RegistryError> {
        let Some(first) = branch.first() else {
            return Err(RegistryError::NotABranch("it is empty"));
        };
        let from = first.body().version;
        let have = self.version();
        if from > have {
            return Err(RegistryError::NotABranch("it starts after the current version"));
        }
        // Version 1 is the network itself: another one is another network.
        if from.0 < 2 {
            return Err(RegistryError::Rollback { have, got: from });
        }
        let index = (from.0 - 1) as usize;
        if self.history[index].hash() == first.hash() {
            return Err(RegistryError::NotABranch("its first update is the one held"));
        }
        let base = Arc::clone(&self.states[index - 1]);
        let mut state = Arc::clone(&base);
        let mut states = Vec::with_capacity(branch.len());
        for (i, update) in branch.iter().enumerate() {
            let version = update.body().version;
            let checked = if Some(version) != state.version.next() {
                Err(RegistryError::Gap {
                    have: state.version,
                    got: version,
                })
            } else if update.body().prev != Some(state.hash) {
                Err(RegistryError::WrongPrevious { version })
            } else {
                check_approval(&state, update).and_then(|()| {
                    let mut next = (*state).clone();
                    update
                        .body()
                        .ops
                        .iter()
                        .try_for_each(|op| next.apply_op(op))
                        .and_then(|()| next.check_threshold())?;
                    next.version = version;
                    next.hash = update.hash();
                    Ok(next)
                })
            };
            match checked {
                Ok(next) => {
                    state = Arc::new(next);
                    states.push(Arc::clone(&state));
                }
                // As `apply` refuses an update for a past version.
                Err(e @ RegistryError::WrongPrevious { .. }) if i == 0 => return Err(e),
                Err(_) if i == 0 => return Err(RegistryError::Rollback { have, got: from }),
                Err(_) => {
                    branch.truncate(i);
                    break;
                }
            }
        }
        Ok(CheckedBranch {
            from,
            base: base.hash,
            updates: branch,
            states,
        })
    }

    /// Takes in a branch [`Registry::check_branch`] checked, by the branch
    /// rule, as [`Registry::adopt_branch_saving`] does. If this registry
    /// changed since so that the branch no longer parts from it where it
    /// did, it is refused ([`RegistryError::NotABranch`]): check it again.
    pub fn adopt_checked_saving<E>(
        &mut self,
        checked: CheckedBranch,
        save: impl FnOnce(RegistryVersion, &[SignedRegistryUpdate]) -> Result<(), E>,
    ) -> Result<Result<Applied, RegistryError>, E> {
        let CheckedBranch {
            from,
            base,
            updates,
            states,
        } = checked;
        let index = (from.0 - 1) as usize;
        let (Some(first), Some(held)) = (updates.first(), self.history.get(index)) else {
            return Ok(Err(RegistryError::NotABranch(
                "the registry changed since it was checked",
            )));
        };
        if self.states[index - 1].hash != base || held.hash() == first.hash() {
            return Ok(Err(RegistryError::NotABranch(
                "the registry changed since it was checked",
            )));
        }
        let theirs_threshold = updates.iter().any(needs_threshold);
        if !theirs_threshold || self.holds_threshold_change_from(from) {
            if theirs_threshold {
                self.contested.insert(from);
            }
            return Ok(self.check_past_update(first.clone()));
        }
        save(from, &updates)?;
        let taken = first.clone();
        let dropped = self.history.split_off(index);
        self.states.truncate(index);
        self.history.extend(updates);
        self.states.extend(states);
        // Evidence of forks from the parting on was against the versions
        // dropped: against those held now, or gone.
        let (history, held) = (&self.history, &self.states);
        self.forks.retain_mut(|fork| {
            if fork.version < from {
                return true;
            }
            let i = (fork.version.0 - 1) as usize;
            match history.get(i) {
                Some(ours)
                    if ours.hash() != fork.theirs.hash()
                        && fork.theirs.body().prev == Some(held[i - 1].hash) =>
                {
                    fork.ours = ours.clone();
                    true
                }
                _ => false,
            }
        });
        let switched = Applied::Switched {
            from,
            to: self.version(),
            dropped: dropped.len(),
        };
        self.switches += 1;
        self.last_switch = Some(switched);
        if let Some(first_dropped) = dropped.into_iter().next() {
            self.keep_evidence(taken, first_dropped);
        }
        Ok(Ok(switched))
    }

    /// Whether a current member of this registry approved `update` by its
    /// member key (the signature verifying), whatever else it carries: what
    /// an update of another history must show for a node to look for its
    /// branch (anything else costs nothing to make).
    pub fn approved_by_a_member(&self, update: &SignedRegistryUpdate) -> bool {
        let members: HashSet<[u8; 32]> = self
            .current()
            .current_members()
            .map(|m| m.member_key.to_bytes())
            .collect();
        let input = herald_protocol::signing_input(REGISTRY_DOMAIN, update.body_bytes());
        let mut tried = HashSet::new();
        update.approvals().iter().any(|approval| {
            let key = approval.key.as_bytes();
            members.contains(key)
                && tried.insert(*key)
                && PublicKey::from_id(&approval.key)
                    .is_ok_and(|public| public.verify(&input, &approval.signature).is_ok())
        })
    }

    /// The versions where this registry was offered another branch (as far
    /// as it was read) that holds a change that needs the threshold, as its
    /// own does from there: forks the branch rule does not settle
    /// ([`Registry::fork_settled`]), in order.
    pub fn contested(&self) -> impl Iterator<Item = RegistryVersion> + '_ {
        self.contested.iter().copied()
    }

    /// Marks the fork at `version` as contested, as an earlier run of the
    /// node found it ([`Registry::contested`]): restored at a start, since
    /// the other branch is not read again until a peer offers it.
    pub fn mark_contested(&mut self, version: RegistryVersion) {
        self.contested.insert(version);
    }

    /// How many times this registry took another branch
    /// ([`Registry::adopt_branch_saving`]) since it was built.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The last time this registry took another branch, as
    /// [`Registry::adopt_branch_saving`] returned it
    /// ([`Applied::Switched`]), if it ever did since it was built.
    pub fn last_switch(&self) -> Option<Applied> {
        self.last_switch
    }

    /// Whether one of this registry's updates from `version` on needs the
    /// threshold ([`needs_threshold`]; the branch rule keeps such a branch).
    pub fn holds_threshold_change_from(&self, version: RegistryVersion) -> bool {
        let start = usize::try_from(version.0).unwrap_or(usize::MAX).max(2) - 1;
        self.history
            .get(start..)
            .is_some_and(|from| from.iter().any(needs_threshold))
    }

    /// Whether the branch rule may have this registry give way to a branch
    /// that starts with `update` at its version: `update` needs the
    /// threshold and this registry's branch holds no such change from that
    /// version on.
    pub fn may_give_way_to(&self, update: &SignedRegistryUpdate) -> bool {
        needs_threshold(update) && !self.holds_threshold_change_from(update.body().version)
    }

    /// Whether `fork` is settled in this registry's favour by the branch
    /// rule: its other update does not need the threshold and this registry
    /// holds one that does from its version on, so every node on the other
    /// branch takes this one; unless that branch holds an update that needs
    /// the threshold further on too, which this registry knows once it has
    /// been offered that branch whole ([`Registry::adopt_branch_saving`]),
    /// in this run or, as marked again at a start, an earlier one
    /// ([`Registry::mark_contested`]).
    pub fn fork_settled(&self, fork: &ForkEvidence) -> bool {
        !self.contested.contains(&fork.version)
            && !needs_threshold(&fork.theirs)
            && self.holds_threshold_change_from(fork.version)
    }

    /// The network this registry governs.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The current version.
    pub fn version(&self) -> RegistryVersion {
        self.current().version
    }

    /// The hash of the current version's update.
    pub fn hash(&self) -> RegistryHash {
        self.current().hash
    }

    /// The current state.
    pub fn current(&self) -> &RegistryState {
        // `states` is never empty: a registry starts from its genesis.
        &self.states[self.states.len() - 1]
    }

    /// The state at an earlier version, if it exists.
    pub fn at_version(&self, version: RegistryVersion) -> Option<&RegistryState> {
        let index = usize::try_from(version.0).ok()?.checked_sub(1)?;
        self.states.get(index).map(|s| &**s)
    }

    /// Every accepted update, genesis first.
    pub fn history(&self) -> &[SignedRegistryUpdate] {
        &self.history
    }

    /// Evidence of conflicting approved updates seen so far.
    pub fn forks(&self) -> &[ForkEvidence] {
        &self.forks
    }

    /// Whether the update `hash` for `version` was seen before as a fork of
    /// this registry (within the last [`MAX_FORKS_SEEN`] forks, whether or
    /// not its evidence was kept).
    pub fn knows_fork(&self, version: RegistryVersion, hash: RegistryHash) -> bool {
        self.forks_seen.contains(&(version, hash))
    }

    /// Whether [`MAX_FORKS_SEEN`] forks are remembered: further ones are not.
    pub fn fork_memory_full(&self) -> bool {
        self.forks_seen.len() >= MAX_FORKS_SEEN
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Founder, SecretKey, founding_genesis};
    use herald_protocol::registry::MAX_KEYS_EVER_PER_MEMBER;
    use herald_protocol::{MemberId, NodeId, Timestamp};

    #[test]
    fn a_member_is_admitted_a_bounded_number_of_keys_over_its_life() {
        let keys = [1u8, 2, 3].map(|n| SecretKey::from_seed(&[n; 32]));
        let genesis = founding_genesis(&[Founder::from_keys("one", &keys)], 1, Timestamp(1)).unwrap();
        let registry = Registry::from_genesis(genesis.clone(), genesis.hash()).unwrap();
        let id = MemberId::derive(&keys[0].id());
        let mut state = registry.current().clone();
        // Its three founding keys, and as many more as leave room for two.
        assert_eq!(state.member(&id).unwrap().keys_admitted, 3);
        state.member_mut(&id).unwrap().keys_admitted = MAX_KEYS_EVER_PER_MEMBER - 2;
        let fresh = |n: u8| SecretKey::from_seed(&[100 + n; 32]);
        state
            .apply_op(&RegistryOp::RotateMemberKey {
                member: id,
                new_key: fresh(0).id(),
            })
            .unwrap();
        state
            .apply_op(&RegistryOp::AddNode {
                member: id,
                node: NodeId::from_bytes(fresh(1).public().to_bytes()),
            })
            .unwrap();
        // Any role counts, and revoking or removing one gives no room back.
        state
            .apply_op(&RegistryOp::RemoveNode {
                member: id,
                node: NodeId::from_bytes(fresh(1).public().to_bytes()),
            })
            .unwrap();
        assert_eq!(
            state.apply_op(&RegistryOp::AddSigningKey {
                member: id,
                key: fresh(2).id(),
            }),
            Err(RegistryError::TooManyKeysEver(id))
        );
    }
}
