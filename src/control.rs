//! The control channel: a Unix socket, `state_dir/control.sock`, through which
//! `wh-automata-trigger` asks the running daemon to run an entry by hand.
//!
//! Only the daemon's own user (and root) can connect: the socket is created owner-only, and it
//! is not on the public port, so it needs no secret. The protocol is JSON lines: the client
//! sends one [`Request`]; the daemon answers with [`Reply`] lines: `queued`, then the job's log
//! as it is written (`output`), then `done`. A manual job is recorded and queued like a webhook
//! job, so it waits for a running job of its entry and is kept across restarts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream as AsyncUnixStream};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::app::{blocking, App, Enqueued};
use crate::event::{Event, Trigger};
use crate::store::NewJob;

/// The socket's name under `state_dir`.
pub const SOCKET: &str = "control.sock";

/// How often a followed job's state and log are looked at.
const POLL: Duration = Duration::from_millis(50);

/// The socket of the daemon whose settings have `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// What the client asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run `entry` for `event`; `body` (hex) is what `WH_PAYLOAD` will hold.
    /// `rollback`: a rollback to the release `event` is of.
    Trigger {
        entry: String,
        event: Box<Event>,
        body: String,
        #[serde(default)]
        rollback: bool,
        /// Run it even though the entry is frozen.
        #[serde(default)]
        force: bool,
    },
    /// Freeze `entry`: its webhook jobs are held until it is unfrozen.
    Freeze { entry: String, reason: String },
    /// Unfreeze `entry`: its newest held job runs.
    Unfreeze { entry: String },
}

/// What the daemon answers, one per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Queued {
        id: i64,
    },
    /// A piece of the job's log, as written.
    Output {
        text: String,
    },
    Done {
        id: i64,
        state: String,
        exit_code: Option<i32>,
        reason: Option<String>,
    },
    Error {
        message: String,
    },
    /// The entry is frozen; these waiting jobs are now held.
    Frozen {
        held: Vec<i64>,
    },
    /// The entry is unfrozen: the held job that runs now, the held ones superseded.
    Unfrozen {
        was_frozen: bool,
        runs: Option<i64>,
        superseded: Vec<i64>,
    },
}

/// Binds the control socket, refusing to start when another daemon already answers on it
/// (two daemons must not share one job store).
pub fn bind(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = socket_path(state_dir);
    if UnixStream::connect(&path).is_ok() {
        anyhow::bail!(
            "another wh-automatad is running with the state_dir {} (its control socket answers)",
            state_dir.display()
        );
    }
    // Left by a daemon that did not stop cleanly.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot create the control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the control socket until `stop` turns true; then removes it.
pub async fn serve(app: Arc<App>, listener: UnixListener, mut stop: watch::Receiver<bool>) {
    let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(client(app.clone(), stream, stop.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(POLL).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

async fn send(stream: &mut AsyncUnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn client(app: Arc<App>, mut stream: AsyncUnixStream, mut stop: watch::Receiver<bool>) {
    // A request carries at most one body of `max_body` (hex: twice its size), plus the event.
    let limit = app.settings().server.max_body * 2 + 1024 * 1024;
    let mut line = Vec::new();
    let read = {
        let mut reader = tokio::io::BufReader::new((&mut stream).take(limit));
        reader.read_until(b'\n', &mut line).await
    };
    let request = match read {
        Ok(_) if line.ends_with(b"\n") => {
            serde_json::from_slice::<Request>(&line).map_err(|e| format!("malformed request: {e}"))
        }
        Ok(_) => Err("request too large or not terminated by a newline".to_string()),
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    let (entry, event, body, rollback, force) = match request {
        Ok(Request::Trigger { entry, event, body, rollback, force }) => match hex::decode(&body) {
            Ok(body) => (entry, event, body, rollback, force),
            Err(e) => {
                let _ = send(&mut stream, &Reply::Error { message: format!("malformed body: {e}") }).await;
                return;
            }
        },
        Ok(Request::Freeze { entry, reason }) => {
            let reply = freezing(&app, entry, Some(reason)).await;
            let _ = send(&mut stream, &reply).await;
            return;
        }
        Ok(Request::Unfreeze { entry }) => {
            let reply = freezing(&app, entry, None).await;
            let _ = send(&mut stream, &reply).await;
            return;
        }
        Err(message) => {
            let _ = send(&mut stream, &Reply::Error { message }).await;
            return;
        }
    };
    let store = app.store.clone();
    let name = entry.clone();
    match blocking(move || store.frozen_reason(&name)).await {
        Ok(Some(why)) if !force => {
            let message =
                format!("entry {entry} is frozen ({why}): run it with --force, or --unfreeze it first");
            let _ = send(&mut stream, &Reply::Error { message }).await;
            return;
        }
        Ok(_) => {}
        Err(e) => {
            let _ = send(&mut stream, &Reply::Error { message: e.to_string() }).await;
            return;
        }
    }
    if app.settings().entry(&entry).is_none() {
        let message = format!("the running daemon has no entry named {entry:?}");
        let _ = send(&mut stream, &Reply::Error { message }).await;
        return;
    }
    let trigger = if rollback { Trigger::Rollback } else { Trigger::Manual };
    let job = NewJob { entry: entry.clone(), trigger, event: *event };
    let app2 = app.clone();
    let id = match blocking(move || app2.enqueue(None, bytes::Bytes::from(body), vec![job])).await {
        Ok(Enqueued { queued, .. }) if !queued.is_empty() => queued[0].0,
        Ok(_) => {
            let message = "the daemon recorded no job".to_string();
            let _ = send(&mut stream, &Reply::Error { message }).await;
            return;
        }
        Err(e) => {
            let _ = send(&mut stream, &Reply::Error { message: e.to_string() }).await;
            return;
        }
    };
    info!(job = id, %entry, "{} queued", if rollback { "rollback" } else { "manual run" });
    if send(&mut stream, &Reply::Queued { id }).await.is_err() {
        return;
    }
    let _ = follow(&app, id, &mut stream, &mut stop).await;
}

/// Freezes `entry` (`reason` given) or unfreezes it; an unfrozen entry's newest held job is
/// queued.
pub(crate) async fn freezing(app: &Arc<App>, entry: String, reason: Option<String>) -> Reply {
    if app.settings().entry(&entry).is_none() {
        return Reply::Error { message: format!("the running daemon has no entry named {entry:?}") };
    }
    let store = app.store.clone();
    let name = entry.clone();
    let Some(reason) = reason else {
        return match blocking(move || store.unfreeze(&name)).await {
            Ok(unfrozen) => {
                if let Some((id, key)) = &unfrozen.runs {
                    let waiting =
                        crate::jobs::queue::Waiting { id: *id, entry: entry.clone(), key: key.clone() };
                    app.queue.push_unreserved(vec![waiting]);
                }
                info!(%entry, runs = ?unfrozen.runs.as_ref().map(|r| r.0), "entry unfrozen");
                Reply::Unfrozen {
                    was_frozen: unfrozen.was_frozen,
                    runs: unfrozen.runs.map(|r| r.0),
                    superseded: unfrozen.superseded,
                }
            }
            Err(e) => Reply::Error { message: e.to_string() },
        };
    };
    let why = reason.clone();
    match blocking(move || store.freeze(&name, &why)).await {
        Ok(held) => {
            warn!(%entry, %reason, "entry frozen: its deliveries are held until it is unfrozen");
            Reply::Frozen { held }
        }
        Err(e) => Reply::Error { message: e.to_string() },
    }
}

/// Sends job `id`'s log as it grows, then its end.
async fn follow(
    app: &Arc<App>,
    id: i64,
    stream: &mut AsyncUnixStream,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let path = app.store.log_path(id);
    let mut offset = 0u64;
    loop {
        let store = app.store.clone();
        let job = blocking(move || store.job(id)).await.map_err(std::io::Error::other)?;
        // Read the log after the state: a final state means the log is complete.
        let chunk = read_from(&path, &mut offset).await;
        if !chunk.is_empty() {
            let text = String::from_utf8_lossy(&chunk).into_owned();
            send(stream, &Reply::Output { text }).await?;
        }
        match job {
            Some(job) if job.state.is_final() => {
                let done = Reply::Done {
                    id,
                    state: job.state.as_str().to_string(),
                    exit_code: job.exit_code,
                    reason: job.reason,
                };
                return send(stream, &done).await;
            }
            Some(_) => {}
            None => {
                let message = format!("job {id} is no longer in the store");
                return send(stream, &Reply::Error { message }).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {
                let message = format!(
                    "the daemon is stopping; job {id} stays recorded and runs or ends when it is back"
                );
                return send(stream, &Reply::Error { message }).await;
            }
        }
    }
}

/// What the file at `path` holds past `offset`, moving `offset` on; nothing if it is not there yet.
async fn read_from(path: &Path, offset: &mut u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let Ok(mut file) = tokio::fs::File::open(path).await else { return buf };
    if file.seek(std::io::SeekFrom::Start(*offset)).await.is_ok() && file.read_to_end(&mut buf).await.is_ok()
    {
        *offset += buf.len() as u64;
    }
    buf
}

/// The client side: `None` when no daemon listens (no socket, or one left by a daemon that is
/// gone), so the caller may run in the foreground. Any other failure (permissions) is an error:
/// a daemon may be running, and running beside it would race it.
pub fn connect(state_dir: &Path) -> std::io::Result<Option<UnixStream>> {
    match UnixStream::connect(socket_path(state_dir)) {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Sends `request` and hands each reply to `on_reply` until the daemon closes the connection.
pub fn exchange(
    stream: UnixStream,
    request: &Request,
    mut on_reply: impl FnMut(Reply),
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    for line in BufReader::new(stream).lines() {
        let reply: Reply = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
        on_reply(reply);
    }
    Ok(())
}
