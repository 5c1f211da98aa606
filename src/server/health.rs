//! `GET /health`: the daemon's state for a health check: `ok`, or `degraded` with the reasons
//! (a refused edit, no entries, a failing job store, an outbox item undelivered for long, a
//! frozen entry), the
//! settings' load state, the queue and the outbox. For `server.observe_from` only (the route
//! checks it).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use super::answers::{json_answer, Answer};
use crate::app::{blocking, App};

/// An outbox whose oldest item is older than this makes `/health` degraded.
const OUTBOX_LATE_MS: i64 = 15 * 60 * 1000;

pub(super) async fn health(app: Arc<App>) -> Answer {
    let status = app.status();
    let depth = app.queue.depth();
    let capacity = app.settings().server.queue;
    let store = app.store.clone();
    let both =
        blocking(move || Ok::<_, crate::store::StoreError>((store.outbox_backlog(), store.frozen()))).await;
    let (backlog, frozen) = match both {
        Ok(both) => both,
        Err(e) => (Err(e), Ok(Vec::new())),
    };
    let store = app.store_trouble();
    let mut reasons = Vec::new();
    let outbox = match &backlog {
        Ok(b) => {
            let age = b.oldest_at.map(|at| (crate::store::now_ms() - at).max(0));
            if age.is_some_and(|a| a > OUTBOX_LATE_MS) {
                reasons.push(format!(
                    "the outbox has {} undelivered status(es) or message(s), the oldest for {}",
                    b.pending,
                    humantime::format_duration(Duration::from_secs(age.unwrap_or(0) as u64 / 1000))
                ));
            }
            let oldest = b.oldest_at.map(|ms| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
                    .to_string()
            });
            json!({ "pending": b.pending, "oldest": oldest, "oldest_error": b.oldest_error })
        }
        Err(e) => json!({ "error": e.to_string() }),
    };
    if status.entries == 0 {
        reasons.push(format!("{}: nothing runs until one is added", crate::settings::NO_ENTRIES));
    }
    if status.state != "loaded" {
        reasons.push("the last settings edit was refused; the previous settings keep serving".to_string());
    }
    if let Some(trouble) = &store {
        reasons.push(format!("the job store fails: {trouble}"));
    }
    // A frozen entry deploys nothing: a person froze it, or its rollback failed.
    let frozen: serde_json::Map<String, serde_json::Value> = frozen
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            reasons.push(format!("entry {} is frozen: {}", f.entry, f.reason));
            let since = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(f.at.max(0) as u64),
            );
            (f.entry, json!({ "reason": f.reason, "since": since.to_string() }))
        })
        .collect();
    json_answer(
        StatusCode::OK,
        &json!({
            "status": if reasons.is_empty() { "ok" } else { "degraded" },
            "reasons": reasons,
            "store": { "state": if store.is_some() { "error" } else { "ok" }, "error": store },
            "version": env!("CARGO_PKG_VERSION"),
            "settings": status,
            "queue": { "waiting": depth.waiting, "running": depth.running, "parked": depth.parked, "capacity": capacity },
            "outbox": outbox,
            "frozen": frozen,
        }),
    )
}
