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

use super::github_shape::{self, Dialect};
use super::quick;
use super::status::{commit_status_body, ApiCall, Deployments, StatusApi};
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Event, EventKind, Provider};
use crate::secrets::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Github,
    detect_headers: &["x-github-event"],
    event_headers: &["x-github-event"],
    delivery_headers: &["x-github-delivery"],
    authenticate,
    parse,
    infer_event: github_shape::infer_event,
    quick: Some(quick::push),
    status: |_| Some(&STATUS),
    events: EVENTS,
    event_prefixes: &[],
    looks_like: |json| json.pointer("/repository/node_id").is_some() || json.get("zen").is_some(),
};

fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), AuthError> {
    signature::hub(headers, body, secret, allow_sha1, "x-hub-signature-256")
}

const HOST: Dialect = Dialect {
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

/// Commit statuses (`POST /repos/{repo}/statuses/{sha}`), or the Deployments API for an entry
/// with `deployment:`.
static STATUS: StatusApi = StatusApi {
    public: Some(("https://github.com", "https://api.github.com")),
    words: ["pending", "pending", "success", "failure", "error"],
    request: |s, api| {
        call(format!("{}/repos/{}/statuses/{}", s.api, s.repo, s.commit), s.token, commit_status_body(s, api))
    },
    deployments: Some(Deployments {
        words: ["queued", "in_progress", "success", "failure", "error"],
        create: |s, of| {
            let body = serde_json::json!({
                "ref": s.commit,
                "environment": of.environment,
                "auto_merge": false,
                "required_contexts": [],
                "description": format!("{} job {}", of.entry, of.job),
                "payload": { "job": of.job, "entry": of.entry },
            });
            call(format!("{}/repos/{}/deployments", s.api, s.repo), s.token, body)
        },
        made: |answer| {
            let made: Value = serde_json::from_slice(answer).unwrap_or_default();
            match made.get("id").and_then(Value::as_i64) {
                Some(id) => Ok(id.to_string()),
                None => Err(format!(
                    "GitHub made no deployment: {}",
                    made.get("message").and_then(Value::as_str).unwrap_or("no id in its answer")
                )),
            }
        },
        status: |s, id, environment, deployments| {
            let mut body = serde_json::json!({
                "state": deployments.word(s.phase),
                "description": s.description,
                "environment": environment,
            });
            if let Some(link) = s.link {
                body["log_url"] = link.into();
            }
            call(format!("{}/repos/{}/deployments/{id}/statuses", s.api, s.repo), s.token, body)
        },
    }),
};

/// A request to GitHub's REST API, with the media type and version it documents.
fn call(url: String, token: &str, body: Value) -> ApiCall {
    let headers = vec![
        ("authorization", format!("Bearer {token}")),
        ("accept", "application/vnd.github+json".to_string()),
        ("x-github-api-version", "2022-11-28".to_string()),
    ];
    ApiCall { url, headers, body }
}

/// The event names the host is known to send besides the normalised kinds (`--check` warns
/// about a `match.event` outside them: most often a typo).
const EVENTS: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_protection_rule",
    "deployment_review",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "installation",
    "installation_repositories",
    "issue_comment",
    "issues",
    "label",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "organization",
    "package",
    "page_build",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_dispatch",
    "repository_import",
    "secret_scanning_alert",
    "security_advisory",
    "sponsorship",
    "star",
    "status",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];
