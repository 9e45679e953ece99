//! A local network of nodes in one process, on 127.0.0.1 with temporary
//! stores and a freshly generated registry, plus sample bulletins of every
//! kind: what `herald devnet` runs for a first look.

use std::sync::Arc;
use std::time::Duration;

use herald_keys::{Founder, SecretKey, founding_genesis};
use herald_protocol::{
    AdvisoryStatus, BulletinId, FollowUpAction, IncidentPhase, Kind, MetricCount, Payload, Reference,
    Severity, Timestamp, Tlp, UpdateStage,
};
use libp2p::multiaddr::Protocol;

use crate::events::NodeEvent;
use crate::network::GossipTiming;
use crate::node::{Draft, KeyPast, Node, NodeSettings, StartError};

/// How long to wait for the nodes to listen and connect.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the devnet could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnetError {
    /// A temporary directory could not be created.
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[from] std::io::Error),
    /// Randomness is unavailable.
    #[error("cannot generate keys: {0}")]
    Keys(String),
    /// The generated genesis is not valid (a bug).
    #[error("cannot build the genesis: {0}")]
    Genesis(String),
    /// A node did not start.
    #[error("node {index} did not start: {source}")]
    Start {
        /// Which node.
        index: usize,
        /// Why.
        source: StartError,
    },
    /// The nodes did not connect in time.
    #[error("the nodes did not connect within {0:?}")]
    Timeout(Duration),
}

/// A running local network.
pub struct Devnet {
    /// The nodes, in ring order.
    pub nodes: Vec<Arc<Node>>,
    /// The members' names, by node.
    pub names: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Devnet {
    /// Starts `n` nodes in a ring on loopback and waits until each is connected.
    pub async fn start(n: usize) -> Result<Devnet, DevnetError> {
        let dir = tempfile::Builder::new().prefix("herald-devnet-").tempdir()?;
        let generate = || SecretKey::generate().map_err(|e| DevnetError::Keys(e.to_string()));
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push([generate()?, generate()?, generate()?]);
        }
        let names: Vec<String> = (1..=n).map(|i| format!("member-{i}")).collect();
        let founders: Vec<Founder<'_>> = keys
            .iter()
            .zip(&names)
            .map(|(keys, name)| Founder::from_keys(name, keys))
            .collect();
        let genesis = founding_genesis(&founders, (n / 2 + 1) as u32, crate::node::now())
            .map_err(|e| DevnetError::Genesis(e.to_string()))?;
        let mut nodes = Vec::with_capacity(n);
        for (index, [_, signing, node_key]) in keys.into_iter().enumerate() {
            let settings = NodeSettings {
                data_dir: dir.path().join(&names[index]),
                genesis: genesis.clone(),
                genesis_hash: genesis.hash(),
                signing_key: signing,
                node_key,
                listen: vec![
                    "/ip4/127.0.0.1/tcp/0"
                        .parse()
                        .map_err(|_| DevnetError::Timeout(STARTUP_TIMEOUT))?,
                ],
                bootstrap: Vec::new(),
                mdns: false,
                handshakes_per_address: crate::network::DEFAULT_HANDSHAKES_PER_ADDRESS,
                timing: GossipTiming::fast(),
                // Keys made for this devnet: they have signed nothing.
                key_past: KeyPast::New,
            };
            let node = Node::start(settings)
                .await
                .map_err(|source| DevnetError::Start { index, source })?;
            nodes.push(Arc::new(node));
        }
        let devnet = Devnet {
            nodes,
            names,
            _dir: dir,
        };
        tokio::time::timeout(STARTUP_TIMEOUT, devnet.connect_ring())
            .await
            .map_err(|_| DevnetError::Timeout(STARTUP_TIMEOUT))?;
        Ok(devnet)
    }

    async fn connect_ring(&self) {
        let n = self.nodes.len();
        let mut subscribed: Vec<_> = self.nodes.iter().map(|node| node.subscribe()).collect();
        let mut addrs = Vec::with_capacity(n);
        for node in &self.nodes {
            loop {
                if let Some(addr) = node.listen_addrs().await.into_iter().next() {
                    addrs.push(addr.with(Protocol::P2p(node.peer_id())));
                    break;
                }
                // Wait for the listener to come up (bounded by the caller's timeout).
                let mut events = node.subscribe();
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while let Ok(e) = events.recv().await {
                        if matches!(e, NodeEvent::Listening(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        let links = if n == 2 { 1 } else { n };
        for i in 0..links {
            self.nodes[i].dial(addrs[(i + 1) % n].clone()).await;
        }
        // Every node links at least one peer for bulletins.
        for events in &mut subscribed {
            while let Ok(e) = events.recv().await {
                if matches!(e, NodeEvent::PeerSubscribed(_)) {
                    break;
                }
            }
        }
    }

    /// Stops every node (each once nothing else holds it: stop what serves
    /// a node's API first).
    pub async fn shutdown(self) {
        for node in self.nodes {
            match Arc::into_inner(node) {
                Some(node) => node.shutdown().await,
                None => tracing::warn!("a devnet node is still in use; stopping without waiting for it"),
            }
        }
    }
}

/// The `i`-th sample bulletin; `own_earlier` is an earlier bulletin of the same
/// member (for follow-ups, supersessions and withdrawals) and `other` one of
/// another member.
pub fn sample_draft(i: u64, own_earlier: Option<BulletinId>, other: Option<BulletinId>) -> Draft {
    let now = crate::node::now();
    let text = |s: &str| Payload {
        content_type: "text/markdown".into(),
        bytes: s.as_bytes().to_vec(),
    };
    let (kind, tlp, severity, title, payload) = match i % 9 {
        0 => (
            Kind::VulnerabilityAdvisory {
                status: AdvisoryStatus::UnderInvestigation,
            },
            Tlp::Amber,
            Severity::High,
            "Remote code execution in a widely used logging library",
            text("Exploitation observed. Mitigation: disable message lookups."),
        ),
        1 => (
            Kind::SoftwareUpdate {
                stage: UpdateStage::Upcoming,
            },
            Tlp::Green,
            Severity::Medium,
            "Firmware update for industrial gateways due next week",
            text("Vendor patch window announced for all supported models."),
        ),
        2 => (
            Kind::IncidentReport {
                phase: IncidentPhase::Ongoing,
            },
            Tlp::Red,
            Severity::Critical,
            "Ransomware affecting regional hospital network",
            text("Indicators attached; coordinate through the incident channel."),
        ),
        3 => (
            Kind::IncidentMetrics {
                period_start: Timestamp(now.0.saturating_sub(86_400_000)),
                period_end: now,
                counts: vec![
                    MetricCount {
                        name: "phishing-reports".into(),
                        value: 412,
                    },
                    MetricCount {
                        name: "ddos-events".into(),
                        value: 7,
                    },
                ],
            },
            Tlp::Green,
            Severity::Informational,
            "Daily incident metrics",
            text("Counts over the last 24 hours."),
        ),
        4 => (
            Kind::EmergencyAlert,
            Tlp::Amber,
            Severity::Critical,
            "Nationwide outage of emergency call routing",
            text("Use the fallback numbers until further notice."),
        ),
        5 => (
            Kind::ProductSecurity,
            Tlp::Clear,
            Severity::Low,
            "Hardening guide for VPN appliances",
            text("Disable legacy ciphers; enforce MFA for administrators."),
        ),
        6 => (
            Kind::Outreach,
            Tlp::Clear,
            Severity::Informational,
            "Awareness campaign material for small businesses",
            text("Posters and slides in all member languages."),
        ),
        7 => match other {
            Some(on) => (
                Kind::FollowUp {
                    on,
                    action: FollowUpAction::Acknowledge,
                },
                Tlp::Green,
                Severity::Informational,
                "Acknowledged; our analysts are on it",
                text("We see the same indicators in our constituency."),
            ),
            None => return sample_draft(i + 1, own_earlier, other),
        },
        _ => match own_earlier {
            Some(of) => (
                Kind::Withdrawal {
                    of,
                    reason: "superseded by a corrected advisory".into(),
                },
                Tlp::Green,
                Severity::Informational,
                "Withdrawn: earlier notice",
                text("Please disregard the earlier notice."),
            ),
            None => return sample_draft(i + 1, own_earlier, other),
        },
    };
    let references = if matches!(kind, Kind::VulnerabilityAdvisory { .. }) {
        vec![
            Reference::Cve("CVE-2021-44228".into()),
            Reference::Url("https://logging.apache.org/log4j/2.x/security.html".into()),
        ]
    } else {
        Vec::new()
    };
    Draft {
        kind,
        tlp,
        severity,
        title: title.into(),
        references,
        supersedes: None,
        expires: None,
        audience: Vec::new(),
        payload,
        created: Some(now),
    }
}
