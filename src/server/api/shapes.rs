//! The shapes of what the API takes and answers: the views serialise these (and read requests
//! into them), and the OpenAPI document describes them from the same types ([`super::routes`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::store::Job;

/// A job.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct JobView {
    pub id: i64,
    pub entry: String,
    /// webhook, manual, rollback or poll.
    pub trigger: String,
    /// queued, running, held (its entry is frozen), succeeded, failed, timed_out, cancelled or
    /// superseded.
    pub state: String,
    /// Whether the state is final (the job will not change again).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The exit status: 0, the failed action's, 124 (timed out), 125 (cancelled).
    pub exit_code: Option<i32>,
    /// Why it ended so (a failed action, superseded by job N, ...).
    pub reason: Option<String>,
    pub event: EventView,
    /// RFC 3339 times.
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// For a job deployed to hosts (`GET jobs/{id}` only): each host's result, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostView>>,
}

/// How one host of a job's rollout ended.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct HostView {
    pub host: String,
    /// succeeded, failed, unreached, timed_out, cancelled, not_run.
    pub state: String,
    /// The entry's action it failed at.
    pub action: Option<usize>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// When it ended (RFC 3339).
    pub at: Option<String>,
}

impl From<&crate::store::HostResult> for HostView {
    fn from(h: &crate::store::HostResult) -> HostView {
        HostView {
            host: h.host.clone(),
            state: h.state.clone(),
            action: h.action,
            exit_code: h.exit_code,
            reason: h.reason.clone(),
            at: time(Some(h.at)),
        }
    }
}

/// What a job was started for.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct EventView {
    /// github, gitlab, gitea, gogs, bitbucket; none for a manual run.
    pub provider: Option<String>,
    pub event: String,
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit: String,
    /// The head commit's message and author, as the host sent them.
    pub message: Option<String>,
    pub author: Option<String>,
    pub pusher: String,
    /// For a rollback: what it rolls back from (the failed job, or the commit).
    pub rollback_from: Option<String>,
}

/// A time in RFC 3339.
pub(super) fn time(ms: Option<i64>) -> Option<String> {
    ms.map(|ms| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    })
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> JobView {
        let e = &job.event;
        JobView {
            id: job.id,
            entry: job.entry.clone(),
            trigger: job.trigger.as_str().into(),
            state: job.state.as_str().into(),
            is_final: job.state.is_final(),
            exit_code: job.exit_code,
            reason: job.reason.clone(),
            event: EventView {
                provider: e.provider.map(|_| e.provider_name().to_string()),
                event: e.name().to_string(),
                repo: e.repo.clone(),
                git_ref: e.git_ref.clone(),
                branch: e.branch.clone(),
                tag: e.tag.clone(),
                commit: e.after.clone(),
                message: e.head.as_ref().map(|c| c.message.clone()),
                author: e.head.as_ref().map(|c| c.author.clone()),
                pusher: e.pusher.clone(),
                rollback_from: e.rollback_from.clone(),
            },
            created_at: time(Some(job.created_at)),
            started_at: time(job.started_at),
            finished_at: time(job.finished_at),
            hosts: None,
        }
    }
}

/// `GET entries`.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct Entries {
    pub entries: Vec<EntryView>,
}

/// An entry of the settings, now.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct EntryView {
    pub name: String,
    /// Why it is frozen; null when it is not.
    pub frozen: Option<String>,
    pub last_job: Option<JobView>,
    /// Its current release: the commit of its newest succeeded job.
    pub release: Option<ReleaseRef>,
    pub running: usize,
    pub waiting: usize,
    pub held: usize,
}

/// A release: its commit and the job that deployed it.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct ReleaseRef {
    pub commit: String,
    pub job: i64,
}

/// `GET jobs`: newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct JobsPage {
    pub jobs: Vec<JobView>,
    /// The `before=` of the next page; null on the last one.
    pub next_before: Option<i64>,
}

/// `GET entries/{name}/releases`: newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct Releases {
    pub releases: Vec<JobView>,
}

/// `POST jobs/{id}/cancel`.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct Cancelled {
    pub job: i64,
    /// cancelled (it was waiting), or cancelling (it runs: its end follows).
    pub state: String,
}

/// A job queued by `run` or `rollback`.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct Queued {
    /// Always "queued".
    pub status: String,
    pub job: i64,
    /// For a rollback: the release it returns to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<ReleaseRef>,
}

/// `POST entries/{name}/freeze` and `unfreeze`.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct Freezing {
    pub frozen: bool,
    /// Freeze: the jobs held by it (waiting ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Vec<i64>>,
    /// Unfreeze: whether it was frozen, the held job that runs now, the held ones superseded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_frozen: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded: Option<Vec<i64>>,
}

/// Every refusal: 400, 401, 403, 404, 405, 409, 413, 429, 503.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::server) struct ApiError {
    pub error: String,
}

/// `POST entries/{name}/run`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::server) struct RunRequest {
    /// The branch (WH_BRANCH); or `tag`, not both. Without either: the entry's usual ref.
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The commit (WH_AFTER), 4 to 64 hex digits.
    pub commit: Option<String>,
    /// Run a frozen entry (admin tokens only).
    #[serde(default)]
    pub force: bool,
}

/// `POST entries/{name}/rollback`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::server) struct RollbackRequest {
    /// A release's commit (or its prefix) or job id; default the release before the current one.
    pub to: Option<CommitOrJob>,
    /// Roll back a frozen entry (admin tokens only).
    #[serde(default)]
    pub force: bool,
}

/// A commit (or its prefix), or a job's id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(in crate::server) enum CommitOrJob {
    Job(i64),
    Commit(String),
}

/// `POST entries/{name}/freeze`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::server) struct FreezeRequest {
    /// Why (one line, at most 500 bytes); shown by /health, --jobs and the page.
    pub reason: Option<String>,
}
