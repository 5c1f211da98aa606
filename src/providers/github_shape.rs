//! The payload shape GitHub introduced and Gogs and Gitea/Forgejo copied: `repository.full_name`,
//! `sender`, `pusher`, push fields with `head_commit`, `pull_request.base`/`head`, and the short
//! `ref` plus `ref_type` of `create`/`delete`. The three adapters read these through here; what
//! differs between the hosts (headers, signatures, which event means what) stays in their files.

use serde_json::Value;

use super::json::{ci_conclusion, find_commit, first_str, read_push, require_repo, string_at};
use super::PayloadError;
use crate::event::{Ci, Commit, Event, EventKind, Provider, PullRequest, ZERO_SHA};

/// What differs between the hosts that send this shape.
pub(super) struct Dialect {
    pub provider: Provider,
    /// Where a push names its pusher, first found wins.
    pub pusher: &'static [&'static str],
    /// The kind of a `create` or `delete` event (`name`) of a ref of `ref_type`.
    pub ref_event: fn(name: &str, ref_type: &str) -> EventKind,
    /// For a `create` or `delete` event that the host sends beside a push of the same change:
    /// the kind of that push.
    pub beside_push: fn(name: &str, ref_type: &str) -> Option<EventKind>,
}

/// An event of this shape named `name`.
pub(super) fn parse(host: &Dialect, name: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let mut event = base(host.provider, name, json);
    match name {
        "push" => {
            push(host.provider, &mut event, json)?;
            event.pusher = first_str(json, host.pusher);
        }
        "ping" => event.kind = EventKind::Ping,
        "pull_request" => pull_request(&mut event, json),
        "workflow_run" => workflow_run(&mut event, json),
        "merge_group" => merge_group(&mut event, json),
        "create" | "delete" => {
            other(&mut event, json);
            let ref_type = string_at(json, "/ref_type");
            event.kind = (host.ref_event)(name, &ref_type);
            event.beside_push = (host.beside_push)(name, &ref_type);
            if name == "delete" {
                // A deletion's `after` is forty zeros on every host.
                event.after = ZERO_SHA.to_string();
            }
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
    require_repo(provider, event, "repository.full_name")?;
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
    // An annotated tag: `after` is the tag object, `head_commit` the commit it points at.
    if let Some(head) = &event.head {
        if event.kind == EventKind::Tag && !head.id.is_empty() && head.id != event.after {
            event.tag_object = Some(std::mem::replace(&mut event.after, head.id.clone()));
        }
    }
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
/// Actions are normalised: `synchronize` (GitHub) and `synchronized` (Gitea, Gogs) are
/// `updated`, a `closed` of a merged pull request is `merged`.
fn pull_request(event: &mut Event, json: &Value) {
    event.kind = EventKind::PullRequest;
    let pr = json.get("pull_request").unwrap_or(&Value::Null);
    let base = first_str(pr, &["/base/ref", "/base_branch"]);
    if !base.is_empty() {
        event.set_branch(&base);
    }
    event.after = first_str(pr, &["/head/sha"]);
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
    let merged = pr.get("merged").and_then(Value::as_bool) == Some(true);
    event.provider_action = event.action.clone();
    event.action = event.action.take().map(|a| {
        match a.as_str() {
            "synchronize" | "synchronized" => "updated",
            "closed" if merged => "merged",
            other => other,
        }
        .to_string()
    });
    event.pull_request = Some(PullRequest {
        number: pr.get("number").and_then(Value::as_u64).unwrap_or_default(),
        title: string_at(pr, "/title"),
        url: string_at(pr, "/html_url"),
        head_branch: first_str(pr, &["/head/ref", "/head_branch"]),
        head_sha: event.after.clone(),
        base_branch: base,
        merged,
    });
}

/// A CI run (GitHub, and Gitea/Forgejo since they send it): a finished run is a `ci` event on
/// the branch it ran on (none for a fork's), for the commit it tested; one still requested or
/// running keeps the host's name. Finished means the delivery of its `completed` action: a run
/// waiting for approval is sent as `requested` with the status `completed` (conclusion
/// `action_required`), and its real end comes later, so it is not one. A payload without an
/// action (an older Gitea) is read from the run's status.
fn workflow_run(event: &mut Event, json: &Value) {
    let run = json.get("workflow_run").unwrap_or(&Value::Null);
    let branch = string_at(run, "/head_branch");
    // A run for a pull request from a fork names the fork's branch: not a branch of this
    // repository (a fork's `main` must never pass for this one's).
    let head_repo = string_at(run, "/head_repository/full_name");
    let from_fork = !head_repo.is_empty() && head_repo != event.repo;
    if !branch.is_empty() && !from_fork {
        event.set_branch(&branch);
    }
    event.after = string_at(run, "/head_sha");
    event.head = run.get("head_commit").filter(|h| !h.is_null()).map(commit_of);
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
    let status = string_at(run, "/status");
    let finished = event.action.as_deref().map_or(status == "completed", |a| a == "completed");
    let conclusion = finished.then(|| ci_conclusion(&string_at(run, "/conclusion")));
    if conclusion.is_some() {
        event.kind = EventKind::Ci;
    }
    event.ci = Some(Ci {
        workflow: first_str(json, &["/workflow_run/name", "/workflow/name"]),
        conclusion,
        status,
        url: string_at(run, "/html_url"),
    });
}

/// GitHub's merge queue asking for checks: the target branch, and the commit the queue made.
fn merge_group(event: &mut Event, json: &Value) {
    let group = json.get("merge_group").unwrap_or(&Value::Null);
    let base = string_at(group, "/base_ref");
    if let Some(branch) = base.strip_prefix("refs/heads/") {
        event.set_branch(branch);
    }
    event.before = string_at(group, "/base_sha");
    event.after = string_at(group, "/head_sha");
    event.head = group.get("head_commit").filter(|h| !h.is_null()).map(commit_of);
    event.pusher = first_str(json, &["/sender/login", "/sender/username"]);
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
