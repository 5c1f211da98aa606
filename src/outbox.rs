//! The outbox's sender: delivers the statuses and messages that jobs' changes wrote to the
//! store, one lane at a time in order (one entry and commit for statuses, one target and entry
//! for messages), several lanes at once. A failed item is tried again with growing pauses
//! (from 250 ms, doubling, at most 5 minutes) for `server.notify_retry_for`; an item a server
//! refuses as malformed is dropped at once. Undelivered items stay in the store across restarts
//! and kill -9. Failures are logged at WARN with the target's name, never its URL or token, at
//! most once a minute per target (the others at DEBUG, counted in the next warning).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::app::{blocking, App};
use crate::metrics::TargetLabels;
use crate::outbound::{Outbound, SendError};
use crate::report::{Report, STATUS};
use crate::store::{now_ms, Item};
use crate::throttle::Throttle;

/// Lanes delivered at once.
const IN_FLIGHT: usize = 16;
/// The first pause after a failure, doubled each time.
const FIRST_PAUSE_MS: i64 = 250;
/// The longest pause between tries.
const MOST_PAUSE_MS: i64 = 5 * 60 * 1000;
/// How long the sender goes on delivering what is due once the daemon stops.
const FLUSH: Duration = Duration::from_secs(3);

/// How one try ended.
enum Sent {
    Delivered,
    /// Not sent, and never will be: dropped (a target removed from the settings, a request the
    /// server calls malformed).
    Dropped(String),
    Failed(SendError),
}

/// Delivers the outbox until `stop` turns true (then goes on for a short while with what is due).
pub async fn deliver(app: Arc<App>, client: Outbound, mut stop: watch::Receiver<bool>) {
    let mut flying: JoinSet<(Item, Sent)> = JoinSet::new();
    let mut lanes: HashSet<String> = HashSet::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let store = app.store.clone();
        let heads = match blocking(move || store.outbox_heads(256)).await {
            Ok(heads) => heads,
            Err(e) => {
                warn!(error = %e, "cannot read the outbox; trying again");
                Vec::new()
            }
        };
        let now = now_ms();
        let mut wake_at: Option<i64> = None;
        for (item, next_at) in heads {
            if lanes.contains(&item.lane) {
                continue;
            }
            if next_at > now {
                wake_at = Some(wake_at.map_or(next_at, |w| w.min(next_at)));
                continue;
            }
            if lanes.len() >= IN_FLIGHT {
                break;
            }
            lanes.insert(item.lane.clone());
            let (app, client) = (app.clone(), client.clone());
            flying.spawn(async move {
                let sent = send(&app, &client, &item).await;
                (item, sent)
            });
        }
        if deadline.is_some() && flying.is_empty() && wake_at.is_none_or(|w| w > now) {
            return;
        }
        let pause = match wake_at {
            Some(at) => Duration::from_millis((at - now).max(1) as u64),
            None => Duration::from_secs(60),
        };
        let stopping = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => {
                    let _ = stop.wait_for(|s| *s).await;
                }
            }
        };
        tokio::select! {
            _ = app.outbox_wake.notified() => {}
            Some(done) = flying.join_next() => {
                if let Ok((item, sent)) = done {
                    lanes.remove(&item.lane);
                    settle(&app, &item, sent).await;
                }
            }
            _ = tokio::time::sleep(pause) => {}
            _ = stopping => {
                if deadline.is_some() {
                    return;
                }
                deadline = Some(tokio::time::Instant::now() + FLUSH);
            }
        }
    }
}

/// Failing targets are warned about at most once a minute each: a host down for a day must
/// not fill the log with one line per try of every item.
static WARNINGS: Throttle = Throttle::new(Duration::from_secs(60));

/// The target's name as logs and metrics show it.
fn target_name(item: &Item) -> &str {
    item.sink.strip_prefix("notify:").unwrap_or(&item.sink)
}

/// One try of `item`.
async fn send(app: &App, client: &Outbound, item: &Item) -> Sent {
    let report: Report = match serde_json::from_str(&item.report) {
        Ok(r) => r,
        Err(e) => return Sent::Dropped(format!("unreadable item: {e}")),
    };
    let settings = app.settings();
    let link = settings.server.public_url.as_ref().map(|u| format!("{u}/jobs/{}", item.job));
    if item.sink == STATUS {
        let Some(sink) = settings.entry(&item.entry).and_then(|e| e.status.clone()) else {
            return Sent::Dropped("the entry no longer has `status:` in the settings".into());
        };
        drop(settings);
        let store = app.store.clone();
        let job = item.job;
        let remote = match blocking(move || store.remote_id(job, STATUS)).await {
            Ok(r) => r,
            Err(e) => return Sent::Failed(SendError::Transport(format!("job store: {e}"))),
        };
        match crate::status::send(client, &report, &sink, link.as_deref(), remote.as_deref()).await {
            Ok(Some(made)) if remote.as_deref() != Some(made.as_str()) => {
                let store = app.store.clone();
                if let Err(e) = blocking(move || store.set_remote_id(job, STATUS, &made)).await {
                    warn!(job, error = %e, "cannot record the host's deployment id");
                }
                Sent::Delivered
            }
            Ok(_) => Sent::Delivered,
            Err(e) => Sent::Failed(e),
        }
    } else {
        let name = target_name(item);
        let Some(target) = settings.targets.get(name).cloned() else {
            return Sent::Dropped(format!("no target \"{name}\" in the settings now"));
        };
        let sendmail = settings.server.sendmail.clone();
        drop(settings);
        let cx = crate::notify::Context { link: link.as_deref(), sendmail: &sendmail, item: item.id };
        match crate::notify::send(client, &report, &target, &cx).await {
            Ok(()) => Sent::Delivered,
            Err(e) => Sent::Failed(e),
        }
    }
}

/// Records how a try ended: delivered or dropped items go, failed ones wait for their next try
/// (or are given up after `notify_retry_for`).
async fn settle(app: &App, item: &Item, sent: Sent) {
    let target = target_name(item).to_string();
    let count = |result: &'static str| {
        app.metrics.notifications.get_or_create(&TargetLabels { target: target.clone(), result }).inc();
    };
    let what = if item.sink == STATUS { "status" } else { "message" };
    let (id, job, kind) = (item.id, item.job, item.kind.as_str());
    let store = app.store.clone();
    let outcome = match sent {
        Sent::Delivered => {
            count("delivered");
            debug!(job, target = %target, kind, "{what} delivered");
            blocking(move || store.outbox_done(id)).await
        }
        Sent::Dropped(why) => {
            count("dropped");
            info!(job, target = %target, kind, "{what} dropped: {why}");
            blocking(move || store.outbox_done(id)).await
        }
        Sent::Failed(e) if e.is_permanent() => {
            count("refused");
            warn!(job, target = %target, kind, error = %e, "{what} refused by the target; dropped (it would be refused again)");
            blocking(move || store.outbox_done(id)).await
        }
        Sent::Failed(e) => {
            count("failed");
            let retry_for = app.settings().server.notify_retry_for.as_millis() as i64;
            let now = now_ms();
            if now - item.created_at >= retry_for {
                count("given_up");
                warn!(job, target = %target, kind, error = %e, attempts = item.attempts + 1,
                    "{what} not delivered within notify_retry_for: given up");
                blocking(move || store.outbox_done(id)).await
            } else {
                let pause =
                    FIRST_PAUSE_MS.saturating_mul(1i64 << item.attempts.clamp(0, 20)).min(MOST_PAUSE_MS);
                match WARNINGS.admit(&target) {
                    Some(held_back) => {
                        warn!(job, target = %target, kind, error = %e, attempts = item.attempts + 1,
                        retry_in_ms = pause, held_back, "{what} not delivered; trying again")
                    }
                    None => debug!(job, target = %target, kind, error = %e, attempts = item.attempts + 1,
                        retry_in_ms = pause, "{what} not delivered; trying again"),
                }
                let error = e.to_string();
                blocking(move || store.outbox_retry(id, &error, now + pause)).await
            }
        }
    };
    if let Err(e) = outcome {
        warn!(job, error = %e, "cannot record the delivery of an outbox item");
    }
}
