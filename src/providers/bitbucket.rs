//! Bitbucket Cloud and Bitbucket Server / Data Center (both reported as `bitbucket`).
//!
//! - Headers: `X-Event-Key` names the event (Cloud: `repo:push`, `pullrequest:*`; Server:
//!   `repo:refs_changed`, `pr:*`, `diagnostics:ping`); `X-Request-UUID` (Cloud) or
//!   `X-Request-Id` (Server) is the delivery id.
//! - Signature: `X-Hub-Signature: sha256=<hex HMAC>` (SHA-256 despite the name).
//! - Events: one push can change several refs: each becomes its own event. Neither lists
//!   changed files.
//! - JSON: Cloud `repository.full_name`, `push.changes[].new`/`old` (`name`, `type`,
//!   `target.hash`), `closed`; Server `repository.project.key`/`slug`, `changes[]` (`ref.id`,
//!   `fromHash`, `toHash`, `type`), `toCommit`; pull requests' target branch and head commit.

use http::HeaderMap;
use serde_json::Value;

use super::json::{first_str, string_at};
use super::status::{ApiCall, Status, StatusApi};
use super::{signature, Adapter, AuthError, PayloadError};
use crate::event::{Commit, Event, EventKind, Provider, PullRequest, ZERO_SHA};
use crate::secrets::Secret;

pub(super) const ADAPTER: Adapter = Adapter {
    provider: Provider::Bitbucket,
    detect_headers: &["x-event-key"],
    event_headers: &["x-event-key"],
    delivery_headers: &["x-request-uuid", "x-request-id"],
    authenticate,
    parse,
    infer_event,
    quick: None,
    status: |key| Some(if is_server(key) { &SERVER_STATUS } else { &CLOUD_STATUS }),
    events: EVENTS,
    event_prefixes: &["pullrequest:", "pr:"],
    looks_like: |json| {
        json.get("eventKey").is_some() || json.get("push").is_some() || json.get("pullrequest").is_some()
    },
};

fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), AuthError> {
    signature::hub(headers, body, secret, allow_sha1, "x-hub-signature")
}

fn parse(key: &str, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let key = key.to_string();
    let server = is_server(&key) || json.get("eventKey").is_some();
    let mut event = Event::new(Provider::Bitbucket, &key);
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
            if event.repo.is_empty() {
                return Err(missing("repository.full_name"));
            }
            changes.iter().map(|c| cloud_change(&event, c)).collect()
        }
        // A mirror's synchronisation changes its refs as a push to it would.
        "repo:refs_changed" | "mirror:repo_synchronized" => {
            let changes = json.get("changes").and_then(Value::as_array).ok_or_else(|| missing("changes"))?;
            if event.repo.is_empty() {
                return Err(missing("repository"));
            }
            let single = changes.len() == 1;
            changes.iter().map(|c| server_change(&event, json, c, single)).collect()
        }
        k if k.starts_with("pullrequest:") || k.starts_with("pr:") => {
            pull_request(&mut event, json, k, server);
            Ok(vec![event])
        }
        _ => Ok(vec![event]),
    }
}

/// A pull request, Cloud (`pullrequest:*`) or Server (`pr:*`): the action is the key's second
/// half, normalised (`created` is `opened`, `from_ref_updated` `updated`, `fulfilled` `merged`,
/// `rejected` and `declined` and `deleted` are `closed`).
fn pull_request(event: &mut Event, json: &Value, key: &str, server: bool) {
    event.kind = EventKind::PullRequest;
    let action = key.split_once(':').map_or("", |(_, a)| a);
    event.provider_action = Some(action.to_string());
    event.action = Some(
        match action {
            "created" => "opened",
            "from_ref_updated" => "updated",
            "fulfilled" => "merged",
            "rejected" | "declined" | "deleted" => "closed",
            other => other,
        }
        .to_string(),
    );
    let pr = if server { json.get("pullRequest") } else { json.get("pullrequest") }.unwrap_or(&Value::Null);
    let (base, head_branch, head_sha, url) = if server {
        (
            string_at(pr, "/toRef/displayId"),
            string_at(pr, "/fromRef/displayId"),
            string_at(pr, "/fromRef/latestCommit"),
            string_at(pr, "/links/self/0/href"),
        )
    } else {
        (
            string_at(pr, "/destination/branch/name"),
            string_at(pr, "/source/branch/name"),
            string_at(pr, "/source/commit/hash"),
            string_at(pr, "/links/html/href"),
        )
    };
    if !base.is_empty() {
        event.set_branch(&base);
    }
    event.after = head_sha.clone();
    event.pull_request = Some(PullRequest {
        number: pr.get("id").and_then(Value::as_u64).unwrap_or_default(),
        title: string_at(pr, "/title"),
        url,
        head_branch,
        head_sha,
        base_branch: base,
        merged: string_at(pr, "/state") == "MERGED",
    });
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
        Some("tag") | Some("annotated_tag") => event.set_tag(&name),
        _ => event.set_branch(&name),
    }
    event.before = old.map(|o| string_at(o, "/target/hash")).unwrap_or_else(|| ZERO_SHA.to_string());
    event.after = new.map(|n| string_at(n, "/target/hash")).unwrap_or_else(|| ZERO_SHA.to_string());
    event.head = new.map(|n| Commit {
        id: string_at(n, "/target/hash"),
        message: string_at(n, "/target/message"),
        author: first_str(n, &["/target/author/user/display_name", "/target/author/raw"]),
    });
    let closed = c.get("closed").and_then(Value::as_bool) == Some(true);
    event.set_kind_from_ref(new.is_none() || closed);
    Ok(event)
}

/// One entry of a Bitbucket Server `changes[]`: `type` is ADD, UPDATE or DELETE. `toCommit`
/// (an object, or only its id) is the commit of the change when it is the payload's only one:
/// for an annotated tag `toHash` is the tag object and `toCommit` the commit.
fn server_change(base: &Event, json: &Value, c: &Value, single: bool) -> Result<Event, PayloadError> {
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
    if deleted {
        event.after = ZERO_SHA.to_string();
    }
    event.set_kind_from_ref(deleted);
    if !deleted {
        let to_commit = json.get("toCommit");
        let commit_id = to_commit
            .filter(|_| single)
            .and_then(|t| t.as_str().or_else(|| t.get("id").and_then(Value::as_str)))
            .filter(|id| !id.is_empty());
        if let Some(id) = commit_id.filter(|id| *id != event.after && event.kind == EventKind::Tag) {
            event.tag_object = Some(std::mem::replace(&mut event.after, id.to_string()));
        }
        event.head = to_commit
            .filter(|t| t.get("id").and_then(Value::as_str) == Some(event.after.as_str()))
            .map(|t| Commit {
                id: event.after.clone(),
                message: string_at(t, "/message"),
                author: first_str(t, &["/author/displayName", "/author/name"]),
            })
            .or_else(|| Some(Commit { id: event.after.clone(), ..Commit::default() }));
    }
    Ok(event)
}

/// The `X-Event-Key` of a body of this shape (for saved deliveries without headers).
fn infer_event(json: &Value) -> Option<String> {
    if let Some(key) = json.get("eventKey").and_then(Value::as_str) {
        // Bitbucket Server repeats the key in the body.
        Some(key.to_string())
    } else if json.pointer("/push/changes").is_some() {
        Some("repo:push".to_string())
    } else {
        None
    }
}

/// The event keys only Bitbucket Server / Data Center sends (Cloud's are `repo:push`,
/// `pullrequest:*`, ...): the one rule that tells the two apart, for payloads and statuses.
fn is_server(key: &str) -> bool {
    ["repo:refs_changed", "repo:modified", "repo:forked", "repo:comment:", "pr:", "mirror:", "diagnostics:"]
        .iter()
        .any(|k| key.starts_with(k))
}

/// Bitbucket Cloud's build statuses (`POST /repositories/{repo}/commit/{sha}/statuses/build`).
static CLOUD_STATUS: StatusApi = StatusApi {
    public: Some(("https://bitbucket.org", "https://api.bitbucket.org/2.0")),
    words: ["INPROGRESS", "INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"],
    request: |s, api| {
        build_status(s, api, format!("{}/repositories/{}/commit/{}/statuses/build", s.api, s.repo, s.commit))
    },
    deployments: None,
};

/// Bitbucket Server's build statuses (`POST /rest/build-status/1.0/commits/{sha}`); it has no
/// word for "stopped".
static SERVER_STATUS: StatusApi = StatusApi {
    public: None,
    words: ["INPROGRESS", "INPROGRESS", "SUCCESSFUL", "FAILED", "FAILED"],
    request: |s, api| build_status(s, api, format!("{}/rest/build-status/1.0/commits/{}", s.api, s.commit)),
    deployments: None,
};

fn build_status(s: &Status, api: &StatusApi, url: String) -> ApiCall {
    // The key is at most 40 characters on Bitbucket Cloud; the URL is required.
    let key: String = s.context.chars().take(40).collect();
    let link = s.link.map(str::to_string).unwrap_or_else(|| s.repo_url.trim_end_matches(".git").into());
    let body = serde_json::json!({
        "key": key,
        "state": api.word(s.phase),
        "name": s.context,
        "url": link,
        "description": s.description,
    });
    ApiCall { url, headers: vec![("authorization", auth(s.token))], body }
}

/// Basic auth (`user:password`) or a bearer token, as Bitbucket takes either.
fn auth(token: &str) -> String {
    use base64::Engine;
    if token.contains(':') {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(token))
    } else {
        format!("Bearer {token}")
    }
}

/// The event names the host is known to send besides the normalised kinds (`--check` warns
/// about a `match.event` outside them: most often a typo).
const EVENTS: &[&str] = &[
    "repo:push",
    "repo:fork",
    "repo:updated",
    "repo:transfer",
    "repo:commit_comment_created",
    "repo:commit_status_created",
    "repo:commit_status_updated",
    "repo:refs_changed",
    "repo:modified",
    "repo:forked",
    "repo:comment:added",
    "repo:comment:edited",
    "repo:comment:deleted",
    "repo:secret_detected",
    "issue:created",
    "issue:updated",
    "issue:comment_created",
    "mirror:repo_synchronized",
    "diagnostics:ping",
    "project:modified",
];
