//! `poll:`: each polling entry's remote is asked for its branch's head (`git ls-remote`) at
//! start and every `every`; a head no job of the entry was ever recorded for becomes a job
//! (`WH_TRIGGER=poll`) through the same recording as a webhook's: redelivery, superseding,
//! freezing and one run per entry apply, and a webhook that comes later for the same commit is
//! a duplicate. So a commit that failed and was rolled back is not tried again and again.
//!
//! `git` runs in the entry's workdir with a time limit (`poll.timeout`), no terminal and no password prompt;
//! its failures are warnings naming the remote without its credentials, once per streak.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::app::{blocking, App};
use crate::event::{Event, EventKind, Trigger};
use crate::settings::{Entry, Poll};
use crate::store::NewJob;

/// How often the settings are looked at for polling entries (a reload may add one).
const LOOK: Duration = Duration::from_secs(1);

/// Polls until `stop` turns true.
pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut next: HashMap<String, Instant> = HashMap::new();
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        let settings = app.settings();
        let now = Instant::now();
        let polling: Vec<Arc<Entry>> =
            settings.entries.iter().filter(|e| e.poll.is_some()).cloned().collect();
        drop(settings);
        next.retain(|name, _| polling.iter().any(|e| e.name == *name));
        for entry in polling {
            let Some(poll) = entry.poll.clone() else { continue };
            let due = next.entry(entry.name.clone()).or_insert(now);
            if *due > now {
                continue;
            }
            *due = now + poll.every;
            match check(&app, &entry, &poll).await {
                Ok(()) => {
                    if failing.remove(&entry.name) {
                        info!(entry = %entry.name, remote = %poll.shown_remote(), "poll: the remote answers again");
                    }
                }
                Err(why) => {
                    if failing.insert(entry.name.clone()) {
                        warn!(entry = %entry.name, remote = %poll.shown_remote(), branch = %poll.branch, "poll: {why}");
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Asks the remote once; records a job when its head is a commit new to the entry.
async fn check(app: &Arc<App>, entry: &Arc<Entry>, poll: &Poll) -> Result<(), String> {
    let head = ls_remote(entry, poll).await?;
    let store = app.store.clone();
    let (name, sha) = (entry.name.clone(), head.clone());
    let known =
        blocking(move || store.has_commit(&name, &sha)).await.map_err(|e| format!("the job store: {e}"))?;
    if known {
        return Ok(());
    }
    let mut event = Event::manual(Some(&poll.branch), Some(&head));
    event.kind = EventKind::Push;
    event.provider_event = "poll".into();
    event.pusher = String::new();
    event.repo_url = poll.shown_remote();
    let job = NewJob { entry: entry.name.clone(), trigger: Trigger::Poll, event };
    let key = format!("poll:{}:{head}", entry.name);
    let app2 = app.clone();
    let enqueued = blocking(move || app2.enqueue(Some(&key), bytes::Bytes::new(), vec![job]))
        .await
        .map_err(|e| format!("cannot record the job: {e}"))?;
    for (id, _) in &enqueued.queued {
        info!(entry = %entry.name, job = id, commit = %head, branch = %poll.branch, "poll: a commit no job was recorded for: job queued");
    }
    for (id, _) in &enqueued.held {
        info!(entry = %entry.name, job = id, commit = %head, "poll: a new commit, held (the entry is frozen)");
    }
    Ok(())
}

/// The head of the branch on the remote, by `git ls-remote`.
async fn ls_remote(entry: &Entry, poll: &Poll) -> Result<String, String> {
    let remote = poll.remote.as_deref().unwrap_or("origin");
    let wanted = format!("refs/heads/{}", poll.branch);
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(["ls-remote", "--", remote, &wanted])
        .current_dir(&entry.workdir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .env(
            "GIT_SSH_COMMAND",
            std::env::var("GIT_SSH_COMMAND").unwrap_or_else(|_| "ssh -o BatchMode=yes".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    let group = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let out = match tokio::time::timeout(poll.timeout, child.wait_with_output()).await {
        Err(_) => {
            // git's helpers (git-remote-https, ssh) are in its process group: all of them go.
            if let Some(group) = group {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let limit = humantime::format_duration(poll.timeout);
            return Err(format!("git ls-remote took more than {limit} (poll.timeout): killed"));
        }
        Ok(Err(e)) => return Err(format!("cannot run git: {e}")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
        return Err(format!("git ls-remote failed ({}): {}", out.status, without_credentials(first, poll)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let head = text.lines().find_map(|l| {
        let (sha, name) = l.split_once('\t')?;
        (name == wanted && sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| sha.to_string())
    });
    head.ok_or_else(|| format!("the remote has no branch {:?}", poll.branch))
}

/// A line of git's that may quote the remote's URL, without the URL's credentials.
fn without_credentials(line: &str, poll: &Poll) -> String {
    let mut line = line.to_string();
    if let Some(url) = &poll.remote {
        line = line.replace(url.as_str(), &poll.shown_remote());
    }
    let userinfo = regex::Regex::new(r"://[^/@\s]*@").expect("a valid pattern");
    let line = userinfo.replace_all(&line, "://***@");
    crate::printable::shown(&line, 300)
}
