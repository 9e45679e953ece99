//! `herald list`, `show` and `status`: through the running node's API, or
//! straight from the store when no node runs.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use herald_keys::Registry;
use herald_node::config::Config;
use herald_node::view::{BulletinView, StatusView};
use herald_node::{Query, Store};
use herald_protocol::{MemberId, NetworkId, RegistryHash, Timestamp};

use crate::cli::{FilterArgs, ListArgs, ShowArgs, StatusArgs, WatchArgs};
use crate::client::Client;
use crate::cmd::publish::{severity, tlp};

/// What a command does with a stopped node's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads it: its registry history and fork evidence stay as they are,
    /// and the genesis is not stored on a first run, so that the history of
    /// a copy kept as evidence reads as it is. (Opening the store still does
    /// what every open does: it creates a store that is not there, adds the
    /// trees this build uses, upgrades an older schema, and folds the
    /// journal's own bulletins in.)
    Read,
    /// Writes to it (an import, a registry update): the registry history is
    /// put in order first, and saved forks judged by the branch rule, as the
    /// node does when it starts.
    Write,
}

/// The store and registry of a node that is not running.
pub(crate) fn open_offline(dir: &Path, config: &Config, access: Access) -> Result<(Store, Registry)> {
    if config.registry.genesis_hash.is_empty() {
        return Err(herald_node::setup::SetupError::NoGenesisHash(
            dir.join(herald_node::config::CONFIG_FILE),
        )
        .into());
    }
    let hash: RegistryHash = config
        .registry
        .genesis_hash
        .parse()
        .map_err(|e| anyhow!("genesis_hash in config.toml: {e}"))?;
    let store = Store::open(&dir.join(&config.node.data), NetworkId::from_genesis(hash))
        .context("cannot open the store (if a node is running, check its [api] listen address)")?;
    let saved_forks = match access {
        Access::Read => herald_node::node::SavedForks::ReadOnly,
        Access::Write => herald_node::node::SavedForks::Settle,
    };
    let stored =
        herald_node::node::stored_registry(&store, hash, saved_forks).context("the stored registry")?;
    if let Some(registry) = stored.as_ref().filter(|r| r.switches() > 0) {
        eprintln!(
            "the stored registry took another branch by the branch rule, as the node does at its start (now at version {}; the log says what gave way)",
            registry.version()
        );
    }
    let registry = if let Some(registry) = stored {
        registry
    } else {
        // The node has not run yet: the genesis installed beside the config;
        // stored, as the node stores it at its first start, by a command
        // that writes, so that what it writes (an import, a registry
        // update) follows it.
        let genesis = herald_node::setup::read_installed_genesis(dir, config)?;
        let registry = Registry::from_genesis(genesis.clone(), hash).context("the installed genesis")?;
        if access == Access::Write {
            store.save_registry_update(&genesis)?;
            store.flush()?;
        }
        registry
    };
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
    let since = since_arg(args.since.as_deref())?;
    let arrived_since = since_arg(args.arrived_since.as_deref())?;
    check_text(&args.filters)?;
    let most = herald_node::api::MAX_LIST;
    if !(1..=most).contains(&args.limit) {
        bail!(
            "--limit {} is out of range: from 1 to {most}; for more, herald export writes them all to a file, and herald watch --since lists them all",
            args.limit
        );
    }
    let client = Client::new(config.api.listen, &args.dir);
    let up = client.is_up();
    let offline = if up {
        None
    } else {
        Some(open_offline(&args.dir, &config, Access::Read)?)
    };
    let member = member_filter(&args.filters, &client, offline.as_ref().map(|(_, r)| r))?;
    // Whether a text search read every bulletin it had to.
    let complete;
    let views: Vec<BulletinView> = if up {
        let mut q = filter_params(&args.filters, member);
        q.push(("limit", args.limit.to_string()));
        if let Some(s) = since {
            q.push(("since", s.to_string()));
        }
        if let Some(s) = arrived_since {
            q.push(("arrived_since", s.to_string()));
        }
        let (views, search) = client.get_with_header("/v1/bulletins", &q, herald_node::api::SEARCH_HEADER)?;
        complete = search.as_deref() != Some("incomplete");
        views
    } else {
        let (store, registry) = offline.ok_or_else(|| anyhow!("the store is not open"))?;
        let f = &args.filters;
        let query = Query {
            kind: f.kind.clone(),
            member,
            tlp: f.tlp.map(tlp),
            min_severity: f.min_severity.map(severity),
            since: since.map(Timestamp),
            until: None,
            arrived_since: arrived_since.map(Timestamp),
            limit: args.limit,
            text: f.text.clone(),
        };
        let (found, all) = store.search(&query, herald_node::store::TEXT_SCAN_LIMIT)?;
        complete = all;
        found
            .iter()
            .map(|b| view(&store, &registry, b, false))
            .collect::<Result<_>>()?
    };
    if !complete {
        eprintln!(
            "The search stopped after the newest {} bulletins: narrow it with --since (and the other filters) to search older ones.",
            herald_node::store::TEXT_SCAN_LIMIT
        );
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        out!("No bulletins match.");
    } else {
        for v in &views {
            out!("{}", v.summary_line());
        }
    }
    Ok(())
}

pub(crate) fn show(args: ShowArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    // The id, or the start of it (as `list` shows it): looked up by the store.
    let text = args.id.trim().to_ascii_lowercase();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(herald_node::store::IdLookupError::Invalid(text).into());
    }
    let client = Client::new(config.api.listen, &args.dir);
    // The bulletin, and the members' names (for its audience).
    let (v, members): (BulletinView, Vec<(MemberId, String)>) = if client.is_up() {
        let v: BulletinView = client.get(&format!("/v1/bulletins/{text}"), &[])?;
        let members = match v.audience.is_empty() {
            true => Vec::new(),
            false => super::members_of(&client, true)?,
        };
        (v, members)
    } else {
        let (store, registry) = open_offline(&args.dir, &config, Access::Read)?;
        let id = store.resolve_id(&text)?;
        let b = store
            .get(&id)?
            .ok_or_else(|| anyhow!("no bulletin {id} is held here"))?;
        let members = registry
            .current()
            .members()
            .map(|m| (m.id, m.name.clone()))
            .collect();
        let mut v = view(&store, &registry, &b, true)?;
        v.answers = Some(store.answers_to(&b)?);
        (v, members)
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    // The text other members wrote (title, references, reasons, names,
    // content) goes to a terminal with its controls shown as escapes; only
    // the content written to a file is left exact.
    let line = herald_node::terminal::escape_line;
    out!("{}", line(&v.title));
    out!("  id          {}", v.id);
    out!(
        "  from        {} ({})",
        line(v.member_name.as_deref().unwrap_or("?")),
        v.member.map(|m| m.to_string()).unwrap_or_default()
    );
    out!("  signer      {} #{}", v.signer, v.seq);
    out!("  created     {}", v.created);
    out!(
        "  kind        {}",
        line(&kind_text(&serde_json::to_value(&v.kind)?))
    );
    out!("  tlp         {}", v.tlp);
    out!("  severity    {:?}", v.severity);
    for r in &v.references {
        out!("  reference   {}", line(&serde_json::to_string(r)?));
    }
    if let Some(s) = v.supersedes {
        out!("  supersedes  {s}");
    }
    if let Some(e) = &v.expires {
        out!("  expires     {e}");
    }
    if let Some(answers) = &v.answers {
        for id in &answers.superseded_by {
            out!("  superseded by {id}");
        }
        for id in &answers.withdrawn_by {
            out!("  WITHDRAWN by {id}");
        }
        for id in &answers.follow_ups {
            out!("  follow-up   {id}");
        }
        if !answers.complete {
            out!("  (the first {} answers only)", herald_node::store::ANSWERS_LIMIT);
        }
    }
    for id in &v.audience {
        let name = members
            .iter()
            .find(|(m, _)| m == id)
            .map_or("?", |(_, n)| n.as_str());
        out!("  for         {} ({id})", line(name));
    }
    out!(
        "  content     {} ({} bytes)",
        line(&v.content_type),
        v.payload_bytes
    );
    if let (Some(p), Some("utf-8")) = (&v.payload, v.payload_encoding.as_deref()) {
        out!();
        if stdout_is_a_file() {
            out!("{p}");
        } else {
            out!("{}", herald_node::terminal::escape_text(p));
        }
    }
    Ok(())
}

pub(crate) fn status(args: StatusArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let client = Client::new(config.api.listen, &args.dir);
    let s: StatusView = client.get("/v1/status", &[])?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    // The member's name, if the registry can be read.
    let registry = client
        .get::<herald_node::view::RegistryView>("/v1/registry", &[])
        .ok();
    let name = registry
        .iter()
        .flat_map(|r| r.members.iter())
        .find(|m| m.id == s.member)
        .map_or("?", |m| m.name.as_str());
    out!("node         {}", s.peer_id);
    out!("member       {name} ({})", s.member);
    out!(
        "network      {}, registry version {}",
        s.network,
        s.registry_version
    );
    if s.registry_forks > 0 {
        out!(
            "registry     FORKED: another approved update than this node's is known for {} version(s); the members' nodes may hold different registries until a change that needs the threshold settles it (herald registry show counts them; docs/OPERATIONS.md, 'registry fork')",
            s.registry_forks
        );
    }
    if s.registry_switches > 0 {
        out!(
            "registry     took another branch {} time(s) since the node started: members' own changes gave way, and they must make them again (the log says which)",
            s.registry_switches
        );
    }
    if s.registry_forks_settled > 0 {
        out!(
            "registry     forks settled at {} version(s): this node's branch holds a change that needs the threshold from there, which the other branch's nodes take (unless theirs holds one too)",
            s.registry_forks_settled
        );
    }
    for addr in &s.listen {
        out!("listening    {addr}");
    }
    out!("peers        {} connected", s.connected_peers.len());
    for peer in &s.connected_peers {
        out!("             {peer}");
    }
    out!(
        "bulletins    {} held, {} of them kept as proof of equivocation",
        s.bulletins,
        s.equivocations
    );
    out!("own chain    {}", own_chain_line(&s.own_chain));
    // Claims met but not yet cleared hold nothing back.
    for claim in s
        .own_chain
        .claims
        .iter()
        .filter(|c| c.up_to > s.own_chain.numbered_up_to)
    {
        out!("             peer {} lists it up to {}", claim.peer, claim.up_to);
    }
    out!(
        "waiting      {} own bulletins for a peer to gossip to",
        s.pending_gossip
    );
    out!(
        "tree         sends to {} peers in full and {} by id; {} send to it in full ({} duplicates, {} grafted, {} frames dropped, {} held back by limits)",
        s.tree.pushes_to,
        s.tree.announces_to,
        s.tree.receives_from,
        s.tree.duplicates,
        s.tree.grafted,
        s.tree.frames_dropped,
        s.tree.held_back
    );
    if s.tree.held_back > 0 {
        out!(
            "             held back: {} announced ids not followed, {} graft answers not sent, {} announcement and graft frames skipped",
            s.tree.announcements_ignored,
            s.tree.graft_answers_refused,
            s.tree.control_frames_skipped
        );
    }
    let sync = match &s.last_sync {
        None => "none yet".to_string(),
        Some(l) => format!(
            "{} with {}: {}",
            Timestamp(l.at_ms),
            l.peer,
            match &l.error {
                None if s.behind > 0 => format!("{} new, still {} behind", l.new_bulletins, s.behind),
                None => format!("{} new", l.new_bulletins),
                Some(e) => format!("failed: {e}"),
            }
        ),
    };
    out!(
        "last sync    {sync}{}",
        if s.syncing > 0 {
            format!(" ({} running)", s.syncing)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// A bulletin's kind as `show` prints it: its name, then its fields
/// (`advisory, status confirmed`); JSON for whatever is not plain.
fn kind_text(kind: &serde_json::Value) -> String {
    let Some(fields) = kind.as_object() else {
        return kind.to_string();
    };
    let mut text = fields
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_string();
    for (name, value) in fields.iter().filter(|(name, _)| *name != "type") {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!(", {} {value}", name.replace('_', " ")));
    }
    text
}

/// Whether standard output is a regular file (`herald show ID > FILE`), which
/// gets a bulletin's content exact; a terminal, or a pipe that may lead to
/// one (a pager), gets it with its controls shown as escapes.
fn stdout_is_a_file() -> bool {
    use std::os::fd::AsFd as _;
    std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|file| file.metadata())
        .is_ok_and(|meta| meta.is_file())
}

/// The own chain as `herald status` prints it.
fn own_chain_line(own: &herald_node::view::OwnChainView) -> String {
    let claimed = own.claims.iter().map(|c| c.up_to).max().unwrap_or(0);
    format!(
        "numbered up to {}{}{}",
        own.numbered_up_to,
        if own.checked {
            ", checked with peers since the start"
        } else {
            ", not yet checked with peers since the start"
        },
        if claimed > own.numbered_up_to {
            "; publishing waits for the catch-up"
        } else {
            ""
        }
    )
}

/// Feeds ended on a failure the node reported within a minute after which
/// `herald watch --reconnect` stops.
const WATCH_FAILURES_A_MINUTE: usize = 3;

/// Most ids `herald watch` remembers so as not to print a bulletin twice
/// when the node lists again what came after it fell behind (or, from
/// earlier builds of the node, when it watches again).
const WATCH_REMEMBERS: usize = 262_144;

pub(crate) fn watch(args: WatchArgs) -> Result<()> {
    use herald_node::watch::{BACKLOG_HEADER, FeedEnd, Mark, RESUME_HEADER, WATCH_BACKLOG};
    use std::io::BufRead as _;
    let config = Config::load(&args.dir)?;
    check_text(&args.filters)?;
    let since = since_arg(args.since.as_deref())?;
    let arrived_since = since_arg(args.arrived_since.as_deref())?;
    // With --reconnect, what comes to the node from now on is printed, even
    // before the first feed begins (the node's clock is this machine's: the
    // API is on loopback).
    let started = herald_node::node::now().0;
    // Read again each time: a node writes a new token each run.
    let connect = || Client::new(config.api.listen, &args.dir);
    let mut client = connect();
    if !client.is_up() {
        if !args.reconnect {
            bail!(
                "no node answers at {}: watch follows a running node; start it with `herald run --dir {}` (or watch with --reconnect to wait for it)",
                config.api.listen,
                args.dir.display()
            );
        }
        client = wait_for_node(&connect, false);
    }
    let member = member_filter(&args.filters, &client, None)?;
    let q = filter_params(&args.filters, member);
    // On standard error: the output stays the bulletins alone.
    eprintln!(
        "Watching the node at {} for new bulletins; Ctrl-C to stop.",
        config.api.listen
    );
    let began = since.unwrap_or_else(|| herald_node::node::now().0);
    // Whatever a feed lists again, each bulletin is printed once.
    let mut printed = herald_node::watch::Remembered::new(WATCH_REMEMBERS);
    let mut next = Next::Asked;
    let mut behind: Vec<std::time::Instant> = Vec::new();
    // When feeds ended on a failure the node reported (its store could not
    // be read): --reconnect watches again, a few times a minute at most.
    let mut failed: Vec<std::time::Instant> = Vec::new();
    loop {
        let mut query = q.clone();
        // The creation time this feed lists from, if it lists by creation.
        let lists_created = match next {
            Next::Asked => {
                if let Some(arrived) = arrived_since {
                    query.push(("arrived_since", arrived.to_string()));
                }
                if args.reconnect {
                    query.push(("resume", started.to_string()));
                }
                since
            }
            Next::Behind(Some(arrived)) => {
                query.push(("arrived_since", arrived.to_string()));
                None
            }
            Next::Behind(None) => Some(began),
            Next::Resume { resume, listing } => {
                query.push(("resume", resume.to_string()));
                listing
            }
        };
        if let Some(since) = lists_created {
            query.push(("since", since.to_string()));
        }
        if args.reconnect {
            query.push(("marks", "true".to_string()));
        }
        let (lines, headers) = match client.get_lines("/v1/watch", &query, &[BACKLOG_HEADER, RESUME_HEADER]) {
            Ok(answer) => answer,
            // The node stopped before the watch began again.
            Err(_) if args.reconnect && !client.is_up() => {
                client = wait_for_node(&connect, true);
                continue;
            }
            Err(e) => return Err(e),
        };
        // An older node's listing by creation time (nodes now list everything).
        if headers[0].as_deref() == Some("cut") {
            eprintln!(
                "Only the newest {WATCH_BACKLOG} of the bulletins since then are listed: herald list --since shows the others."
            );
        }
        // Where to carry on if the feed is cut off without saying so: from
        // where it began (and all of its listing by creation, if it had one).
        let mut cut_off = headers[1]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .map(|resume| Next::Resume {
                resume,
                listing: lists_created,
            });
        let mut ended = None;
        for line in lines.lines() {
            let line = match line {
                Ok(line) => line,
                Err(_) if args.reconnect => break,
                Err(e) => {
                    return Err(e).context(
                        "the connection to the node was lost; run herald watch again (--reconnect carries on by itself)",
                    );
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).context("the node sent a line that is not JSON")?;
            // Where to carry on, said now and then (asked for with --reconnect).
            if value.get("id").is_none() && value.get("error").is_none() {
                let mark: Mark = serde_json::from_value(value)
                    .context("the node sent a line this herald does not read")?;
                cut_off = Some(Next::Resume {
                    resume: mark.resume,
                    listing: mark.listing,
                });
                continue;
            }
            if value.get("id").is_none() {
                ended = Some(
                    serde_json::from_value::<FeedEnd>(value)
                        .context("the node ended the watch with a line this herald does not read")?,
                );
                break;
            }
            let view: BulletinView = serde_json::from_value(value)
                .context("the node sent a bulletin this herald does not read")?;
            if !printed.insert(view.id) {
                continue;
            }
            if args.json {
                out!("{}", serde_json::to_string(&view)?);
            } else {
                out!("{}", view.summary_line());
            }
        }
        const STOPPED: &str = "the node stopped; run herald watch again once it runs (with --arrived-since to print what came meanwhile), or watch with --reconnect to carry on by itself";
        // How far back --arrived-since must reach for a watch run again by
        // hand to miss nothing since `resume`.
        let stopped_at = |resume: u64| {
            let secs = herald_node::node::now().0.saturating_sub(resume) / 1000 + 1;
            format!(
                "the node stopped; to miss nothing, run herald watch again once it runs with --arrived-since reaching back to {} ({secs}s ago now), or watch with --reconnect to carry on by itself",
                herald_protocol::Timestamp(resume)
            )
        };
        next = match ended {
            // From an earlier build of the node.
            Some(end) if end.fell_behind => {
                // A reader that keeps falling behind would list the same
                // bulletins again and again.
                let now = std::time::Instant::now();
                behind.retain(|at| now.duration_since(*at) < std::time::Duration::from_secs(60));
                behind.push(now);
                if behind.len() >= 3 {
                    bail!(
                        "this watch fell behind the node three times in a minute: narrow its filters, or read its output faster"
                    );
                }
                eprintln!("{} (watching again)", end.error);
                Next::Behind(end.arrived_since)
            }
            // The node stops.
            Some(FeedEnd {
                resume: Some(resume),
                listing,
                ..
            }) => {
                if !args.reconnect {
                    bail!("{}", stopped_at(resume));
                }
                client = wait_for_node(&connect, true);
                Next::Resume { resume, listing }
            }
            // A failure the node reported (its store could not be read):
            // with --reconnect, watched again from where this feed got to.
            Some(end) if args.reconnect => {
                let Some(next) = cut_off else {
                    bail!("{}", end.error);
                };
                let now = std::time::Instant::now();
                failed.retain(|at| now.duration_since(*at) < std::time::Duration::from_secs(60));
                failed.push(now);
                if failed.len() >= WATCH_FAILURES_A_MINUTE {
                    bail!(
                        "{} ({WATCH_FAILURES_A_MINUTE} times in a minute: the watch stops; see the node's log)",
                        end.error
                    );
                }
                eprintln!("{} (watching again)", end.error);
                // Not at once: what failed may take a moment to pass.
                std::thread::sleep(std::time::Duration::from_secs(1));
                client = wait_for_node(&connect, true);
                next
            }
            Some(end) => bail!("{}", end.error),
            None if args.reconnect => {
                let Some(next) = cut_off else {
                    bail!(
                        "the connection to the node was lost, and this node does not say where to carry on: run herald watch again with --arrived-since"
                    );
                };
                client = wait_for_node(&connect, true);
                next
            }
            None => bail!("{STOPPED}"),
        };
    }
}

/// What `herald watch` asks the node for next.
enum Next {
    /// What the command line asks for.
    Asked,
    /// What came since then (`None`: what was made since the watch began),
    /// after an earlier build of the node ended a feed that fell behind.
    Behind(Option<u64>),
    /// What came since `resume`, after the node stopped (and first what was
    /// created since `listing`, the rest of a listing by creation).
    Resume { resume: u64, listing: Option<u64> },
}

/// Waits for the node to answer (again, or the first time), and a client
/// with the token it has now.
fn wait_for_node(connect: &impl Fn() -> Client, again: bool) -> Client {
    if !connect().is_up() {
        eprintln!("The node does not answer; waiting for it to run (Ctrl-C to stop).");
        while !connect().is_up() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        if again {
            eprintln!("The node answers again: watching from where this watch was.");
        } else {
            eprintln!("The node answers: watching from when this watch began.");
        }
    }
    connect()
}

/// `--since` as a time: that long before now.
fn since_arg(since: Option<&str>) -> Result<Option<u64>> {
    Ok(since
        .map(super::parse_duration)
        .transpose()?
        .map(|d| herald_node::node::now().0.saturating_sub(d.as_millis() as u64)))
}

fn check_text(filters: &FilterArgs) -> Result<()> {
    if let Some(text) = &filters.text
        && text.len() > herald_node::store::MAX_QUERY_TEXT_BYTES
    {
        bail!(
            "--text is over {} bytes: shorten it",
            herald_node::store::MAX_QUERY_TEXT_BYTES
        );
    }
    Ok(())
}

/// `--member`, a name or an id, as an id.
fn member_filter(
    filters: &FilterArgs,
    client: &Client,
    offline: Option<&Registry>,
) -> Result<Option<MemberId>> {
    filters
        .member
        .as_deref()
        .map(|text| super::member_arg("--member", text, client, offline))
        .transpose()
}

/// The filters as the API's query parameters.
fn filter_params(filters: &FilterArgs, member: Option<MemberId>) -> Vec<(&'static str, String)> {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(k) = &filters.kind {
        q.push(("kind", k.clone()));
    }
    if let Some(m) = member {
        q.push(("member", m.to_string()));
    }
    if let Some(t) = filters.tlp {
        q.push(("tlp", tlp(t).to_string().trim_start_matches("TLP:").to_string()));
    }
    if let Some(s) = filters.min_severity {
        q.push(("min_severity", format!("{:?}", severity(s)).to_lowercase()));
    }
    if let Some(t) = &filters.text {
        q.push(("text", t.clone()));
    }
    q
}
