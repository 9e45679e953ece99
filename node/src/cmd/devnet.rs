//! `herald devnet`: a local network with a stream of sample bulletins, showing
//! each bulletin reaching each node and how long it took.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use herald_node::devnet::{Devnet, sample_draft};
use herald_node::{NodeEvent, Origin};
use herald_protocol::BulletinId;
use tokio::sync::{broadcast, mpsc};

use crate::cli::DevnetArgs;

/// Events forwarded from all nodes to the view.
const VIEW_CAPACITY: usize = 4096;

struct Tracked {
    sent: SystemTime,
    publisher: usize,
    reached: BTreeSet<usize>,
    /// The latest arrival so far, in ms: events from different nodes come in
    /// the order they are heard of, not the order the nodes held the bulletin.
    slowest: f64,
}

pub(crate) fn run(args: DevnetArgs) -> Result<()> {
    super::runtime()?.block_on(async move {
        // Ctrl-C from now on: one pressed while the nodes start, or between
        // two bulletins, stops the devnet cleanly (its stores removed).
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot listen for Ctrl-C")?;
        let n = usize::from(args.nodes);
        out!("Starting {n} Herald nodes on 127.0.0.1 with a new registry...");
        let devnet = Devnet::start(n).await?;
        out!("network {}", devnet.nodes[0].network());
        for (node, name) in devnet.nodes.iter().zip(&devnet.names) {
            let addrs = node.listen_addrs().await;
            let addr = addrs.first().map(|a| a.to_string()).unwrap_or_default();
            out!("  {name:<10} {}  {addr}", node.peer_id());
        }
        // The first member's local API and web page, as `herald run` serves
        // them: a throwaway token, printed (the network is this machine's
        // alone, and ends with the command).
        let token = herald_node::api::new_token();
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api_addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.api_port));
        let served = herald_node::api::serve(
            api_addr,
            token.clone(),
            None,
            std::sync::Arc::clone(&devnet.nodes[0]),
            async {
                let _ = api_stopped.await;
            },
        )
        .await;
        let (addr, api_task) = match served {
            Ok(served) => served,
            Err(e) => {
                devnet.shutdown().await;
                return Err(e).with_context(|| {
                    format!("cannot serve the first member's API on {api_addr}: choose another --api-port")
                });
            }
        };
        out!(
            "Web page of {}: http://{addr}/ (token {token}); its API takes the same token.",
            devnet.names[0]
        );
        out!(
            "Publishing a sample bulletin every {} ms from each member in turn. Ctrl-C to stop.\n",
            args.interval_ms
        );
        let result = live_view(&devnet, &args, &mut interrupt).await;
        let _ = stop_api.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), api_task).await;
        // Stopped whatever becomes of the output.
        let said = (|| -> Result<()> {
            out!("\nStopping...");
            Ok(())
        })();
        devnet.shutdown().await;
        result.and(said)
    })
}

/// The bulletin an event says has reached a node, and when: by gossip, when
/// the node held it; by catch-up sync, when the view hears of it.
fn arrival(event: &NodeEvent) -> Option<(BulletinId, SystemTime)> {
    match event {
        NodeEvent::BulletinReceived {
            bulletin, held_at, ..
        } => Some((bulletin.id(), *held_at)),
        NodeEvent::BulletinStored {
            id,
            origin: Origin::Sync(_),
            ..
        } => Some((*id, SystemTime::now())),
        _ => None,
    }
}

/// The line that says `name` published `b`, `after` it.
fn published_line(start: Instant, name: &str, b: &herald_protocol::SignedBulletin, after: &str) -> String {
    let body = b.body();
    format!(
        "[{:>7.2}s] {name} published {} #{} {} {:?} \"{}\"  id {}{after}",
        start.elapsed().as_secs_f64(),
        body.kind.name(),
        body.seq,
        body.tlp,
        body.severity,
        herald_node::terminal::escape_line(&body.title),
        b.id().fmt_short(),
    )
}

async fn live_view(
    devnet: &Devnet,
    args: &DevnetArgs,
    interrupt: &mut tokio::signal::unix::Signal,
) -> Result<()> {
    let n = devnet.nodes.len();
    let (tx, mut events) = mpsc::channel::<(usize, NodeEvent)>(VIEW_CAPACITY);
    for (index, node) in devnet.nodes.iter().enumerate() {
        let mut sub = node.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        if tx.send((index, e)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    let deadline = (args.count > 0).then(|| {
        tokio::time::Instant::now()
            + Duration::from_millis(args.interval_ms) * (args.count as u32 + 2)
            + Duration::from_secs(30)
    });
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(10)));
    let mut tracked: HashMap<BulletinId, Tracked> = HashMap::new();
    // Bulletins that reached every node (a late copy is not news).
    let mut done: HashSet<BulletinId> = HashSet::new();
    let members: Vec<_> = devnet.nodes.iter().map(|node| node.member()).collect();
    let mut own_last: Vec<Option<BulletinId>> = vec![None; n];
    let mut last: Option<(usize, BulletinId)> = None;
    let (mut published, mut complete) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                bail!("only {complete} of {} bulletins reached every node in time", args.count);
            }
            _ = tick.tick(), if args.count == 0 || published < args.count => {
                let publisher = (published as usize) % n;
                let other = last.filter(|(p, _)| *p != publisher).map(|(_, id)| id);
                let draft = sample_draft(published, own_last[publisher], other);
                let sent = SystemTime::now();
                match devnet.nodes[publisher].publish(draft).await {
                    Ok(b) => {
                        out!("{}", published_line(start, &devnet.names[publisher], &b, ""));
                        tracked.insert(b.id(), Tracked { sent, publisher, reached: BTreeSet::new(), slowest: 0.0 });
                        own_last[publisher] = Some(b.id());
                        last = Some((publisher, b.id()));
                        published += 1;
                    }
                    Err(e) => out!("  {} could not publish: {e}", devnet.names[publisher]),
                }
            }
            Some((index, event)) = events.recv() => match event {
                event if arrival(&event).is_some() => {
                    let Some((id, at)) = arrival(&event) else { continue };
                    // One published through a node's web page or API: followed
                    // from the time it says it was made.
                    if let NodeEvent::BulletinReceived { bulletin, member, .. } = &event
                        && !tracked.contains_key(&id)
                        && !done.contains(&id)
                        && let Some(publisher) = members.iter().position(|m| m == member)
                    {
                        out!(
                            "{}",
                            published_line(start, &devnet.names[publisher], bulletin, " (through its web page or API)")
                        );
                        let body = bulletin.body();
                        let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(body.created.0);
                        tracked.insert(id, Tracked { sent, publisher, reached: BTreeSet::new(), slowest: 0.0 });
                    }
                    let Some(t) = tracked.get_mut(&id) else { continue };
                    if index == t.publisher || !t.reached.insert(index) {
                        continue;
                    }
                    let ms = at.duration_since(t.sent).unwrap_or_default().as_secs_f64() * 1000.0;
                    t.slowest = t.slowest.max(ms);
                    out!("            {} -> {:<10} {:>7.1} ms  ({}/{})", id.fmt_short(), devnet.names[index], ms, t.reached.len() + 1, n);
                    if t.reached.len() + 1 == n {
                        out!("            {} reached all {n} nodes in {:.1} ms", id.fmt_short(), t.slowest);
                        tracked.remove(&id);
                        if done.len() >= 100_000 {
                            done.clear();
                        }
                        done.insert(id);
                        complete += 1;
                        if args.count > 0 && complete >= args.count {
                            out!("\n{complete} bulletins reached every node.");
                            return Ok(());
                        }
                    }
                }
                NodeEvent::Rejected { peer, reason } => out!("  {} rejected input from {peer}: {}", devnet.names[index], herald_node::terminal::escape_line(&reason)),
                NodeEvent::Equivocation { signer, seq, .. } => out!("  {} saw EQUIVOCATION by {} at #{seq}", devnet.names[index], signer.fmt_short()),
                _ => {}
            },
        }
    }
}
