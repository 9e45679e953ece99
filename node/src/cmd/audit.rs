//! `herald audit`: the offline verification of a bundle, for auditors. Exits
//! with an error when anything in the bundle fails to verify or its chains
//! contradict themselves.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use herald_node::audit::{self, AuditError, AuditReport};
use herald_node::bundle::BundleError;
use herald_protocol::RegistryHash;

use crate::cli::AuditArgs;

/// Findings of each sort listed in the text report.
const LISTED: usize = 20;

pub(crate) fn run(args: AuditArgs) -> Result<()> {
    let genesis: RegistryHash = args.genesis_hash.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "--genesis-hash {:?} is not a hash: it is 64 hex digits, as in `genesis_hash` of a member's config.toml",
            args.genesis_hash
        )
    })?;
    let known = match &args.registry_hash {
        Some(h) => Some(h.trim().parse::<RegistryHash>().map_err(|_| {
            anyhow::anyhow!(
                "--registry-hash {h:?} is not a hash: it is 64 hex digits, as `herald registry show` prints it"
            )
        })?),
        None => None,
    };
    let mut out = match &args.provenance {
        Some(path) => Some(Provenance::create(path, &args.file)?),
        None => None,
    };
    let mut write_error = None;
    let report = audit::audit(&args.file, genesis, known, |p| {
        if let Some(out) = out.as_mut()
            && write_error.is_none()
            && let Err(e) = serde_json::to_writer(&mut out.writer, p)
                .map_err(std::io::Error::from)
                .and_then(|()| out.writer.write_all(b"\n"))
        {
            write_error = Some(e);
        }
    })
    .map_err(|e| explain(e, &args))?;
    if let Some(out) = out {
        out.finish(write_error)?;
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&args, &report)?;
    }
    if !report.clean() {
        bail!(
            "the bundle does not verify cleanly: {} rejected, {} equivocations, {} broken links{}",
            report.rejected.len(),
            report.equivocations.len(),
            report.broken_links.len(),
            if report.registry_not_reached.is_some() {
                ", and its registry is older than the one you named"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The provenance file being written: a temporary file beside it, renamed
/// into place once the audit has gone through the whole bundle. An audit that
/// cannot finish (a damaged bundle, the wrong network) leaves no file, and an
/// earlier file of that name as it was. `-` writes to standard output as the
/// audit goes (a failed audit's lines then stand, with the error after them).
struct Provenance<'a> {
    writer: std::io::BufWriter<Box<dyn Write>>,
    /// The temporary file and its path, when there is one.
    tmp: Option<(std::fs::File, std::path::PathBuf)>,
    path: &'a Path,
}

impl<'a> Provenance<'a> {
    fn create(path: &'a Path, bundle: &Path) -> Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Provenance {
                writer: std::io::BufWriter::new(Box::new(std::io::stdout())),
                tmp: None,
                path,
            });
        }
        // Writing it would empty the bundle before it is read.
        if same_file(path, bundle) {
            bail!(
                "--provenance {} is the bundle being audited: name another file",
                path.display()
            );
        }
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .ok_or_else(|| anyhow::anyhow!("--provenance {} is not a file name", path.display()))?;
        name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
        let tmp = path.with_file_name(name);
        // New: a file or link at that name is neither followed nor emptied.
        // It tells what the bundle holds: its owner's only.
        let file = herald_node::owner_only::write_options()
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let writer = file
            .try_clone()
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Provenance {
            writer: std::io::BufWriter::new(Box::new(writer)),
            tmp: Some((file, tmp)),
            path,
        })
    }

    /// Renames the file into place (on disk first), or removes it if anything
    /// failed.
    fn finish(mut self, write_error: Option<std::io::Error>) -> Result<()> {
        let result = match write_error {
            Some(e) => Err(e),
            None => self.writer.flush().and_then(|()| match &self.tmp {
                Some((file, tmp)) => file.sync_all().and_then(|()| std::fs::rename(tmp, self.path)),
                None => Ok(()),
            }),
        };
        if result.is_ok() {
            // In place: nothing to remove.
            self.tmp = None;
        }
        result.with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Drop for Provenance<'_> {
    fn drop(&mut self) {
        if let Some((_, tmp)) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Whether `a` and `b` name one file (by device and inode where there are
/// such, so that links and letter case are seen through).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
        false
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
    }
}

/// The import's wording of a bundle error speaks of a node; an auditor has none.
fn explain(error: AuditError, args: &AuditArgs) -> anyhow::Error {
    match error {
        AuditError::Bundle(BundleError::WrongNetwork { path, found, .. }) => anyhow::anyhow!(
            "{}: the bundle is for network {found}, not the one of genesis {}: check the genesis hash you were given",
            path.display(),
            args.genesis_hash.trim()
        ),
        AuditError::Bundle(BundleError::Damaged { path, reason }) => {
            anyhow::anyhow!("{}: {reason}: the bundle cannot be audited", path.display())
        }
        other => other.into(),
    }
}

fn print_text(args: &AuditArgs, report: &AuditReport) -> Result<()> {
    out!(
        "{}: network {}; its registry reaches version {} from the genesis given ({} registry updates applied).",
        args.file.display(),
        report.network,
        report.registry_version,
        report.registry_updates
    );
    out!(
        "Verified {} bulletins on {} chains; {} rejected, {} equivocations, {} broken links; {} numbers missing (a filtered export leaves gaps).",
        report.verified,
        report.chains,
        report.rejected.len(),
        report.equivocations.len(),
        report.broken_links.len(),
        report.missing_numbers
    );
    match (&report.registry_not_reached, &args.registry_hash) {
        (Some(problem), _) => out!("  registry: {problem}"),
        (None, Some(_)) => out!("The bundle's registry includes the registry you named."),
        (None, None) => out!(
            "Registry version {} has hash {}: if the network has gone past it, this bundle leaves out later updates (a revocation would not be seen). Check with --registry-hash.",
            report.registry_version,
            report.registry_hash
        ),
    }
    if let Some(path) = args.provenance.as_ref().filter(|p| p.as_os_str() != "-") {
        out!(
            "Provenance of each verified bulletin: {} (JSON Lines).",
            path.display()
        );
    }
    for (position, reason) in report.rejected.iter().take(LISTED) {
        out!(
            "  rejected: item {position}: {}",
            herald_node::terminal::escape_line(reason)
        );
    }
    for e in report.equivocations.iter().take(LISTED) {
        out!(
            "  equivocation: key {} number {}: {}",
            e.key,
            e.seq,
            e.ids.join(", ")
        );
    }
    for b in report.broken_links.iter().take(LISTED) {
        out!(
            "  broken link: {} (key {} number {}) names {} as the bulletin before it",
            b.id,
            b.key,
            b.seq,
            b.prev.as_deref().unwrap_or("nothing")
        );
    }
    let more = report.rejected.len().saturating_sub(LISTED)
        + report.equivocations.len().saturating_sub(LISTED)
        + report.broken_links.len().saturating_sub(LISTED);
    if more > 0 {
        out!("  ... and {more} more (--json lists them all)");
    }
    Ok(())
}
