//! `herald export` and `herald import`: bundle files, through the running
//! node or straight on the store when no node runs.

use std::sync::RwLock;

use anyhow::{Result, bail};
use herald_node::api::{ExportRequest, ImportRequest};
use herald_node::bundle::{self, ExportFilter, ExportReport, ImportReport};
use herald_node::config::Config;

use crate::cli::{ExportArgs, ImportArgs};
use crate::client::Client;
use crate::cmd::read::{Access, open_offline};

fn progress(what: &'static str) -> impl FnMut(u64, u64) {
    move |done, total| eprintln!("  {what} {done} of {total} bulletins...")
}

fn absolute(path: &std::path::Path) -> Result<std::path::PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

pub(crate) fn export(args: ExportArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let path = absolute(&args.out)?;
    // Checked here to spare the work; the node checks again as it puts the
    // file in place.
    if !args.force && path.exists() {
        bail!(
            "{} exists: name another file, or pass --force to replace it",
            path.display()
        );
    }
    let replace = match args.force {
        true => bundle::Replace::Yes,
        false => bundle::Replace::No,
    };
    let ago = |period: &Option<String>| -> Result<Option<u64>> {
        let Some(period) = period else { return Ok(None) };
        let ago = super::parse_duration(period)?.as_millis() as u64;
        Ok(Some(herald_node::node::now().0.saturating_sub(ago)))
    };
    let (since, arrived_since) = (ago(&args.since)?, ago(&args.arrived_since)?);
    let client = Client::new(config.api.listen, &args.dir);
    let offline = if client.is_up() {
        None
    } else {
        Some(open_offline(&args.dir, &config, Access::Read)?)
    };
    let filter = ExportFilter {
        since,
        arrived_since,
        kind: args.kind.clone(),
        member: args
            .member
            .as_deref()
            .map(|text| super::member_arg("--member", text, &client, offline.as_ref().map(|(_, r)| r)))
            .transpose()?,
    };
    let report: ExportReport = match offline {
        None => client.post(
            "/v1/export",
            &ExportRequest {
                path: path.clone(),
                filter,
                replace: args.force,
            },
        )?,
        Some((store, registry)) => {
            bundle::export_to(&path, replace, &store, &registry, &filter, progress("exported"))?
        }
    };
    out!(
        "Wrote {} bulletins and {} registry updates ({} bytes) to {}.",
        report.bulletins,
        report.registry_updates,
        report.bytes,
        path.display()
    );
    Ok(())
}

pub(crate) fn import(args: ImportArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let path = absolute(&args.file)?;
    let client = Client::new(config.api.listen, &args.dir);
    let report: ImportReport = if client.is_up() {
        client.post("/v1/import", &ImportRequest { path })?
    } else {
        let (store, registry) = open_offline(&args.dir, &config, Access::Write)?;
        let registry = RwLock::new(registry);
        let mut sink = |items: Vec<_>| {
            let outcomes = store.insert_verified(&items)?;
            store.flush()?;
            Ok(outcomes)
        };
        bundle::import(&path, &store, &registry, &mut sink, progress("imported"))?
    };
    out!(
        "Imported: {} new, {} already held, {} equivocation evidence, {} rejected; registry: {} applied, {} already held.",
        report.new,
        report.already_held,
        report.equivocations,
        report.rejected.len(),
        report.registry_applied,
        report.registry_held
    );
    for (position, reason) in report.rejected.iter().take(20) {
        out!(
            "  item {position}: {}",
            herald_node::terminal::escape_line(reason)
        );
    }
    if report.rejected.len() > 20 {
        out!("  ... and {} more", report.rejected.len() - 20);
    }
    Ok(())
}
