//! `--releases ENTRY`: the jobs that succeeded for a commit, newest first; and the release a
//! `--rollback [--to SHA|JOB]` goes back to.

use crate::event::Event;
use crate::printable::shown;
use crate::settings::Settings;
use crate::store::Job;

use super::jobs::when;
use super::{open_store, Fail, EXIT_USAGE};

/// How many releases are listed (pruning keeps `server.releases_kept`).
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
    let kept = settings.server.releases_kept;
    eprintln!("(the newest {kept} releases of an entry are kept however old: server.releases_kept)");
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

/// The event of a rollback of `entry` (see [`crate::store::Store::rollback_target`]).
pub(super) fn rollback_event(settings: &Settings, entry: &str, to: Option<&str>) -> Result<Event, Fail> {
    let none = || Fail(EXIT_USAGE, crate::store::NoRelease::None(entry.to_string()).to_string());
    let store = open_store(settings)?.ok_or_else(none)?;
    let (event, job) =
        store.rollback_target(entry, to).map_err(|e| Fail(EXIT_USAGE, shown(&e.to_string(), 300)))?;
    eprintln!(
        "the release to roll {entry} back to: {} (job {job})",
        &event.after[..event.after.len().min(12)]
    );
    Ok(event)
}
