//! `herald registry`: show the member registry, and propose, approve and
//! submit changes to it.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use herald_keys::SecretKey;
use herald_keys::keyfile::{self, KeyRole};
use herald_node::api::{RegistrySubmitted, SubmitRegistry};
use herald_node::config::Config;
use herald_node::setup;
use herald_node::view::RegistryView;
use herald_protocol::{
    KeyId, MemberId, NodeId, RegistryOp, RegistryUpdate, RegistryVersion, RevocationPoint, Seq,
};

use crate::cli::{ProposeArgs, RegistryCommand};
use crate::client::Client;
use crate::cmd::read::{Access, open_offline};

pub(crate) fn run(command: RegistryCommand) -> Result<()> {
    match command {
        RegistryCommand::Show { dir, json } => show(&dir, json),
        RegistryCommand::Propose(args) => propose(*args),
        RegistryCommand::Approve {
            dir,
            file,
            keys,
            passphrase_env,
        } => approve(&dir, &file, &keys, passphrase_env.as_deref()),
        RegistryCommand::Submit { dir, file } => submit(&dir, &file),
    }
}

/// The registry as the running node holds it, or as the store holds it.
fn current(dir: &std::path::Path) -> Result<RegistryView> {
    let config = Config::load(dir)?;
    let client = Client::new(config.api.listen, dir);
    if client.is_up() {
        return client.get("/v1/registry", &[]);
    }
    let (_, registry) = open_offline(dir, &config, Access::Read)?;
    Ok(RegistryView::new(&registry))
}

fn show(dir: &std::path::Path, json: bool) -> Result<()> {
    let view = current(dir)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    out!(
        "registry version {} ({}), threshold {}",
        view.version,
        view.hash,
        view.threshold
    );
    for m in &view.members {
        let removed = m
            .removed_at
            .as_deref()
            .map(|t| format!("  REMOVED at {t}"))
            .unwrap_or_default();
        out!(
            "  {}  {}{removed}",
            herald_node::terminal::escape_line(&m.name),
            m.id
        );
        out!("    member key   {}", m.member_key);
        for (k, revoked) in &m.signing_keys {
            out!(
                "    signing key  {k}{}",
                revoked.as_deref().map(|r| format!("  ({r})")).unwrap_or_default()
            );
        }
        for n in &m.node_ids {
            out!("    node         {n}");
        }
    }
    if view.forks > 0 {
        out!(
            "WARNING: registry forks at {} version(s): the members' nodes may hold different registries (docs/OPERATIONS.md, 'registry fork')",
            view.forks
        );
    }
    if view.forks_settled > 0 {
        out!(
            "Registry forks settled at {} version(s): this branch holds a change that needs the threshold from there, which the other branch's nodes take",
            view.forks_settled
        );
    }
    Ok(())
}

fn propose(args: ProposeArgs) -> Result<()> {
    let view = current(&args.dir)?;
    let config = Config::load(&args.dir)?;
    let own_signing = keyfile::read_public_key(&args.dir.join(&config.keys.signing))?
        .1
        .id();
    let holder_of = |key: &KeyId| {
        view.members
            .iter()
            .find(|m| m.signing_keys.iter().any(|(k, _)| k == key))
    };
    let own = holder_of(&own_signing)
        .map(|m| m.id)
        .ok_or_else(|| anyhow!("this node's signing key is not in the registry"))?;
    let mut ops = Vec::new();
    // Members after the change, to check the threshold before the proposal
    // goes round for approvals (the registry checks it again as it applies).
    let mut members: Vec<MemberId> = view
        .members
        .iter()
        .filter(|m| m.removed_at.is_none())
        .map(|m| m.id)
        .collect();
    for path in &args.add_members {
        let entry = setup::read_descriptor(path)?.entry();
        if let Some(held) = view.members.iter().find(|m| m.id == entry.id) {
            match held.removed_at {
                Some(_) => bail!(
                    "{}: member {} was removed, and a member id is never admitted again; the member makes a new member key (`herald init` in a new directory) and sends that descriptor",
                    path.display(),
                    entry.id
                ),
                None => bail!(
                    "{}: member {} is already in the registry",
                    path.display(),
                    entry.id
                ),
            }
        }
        if members.contains(&entry.id) {
            bail!("{}: member {} is given twice", path.display(), entry.id);
        }
        herald_protocol::check_member_name(&entry.name).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let max = herald_protocol::registry::MAX_KEYS_PER_MEMBER;
        if entry.signing_keys.len() > max || entry.node_ids.len() > max {
            bail!(
                "{}: a member holds at most {max} signing keys and {max} nodes",
                path.display()
            );
        }
        members.push(entry.id);
        ops.push(RegistryOp::AddMember(entry));
    }
    for id in &args.remove_members {
        let member: MemberId = id.parse().with_context(|| format!("--remove-member {id:?}"))?;
        if !members.contains(&member) {
            bail!("--remove-member {id}: no current member has this id (`herald registry show` lists them)");
        }
        members.retain(|m| *m != member);
        ops.push(RegistryOp::RemoveMember {
            member,
            at: herald_node::node::now(),
        });
    }
    if let Some(threshold) = args.threshold {
        ops.push(RegistryOp::SetThreshold { threshold });
    }
    let threshold = args.threshold.unwrap_or(view.threshold) as usize;
    if threshold == 0 || threshold > members.len() || 2 * threshold <= members.len() {
        let n = members.len();
        bail!(
            "the change would leave {n} members with threshold {threshold}: it must be above half of them and at most all{}",
            match n {
                0 => " (a registry needs a member)".to_string(),
                _ => format!("; give --threshold from {} to {n}", n / 2 + 1),
            }
        );
    }
    if let (Some(key), Some(from)) = (&args.revoke, args.from_seq) {
        let key: KeyId = key
            .parse()
            .with_context(|| format!("--revoke-signing-key {key:?}"))?;
        let member = holder_of(&key).ok_or_else(|| anyhow!("no member holds signing key {key}"))?;
        ops.push(RegistryOp::RevokeSigningKey {
            member: member.id,
            key,
            from: RevocationPoint::Seq(Seq(from)),
        });
    }
    for node in &args.remove_nodes {
        let node: NodeId = node.parse().with_context(|| format!("--remove-node {node:?}"))?;
        let member = view
            .members
            .iter()
            .find(|m| m.node_ids.contains(&node))
            .ok_or_else(|| anyhow!("no member lists node {node}"))?;
        ops.push(RegistryOp::RemoveNode {
            member: member.id,
            node,
        });
    }
    // A new key is made in memory here, and written only once the proposal
    // is ready (below).
    let mut new_key = None;
    if let Some(path) = &args.new_signing_key {
        if path.exists() {
            bail!(
                "{} already exists; choose another file for the new key",
                path.display()
            );
        }
        let key = SecretKey::generate().map_err(|e| anyhow!("cannot generate a key: {e}"))?;
        ops.push(RegistryOp::AddSigningKey {
            member: own,
            key: key.id(),
        });
        new_key = Some((path, key));
    }
    if ops.is_empty() {
        bail!("nothing to propose: give at least one change (see `herald registry propose --help`)");
    }
    let body = RegistryUpdate {
        format: herald_protocol::registry::REGISTRY_FORMAT,
        version: RegistryVersion(view.version + 1),
        prev: Some(view.hash.parse().map_err(|e| anyhow!("registry hash: {e}"))?),
        created: herald_node::node::now(),
        ops,
    };
    let mut update = herald_keys::propose_update(&body)?;
    if let Some((_, key)) = &new_key {
        // Proof of possession of the key being added.
        let approval = herald_keys::approve(key, &update);
        update.push_approval(approval)?;
    }
    // The new key first (a proposal for a key that was lost is no use), then
    // its mark, then the proposal; what a failure leaves half done is removed.
    let written = match &new_key {
        None => None,
        Some((path, key)) => {
            keyfile::write_key_file(path, key, KeyRole::Signing, None)?;
            // A new key has signed nothing: its chain may start at once.
            let store_dir = args.dir.join(&config.node.data);
            let mark = herald_node::chain_check::unused_key_mark(&store_dir, &key.id());
            if let Err(e) = herald_node::chain_check::mark_key_unused(&store_dir, &key.id()) {
                let _ = std::fs::remove_file(path);
                return Err(e)
                    .with_context(|| format!("marking the new key unused in {}", store_dir.display()));
            }
            Some((path, mark))
        }
    };
    if let Err(e) = setup::write_file(&args.out, &update.to_bytes()) {
        if let Some((path, mark)) = written {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(mark);
        }
        return Err(e.into());
    }
    out!(
        "Wrote the proposal for registry version {} to {}.",
        body.version,
        args.out.display()
    );
    out!(
        "Members approve it with: herald registry approve --dir THEIR_DIR --passphrase-env HERALD_MEMBER_PASSPHRASE {}",
        args.out.display()
    );
    // Removal is by time, which whoever holds a removed member's signing key
    // can backdate: say how to cut each key off by number too.
    for id in &args.remove_members {
        let Some(member) = id
            .parse::<MemberId>()
            .ok()
            .and_then(|id| view.members.iter().find(|m| m.id == id))
        else {
            continue;
        };
        let keys: Vec<String> = member
            .signing_keys
            .iter()
            .filter(|(_, revoked)| revoked.is_none())
            .map(|(k, _)| k.to_string())
            .collect();
        if keys.is_empty() {
            continue;
        }
        out!(
            "Note: {} is removed by time: bulletins its signing keys sign dated before the removal stay valid, and whoever holds one of them can backdate. To cut a key off by number as well, propose for each: herald registry propose --dir {} --revoke-signing-key KEY --from-seq N (N: one past its last bulletin; `herald list --member {}` shows them). Its keys: {}",
            member.name,
            args.dir.display(),
            member.name,
            keys.join(", ")
        );
    }
    Ok(())
}

fn approve(
    dir: &std::path::Path,
    file: &std::path::Path,
    keys: &[std::path::PathBuf],
    passphrase_env: Option<&str>,
) -> Result<()> {
    let passphrase = match passphrase_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?)
        }
        None => None,
    };
    let mut update = setup::read_update(file)?;
    let mut added = setup::approve_with_dir(&mut update, dir, passphrase.as_deref())?;
    for path in keys {
        let (role, _) = keyfile::read_public_key(path)?;
        let key = keyfile::read_key_file(path, role, None)?;
        if !update.approvals().iter().any(|a| a.key == key.id()) {
            let approval = herald_keys::approve(&key, &update);
            update.push_approval(approval)?;
            added += 1;
        }
    }
    setup::write_file(file, &update.to_bytes())?;
    out!("Added {added} approvals; {} in all.", update.approvals().len());
    // Who has approved so far, as the current registry counts members (by
    // their member keys). The registry checks the signatures as it applies.
    if let Ok(view) = current(dir) {
        let approving: Vec<_> = view
            .members
            .iter()
            .filter(|m| m.removed_at.is_none())
            .filter(|m| update.approvals().iter().any(|a| a.key == m.member_key))
            .collect();
        let approved: Vec<_> = approving
            .iter()
            .map(|m| herald_node::terminal::escape_line(&m.name))
            .collect();
        let own_change_approved = herald_keys::registry::self_managed_by(&update.body().ops)
            .is_some_and(|owner| approving.iter().any(|m| m.id == owner));
        out!(
            "Members approving so far: {} ({} of the {} the threshold needs; a change to one member's own keys and nodes needs that member alone).",
            match approved.is_empty() {
                true => "none".to_string(),
                false => approved.join(", "),
            },
            approved.len(),
            view.threshold
        );
        let waiting = setup::possession_waiting(&update);
        if !waiting.is_empty() {
            out!(
                "Still to approve it for the keys it adds: {} (with `herald registry approve`, --key for a key file).",
                herald_node::terminal::escape_line(&waiting.join(", "))
            );
        } else if approved.len() >= view.threshold as usize || own_change_approved {
            out!(
                "Enough to submit: herald registry submit --dir DIR {}",
                file.display()
            );
        }
    }
    Ok(())
}

fn submit(dir: &std::path::Path, file: &std::path::Path) -> Result<()> {
    let config = Config::load(dir)?;
    let update = setup::read_update(file)?;
    let client = Client::new(config.api.listen, dir);
    if client.is_up() {
        let done: RegistrySubmitted = client.post(
            "/v1/registry",
            &SubmitRegistry {
                update: hex::encode(update.to_bytes()),
            },
        )?;
        out!(
            "The registry is at version {}; the change spreads by gossip and sync.",
            done.version
        );
        return Ok(());
    }
    let (store, registry) = open_offline(dir, &config, Access::Write)?;
    let registry = Arc::new(RwLock::new(registry));
    match herald_node::validate::apply_registry_update(&registry, &store, update)? {
        Ok(herald_keys::Applied::Advanced(version)) => {
            out!("The registry is at version {version}; it spreads when the node runs.");
        }
        Ok(herald_keys::Applied::Switched { from, to, dropped }) => out!(
            "The registry is at version {to}: this update displaced {dropped} version(s) from {from} on that members made alone (they must make those changes again); it spreads when the node runs."
        ),
        Ok(herald_keys::Applied::AlreadyHeld) => out!("This update is already held."),
        Err(e) => bail!("the update is refused: {e}"),
    }
    Ok(())
}
