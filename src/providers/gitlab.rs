//! GitLab: `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`, or `System
//! Hook` with the same bodies), authenticated by the plain `X-Gitlab-Token`. The body's
//! `object_kind` says what it is; a zero `after` is a deletion.

use http::HeaderMap;
use serde_json::Value;

use super::{commit_files, find_commit, first_str, header, string_at, PayloadError};
use crate::event::{Commit, Event, EventKind, Provider, ZERO_SHA};

/// GitLab lists at most this many commits of a push.
const COMMIT_LIST_CAP: usize = 20;

pub(super) fn parse(headers: &HeaderMap, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let hook = header(headers, "x-gitlab-event").unwrap_or_default().to_string();
    let kind = first_str(json, &["/object_kind", "/event_name"]);
    let mut event = Event {
        provider: Provider::Gitlab,
        kind: EventKind::Other,
        provider_event: if kind.is_empty() { hook.clone() } else { kind.clone() },
        action: None,
        delivery_id: None,
        repo: first_str(json, &["/project/path_with_namespace"]),
        repo_url: first_str(json, &["/project/git_http_url", "/repository/git_http_url", "/project/web_url"]),
        git_ref: String::new(),
        branch: None,
        tag: None,
        before: String::new(),
        after: String::new(),
        head: None,
        pusher: first_str(json, &["/user_username", "/user_name", "/user/username"]),
        changed_files: Vec::new(),
        changes_complete: false,
    };
    match kind.as_str() {
        "push" | "tag_push" => {
            let missing =
                |field| PayloadError::Missing { provider: Provider::Gitlab, event: hook.clone(), field };
            let git_ref = json
                .get("ref")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
                .ok_or_else(|| missing("ref"))?;
            let after = json.get("after").and_then(Value::as_str).ok_or_else(|| missing("after"))?;
            event.set_ref(git_ref);
            event.before = string_at(json, "/before");
            event.after = after.to_string();
            let commits: &[Value] =
                json.get("commits").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            // Annotated tags: `after` is the tag object, `checkout_sha` the commit.
            let checkout = json.get("checkout_sha").and_then(Value::as_str).unwrap_or(after);
            event.head = find_commit(commits, checkout, "id")
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
            let (files, listed) = commit_files(commits);
            let total = json.get("total_commits_count").and_then(Value::as_u64);
            event.changed_files = files;
            event.changes_complete = listed
                && !commits.is_empty()
                && commits.len() < COMMIT_LIST_CAP
                && total.is_none_or(|t| t as usize == commits.len())
                && event.before != ZERO_SHA
                && after != ZERO_SHA;
            event.kind = if after == ZERO_SHA {
                EventKind::Delete
            } else if kind == "tag_push" {
                EventKind::Tag
            } else {
                EventKind::Push
            };
        }
        "merge_request" => {
            event.kind = EventKind::PullRequest;
            event.action =
                json.pointer("/object_attributes/action").and_then(Value::as_str).map(str::to_string);
            let target = string_at(json, "/object_attributes/target_branch");
            if !target.is_empty() {
                event.set_ref(&format!("refs/heads/{target}"));
            }
            event.after = string_at(json, "/object_attributes/last_commit/id");
            event.pusher = first_str(json, &["/user/username", "/user/name"]);
        }
        _ => {}
    }
    Ok(vec![event])
}
