//! The payload shape GitHub introduced and Gogs and Gitea/Forgejo copied: `repository.full_name`,
//! `sender`, `pusher`, push fields with `head_commit`, `pull_request.base`/`head`, and the short
//! `ref` plus `ref_type` of `create`/`delete`. The three adapters read these through here; what
//! differs between the hosts (headers, signatures, which event means what) stays in their files.

use serde_json::Value;

use super::json::{find_commit, first_str, read_push, string_at};
use super::PayloadError;
use crate::event::{Commit, Event, EventKind, Provider};

/// What differs between the hosts that send this shape.
pub(super) struct Host {
    pub provider: Provider,
    /// Where a push names its pusher, first found wins.
    pub pusher: &'static [&'static str],
    /// The kind of a `create` or `delete` event (`name`) of a ref of `ref_type`.
    pub ref_event: fn(name: &str, ref_type: &str) -> EventKind,
}

/// An event of this shape named `name`.
pub(super) fn parse(host: &Host, name: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let mut event = base(host.provider, name, json);
    match name {
        "push" => {
            push(host.provider, &mut event, json)?;
            event.pusher = first_str(json, host.pusher);
        }
        "ping" => event.kind = EventKind::Ping,
        "pull_request" => pull_request(&mut event, json),
        "create" | "delete" => {
            other(&mut event, json);
            event.kind = (host.ref_event)(name, &string_at(json, "/ref_type"));
        }
        _ => other(&mut event, json),
    }
    Ok(vec![event])
}

/// The fields every event of these hosts has: action, repository and sender.
fn base(provider: Provider, name: &str, json: &Value) -> Event {
    let mut event = Event::new(provider, name);
    event.action = json.get("action").and_then(Value::as_str).map(str::to_string);
    event.repo = string_at(json, "/repository/full_name");
    event.repo_url = first_str(json, &["/repository/clone_url", "/repository/html_url"]);
    event.pusher = first_str(json, &["/pusher/login", "/pusher/username", "/pusher/name", "/sender/login"]);
    event
}

/// A push: the shared push fields, the `forced` and `deleted` flags, and the head commit
/// (`head_commit`, or found by id in `commits[]`, which Gogs lists newest first).
fn push(provider: Provider, event: &mut Event, json: &Value) -> Result<(), PayloadError> {
    let commits = read_push(provider, event, json)?;
    if json.get("forced").and_then(Value::as_bool) == Some(true) {
        event.changes_complete = false;
    }
    if json.get("deleted").and_then(Value::as_bool) == Some(true) {
        event.set_kind_from_ref(true);
    }
    event.head = match json.get("head_commit").filter(|h| !h.is_null()) {
        Some(h) => Some(commit_of(h)),
        None => find_commit(commits, &event.after).map(commit_of),
    };
    Ok(())
}

fn commit_of(c: &Value) -> Commit {
    Commit {
        id: string_at(c, "/id"),
        message: string_at(c, "/message"),
        author: first_str(c, &["/author/name", "/author/username"]),
    }
}

/// A pull request: the target branch (`base.ref`; Gogs: `base_branch`) and the head commit.
/// A `closed` action of a merged pull request is `merged`.
fn pull_request(event: &mut Event, json: &Value) {
    event.kind = EventKind::PullRequest;
    let base = first_str(json, &["/pull_request/base/ref", "/pull_request/base_branch"]);
    if !base.is_empty() {
        event.set_branch(&base);
    }
    event.after = first_str(json, &["/pull_request/head/sha"]);
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
    if event.action.as_deref() == Some("closed")
        && json.pointer("/pull_request/merged").and_then(Value::as_bool) == Some(true)
    {
        event.action = Some("merged".into());
    }
}

/// `create`, `delete`, `release` and the rest: the host's own name, with what can be read.
/// `create`/`delete` carry a short `ref` and its `ref_type`; a release its `tag_name`.
fn other(event: &mut Event, json: &Value) {
    if let (Some(r), Some(kind)) =
        (json.get("ref").and_then(Value::as_str), json.get("ref_type").and_then(Value::as_str))
    {
        match kind {
            "tag" => event.set_tag(r),
            "branch" => event.set_branch(r),
            _ => {}
        }
        event.after = string_at(json, "/sha");
    } else if let Some(tag) = json.pointer("/release/tag_name").and_then(Value::as_str) {
        event.set_tag(tag);
    }
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
}

/// The event name of a body of this shape, when the shape says it (for saved deliveries
/// without headers).
pub(super) fn infer_event(json: &Value) -> Option<String> {
    let has = |key: &str| json.get(key).is_some();
    let name = if has("zen") {
        "ping"
    } else if has("ref") && has("before") && has("after") {
        "push"
    } else if has("pull_request") {
        "pull_request"
    } else if has("release") {
        "release"
    } else {
        return None;
    };
    Some(name.to_string())
}
