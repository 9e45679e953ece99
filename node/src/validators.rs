//! Validation of gossiped messages: each is checked (cheap to dear: size,
//! decode, signer in standing, signature) and, if it is an accepted bulletin,
//! staged, in a task of its own beside the swarm's polling loop; the verdicts
//! go back to the loop.
//!
//! A task costs the loop one spawn and the verdict's way back through a
//! channel. It runs when the loop yields, on the loop's worker, with warm
//! caches and no thread woken; when several are spawned together, idle workers
//! of the node's multi-threaded runtime take the rest (measured against a
//! thread per core, docs/BENCHMARKS.md). The check of a new bulletin reads
//! no sled (`Store::holds` answers from the staged set and the chain heads in
//! memory), so it does not wait while the indexer applies a fold; a copy of
//! one already folded is looked up in sled.
//!
//! Registry updates, rare and dear (a threshold of signatures, the registry's
//! write lock, a flush), go to the blocking pool, at most
//! [`MAX_REGISTRY_IN_FLIGHT`] at once, so that a member's node flooding the
//! registry topic cannot hold the write lock from many threads (bulletin
//! checks wait on it for reading).

use std::sync::{Arc, RwLock};

use herald_keys::Registry;
use libp2p::{PeerId, gossipsub};
use tokio::sync::{Semaphore, mpsc};

use crate::store::Store;
use crate::validate::{Verdict, validate_bulletin};

/// Messages being checked at once, at most. A message that finds none free
/// is ignored (not forwarded, its sender not blamed); sync fetches it later
/// if it was good.
pub(crate) const MAX_IN_FLIGHT: usize = 2048;
/// Registry updates being checked at once, at most (within `MAX_IN_FLIGHT`).
pub(crate) const MAX_REGISTRY_IN_FLIGHT: usize = 2;

/// How a message came, to report its verdict the same way.
#[derive(Debug, Clone)]
pub(crate) enum Carrier {
    /// By gossipsub (registry updates): its message id.
    Gossip(gossipsub::MessageId),
    /// By the tree (bulletins): its id, and the handle that forwards it once
    /// the check accepts it (from the check's task).
    Push(crate::tree::MessageId, crate::push::Forwarder),
}

/// A message from the network to check.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) source: PeerId,
    pub(crate) carrier: Carrier,
    /// Shared with the tree, which forwards these same bytes.
    pub(crate) data: Arc<[u8]>,
}

impl Job {
    /// Registry updates come by gossipsub, bulletins by the tree.
    pub(crate) fn is_registry(&self) -> bool {
        matches!(self.carrier, Carrier::Gossip(_))
    }
}

/// A verdict on its way back to the loop.
pub(crate) struct Validated {
    pub(crate) carrier: Carrier,
    pub(crate) source: PeerId,
    pub(crate) verdict: Verdict,
    /// For a bulletin staged here: whether it was the first staged since the
    /// last fold.
    pub(crate) staged: Option<bool>,
    /// When it was staged (held: readable by id).
    pub(crate) held_at: std::time::SystemTime,
}

/// What a check needs.
pub(crate) struct Context {
    pub(crate) registry: Arc<RwLock<Registry>>,
    pub(crate) store: Store,
    pub(crate) own_key: herald_protocol::KeyId,
    pub(crate) verdicts: mpsc::Sender<Validated>,
}

/// Starts checks; the loop and the tree's readers hold one each.
#[derive(Clone)]
pub(crate) struct Validators {
    context: Arc<Context>,
    slots: Arc<Semaphore>,
    registry_slots: Arc<Semaphore>,
}

/// Waits for the checks still running when the loop has stopped.
pub(crate) struct Drain {
    slots: Arc<Semaphore>,
    all: u32,
}

impl Drain {
    /// Returns once no check runs, and closes the slots: nothing is checked
    /// or staged after it returns, whoever still holds a [`Validators`] (the
    /// tree's reader tasks end a moment after the network's loop).
    pub(crate) async fn wait(&self) {
        // Closed only here.
        if let Ok(all) = self.slots.acquire_many(self.all).await {
            all.forget();
        }
        self.slots.close();
    }

    /// Returns once no check runs, leaving the slots open.
    #[cfg(test)]
    async fn idle(&self) {
        let _ = self.slots.acquire_many(self.all).await;
    }
}

pub(crate) fn new(context: Context) -> (Validators, Drain) {
    with_slots(context, MAX_IN_FLIGHT)
}

fn with_slots(context: Context, slots: usize) -> (Validators, Drain) {
    let all = u32::try_from(slots).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(all as usize));
    let validators = Validators {
        context: Arc::new(context),
        slots: Arc::clone(&slots),
        registry_slots: Arc::new(Semaphore::new(MAX_REGISTRY_IN_FLIGHT)),
    };
    (validators, Drain { slots, all })
}

impl Validators {
    /// Starts checking `job` on the runtime of the calling task; hands it back
    /// if `MAX_IN_FLIGHT` checks are running already (or, for a registry
    /// update, `MAX_REGISTRY_IN_FLIGHT` registry checks).
    pub(crate) fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            return Err(Box::new(job));
        };
        let context = Arc::clone(&self.context);
        if job.is_registry() {
            let Ok(registry_permit) = Arc::clone(&self.registry_slots).try_acquire_owned() else {
                return Err(Box::new(job));
            };
            tokio::task::spawn_blocking(move || {
                let verdict = run(&context, job);
                // Fails at once if the loop has stopped: nothing waits then.
                let _ = context.verdicts.blocking_send(verdict);
                drop((permit, registry_permit));
            });
        } else {
            tokio::spawn(async move {
                let verdict = run(&context, job);
                let _ = context.verdicts.send(verdict).await;
                // Held until the verdict is handed over, so that
                // `MAX_IN_FLIGHT` also bounds the verdicts waiting for room.
                drop(permit);
            });
        }
        Ok(())
    }
}

/// Checks one job.
fn run(context: &Context, job: Job) -> Validated {
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_and_stage(
            job.source,
            &job.data,
            job.is_registry(),
            &context.registry,
            &context.store,
            context.own_key,
        )
    }));
    let (verdict, staged) =
        checked.unwrap_or_else(|_| (Verdict::Reject("validation failed on this input".into()), None));
    let held_at = std::time::SystemTime::now();
    // A bulletin that came by the tree goes on from here, without waiting
    // for the network's loop.
    if let Carrier::Push(id, forwarder) = &job.carrier {
        match verdict {
            Verdict::Accept(..) => forwarder.accept(job.source, *id, Arc::clone(&job.data)),
            _ => forwarder.drop_message(*id),
        }
    }
    Validated {
        held_at,
        carrier: job.carrier,
        source: job.source,
        verdict,
        staged,
    }
}

/// Validates a gossiped message and, if it is a bulletin that passed, stages
/// it; for an accepted bulletin also says whether it was the first staged
/// since the last fold. Registry updates take the registry's write lock and
/// are saved and flushed under it.
fn check_and_stage(
    source: PeerId,
    data: &[u8],
    is_registry: bool,
    registry: &RwLock<Registry>,
    store: &Store,
    own_key: herald_protocol::KeyId,
) -> (Verdict, Option<bool>) {
    if is_registry {
        return (
            crate::validate::validate_registry_update(data, registry, store),
            None,
        );
    }
    let verdict = {
        let registry = registry.read().unwrap_or_else(|e| e.into_inner());
        validate_bulletin(data, &registry, store)
    };
    let staged = match &verdict {
        Verdict::Accept(bulletin, member) if bulletin.body().signer != own_key => {
            Some(store.stage(bulletin, member, &source.to_bytes()))
        }
        _ => None,
    };
    (verdict, staged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    struct Fixture {
        validators: Validators,
        registry: Arc<RwLock<Registry>>,
        genesis: Vec<u8>,
        drain: Drain,
        verdicts: mpsc::Receiver<Validated>,
        store: Store,
        _dir: tempfile::TempDir,
    }

    fn fixture(slots: usize) -> Fixture {
        let crate::test_network::OneMember {
            member,
            genesis,
            registry,
            ..
        } = crate::test_network::one_member();
        let network = registry.network();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), network).unwrap();
        let (tx, verdicts) = mpsc::channel(16);
        let registry = Arc::new(RwLock::new(registry));
        let (validators, drain) = with_slots(
            Context {
                registry: Arc::clone(&registry),
                store: store.clone(),
                // Not the signer's key: its bulletins are staged.
                own_key: member.id(),
                verdicts: tx,
            },
            slots,
        );
        Fixture {
            validators,
            registry,
            genesis: genesis.to_bytes(),
            drain,
            verdicts,
            store,
            _dir: dir,
        }
    }

    /// The fixture member's first bulletin (the signing key is not the
    /// node's own: it is staged).
    fn bulletin() -> Vec<u8> {
        crate::test_network::one_member().chain(1).remove(0).to_bytes()
    }

    fn job(data: Vec<u8>, n: u8) -> Job {
        Job {
            source: PeerId::random(),
            carrier: Carrier::Push([n; 32], crate::push::Forwarder::detached()),
            data: Arc::from(data),
        }
    }

    async fn next(f: &mut Fixture) -> Validated {
        tokio::time::timeout(WAIT, f.verdicts.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_good_bulletin_is_accepted_and_staged_and_garbage_rejected() {
        let mut f = fixture(MAX_IN_FLIGHT);
        let good = bulletin();
        f.validators.submit(job(good.clone(), 1)).unwrap();
        let v = next(&mut f).await;
        assert!(matches!(v.carrier, Carrier::Push(id, _) if id == [1; 32]));
        assert!(matches!(v.verdict, Verdict::Accept(..)));
        assert_eq!(v.staged, Some(true), "first staged since the last fold");
        assert_eq!(f.store.staged_count(), 1);

        f.validators.submit(job(vec![0xff; 40], 2)).unwrap();
        let v = next(&mut f).await;
        assert!(matches!(v.verdict, Verdict::Reject(_)));
        assert_eq!(v.staged, None);
        assert_eq!(f.store.staged_count(), 1);
        // Every slot is back.
        tokio::time::timeout(WAIT, f.drain.wait()).await.unwrap();
    }

    #[tokio::test]
    async fn a_job_that_finds_no_free_slot_is_handed_back() {
        let mut f = fixture(1);
        // On this single-threaded runtime the first check cannot run before
        // this task yields, so it holds the only slot.
        f.validators.submit(job(vec![1], 1)).unwrap();
        let back = f.validators.submit(job(vec![2], 2)).unwrap_err();
        assert_eq!(&*back.data, &[2]);
        assert!(matches!(next(&mut f).await.verdict, Verdict::Reject(_)));
        // The slot is free again.
        f.validators.submit(job(vec![3], 3)).unwrap();
        assert!(matches!(next(&mut f).await.verdict, Verdict::Reject(_)));
    }

    #[tokio::test]
    async fn registry_updates_have_their_own_few_slots() {
        let mut f = fixture(MAX_IN_FLIGHT);
        // The genesis again: it decodes, then waits for the write lock, and is
        // a duplicate.
        let registry = |f: &Fixture, n: u8| Job {
            carrier: Carrier::Gossip(gossipsub::MessageId::from(vec![n])),
            ..job(f.genesis.clone(), n)
        };
        // Held back by this read lock, the registry checks below keep their
        // slots until it is let go.
        let reading = f.registry.read().unwrap();
        for n in 0..MAX_REGISTRY_IN_FLIGHT {
            f.validators.submit(registry(&f, n as u8)).unwrap();
        }
        // Bulletins still find room while the registry slots are taken...
        f.validators.submit(job(vec![1], 100)).unwrap();
        // ...but another registry update does not, until a check is done.
        let back = f.validators.submit(registry(&f, 99)).unwrap_err();
        assert!(back.is_registry());
        drop(reading);
        let mut duplicates = 0;
        for _ in 0..=MAX_REGISTRY_IN_FLIGHT {
            match next(&mut f).await.verdict {
                Verdict::Duplicate => duplicates += 1,
                Verdict::Reject(_) => {}
                _ => panic!("expected the genesis as a duplicate, the bulletin job rejected"),
            }
        }
        assert_eq!(duplicates, MAX_REGISTRY_IN_FLIGHT);
        tokio::time::timeout(WAIT, f.drain.idle()).await.unwrap();
        // Slots free again: garbage on the registry topic is rejected.
        f.validators
            .submit(Job {
                carrier: Carrier::Gossip(gossipsub::MessageId::from(vec![98])),
                ..job(vec![0xee; 40], 98)
            })
            .unwrap();
        assert!(matches!(next(&mut f).await.verdict, Verdict::Reject(_)));
    }

    #[tokio::test]
    async fn the_drain_waits_for_running_checks() {
        let mut f = fixture(MAX_IN_FLIGHT);
        let good = bulletin();
        f.validators.submit(job(good, 1)).unwrap();
        // Not yet run (this task has not yielded): the drain must wait for it,
        // and when it returns the bulletin is staged.
        tokio::time::timeout(WAIT, f.drain.wait()).await.unwrap();
        assert_eq!(f.store.staged_count(), 1);
        assert!(matches!(next(&mut f).await.verdict, Verdict::Accept(..)));
        // A check submitted after the drain (a tree reader still running) is refused.
        let other = crate::test_network::one_member().chain(2).remove(1).to_bytes();
        assert!(f.validators.submit(job(other, 2)).is_err());
        assert_eq!(f.store.staged_count(), 1);
    }
}
