//! The node's status and event counts in the Prometheus text format
//! (`GET /metrics` on the local API).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::events::EventCounts;
use crate::view::StatusView;

/// The exposition of `status` and `counts`: one `# HELP` and `# TYPE` line per
/// metric, then its samples.
pub fn render(status: &StatusView, counts: &EventCounts) -> String {
    let mut out = String::new();
    let tree = &status.tree;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let gauges: [(&str, &str, u64); 14] = [
        ("herald_bulletins", "Bulletins held.", status.bulletins),
        (
            "herald_peers",
            "Members' nodes connected.",
            status.connected_peers.len() as u64,
        ),
        (
            "herald_registry_version",
            "Registry version.",
            status.registry_version,
        ),
        (
            "herald_registry_forks_held",
            "Registry versions for which the node holds another approved update than its own, not settled by the branch rule: the members' nodes may hold different registries.",
            status.registry_forks as u64,
        ),
        (
            "herald_registry_forks_settled",
            "Registry versions whose forks the branch rule settled in this node's favour (its branch holds a change that needs the threshold from there).",
            status.registry_forks_settled as u64,
        ),
        (
            "herald_registry_switches",
            "Times the registry took another branch since the node started (members' own changes gave way; the log names them).",
            status.registry_switches,
        ),
        (
            "herald_equivocations",
            "Bulletins held as proof of equivocation, beyond the first of each key and number.",
            status.equivocations as u64,
        ),
        (
            "herald_own_bulletins_waiting",
            "Own bulletins stored and not yet sent (no peer linked, or every link's queue more than half full).",
            status.pending_gossip as u64,
        ),
        (
            "herald_sync_sessions_running",
            "Catch-up sessions running.",
            status.syncing as u64,
        ),
        (
            "herald_sync_behind_bulletins",
            "Bulletins the last catch-up peer held that this node still lacks.",
            status.behind,
        ),
        (
            "herald_own_chain_numbered_up_to",
            "The highest number of the signing key's chain held: the next publication follows it.",
            status.own_chain.numbered_up_to,
        ),
        (
            "herald_tree_pushes_to",
            "Peers the node pushes bulletins to in full.",
            tree.pushes_to as u64,
        ),
        (
            "herald_tree_receives_from",
            "Peers that push bulletins to the node in full.",
            tree.receives_from as u64,
        ),
        (
            "herald_watches_open",
            "Live feeds of new bulletins open now (herald watch, the web page, GET /v1/watch).",
            count(&counts.watches_open),
        ),
    ];
    for (name, help, value) in gauges {
        metric(&mut out, name, help, "gauge", &[("", value)]);
    }
    metric(
        &mut out,
        "herald_bulletins_stored_total",
        "New bulletins stored since start, by where they came from.",
        "counter",
        &[
            ("origin=\"local\"", count(&counts.stored_local)),
            ("origin=\"gossip\"", count(&counts.stored_gossip)),
            ("origin=\"sync\"", count(&counts.stored_sync)),
            ("origin=\"bundle\"", count(&counts.stored_bundle)),
        ],
    );
    metric(
        &mut out,
        "herald_sync_sessions_total",
        "Catch-up sessions ended since start, by result.",
        "counter",
        &[
            ("result=\"completed\"", count(&counts.sync_completed)),
            ("result=\"failed\"", count(&counts.sync_failed)),
        ],
    );
    metric(
        &mut out,
        "herald_tree_held_back_total",
        "Since start: what peers asked of the tree beyond their bounds, by bound (a fast rise points at a member's node that misbehaves).",
        "counter",
        &[
            ("bound=\"announcements\"", tree.announcements_ignored),
            ("bound=\"graft_answers\"", tree.graft_answers_refused),
            ("bound=\"control_frames\"", tree.control_frames_skipped),
        ],
    );
    let counters: [(&str, &str, u64); 7] = [
        (
            "herald_rejected_total",
            "Messages and catch-up answers rejected since start, each counted against its sender.",
            count(&counts.rejected),
        ),
        (
            "herald_peers_banned_total",
            "Peers disconnected for ten minutes for repeated invalid input, since start.",
            count(&counts.banned),
        ),
        (
            "herald_equivocations_found_total",
            "Equivocations found since start.",
            count(&counts.equivocations),
        ),
        (
            "herald_registry_forks_total",
            "Registry forks seen since start (two approved updates for one version).",
            count(&counts.registry_forks),
        ),
        (
            "herald_tree_duplicates_total",
            "Bulletins received in full more than once, since start.",
            tree.duplicates,
        ),
        (
            "herald_tree_grafted_total",
            "Bulletin ids asked for by graft since start (the tree mending).",
            tree.grafted,
        ),
        (
            "herald_tree_frames_dropped_total",
            "Frames dropped since start because a peer's queue was full (it gets them by sync).",
            tree.frames_dropped,
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, help, "counter", &[("", value)]);
    }
    out
}

/// One metric: its help and type, then a sample per label set (`""` for none).
fn metric(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status() -> StatusView {
        StatusView {
            peer_id: String::new(),
            member: herald_protocol::MemberId::from_bytes([1; 32]),
            network: String::new(),
            registry_version: 3,
            registry_forks: 1,
            registry_forks_settled: 2,
            registry_switches: 0,
            bulletins: 1234,
            connected_peers: vec!["a".into(), "b".into()],
            listen: Vec::new(),
            equivocations: 0,
            pending_gossip: 0,
            syncing: 1,
            last_sync: None,
            behind: 0,
            own_chain: crate::view::OwnChainView {
                numbered_up_to: 7,
                checked: true,
                claims: Vec::new(),
            },
            tree: crate::network::TreeStatus {
                duplicates: 5,
                announcements_ignored: 2,
                ..Default::default()
            },
        }
    }

    #[test]
    fn every_metric_has_help_a_type_and_samples_that_parse() {
        let counts = EventCounts::default();
        counts.stored_gossip.fetch_add(9, Ordering::Relaxed);
        counts.sync_failed.fetch_add(1, Ordering::Relaxed);
        let text = render(&status(), &counts);
        for expected in [
            "herald_bulletins 1234\n",
            "herald_peers 2\n",
            "herald_registry_version 3\n",
            "herald_registry_forks_held 1\n",
            "herald_registry_forks_settled 2\n",
            "herald_own_chain_numbered_up_to 7\n",
            "herald_bulletins_stored_total{origin=\"gossip\"} 9\n",
            "herald_bulletins_stored_total{origin=\"local\"} 0\n",
            "herald_sync_sessions_total{result=\"failed\"} 1\n",
            "herald_tree_held_back_total{bound=\"announcements\"} 2\n",
            "herald_tree_duplicates_total 5\n",
            "herald_watches_open 0\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        // The text format's rules: each metric's HELP and TYPE come once,
        // before its samples; every sample is a name (with labels), a space
        // and a number.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["gauge", "counter"].contains(&kind), "{line}");
                assert!(!declared.contains(&name), "{name} declared twice");
                declared.push(name);
            } else if !line.starts_with("# HELP ") {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert_eq!(declared.last(), Some(&name), "{line}: not after its TYPE");
                assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
                value.parse::<u64>().unwrap();
            }
        }
        assert_eq!(declared.len(), 24);
    }
}
