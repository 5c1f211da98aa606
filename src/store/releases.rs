//! Releases and rollbacks. A release is a job that succeeded for a known commit (verified,
//! where the entry verifies: a job whose verification failed is `failed`); a manual run
//! without `--commit` has no commit and is not one. The newest `server.releases_kept` (default
//! [`RELEASES_KEPT`]) of each entry outlive pruning. A failed job of an entry with `on_failure: rollback` is recorded together
//! with its rollback job, in one transaction: a `kill -9` between the two cannot lose it.

use rusqlite::{params, Connection, OptionalExtension};

use super::{insert_job, End, Job, RawJob, Row, Store, StoreError, COLUMNS};
use crate::event::{Trigger, ZERO_SHA};
use crate::store::{JobState, NewJob};

/// The releases of each entry that pruning keeps, however old, by default (`server.releases_kept`).
pub const RELEASES_KEPT: i64 = 10;

/// The condition that makes a job a release.
pub(super) fn is_release() -> String {
    format!("state = 'succeeded' AND commit_sha != '' AND commit_sha != '{ZERO_SHA}'")
}

/// Why there is nothing to roll back to.
#[derive(Debug, thiserror::Error)]
pub enum NoRelease {
    #[error("entry {0} has no release to roll back to")]
    None(String),
    #[error("entry {0} has no earlier release than {1}")]
    NoEarlier(String, String),
    #[error("{1:?} is not a release of {0} (see --releases {0})")]
    NotARelease(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What recording a failure with its rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolledBack {
    /// A rollback job was recorded: its id and the release's commit.
    To { job: i64, commit: String },
    /// The entry has no release to go back to: the failure alone was recorded.
    NoRelease,
}

impl Store {
    /// The releases of `entry`, newest first.
    pub fn releases(&self, entry: &str, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE entry = ?1 AND {} ORDER BY id DESC LIMIT ?2",
            is_release()
        );
        let rows: Vec<RawJob> = conn
            .prepare_cached(&sql)?
            .query_map(params![entry, limit as i64], RawJob::read)?
            .collect::<Result<_, _>>()?;
        rows.into_iter().map(RawJob::decode).collect()
    }

    /// The event of a rollback of `entry` by hand, and the release's job: the release `to` names
    /// (its job id, or its commit or a prefix of it of 4 hex digits or more), else the newest
    /// release for another commit than the newest one's. `rollback_from` is the newest
    /// release's commit.
    pub fn rollback_target(
        &self,
        entry: &str,
        to: Option<&str>,
    ) -> Result<(crate::event::Event, i64), NoRelease> {
        let releases = self.releases(entry, 50)?;
        let current = releases.first().ok_or_else(|| NoRelease::None(entry.to_string()))?;
        let target = match to {
            Some(to) => releases
                .iter()
                .find(|j| to.parse::<i64>().is_ok_and(|id| id == j.id))
                .or_else(|| {
                    let sha = to.to_ascii_lowercase();
                    (sha.len() >= 4 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| releases.iter().find(|j| j.event.after.starts_with(&sha)))
                        .flatten()
                })
                .ok_or_else(|| NoRelease::NotARelease(entry.to_string(), to.chars().take(80).collect()))?,
            None => releases.iter().find(|j| j.event.after != current.event.after).ok_or_else(|| {
                NoRelease::NoEarlier(entry.to_string(), current.event.after.chars().take(12).collect())
            })?,
        };
        let mut event = target.event.clone();
        event.delivery_id = None;
        event.rollback_from = Some(current.event.after.clone()).filter(|c| *c != target.event.after);
        Ok((event, target.id))
    }

    /// Whether any job of `entry` was ever recorded for `commit` (what `poll:` asks before it
    /// records a job: a commit that failed and was rolled back is not tried again and again).
    pub fn has_commit(&self, entry: &str, commit: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let found: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE entry = ?1 AND commit_sha = ?2)")?
            .query_row(params![entry, commit], |r| r.get(0))?;
        Ok(found)
    }

    /// Records the end of job `id` (failed or timed out) and, in the same transaction, a
    /// rollback job to the newest release of its entry for another commit. The failed job's
    /// reason says where it was rolled back to. The rollback job waits like any job; the
    /// caller queues it before the entry's other waiting jobs.
    pub fn finish_rolling_back(
        &self,
        id: i64,
        state: JobState,
        exit_code: Option<i32>,
        reason: Option<&str>,
    ) -> Result<RolledBack, StoreError> {
        self.reporting(|tx, reporter, wrote| {
            let failed = job_in(tx, id)?.ok_or_else(|| StoreError::Failed(format!("no job {id}")))?;
            let (rolled_back, reason) = match last_release(tx, &failed.entry, &failed.event.after)? {
                Some(release) => {
                    let mut event = release.event;
                    event.rollback_from = Some(failed.event.after.clone()).filter(|c| !c.is_empty());
                    event.delivery_id = None;
                    let job = NewJob { entry: failed.entry.clone(), trigger: Trigger::Rollback, event };
                    let row = Row {
                        delivery: None,
                        state: JobState::Queued,
                        payload_id: None,
                        foreground_pid: None,
                    };
                    let rid = insert_job(tx, &job, &row)?;
                    let commit = job.event.after.clone();
                    let short = &commit[..commit.len().min(7)];
                    let why = format!("rolled back to {short} (job {rid}): {}", reason.unwrap_or("failed"));
                    (RolledBack::To { job: rid, commit }, why)
                }
                None => (RolledBack::NoRelease, reason.unwrap_or_default().to_string()),
            };
            let reason = Some(reason.as_str()).filter(|r| !r.is_empty());
            self.finish_in(tx, id, &End { state, exit_code, reason, by: None }, reporter, wrote)?;
            if let RolledBack::To { job, .. } = &rolled_back {
                *wrote |= self.report_jobs(tx, reporter, &failed.entry, &[*job])?;
            }
            Ok(rolled_back)
        })
    }
}

/// Job `id`, within `tx`.
fn job_in(tx: &Connection, id: i64) -> Result<Option<Job>, StoreError> {
    let row = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], RawJob::read)
        .optional()?;
    row.map(RawJob::decode).transpose()
}

/// The newest release of `entry` for a commit other than `not`.
fn last_release(tx: &Connection, entry: &str, not: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE entry = ?1 AND {} AND commit_sha != ?2 ORDER BY id DESC LIMIT 1",
        is_release()
    );
    let row = tx.prepare_cached(&sql)?.query_row(params![entry, not], RawJob::read).optional()?;
    row.map(RawJob::decode).transpose()
}
