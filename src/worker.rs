//! The worker pool: a fixed number of workers take jobs from the queue, one job per entry at a
//! time, prepare each (running state, payload file, log), hand it to the work they were given
//! (the runner's actions, in the daemon), and record how it ended with [`finish_job`], which
//! the foreground manual run uses too.
//!
//! A job's work runs in a task of its own: if it panics, the job is recorded `failed` with the
//! reason and the worker takes the next one; the pool never shrinks silently.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument};

use crate::app::{blocking, App, Panicked};
use crate::event::{Event, Trigger};
use crate::jobs::action_records::{self, ActionRecords};
use crate::jobs::entry_lock::EntryLock;
use crate::jobs::queue::Waiting;
use crate::jobs::runner::{self, JobContext, Log, Outcome};
use crate::settings::Entry;
use crate::store::{JobState, RolledBack, StoreError};

/// Everything a job's work needs, owned.
pub struct Prepared {
    pub id: i64,
    pub entry: Arc<Entry>,
    pub trigger: Trigger,
    pub event: Event,
    pub payload: Option<PathBuf>,
    pub log: Log,
    pub cancel: watch::Receiver<bool>,
    pub steps: Option<ActionRecords>,
    /// When the job was recorded (ms since the epoch).
    pub created_at: i64,
    /// The entry's lock, held until the job's end.
    pub lock: Option<EntryLock>,
    /// Where each host's result goes, for a job deployed to hosts.
    pub store: Option<Arc<crate::store::Store>>,
}

/// What a worker does with a prepared job.
pub type Work = Arc<dyn Fn(Prepared) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// The daemon's work: the entry's actions, by the runner.
pub fn actions() -> Work {
    Arc::new(|mut job: Prepared| {
        Box::pin(async move {
            let context = JobContext {
                id: job.id,
                trigger: job.trigger,
                event: &job.event,
                payload: job.payload.as_deref(),
                steps: job.steps.as_ref(),
                lock: job.lock.as_ref(),
                store: job.store.as_deref(),
            };
            runner::run(&job.entry, &context, &mut job.log, &mut job.cancel).await
        })
    })
}

pub use crate::jobs::end::{finish_job, Finished};

/// Starts `count` workers doing `work` until the queue closes. `cancel` turning true kills the
/// running jobs' process groups (the daemon's stop after its grace period).
pub fn spawn(app: &Arc<App>, count: usize, work: Work, cancel: &watch::Receiver<bool>) -> JoinSet<()> {
    let mut pool = JoinSet::new();
    for _ in 0..count {
        pool.spawn(worker(app.clone(), work.clone(), cancel.clone()));
    }
    pool
}

/// One worker: takes jobs from the queue until it closes.
async fn worker(app: Arc<App>, work: Work, cancel: watch::Receiver<bool>) {
    let mut done = 0u64;
    while let Some(next) = app.queue.next().await {
        let span = info_span!("job", job = next.id, entry = %next.entry);
        match run_job(&app, &next, &work, cancel.clone()).instrument(span).await {
            Taken::Done => app.queue.done(&next.entry),
            Taken::Park => app.queue.park(next),
        }
        done += 1;
        if done % 100 == 0 {
            let store = app.store.clone();
            let server = &app.settings().server;
            let (history, releases) = (server.history, server.releases_kept);
            if let Err(e) = blocking(move || store.prune(history, releases)).await {
                warn!(error = %e, "cannot prune old jobs");
            }
        }
    }
}

/// What became of a job a worker took.
enum Taken {
    /// It ran, or cannot run: its entry's next job may start.
    Done,
    /// Its entry is not in the settings: it waits for a reload that brings the entry back.
    Park,
}

/// Prepares, runs and records one job. Nothing here can end the worker. A store that fails
/// (a full disk) is tried again, with growing pauses, until it works or the daemon stops: a job
/// that had its 202 is never dropped, and one whose actions ran always gets its end recorded.
async fn run_job(app: &Arc<App>, next: &Waiting, work: &Work, mut cancel: watch::Receiver<bool>) -> Taken {
    let id = next.id;
    let Some(lock) = entry_lock(app, next, &cancel).await else {
        // Stopping while another process held the entry: it is still `queued`.
        return Taken::Done;
    };
    let mut pause = Pause::new();
    let mut lock = Some(lock);
    // The job's own cancel signal: the daemon's stop, or a cancel by request.
    let (job_cancel, relay) = app.cancels.register(id, cancel.clone());
    let taken = run_registered(app, next, work, &mut cancel, job_cancel, &mut pause, &mut lock).await;
    relay.abort();
    app.cancels.done(id);
    taken
}

/// [`run_job`] once the job is registered for a cancel by request.
async fn run_registered(
    app: &Arc<App>,
    next: &Waiting,
    work: &Work,
    cancel: &mut watch::Receiver<bool>,
    job_cancel: watch::Receiver<bool>,
    pause: &mut Pause,
    lock: &mut Option<Option<EntryLock>>,
) -> Taken {
    let id = next.id;
    let prepared = loop {
        match prepare(app, id, job_cancel.clone()).await {
            Ok(Start::Run(mut p)) => {
                p.lock = lock.take().flatten();
                break *p;
            }
            Ok(Start::Gone) => return Taken::Done,
            Ok(Start::NoEntry) => return Taken::Park,
            Err(e @ StoreError::Corrupt { .. }) => {
                app.store_failed(&format!("job {id} cannot be read; it is left as it is"), &e);
                return Taken::Done;
            }
            Err(e) => {
                app.store_failed(&format!("cannot start job {id}; trying again"), &e);
                if !pause.wait(app, cancel).await {
                    // Stopping: it is still `queued`, for the next start.
                    return Taken::Done;
                }
            }
        }
    };
    app.store_works();
    info!(event = prepared.event.name(), commit = %prepared.event.after, "job started");
    let timeout = prepared.entry.timeout;
    let rollback_entry = prepared.entry.clone();
    let (entry, trigger) = (prepared.entry.name.clone(), prepared.trigger);
    let entry_label = crate::metrics::EntryLabel { entry: entry.clone() };
    let waited = (crate::store::now_ms() - prepared.created_at).max(0) as f64 / 1000.0;
    app.metrics.queue_wait.get_or_create(&entry_label).observe(waited);
    let started = std::time::Instant::now();
    // Its own task: a panic in the work ends that task, not this worker.
    let finished = match tokio::spawn(work(prepared)).await {
        // Cancelled by request: recorded so, with who asked.
        Ok(Outcome::Cancelled { action }) => match app.cancels.done(id) {
            Some(why) => Finished::cancelled(action, &why),
            // Else stopped by the daemon's stop: it runs again at the next start.
            None => Finished::interrupted(action),
        },
        Ok(outcome) => Finished::of(&outcome, timeout),
        Err(e) => {
            let why = Panicked::of(e);
            error!(panic = %why, "the job's run panicked");
            Finished::failed(format!("internal error: the run panicked: {why}"))
        }
    };
    if finished.state.is_final() {
        let m = &app.metrics;
        m.job_duration.get_or_create(&entry_label).observe(started.elapsed().as_secs_f64());
        m.job_ended(entry, trigger.as_str(), finished.state.as_str());
        if finished.state == JobState::Succeeded {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            m.last_success.get_or_create(&entry_label).set(now.as_secs_f64());
        }
    }
    match &finished.reason {
        None => info!(state = finished.state.as_str(), "job finished"),
        Some(r) => warn!(state = finished.state.as_str(), reason = %r, "job finished"),
    }
    let failed_rollback =
        trigger == Trigger::Rollback && finished.state.is_final() && finished.state != JobState::Succeeded;
    match record(app, id, finished, (&rollback_entry, trigger), cancel).await {
        Some(RolledBack::To { job, commit }) => {
            warn!(rollback = job, %commit, "the job failed: rolling back to the last release");
            let key = String::new();
            app.queue.push_first(Waiting { id: job, entry: rollback_entry.name.clone(), key });
        }
        Some(RolledBack::NoRelease) => warn!("the job failed and the entry has no release to roll back to"),
        None if failed_rollback => error!(
            "the rollback failed: the entry is left as the rollback left it; no other rollback follows"
        ),
        None => {}
    }
    Taken::Done
}

/// The entry's lock across processes, waiting while another process holds it (a foreground
/// run, or the actions a killed run left behind): `Some(None)` when the lock cannot be had at
/// all (the job runs unlocked, as before locks, and the log says why), `None` when the daemon
/// stops meanwhile.
async fn entry_lock(
    app: &Arc<App>,
    next: &Waiting,
    cancel: &watch::Receiver<bool>,
) -> Option<Option<EntryLock>> {
    let state_dir = app.settings().server.state_dir.clone();
    let (entry, id) = (next.entry.clone(), next.id);
    let stop = cancel.clone();
    let app = app.clone();
    let taken = tokio::task::spawn_blocking(move || {
        EntryLock::take(
            &state_dir,
            &entry,
            || warn!(job = id, "another process runs this entry (a manual run, or what a killed run left running): the job waits for it"),
            || *stop.borrow() || app.queue.is_closed(),
        )
    })
    .await;
    match taken {
        Ok(Ok(Some(lock))) => Some(Some(lock)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            warn!(job = id, error = %e, "cannot take the entry's lock file: the job runs without it");
            Some(None)
        }
        Err(e) => {
            error!(job = id, panic = %Panicked::of(e), "taking the entry's lock panicked: the job runs without it");
            Some(None)
        }
    }
}

/// Growing pauses between tries of a failing store: 250 ms, doubled up to 5 s.
struct Pause(Duration);

impl Pause {
    const FIRST: Duration = Duration::from_millis(250);
    const MOST: Duration = Duration::from_secs(5);

    fn new() -> Pause {
        Pause(Pause::FIRST)
    }

    /// Waits before the next try; `false` when the daemon stops meanwhile (or has stopped
    /// handing out jobs), so the caller gives up and leaves the job for the next start.
    async fn wait(&mut self, app: &App, cancel: &mut watch::Receiver<bool>) -> bool {
        let pause = self.0;
        self.0 = (self.0 * 2).min(Pause::MOST);
        if app.queue.is_closed() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => !app.queue.is_closed(),
            _ = cancel.wait_for(|stop| *stop) => false,
        }
    }
}

/// Whether a job taken from the queue can start.
enum Start {
    Run(Box<Prepared>),
    /// It is no longer waiting (superseded meanwhile).
    Gone,
    /// Its entry is not in the current settings.
    NoEntry,
}

/// The job ready to run. It is marked `running` last, once everything it needs is written:
/// when anything fails before, it is still `queued`, and trying again starts from nothing.
async fn prepare(app: &Arc<App>, id: i64, cancel: watch::Receiver<bool>) -> Result<Start, StoreError> {
    let store = app.store.clone();
    let job = match blocking(move || store.job(id)).await? {
        Some(job) if job.state == JobState::Queued => job,
        _ => return Ok(Start::Gone),
    };
    // A job runs with the settings of the moment it starts; it keeps them until it ends.
    let settings = app.settings();
    let Some(entry) = settings.entry(&job.entry).cloned() else {
        warn!("the entry is not in the settings now: the job waits for a reload that brings it back");
        return Ok(Start::NoEntry);
    };
    let log_limit = settings.server.log_limit;
    drop(settings);
    let store = app.store.clone();
    let total = entry.actions.len();
    let started = blocking(move || -> Result<Option<(Option<PathBuf>, Log, ActionRecords)>, StoreError> {
        // The record of its actions before it is `running`: from then on, a crash must find it.
        let steps = ActionRecords::begin(&store.steps_path(id), total)?;
        let payload = store.write_payload(id)?;
        let log = Log::create(&store.log_path(id), log_limit)?;
        if !store.mark_running(id)? {
            // Superseded since it was read: nothing of it may stay behind.
            drop((steps, log));
            action_records::remove(&store.steps_path(id));
            store.remove_payload_file(id);
            let _ = std::fs::remove_file(store.log_path(id));
            return Ok(None);
        }
        Ok(Some((payload, log, steps)))
    })
    .await?;
    let Some((payload, log, steps)) = started else { return Ok(Start::Gone) };
    let steps = Some(steps);
    let prepared = Prepared {
        id,
        entry,
        trigger: job.trigger,
        event: job.event,
        payload,
        log,
        cancel,
        steps,
        created_at: job.created_at,
        lock: None,
        store: Some(app.store.clone()),
    };
    Ok(Start::Run(Box::new(prepared)))
}

/// Records the end of job `id`, trying again while the store fails (unless the daemon stops:
/// then the record of its actions on disk tells the next start how it ended).
async fn record(
    app: &Arc<App>,
    id: i64,
    finished: Finished,
    of: (&Arc<Entry>, Trigger),
    cancel: &mut watch::Receiver<bool>,
) -> Option<RolledBack> {
    let mut pause = Pause::new();
    loop {
        let store = app.store.clone();
        let end = finished.clone();
        let (entry, trigger) = (of.0.clone(), of.1);
        match blocking(move || finish_job(&store, id, &end, Some((&entry, trigger)))).await {
            Ok(rolled_back) => {
                app.store_works();
                return rolled_back;
            }
            Err(e) => {
                app.store_failed(&format!("cannot record the end of job {id}; trying again"), &e);
                if !pause.wait(app, cancel).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewJob;

    /// A job a worker took from the queue in the instant a newer push superseded it (recorded
    /// with the newer job) does not run and leaves no log, payload or steps behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_superseded_after_it_was_taken_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.yaml");
        std::fs::write(&path, "entries:\n  site:\n    insecure: true\n    actions: [\"true\"]\n").unwrap();
        let settings = crate::settings::load_with_env(&path, &|_| None).unwrap();
        let app = Arc::new(App::new(settings).unwrap());
        let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = runs.clone();
        let work: Work = Arc::new(move |job: Prepared| {
            seen.lock().unwrap().push(job.id);
            Box::pin(async move { Outcome::Succeeded })
        });
        let push = |commit: &str| NewJob {
            entry: "site".into(),
            trigger: Trigger::Webhook,
            event: Event::manual(Some("main"), Some(commit)),
        };
        let older =
            app.enqueue(None, bytes::Bytes::from_static(b"{}"), vec![push("aaa")]).unwrap().queued[0].0;
        // The newer push reserves its room while the older one waits, and a worker takes the
        // older one before the newer one is recorded (the instant between the two).
        let job = push("bbb");
        let key = job.event.git_ref.clone();
        let reservation = app.queue.reserve(&[("site", &key)], 10).unwrap();
        let taken = app.queue.next().await.unwrap();
        assert_eq!(taken.id, older);
        let body = bytes::Bytes::from_static(b"{}");
        let inserted = app.store.insert_shared(None, body, &[job], Some(reservation.replaces())).unwrap();
        let newer = inserted.new[0].0;
        let waiting = crate::jobs::queue::Waiting { id: newer, entry: "site".into(), key };
        app.queue.push(reservation, vec![waiting]);
        let (_cancel_tx, cancel) = watch::channel(false);
        assert!(matches!(run_job(&app, &taken, &work, cancel).await, Taken::Done));
        assert!(runs.lock().unwrap().is_empty(), "the superseded job ran");
        let job = app.store.job(older).unwrap().unwrap();
        assert_eq!(job.state, JobState::Superseded);
        assert!(job.reason.unwrap().contains(&format!("job {newer}")));
        assert!(!app.store.log_path(older).exists(), "a log of a job that never ran");
        assert!(!app.store.steps_path(older).exists());
        assert!(!app.store.payload_path(older).exists());
        app.queue.done("site");
        assert_eq!(app.queue.next().await.unwrap().id, newer, "the newer job runs instead");
    }

    /// A job whose run panics is recorded failed with the reason, and the pool's only worker
    /// goes on to the next job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_run_fails_its_job_and_the_worker_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.yaml");
        let yaml = "entries:\n  boom:\n    insecure: true\n    actions: [\"true\"]\n  fine:\n    insecure: true\n    actions: [\"true\"]\n";
        std::fs::write(&path, yaml).unwrap();
        let settings = crate::settings::load_with_env(&path, &|_| None).unwrap();
        let app = Arc::new(App::new(settings).unwrap());
        let work: Work = Arc::new(|job: Prepared| {
            Box::pin(async move {
                if job.entry.name == "boom" {
                    panic!("injected fault in job {}", job.id);
                }
                Outcome::Succeeded
            })
        });
        let (_cancel_tx, cancel) = watch::channel(false);
        let mut pool = spawn(&app, 1, work, &cancel);
        let mut ids = Vec::new();
        for entry in ["boom", "fine", "boom", "fine"] {
            let job =
                NewJob { entry: entry.into(), trigger: Trigger::Manual, event: Event::manual(None, None) };
            ids.push(app.enqueue(None, bytes::Bytes::new(), vec![job]).unwrap().queued[0].0);
        }
        let store = app.store.clone();
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let jobs: Vec<_> = ids.iter().map(|id| store.job(*id).unwrap().unwrap()).collect();
                if jobs.iter().all(|j| j.state.is_final()) {
                    return jobs;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every job ends");
        for job in &ended {
            if job.entry == "boom" {
                assert_eq!(job.state, JobState::Failed);
                let reason = job.reason.as_deref().unwrap();
                assert!(
                    reason.contains(&format!("the run panicked: injected fault in job {}", job.id)),
                    "{reason}"
                );
            } else {
                assert_eq!(job.state, JobState::Succeeded, "{:?}", job.reason);
            }
        }
        // The entry is released just after the end is recorded.
        let released = tokio::time::timeout(Duration::from_secs(5), async {
            while app.queue.depth() != crate::jobs::queue::Depth::default() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(released.await.is_ok(), "no entry is left marked running: {:?}", app.queue.depth());
        app.queue.close();
        while let Some(joined) = pool.join_next().await {
            joined.expect("the worker itself never panicked");
        }
    }
}
