//! `--remote URL --token-file F`: the commands that work against a remote daemon through its job
//! API (`/api/v1/`), and `--wait`, which CI uses: it follows a job to its end, printing its log
//! as it grows, and exits with the job's status (never 0 for a failure). `--commit SHA` finds
//! the job of that commit, however it was started (a webhook, usually); while there is none yet
//! it waits for one; a superseded job is followed to the newer one, whose result it takes; a
//! held one keeps it waiting. With `--remote` there is no SETTINGS file: the first name on the
//! command line is the entry.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::cli::TriggerArgs;
use crate::outbound::{Outbound, SendError};
use crate::store::JobState;

use super::{exit_status, Fail, EXIT_USAGE};

/// The exit status when `--timeout` ran out before the job ended.
const EXIT_WAITED: u8 = 2;

struct Remote {
    base: String,
    token: String,
    client: Outbound,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    fn new(args: &TriggerArgs, url: &str) -> Result<Remote, Fail> {
        let file = args
            .token_file
            .as_ref()
            .ok_or_else(|| Fail(EXIT_USAGE, "--remote needs --token-file FILE (the API token)".into()))?;
        let token = std::fs::read_to_string(file)
            .map_err(|e| Fail(EXIT_USAGE, format!("--token-file {}: {e}", file.display())))?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(Fail(EXIT_USAGE, format!("--token-file {} is empty", file.display())));
        }
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(Fail(EXIT_USAGE, format!("--remote {url:?}: an http:// or https:// URL")));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Outbound::new(None).map_err(|e| Fail(EXIT_USAGE, e))?;
        Ok(Remote { base: url.trim_end_matches('/').to_string(), token, client, runtime })
    }

    /// One API call; the answer's status and JSON (or text).
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Bytes), Fail> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("{}/api/v1/{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("wh-automata-trigger/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Fail(EXIT_USAGE, format!("--remote: {e}")))?;
        match self.runtime.block_on(self.client.send(request)) {
            Ok(reply) => Ok((reply.status.as_u16(), reply.body)),
            Err(SendError::Status { status, body }) => {
                let said: Value = serde_json::from_str(&body).unwrap_or_default();
                let why = said["error"].as_str().map_or(body.clone(), str::to_string);
                Err(Fail(EXIT_USAGE, format!("the daemon answered {status}: {why}")))
            }
            Err(e) => Err(Fail(EXIT_USAGE, format!("{}: {e}", self.base))),
        }
    }

    fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value), Fail> {
        let (status, bytes) = self.call(method, path, body)?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Fail(EXIT_USAGE, format!("not JSON from the daemon: {e}")))?;
        Ok((status, value))
    }
}

/// The commands of `--remote`.
pub(super) fn main(args: &TriggerArgs, url: &str) -> Result<u8, Fail> {
    let remote = Remote::new(args, url)?;
    // No SETTINGS with --remote: the first name given is the entry.
    let entry = args
        .entry
        .clone()
        .or_else(|| args.settings.as_ref().map(|s| s.to_string_lossy().into_owned()))
        .filter(|e| !e.is_empty());
    if args.jobs {
        return jobs(&remote, args.limit);
    }
    if let Some(id) = args.log {
        return follow(&remote, id, args, args.follow);
    }
    if let Some(name) = &args.releases {
        let (_, said) = remote.json(Method::GET, &format!("entries/{name}/releases"), None)?;
        println!("{:<12}  {:<6}  {:<24}  TRIGGER", "COMMIT", "JOB", "WHEN");
        for job in said["releases"].as_array().into_iter().flatten() {
            let commit: String =
                job["event"]["commit"].as_str().unwrap_or_default().chars().take(12).collect();
            let when = job["finished_at"].as_str().unwrap_or("-");
            let how = match job["trigger"].as_str().unwrap_or_default() {
                "webhook" => "push",
                other => other,
            };
            println!("{commit:<12}  {:<6}  {when:<24}  {how}", job["id"]);
        }
        return Ok(0);
    }
    let entry = entry.ok_or_else(|| Fail(EXIT_USAGE, "name the entry".into()))?;
    if args.freeze || args.unfreeze {
        let which = if args.freeze { "freeze" } else { "unfreeze" };
        let body = args.reason.as_ref().map(|r| json!({ "reason": r }));
        let (_, said) = remote.json(Method::POST, &format!("entries/{entry}/{which}"), body)?;
        eprintln!("{which}: {said}");
        return Ok(0);
    }
    if args.explain.is_some() || args.dry_run || args.notify_test.is_some() {
        return Err(Fail(
            EXIT_USAGE,
            "--explain, --dry-run and --notify-test run on the daemon's machine".into(),
        ));
    }
    if args.rollback {
        let body = json!({ "to": args.to, "force": args.force });
        let (_, said) = remote.json(Method::POST, &format!("entries/{entry}/rollback"), Some(body))?;
        let id =
            said["job"].as_i64().ok_or_else(|| Fail(EXIT_USAGE, format!("no job in the answer: {said}")))?;
        let to = said["to"]["commit"].as_str().unwrap_or("-");
        eprintln!("rollback job {id} to {to} queued on {}", remote.base);
        return if args.wait { follow(&remote, id, args, true) } else { Ok(0) };
    }
    if args.wait && args.commit.is_some() && args.branch.is_none() && args.tag.is_none() {
        // The job of that commit, however it was started.
        return wait_for_commit(&remote, &entry, args.commit.as_deref().unwrap_or_default(), args);
    }
    let body = json!({ "branch": args.branch, "tag": args.tag, "commit": args.commit, "force": args.force });
    let (_, said) = remote.json(Method::POST, &format!("entries/{entry}/run"), Some(body))?;
    let id = said["job"].as_i64().ok_or_else(|| Fail(EXIT_USAGE, format!("no job in the answer: {said}")))?;
    eprintln!("job {id} queued on {}", remote.base);
    if args.wait {
        return follow(&remote, id, args, true);
    }
    Ok(0)
}

fn jobs(remote: &Remote, limit: usize) -> Result<u8, Fail> {
    let (_, said) = remote.json(Method::GET, &format!("jobs?limit={}", limit.clamp(1, 200)), None)?;
    for job in said["jobs"].as_array().into_iter().flatten() {
        let commit: String = job["event"]["commit"].as_str().unwrap_or_default().chars().take(12).collect();
        println!(
            "{}  {}  {}  {}  {}  {}",
            job["id"],
            job["created_at"].as_str().unwrap_or("-"),
            job["entry"].as_str().unwrap_or_default(),
            job["trigger"].as_str().unwrap_or_default(),
            if commit.is_empty() { "-".into() } else { commit },
            job["state"].as_str().unwrap_or_default()
        );
    }
    Ok(0)
}

/// Waits for the job of `commit` (there may be none yet), then follows it.
fn wait_for_commit(remote: &Remote, entry: &str, commit: &str, args: &TriggerArgs) -> Result<u8, Fail> {
    let deadline = std::time::Instant::now() + args.timeout;
    loop {
        let (_, said) =
            remote.json(Method::GET, &format!("jobs?entry={entry}&commit={commit}&limit=1"), None)?;
        if let Some(id) = said["jobs"][0]["id"].as_i64() {
            return follow(remote, id, args, true);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "no job of {entry} for commit {commit} within {}",
                humantime::format_duration(args.timeout)
            );
            return Ok(EXIT_WAITED);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Prints job `id`'s log as it grows; with `wait`, until the job ends (a superseded job is
/// followed to the newer one). Returns the exit status of how it ended.
fn follow(remote: &Remote, first: i64, args: &TriggerArgs, wait: bool) -> Result<u8, Fail> {
    let deadline = std::time::Instant::now() + args.timeout;
    let mut id = first;
    let mut printed = 0usize;
    let mut out = std::io::stdout();
    loop {
        let (_, job) = remote.json(Method::GET, &format!("jobs/{id}?wait=1s"), None)?;
        // Only what has not been printed yet.
        let (_, log) = remote.call(Method::GET, &format!("jobs/{id}/log?from={printed}"), None)?;
        if !log.is_empty() {
            let _ = out.write_all(&log);
            let _ = out.flush();
            printed += log.len();
        }
        let state = job["state"].as_str().and_then(JobState::parse);
        let reason = job["reason"].as_str().unwrap_or_default();
        if state == Some(JobState::Superseded) {
            // "superseded by job N, ...": its result is the one that counts.
            let newer = reason
                .strip_prefix("superseded by job ")
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(newer) = newer {
                eprintln!("job {id} superseded by job {newer}: following it");
                id = newer;
                printed = 0;
                continue;
            }
        }
        match state {
            Some(state) if state.is_final() => {
                let exit_code = job["exit_code"].as_i64().map(|c| c as i32);
                let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
                eprintln!("job {id} {}{why}", state.as_str());
                return Ok(exit_status(state, exit_code));
            }
            _ if !wait => return Ok(0),
            _ if std::time::Instant::now() >= deadline => {
                let state = job["state"].as_str().unwrap_or("unknown");
                eprintln!(
                    "job {id} is still {state} after {} (--timeout){}",
                    humantime::format_duration(args.timeout),
                    if reason.is_empty() { String::new() } else { format!(": {reason}") }
                );
                return Ok(EXIT_WAITED);
            }
            _ => {}
        }
    }
}
