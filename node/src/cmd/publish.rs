//! `herald publish`: builds a draft from the command line and publishes it
//! through the running node's API.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use herald_node::Draft;
use herald_node::api::Published;
use herald_node::config::Config;
use herald_protocol::{
    AdvisoryStatus, BulletinId, FollowUpAction, IncidentPhase, Kind, MemberId, MetricCount, Payload,
    Reference, Severity, Timestamp, Tlp, UpdateStage,
};
use serde::de::DeserializeOwned;

use crate::cli::{KindArg, PublishArgs, SeverityArg, TlpArg};
use crate::client::Client;

pub(crate) fn run(mut args: PublishArgs) -> Result<()> {
    let config = Config::load(&args.dir)?;
    let client = Client::new(config.api.listen, &args.dir);
    // An audience may be named by member name: the node's registry says whose.
    if args.audience.iter().any(|a| a.parse::<MemberId>().is_err()) {
        let members = super::members_of(&client, false)?;
        for a in &mut args.audience {
            if a.parse::<MemberId>().is_err() {
                *a = super::member_named("--audience", a, &members)?.to_string();
            }
        }
    }
    let draft = draft_from(&args)?;
    let path = if args.new_chain {
        "/v1/bulletins?new_chain=true"
    } else {
        "/v1/bulletins"
    };
    // The first publication after the node starts may wait (up to 10 s) for
    // its peers to bring back its chain: say so rather than hang silently.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let notice = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(std::time::Duration::from_secs(1))
        {
            eprintln!(
                "Waiting for the node: after it starts, its first publication waits (up to 10 s) for its peers to bring back what they hold of its chain."
            );
        }
    });
    let published = client.post::<_, Published>(path, &draft);
    drop(done);
    let _ = notice.join();
    let published = published?;
    out!("{}", published.id);
    Ok(())
}

/// A named value of one of the protocol's kebab-case enums.
fn named<T: DeserializeOwned>(what: &str, value: &str, choices: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| anyhow!("{what} {value:?} is not one of: {choices}"))
}

fn bulletin_id(what: &str, value: &str) -> Result<BulletinId> {
    value.parse().with_context(|| format!("{what} {value:?}"))
}

pub(crate) fn severity(s: SeverityArg) -> Severity {
    match s {
        SeverityArg::Informational => Severity::Informational,
        SeverityArg::Low => Severity::Low,
        SeverityArg::Medium => Severity::Medium,
        SeverityArg::High => Severity::High,
        SeverityArg::Critical => Severity::Critical,
    }
}

pub(crate) fn tlp(t: TlpArg) -> Tlp {
    match t {
        TlpArg::Clear => Tlp::Clear,
        TlpArg::Green => Tlp::Green,
        TlpArg::Amber => Tlp::Amber,
        TlpArg::AmberStrict => Tlp::AmberStrict,
        TlpArg::Red => Tlp::Red,
    }
}

fn draft_from(args: &PublishArgs) -> Result<Draft> {
    let now = herald_node::node::now();
    let (bytes, guessed) = match (&args.body_file, &args.body) {
        (Some(path), _) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            if size > herald_protocol::MAX_BULLETIN_BYTES as u64 {
                bail!(
                    "{} is {size} bytes; a bulletin holds at most {} bytes in all. Publish a shorter summary, with a link to the full document (--url)",
                    path.display(),
                    herald_protocol::MAX_BULLETIN_BYTES
                );
            }
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let guessed = content_type_for(path, &bytes);
            (bytes, guessed)
        }
        (None, Some(text)) => (text.clone().into_bytes(), "text/markdown"),
        (None, None) => (Vec::new(), "text/markdown"),
    };
    // A CSAF document names its own title, label, severity and CVE ids.
    let csaf = herald_node::csaf::read(&bytes);
    let document_tlp = match csaf.as_ref().map(|c| c.tlp()).transpose() {
        Ok(label) => label.flatten(),
        // Nothing is stricter than RED: an unknown label does not matter then.
        Err(_) if matches!(args.tlp, Some(TlpArg::Red)) => None,
        Err(e) => return Err(e.into()),
    };
    let tlp = match (args.tlp.map(tlp), document_tlp) {
        (Some(given), Some(_)) => {
            herald_node::csaf::check_tlp(&bytes, given)?;
            given
        }
        (Some(given), None) => given,
        (None, Some(document)) => document,
        (None, None) => bail!(match csaf {
            Some(_) =>
                "the CSAF document has no TLP label (document.distribution.tlp.label): give one with --tlp",
            None => "give a TLP label with --tlp (clear, green, amber, amber+strict, red)",
        }),
    };
    let title = match (&args.title, csaf.as_ref().and_then(|c| c.title.clone())) {
        (Some(given), _) => given.clone(),
        (None, Some(document)) => {
            herald_protocol::check_title(&document).map_err(|e| {
                anyhow!("the CSAF document's title will not do as a bulletin's ({e}): give one with --title")
            })?;
            document
        }
        (None, None) => bail!(match csaf {
            Some(_) => "the CSAF document has no title (document.title): give one with --title",
            None => "give a one-line title with --title",
        }),
    };
    let severity = match (
        args.severity.map(severity),
        csaf.as_ref().and_then(|c| c.severity),
    ) {
        (Some(given), _) => given,
        (None, Some(document)) => document,
        (None, None) => bail!(match csaf {
            Some(_) =>
                "the CSAF document has no CVSS score or aggregate severity Herald can read: give one with --severity",
            None => "give a severity with --severity (informational, low, medium, high, critical)",
        }),
    };
    let kind_arg = match (args.kind, &csaf) {
        (Some(kind), _) => kind,
        (None, Some(_)) => KindArg::Advisory,
        (None, None) => bail!(
            "give the kind of bulletin with --kind ({})",
            Kind::NAMES.join(", ")
        ),
    };
    let kind = match kind_arg {
        KindArg::Advisory => Kind::VulnerabilityAdvisory {
            status: named::<AdvisoryStatus>(
                "status",
                &args.status,
                "under-investigation, confirmed, mitigated, fixed, not-affected",
            )?,
        },
        KindArg::Update => Kind::SoftwareUpdate {
            stage: named::<UpdateStage>("stage", &args.stage, "upcoming, released")?,
        },
        KindArg::Incident => Kind::IncidentReport {
            phase: named::<IncidentPhase>("phase", &args.phase, "detected, ongoing, contained, resolved")?,
        },
        KindArg::Metrics => {
            let period = super::parse_duration(&args.period)?;
            let counts = args
                .metrics
                .iter()
                .map(|m| {
                    let (name, value) = m
                        .split_once('=')
                        .ok_or_else(|| anyhow!("metric {m:?} is not NAME=VALUE"))?;
                    Ok(MetricCount {
                        name: name.to_string(),
                        value: value
                            .parse()
                            .with_context(|| format!("metric {m:?}: VALUE must be a count"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if counts.is_empty() {
                bail!("a metrics bulletin needs at least one --metric NAME=VALUE");
            }
            Kind::IncidentMetrics {
                period_start: Timestamp(now.0.saturating_sub(period.as_millis() as u64)),
                period_end: now,
                counts,
            }
        }
        KindArg::Emergency => Kind::EmergencyAlert,
        KindArg::Product => Kind::ProductSecurity,
        KindArg::Outreach => Kind::Outreach,
        KindArg::FollowUp => Kind::FollowUp {
            on: bulletin_id(
                "--on",
                args.on
                    .as_deref()
                    .ok_or_else(|| anyhow!("a follow-up needs --on ID"))?,
            )?,
            action: named::<FollowUpAction>(
                "action",
                &args.action,
                "acknowledge, update, request-information, answer, close",
            )?,
        },
        KindArg::Withdrawal => Kind::Withdrawal {
            of: bulletin_id(
                "--of",
                args.of
                    .as_deref()
                    .ok_or_else(|| anyhow!("a withdrawal needs --of ID"))?,
            )?,
            reason: args
                .reason
                .clone()
                .ok_or_else(|| anyhow!("a withdrawal needs --reason TEXT"))?,
        },
    };
    let mut references: Vec<Reference> = Vec::new();
    references.extend(args.cves.iter().map(|c| Reference::Cve(c.clone())));
    references.extend(args.urls.iter().map(|u| Reference::Url(u.clone())));
    for r in &args.refs {
        references.push(Reference::Bulletin(bulletin_id("--ref", r)?));
    }
    // The document's CVE ids, after those given, as many as fit.
    if let Some(document) = &csaf {
        let new: Vec<&String> = document.cves.iter().filter(|c| !args.cves.contains(c)).collect();
        let room = herald_protocol::bulletin::MAX_REFERENCES.saturating_sub(references.len());
        if new.len() > room {
            eprintln!(
                "The CSAF document names {} more CVE ids; a bulletin lists at most {} references, so it lists the first {room} of them. All are in the document.",
                new.len(),
                herald_protocol::bulletin::MAX_REFERENCES
            );
        }
        references.extend(new.into_iter().take(room).map(|c| Reference::Cve(c.clone())));
    }
    let mut audience = args
        .audience
        .iter()
        .map(|m| m.parse::<MemberId>().with_context(|| format!("--audience {m:?}")))
        .collect::<Result<Vec<_>>>()?;
    audience.sort();
    audience.dedup();
    let expires = match &args.expires_in {
        Some(d) => Some(Timestamp(
            now.0.saturating_add(super::parse_duration(d)?.as_millis() as u64),
        )),
        None => None,
    };
    Ok(Draft {
        kind,
        tlp,
        severity,
        title,
        references,
        supersedes: args
            .supersedes
            .as_deref()
            .map(|s| bulletin_id("--supersedes", s))
            .transpose()?,
        expires,
        audience,
        payload: Payload {
            content_type: args.content_type.clone().unwrap_or_else(|| guessed.to_string()),
            bytes,
        },
        created: Some(now),
    })
}

/// The media type of a content file: CSAF advisories are recognised by their
/// `document.csaf_version`.
fn content_type_for(path: &Path, bytes: &[u8]) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            let is_csaf = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("document")?.get("csaf_version").cloned())
                .is_some();
            if is_csaf {
                "application/csaf+json"
            } else {
                "application/json"
            }
        }
        Some("md") => "text/markdown",
        Some("txt") => "text/plain",
        _ if std::str::from_utf8(bytes).is_ok() => "text/plain",
        _ => "application/octet-stream",
    }
}
