//! What the store keeps of a job, and how a row becomes one: by column name, with the job's
//! state and trigger parsed strictly (an unknown value is an error, never a default).

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::event::{Event, Trigger};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Superseded,
    /// Recorded while its entry was frozen: it waits for the entry's unfreezing.
    Held,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Superseded,
        JobState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
            JobState::Superseded => "superseded",
            JobState::Held => "held",
        }
    }

    /// The state named `s`; anything else is refused.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running | JobState::Held)
    }
}

/// A job to record.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub entry: String,
    pub trigger: Trigger,
    pub event: Event,
}

/// A recorded job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    pub entry: String,
    pub trigger: Trigger,
    pub state: JobState,
    pub event: Event,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// The columns [`decode`] reads.
pub(super) const COLUMNS: &str =
    "id, entry, trigger, state, event_json, created_at, started_at, finished_at, exit_code, reason";

/// The raw values of one row, read by name; decoded outside rusqlite's callback so that a
/// bad value becomes a [`StoreError::Corrupt`] naming the job.
pub(super) struct RawJob {
    id: i64,
    entry: String,
    trigger: String,
    state: String,
    event_json: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    exit_code: Option<i32>,
    reason: Option<String>,
}

impl RawJob {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
        Ok(RawJob {
            id: r.get("id")?,
            entry: r.get("entry")?,
            trigger: r.get("trigger")?,
            state: r.get("state")?,
            event_json: r.get("event_json")?,
            created_at: r.get("created_at")?,
            started_at: r.get("started_at")?,
            finished_at: r.get("finished_at")?,
            exit_code: r.get("exit_code")?,
            reason: r.get("reason")?,
        })
    }

    pub(super) fn decode(self) -> Result<Job, StoreError> {
        let id = self.id;
        let corrupt = |what: String| StoreError::Corrupt { id, what };
        let trigger = Trigger::parse(&self.trigger)
            .ok_or_else(|| corrupt(format!("unknown trigger {:?}", self.trigger)))?;
        let state =
            JobState::parse(&self.state).ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?;
        let event =
            serde_json::from_str(&self.event_json).map_err(|e| corrupt(format!("unreadable event: {e}")))?;
        Ok(Job {
            id,
            entry: self.entry,
            trigger,
            state,
            event,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_ones_are_refused() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("done"), None);
        assert_eq!(JobState::parse("Queued"), None);
        assert_eq!(Trigger::parse("cron"), None);
    }
}
