//! Runs one job: an entry's actions, in order, each with `sh -c` in the entry's `workdir`.
//!
//! Payload values reach the actions only as environment variables (and the raw body as a file
//! named by `WH_PAYLOAD`), never spliced into a command. Actions get a small, explicit
//! environment, not the daemon's (which may hold every entry's secret). Each action runs in its
//! own process group, so a timeout or a shutdown kills everything it started: TERM, then KILL
//! after a grace period. Output goes to the job log with timestamps, bounded in size. Which job
//! runs when is the queue's business; recording the outcome is the caller's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::verify::Verified;
use crate::env_file::{self, EnvFile};
use crate::event::{Event, PullRequest, Trigger};
use crate::jobs::action_records::{ActionRecords, WRAPPER};
pub use crate::jobs::job_log::Log;
use crate::settings::{Action, Entry};

/// Variables passed through from the daemon's environment when set.
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "TZ"];

/// How long a process group gets between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Action `action` (1-based) exited non-zero (or was killed by a signal: no code).
    Failed {
        action: usize,
        exit_code: Option<i32>,
    },
    TimedOut {
        action: usize,
    },
    Cancelled {
        action: usize,
    },
    /// Action `action` could not be started (missing workdir, no `sh`).
    NotStarted {
        action: usize,
        error: String,
    },
    /// The entry's `env_file` could not be read: no action ran.
    NoEnvFile {
        error: String,
    },
    /// The actions succeeded and `verify:` did not pass in time.
    VerifyFailed {
        why: String,
    },
}

impl Outcome {
    /// The exit code of the action that ended the job: 0 on success, none when it was killed
    /// or never started.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Succeeded => Some(0),
            Outcome::Failed { exit_code, .. } => *exit_code,
            Outcome::TimedOut { .. }
            | Outcome::Cancelled { .. }
            | Outcome::NotStarted { .. }
            | Outcome::NoEnvFile { .. }
            | Outcome::VerifyFailed { .. } => None,
        }
    }

    /// A one-line explanation for the job record.
    pub fn reason(&self, timeout: Duration) -> Option<String> {
        match self {
            Outcome::Succeeded => None,
            Outcome::Failed { action, exit_code: Some(c) } => {
                Some(format!("action {action} exited with {c}"))
            }
            Outcome::Failed { action, exit_code: None } => {
                Some(format!("action {action} was killed by a signal"))
            }
            Outcome::TimedOut { action } => Some(format!(
                "timed out after {} during action {action}",
                humantime::format_duration(timeout)
            )),
            Outcome::Cancelled { action } => {
                Some(format!("cancelled during action {action}: wh-automata was stopping"))
            }
            Outcome::NotStarted { action, error } => {
                Some(format!("action {action} could not start: {error}"))
            }
            Outcome::NoEnvFile { error } => Some(format!("env_file cannot be read: {error}")),
            Outcome::VerifyFailed { why } => Some(format!("verify failed: {why}")),
        }
    }
}

/// What a job needs besides its entry.
pub struct JobContext<'a> {
    pub id: i64,
    pub trigger: Trigger,
    pub event: &'a Event,
    pub payload: Option<&'a Path>,
    /// Where the actions' process groups and ends are recorded (the daemon's jobs).
    pub steps: Option<&'a ActionRecords>,
    /// The entry's lock, held for the job: each action's standard input, so that its processes
    /// hold the entry too ([`crate::jobs::entry_lock`]).
    pub lock: Option<&'a crate::jobs::entry_lock::EntryLock>,
    /// The job store, where each host's result goes (a job deployed to hosts).
    pub store: Option<&'a crate::store::Store>,
}

/// The secrets a job of `entry` masks: the ones its settings know, and the values of the
/// `env_file` variables (`from_file`) it lists in `secret_env`.
pub fn secrets(entry: &Entry, from_file: &[(String, String)]) -> crate::secrets::mask::Mask {
    entry.mask.with(from_file.iter().filter(|(k, _)| entry.secret_env.contains(k)).map(|(_, v)| v))
}

/// The variables of the entry's `env_file`, read now (when a job starts), with the problems
/// of its lines; `Err` when it cannot be read at all. A `WH_*` name in it is a problem: those
/// are the event's.
pub fn env_file(entry: &Entry) -> Result<EnvFile, String> {
    let Some(path) = &entry.env_file else { return Ok(EnvFile::default()) };
    let mut file = env_file::read(&entry.workdir.join(path))?;
    let (wh, vars): (Vec<_>, Vec<_>) = file.vars.into_iter().partition(|(k, _)| k.starts_with("WH_"));
    file.vars = vars;
    file.problems
        .extend(wh.into_iter().map(|(k, _)| format!("{k}: WH_* variables are the event's, not set here")));
    Ok(file)
}

/// The environment of an action: the base variables, `inherit_env`, `WH_*`, the variables of
/// `env_file`, then the entry's `env:`. NUL bytes, which no environment can hold, are dropped
/// from payload values.
pub fn environment(
    entry: &Entry,
    job: &JobContext<'_>,
    from_file: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for name in BASE_ENV.iter().copied().chain(entry.inherit_env.iter().map(String::as_str)) {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_string(), value));
        }
    }
    let e = job.event;
    let head = e.head.as_ref();
    let (changed, all_listed) = changed_files(&e.changed_files);
    let pr = e.pull_request.as_ref();
    let pr_field = |f: fn(&PullRequest) -> String| pr.map(f).unwrap_or_default();
    let ci = e.ci.as_ref();
    let wh = [
        ("WH_ENTRY", entry.name.clone()),
        ("WH_JOB_ID", job.id.to_string()),
        ("WH_TRIGGER", job.trigger.as_str().to_string()),
        ("WH_PROVIDER", e.provider_name().to_string()),
        ("WH_EVENT", e.name().to_string()),
        ("WH_DELIVERY_ID", e.delivery_id.clone().unwrap_or_default()),
        ("WH_REPO", e.repo.clone()),
        ("WH_REPO_URL", e.repo_url.clone()),
        ("WH_REF", e.git_ref.clone()),
        ("WH_BRANCH", e.branch.clone().unwrap_or_default()),
        ("WH_TAG", e.tag.clone().unwrap_or_default()),
        ("WH_BEFORE", e.before.clone()),
        ("WH_AFTER", e.after.clone()),
        ("WH_TAG_OBJECT", e.tag_object.clone().unwrap_or_default()),
        ("WH_COMMIT_MESSAGE", head.map(|h| h.message.clone()).unwrap_or_default()),
        ("WH_PUSHER", e.pusher.clone()),
        ("WH_CHANGED_FILES", changed),
        ("WH_CHANGES_COMPLETE", if e.changes_complete && all_listed { "1" } else { "0" }.to_string()),
        ("WH_PAYLOAD", job.payload.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()),
        ("WH_PR_NUMBER", pr_field(|p| p.number.to_string())),
        ("WH_PR_ACTION", pr.and(e.action.clone()).unwrap_or_default()),
        ("WH_PR_TITLE", pr_field(|p| p.title.clone())),
        ("WH_PR_URL", pr_field(|p| p.url.clone())),
        ("WH_PR_HEAD_BRANCH", pr_field(|p| p.head_branch.clone())),
        ("WH_PR_HEAD_SHA", pr_field(|p| p.head_sha.clone())),
        ("WH_PR_BASE_BRANCH", pr_field(|p| p.base_branch.clone())),
        ("WH_PR_MERGED", pr_field(|p| if p.merged { "1" } else { "0" }.to_string())),
        ("WH_CI_WORKFLOW", ci.map(|c| c.workflow.clone()).unwrap_or_default()),
        ("WH_CI_CONCLUSION", ci.and_then(|c| c.conclusion.clone()).unwrap_or_default()),
        ("WH_CI_URL", ci.map(|c| c.url.clone()).unwrap_or_default()),
        ("WH_ROLLBACK_FROM", e.rollback_from.clone().unwrap_or_default()),
    ];
    let mut cut = Vec::new();
    for (name, value) in wh {
        let mut value = value.replace('\0', "");
        if name == "WH_CHANGED_FILES" && !all_listed {
            cut.push(name);
        } else if value.len() > MAX_VALUE {
            value.truncate(floor_char_boundary(&value, MAX_VALUE));
            cut.push(name);
        }
        env.push((name.to_string(), value));
    }
    // Which values were cut to fit the environment; the whole payload is in $WH_PAYLOAD.
    env.push(("WH_TRUNCATED".to_string(), cut.join(" ")));
    env.extend(from_file.iter().cloned());
    env.extend(entry.env.iter().cloned());
    env
}

/// The longest value of a `WH_*` variable: the kernel refuses a variable over 128 KiB (and all
/// of them together over about 2 MiB) with "Argument list too long", and every action fails.
pub const MAX_VALUE: usize = 32 * 1024;

/// The most of `WH_CHANGED_FILES`.
pub const MAX_CHANGED_FILES: usize = 64 * 1024;

/// The changed files, one a line, as many whole names as fit; and whether all of them did.
fn changed_files(files: &[String]) -> (String, bool) {
    let mut out = String::new();
    for f in files {
        let f: String = f.chars().filter(|c| *c != '\0').collect();
        if out.len() + f.len() + 1 > MAX_CHANGED_FILES {
            return (out, false);
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&f);
    }
    (out, true)
}

/// The largest index at most `max` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len())).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0)
}

/// Runs the entry's actions for one job. Stops at the first failure, at the job's timeout
/// (counted from the start of the job), or when `cancel` turns true.
pub async fn run(
    entry: &Entry,
    job: &JobContext<'_>,
    log: &mut Log,
    cancel: &mut watch::Receiver<bool>,
) -> Outcome {
    let deadline = Instant::now() + entry.timeout;
    let e = job.event;
    log.mask(entry.mask.clone());
    log.note(&format!(
        "job {} entry {} trigger {} event {} ref {} commit {}",
        job.id,
        entry.name,
        job.trigger.as_str(),
        e.name(),
        if e.git_ref.is_empty() { "-" } else { &e.git_ref },
        if e.after.is_empty() { "-" } else { &e.after },
    ));
    let (from_file, mask) = match env_file(entry) {
        Ok(file) => {
            for problem in &file.problems {
                log.note(&format!("env_file: {problem} (skipped)"));
            }
            let mask = secrets(entry, &file.vars);
            log.mask(mask.clone());
            (file.vars, mask)
        }
        Err(error) => {
            log.note(&format!("env_file cannot be read: {error}; no action runs"));
            return Outcome::NoEnvFile { error };
        }
    };
    let env = environment(entry, job, &from_file);
    // A rollback runs the entry's `rollback:` commands when it has them, and every action.
    let actions = match (job.trigger, &entry.rollback_actions) {
        (Trigger::Rollback, Some(rollback)) => rollback,
        _ => &entry.actions,
    };
    if !entry.hosts.is_empty() {
        let mut chosen: Vec<&Action> = Vec::new();
        let mut numbers = Vec::new();
        for (i, action) in actions.iter().enumerate() {
            match skip_reason(action, e).filter(|_| job.trigger != Trigger::Rollback) {
                Some(why) => log.note(&format!("skip action {}: {why}", i + 1)),
                None => {
                    chosen.push(action);
                    numbers.push(i + 1);
                }
            }
        }
        // A `verify: run:` is tried on each host, after its actions.
        let on_hosts = super::remote::verify_on_hosts(entry);
        let mut env = env.clone();
        if let Some((action, vars)) = &on_hosts {
            chosen.push(action);
            numbers.push(actions.len() + 1);
            env.extend(vars.iter().cloned());
        }
        let outcome =
            super::remote::rollout(entry, job, &env, (&chosen, &numbers), &mask, deadline, cancel, log).await;
        match outcome {
            Outcome::Succeeded => {}
            Outcome::Failed { action, .. } if on_hosts.is_some() && action == actions.len() + 1 => {
                let why = "the check did not pass on a host within verify.within".to_string();
                log.note(&format!("verify failed: {why}"));
                return Outcome::VerifyFailed { why };
            }
            other => return other,
        }
    }
    for (i, action) in actions.iter().enumerate().filter(|_| entry.hosts.is_empty()) {
        let n = i + 1;
        if let Some(why) = skip_reason(action, e).filter(|_| job.trigger != Trigger::Rollback) {
            log.note(&format!("skip action {n}: {why}"));
            if let Some(Err(e)) = job.steps.map(|s| s.skipped(n)) {
                log.note(&format!("cannot record the skip of action {n}: {e}"));
            }
            continue;
        }
        log.note(&format!("action {n}: {}", action.run));
        let started = std::time::Instant::now();
        let step = Step { n, steps: job.steps, lock: job.lock, umask: entry.umask };
        let end = run_action(&action.run, &env, &entry.workdir, deadline, cancel, log, step).await;
        let took = humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64));
        match end {
            ActionEnd::Exited(status) if status.success() => log.note(&format!("action {n} ok ({took})")),
            ActionEnd::Exited(status) => {
                log.note(&format!("action {n} failed: {status} ({took})"));
                return Outcome::Failed { action: n, exit_code: status.code() };
            }
            ActionEnd::TimedOut => {
                log.note(&format!(
                    "action {n}: job timed out ({}); process group killed",
                    humantime::format_duration(entry.timeout)
                ));
                return Outcome::TimedOut { action: n };
            }
            ActionEnd::Cancelled => {
                log.note(&format!("action {n}: cancelled, wh-automata is stopping; process group killed"));
                return Outcome::Cancelled { action: n };
            }
            ActionEnd::NotStarted(error) => {
                log.note(&format!("action {n} could not start: {error}"));
                return Outcome::NotStarted { action: n, error };
            }
        }
    }
    let verified_there = !entry.hosts.is_empty()
        && matches!(entry.verify.as_ref().map(|v| &v.check), Some(crate::settings::Check::Run { .. }));
    if let Some(verify) = entry.verify.as_ref().filter(|_| !verified_there) {
        let after = actions.len() + 1;
        let step = Step { n: after, steps: None, lock: job.lock, umask: entry.umask };
        match super::verify::verify(verify, entry, &env, deadline, cancel, log, step).await {
            Verified::Passed => {}
            Verified::Failed(why) => {
                log.note(&format!("verify failed: {why}"));
                return Outcome::VerifyFailed { why };
            }
            Verified::TimedOut => {
                log.note(&format!("verify: job timed out ({})", humantime::format_duration(entry.timeout)));
                return Outcome::TimedOut { action: after };
            }
            Verified::Cancelled => {
                log.note("verify: cancelled, wh-automata is stopping");
                return Outcome::Cancelled { action: after };
            }
        }
    }
    log.note("job succeeded");
    Outcome::Succeeded
}

/// Why `action` does not run for `event`, if it does not: an `if_changed` step runs unless the
/// changed files are fully known and none of them matches.
pub fn skip_reason(action: &Action, event: &Event) -> Option<String> {
    let (patterns, set) = action.if_changed.as_ref()?;
    if event.changes_complete && !event.changed_files.iter().any(|f| set.is_match(f)) {
        Some(format!("no changed file matches {}", patterns.join(", ")))
    } else {
        None
    }
}

pub(super) enum ActionEnd {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
    NotStarted(String),
}

/// Which action of the job this is, and where its end is recorded.
#[derive(Clone, Copy)]
pub(super) struct Step<'a> {
    pub(super) n: usize,
    pub(super) steps: Option<&'a ActionRecords>,
    pub(super) lock: Option<&'a crate::jobs::entry_lock::EntryLock>,
    /// The entry's `umask:`, set by the wrapper before the command.
    pub(super) umask: Option<u32>,
}

/// The `sh` that `sh -c` finds with the action's `PATH` (execvp's search, its default path when
/// `PATH` is unset), by its path: a program named by its path starts with posix_spawn, while a
/// name to look up in an environment of its own makes the standard library fork the daemon
/// (copying its page tables) before the exec. `sh` itself when none is found: the spawn then
/// fails with the usual error.
fn shell(env: &[(String, String)], workdir: &Path) -> PathBuf {
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or("/bin:/usr/bin", |(_, v)| v.as_str());
    for dir in path.split(':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(dir) };
        let candidate = workdir.join(dir).join("sh");
        let runnable =
            std::fs::metadata(&candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if runnable {
            return candidate;
        }
    }
    PathBuf::from("sh")
}

pub(super) async fn run_action(
    command: &str,
    env: &[(String, String)],
    workdir: &Path,
    deadline: Instant,
    cancel: &mut watch::Receiver<bool>,
    log: &mut Log,
    step: Step<'_>,
) -> ActionEnd {
    let marker = step.steps.map(|s| s.marker(step.n)).unwrap_or_default();
    let group = step.steps.map(ActionRecords::group_file).unwrap_or_default();
    let stdin = match step.lock.map(crate::jobs::entry_lock::EntryLock::stdin) {
        None => Stdio::null(),
        Some(Ok(stdin)) => stdin,
        Some(Err(e)) => {
            return ActionEnd::NotStarted(format!("cannot hand the entry's lock to the action: {e}"))
        }
    };
    let mut cmd = Command::new(shell(env, workdir));
    // The command is an argument of the wrapper, never part of its text.
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg("wh-automata")
        .arg(command)
        .arg(&marker)
        .arg(&group)
        .arg(step.umask.map(|m| format!("{m:04o}")).unwrap_or_default())
        .current_dir(workdir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = if !workdir.is_dir() {
                format!("workdir {} does not exist", workdir.display())
            } else {
                e.to_string()
            };
            return ActionEnd::NotStarted(why);
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(32);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, tx.clone()));
    }
    drop(tx);

    let end = loop {
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) => break ActionEnd::Exited(s),
                Err(e) => break ActionEnd::NotStarted(e.to_string()),
            },
            Some(chunk) = rx.recv() => log.output(&chunk),
            _ = tokio::time::sleep_until(deadline) => {
                kill_group(pgid, &mut child).await;
                break ActionEnd::TimedOut;
            }
            _ = cancelled(cancel) => {
                kill_group(pgid, &mut child).await;
                break ActionEnd::Cancelled;
            }
        }
    };
    // What is still in the pipes; a background process that keeps them open is not waited for.
    let drain_until = Instant::now() + Duration::from_millis(500);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(drain_until, rx.recv()).await {
        log.output(&chunk);
    }
    end
}

async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, to: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Resolves when `cancel` is true; never, if its sender is gone.
pub(super) async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    loop {
        if *cancel.borrow_and_update() {
            return;
        }
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// TERM to the whole process group, then KILL to whatever is left after [`KILL_GRACE`].
async fn kill_group(pgid: Option<Pid>, child: &mut Child) {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return;
    };
    let _ = killpg(pgid, Signal::SIGTERM);
    let until = Instant::now() + KILL_GRACE;
    while Instant::now() < until {
        let _ = child.try_wait();
        // Signal 0: does any process of the group remain?
        if killpg(pgid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh` is found as execvp would find it: the first runnable one along the action's PATH
    /// (relative entries from the workdir), the default path without one.
    #[test]
    fn the_shell_is_found_along_the_actions_path() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path();
        let write = |rel: &str, mode: u32| {
            let path = work.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("plain/sh", 0o644);
        write("tools/sh", 0o755);
        let env =
            |path: &str| vec![("HOME".to_string(), "/".to_string()), ("PATH".to_string(), path.to_string())];
        let system = shell(&[], work);
        assert!(system == Path::new("/bin/sh") || system == Path::new("/usr/bin/sh"), "{system:?}");
        let plain = work.join("plain").display().to_string();
        assert_eq!(shell(&env(&format!("/nowhere:{plain}:tools:/bin")), work), work.join("tools/sh"));
        assert_eq!(
            shell(&env(&format!("{plain}:/bin")), work),
            Path::new("/bin/sh"),
            "not runnable: skipped"
        );
        assert_eq!(shell(&env("/nowhere"), work), Path::new("sh"), "none: the spawn says so");
    }
}
