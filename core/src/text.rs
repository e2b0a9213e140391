//! Showing untrusted text to a person: [`Untrusted`] escapes every
//! character that could change what a terminal or a page shows instead of
//! being shown itself.
//!
//! Attestations, verifications, signals and decision reasons carry text that
//! a customer, an engineer or a device wrote. Printed raw, an escape sequence
//! (`ESC [ 2 J`, `ESC ] …`) or a carriage return can erase or rewrite what a
//! field engineer reads before signing, and a right-to-left override can
//! reorder it. Every CLI and console output of such text goes through
//! [`Untrusted`] (issue #10, item 12).

use std::fmt;

/// Text from an untrusted source, displayed with every control or
/// text-direction character written as a visible escape (`\u{1b}`), and a
/// backslash as `\\`, so that what is shown is exactly what was signed.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

/// Whether `c` changes how the text around it is shown rather than being
/// shown: C0 and C1 controls and DEL (`char::is_control`), the Unicode
/// direction marks, embeddings, overrides and isolates (U+200E, U+200F,
/// U+061C, U+202A–U+202E, U+2066–U+2069), the line and paragraph separators
/// (U+2028, U+2029), zero-width characters (U+200B–U+200D, U+2060, U+FEFF).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if is_hidden(c) {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The escaped text as a `String` (see [`Untrusted`]).
pub fn escaped(s: &str) -> String {
    Untrusted(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(escaped("ok\x1b[2J\rforged"), "ok\\u{1b}[2J\\u{d}forged");
        assert_eq!(escaped("line\nbreak\ttab\x7f\u{9b}"), "line\\u{a}break\\u{9}tab\\u{7f}\\u{9b}");
        assert_eq!(escaped("a\u{202e}cba\u{2066}"), "a\\u{202e}cba\\u{2066}");
        // A backslash is escaped too, so an escape cannot be faked.
        assert_eq!(escaped("\\u{1b}"), "\\\\u{1b}");
        // Ordinary text, accents and other scripts pass unchanged.
        assert_eq!(escaped("Ministère de l'Intérieur, Россия, 東京"), "Ministère de l'Intérieur, Россия, 東京");
    }
}
