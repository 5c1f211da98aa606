//! Each host's result in a job deployed to hosts over OpenSSH, in the rollout's order: what
//! the API and the page show beside the job's log.

use rusqlite::params;

use super::{now_ms, Store, StoreError};

/// How one host of a job's rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResult {
    pub host: String,
    /// succeeded, failed, unreached, timed_out, cancelled, or not_run (the rollout stopped
    /// before it).
    pub state: String,
    /// The entry's action it failed at.
    pub action: Option<usize>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// When it ended (ms since the epoch).
    pub at: i64,
}

impl Store {
    /// Forgets job `id`'s hosts: it runs again from its first host.
    pub fn clear_hosts(&self, id: i64) -> Result<(), StoreError> {
        self.conn().prepare_cached("DELETE FROM job_hosts WHERE job_id = ?1")?.execute([id])?;
        Ok(())
    }

    /// Records how host number `position` (from 0) of job `id` ended.
    pub fn record_host(&self, id: i64, position: usize, result: &HostResult) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO job_hosts (job_id, position, host, state, action, exit_code, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id,
                position as i64,
                result.host,
                result.state,
                result.action.map(|a| a as i64),
                result.exit_code,
                result.reason,
                if result.at == 0 { now_ms() } else { result.at },
            ])?;
        Ok(())
    }

    /// The hosts that the newest job of `entry` before job `before` with hosts touched (those
    /// where something ran: not `unreached`, not `not_run`), in its order: what a rollback
    /// returns. `None` when no earlier job of the entry ran on hosts.
    pub fn moved_hosts(&self, entry: &str, before: i64) -> Result<Option<Vec<String>>, StoreError> {
        let conn = self.conn();
        let last: Option<i64> = conn
            .prepare_cached(
                "SELECT max(h.job_id) FROM job_hosts h JOIN jobs j ON j.id = h.job_id
                  WHERE j.entry = ?1 AND h.job_id < ?2",
            )?
            .query_row(params![entry, before], |r| r.get(0))?;
        let Some(last) = last else { return Ok(None) };
        let mut stmt = conn.prepare_cached(
            "SELECT host FROM job_hosts WHERE job_id = ?1 AND state NOT IN ('unreached', 'not_run') ORDER BY position",
        )?;
        let hosts = stmt.query_map([last], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(Some(hosts))
    }

    /// Job `id`'s hosts, in the rollout's order (none for a job that ran here).
    pub fn job_hosts(&self, id: i64) -> Result<Vec<HostResult>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT host, state, action, exit_code, reason, at FROM job_hosts WHERE job_id = ?1 ORDER BY position",
        )?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(HostResult {
                    host: r.get(0)?,
                    state: r.get(1)?,
                    action: r.get::<_, Option<i64>>(2)?.map(|a| a as usize),
                    exit_code: r.get(3)?,
                    reason: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
