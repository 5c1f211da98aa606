//! Warnings at most once per period for the same key, with a count of the ones held back in
//! between: a flood of forged requests, or a host down for a day, must not flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most: past it, the table starts afresh (a key set by strangers cannot grow it).
const KEYS: usize = 1000;

pub struct WarnLimit {
    every: Duration,
    last: Mutex<Option<HashMap<String, (Instant, u64)>>>,
}

impl WarnLimit {
    pub const fn new(every: Duration) -> WarnLimit {
        WarnLimit { every, last: Mutex::new(None) }
    }

    /// `Some(how many were held back since the last one)` when `key` may be warned about now,
    /// `None` when it was less than the period ago (this one is counted).
    pub fn admit(&self, key: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let seen = last.get_or_insert_with(HashMap::new);
        if seen.len() > KEYS {
            seen.clear();
        }
        match seen.get_mut(key) {
            Some((at, held_back)) if at.elapsed() < self.every => {
                *held_back += 1;
                None
            }
            _ => Some(seen.insert(key.to_string(), (Instant::now(), 0)).map_or(0, |(_, n)| n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period_per_key_with_the_count_held_back() {
        let limit = WarnLimit::new(Duration::from_millis(200));
        assert_eq!(limit.admit("a"), Some(0));
        assert_eq!(limit.admit("a"), None);
        assert_eq!(limit.admit("a"), None);
        assert_eq!(limit.admit("b"), Some(0), "another key has its own period");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.admit("a"), Some(2), "the next one says how many were held back");
        assert_eq!(limit.admit("a"), None);
    }
}
