//! The bulletin: its body (what a member says), the signed form that travels and
//! is stored, the kinds of bulletin members exchange, and the rules every body obeys.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::ids::{BulletinId, KeyId, MemberId, NetworkId, Seq, Timestamp};
use crate::signing::Signature;

/// The bulletin body format this crate writes and reads.
pub const BULLETIN_FORMAT: u16 = 1;

/// Largest signed bulletin, in bytes (body, length prefix and signature).
///
/// 256 KiB holds the largest real CSAF advisory in our test data (127 KiB) with
/// room to spare, and still fits one gossipsub frame with headroom, so a bulletin
/// never needs fragmenting. Nodes must configure their transport for it.
pub const MAX_BULLETIN_BYTES: usize = 256 * 1024;

/// Allocation bincode may claim beyond the input limit while decoding a
/// bulletin: it claims a list's in-memory size before decoding it, which for
/// the bulletin's short lists is at most a few KiB more than their wire size.
const CLAIM_SLACK: usize = 64 * 1024;

/// Longest title, in bytes of UTF-8.
pub const MAX_TITLE_BYTES: usize = 256;
/// Most references in one bulletin.
pub const MAX_REFERENCES: usize = 64;
/// Longest single reference (CVE id or URL), in bytes.
pub const MAX_REFERENCE_BYTES: usize = 512;
/// Most members named in an audience.
pub const MAX_AUDIENCE: usize = 256;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Longest withdrawal reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most counters in one incident-metrics bulletin.
pub const MAX_METRICS: usize = 64;
/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 64;

/// Bytes the signed envelope adds around the body: the body's 8-byte length
/// prefix and the 64-byte signature.
pub const ENVELOPE_OVERHEAD: usize = 8 + 64;

/// Traffic Light Protocol 2.0 label: who may see the bulletin beyond its recipients.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Tlp {
    /// TLP:CLEAR: no limit on disclosure.
    Clear,
    /// TLP:GREEN: the recipient's community.
    Green,
    /// TLP:AMBER: the recipient's organisation and its clients.
    Amber,
    /// TLP:AMBER+STRICT: the recipient's organisation only.
    #[serde(rename = "AMBER+STRICT")]
    AmberStrict,
    /// TLP:RED: the named recipients only.
    Red,
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tlp::Clear => "TLP:CLEAR",
            Tlp::Green => "TLP:GREEN",
            Tlp::Amber => "TLP:AMBER",
            Tlp::AmberStrict => "TLP:AMBER+STRICT",
            Tlp::Red => "TLP:RED",
        })
    }
}

/// How severe the issue is, in the publisher's judgement.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information; nothing to act on.
    Informational,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical: act now.
    Critical,
}

/// Where an advisory's vulnerability stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvisoryStatus {
    /// Publicly known, under investigation.
    UnderInvestigation,
    /// Confirmed, no fix yet.
    Confirmed,
    /// A mitigation exists, no fix yet.
    Mitigated,
    /// Fixed.
    Fixed,
    /// Investigated; the products concerned are not affected.
    NotAffected,
}

/// Whether a software update is announced or out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStage {
    /// Announced ahead of release.
    Upcoming,
    /// Released.
    Released,
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentPhase {
    /// Just detected.
    Detected,
    /// Ongoing.
    Ongoing,
    /// Contained.
    Contained,
    /// Resolved.
    Resolved,
}

/// What a follow-up does to the bulletin it answers (joint incident response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FollowUpAction {
    /// Received and read.
    Acknowledge,
    /// New information on the same matter.
    Update,
    /// Asks the author for more.
    RequestInformation,
    /// Answers a request.
    Answer,
    /// Closes the matter from this member's side.
    Close,
}

/// One counter in an incident-metrics bulletin.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct MetricCount {
    /// What is counted, e.g. `phishing-reports`.
    pub name: String,
    /// The count over the period.
    pub value: u64,
}

/// What kind of bulletin this is, with the facts specific to that kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Kind {
    /// An advisory on a publicly known vulnerability.
    VulnerabilityAdvisory {
        /// Where it stands.
        status: AdvisoryStatus,
    },
    /// A notice of an upcoming or released software update.
    SoftwareUpdate {
        /// Announced or out.
        stage: UpdateStage,
    },
    /// Information on a security incident.
    IncidentReport {
        /// Where the incident stands.
        phase: IncidentPhase,
    },
    /// Counts of incidents over a period.
    IncidentMetrics {
        /// Start of the period (inclusive).
        period_start: Timestamp,
        /// End of the period (exclusive).
        period_end: Timestamp,
        /// The counters.
        counts: Vec<MetricCount>,
    },
    /// Incident information in a critical emergency.
    EmergencyAlert,
    /// Product-security information.
    ProductSecurity,
    /// Outreach and education material.
    Outreach,
    /// A follow-up on an earlier bulletin, for joint incident response.
    FollowUp {
        /// The bulletin answered.
        on: BulletinId,
        /// What this follow-up does.
        action: FollowUpAction,
    },
    /// Withdrawal of one's own earlier bulletin.
    Withdrawal {
        /// The bulletin withdrawn (same member).
        of: BulletinId,
        /// Why.
        reason: String,
    },
}

impl Kind {
    /// Every kind's [`Kind::name`].
    pub const NAMES: [&'static str; 9] = [
        "advisory",
        "update",
        "incident",
        "metrics",
        "emergency",
        "product",
        "outreach",
        "follow-up",
        "withdrawal",
    ];

    /// `name` if it is a kind's [`Kind::name`]; otherwise says which are.
    pub fn check_name(name: &str) -> Result<(), String> {
        match Self::NAMES.contains(&name) {
            true => Ok(()),
            false => Err(format!(
                "no kind is named {name:?}; the kinds are {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// Short stable name, as used on the command line and in indexes.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::VulnerabilityAdvisory { .. } => "advisory",
            Kind::SoftwareUpdate { .. } => "update",
            Kind::IncidentReport { .. } => "incident",
            Kind::IncidentMetrics { .. } => "metrics",
            Kind::EmergencyAlert => "emergency",
            Kind::ProductSecurity => "product",
            Kind::Outreach => "outreach",
            Kind::FollowUp { .. } => "follow-up",
            Kind::Withdrawal { .. } => "withdrawal",
        }
    }
}

/// Something a bulletin points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
pub enum Reference {
    /// A CVE id such as `CVE-2021-44228`.
    Cve(String),
    /// An `https://` or `http://` URL.
    Url(String),
    /// Another bulletin.
    Bulletin(BulletinId),
}

/// The content of a bulletin: a media type and the exact bytes.
#[derive(Clone, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct Payload {
    /// Media type, e.g. `text/markdown` or `application/csaf+json`.
    pub content_type: String,
    /// The bytes, carried unchanged.
    #[serde(with = "hex_bytes")]
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({}, {} bytes)", self.content_type, self.bytes.len())
    }
}

/// What a member says in one bulletin. Signed as its exact encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct BulletinBody {
    /// Body format; [`BULLETIN_FORMAT`].
    pub format: u16,
    /// The network this bulletin belongs to (hash of its genesis registry).
    pub network: NetworkId,
    /// The key that signs this bulletin.
    pub signer: KeyId,
    /// Position in the signer's chain, from 1.
    pub seq: Seq,
    /// Id of the signer's previous bulletin; `None` exactly when `seq` is 1.
    pub prev: Option<BulletinId>,
    /// When the author created it.
    pub created: Timestamp,
    /// What kind of bulletin it is.
    pub kind: Kind,
    /// Traffic Light Protocol label.
    pub tlp: Tlp,
    /// Severity.
    pub severity: Severity,
    /// One-line title.
    pub title: String,
    /// CVE ids, URLs, other bulletins.
    pub references: Vec<Reference>,
    /// An earlier bulletin of the same member that this one replaces.
    pub supersedes: Option<BulletinId>,
    /// When the information stops being current.
    pub expires: Option<Timestamp>,
    /// Members meant to read it, ascending by id; empty means every member.
    pub audience: Vec<MemberId>,
    /// The content.
    pub payload: Payload,
}

impl BulletinBody {
    /// The canonical bytes of this body. Fails if the body breaks a rule
    /// (see [`BulletinBody::validate`]) or would not fit in a bulletin.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        self.validate()?;
        let bytes = codec::encode(self);
        if bytes.len() + ENVELOPE_OVERHEAD > MAX_BULLETIN_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len() + ENVELOPE_OVERHEAD,
                max: MAX_BULLETIN_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Decodes and checks body bytes: format, limit, canonical form, rules.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::check_size_and_format(
            bytes,
            MAX_BULLETIN_BYTES - ENVELOPE_OVERHEAD,
            BULLETIN_FORMAT,
            "bulletin",
        )?;
        let body: Self = codec::decode_canonical::<
            Self,
            { MAX_BULLETIN_BYTES - ENVELOPE_OVERHEAD },
            { MAX_BULLETIN_BYTES + CLAIM_SLACK },
        >(bytes)?;
        body.validate()?;
        Ok(body)
    }

    /// Checks the rules every body obeys beyond its encoding.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |msg: String| Err(DecodeError::Invalid(msg));
        if self.format != BULLETIN_FORMAT {
            return invalid(format!(
                "bulletin format {} is not supported (this node reads format {BULLETIN_FORMAT}); upgrade Herald",
                self.format
            ));
        }
        if self.seq.0 == 0 {
            return invalid("sequence number 0; chains start at 1".into());
        }
        if self.prev.is_none() != (self.seq == Seq::FIRST) {
            return invalid(format!(
                "bulletin {} of its chain {} a previous bulletin",
                self.seq,
                if self.seq == Seq::FIRST {
                    "must not name"
                } else {
                    "must name"
                }
            ));
        }
        check_text("title", &self.title, 1, MAX_TITLE_BYTES)?;
        if self.references.len() > MAX_REFERENCES {
            return invalid(format!(
                "{} references; at most {MAX_REFERENCES}",
                self.references.len()
            ));
        }
        for r in &self.references {
            check_reference(r)?;
        }
        if let Some(expires) = self.expires
            && expires <= self.created
        {
            return invalid("expiry is not after creation".into());
        }
        if self.audience.len() > MAX_AUDIENCE {
            return invalid(format!(
                "audience of {}; at most {MAX_AUDIENCE} members",
                self.audience.len()
            ));
        }
        if !self.audience.windows(2).all(|w| w[0] < w[1]) {
            return invalid("audience must list member ids in ascending order, each once".into());
        }
        check_content_type(&self.payload.content_type)?;
        check_kind(&self.kind)
    }
}

/// Checks a title as a bulletin's body must hold it: 1 to [`MAX_TITLE_BYTES`]
/// bytes, no control or bidirectional-override characters.
pub fn check_title(title: &str) -> Result<(), DecodeError> {
    check_text("title", title, 1, MAX_TITLE_BYTES)
}

fn check_text(what: &str, text: &str, min: usize, max: usize) -> Result<(), DecodeError> {
    if text.len() < min || text.len() > max {
        return Err(DecodeError::Invalid(format!(
            "{what} is {} bytes; it must be {min} to {max}",
            text.len()
        )));
    }
    if text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(DecodeError::Invalid(format!(
            "{what} contains control or bidirectional-override characters"
        )));
    }
    Ok(())
}

/// Characters that reorder displayed text and can disguise a title or URL.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `id` is a CVE id as a [`Reference::Cve`] must be: `CVE-`, a year
/// of four digits, `-`, four digits or more; 32 bytes at most.
pub fn is_cve_id(id: &str) -> bool {
    id.len() <= 32
        && id.strip_prefix("CVE-").is_some_and(|rest| {
            let mut parts = rest.splitn(2, '-');
            let year = parts.next().unwrap_or("");
            let num = parts.next().unwrap_or("");
            year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && num.len() >= 4
                && num.bytes().all(|b| b.is_ascii_digit())
        })
}

fn check_reference(r: &Reference) -> Result<(), DecodeError> {
    match r {
        Reference::Cve(id) => {
            if !is_cve_id(id) {
                return Err(DecodeError::Invalid(format!(
                    "reference {id:?} is not a CVE id like CVE-2021-44228"
                )));
            }
        }
        Reference::Url(url) => {
            check_text("URL reference", url, 1, MAX_REFERENCE_BYTES)?;
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' ') {
                return Err(DecodeError::Invalid(format!(
                    "reference {url:?} is not an http:// or https:// URL"
                )));
            }
        }
        Reference::Bulletin(_) => {}
    }
    Ok(())
}

fn check_content_type(ct: &str) -> Result<(), DecodeError> {
    let ok = !ct.is_empty()
        && ct.len() <= MAX_CONTENT_TYPE_BYTES
        && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && ct
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid(format!(
            "content type {:?} is not a media type like text/markdown",
            ct.chars().take(40).collect::<String>()
        )))
    }
}

fn check_kind(kind: &Kind) -> Result<(), DecodeError> {
    match kind {
        Kind::IncidentMetrics {
            period_start,
            period_end,
            counts,
        } => {
            if period_end <= period_start {
                return Err(DecodeError::Invalid(
                    "metrics period ends before it starts".into(),
                ));
            }
            if counts.len() > MAX_METRICS {
                return Err(DecodeError::Invalid(format!(
                    "{} metric counters; at most {MAX_METRICS}",
                    counts.len()
                )));
            }
            for c in counts {
                check_text("metric name", &c.name, 1, MAX_METRIC_NAME_BYTES)?;
            }
            Ok(())
        }
        Kind::Withdrawal { reason, .. } => check_text("withdrawal reason", reason, 1, MAX_REASON_BYTES),
        _ => Ok(()),
    }
}

/// The signed envelope as encoded: body bytes (length-prefixed) and signature.
#[derive(Encode, Decode)]
struct Envelope {
    body: Vec<u8>,
    signature: Signature,
}

/// A bulletin as it travels and is stored: the exact body bytes, their
/// signature, the decoded body and the content id.
///
/// Holding one means the bytes decoded canonically and the body obeys the rules;
/// it does **not** mean the signature verified. That is `herald-keys`' job.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedBulletin {
    wire: Vec<u8>,
    body: BulletinBody,
    signature: Signature,
    id: BulletinId,
}

impl SignedBulletin {
    /// Decodes a signed bulletin from its wire bytes, checking size, canonical
    /// form and the body rules. The signature is not verified here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope =
            codec::decode_prefix::<Envelope, MAX_BULLETIN_BYTES, { MAX_BULLETIN_BYTES + CLAIM_SLACK }>(
                bytes,
            )?;
        let body = BulletinBody::from_bytes(&envelope.body)?;
        let id = BulletinId::of_body(&envelope.body);
        Ok(Self {
            wire: bytes.to_vec(),
            body,
            signature: envelope.signature,
            id,
        })
    }

    /// Assembles a bulletin from body bytes and a signature over them.
    pub fn from_parts(body_bytes: Vec<u8>, signature: Signature) -> Result<Self, DecodeError> {
        let body = BulletinBody::from_bytes(&body_bytes)?;
        let id = BulletinId::of_body(&body_bytes);
        let wire = codec::encode(&Envelope {
            body: body_bytes,
            signature,
        });
        if wire.len() > MAX_BULLETIN_BYTES {
            return Err(DecodeError::TooLarge {
                len: wire.len(),
                max: MAX_BULLETIN_BYTES,
            });
        }
        Ok(Self {
            wire,
            body,
            signature,
            id,
        })
    }

    /// The exact wire bytes: what is stored and forwarded.
    pub fn as_bytes(&self) -> &[u8] {
        &self.wire
    }

    /// The wire bytes, owned.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.wire.clone()
    }

    /// The exact body bytes the signature covers (after the domain prefix).
    pub fn body_bytes(&self) -> &[u8] {
        &self.wire[8..self.wire.len() - 64]
    }

    /// The decoded body.
    pub fn body(&self) -> &BulletinBody {
        &self.body
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The content id: SHA-256 of the body bytes.
    pub fn id(&self) -> BulletinId {
        self.id
    }
}

impl fmt::Debug for SignedBulletin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedBulletin")
            .field("id", &self.id)
            .field("signer", &self.body.signer)
            .field("seq", &self.body.seq)
            .field("kind", &self.body.kind.name())
            .finish_non_exhaustive()
    }
}

mod hex_bytes {
    //! Serde helper: bytes as a hex string in human-readable formats.
    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = <String as serde::Deserialize>::deserialize(d)?;
            hex::decode(s).map_err(serde::de::Error::custom)
        } else {
            <Vec<u8> as serde::Deserialize>::deserialize(d)
        }
    }
}
