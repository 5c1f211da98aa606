//! Secrets kept out of job logs: the values the settings know to be secret (entry secrets,
//! status tokens, notification URLs and tokens, `env:` values read from the environment, a
//! file or a systemd credential, and the `env_file` variables an entry lists in `secret_env`)
//! are written as `***` wherever an action prints them. The log file is what the job page, the
//! messages' log tail and `--log` show, so they never see them either.
//!
//! Values under [`SHORTEST`] bytes are left alone (`yes`, `main`, `1`: masking them would make
//! every log unreadable). The log is masked as it is written: the output is held back by the
//! length of the longest secret less one byte, so a secret split across two writes of an action
//! is still masked.

/// Secrets shorter than this are not masked.
pub const SHORTEST: usize = 8;

/// What a secret is written as.
const MASKED: &[u8] = b"***";

/// The values to mask, longest first (a secret that contains another is masked whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mask {
    needles: Vec<Vec<u8>>,
}

impl Mask {
    pub fn new<I, S>(values: I) -> Mask
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Mask::default().with(values)
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The same mask with `more` values.
    pub fn with<I, S>(&self, more: I) -> Mask
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles = self.needles.clone();
        needles
            .extend(more.into_iter().map(|v| v.as_ref().as_bytes().to_vec()).filter(|v| v.len() >= SHORTEST));
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        needles.dedup();
        Mask { needles }
    }

    fn longest(&self) -> usize {
        self.needles.first().map_or(0, Vec::len)
    }

    /// Whether a secret may hold a line break (a multi-line value): then one may span lines.
    fn spans_lines(&self) -> bool {
        self.needles.iter().any(|n| n.contains(&b'\n'))
    }

    /// Where the secrets are in `data` (start, end): leftmost, the longest at each place.
    fn spans(&self, data: &[u8]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut i = 0;
        while i < data.len() {
            match self.needles.iter().find(|n| data[i..].starts_with(n)) {
                Some(n) => {
                    spans.push((i, i + n.len()));
                    i += n.len();
                }
                None => i += 1,
            }
        }
        spans
    }

    /// `text` with its secrets masked.
    pub fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let data = text.as_bytes();
        String::from_utf8_lossy(&masked(data, self.spans(data).iter())).into_owned()
    }
}

/// A stream of output masked as it comes: what may be the start of a secret waits for the next
/// piece.
#[derive(Debug, Default)]
pub struct Masking {
    mask: Mask,
    held: Vec<u8>,
}

impl Masking {
    pub fn new(mask: Mask) -> Masking {
        Masking { mask, held: Vec::new() }
    }

    /// What of `piece` (after what was held back) can be written now, masked.
    pub fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        if self.mask.is_empty() {
            return piece.to_vec();
        }
        self.held.extend_from_slice(piece);
        let spans = self.mask.spans(&self.held);
        // What may be the start of a secret stays: the longest less one byte, and never more
        // than what follows the last line break when no secret holds one (a whole line goes
        // out at once: a live log lags by no line).
        let mut cut = self.held.len().saturating_sub(self.mask.longest() - 1);
        if !self.mask.spans_lines() {
            if let Some(newline) = self.held.iter().rposition(|b| *b == b'\n') {
                cut = cut.max(newline + 1);
            }
        }
        // A secret that starts before the cut ends within what is held: written whole now.
        if let Some(&(_, end)) = spans.iter().find(|(start, end)| *start < cut && *end > cut) {
            cut = end;
        }
        let out = masked(&self.held[..cut], spans.iter().filter(|(_, end)| *end <= cut));
        self.held.drain(..cut);
        out
    }

    /// What is still held back, masked: at the end of the output, or before a line of the log's own.
    pub fn flush(&mut self) -> Vec<u8> {
        let spans = self.mask.spans(&self.held);
        let out = masked(&self.held, spans.iter());
        self.held.clear();
        out
    }
}

/// `data` with each of `spans` written as `***`.
fn masked<'a>(data: &[u8], spans: impl Iterator<Item = &'a (usize, usize)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    for &(start, end) in spans {
        out.extend_from_slice(&data[at..start]);
        out.extend_from_slice(MASKED);
        at = end;
    }
    out.extend_from_slice(&data[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_whole_across_pieces_and_short_values_left_alone() {
        let mask = Mask::new(["s3cr3t-token-value", "short", "s3cr3t-token"]);
        assert_eq!(mask.text("a s3cr3t-token-value b s3cr3t-token c short"), "a *** b *** c short");
        let text = b"x=s3cr3t-token-value\ny=s3cr3t-token\n";
        // Every way of cutting the output into two pieces gives the same masked text.
        for split in 0..=text.len() {
            let mut m = Masking::new(mask.clone());
            let mut out = m.push(&text[..split]);
            out.extend(m.push(&text[split..]));
            out.extend(m.flush());
            assert_eq!(String::from_utf8_lossy(&out), "x=***\ny=***\n", "split at {split}");
        }
        // One byte at a time.
        let mut m = Masking::new(mask.clone());
        let mut out = Vec::new();
        for b in text {
            out.extend(m.push(&[*b]));
        }
        out.extend(m.flush());
        assert_eq!(String::from_utf8_lossy(&out), "x=***\ny=***\n");
        // Without secrets, nothing is held back.
        assert_eq!(Masking::new(Mask::default()).push(b"abc"), b"abc");
    }

    /// A whole line goes out at once (a live log does not lag by a line); a secret cut between
    /// two pieces of one line is still masked whole.
    #[test]
    fn whole_lines_are_not_held_back() {
        let mut m = Masking::new(Mask::new(["a-long-secret-value-0123"]));
        assert_eq!(m.push(b"line 1\n"), b"line 1\n");
        assert_eq!(m.push(b"token a-long-sec"), b"");
        assert_eq!(m.push(b"ret-value-0123 end\nnext"), b"token *** end\n");
        assert_eq!(m.flush(), b"next");
        // A secret that holds a line break: lines are held as before.
        let mut m = Masking::new(Mask::new(["first line of it\nsecond"]));
        assert_eq!(m.push(b"x\n"), b"");
    }
}
