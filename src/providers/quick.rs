//! A push read for the decision alone: most pushes a webhook daemon gets are for a branch no
//! entry deploys, and deciding that needs only the ref, the commits and the repository. This
//! reads just those (borrowed from the body, every other key skipped without being built), so
//! that an ignored push costs no full parse; when an entry may match, the caller parses the
//! payload whole, and the event it gets is the one the matcher was asked about.
//!
//! Only the GitHub shape's `push` (GitHub, Gitea/Forgejo, Gogs) is read here. Anything this
//! cannot read exactly as the full parse would (a form-encoded body, a missing field, a value
//! the full parse refuses) is left to the full parse.

use http::HeaderMap;
use serde::Deserialize;

use super::{adapter, check_values, event_name};
use crate::event::{Event, Provider, ZERO_SHA};

// Borrowed strings only: a value with an escape in it cannot be borrowed, fails this read, and
// is left to the full parse (rare in refs, hashes and repository names: Go's encoder, Gitea's
// and Gogs', escapes `<`, `>` and `&`).
#[derive(Deserialize)]
struct Push<'a> {
    #[serde(rename = "ref")]
    git_ref: Option<&'a str>,
    before: Option<&'a str>,
    after: Option<&'a str>,
    deleted: Option<bool>,
    #[serde(borrow)]
    repository: Option<Repository<'a>>,
}

#[derive(Deserialize)]
struct Repository<'a> {
    full_name: Option<&'a str>,
}

/// The event of a GitHub-shaped push with what matching needs (provider, kind, repository,
/// ref, commits), or `None` when only the full parse can say.
pub fn push(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Option<Event> {
    if !matches!(provider, Provider::Github | Provider::Gitea | Provider::Gogs)
        || event_name(headers, adapter(provider).event_headers) != "push"
        || !body.trim_ascii_start().starts_with(b"{")
    {
        return None;
    }
    let push: Push<'_> = serde_json::from_slice(body).ok()?;
    let git_ref = push.git_ref.filter(|r| !r.is_empty())?;
    let after = push.after?;
    let repo = push.repository.and_then(|r| r.full_name).filter(|r| !r.is_empty())?;
    let mut event = Event::new(provider, "push");
    event.set_ref(git_ref);
    event.repo = repo.to_owned();
    event.before = push.before.unwrap_or_default().to_owned();
    event.after = after.to_owned();
    event.set_kind_from_ref(event.after == ZERO_SHA || push.deleted == Some(true));
    check_values(&event).ok()?;
    Some(event)
}
