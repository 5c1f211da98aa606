//! The HTTP front: hyper 1, HTTP/1 only (a reverse proxy in front does TLS).
//!
//! Routes: `POST {path}/{entry}` (one entry), `POST {path}` (every entry whose matcher fits and
//! whose secret authenticates), `GET /health`, `GET /metrics`, `GET /jobs/<id>`, `/api/v1/`
//! (the job API), `/ui/` (the page for people), each in its own module. A webhook reads top to bottom in `hooks::hook`: admitted, received within the
//! limits, handed once to [`crate::intake`] (which decides what it asks for), recorded and
//! queued, answered. The answer never waits for actions. Limits: body size (refused before reading past it),
//! header read timeout, body read timeout, a cap on connections.
//! `answers::HookError::answer` is the one place that maps errors to statuses.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::warn;

use crate::admission::{Admission, Conn, Connections, Slot};
use crate::app::App;
use crate::forwarded;
use jobs::{LogStream, PageError};

mod answers;
mod api;
mod health;
mod hooks;
pub mod jobs;
mod metrics;
mod ui;

use answers::{json_answer, HookError};

/// How long open connections get to finish when the daemon stops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves until `shutdown` resolves, then lets open connections finish (briefly).
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let settings = app.settings();
    let table =
        Connections::new(settings.server.max_connections, settings.server.max_connections_per_address);
    let header_timeout = settings.server.header_timeout;
    drop(settings);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let proxy = app.settings().server.trusted_proxies.contains(peer.ip());
        let Some(place) = place_for(&table, peer.ip(), proxy).await else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        let conn = place.conn.clone();
        let service = service_fn(move |req| {
            let (app, conn) = (app.clone(), conn.clone());
            async move {
                conn.receiving();
                let answer = route(app, req, peer, &conn).await;
                conn.idle();
                Ok::<_, Infallible>(answer)
            }
        });
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let served = graceful.watch(served);
        tokio::spawn(async move {
            // Dropping the connection closes it: when the table wants its place back.
            tokio::select! {
                _ = served => {}
                _ = place.conn.evicted() => {}
            }
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown()).await.is_err() {
        warn!("connections still open after the close grace period; dropping them");
    }
}

/// A place for a new connection from `ip`: `None` when its address has its share (a trusted
/// `proxy` has none: the clients behind it share its address), or when
/// every place is taken by requests being handled for longer than a second. Otherwise the
/// oldest connection that has not delivered a request gives its place.
async fn place_for(table: &Arc<Connections>, ip: IpAddr, proxy: bool) -> Option<Slot> {
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match table.admit(ip, proxy) {
            Admission::Admitted(place) => return Some(place),
            Admission::AddressFull => return None,
            Admission::Full => {
                table.evict_slowest();
                if tokio::time::timeout_at(until, table.freed()).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// What the server answers with: JSON (and short text), or a job's page streamed.
pub type Body = Either<Full<Bytes>, LogStream>;

/// Who may read what, settled once for every path: `/hooks` for `server.allow_from` (and the
/// signatures), `/health` and `/metrics` for `server.observe_from`, `/jobs/<id>` for the link
/// that carries the job's key.
async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    conn: &Conn,
) -> Response<Body> {
    let path = req.uri().path();
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/health" || path == "/metrics" {
        if !reading {
            return HookError::Method.refuse(&app).map(Either::Left);
        }
        // What the daemon tells about itself is for `server.observe_from` only: the queue, the
        // outbox's last error and the settings' problems are not for strangers.
        let client = forwarded::client(peer.ip(), req.headers(), &app.settings().server.trusted_proxies);
        if !app.settings().server.observe_from.contains(client) {
            let error = format!("requests from {client} may not read {path} (server.observe_from)");
            let mut res = json_answer(StatusCode::FORBIDDEN, &serde_json::json!({ "error": error }));
            res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return res.map(Either::Left);
        }
        let answer = if path == "/health" {
            health::health(app).await
        } else {
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
            metrics::metrics(app, crate::metrics_format::wants_openmetrics(accept)).await
        };
        return answer.map(Either::Left);
    }
    if path.starts_with(api::PREFIX) {
        return api::api(app, req, peer, conn).await;
    }
    if path == ui::PREFIX || path.starts_with("/ui/") {
        return ui::ui(app, req, peer, conn).await;
    }
    if let (true, Some(id)) = (reading, path.strip_prefix("/jobs/")) {
        // A signed-in person's browser goes to the job's page (the key is not needed there).
        if ui::wants_page(&app, req.headers()) && id.parse::<u64>().is_ok() {
            let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
            *res.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(to) = header::HeaderValue::from_str(&format!("/ui/jobs/{id}")) {
                res.headers_mut().insert(header::LOCATION, to);
            }
            return res;
        }
        return match jobs::page(&app, id, req.uri().query()).await {
            Ok(stream) => {
                let mut res = Response::new(Either::Right(stream));
                let headers = res.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert("x-content-type-options", header::HeaderValue::from_static("nosniff"));
                headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
                headers.insert("referrer-policy", header::HeaderValue::from_static("no-referrer"));
                res
            }
            Err(PageError::NotFound) => {
                HookError::NoRoute(PageError::NotFound.to_string()).answer().map(Either::Left)
            }
            Err(PageError::Store(e)) => HookError::Internal(e.to_string()).answer().map(Either::Left),
        };
    }
    hooks::hooks(app, req, peer, conn).await.map(Either::Left)
}
