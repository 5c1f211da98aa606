//! The one normalised event that every provider adapter produces.
//!
//! Nothing past the adapters knows a provider's JSON shape: the matcher, the job store and the
//! runner see only [`Event`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The all-zero commit id that providers use for "no commit" (a created or deleted ref).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// A git host. Forgejo is reported as Gitea, Bitbucket Server as Bitbucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    Gogs,
    Gitea,
    Bitbucket,
}

impl Provider {
    pub const ALL: [Provider; 5] =
        [Provider::Github, Provider::Gitlab, Provider::Gogs, Provider::Gitea, Provider::Bitbucket];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gogs => "gogs",
            Provider::Gitea => "gitea",
            Provider::Bitbucket => "bitbucket",
        }
    }

    /// Parses a provider name as written in settings (`forgejo` is an alias of `gitea`).
    pub fn from_name(name: &str) -> Option<Provider> {
        match name {
            "github" => Some(Provider::Github),
            "gitlab" => Some(Provider::Gitlab),
            "gogs" => Some(Provider::Gogs),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            "bitbucket" => Some(Provider::Bitbucket),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The normalised kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Commits pushed to a branch (never a deletion).
    Push,
    /// A tag pushed or created.
    Tag,
    /// A branch or tag removed.
    Delete,
    PullRequest,
    Ping,
    /// Anything else; the provider's own name is in [`Event::provider_event`].
    Other,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Tag => "tag",
            EventKind::Delete => "delete",
            EventKind::PullRequest => "pull_request",
            EventKind::Ping => "ping",
            EventKind::Other => "other",
        }
    }

    /// The normalised kinds that settings may name (`other` is not one of them).
    pub fn from_name(name: &str) -> Option<EventKind> {
        match name {
            "push" => Some(EventKind::Push),
            "tag" => Some(EventKind::Tag),
            "delete" => Some(EventKind::Delete),
            "pull_request" => Some(EventKind::PullRequest),
            "ping" => Some(EventKind::Ping),
            _ => None,
        }
    }
}

/// The commit an event points at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub message: String,
    pub author: String,
}

/// The `provider_event` of a manual run made without a saved delivery.
pub const MANUAL_EVENT: &str = "manual";

/// How an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Webhook,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Manual => "manual",
        }
    }
}

/// One webhook delivery (or one ref of it), normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub provider: Provider,
    pub kind: EventKind,
    /// The provider's own name for the event (`push`, `Tag Push Hook`, `repo:refs_changed`, ...).
    pub provider_event: String,
    /// For pull requests: the action (`opened`, `closed`, `merge`, `fulfilled`, ...).
    pub action: Option<String>,
    pub delivery_id: Option<String>,
    /// `owner/name` (GitLab: the whole namespace path).
    pub repo: String,
    pub repo_url: String,
    /// Full ref (`refs/heads/main`); empty when the event has none.
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub before: String,
    pub after: String,
    pub head: Option<Commit>,
    pub pusher: String,
    /// The union of added, modified and removed files, sorted, without duplicates.
    pub changed_files: Vec<String>,
    /// Whether `changed_files` is known to hold every changed file.
    pub changes_complete: bool,
}

impl Event {
    /// The name used in answers and logs: the normalised kind, or the provider's own name.
    pub fn name(&self) -> &str {
        match self.kind {
            EventKind::Other => &self.provider_event,
            k => k.as_str(),
        }
    }

    /// Whether this is a manual run's event made without a saved delivery: it has no provider
    /// and no event of its own.
    pub fn is_bare_manual(&self) -> bool {
        self.provider_event == MANUAL_EVENT
    }

    /// Sets `git_ref` and derives `branch` / `tag` from it.
    pub fn set_ref(&mut self, full: &str) {
        self.git_ref = full.to_string();
        self.branch = full.strip_prefix("refs/heads/").map(str::to_string);
        self.tag = full.strip_prefix("refs/tags/").map(str::to_string);
    }

    /// An event for a manual run of an entry.
    pub fn manual(branch: Option<&str>, commit: Option<&str>) -> Event {
        let mut event = Event {
            provider: Provider::Github,
            kind: EventKind::Push,
            provider_event: MANUAL_EVENT.into(),
            action: None,
            delivery_id: None,
            repo: String::new(),
            repo_url: String::new(),
            git_ref: String::new(),
            branch: None,
            tag: None,
            before: String::new(),
            after: commit.unwrap_or_default().to_string(),
            head: None,
            pusher: std::env::var("USER").unwrap_or_default(),
            changed_files: Vec::new(),
            changes_complete: false,
        };
        if let Some(b) = branch {
            event.set_ref(&format!("refs/heads/{b}"));
        }
        event
    }
}
