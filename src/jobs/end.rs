//! How a job ended, as recorded: the one job-end sequence, for the daemon's workers, for the
//! jobs a crash left behind, and for a foreground manual run.

use std::time::Duration;

use crate::event::Trigger;
use crate::jobs::action_records;
use crate::jobs::runner::Outcome;
use crate::settings::Entry;
use crate::store::{JobState, RolledBack, Store, StoreError};

/// How a job ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

impl Finished {
    /// The record of a run's outcome (`timeout`: the entry's, for the reason's text).
    pub fn of(outcome: &Outcome, timeout: Duration) -> Finished {
        let state = match outcome {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::Failed { .. }
            | Outcome::NotStarted { .. }
            | Outcome::NoEnvFile { .. }
            | Outcome::VerifyFailed { .. } => JobState::Failed,
            Outcome::TimedOut { .. } => JobState::TimedOut,
            Outcome::Cancelled { .. } => JobState::Cancelled,
        };
        Finished { state, exit_code: outcome.exit_code(), reason: outcome.reason(timeout) }
    }

    /// Interrupted by the daemon's stop: back to `queued`, to run again at the next start.
    pub(crate) fn interrupted(action: usize) -> Finished {
        let reason =
            format!("interrupted during action {action} by the daemon's stop: runs again at the next start");
        Finished { state: JobState::Queued, exit_code: None, reason: Some(reason) }
    }

    /// Cancelled during action `action` by a request (`why`: who asked).
    pub(crate) fn cancelled(action: usize, why: &str) -> Finished {
        let reason = format!("cancelled during action {action}: {why}");
        Finished { state: JobState::Cancelled, exit_code: None, reason: Some(reason) }
    }

    pub(crate) fn failed(reason: String) -> Finished {
        Finished { state: JobState::Failed, exit_code: None, reason: Some(reason) }
    }
}

/// Records the end of job `id`: its payload file removed, its final state written, and, for a
/// failed or timed-out job of an entry with `on_failure: rollback` (not itself a rollback), its
/// rollback job in the same transaction. The one job-end sequence, for the daemon's workers and
/// for a foreground manual run.
pub fn finish_job(
    store: &Store,
    id: i64,
    finished: &Finished,
    rollback: Option<(&Entry, Trigger)>,
) -> Result<Option<RolledBack>, StoreError> {
    let rolls_back = rollback.is_some_and(|(entry, trigger)| entry.rollback && trigger != Trigger::Rollback)
        && matches!(finished.state, JobState::Failed | JobState::TimedOut);
    let failed_rollback = rollback.is_some_and(|(_, trigger)| trigger == Trigger::Rollback)
        && matches!(finished.state, JobState::Failed | JobState::TimedOut);
    let mut rolled_back = None;
    match finished.state {
        JobState::Queued => store.requeue(id, finished.reason.as_deref().unwrap_or_default())?,
        state if failed_rollback => {
            let entry = rollback.map(|(e, _)| e.name.as_str()).unwrap_or_default();
            let why = format!("the rollback (job {id}) failed; unfreeze the entry once it is put right");
            store.finish_freezing(
                id,
                (state, finished.exit_code, finished.reason.as_deref()),
                entry,
                &why,
            )?;
        }
        state if rolls_back => {
            rolled_back =
                Some(store.finish_rolling_back(id, state, finished.exit_code, finished.reason.as_deref())?);
        }
        state => store.finish(id, state, finished.exit_code, finished.reason.as_deref())?,
    }
    // Only once the end is recorded: until then, the record of its actions tells a new start.
    action_records::remove(&store.steps_path(id));
    store.remove_payload_file(id);
    Ok(rolled_back)
}
