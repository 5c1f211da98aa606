//! The bounded queue between the HTTP answers and the worker pool.
//!
//! Jobs wait here (their durable record is in the store); a fixed pool of workers takes them
//! oldest first, skipping any whose entry already has a job running: two jobs of one entry never
//! run at once. Jobs of one entry and ref supersede each other, and the newest recorded job (the
//! highest id) always wins, whatever order the requests raced in: a new job replaces a waiting
//! older one, and a job that arrives after a newer one of its entry and ref (waiting, running or
//! done) is superseded at once. So a burst of pushes deploys the last commit once. Room is
//! reserved before a job is recorded, so a full queue is known before anything is written.
//!
//! A job whose entry is missing from the settings when a worker takes it (a reload removed it,
//! perhaps for a moment) is parked, not dropped: it waits until a reload brings the entry back.
//! What a job does is the runner's business.

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Jobs whose entry was not in the settings when they were taken.
    parked: Vec<Waiting>,
    reserved: usize,
    running: HashSet<String>,
    /// The highest job id seen for each (entry, key).
    newest: HashMap<(String, String), i64>,
    closed: bool,
}

/// How many jobs wait, run, and are parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub waiting: usize,
    pub running: usize,
    pub parked: usize,
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
    replaces: Vec<i64>,
}

impl Reservation<'_> {
    /// The waiting (or parked) jobs that the reserved ones will replace, as the queue held them
    /// when the room was reserved. A job a worker took meanwhile is not among them: it runs.
    pub fn replaces(&self) -> &[i64] {
        &self.replaces
    }
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
        let used = inner.waiting.len() + inner.parked.len() + inner.reserved;
        if used + needed > capacity && needed > 0 {
            return Err(Full);
        }
        inner.reserved += needed;
        let replaced = |w: &&Waiting| jobs.iter().any(|(entry, key)| same(w, entry, key));
        let replaces = inner.waiting.iter().chain(&inner.parked).filter(replaced).map(|w| w.id).collect();
        Ok(Reservation { queue: self, count: needed, replaces })
    }

    /// Adds recorded jobs (using the reservation's room). Returns the jobs superseded, each
    /// with the id of the newer job that supersedes it.
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
                if let Some(job) = inner.supersede(job, &mut superseded) {
                    inner.waiting.push_back(job);
                }
            }
        }
        self.wake.notify_waiters();
        superseded
    }

    /// Puts `job` before every waiting job (a rollback, which runs before the newer jobs of
    /// its entry); it neither supersedes nor is superseded.
    pub fn push_first(&self, job: Waiting) {
        self.lock().waiting.push_front(job);
        self.wake.notify_waiters();
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

    /// `job` was taken but its entry is not in the settings: it waits, out of the way, until
    /// [`Queue::unpark`] finds its entry again. Its entry's next job may start.
    pub fn park(&self, job: Waiting) {
        let mut inner = self.lock();
        inner.running.remove(&job.entry);
        inner.parked.push(job);
        drop(inner);
        self.wake.notify_waiters();
    }

    /// Puts the parked jobs whose entry `exists` back in line (after new settings loaded).
    pub fn unpark(&self, exists: impl Fn(&str) -> bool) -> usize {
        let mut inner = self.lock();
        let (back, still): (Vec<Waiting>, Vec<Waiting>) =
            std::mem::take(&mut inner.parked).into_iter().partition(|j| exists(&j.entry));
        inner.parked = still;
        let count = back.len();
        // Oldest first, ahead of what came meanwhile: they were taken before it.
        for job in back.into_iter().rev() {
            inner.waiting.push_front(job);
        }
        drop(inner);
        self.wake.notify_waiters();
        count
    }

    /// Stops handing out jobs; waiting jobs stay recorded in the store for the next start.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }

    /// Whether [`Queue::close`] was called: no job starts any more.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn depth(&self) -> Depth {
        let inner = self.lock();
        Depth { waiting: inner.waiting.len(), running: inner.running.len(), parked: inner.parked.len() }
    }
}

impl Inner {
    /// Applies "the newest recorded job wins" to an arriving `job`: it replaces the older
    /// waiting or parked jobs of its entry and key, or is itself superseded when a newer one
    /// was seen. Returns the job when it is to wait.
    fn supersede(&mut self, job: Waiting, superseded: &mut Vec<(i64, i64)>) -> Option<Waiting> {
        if job.key.is_empty() {
            return Some(job);
        }
        let newest = self.newest.entry((job.entry.clone(), job.key.clone())).or_insert(job.id);
        if *newest > job.id {
            superseded.push((job.id, *newest));
            return None;
        }
        *newest = job.id;
        let mut take_older = |w: &Waiting| {
            let older = same(w, &job.entry, &job.key);
            if older {
                superseded.push((w.id, job.id));
            }
            !older
        };
        self.waiting.retain(&mut take_older);
        self.parked.retain(take_older);
        Some(job)
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
        assert_eq!(q.depth(), Depth { waiting: 0, running: 2, parked: 0 });
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

    /// Requests race: job 8 may reach the queue after job 9 of the same entry and ref was
    /// recorded, queued, even run. The newest recorded job wins every time.
    #[tokio::test]
    async fn an_older_job_arriving_late_is_superseded_by_the_newer_one() {
        let q = Queue::new();
        q.push_unreserved(vec![w(9, "a", "main")]);
        assert_eq!(q.push_unreserved(vec![w(8, "a", "main")]), vec![(8, 9)], "8 came late: 9 wins");
        assert_eq!(q.next().await.unwrap().id, 9);
        // 9 runs (or ran): a late 7 is still superseded by it, never run after it.
        assert_eq!(q.push_unreserved(vec![w(7, "a", "main")]), vec![(7, 9)]);
        q.done("a");
        assert_eq!(q.depth(), Depth::default());
        // Another ref, and a manual run (no key), are not concerned.
        assert!(q.push_unreserved(vec![w(6, "a", "dev"), w(5, "a", "")]).is_empty());
        assert_eq!(q.depth().waiting, 2);
    }

    #[tokio::test]
    async fn parked_jobs_wait_for_their_entry_and_are_superseded_like_waiting_ones() {
        let q = Queue::new();
        q.push_unreserved(vec![w(1, "gone", "main"), w(2, "b", "main")]);
        let first = q.next().await.unwrap();
        q.park(first);
        assert_eq!(q.depth(), Depth { waiting: 1, running: 0, parked: 1 });
        assert_eq!(q.unpark(|e| e != "gone"), 0);
        assert_eq!(q.depth().parked, 1, "still missing: still parked");
        // A newer job of the parked one's entry and ref supersedes it.
        assert_eq!(q.push_unreserved(vec![w(3, "gone", "main")]), vec![(1, 3)]);
        assert_eq!(q.depth().parked, 0);
        let again = q.next().await.unwrap();
        assert_eq!(again.id, 2);
        let three = q.next().await.unwrap();
        q.park(three);
        assert_eq!(q.unpark(|_| true), 1);
        assert_eq!(q.next().await.unwrap().id, 3, "back once the entry is");
        // Parked jobs count against the capacity.
        q.park(w(4, "gone2", "x"));
        assert!(q.reserve(&[("c", "main")], 1).is_err());
    }
}
