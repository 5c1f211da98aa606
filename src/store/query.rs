//! The job store read for the API: jobs by entry, state, commit and trigger, newest first and
//! paginated by id (stable while jobs are added: a page is "older than id N"), and what each
//! entry has running and waiting.

use std::collections::HashMap;

use rusqlite::params_from_iter;
use rusqlite::types::Value;

use super::{Job, JobState, RawJob, Store, StoreError, COLUMNS};
use crate::event::Trigger;

/// Which jobs; every field narrows.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub entry: Option<String>,
    pub state: Option<JobState>,
    /// A commit id or its start (hex, at least 4 digits: checked by the caller).
    pub commit: Option<String>,
    pub trigger: Option<Trigger>,
    /// Only jobs older than this id (the next page).
    pub before: Option<i64>,
    pub limit: usize,
}

/// What an entry has now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub running: usize,
    pub waiting: usize,
    pub held: usize,
}

impl Store {
    /// The jobs that `filter` asks for, newest first.
    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(entry) = &filter.entry {
            sql.push_str(" AND entry = ?");
            args.push(entry.clone().into());
        }
        if let Some(state) = filter.state {
            sql.push_str(" AND state = ?");
            args.push(state.as_str().to_string().into());
        }
        if let Some(commit) = &filter.commit {
            // Hex only (checked by the caller): nothing in it is a LIKE wildcard.
            // A range the index walks (every hex digit sorts before 'g'), then the prefix.
            let commit = commit.to_ascii_lowercase();
            sql.push_str(" AND commit_sha >= ? AND commit_sha < ? AND commit_sha LIKE ?");
            args.push(commit.clone().into());
            args.push(format!("{commit}g").into());
            args.push(format!("{commit}%").into());
        }
        if let Some(trigger) = filter.trigger {
            sql.push_str(" AND trigger = ?");
            args.push(trigger.as_str().to_string().into());
        }
        if let Some(before) = filter.before {
            sql.push_str(" AND id < ?");
            args.push(before.into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push((filter.limit as i64).into());
        let conn = self.conn();
        let rows: Vec<RawJob> = conn
            .prepare_cached(&sql)?
            .query_map(params_from_iter(args), RawJob::read)?
            .collect::<Result<_, _>>()?;
        rows.into_iter().map(RawJob::decode).collect()
    }

    /// Each entry's running, waiting and held jobs.
    pub fn counts(&self) -> Result<HashMap<String, Counts>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT entry, state, count(*) FROM jobs WHERE state IN ('queued', 'running', 'held') GROUP BY entry, state",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
        let mut counts: HashMap<String, Counts> = HashMap::new();
        for row in rows {
            let (entry, state, n) = row?;
            let c = counts.entry(entry).or_default();
            match state.as_str() {
                "running" => c.running = n as usize,
                "held" => c.held = n as usize,
                _ => c.waiting = n as usize,
            }
        }
        Ok(counts)
    }
}
