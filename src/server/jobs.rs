//! `GET /jobs/<id>?key=<key>`: one job as text, the page that statuses and messages link to
//! when `server.public_url` is set: what ran, for which event, how it ended, then its log.
//!
//! Who may read it: whoever has the link, whose key ([`crate::store::Store::page_key`]) is not
//! to be guessed from the job's sequential id; without it, or with another job's, the answer is
//! the one for a job that does not exist. Payload values and the log are shown as text
//! (`text/plain`, never HTML), with their control characters escaped as `--jobs` does. The log is
//! streamed in pieces with a small buffer: a page of a large log costs the same memory as a
//! small one, however many are read at once.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

use crate::app::{blocking, App};
use crate::printable::{escape_into, LogText};
use crate::store::{Job, StoreError};

/// The piece of a log read at a time.
const PIECE: usize = 16 * 1024;
/// Pieces read ahead of the client.
const AHEAD: usize = 2;

/// A job's page, streamed: its head, then its log as the log file is read.
pub struct LogStream {
    pieces: mpsc::Receiver<Bytes>,
}

impl Body for LogStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.pieces.poll_recv(cx).map(|piece| piece.map(|bytes| Ok(Frame::data(bytes))))
    }
}

impl LogStream {
    /// A stream of what `pieces` gives, until its sender is gone.
    pub(super) fn of(pieces: mpsc::Receiver<Bytes>) -> LogStream {
        LogStream { pieces }
    }
}

/// Why a page is not shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No such job, or the key does not open it: the same answer for both.
    #[error("no such job (pruned, never recorded, or the link's key does not open it)")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The page of job `id` (as the path has it), for the query string `query`.
pub async fn page(app: &Arc<App>, id: &str, query: Option<&str>) -> Result<LogStream, PageError> {
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    let key = query
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    let store = app.store.clone();
    let found = blocking(move || -> Result<Option<(Job, std::path::PathBuf)>, StoreError> {
        if !store.page_key_fits(id, &key)? {
            return Ok(None);
        }
        Ok(store.job(id)?.map(|job| (job, store.log_path(id))))
    })
    .await?;
    let (job, log) = found.ok_or(PageError::NotFound)?;
    let (tx, pieces) = mpsc::channel(AHEAD);
    tokio::spawn(stream_log(head(&job), log, tx));
    Ok(LogStream { pieces })
}

/// Sends `head`, then the log at `path` piece by piece, until its end or the client is gone. A
/// reader that does not read holds no thread: the task waits on the channel, and each read of
/// the file is a short one.
async fn stream_log(head: String, path: std::path::PathBuf, tx: mpsc::Sender<Bytes>) {
    use tokio::io::AsyncReadExt;
    if tx.send(Bytes::from(head)).await.is_err() {
        return;
    }
    let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
    let mut text = LogText::default();
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let piece = text.push(&buf[..n]);
        if !piece.is_empty() && tx.send(Bytes::from(piece)).await.is_err() {
            return;
        }
    }
    let rest = text.finish();
    if !rest.is_empty() {
        let _ = tx.send(Bytes::from(rest)).await;
    }
}

fn when(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |ms| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
    })
}

/// The head of `job`'s page: what ran, for which event, how it ended; its log follows.
fn head(job: &Job) -> String {
    let e = &job.event;
    let mut out = format!("wh-automata job {}\n\n", job.id);
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push_str(&format!("{k:<10} "));
            escape_into(&mut out, v, false);
            out.push('\n');
        }
    };
    line("entry", &job.entry);
    line("state", job.state.as_str());
    line("reason", job.reason.as_deref().unwrap_or_default());
    line("exit code", &job.exit_code.map(|c| c.to_string()).unwrap_or_default());
    line("trigger", job.trigger.as_str());
    line("provider", e.provider_name());
    line("event", e.name());
    line("repo", &e.repo);
    line("ref", &e.git_ref);
    line("commit", &e.after);
    line(
        "message",
        e.head.as_ref().map(|h| h.message.lines().next().unwrap_or_default()).unwrap_or_default(),
    );
    line("pusher", &e.pusher);
    line("recorded", &when(Some(job.created_at)));
    line("started", &when(job.started_at));
    line("finished", &when(job.finished_at));
    out.push_str("\n--- log ---\n");
    out
}
