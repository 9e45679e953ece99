//! What a CSAF 2.0 advisory says of itself that its bulletin repeats (title,
//! TLP label, severity, CVE ids), and the rule that a bulletin never shares a
//! CSAF document more widely than the document's own TLP label allows.

use herald_protocol::{Severity, Tlp};
use serde_json::Value;

/// The parts of a CSAF document a bulletin carries in its own fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// `document.title`, if it is not blank, with each run of white space
    /// (line breaks included) made one space.
    pub title: Option<String>,
    /// `document.distribution.tlp.label` as written ([`Summary::tlp`] reads it).
    pub tlp_label: Option<String>,
    /// The highest CVSS base score of its vulnerabilities as a severity (CVSS
    /// v3 bands; v2 where there is no v3 score), or else
    /// `document.aggregate_severity.text` where it is a word Herald knows.
    pub severity: Option<Severity>,
    /// `vulnerabilities[].cve`, each once, in order.
    pub cves: Vec<String>,
}

/// Why a CSAF document cannot be carried as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsafError {
    /// Its TLP label is none that TLP 1.0 or 2.0 defines.
    #[error(
        "the CSAF document's TLP label {0:?} is not one of CLEAR, WHITE, GREEN, AMBER, AMBER+STRICT, RED: fix document.distribution.tlp.label"
    )]
    UnknownTlp(String),
    /// It looks like a CSAF document but is not valid JSON.
    #[error(
        "the content looks like a CSAF document but is not valid JSON ({0}), so its TLP label cannot be read: fix the document, or publish it as TLP:RED"
    )]
    Unreadable(String),
    /// The bulletin would share it more widely than its label allows.
    #[error(
        "the CSAF document is marked {document}, and the bulletin {bulletin}: that would share it more widely than its author allows. Publish it as {document} or stricter"
    )]
    TlpWider {
        /// The document's label.
        document: Tlp,
        /// The bulletin's.
        bulletin: Tlp,
    },
}

impl Summary {
    /// The document's TLP label, read as TLP 2.0 (`WHITE` is `CLEAR`).
    pub fn tlp(&self) -> Result<Option<Tlp>, CsafError> {
        match &self.tlp_label {
            Some(label) => match tlp_of(label) {
                Some(tlp) => Ok(Some(tlp)),
                None => Err(CsafError::UnknownTlp(label.chars().take(40).collect())),
            },
            None => Ok(None),
        }
    }
}

/// The document's summary, if `bytes` are a CSAF document (a JSON object,
/// after a byte order mark if any, in UTF-8, UTF-16 or UTF-32, whose `document` has a
/// `csaf_version` or a TLP label); `None` for any other content.
pub fn read(bytes: &[u8]) -> Option<Summary> {
    let root = json_object(bytes)?.ok()?;
    let document = root.get("document")?;
    if document.get("csaf_version").is_none() && document.pointer("/distribution/tlp/label").is_none() {
        return None;
    }
    // A label that is not a string is kept as written, and read as unknown.
    let tlp_label = document
        .pointer("/distribution/tlp/label")
        .map(|label| label.as_str().map_or_else(|| label.to_string(), str::to_string));
    let title = document
        .get("title")
        .and_then(Value::as_str)
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    let vulnerabilities = root.get("vulnerabilities").and_then(Value::as_array);
    let mut cves: Vec<String> = Vec::new();
    for cve in vulnerabilities
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("cve")?.as_str())
        .filter(|cve| herald_protocol::is_cve_id(cve))
    {
        if !cves.iter().any(|c| c == cve) {
            cves.push(cve.to_string());
        }
    }
    let severity = highest_score(vulnerabilities.map(Vec::as_slice).unwrap_or_default()).or_else(|| {
        document
            .pointer("/aggregate_severity/text")
            .and_then(Value::as_str)
            .and_then(severity_named)
    });
    Some(Summary {
        title,
        tlp_label,
        severity,
        cves,
    })
}

/// Content that starts as a JSON object (after white space and a byte order
/// mark), parsed; `None` for any other content, which is not parsed.
fn json_object(bytes: &[u8]) -> Option<Result<Value, serde_json::Error>> {
    let bytes = as_utf8(bytes);
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    Some(serde_json::from_slice::<Value>(&bytes))
}

/// `bytes` as UTF-8 without a byte order mark. CSAF documents are UTF-8, but
/// JSON written in UTF-16 or UTF-32 (known by its byte order mark, or by the
/// zero bytes around its first character, as RFC 4627 tells them apart) is
/// read too, so that such a document's label is not missed. Characters that do
/// not decode become U+FFFD.
fn as_utf8(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let utf16 = |rest: &[u8], big: bool| {
        let units = rest.chunks_exact(2).map(|u| {
            let pair = [u[0], u[1]];
            if big {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        let text: String = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        Cow::Owned(text.into_bytes())
    };
    let utf32 = |rest: &[u8], big: bool| {
        let text: String = rest
            .chunks_exact(4)
            .map(|u| {
                let unit = [u[0], u[1], u[2], u[3]];
                let code = if big {
                    u32::from_be_bytes(unit)
                } else {
                    u32::from_le_bytes(unit)
                };
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect();
        Cow::Owned(text.into_bytes())
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => Cow::Borrowed(rest),
        [0x00, 0x00, 0xFE, 0xFF, rest @ ..] => utf32(rest, true),
        [0xFF, 0xFE, 0x00, 0x00, rest @ ..] => utf32(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0, 0, 0, c, ..] if *c != 0 => utf32(bytes, true),
        [c, 0, 0, 0, ..] if *c != 0 => utf32(bytes, false),
        [0, c, ..] if *c != 0 => utf16(bytes, true),
        [c, 0, ..] if *c != 0 => utf16(bytes, false),
        _ => Cow::Borrowed(bytes),
    }
}

/// Checks that a bulletin labelled `tlp` may carry `bytes`: if they are a
/// CSAF document, its own label must be no stricter. Content that starts as
/// JSON, names `csaf_version` and does not parse is refused: its label
/// cannot be read.
pub fn check_tlp(bytes: &[u8], tlp: Tlp) -> Result<(), CsafError> {
    if tlp == Tlp::Red {
        // Nothing is stricter.
        return Ok(());
    }
    let names_csaf = |text: &[u8]| text.windows(b"csaf_version".len()).any(|w| w == b"csaf_version");
    // As written, or as decoded (content that merely looks like UTF-16 is
    // looked at both ways).
    if let Some(Err(e)) = json_object(bytes)
        && (names_csaf(bytes) || names_csaf(&as_utf8(bytes)))
    {
        return Err(CsafError::Unreadable(e.to_string()));
    }
    match read(bytes).map(|s| s.tlp()).transpose()?.flatten() {
        Some(document) if document > tlp => Err(CsafError::TlpWider {
            document,
            bulletin: tlp,
        }),
        _ => Ok(()),
    }
}

/// A TLP label as CSAF writes it (TLP 1.0 in CSAF 2.0, TLP 2.0 after).
fn tlp_of(label: &str) -> Option<Tlp> {
    match label.trim().to_ascii_uppercase().trim_start_matches("TLP:") {
        "CLEAR" | "WHITE" => Some(Tlp::Clear),
        "GREEN" => Some(Tlp::Green),
        "AMBER" => Some(Tlp::Amber),
        "AMBER+STRICT" => Some(Tlp::AmberStrict),
        "RED" => Some(Tlp::Red),
        _ => None,
    }
}

/// The severity of the highest CVSS base score: v3 (or v4) bands where the
/// document has such a score, else v2 bands.
fn highest_score(vulnerabilities: &[Value]) -> Option<Severity> {
    let scores = |version: &str| {
        vulnerabilities
            .iter()
            .filter_map(|v| v.get("scores")?.as_array())
            .flatten()
            .filter_map(move |s| s.get(version)?.get("baseScore")?.as_f64())
            .filter(|s| (0.0..=10.0).contains(s))
            .fold(None, |max: Option<f64>, s| Some(max.map_or(s, |m| m.max(s))))
    };
    let v3 = [scores("cvss_v3"), scores("cvss_v4")]
        .into_iter()
        .flatten()
        .fold(None, |max: Option<f64>, s| Some(max.map_or(s, |m| m.max(s))));
    if let Some(score) = v3 {
        return Some(match score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            s if s > 0.0 => Severity::Low,
            _ => Severity::Informational,
        });
    }
    scores("cvss_v2").map(|score| match score {
        s if s >= 7.0 => Severity::High,
        s if s >= 4.0 => Severity::Medium,
        s if s > 0.0 => Severity::Low,
        _ => Severity::Informational,
    })
}

/// An aggregate severity word, as vendors write it (Red Hat's and
/// Microsoft's scales included).
fn severity_named(text: &str) -> Option<Severity> {
    match text.trim().to_ascii_lowercase().as_str() {
        "critical" => Some(Severity::Critical),
        "high" | "important" => Some(Severity::High),
        "medium" | "moderate" => Some(Severity::Medium),
        "low" => Some(Severity::Low),
        "none" | "informational" | "info" => Some(Severity::Informational),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn doc(document: &str, vulnerabilities: &str) -> Vec<u8> {
        format!(
            r#"{{"document": {{"csaf_version": "2.0", {document}}}, "vulnerabilities": [{vulnerabilities}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_real_advisory_is_summarised() {
        let bytes = include_bytes!("../tests/data/bsi-2022-0001.json");
        let summary = read(bytes).unwrap();
        assert_eq!(summary.tlp(), Ok(Some(Tlp::Clear)), "WHITE is CLEAR");
        assert_eq!(
            summary,
            Summary {
                title: Some("CVRF-CSAF-Converter: XML External Entities Vulnerability".into()),
                tlp_label: Some("WHITE".into()),
                severity: Some(Severity::Medium),
                cves: vec!["CVE-2022-27193".into()],
            }
        );
    }

    #[test]
    fn other_content_is_not_csaf() {
        for bytes in [
            &b"# a note"[..],
            b"{}",
            b"{\"document\": {}}",
            b"{not json",
            b"",
            b"[1]",
        ] {
            assert_eq!(read(bytes), None, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn severity_comes_from_the_highest_score_then_the_aggregate() {
        let score = |v: &str, s: f64| format!(r#"{{"scores": [{{"{v}": {{"baseScore": {s}}}}}]}}"#);
        let of =
            |document: &str, vulnerabilities: &str| read(&doc(document, vulnerabilities)).unwrap().severity;
        assert_eq!(
            of(
                r#""title": "t""#,
                &[score("cvss_v3", 9.8), score("cvss_v3", 5.0)].join(",")
            ),
            Some(Severity::Critical)
        );
        assert_eq!(
            of(r#""title": "t""#, &score("cvss_v3", 7.0)),
            Some(Severity::High)
        );
        assert_eq!(
            of(r#""title": "t""#, &score("cvss_v3", 0.0)),
            Some(Severity::Informational)
        );
        // v2 has no critical band; a v3 score wins over a higher v2 one.
        assert_eq!(
            of(r#""title": "t""#, &score("cvss_v2", 10.0)),
            Some(Severity::High)
        );
        assert_eq!(
            of(
                r#""title": "t""#,
                &[score("cvss_v2", 10.0), score("cvss_v3", 4.2)].join(",")
            ),
            Some(Severity::Medium)
        );
        // No score: the document's own word, where Herald knows it.
        assert_eq!(
            of(r#""aggregate_severity": {"text": "Important"}"#, "{}"),
            Some(Severity::High)
        );
        assert_eq!(of(r#""aggregate_severity": {"text": "Severe-ish"}"#, "{}"), None);
        // A score out of range counts for nothing.
        assert_eq!(of(r#""title": "t""#, &score("cvss_v3", 99.0)), None);
    }

    #[test]
    fn cves_are_listed_once_in_order() {
        let summary = read(&doc(
            r#""title": "  ""#,
            r#"{"cve": "CVE-2021-44228"}, {"cve": "CVE-2021-45046"}, {"cve": "CVE-2021-44228"}, {"cve": "CVE-21-1"}, {}"#,
        ))
        .unwrap();
        assert_eq!(
            summary.cves,
            ["CVE-2021-44228", "CVE-2021-45046"],
            "valid ids, each once"
        );
        assert_eq!(summary.title, None, "a blank title is none");
        let lines = read(&doc(r#""title": " Two\n\tlines ""#, "")).unwrap();
        assert_eq!(lines.title.as_deref(), Some("Two lines"));
    }

    #[test]
    fn a_bulletin_never_shares_a_document_more_widely_than_its_label() {
        let marked = |label: &str| {
            doc(
                &format!(r#""distribution": {{"tlp": {{"label": "{label}"}}}}"#),
                "",
            )
        };
        assert_eq!(
            check_tlp(&marked("RED"), Tlp::Clear),
            Err(CsafError::TlpWider {
                document: Tlp::Red,
                bulletin: Tlp::Clear
            })
        );
        assert!(check_tlp(&marked("AMBER"), Tlp::Green).is_err());
        assert_eq!(check_tlp(&marked("AMBER"), Tlp::Amber), Ok(()));
        assert_eq!(check_tlp(&marked("AMBER"), Tlp::Red), Ok(()), "stricter is fine");
        assert_eq!(check_tlp(&marked("WHITE"), Tlp::Clear), Ok(()));
        assert_eq!(check_tlp(&marked("amber+strict"), Tlp::AmberStrict), Ok(()));
        assert!(matches!(
            check_tlp(&marked("PURPLE"), Tlp::Amber),
            Err(CsafError::UnknownTlp(_))
        ));
        assert_eq!(
            check_tlp(&marked("PURPLE"), Tlp::Red),
            Ok(()),
            "nothing is stricter"
        );
        let numbered = br#"{"document": {"csaf_version": "2.0", "distribution": {"tlp": {"label": 4}}}}"#;
        assert!(matches!(
            check_tlp(numbered, Tlp::Amber),
            Err(CsafError::UnknownTlp(_))
        ));
        // A byte order mark, or a label without csaf_version, hides nothing.
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend(marked("RED"));
        assert!(check_tlp(&bom, Tlp::Clear).is_err());
        let unversioned = br#"{"document": {"distribution": {"tlp": {"label": "AMBER"}}}}"#;
        assert!(check_tlp(unversioned, Tlp::Green).is_err());
        // Nor does UTF-16 or UTF-32, with or without a byte order mark.
        let text = String::from_utf8(doc(
            r#""title": "T", "distribution": {"tlp": {"label": "RED"}}"#,
            "",
        ))
        .unwrap();
        let units: Vec<u16> = text.encode_utf16().collect();
        let wide: Vec<u32> = text.chars().map(u32::from).collect();
        let encodings: [(&str, Vec<u8>); 6] = [
            ("UTF-16LE", units.iter().flat_map(|u| u.to_le_bytes()).collect()),
            ("UTF-16BE", units.iter().flat_map(|u| u.to_be_bytes()).collect()),
            (
                "UTF-16LE, BOM",
                [
                    &[0xFF, 0xFE][..],
                    &units.iter().flat_map(|u| u.to_le_bytes()).collect::<Vec<_>>(),
                ]
                .concat(),
            ),
            (
                "UTF-16BE, BOM",
                [
                    &[0xFE, 0xFF][..],
                    &units.iter().flat_map(|u| u.to_be_bytes()).collect::<Vec<_>>(),
                ]
                .concat(),
            ),
            ("UTF-32LE", wide.iter().flat_map(|u| u.to_le_bytes()).collect()),
            (
                "UTF-32BE, BOM",
                [
                    &[0, 0, 0xFE, 0xFF][..],
                    &wide.iter().flat_map(|u| u.to_be_bytes()).collect::<Vec<_>>(),
                ]
                .concat(),
            ),
        ];
        for (name, bytes) in encodings {
            assert_eq!(
                check_tlp(&bytes, Tlp::Green),
                Err(CsafError::TlpWider {
                    document: Tlp::Red,
                    bulletin: Tlp::Green
                }),
                "{name}"
            );
            assert_eq!(read(&bytes).and_then(|s| s.title), Some("T".into()), "{name}");
        }
        // UTF-8 that looks like UTF-16 (a zero byte after the brace) and names
        // csaf_version: unreadable either way, refused.
        let odd = b"{\0\"document\": {\"csaf_version\": \"2.0\"";
        assert!(matches!(
            check_tlp(odd, Tlp::Clear),
            Err(CsafError::Unreadable(_))
        ));
        // Cut short in UTF-16: refused unless RED.
        let cut16: Vec<u8> = units[..40].iter().flat_map(|u| u.to_le_bytes()).collect();
        assert!(matches!(
            check_tlp(&cut16, Tlp::Amber),
            Err(CsafError::Unreadable(_))
        ));
        // Cut short, or nested too deep to parse: refused unless RED.
        let cut = &marked("RED")[..40];
        assert!(matches!(
            check_tlp(cut, Tlp::Amber),
            Err(CsafError::Unreadable(_))
        ));
        assert_eq!(check_tlp(cut, Tlp::Red), Ok(()));
        let deep = format!(
            r#"{{"csaf_version": 1, "x": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(
            check_tlp(deep.as_bytes(), Tlp::Clear),
            Err(CsafError::Unreadable(_))
        ));
        // No label, or not CSAF: nothing to check.
        assert_eq!(check_tlp(&doc(r#""title": "t""#, ""), Tlp::Clear), Ok(()));
        assert_eq!(check_tlp(b"TLP:RED in prose", Tlp::Clear), Ok(()));
    }
}
