//! What a job's change of state sends, and to whom: the [`Reporter`] the daemon installs in
//! the store. It reads the current settings: an entry with `status:` reports every change to
//! the commit; one with `notify:` tells its targets about the changes they asked for, once per
//! failing streak. What is sent is a [`Report`]: the facts of that moment, written to the
//! outbox with the change; the sinks ([`crate::telling::status`], [`crate::telling::notify`]) word it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::event::{Provider, Trigger, ZERO_SHA};
use crate::settings::{Entry, NotifyOn, Settings};
use crate::store::{Change, JobState, Outgoing, Reporter};

pub use crate::store::STATUS_SINK as STATUS;

/// The sink name of a notification target in the outbox.
pub fn target_sink(target: &str) -> String {
    format!("notify:{target}")
}

/// The facts of one change, as the sinks read them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    pub job: i64,
    pub entry: String,
    pub trigger: Trigger,
    /// The job's state after the change.
    pub state: JobState,
    /// What a message is about: failed, timed_out, recovered, succeeded, started, cancelled,
    /// test; for a status, the job's state.
    pub kind: String,
    /// The host of the event; `None` for a manual run's.
    #[serde(with = "provider_name")]
    pub provider: Option<Provider>,
    pub provider_event: String,
    pub repo: String,
    pub repo_url: String,
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit: String,
    pub commit_message: String,
    pub pusher: String,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// For a superseded job: the newer job's commit.
    pub superseded_by: Option<String>,
    /// The last lines of the job's log (failures only).
    pub log_tail: Vec<String>,
    /// When the change happened (ms since the epoch).
    pub at: i64,
}

impl Report {
    /// The facts of `change`, about `kind`.
    pub fn of(change: &Change<'_>, kind: &str) -> Report {
        let e = change.event;
        Report {
            job: change.job,
            entry: change.entry.to_string(),
            trigger: change.trigger,
            state: change.state,
            kind: kind.to_string(),
            provider: e.provider,
            provider_event: e.provider_event.clone(),
            repo: e.repo.clone(),
            repo_url: e.repo_url.clone(),
            git_ref: e.git_ref.clone(),
            branch: e.branch.clone(),
            tag: e.tag.clone(),
            commit: e.after.clone(),
            commit_message: e.head.as_ref().map(|h| capped(&h.message, 4096)).unwrap_or_default(),
            pusher: capped(&e.pusher, 256),
            duration_ms: match (change.started_at, change.finished_at) {
                (Some(s), Some(f)) => Some((f - s).max(0)),
                _ => None,
            },
            exit_code: change.exit_code,
            reason: change.reason.map(str::to_string),
            superseded_by: change.superseded_by.map(str::to_string),
            log_tail: Vec::new(),
            at: change.finished_at.or(change.started_at).unwrap_or(change.created_at),
        }
    }

    /// The host's name (`github`), empty for a manual run's event.
    pub fn provider_name(&self) -> &'static str {
        self.provider.map_or("", Provider::as_str)
    }

    /// A report of a push of `acme/blog` to main, for tests.
    #[cfg(test)]
    pub fn test_report() -> Report {
        Report {
            job: 1,
            entry: "site".into(),
            trigger: Trigger::Webhook,
            state: JobState::Queued,
            kind: "queued".into(),
            provider: Some(Provider::Github),
            provider_event: "push".into(),
            repo: "acme/blog".into(),
            repo_url: "https://git.example/acme/blog".into(),
            git_ref: "refs/heads/main".into(),
            branch: Some("main".into()),
            tag: None,
            commit: "a".repeat(40),
            commit_message: String::new(),
            pusher: String::new(),
            duration_ms: None,
            exit_code: None,
            reason: None,
            superseded_by: None,
            log_tail: Vec::new(),
            at: 0,
        }
    }

    /// The commit, shortened as people read it.
    pub fn short_commit(&self) -> &str {
        short(&self.commit)
    }

    /// The duration, as people read it (`1m 12s`).
    pub fn duration(&self) -> Option<String> {
        self.duration_ms.map(|ms| match ms {
            ..=999 => format!("{}ms", ms.max(0)),
            _ => humantime::format_duration(std::time::Duration::from_secs(ms as u64 / 1000)).to_string(),
        })
    }
}

/// A report's provider in the outbox, as its name (`""` for none: what earlier versions wrote
/// for a manual run's event, so their waiting items still read).
mod provider_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::event::Provider;

    pub fn serialize<S: Serializer>(provider: &Option<Provider>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(provider.map_or("", Provider::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Provider>, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() {
            return Ok(None);
        }
        Provider::from_name(&name)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("unknown provider {name:?}")))
    }
}

/// `text`, at most `chars` characters: a payload's values are a stranger's, and a message
/// (and the outbox item that holds it, once per target) stays small.
fn capped(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A commit id, shortened to 7 characters.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// The [`Reporter`] of the daemon (and of a foreground manual run).
pub struct Reports {
    settings: Arc<RwLock<Arc<Settings>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Reports {
    /// Reads the settings from `settings` (swapped whole on reload); `wake` is told when items
    /// are written.
    pub fn new(settings: Arc<RwLock<Arc<Settings>>>, wake: Arc<tokio::sync::Notify>) -> Reports {
        Reports { settings, wake }
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).entry(name).cloned()
    }
}

impl Reporter for Reports {
    fn wants(&self, entry: &str) -> bool {
        self.entry(entry).is_some_and(|e| e.status.is_some() || e.notify.is_some())
    }

    fn report(&self, change: &Change<'_>) -> Vec<Outgoing> {
        let Some(entry) = self.entry(change.entry) else { return Vec::new() };
        let mut items = Vec::new();
        if entry.status.is_some() && reportable(change) {
            let report = Report::of(change, change.state.as_str());
            items.push(Outgoing {
                sink: STATUS.to_string(),
                lane: format!("status:{}:{}", change.entry, change.event.after),
                kind: report.kind.clone(),
                report: serde_json::to_string(&report).unwrap_or_default(),
            });
        }
        if let Some(notify) = &entry.notify {
            if let Some(on) = message_kind(change, &notify.on) {
                let mut report = Report::of(change, on.as_str());
                if matches!(on, NotifyOn::Failed | NotifyOn::TimedOut) && notify.log_tail > 0 {
                    report.log_tail = log_tail(change.log, notify.log_tail);
                }
                let text = serde_json::to_string(&report).unwrap_or_default();
                for target in &notify.to {
                    items.push(Outgoing {
                        sink: target_sink(target),
                        lane: format!("notify:{target}:{}", change.entry),
                        kind: on.as_str().to_string(),
                        report: text.clone(),
                    });
                }
            }
        }
        items
    }

    fn written(&self) {
        self.wake.notify_one();
    }
}

/// Whether a change can be reported on the commit: the event came from a host with a status
/// API and names a commit.
fn reportable(change: &Change<'_>) -> bool {
    let e = change.event;
    e.provider.is_some_and(crate::providers::has_status_api) && !e.after.is_empty() && e.after != ZERO_SHA
}

/// What the entry's targets are told of `change`, if anything: one message per failing streak
/// (the first failure or time-out), one when it ends (`recovered`).
fn message_kind(change: &Change<'_>, on: &[NotifyOn]) -> Option<NotifyOn> {
    let wants = |k: NotifyOn| on.contains(&k).then_some(k);
    if change.trigger == Trigger::Rollback {
        // A rollback's end is told as such, whatever the streak.
        return match change.state {
            JobState::Succeeded | JobState::Failed | JobState::TimedOut => wants(NotifyOn::Rollback),
            JobState::Running => wants(NotifyOn::Started),
            _ => None,
        };
    }
    match change.state {
        JobState::Running => wants(NotifyOn::Started),
        JobState::Succeeded if change.was_failing == Some(true) => {
            wants(NotifyOn::Recovered).or_else(|| wants(NotifyOn::Succeeded))
        }
        JobState::Succeeded => wants(NotifyOn::Succeeded),
        JobState::Failed if change.was_failing != Some(true) => wants(NotifyOn::Failed),
        JobState::TimedOut if change.was_failing != Some(true) => wants(NotifyOn::TimedOut),
        JobState::Cancelled => wants(NotifyOn::Cancelled),
        _ => None,
    }
}

/// The last `lines` lines of the log at `path` (its last 64 KiB at most), without control
/// characters.
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    const MOST: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MOST);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.take(MOST).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // cut in the middle
    }
    let from = all.len().saturating_sub(lines);
    all[from..]
        .iter()
        .map(|l| {
            let clean: String = l.chars().filter(|c| !c.is_control() || *c == '\t').take(500).collect();
            clean
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the outbox holds reads back the same; an item written before the report was typed
    /// (a manual run's provider as `""`) still reads; an unknown state is an error, not a
    /// default.
    #[test]
    fn reports_read_back_typed() {
        let mut r = Report::test_report();
        for provider in [None, Some(Provider::Github), Some(Provider::Bitbucket)] {
            for state in JobState::ALL {
                r.provider = provider;
                r.state = state;
                let text = serde_json::to_string(&r).unwrap();
                assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
            }
        }
        let mut old = serde_json::to_value(Report::test_report()).unwrap();
        old["provider"] = "".into();
        old["trigger"] = "manual".into();
        old["state"] = "timed_out".into();
        let read: Report = serde_json::from_value(old.clone()).unwrap();
        assert_eq!((read.provider, read.trigger, read.state), (None, Trigger::Manual, JobState::TimedOut));
        old["state"] = "paused".into();
        assert!(serde_json::from_value::<Report>(old).is_err());
    }
}
