//! Recording deliveries: each delivery's jobs in one transaction with a durable commit, several
//! deliveries that arrive together in one (a group commit), a delivery seen before answered as
//! such, a replay refused, and the waiting jobs a new one supersedes finished in the same write.

use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::outbox::{self, Change, Reporter};
use super::{
    freeze, insert_job, lock, now_ms, replay, superseded_reason, End, Inserted, Row, Seen, Store, StoreError,
};
use crate::event::Trigger;
use crate::store::{JobState, NewJob};

/// A delivery waiting to be recorded, and where its result goes.
pub(super) struct Pending {
    delivery: Option<String>,
    /// Shared with the request, not copied: a burst of large bodies is not held twice.
    body: bytes::Bytes,
    jobs: Vec<NewJob>,
    /// The waiting jobs the new ones may supersede (`None`: every queued one).
    waiting: Option<Vec<i64>>,
    result: Arc<Mutex<Option<Result<Inserted, String>>>>,
}

impl Store {
    /// Records `jobs` for one delivery (with its raw body) in one transaction. A delivery key
    /// seen before for an entry (the host's "Redeliver") records nothing for it when its
    /// latest job of that delivery waits, runs, succeeded or was superseded; one that failed,
    /// timed out or was cancelled runs again.
    ///
    /// Deliveries that arrive while another one is being recorded are recorded together, in one
    /// transaction and one durable commit, each in its own savepoint (one refused does not
    /// refuse the others); each caller returns once its own is on disk.
    pub fn insert(
        &self,
        delivery: Option<&str>,
        body: &[u8],
        jobs: &[NewJob],
    ) -> Result<Inserted, StoreError> {
        self.insert_shared(delivery, bytes::Bytes::copy_from_slice(body), jobs, None)
    }

    /// [`Store::insert`] of a body the caller already holds as shared bytes (no copy); a new
    /// job supersedes only the queued jobs among `waiting` when given (the queue's, which
    /// knows which ones a worker has taken: those run).
    pub fn insert_shared(
        &self,
        delivery: Option<&str>,
        body: bytes::Bytes,
        jobs: &[NewJob],
        waiting: Option<&[i64]>,
    ) -> Result<Inserted, StoreError> {
        let result = Arc::new(Mutex::new(None));
        let pending = Pending {
            delivery: delivery.map(str::to_string),
            body,
            jobs: jobs.to_vec(),
            waiting: waiting.map(<[i64]>::to_vec),
            result: result.clone(),
        };
        lock(&self.pending).push(pending);
        let mut conn = self.conn();
        if let Some(done) = lock(&result).take() {
            // Recorded by the caller that had the connection before.
            return done.map_err(StoreError::Shared);
        }
        let batch = std::mem::take(&mut *lock(&self.pending));
        let reporter = self.reporter();
        let mut wrote = false;
        let outcomes = self.insert_batch(&mut conn, &batch, reporter.as_deref(), &mut wrote);
        let mut own = None;
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            if Arc::ptr_eq(&pending.result, &result) {
                own = Some(outcome);
            } else {
                *lock(&pending.result) = Some(outcome.map_err(|e| e.to_string()));
            }
        }
        drop(conn);
        if let Some(reporter) = reporter.filter(|_| wrote) {
            reporter.written();
        }
        own.unwrap_or_else(|| Err(StoreError::Failed("the delivery was not in its own batch".into())))
    }

    /// Records a batch of deliveries in one transaction with a durable commit; one result each.
    fn insert_batch(
        &self,
        conn: &mut Connection,
        batch: &[Pending],
        reporter: Option<&dyn Reporter>,
        wrote: &mut bool,
    ) -> Vec<Result<Inserted, StoreError>> {
        let all_fail =
            |e: &StoreError| batch.iter().map(|_| Err(StoreError::Shared(e.to_string()))).collect();
        if let Err(e) = set_synchronous(conn, true) {
            return all_fail(&e);
        }
        let outcomes = (|| -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
            let mut tx = conn.transaction()?;
            if let [p] = batch {
                // Alone in its transaction: no savepoint (nor its copy of every page it changes).
                // On an error, dropping the transaction rolls it back.
                let inserted = self.insert_one(&tx, p, reporter, wrote);
                return match inserted {
                    Ok(inserted) => tx.commit().map(|()| vec![Ok(inserted)]).map_err(StoreError::from),
                    Err(e) => Ok(vec![Err(e)]),
                };
            }
            let mut outcomes = Vec::with_capacity(batch.len());
            for p in batch {
                let sp = tx.savepoint()?;
                match self.insert_one(&sp, p, reporter, wrote) {
                    Ok(inserted) => {
                        sp.commit()?;
                        outcomes.push(Ok(inserted));
                    }
                    // Dropping the savepoint rolls this delivery back; the others go on.
                    Err(e) => outcomes.push(Err(e)),
                }
            }
            tx.commit()?;
            Ok(outcomes)
        })();
        let _ = set_synchronous(conn, false);
        match outcomes {
            Ok(outcomes) => outcomes,
            Err(e) => all_fail(&e),
        }
    }

    /// One delivery's jobs, within the caller's transaction. A new webhook job supersedes the
    /// waiting jobs of its entry and ref in the same transaction: "the newest recorded job
    /// wins" is on disk with the job that wins, and costs no transaction of its own.
    fn insert_one(
        &self,
        tx: &Connection,
        pending: &Pending,
        reporter: Option<&dyn Reporter>,
        wrote: &mut bool,
    ) -> Result<Inserted, StoreError> {
        let (delivery, body, jobs) = (pending.delivery.as_deref(), &pending.body[..], &pending.jobs);
        let mut earlier: Vec<Seen> = Vec::new();
        if let Some(key) = delivery {
            let mut stmt =
                tx.prepare_cached("SELECT id, entry, state FROM jobs WHERE delivery = ?1 ORDER BY id")?;
            let rows: Vec<(i64, String, String)> = stmt
                .query_map([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for (id, entry, state) in rows {
                let state = JobState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt { id, what: format!("unknown state \"{state}\"") })?;
                // The latest job of each entry counts.
                earlier.retain(|s| s.entry != entry);
                earlier.push(Seen { id, entry, state, newer: None });
            }
        }
        let mut inserted = Inserted::default();
        let mut payload_id = None;
        for (index, job) in jobs.iter().enumerate() {
            if let Some(seen) = earlier.iter().find(|s| s.entry == job.entry) {
                if !matches!(seen.state, JobState::Failed | JobState::TimedOut | JobState::Cancelled) {
                    inserted.seen.push(seen.clone());
                    continue;
                }
                let newer = newer_job(tx, &job.entry, &job.event.git_ref, seen.id)?;
                if newer.is_some() {
                    inserted.seen.push(Seen { newer, ..seen.clone() });
                    continue;
                }
            }
            if let Some(polled) = polled_job(tx, job)? {
                inserted.seen.push(polled);
                continue;
            }
            if let Some(why) = replay::replay(tx, job)? {
                inserted.replays.push((job.entry.clone(), why));
                continue;
            }
            let payload = match payload_id {
                Some(id) => id,
                None => {
                    tx.prepare_cached("INSERT INTO payloads (body) VALUES (?1)")?.execute([body])?;
                    *payload_id.insert(tx.last_insert_rowid())
                }
            };
            // A webhook job of a frozen entry is recorded held, with why.
            let frozen = match job.trigger {
                Trigger::Webhook | Trigger::Poll => freeze::frozen_in(tx, &job.entry)?,
                Trigger::Manual | Trigger::Rollback => None,
            };
            let state = if frozen.is_some() { JobState::Held } else { JobState::Queued };
            let row = Row { delivery, state, payload_id: Some(payload), foreground_pid: None };
            let id = insert_job(tx, job, &row)?;
            let held_reason = frozen.as_deref().map(freeze::held_reason);
            if let Some(why) = &held_reason {
                tx.prepare_cached("UPDATE jobs SET reason = ?2 WHERE id = ?1")?.execute(params![id, why])?;
            }
            if let Some(reporter) = reporter.filter(|r| r.wants(&job.entry)) {
                let log = self.log_path(id);
                let change = Change {
                    job: id,
                    entry: &job.entry,
                    trigger: job.trigger,
                    event: &job.event,
                    state,
                    exit_code: None,
                    reason: held_reason.as_deref(),
                    created_at: now_ms(),
                    started_at: None,
                    finished_at: None,
                    was_failing: None,
                    superseded_by: None,
                    log: &log,
                };
                let items = reporter.report(&change);
                outbox::write(tx, id, &job.entry, &items)?;
                *wrote |= !items.is_empty();
            }
            if held_reason.is_some() {
                inserted.held.push((id, index));
                continue;
            }
            if matches!(job.trigger, Trigger::Webhook | Trigger::Poll) && !job.event.git_ref.is_empty() {
                let older: Vec<i64> = tx
                    .prepare_cached(
                        // Among the waiting jobs (few), not the entry's history (long).
                        "SELECT id FROM jobs INDEXED BY jobs_waiting WHERE state = 'queued' AND entry = ?1
                           AND git_ref = ?2 AND id < ?3 AND trigger IN ('webhook', 'poll') ORDER BY id",
                    )?
                    .query_map(params![job.entry, job.event.git_ref, id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let waits = |old: &i64| pending.waiting.as_ref().is_none_or(|w| w.contains(old));
                for old in older.into_iter().filter(waits) {
                    let reason = superseded_reason(id);
                    let end = End {
                        state: JobState::Superseded,
                        exit_code: None,
                        reason: Some(&reason),
                        by: Some(id),
                    };
                    if self.finish_in(tx, old, &end, reporter, wrote)? {
                        inserted.superseded.push((old, id));
                    }
                }
            }
            inserted.new.push((id, index));
        }
        Ok(inserted)
    }
}

/// For a webhook job: the job a poll already recorded for its entry, ref and commit, if any
/// (the webhook came late: it is a duplicate of that one).
fn polled_job(tx: &Connection, job: &NewJob) -> Result<Option<Seen>, StoreError> {
    if job.trigger != Trigger::Webhook || job.event.after.is_empty() {
        return Ok(None);
    }
    let row: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT id, state FROM jobs INDEXED BY jobs_commit
              WHERE entry = ?1 AND git_ref = ?2 AND commit_sha = ?3 AND trigger IN ('webhook', 'poll')
                AND trigger = 'poll' ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![job.entry, job.event.git_ref, job.event.after], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((id, state)) = row else { return Ok(None) };
    let state = JobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt { id, what: format!("unknown state \"{state}\"") })?;
    Ok(Some(Seen { id, entry: job.entry.clone(), state, newer: None }))
}

/// The newest webhook job of `entry` and `git_ref` recorded after job `after`, if any.
fn newer_job(tx: &Connection, entry: &str, git_ref: &str, after: i64) -> Result<Option<i64>, StoreError> {
    if git_ref.is_empty() {
        return Ok(None);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT MAX(id) FROM jobs WHERE entry = ?1 AND git_ref = ?2 AND trigger IN ('webhook', 'poll') AND id > ?3",
    )?;
    Ok(stmt.query_row(params![entry, git_ref, after], |r| r.get::<_, Option<i64>>(0))?)
}

/// `PRAGMA synchronous`: `FULL` for a commit the caller waits on (`durable`), `NORMAL` otherwise.
fn set_synchronous(conn: &Connection, durable: bool) -> Result<(), StoreError> {
    let sql = if durable { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
