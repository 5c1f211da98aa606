//! The bounded queue between the HTTP answers and the worker pool.
//!
//! Jobs wait here (their durable record is in the store); a fixed pool of workers takes them
//! oldest first, skipping any whose entry already has a job running: two jobs of one entry never
//! run at once. A new job replaces a waiting one of the same entry and ref (the older one is
//! superseded), so a burst of pushes deploys the last commit once. Room is reserved before a job
//! is recorded, so a full queue is known before anything is written. What a job does is the
//! runner's business.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

/// A job waiting to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub id: i64,
    pub entry: String,
    /// Jobs of one entry with the same key supersede each other (the ref of the event). An
    /// empty key never matches: such a job neither supersedes nor is superseded.
    pub key: String,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: VecDeque<Waiting>,
    reserved: usize,
    running: HashSet<String>,
    closed: bool,
}

/// The queue was full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    wake: Notify,
}

/// Room for jobs, held between the check and the record. Dropping it gives the room back.
#[must_use]
pub struct Reservation<'a> {
    queue: &'a Queue,
    count: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.queue.lock().reserved -= self.count;
    }
}

fn same(w: &Waiting, entry: &str, key: &str) -> bool {
    !key.is_empty() && w.entry == entry && w.key == key
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves room for `jobs` (entry, key) under `capacity`. A job that would replace a
    /// waiting one of the same entry and key needs no room.
    pub fn reserve(&self, jobs: &[(&str, &str)], capacity: usize) -> Result<Reservation<'_>, Full> {
        let mut inner = self.lock();
        let needed =
            jobs.iter().filter(|(entry, key)| !inner.waiting.iter().any(|w| same(w, entry, key))).count();
        if inner.waiting.len() + inner.reserved + needed > capacity && needed > 0 {
            return Err(Full);
        }
        inner.reserved += needed;
        Ok(Reservation { queue: self, count: needed })
    }

    /// Adds recorded jobs (using the reservation's room). Returns the waiting jobs they
    /// supersede, each with the id of the job that supersedes it.
    pub fn push(&self, reservation: Reservation<'_>, jobs: Vec<Waiting>) -> Vec<(i64, i64)> {
        let count = reservation.count;
        std::mem::forget(reservation);
        self.add(count, jobs)
    }

    /// Adds jobs without a reservation (recovered at start, or a manual trigger).
    pub fn push_unreserved(&self, jobs: Vec<Waiting>) -> Vec<(i64, i64)> {
        self.add(0, jobs)
    }

    fn add(&self, reserved: usize, jobs: Vec<Waiting>) -> Vec<(i64, i64)> {
        let mut superseded = Vec::new();
        {
            let mut inner = self.lock();
            inner.reserved -= reserved;
            for job in jobs {
                inner.waiting.retain(|w| {
                    let same = same(w, &job.entry, &job.key);
                    if same {
                        superseded.push((w.id, job.id));
                    }
                    !same
                });
                inner.waiting.push_back(job);
            }
        }
        self.wake.notify_waiters();
        superseded
    }

    /// Waits for the oldest job whose entry is not running, and marks its entry running.
    /// `None` once the queue is closed.
    pub async fn next(&self) -> Option<Waiting> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                let running = &inner.running;
                let pos = inner.waiting.iter().position(|w| !running.contains(&w.entry));
                if let Some(job) = pos.and_then(|pos| inner.waiting.remove(pos)) {
                    inner.running.insert(job.entry.clone());
                    return Some(job);
                }
            }
            notified.await;
        }
    }

    /// The job of `entry` is over: its next job may start.
    pub fn done(&self, entry: &str) {
        self.lock().running.remove(entry);
        self.wake.notify_waiters();
    }

    /// Stops handing out jobs; waiting jobs stay recorded in the store for the next start.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }

    /// (waiting, running)
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.waiting.len(), inner.running.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: i64, entry: &str, key: &str) -> Waiting {
        Waiting { id, entry: entry.into(), key: key.into() }
    }

    #[tokio::test]
    async fn one_job_per_entry_newest_wins_bounded() {
        let q = Queue::new();
        let r = q.reserve(&[("a", "main")], 2).unwrap();
        assert!(q.push(r, vec![w(1, "a", "main")]).is_empty());
        // Replacing a waiting job needs no room and supersedes it.
        let r = q.reserve(&[("a", "main")], 1).unwrap();
        assert_eq!(q.push(r, vec![w(2, "a", "main")]), vec![(1, 2)]);
        // Another ref of the same entry waits beside it.
        let r = q.reserve(&[("a", "dev")], 2).unwrap();
        assert!(q.push(r, vec![w(3, "a", "dev")]).is_empty());
        assert!(q.reserve(&[("b", "main")], 2).is_err(), "full");
        let r = q.reserve(&[("b", "main")], 3).unwrap();
        q.push(r, vec![w(4, "b", "main")]);

        let first = q.next().await.unwrap();
        assert_eq!(first.id, 2);
        // Entry a is running: the next job is b's, not a's dev job.
        assert_eq!(q.next().await.unwrap().id, 4);
        q.done("a");
        assert_eq!(q.next().await.unwrap().id, 3);
        assert_eq!(q.depth(), (0, 2));
        q.close();
        assert!(q.next().await.is_none());
    }

    #[test]
    fn dropped_reservation_gives_room_back() {
        let q = Queue::new();
        let r = q.reserve(&[("a", "main")], 1).unwrap();
        assert!(q.reserve(&[("b", "main")], 1).is_err());
        drop(r);
        assert!(q.reserve(&[("b", "main")], 1).is_ok());
    }
}
