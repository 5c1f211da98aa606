//! GitHub: `X-GitHub-Event`, `X-Hub-Signature-256`; pushes, tags and deletions all arrive as
//! `push`, told apart by the ref and the `deleted` flag.

use http::HeaderMap;
use serde_json::Value;

use super::{commit_files, first_str, header, string_at, PayloadError};
use crate::event::{Commit, Event, EventKind, Provider, ZERO_SHA};

/// GitHub lists at most this many commits of a push; a full list may be a cut one.
const COMMIT_LIST_CAP: usize = 20;

pub(super) fn parse(headers: &HeaderMap, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let name = header(headers, "x-github-event").unwrap_or_default().to_string();
    let mut event = base(Provider::Github, &name, json);
    match name.as_str() {
        "push" => push(&mut event, json)?,
        "ping" => event.kind = EventKind::Ping,
        "pull_request" => pull_request(&mut event, json),
        _ => other(&mut event, json),
    }
    Ok(vec![event])
}

/// The fields GitHub, Gogs and Gitea share: repository and sender.
pub(super) fn base(provider: Provider, name: &str, json: &Value) -> Event {
    Event {
        provider,
        kind: EventKind::Other,
        provider_event: name.to_string(),
        action: json.get("action").and_then(Value::as_str).map(str::to_string),
        delivery_id: None,
        repo: string_at(json, "/repository/full_name"),
        repo_url: first_str(json, &["/repository/clone_url", "/repository/html_url"]),
        git_ref: String::new(),
        branch: None,
        tag: None,
        before: String::new(),
        after: String::new(),
        head: None,
        pusher: first_str(json, &["/pusher/login", "/pusher/username", "/pusher/name", "/sender/login"]),
        changed_files: Vec::new(),
        changes_complete: false,
    }
}

/// A push-shaped payload (GitHub, Gitea, Gogs): `ref`, `before`, `after`, `commits[]`.
pub(super) fn push_fields<'a>(event: &mut Event, json: &'a Value) -> Result<&'a [Value], PayloadError> {
    let missing = |field| PayloadError::Missing {
        provider: event.provider,
        event: event.provider_event.clone(),
        field,
    };
    let git_ref =
        json.get("ref").and_then(Value::as_str).filter(|r| !r.is_empty()).ok_or_else(|| missing("ref"))?;
    let after = json.get("after").and_then(Value::as_str).ok_or_else(|| missing("after"))?;
    event.set_ref(git_ref);
    event.before = string_at(json, "/before");
    event.after = after.to_string();
    let commits: &[Value] =
        json.get("commits").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let (files, listed) = commit_files(commits);
    event.changed_files = files;
    // File lists are complete only for an ordinary fast-forward whose commits were all listed.
    event.changes_complete = listed
        && !commits.is_empty()
        && commits.len() < COMMIT_LIST_CAP
        && !event.before.is_empty()
        && event.before != ZERO_SHA
        && after != ZERO_SHA
        && json.get("forced").and_then(Value::as_bool) != Some(true);
    event.kind = if after == ZERO_SHA || json.get("deleted").and_then(Value::as_bool) == Some(true) {
        EventKind::Delete
    } else if event.tag.is_some() {
        EventKind::Tag
    } else if event.branch.is_some() {
        EventKind::Push
    } else {
        EventKind::Other
    };
    Ok(commits)
}

pub(super) fn commit_of(c: &Value) -> Commit {
    Commit {
        id: string_at(c, "/id"),
        message: string_at(c, "/message"),
        author: first_str(c, &["/author/name", "/author/username"]),
    }
}

fn push(event: &mut Event, json: &Value) -> Result<(), PayloadError> {
    let commits = push_fields(event, json)?;
    event.head = match json.get("head_commit").filter(|h| !h.is_null()) {
        Some(h) => Some(commit_of(h)),
        None => super::find_commit(commits, &event.after, "id").map(commit_of),
    };
    event.pusher = first_str(json, &["/pusher/name", "/sender/login"]);
    Ok(())
}

pub(super) fn pull_request(event: &mut Event, json: &Value) {
    event.kind = EventKind::PullRequest;
    // GitHub and Gitea: base.ref / head.sha; Gogs: base_branch / head_branch.
    let base = first_str(json, &["/pull_request/base/ref", "/pull_request/base_branch"]);
    if !base.is_empty() {
        event.set_ref(&format!("refs/heads/{base}"));
    }
    event.after = first_str(json, &["/pull_request/head/sha"]);
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
    if event.action.as_deref() == Some("closed")
        && json.pointer("/pull_request/merged").and_then(Value::as_bool) == Some(true)
    {
        event.action = Some("merged".into());
    }
}

/// `create`, `delete`, `release` and the rest: the provider's own name, with what can be read.
pub(super) fn other(event: &mut Event, json: &Value) {
    // create/delete carry a short ref and its type.
    if let (Some(r), Some(kind)) =
        (json.get("ref").and_then(Value::as_str), json.get("ref_type").and_then(Value::as_str))
    {
        match kind {
            "tag" => event.set_ref(&format!("refs/tags/{r}")),
            "branch" => event.set_ref(&format!("refs/heads/{r}")),
            _ => {}
        }
        event.after = string_at(json, "/sha");
    } else if let Some(tag) = json.pointer("/release/tag_name").and_then(Value::as_str) {
        event.set_ref(&format!("refs/tags/{tag}"));
    }
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
}
