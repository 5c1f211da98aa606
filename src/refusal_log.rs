//! Refused and ignored requests, counted rather than logged one by one.
//!
//! Most requests a webhook daemon sees are refusals (forged, another branch, another
//! repository): a log line each would make a flood cost twice and bury the lines that matter.
//! Each is logged at DEBUG; at the default level, one INFO line a minute says how many there
//! were and of what kind. Refused signatures are warned about on their own, rate-limited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::info;

/// How often the counts are logged (when any is not zero).
pub const EVERY: Duration = Duration::from_secs(60);

/// The kinds counted, each with its words in the summary.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Ignored,
    Ping,
    /// Refused with this HTTP status (400, 401, 403, 404, 405, 408, 413, 503, ...).
    Refused(u16),
}

const STATUSES: [u16; 9] = [400, 401, 403, 404, 405, 408, 413, 500, 503];

static IGNORED: AtomicU64 = AtomicU64::new(0);
static PINGS: AtomicU64 = AtomicU64::new(0);
static REFUSED: [AtomicU64; STATUSES.len() + 1] = [const { AtomicU64::new(0) }; STATUSES.len() + 1];

/// Counts one request.
pub fn count(outcome: Kind) {
    let counter = match outcome {
        Kind::Ignored => &IGNORED,
        Kind::Ping => &PINGS,
        Kind::Refused(status) => {
            &REFUSED[STATUSES.iter().position(|s| *s == status).unwrap_or(STATUSES.len())]
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The counts since the last call, as one line; `None` when there were none.
pub fn take() -> Option<String> {
    let ignored = IGNORED.swap(0, Ordering::Relaxed);
    let pings = PINGS.swap(0, Ordering::Relaxed);
    let mut refused = Vec::new();
    let mut total = 0;
    for (i, counter) in REFUSED.iter().enumerate() {
        let n = counter.swap(0, Ordering::Relaxed);
        if n > 0 {
            total += n;
            let status = STATUSES.get(i).map_or("other".to_string(), u16::to_string);
            refused.push(format!("{n} with {status}"));
        }
    }
    if ignored + pings + total == 0 {
        return None;
    }
    let mut parts = vec![format!("{ignored} ignored")];
    if pings > 0 {
        parts.push(format!("{pings} pings"));
    }
    if total > 0 {
        parts.push(format!("{total} refused ({})", refused.join(", ")));
    }
    Some(parts.join(", "))
}

/// Logs the counts every [`EVERY`] (nothing when there were none), until dropped.
pub async fn report() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Some(line) = take() {
            info!(every = ?EVERY, "requests not run: {line} (each is logged at debug level)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_summed_by_kind_and_reset() {
        let _ = take();
        for _ in 0..3 {
            count(Kind::Ignored);
        }
        count(Kind::Refused(401));
        count(Kind::Refused(401));
        count(Kind::Refused(400));
        count(Kind::Refused(418));
        assert_eq!(take().unwrap(), "3 ignored, 4 refused (1 with 400, 2 with 401, 1 with other)");
        assert_eq!(take(), None);
    }
}
