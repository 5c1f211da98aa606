//! Reading payload JSON, shared by the adapters: values by path, and the fields that every
//! push-shaped payload has (GitHub, Gogs, Gitea/Forgejo and GitLab all send `ref`, `before`,
//! `after` and `commits[]` with `added`/`modified`/`removed` lists).

use std::collections::BTreeSet;

use serde_json::Value;

use super::PayloadError;
use crate::event::{Event, Provider, ZERO_SHA};

/// GitHub and GitLab list at most this many commits of a push: a full list may be a cut one.
pub(super) const COMMIT_LIST_CAP: usize = 20;

pub(super) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

pub(super) fn string_at(v: &Value, pointer: &str) -> String {
    str_at(v, pointer).unwrap_or_default().to_string()
}

/// The first non-empty string among several paths.
pub(super) fn first_str(v: &Value, pointers: &[&str]) -> String {
    pointers.iter().find_map(|p| str_at(v, p).filter(|s| !s.is_empty())).unwrap_or_default().to_string()
}

/// The commit of `commits` whose id is `id`, whatever the order the provider lists them in.
pub(super) fn find_commit<'a>(commits: &'a [Value], id: &str) -> Option<&'a Value> {
    commits.iter().find(|c| c.get("id").and_then(Value::as_str) == Some(id))
}

/// The union of `added`, `modified` and `removed` over `commits`, sorted and deduplicated,
/// and whether every commit carried its file lists.
fn commit_files(commits: &[Value]) -> (Vec<String>, bool) {
    let mut files = BTreeSet::new();
    let mut all_listed = true;
    for c in commits {
        for key in ["added", "modified", "removed"] {
            match c.get(key).and_then(Value::as_array) {
                Some(list) => files.extend(list.iter().filter_map(Value::as_str).map(str::to_string)),
                None => all_listed = false,
            }
        }
    }
    (files.into_iter().collect(), all_listed)
}

/// Reads `ref`, `before`, `after` and `commits[]` into `event`: the ref, the kind (a zero
/// `after` is a deletion), the changed files, and whether they are complete (an ordinary
/// fast-forward whose commits were all listed, fewer than the host's cap). Returns the commits;
/// the adapter adds what its host says more (a `forced` or `deleted` flag, a commit count).
pub(super) fn read_push<'a>(
    provider: Provider,
    event: &mut Event,
    json: &'a Value,
) -> Result<&'a [Value], PayloadError> {
    let missing = |field| PayloadError::Missing { provider, event: event.provider_event.clone(), field };
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
    event.changes_complete = listed
        && !commits.is_empty()
        && commits.len() < COMMIT_LIST_CAP
        && !event.before.is_empty()
        && event.before != ZERO_SHA
        && after != ZERO_SHA;
    event.set_kind_from_ref(after == ZERO_SHA);
    Ok(commits)
}

/// Refuses a push without its repository: payloads older than any host version still in
/// service (GitHub before `repository.full_name`, GitLab before `project`) would otherwise
/// make a job with an empty repository.
pub(super) fn require_repo(
    provider: Provider,
    event: &Event,
    field: &'static str,
) -> Result<(), PayloadError> {
    if event.repo.is_empty() {
        return Err(PayloadError::Missing { provider, event: event.provider_event.clone(), field });
    }
    Ok(())
}

/// A CI run's conclusion in one vocabulary: GitLab's `failed` is `failure`, `canceled` is
/// `cancelled`; anything else as the host wrote it.
pub(super) fn ci_conclusion(word: &str) -> String {
    match word {
        "failed" => "failure",
        "canceled" => "cancelled",
        other => other,
    }
    .to_string()
}
