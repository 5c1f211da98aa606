//! `verify:` after a job's actions succeed: an HTTP check the daemon makes itself, or a
//! command run where the actions run (same environment, workdir, lock and umask), tried until
//! it passes or `within` runs out (and never past the job's own timeout). Each try is in the
//! job's log: the answer's status and the first bytes of its body, or the command's output.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::sync::watch;
use tokio::time::Instant;

use super::job_log::Log;
use super::runner::{run_action, ActionEnd, Step};
use crate::outbound::{Outbound, SendError};
use crate::printable::shown;
use crate::settings::{Check, Entry, Verify};

/// How a verification ended.
pub(super) enum Verified {
    Passed,
    /// It did not pass in time: why, from the last try.
    Failed(String),
    /// The job's own timeout came first.
    TimedOut,
    Cancelled,
}

/// The pause between two tries.
fn pause(within: Duration) -> Duration {
    (within / 20).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// Tries `verify` until it passes, `within` runs out, the job's `deadline` passes or `cancel`
/// turns true.
pub(super) async fn verify(
    verify: &Verify,
    entry: &Entry,
    env: &[(String, String)],
    deadline: Instant,
    cancel: &mut watch::Receiver<bool>,
    log: &mut Log,
    step: Step<'_>,
) -> Verified {
    let until = (Instant::now() + verify.within).min(deadline);
    let client = Outbound::new(None).ok();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let failed = match &verify.check {
            Check::Http { url, expect } => {
                let left = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
                let answer = match &client {
                    Some(client) => http_try(client, url, left).await,
                    None => Err("no HTTP client".to_string()),
                };
                match answer {
                    Ok((status, _)) if status == *expect => {
                        log.note(&format!("verify: {url} answered {status}: passed (try {tries})"));
                        return Verified::Passed;
                    }
                    Ok((status, body)) => format!("{url} answered {status}, not {expect}: {body}"),
                    Err(why) => format!("{url}: {why}"),
                }
            }
            Check::Run { command } => {
                log.note(&format!("verify: {command} (try {tries})"));
                match run_action(command, env, &entry.workdir, until, cancel, log, step).await {
                    ActionEnd::Exited(status) if status.success() => {
                        log.note(&format!("verify: passed (try {tries})"));
                        return Verified::Passed;
                    }
                    ActionEnd::Exited(status) => format!("{command}: {status}"),
                    ActionEnd::TimedOut => format!("{command}: still running when the time was up"),
                    ActionEnd::Cancelled => return Verified::Cancelled,
                    ActionEnd::NotStarted(why) => format!("{command} could not start: {why}"),
                }
            }
        };
        log.note(&format!("verify: {failed} (try {tries})"));
        let now = Instant::now();
        if now >= deadline {
            return Verified::TimedOut;
        }
        if now + pause(verify.within) >= until {
            let within = humantime::format_duration(verify.within);
            return Verified::Failed(format!("{failed} (after {tries} tries in {within})"));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause(verify.within)) => {}
            _ = cancel.wait_for(|stop| *stop) => return Verified::Cancelled,
        }
    }
}

/// One GET of `url`: its status and the first bytes of its body (escaped), or why there is
/// no answer.
async fn http_try(client: &Outbound, url: &str, left: Duration) -> Result<(u16, String), String> {
    let request = Request::get(url)
        .header(http::header::USER_AGENT, concat!("wh-automata/", env!("CARGO_PKG_VERSION"), " verify"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("not a URL to ask: {e}"))?;
    let start = |body: &[u8]| shown(&String::from_utf8_lossy(&body[..body.len().min(200)]), 200);
    match tokio::time::timeout(left.min(Duration::from_secs(10)), client.send(request)).await {
        Err(_) => Err("no answer in time".into()),
        Ok(Ok(reply)) => Ok((reply.status.as_u16(), start(&reply.body))),
        Ok(Err(SendError::Status { status, body })) => Ok((status.as_u16(), shown(&body, 200))),
        Ok(Err(e)) => Err(e.to_string()),
    }
}
