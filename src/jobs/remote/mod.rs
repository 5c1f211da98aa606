//! An entry's actions on other hosts, through the system's OpenSSH (`ssh`: the users' own
//! `~/.ssh/config`, agents, certificates and jump hosts keep working). One session per host per
//! job, in the rollout's order: `BatchMode`, strict host key checking against the key pinned in
//! the settings (written to a known_hosts file of its own for the connection), never a key
//! accepted on first use.
//!
//! The remote command is always the same text (`remote.sh`, a POSIX `sh` script) and the
//! name of the entry's lock on the host; the environment, the actions and the payload go on its standard input, each
//! value base64 encoded, and are set there with `export "NAME=value"`: a hostile branch name is
//! data on the host as it is here. The wrapper takes a per-entry lock on the host (`flock`
//! under the user's runtime directory) and stops what an interrupted run left before it runs
//! anything. Its own lines (an action's start and end) carry a random mark sent on the input:
//! an action's output cannot pass for them.

mod sections;
mod ssh;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::job_log::Log;
use super::runner::{cancelled, JobContext, Outcome};
use crate::secrets::mask::Mask;
use crate::settings::{Action, Entry, Host};
use crate::store::HostResult;
use sections::{join_all, Section};
use ssh::{input, lock_name, nonce, ssh, KnownHosts};

/// How one host's run ended.
enum HostEnd {
    Succeeded,
    /// Action `n` of the entry exited with `code` (none: killed, or the connection was lost).
    Failed {
        action: usize,
        code: Option<i32>,
    },
    /// No action started: the host could not be reached, refused its key, or its lock.
    Unreached(String),
    TimedOut {
        action: usize,
    },
    Cancelled {
        action: usize,
    },
}

/// The loop of a `verify: run:` on a host: the check (a variable, never this text's) tried every
/// `WH_VERIFY_EVERY` seconds until it passes or `WH_VERIFY_WITHIN` seconds have gone.
const VERIFY_LOOP: &str = r#"end=$(( $(date +%s) + WH_VERIFY_WITHIN )); n=0
while :; do
  n=$((n + 1))
  if sh -c "$WH_VERIFY_COMMAND"; then echo "verify: passed (try $n)"; exit 0; fi
  if [ "$(date +%s)" -ge "$end" ]; then echo "verify: did not pass within ${WH_VERIFY_WITHIN}s ($n tries)"; exit 1; fi
  sleep "$WH_VERIFY_EVERY"
done"#;

/// For an entry on hosts with `verify: run:`, the step that tries it on each host after its
/// actions, and the variables it reads.
pub(super) fn verify_on_hosts(entry: &Entry) -> Option<(Action, Vec<(String, String)>)> {
    let verify = entry.verify.as_ref()?;
    let crate::settings::Check::Run { command } = &verify.check else { return None };
    if entry.hosts.is_empty() {
        return None;
    }
    let every = (verify.within.as_secs() / 20).clamp(1, 2);
    let vars = vec![
        ("WH_VERIFY_COMMAND".to_string(), command.clone()),
        ("WH_VERIFY_WITHIN".to_string(), verify.within.as_secs().max(1).to_string()),
        ("WH_VERIFY_EVERY".to_string(), every.to_string()),
    ];
    Some((Action { run: VERIFY_LOOP.to_string(), if_changed: None }, vars))
}

/// Runs `actions` (numbered as in the entry by `numbers`) on `host`.
#[allow(clippy::too_many_arguments)]
async fn on_host(
    host: &Host,
    entry: &Entry,
    job_id: i64,
    env: &[(String, String)],
    actions: &[&Action],
    numbers: &[usize],
    payload: &[u8],
    deadline: Instant,
    cancel: &mut watch::Receiver<bool>,
    log: &mut Log,
) -> HostEnd {
    let known = match KnownHosts::of(host, job_id) {
        Ok(k) => k,
        Err(e) => return HostEnd::Unreached(format!("cannot write its known_hosts file: {e}")),
    };
    let mark = nonce();
    let jump_known = match host.jump.as_deref().map(|j| KnownHosts::of(j, job_id)).transpose() {
        Ok(k) => k,
        Err(e) => return HostEnd::Unreached(format!("cannot write its jump host's known_hosts file: {e}")),
    };
    let mut child = match ssh(host, &known, jump_known.as_ref(), &lock_name(entry, host))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("SSH_ASKPASS")
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return HostEnd::Unreached(format!("cannot start ssh: {e}")),
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = input(&mark, env, host, actions, payload);
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    for pipe in
        [child.stdout.take().map(either_out), child.stderr.take().map(either_err)].into_iter().flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe);
            let mut line = Vec::new();
            while lines.read_until(b'\n', &mut line).await.map(|n| n > 0).unwrap_or(false) {
                if tx.send(std::mem::take(&mut line)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let prefix = format!("wh-automata[{mark}] ");
    let mut current: Option<usize> = None;
    let mut last_status: Option<(usize, i32)> = None;
    let mut done = false;
    let mut said = Vec::new();
    let end = loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    let text = String::from_utf8_lossy(&line);
                    match text.trim_end().strip_prefix(&prefix) {
                        Some(ours) => {
                            let words: Vec<&str> = ours.split(' ').collect();
                            let n = |i: usize| words.get(i).and_then(|w| w.parse::<usize>().ok());
                            match words.first() {
                                Some(&"start") => if let Some(i) = n(1).filter(|i| (1..=numbers.len()).contains(i)) {
                                    current = Some(i);
                                    let what = if actions[i - 1].run == VERIFY_LOOP { "verify (on the host)" } else { actions[i - 1].run.as_str() };
                                    log.note(&format!("{}: action {}: {what}", host.name, numbers[i - 1]));
                                },
                                Some(&"exit") => if let (Some(i), Some(s)) = (n(1), words.get(2).and_then(|w| w.parse::<i32>().ok())) {
                                    if (1..=numbers.len()).contains(&i) {
                                        last_status = Some((i, s));
                                        let outcome = if s == 0 { "ok".to_string() } else { format!("failed: exit status {s}") };
                                        log.note(&format!("{}: action {} {outcome}", host.name, numbers[i - 1]));
                                    }
                                },
                                Some(&"done") => done = true,
                                _ => {}
                            }
                        }
                        None => {
                            if current.is_none() && said.len() < 4096 {
                                said.extend_from_slice(&line);
                            }
                            log.output(&line);
                        }
                    }
                }
                None => break None,
            },
            _ = tokio::time::sleep_until(deadline) => {
                kill(pgid, &mut child).await;
                break Some(HostEnd::TimedOut { action: current.map_or(1, |i| numbers[i - 1]) });
            }
            _ = cancelled(cancel) => {
                kill(pgid, &mut child).await;
                break Some(HostEnd::Cancelled { action: current.map_or(1, |i| numbers[i - 1]) });
            }
        }
    };
    if let Some(end) = end {
        return end;
    }
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let code = match status {
        Ok(Ok(s)) => s.code(),
        _ => {
            kill(pgid, &mut child).await;
            None
        }
    };
    if done && code == Some(0) {
        return HostEnd::Succeeded;
    }
    match (current, last_status) {
        (None, _) => {
            let why = String::from_utf8_lossy(&said).trim().replace('\n', "; ");
            let why = if why.is_empty() { format!("ssh exited {code:?}") } else { why };
            HostEnd::Unreached(why)
        }
        (Some(i), Some((j, s))) if i == j && s != 0 => {
            HostEnd::Failed { action: numbers[i - 1], code: Some(s) }
        }
        (Some(i), _) => {
            log.note(&format!(
                "{}: the connection ended during action {} (ssh exited {})",
                host.name,
                numbers[i - 1],
                code.map_or("by a signal".to_string(), |c| c.to_string())
            ));
            HostEnd::Failed { action: numbers[i - 1], code: None }
        }
    }
}

type Pipe = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

fn either_out(p: tokio::process::ChildStdout) -> Pipe {
    Box::pin(p)
}

fn either_err(p: tokio::process::ChildStderr) -> Pipe {
    Box::pin(p)
}

/// The local ssh's process group ends (the host's wrapper is then cut off; its lock and its
/// recorded group let the next run stop what it leaves).
async fn kill(pgid: Option<Pid>, child: &mut tokio::process::Child) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

/// Runs the entry's `actions` (with their numbers in the entry) on each of its hosts, in order,
/// under its `rollout:`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn rollout(
    entry: &Entry,
    job: &JobContext<'_>,
    env: &[(String, String)],
    (actions, numbers): (&[&Action], &[usize]),
    mask: &Mask,
    deadline: Instant,
    cancel: &mut watch::Receiver<bool>,
    log: &mut Log,
) -> Outcome {
    let job_id = job.id;
    let payload = job.payload.and_then(|p| std::fs::read(p).ok()).unwrap_or_default();
    // A rollback returns the hosts that the job before it moved, last first.
    let hosts: Vec<Arc<Host>> = match (job.trigger, job.store) {
        (crate::event::Trigger::Rollback, Some(store)) => {
            let moved = store.moved_hosts(&entry.name, job_id).unwrap_or(None);
            let mut hosts: Vec<Arc<Host>> = match &moved {
                Some(names) => entry.hosts.iter().filter(|h| names.contains(&h.name)).cloned().collect(),
                None => entry.hosts.clone(),
            };
            hosts.reverse();
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            log.note(&format!(
                "rollback: on the hosts the job before it moved, last first: {}",
                names.join(", ")
            ));
            hosts
        }
        _ => entry.hosts.clone(),
    };
    let hosts: &[Arc<Host>] = &hosts;
    // Each host's result, for the API and the page; a job run again starts from its first host.
    let record = |log: &mut Log,
                  position: usize,
                  host: &Host,
                  state: &str,
                  action: Option<usize>,
                  code: Option<i32>,
                  reason: Option<String>| {
        let Some(store) = job.store else { return };
        let result = HostResult {
            host: host.name.clone(),
            state: state.into(),
            action,
            exit_code: code,
            reason,
            at: 0,
        };
        if let Err(e) = store.record_host(job_id, position, &result) {
            log.note(&format!("cannot record host {}'s result: {e}", host.name));
        }
    };
    if let Some(store) = job.store {
        if let Err(e) = store.clear_hosts(job_id) {
            log.note(&format!("cannot clear the hosts' results of an earlier run: {e}"));
        }
    }
    let mut failed: Vec<&str> = Vec::new();
    let mut first_failure: Option<Outcome> = None;
    let at_once = entry.rollout.parallel.max(1);
    let header = |host: &Host, k: usize| {
        format!(
            "host {} ({}@{}:{}): {} of {}",
            host.name,
            host.user,
            host.address,
            host.port,
            k + 1,
            hosts.len()
        )
    };
    for start in (0..hosts.len()).step_by(at_once) {
        if start > 0 && !entry.rollout.wait.is_zero() {
            log.note(&format!(
                "waiting {} before the next host",
                humantime::format_duration(entry.rollout.wait)
            ));
            tokio::select! {
                _ = tokio::time::sleep(entry.rollout.wait) => {}
                _ = tokio::time::sleep_until(deadline) => return Outcome::TimedOut { action: 1 },
                _ = cancelled(cancel) => return Outcome::Cancelled { action: 1 },
            }
        }
        let batch = &hosts[start..(start + at_once).min(hosts.len())];
        let ends: Vec<HostEnd> = if batch.len() == 1 {
            log.note(&header(&batch[0], start));
            vec![
                on_host(&batch[0], entry, job_id, env, actions, numbers, &payload, deadline, cancel, log)
                    .await,
            ]
        } else {
            // At once, each host writing its own section, put in the job's log whole, in order.
            let names: Vec<&str> = batch.iter().map(|h| h.name.as_str()).collect();
            log.note(&format!("at once: {}", names.join(", ")));
            let runs = batch.iter().enumerate().map(|(i, host)| {
                let mut cancel = cancel.clone();
                let (payload, header) = (&payload, header(host, start + i));
                async move {
                    let mut section = Section::new(job_id, &host.name, mask);
                    section.log.note(&header);
                    let end = on_host(
                        host,
                        entry,
                        job_id,
                        env,
                        actions,
                        numbers,
                        payload,
                        deadline,
                        &mut cancel,
                        &mut section.log,
                    )
                    .await;
                    (end, section)
                }
            });
            let mut ends = Vec::new();
            for (end, section) in join_all(runs.collect()).await {
                log.splice(&section.text());
                ends.push(end);
            }
            ends
        };
        for (i, end) in ends.into_iter().enumerate() {
            let (k, host) = (start + i, &batch[i]);
            let outcome = match end {
                HostEnd::Succeeded => {
                    log.note(&format!("host {}: succeeded", host.name));
                    record(log, k, host, "succeeded", None, Some(0), None);
                    continue;
                }
                HostEnd::TimedOut { action } => {
                    record(log, k, host, "timed_out", Some(action), None, Some("the job's timeout".into()));
                    return Outcome::TimedOut { action };
                }
                HostEnd::Cancelled { action } => {
                    record(log, k, host, "cancelled", Some(action), None, None);
                    return Outcome::Cancelled { action };
                }
                HostEnd::Failed { action, code } => {
                    log.note(&format!("host {}: failed at action {action}", host.name));
                    record(log, k, host, "failed", Some(action), code, None);
                    Outcome::Failed { action, exit_code: code }
                }
                HostEnd::Unreached(why) => {
                    log.note(&format!("host {}: no action was seen to start: {why}", host.name));
                    record(log, k, host, "unreached", None, None, Some(why.clone()));
                    Outcome::NotStarted {
                        action: numbers.first().copied().unwrap_or(1),
                        error: format!("host {}: {why}", host.name),
                    }
                }
            };
            failed.push(&host.name);
            first_failure.get_or_insert(outcome);
        }
        if failed.len() > entry.rollout.max_fail {
            let after = start + batch.len();
            let left: Vec<&str> = hosts[after..].iter().map(|h| h.name.as_str()).collect();
            for (j, h) in hosts.iter().enumerate().skip(after) {
                record(log, j, h, "not_run", None, None, Some("the rollout stopped before it".into()));
            }
            if !left.is_empty() {
                log.note(&format!(
                    "rollout stopped: {} failed (max_fail {}); not run on {}",
                    failed.join(", "),
                    entry.rollout.max_fail,
                    left.join(", ")
                ));
            }
            return first_failure.unwrap_or(Outcome::Succeeded);
        }
    }
    if !failed.is_empty() {
        log.note(&format!("{} failed, within max_fail {}", failed.join(", "), entry.rollout.max_fail));
    }
    Outcome::Succeeded
}
