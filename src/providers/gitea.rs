//! Gitea and Forgejo (reported as `gitea`).
//!
//! - Headers: `X-Gitea-Event` or `X-Forgejo-Event` names the event (Gogs and GitHub headers
//!   come too); `X-Gitea-Delivery` / `X-Forgejo-Delivery` is the delivery id.
//! - Signature: `X-Gitea-Signature` / `X-Forgejo-Signature` (and `X-Gogs-Signature`): bare hex
//!   HMAC-SHA256; newer versions also send `X-Hub-Signature-256`, used when those are absent.
//! - Events: tags arrive as a `push` of `refs/tags/*` plus a `create` that is not counted twice;
//!   a branch deletion comes only as `delete`; `pull_request`.
//! - JSON: the GitHub shape ([`super::github_shape`]); `commits[]` in no fixed order;
//!   `pusher.login`/`username`.

use http::HeaderMap;
use serde_json::Value;

use super::github_shape::{self, Dialect};
use super::quick;
use super::status::{commit_status_body, ApiCall, StatusApi};
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Event, EventKind, Provider};
use crate::secrets::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Gitea,
    detect_headers: &["x-forgejo-event", "x-gitea-event"],
    event_headers: &["x-gitea-event", "x-forgejo-event", "x-gogs-event"],
    delivery_headers: &["x-forgejo-delivery", "x-gitea-delivery", "x-gogs-delivery"],
    authenticate,
    parse,
    infer_event: github_shape::infer_event,
    quick: Some(quick::push),
    status: |_| Some(&STATUS),
    events: EVENTS,
    event_prefixes: &[],
    looks_like: |json| {
        json.get("total_commits").is_some() || json.pointer("/repository/internal_tracker").is_some()
    },
};

fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), AuthError> {
    let named = [
        ("x-forgejo-signature", "X-Forgejo-Signature"),
        ("x-gitea-signature", "X-Gitea-Signature"),
        ("x-gogs-signature", "X-Gogs-Signature"),
    ];
    match signature::bare_hex(headers, body, secret, &named) {
        Err(AuthError::Missing(_)) => {
            signature::hub(headers, body, secret, allow_sha1, "x-hub-signature-256")
        }
        other => other,
    }
}

const HOST: Dialect = Dialect {
    provider: Provider::Gitea,
    pusher: &["/pusher/login", "/pusher/username", "/sender/login"],
    ref_event: |name, ref_type| match (name, ref_type) {
        // No push comes for a deleted branch.
        ("delete", "branch") => EventKind::Delete,
        // A tag's create/delete duplicates a push that is already counted.
        _ => EventKind::Other,
    },
    beside_push: |name, ref_type| match (name, ref_type) {
        ("create", "tag") => Some(EventKind::Tag),
        ("create", "branch") => Some(EventKind::Push),
        ("delete", "tag") => Some(EventKind::Delete),
        _ => None,
    },
};

fn parse(name: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    // Some Forgejo and Gitea versions name a pull request's new commits by their event type
    // (`pull_request_sync`) rather than `pull_request` with `action: synchronized`.
    let name = if name == "pull_request_sync" { "pull_request" } else { name };
    github_shape::parse(&HOST, name, json)
}

/// Gitea's and Forgejo's commit status API has GitHub's shape, with its own auth header; they
/// are self-hosted (Codeberg included), so a status needs `status.api_url`.
static STATUS: StatusApi = StatusApi {
    public: None,
    words: ["pending", "pending", "success", "failure", "error"],
    request: |s, api| ApiCall {
        url: format!("{}/repos/{}/statuses/{}", s.api, s.repo, s.commit),
        headers: vec![("authorization", format!("token {}", s.token))],
        body: commit_status_body(s, api),
    },
    deployments: None,
};

/// The event names the host is known to send besides the normalised kinds (`--check` warns
/// about a `match.event` outside them: most often a typo).
const EVENTS: &[&str] = &[
    "create",
    "delete",
    "fork",
    "issues",
    "issue_assign",
    "issue_label",
    "issue_milestone",
    "issue_comment",
    "pull_request_assign",
    "pull_request_label",
    "pull_request_milestone",
    "pull_request_comment",
    "pull_request_review_approved",
    "pull_request_review_rejected",
    "pull_request_review_comment",
    "pull_request_approved",
    "pull_request_rejected",
    "pull_request_sync",
    "pull_request_review_request",
    "wiki",
    "repository",
    "release",
    "package",
    "status",
    "workflow_run",
    "workflow_job",
];
