//! Replays: a captured signed push re-sent with a fresh delivery id. The signature does not
//! cover the delivery id, so a push of commit A, sent again after B deployed, would deploy A
//! again (A, B, A) and supersede a waiting legitimate job. "An older commit never deploys after
//! a newer one" holds for them too:
//!
//! a webhook push (or tag push) is a replay when a webhook job for its commit exists for the
//! same entry and ref, and a webhook job for another commit of them was recorded after it;
//! unless the push's `before` is that newest commit (a real force-push back to an old commit is
//! sent with `before` = the ref's head, and deploys). Manual runs are never replays.
//! Both look-ups go through indexes: the newest job of the entry and ref, and the jobs of one
//! commit (not the entry's history).

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use crate::event::{EventKind, Trigger, ZERO_SHA};
use crate::store::NewJob;

/// Why `job` is a replay, if it is one (within the transaction that would record it).
pub(super) fn replay(tx: &Connection, job: &NewJob) -> Result<Option<String>, StoreError> {
    let e = &job.event;
    if job.trigger != Trigger::Webhook
        || !matches!(e.kind, EventKind::Push | EventKind::Tag)
        || e.git_ref.is_empty()
        || e.after.is_empty()
        || e.after == ZERO_SHA
    {
        return Ok(None);
    }
    let newest: Option<String> = tx
        .prepare_cached(
            "SELECT commit_sha FROM jobs INDEXED BY jobs_entry_ref
              WHERE entry = ?1 AND git_ref = ?2 AND trigger IN ('webhook', 'poll') ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![job.entry, e.git_ref], |r| r.get(0))
        .optional()?;
    let Some(newest) = newest.filter(|n| *n != e.after && !n.is_empty()) else { return Ok(None) };
    let seen_before: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM jobs INDEXED BY jobs_commit
              WHERE entry = ?1 AND git_ref = ?2 AND commit_sha = ?3 AND trigger IN ('webhook', 'poll') LIMIT 1",
        )?
        .query_row(params![job.entry, e.git_ref, e.after], |r| r.get(0))
        .optional()?;
    if seen_before.is_none() || e.before == newest {
        return Ok(None);
    }
    Ok(Some(format!(
        "replayed push: commit {} was recorded before commit {}, the newest of {}; an older commit never \
         deploys after a newer one (a force-push back to it, sent with before = {}, deploys; or run it by hand)",
        short(&e.after),
        short(&newest),
        e.git_ref,
        short(&newest)
    )))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}
