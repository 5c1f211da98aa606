//! `GET /api/v1/jobs/{id}/log` with `Accept: text/event-stream`: the job's log as Server-Sent
//! Events while the job writes it, one event per line (`data:` a JSON string, so a line's
//! control characters cannot break the stream; `id:` the byte offset after the line), then one
//! `end` event with the job's final state, and the stream closes. A client that reconnects with
//! `Last-Event-ID: N` resumes after byte N. The log is read in small pieces and a reader that
//! does not read holds a task and a small buffer, never a thread.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::super::jobs::LogStream;
use crate::app::{blocking, App};

/// The piece of the log read at a time; a longer line is sent in pieces.
const PIECE: usize = 16 * 1024;
/// How often a running job's log and state are looked at.
const LOOK: Duration = Duration::from_millis(200);

/// The stream of job `id`'s log from byte `from`.
/// It holds `long`, its place among the long requests, until it ends.
pub(super) fn stream(app: Arc<App>, id: i64, from: u64, long: super::Long) -> LogStream {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        send(app, id, from, tx).await;
        drop(long);
    });
    LogStream::of(rx)
}

/// Job `id`'s log as it is now, from byte `from`, read in pieces: a large log costs a small
/// buffer, not its size in memory.
pub(super) fn plain(path: std::path::PathBuf, from: u64) -> LogStream {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
        if file.seek(std::io::SeekFrom::Start(from)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; PIECE];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    LogStream::of(rx)
}

async fn send(app: Arc<App>, id: i64, mut offset: u64, tx: mpsc::Sender<Bytes>) {
    let path = app.store.log_path(id);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; PIECE];
    loop {
        // The state first: when it is final, the log read after it is whole.
        let store = app.store.clone();
        let job = match blocking(move || store.job(id)).await {
            Ok(Some(job)) => job,
            _ => return,
        };
        if let Ok(mut file) = tokio::fs::File::open(&path).await {
            if file.seek(std::io::SeekFrom::Start(offset + pending.len() as u64)).await.is_ok() {
                loop {
                    let n = match file.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    // Whole lines go out; a line longer than a piece goes out in pieces.
                    while let Some(end) =
                        pending.iter().position(|b| *b == b'\n').or((pending.len() >= PIECE).then_some(PIECE))
                    {
                        let line: Vec<u8> = pending.drain(..=end.min(pending.len() - 1)).collect();
                        offset += line.len() as u64;
                        let text = String::from_utf8_lossy(&line);
                        let data = serde_json::to_string(text.trim_end_matches('\n')).unwrap_or_default();
                        if tx
                            .send(Bytes::from(format!("id: {offset}\nevent: log\ndata: {data}\n\n")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        if job.state.is_final() {
            if !pending.is_empty() {
                offset += pending.len() as u64;
                let data = serde_json::to_string(&String::from_utf8_lossy(&pending)).unwrap_or_default();
                let _ = tx.send(Bytes::from(format!("id: {offset}\nevent: log\ndata: {data}\n\n"))).await;
            }
            let end = json!({ "id": id, "state": job.state.as_str(), "exit_code": job.exit_code, "reason": job.reason });
            let _ = tx.send(Bytes::from(format!("event: end\ndata: {end}\n\n"))).await;
            return;
        }
        tokio::time::sleep(LOOK).await;
        if tx.is_closed() {
            return;
        }
    }
}
