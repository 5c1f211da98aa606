//! Frozen entries: while an entry is frozen, its webhook jobs are recorded `held` and run
//! nothing; at the unfreezing the newest held job runs (the older ones are superseded), unless
//! its commit is already the entry's current release. The frozen state is in the store: it
//! survives restarts. A rollback that fails freezes its entry, in the transaction that records
//! the failure.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, End, Store, StoreError};
use crate::store::JobState;

/// A frozen entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Frozen {
    pub entry: String,
    pub reason: String,
    /// Since when (ms since the epoch).
    pub at: i64,
}

/// What an unfreezing did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unfrozen {
    /// Whether the entry was frozen.
    pub was_frozen: bool,
    /// The held job that now waits to run: (id, ref).
    pub runs: Option<(i64, String)>,
    /// The held jobs superseded by it, or by the current release.
    pub superseded: Vec<i64>,
}

/// Why `entry` is frozen, if it is (within a transaction).
pub(super) fn frozen_in(tx: &Connection, entry: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT reason FROM frozen WHERE entry = ?1")?
        .query_row([entry], |r| r.get(0))
        .optional()?)
}

/// Freezes `entry` within `tx`: its waiting webhook jobs are held too. Returns their ids.
pub(super) fn freeze_in(tx: &Connection, entry: &str, reason: &str) -> Result<Vec<i64>, StoreError> {
    tx.prepare_cached("INSERT OR REPLACE INTO frozen (entry, reason, at) VALUES (?1, ?2, ?3)")?
        .execute(params![entry, reason, now_ms()])?;
    let held: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM jobs WHERE entry = ?1 AND state = 'queued' AND trigger IN ('webhook', 'poll') ORDER BY id",
        )?
        .query_map([entry], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let why = held_reason(reason);
    for id in &held {
        tx.prepare_cached("UPDATE jobs SET state = 'held', reason = ?2 WHERE id = ?1")?
            .execute(params![id, why])?;
    }
    Ok(held)
}

/// A held job's reason: why its entry is frozen.
pub(super) fn held_reason(reason: &str) -> String {
    format!("held: {reason}")
}

impl Store {
    /// Freezes `entry` with `reason`; its waiting webhook jobs are held. Returns their ids.
    pub fn freeze(&self, entry: &str, reason: &str) -> Result<Vec<i64>, StoreError> {
        self.freeze_ending(None, entry, reason)
    }

    /// Records the end of job `id` (a rollback that failed) and freezes `entry` with `reason`,
    /// in one transaction: nothing deploys over what the failed rollback left until a person
    /// unfreezes it.
    pub fn finish_freezing(
        &self,
        id: i64,
        end: (JobState, Option<i32>, Option<&str>),
        entry: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (state, exit_code, why) = end;
        self.freeze_ending(Some((id, End { state, exit_code, reason: why, by: None })), entry, reason)
            .map(drop)
    }

    /// Freezes `entry`, after recording the end of a job when given, in one transaction; the
    /// jobs it holds are reported (their statuses say why they wait).
    fn freeze_ending(
        &self,
        ending: Option<(i64, End<'_>)>,
        entry: &str,
        reason: &str,
    ) -> Result<Vec<i64>, StoreError> {
        self.reporting(|tx, reporter, wrote| {
            if let Some((id, end)) = ending {
                self.finish_in(tx, id, &end, reporter, wrote)?;
            }
            let held = freeze_in(tx, entry, reason)?;
            *wrote |= self.report_jobs(tx, reporter, entry, &held)?;
            Ok(held)
        })
    }

    /// Unfreezes `entry`: the newest held job waits to run (unless its commit is the current
    /// release), the older held ones are superseded by it.
    pub fn unfreeze(&self, entry: &str) -> Result<Unfrozen, StoreError> {
        self.reporting(|tx, reporter, wrote| {
            let mut unfrozen = Unfrozen {
                was_frozen: tx.prepare_cached("DELETE FROM frozen WHERE entry = ?1")?.execute([entry])? > 0,
                ..Unfrozen::default()
            };
            let held: Vec<(i64, String, String)> = tx
                .prepare_cached(
                    "SELECT id, git_ref, commit_sha FROM jobs WHERE entry = ?1 AND state = 'held' ORDER BY id DESC",
                )?
                .query_map([entry], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            tx.prepare_cached("UPDATE jobs SET state = 'queued', reason = NULL WHERE entry = ?1 AND state = 'held'")?
                .execute([entry])?;
            let release: Option<String> = tx
                .prepare_cached(&format!(
                    "SELECT commit_sha FROM jobs WHERE entry = ?1 AND {} ORDER BY id DESC LIMIT 1",
                    super::releases::is_release()
                ))?
                .query_row([entry], |r| r.get(0))
                .optional()?;
            let Some((newest, git_ref, commit)) = held.first() else { return Ok(unfrozen) };
            let current = release.as_deref() == Some(commit.as_str());
            for (id, ..) in held.iter().skip(usize::from(!current)) {
                let reason = if id == newest {
                    "not run: its commit is the current release".to_string()
                } else {
                    format!("superseded by job {newest}, the newest held when the entry was unfrozen")
                };
                let by = (id != newest).then_some(*newest);
                let end = End { state: JobState::Superseded, exit_code: None, reason: Some(&reason), by };
                if self.finish_in(tx, *id, &end, reporter, wrote)? {
                    unfrozen.superseded.push(*id);
                }
            }
            if !current {
                *wrote |= self.report_jobs(tx, reporter, entry, &[*newest])?;
                unfrozen.runs = Some((*newest, git_ref.clone()));
            }
            Ok(unfrozen)
        })
    }

    /// Cancels job `id` when it waits (queued or held), for `why`; `false` when it does not
    /// (it runs, or has ended). In one transaction with the check: a worker that takes the job
    /// at the same moment finds it cancelled and does not start it.
    pub fn cancel_waiting(&self, id: i64, why: &str) -> Result<bool, StoreError> {
        self.reporting(|tx, reporter, wrote| {
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            if !matches!(state.as_deref(), Some("queued" | "held")) {
                return Ok(false);
            }
            let end = End { state: JobState::Cancelled, exit_code: None, reason: Some(why), by: None };
            self.finish_in(tx, id, &end, reporter, wrote)
        })
    }

    /// The frozen entries.
    pub fn frozen(&self) -> Result<Vec<Frozen>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached("SELECT entry, reason, at FROM frozen ORDER BY entry")?
            .query_map([], |r| Ok(Frozen { entry: r.get(0)?, reason: r.get(1)?, at: r.get(2)? }))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Why `entry` is frozen, if it is.
    pub fn frozen_reason(&self, entry: &str) -> Result<Option<String>, StoreError> {
        frozen_in(&self.conn(), entry)
    }
}
