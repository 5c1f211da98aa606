//! `ENTRY --freeze [--reason TEXT]` and `ENTRY --unfreeze`: through the running daemon (which
//! queues the job an unfreezing lets run), else in the job store, where the next start of the
//! daemon finds it.

use crate::control::{self, Reply, Request};
use crate::settings::Settings;
use crate::store::Store;

use super::{Fail, EXIT_USAGE};

/// The reason of a freeze given without `--reason`.
const BY_HAND: &str = "frozen by hand";

pub(super) fn freeze(settings: &Settings, entry: &str, reason: Option<&str>) -> Result<u8, Fail> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty()).unwrap_or(BY_HAND);
    if reason.chars().any(char::is_control) || reason.len() > 500 {
        return Err(Fail(EXIT_USAGE, "--reason: one line of at most 500 bytes".into()));
    }
    let request = Request::Freeze { entry: entry.to_string(), reason: reason.to_string() };
    let held = match ask(settings, &request)? {
        Some(Reply::Frozen { held }) => held,
        Some(other) => return Err(unexpected(other)),
        None => store(settings)?.freeze(entry, reason)?,
    };
    eprintln!("entry {entry} frozen ({reason}): its deliveries are held until --unfreeze");
    if !held.is_empty() {
        eprintln!("held now: {}", ids(&held));
    }
    Ok(0)
}

pub(super) fn unfreeze(settings: &Settings, entry: &str) -> Result<u8, Fail> {
    let request = Request::Unfreeze { entry: entry.to_string() };
    let (was_frozen, runs, superseded) = match ask(settings, &request)? {
        Some(Reply::Unfrozen { was_frozen, runs, superseded }) => (was_frozen, runs, superseded),
        Some(other) => return Err(unexpected(other)),
        None => {
            let u = store(settings)?.unfreeze(entry)?;
            (u.was_frozen, u.runs.map(|r| r.0), u.superseded)
        }
    };
    if !was_frozen {
        eprintln!("entry {entry} was not frozen");
    } else {
        eprintln!("entry {entry} unfrozen");
    }
    match runs {
        Some(id) => eprintln!("job {id}, the newest held, runs now (see --log {id})"),
        None if was_frozen => eprintln!("no held job to run"),
        None => {}
    }
    if !superseded.is_empty() {
        eprintln!("superseded: {}", ids(&superseded));
    }
    Ok(0)
}

/// The daemon's answer to `request`, or `None` when no daemon runs for these settings.
fn ask(settings: &Settings, request: &Request) -> Result<Option<Reply>, Fail> {
    let state_dir = &settings.server.state_dir;
    let stream = match control::connect(state_dir) {
        Ok(Some(stream)) => stream,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err(Fail(
                EXIT_USAGE,
                format!(
                    "cannot reach the daemon's control socket {}: {e} (run this as the daemon's user)",
                    control::socket_path(state_dir).display()
                ),
            ))
        }
    };
    let mut answer = None;
    control::exchange(stream, request, |reply| answer = Some(reply))
        .map_err(|e| format!("the connection to the daemon failed: {e}"))?;
    match answer {
        Some(Reply::Error { message }) => Err(Fail(EXIT_USAGE, message)),
        Some(reply) => Ok(Some(reply)),
        None => Err(Fail(EXIT_USAGE, "the daemon closed the connection without an answer".into())),
    }
}

fn store(settings: &Settings) -> Result<Store, Fail> {
    let dir = &settings.server.state_dir;
    Store::open(dir).map_err(|e| Fail(EXIT_USAGE, format!("{}: {e}", dir.display())))
}

fn unexpected(reply: Reply) -> Fail {
    Fail(EXIT_USAGE, format!("unexpected answer from the daemon: {reply:?}"))
}

fn ids(ids: &[i64]) -> String {
    ids.iter().map(|id| format!("job {id}")).collect::<Vec<_>>().join(", ")
}
