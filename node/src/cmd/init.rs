//! `herald init` and `herald testnet`: node directories with keys and configuration.

use anyhow::{Context, Result};
use herald_node::setup::{self, InitOptions};

use crate::cli::{InitArgs, TestnetArgs};

pub(crate) fn init(args: InitArgs) -> Result<()> {
    let passphrase = match &args.passphrase_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?)
        }
        None => None,
    };
    let options = InitOptions {
        member: args.member,
        listen: args.listen,
        api: args.api,
        mdns: true,
        member_passphrase: passphrase,
    };
    let descriptor = setup::init_node_dir(&args.dir, &options)?;
    out!("Created node directory {}", args.dir.display());
    out!("  member key  {}", descriptor.member_key);
    for key in &descriptor.signing_keys {
        out!("  signing key {key}");
    }
    for addr in &descriptor.addresses {
        out!("  address     {addr}");
    }
    if descriptor
        .addresses
        .iter()
        .any(|a| a.starts_with("/ip4/0.0.0.0/") || a.starts_with("/ip6/::/"))
    {
        out!(
            "  (0.0.0.0 listens on every interface: others dial this host's reachable address in its place)"
        );
    }
    out!();
    out!(
        "Send {} to the other founders; then propose and approve the genesis with `herald genesis`.",
        args.dir.join(setup::DESCRIPTOR_FILE).display()
    );
    Ok(())
}

pub(crate) fn testnet(args: TestnetArgs) -> Result<()> {
    let dirs = setup::create_local_network(&args.dir, usize::from(args.nodes), args.base_port)?;
    out!("Created a local network of {} members:", dirs.len());
    for dir in &dirs {
        out!("  herald run --dir {}", dir.display());
    }
    Ok(())
}
