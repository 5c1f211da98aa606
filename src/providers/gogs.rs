//! Gogs.
//!
//! - Headers: `X-Gogs-Event` names the event (a GitHub-style `X-GitHub-Event` comes too);
//!   `X-Gogs-Delivery` is the delivery id.
//! - Signature: `X-Gogs-Signature: <bare hex HMAC-SHA256>`.
//! - Events: `push` for branches only: a tag comes only as `create` (ref_type tag), a deletion
//!   only as `delete`; `pull_request` with `base_branch`.
//! - JSON: the GitHub shape ([`super::github_shape`]); no `head_commit`, and `commits[]` newest
//!   first; `pusher.login`/`username`.

use http::HeaderMap;
use serde_json::Value;

use super::github_shape::{self, Dialect};
use super::quick;
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Event, EventKind, Provider};
use crate::secrets::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Gogs,
    detect_headers: &["x-gogs-event"],
    event_headers: &["x-gogs-event"],
    delivery_headers: &["x-gogs-delivery", "x-github-delivery"],
    authenticate,
    parse,
    infer_event: github_shape::infer_event,
    quick: Some(quick::push),
    status: |_| None,
    events: EVENTS,
    event_prefixes: &[],
    looks_like: |_| true,
};

fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    _allow_sha1: bool,
) -> Result<(), AuthError> {
    signature::bare_hex(headers, body, secret, &[("x-gogs-signature", "X-Gogs-Signature")])
}

const HOST: Dialect = Dialect {
    provider: Provider::Gogs,
    pusher: &["/pusher/login", "/pusher/username", "/sender/login"],
    ref_event: |name, ref_type| match (name, ref_type) {
        // Gogs sends no push for a tag: its create event is the tag event.
        ("create", "tag") => EventKind::Tag,
        // Nor a push for a deleted branch or tag.
        ("delete", "branch" | "tag") => EventKind::Delete,
        _ => EventKind::Other,
    },
    // Gogs sends no push beside its create and delete events.
    beside_push: |_, _| None,
};

fn parse(name: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    github_shape::parse(&HOST, name, json)
}

/// The event names the host is known to send besides the normalised kinds (`--check` warns
/// about a `match.event` outside them: most often a typo).
const EVENTS: &[&str] = &["create", "delete", "fork", "issues", "issue_comment", "release"];
