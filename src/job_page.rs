//! `GET /jobs/<id>`: one job as text, the page that statuses and messages link to when
//! `server.public_url` is set: what ran, for which event, how it ended, then its log.
//! Payload values are shown as text (`text/plain`, never HTML).

use std::time::{Duration, UNIX_EPOCH};

use crate::store::Job;

fn when(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |ms| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
    })
}

/// The page of `job`, with `log` (its log file's text, as far as it was read).
pub fn render(job: &Job, log: &str) -> String {
    let e = &job.event;
    let mut out = format!("wh-automata job {}\n\n", job.id);
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push_str(&format!("{k:<10} {v}\n"));
        }
    };
    line("entry", &job.entry);
    line("state", job.state.as_str());
    line("reason", job.reason.as_deref().unwrap_or_default());
    line("exit code", &job.exit_code.map(|c| c.to_string()).unwrap_or_default());
    line("trigger", job.trigger.as_str());
    line("provider", e.provider_name());
    line("event", e.name());
    line("repo", &e.repo);
    line("ref", &e.git_ref);
    line("commit", &e.after);
    line(
        "message",
        e.head.as_ref().map(|h| h.message.lines().next().unwrap_or_default()).unwrap_or_default(),
    );
    line("pusher", &e.pusher);
    line("recorded", &when(Some(job.created_at)));
    line("started", &when(job.started_at));
    line("finished", &when(job.finished_at));
    out.push_str("\n--- log ---\n");
    out.push_str(log);
    out
}
