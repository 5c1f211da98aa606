//! `GET /health` and `GET /metrics`: what the daemon tells about itself, to the addresses of
//! `server.observe_from` only (by default loopback, where a health check, a local Prometheus
//! and the reverse proxy run; behind a proxy, the client it names). Others get 403: the queue,
//! the outbox's last error and the settings' problems are not for strangers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::app::{blocking, App};

type Answer = Response<Full<Bytes>>;

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

/// `/health` or `/metrics` (`path`) for `client`; `accept`: the request's `Accept` (the format
/// of `/metrics`).
pub async fn answer(app: Arc<App>, path: &str, client: std::net::IpAddr, accept: Option<&str>) -> Answer {
    if !app.settings().server.observe_from.contains(client) {
        let error = format!("requests from {client} may not read {path} (server.observe_from)");
        let mut res = json_answer(StatusCode::FORBIDDEN, &json!({ "error": error }));
        res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return res;
    }
    if path == "/health" {
        health(app).await
    } else {
        metrics(app, crate::metrics_format::wants_openmetrics(accept)).await
    }
}

/// An outbox whose oldest item is older than this makes `/health` degraded.
const OUTBOX_LATE_MS: i64 = 15 * 60 * 1000;

async fn health(app: Arc<App>) -> Answer {
    let status = app.status();
    let depth = app.queue.depth();
    let capacity = app.settings().server.queue;
    let store = app.store.clone();
    let backlog = blocking(move || store.outbox_backlog()).await;
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
        }),
    )
}

/// `GET /metrics`: the gauges read now, then every metric, in OpenMetrics when the client asks
/// for it, else in the classic Prometheus text format.
async fn metrics(app: Arc<App>, openmetrics: bool) -> Answer {
    let depth = app.queue.depth();
    let m = &app.metrics;
    m.jobs_running.set(depth.running as i64);
    m.queue_depth.set((depth.waiting + depth.parked) as i64);
    m.queue_capacity.set(app.settings().server.queue as i64);
    let store = app.store.clone();
    if let Ok(backlog) = blocking(move || store.outbox_backlog()).await {
        m.outbox_pending.set(backlog.pending);
    }
    use crate::metrics_format::{classic, CLASSIC, OPENMETRICS};
    let (text, kind) = if openmetrics { (m.render(), OPENMETRICS) } else { (classic(&m.render()), CLASSIC) };
    let mut res = Response::new(Full::new(Bytes::from(text)));
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    res
}
