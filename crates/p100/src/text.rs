//! Text from P100 made safe to keep, log and print, in one place.

use serde::{Deserialize, Deserializer};

/// At most this much of any text P100 sends (a message, a reason, an unknown enum value) is
/// kept.
pub const MAX_TEXT_CHARS: usize = 200;

/// Text from P100 made safe to log and print: whitespace runs (newlines included) become one
/// space, other control characters (ANSI escapes) are dropped, and it is cut at
/// [`MAX_TEXT_CHARS`] characters with an ellipsis.
pub fn clean_text(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut pending_space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if c.is_control() {
            continue;
        }
        if chars >= MAX_TEXT_CHARS {
            out.push('…');
            break;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
            chars += 1;
        }
        pending_space = false;
        out.push(c);
        chars += 1;
    }
    out
}

/// Serde adapter for optional free text (`rejectionReason`): cleaned as it is decoded.
pub fn de_clean_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|t| clean_text(&t)))
}
