//! Validation of gossiped messages: each is checked (cheap to dear: size,
//! decode, signer in standing, signature) and, if it is an accepted bulletin,
//! staged, in a task of its own beside the swarm's polling loop; the verdicts
//! go back to the loop.
//!
//! A task costs the loop one spawn and the verdict's way back through a
//! channel. On the node's multi-threaded runtime an idle worker takes it while
//! the loop goes on, and on a busy one it runs on the loop's worker between
//! two polls, with warm caches and no thread woken (measured against a thread
//! per core, docs/BENCHMARKS.md). Registry updates, rare and dear (a
//! threshold of signatures, a write lock, a flush), go to the blocking pool.

use std::sync::{Arc, RwLock};

use herald_keys::Registry;
use libp2p::{PeerId, gossipsub};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};

use crate::store::Store;
use crate::validate::{Verdict, validate_bulletin};

/// Messages being checked at once, at most. A message that finds none free
/// is ignored (not forwarded, its sender not blamed); sync fetches it later
/// if it was good.
pub(crate) const MAX_IN_FLIGHT: usize = 2048;

/// A gossiped message to check.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) source: PeerId,
    pub(crate) message_id: gossipsub::MessageId,
    pub(crate) data: Vec<u8>,
    pub(crate) is_registry: bool,
}

/// A verdict on its way back to the loop.
pub(crate) struct Validated {
    pub(crate) message_id: gossipsub::MessageId,
    pub(crate) source: PeerId,
    pub(crate) verdict: Verdict,
    /// For a bulletin staged here: whether it was the first staged since the
    /// last fold.
    pub(crate) staged: Option<bool>,
}

/// What a check needs.
pub(crate) struct Context {
    pub(crate) registry: Arc<RwLock<Registry>>,
    pub(crate) store: Store,
    pub(crate) own_key: herald_protocol::KeyId,
    pub(crate) verdicts: mpsc::Sender<Validated>,
}

/// Starts checks; owned by the loop.
pub(crate) struct Validators {
    context: Arc<Context>,
    slots: Arc<Semaphore>,
}

/// Waits for the checks still running when the loop has stopped.
#[derive(Clone)]
pub(crate) struct Drain {
    slots: Arc<Semaphore>,
    all: u32,
}

impl Drain {
    /// Returns once no check runs: nothing is staged after it returns (the
    /// loop, the only one to start checks, must have stopped).
    pub(crate) async fn wait(&self) {
        // Never closed: nothing closes it.
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
    };
    (validators, Drain { slots, all })
}

impl Validators {
    /// Starts checking `job` on the runtime of the calling task; hands it back
    /// if `MAX_IN_FLIGHT` checks are running already.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => return Err(Box::new(job)),
        };
        let context = Arc::clone(&self.context);
        if job.is_registry {
            tokio::task::spawn_blocking(move || {
                let verdict = run(&context, job, permit);
                // The loop has stopped: nothing waits for the verdict.
                let _ = context.verdicts.blocking_send(verdict);
            });
        } else {
            tokio::spawn(async move {
                let verdict = run(&context, job, permit);
                let _ = context.verdicts.send(verdict).await;
            });
        }
        Ok(())
    }
}

/// Checks one job; the permit goes back when the check is done (before the
/// verdict is sent, so that a stopped loop does not hold up the drain).
fn run(context: &Context, job: Job, permit: OwnedSemaphorePermit) -> Validated {
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_and_stage(
            job.source,
            &job.data,
            job.is_registry,
            &context.registry,
            &context.store,
            context.own_key,
        )
    }));
    drop(permit);
    let (verdict, staged) =
        checked.unwrap_or_else(|_| (Verdict::Reject("validation failed on this input".into()), None));
    Validated {
        message_id: job.message_id,
        source: job.source,
        verdict,
        staged,
    }
}

/// Validates a gossiped message and, if it is a bulletin that passed, stages
/// it; for an accepted bulletin also says whether it was the first staged
/// since the last fold. Registry updates take the registry's write lock and
/// are saved and flushed.
fn check_and_stage(
    source: PeerId,
    data: &[u8],
    is_registry: bool,
    registry: &RwLock<Registry>,
    store: &Store,
    own_key: herald_protocol::KeyId,
) -> (Verdict, Option<bool>) {
    if is_registry {
        let verdict = {
            let mut registry = registry.write().unwrap_or_else(|e| e.into_inner());
            crate::validate::validate_registry_update(data, &mut registry)
        };
        if let Verdict::RegistryAdvanced(update) = &verdict
            && let Err(e) = store.save_registry_update(update).and_then(|()| store.flush())
        {
            tracing::error!(error = %e, "cannot save a registry update");
        }
        return (verdict, None);
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

    use herald_keys::{Founder, SecretKey, founding_genesis, sign_bulletin};
    use herald_protocol::{BulletinBody, Kind, Payload, Seq, Severity, Timestamp, Tlp};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    struct Fixture {
        validators: Validators,
        drain: Drain,
        verdicts: mpsc::Receiver<Validated>,
        store: Store,
        signing: SecretKey,
        network: herald_protocol::NetworkId,
        _dir: tempfile::TempDir,
    }

    fn fixture(slots: usize) -> Fixture {
        let keys: Vec<SecretKey> = (1..=3u8).map(|n| SecretKey::from_seed(&[n; 32])).collect();
        let founder = Founder {
            name: "member-1",
            member: &keys[0],
            signing: &keys[1],
            node: &keys[2],
        };
        let genesis = founding_genesis(&[founder], 1, Timestamp(1_700_000_000_000)).unwrap();
        let hash = genesis.hash();
        let registry = Registry::from_genesis(genesis, hash).unwrap();
        let network = registry.network();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), network).unwrap();
        let (tx, verdicts) = mpsc::channel(16);
        let (validators, drain) = with_slots(
            Context {
                registry: Arc::new(RwLock::new(registry)),
                store: store.clone(),
                // Not the signer's key: its bulletins are staged.
                own_key: keys[0].id(),
                verdicts: tx,
            },
            slots,
        );
        Fixture {
            validators,
            drain,
            verdicts,
            store,
            signing: keys[1].clone(),
            network,
            _dir: dir,
        }
    }

    fn bulletin(f: &Fixture) -> Vec<u8> {
        let body = BulletinBody {
            format: herald_protocol::bulletin::BULLETIN_FORMAT,
            network: f.network,
            signer: f.signing.id(),
            seq: Seq(1),
            prev: None,
            created: Timestamp(1_700_000_000_001),
            kind: Kind::Outreach,
            tlp: Tlp::Clear,
            severity: Severity::Informational,
            title: "checked off the loop".into(),
            references: Vec::new(),
            supersedes: None,
            expires: None,
            audience: Vec::new(),
            payload: Payload {
                content_type: "text/plain".into(),
                bytes: b"hello".to_vec(),
            },
        };
        sign_bulletin(&f.signing, &body).unwrap().to_bytes()
    }

    fn job(data: Vec<u8>, n: u8) -> Job {
        Job {
            source: PeerId::random(),
            message_id: gossipsub::MessageId::from(vec![n]),
            data,
            is_registry: false,
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
        let good = bulletin(&f);
        f.validators.submit(job(good.clone(), 1)).unwrap();
        let v = next(&mut f).await;
        assert_eq!(v.message_id, gossipsub::MessageId::from(vec![1]));
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
        assert_eq!(back.data, vec![2]);
        assert!(matches!(next(&mut f).await.verdict, Verdict::Reject(_)));
        // The slot is free again.
        f.validators.submit(job(vec![3], 3)).unwrap();
        assert!(matches!(next(&mut f).await.verdict, Verdict::Reject(_)));
    }

    #[tokio::test]
    async fn the_drain_waits_for_running_checks() {
        let mut f = fixture(MAX_IN_FLIGHT);
        let good = bulletin(&f);
        f.validators.submit(job(good, 1)).unwrap();
        // Not yet run (this task has not yielded): the drain must wait for it,
        // and when it returns the bulletin is staged.
        tokio::time::timeout(WAIT, f.drain.wait()).await.unwrap();
        assert_eq!(f.store.staged_count(), 1);
        assert!(matches!(next(&mut f).await.verdict, Verdict::Accept(..)));
    }
}
