//! Whether a node may number bulletins of its signing key. A store that holds
//! no bulletin of the key cannot tell a new key from one whose bulletins were
//! lost with an earlier store; numbering from 1 with the second would sign
//! numbers the network already holds (equivocation). So until the key is
//! known to be new (a mark `herald init` leaves in the store folder, or the
//! operator's word) or the store holds a bulletin of it, the node first
//! checks with the network: catch-up sync sessions with its peers bring back
//! whatever chain they hold for the key.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use herald_protocol::KeyId;

/// How far the node has checked the network for its own chain, as its
/// catch-up sync sessions go (kept by the network).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChainCheck {
    /// Nothing (more) to check: the key is new, its chain is held (and was
    /// checked), or every connected peer's session has brought back all that
    /// peer holds of it.
    pub(crate) done: bool,
    /// Peers whose session has done so since the node started.
    pub(crate) completed: usize,
    /// Sessions under way that have not yet brought the chain back.
    pub(crate) running: usize,
}

impl ChainCheck {
    /// Nothing to check.
    pub(crate) const DONE: ChainCheck = ChainCheck {
        done: true,
        completed: 0,
        running: 0,
    };

    /// The check as sessions stand: done once every connected peer's session
    /// has brought back all it holds of the chain (`completed`; a failed
    /// session counts for nothing), and once every
    /// bootstrap peer's first dial has connected or failed (`dialling`), so
    /// that the first peer up does not decide alone.
    pub(crate) fn from_sessions<P: Eq + std::hash::Hash>(
        completed: &std::collections::HashSet<P>,
        connected: &std::collections::HashSet<P>,
        running: usize,
        dialling: bool,
    ) -> ChainCheck {
        ChainCheck {
            done: !dialling && !completed.is_empty() && connected.iter().all(|p| completed.contains(p)),
            completed: completed.len(),
            running,
        }
    }

    /// Whether a publication that has waited its time may go on: one peer's
    /// session brought the chain back and none is under way (a peer whose
    /// session failed has nothing to bring back for now).
    pub(crate) fn settled(&self) -> bool {
        self.done || (self.completed > 0 && self.running == 0)
    }
}

/// The mark in the store folder `store_dir` saying that `key` has signed
/// nothing yet.
pub fn unused_key_mark(store_dir: &Path, key: &KeyId) -> PathBuf {
    store_dir.join(format!("unused-key-{}", hex::encode(key.as_bytes())))
}

/// The mark in the store folder `store_dir` saying that the node has not
/// yet checked with the network for `key`'s chain: written when a node starts
/// with no bulletin of the key and no mark that it is new, removed once the
/// check has passed. While it is there, bulletins of the key in the store
/// (a catch-up cut short, say) do not end the check at the next start.
pub fn unchecked_key_mark(store_dir: &Path, key: &KeyId) -> PathBuf {
    store_dir.join(format!("unchecked-key-{}", hex::encode(key.as_bytes())))
}

const UNCHECKED_TEXT: &str = "The node has not yet checked with its peers for the chain of this signing key\n\
(named in the file name): it held no bulletin of it when it started. The node\n\
removes this file once the check has passed, or as it numbers a bulletin of the key.\n";

/// Writes the mark that the node has not checked `key`'s chain yet, durably.
pub fn mark_key_unchecked(store_dir: &Path, key: &KeyId) -> std::io::Result<()> {
    write_mark(store_dir, &unchecked_key_mark(store_dir, key), UNCHECKED_TEXT)
}

const MARK_TEXT: &str = "This signing key (named in the file name) has signed no bulletin yet, so the\n\
node may start its chain at number 1 without checking with a peer. The node\n\
removes this file as it signs the key's first bulletin. It lives in the store\n\
folder so that it goes with the store: never copy it into another store.\n";

/// Writes the mark that `key` has signed nothing yet into `store_dir`
/// (created if need be), durably.
pub fn mark_key_unused(store_dir: &Path, key: &KeyId) -> std::io::Result<()> {
    write_mark(store_dir, &unused_key_mark(store_dir, key), MARK_TEXT)
}

fn write_mark(store_dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    // (As the store makes it: its owner's only.)
    crate::owner_only::create_dir_all(store_dir)?;
    let mut file = File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    File::open(store_dir)?.sync_all()
}

/// Removes the mark at `path` durably; nothing to do if there is none.
pub(crate) fn remove_mark(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => match path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn only_completed_sessions_with_every_connected_peer_end_the_check() {
        let set = |peers: &[u8]| peers.iter().copied().collect::<HashSet<u8>>();
        // Nothing completed: not done, not settled (alone, or sessions failed).
        let none = ChainCheck::from_sessions(&set(&[]), &set(&[1, 2]), 0, false);
        assert!(!none.done && !none.settled());
        // One of two connected peers completed, the other's session failed:
        // not done; settled once nothing is under way.
        let one = ChainCheck::from_sessions(&set(&[1]), &set(&[1, 2]), 0, false);
        assert!(!one.done && one.settled());
        let running = ChainCheck::from_sessions(&set(&[1]), &set(&[1, 2]), 1, false);
        assert!(!running.done && !running.settled());
        // Every connected peer completed (one that left no longer counts).
        let all = ChainCheck::from_sessions(&set(&[1, 3]), &set(&[1, 3]), 0, false);
        assert!(all.done && all.settled());
        let left = ChainCheck::from_sessions(&set(&[1]), &set(&[1]), 1, false);
        assert!(left.done);
        // A bootstrap peer still being dialled: not done, though settled.
        let dialling = ChainCheck::from_sessions(&set(&[1]), &set(&[1]), 0, true);
        assert!(!dialling.done && dialling.settled());
        assert!(ChainCheck::DONE.settled());
    }
}
