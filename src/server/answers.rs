//! The answers of the HTTP front: JSON answers, why a webhook was refused ([`HookError`], the
//! one place that maps errors to statuses) and the bodies of `queued`, `duplicate`, `pong` and
//! `ignored`.

use std::fmt;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tracing::debug;

use crate::app::{App, EnqueueError, Enqueued};
use crate::event::{Event, EventKind};
use crate::intake::Refusal;
use crate::refusal_log::{self, Kind};

/// An answer of the HTTP front.
pub(super) type Answer = Response<Full<Bytes>>;

/// An answer with a JSON body, serialised straight from `body` (no intermediate `Value` on the
/// paths of refused and ignored requests).
pub(super) fn json_answer(status: StatusCode, body: &impl serde::Serialize) -> Answer {
    let text =
        serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"cannot write the answer"}"#.to_vec());
    let mut res = Response::new(Full::new(Bytes::from(text)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

/// Suggested wait when the queue is full.
const RETRY_AFTER_SECS: u64 = 10;

/// Why a webhook was not queued, as an answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum HookError {
    #[error("{0}")]
    NoRoute(String),
    #[error("method not allowed: webhooks are POST; /health, /metrics and /jobs/<id> are GET")]
    Method,
    #[error("body larger than max_body ({0} bytes)")]
    TooLarge(u64),
    #[error("the body took too long to arrive")]
    SlowBody,
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HookError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            HookError::NoRoute(_) => StatusCode::NOT_FOUND,
            HookError::Method => StatusCode::METHOD_NOT_ALLOWED,
            HookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            HookError::Body(_) => StatusCode::BAD_REQUEST,
            HookError::Refused(r) => StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST),
            HookError::Enqueue(EnqueueError::Full) => StatusCode::SERVICE_UNAVAILABLE,
            HookError::Enqueue(EnqueueError::Store(_)) | HookError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The `result` label of `/metrics` for this refusal.
    pub(super) fn result(&self) -> &'static str {
        match self {
            HookError::NoRoute(_) => "not_found",
            HookError::Method => "method_not_allowed",
            HookError::TooLarge(_) => "too_large",
            HookError::SlowBody => "too_slow",
            HookError::Body(_) => "bad_request",
            HookError::Refused(r) => r.result(),
            HookError::Enqueue(EnqueueError::Full) => "queue_full",
            HookError::Enqueue(EnqueueError::Store(_)) | HookError::Internal(_) => "error",
        }
    }

    /// The answer of a request refused before it reached [`hook`], counted (its provider is
    /// not known yet).
    pub(super) fn refuse(&self, app: &App) -> Answer {
        refusal_log::count(Kind::Refused(self.status().as_u16()));
        app.metrics.delivery("unknown", self.result());
        self.answer()
    }

    pub(super) fn answer(&self) -> Answer {
        #[derive(serde::Serialize)]
        struct Refused {
            error: String,
        }
        let mut res = json_answer(self.status(), &Refused { error: self.to_string() });
        if let HookError::Enqueue(EnqueueError::Full) = self {
            res.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        }
        if let HookError::TooLarge(_) | HookError::SlowBody | HookError::Refused(Refusal::Forbidden(_)) = self
        {
            // The rest of the body is not read: this connection cannot be reused.
            res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        res
    }
}

/// `queued` (202) with the new jobs, or `duplicate` (200) when the delivery was seen before
/// and no entry needs to run again; the earlier jobs are listed with their states.
pub(super) fn answer(enqueued: Enqueued) -> Answer {
    let seen: Vec<Value> = enqueued
        .seen
        .iter()
        .map(|s| {
            let mut seen = json!({ "id": s.id, "entry": s.entry, "state": s.state.as_str() });
            if let Some(newer) = s.newer {
                seen["newer_job"] = newer.into();
            }
            seen
        })
        .collect();
    if enqueued.queued.is_empty() && !enqueued.held.is_empty() {
        // Recorded, and waiting for the entry to be unfrozen.
        let jobs: Vec<Value> = enqueued
            .held
            .iter()
            .map(|(id, entry)| json!({ "id": id, "entry": entry, "state": "held" }))
            .collect();
        return json_answer(StatusCode::ACCEPTED, &json!({ "status": "held", "jobs": jobs }));
    }
    if enqueued.queued.is_empty() {
        return json_answer(StatusCode::OK, &json!({ "status": "duplicate", "jobs": seen }));
    }
    let jobs: Vec<Value> =
        enqueued.queued.iter().map(|(id, entry)| json!({ "id": id, "entry": entry })).collect();
    let mut body = json!({ "status": "queued", "jobs": jobs });
    if !enqueued.held.is_empty() {
        body["held"] = enqueued.held.iter().map(|(id, entry)| json!({ "id": id, "entry": entry })).collect();
    }
    if !seen.is_empty() {
        body["duplicate"] = Value::Array(seen);
    }
    if !enqueued.replays.is_empty() {
        body["ignored"] =
            enqueued.replays.iter().map(|(e, why)| (e.clone(), Value::from(why.as_str()))).collect();
    }
    json_answer(StatusCode::ACCEPTED, &body)
}

/// The log line of an answered delivery: the jobs queued, and those seen before.
pub(super) fn summary(enqueued: &Enqueued) -> String {
    let list = |jobs: &mut dyn Iterator<Item = String>| jobs.collect::<Vec<_>>().join(", ");
    let queued = list(&mut enqueued.queued.iter().map(|(id, entry)| format!("job {id} ({entry})")));
    let seen =
        list(&mut enqueued.seen.iter().map(|s| format!("job {} ({}, {})", s.id, s.entry, s.state.as_str())));
    if queued.is_empty() && !enqueued.held.is_empty() {
        let held = list(&mut enqueued.held.iter().map(|(id, entry)| format!("job {id} ({entry})")));
        return format!("held (entry frozen): {held}");
    }
    match (queued.is_empty(), seen.is_empty()) {
        (false, true) => format!("queued {queued}"),
        (false, false) => format!("queued {queued}; seen before: {seen}"),
        _ => format!("duplicate delivery: {seen}"),
    }
}

/// Nothing to run: a ping's `pong`, or `ignored` with the reasons.
pub(super) fn not_run(events: &[Event], reasons: &[(String, String)]) -> Answer {
    if events.iter().any(|e| e.kind == EventKind::Ping) {
        refusal_log::count(Kind::Ping);
        debug!("ping answered");
        return json_answer(StatusCode::OK, &json!({ "status": "pong" }));
    }
    ignored(events, reasons)
}

pub(super) fn ignored(events: &[Event], reasons: &[(String, String)]) -> Answer {
    refusal_log::count(Kind::Ignored);
    let reason = Why { event: events.first(), reasons };
    debug!(reason = %reason, "ignored");
    json_answer(StatusCode::OK, &Ignored { status: "ignored", reason, entries: Reasons(reasons) })
}

/// The `ignored` answer.
#[derive(serde::Serialize)]
pub(super) struct Ignored<'a> {
    status: &'static str,
    reason: Why<'a>,
    entries: Reasons<'a>,
}

/// Why a delivery is ignored, in one line: the event, then each entry's reason. Written
/// straight into the answer (no string built for it).
pub(super) struct Why<'a> {
    event: Option<&'a Event>,
    reasons: &'a [(String, String)],
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.event {
            write!(f, "{} {}", e.provider_name(), e.name())?;
            if !e.git_ref.is_empty() {
                write!(f, " {}", e.git_ref)?;
            }
        }
        if let [(entry, reason)] = self.reasons {
            return write!(f, ": entry \"{entry}\": {reason}");
        }
        f.write_str(": no entry matches (")?;
        for (i, (entry, reason)) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}entry \"{entry}\": {reason}")?;
        }
        f.write_str(")")
    }
}

impl serde::Serialize for Why<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why each entry did not match, as a JSON object (entry: reason; an entry met by several
/// events of one delivery keeps its last reason).
pub(super) struct Reasons<'a>(&'a [(String, String)]);

impl serde::Serialize for Reasons<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() <= 1 {
            return serializer.collect_map(self.0.iter().map(|(entry, reason)| (entry, reason)));
        }
        let mut seen = std::collections::HashSet::new();
        let mut last: Vec<&(String, String)> = self.0.iter().rev().filter(|(e, _)| seen.insert(e)).collect();
        last.reverse();
        serializer.collect_map(last.into_iter().map(|(entry, reason)| (entry, reason)))
    }
}
