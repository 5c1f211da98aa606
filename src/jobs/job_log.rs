//! A job's log file: what its actions print, each line with a timestamp, the lines of
//! wh-automata's own (`-- ...`), capped at `server.log_limit`, with the secrets the settings
//! know masked as it is written ([`crate::secrets::mask`]).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::secrets::mask::{Mask, Masking};

/// A job's log: a file capped at `limit` bytes, optionally echoed to stdout.
pub struct Log {
    file: Option<File>,
    written: u64,
    limit: u64,
    truncated: bool,
    echo: bool,
    at_line_start: bool,
    /// The secrets masked as the output is written ([`crate::secrets::mask`]).
    masking: Masking,
}

impl Log {
    /// The log at `path`, appended to: a job run again (after a crash or a stop) keeps the log
    /// of its earlier attempt above the new one.
    pub fn create(path: &Path, limit: u64) -> std::io::Result<Log> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let written = file.metadata()?.len();
        let mut log = Log::new(Some(file), limit);
        log.written = written;
        log.truncated = written >= limit;
        Ok(log)
    }

    /// The same log, also echoed to stdout (a foreground run).
    pub fn echoing(mut self) -> Log {
        self.echo = true;
        self
    }

    pub fn new(file: Option<File>, limit: u64) -> Log {
        Log {
            file,
            written: 0,
            limit,
            truncated: false,
            echo: false,
            at_line_start: true,
            masking: Masking::default(),
        }
    }

    /// From now on, `mask`'s secrets are written as `***`.
    pub fn mask(&mut self, mask: Mask) {
        let held = self.masking.flush();
        self.write(&held);
        self.masking = Masking::new(mask);
    }

    /// A line of wh-automata's own (not action output), its secrets masked too.
    pub fn note(&mut self, text: &str) {
        let held = self.masking.flush();
        self.write(&held);
        if !self.at_line_start {
            self.write(b"\n");
        }
        let line = format!("-- {text}\n");
        let masked = self.masking.push(line.as_bytes());
        self.write(&masked);
        let rest = self.masking.flush();
        self.write(&rest);
    }

    /// Action output: its secrets masked (a secret cut between two pieces too), each line with
    /// a timestamp in the file.
    pub fn output(&mut self, chunk: &[u8]) {
        let masked = self.masking.push(chunk);
        self.write(&masked);
    }

    /// Lines another log of this job already wrote (stamped and masked there): a host's section
    /// of a parallel rollout, put in whole once the host is done.
    pub fn splice(&mut self, logged: &[u8]) {
        let held = self.masking.flush();
        self.write(&held);
        if !self.at_line_start {
            self.write(b"\n");
        }
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(logged);
            let _ = out.flush();
        }
        if logged.is_empty() {
            return;
        }
        let mut buf = logged.to_vec();
        if !buf.ends_with(b"\n") {
            buf.push(b'\n');
        }
        self.append(buf);
    }

    fn write(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(chunk);
            let _ = out.flush();
        }
        if self.file.is_none() || self.truncated {
            return;
        }
        let mut buf = Vec::with_capacity(chunk.len() + 32);
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                buf.extend_from_slice(
                    humantime::format_rfc3339_millis(SystemTime::now()).to_string().as_bytes(),
                );
                buf.push(b' ');
            }
            buf.extend_from_slice(piece);
            self.at_line_start = piece.ends_with(b"\n");
        }
        self.append(buf);
    }

    /// Lines ready for the file (stamped, masked), within `log_limit`: the log is cut, and says
    /// so, where the limit is reached.
    fn append(&mut self, mut buf: Vec<u8>) {
        let Some(file) = self.file.as_mut() else { return };
        if self.truncated {
            return;
        }
        let room = self.limit.saturating_sub(self.written) as usize;
        if buf.len() > room {
            buf.truncate(room);
            buf.extend_from_slice(b"\n-- log truncated: it reached the log_limit of the settings\n");
            self.truncated = true;
        }
        if file.write_all(&buf).is_ok() {
            self.written += buf.len() as u64;
        }
    }
}

impl Drop for Log {
    /// What the masking still held (the end of the last action's output) is written.
    fn drop(&mut self) {
        let held = self.masking.flush();
        self.write(&held);
    }
}
