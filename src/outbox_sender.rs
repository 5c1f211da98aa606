//! The outbox's sender: delivers the statuses and messages that jobs' changes wrote to the
//! store, one lane at a time in order (one entry and commit for statuses, one target and entry
//! for messages), several lanes at once. Undelivered items stay in the store across restarts
//! and kill -9. Failures are logged at WARN with the target's name, never its URL or token, at
//! most once a minute per target (the others at DEBUG, counted in the next warning).
//!
//! # Schedule
//!
//! Lanes share a destination ([`crate::store::destination`]: an entry's status API, or one
//! target), and a destination that fails fails for all of its lanes: so each destination has its
//! own schedule ([`crate::telling::schedule`]), on the monotonic clock. One that answers has up to
//! [`PER_DEST`](crate::telling::schedule::PER_DEST) lanes in flight; one that failed is paused (from 250 ms, doubling, at most
//! 5 minutes), then tried with one item at a time until it answers again. A dead API thus holds
//! a few places at most, and the others' items go out meanwhile. An item is tried for
//! `server.notify_retry_for`; one a server refuses as malformed is dropped at once.
//!
//! Each round reads, for each destination of the settings, only as many heads as it may send,
//! through an index: the work per round does not grow with the backlog. Items whose entry or
//! target has left the settings are looked for when the settings change and once a minute, and
//! dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::app::{blocking, App};
use crate::metrics::TargetLabels;
use crate::outbound::{Outbound, SendError};
use crate::settings::Settings;
use crate::store::{now_ms, Item, StoreError};
use crate::telling::policy::{Report, STATUS};
use crate::telling::schedule::Schedule;
use crate::warn_limit::WarnLimit;

/// Lanes delivered at once, in all.
const IN_FLIGHT: usize = 16;
/// How often items for an entry or target no longer in the settings are looked for.
const STRAYS_EVERY: Duration = Duration::from_secs(60);
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

/// The destinations the settings have: each entry's statuses, each notification target.
fn destinations(settings: &Settings) -> Vec<String> {
    let statuses = settings
        .entries
        .iter()
        .filter(|e| e.status.is_some())
        .map(|e| crate::store::destination(STATUS, &e.name));
    let targets = settings.targets.keys().map(|t| crate::telling::policy::target_sink(t));
    statuses.chain(targets).collect()
}

/// Delivers the outbox until `stop` turns true (then goes on for a short while with what is due).
pub async fn deliver(app: Arc<App>, client: Outbound, mut stop: watch::Receiver<bool>) {
    let mut flying: JoinSet<(Item, Sent)> = JoinSet::new();
    let mut lanes: HashSet<String> = HashSet::new();
    let mut schedule = Schedule::default();
    let mut deadline: Option<Instant> = None;
    let mut known: Vec<String> = Vec::new();
    let mut strays_at = Instant::now();
    loop {
        let now = Instant::now();
        let dests = destinations(&app.settings());
        let wanted = schedule.wanted(&dests, now, IN_FLIGHT.saturating_sub(lanes.len()));
        let look_for_strays = dests != known || now >= strays_at;
        let store = app.store.clone();
        let read = {
            let dests = dests.clone();
            blocking(move || -> Result<Vec<Item>, StoreError> {
                let mut items = Vec::new();
                for (dest, n) in &wanted {
                    items.extend(store.outbox_heads(dest, *n)?);
                }
                if look_for_strays {
                    items.extend(store.outbox_strays(&dests, IN_FLIGHT)?);
                }
                Ok(items)
            })
            .await
        };
        if look_for_strays {
            known = dests;
            strays_at = now + STRAYS_EVERY;
        }
        let heads = read.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the outbox; trying again");
            Vec::new()
        });
        for item in heads {
            if lanes.len() >= IN_FLIGHT || lanes.contains(&item.lane) || !schedule.take(&item.dest, now) {
                continue;
            }
            lanes.insert(item.lane.clone());
            let (app, client) = (app.clone(), client.clone());
            flying.spawn(async move {
                let sent = send(&app, &client, &item).await;
                (item, sent)
            });
        }
        let wake_at = schedule.next_wake(now);
        if deadline.is_some() && flying.is_empty() {
            return;
        }
        let pause = wake_at
            .map_or(STRAYS_EVERY, |at| at.saturating_duration_since(now).max(Duration::from_millis(1)));
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
                    let failed = matches!(&sent, Sent::Failed(e) if !e.is_permanent());
                    schedule.ended(&item.dest, failed, Instant::now());
                    settle(&app, &item, sent, schedule.pause(&item.dest)).await;
                }
            }
            _ = tokio::time::sleep(pause) => {}
            _ = stopping => {
                if deadline.is_some() {
                    return;
                }
                deadline = Some(Instant::now() + FLUSH);
            }
        }
    }
}

/// Failing targets are warned about at most once a minute each: a host down for a day must
/// not fill the log with one line per try of every item.
static WARNINGS: WarnLimit = WarnLimit::new(Duration::from_secs(60));

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
    let link = match settings.server.public_url.clone() {
        Some(url) => {
            let (store, job) = (app.store.clone(), item.job);
            match blocking(move || store.page_key(job)).await {
                Ok(key) => Some(format!("{url}/jobs/{job}?key={key}")),
                Err(e) => return Sent::Failed(SendError::Transport(format!("job store: {e}"))),
            }
        }
        None => None,
    };
    if item.sink == STATUS {
        let Some(sink) = settings.entry(&item.entry).and_then(|e| e.status.clone()) else {
            return Sent::Dropped("the entry no longer has `status:` in the settings".into());
        };
        drop(settings);
        send_status(app, client, item, &report, &sink, link.as_deref()).await
    } else {
        let name = target_name(item);
        let Some(target) = settings.targets.get(name).cloned() else {
            return Sent::Dropped(format!("no target \"{name}\" in the settings now"));
        };
        let sendmail = settings.server.sendmail.clone();
        drop(settings);
        let cx = crate::telling::notify::Context {
            link: link.as_deref(),
            sendmail: &sendmail,
            item: &item.delivery,
        };
        match crate::telling::notify::send(client, &report, &target, &cx).await {
            Ok(()) => Sent::Delivered,
            Err(e) => Sent::Failed(e),
        }
    }
}

/// Events of hosts that get no status for want of `status.api_url` are warned about once a day
/// per entry and host.
static NOT_PUBLIC: WarnLimit = WarnLimit::new(Duration::from_secs(24 * 60 * 60));

/// One try of a status. A GitHub deployment is made first, and its id recorded before any of
/// its statuses is posted: a failed post is tried again on the same deployment.
async fn send_status(
    app: &App,
    client: &Outbound,
    item: &Item,
    report: &Report,
    sink: &crate::settings::StatusSink,
    link: Option<&str>,
) -> Sent {
    let to = match crate::telling::status::destination(report, sink) {
        Ok(to) => to,
        Err(unsendable) => {
            if let crate::telling::status::Unsendable::NotPublic(np) = &unsendable {
                let host: String = np.host.chars().take(100).collect();
                if NOT_PUBLIC.admit(&format!("{}\n{host}", item.entry)).is_some() {
                    warn!(entry = %item.entry, host = ?host, "no commit status: the event's repository is not on \
                        its provider's public host, and the entry's status has no api_url (set status.api_url to \
                        this host's API to report to it)");
                }
            }
            return Sent::Dropped(unsendable.to_string());
        }
    };
    let job = item.job;
    let store = app.store.clone();
    let mut deployment = match blocking(move || store.remote_id(job, STATUS)).await {
        Ok(r) => r,
        Err(e) => return Sent::Failed(SendError::Transport(format!("job store: {e}"))),
    };
    if deployment.is_none() && to.is_deployment(sink) {
        let made = match crate::telling::status::create_deployment(client, report, sink, &to).await {
            Ok(made) => made,
            Err(e) => return Sent::Failed(e),
        };
        let store = app.store.clone();
        let id = made.clone();
        if let Err(e) = blocking(move || store.set_remote_id(job, STATUS, &id)).await {
            warn!(job, error = %e, "cannot record the host's deployment id");
        }
        deployment = Some(made);
    }
    match crate::telling::status::send(client, report, sink, &to, link, deployment.as_deref()).await {
        Ok(()) => Sent::Delivered,
        Err(e) => Sent::Failed(e),
    }
}

/// Records how a try ended: delivered or dropped items go, failed ones wait for their next try
/// (or are given up after `notify_retry_for`).
async fn settle(app: &App, item: &Item, sent: Sent, pause: Duration) {
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
                let pause = pause.as_millis() as i64;
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
