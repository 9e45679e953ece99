//! How bulletins and node status are shown to people and scripts: one JSON
//! shape for the API, `herald list --json` and `herald show --json`, and a
//! one-line text summary.

use herald_protocol::{BulletinId, KeyId, Kind, MemberId, Reference, Seq, Severity, SignedBulletin, Tlp};
use serde::{Deserialize, Serialize};

/// A bulletin as shown to users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulletinView {
    /// Content id.
    pub id: BulletinId,
    /// The signing member's id.
    pub member: Option<MemberId>,
    /// The signing member's name.
    pub member_name: Option<String>,
    /// The signing key.
    pub signer: KeyId,
    /// Number in the key's chain.
    pub seq: Seq,
    /// Previous bulletin of the key.
    pub prev: Option<BulletinId>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Kind with its facts.
    pub kind: Kind,
    /// TLP.
    pub tlp: Tlp,
    /// Severity.
    pub severity: Severity,
    /// Title.
    pub title: String,
    /// References.
    pub references: Vec<Reference>,
    /// Superseded bulletin.
    pub supersedes: Option<BulletinId>,
    /// Expiry, RFC 3339.
    pub expires: Option<String>,
    /// Audience.
    pub audience: Vec<MemberId>,
    /// Payload media type.
    pub content_type: String,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// The payload as text when it is UTF-8, else hex (see `payload_encoding`);
    /// absent in list views.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload: Option<String>,
    /// `utf-8` or `hex`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_encoding: Option<String>,
    /// The signature, hex.
    pub signature: String,
    /// The bulletins held that supersede, withdraw or follow up on it; in a
    /// single bulletin's view only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub answers: Option<crate::store::Answers>,
}

impl BulletinView {
    /// The view of a bulletin; with `payload` the content is included.
    pub fn new(b: &SignedBulletin, member: Option<(MemberId, String)>, payload: bool) -> Self {
        let body = b.body();
        let (text, encoding) = if payload {
            match std::str::from_utf8(&body.payload.bytes) {
                Ok(s) => (Some(s.to_string()), Some("utf-8".to_string())),
                Err(_) => (Some(hex::encode(&body.payload.bytes)), Some("hex".to_string())),
            }
        } else {
            (None, None)
        };
        Self {
            id: b.id(),
            member: member.as_ref().map(|m| m.0),
            member_name: member.map(|m| m.1),
            signer: body.signer,
            seq: body.seq,
            prev: body.prev,
            created: body.created.to_string(),
            created_ms: body.created.0,
            kind: body.kind.clone(),
            tlp: body.tlp,
            severity: body.severity,
            title: body.title.clone(),
            references: body.references.clone(),
            supersedes: body.supersedes,
            expires: body.expires.map(|t| t.to_string()),
            audience: body.audience.clone(),
            content_type: body.payload.content_type.clone(),
            payload_bytes: body.payload.bytes.len(),
            payload: text,
            payload_encoding: encoding,
            signature: b.signature().to_string(),
            answers: None,
        }
    }

    /// One line: time, id, member, kind, TLP, severity, title; for a
    /// terminal (controls in the text shown as escapes).
    pub fn summary_line(&self) -> String {
        format!(
            "{}  {}  {:<12}  {:<10}  {:<16}  {:<13}  {}",
            &self.created[..19.min(self.created.len())],
            self.id.fmt_short(),
            crate::terminal::escape_line(self.member_name.as_deref().unwrap_or("?")),
            kind_name(&self.kind),
            format!("{}", self.tlp),
            format!("{:?}", self.severity).to_lowercase(),
            crate::terminal::escape_line(&self.title)
        )
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    kind.name()
}

/// A node's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// libp2p peer id.
    pub peer_id: String,
    /// The member.
    pub member: MemberId,
    /// The network id.
    pub network: String,
    /// Registry version.
    pub registry_version: u64,
    /// Registry forks whose evidence the node holds (kept across restarts)
    /// and that the branch rule has not settled ([`forked_versions`]):
    /// versions for which it has seen an approved update other than its own.
    /// More than none means the members' nodes may hold different registries.
    #[serde(default)]
    pub registry_forks: usize,
    /// Versions whose forks the branch rule settled in this node's favour.
    #[serde(default)]
    pub registry_forks_settled: usize,
    /// Times the registry took another branch since the node started:
    /// members' own changes gave way (the log names them).
    #[serde(default)]
    pub registry_switches: u64,
    /// Bulletins held.
    pub bulletins: u64,
    /// Connected peers.
    pub connected_peers: Vec<String>,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Bulletins held as proof of equivocation: bodies beyond the first of a
    /// key and number (one for each pair of two). Read from the chain
    /// summaries in memory, so a status costs the same however much evidence
    /// members have made.
    pub equivocations: usize,
    /// Own bulletins stored but not yet sent (no peer linked yet, or every
    /// link's queue more than half full).
    pub pending_gossip: usize,
    /// Catch-up sessions running.
    pub syncing: usize,
    /// The last finished catch-up session.
    pub last_sync: Option<crate::network::LastSync>,
    /// Bulletins the last sync peer held that this node still lacks.
    pub behind: u64,
    /// Where this node's own chain stands.
    pub own_chain: OwnChainView,
    /// How the node's links carry bulletins (the tree).
    #[serde(default)]
    pub tree: crate::network::TreeStatus,
}

/// Where a node's own chain stands: what it would number on from, and what
/// holds its next publication back ([`crate::KeyPast`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnChainView {
    /// The highest number of the signing key's chain the node holds (0 for
    /// none): the next publication is numbered after it.
    pub numbered_up_to: u64,
    /// Whether the node's peers have brought back what they hold of the chain
    /// since it started (or need not: a key made for this run). Until then
    /// the first publication waits for their sessions; one that went ahead
    /// without them (no peer answered) leaves this false.
    pub checked: bool,
    /// Peers that listed more of the chain than the node holds, and have not
    /// brought it back yet: publishing is refused until they have (or
    /// `--new-chain` says the node holds the whole chain).
    pub claims: Vec<ChainClaimView>,
}

/// A peer's claim on the node's own chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainClaimView {
    /// The peer's id.
    pub peer: String,
    /// The highest number it listed.
    pub up_to: u64,
}

/// The registry as shown to people and scripts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryView {
    /// The network id.
    pub network: String,
    /// Current version.
    pub version: u64,
    /// Hash of the current version's update.
    pub hash: String,
    /// Distinct members needed to approve a change.
    pub threshold: u32,
    /// Every member, removed ones included.
    pub members: Vec<MemberView>,
    /// Versions for which another approved update than this node's is
    /// known (a fork) and not settled, as in the status.
    pub forks: usize,
    /// Versions whose forks the branch rule settled in this node's favour.
    #[serde(default)]
    pub forks_settled: usize,
}

/// One member in a [`RegistryView`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberView {
    /// Id.
    pub id: MemberId,
    /// Name.
    pub name: String,
    /// Current member key.
    pub member_key: KeyId,
    /// Signing keys with their revocation point, if any (as text).
    pub signing_keys: Vec<(KeyId, Option<String>)>,
    /// Node ids.
    pub node_ids: Vec<herald_protocol::NodeId>,
    /// Removal time, RFC 3339, if removed.
    pub removed_at: Option<String>,
}

/// Versions of `registry` for which another approved update than its own is
/// known (fork evidence held), as the status and the registry view count
/// them: those where some fork is not settled by the branch rule
/// ([`herald_keys::Registry::fork_settled`]), and those where every one is.
pub fn forked_versions(registry: &herald_keys::Registry) -> (usize, usize) {
    let mut versions = std::collections::BTreeMap::new();
    for fork in registry.forks() {
        let settled = registry.fork_settled(fork);
        versions
            .entry(fork.version)
            .and_modify(|all: &mut bool| *all &= settled)
            .or_insert(settled);
    }
    let settled = versions.values().filter(|s| **s).count();
    (versions.len() - settled, settled)
}

impl RegistryView {
    /// The view of a registry's current state.
    pub fn new(registry: &herald_keys::Registry) -> Self {
        let state = registry.current();
        let (forks, forks_settled) = forked_versions(registry);
        Self {
            network: registry.network().to_string(),
            version: registry.version().0,
            hash: registry.hash().to_string(),
            threshold: state.threshold(),
            members: state
                .members()
                .map(|m| MemberView {
                    id: m.id,
                    name: m.name.clone(),
                    member_key: m.member_key.id(),
                    signing_keys: m
                        .signing_keys
                        .iter()
                        .map(|(k, s)| {
                            let point = s.revoked.map(|p| match p {
                                herald_protocol::RevocationPoint::Seq(n) => format!("revoked from #{n}"),
                                herald_protocol::RevocationPoint::Time(t) => format!("revoked from {t}"),
                            });
                            (*k, point)
                        })
                        .collect(),
                    node_ids: m.node_ids.iter().copied().collect(),
                    removed_at: m.removed_at.map(|t| t.to_string()),
                })
                .collect(),
            forks,
            forks_settled,
        }
    }
}
