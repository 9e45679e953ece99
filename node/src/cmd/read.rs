//! `herald list`, `show` and `status`: through the running node's API, or
//! straight from the store when no node runs.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use herald_keys::Registry;
use herald_node::config::Config;
use herald_node::view::{BulletinView, StatusView};
use herald_node::{Query, Store};
use herald_protocol::{BulletinId, MemberId, NetworkId, RegistryHash, Timestamp};

use crate::cli::{DirArgs, ListArgs, ShowArgs};
use crate::client::Client;
use crate::cmd::publish::{severity, tlp};

/// The store and registry of a node that is not running.
pub(crate) fn open_offline(dir: &Path, config: &Config) -> Result<(Store, Registry)> {
    let hash: RegistryHash = config
        .registry
        .genesis_hash
        .parse()
        .map_err(|e| anyhow!("genesis_hash in config.toml: {e}"))?;
    let store = Store::open(&dir.join(&config.node.data), NetworkId::from_genesis(hash))
        .context("cannot open the store (if a node is running, check its [api] listen address)")?;
    let registry = Registry::from_history(store.registry_history()?, hash).context("the stored registry")?;
    Ok((store, registry))
}

fn view(
    store: &Store,
    registry: &Registry,
    b: &herald_protocol::SignedBulletin,
    payload: bool,
) -> Result<BulletinView> {
    let member = store.signer_of(&b.id())?;
    let named = member.and_then(|m| registry.current().member(&m).map(|x| (m, x.name.clone())));
    Ok(BulletinView::new(b, named, payload))
}

pub(crate) fn list(args: ListArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let since = match &args.since {
        Some(d) => Some(
            herald_node::node::now()
                .0
                .saturating_sub(super::parse_duration(d)?.as_millis() as u64),
        ),
        None => None,
    };
    let member = args
        .member
        .as_deref()
        .map(|m| m.parse::<MemberId>().with_context(|| format!("--member {m:?}")))
        .transpose()?;
    let client = Client::new(config.api.listen, &args.dir);
    let views: Vec<BulletinView> = if client.is_up() {
        let mut q: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
        if let Some(k) = &args.kind {
            q.push(("kind", k.clone()));
        }
        if let Some(m) = member {
            q.push(("member", m.to_string()));
        }
        if let Some(t) = args.tlp {
            q.push(("tlp", tlp(t).to_string().trim_start_matches("TLP:").to_string()));
        }
        if let Some(s) = args.min_severity {
            q.push(("min_severity", format!("{:?}", severity(s)).to_lowercase()));
        }
        if let Some(s) = since {
            q.push(("since", s.to_string()));
        }
        client.get("/v1/bulletins", &q)?
    } else {
        let (store, registry) = open_offline(&args.dir, &config)?;
        let query = Query {
            kind: args.kind.clone(),
            member,
            tlp: args.tlp.map(tlp),
            min_severity: args.min_severity.map(severity),
            since: since.map(Timestamp),
            until: None,
            limit: args.limit,
        };
        store
            .query(&query)?
            .iter()
            .map(|b| view(&store, &registry, b, false))
            .collect::<Result<_>>()?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        println!("No bulletins match.");
    } else {
        for v in &views {
            println!("{}", v.summary_line());
        }
    }
    Ok(())
}

pub(crate) fn show(args: ShowArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let id: BulletinId = args
        .id
        .parse()
        .with_context(|| format!("bulletin id {:?}", args.id))?;
    let client = Client::new(config.api.listen, &args.dir);
    let v: BulletinView = if client.is_up() {
        client.get(&format!("/v1/bulletins/{id}"), &[])?
    } else {
        let (store, registry) = open_offline(&args.dir, &config)?;
        let b = store
            .get(&id)?
            .ok_or_else(|| anyhow!("no bulletin {id} is held here"))?;
        view(&store, &registry, &b, true)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}", v.title);
    println!("  id          {}", v.id);
    println!(
        "  from        {} ({})",
        v.member_name.as_deref().unwrap_or("?"),
        v.member.map(|m| m.to_string()).unwrap_or_default()
    );
    println!("  signer      {} #{}", v.signer, v.seq);
    println!("  created     {}", v.created);
    println!("  kind        {}", serde_json::to_string(&v.kind)?);
    println!("  tlp         {}", v.tlp);
    println!("  severity    {:?}", v.severity);
    for r in &v.references {
        println!("  reference   {}", serde_json::to_string(r)?);
    }
    if let Some(s) = v.supersedes {
        println!("  supersedes  {s}");
    }
    if let Some(e) = &v.expires {
        println!("  expires     {e}");
    }
    println!("  content     {} ({} bytes)", v.content_type, v.payload_bytes);
    if let (Some(p), Some("utf-8")) = (&v.payload, v.payload_encoding.as_deref()) {
        println!();
        println!("{p}");
    }
    Ok(())
}

pub(crate) fn status(args: DirArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let s: StatusView = Client::new(config.api.listen, &args.dir).get("/v1/status", &[])?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
