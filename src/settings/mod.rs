//! The settings file, in two phases.
//!
//! Phase one ([`raw`]) reads what was typed: serde structs that refuse unknown keys, one per
//! YAML file (the settings file and every file its `include:` globs name, see [`include`]).
//! Phase two ([`compile`]) turns that into a validated [`Settings`]: the matchers compiled (by
//! [`crate::matcher`]), durations and sizes parsed ([`units`]), secrets resolved from the
//! environment or a file, relative paths made absolute. Every problem found is collected
//! ([`problems`]), with file, entry and line where known, so a user fixes them all in one pass.
//! This module never touches the network or the job store; it only reads files and the
//! environment.

mod actions;
mod api;
mod compile;
mod expand;
mod hosts;
pub mod include;
mod load;
mod poll;
mod problems;
mod raw;
mod telling;
mod undo;
mod units;

use crate::allow::Nets;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::GlobSet;

pub use api::{Api, Scope, Token};
pub use expand::expand;
pub use hosts::{Host, HostKey, Rollout};
pub use load::NO_ENTRIES;
pub use poll::Poll;
pub use problems::{Problem, Problems};
pub use raw::json_schema;
pub use telling::{Notify, NotifyOn, StatusSink, Target, TargetKind, LOG_TAIL};
pub use undo::{Check, Verify};
pub use units::{parse_duration, parse_size};

use crate::matcher::Matcher;

/// Default values of the `server:` section.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8970";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Reads, validates and compiles the settings file at `path` and every file it includes.
/// Environment variables (`${VAR}`) are read from the process environment.
pub fn load(path: &Path) -> Result<Settings, Problems> {
    load::load(path, &|name| std::env::var(name).ok(), Secrets::Required)
}

/// [`load`] with an explicit environment lookup.
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Problems> {
    load::load(path, env, Secrets::Required)
}

/// [`load_with_env`] for a manual run, which checks no signature: a `secret_file` that cannot
/// be read here (it is the daemon's) is not a problem, and the entry gets a secret that no
/// signature matches.
pub fn load_for_manual_run(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Problems> {
    load::load(path, env, Secrets::Unread)
}

/// Whether the entries' secrets must be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    Required,
    /// A secret that cannot be read is replaced by one that matches no signature.
    Unread,
}

/// Validated, compiled settings. Held as an `Arc` snapshot and swapped whole on reload.
#[derive(Debug)]
pub struct Settings {
    /// The settings file itself (absolute).
    pub source: PathBuf,
    /// Every file that was read (settings file first, then included files).
    pub files: Vec<PathBuf>,
    /// Directories and patterns whose changes may change the set of included files.
    pub include_globs: Vec<PathBuf>,
    pub server: Server,
    pub entries: Vec<Arc<Entry>>,
    /// The notification targets, by name.
    pub targets: std::collections::BTreeMap<String, Arc<Target>>,
    /// The job API's tokens; `None`: the API is off.
    pub api: Option<Api>,
    /// What is valid but likely not meant (an unanchored branch regex): said by `--check` and
    /// logged at load, never refused.
    pub warnings: Vec<Problem>,
    /// Entries by name and by repository, so that finding the entries of a request does not
    /// grow with their number.
    index: Index,
}

/// The `server:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: String,
    /// Route prefix without a trailing slash (`/hooks`).
    pub path: String,
    pub workers: usize,
    pub queue: usize,
    /// The releases of each entry pruning keeps.
    pub releases_kept: usize,
    /// How many jobs the store keeps.
    pub history: usize,
    pub max_body: u64,
    pub state_dir: PathBuf,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Peers whose forwarding headers name the client.
    pub trusted_proxies: Nets,
    /// Who may send webhooks at all (`None`: anyone).
    pub allow_from: Option<Nets>,
    /// Who may read `/health` and `/metrics`.
    pub observe_from: Nets,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Cap on each job's log file.
    pub log_limit: u64,
    /// How long running jobs may go on after SIGTERM before their process groups are killed.
    pub shutdown_grace: Duration,
    /// Where people reach the daemon, without a trailing slash: links to jobs.
    pub public_url: Option<String>,
    /// Certificates trusted besides the system's for outbound HTTPS.
    pub ca_file: Option<PathBuf>,
    /// How long an undelivered status or message is tried again.
    pub notify_retry_for: Duration,
    /// The sendmail(8) of email targets.
    pub sendmail: PathBuf,
}

pub use crate::secrets::Secret;

/// One entry: a matcher, how to authenticate, and the actions to run.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub matcher: Matcher,
    /// `None` only for entries marked `insecure: true`.
    pub secret: Option<Secret>,
    pub allow_sha1: bool,
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    pub inherit_env: Vec<String>,
    pub timeout: Duration,
    pub actions: Vec<Action>,
    /// Who may send this entry's webhooks, besides the server's list (`None`: anyone).
    pub allow_from: Option<Nets>,
    pub skip_deployed: bool,
    /// The actions' file mode creation mask (`None`: the daemon's).
    pub umask: Option<u32>,
    /// The secret values the settings know, masked in this entry's job logs ([`crate::secrets::mask`]).
    pub mask: crate::secrets::mask::Mask,
    /// The `env_file` variables whose values are masked too.
    pub secret_env: Vec<String>,
    /// Read when each job starts: relative to `workdir`, or absolute.
    pub env_file: Option<PathBuf>,
    /// Report each job to the commit.
    pub status: Option<StatusSink>,
    /// Tell people about its jobs.
    pub notify: Option<Notify>,
    /// The check after the actions.
    pub verify: Option<Verify>,
    /// `on_failure: rollback`.
    pub rollback: bool,
    /// The commands of a rollback, when not the actions.
    pub rollback_actions: Option<Vec<Action>>,
    /// `poll:`: the remote asked for the branch's head.
    pub poll: Option<Poll>,
    /// Whether webhooks may run it: not an entry that only polls (no secret, not insecure).
    pub webhooks: bool,
    /// Where the actions run (through OpenSSH), in order; empty: here.
    pub hosts: Vec<Arc<Host>>,
    pub rollout: Rollout,
}

/// One step of an entry.
#[derive(Debug)]
pub struct Action {
    pub run: String,
    /// Run only when one of the changed files matches (or when they are not fully known).
    pub if_changed: Option<(Vec<String>, GlobSet)>,
}

impl Entry {
    /// Whether this entry should run for `event`; `Err` says why not.
    pub fn check(&self, event: &crate::event::Event) -> Result<(), String> {
        self.matcher.check(event)
    }
}

impl Settings {
    /// The entry called `name`, if any.
    pub fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.index.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The entries whose `match.repo` may accept `repo`: those naming it exactly, and those
    /// with a glob or no repo at all (still to be checked by the matcher), in settings order.
    pub fn entries_for_repo(&self, repo: &str) -> Vec<&Arc<Entry>> {
        let exact = self.index.by_repo.get(repo).map(Vec::as_slice).unwrap_or_default();
        let mut found: Vec<usize> = exact.iter().chain(&self.index.any_repo).copied().collect();
        found.sort_unstable();
        found.into_iter().map(|i| &self.entries[i]).collect()
    }
}

/// See [`Settings::entry`] and [`Settings::entries_for_repo`].
#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<String, usize>,
    /// Entries whose `match.repo` is a literal name.
    by_repo: HashMap<String, Vec<usize>>,
    /// Entries with a repo glob, or none.
    any_repo: Vec<usize>,
}

impl Index {
    fn of(entries: &[Arc<Entry>]) -> Index {
        let mut index = Index::default();
        for (i, entry) in entries.iter().enumerate() {
            index.by_name.insert(entry.name.clone(), i);
            match entry.matcher.literal_repo() {
                Some(repo) => index.by_repo.entry(repo.to_string()).or_default().push(i),
                None => index.any_repo.push(i),
            }
        }
        index
    }
}
