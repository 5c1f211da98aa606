//! The state that the server, the control socket, the watcher and the workers share: the
//! current settings (an `Arc` snapshot swapped whole on reload) and their load status, the job
//! store and the queue. Recording a delivery's jobs ([`App::enqueue`]) and picking up the jobs
//! of the previous run ([`App::recover`]) live here, so every way in records jobs the same way.
//!
//! None of the parts that use it is known here: they import this module, never the reverse.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::event::Trigger;
use crate::jobs::action_records::{self, Ended};
use crate::jobs::queue::{Full, Queue, Waiting};
use crate::jobs::runner::{Outcome, KILL_GRACE};
use crate::metrics::{Metrics, ResultLabel};
use crate::settings::{self, Problems, Settings};
use crate::store::{JobState, NewJob, Seen, Store, StoreError};
use crate::telling::policy::Reports;

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

/// The state shared by the server, the control socket, the workers and the watcher.
pub struct App {
    /// Shared with the reporter of the store, which reads the current settings too.
    settings: Arc<RwLock<Arc<Settings>>>,
    status: Mutex<LoadStatus>,
    /// The last store error, until the store works again: `/health` is degraded meanwhile.
    trouble: Mutex<Option<String>>,
    pub store: Arc<Store>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    /// The running jobs' cancel signals (a cancel by request).
    pub cancels: crate::jobs::cancel::Cancels,
    /// Told when statuses or messages are written to the outbox ([`crate::outbox_sender`]).
    pub outbox_wake: Arc<tokio::sync::Notify>,
    source: PathBuf,
}

/// The result of recording a delivery's jobs.
#[derive(Debug)]
pub struct Enqueued {
    /// The jobs queued: (id, entry).
    pub queued: Vec<(i64, String)>,
    /// The earlier jobs of a delivery seen before, for the entries that need not run again.
    pub seen: Vec<Seen>,
    /// The entries not run because the push is a replay, with why.
    pub replays: Vec<(String, String)>,
    /// The jobs recorded held (their entry is frozen): (id, entry).
    pub held: Vec<(i64, String)>,
}

/// Why jobs were not recorded. Its message is the one both the HTTP answer and the control
/// socket give.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the job queue is full; try again later")]
    Full,
    #[error("cannot record the job: {0}")]
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
    pub fn new(settings: Settings) -> Result<App, StoreError> {
        for w in &settings.warnings {
            warn!(warning = %w, "settings: likely not what was meant");
        }
        let store = Store::open(&settings.server.state_dir)?;
        let status = LoadStatus {
            state: "loaded",
            file: settings.source.clone(),
            entries: settings.entries.len(),
            loaded_at: timestamp(SystemTime::now()),
            reloads: 0,
            problems: Vec::new(),
        };
        let source = settings.source.clone();
        let settings = Arc::new(RwLock::new(Arc::new(settings)));
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        store.set_reporter(Arc::new(Reports::new(settings.clone(), outbox_wake.clone())));
        Ok(App {
            source,
            settings,
            status: Mutex::new(status),
            trouble: Mutex::new(None),
            store: Arc::new(store),
            queue: Queue::new(),
            metrics: Arc::new(Metrics::new()),
            cancels: Default::default(),
            outbox_wake,
        })
    }

    /// The current settings snapshot.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn status(&self) -> LoadStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The store failed: logged at ERROR, and `/health` is degraded until [`App::store_works`].
    pub fn store_failed(&self, what: &str, error: &StoreError) {
        error!(%error, "{what}");
        *self.trouble.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{what}: {error}"));
    }

    /// A store operation succeeded: whatever failed before works again.
    pub fn store_works(&self) {
        let mut trouble = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(was) = trouble.take() {
            info!(was = %was, "the job store works again");
        }
    }

    /// The store error `/health` reports, if the store is failing.
    pub fn store_trouble(&self) -> Option<String> {
        self.trouble.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the settings again; swaps them in whole when valid, keeps the old ones otherwise.
    pub fn reload(&self) -> Result<Arc<Settings>, Problems> {
        let old = self.settings();
        // An edit that leaves no entry where there were some is a file caught half-written
        // (`entries:` and no more, `{}`) far more often than a wish: every deploy would stop.
        let loaded = settings::load(&self.source).and_then(|new| {
            if new.entries.is_empty() && !old.entries.is_empty() {
                let message = format!(
                    "{}: refused, as a file being written would be; to run nothing, stop the daemon",
                    settings::NO_ENTRIES
                );
                let file = new.source.clone();
                return Err(Problems(vec![settings::Problem { file, line: None, entry: None, message }]));
            }
            Ok(new)
        });
        match loaded {
            Ok(new) => {
                for (what, changed) in [
                    ("listen", old.server.listen != new.server.listen),
                    ("workers", old.server.workers != new.server.workers),
                    ("state_dir", old.server.state_dir != new.server.state_dir),
                    ("ca_file", old.server.ca_file != new.server.ca_file),
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
                drop(status);
                info!(entries = new.entries.len(), files = new.files.len(), "settings reloaded");
                self.metrics.reloads.get_or_create(&ResultLabel { result: "loaded" }).inc();
                self.metrics.settings_degraded.set(0);
                for w in &new.warnings {
                    warn!(warning = %w, "settings: likely not what was meant");
                }
                let back = self.queue.unpark(|name| new.entry(name).is_some());
                if back > 0 {
                    info!(jobs = back, "jobs whose entry is back wait to run again");
                }
                Ok(new)
            }
            Err(problems) => {
                for p in &problems.0 {
                    error!(problem = %p, "settings edit refused; the previous settings keep serving");
                }
                self.metrics.reloads.get_or_create(&ResultLabel { result: "refused" }).inc();
                self.metrics.settings_degraded.set(1);
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
        body: bytes::Bytes,
        jobs: Vec<NewJob>,
    ) -> Result<Enqueued, EnqueueError> {
        let capacity = self.settings().server.queue;
        let keys: Vec<(&str, &str)> = jobs.iter().map(|j| (j.entry.as_str(), queue_key(j))).collect();
        let reservation = self.queue.reserve(&keys, capacity)?;
        let inserted = self.store.insert_shared(delivery, body, &jobs, Some(reservation.replaces()))?;
        let new = waiting(inserted.new.iter().map(|(id, i)| (*id, &jobs[*i])));
        let queued: Vec<(i64, String)> = new.iter().map(|w| (w.id, w.entry.clone())).collect();
        // What the new jobs superseded is recorded with them; the queue only has to agree.
        for (_, _, entry) in with_entries(inserted.superseded.clone(), &queued) {
            self.metrics.job_ended(entry, Trigger::Webhook.as_str(), JobState::Superseded.as_str());
        }
        let mut superseded = self.queue.push(reservation, new);
        superseded.retain(|pair| !inserted.superseded.contains(pair));
        self.mark_superseded(with_entries(superseded, &queued));
        let held = inserted.held.iter().map(|(id, i)| (*id, jobs[*i].entry.clone())).collect();
        Ok(Enqueued { queued, seen: inserted.seen, replays: inserted.replays, held })
    }

    /// Records the jobs a newer one replaced in the queue that its recording did not supersede
    /// already (a job recorded earlier that reached the queue after the newer one). Off the path
    /// of the answer: until it is done they are only out of the queue, and if the daemon stops
    /// first, the next start finds the newer job and supersedes them again
    /// ([`Store::supersede_stale`]).
    fn mark_superseded(&self, pairs: Vec<(i64, i64, String)>) {
        if pairs.is_empty() {
            return;
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let mark = move || {
            for (old, by, entry) in pairs {
                match store.supersede(old, by) {
                    // Only webhook jobs supersede each other (see `queue_key`).
                    Ok(true) => {
                        metrics.job_ended(entry, Trigger::Webhook.as_str(), JobState::Superseded.as_str())
                    }
                    Ok(false) => {}
                    Err(e) => error!(job = old, error = %e, "cannot record a superseded job"),
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(mark)),
            Err(_) => mark(),
        }
    }

    /// Queues the jobs left unfinished by the previous run of the daemon; returns how many.
    /// A job whose entry is not in the settings at start is cancelled: at start the settings
    /// were read whole and checked, so the entry was removed for real (during a run, a job whose
    /// entry vanishes in a reload waits for it instead).
    pub fn recover(&self) -> Result<usize, StoreError> {
        self.settle_interrupted()?;
        self.store.supersede_stale()?;
        let settings = self.settings();
        let (jobs, orphans): (Vec<_>, Vec<_>) =
            self.store.unfinished()?.into_iter().partition(|j| settings.entry(&j.entry).is_some());
        for job in orphans {
            warn!(job = job.id, entry = %job.entry, "the job's entry is not in the settings: job cancelled");
            let reason = "cancelled at start: its entry is not in the settings";
            self.store.finish(job.id, JobState::Cancelled, None, Some(reason))?;
        }
        // A rollback runs before the jobs of its entry that wait with it.
        let mut jobs = jobs;
        jobs.sort_by_key(|j| (j.trigger != Trigger::Rollback, j.id));
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let entries: Vec<(i64, String)> = jobs.iter().map(|j| (j.id, j.entry.clone())).collect();
        let new: Vec<NewJob> =
            jobs.into_iter().map(|j| NewJob { entry: j.entry, trigger: j.trigger, event: j.event }).collect();
        let superseded = self.queue.push_unreserved(waiting(ids.iter().copied().zip(&new)));
        self.mark_superseded(with_entries(superseded, &entries));
        Ok(ids.len())
    }

    /// The jobs a crash left `running`: first their leftover processes are stopped (nothing of
    /// theirs may run beside a new job of the entry), then each whose actions all ended, while
    /// the daemon was down or just before it died, is recorded as they ended; the others run
    /// again from the start ([`Store::unfinished`]).
    fn settle_interrupted(&self) -> Result<(), StoreError> {
        let stopped = action_records::stop_leftovers(self.store.steps_root(), KILL_GRACE);
        if stopped > 0 {
            warn!(groups = stopped, "stopped the processes that jobs of the previous run left running");
        }
        for id in self.store.running()? {
            let dir = self.store.steps_path(id);
            let ended = match action_records::read(&dir) {
                Ended::Succeeded => Some((JobState::Succeeded, Some(0), None)),
                Ended::Failed { action, code } => {
                    let outcome = Outcome::Failed { action, exit_code: Some(code) };
                    // The timeout only words a timed-out job's reason: none here.
                    Some((JobState::Failed, outcome.exit_code(), outcome.reason(std::time::Duration::ZERO)))
                }
                Ended::Incomplete => None,
            };
            let job = self.store.job(id)?;
            let entry = job.as_ref().and_then(|j| self.settings().entry(&j.entry).cloned());
            // A job verified after its actions was not verified: it runs again, whole.
            let ended = ended.filter(|(state, ..)| {
                *state != JobState::Succeeded || entry.as_ref().is_none_or(|e| e.verify.is_none())
            });
            if let (Some((state, code, reason)), Some(job)) = (ended, job) {
                info!(
                    job = id,
                    state = state.as_str(),
                    "the job's actions all ended before the daemon came back"
                );
                let finished = crate::jobs::end::Finished { state, exit_code: code, reason };
                let rollback = entry.as_deref().map(|e| (e, job.trigger));
                crate::jobs::end::finish_job(&self.store, id, &finished, rollback)?;
            }
        }
        // No job runs now: every record of running actions is stale.
        for dir in std::fs::read_dir(self.store.steps_root())?.flatten() {
            action_records::remove(&dir.path());
        }
        Ok(())
    }
}

/// Superseded pairs (old, newer) with their entry, the newer job's (`jobs`: id and entry).
fn with_entries(pairs: Vec<(i64, i64)>, jobs: &[(i64, String)]) -> Vec<(i64, i64, String)> {
    pairs
        .into_iter()
        .map(|(old, by)| {
            let entry = jobs.iter().find(|(id, _)| *id == by).map(|(_, e)| e.clone()).unwrap_or_default();
            (old, by, entry)
        })
        .collect()
}

/// The queue's view of recorded jobs: (id, job) each.
fn waiting<'a>(jobs: impl IntoIterator<Item = (i64, &'a NewJob)>) -> Vec<Waiting> {
    jobs.into_iter()
        .map(|(id, j)| Waiting { id, entry: j.entry.clone(), key: queue_key(j).to_string() })
        .collect()
}

/// Jobs of one entry with the same key supersede each other: webhook jobs of the same ref. A
/// manual run was asked for by a person and is never superseded, nor supersedes.
fn queue_key(job: &NewJob) -> &str {
    match job.trigger {
        Trigger::Manual | Trigger::Rollback => "",
        Trigger::Webhook | Trigger::Poll => &job.event.git_ref,
    }
}

/// Blocking work was cut short by a panic; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panicked(pub String);

impl Panicked {
    /// The message of a task that panicked (or was cancelled).
    pub fn of(error: tokio::task::JoinError) -> Panicked {
        match error.try_into_panic() {
            Ok(payload) => Panicked(
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string()),
            ),
            Err(e) => Panicked(e.to_string()),
        }
    }
}

/// Runs blocking work off the async threads. A panic in it is returned, not propagated: the
/// caller (a worker, the watcher, a connection) goes on.
pub async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Panicked> {
    tokio::task::spawn_blocking(f).await.map_err(Panicked::of)
}

/// Runs a blocking store operation off the async threads; a panic in it is a store error.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    off_thread(f).await.unwrap_or_else(|p| Err(StoreError::Failed(p.0).into()))
}
