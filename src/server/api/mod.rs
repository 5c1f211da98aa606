//! `/api/v1/`: the job API, JSON, on the listener of the hooks. Off (404) without `api:` in the
//! settings. A request is first checked against `api.allow_from` (403), then its token (401,
//! before anything else is read; an address that fails too often gets 429 for a minute), then
//! its scope (403): `read` sees, `run` also runs, `admin` also freezes.
//!
//! `GET entries`, `GET jobs?entry=&state=&commit=&trigger=&limit=&before=` (newest first, the
//! next page `before` the last id), `GET jobs/{id}`, `GET jobs/{id}/log` (plain text), and
//! `?wait=10m` on a job or on `jobs?entry=E&commit=SHA`: the answer comes when the job ends (or
//! the wait runs out: 202 with the state then), `GET entries/{name}/releases`.
//! `POST entries/{name}/run` (`{"branch"|"tag", "commit"}`), `POST entries/{name}/rollback`
//! (`{"to"}`), `POST entries/{name}/freeze` (`{"reason"}`) and `unfreeze`.

mod auth;
mod views;

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::warn;

use super::answers::{json_answer, Answer};
use crate::app::App;
use crate::forwarded;
use crate::settings::Scope;

/// The most of a request body the API reads.
const MAX_BODY: usize = 64 * 1024;

pub(super) const PREFIX: &str = "/api/v1/";

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json_answer(status, &json!({ "error": message.into() }))
}

pub(super) async fn api(app: Arc<App>, req: Request<Incoming>, peer: std::net::SocketAddr) -> Answer {
    let settings = app.settings();
    let Some(api) = settings.api.clone() else {
        return error(StatusCode::NOT_FOUND, "no API here: the settings have no `api:`");
    };
    let client = forwarded::client(peer.ip(), req.headers(), &settings.server.trusted_proxies);
    drop(settings);
    if api.allow_from.as_ref().is_some_and(|nets| !nets.contains(client)) {
        return error(
            StatusCode::FORBIDDEN,
            format!("requests from {client} may not use the API (api.allow_from)"),
        );
    }
    if auth::throttled(client) {
        app.metrics.api_refused.inc();
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests with a wrong token: try again in a minute",
        );
    }
    let Some(token) = auth::token(&api, req.headers()).cloned() else {
        auth::failed(client);
        app.metrics.api_refused.inc();
        if let Some(held_back) = super::hooks::REFUSALS.admit("the API") {
            warn!(status = 401, %client, held_back, "API request refused: no token, or not one of api.tokens");
        }
        return error(
            StatusCode::UNAUTHORIZED,
            "a token is needed: Authorization: Bearer <token> (api.tokens)",
        );
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let need = |scope: Scope| -> Result<(), Box<Answer>> {
        if token.scope >= scope {
            Ok(())
        } else {
            Err(Box::new(error(
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} has scope {}; this needs {}",
                    token.name,
                    token.scope.as_str(),
                    scope.as_str()
                ),
            )))
        }
    };
    let read_body = || async {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(_) => {
                Err(Box::new(error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 64 KiB, or cut off")))
            }
        }
    };
    let answer = match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["entries"]) => views::entries(&app).await,
        (&Method::GET, ["jobs"]) => views::jobs(&app, &query).await,
        (&Method::GET, ["jobs", id]) => views::job(&app, id, &query).await,
        (&Method::GET, ["jobs", id, "log"]) => views::log(&app, id).await,
        (&Method::GET, ["entries", name, "releases"]) => views::releases(&app, name).await,
        (&Method::POST, ["entries", name, "rollback"]) => match need(Scope::Run) {
            Err(refused) => Ok(*refused),
            Ok(()) => match read_body().await {
                Err(refused) => Ok(*refused),
                Ok(body) => views::rollback(&app, name, &body, token.scope).await,
            },
        },
        (&Method::POST, ["entries", name, "run"]) => match need(Scope::Run) {
            Err(refused) => Ok(*refused),
            Ok(()) => match read_body().await {
                Err(refused) => Ok(*refused),
                Ok(body) => views::run(&app, name, &body, token.scope).await,
            },
        },
        (&Method::POST, ["entries", name, which @ ("freeze" | "unfreeze")]) => match need(Scope::Admin) {
            Err(refused) => Ok(*refused),
            Ok(()) => match read_body().await {
                Err(refused) => Ok(*refused),
                Ok(body) => views::freeze(&app, name, *which == "freeze", &body).await,
            },
        },
        (
            _,
            ["entries"]
            | ["jobs"]
            | ["jobs", _]
            | ["jobs", _, "log"]
            | ["entries", _, "run" | "freeze" | "unfreeze" | "rollback" | "releases"],
        ) => Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not a method of /api/v1/{path}", parts.method),
        )),
        _ => Ok(error(StatusCode::NOT_FOUND, format!("no API route /api/v1/{path}"))),
    };
    answer.unwrap_or_else(|(status, message)| error(status, message))
}
