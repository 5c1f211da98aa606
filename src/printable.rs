//! Text from payloads and job logs as it may reach a terminal or a page: control characters
//! escaped (`\u{1b}`, `\r`), so that a value cannot move a cursor, clear a screen or forge a
//! line. Newlines and tabs of a log are kept where `lines` says so.

/// Appends `text` to `out` with its control characters escaped; with `lines`, `\n` and `\t`
/// are kept as they are.
pub fn escape_into(out: &mut String, text: &str, lines: bool) {
    for c in text.chars() {
        if c.is_control() && !(lines && (c == '\n' || c == '\t')) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// `text` with its control characters escaped, at most `max` characters (then `…`).
pub fn shown(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        escape_into(&mut out, c.encode_utf8(&mut [0; 4]), false);
    }
    out
}

/// Bytes of a log read piece by piece, as escaped text: a UTF-8 character cut between two
/// pieces is kept for the next; bytes that are not UTF-8 become U+FFFD.
#[derive(Default)]
pub struct LogText {
    carry: Vec<u8>,
}

impl LogText {
    /// The text of `piece` (and of what the previous piece left), escaped.
    pub fn push(&mut self, piece: &[u8]) -> String {
        self.carry.extend_from_slice(piece);
        let mut out = String::with_capacity(self.carry.len());
        let mut rest: &[u8] = &self.carry;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    escape_into(&mut out, text, true);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    escape_into(&mut out, std::str::from_utf8(valid).unwrap_or_default(), true);
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // Cut at the end: the rest of the character comes with the next piece.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.carry = rest.to_vec();
        out
    }

    /// What is left at the end of the log (a character cut short).
    pub fn finish(self) -> String {
        if self.carry.is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_cut_characters_joined() {
        assert_eq!(shown("a\u{1b}[2Jb\nc", 100), "a\\u{1b}[2Jb\\nc");
        assert_eq!(shown("abcdef", 3), "abc…");
        let mut log = LogText::default();
        let text = "é ok\n\u{1b}]0;title\u{7}\r\tdone";
        let bytes = text.as_bytes();
        let mut out = log.push(&bytes[..1]);
        out.push_str(&log.push(&bytes[1..]));
        out.push_str(&log.finish());
        assert_eq!(out, "é ok\n\\u{1b}]0;title\\u{7}\\r\tdone");
        let mut log = LogText::default();
        assert_eq!(log.push(b"a\xffb\xe2\x82"), "a\u{fffd}b");
        assert_eq!(log.finish(), "\u{fffd}");
    }
}
