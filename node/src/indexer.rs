//! The indexer: a thread that folds staged gossip into the chains and query
//! indexes in the quiet moments between messages.
//!
//! Forwarding is what the network waits on: a bulletin is verified and staged
//! (held, readable by id) before it goes on, on every node it crosses. Folding
//! it into chains and indexes is bookkeeping that may follow within
//! [`FOLD_DELAY`](crate::store::FOLD_DELAY). A fold is a sled batch, and while a batch is applied sled
//! holds a lock that every other read and write of the process waits for (its
//! global concurrency control). What a new message waits on reads no sled (the
//! chain heads are kept in memory), but the fold's CPU competes with it; so a
//! fold waits for a moment when nothing has been staged for [`QUIET`], and
//! then runs between two messages instead of in the path of one.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::events::Origin;
use crate::network::Command;
use crate::store::{FOLD_GROUP, Folded, Store};
use crate::writer::{check_gaps, report};

/// How long nothing must have been staged before a fold starts. Half of
/// [`FOLD_DELAY`](crate::store::FOLD_DELAY) after the first staged bulletin a fold waits for such a
/// moment; at [`FOLD_DELAY`](crate::store::FOLD_DELAY) it runs anyway, so a steady stream is folded on
/// time too.
pub(crate) const QUIET: Duration = Duration::from_millis(20);

/// Signals queued to the indexer. A nudge that finds the queue full is not
/// needed: the indexer looks at what is staged whenever it wakes.
const SIGNAL_CAPACITY: usize = 16;

/// What the indexer is told.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Bulletins were staged (sent with the first after a fold, and whenever
    /// [`FOLD_GROUP`] or more are waiting): fold them within [`FOLD_DELAY`](crate::store::FOLD_DELAY).
    Staged,
    /// Fold what is staged now, flush, and say so (before an export, which
    /// reads folded bulletins only).
    FoldNow(SyncSender<()>),
    /// Fold what is staged, flush, and stop.
    Stop,
}

pub(crate) struct Indexer {
    pub(crate) store: Store,
    pub(crate) events: crate::events::Events,
    pub(crate) network: mpsc::Sender<Command>,
    /// Longest a staged bulletin waits to be folded ([`FOLD_DELAY`](crate::store::FOLD_DELAY) but in tests).
    pub(crate) fold_delay: Duration,
}

/// When a fold is due: from `from` at a quiet moment, at `by` in any case.
#[derive(Debug, Clone, Copy)]
struct Due {
    from: Instant,
    by: Instant,
}

impl Due {
    /// At `now`, with the last bulletin staged `quiet_for` ago: `None` to fold
    /// now, or when the fold is due instead.
    fn wait_more(self, now: Instant, quiet_for: Duration) -> Option<Due> {
        if now >= self.by || quiet_for >= QUIET {
            return None;
        }
        // Something was staged a moment ago: its message may still be on its
        // way through this node.
        Some(Due {
            from: self.by.min(now + (QUIET - quiet_for)),
            by: self.by,
        })
    }

    fn from_now(delay: Duration) -> Self {
        let now = Instant::now();
        Due {
            from: now + delay / 2,
            by: now + delay,
        }
    }
}

/// Has the indexer fold what is staged now, and waits until it has (or has
/// stopped). Blocks: for a blocking thread.
pub(crate) fn fold_now(signals: &SyncSender<Signal>) {
    let (done, folded) = std::sync::mpsc::sync_channel(1);
    if signals.send(Signal::FoldNow(done)).is_ok() {
        let _ = folded.recv();
    }
}

/// Starts the indexer thread; it stops on [`Signal::Stop`] or when every
/// sender is dropped, after a last fold and a flush.
pub(crate) fn spawn(indexer: Indexer) -> std::io::Result<(SyncSender<Signal>, std::thread::JoinHandle<()>)> {
    let (signals, rx) = std::sync::mpsc::sync_channel(SIGNAL_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("herald-indexer".into())
        .spawn(move || indexer.run(rx))?;
    Ok((signals, thread))
}

impl Indexer {
    fn run(self, signals: Receiver<Signal>) {
        let mut due: Option<Due> = self.next_due();
        loop {
            let signal = match due {
                None => signals.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => signals.recv_timeout(d.from.saturating_duration_since(Instant::now())),
            };
            match signal {
                Ok(Signal::Staged) if self.store.staged_count() < FOLD_GROUP => {
                    due.get_or_insert_with(|| Due::from_now(self.fold_delay));
                }
                Ok(Signal::Staged) => {
                    self.fold_all();
                    due = self.next_due();
                }
                Ok(Signal::FoldNow(done)) => {
                    self.fold_all();
                    due = self.next_due();
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    let later = due.and_then(|d| d.wait_more(Instant::now(), self.store.since_last_stage()));
                    match later {
                        Some(later) => due = Some(later),
                        None => {
                            self.fold_all();
                            due = self.next_due();
                        }
                    }
                }
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Stopping: fold what is staged and make it durable.
        self.fold_all();
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "cannot flush the store on stop");
        }
    }

    /// When to fold next, if anything is staged.
    fn next_due(&self) -> Option<Due> {
        (self.store.staged_count() > 0).then(|| Due::from_now(self.fold_delay))
    }

    /// Folds every staged bulletin into the chains and indexes, flushes (so
    /// received gossip is on disk as soon as it is folded), and reports what
    /// happened to each.
    fn fold_all(&self) {
        loop {
            match self.store.fold_staged(FOLD_GROUP) {
                Ok(folded) if folded.is_empty() => return,
                Ok(folded) => {
                    let done = folded.len() < FOLD_GROUP;
                    // On disk before anyone hears of it (one flush a fold,
                    // but for a burst of more than a group).
                    self.flush();
                    self.report_folded(folded);
                    if done {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot fold staged bulletins");
                    return;
                }
            }
        }
    }

    fn flush(&self) {
        if let Err(e) = self.store.flush() {
            // sled's background flush tries again.
            tracing::error!(error = %e, "cannot flush folded bulletins");
        }
    }

    /// Reports folded bulletins as stored (or as equivocation) and asks for
    /// sync where they left gaps.
    fn report_folded(&self, folded: Vec<Folded>) {
        if folded.is_empty() {
            return;
        }
        let mut received = Vec::with_capacity(folded.len());
        let mut origins = Vec::with_capacity(folded.len());
        for f in folded {
            // The node's own were reported when they were published (and
            // leave no gap to sync): only an equivocation is news.
            if f.own && !matches!(f.outcome, crate::store::Stored::Equivocation { .. }) {
                continue;
            }
            // The network stages with the sending peer's id; an entry staged
            // without one (by a tool on the store) is reported as local.
            let origin = match libp2p::PeerId::from_bytes(&f.from) {
                Ok(peer) => Origin::Gossip(peer),
                Err(_) => Origin::Local,
            };
            report(&self.events, &f.bulletin, f.member, origin, f.outcome);
            received.push((f.bulletin, f.member));
            origins.push(origin);
        }
        check_gaps(&self.store, &self.network, &received, &origins);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fold_waits_for_a_quiet_moment_but_not_past_its_deadline() {
        let start = Instant::now();
        let due = Due {
            from: start,
            by: start + Duration::from_millis(500),
        };
        // Quiet for long enough: fold now.
        assert!(due.wait_more(start, QUIET).is_none());
        // Staged 5 ms ago: look again when it has been quiet for QUIET.
        let later = due.wait_more(start, Duration::from_millis(5)).unwrap();
        assert_eq!(later.from, start + QUIET - Duration::from_millis(5));
        assert_eq!(later.by, due.by);
        // Never past the deadline, however busy.
        let near = start + Duration::from_millis(490);
        let later = due.wait_more(near, Duration::ZERO).unwrap();
        assert_eq!(later.from, due.by);
        assert!(due.wait_more(due.by, Duration::ZERO).is_none());
    }
}
