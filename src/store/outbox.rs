//! The outbox: what a job's changes of state send (commit statuses, messages), written in the
//! same transaction as the change, and taken out once delivered.
//!
//! Which items a change makes is not decided here: the [`Reporter`] the daemon installs says
//! (it knows the settings). Items of one lane (one entry and commit for a status, one target
//! and entry for messages) go out one at a time, in order: a late "pending" never overwrites a
//! "success".

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, Store, StoreError};
use crate::event::{Event, Trigger};
use crate::store::{Job, JobState};

/// A job's change of state, as the reporter sees it.
#[derive(Debug)]
pub struct Change<'a> {
    pub job: i64,
    pub entry: &'a str,
    pub trigger: Trigger,
    pub event: &'a Event,
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub reason: Option<&'a str>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// For a success, failure or time-out: whether the entry's previous one failed.
    pub was_failing: Option<bool>,
    /// For a superseded job: the commit of the job that replaced it.
    pub superseded_by: Option<&'a str>,
    /// The job's log file.
    pub log: &'a Path,
}

impl<'a> Change<'a> {
    /// The change that left `job` as it is (`log`: its log file); no streak, not superseded.
    pub fn of(job: &'a Job, log: &'a Path) -> Change<'a> {
        Change {
            job: job.id,
            entry: &job.entry,
            trigger: job.trigger,
            event: &job.event,
            state: job.state,
            exit_code: job.exit_code,
            reason: job.reason.as_deref(),
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            was_failing: None,
            superseded_by: None,
            log,
        }
    }
}

/// One item to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `status`, or `notify:<target>`.
    pub sink: String,
    pub lane: String,
    pub kind: String,
    /// What to send, as the sinks read it (JSON).
    pub report: String,
}

/// Decides what a change sends. Installed by the daemon ([`Store::set_reporter`]).
pub trait Reporter: Send + Sync {
    /// Whether the changes of `entry`'s jobs send anything (checked first: cheap).
    fn wants(&self, entry: &str) -> bool;
    /// The items `change` sends.
    fn report(&self, change: &Change<'_>) -> Vec<Outgoing>;
    /// Items were committed: the sender may look.
    fn written(&self);
}

/// An item waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: i64,
    /// The item's id on the wire: the store's random id and the item's, never the same for
    /// two items of this store or of another (and the same on each try of this one).
    pub delivery: String,
    pub job: i64,
    pub entry: String,
    pub sink: String,
    pub lane: String,
    /// Where it goes ([`destination`]): its lanes share a server and a token.
    pub dest: String,
    pub kind: String,
    pub report: String,
    pub created_at: i64,
    pub attempts: i64,
}

/// What the outbox holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub pending: i64,
    /// When the oldest undelivered item was written (ms since the epoch).
    pub oldest_at: Option<i64>,
    /// The oldest item's last error, if it has been tried.
    pub oldest_error: Option<String>,
}

/// The sink name of commit statuses in the outbox.
pub const STATUS_SINK: &str = "status";

/// Where the items of `sink` for `entry` go: an entry's statuses (its `api_url` and token), or
/// one notification target.
pub fn destination(sink: &str, entry: &str) -> String {
    if sink == STATUS_SINK {
        format!("status:{entry}")
    } else {
        sink.to_string()
    }
}

/// Writes `items` within the caller's transaction; the first of a lane is its head.
pub(super) fn write(tx: &Connection, job: i64, entry: &str, items: &[Outgoing]) -> Result<(), StoreError> {
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO outbox (job_id, entry, sink, lane, dest, head, kind, report, created_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, NOT EXISTS (SELECT 1 FROM outbox WHERE lane = ?4), ?6, ?7, ?8, ?8)",
    )?;
    for item in items {
        let dest = destination(&item.sink, entry);
        stmt.execute(params![job, entry, item.sink, item.lane, dest, item.kind, item.report, now])?;
    }
    Ok(())
}

/// Whether `entry` was failing, and records whether it is now (`state`: a success, failure or
/// time-out), within the caller's transaction.
pub(super) fn streak(tx: &Connection, entry: &str, state: JobState) -> Result<Option<bool>, StoreError> {
    let failing = match state {
        JobState::Succeeded => false,
        JobState::Failed | JobState::TimedOut => true,
        _ => return Ok(None),
    };
    let was: Option<bool> = tx
        .prepare_cached("SELECT failing FROM streaks WHERE entry = ?1")?
        .query_row([entry], |r| r.get(0))
        .optional()?;
    if was != Some(failing) {
        tx.prepare_cached("INSERT OR REPLACE INTO streaks (entry, failing) VALUES (?1, ?2)")?
            .execute(params![entry, failing])?;
    }
    Ok(Some(was.unwrap_or(false)))
}

const ITEM_COLUMNS: &str =
    "id, (SELECT value FROM meta WHERE key = 'store_id') || '-' || id, job_id, entry, \
                            sink, lane, dest, kind, report, created_at, attempts";

fn read_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: r.get(0)?,
        delivery: r.get(1)?,
        job: r.get(2)?,
        entry: r.get(3)?,
        sink: r.get(4)?,
        lane: r.get(5)?,
        dest: r.get(6)?,
        kind: r.get(7)?,
        report: r.get(8)?,
        created_at: r.get(9)?,
        attempts: r.get(10)?,
    })
}

impl Store {
    /// Installs what decides the items of each change. Until then, changes send nothing.
    pub fn set_reporter(&self, reporter: std::sync::Arc<dyn Reporter>) {
        *self.reporter.write().unwrap_or_else(|e| e.into_inner()) = Some(reporter);
    }

    pub(super) fn reporter(&self) -> Option<std::sync::Arc<dyn Reporter>> {
        self.reporter.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `work` in one transaction with the reporter (if any) and a flag it sets when it
    /// wrote outbox items; commits, then wakes the sender when something was written.
    pub(super) fn reporting<T>(
        &self,
        work: impl FnOnce(&Connection, Option<&dyn Reporter>, &mut bool) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let reporter = self.reporter();
        let mut wrote = false;
        let out = work(&tx, reporter.as_deref(), &mut wrote)?;
        tx.commit()?;
        drop(conn);
        if let Some(reporter) = reporter.filter(|_| wrote) {
            reporter.written();
        }
        Ok(out)
    }

    /// Reports the state of each of `jobs` (of `entry`) as it is now, when the reporter wants
    /// the entry; whether items were written.
    pub(super) fn report_jobs(
        &self,
        tx: &Connection,
        reporter: Option<&dyn Reporter>,
        entry: &str,
        jobs: &[i64],
    ) -> Result<bool, StoreError> {
        let Some(reporter) = reporter.filter(|r| r.wants(entry)) else { return Ok(false) };
        let mut wrote = false;
        for id in jobs {
            wrote |= self.report_change(tx, reporter, *id, Facts::default())?;
        }
        Ok(wrote)
    }

    /// The heads (first items) of `dest`'s lanes, those tried least recently first; at most
    /// `limit`. Read through an index: the cost does not grow with the outbox.
    pub fn outbox_heads(&self, dest: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} FROM outbox WHERE head = 1 AND dest = ?1 ORDER BY next_at, id LIMIT ?2"
        ))?;
        let items = stmt.query_map(params![dest, limit as i64], read_item)?.collect::<Result<_, _>>()?;
        Ok(items)
    }

    /// Heads whose destination is none of `dests` (an entry or target gone from the settings),
    /// oldest first; at most `limit`.
    pub fn outbox_strays(&self, dests: &[String], limit: usize) -> Result<Vec<Item>, StoreError> {
        let known = serde_json::to_string(dests).map_err(|e| StoreError::Schema(e.to_string()))?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} FROM outbox
              WHERE head = 1 AND dest NOT IN (SELECT value FROM json_each(?1)) ORDER BY id LIMIT ?2"
        ))?;
        let items = stmt.query_map(params![known, limit as i64], read_item)?.collect::<Result<_, _>>()?;
        Ok(items)
    }

    /// Item `id` was delivered (or given up): it goes, and the next item of its lane is the
    /// lane's head.
    pub fn outbox_done(&self, id: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let gone: Option<(String, bool)> = tx
            .prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING lane, head")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((lane, true)) = gone {
            tx.prepare_cached(
                "UPDATE outbox SET head = 1 WHERE id = (SELECT min(id) FROM outbox WHERE lane = ?1)",
            )?
            .execute([lane])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Item `id` failed with `error`; it is tried again at `next_at` (ms).
    pub fn outbox_retry(&self, id: i64, error: &str, next_at: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, error, next_at])?;
        Ok(())
    }

    /// How many items wait, and since when.
    pub fn outbox_backlog(&self) -> Result<Backlog, StoreError> {
        let conn = self.conn();
        let pending: i64 = conn.prepare_cached("SELECT count(*) FROM outbox")?.query_row([], |r| r.get(0))?;
        let oldest: Option<(i64, Option<String>)> = conn
            .prepare_cached("SELECT created_at, last_error FROM outbox ORDER BY id LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(Backlog {
            pending,
            oldest_at: oldest.as_ref().map(|o| o.0),
            oldest_error: oldest.and_then(|o| o.1),
        })
    }

    /// The host's id of what `sink` made for job `job` (a GitHub deployment), if any.
    pub fn remote_id(&self, job: i64, sink: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let id = conn
            .prepare_cached("SELECT remote FROM remote_ids WHERE job_id = ?1 AND sink = ?2")?
            .query_row(params![job, sink], |r| r.get(0))
            .optional()?;
        Ok(id)
    }

    pub fn set_remote_id(&self, job: i64, sink: &str, remote: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO remote_ids (job_id, sink, remote) VALUES (?1, ?2, ?3)")?
            .execute(params![job, sink, remote])?;
        Ok(())
    }

    /// The items `reporter` makes of job `job` as `tx` now holds it (its entry is one the
    /// reporter wants), written within `tx`; whether any was.
    pub(super) fn report_change(
        &self,
        tx: &Connection,
        reporter: &dyn Reporter,
        job: i64,
        facts: Facts,
    ) -> Result<bool, StoreError> {
        let row = tx
            .prepare_cached(&format!("SELECT {} FROM jobs WHERE id = ?1", super::job::COLUMNS))?
            .query_row([job], super::job::RawJob::read)
            .optional()?;
        let Some(row) = row else { return Ok(false) };
        let record = row.decode()?;
        let log = self.log_path(job);
        let change = Change {
            was_failing: facts.was_failing,
            superseded_by: facts.superseded_by.as_deref(),
            ..Change::of(&record, &log)
        };
        let items = reporter.report(&change);
        write(tx, job, &record.entry, &items)?;
        Ok(!items.is_empty())
    }
}

/// The entry of job `id`, if there is such a job.
pub(super) fn entry_of(tx: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    let entry = tx
        .prepare_cached("SELECT entry FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(entry)
}

/// What a change knows besides the job's row.
#[derive(Default)]
pub(super) struct Facts {
    pub superseded_by: Option<String>,
    pub was_failing: Option<bool>,
}
