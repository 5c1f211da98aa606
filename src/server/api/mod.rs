//! `/api/v1/`: the job API, JSON, on the listener of the hooks. Off (404) without `api:` in the
//! settings. A request is first checked against `api.allow_from` (403), then its token (401,
//! before anything else is read; an address that fails too often gets 429 for a minute), then
//! its scope (403): `read` sees, `run` also runs, `admin` also freezes.
//!
//! `GET entries`, `GET jobs?entry=&state=&commit=&trigger=&limit=&before=` (newest first, the
//! next page `before` the last id), `GET jobs/{id}`, `GET jobs/{id}/log` (plain text), and
//! `?wait=10m` on a job or on `jobs?entry=E&commit=SHA`: the answer comes when the job ends (or
//! the wait runs out: 202 with the state then), `GET entries/{name}/releases`.
//! `POST jobs/{id}/cancel`, `POST entries/{name}/run` (`{"branch"|"tag", "commit"}`),
//! `POST entries/{name}/rollback`
//! (`{"to"}`), `POST entries/{name}/freeze` (`{"reason"}`) and `unfreeze`.

pub(super) mod auth;
mod events;
mod routes;
mod shapes;
pub(super) mod views;

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::warn;

use super::answers::{json_answer, Answer};
use crate::admission::Conn;
use crate::app::{blocking, App};
use crate::forwarded;
use routes::{Lookup, Op};

/// Requests that last (`?wait=`, event streams) at once, at most `api.max_waiting`. Their
/// connections leave the table of `server.max_connections` ([`Conn::leave`]): however many CI
/// jobs wait, the hosts' deliveries keep every place.
static LONG: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A place among the long requests, given back when dropped.
pub(super) struct Long(prometheus_client::metrics::gauge::Gauge);

impl Long {
    /// A place, or `None` when they are all taken (answered 503). The connection then leaves
    /// the table of connections, and closes once answered.
    fn take(app: &App, cap: usize, conn: &Conn) -> Option<Long> {
        use std::sync::atomic::Ordering;
        let taken = LONG.fetch_add(1, Ordering::AcqRel);
        if taken >= cap {
            LONG.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        conn.leave();
        app.metrics.api_waiting.inc();
        Some(Long(app.metrics.api_waiting.clone()))
    }
}

impl Drop for Long {
    fn drop(&mut self) {
        LONG.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.dec();
    }
}

/// The answer when every place for long requests is taken.
fn busy() -> Answer {
    let mut res = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many waiting requests and event streams at once (api.max_waiting): try again",
    );
    res.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
    res
}

/// The most of a request body the API reads.
const MAX_BODY: usize = 64 * 1024;

pub(super) const PREFIX: &str = "/api/v1/";

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json_answer(status, &shapes::ApiError { error: message.into() })
}

/// The API's answer: JSON (or a log's text), or a log as events while its job runs.
pub(super) async fn api(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    conn: &Conn,
) -> http::Response<super::Body> {
    use http_body_util::Either;
    let res = match answer(app, req, peer, conn).await {
        Reply::Answer(answer) => answer.map(Either::Left),
        Reply::Log(log) => log_response(log),
    };
    closing(res, conn)
}

/// An answer, or a log.
enum Reply {
    Answer(Answer),
    Log(LogReply),
}

/// A job's log: as events while its job runs, or as it is now, read in pieces.
enum LogReply {
    Events(super::jobs::LogStream),
    Text(super::jobs::LogStream),
}

/// `GET jobs/{id}/log` (and the page's log): plain text from `?from=N`, or with
/// `Accept: text/event-stream` events from `Last-Event-ID` (or `?from=N`), holding a place
/// among the long requests.
async fn log_reply(
    app: &Arc<App>,
    id: i64,
    query: &str,
    headers: &http::HeaderMap,
    conn: &Conn,
    api: &crate::settings::Api,
) -> Result<LogReply, Answer> {
    let store = app.store.clone();
    if blocking(move || store.job(id)).await.ok().flatten().is_none() {
        return Err(error(StatusCode::NOT_FOUND, format!("no job {id}")));
    }
    let from = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "from")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let wants_events = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_events {
        return Ok(LogReply::Text(events::plain(app.store.log_path(id), from)));
    }
    let last_event: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(from);
    match Long::take(app, api.max_waiting, conn) {
        Some(long) => Ok(LogReply::Events(events::stream(app.clone(), id, last_event, long))),
        None => Err(busy()),
    }
}

/// A job's log for the page: as the API answers it.
pub(super) async fn log(
    app: &Arc<App>,
    id: i64,
    query: &str,
    headers: &http::HeaderMap,
    conn: &Conn,
    api: &crate::settings::Api,
) -> http::Response<super::Body> {
    let res = match log_reply(app, id, query, headers, conn, api).await {
        Ok(log) => log_response(log),
        Err(answer) => answer.map(http_body_util::Either::Left),
    };
    closing(res, conn)
}

fn log_response(log: LogReply) -> http::Response<super::Body> {
    use http_body_util::Either;
    match log {
        LogReply::Events(stream) => {
            let mut res = http::Response::new(Either::Right(stream));
            let headers = res.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
            headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            // nginx: pass the events on as they come.
            headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
            res
        }
        LogReply::Text(stream) => {
            let mut res = http::Response::new(Either::Right(stream));
            let headers = res.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
            res
        }
    }
}

/// A connection that left the table closes once answered, so it never takes a place again.
fn closing(mut res: http::Response<super::Body>, conn: &Conn) -> http::Response<super::Body> {
    if conn.has_left() {
        res.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    res
}

async fn answer(app: Arc<App>, req: Request<Incoming>, peer: std::net::SocketAddr, conn: &Conn) -> Reply {
    match route(app, req, peer, conn).await {
        Ok(reply) => reply,
        Err(answer) => Reply::Answer(answer),
    }
}

async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    conn: &Conn,
) -> Result<Reply, Answer> {
    let settings = app.settings();
    let Some(api) = settings.api.clone() else {
        return Err(error(StatusCode::NOT_FOUND, "no API here: the settings have no `api:`"));
    };
    let client = forwarded::client(peer.ip(), req.headers(), &settings.server.trusted_proxies);
    drop(settings);
    if api.allow_from.as_ref().is_some_and(|nets| !nets.contains(client)) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("requests from {client} may not use the API (api.allow_from)"),
        ));
    }
    if auth::throttled(client) {
        app.metrics.api_refused.inc();
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests with a wrong token: try again in a minute",
        ));
    }
    let Some(token) = auth::token(&api, req.headers()).cloned() else {
        auth::failed(client);
        app.metrics.api_refused.inc();
        if let Some(held_back) = super::hooks::REFUSALS.admit("the API") {
            warn!(status = 401, %client, held_back, "API request refused: no token, or not one of api.tokens");
        }
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "a token is needed: Authorization: Bearer <token> (api.tokens)",
        ));
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let (route, params) = match routes::find(parts.method.as_str(), &format!("/{path}")) {
        Lookup::Route(route, params) => (route, params),
        Lookup::Method => {
            let message = format!("{} is not a method of /api/v1/{path}", parts.method);
            return Err(error(StatusCode::METHOD_NOT_ALLOWED, message));
        }
        Lookup::Nowhere => return Err(error(StatusCode::NOT_FOUND, format!("no API route /api/v1/{path}"))),
    };
    if token.scope < route.scope {
        let message = format!(
            "token {:?} has scope {}; this needs {}",
            token.name,
            token.scope.as_str(),
            route.scope.as_str()
        );
        return Err(error(StatusCode::FORBIDDEN, message));
    }
    let param = params.first().map(String::as_str).unwrap_or_default();
    if route.op == Op::Log {
        let Ok(id) = param.parse::<i64>() else {
            return Err(error(StatusCode::NOT_FOUND, format!("no job {param:?}")));
        };
        return Ok(Reply::Log(log_reply(&app, id, &query, &parts.headers, conn, &api).await?));
    }
    // A request that waits holds a place among the long ones while it waits.
    let _long = if query.split('&').any(|p| p.starts_with("wait=")) {
        match Long::take(&app, api.max_waiting, conn) {
            Some(long) => Some(long),
            None => return Err(busy()),
        }
    } else {
        None
    };
    let body = if parts.method == Method::POST {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 64 KiB, or cut off"))
            }
        }
    } else {
        bytes::Bytes::new()
    };
    let answer = match route.op {
        Op::OpenApi => Ok((StatusCode::OK, routes::openapi())),
        Op::Entries => views::entries(&app).await,
        Op::Jobs => views::jobs(&app, &query).await,
        Op::Job => views::job(&app, param, &query).await,
        Op::Releases => views::releases(&app, param).await,
        Op::Cancel => views::cancel(&app, param, &token.name).await,
        Op::Rollback => views::rollback(&app, param, &body, token.scope).await,
        Op::Run => views::run(&app, param, &body, token.scope).await,
        Op::Freeze | Op::Unfreeze => views::freeze(&app, param, route.op == Op::Freeze, &body).await,
        Op::Log => unreachable!("answered above"),
    };
    Ok(Reply::Answer(match answer {
        Ok((status, value)) => json_answer(status, &value),
        Err((status, message)) => error(status, message),
    }))
}
