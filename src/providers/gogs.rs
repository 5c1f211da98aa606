//! Gogs and Gitea/Forgejo: GitHub-like payloads with their own quirks. Branch deletions come
//! only as a `delete` event; Gogs sends tags only as `create`; Gitea sends tags as a `push` (plus
//! a `create` that is not counted twice); neither lists commits in a fixed order.

use http::HeaderMap;
use serde_json::Value;

use super::github::{base, commit_of, other, pull_request, push_fields};
use super::{first_str, header, string_at, PayloadError};
use crate::event::{Event, EventKind, Provider};

pub(super) fn parse(
    provider: Provider,
    headers: &HeaderMap,
    json: &Value,
) -> Result<Vec<Event>, PayloadError> {
    let name = ["x-forgejo-event", "x-gitea-event", "x-gogs-event"]
        .iter()
        .find_map(|h| header(headers, h))
        .unwrap_or_default()
        .to_string();
    let mut event = base(provider, &name, json);
    match name.as_str() {
        "push" => {
            let commits = push_fields(&mut event, json)?;
            event.head = match json.get("head_commit").filter(|h| !h.is_null()) {
                Some(h) => Some(commit_of(h)),
                // Gogs has no head_commit, and lists commits newest first: find it by id.
                None => super::find_commit(commits, &event.after, "id").map(commit_of),
            };
            event.pusher = first_str(json, &["/pusher/login", "/pusher/username", "/sender/login"]);
        }
        "pull_request" => pull_request(&mut event, json),
        "create" | "delete" => {
            other(&mut event, json);
            let ref_type = string_at(json, "/ref_type");
            event.kind = match (provider, name.as_str(), ref_type.as_str()) {
                // Gogs sends no push for a tag: its create event is the tag event.
                (Provider::Gogs, "create", "tag") => EventKind::Tag,
                // Neither sends a push for a deleted branch; Gogs none for a deleted tag either.
                (_, "delete", "branch") | (Provider::Gogs, "delete", "tag") => EventKind::Delete,
                // Gitea's tag create/delete duplicate a push that is already counted.
                _ => EventKind::Other,
            };
        }
        _ => other(&mut event, json),
    }
    Ok(vec![event])
}
