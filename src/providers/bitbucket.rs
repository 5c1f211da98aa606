//! Bitbucket Cloud (`repo:push`, `pullrequest:*`) and Bitbucket Server / Data Center
//! (`repo:refs_changed`, `pr:*`, `diagnostics:ping`), both keyed by `X-Event-Key`. One push can
//! change several refs: each becomes its own event. Neither lists changed files.

use http::HeaderMap;
use serde_json::Value;

use super::{first_str, header, string_at, PayloadError};
use crate::event::{Commit, Event, EventKind, Provider, ZERO_SHA};

pub(super) fn parse(headers: &HeaderMap, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let key = header(headers, "x-event-key").unwrap_or_default().to_string();
    let server = json.get("eventKey").is_some() || key.starts_with("pr:") || key == "repo:refs_changed";
    let mut event = Event {
        provider: Provider::Bitbucket,
        kind: EventKind::Other,
        provider_event: key.clone(),
        action: None,
        delivery_id: None,
        repo: String::new(),
        repo_url: String::new(),
        git_ref: String::new(),
        branch: None,
        tag: None,
        before: String::new(),
        after: String::new(),
        head: None,
        pusher: String::new(),
        changed_files: Vec::new(),
        changes_complete: false,
    };
    if server {
        server_repo(
            &mut event,
            json.get("repository").or_else(|| json.pointer("/pullRequest/toRef/repository")),
        );
        event.pusher = first_str(json, &["/actor/name", "/actor/slug", "/actor/displayName"]);
    } else {
        event.repo = string_at(json, "/repository/full_name");
        if !event.repo.is_empty() {
            event.repo_url = format!("https://bitbucket.org/{}.git", event.repo);
        }
        event.pusher = first_str(json, &["/actor/nickname", "/actor/display_name", "/actor/username"]);
    }
    let missing = |field| PayloadError::Missing { provider: Provider::Bitbucket, event: key.clone(), field };

    match key.as_str() {
        "diagnostics:ping" => {
            event.kind = EventKind::Ping;
            Ok(vec![event])
        }
        "repo:push" => {
            let changes = json
                .pointer("/push/changes")
                .and_then(Value::as_array)
                .ok_or_else(|| missing("push.changes"))?;
            changes.iter().map(|c| cloud_change(&event, c)).collect()
        }
        "repo:refs_changed" => {
            let changes = json.get("changes").and_then(Value::as_array).ok_or_else(|| missing("changes"))?;
            changes.iter().map(|c| server_change(&event, json, c)).collect()
        }
        k if k.starts_with("pullrequest:") || k.starts_with("pr:") => {
            event.kind = EventKind::PullRequest;
            event.action = k.split_once(':').map(|(_, a)| a.to_string());
            let (branch, after) = if server {
                (
                    string_at(json, "/pullRequest/toRef/displayId"),
                    string_at(json, "/pullRequest/fromRef/latestCommit"),
                )
            } else {
                (
                    string_at(json, "/pullrequest/destination/branch/name"),
                    string_at(json, "/pullrequest/source/commit/hash"),
                )
            };
            if !branch.is_empty() {
                event.set_ref(&format!("refs/heads/{branch}"));
            }
            event.after = after;
            Ok(vec![event])
        }
        _ => Ok(vec![event]),
    }
}

fn server_repo(event: &mut Event, repo: Option<&Value>) {
    let Some(repo) = repo else { return };
    let project = string_at(repo, "/project/key");
    let slug = string_at(repo, "/slug");
    if !project.is_empty() && !slug.is_empty() {
        event.repo = format!("{project}/{slug}");
    }
    if let Some(clones) = repo.pointer("/links/clone").and_then(Value::as_array) {
        event.repo_url = clones
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some("http"))
            .or_else(|| clones.first())
            .map(|c| string_at(c, "/href"))
            .unwrap_or_default();
    }
}

fn ref_kind(event: &mut Event, deleted: bool) {
    event.kind = if deleted {
        EventKind::Delete
    } else if event.tag.is_some() {
        EventKind::Tag
    } else if event.branch.is_some() {
        EventKind::Push
    } else {
        EventKind::Other
    };
}

/// One entry of a Bitbucket Cloud `push.changes[]`: `old` is null on creation, `new` on deletion.
fn cloud_change(base: &Event, c: &Value) -> Result<Event, PayloadError> {
    let mut event = base.clone();
    let new = c.get("new").filter(|v| !v.is_null());
    let old = c.get("old").filter(|v| !v.is_null());
    let Some(side) = new.or(old) else {
        return Err(PayloadError::Missing {
            provider: Provider::Bitbucket,
            event: base.provider_event.clone(),
            field: "push.changes[].new",
        });
    };
    let name = string_at(side, "/name");
    match side.get("type").and_then(Value::as_str) {
        Some("tag") | Some("annotated_tag") => event.set_ref(&format!("refs/tags/{name}")),
        _ => event.set_ref(&format!("refs/heads/{name}")),
    }
    event.before = old.map(|o| string_at(o, "/target/hash")).unwrap_or_else(|| ZERO_SHA.to_string());
    event.after = new.map(|n| string_at(n, "/target/hash")).unwrap_or_else(|| ZERO_SHA.to_string());
    event.head = new.map(|n| Commit {
        id: string_at(n, "/target/hash"),
        message: string_at(n, "/target/message"),
        author: first_str(n, &["/target/author/user/display_name", "/target/author/raw"]),
    });
    let closed = c.get("closed").and_then(Value::as_bool) == Some(true);
    ref_kind(&mut event, new.is_none() || closed);
    Ok(event)
}

/// One entry of a Bitbucket Server `changes[]`: `type` is ADD, UPDATE or DELETE.
fn server_change(base: &Event, json: &Value, c: &Value) -> Result<Event, PayloadError> {
    let mut event = base.clone();
    let git_ref = first_str(c, &["/ref/id", "/refId"]);
    if git_ref.is_empty() {
        return Err(PayloadError::Missing {
            provider: Provider::Bitbucket,
            event: base.provider_event.clone(),
            field: "changes[].ref.id",
        });
    }
    event.set_ref(&git_ref);
    event.before = string_at(c, "/fromHash");
    event.after = string_at(c, "/toHash");
    let deleted = c.get("type").and_then(Value::as_str) == Some("DELETE") || event.after == ZERO_SHA;
    if !deleted {
        event.head = json
            .get("toCommit")
            .filter(|t| t.get("id").and_then(Value::as_str) == Some(event.after.as_str()))
            .map(|t| Commit {
                id: event.after.clone(),
                message: string_at(t, "/message"),
                author: first_str(t, &["/author/displayName", "/author/name"]),
            })
            .or_else(|| Some(Commit { id: event.after.clone(), ..Commit::default() }));
    }
    ref_kind(&mut event, deleted);
    Ok(event)
}
