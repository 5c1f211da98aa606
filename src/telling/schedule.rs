//! When each destination of the outbox may be tried (an entry's status API, or a notification
//! target): how many of its lanes are in flight, and, after a failure, until when it rests.
//!
//! The pauses are on the monotonic clock, kept in memory: a clock stepped back does not stop
//! the retries, and a restart tries every destination again at once. A destination that
//! answers has up to [`PER_DEST`] lanes in flight; one that failed rests (from 250 ms,
//! doubling, at most 5 minutes), then is tried with one item at a time until it answers.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Lanes of one destination delivered at once while it answers.
pub const PER_DEST: usize = 4;

/// The first rest after a failure, doubled at each one that follows.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest rest.
const MOST_PAUSE: Duration = Duration::from_secs(5 * 60);

/// Every destination's state.
#[derive(Debug, Default)]
pub struct Schedule {
    dests: HashMap<String, Dest>,
    /// Which destination is offered first in the next round (each in turn).
    turn: usize,
}

#[derive(Debug, Default)]
struct Dest {
    /// Failures in a row.
    failures: u32,
    resting_until: Option<Instant>,
    flying: usize,
}

impl Dest {
    fn cap(&self) -> usize {
        if self.failures > 0 {
            1
        } else {
            PER_DEST
        }
    }

    fn resting(&self, now: Instant) -> bool {
        self.resting_until.is_some_and(|at| at > now)
    }
}

impl Schedule {
    /// The destinations of `dests` that may send now, each with how many of its heads to read
    /// (its free places, plus its lanes in flight, which are among its heads), the first one
    /// in turn (when there is less room than items, each destination goes first in its turn).
    /// Every destination that may send is asked: one that has nothing waiting costs one
    /// indexed look-up, and one left out could wait for a wake-up that never comes.
    pub fn wanted(&mut self, dests: &[String], now: Instant, room: usize) -> Vec<(String, usize)> {
        self.dests.retain(|_, d| d.failures > 0 || d.flying > 0);
        let mut out = Vec::new();
        if dests.is_empty() || room == 0 {
            return out;
        }
        self.turn = (self.turn + 1) % dests.len();
        for i in 0..dests.len() {
            let name = &dests[(self.turn + i) % dests.len()];
            let (cap, flying, resting) = match self.dests.get(name) {
                Some(d) => (d.cap(), d.flying, d.resting(now)),
                None => (PER_DEST, 0, false),
            };
            if !resting && flying < cap {
                out.push((name.clone(), cap));
            }
        }
        out
    }

    /// Whether one more item of `dest` may go now; if so it is counted in flight.
    pub fn take(&mut self, dest: &str, now: Instant) -> bool {
        let d = self.dests.entry(dest.to_string()).or_default();
        if d.resting(now) || d.flying >= d.cap() {
            return false;
        }
        d.flying += 1;
        true
    }

    /// A try of an item of `dest` ended; `failed`: it may succeed later (the destination rests).
    pub fn ended(&mut self, dest: &str, failed: bool, now: Instant) {
        let d = self.dests.entry(dest.to_string()).or_default();
        d.flying = d.flying.saturating_sub(1);
        if failed {
            d.failures = d.failures.saturating_add(1);
            d.resting_until = Some(now + pause_after(d.failures));
        } else {
            d.failures = 0;
            d.resting_until = None;
        }
    }

    /// How long `dest` rests after its failures so far.
    pub fn pause(&self, dest: &str) -> Duration {
        self.dests.get(dest).map_or(Duration::ZERO, |d| {
            if d.failures == 0 {
                Duration::ZERO
            } else {
                pause_after(d.failures)
            }
        })
    }

    /// When the next resting destination may be tried again.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.dests.values().filter_map(|d| d.resting_until).filter(|at| *at > now).min()
    }
}

/// The rest after `failures` failures in a row.
fn pause_after(failures: u32) -> Duration {
    FIRST_PAUSE.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(MOST_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_destination_rests_then_sends_one_at_a_time() {
        let now = Instant::now();
        let mut s = Schedule::default();
        let dests = vec!["dead".to_string(), "alive".to_string()];
        let wanted = s.wanted(&dests, now, 1);
        assert_eq!(wanted.len(), 2, "every destination that may send is asked, however little room");
        for _ in 0..PER_DEST {
            assert!(s.take("dead", now));
            assert!(s.take("alive", now));
        }
        assert!(!s.take("dead", now), "at most PER_DEST in flight");
        s.ended("dead", true, now);
        assert_eq!(s.pause("dead"), FIRST_PAUSE);
        assert!(!s.take("dead", now), "it rests");
        s.ended("alive", false, now);
        assert_eq!(s.wanted(&dests, now, 16), [("alive".to_string(), PER_DEST)], "a resting one is not read");
        for _ in 1..PER_DEST {
            s.ended("dead", true, now);
        }
        assert_eq!(s.pause("dead"), FIRST_PAUSE * 8, "doubling");
        let later = now + Duration::from_secs(3);
        assert_eq!(s.next_wake(now), Some(now + FIRST_PAUSE * 8));
        assert!(s.take("dead", later), "one probe after the rest");
        assert!(!s.take("dead", later), "only one");
        s.ended("dead", false, later);
        assert!(s.take("dead", later) && s.take("dead", later), "it answers again: its places are back");
        assert_eq!(pause_after(40), MOST_PAUSE);
    }
}
