//! An entry's actions on other hosts, through the system's OpenSSH (`ssh`: the users' own
//! `~/.ssh/config`, agents, certificates and jump hosts keep working). One session per host per
//! job, in the rollout's order: `BatchMode`, strict host key checking against the key pinned in
//! the settings (written to a known_hosts file of its own for the connection), never a key
//! accepted on first use.
//!
//! The remote command is always the same text ([`WRAPPER`], a POSIX `sh` script) and the
//! entry's name; the environment, the actions and the payload go on its standard input, each
//! value base64 encoded, and are set there with `export "NAME=value"`: a hostile branch name is
//! data on the host as it is here. The wrapper takes a per-entry lock on the host (`flock`
//! under the user's runtime directory) and stops what an interrupted run left before it runs
//! anything. Its own lines (an action's start and end) carry a random mark sent on the input:
//! an action's output cannot pass for them.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::job_log::Log;
use super::runner::{cancelled, JobContext, Outcome};
use crate::secrets::mask::Mask;
use crate::settings::{Action, Entry, Host, HostKey};
use crate::store::HostResult;

/// The script run on each host.
const WRAPPER: &str = include_str!("remote.sh");
/// Variables of the daemon's own machine, not sent: the host has its own.
const LOCAL_ONLY: [&str; 7] = ["HOME", "PATH", "SHELL", "USER", "LOGNAME", "PWD", "TMPDIR"];

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

/// `'text'` for a POSIX shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A random mark for the wrapper's own lines.
fn nonce() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::getrandom(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
    }
    hex::encode(bytes)
}

/// The known_hosts line of a pinned key.
fn known_line(host: &Host, key: &str) -> String {
    if host.port == 22 {
        format!("{} {key}\n", host.address)
    } else {
        format!("[{}]:{} {key}\n", host.address, host.port)
    }
}

/// A known_hosts file holding only `host`'s pinned key, removed when dropped.
struct KnownHosts(PathBuf, bool);

impl KnownHosts {
    fn of(host: &Host, job: i64) -> std::io::Result<KnownHosts> {
        match &host.key {
            HostKey::File(path) => Ok(KnownHosts(path.clone(), false)),
            HostKey::Key(key) => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let path = std::env::temp_dir().join(format!(
                    "wh-automata-known-{}-{job}-{}-{}",
                    std::process::id(),
                    host.name,
                    nonce()
                ));
                let mut file =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
                file.write_all(known_line(host, key).as_bytes())?;
                Ok(KnownHosts(path, true))
            }
        }
    }
}

impl Drop for KnownHosts {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The name of the entry's lock (and files) on a host: its name, with a digest of its settings
/// file's path and of the host's name in front, so that two daemons (say staging and
/// production) that deploy an entry of the same name as the same user each have their own, and
/// two hosts of the settings that are one machine do not stop each other, while a foreground run
/// of the same settings shares the daemon's.
fn lock_name(entry: &Entry, host: &Host) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(entry.file.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    hasher.update(host.name.as_bytes());
    let digest = hasher.finalize();
    let name: String = entry
        .name
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    format!("{}-{name}", hex::encode(&digest[..6]))
}

/// The `ssh` command for `host`, running the wrapper for the entry whose lock is `lock`.
fn ssh(host: &Host, known: &KnownHosts, lock: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-T")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.0.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no"])
        .arg("-o")
        .arg(format!("ConnectTimeout={}", host.connect_timeout.as_secs().max(1)))
        .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"])
        .arg("-p")
        .arg(host.port.to_string());
    if let Some(identity) = &host.identity_file {
        cmd.arg("-i").arg(identity).args(["-o", "IdentitiesOnly=yes"]);
    }
    if let Some(jump) = &host.jump {
        cmd.arg("-J").arg(jump);
    }
    cmd.arg("--").arg(format!("{}@{}", host.user, host.address)).arg(format!(
        "sh -c {} wh-automata {}",
        quoted(WRAPPER),
        quoted(lock)
    ));
    cmd
}

/// What goes on the wrapper's standard input.
fn input(nonce: &str, env: &[(String, String)], host: &Host, actions: &[&Action], payload: &[u8]) -> Vec<u8> {
    let mut out = format!("N {nonce}\n");
    for (name, value) in env {
        if !LOCAL_ONLY.contains(&name.as_str()) && name != "WH_PAYLOAD" {
            out.push_str(&format!("E {name} {}\n", b64(value.as_bytes())));
        }
    }
    out.push_str(&format!("E WH_HOST {}\n", b64(host.name.as_bytes())));
    if let Some(dir) = &host.dir {
        out.push_str(&format!("D {}\n", b64(dir.as_bytes())));
    }
    for action in actions {
        out.push_str(&format!("A {}\n", b64(action.run.as_bytes())));
    }
    out.push_str("P\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(b64(payload).as_bytes());
    bytes.push(b'\n');
    bytes
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
    let mut child = match ssh(host, &known, &lock_name(entry, host))
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
                                    log.note(&format!("{}: action {}: {}", host.name, numbers[i - 1], actions[i - 1].run));
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

/// A host's section of a parallel rollout: a log of its own in a temporary file (stamped and
/// masked as the job's log is), removed when dropped.
struct Section {
    log: Log,
    path: PathBuf,
}

impl Section {
    fn new(job: i64, host: &str, mask: &Mask) -> Section {
        let path = std::env::temp_dir().join(format!(
            "wh-automata-section-{}-{job}-{host}-{}",
            std::process::id(),
            nonce()
        ));
        let mut log = Log::create(&path, u64::MAX).unwrap_or_else(|_| Log::new(None, u64::MAX));
        log.mask(mask.clone());
        Section { log, path }
    }

    /// What it holds, written out.
    fn text(mut self) -> Vec<u8> {
        // The log flushes what its masking holds when dropped.
        drop(std::mem::replace(&mut self.log, Log::new(None, u64::MAX)));
        std::fs::read(&self.path).unwrap_or_default()
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every future of `futures`, run at once; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
