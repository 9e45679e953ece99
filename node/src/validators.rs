//! The validation threads: gossiped messages are checked (cheap to dear:
//! size, decode, signer in standing, signature) and accepted bulletins staged
//! here, off the swarm's polling loop, and the verdicts go back to the loop.
//!
//! Each thread owns a queue and the loop deals messages to them in turn. That
//! costs one wake-up each way per message (the loop's hand-off to a thread and
//! the verdict's way back); a task, a permit and a blocking-pool job per
//! message cost more on the loop's thread than the check itself.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, RwLock};

use herald_keys::Registry;
use libp2p::{PeerId, gossipsub};
use tokio::sync::mpsc;

use crate::store::Store;
use crate::validate::{Verdict, validate_bulletin};

/// Messages waiting in one thread's queue, at most. A message that finds the
/// queue full is ignored (not forwarded, its sender not blamed); sync fetches
/// it later if it was good.
const QUEUE_PER_THREAD: usize = 1024;
/// Validation threads, at most: more would only take turns with the loop.
const MAX_THREADS: usize = 4;

/// A gossiped message to check.
pub(crate) struct Job {
    pub(crate) source: PeerId,
    pub(crate) message_id: gossipsub::MessageId,
    pub(crate) data: Vec<u8>,
    pub(crate) is_registry: bool,
}

/// A validation result on its way back to the event loop.
pub(crate) struct Validated {
    pub(crate) message_id: gossipsub::MessageId,
    pub(crate) source: PeerId,
    pub(crate) verdict: Verdict,
    /// For an accepted bulletin: whether it was staged, and whether it was
    /// the first staged since the indexer last folded.
    pub(crate) staged: Option<bool>,
}

/// What the validation threads share.
pub(crate) struct Context {
    pub(crate) registry: Arc<RwLock<Registry>>,
    pub(crate) store: Store,
    pub(crate) own_key: herald_protocol::KeyId,
    pub(crate) verdicts: mpsc::Sender<Validated>,
}

/// Why a job was not queued.
pub(crate) enum Refused {
    /// Every queue was full: the job is handed back.
    Busy(Box<Job>),
    /// The threads have stopped.
    Stopped(Box<Job>),
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Busy(_) => "validation queues full",
            Refused::Stopped(_) => "validation threads stopped",
        })
    }
}

/// The loop's handle on the validation threads. Dropping it (with the
/// verdicts' receiver) stops them; [`Threads::join`] waits for that.
pub(crate) struct Validators {
    queues: Vec<SyncSender<Job>>,
    next: usize,
}

/// The threads, for joining once their queues are gone.
pub(crate) struct Threads(Vec<std::thread::JoinHandle<()>>);

impl Threads {
    /// Waits for every thread to stop (after the [`Validators`] handle and
    /// the verdicts' receiver were dropped), so that nothing is staged after
    /// the indexer's last fold.
    pub(crate) fn join(self) {
        for thread in self.0 {
            let _ = thread.join();
        }
    }
}

/// Starts one thread per core (at most [`MAX_THREADS`]).
pub(crate) fn spawn(context: Context) -> std::io::Result<(Validators, Threads)> {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, MAX_THREADS);
    let context = Arc::new(context);
    let mut queues = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = sync_channel(QUEUE_PER_THREAD);
        let context = Arc::clone(&context);
        threads.push(
            std::thread::Builder::new()
                .name(format!("herald-validate-{i}"))
                .spawn(move || run(&context, &rx))?,
        );
        queues.push(tx);
    }
    Ok((Validators { queues, next: 0 }, Threads(threads)))
}

impl Validators {
    /// Queues `job` on the next thread in turn, or on any other with room.
    /// Never blocks.
    pub(crate) fn submit(&mut self, mut job: Job) -> Result<(), Refused> {
        let n = self.queues.len();
        let mut stopped = 0;
        for _ in 0..n {
            let queue = &self.queues[self.next];
            self.next = (self.next + 1) % n;
            match queue.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => job = back,
                Err(TrySendError::Disconnected(back)) => {
                    job = back;
                    stopped += 1;
                }
            }
        }
        let job = Box::new(job);
        Err(if stopped == n {
            Refused::Stopped(job)
        } else {
            Refused::Busy(job)
        })
    }
}

fn run(context: &Context, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
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
        let (verdict, staged) =
            checked.unwrap_or_else(|_| (Verdict::Reject("validation failed on this input".into()), None));
        let verdict = Validated {
            message_id: job.message_id,
            source: job.source,
            verdict,
            staged,
        };
        // The loop has stopped: what was staged is folded at the stop, and
        // what is still queued is dropped (sync fetches it).
        if context.verdicts.blocking_send(verdict).is_err() {
            return;
        }
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
    use super::*;

    fn job(n: u8) -> Job {
        Job {
            source: PeerId::random(),
            message_id: gossipsub::MessageId::from(vec![n]),
            data: vec![n],
            is_registry: false,
        }
    }

    #[test]
    fn jobs_are_dealt_in_turn_and_handed_back_when_no_queue_has_room() {
        let (a_tx, a_rx) = sync_channel(1);
        let (b_tx, b_rx) = sync_channel(1);
        let mut validators = Validators {
            queues: vec![a_tx, b_tx],
            next: 0,
        };
        validators.submit(job(1)).unwrap();
        validators.submit(job(2)).unwrap();
        assert_eq!(a_rx.try_recv().unwrap().data, vec![1]);
        assert_eq!(b_rx.try_recv().unwrap().data, vec![2]);
        // The next in turn is full: the other one takes it.
        validators.submit(job(3)).unwrap();
        validators.submit(job(4)).unwrap();
        match validators.submit(job(5)) {
            Err(Refused::Busy(back)) => assert_eq!(back.data, vec![5]),
            _ => panic!("expected the job back as busy"),
        }
        assert_eq!(a_rx.try_recv().unwrap().data, vec![3]);
        assert_eq!(b_rx.try_recv().unwrap().data, vec![4]);
        // One thread gone: the other still takes work.
        drop(a_rx);
        validators.submit(job(6)).unwrap();
        assert_eq!(b_rx.try_recv().unwrap().data, vec![6]);
        drop(b_rx);
        match validators.submit(job(7)) {
            Err(Refused::Stopped(back)) => assert_eq!(back.data, vec![7]),
            _ => panic!("expected the job back as stopped"),
        }
    }
}
