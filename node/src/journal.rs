//! The journal of the node's own bulletins: one file in the store's folder
//! where each bulletin the node signs is written, and made durable (one
//! synchronous write for a group), before it is gossiped or acknowledged. The store's chains and
//! indexes take it in with the next fold; opening the store replays the
//! journal, so a crash at any instant loses nothing that left the node and
//! never lets it sign two bulletins with one number.
//!
//! The file has a fixed size, written with zeros when it is created, so that
//! appending changes no file metadata: a write reaches the disk as data blocks
//! alone. On Linux the journal is written with direct I/O and `O_DSYNC` (each
//! write goes to the disk, bypassing the page cache, and returns once it is
//! durable: one request to the device instead of a write-back and a flush);
//! where the file system refuses direct I/O it is written through the page
//! cache and `fdatasync`. Direct I/O writes whole aligned blocks, so the block
//! holding the end of the journal is kept in memory and written again with
//! the next record. Layout (integers little-endian; docs/PROTOCOL.md, section 12B):
//!
//! ```text
//! header:  magic "HRLDJNL3" (8) | epoch (u64) | epoch key (8, random) | header check (8)
//! record:  length n (u32) | epoch (u64) | group (u32) | check (8) | member (32) | signed bulletin (n - 32)
//! header check: the first 8 bytes of SHA-256(magic | epoch | epoch key)
//! check:   the first 8 bytes of SHA-256(epoch key | length | epoch | group | member | signed bulletin)
//! ```
//!
//! `group` is the byte where the write that carried the record starts: the
//! offset of the first record of its group.
//!
//! A header whose check fails is damage, and is refused: read with a changed
//! epoch or key, every record would fail its check and the journal would read
//! as empty. Journals written by earlier builds (magic "HRLDJNL1": a 16-byte
//! epoch key and no header check; "HRLDJNL2": records without `group`) are
//! read too, and their next epoch, started as the store opens, is written in
//! the layout above.
//!
//! Records follow the header back to back. Reading stops at the first record
//! that is not whole: its length is out of bounds, its epoch is not the
//! header's, it runs past the end of the file, its check fails, or its group
//! is neither its own offset nor its predecessor's group. That is the zeros
//! after the last record, a record left from an earlier epoch, or a record
//! torn by a crash while its write went to the disk (never acknowledged: the
//! write returns, or the sync comes, after the whole group is on the disk).
//! A write of several blocks may reach the disk in any order, so whole
//! records of the same group can follow a torn one: they were not
//! acknowledged either, and are dropped; the epoch then takes no record
//! until the next one starts (at once if nothing before the tear was read,
//! else once the store holds what was), so that no later write can take
//! them in as its own. A whole record of the epoch further on
//! whose group starts after the torn record means that a later write came
//! after it returned: the journal is damaged, not ended, and is refused (the
//! records after the damage were acknowledged; numbering on from before them
//! would equivocate). The epoch key keeps bytes a bulletin carries from ever
//! reading as a record of a later epoch. When the file is full the store
//! first makes every record durable in sled, then starts a new epoch by
//! rewriting the header (with a new key) and syncing: the old records are
//! then read as the end. That write changes the header's bytes alone (the
//! rest of its block is written back as it was), so a crash that tears it
//! leaves the old epoch or the new one (on a disk that writes each sector
//! whole).

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use herald_protocol::{BulletinId, KeyId, MemberId, Seq, SignedBulletin};
use sha2::{Digest, Sha256};

/// The journal's file name, in the store's directory.
pub(crate) const FILE_NAME: &str = "own-journal";
/// Size of a new journal file: room for about 8,000 bulletins of 500 bytes
/// between epochs, and for at least 15 of the largest allowed.
pub(crate) const JOURNAL_BYTES: u64 = 4 << 20;
/// The largest journal file read: a bound on what a stray file can make the
/// node load.
const MAX_FILE: u64 = 64 << 20;
const MAGIC: [u8; 8] = *b"HRLDJNL3";
/// The magic of journals whose records carry no group.
const MAGIC_V2: [u8; 8] = *b"HRLDJNL2";
/// The magic of journals written by the first builds with one.
const MAGIC_V1: [u8; 8] = *b"HRLDJNL1";
const HEADER: u64 = 32;
/// Bytes of a new epoch's key.
const KEY: usize = 8;
/// Length, epoch, group and check before each record's member and bulletin.
const RECORD_HEADER: usize = 4 + 8 + 4 + 8;
/// The longest record: a member and the largest bulletin allowed.
const MAX_RECORD: usize = 32 + herald_protocol::MAX_BULLETIN_BYTES;
/// The unit of direct I/O: offsets, lengths and buffers are multiples of it
/// (4 KiB covers disks of 512- and 4096-byte sectors).
const BLOCK: usize = 4096;

/// The layouts a journal file can be in: only the current one is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `HRLDJNL1`: a 16-byte epoch key, no header check, no group.
    First,
    /// `HRLDJNL2`: records without a group.
    Second,
    /// `HRLDJNL3`, written by this build.
    Third,
}

impl Layout {
    /// Bytes before a record's member.
    fn record_header(self) -> usize {
        match self {
            Layout::Third => RECORD_HEADER,
            Layout::First | Layout::Second => 4 + 8 + 8,
        }
    }
}

/// One aligned block, as direct I/O wants its buffers.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

impl Block {
    const ZERO: Block = Block([0; BLOCK]);
}

/// What went wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error(
        "cannot use the journal of own bulletins {path}: {source}. Nothing was published; check the disk (space, permissions, errors in the system log) and try again"
    )]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a journal, or holds a record this build cannot read.
    #[error(
        "the journal of own bulletins {path} is damaged: {what}. It may hold bulletins this node published that the store lacks; keep a copy of it, and start the node only once it is repaired or moved aside (if moved aside, the node may sign a second bulletin with a number it already used)"
    )]
    Damaged {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An earlier write or sync failed: what is on disk is not known, so the
    /// journal takes nothing more until the node is restarted (and replays it).
    #[error(
        "the journal of own bulletins {path} failed earlier ({what}); restart the node, which replays it"
    )]
    Failed {
        /// The journal file.
        path: PathBuf,
        /// The first failure.
        what: String,
    },
}

/// The open journal file.
pub(crate) struct Journal {
    /// Reads, and writes where direct I/O is refused.
    file: File,
    /// The same file opened for direct, synchronous writes, if allowed.
    direct: Option<File>,
    /// The block that holds `end`, as on disk up to `end` (what follows
    /// `end` in it is not used).
    tail: Box<Block>,
    path: PathBuf,
    epoch: u64,
    /// The epoch's key, in every record's check ([`KEY`] bytes; 16 in a
    /// journal of the first layout, until its next epoch).
    key: Vec<u8>,
    /// The file's layout: an earlier one takes no record until the next epoch.
    layout: Layout,
    /// Whole records of a torn write lie after the end: the epoch takes no
    /// record until the next one, so that none of them can read as following
    /// a later write of the same group offset.
    torn: bool,
    /// Where the next record goes.
    end: u64,
    size: u64,
    /// The last bulletin journaled since the journal was opened, for each
    /// signing key.
    tips: Vec<(KeyId, Seq, BulletinId)>,
    /// The first write or sync that failed.
    failed: Option<String>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal in `dir` (creating an empty one if there is none) and
    /// returns it with the records of its current epoch, oldest first. New
    /// records go after them until [`Journal::start_epoch`].
    pub(crate) fn open(dir: &Path) -> Result<(Journal, Vec<(SignedBulletin, MemberId)>), JournalError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            create(dir, &path)?;
        }
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        if length > MAX_FILE {
            return Err(JournalError::Damaged {
                path,
                what: format!("it is {length} bytes long, larger than any journal"),
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let Parsed {
            epoch,
            key,
            layout,
            records,
            end,
            left,
        } = parse(&bytes).map_err(|what| JournalError::Damaged {
            path: path.clone(),
            what,
        })?;
        let size = bytes.len() as u64;
        let mut tail = Box::new(Block::ZERO);
        let from = block_start(end) as usize;
        tail.0[..end as usize - from].copy_from_slice(&bytes[from..end as usize]);
        let direct = open_direct(&path, &bytes);
        let mut journal = Journal {
            file,
            direct,
            tail,
            path,
            epoch,
            key,
            layout,
            torn: left > 0,
            end,
            size,
            tips: Vec::new(),
            failed: None,
        };
        if left > 0 {
            tracing::error!(
                path = %journal.path.display(),
                kept = records.len(),
                left,
                "the journal's last write is cut short: a record of it is torn and {left} whole records follow it, which are dropped. After a crash or a power cut that is expected (none of that write was acknowledged or gossiped); otherwise the disk damaged it, and numbers it held may be signed again"
            );
        }
        for (bulletin, _) in &records {
            journal.note_tip(bulletin);
        }
        // Nothing to carry over: the next epoch can start now, in this build's
        // layout and clear of a torn write's leftovers (with records, the
        // store starts it once it holds them).
        if records.is_empty() && journal.needs_new_epoch() {
            journal.start_epoch()?;
        }
        Ok((journal, records))
    }

    /// The records of the current epoch, read back from the file.
    #[cfg(test)]
    pub(crate) fn records(&mut self) -> Result<Vec<(SignedBulletin, MemberId)>, JournalError> {
        let mut bytes = Vec::new();
        let read = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_to_end(&mut bytes));
        read.map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })?;
        let parsed = parse(&bytes).map_err(|what| JournalError::Damaged {
            path: self.path.clone(),
            what,
        })?;
        Ok(parsed.records)
    }

    /// Whether records of `bytes` in all fit after the last one.
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        self.end.saturating_add(bytes as u64) <= self.size
    }

    /// Whether no record was written in this epoch.
    pub(crate) fn is_empty(&self) -> bool {
        self.end == HEADER
    }

    /// Whether the epoch takes no record (an earlier layout, or a torn
    /// write's leftovers after the end): the store starts the next epoch once
    /// it holds the records.
    pub(crate) fn needs_new_epoch(&self) -> bool {
        self.layout != Layout::Third || self.torn
    }

    /// The bytes `bulletin` takes in the journal.
    pub(crate) fn record_len(bulletin: &SignedBulletin) -> usize {
        RECORD_HEADER + 32 + bulletin.as_bytes().len()
    }

    /// The last bulletin of `key` journaled since the journal was opened (in
    /// this epoch or, settled into sled since, an earlier one).
    pub(crate) fn tip(&self, key: &KeyId) -> Option<(Seq, BulletinId)> {
        self.tips
            .iter()
            .find(|(k, ..)| k == key)
            .map(|(_, seq, id)| (*seq, *id))
    }

    /// Writes `items` after the last record and syncs the file's data: on
    /// return they survive a crash or a power cut. The caller checks
    /// [`Journal::fits`] first. After a failure the journal takes nothing more.
    pub(crate) fn append(&mut self, items: &[(SignedBulletin, MemberId)]) -> Result<(), JournalError> {
        self.usable()?;
        if self.needs_new_epoch() {
            // Not reached: the store starts an epoch as it opens such a file.
            return Err(JournalError::Failed {
                path: self.path.clone(),
                what: "it is in an earlier layout, or holds a torn write's leftovers: it takes records from its next epoch".into(),
            });
        }
        // Every record names the offset where this write starts: a record
        // whole after a torn one of the same write is then known as such.
        let group = u32::try_from(self.end).unwrap_or(u32::MAX);
        let mut buffer = Vec::with_capacity(items.iter().map(|(b, _)| Self::record_len(b)).sum());
        for (bulletin, member) in items {
            encode_record(&mut buffer, &self.key, self.epoch, group, member, bulletin);
        }
        if !self.fits(buffer.len()) {
            return Err(JournalError::Failed {
                path: self.path.clone(),
                what: "a write past the end of the file was asked for".into(),
            });
        }
        let at = self.end;
        let written = self.write_durably(at, &buffer);
        self.settle(written)?;
        self.end = at + buffer.len() as u64;
        for (bulletin, _) in items {
            self.note_tip(bulletin);
        }
        Ok(())
    }

    /// Starts a new epoch: the records written so far are read as the end
    /// from now on. Only once every one of them is durable elsewhere.
    pub(crate) fn start_epoch(&mut self) -> Result<(), JournalError> {
        self.usable()?;
        let epoch = self.epoch.wrapping_add(1);
        let key: [u8; KEY] = rand::random();
        // The first block is written as it is but for the header. A crash
        // that tears the write leaves the old header or the new one (a
        // sector is written whole) and the rest of the block unchanged
        // either way: the old epoch read again (its records are in sled, so
        // replaying them stores nothing new) or the new one, empty. (Zeros
        // after the header would let a torn write read as damage: the old
        // header, its first records zeroed, whole records after them.)
        //
        // Read as it is on the disk: with direct I/O through the direct
        // handle, so that no copy the page cache might keep is written back.
        // A failed read changes nothing, so the journal stays usable.
        let mut first = Box::new(Block::ZERO);
        let len = (self.size as usize).min(BLOCK);
        let file = self.direct.as_mut().unwrap_or(&mut self.file);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_exact(&mut first.0[..len]))
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        first.0[..HEADER as usize].copy_from_slice(&header(epoch, &key));
        let written = self.write_durably(0, &first.0[..len]);
        self.settle(written)?;
        // The block holding the new end (the header's), for the next append.
        *self.tail = *first;
        self.epoch = epoch;
        self.key = key.to_vec();
        self.layout = Layout::Third;
        self.torn = false;
        self.end = HEADER;
        // The tips stay: what they name is durable in sled now, and the next
        // publication numbers on from them without reading sled.
        Ok(())
    }

    /// Writes `bytes` at `at` (the end, or 0 for the header) and returns once
    /// they are durable.
    fn write_durably(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        let Some(direct) = &mut self.direct else {
            self.file.seek(SeekFrom::Start(at))?;
            self.file.write_all(bytes)?;
            return self.file.sync_data();
        };
        // Whole blocks from the one holding `at`: what is on disk before `at`
        // in that block (kept in `tail` when `at` is the end), the bytes, zeros.
        let start = block_start(at);
        let kept = (at - start) as usize;
        let mut data = Vec::with_capacity(kept + bytes.len());
        if at == self.end {
            data.extend_from_slice(&self.tail.0[..kept]);
        } else {
            data.resize(kept, 0);
        }
        data.extend_from_slice(bytes);
        let mut blocks = vec![Block::ZERO; data.len().div_ceil(BLOCK)];
        for (block, chunk) in blocks.iter_mut().zip(data.chunks(BLOCK)) {
            block.0[..chunk.len()].copy_from_slice(chunk);
        }
        direct.seek(SeekFrom::Start(start))?;
        let mut slices: Vec<IoSlice<'_>> = blocks.iter().map(|b| IoSlice::new(&b.0)).collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            match direct.write_vectored(left)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => IoSlice::advance_slices(&mut left, n),
            }
        }
        // The block that holds the end of what was written, for the next
        // append (after a header write `start_epoch` sets it itself).
        let end = at + bytes.len() as u64;
        let last = ((block_start(end) - start) as usize) / BLOCK;
        *self.tail = blocks.get(last).copied().unwrap_or(Block::ZERO);
        Ok(())
    }

    fn usable(&self) -> Result<(), JournalError> {
        match &self.failed {
            None => Ok(()),
            Some(what) => Err(JournalError::Failed {
                path: self.path.clone(),
                what: what.clone(),
            }),
        }
    }

    /// After a failed write or sync the file's state is unknown (a failed
    /// sync may even have dropped the written pages): refuse from then on.
    fn settle(&mut self, result: std::io::Result<()>) -> Result<(), JournalError> {
        result.map_err(|source| {
            self.failed = Some(source.to_string());
            JournalError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    fn note_tip(&mut self, bulletin: &SignedBulletin) {
        let body = bulletin.body();
        let tip = (body.signer, body.seq, bulletin.id());
        match self.tips.iter_mut().find(|(k, ..)| *k == body.signer) {
            Some(held) if held.1 < body.seq => *held = tip,
            Some(_) => {}
            None => self.tips.push(tip),
        }
    }
}

/// Where the block holding byte `at` starts.
fn block_start(at: u64) -> u64 {
    at - at % BLOCK as u64
}

/// The journal opened for direct, synchronous writes, if the system and the
/// file system allow it: tried by writing the first block again as it is.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path, bytes: &[u8]) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !bytes.len().is_multiple_of(BLOCK) {
        // Whole blocks would be written past the end of the file.
        return None;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .ok()?;
    let mut first = Box::new(Block::ZERO);
    first.0.copy_from_slice(bytes.get(..BLOCK)?);
    let tried = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&first.0));
    match tried {
        Ok(()) => Some(file),
        Err(e) => {
            tracing::debug!(error = %e, "direct I/O refused; the journal is written through the page cache");
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path, _bytes: &[u8]) -> Option<File> {
    None
}

fn header(epoch: u64, key: &[u8; KEY]) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&epoch.to_le_bytes());
    h[16..24].copy_from_slice(key);
    h[24..].copy_from_slice(&header_check(MAGIC, epoch, key));
    h
}

fn header_check(magic: [u8; 8], epoch: u64, key: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(magic)
        .chain_update(epoch.to_le_bytes())
        .chain_update(key)
        .finalize();
    first_eight(&digest)
}

/// The first 8 bytes of a SHA-256 digest: the journal's checks.
fn first_eight(digest: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Creates an empty journal of [`JOURNAL_BYTES`], all written (zeros after
/// the header), under a temporary name, then renames it into place.
fn create(dir: &Path, path: &Path) -> Result<(), JournalError> {
    let fresh = dir.join(format!("{FILE_NAME}.new"));
    let io = |source| JournalError::Io {
        path: fresh.clone(),
        source,
    };
    // It holds bulletins: its owner's only.
    let mut file = crate::owner_only::write_options()
        .create(true)
        .truncate(true)
        .open(&fresh)
        .map_err(io)?;
    let mut content = vec![0u8; JOURNAL_BYTES as usize];
    content[..HEADER as usize].copy_from_slice(&header(1, &rand::random()));
    file.write_all(&content).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&fresh, path).map_err(io)?;
    // The new name is durable once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// A record's check: `group` is `None` in the layouts before the third.
fn check(
    key: &[u8],
    length: u32,
    epoch: u64,
    group: Option<u32>,
    member: &MemberId,
    bulletin: &[u8],
) -> [u8; 8] {
    let mut hash = Sha256::new()
        .chain_update(key)
        .chain_update(length.to_le_bytes())
        .chain_update(epoch.to_le_bytes());
    if let Some(group) = group {
        hash.update(group.to_le_bytes());
    }
    let digest = hash
        .chain_update(member.as_bytes())
        .chain_update(bulletin)
        .finalize();
    first_eight(&digest)
}

/// Appends the record of `bulletin`, written by a write that starts at byte
/// `group`, in the current layout.
fn encode_record(
    out: &mut Vec<u8>,
    key: &[u8],
    epoch: u64,
    group: u32,
    member: &MemberId,
    bulletin: &SignedBulletin,
) {
    let bytes = bulletin.as_bytes();
    // A bulletin is at most MAX_BULLETIN_BYTES (256 KiB): the length fits.
    let length = u32::try_from(32 + bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&check(key, length, epoch, Some(group), member, bytes));
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(bytes);
}

/// What a journal file holds.
struct Parsed {
    epoch: u64,
    key: Vec<u8>,
    layout: Layout,
    /// The records of the epoch, oldest first.
    records: Vec<(SignedBulletin, MemberId)>,
    /// Where the next record goes.
    end: u64,
    /// Whole records of the epoch after the end, left by the last write when
    /// a crash tore it.
    left: usize,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// A whole record: its check holds.
struct Record<'a> {
    member: MemberId,
    signed: &'a [u8],
    /// Where its write started (`None` before the third layout).
    group: Option<u32>,
    /// Where the next record starts.
    next: usize,
}

/// The whole record of `epoch` at `at`, if there is one.
fn whole_record<'a>(
    bytes: &'a [u8],
    at: usize,
    epoch: u64,
    key: &[u8],
    layout: Layout,
) -> Option<Record<'a>> {
    let start = at.checked_add(layout.record_header())?;
    if start > bytes.len() || le_u64(bytes, at + 4) != epoch {
        return None;
    }
    let length = le_u32(bytes, at);
    let n = length as usize;
    if !(32..=MAX_RECORD).contains(&n) || start + n > bytes.len() {
        return None;
    }
    let group = (layout == Layout::Third).then(|| le_u32(bytes, at + 12));
    let mut member = [0u8; 32];
    member.copy_from_slice(&bytes[start..start + 32]);
    let member = MemberId::from_bytes(member);
    let signed = &bytes[start + 32..start + n];
    (bytes[start - 8..start] == check(key, length, epoch, group, &member, signed)).then_some(Record {
        member,
        signed,
        group,
        next: start + n,
    })
}

/// Reads a journal file: its header, then records of its epoch up to the
/// first that is not whole, which must be the end.
fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let size = bytes.len();
    let layout = match bytes.get(..8) {
        Some(m) if m == MAGIC => Layout::Third,
        Some(m) if m == MAGIC_V2 => Layout::Second,
        Some(m) if m == MAGIC_V1 => Layout::First,
        _ => return Err("it does not start with a journal header".into()),
    };
    if size < HEADER as usize + layout.record_header() + MAX_RECORD {
        return Err(format!(
            "it is {size} bytes long, too short for the largest bulletin"
        ));
    }
    let epoch = le_u64(bytes, 8);
    let key = match layout {
        Layout::First => {
            // A later header whose magic lost bits would read as a first
            // layout one with no record under its key: refuse that instead.
            if [MAGIC, MAGIC_V2]
                .iter()
                .any(|&m| bytes[24..32] == header_check(m, epoch, &bytes[16..24]))
            {
                return Err("its magic is damaged (a later header marked as the first layout)".into());
            }
            bytes[16..32].to_vec()
        }
        Layout::Second | Layout::Third => {
            let key = bytes[16..24].to_vec();
            let magic = if layout == Layout::Third { MAGIC } else { MAGIC_V2 };
            if bytes[24..32] != header_check(magic, epoch, &key) {
                return Err("its header's check fails (a changed epoch or key would make every record read as not written)".into());
            }
            key
        }
    };
    let mut records = Vec::new();
    let mut at = HEADER as usize;
    // The group of the record before: the next one starts a write of its own
    // (its group is its offset) or belongs to the same.
    let mut group = None;
    while let Some(record) = whole_record(bytes, at, epoch, &key, layout) {
        if let Some(g) = record.group {
            if g as usize != at && Some(g) != group {
                // Left from a torn write of this epoch that later writes
                // went over (or bytes that copy a record): not in sequence.
                break;
            }
            group = Some(g);
        }
        // Checked, so written whole by a Herald: a record that does not
        // decode is not a torn write.
        let bulletin = SignedBulletin::from_bytes(record.signed)
            .map_err(|e| format!("the record at byte {at} does not decode ({e})"))?;
        records.push((bulletin, record.member));
        at = record.next;
    }
    // A torn record belongs to the last write: nothing of the epoch written
    // after it follows. Whole records of that write may (a write of several
    // blocks reaches the disk in any order); a record of a later write, one
    // whose group starts after `at`, means damage. (Candidates are where the
    // epoch's bytes stand; few but records are.)
    let pattern = epoch.to_le_bytes();
    let mut left = 0;
    let later = bytes
        .get(at + 5..)
        .unwrap_or_default()
        .windows(8)
        .enumerate()
        .filter(|(_, window)| *window == pattern)
        .map(|(i, _)| at + 1 + i)
        .filter_map(|later| Some((later, whole_record(bytes, later, epoch, &key, layout)?.group)))
        .find(|&(_, g)| match g {
            Some(g) if g as usize <= at => {
                left += 1;
                false
            }
            _ => true,
        });
    if let Some((later, _)) = later {
        return Err(format!(
            "the record at byte {at} is not whole, but a record written after it at byte {later} is"
        ));
    }
    Ok(Parsed {
        epoch,
        key,
        layout,
        records,
        end: at as u64,
        left,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_network::one_member;

    fn signed(n: usize) -> Vec<(SignedBulletin, MemberId)> {
        let net = one_member();
        let member = net.member_id();
        net.chain(n as u64).into_iter().map(|b| (b, member)).collect()
    }

    /// Where each of `items` starts, written back to back from the header.
    fn record_starts(items: &[(SignedBulletin, MemberId)]) -> Vec<usize> {
        items
            .iter()
            .scan(HEADER as usize, |at, (b, _)| {
                let start = *at;
                *at += Journal::record_len(b);
                Some(start)
            })
            .collect()
    }

    /// A record in the layouts before the third (no group).
    fn encode_earlier(out: &mut Vec<u8>, key: &[u8], epoch: u64, member: &MemberId, bulletin: &[u8]) {
        let length = (32 + bulletin.len()) as u32;
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&epoch.to_le_bytes());
        out.extend_from_slice(&check(key, length, epoch, None, member, bulletin));
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(bulletin);
    }

    /// A journal file of an earlier layout, epoch 9, holding `items`.
    fn earlier_journal(dir: &Path, layout: Layout, items: &[(SignedBulletin, MemberId)]) {
        let mut bytes = vec![0u8; JOURNAL_BYTES as usize];
        let key: Vec<u8> = match layout {
            Layout::First => {
                bytes[..8].copy_from_slice(&MAGIC_V1);
                vec![0x5a; 16]
            }
            _ => {
                bytes[..8].copy_from_slice(&MAGIC_V2);
                bytes[24..32].copy_from_slice(&header_check(MAGIC_V2, 9, &[0x5a; KEY]));
                vec![0x5a; KEY]
            }
        };
        bytes[8..16].copy_from_slice(&9u64.to_le_bytes());
        bytes[16..16 + key.len()].copy_from_slice(&key);
        let mut records = Vec::new();
        for (bulletin, member) in items {
            encode_earlier(&mut records, &key, 9, member, bulletin.as_bytes());
        }
        bytes[HEADER as usize..HEADER as usize + records.len()].copy_from_slice(&records);
        std::fs::write(dir.join(FILE_NAME), &bytes).unwrap();
    }

    fn reopen(dir: &Path) -> (Journal, Vec<(SignedBulletin, MemberId)>) {
        Journal::open(dir).unwrap()
    }

    /// A journal in a new folder, with `items` appended.
    fn journal_with(items: &[(SignedBulletin, MemberId)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = reopen(dir.path());
        if !items.is_empty() {
            j.append(items).unwrap();
        }
        dir
    }

    /// Changes the journal file in `dir` in place.
    fn rewrite(dir: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let path = dir.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        change(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
    }

    /// Opens the journal, written through the page cache if `buffered`.
    fn reopen_as(dir: &Path, buffered: bool) -> (Journal, Vec<(SignedBulletin, MemberId)>) {
        let (mut j, held) = reopen(dir);
        if buffered {
            j.direct = None;
        }
        (j, held)
    }

    #[test]
    fn records_survive_a_reopen_and_an_epoch_ends_them() {
        // Direct I/O where the temporary folder's file system allows it, and
        // the page cache in any case.
        for buffered in [false, true] {
            records_survive(buffered);
        }
    }

    fn records_survive(buffered: bool) {
        let dir = tempfile::tempdir().unwrap();
        let items = signed(3);
        let (mut j, held) = reopen_as(dir.path(), buffered);
        if !buffered && j.direct.is_none() {
            eprintln!(
                "direct I/O is refused in {}: the journal tests use the page cache only",
                dir.path().display()
            );
        }
        assert!(held.is_empty());
        j.append(&items[..2]).unwrap();
        j.append(&items[2..]).unwrap();
        let key = items[0].0.body().signer;
        assert_eq!(j.tip(&key), Some((Seq(3), items[2].0.id())));
        assert_eq!(j.records().unwrap(), items);
        drop(j);

        let (mut j, held) = reopen_as(dir.path(), buffered);
        assert_eq!(held, items);
        assert_eq!(j.tip(&key), Some((Seq(3), items[2].0.id())));
        j.start_epoch().unwrap();
        // Settled, not forgotten: numbering goes on from it.
        assert_eq!(j.tip(&key), Some((Seq(3), items[2].0.id())));
        // The first record of the new epoch lands over the old first record.
        j.append(&items[2..]).unwrap();
        drop(j);
        let (_, held) = reopen(dir.path());
        assert_eq!(held, items[2..].to_vec());
    }

    #[test]
    fn a_new_journal_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = journal_with(&signed(1));
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_last_record_is_the_end() {
        let items = signed(2);
        let dir = journal_with(&items);
        let second = HEADER as usize + Journal::record_len(&items[0].0);
        // Half of the second record reached the disk: its check fails.
        let torn = second + Journal::record_len(&items[1].0) / 2;
        rewrite(dir.path(), |b| {
            b[torn..second + Journal::record_len(&items[1].0)].fill(0)
        });
        let (mut j, held) = reopen(dir.path());
        assert_eq!(held, items[..1].to_vec());
        // The next record replaces the torn one.
        j.append(&items[1..]).unwrap();
        drop(j);
        assert_eq!(reopen(dir.path()).1, items);
    }

    /// Records across block boundaries, appended one by one and in groups,
    /// read back whole; then a new epoch and more, in both ways of writing.
    #[test]
    fn records_across_blocks_read_back_whole() {
        let net = one_member();
        let member = net.member_id();
        // About 400 bytes each: a block boundary every ten records or so.
        let items: Vec<_> = net.chain(40).into_iter().map(|b| (b, member)).collect();
        for buffered in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = reopen_as(dir.path(), buffered);
            for group in items[..25].chunks(3) {
                j.append(group).unwrap();
            }
            assert_eq!(j.records().unwrap(), items[..25].to_vec());
            drop(j);
            let (mut j, held) = reopen_as(dir.path(), buffered);
            assert_eq!(held, items[..25].to_vec());
            j.append(&items[25..]).unwrap();
            assert_eq!(reopen(dir.path()).1, items);
            j.start_epoch().unwrap();
            j.append(&items[..1]).unwrap();
            j.append(&items[1..2]).unwrap();
            drop(j);
            assert_eq!(reopen(dir.path()).1, items[..2].to_vec());
        }
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"not a journal").unwrap();
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("moved aside"), "{err}");
        // Nor is a file larger than any journal read.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_FILE + 1)
            .unwrap();
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("larger than any journal"), "{err}");
    }

    #[test]
    fn a_checked_record_that_does_not_decode_is_refused() {
        let member = signed(1)[0].1;
        let dir = journal_with(&[]);
        rewrite(dir.path(), |bytes| {
            let key = bytes[16..24].to_vec();
            let junk = b"not a bulletin";
            let length = (32 + junk.len()) as u32;
            let group = HEADER as u32;
            let mut record = Vec::new();
            record.extend_from_slice(&length.to_le_bytes());
            record.extend_from_slice(&1u64.to_le_bytes());
            record.extend_from_slice(&group.to_le_bytes());
            record.extend_from_slice(&check(&key, length, 1, Some(group), &member, junk));
            record.extend_from_slice(member.as_bytes());
            record.extend_from_slice(junk);
            bytes[HEADER as usize..HEADER as usize + record.len()].copy_from_slice(&record);
        });
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not decode"), "{err}");
    }

    #[test]
    fn the_layout_is_as_documented() {
        let items = signed(1);
        let (bulletin, member) = &items[0];
        let key = [0xab; KEY];
        let mut out = Vec::new();
        encode_record(&mut out, &key, 7, 4096, member, bulletin);
        let n = 32 + bulletin.as_bytes().len();
        assert_eq!(out.len(), RECORD_HEADER + n);
        assert_eq!(out[..4], (n as u32).to_le_bytes());
        assert_eq!(out[4..12], 7u64.to_le_bytes());
        assert_eq!(out[12..16], 4096u32.to_le_bytes());
        let digest = Sha256::digest([&key[..], &out[..16], member.as_bytes(), bulletin.as_bytes()].concat());
        assert_eq!(out[16..24], digest[..8]);
        assert_eq!(&out[24..56], member.as_bytes());
        assert_eq!(&out[56..], bulletin.as_bytes());
        // As printed in docs/PROTOCOL.md, section 12B.
        assert_eq!(
            hex::encode(header(7, &key)),
            "48524c444a4e4c330700000000000000abababababababab004141ccfd9f4a23"
        );
        // A pinned record head: the test network's first bulletin (fixed
        // seeds) for member 0x01 x 32, in epoch 7 under key 0xab x 8, in a
        // write that starts at byte 32.
        let mut fixed = Vec::new();
        encode_record(&mut fixed, &key, 7, 32, &MemberId::from_bytes([1; 32]), bulletin);
        assert_eq!(
            hex::encode(&fixed[..24]),
            "0801000007000000000000002000000027cf8b72f303cf82"
        );
    }

    /// Starting an epoch changes the header and nothing else, so a crash
    /// that tears that write leaves either epoch whole: the old one (the
    /// file as it was, read again) or the new one, empty.
    #[test]
    fn an_epoch_start_changes_only_the_header() {
        for buffered in [false, true] {
            let items = signed(3);
            let dir = journal_with(&items);
            let before = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
            let (mut j, held) = reopen_as(dir.path(), buffered);
            if !buffered && j.direct.is_none() {
                eprintln!("direct I/O is refused here: only the page cache path is tested");
            }
            assert_eq!(held, items);
            j.start_epoch().unwrap();
            drop(j);
            let after = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
            assert_ne!(after[..HEADER as usize], before[..HEADER as usize]);
            assert!(
                after[HEADER as usize..] == before[HEADER as usize..],
                "buffered: {buffered}"
            );
            assert!(reopen(dir.path()).1.is_empty());
            // Torn with the old header kept: the old epoch, whole.
            rewrite(dir.path(), |b| {
                b[..HEADER as usize].copy_from_slice(&before[..HEADER as usize])
            });
            assert_eq!(reopen(dir.path()).1, items);
        }
    }

    /// A changed epoch or key in the header would make every record fail its
    /// check and the journal read as empty: the header's own check refuses it.
    #[test]
    fn a_damaged_header_is_refused() {
        let items = signed(2);
        let dir = journal_with(&items);
        // A byte of the epoch, of the key, of the header's check.
        for at in [8, 17, 30] {
            rewrite(dir.path(), |b| b[at] ^= 4);
            let err = Journal::open(dir.path()).unwrap_err().to_string();
            assert!(err.contains("header's check fails"), "byte {at}: {err}");
            rewrite(dir.path(), |b| b[at] ^= 4);
        }
        assert_eq!(reopen(dir.path()).1, items);
    }

    /// A later header (current, or of the second layout) whose magic reads
    /// as the first layout's is refused, not read as a first-layout journal
    /// with no records.
    #[test]
    fn a_later_header_marked_as_the_first_layout_is_refused() {
        let items = signed(1);
        let current = journal_with(&items);
        let second = tempfile::tempdir().unwrap();
        earlier_journal(second.path(), Layout::Second, &items);
        for dir in [current.path(), second.path()] {
            rewrite(dir, |b| b[..8].copy_from_slice(&MAGIC_V1));
            let err = Journal::open(dir).unwrap_err().to_string();
            assert!(err.contains("magic is damaged"), "{err}");
        }
    }

    /// A journal in an earlier layout is read as it is; its next epoch, in
    /// the current layout, starts at once if it holds nothing, and otherwise
    /// once the store holds its records (nothing is appended in between).
    #[test]
    fn journals_of_earlier_layouts_are_read() {
        for layout in [Layout::First, Layout::Second] {
            let dir = tempfile::tempdir().unwrap();
            let items = signed(3);
            earlier_journal(dir.path(), layout, &items[..2]);
            let (mut j, held) = reopen(dir.path());
            assert_eq!(held, items[..2].to_vec(), "{layout:?}");
            assert!(j.needs_new_epoch());
            let err = j.append(&items[2..]).unwrap_err().to_string();
            assert!(err.contains("earlier layout"), "{err}");
            j.start_epoch().unwrap();
            j.append(&items[2..]).unwrap();
            drop(j);
            let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
            assert_eq!(bytes[..8], MAGIC);
            assert_eq!(bytes[8..16], 10u64.to_le_bytes());
            assert_eq!(reopen(dir.path()).1, items[2..].to_vec(), "{layout:?}");

            // Empty: the current layout from the open on.
            earlier_journal(dir.path(), layout, &[]);
            let (mut j, held) = reopen(dir.path());
            assert!(held.is_empty() && !j.needs_new_epoch());
            j.append(&items[..1]).unwrap();
            drop(j);
            assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap()[..8], MAGIC);
            assert_eq!(reopen(dir.path()).1, items[..1].to_vec(), "{layout:?}");
        }
    }

    /// A damaged record followed by a whole one of a later write is damage,
    /// not the end: the later write was acknowledged, so was the damaged one.
    #[test]
    fn a_damaged_record_before_a_later_write_is_refused() {
        let items = signed(3);
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = reopen(dir.path());
        for item in &items {
            j.append(std::slice::from_ref(item)).unwrap();
        }
        drop(j);
        // A byte of the second record's bulletin changes.
        let second = HEADER as usize + Journal::record_len(&items[0].0);
        rewrite(dir.path(), |b| b[second + RECORD_HEADER + 40] ^= 1);
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("record at byte {second} is not whole")),
            "{err}"
        );
        // Damage to the last record alone reads as a torn write: the end.
        let third = second + Journal::record_len(&items[1].0);
        rewrite(dir.path(), |b| {
            b[second + RECORD_HEADER + 40] ^= 1;
            b[third + RECORD_HEADER + 40] ^= 1;
        });
        assert_eq!(reopen(dir.path()).1, items[..2].to_vec());
    }

    /// A write of several blocks torn by a crash: some of its blocks reached
    /// the disk and some did not, so whole records of it follow a torn one.
    /// That is the end, not damage: the records before the tear are read,
    /// the rest are left, and later writes go over them. A tear in an
    /// earlier write, with a later write whole, stays damage.
    #[test]
    fn a_write_torn_across_blocks_is_the_end() {
        let net = one_member();
        let member = net.member_id();
        // About 300 bytes each: the second write spans blocks 0 to 3.
        let items: Vec<_> = net.chain(60).into_iter().map(|b| (b, member)).collect();
        for buffered in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = reopen_as(dir.path(), buffered);
            j.append(&items[..2]).unwrap();
            let second_write = j.end as usize;
            j.append(&items[2..50]).unwrap();
            let end = j.end as usize;
            drop(j);
            assert!(end > 3 * BLOCK);
            let written = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
            let starts = record_starts(&items[..50]);
            // Block 1 never reached the disk (zeros, as the file was made).
            rewrite(dir.path(), |b| b[BLOCK..2 * BLOCK].fill(0));
            let torn = starts
                .iter()
                .position(|&s| s + Journal::record_len(&items[0].0) > BLOCK)
                .unwrap();
            let (mut j, held) = reopen_as(dir.path(), buffered);
            assert_eq!(held, items[..torn].to_vec(), "buffered: {buffered}");
            assert_eq!(j.end as usize, starts[torn]);
            // Nothing goes after the leftovers: the store starts the next
            // epoch once it holds the records before the tear.
            assert!(j.needs_new_epoch());
            let err = j.append(&items[torn..torn + 1]).unwrap_err().to_string();
            assert!(err.contains("leftovers"), "{err}");
            drop(j);
            let leftovers = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
            let (mut j, _) = reopen_as(dir.path(), buffered);
            j.start_epoch().unwrap();
            j.append(&items[torn..torn + 2]).unwrap();
            drop(j);
            assert_eq!(reopen(dir.path()).1, items[torn..torn + 2].to_vec());

            // Were a write to go after the leftovers in their epoch, up to a
            // record the tear left whole (in block 2), that record would
            // not be read after it: its group is neither its own offset nor
            // that of the write before.
            std::fs::write(dir.path().join(FILE_NAME), &leftovers).unwrap();
            let (mut j, _) = reopen_as(dir.path(), buffered);
            j.torn = false;
            let k = starts.iter().position(|&s| s >= 2 * BLOCK).unwrap();
            j.append(&items[torn..k]).unwrap();
            drop(j);
            let (mut j, held) = reopen_as(dir.path(), buffered);
            assert_eq!(held, items[..k].to_vec(), "buffered: {buffered}");
            j.torn = false;
            j.append(&items[k..k + 2]).unwrap();
            drop(j);
            assert_eq!(reopen(dir.path()).1, items[..k + 2].to_vec());

            // A tear in the first write under a whole second one: damage.
            std::fs::write(dir.path().join(FILE_NAME), &written).unwrap();
            assert_eq!(reopen(dir.path()).1, items[..50].to_vec());
            let first_bulletin = HEADER as usize + RECORD_HEADER + 40;
            rewrite(dir.path(), |b| b[first_bulletin] ^= 1);
            let err = Journal::open(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&format!("byte {second_write} is")), "{err}");
        }
    }

    /// A write torn at its first record, with whole records of it after: the
    /// journal reads as empty and starts its next epoch as it opens, so the
    /// next write, at the same offset, cannot take the leftovers in as its
    /// own (their group is its group).
    #[test]
    fn a_write_torn_at_its_first_record_starts_a_new_epoch() {
        let net = one_member();
        let member = net.member_id();
        let items: Vec<_> = net.chain(30).into_iter().map(|b| (b, member)).collect();
        for buffered in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = reopen_as(dir.path(), buffered);
            j.append(&items).unwrap();
            drop(j);
            // Block 0 never reached the disk: the header, then zeros.
            rewrite(dir.path(), |b| b[HEADER as usize..BLOCK].fill(0));
            let (mut j, held) = reopen_as(dir.path(), buffered);
            assert!(held.is_empty() && !j.needs_new_epoch());
            assert_eq!(j.epoch, 2, "buffered: {buffered}");
            // A smaller write at byte 32 that ends where a leftover starts.
            let mut k = 0;
            let mut at = HEADER as usize;
            while at < BLOCK {
                at += Journal::record_len(&items[k].0);
                k += 1;
            }
            j.append(&items[..k]).unwrap();
            drop(j);
            assert_eq!(reopen(dir.path()).1, items[..k].to_vec(), "buffered: {buffered}");
        }
    }

    /// Crashes at random moments: a write under way reaches the disk as any
    /// subset of its 512-byte sectors (the rest keep their old bytes). The
    /// journal always opens, returns every record acknowledged in its epoch
    /// and at most a prefix of the torn write after them, and never a record
    /// that was not written or was not acknowledged out of order; writes go
    /// on after each crash as the store makes them (a new epoch once it holds
    /// what was read). Groups of 1 to 24 records of about 300 bytes: up to
    /// three blocks per write.
    #[test]
    fn random_crashes_lose_nothing_acknowledged_and_read_nothing_unwritten() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let net = one_member();
        let member = net.member_id();
        let items: Vec<_> = net.chain(1_500).into_iter().map(|b| (b, member)).collect();
        let mut rng = StdRng::seed_from_u64(20_261_127);
        let mut crashes = 0;
        let mut torn_groups = 0;
        for trial in 0..24 {
            let buffered = trial % 2 == 1;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            let (mut j, _) = reopen_as(dir.path(), buffered);
            // Items of the current epoch acknowledged so far, and the next
            // item never written (a torn write's items are not used again).
            let mut acked: Vec<usize> = Vec::new();
            let mut next = 0;
            for step in 0..30 {
                let n = rng.random_range(1..=24).min(items.len() - next);
                if n == 0 {
                    break;
                }
                let group = next..next + n;
                next += n;
                if !rng.random_bool(0.3) {
                    j.append(&items[group.clone()]).unwrap();
                    acked.extend(group);
                    continue;
                }
                crashes += 1;
                let before = std::fs::read(&path).unwrap();
                j.append(&items[group.clone()]).unwrap();
                drop(j);
                let mut bytes = std::fs::read(&path).unwrap();
                for (sector, old) in bytes.chunks_mut(512).zip(before.chunks(512)) {
                    if sector != old && rng.random_bool(0.5) {
                        sector.copy_from_slice(old);
                    }
                }
                std::fs::write(&path, &bytes).unwrap();
                let (mut reopened, held) = match Journal::open(dir.path()) {
                    Ok(opened) => opened,
                    Err(e) => panic!("trial {trial}, step {step}: {e}"),
                };
                if buffered {
                    reopened.direct = None;
                }
                let expected: Vec<_> = acked.iter().map(|&i| items[i].clone()).collect();
                assert!(
                    held.len() >= expected.len() && held[..expected.len()] == expected[..],
                    "trial {trial}, step {step}: an acknowledged record is missing"
                );
                let kept = held.len() - expected.len();
                assert!(kept <= n, "trial {trial}, step {step}");
                assert_eq!(
                    held[expected.len()..],
                    items[group.start..group.start + kept],
                    "trial {trial}, step {step}: not a prefix of the torn write"
                );
                if kept < n {
                    torn_groups += 1;
                }
                // As the store does: it holds what was read, then starts the
                // next epoch (the journal did so itself if it read nothing).
                if !held.is_empty() {
                    reopened.start_epoch().unwrap();
                }
                assert!(!reopened.needs_new_epoch());
                acked.clear();
                j = reopened;
            }
            drop(j);
            let held = reopen(dir.path()).1;
            let expected: Vec<_> = acked.iter().map(|&i| items[i].clone()).collect();
            assert_eq!(held, expected, "trial {trial}: after the last write");
        }
        assert!(
            crashes > 100 && torn_groups > 50,
            "{crashes} crashes, {torn_groups} torn"
        );
    }

    /// Random damage (bytes changed, zeroed, cut short, garbage written after
    /// the end) never makes the reader panic or return a record that was not
    /// written: what it returns is the first records as written (or, where a
    /// whole record was copied elsewhere, written records), a changed record
    /// is never among them, and damage past the last record changes nothing.
    #[test]
    fn random_damage_never_reads_a_record_that_was_not_written() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let dir = tempfile::tempdir().unwrap();
        let items = signed(4);
        let (mut j, _) = reopen(dir.path());
        j.append(&items[..1]).unwrap();
        j.append(&items[1..]).unwrap();
        let end = j.end as usize;
        drop(j);
        // The records, then zeros: a block more than the smallest file the
        // reader takes.
        let smallest = HEADER as usize + RECORD_HEADER + MAX_RECORD;
        let mut written = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        written.truncate(smallest + BLOCK);
        let first_changed = |bytes: &[u8]| written.iter().zip(bytes).position(|(a, b)| a != b);
        let starts = record_starts(&items);

        let mut rng = StdRng::seed_from_u64(20_261_126);
        for round in 0..1500 {
            let mut bytes = written.clone();
            match round % 5 {
                // A few bytes changed anywhere in the header and records.
                0 => {
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(0..end);
                        bytes[at] ^= rng.random_range(1..=255u8);
                    }
                }
                // A stretch zeroed, as a lost write leaves it.
                1 => {
                    let at = rng.random_range(HEADER as usize..end);
                    let n = rng.random_range(1..600).min(end - at);
                    bytes[at..at + n].fill(0);
                }
                // Cut short: anywhere, or within the zeros after the records.
                2 if round % 2 == 0 => bytes.truncate(rng.random_range(0..bytes.len())),
                2 => bytes.truncate(rng.random_range(smallest..bytes.len())),
                // Garbage after the last record, some of it shaped like one.
                3 => {
                    let at = rng.random_range(end..end + 2000);
                    let n = rng.random_range(1..600);
                    rng.fill(&mut bytes[at..at + n]);
                    bytes[at + 4..at + 12].copy_from_slice(&written[8..16]);
                }
                // The first record copied over a later place, on a record's
                // start every other time (its check holds anywhere).
                _ => {
                    let from = HEADER as usize;
                    let n = Journal::record_len(&items[0].0);
                    let to = if round % 2 == 0 {
                        starts[rng.random_range(1..starts.len())]
                    } else {
                        from + n + rng.random_range(0..end - from - n)
                    };
                    let copy = written[from..from + n].to_vec();
                    bytes[to..to + n].copy_from_slice(&copy);
                }
            }
            let Ok(parsed) = parse(&bytes) else {
                continue;
            };
            let k = parsed.records.len();
            if round % 5 == 4 {
                // A copy of a written record reads as that record again
                // (stored once: the store finds it held); nothing else.
                assert!(parsed.records.iter().all(|r| items.contains(r)), "round {round}");
                continue;
            }
            assert!(k <= items.len(), "round {round}");
            assert_eq!(parsed.records, items[..k].to_vec(), "round {round}");
            if bytes.len() < written.len() && bytes.len() >= end {
                assert_eq!(k, items.len(), "round {round}: cut after the end");
            }
            if let Some(changed) = first_changed(&bytes) {
                if changed >= end && bytes.len() == written.len() {
                    assert_eq!(k, items.len(), "round {round}: damage after the end");
                }
                if (HEADER as usize..end).contains(&changed) {
                    assert!(k < items.len(), "round {round}: a changed record was read");
                }
            }
        }
    }
}
