//! `GET /metrics`: every metric, in OpenMetrics when the client asks for it, else in the
//! classic Prometheus text format ([`crate::metrics_format`]). For `server.observe_from` only
//! (the route checks it).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;

use super::answers::Answer;
use crate::app::{blocking, App};

/// `GET /metrics`: the gauges read now, then every metric, in OpenMetrics when the client asks
/// for it, else in the classic Prometheus text format.
pub(super) async fn metrics(app: Arc<App>, openmetrics: bool) -> Answer {
    let depth = app.queue.depth();
    let m = &app.metrics;
    m.jobs_running.set(depth.running as i64);
    m.queue_depth.set((depth.waiting + depth.parked) as i64);
    m.queue_capacity.set(app.settings().server.queue as i64);
    let store = app.store.clone();
    if let Ok(backlog) = blocking(move || store.outbox_backlog()).await {
        m.outbox_pending.set(backlog.pending);
    }
    let store = app.store.clone();
    if let Ok(frozen) = blocking(move || store.frozen()).await {
        m.set_frozen(frozen.iter().map(|f| f.entry.as_str()));
    }
    use crate::metrics_format::{classic, CLASSIC, OPENMETRICS};
    let (text, kind) = if openmetrics { (m.render(), OPENMETRICS) } else { (classic(&m.render()), CLASSIC) };
    let mut res = Response::new(Full::new(Bytes::from(text)));
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    res
}
