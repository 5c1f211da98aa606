//! `wh-automata-trigger`: run an entry by hand, list jobs, print a job's log, explain a saved
//! delivery. The flags choose one [`Mode`]; each mode is a file of its own.
//!
//! A manual run goes through the running daemon when there is one (over [`control`]), so it is
//! queued, serialised with the entry's webhook jobs and recorded like them. With no daemon it
//! runs in this process with the same runner, recorded in the same store when that is writable.
//! The exit status is the job's (see [`crate::cli::TRIGGER_EXIT_CODES`]).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::TriggerArgs;
use crate::providers::saved;
use crate::settings::{self, Entry, Settings};
use crate::store::{JobState, Store};

mod dry_run;
mod explain;
mod freeze;
mod jobs;
mod notify_test;
mod releases;
mod remote;
mod run;

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

/// What the command line asks for: one of these, decided once from the flags.
enum Mode {
    Jobs { limit: usize },
    Log { id: i64, follow: bool },
    Explain { file: PathBuf },
    NotifyTest { entry: String },
    Releases { entry: String },
    DryRun { entry: String },
    Rollback { entry: String, to: Option<String> },
    Freeze { entry: String, reason: Option<String> },
    Unfreeze { entry: String },
    Run { entry: String },
}

impl Mode {
    /// The flags' meaning; clap has already refused the combinations that conflict.
    fn of(args: &TriggerArgs) -> Mode {
        // Without an entry, `loaded.entry("")` says which entries there are.
        let entry = || args.entry.clone().unwrap_or_default();
        match (args.jobs, args.log, &args.explain, &args.notify_test) {
            (true, ..) => Mode::Jobs { limit: args.limit },
            (_, Some(id), ..) => Mode::Log { id, follow: args.follow },
            (_, _, Some(file), _) => Mode::Explain { file: file.clone() },
            (_, _, _, Some(entry)) => Mode::NotifyTest { entry: entry.clone() },
            _ if args.releases.is_some() => {
                Mode::Releases { entry: args.releases.clone().unwrap_or_default() }
            }
            _ if args.dry_run => Mode::DryRun { entry: entry() },
            _ if args.rollback => Mode::Rollback { entry: entry(), to: args.to.clone() },
            _ if args.freeze => Mode::Freeze { entry: entry(), reason: args.reason.clone() },
            _ if args.unfreeze => Mode::Unfreeze { entry: entry() },
            _ => Mode::Run { entry: entry() },
        }
    }
}

fn run(args: TriggerArgs) -> Result<u8, Fail> {
    if let Some(url) = &args.remote {
        return remote::main(&args, url);
    }
    let path = args.settings.clone().ok_or_else(|| Fail(EXIT_USAGE, "the settings file is needed".into()))?;
    let loaded = load(&path)?;
    // Before anything opens the store: root acts as the owner of state_dir.
    crate::run_as::become_owner_of(&loaded.settings.server.state_dir).map_err(|e| Fail(EXIT_USAGE, e))?;
    match Mode::of(&args) {
        Mode::Jobs { limit } => jobs::list_jobs(&loaded.settings, limit),
        Mode::Log { id, follow } => jobs::print_log(&loaded.settings, id, follow),
        Mode::Explain { file } => explain::explain(&loaded, &file, &args),
        Mode::NotifyTest { entry } => notify_test::notify_test(&loaded, &entry, &path),
        Mode::Releases { entry } => {
            loaded.entry(&entry, &path)?;
            releases::list(&loaded.settings, &entry)
        }
        Mode::Rollback { entry, to } => {
            let entry = loaded.entry(&entry, &path)?;
            let event = releases::rollback_event(&loaded.settings, &entry.name, to.as_deref())?;
            run::run(&loaded, &entry, event, &[], crate::event::Trigger::Rollback, args.force)
        }
        Mode::Freeze { entry, reason } => {
            let entry = loaded.entry(&entry, &path)?;
            freeze::freeze(&loaded.settings, &entry.name, reason.as_deref())
        }
        Mode::Unfreeze { entry } => {
            let entry = loaded.entry(&entry, &path)?;
            freeze::unfreeze(&loaded.settings, &entry.name)
        }
        Mode::DryRun { entry } => {
            let entry = loaded.entry(&entry, &path)?;
            let (event, _) = run::manual_event(&entry, &args, &loaded.settings)?;
            dry_run::dry_run(&entry, &event);
            Ok(0)
        }
        Mode::Run { entry } => {
            let entry = loaded.entry(&entry, &path)?;
            let (event, body) = run::manual_event(&entry, &args, &loaded.settings)?;
            run::run(&loaded, &entry, event, &body, crate::event::Trigger::Manual, args.force)
        }
    }
}

/// Prints how job `id` ended; returns the exit status for it.
fn job_ended(id: i64, state: JobState, exit_code: Option<i32>, reason: Option<&str>) -> u8 {
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
        JobState::Cancelled
        | JobState::Superseded
        | JobState::Queued
        | JobState::Running
        | JobState::Held => EXIT_CANCELLED,
    }
}

fn open_store(settings: &Settings) -> Result<Option<Store>, Fail> {
    let dir = &settings.server.state_dir;
    if !dir.join(crate::store::DATABASE).exists() {
        return Ok(None);
    }
    Store::open(dir).map(Some).map_err(|e| Fail(EXIT_USAGE, format!("{}: {e}", dir.display())))
}

fn read_saved(file: &Path, args: &TriggerArgs) -> Result<saved::Saved, Fail> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    saved::read(&text, args.provider, args.event.as_deref())
        .map_err(|e| Fail(EXIT_USAGE, format!("{}: {e}", file.display())))
}
