//! `--releases ENTRY`: the jobs that succeeded for a commit, newest first; and the release a
//! `--rollback [--to SHA|JOB]` goes back to.

use crate::event::Event;
use crate::printable::shown;
use crate::settings::Settings;
use crate::store::{Job, RELEASES_KEPT};

use super::jobs::when;
use super::{open_store, Fail, EXIT_USAGE};

/// How many releases are listed (pruning keeps at least [`RELEASES_KEPT`]).
const LISTED: usize = 50;

pub(super) fn list(settings: &Settings, entry: &str) -> Result<u8, Fail> {
    let Some(store) = open_store(settings)? else {
        eprintln!("no jobs recorded yet in {}", settings.server.state_dir.display());
        return Ok(0);
    };
    let releases = store.releases(entry, LISTED)?;
    if releases.is_empty() {
        eprintln!("entry {entry} has no release yet (a job that succeeded for a commit)");
        return Ok(0);
    }
    println!("{:<12}  {:<6}  {:<20}  TRIGGER", "COMMIT", "JOB", "WHEN");
    for job in &releases {
        let commit: String = job.event.after.chars().take(12).collect();
        let when = when(job.finished_at.or(Some(job.created_at)));
        println!("{:<12}  {:<6}  {:<20}  {}", shown(&commit, 12), job.id, when, how(job));
    }
    eprintln!("(the newest {RELEASES_KEPT} releases of an entry are kept however old)");
    Ok(0)
}

/// How a release was triggered, in the words of `--releases`: push, manual, rollback.
fn how(job: &Job) -> &'static str {
    match job.trigger {
        crate::event::Trigger::Webhook => "push",
        crate::event::Trigger::Manual => "manual",
        crate::event::Trigger::Rollback => "rollback",
        crate::event::Trigger::Poll => "poll",
    }
}

/// The event of a rollback of `entry`: the release `to` names (its commit or a prefix of it,
/// or its job id), else the newest release for another commit than the newest one's.
pub(super) fn rollback_event(settings: &Settings, entry: &str, to: Option<&str>) -> Result<Event, Fail> {
    let no_release = || Fail(EXIT_USAGE, format!("entry {entry} has no release to roll back to"));
    let store = open_store(settings)?.ok_or_else(no_release)?;
    let releases = store.releases(entry, LISTED)?;
    let current = releases.first().ok_or_else(no_release)?;
    let target = match to {
        Some(to) => releases
            .iter()
            .find(|j| to.parse::<i64>().is_ok_and(|id| id == j.id))
            .or_else(|| {
                let sha = to.to_ascii_lowercase();
                (sha.len() >= 4 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| releases.iter().find(|j| j.event.after.starts_with(&sha)))
                    .flatten()
            })
            .ok_or_else(|| {
                Fail(
                    EXIT_USAGE,
                    format!("{:?} is not a release of {entry} (see --releases {entry})", shown(to, 80)),
                )
            })?,
        None => releases.iter().find(|j| j.event.after != current.event.after).ok_or_else(|| {
            Fail(
                EXIT_USAGE,
                format!("entry {entry} has no earlier release than {}", short(&current.event.after)),
            )
        })?,
    };
    let mut event = target.event.clone();
    event.delivery_id = None;
    event.rollback_from = Some(current.event.after.clone()).filter(|c| *c != target.event.after);
    eprintln!("rolling {entry} back to {} (job {})", short(&event.after), target.id);
    Ok(event)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
