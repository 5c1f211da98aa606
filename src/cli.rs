//! The command lines of both binaries, in the library so that the man pages and shell
//! completions in `contrib/` can be generated from them (and checked by a test).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::event::Provider;

/// `wh-automatad`.
#[derive(Debug, Parser)]
#[command(
    name = "wh-automatad",
    version,
    about = "Serve git webhooks and run the matching entries' actions",
    long_about = "Serve git webhooks (GitHub, GitLab, Gogs, Gitea/Forgejo, Bitbucket): check each request's \
                  signature, match it against the entries of SETTINGS, and run the matching entries' actions \
                  in the background. SETTINGS and every file it includes are reloaded when they change, and on \
                  SIGHUP. SIGTERM or SIGINT stop the daemon: running jobs may finish within shutdown_grace.",
    after_help = "Environment:\n  WH_LOG         log filter (error, warn, info, debug; default info)\n  \
                  NOTIFY_SOCKET  set by systemd for Type=notify services: readiness and stopping notices"
)]
pub struct DaemonArgs {
    /// The settings file (YAML).
    pub settings: PathBuf,
    /// Validate the settings and every included file, print every problem, and exit 1 if there
    /// is one; else exit 0, after warning about what would stop the daemon on this machine for
    /// the user running the check (missing workdir, state_dir not writable, listen address in use).
    #[arg(long)]
    pub check: bool,
    /// Log format on stderr (default: text, without timestamps under journald).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

pub const TRIGGER_EXIT_CODES: &str = "Exit status:
  0      the job succeeded (or --dry-run, --jobs, --log, --explain with a match)
  1-123  the job failed: the exit status of the failed action (1 when it had none)
  1      --explain: no entry matches; --notify-test: a target or the status failed
  2      bad usage, invalid settings, unknown entry, or the daemon refused the job
  124    the job timed out
  125    the job was cancelled, or the daemon stopped before it ended";

/// `wh-automata-trigger`.
#[derive(Debug, Parser)]
#[command(
    name = "wh-automata-trigger",
    version,
    about = "Run an entry by hand, as if a webhook had been received",
    long_about = "Run ENTRY of SETTINGS by hand, as if a webhook had been received. When the daemon for \
                  SETTINGS is running, the job goes through it (over the control socket in state_dir): it is \
                  queued, waits for a running job of the same entry, and is recorded with the others. \
                  Otherwise the actions run here, in the foreground, with the same runner. Either way the \
                  output is shown as it happens and the exit status is the job's.",
    after_help = TRIGGER_EXIT_CODES
)]
pub struct TriggerArgs {
    /// The settings file (YAML). With --remote there is none: the first name is the entry.
    #[arg(required_unless_present = "remote")]
    pub settings: Option<PathBuf>,
    /// The entry to run.
    #[arg(required_unless_present_any = ["jobs", "log", "explain", "notify_test", "releases", "remote"])]
    pub entry: Option<String>,
    /// Run for this branch (WH_BRANCH, WH_REF); default: the ref of the entry's last job, or the
    /// branch its match.branch names (^main$).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["payload", "tag"])]
    pub branch: Option<String>,
    /// Run for this tag (WH_TAG, WH_REF), for entries that run on tags.
    #[arg(long, value_name = "NAME", conflicts_with = "payload")]
    pub tag: Option<String>,
    /// Run for this commit (WH_AFTER); default: none, and the shipped rules deploy the head of
    /// the branch they fetch.
    #[arg(long, value_name = "SHA", conflicts_with = "payload")]
    pub commit: Option<String>,
    /// Run for a saved delivery: its body, or headers, a blank line and its body.
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// The provider of the saved delivery, when its headers or shape do not say.
    #[arg(long, value_name = "NAME", value_parser = parse_provider)]
    pub provider: Option<Provider>,
    /// The provider's event name of the saved delivery (as in its event header), when its
    /// headers or shape do not say.
    #[arg(long, value_name = "NAME")]
    pub event: Option<String>,
    /// Show the actions and the environment that would run, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// List the most recent jobs.
    #[arg(long, conflicts_with_all = ["entry", "log", "explain"])]
    pub jobs: bool,
    /// How many jobs --jobs lists.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print the log of job ID.
    #[arg(long, value_name = "ID", conflicts_with_all = ["entry", "explain"])]
    pub log: Option<i64>,
    /// With --log: keep printing until the job ends.
    #[arg(long, requires = "log")]
    pub follow: bool,
    /// For a saved delivery: which entries match it, and why the others do not.
    #[arg(long, value_name = "FILE", conflicts_with = "entry")]
    pub explain: Option<PathBuf>,
    /// List the releases of ENTRY (jobs that succeeded for a commit), newest first.
    #[arg(long, value_name = "ENTRY", conflicts_with_all = ["entry", "jobs", "log", "explain", "dry_run"])]
    pub releases: Option<String>,
    /// Roll ENTRY back: run it for an earlier release's commit (the one before the newest, or
    /// --to), with WH_TRIGGER=rollback and its `rollback:` actions when it has them.
    #[arg(long, conflicts_with_all = ["payload", "branch", "tag", "commit"])]
    pub rollback: bool,
    /// Freeze ENTRY: its deliveries are recorded `held` and run nothing until --unfreeze.
    #[arg(long, conflicts_with_all = ["rollback", "unfreeze", "dry_run", "payload", "branch", "tag", "commit"])]
    pub freeze: bool,
    /// With --freeze: why (shown by /health, --jobs and the held jobs' statuses).
    #[arg(long, value_name = "TEXT", requires = "freeze")]
    pub reason: Option<String>,
    /// Unfreeze ENTRY: its newest held job runs (the older ones are superseded).
    #[arg(long, conflicts_with_all = ["rollback", "dry_run", "payload", "branch", "tag", "commit"])]
    pub unfreeze: bool,
    /// Run a frozen entry all the same.
    #[arg(long)]
    pub force: bool,
    /// Work against the daemon at URL through its job API (no SETTINGS then: the first name is
    /// the entry): --jobs, --log [--follow], a run, --rollback, --releases, --freeze,
    /// --unfreeze, --wait.
    #[arg(long, value_name = "URL", requires = "token_file")]
    pub remote: Option<String>,
    /// With --remote: the file holding the API token.
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub token_file: Option<PathBuf>,
    /// With --remote: follow the job to its end and exit with its status; with --commit SHA and
    /// no --branch or --tag, the job of that commit, however it was started.
    #[arg(long, requires = "remote")]
    pub wait: bool,
    /// With --wait: the longest wait (then exit 2 with the job's state).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_wait)]
    pub timeout: std::time::Duration,
    /// With --rollback: the release to go back to, by its commit (or a prefix) or its job id.
    #[arg(long, value_name = "SHA|JOB", requires = "rollback")]
    pub to: Option<String>,
    /// With --explain: the address the delivery came from, so that `allow_from` is applied
    /// as the daemon would (a saved delivery does not say).
    #[arg(long, value_name = "ADDR", requires = "explain")]
    pub from: Option<std::net::IpAddr>,
    /// Send a test message to each notification target of ENTRY, and its latest job's status
    /// to the commit again; print each result (exit 1 if one failed).
    #[arg(long, value_name = "ENTRY", conflicts_with_all = ["entry", "jobs", "log", "explain", "dry_run"])]
    pub notify_test: Option<String>,
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (say 90s, 10m)"))
}

fn parse_provider(name: &str) -> Result<Provider, String> {
    Provider::from_name(name).ok_or_else(|| format!("unknown provider {name:?}: {}", Provider::names()))
}

/// The levels `WH_LOG` may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `WH_LOG` filter: levels, or `target=level` directives, comma-separated. The log
/// library reads a bare unknown word (`inf`) as a target and silences everything else; here it
/// is an error.
pub fn check_log_filter(text: &str) -> Result<(), String> {
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} is not a level: give one of {} (or target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_filters() {
        for good in ["info", "warn", "DEBUG", "wh_automata::server=debug,info", ""] {
            assert!(super::check_log_filter(good).is_ok(), "{good}");
        }
        for bad in ["inf", "wh_automata=loud", "verbose"] {
            assert!(super::check_log_filter(bad).is_err(), "{bad}");
        }
    }
}
