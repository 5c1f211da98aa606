//! `/ui/`: the page for people, on the API's tokens. Off (404) without `api:`; `api.allow_from`
//! applies. A token given to the login form starts a session ([`session`]); the pages show what
//! the API answers ([`super::api`]'s views), and their buttons call the same views, each POST
//! checked for its `Origin` and its CSRF token, and for the token's scope.
//!
//! Every answer forbids framing, inline scripts and styles, and scripts from elsewhere; the
//! page's own script follows a running job's log (EventSource); without it, a running job's page
//! reloads itself.

mod pages;
mod session;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use maud::Markup;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::api::{self, views};
use crate::admission::Conn;
use crate::app::App;
use crate::forwarded;
use crate::settings::Scope;
use session::User;

pub(super) const PREFIX: &str = "/ui";

const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");
/// The most of a log a page shows (its end); the whole is a link away.
const SHOWN: u64 = 1024 * 1024;
/// The most of a form read.
const MAX_FORM: usize = 16 * 1024;

type Reply = Response<super::Body>;

fn with_headers(mut res: Reply) -> Reply {
    let h = res.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // Same-origin: a POST's Origin is sent (with no-referrer it would be "null").
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn html(status: StatusCode, markup: Markup) -> Reply {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(markup.into_string()))));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    with_headers(res)
}

fn redirect(to: &str, cookie: Option<String>) -> Reply {
    let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(to) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, to);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    with_headers(res)
}

fn asset(body: &'static str, kind: &'static str) -> Reply {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    with_headers(res)
}

/// Whether a request for `/jobs/<id>` should be sent to the job's page: it asks for HTML and
/// carries a live session.
pub(super) fn wants_page(app: &App, headers: &http::HeaderMap) -> bool {
    let html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
    html && app.settings().api.as_ref().is_some_and(|api| session::user(api, headers).is_some())
}

/// The page's answer to `req`.
pub(super) async fn ui(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    conn: &Conn,
) -> Reply {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/ui") => return redirect("/ui/", None),
        (&Method::GET, "/ui/assets/ui.css") => return asset(CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/ui/assets/ui.js") => return asset(JS, "text/javascript; charset=utf-8"),
        _ => {}
    }
    let settings = app.settings();
    let Some(api) = settings.api.clone() else {
        return html(
            StatusCode::NOT_FOUND,
            pages::problem(None, 404, "No page here: the settings have no `api:`."),
        );
    };
    let client = forwarded::client(peer.ip(), req.headers(), &settings.server.trusted_proxies);
    if api.allow_from.as_ref().is_some_and(|nets| !nets.contains(client)) {
        let message = format!("Requests from {client} may not use the page (api.allow_from).");
        return html(StatusCode::FORBIDDEN, pages::problem(None, 403, &message));
    }
    let secure = session::secure(&settings, req.headers(), peer.ip());
    let same_origin = session::same_origin(&settings, req.headers());
    drop(settings);
    let user = session::user(&api, req.headers());
    let post = req.method() == Method::POST;
    if post && !same_origin {
        let message =
            "Refused: this form was not sent from this page (its Origin is another site's, or none).";
        return html(StatusCode::FORBIDDEN, pages::problem(user.as_ref(), 403, message));
    }
    let segments: Vec<String> = path
        .trim_start_matches("/ui/")
        .split('/')
        .map(|s| percent_decode(s).unwrap_or_else(|| "\u{fffd}".into()))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let (&Method::POST, ["login"]) = (req.method(), segments.as_slice()) {
        return login(&app, &api, client, secure, req).await;
    }
    let Some(user) = user else {
        return match *req.method() {
            Method::GET | Method::HEAD if segments == [""] => html(StatusCode::OK, pages::login(None)),
            Method::GET | Method::HEAD => redirect("/ui/", None),
            _ => html(StatusCode::UNAUTHORIZED, pages::login(Some("Your session has ended: sign in again."))),
        };
    };
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or_default().to_string();
    if method == Method::POST {
        return act(&app, &user, secure, req, &segments).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return html(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::problem(Some(&user), 405, "Not a method of the page."),
        );
    }
    match segments.as_slice() {
        [""] => match views::entries(&app).await {
            Ok((_, listed)) => html(StatusCode::OK, pages::entries(&user, &listed)),
            Err((status, message)) => html(status, pages::problem(Some(&user), status.as_u16(), &message)),
        },
        ["jobs"] => {
            let filters: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .filter(|(k, v)| {
                    !v.is_empty() && matches!(k.as_str(), "entry" | "state" | "trigger" | "commit" | "before")
                })
                .collect();
            let asked = form_urlencoded::Serializer::new(String::new()).extend_pairs(&filters).finish();
            let names: Vec<String> = app.settings().entries.iter().map(|e| e.name.clone()).collect();
            match views::jobs(&app, &asked).await {
                Ok((_, listed)) => html(StatusCode::OK, pages::jobs(&user, &listed, &filters, &names)),
                Err((status, message)) => {
                    html(status, pages::problem(Some(&user), status.as_u16(), &message))
                }
            }
        }
        ["jobs", id] => match views::job(&app, id, "").await {
            Ok((_, job)) => {
                let (log, offset, cut) = log_end(&app, &job).await;
                html(StatusCode::OK, pages::job(&user, &job, &log, offset, cut))
            }
            Err((status, message)) => html(status, pages::problem(Some(&user), status.as_u16(), &message)),
        },
        ["jobs", id, "log"] => {
            let Ok(id) = id.parse::<i64>() else {
                return html(StatusCode::NOT_FOUND, pages::problem(Some(&user), 404, "No such job."));
            };
            with_headers(api::log(&app, id, &query, req.headers(), conn, &api).await)
        }
        _ => html(StatusCode::NOT_FOUND, pages::problem(Some(&user), 404, "No such page.")),
    }
}

/// `POST /ui/login`: a token of `api.tokens` starts a session. Wrong ones count toward the same
/// throttle as the API's.
async fn login(
    app: &App,
    api: &crate::settings::Api,
    client: std::net::IpAddr,
    secure: bool,
    req: Request<Incoming>,
) -> Reply {
    if api::auth::throttled(client) {
        app.metrics.api_refused.inc();
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some("Too many wrong tokens from your address: try again in a minute.")),
        );
    }
    let form = form(req).await.unwrap_or_default();
    let given = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.trim()).unwrap_or("");
    let Some(token) = api::auth::find(api, given) else {
        api::auth::failed(client);
        app.metrics.api_refused.inc();
        return html(StatusCode::UNAUTHORIZED, pages::login(Some("That token is not one of api.tokens.")));
    };
    match session::start(token, secure) {
        Some(cookie) => redirect("/ui/", Some(cookie)),
        None => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::login(Some("The system's random generator failed: try again.")),
        ),
    }
}

/// A form's fields (at most [`MAX_FORM`] bytes of it).
async fn form(req: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let body = Limited::new(req.into_body(), MAX_FORM).collect().await.ok()?.to_bytes();
    Some(form_urlencoded::parse(&body).into_owned().collect())
}

/// A POST of a signed-in user: its CSRF token, its scope, then the view it asks for.
async fn act(app: &Arc<App>, user: &User, secure: bool, req: Request<Incoming>, segments: &[&str]) -> Reply {
    let headers = req.headers().clone();
    let Some(form) = form(req).await else {
        return html(
            StatusCode::PAYLOAD_TOO_LARGE,
            pages::problem(Some(user), 413, "The form is larger than 16 KiB."),
        );
    };
    let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.trim().to_string());
    if !session::csrf_fits(user, &field("csrf").unwrap_or_default()) {
        return html(
            StatusCode::FORBIDDEN,
            pages::problem(
                Some(user),
                403,
                "Refused: the form's CSRF token is not this session's. Reload the page.",
            ),
        );
    }
    let needs = match segments {
        ["logout"] => Scope::Read,
        ["jobs", _, "cancel"] | ["entries", _, "run" | "rollback"] => Scope::Run,
        ["entries", _, "freeze" | "unfreeze"] => Scope::Admin,
        _ => return html(StatusCode::NOT_FOUND, pages::problem(Some(user), 404, "No such action.")),
    };
    if user.scope < needs {
        let message = format!("Your token has scope {}; this needs {}.", user.scope.as_str(), needs.as_str());
        return html(StatusCode::FORBIDDEN, pages::problem(Some(user), 403, &message));
    }
    let filled = |pairs: &[(&str, Option<String>)]| -> Bytes {
        let mut body = serde_json::Map::new();
        for (k, v) in pairs {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                body.insert(k.to_string(), Value::String(v.clone()));
            }
        }
        if field("force").as_deref() == Some("1") {
            body.insert("force".into(), Value::Bool(true));
        }
        Bytes::from(Value::Object(body).to_string())
    };
    let done = match segments {
        ["logout"] => return redirect("/ui/", Some(session::end(&headers, secure))),
        ["jobs", id, "cancel"] => views::cancel(app, id, &user.name).await,
        ["entries", name, "run"] => {
            views::run(app, name, &filled(&[("branch", field("branch"))]), user.scope).await
        }
        ["entries", name, "rollback"] => {
            views::rollback(app, name, &filled(&[("to", field("to"))]), user.scope).await
        }
        ["entries", name, which] => {
            let body = filled(&[("reason", field("reason"))]);
            views::freeze(app, name, *which == "freeze", &body).await
        }
        _ => unreachable!("every action is named above"),
    };
    match done {
        Ok((_, value)) => match value["job"].as_i64() {
            Some(job) => redirect(&format!("/ui/jobs/{job}"), None),
            None => redirect("/ui/", None),
        },
        Err((status, message)) => html(status, pages::problem(Some(user), status.as_u16(), &message)),
    }
}

/// The end of a job's log for its page: the text (at most [`SHOWN`] bytes, from a line's
/// start), the offset it ends at (a running job's at a line's end, where the script follows
/// on), and how many bytes before it are left out.
async fn log_end(app: &App, job: &Value) -> (String, u64, u64) {
    let Some(id) = job["id"].as_i64() else { return (String::new(), 0, 0) };
    let running = !job["final"].as_bool().unwrap_or(true);
    let Ok(mut file) = tokio::fs::File::open(app.store.log_path(id)).await else {
        return (String::new(), 0, 0);
    };
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = size.saturating_sub(SHOWN);
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return (String::new(), 0, 0);
    }
    let mut bytes = Vec::new();
    if file.take(size - start).read_to_end(&mut bytes).await.is_err() {
        return (String::new(), 0, 0);
    }
    let mut cut = start;
    if start > 0 {
        let skip = bytes.iter().position(|b| *b == b'\n').map_or(bytes.len(), |p| p + 1);
        bytes.drain(..skip);
        cut += skip as u64;
    }
    if running {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        bytes.truncate(keep);
    }
    let offset = cut + bytes.len() as u64;
    (String::from_utf8_lossy(&bytes).into_owned(), offset, cut)
}

/// A path segment with its `%XX` escapes decoded; `None` when it is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) =
            (bytes[i], bytes.get(i + 1).map(|b| hex(*b)), bytes.get(i + 2).map(|b| hex(*b)))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
