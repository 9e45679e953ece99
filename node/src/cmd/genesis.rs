//! `herald genesis`: founders, each holding only their own keys, propose,
//! approve, verify and install the genesis registry.

use anyhow::{Context, Result};
use herald_keys::Registry;
use herald_node::setup;

use crate::cli::GenesisCommand;

pub(crate) fn run(command: GenesisCommand) -> Result<()> {
    match command {
        GenesisCommand::Propose {
            threshold,
            out,
            members,
        } => {
            let descriptors = members
                .iter()
                .map(|p| setup::read_descriptor(p))
                .collect::<Result<Vec<_>, _>>()?;
            let proposal = setup::propose_genesis(&descriptors, threshold, herald_node::node::now())?;
            setup::write_file(&out, &proposal.to_bytes())?;
            out!(
                "Wrote the genesis proposal for {} members (threshold {threshold}) to {}.",
                descriptors.len(),
                out.display()
            );
            out!(
                "Each founder now runs: herald genesis approve --dir THEIR_DIR --passphrase-env HERALD_MEMBER_PASSPHRASE {}",
                out.display()
            );
        }
        GenesisCommand::Approve {
            dir,
            file,
            passphrase_env,
        } => {
            let passphrase = match &passphrase_env {
                Some(var) => Some(
                    std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?,
                ),
                None => None,
            };
            let mut update = setup::read_update(&file)?;
            let added = setup::approve_with_dir(&mut update, &dir, passphrase.as_deref())?;
            setup::write_file(&file, &update.to_bytes())?;
            out!("Added {added} approvals; {} in all.", update.approvals().len());
            match Registry::from_genesis(update.clone(), update.hash()) {
                Ok(_) => out!(
                    "The genesis is complete: herald genesis verify {}",
                    file.display()
                ),
                Err(e) => out!(
                    "Not complete yet: {}",
                    setup::genesis_incomplete(&update, &file, &e)
                ),
            }
        }
        GenesisCommand::Verify { file } => {
            let update = setup::read_update(&file)?;
            let registry = Registry::from_genesis(update.clone(), update.hash()).map_err(|e| {
                anyhow::anyhow!(
                    "the genesis is not complete or not valid: {}",
                    setup::genesis_incomplete(&update, &file, &e)
                )
            })?;
            out!(
                "Genesis is valid: {} members, threshold {}.",
                registry.current().members().count(),
                registry.current().threshold()
            );
            for m in registry.current().members() {
                out!("  {:<24} {}", herald_node::terminal::escape_line(&m.name), m.id);
            }
            out!("genesis_hash = \"{}\"", update.hash());
        }
        GenesisCommand::Install { dir, file } => {
            let update = setup::read_update(&file)?;
            let hash = setup::install_genesis(&dir, &update)?;
            out!("Installed the genesis {hash} into {}.", dir.display());
        }
    }
    Ok(())
}
