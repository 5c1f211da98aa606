//! GitHub (and GitHub Enterprise Server, and GitHub App deliveries).
//!
//! - Headers: `X-GitHub-Event` names the event; `X-GitHub-Delivery` is the delivery id.
//! - Signature: `X-Hub-Signature-256: sha256=<hex HMAC>`; the legacy SHA-1 `X-Hub-Signature`
//!   only for entries with `allow_sha1`.
//! - Events: pushes, tags and deletions all arrive as `push`, told apart by the ref and the
//!   `deleted` flag; `create` beside a tag push is not counted twice; `ping`; `pull_request`.
//! - JSON: `ref`, `before`, `after`, `commits[]`, `head_commit`, `pusher.name`,
//!   `repository.full_name`/`clone_url`, `pull_request.base.ref`/`head.sha`.

use http::HeaderMap;
use serde_json::Value;

use super::github_shape::{self, Host};
use super::quick;
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Event, EventKind, Provider};
use crate::settings::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Github,
    detect_headers: &["x-github-event"],
    event_headers: &["x-github-event"],
    delivery_headers: &["x-github-delivery"],
    authenticate,
    parse,
    infer_event: github_shape::infer_event,
    quick: Some(quick::push),
};

fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), AuthError> {
    signature::hub(headers, body, secret, allow_sha1, "x-hub-signature-256")
}

const HOST: Host = Host {
    provider: Provider::Github,
    pusher: &["/pusher/name", "/sender/login"],
    // A tag's `create` comes beside its push, which is the one counted.
    ref_event: |_, _| EventKind::Other,
    beside_push: |name, ref_type| match (name, ref_type) {
        ("create", "tag") => Some(EventKind::Tag),
        ("create", "branch") => Some(EventKind::Push),
        ("delete", _) => Some(EventKind::Delete),
        _ => None,
    },
};

fn parse(name: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    github_shape::parse(&HOST, name, json)
}
