//! The store writer: one thread that stores what must be acknowledged or
//! numbered. The node's own bulletins are numbered, signed and made durable
//! in the journal of own bulletins before they are gossiped or acknowledged,
//! and staged for the [`indexer`](crate::indexer) to fold; bulletins pulled by
//! sync or read from bundles are stored and flushed in groups. Bulletins
//! received by gossip are staged by the validators and folded by the indexer;
//! the store's index lock keeps the writer's batches and the indexer's folds
//! from interleaving.

use herald_keys::SecretKey;
use herald_protocol::{BulletinBody, MemberId, SignedBulletin};
use tokio::sync::{mpsc, oneshot};

use crate::events::{NodeEvent, Origin};
use crate::network::Command;
use crate::store::{Store, StoreError, Stored};

/// Requests queued to the writer.
pub(crate) const WRITER_CAPACITY: usize = 4096;
/// Bulletins pulled by sync or imported from a bundle that are at most this old
/// are gossiped on.
const REGOSSIP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most requests taken before the writer commits what it has gathered.
const MAX_GROUP: usize = 512;

/// Where the writer answers a publication.
type Reply = oneshot::Sender<Result<SignedBulletin, StoreError>>;

/// A request to the writer.
pub(crate) enum WriteRequest {
    /// A bulletin that passed validation and was not staged: one signed with
    /// the node's own key, whose number the writer must see.
    Verified {
        bulletin: Box<SignedBulletin>,
        member: MemberId,
        origin: Origin,
    },
    /// Store verified bulletins now (one batch, one flush) and say what happened
    /// to each (sync pages, bundles).
    Import {
        items: Vec<(SignedBulletin, MemberId)>,
        origin: Origin,
        reply: oneshot::Sender<Result<Vec<Stored>, StoreError>>,
    },
    /// Number, sign and journal the node's next bulletin, then gossip it.
    Publish { draft: Box<BulletinBody>, reply: Reply },
}

pub(crate) struct Writer {
    pub(crate) store: Store,
    pub(crate) signing_key: SecretKey,
    pub(crate) member: MemberId,
    pub(crate) events: crate::events::Events,
    pub(crate) network: mpsc::Sender<Command>,
    /// The tree: bulletins to send on go to it directly.
    pub(crate) publisher: crate::push::Publisher,
    /// Told when own bulletins are staged, to fold them.
    pub(crate) indexer: std::sync::mpsc::SyncSender<crate::indexer::Signal>,
}

impl Writer {
    /// Runs until every sender of `requests` is dropped.
    pub(crate) fn run(self, mut requests: mpsc::Receiver<WriteRequest>) {
        let mut received: Vec<(SignedBulletin, MemberId)> = Vec::new();
        let mut origins: Vec<Origin> = Vec::new();
        let mut drafts: Vec<BulletinBody> = Vec::new();
        let mut replies: Vec<Reply> = Vec::new();
        while let Some(first) = requests.blocking_recv() {
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    WriteRequest::Verified {
                        bulletin,
                        member,
                        origin,
                    } => {
                        received.push((*bulletin, member));
                        origins.push(origin);
                    }
                    WriteRequest::Publish { draft, reply } => {
                        drafts.push(*draft);
                        replies.push(reply);
                    }
                    WriteRequest::Import { items, origin, reply } => {
                        self.commit(&mut received, &mut origins);
                        let _ = reply.send(self.import(&items, origin));
                    }
                }
                if received.len() + drafts.len() < MAX_GROUP {
                    next = requests.try_recv().ok();
                }
            }
            self.commit(&mut received, &mut origins);
            self.publish(std::mem::take(&mut drafts), std::mem::take(&mut replies));
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "cannot flush the store on stop");
        }
    }

    fn import(
        &self,
        items: &[(SignedBulletin, MemberId)],
        origin: Origin,
    ) -> Result<Vec<Stored>, StoreError> {
        let outcomes = self.insert_unstaged(items)?;
        self.store.flush()?;
        let now = crate::node::now();
        for ((bulletin, member), outcome) in items.iter().zip(&outcomes) {
            report(&self.events, bulletin, *member, origin, *outcome);
            // Fresh news that arrived by sync or on a bundle goes on by gossip,
            // so it crosses a healed partition at gossip speed; older history
            // travels by sync alone.
            let fresh = now.0.saturating_sub(bulletin.body().created.0) <= REGOSSIP_AGE.as_millis() as u64;
            if *outcome != Stored::AlreadyHeld && fresh {
                self.gossip(bulletin);
            }
        }
        Ok(outcomes)
    }

    /// Stores `items`, but for those staged (held already, and folded soon):
    /// those are `AlreadyHeld`. Sync compares folded chains, so it can fetch
    /// again what was staged a moment ago, the node's own bulletins included;
    /// storing them here would report them twice, and could store an own
    /// bulletin ahead of the one before it.
    fn insert_unstaged(&self, items: &[(SignedBulletin, MemberId)]) -> Result<Vec<Stored>, StoreError> {
        let staged: Vec<bool> = items.iter().map(|(b, _)| self.store.is_staged(&b.id())).collect();
        if !staged.contains(&true) {
            return self.store.insert_verified(items);
        }
        let fresh: Vec<_> = items
            .iter()
            .zip(&staged)
            .filter(|(_, staged)| !**staged)
            .map(|(item, _)| item.clone())
            .collect();
        let mut stored = self.store.insert_verified(&fresh)?.into_iter();
        Ok(staged
            .iter()
            .map(|staged| match staged {
                true => Stored::AlreadyHeld,
                false => stored.next().unwrap_or(Stored::AlreadyHeld),
            })
            .collect())
    }

    fn commit(&self, received: &mut Vec<(SignedBulletin, MemberId)>, origins: &mut Vec<Origin>) {
        if received.is_empty() {
            return;
        }
        // No flush here: these are the node's own bulletins coming back by
        // gossip, already flushed when they were published (or, after a
        // restore, older ones that sync fetches again if a crash loses them);
        // nothing is acknowledged for them, and sled's background flush makes
        // any new write durable.
        let result = self.insert_unstaged(received);
        match result {
            Ok(outcomes) => {
                for (((bulletin, member), origin), outcome) in
                    received.iter().zip(origins.iter()).zip(outcomes)
                {
                    report(&self.events, bulletin, *member, *origin, outcome);
                }
                check_gaps(&self.store, &self.network, received, origins);
            }
            // Nothing was acknowledged for received bulletins; sync fetches
            // them again once the store works.
            Err(e) => tracing::error!(error = %e, count = received.len(), "cannot store received bulletins"),
        }
        received.clear();
        origins.clear();
    }

    /// Sends a bulletin held durably on to the tree, which keeps it while no
    /// peer is linked.
    fn gossip(&self, bulletin: &SignedBulletin) {
        self.publisher.publish(std::sync::Arc::from(bulletin.to_bytes()));
    }

    /// Numbers, signs and journals the node's own drafts as one group (one
    /// sync); then gossips and acknowledges each, and has the indexer fold
    /// them.
    fn publish(&self, drafts: Vec<BulletinBody>, replies: Vec<Reply>) {
        if drafts.is_empty() {
            return;
        }
        match self
            .store
            .publish_own_group(&self.signing_key, &self.member, drafts)
        {
            Ok(outcomes) => {
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    if let Ok(bulletin) = &outcome {
                        // On disk and synced: now it may leave the node.
                        report(&self.events, bulletin, self.member, Origin::Local, Stored::New);
                        self.gossip(bulletin);
                    }
                    let _ = reply.send(outcome);
                }
                // A nudge that finds the queue full is not needed: the
                // indexer looks at everything staged whenever it wakes.
                let _ = self.indexer.try_send(crate::indexer::Signal::Staged);
            }
            Err(e) => {
                match e {
                    // Refused, as it should be, until the catch-up ends.
                    StoreError::ChainClaimed { .. } => tracing::warn!(error = %e, "not publishing yet"),
                    _ => tracing::error!(error = %e, "cannot publish"),
                }
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(match e {
                        StoreError::ChainClaimed { held, claimed } => {
                            StoreError::ChainClaimed { held, claimed }
                        }
                        _ => StoreError::Chain(message.clone()),
                    }));
                }
            }
        }
    }
}

/// Reports a stored bulletin (or an equivocation) to the log and subscribers.
pub(crate) fn report(
    events: &crate::events::Events,
    bulletin: &SignedBulletin,
    member: MemberId,
    origin: Origin,
    outcome: Stored,
) {
    let body = bulletin.body();
    match outcome {
        Stored::New => {
            tracing::debug!(id = %bulletin.id().fmt_short(), seq = %body.seq, kind = body.kind.name(), "stored");
            events.send(NodeEvent::BulletinStored {
                id: bulletin.id(),
                member,
                signer: body.signer,
                seq: body.seq,
                kind: body.kind.name(),
                created: body.created,
                origin,
            });
        }
        Stored::AlreadyHeld => {}
        Stored::Equivocation { other } => {
            tracing::error!(
                signer = %body.signer.fmt_short(),
                seq = %body.seq,
                first = %other.fmt_short(),
                second = %bulletin.id().fmt_short(),
                "EQUIVOCATION: two different bulletins with one key and number; both kept as proof"
            );
            events.send(NodeEvent::Equivocation {
                signer: body.signer,
                seq: body.seq,
                first: other,
                second: bulletin.id(),
            });
        }
    }
}

/// Asks for catch-up sync with the peers whose gossip left a gap in a chain
/// (number n+2 arrived while n+1 is missing).
pub(crate) fn check_gaps(
    store: &Store,
    network: &mpsc::Sender<Command>,
    received: &[(SignedBulletin, MemberId)],
    origins: &[Origin],
) {
    let mut asked = std::collections::HashSet::new();
    for ((bulletin, _), origin) in received.iter().zip(origins) {
        let Origin::Gossip(peer) = origin else { continue };
        if asked.contains(peer) {
            continue;
        }
        let gap = store
            .head(&bulletin.body().signer)
            .map(|h| h.contiguous < h.highest)
            .unwrap_or(false);
        if gap {
            tracing::info!(signer = %bulletin.body().signer.fmt_short(), "gap in a chain; syncing");
            let _ = network.try_send(Command::SyncWith(*peer));
            asked.insert(*peer);
        }
    }
}
