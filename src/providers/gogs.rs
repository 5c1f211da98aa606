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

use super::github_shape::{self, base};
use super::json::{first_str, string_at};
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Event, EventKind, Provider};
use crate::settings::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Gogs,
    detect_headers: &["x-gogs-event"],
    event_headers: &["x-gogs-event"],
    delivery_headers: &["x-gogs-delivery", "x-github-delivery"],
    authenticate,
    parse,
    infer_event: github_shape::infer_event,
};

fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    _allow_sha1: bool,
) -> Result<(), AuthError> {
    signature::bare_hex(headers, body, secret, &[("x-gogs-signature", "X-Gogs-Signature")])
}

fn parse(name: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let mut event = base(Provider::Gogs, name, json);
    match name {
        "push" => {
            github_shape::push(Provider::Gogs, &mut event, json)?;
            event.pusher = first_str(json, &["/pusher/login", "/pusher/username", "/sender/login"]);
        }
        "pull_request" => github_shape::pull_request(&mut event, json),
        "create" | "delete" => {
            github_shape::other(&mut event, json);
            event.kind = match (name, string_at(json, "/ref_type").as_str()) {
                // Gogs sends no push for a tag: its create event is the tag event.
                ("create", "tag") => EventKind::Tag,
                // Nor a push for a deleted branch or tag.
                ("delete", "branch" | "tag") => EventKind::Delete,
                _ => EventKind::Other,
            };
        }
        _ => github_shape::other(&mut event, json),
    }
    Ok(vec![event])
}
