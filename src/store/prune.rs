//! Pruning: the oldest finished jobs go, with their logs, payloads and the hosts' ids of their
//! deployments, so that the history stays bounded.

use super::{Store, StoreError, HISTORY};

impl Store {
    /// Removes the finished jobs older than the newest [`HISTORY`], with their logs.
    pub fn prune(&self) -> Result<usize, StoreError> {
        self.prune_to(HISTORY)
    }

    /// Removes the finished jobs older than the newest `keep` jobs (by id), with their logs;
    /// an unfinished job is never removed. The work grows with the jobs removed, not with the
    /// history kept: it runs under the lock that answers wait on.
    pub fn prune_to(&self, keep: i64) -> Result<usize, StoreError> {
        let old: Vec<i64> = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let newest: Option<i64> =
                tx.prepare_cached("SELECT max(id) FROM jobs")?.query_row([], |r| r.get(0))?;
            let Some(newest) = newest else { return Ok(0) };
            let old: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM jobs WHERE id <= ?1 AND state NOT IN ('queued', 'running') ORDER BY id",
                )?
                .query_map([newest - keep], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
                let mut remote = tx.prepare_cached("DELETE FROM remote_ids WHERE job_id = ?1")?;
                for id in &old {
                    delete.execute([id])?;
                    remote.execute([id])?;
                }
            }
            tx.commit()?;
            old
        };
        // The files go after the lock is released: answers wait on that lock.
        for id in &old {
            let _ = std::fs::remove_file(self.log_path(*id));
        }
        Ok(old.len())
    }
}
