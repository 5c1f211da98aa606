//! The daemon: starts the store, the worker pool, the file watcher and the HTTP server, and
//! stops them in order.
//!
//! [`App`] is the state they share: the current settings (an `Arc` snapshot swapped whole on
//! reload), the job store and the queue. [`run`] takes the shutdown signal as a future, so tests
//! and the binary decide what stops it. Shutdown: stop accepting, let running jobs finish within
//! `shutdown_grace`, then kill their process groups; waiting jobs stay recorded for the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use crate::event::Trigger;
use crate::queue::{Full, Queue, Waiting};
use crate::runner::{self, JobContext, Log};
use crate::settings::{self, Problems, Settings};
use crate::store::{Inserted, JobState, NewJob, Store, StoreError};

/// What `/health` says about the settings.
#[derive(Debug, Clone, Serialize)]
pub struct LoadStatus {
    /// `loaded`, or `error` when the last edit was refused (the previous settings still serve).
    pub state: &'static str,
    pub file: PathBuf,
    pub entries: usize,
    pub loaded_at: String,
    pub reloads: u64,
    /// The problems of the refused edit.
    pub problems: Vec<String>,
}

/// The state shared by the server, the workers and the watcher.
pub struct App {
    settings: RwLock<Arc<Settings>>,
    status: Mutex<LoadStatus>,
    pub store: Arc<Store>,
    pub queue: Queue,
    source: PathBuf,
}

/// The result of recording a delivery's jobs.
#[derive(Debug)]
pub enum Enqueued {
    Queued(Vec<(i64, String)>),
    Duplicate(Vec<(i64, String)>),
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the job queue is full")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Full> for EnqueueError {
    fn from(_: Full) -> Self {
        EnqueueError::Full
    }
}

fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl App {
    /// Opens the store of `settings` and builds the shared state.
    pub fn new(settings: Settings) -> anyhow::Result<App> {
        let store = Store::open(&settings.server.state_dir).with_context(|| {
            format!("cannot open the job store in {}", settings.server.state_dir.display())
        })?;
        let status = LoadStatus {
            state: "loaded",
            file: settings.source.clone(),
            entries: settings.entries.len(),
            loaded_at: timestamp(SystemTime::now()),
            reloads: 0,
            problems: Vec::new(),
        };
        Ok(App {
            source: settings.source.clone(),
            settings: RwLock::new(Arc::new(settings)),
            status: Mutex::new(status),
            store: Arc::new(store),
            queue: Queue::new(),
        })
    }

    /// The current settings snapshot.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn status(&self) -> LoadStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the settings again; swaps them in whole when valid, keeps the old ones otherwise.
    pub fn reload(&self) -> Result<Arc<Settings>, Problems> {
        let old = self.settings();
        match settings::load(&self.source) {
            Ok(new) => {
                for (what, changed) in [
                    ("listen", old.server.listen != new.server.listen),
                    ("workers", old.server.workers != new.server.workers),
                    ("state_dir", old.server.state_dir != new.server.state_dir),
                ] {
                    if changed {
                        warn!("server.{what} changed: it takes effect when the daemon restarts");
                    }
                }
                let new = Arc::new(new);
                *self.settings.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.state = "loaded";
                status.entries = new.entries.len();
                status.loaded_at = timestamp(SystemTime::now());
                status.reloads += 1;
                status.problems.clear();
                info!(entries = new.entries.len(), files = new.files.len(), "settings reloaded");
                Ok(new)
            }
            Err(problems) => {
                for p in &problems.0 {
                    error!(problem = %p, "settings edit refused; the previous settings keep serving");
                }
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.state = "error";
                status.problems = problems.0.iter().map(ToString::to_string).collect();
                Err(problems)
            }
        }
    }

    /// Records the jobs of one delivery and queues them: the room is reserved first (a full
    /// queue records nothing), then the jobs are written durably, then queued. Blocking: call it
    /// off the async threads.
    pub fn enqueue(
        &self,
        delivery: Option<&str>,
        body: &[u8],
        jobs: Vec<NewJob>,
    ) -> Result<Enqueued, EnqueueError> {
        let capacity = self.settings().server.queue;
        let keys: Vec<(&str, &str)> = jobs.iter().map(|j| (j.entry.as_str(), queue_key(j))).collect();
        let reservation = self.queue.reserve(&keys, capacity)?;
        let ids = match self.store.insert(delivery, body, &jobs)? {
            Inserted::Duplicate(seen) => return Ok(Enqueued::Duplicate(seen)),
            Inserted::New(ids) => ids,
        };
        let waiting = ids
            .iter()
            .zip(&jobs)
            .map(|(id, j)| Waiting { id: *id, entry: j.entry.clone(), key: queue_key(j).to_string() })
            .collect();
        let superseded = self.queue.push(reservation, waiting);
        self.mark_superseded(superseded);
        Ok(Enqueued::Queued(ids.into_iter().zip(jobs.into_iter().map(|j| j.entry)).collect()))
    }

    /// Records the jobs a newer one replaced in the queue. Off the path of the answer: until
    /// it is done they are only out of the queue, and if the daemon stops first, the next
    /// start finds the newer job and supersedes them again ([`Store::supersede_stale`]).
    fn mark_superseded(&self, pairs: Vec<(i64, i64)>) {
        if pairs.is_empty() {
            return;
        }
        let store = self.store.clone();
        let mark = move || {
            for (old, by) in pairs {
                let reason = format!("superseded by job {by}, a newer event for the same entry and ref");
                if let Err(e) = store.finish(old, JobState::Superseded, None, Some(&reason)) {
                    error!(job = old, error = %e, "cannot record a superseded job");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(mark)),
            Err(_) => mark(),
        }
    }

    /// Queues the jobs left unfinished by the previous run of the daemon.
    pub fn recover(&self) -> Result<usize, StoreError> {
        self.store.supersede_stale()?;
        let jobs = self.store.unfinished()?;
        let count = jobs.len();
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let new: Vec<NewJob> =
            jobs.into_iter().map(|j| NewJob { entry: j.entry, trigger: j.trigger, event: j.event }).collect();
        let waiting: Vec<Waiting> = ids
            .iter()
            .zip(&new)
            .map(|(id, j)| Waiting { id: *id, entry: j.entry.clone(), key: queue_key(j).to_string() })
            .collect();
        let superseded = self.queue.push_unreserved(waiting);
        self.mark_superseded(superseded);
        Ok(count)
    }
}

/// Jobs of one entry with the same key supersede each other: webhook jobs of the same ref. A
/// manual run was asked for by a person and is never superseded, nor supersedes.
fn queue_key(job: &NewJob) -> &str {
    match job.trigger {
        Trigger::Manual => "",
        Trigger::Webhook => &job.event.git_ref,
    }
}

/// Resolves on SIGTERM or SIGINT, with the signal's name. Never resolves if the handlers
/// cannot be installed (which is logged).
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs a blocking store operation off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("store operation panicked")
}

/// One worker: takes jobs from the queue until it closes.
async fn worker(app: Arc<App>, cancel: watch::Receiver<bool>) {
    let mut done = 0u64;
    while let Some(next) = app.queue.next().await {
        let span = info_span!("job", job = next.id, entry = %next.entry);
        run_job(&app, &next, cancel.clone()).instrument(span).await;
        app.queue.done(&next.entry);
        done += 1;
        if done % 100 == 0 {
            let store = app.store.clone();
            if let Err(e) = blocking(move || store.prune()).await {
                warn!(error = %e, "cannot prune old jobs");
            }
        }
    }
}

async fn run_job(app: &Arc<App>, next: &Waiting, mut cancel: watch::Receiver<bool>) {
    let store = app.store.clone();
    let id = next.id;
    let job = match blocking(move || store.job(id)).await {
        Ok(Some(job)) if job.state == JobState::Queued => job,
        Ok(_) => return,
        Err(e) => {
            error!(error = %e, "cannot read the job");
            return;
        }
    };
    // A job runs with the settings of the moment it starts; it keeps them until it ends.
    let settings = app.settings();
    let Some(entry) = settings.entry(&job.entry).cloned() else {
        let store = app.store.clone();
        let _ = blocking(move || {
            store.finish(id, JobState::Cancelled, None, Some("the entry is no longer in the settings"))
        })
        .await;
        warn!("entry no longer in the settings: job cancelled");
        return;
    };
    let log_limit = settings.server.log_limit;
    drop(settings);

    let store = app.store.clone();
    let prepared = blocking(move || -> Result<(Option<PathBuf>, Log), StoreError> {
        store.mark_running(id)?;
        let payload = store.write_payload(id)?;
        let log = Log::create(&store.log_path(id), log_limit)?;
        Ok((payload, log))
    })
    .await;
    let (payload, mut log) = match prepared {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "cannot start the job");
            let store = app.store.clone();
            let reason = format!("could not start: {e}");
            let _ = blocking(move || store.finish(id, JobState::Failed, None, Some(&reason))).await;
            return;
        }
    };
    info!(event = job.event.name(), commit = %job.event.after, "job started");
    let context = JobContext { id, trigger: job.trigger, event: &job.event, payload: payload.as_deref() };
    let outcome = runner::run(&entry, &context, &mut log, &mut cancel).await;
    drop(log);
    let (state, code) = outcome.job_state();
    let reason = outcome.reason(entry.timeout);
    match &reason {
        None => info!(state = state.as_str(), "job finished"),
        Some(r) => warn!(state = state.as_str(), reason = %r, "job finished"),
    }
    let store = app.store.clone();
    let result = blocking(move || {
        store.remove_payload_file(id);
        store.finish(id, state, code, reason.as_deref())
    })
    .await;
    if let Err(e) = result {
        error!(error = %e, "cannot record the end of the job");
    }
}

/// Runs the daemon until `shutdown` resolves. `on_listening` is told the bound address.
pub async fn run(
    settings_path: &Path,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let settings = settings::load(settings_path).map_err(|p| anyhow::anyhow!("{p}"))?;
    let listen = settings.server.listen.clone();
    let workers = settings.server.workers;
    let grace = settings.server.shutdown_grace;
    let state_dir = settings.server.state_dir.clone();
    let app = Arc::new(App::new(settings)?);
    let control = crate::control::bind(&state_dir)?;
    let recovered = app.recover()?;
    if recovered > 0 {
        info!(jobs = recovered, "picked up jobs left unfinished by the previous run");
    }

    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut pool = tokio::task::JoinSet::new();
    for _ in 0..workers {
        pool.spawn(worker(app.clone(), cancel_rx.clone()));
    }

    let (stop_control, control_stop) = watch::channel(false);
    let control = tokio::spawn(crate::control::serve(app.clone(), control, control_stop));

    let _watcher = crate::reload::watch(app.clone())?;
    let listener = TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, "listening");
    on_listening(addr);
    crate::systemd::notify(&format!("READY=1\nSTATUS=listening on {addr}"));

    crate::server::serve(app.clone(), listener, shutdown).await;

    // Stop handing out jobs; let the running ones finish within the grace period.
    app.queue.close();
    let (waiting, running) = app.queue.depth();
    crate::systemd::notify(&format!("STOPPING=1\nSTATUS=stopping: {running} running job(s) finishing"));
    info!(running, waiting, grace = %humantime::format_duration(grace), "stopping: waiting for running jobs");
    // A second SIGTERM or SIGINT (Ctrl-C twice) does not wait for the grace period.
    let drained = tokio::select! {
        _ = async { while pool.join_next().await.is_some() {} } => true,
        _ = tokio::time::sleep(grace) => {
            warn!("grace period over: killing the running jobs' process groups");
            false
        }
        name = stop_signal() => {
            warn!("second stop signal ({name}): killing the running jobs' process groups");
            false
        }
    };
    if !drained {
        let _ = cancel_tx.send(true);
        while pool.join_next().await.is_some() {}
    }
    let _ = stop_control.send(true);
    let _ = control.await;
    info!(waiting, "stopped; waiting jobs stay recorded for the next start");
    Ok(())
}
