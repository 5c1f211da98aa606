//! GitLab (project hooks and System Hooks).
//!
//! - Headers: `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`, `System
//!   Hook`, ...); the delivery id is `Idempotency-Key`, else `X-Gitlab-Webhook-UUID`, else
//!   `X-Gitlab-Event-UUID`.
//! - Authentication: `X-Gitlab-Token` holds the secret itself; GitLab does not sign the body.
//! - Events: the body's `object_kind` (System Hook pushes: `event_name`) says what it is; a zero
//!   `after` is a deletion.
//! - JSON: `ref`, `before`, `after`, `checkout_sha` (annotated tags: `after` is the tag object),
//!   `commits[]` (at most 20, with `total_commits_count`), `project.path_with_namespace`
//!   (the whole namespace path), `object_attributes` of merge requests.

use http::HeaderMap;
use serde_json::Value;

use super::json::{ci_conclusion, find_commit, first_str, read_push, require_repo, string_at};
use super::status::{segment, ApiCall, StatusApi};
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Ci, Commit, Event, EventKind, Provider, PullRequest, ZERO_SHA};
use crate::secrets::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Gitlab,
    detect_headers: &["x-gitlab-event"],
    event_headers: &["x-gitlab-event"],
    delivery_headers: &["idempotency-key", "x-gitlab-webhook-uuid", "x-gitlab-event-uuid"],
    authenticate,
    parse,
    infer_event,
    quick: None,
    status: |_| Some(&STATUS),
    events: EVENTS,
    event_prefixes: &[],
    looks_like: |json| json.get("object_kind").is_some(),
};

fn authenticate(
    headers: &HeaderMap,
    _body: &[u8],
    secret: &Secret,
    _allow_sha1: bool,
) -> Result<(), AuthError> {
    signature::token(headers, secret, "x-gitlab-token", "X-Gitlab-Token")
}

fn parse(hook: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let kind = first_str(json, &["/object_kind", "/event_name"]);
    let mut event = Event::new(Provider::Gitlab, if kind.is_empty() { hook } else { &kind });
    event.repo = first_str(json, &["/project/path_with_namespace"]);
    event.repo_url =
        first_str(json, &["/project/git_http_url", "/repository/git_http_url", "/project/web_url"]);
    event.pusher = first_str(json, &["/user_username", "/user_name", "/user/username"]);
    match kind.as_str() {
        "push" | "tag_push" => push(&mut event, json)?,
        "merge_request" => merge_request(&mut event, json),
        "pipeline" => pipeline(&mut event, json),
        _ => {}
    }
    Ok(vec![event])
}

fn push(event: &mut Event, json: &Value) -> Result<(), PayloadError> {
    let commits = read_push(Provider::Gitlab, event, json)?;
    require_repo(Provider::Gitlab, event, "project.path_with_namespace")?;
    let after = event.after.clone();
    // Annotated tags: `after` is the tag object, `checkout_sha` the commit.
    let checkout = json.get("checkout_sha").and_then(Value::as_str).unwrap_or(&after);
    event.head = find_commit(commits, checkout)
        .map(|c| Commit {
            id: string_at(c, "/id"),
            message: string_at(c, "/message"),
            author: string_at(c, "/author/name"),
        })
        .or_else(|| {
            (after != ZERO_SHA).then(|| Commit {
                id: checkout.to_string(),
                message: string_at(json, "/message"),
                author: String::new(),
            })
        });
    // The list is cut at 20 commits; the count says how many there were.
    let total = json.get("total_commits_count").and_then(Value::as_u64);
    if total.is_some_and(|t| t as usize != commits.len()) {
        event.changes_complete = false;
    }
    if event.kind == EventKind::Tag && checkout != after && !checkout.is_empty() {
        event.tag_object = Some(std::mem::replace(&mut event.after, checkout.to_string()));
    }
    Ok(())
}

/// A merge request: the target branch, the last commit, and the action normalised (`open`
/// is `opened`, `update` `updated`, `reopen` `reopened`, `close` `closed`, `merge` `merged`;
/// `approved` and the rest as GitLab writes them).
fn merge_request(event: &mut Event, json: &Value) {
    event.kind = EventKind::PullRequest;
    let attrs = json.get("object_attributes").unwrap_or(&Value::Null);
    event.provider_action = attrs.get("action").and_then(Value::as_str).map(str::to_string);
    event.action = event.provider_action.as_deref().map(|a| {
        match a {
            "open" => "opened",
            "update" => "updated",
            "reopen" => "reopened",
            "close" => "closed",
            "merge" => "merged",
            other => other,
        }
        .to_string()
    });
    let target = string_at(attrs, "/target_branch");
    if !target.is_empty() {
        event.set_branch(&target);
    }
    event.after = string_at(attrs, "/last_commit/id");
    event.pusher = first_str(json, &["/user/username", "/user/name"]);
    event.pull_request = Some(PullRequest {
        number: attrs.get("iid").and_then(Value::as_u64).unwrap_or_default(),
        title: string_at(attrs, "/title"),
        url: string_at(attrs, "/url"),
        head_branch: string_at(attrs, "/source_branch"),
        head_sha: event.after.clone(),
        base_branch: target,
        merged: string_at(attrs, "/state") == "merged",
    });
}

/// A pipeline: once it finished (success, failed, canceled, skipped), a `ci` event on its
/// branch or tag for the commit it ran on; before that, GitLab's own `pipeline`.
fn pipeline(event: &mut Event, json: &Value) {
    let attrs = json.get("object_attributes").unwrap_or(&Value::Null);
    let name = string_at(attrs, "/ref");
    // A pipeline for a merge request from a fork runs the fork's branch: not one of this project.
    let mr = json.get("merge_request").filter(|m| !m.is_null());
    let from_fork = mr.is_some_and(|m| m.get("source_project_id") != m.get("target_project_id"));
    if !name.is_empty() && !from_fork {
        if attrs.get("tag").and_then(Value::as_bool) == Some(true) {
            event.set_tag(&name);
        } else {
            event.set_branch(&name);
        }
    }
    event.before = string_at(attrs, "/before_sha");
    event.after = string_at(attrs, "/sha");
    event.head = json.get("commit").filter(|c| !c.is_null()).map(|c| Commit {
        id: string_at(c, "/id"),
        message: string_at(c, "/message"),
        author: string_at(c, "/author/name"),
    });
    let status = string_at(attrs, "/status");
    let finished = matches!(status.as_str(), "success" | "failed" | "canceled" | "skipped");
    if finished {
        event.kind = EventKind::Ci;
    }
    event.ci = Some(Ci {
        workflow: string_at(attrs, "/name"),
        conclusion: finished.then(|| ci_conclusion(&status)),
        status,
        url: string_at(attrs, "/url"),
    });
}

/// The `X-Gitlab-Event` of a body of this shape (for saved deliveries without headers).
fn infer_event(json: &Value) -> Option<String> {
    let name = match json.get("object_kind").and_then(Value::as_str)? {
        "push" => "Push Hook",
        "tag_push" => "Tag Push Hook",
        "merge_request" => "Merge Request Hook",
        "note" => "Note Hook",
        "issue" => "Issue Hook",
        "pipeline" => "Pipeline Hook",
        "build" => "Job Hook",
        "release" => "Release Hook",
        _ => return None,
    };
    Some(name.to_string())
}

/// Commit statuses, with the ref and the name (`POST /projects/{path}/statuses/{sha}`).
static STATUS: StatusApi = StatusApi {
    public: Some(("https://gitlab.com", "https://gitlab.com/api/v4")),
    words: ["pending", "running", "success", "failed", "canceled"],
    request: |s, api| {
        let mut body = serde_json::json!({
            "state": api.word(s.phase),
            "ref": s.git_ref,
            "name": s.context,
            "description": s.description,
        });
        if let Some(link) = s.link {
            body["target_url"] = link.into();
        }
        ApiCall {
            url: format!("{}/projects/{}/statuses/{}", s.api, segment(s.repo), s.commit),
            headers: vec![("private-token", s.token.to_string())],
            body,
        }
    },
    deployments: None,
};

/// The event names the host is known to send besides the normalised kinds (`--check` warns
/// about a `match.event` outside them: most often a typo).
const EVENTS: &[&str] = &[
    "tag_push",
    "merge_request",
    "issue",
    "note",
    "pipeline",
    "build",
    "wiki_page",
    "deployment",
    "feature_flag",
    "release",
    "emoji",
    "access_token",
    "member",
    "subgroup",
    "project",
    "vulnerability",
];
