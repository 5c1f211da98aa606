//! Pruning: the oldest finished jobs go (but each entry's newest releases), with their logs, payloads and the hosts' ids of their
//! deployments, so that the history stays bounded.

use super::{Store, StoreError};

impl Store {
    /// Removes the finished jobs older than the newest `history` (`server.history`, default
    /// `store::HISTORY`), with their logs, but the newest `releases` releases of each entry.
    pub fn prune(&self, history: usize, releases: usize) -> Result<usize, StoreError> {
        self.prune_keeping(history as i64, releases as i64)
    }

    /// Removes the finished jobs older than the newest `keep` jobs (by id), with their logs;
    /// an unfinished job is never removed. The work grows with the jobs removed, not with the
    /// history kept: it runs under the lock that answers wait on.
    pub fn prune_to(&self, keep: i64) -> Result<usize, StoreError> {
        self.prune_keeping(keep, super::RELEASES_KEPT)
    }

    /// [`Store::prune_to`], keeping the newest `releases` releases of each entry.
    pub fn prune_keeping(&self, keep: i64, releases: i64) -> Result<usize, StoreError> {
        let old: Vec<i64> = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let newest: Option<i64> =
                tx.prepare_cached("SELECT max(id) FROM jobs")?.query_row([], |r| r.get(0))?;
            let Some(newest) = newest else { return Ok(0) };
            // The newest releases of each entry stay, however old: they are what a rollback
            // goes back to.
            let sql = format!(
                "SELECT id FROM jobs WHERE id <= ?1 AND state NOT IN ('queued', 'running', 'held')
                   AND id NOT IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY entry ORDER BY id DESC) AS n
                                                    FROM jobs WHERE {}) WHERE n <= ?2)
                 ORDER BY id",
                super::releases::is_release()
            );
            let old: Vec<i64> = tx
                .prepare_cached(&sql)?
                .query_map([newest - keep, releases], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
                let mut remote = tx.prepare_cached("DELETE FROM remote_ids WHERE job_id = ?1")?;
                let mut hosts = tx.prepare_cached("DELETE FROM job_hosts WHERE job_id = ?1")?;
                for id in &old {
                    delete.execute([id])?;
                    remote.execute([id])?;
                    hosts.execute([id])?;
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
