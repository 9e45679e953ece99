//! Bundles: self-contained files of bulletins and the registry history that
//! verifies them, for carrying by hand when no network path exists.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic            8   "HRLDBNDL"
//! version          2   1
//! network         32   the network id
//! registry count   4   u32
//! bulletin count   8   u64
//! registry count × (u32 length, signed registry update), genesis first
//! bulletin count × (u32 length, signed bulletin)
//! checksum        32   SHA-256 of everything above
//! ```
//!
//! Import reads the file twice: first it checks the structure, every length
//! against its limit, and the checksum, writing nothing; then it verifies every
//! item exactly as if it came from the network and stores what is valid. A
//! damaged or truncated file is refused whole before anything is written.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, mpsc};

use herald_keys::{Applied, Registry, RegistryError};
use herald_protocol::{
    MAX_BULLETIN_BYTES, MAX_REGISTRY_UPDATE_BYTES, MemberId, NetworkId, SignedBulletin, SignedRegistryUpdate,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Query, Store, StoreError, Stored};

/// First bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"HRLDBNDL";
/// The bundle format this node writes and reads.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 8 + 2 + 32 + 4 + 8;
/// Bulletins per group: one store batch (and, offline, one flush) each.
const GROUP: usize = 1000;
/// A group ends early at this many bytes, so that groups of large bulletins stay small.
const GROUP_BYTES: usize = 4 << 20;
/// Most groups read ahead of the store during an import.
const MAX_GROUPS_IN_FLIGHT: usize = 16;
/// Progress is reported every this many bulletins.
const PROGRESS_EVERY: u64 = 10_000;

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a bundle, or a damaged one: nothing was imported.
    #[error("{path}: {reason}; nothing was imported")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// A bundle of another network.
    #[error("{path}: the bundle is for network {found}, this node is on {expected}; nothing was imported")]
    WrongNetwork {
        /// The file.
        path: PathBuf,
        /// This node's network.
        expected: NetworkId,
        /// The bundle's.
        found: NetworkId,
    },
    /// The file to write exists, and replacing it was not asked for.
    #[error("{0} exists: name another file, or replace it (herald export --force)")]
    Exists(PathBuf),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which bulletins to export.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportFilter {
    /// Created at or after (ms since the epoch).
    pub since: Option<u64>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this member.
    pub member: Option<MemberId>,
    /// Came to this node at or after (ms since the epoch, its clock),
    /// whenever made.
    #[serde(default)]
    pub arrived_since: Option<u64>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportReport {
    /// Registry updates.
    pub registry_updates: u32,
    /// Bulletins.
    pub bulletins: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Registry updates applied.
    pub registry_applied: u32,
    /// Registry updates already held.
    pub registry_held: u32,
    /// New bulletins stored.
    pub new: u64,
    /// Bulletins already held.
    pub already_held: u64,
    /// Bulletins stored as equivocation evidence.
    pub equivocations: u64,
    /// Items refused, with the reason: (position in the bundle, reason).
    pub rejected: Vec<(u64, String)>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A writer that hashes what passes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a bundle of the bulletins matching `filter`, with the whole registry
/// history, to `path` (atomically: a temporary file renamed into place),
/// replacing any file there.
pub fn export(
    path: &Path,
    store: &Store,
    registry: &Registry,
    filter: &ExportFilter,
    progress: impl FnMut(u64, u64),
) -> Result<ExportReport, BundleError> {
    export_to(path, Replace::Yes, store, registry, filter, progress)
}

/// Whether an export may replace a file already at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Replace it.
    Yes,
    /// Refuse ([`BundleError::Exists`]), leaving it as it was.
    No,
}

/// [`export`], replacing a file already at `path` only if `replace` says so.
pub fn export_to(
    path: &Path,
    replace: Replace,
    store: &Store,
    registry: &Registry,
    filter: &ExportFilter,
    progress: impl FnMut(u64, u64),
) -> Result<ExportReport, BundleError> {
    if replace == Replace::No && path.exists() {
        // Checked again as the file is put in place; this spares the work.
        return Err(BundleError::Exists(path.to_path_buf()));
    }
    let query = Query {
        kind: filter.kind.clone(),
        member: filter.member,
        since: filter.since.map(herald_protocol::Timestamp),
        arrived_since: filter.arrived_since.map(herald_protocol::Timestamp),
        ..Query::default()
    };
    // Chain order, so a reader can check each chain as it goes; the ids
    // first, then each bulletin read as it is written, so that an export of
    // millions holds one at a time.
    let ids = store.export_ids(&query)?;
    let items = ids.iter().map(|id| match store.get_bytes(id) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(BundleError::Store(crate::store::StoreError::Corrupt(format!(
            "bulletin {id} is indexed but not held"
        )))),
        Err(e) => Err(e.into()),
    });
    write_items(
        path,
        replace,
        registry.network(),
        registry.history(),
        ids.len() as u64,
        items,
        progress,
    )
}

/// Writes a bundle of `history` (genesis first) and the given signed bulletin
/// bytes, in that order, to `path` (atomically: a temporary file renamed into
/// place). Nothing is checked here: importers verify every item.
pub fn write(
    path: &Path,
    network: NetworkId,
    history: &[SignedRegistryUpdate],
    bulletins: &[&[u8]],
    progress: impl FnMut(u64, u64),
) -> Result<ExportReport, BundleError> {
    let items = bulletins.iter().map(|b| Ok(b.to_vec()));
    write_items(
        path,
        Replace::Yes,
        network,
        history,
        bulletins.len() as u64,
        items,
        progress,
    )
}

/// Moves the written file `tmp` to `path`. Without [`Replace::Yes`] a file at
/// `path` is left as it is (`AlreadyExists`): `tmp` is linked to `path`, which
/// fails if it exists; where the file system has no links (FAT on a USB
/// stick), `path` is checked and `tmp` renamed.
fn put_in_place(tmp: &Path, path: &Path, replace: Replace) -> std::io::Result<()> {
    if replace == Replace::Yes {
        return std::fs::rename(tmp, path);
    }
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if path.exists() => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(tmp, path),
    }
}

/// [`write`] from `count` bulletins that `items` yields one at a time. An
/// error from `items`, or a count that does not match, leaves no file.
fn write_items(
    path: &Path,
    replace: Replace,
    network: NetworkId,
    history: &[SignedRegistryUpdate],
    count: u64,
    items: impl Iterator<Item = Result<Vec<u8>, BundleError>>,
    mut progress: impl FnMut(u64, u64),
) -> Result<ExportReport, BundleError> {
    let io = io_error(path);
    // A name of its own, so that two exports to one path at once (through
    // the API) never share it, nor one a crashed export left behind.
    let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let created = std::cell::Cell::new(false);
    let result = (|| -> Result<ExportReport, BundleError> {
        // A new file: one left at that name (or a link planted there) is
        // neither followed nor emptied. It holds bulletins: its owner's only.
        let file = crate::owner_only::write_options()
            .create_new(true)
            .open(&tmp)
            .map_err(&io)?;
        created.set(true);
        let mut out = Hashing {
            inner: BufWriter::new(file),
            hasher: Sha256::new(),
            written: 0,
        };
        out.write_all(MAGIC).map_err(&io)?;
        out.write_all(&VERSION.to_le_bytes()).map_err(&io)?;
        out.write_all(network.as_bytes()).map_err(&io)?;
        out.write_all(&(history.len() as u32).to_le_bytes())
            .map_err(&io)?;
        out.write_all(&count.to_le_bytes()).map_err(&io)?;
        for update in history {
            let bytes = update.to_bytes();
            out.write_all(&(bytes.len() as u32).to_le_bytes()).map_err(&io)?;
            out.write_all(&bytes).map_err(&io)?;
        }
        let total = count;
        let mut written_items = 0u64;
        for bytes in items {
            let bytes = bytes?;
            if written_items == count {
                break;
            }
            out.write_all(&(bytes.len() as u32).to_le_bytes()).map_err(&io)?;
            out.write_all(&bytes).map_err(&io)?;
            written_items += 1;
            if written_items.is_multiple_of(PROGRESS_EVERY) {
                progress(written_items, total);
            }
        }
        if written_items != count {
            return Err(BundleError::Store(crate::store::StoreError::Corrupt(format!(
                "{written_items} bulletins to write where {count} were counted"
            ))));
        }
        let checksum = out.hasher.clone().finalize();
        out.write_all(&checksum).map_err(&io)?;
        let written = out.written;
        let file = out.inner.into_inner().map_err(|e| BundleError::Io {
            path: path.to_path_buf(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(&io)?;
        put_in_place(&tmp, path, replace).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BundleError::Exists(path.to_path_buf()),
            _ => io(e),
        })?;
        // The new name on disk too (best effort: not every system can sync a
        // folder).
        if let Some(parent) = path.parent()
            && let Ok(folder) = File::open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
        {
            let _ = folder.sync_all();
        }
        Ok(ExportReport {
            registry_updates: history.len() as u32,
            bulletins: total,
            bytes: written,
        })
    })();
    if result.is_err() && created.get() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A bundle reader that checks every length against its limit.
pub(crate) struct Frames<R: Read> {
    inner: R,
    hasher: Sha256,
    offset: u64,
    path: PathBuf,
}

impl<R: Read> Frames<R> {
    fn damaged(&self, reason: String) -> BundleError {
        BundleError::Damaged {
            path: self.path.clone(),
            reason: format!("{reason} (at byte {})", self.offset),
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), BundleError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.hasher.update(&*buf);
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.damaged("the bundle is truncated".into()))
            }
            Err(source) => Err(BundleError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub(crate) fn header(&mut self) -> Result<(NetworkId, u32, u64), BundleError> {
        let mut h = [0u8; HEADER_LEN];
        self.exact(&mut h)?;
        if &h[..8] != MAGIC {
            return Err(self.damaged("not a Herald bundle".into()));
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != VERSION {
            return Err(self.damaged(format!(
                "bundle version {version} is not supported; upgrade Herald"
            )));
        }
        let mut network = [0u8; 32];
        network.copy_from_slice(&h[10..42]);
        let registry = u32::from_le_bytes([h[42], h[43], h[44], h[45]]);
        let mut count = [0u8; 8];
        count.copy_from_slice(&h[46..54]);
        Ok((
            NetworkId::from_bytes(network),
            registry,
            u64::from_le_bytes(count),
        ))
    }

    pub(crate) fn frame(&mut self, max: usize, what: &str) -> Result<Vec<u8>, BundleError> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(self.damaged(format!("a {what} of {len} bytes is over the {max}-byte limit")));
        }
        let mut buf = vec![0u8; len];
        self.exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads the trailer and checks it, and that nothing follows.
    fn finish(mut self) -> Result<(), BundleError> {
        let expected = self.hasher.clone().finalize();
        let mut trailer = [0u8; 32];
        match self.inner.read_exact(&mut trailer) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(self.damaged("the bundle is truncated before its checksum".into()));
            }
            Err(source) => {
                return Err(BundleError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        if trailer[..] != expected[..] {
            return Err(self.damaged("checksum mismatch: the bundle was damaged or altered".into()));
        }
        let mut extra = [0u8; 1];
        match self.inner.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(self.damaged("unexpected bytes after the checksum".into())),
            Err(source) => Err(BundleError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

pub(crate) fn open(path: &Path) -> Result<Frames<BufReader<File>>, BundleError> {
    let file = File::open(path).map_err(io_error(path))?;
    Ok(Frames {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
        offset: 0,
        path: path.to_path_buf(),
    })
}

/// Checks a bundle's structure, limits and checksum without keeping or
/// writing anything. Returns the counts from its header.
pub fn check(path: &Path, network: NetworkId) -> Result<(u32, u64), BundleError> {
    let mut frames = open(path)?;
    let (found, registry, bulletins) = frames.header()?;
    if found != network {
        return Err(BundleError::WrongNetwork {
            path: path.to_path_buf(),
            expected: network,
            found,
        });
    }
    for _ in 0..registry {
        frames.frame(MAX_REGISTRY_UPDATE_BYTES, "registry update")?;
    }
    for _ in 0..bulletins {
        frames.frame(MAX_BULLETIN_BYTES, "bulletin")?;
    }
    frames.finish()?;
    Ok((registry, bulletins))
}

/// Where verified bulletins go: the store directly, or a running node's writer.
pub type Sink<'a> = dyn FnMut(Vec<(SignedBulletin, MemberId)>) -> Result<Vec<Stored>, StoreError> + 'a;

/// Imports a bundle: checks it whole first, then applies the registry updates
/// it carries (saving each in `store`) and verifies and stores its bulletins
/// through `sink`. Importing the same bundle twice changes nothing.
pub fn import(
    path: &Path,
    store: &Store,
    registry: &RwLock<Registry>,
    sink: &mut Sink<'_>,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImportReport, BundleError> {
    let network = registry.read().unwrap_or_else(|e| e.into_inner()).network();
    let (registry_count, bulletin_count) = check(path, network)?;
    let mut frames = open(path)?;
    frames.header()?;
    let mut report = ImportReport::default();
    let mut updates = Vec::new();
    for i in 0..registry_count {
        let bytes = frames.frame(MAX_REGISTRY_UPDATE_BYTES, "registry update")?;
        match SignedRegistryUpdate::from_bytes(&bytes) {
            Ok(update) => updates.push((i, update)),
            Err(e) => report
                .rejected
                .push((u64::from(i), format!("registry update: {e}"))),
        }
    }
    let mut next = 0;
    while let Some((i, update)) = updates.get(next) {
        next += 1;
        match crate::validate::apply_registry_update(registry, store, update.clone())? {
            Ok(Applied::Advanced(_) | Applied::Switched { .. }) => report.registry_applied += 1,
            Ok(Applied::AlreadyHeld) => report.registry_held += 1,
            // The bundle's history parts from this node's here: the rest of
            // it is the other branch, judged whole by the branch rule (the
            // file may be how the two sides of a partition meet).
            Err(e @ RegistryError::Fork { .. }) => {
                let branch: Vec<SignedRegistryUpdate> =
                    updates[next - 1..].iter().map(|(_, u)| u.clone()).collect();
                match crate::validate::adopt_registry_branch(registry, store, branch)? {
                    // Taken as far as it was valid: what follows is refused
                    // one by one.
                    Ok(Applied::Switched { from, to, .. }) => {
                        let taken = to.0.saturating_sub(from.0);
                        report.registry_applied += 1 + taken as u32;
                        next += taken as usize;
                    }
                    _ => report
                        .rejected
                        .push((u64::from(*i), format!("registry update: {e}"))),
                }
            }
            Err(e) => report
                .rejected
                .push((u64::from(*i), format!("registry update: {e}"))),
        }
    }
    let base = u64::from(registry_count);
    import_bulletins(
        frames,
        bulletin_count,
        base,
        registry,
        sink,
        &mut report,
        &mut progress,
        GROUP,
    )?;
    Ok(report)
}

/// Verifies the `count` bulletins that follow in `frames` (the bundle's
/// items from position `base` on) against `registry`, on every core, and
/// hands the valid ones to `sink` in file order; refusals go to `report`.
pub(crate) fn verify_bulletins(
    frames: Frames<BufReader<File>>,
    count: u64,
    base: u64,
    registry: &RwLock<Registry>,
    sink: &mut Sink<'_>,
    report: &mut ImportReport,
) -> Result<(), BundleError> {
    import_bulletins(frames, count, base, registry, sink, report, &mut |_, _| {}, GROUP)
}

/// What a verifying worker hands back: one group's verdicts, in file order.
enum Verified {
    Group {
        /// The group's number, counting from 0 in file order.
        number: u64,
        /// Position of its first bulletin among the bundle's bulletins.
        first: u64,
        verdicts: Vec<Result<(SignedBulletin, MemberId), String>>,
    },
    /// The file could not be read past the start of group `number`.
    Failed { number: u64, error: BundleError },
}

/// The bulletin part of [`import`]: one thread reads the frames in groups,
/// one worker per core decodes and verifies groups, and the calling thread
/// hands verified groups to `sink` in file order. At most a few groups per
/// worker are in memory at any time. Groups hold `group` bulletins (fewer in
/// tests, to exercise several groups cheaply).
#[allow(clippy::too_many_arguments)] // one private call site and one test
fn import_bulletins(
    mut frames: Frames<BufReader<File>>,
    count: u64,
    base: u64,
    registry: &RwLock<Registry>,
    sink: &mut Sink<'_>,
    report: &mut ImportReport,
    progress: &mut impl FnMut(u64, u64),
    group_size: usize,
) -> Result<(), BundleError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Groups read but not yet stored: enough to keep every worker busy, and a
    // bound on memory (each group is at most GROUP_BYTES) whatever the core count.
    let in_flight = (workers + 2).min(MAX_GROUPS_IN_FLIGHT);
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, u64, Vec<Vec<u8>>)>(in_flight);
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<Verified>();
        // One token per group the reader may have out; returned once stored.
        let (token_tx, token_rx) = mpsc::channel::<()>();
        for _ in 0..in_flight {
            let _ = token_tx.send(());
        }
        let report_failure = done_tx.clone();
        scope.spawn(move || {
            let (mut number, mut first, mut bytes) = (0u64, 0u64, 0usize);
            let mut group = Vec::new();
            for i in 0..count {
                match frames.frame(MAX_BULLETIN_BYTES, "bulletin") {
                    Ok(frame) => {
                        bytes += frame.len();
                        group.push(frame);
                    }
                    Err(error) => {
                        let _ = report_failure.send(Verified::Failed { number, error });
                        return;
                    }
                }
                if group.len() >= group_size || bytes >= GROUP_BYTES || i + 1 == count {
                    // Stop when the importer has stopped (an error downstream).
                    if token_rx.recv().is_err()
                        || work_tx.send((number, first, std::mem::take(&mut group))).is_err()
                    {
                        return;
                    }
                    (number, first, bytes) = (number + 1, i + 1, 0);
                }
            }
        });
        for _ in 0..workers {
            let done = done_tx.clone();
            let work_rx = &work_rx;
            scope.spawn(move || {
                loop {
                    let job = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((number, first, group)) = job else {
                        return;
                    };
                    // Verification never panics on any input; if it did, the
                    // group's items are refused with a reason rather than the
                    // import waiting forever for this group.
                    let verdicts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        verify_group(registry, &group)
                    }))
                    .unwrap_or_else(|_| {
                        group
                            .iter()
                            .map(|_| Err("internal error while verifying; please report it".to_string()))
                            .collect()
                    });
                    if done
                        .send(Verified::Group {
                            number,
                            first,
                            verdicts,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut ready = std::collections::BTreeMap::new();
        let mut next = 0u64;
        // A read error ends the import, but only after every group before it
        // is stored: how far an import gets does not depend on thread timing.
        let mut failed: Option<(u64, BundleError)> = None;
        for message in done_rx {
            match message {
                Verified::Failed { number, error } => failed = Some((number, error)),
                Verified::Group {
                    number,
                    first,
                    verdicts,
                } => {
                    ready.insert(number, (first, verdicts));
                }
            }
            while let Some((first, verdicts)) = ready.remove(&next) {
                let end = first + verdicts.len() as u64;
                let mut items = Vec::with_capacity(verdicts.len());
                for (at, verdict) in (first..).zip(verdicts) {
                    match verdict {
                        Ok(item) => items.push(item),
                        Err(reason) => report.rejected.push((base + at, reason)),
                    }
                }
                if !items.is_empty() {
                    tally(report, sink(items)?);
                }
                if end / PROGRESS_EVERY > first / PROGRESS_EVERY {
                    progress(end, count);
                }
                next += 1;
                let _ = token_tx.send(());
            }
            if let Some((number, _)) = &failed
                && *number == next
            {
                break;
            }
        }
        match failed {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    })
}

/// Decodes and verifies one group of bulletins against the registry, each
/// exactly as if it came from the network.
fn verify_group(
    registry: &RwLock<Registry>,
    group: &[Vec<u8>],
) -> Vec<Result<(SignedBulletin, MemberId), String>> {
    group
        .iter()
        .map(|bytes| {
            let bulletin = SignedBulletin::from_bytes(bytes).map_err(|e| e.to_string())?;
            // Locked per bulletin: a registry update waiting for the write
            // lock must not wait for a whole group (nor hold up other readers).
            let member = registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .check_bulletin(&bulletin)
                .map_err(|e| e.to_string())?;
            Ok((bulletin, member))
        })
        .collect()
}

fn tally(report: &mut ImportReport, outcomes: Vec<Stored>) {
    for o in outcomes {
        match o {
            Stored::New => report.new += 1,
            Stored::AlreadyHeld => report.already_held += 1,
            Stored::Equivocation { .. } => report.equivocations += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A bundle that passed its check but reads short the second time (changed
    /// on disk in between): every whole group before the damage is stored, in
    /// order, then the import fails; nothing after the damage is stored.
    #[test]
    fn a_read_error_stores_every_group_before_it_then_stops() {
        let net = crate::test_network::one_member();
        let bulletins = net.chain(35);
        let registry = net.registry;
        let network = registry.network();
        let wires: Vec<&[u8]> = bulletins.iter().map(SignedBulletin::as_bytes).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bundle");
        write(&path, network, registry.history(), &wires, |_, _| {}).unwrap();
        // Cut the file inside the 33rd bulletin: groups of 10 → groups 0, 1, 2 whole.
        let full = std::fs::read(&path).unwrap();
        let history_len: usize = registry.history().iter().map(|u| 4 + u.to_bytes().len()).sum();
        let cut = HEADER_LEN + history_len + wires[..32].iter().map(|w| 4 + w.len()).sum::<usize>() + 10;
        std::fs::write(&path, &full[..cut]).unwrap();

        let store = Store::open(&dir.path().join("store"), network).unwrap();
        let registry = RwLock::new(registry);
        let mut frames = open(&path).unwrap();
        frames.header().unwrap();
        frames
            .frame(MAX_REGISTRY_UPDATE_BYTES, "registry update")
            .unwrap();
        let mut sunk: Vec<u64> = Vec::new();
        let mut sink = |items: Vec<(SignedBulletin, MemberId)>| {
            sunk.extend(items.iter().map(|(b, _)| b.body().seq.0));
            store.insert_verified(&items)
        };
        let mut report = ImportReport::default();
        let result = import_bulletins(
            frames,
            35,
            1,
            &registry,
            &mut sink,
            &mut report,
            &mut |_, _| {},
            10,
        );
        assert!(matches!(result, Err(BundleError::Damaged { .. })), "{result:?}");
        assert_eq!(
            sunk,
            (1..=30).collect::<Vec<u64>>(),
            "whole groups, in file order"
        );
        assert_eq!(report.new, 30);
        assert_eq!(store.count().unwrap(), 30);
    }

    /// A bundle carried from the other side of a partition: its history parts
    /// from the node's at version 2, and a threshold approved its version 3. The
    /// node's own version 2 (a member's change alone) gives way; imported the
    /// other way round, nothing changes and the fork is reported.
    #[test]
    fn a_bundle_whose_history_a_threshold_approved_settles_a_split() {
        let net = crate::test_network::three_members();
        let key = |n: u8| herald_keys::SecretKey::from_seed(&[n; 32]);
        let mut ours = net.registry.clone();
        ours.apply(net.own_key(&ours, 0, &key(40))).unwrap();
        let mut theirs = net.registry.clone();
        theirs.apply(net.own_key(&theirs, 1, &key(50))).unwrap();
        theirs.apply(net.by_threshold(&theirs)).unwrap();
        let import_into = |held: &Registry, carried: &Registry| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("carried.hbundle");
            write(&path, held.network(), carried.history(), &[], |_, _| {}).unwrap();
            let store = Store::open(&dir.path().join("store"), held.network()).unwrap();
            for update in held.history() {
                store.save_registry_update(update).unwrap();
            }
            let registry = RwLock::new(held.clone());
            let mut sink = |items: Vec<(SignedBulletin, MemberId)>| store.insert_verified(&items);
            let report = import(&path, &store, &registry, &mut sink, |_, _| {}).unwrap();
            let registry = registry.into_inner().unwrap();
            (report, registry, store.registry_history().unwrap())
        };
        let (report, registry, stored) = import_into(&ours, &theirs);
        assert_eq!((report.registry_held, report.registry_applied), (1, 2));
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert_eq!(registry.history(), theirs.history());
        assert_eq!(stored, theirs.history());
        assert_eq!(registry.forks().len(), 1);

        let (report, registry, stored) = import_into(&theirs, &ours);
        assert_eq!((report.registry_held, report.registry_applied), (1, 0));
        assert_eq!(report.rejected.len(), 1);
        assert!(report.rejected[0].1.contains("fork"), "{:?}", report.rejected);
        assert_eq!(registry.history(), theirs.history());
        assert_eq!(stored, theirs.history());
        assert_eq!(registry.forks().len(), 1);
    }

    #[test]
    fn an_export_replaces_a_file_only_when_asked() {
        let net = crate::test_network::one_member();
        let bulletins = net.chain(3);
        let member = net.member_id();
        let registry = net.registry;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), registry.network()).unwrap();
        let items: Vec<_> = bulletins.iter().map(|b| (b.clone(), member)).collect();
        store.insert_verified(&items).unwrap();
        let path = dir.path().join("out.hbundle");
        std::fs::write(&path, b"an earlier file").unwrap();
        let filter = ExportFilter::default();

        let refused = export_to(&path, Replace::No, &store, &registry, &filter, |_, _| {});
        assert!(matches!(refused, Err(BundleError::Exists(_))), "{refused:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"an earlier file");
        // Refused also when the file appears while the bundle is written: the
        // written file is linked in only where nothing is.
        let tmp = dir.path().join("written");
        std::fs::write(&tmp, b"new").unwrap();
        let raced = put_in_place(&tmp, &path, Replace::No).unwrap_err();
        assert_eq!(raced.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"an earlier file");

        let report = export_to(&path, Replace::Yes, &store, &registry, &filter, |_, _| {}).unwrap();
        assert_eq!(report.bulletins, 3);
        assert_ne!(std::fs::read(&path).unwrap(), b"an earlier file");
        let fresh = dir.path().join("fresh.hbundle");
        export_to(&fresh, Replace::No, &store, &registry, &filter, |_, _| {}).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), std::fs::read(&path).unwrap());
        // Bundles hold bulletins: their owner's only, put in place by a link
        // or by a rename.
        for bundle in [&fresh, &path] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(bundle).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", bundle.display());
        }
        // Nothing is left beside them.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["fresh.hbundle", "out.hbundle", "store", "written"]);
    }
}
