//! Text a module wrote, made fit for the host's log and for PostgreSQL. Control
//! characters are escaped, so that a module cannot end a log line and forge the next one,
//! and no NUL byte (which PostgreSQL's `text` cannot hold, failing the whole statement
//! that carries it) reaches a commit; text is cut at a character boundary to a length.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character escaped as Rust writes it in a string literal
/// (`\n`, `\0`, `\u{1b}`, ...); borrowed when it holds none.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` bytes at a character boundary, with `…` after a cut
/// (so the result may be up to 3 bytes longer than `max`).
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// `text` made safe to store as a task's error: NUL bytes escaped as `\0` (other control
/// characters, such as the newlines of a stack trace, are kept) and cut to `max` bytes.
pub fn storable(text: String, max: usize) -> String {
    let text = if text.contains('\0') {
        text.replace('\0', "\\0")
    } else {
        text
    };
    match cut(&text, max) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(escaped("plain é ✓"), Cow::Borrowed("plain é ✓")));
        assert_eq!(
            escaped("a\0b\nINFO forged\x1b[31m\t"),
            "a\\0b\\nINFO forged\\u{1b}[31m\\t"
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("aé", 2), "a…");
    }

    #[test]
    fn storable_text_holds_no_nul_and_keeps_newlines() {
        assert_eq!(storable("a\0b\nc".into(), 100), "a\\0b\nc");
        assert_eq!(storable("x".repeat(10), 4), "xxxx…");
    }
}
