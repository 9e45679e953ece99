//! Text that other members wrote, made safe to print on a terminal: the
//! characters a terminal acts on (escape sequences that clear the screen, set
//! the window title or the clipboard) and the ones that reorder displayed
//! text are shown as `\u{..}` escapes instead.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The bidirectional controls: marks, embeddings, overrides and isolates.
/// They reorder how the text around them is displayed, so that a title or a
/// line can read as something it is not.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` is shown escaped: a C0 or C1 control or DEL (`char::is_control`),
/// or a bidirectional control.
fn is_escaped(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// `text` as one line on a terminal: every control character (line breaks
/// and tabs too) and every bidirectional control shown as `\u{..}`. Text
/// without them is returned as it is.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_escaped) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push(&mut shown, c, is_escaped(c));
    }
    Cow::Owned(shown)
}

/// `text` (a bulletin's content) on a terminal: as [`escape_line`], but line
/// breaks, tabs and a carriage return just before a line break (text written
/// on Windows) stay as they are.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    let mut chars = text.chars().peekable();
    let mut shown: Option<String> = None;
    let mut at = 0;
    while let Some(c) = chars.next() {
        let kept = matches!(c, '\n' | '\t') || (c == '\r' && chars.peek() == Some(&'\n'));
        let escaped = is_escaped(c) && !kept;
        if escaped && shown.is_none() {
            let mut start = String::with_capacity(text.len() + 16);
            start.push_str(&text[..at]);
            shown = Some(start);
        }
        if let Some(shown) = shown.as_mut() {
            push(shown, c, escaped);
        }
        at += c.len_utf8();
    }
    match shown {
        Some(shown) => Cow::Owned(shown),
        None => Cow::Borrowed(text),
    }
}

fn push(shown: &mut String, c: char, escaped: bool) {
    if escaped {
        // (Writing to a String does not fail.)
        let _ = write!(shown, "\\u{{{:x}}}", u32::from(c));
    } else {
        shown.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bidi_controls_show_as_escapes() {
        let hostile = "a\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\u{7f}\u{9b}31m\u{202e}b\u{2066}\u{200f}\u{61c}c";
        let shown = escape_text(hostile);
        assert_eq!(
            shown,
            "a\\u{1b}]52;c;ZXZpbA==\\u{7}\\u{1b}[2J\\u{7f}\\u{9b}31m\\u{202e}b\\u{2066}\\u{200f}\\u{61c}c"
        );
        assert_eq!(escape_line(hostile), shown);
        assert!(!shown.chars().any(is_escaped));
    }

    #[test]
    fn line_breaks_and_tabs_stay_in_text_and_not_in_a_line() {
        let text = "one\r\ntwo\tthree\rfour\n";
        assert_eq!(escape_text(text), "one\r\ntwo\tthree\\u{d}four\n");
        assert_eq!(escape_line(text), "one\\u{d}\\u{a}two\\u{9}three\\u{d}four\\u{a}");
    }

    #[test]
    fn plain_text_is_not_copied() {
        // Letters of any script, combining marks and a zero-width space are
        // not controls.
        let text = "Jose\u{301} \u{5e9}\u{5dc}\u{5d5}\u{5dd} soft\u{ad}hyphen zero\u{200b}width\n";
        assert!(matches!(escape_text(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(escape_line("CERT-EU"), Cow::Borrowed("CERT-EU")));
    }
}
