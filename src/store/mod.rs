//! The job store: every job, its state and timings, in an embedded SQLite database under
//! `state_dir`, and each job's output in `state_dir/logs/<id>.log`.
//!
//! A job is written (with the raw request body its actions will read) before the HTTP answer
//! is sent, so a crash loses none: [`Store::unfinished`] hands back what was queued or running.
//! The same delivery id twice finds the jobs of the first. Where jobs are recorded
//! ([`record`]), a new job supersedes the waiting ones of its entry and ref and a replayed push
//! is refused ([`replay`]), in the same transaction; which job runs when is the queue's.

mod freeze;
mod job;
mod job_hosts;
mod outbox;
mod page_key;
mod prune;
mod query;
mod record;
mod releases;
mod replay;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use rusqlite::{params, Connection, OptionalExtension};

pub use freeze::{Frozen, Unfrozen};
pub use job::{Job, JobState, NewJob};
use job::{RawJob, COLUMNS};
pub use job_hosts::HostResult;
use outbox::Facts;
pub use outbox::{destination, Backlog, Change, Item, Outgoing, Reporter, STATUS_SINK};
pub use query::{Counts, JobFilter};
pub use releases::{NoRelease, RolledBack, RELEASES_KEPT};
/// How many of the newest jobs (and their logs) are kept; older ones go once finished.
pub const HISTORY: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("job store: {0}")]
    Io(#[from] std::io::Error),
    #[error("job store: cannot encode the event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("job database: job {id}: {what}")]
    Corrupt { id: i64, what: String },
    #[error("job database: {0}")]
    Schema(String),
    #[error(
        "the job database {path} is damaged ({detail}). Move it aside to start with an empty job history \
         (mv {path} {path}.damaged: its jobs are lost, the job logs stay), or restore it from a backup"
    )]
    Damaged { path: String, detail: String },
    /// A store operation ended without an answer (it panicked); the database is unchanged
    /// (each change is one transaction).
    #[error("job store: the operation failed unexpectedly: {0}")]
    Failed(String),
    /// The error of a group commit, as its leader met it (the message is the original's).
    #[error("{0}")]
    Shared(String),
}

/// What [`Store::insert`] did.
#[derive(Debug, Default)]
pub struct Inserted {
    /// The jobs recorded: (id, index of the job in the list given).
    pub new: Vec<(i64, usize)>,
    /// The jobs of entries for which this delivery was seen before and need not run again.
    pub seen: Vec<Seen>,
    /// The waiting jobs a new one superseded, recorded in the same transaction: (old, new).
    pub superseded: Vec<(i64, i64)>,
    /// The jobs not recorded because their push is a replay: (entry, why).
    pub replays: Vec<(String, String)>,
    /// The jobs recorded `held`, their entry being frozen: (id, index).
    pub held: Vec<(i64, usize)>,
}

/// An earlier job of a delivery seen again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: i64,
    pub entry: String,
    pub state: JobState,
    /// A newer job of the same entry and ref, recorded since: the reason a failed job is not
    /// run again (an older commit never deploys after a newer one).
    pub newer: Option<i64>,
}

impl Inserted {
    /// The delivery was seen before for every entry: nothing new was recorded.
    pub fn is_duplicate(&self) -> bool {
        self.new.is_empty() && !self.seen.is_empty()
    }
}

pub struct Store {
    /// One connection, so that writers queue on a mutex rather than on SQLite's busy handler
    /// (which sleeps). It runs with `synchronous = NORMAL`; recording new jobs switches to
    /// `FULL` for its commit, which is on disk before it returns (the HTTP answer waits for it).
    /// A job's later changes (running, finished) do not wait for the disk: a power loss can lose
    /// only those, and then the job runs again, as after a crash. The next durable commit
    /// writes them out too.
    conn: Mutex<Connection>,
    /// Deliveries waiting for the connection: whoever gets it next records all of them in one
    /// durable commit (a group commit), so that a burst is not one fsync per delivery.
    pending: Mutex<Vec<record::Pending>>,
    logs: PathBuf,
    payloads: PathBuf,
    steps: PathBuf,
    /// What decides the outbox items of each change of state ([`Store::set_reporter`]).
    reporter: std::sync::RwLock<Option<Arc<dyn Reporter>>>,
}

/// A lock, even if a holder panicked (what it guards stays consistent: plain lists and results).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The database's file name under `state_dir`.
pub const DATABASE: &str = "jobs.sqlite3";

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64
}

impl Store {
    /// Opens (creating if needed) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let logs = state_dir.join("logs");
        let payloads = state_dir.join("payloads");
        let steps = state_dir.join("steps");
        // Owner-only, whatever the umask: payloads may carry a host's secret, logs a deploy's.
        // `state_dir` itself keeps its mode when it exists already (it may be shared, or made by
        // the service manager); the directories inside are the store's own.
        if !state_dir.exists() {
            private_dir(state_dir)?;
        }
        for dir in [&logs, &payloads, &steps] {
            private_dir(dir)?;
        }
        let path = state_dir.join(DATABASE);
        let damaged = |detail: String| StoreError::Damaged { path: path.display().to_string(), detail };
        let conn = open_checked(&path).map_err(|e| match e {
            StoreError::Db(e) if is_damage(&e) => damaged(e.to_string()),
            other => other,
        })?;
        if let Some(detail) = integrity_problem(&conn)? {
            return Err(damaged(detail));
        }
        for suffix in ["", "-wal", "-shm"] {
            let file = state_dir.join(format!("{DATABASE}{suffix}"));
            // Best effort: a file another user made is left as it is.
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Store {
            conn: Mutex::new(conn),
            pending: Mutex::new(Vec::new()),
            logs,
            payloads,
            steps,
            reporter: std::sync::RwLock::new(None),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the database consistent (SQLite transactions).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the actions of running jobs are recorded ([`crate::jobs::action_records`]).
    pub fn steps_root(&self) -> &Path {
        &self.steps
    }

    /// Where the actions of running job `id` are recorded.
    pub fn steps_path(&self, id: i64) -> PathBuf {
        self.steps.join(id.to_string())
    }

    /// The daemon's jobs left `running` (by a crash), oldest first.
    pub fn running(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id FROM jobs WHERE state = 'running' AND foreground_pid IS NULL ORDER BY id")?;
        let ids = stmt.query_map([], |r| r.get("id"))?.collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    /// The log file of job `id`.
    pub fn log_path(&self, id: i64) -> PathBuf {
        self.logs.join(format!("{id}.log"))
    }

    /// Jobs left queued or running (by a crash or a stop), oldest first. Running ones are put
    /// back to queued: their actions run again from the start. Foreground runs are not the
    /// daemon's to repeat: one whose process is gone is marked failed.
    pub fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE jobs SET state = 'queued', started_at = NULL,
                    reason = 'restarted: the daemon stopped while this job ran'
             WHERE state = 'running' AND foreground_pid IS NULL",
            [],
        )?;
        let mut stmt = conn.prepare(
            "SELECT id, foreground_pid FROM jobs WHERE state = 'running' AND foreground_pid IS NOT NULL",
        )?;
        let foreground: Vec<(i64, i32)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (id, pid) in foreground {
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if !alive {
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?2,
                            reason = 'interrupted: the foreground run ended without recording its end'
                     WHERE id = ?1",
                    params![id, now_ms()],
                )?;
            }
        }
        let mut stmt =
            conn.prepare(&format!("SELECT {COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY id"))?;
        let rows = stmt.query_map([], RawJob::read)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawJob::decode).collect()
    }

    /// Supersedes the waiting webhook jobs that have a newer job of the same entry and ref
    /// (left so by a stop between queuing the newer one and recording the older one's end):
    /// the newest event wins, even when its job has already run.
    pub fn supersede_stale(&self) -> Result<usize, StoreError> {
        let stale: Vec<(i64, i64)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT j.id, MAX(n.id) FROM jobs j JOIN jobs n
                   ON n.entry = j.entry AND n.git_ref = j.git_ref AND n.trigger IN ('webhook', 'poll') AND n.id > j.id
                 WHERE j.state = 'queued' AND j.trigger IN ('webhook', 'poll') AND j.git_ref != ''
                 GROUP BY j.id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            rows
        };
        for (old, by) in &stale {
            self.supersede(*old, *by)?;
        }
        Ok(stale.len())
    }

    /// The ref of the entry's latest job that had one (a manual run's default).
    pub fn last_ref(&self, entry: &str) -> Result<Option<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, git_ref FROM jobs WHERE entry = ?1 AND git_ref != '' ORDER BY id DESC LIMIT 1",
        )?;
        let mut rows = stmt.query_map([entry], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.next().transpose()?)
    }

    /// The entry's latest successful job and the commit it ran for (`skip_deployed`).
    pub fn last_deployed(&self, entry: &str) -> Result<Option<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, commit_sha FROM jobs WHERE entry = ?1 AND state = 'succeeded' ORDER BY id DESC LIMIT 1",
        )?;
        let mut rows = stmt.query_map([entry], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.next().transpose()?)
    }

    /// Puts a job that was running back to `queued` (interrupted by the daemon's stop): the
    /// next start runs it again. Its payload stays.
    pub fn requeue(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.change(id, |tx| {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'queued', started_at = NULL, reason = ?2 WHERE id = ?1",
            )?
            .execute(params![id, reason])?;
            Ok(true)
        })
        .map(drop)
    }

    /// Marks a waiting job `running`; `false` when it is no longer waiting (a newer job
    /// superseded it since it was taken from the queue): then it must not run.
    pub fn mark_running(&self, id: i64) -> Result<bool, StoreError> {
        self.change(id, |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1 AND state = 'queued'",
                )?
                .execute(params![id, now_ms()])?;
            Ok(changed == 1)
        })
    }

    /// A change of job `id`'s state by `update` (which says whether it changed anything), with
    /// the outbox items it sends, in one transaction.
    fn change(
        &self,
        id: i64,
        update: impl FnOnce(&Connection) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let Some(reporter) = self.reporter() else { return update(&conn) };
        let tx = conn.transaction()?;
        if !update(&tx)? {
            return Ok(false);
        }
        let wanted = outbox::entry_of(&tx, id)?.is_some_and(|e| reporter.wants(&e));
        let wrote = wanted && self.report_change(&tx, reporter.as_ref(), id, Facts::default())?;
        tx.commit()?;
        drop(conn);
        if wrote {
            reporter.written();
        }
        Ok(true)
    }

    /// Records that the waiting job `old` was superseded by the newer job `by` (nothing when it
    /// is not waiting any more: superseded already, or started).
    pub fn supersede(&self, old: i64, by: i64) -> Result<bool, StoreError> {
        let reason = superseded_reason(by);
        self.finish_with(old, JobState::Superseded, None, Some(&reason), Some(by))
    }

    /// Puts a job in a final state, and drops its payload when no unfinished job needs it.
    pub fn finish(
        &self,
        id: i64,
        state: JobState,
        exit_code: Option<i32>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.finish_with(id, state, exit_code, reason, None).map(drop)
    }

    /// [`Store::finish`], for a job superseded by job `by` when given.
    fn finish_with(
        &self,
        id: i64,
        state: JobState,
        exit_code: Option<i32>,
        reason: Option<&str>,
        by: Option<i64>,
    ) -> Result<bool, StoreError> {
        let end = End { state, exit_code, reason, by };
        self.reporting(|tx, reporter, wrote| self.finish_in(tx, id, &end, reporter, wrote))
    }

    /// Puts job `id` in its final state within `tx` (a job is superseded only while it waits),
    /// drops its payload when no unfinished job needs it, and writes the outbox items the change
    /// sends. Returns whether the job changed.
    fn finish_in(
        &self,
        tx: &Connection,
        id: i64,
        end: &End<'_>,
        reporter: Option<&dyn Reporter>,
        wrote: &mut bool,
    ) -> Result<bool, StoreError> {
        let sql = if end.state == JobState::Superseded {
            "UPDATE jobs SET state = ?2, finished_at = ?3, exit_code = ?4, reason = ?5
              WHERE id = ?1 AND state = 'queued'"
        } else {
            "UPDATE jobs SET state = ?2, finished_at = ?3, exit_code = ?4, reason = ?5 WHERE id = ?1"
        };
        let changed = tx.prepare_cached(sql)?.execute(params![
            id,
            end.state.as_str(),
            now_ms(),
            end.exit_code,
            end.reason
        ])?;
        if changed == 0 {
            return Ok(false);
        }
        let (entry, payload): (String, Option<i64>) = tx
            .prepare_cached("SELECT entry, payload_id FROM jobs WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some(payload) = payload {
            let needed: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE payload_id = ?1 AND state IN ('queued', 'running', 'held'))",
                )?
                .query_row([payload], |r| r.get(0))?;
            if !needed {
                tx.prepare_cached("UPDATE jobs SET payload_id = NULL WHERE payload_id = ?1")?
                    .execute([payload])?;
                tx.prepare_cached("DELETE FROM payloads WHERE id = ?1")?.execute([payload])?;
            }
        }
        if let Some(reporter) = reporter.filter(|r| r.wants(&entry)) {
            let was_failing = outbox::streak(tx, &entry, end.state)?;
            let superseded_by = match end.by {
                Some(by) => tx
                    .prepare_cached("SELECT commit_sha FROM jobs WHERE id = ?1")?
                    .query_row([by], |r| r.get::<_, String>(0))
                    .optional()?,
                None => None,
            };
            *wrote |= self.report_change(tx, reporter, id, Facts { was_failing, superseded_by })?;
        }
        Ok(true)
    }

    /// Records a job that wh-automata-trigger runs in its own process (no daemon running): it
    /// starts out running, with the pid of that process.
    pub fn insert_foreground(&self, job: &NewJob) -> Result<i64, StoreError> {
        let row = Row {
            delivery: None,
            state: JobState::Running,
            payload_id: None,
            foreground_pid: Some(std::process::id()),
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = insert_job(&tx, job, &row)?;
        // No sender in this process: the daemon delivers the items when it runs.
        if let Some(reporter) = self.reporter().filter(|r| r.wants(&job.entry)) {
            self.report_change(&tx, reporter.as_ref(), id, Facts::default())?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Where the raw body of job `id` goes for its actions (`WH_PAYLOAD`).
    pub fn payload_path(&self, id: i64) -> PathBuf {
        self.payloads.join(format!("{id}.body"))
    }

    pub fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row([id], RawJob::read)
            .optional()?;
        row.map(RawJob::decode).transpose()
    }

    /// The entry's latest job of an event from a host that names a commit (the status a
    /// `--notify-test` sends again).
    pub fn latest_with_commit(&self, entry: &str) -> Result<Option<Job>, StoreError> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE entry = ?1 AND provider != '' AND commit_sha != ''
                  AND commit_sha != '{}' ORDER BY id DESC LIMIT 1",
                crate::event::ZERO_SHA
            ))?
            .query_row([entry], RawJob::read)
            .optional()?;
        row.map(RawJob::decode).transpose()
    }

    /// The most recent jobs, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map([limit as i64], RawJob::read)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawJob::decode).collect()
    }

    /// Writes the raw request body of job `id` to a file for its actions (`WH_PAYLOAD`).
    pub fn write_payload(&self, id: i64) -> Result<Option<PathBuf>, StoreError> {
        let body: Option<Vec<u8>> = self
            .conn()
            .prepare_cached(
                "SELECT p.body FROM jobs j JOIN payloads p ON p.id = j.payload_id WHERE j.id = ?1",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(body) = body else { return Ok(None) };
        let path = self.payload_path(id);
        write_private(&path, &body)?;
        Ok(Some(path))
    }

    /// Removes the payload file written by [`Store::write_payload`].
    pub fn remove_payload_file(&self, id: i64) {
        let _ = std::fs::remove_file(self.payload_path(id));
    }
}

/// Creates `dir` if needed, and makes it owner-only (where this user owns it).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

/// Writes `bytes` to a new owner-only file at `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

/// Opens the database, in WAL mode, migrated to the latest schema. Deleted rows are overwritten
/// (`secure_delete`): some hosts put the webhook secret in the body, and a payload row outlives
/// no job.
fn open_checked(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Every statement of the request and job paths stays compiled (parsing them again cost
    // about a seventh of an accepted delivery's CPU).
    conn.set_prepared_statement_cache_capacity(64);
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Whether a database error says the file is damaged (or not a database at all).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) | Some(rusqlite::ErrorCode::NotADatabase)
    )
}

/// What `PRAGMA quick_check` finds wrong (the first problem), if anything: a damaged database
/// is refused at start rather than failing every delivery later.
fn integrity_problem(conn: &Connection) -> Result<Option<String>, StoreError> {
    match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
        Ok(first) if first == "ok" => Ok(None),
        Ok(first) => Ok(Some(first)),
        Err(e) if is_damage(&e) => Ok(Some(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// A job's end, as [`Store::finish_in`] records it.
struct End<'a> {
    state: JobState,
    exit_code: Option<i32>,
    reason: Option<&'a str>,
    /// The newer job that superseded it.
    by: Option<i64>,
}

/// Why a job was superseded, in its record.
fn superseded_reason(by: i64) -> String {
    format!("superseded by job {by}, a newer event for the same entry and ref")
}

/// How a new job row starts out.
struct Row<'a> {
    delivery: Option<&'a str>,
    /// `Queued`, or `Running` for a foreground run (then it has started now).
    state: JobState,
    payload_id: Option<i64>,
    foreground_pid: Option<u32>,
}

/// Inserts one job; returns its id.
fn insert_job(conn: &Connection, job: &NewJob, row: &Row<'_>) -> Result<i64, StoreError> {
    let e = &job.event;
    let now = now_ms();
    let started = (row.state == JobState::Running).then_some(now);
    conn.prepare_cached(
        "INSERT INTO jobs (entry, trigger, delivery, provider, event, repo, git_ref, commit_sha, state,
                           created_at, started_at, event_json, payload_id, foreground_pid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        job.entry,
        job.trigger.as_str(),
        row.delivery,
        e.provider_name(),
        e.name(),
        e.repo,
        e.git_ref,
        e.after,
        row.state.as_str(),
        now,
        started,
        serde_json::to_string(e)?,
        row.payload_id,
        row.foreground_pid,
    ])?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests;
