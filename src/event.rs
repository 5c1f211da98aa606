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

impl Provider {
    /// Every name `match.provider` takes: each host's, its aliases, and `any`.
    pub const NAMES: [&'static str; 7] = ["github", "gitlab", "gogs", "gitea", "forgejo", "bitbucket", "any"];

    /// The names, for messages: `github, gitlab, gogs, gitea, forgejo, bitbucket or any`.
    pub fn names() -> String {
        let (last, rest) = Provider::NAMES.split_last().unwrap_or((&"", &[]));
        format!("{} or {last}", rest.join(", "))
    }
}

/// A `match.provider` in the settings' JSON Schema: one of [`Provider::NAMES`].
pub struct ProviderName;

impl schemars::JsonSchema for ProviderName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProviderName".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "enum": Provider::NAMES })
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
    /// A CI run (GitHub and Gitea `workflow_run`, GitLab pipeline) that has finished or changed.
    Ci,
    Ping,
    /// A run asked for by hand without a saved delivery: no provider, no event of a host.
    Manual,
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
            EventKind::Ci => "ci",
            EventKind::Ping => "ping",
            EventKind::Manual => "manual",
            EventKind::Other => "other",
        }
    }

    /// The normalised kinds that settings may name (`manual` and `other` are not among them).
    pub fn from_name(name: &str) -> Option<EventKind> {
        match name {
            "push" => Some(EventKind::Push),
            "tag" => Some(EventKind::Tag),
            "delete" => Some(EventKind::Delete),
            "pull_request" => Some(EventKind::PullRequest),
            "ci" => Some(EventKind::Ci),
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

/// What a pull (GitLab: merge) request event says about the request itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PullRequest {
    /// The number the host shows (GitLab: the `iid`, `!12`).
    pub number: u64,
    pub title: String,
    /// The request's page.
    pub url: String,
    pub head_branch: String,
    pub head_sha: String,
    /// The target branch (also the event's `branch`).
    pub base_branch: String,
    pub merged: bool,
}

/// The normalised pull request actions, each with the host names that mean it.
pub const PR_ACTIONS: [&str; 5] = ["opened", "updated", "reopened", "closed", "merged"];

/// What a CI event says about its run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ci {
    /// The workflow (GitHub, Gitea) or pipeline (GitLab) name; may be empty.
    pub workflow: String,
    /// `success`, `failure`, `cancelled`, `skipped`, ... once the run finished; `None` while it
    /// is queued or running.
    pub conclusion: Option<String>,
    /// The host's status word as sent (`completed`, `running`, `success`, ...).
    pub status: String,
    /// The run's page.
    pub url: String,
}

/// How an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Webhook,
    Manual,
    /// Back to the entry's last release, after a job of it failed (`on_failure: rollback`) or
    /// by hand (`--rollback`).
    Rollback,
    /// The remote's branch moved to a commit no job of the entry was recorded for (`poll:`).
    Poll,
}

impl Trigger {
    pub const ALL: [Trigger; 4] = [Trigger::Webhook, Trigger::Manual, Trigger::Rollback, Trigger::Poll];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Manual => "manual",
            Trigger::Rollback => "rollback",
            Trigger::Poll => "poll",
        }
    }

    /// The trigger named `name`; anything else is refused.
    pub fn parse(name: &str) -> Option<Trigger> {
        match name {
            "webhook" => Some(Trigger::Webhook),
            "manual" => Some(Trigger::Manual),
            "rollback" => Some(Trigger::Rollback),
            "poll" => Some(Trigger::Poll),
            _ => None,
        }
    }
}

/// One webhook delivery (or one ref of it), normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The git host; `None` for a manual run made without a saved delivery.
    pub provider: Option<Provider>,
    pub kind: EventKind,
    /// The provider's own name for the event (`push`, `Tag Push Hook`, `repo:refs_changed`, ...).
    pub provider_event: String,
    /// The action, normalised for pull requests (`opened`, `updated`, `reopened`, `closed`,
    /// `merged`); other events keep the host's word (`completed`, `checks_requested`, ...).
    pub action: Option<String>,
    /// The action as the host wrote it (`synchronize`, `update`, `fulfilled`, `pr:declined`, ...).
    #[serde(default)]
    pub provider_action: Option<String>,
    pub delivery_id: Option<String>,
    /// `owner/name` (GitLab: the whole namespace path).
    pub repo: String,
    pub repo_url: String,
    /// Full ref (`refs/heads/main`); empty when the event has none.
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub before: String,
    /// The commit the ref points at after the change: for an annotated tag the commit, not the
    /// tag object; forty zeros for a deletion.
    pub after: String,
    /// For an annotated tag: the tag object's id, when the payload gives it.
    #[serde(default)]
    pub tag_object: Option<String>,
    pub head: Option<Commit>,
    pub pusher: String,
    /// The union of added, modified and removed files, sorted, without duplicates.
    pub changed_files: Vec<String>,
    /// Whether `changed_files` is known to hold every changed file.
    pub changes_complete: bool,
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    #[serde(default)]
    pub ci: Option<Ci>,
    /// For a host's `create` or `delete` event sent beside a push of the same change: the kind
    /// of that push, so that an entry that wants both counts the change once.
    #[serde(default)]
    pub beside_push: Option<EventKind>,
    /// A rollback's: the commit whose job failed (`WH_ROLLBACK_FROM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_from: Option<String>,
}

impl Event {
    /// A blank event of `provider` named `provider_event`: kind [`EventKind::Other`] until the
    /// adapter says more, every other field empty.
    pub fn new(provider: Provider, provider_event: &str) -> Event {
        Event {
            provider: Some(provider),
            kind: EventKind::Other,
            provider_event: provider_event.to_string(),
            action: None,
            provider_action: None,
            delivery_id: None,
            repo: String::new(),
            repo_url: String::new(),
            git_ref: String::new(),
            branch: None,
            tag: None,
            before: String::new(),
            after: String::new(),
            tag_object: None,
            head: None,
            pusher: String::new(),
            changed_files: Vec::new(),
            changes_complete: false,
            pull_request: None,
            ci: None,
            beside_push: None,
            rollback_from: None,
        }
    }

    /// An event for a manual run of an entry made without a saved delivery, for a branch.
    pub fn manual(branch: Option<&str>, commit: Option<&str>) -> Event {
        let mut event = Event::manual_ref(None, commit);
        if let Some(b) = branch {
            event.set_branch(b);
        }
        event
    }

    /// An event for a manual run for a full ref (`refs/heads/main`, `refs/tags/v1`), if any.
    pub fn manual_ref(git_ref: Option<&str>, commit: Option<&str>) -> Event {
        let mut event = Event::new(Provider::Github, EventKind::Manual.as_str());
        event.provider = None;
        event.kind = EventKind::Manual;
        event.after = commit.unwrap_or_default().to_string();
        event.pusher = std::env::var("USER").unwrap_or_default();
        if let Some(r) = git_ref {
            event.set_ref(r);
        }
        event
    }

    /// The name used in answers, logs and the job store: the normalised kind, or the
    /// provider's own name.
    pub fn name(&self) -> &str {
        match self.kind {
            EventKind::Other => &self.provider_event,
            k => k.as_str(),
        }
    }

    /// The provider's name, or the empty string for a manual run without one.
    pub fn provider_name(&self) -> &'static str {
        self.provider.map_or("", Provider::as_str)
    }

    /// Sets `git_ref` and derives `branch` / `tag` from it.
    pub fn set_ref(&mut self, full: &str) {
        self.git_ref = full.to_string();
        self.branch = full.strip_prefix("refs/heads/").map(str::to_string);
        self.tag = full.strip_prefix("refs/tags/").map(str::to_string);
    }

    /// Sets the ref to the branch `name` (`refs/heads/<name>`).
    pub fn set_branch(&mut self, name: &str) {
        self.set_ref(&format!("refs/heads/{name}"));
    }

    /// Sets the ref to the tag `name` (`refs/tags/<name>`).
    pub fn set_tag(&mut self, name: &str) {
        self.set_ref(&format!("refs/tags/{name}"));
    }

    /// The kind of a change to the ref: a deletion, else a tag or a branch push, else other.
    /// The one place where a ref says what kind of event it is.
    pub fn set_kind_from_ref(&mut self, deleted: bool) {
        self.kind = if deleted {
            EventKind::Delete
        } else if self.tag.is_some() {
            EventKind::Tag
        } else if self.branch.is_some() {
            EventKind::Push
        } else {
            EventKind::Other
        };
    }
}
