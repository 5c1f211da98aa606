//! `wh-automata-trigger`: run an entry by hand, list jobs, print a job's log, explain a saved
//! delivery.
//!
//! A manual run goes through the running daemon when there is one (over [`control`]), so it is
//! queued, serialised with the entry's webhook jobs and recorded like them. With no daemon it
//! runs in this process with the same runner, recorded in the same store when that is writable.
//! The exit status is the job's (see [`crate::cli::TRIGGER_EXIT_CODES`]).

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::TriggerArgs;
use crate::control::{self, Reply, Request};
use crate::event::{Event, Trigger};
use crate::printable::shown;
use crate::providers::{self, saved};
use crate::runner::{self, JobContext, Log};
use crate::settings::{self, Entry, Settings};
use crate::signals;
use crate::store::{Job, JobState, NewJob, Store};
use crate::worker::{finish_job, Finished};

/// Bad usage, invalid settings, unknown entry, a refused job.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_TIMED_OUT: u8 = 124;
pub const EXIT_CANCELLED: u8 = 125;

/// An error worth one line on stderr, and its exit status.
struct Fail(u8, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(EXIT_USAGE, e.to_string())
    }
}

/// Settings, and the variables they name that are not set here. The daemon has its own
/// environment (its secrets, usually): a manual run through it needs only the entry names and
/// `state_dir`, so unset variables are not an error until the actions would run here.
struct Loaded {
    settings: Arc<Settings>,
    unset: Vec<String>,
}

fn load(path: &Path) -> Result<Loaded, Fail> {
    let unset = RefCell::new(Vec::new());
    let env = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            unset.borrow_mut().push(name.to_string());
            Some(format!("unset-{name}"))
        })
    };
    let settings = settings::load_for_manual_run(path, &env).map_err(|p| Fail(EXIT_USAGE, p.to_string()))?;
    let mut unset = unset.into_inner();
    unset.sort();
    unset.dedup();
    Ok(Loaded { settings: Arc::new(settings), unset })
}

impl Loaded {
    /// The entry called `name`, or a usage error listing the entries of `path`.
    fn entry(&self, name: &str, path: &Path) -> Result<Arc<Entry>, Fail> {
        self.settings.entry(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = self.settings.entries.iter().map(|e| e.name.as_str()).collect();
            Fail(
                EXIT_USAGE,
                format!("no entry named {name:?} in {} (entries: {})", path.display(), names.join(", ")),
            )
        })
    }

    /// The unset variables that any of `values` names (their place holds `unset-NAME`).
    fn unset_in<'a>(&'a self, values: &[&str]) -> Vec<&'a str> {
        let named = |n: &String| values.iter().any(|v| v.contains(&format!("unset-{n}")));
        self.unset.iter().filter(|n| named(n)).map(String::as_str).collect()
    }
}

/// Runs the command; returns the exit status.
pub fn main(args: TriggerArgs) -> u8 {
    match run(args) {
        Ok(code) => code,
        Err(Fail(code, message)) => {
            eprintln!("wh-automata-trigger: {message}");
            code
        }
    }
}

fn run(args: TriggerArgs) -> Result<u8, Fail> {
    let loaded = load(&args.settings)?;
    // Before anything opens the store: root acts as the owner of state_dir.
    crate::owner::become_owner_of(&loaded.settings.server.state_dir).map_err(|e| Fail(EXIT_USAGE, e))?;
    if args.jobs {
        return list_jobs(&loaded.settings, args.limit);
    }
    if let Some(id) = args.log {
        return print_log(&loaded.settings, id, args.follow);
    }
    if let Some(file) = &args.explain {
        return explain(&loaded, file, &args);
    }
    if let Some(name) = &args.notify_test {
        return notify_test(&loaded, name, &args.settings);
    }
    let entry = loaded.entry(args.entry.as_deref().unwrap_or_default(), &args.settings)?;
    let (event, body) = manual_event(&entry, &args, &loaded.settings)?;
    if args.dry_run {
        dry_run(&entry, &event);
        return Ok(0);
    }
    let state_dir = &loaded.settings.server.state_dir;
    match control::connect(state_dir) {
        Ok(Some(stream)) => through_daemon(stream, &entry.name, event, &body),
        Ok(None) => {
            // The actions need the entry's `env:`; secrets are not checked by a manual run.
            let values: Vec<&str> = entry.env.iter().map(|(_, v)| v.as_str()).collect();
            let needed = loaded.unset_in(&values);
            if !needed.is_empty() {
                return Err(Fail(
                    EXIT_USAGE,
                    format!(
                        "no daemon is running for these settings, and running {} here needs the variables its \
                         env: names: {} (set them, or start the daemon)",
                        entry.name,
                        needed.join(", ")
                    ),
                ));
            }
            foreground(&loaded.settings, &entry, event, &body)
        }
        Err(e) => Err(Fail(
            EXIT_USAGE,
            format!(
                "cannot reach the daemon's control socket {}: {e} (run this as the daemon's user)",
                control::socket_path(state_dir).display()
            ),
        )),
    }
}

/// The event of a manual run: from a saved delivery, or from `--branch`/`--tag` and `--commit`.
fn manual_event(entry: &Entry, args: &TriggerArgs, settings: &Settings) -> Result<(Event, Vec<u8>), Fail> {
    let Some(file) = &args.payload else {
        let git_ref = manual_ref(entry, args, settings)?;
        return Ok((Event::manual_ref(git_ref.as_deref(), args.commit.as_deref()), Vec::new()));
    };
    let saved = read_saved(file, args)?;
    let events = providers::parse(saved.provider, &saved.headers, &saved.body)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    // A Bitbucket push may hold several refs: take the first one the entry matches.
    let event = match events.iter().find(|e| entry.check(e).is_ok()) {
        Some(e) => e.clone(),
        None => {
            let first =
                events.into_iter().next().ok_or_else(|| format!("{}: no event in it", file.display()))?;
            let why = entry.check(&first).err().unwrap_or_default();
            eprintln!(
                "note: entry {} would not match this delivery as a webhook ({why}); running it anyway",
                entry.name
            );
            first
        }
    };
    Ok((event, saved.body))
}

/// The ref of a manual run: `--branch` or `--tag`; else the ref of the entry's last job; else
/// the one branch its `match.branch` names. An entry whose actions use the branch or tag and
/// that has none of these is refused with the option to give.
fn manual_ref(entry: &Entry, args: &TriggerArgs, settings: &Settings) -> Result<Option<String>, Fail> {
    if let Some(b) = &args.branch {
        return Ok(Some(format!("refs/heads/{b}")));
    }
    if let Some(t) = &args.tag {
        return Ok(Some(format!("refs/tags/{t}")));
    }
    let last =
        open_store(settings).ok().flatten().and_then(|store| store.last_ref(&entry.name).ok().flatten());
    if let Some((id, git_ref)) = last {
        eprintln!("note: no --branch or --tag: using {git_ref}, the ref of job {id}, the entry's last");
        return Ok(Some(git_ref));
    }
    let uses = |name: &str| entry.actions.iter().any(|a| a.run.contains(name));
    let wants_tag = uses("WH_TAG") || entry.matcher.tag.is_some();
    if wants_tag {
        return Err(Fail(
            EXIT_USAGE,
            format!(
                "entry {} runs for a tag and has no earlier job: say which one with --tag NAME",
                entry.name
            ),
        ));
    }
    if let Some(branch) = entry.matcher.literal_branch() {
        eprintln!("note: no --branch: using {branch}, the branch the entry's match.branch names");
        return Ok(Some(format!("refs/heads/{branch}")));
    }
    if uses("WH_BRANCH") || uses("WH_REF") {
        return Err(Fail(
            EXIT_USAGE,
            format!(
                "entry {} uses the branch and has no earlier job, and its match.branch names no single branch: \
                 say which one with --branch NAME",
                entry.name
            ),
        ));
    }
    Ok(None)
}

fn read_saved(file: &Path, args: &TriggerArgs) -> Result<saved::Saved, Fail> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    saved::read(&text, args.provider, args.event.as_deref())
        .map_err(|e| Fail(EXIT_USAGE, format!("{}: {e}", file.display())))
}

fn dry_run(entry: &Entry, event: &Event) {
    let context =
        JobContext { id: 0, trigger: Trigger::Manual, event, payload: None, steps: None, lock: None };
    // Secrets are shown masked, as in a job's log.
    let mut mask = entry.mask.clone();
    let mut notes = Vec::new();
    let from_file = match runner::env_file(entry) {
        Ok(file) => {
            notes.extend(file.problems.iter().map(|p| format!("  (env_file: {p}: skipped)")));
            mask = runner::secrets(entry, &file.vars);
            file.vars
        }
        Err(error) => {
            notes.push(format!("  (env_file cannot be read: {error}: the job would fail)"));
            Vec::new()
        }
    };
    println!("entry {} ({}), dry run: nothing runs", entry.name, entry.file.display());
    println!("workdir {}", entry.workdir.display());
    println!("timeout {}", humantime::format_duration(entry.timeout));
    println!("actions:");
    for (i, action) in entry.actions.iter().enumerate() {
        let run = mask.text(&action.run);
        match runner::skip_reason(action, event) {
            None => println!("  {}. {run}", i + 1),
            Some(why) => println!("  {}. {run}   (skipped: {why})", i + 1),
        }
    }
    println!("environment:");
    for note in notes {
        println!("{note}");
    }
    for (name, value) in runner::environment(entry, &context, &from_file) {
        let value = match name.as_str() {
            "WH_JOB_ID" => "(the job's id)".to_string(),
            "WH_PAYLOAD" if value.is_empty() => String::new(),
            _ => value,
        };
        // Control characters escaped (a payload's value must not drive the terminal); quotes
        // and backslashes as they are.
        println!("  {name}={}", shown(&mask.text(&value), usize::MAX));
    }
}

/// Queues the run in the daemon and follows it to its end.
fn through_daemon(
    stream: std::os::unix::net::UnixStream,
    entry: &str,
    event: Event,
    body: &[u8],
) -> Result<u8, Fail> {
    let request = Request::Trigger { entry: entry.to_string(), event, body: hex::encode(body) };
    let mut queued = None;
    let mut end: Option<Result<u8, Fail>> = None;
    let mut out = std::io::stdout();
    control::exchange(stream, &request, |reply| match reply {
        Reply::Queued { id } => {
            eprintln!("job {id} queued in the running daemon");
            queued = Some(id);
        }
        Reply::Output { text } => {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        Reply::Done { id, state: name, exit_code, reason } => {
            end = Some(match JobState::parse(&name) {
                Some(state) => Ok(report(id, state, exit_code, reason.as_deref())),
                None => Err(Fail(
                    EXIT_CANCELLED,
                    format!("job {id} ended in a state this version does not know: {name:?}"),
                )),
            });
        }
        Reply::Error { message } => {
            let code = if queued.is_some() { EXIT_CANCELLED } else { EXIT_USAGE };
            end = Some(Err(Fail(code, message)));
        }
    })
    .map_err(|e| format!("the connection to the daemon failed: {e}"))?;
    end.unwrap_or_else(|| {
        let message = match queued {
            Some(id) => format!("the daemon closed the connection; job {id} goes on there: see --log {id}"),
            None => "the daemon closed the connection without an answer".to_string(),
        };
        Err(Fail(EXIT_CANCELLED, message))
    })
}

/// Prints how job `id` ended; returns the exit status for it.
fn report(id: i64, state: JobState, exit_code: Option<i32>, reason: Option<&str>) -> u8 {
    let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
    eprintln!("job {id} {}{why}", state.as_str());
    exit_status(state, exit_code)
}

/// The exit status of the command for a job that ended in `state`.
pub fn exit_status(state: JobState, exit_code: Option<i32>) -> u8 {
    match state {
        JobState::Succeeded => 0,
        JobState::Failed => match exit_code {
            Some(c @ 1..=123) => c as u8,
            _ => 1,
        },
        JobState::TimedOut => EXIT_TIMED_OUT,
        JobState::Cancelled | JobState::Superseded | JobState::Queued | JobState::Running => EXIT_CANCELLED,
    }
}

/// Runs the job here, with the same runner as the daemon.
fn foreground(settings: &Arc<Settings>, entry: &Arc<Entry>, event: Event, body: &[u8]) -> Result<u8, Fail> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let job = NewJob { entry: entry.name.clone(), trigger: Trigger::Manual, event };
    // One run of the entry at a time, whoever runs it: wait for the daemon's job or another
    // manual run (or what a killed one left running) to end first.
    let state_dir = &settings.server.state_dir;
    let name = &entry.name;
    let lock = crate::entry_lock::EntryLock::take(
        state_dir,
        name,
        || eprintln!("entry {name} is running in another process (the daemon, or another manual run): waiting for it"),
        || false,
    )
    .map_err(|e| eprintln!("note: cannot take the entry's lock ({e}): running without it"))
    .ok()
    .flatten();
    // Recorded in the store when it can be written; the run goes on either way. Its statuses
    // and messages wait in the outbox for the daemon to deliver them.
    let recorded = Store::open(&settings.server.state_dir)
        .inspect(|store| {
            let shared = Arc::new(std::sync::RwLock::new(settings.clone()));
            store.set_reporter(Arc::new(crate::report::Reports::new(shared, Arc::default())));
        })
        .and_then(|store| store.insert_foreground(&job).map(|id| (store, id)))
        .map_err(|e| eprintln!("note: this run is not recorded ({e})"))
        .ok();
    let payload = match &recorded {
        Some((store, id)) if !body.is_empty() => {
            let path = store.payload_path(*id);
            crate::store::write_private(&path, body)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Some(path)
        }
        _ => None,
    };
    let id = recorded.as_ref().map_or(0, |(_, id)| *id);
    eprintln!("no daemon is running for these settings: running {} here", entry.name);
    let limit = settings.server.log_limit;
    let file = recorded.as_ref().and_then(|(store, id)| Log::create(&store.log_path(*id), limit).ok());
    let mut log = file.unwrap_or_else(|| Log::new(None, limit)).echoing();
    let outcome = runtime.block_on(async {
        let (cancel_tx, mut cancel) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signals::stop_signal().await;
            let _ = cancel_tx.send(true);
        });
        let context = JobContext {
            id,
            trigger: Trigger::Manual,
            event: &job.event,
            payload: payload.as_deref(),
            steps: None,
            lock: lock.as_ref(),
        };
        runner::run(entry, &context, &mut log, &mut cancel).await
    });
    drop(log);
    let finished = Finished::of(&outcome, entry.timeout);
    if let Some((store, id)) = &recorded {
        if let Err(e) = finish_job(store, *id, &finished) {
            eprintln!("note: cannot record the end of job {id}: {e}");
        }
    }
    Ok(report(id, finished.state, finished.exit_code, finished.reason.as_deref()))
}

fn open_store(settings: &Settings) -> Result<Option<Store>, Fail> {
    let dir = &settings.server.state_dir;
    if !dir.join(crate::store::DATABASE).exists() {
        return Ok(None);
    }
    Store::open(dir).map(Some).map_err(|e| Fail(EXIT_USAGE, format!("{}: {e}", dir.display())))
}

fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        None => "-".to_string(),
    }
}

fn took(job: &Job) -> String {
    match (job.started_at, job.finished_at) {
        (Some(a), Some(b)) => {
            let d = Duration::from_millis((b - a).max(0) as u64);
            if d < Duration::from_secs(1) {
                format!("{}ms", d.as_millis())
            } else {
                humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
            }
        }
        _ => "-".to_string(),
    }
}

/// The widest cell of `--jobs`.
const CELL: usize = 60;

/// `--notify-test ENTRY`: the tokens and URLs must be the real ones, so the variables they
/// name must be set here.
fn notify_test(loaded: &Loaded, name: &str, path: &Path) -> Result<u8, Fail> {
    let settings = &loaded.settings;
    let entry = loaded.entry(name, path)?;
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(status) = &entry.status {
        secrets.push(status.token.expose_str());
    }
    for target in entry.notify.iter().flat_map(|n| &n.to).filter_map(|t| settings.targets.get(t)) {
        use crate::settings::TargetKind::*;
        match &target.kind {
            Slack { url } | Discord { url } => secrets.push(url.expose_str()),
            Ntfy { url, token } => secrets.extend(std::iter::once(url).chain(token).map(|s| s.expose_str())),
            Webhook { url, secret } => {
                secrets.extend(std::iter::once(url).chain(secret).map(|s| s.expose_str()))
            }
            Matrix { token, .. } => secrets.push(token.expose_str()),
            Email { .. } | Command { .. } => {}
        }
    }
    let unset = loaded.unset_in(&secrets);
    if !unset.is_empty() {
        return Err(Fail(
            EXIT_USAGE,
            format!(
                "--notify-test needs the variables the entry's targets and status name: {} (set them)",
                unset.join(", ")
            ),
        ));
    }
    let store = open_store(settings)?;
    let mut out = std::io::stdout();
    match crate::notify_test::run(settings, &entry, store.as_ref(), &mut out) {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) => Err(Fail(EXIT_USAGE, e)),
    }
}

fn list_jobs(settings: &Settings, limit: usize) -> Result<u8, Fail> {
    let Some(store) = open_store(settings)? else {
        eprintln!("no jobs recorded yet in {}", settings.server.state_dir.display());
        return Ok(0);
    };
    let jobs = store.recent(limit)?;
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|j| {
            let commit: String = j.event.after.chars().take(12).collect();
            [
                j.id.to_string(),
                when(Some(j.created_at)),
                j.entry.clone(),
                j.trigger.as_str().to_string(),
                shown(j.event.name(), CELL),
                if j.event.git_ref.is_empty() { "-".into() } else { shown(&j.event.git_ref, CELL) },
                if commit.is_empty() { "-".into() } else { shown(&commit, CELL) },
                j.state.as_str().to_string(),
                took(j),
            ]
        })
        .collect();
    let header = ["ID", "CREATED", "ENTRY", "TRIGGER", "EVENT", "REF", "COMMIT", "STATE", "TOOK"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_string));
    for (row, job) in rows.iter().zip(&jobs) {
        line(row);
        if let Some(reason) = &job.reason {
            if job.state != JobState::Succeeded {
                println!("    {}", shown(reason, 1000));
            }
        }
    }
    Ok(0)
}

fn print_log(settings: &Settings, id: i64, follow: bool) -> Result<u8, Fail> {
    let store = open_store(settings)?
        .ok_or_else(|| Fail(EXIT_USAGE, format!("no job {id}: no jobs recorded yet")))?;
    let mut offset = 0usize;
    let mut out = std::io::stdout();
    loop {
        let job = store.job(id)?.ok_or_else(|| Fail(EXIT_USAGE, format!("no job {id}")))?;
        // The state first: when it is final, the log read after it is complete.
        let text = std::fs::read(store.log_path(id)).unwrap_or_default();
        if text.len() > offset {
            let _ = out.write_all(&text[offset..]);
            let _ = out.flush();
            offset = text.len();
        }
        if job.state.is_final() {
            return Ok(report(id, job.state, job.exit_code, job.reason.as_deref()));
        }
        if !follow {
            eprintln!("job {id} is {} (--follow to wait for its end)", job.state.as_str());
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn explain(loaded: &Loaded, file: &Path, args: &TriggerArgs) -> Result<u8, Fail> {
    let settings = &loaded.settings;
    let saved = read_saved(file, args)?;
    let events = providers::parse(saved.provider, &saved.headers, &saved.body)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut any = false;
    for event in &events {
        let git_ref = if event.git_ref.is_empty() { "-" } else { &event.git_ref };
        println!(
            "{} {} {} {} {}",
            if event.provider.is_none() { "-" } else { event.provider_name() },
            shown(event.name(), 200),
            if event.repo.is_empty() { "-".into() } else { shown(&event.repo, 200) },
            shown(git_ref, 200),
            if event.after.is_empty() { "-".into() } else { shown(&event.after, 200) }
        );
        for entry in &settings.entries {
            match entry.check(event) {
                Ok(()) => {
                    any = true;
                    let auth = match (&entry.secret, saved.had_headers) {
                        (None, _) => "insecure: no signature check".to_string(),
                        (Some(_), false) => "signature not checked: the file has no headers".to_string(),
                        (Some(_), true) if !loaded.unset.is_empty() => {
                            format!("signature not checked: {} not set here", loaded.unset.join(", "))
                        }
                        (Some(secret), true) => {
                            match providers::authenticate(
                                saved.provider,
                                &saved.headers,
                                &saved.body,
                                secret,
                                entry.allow_sha1,
                            ) {
                                Ok(()) => "signature ok".to_string(),
                                Err(e) => format!("but the signature would be refused: {e}"),
                            }
                        }
                    };
                    println!("  {}: matches ({auth})", entry.name);
                }
                Err(why) => println!("  {}: no, {}", entry.name, shown(&why, 1000)),
            }
        }
    }
    Ok(if any { 0 } else { 1 })
}
