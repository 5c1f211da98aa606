//! What the API's routes answer: jobs and entries as JSON, a job's log as text, a run queued,
//! an entry frozen or unfrozen.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::shapes::{
    Cancelled, CommitOrJob, Entries, EntryView, FreezeRequest, Freezing, JobView, JobsPage, Queued,
    ReleaseRef, Releases, RollbackRequest, RunRequest,
};

use crate::app::{blocking, App};
use crate::control::Reply;
use crate::event::{Event, Trigger};
use crate::settings::Scope;
use crate::store::{JobFilter, JobState, NewJob};

/// An answer, or a refusal (status and why).
pub(in crate::server) type Result<T> = std::result::Result<T, (StatusCode, String)>;

/// What a route answers: its status and the JSON (the API sends it; the page shows it).
pub(in crate::server) type Done = (StatusCode, Value);

/// The longest `?wait=`.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The most jobs a page holds.
const MAX_LIMIT: usize = 200;

fn store_error(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("the job store: {e}"))
}

fn bad(message: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.into())
}

/// A shape as the JSON the route answers.
fn value(shape: impl serde::Serialize) -> Value {
    serde_json::to_value(shape).unwrap_or(Value::Null)
}

/// A request's body read into its shape (an empty body is the shape's default).
fn body_of<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("the body: {e}")))
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// `?wait=`: how long, at most [`MAX_WAIT`].
fn wait_of(pairs: &[(String, String)]) -> Result<Option<Duration>> {
    match pairs.iter().find(|(k, _)| k == "wait") {
        None => Ok(None),
        Some((_, v)) => humantime::parse_duration(v)
            .map(|d| Some(d.min(MAX_WAIT)))
            .map_err(|e| bad(format!("wait={v:?}: {e} (say 30s, 10m)"))),
    }
}

pub(in crate::server) async fn entries(app: &Arc<App>) -> Result<Done> {
    let settings = app.settings();
    let names: Vec<String> = settings.entries.iter().map(|e| e.name.clone()).collect();
    drop(settings);
    let store = app.store.clone();
    let listed = blocking(move || -> std::result::Result<Vec<EntryView>, crate::store::StoreError> {
        let counts = store.counts()?;
        let frozen = store.frozen()?;
        let mut out = Vec::new();
        for name in names {
            let last =
                store.jobs(&JobFilter { entry: Some(name.clone()), limit: 1, ..JobFilter::default() })?;
            let release = store.releases(&name, 1)?;
            let c = counts.get(&name).copied().unwrap_or_default();
            let frozen = frozen.iter().find(|f| f.entry == name).map(|f| f.reason.clone());
            out.push(EntryView {
                name,
                frozen,
                last_job: last.first().map(JobView::from),
                release: release.first().map(|j| ReleaseRef { commit: j.event.after.clone(), job: j.id }),
                running: c.running,
                waiting: c.waiting,
                held: c.held,
            });
        }
        Ok(out)
    })
    .await
    .map_err(store_error)?;
    Ok((StatusCode::OK, value(Entries { entries: listed })))
}

/// The filter of `GET jobs`.
fn filter_of(pairs: &[(String, String)]) -> Result<JobFilter> {
    let mut filter = JobFilter { limit: 50, ..JobFilter::default() };
    for (key, value) in pairs {
        match key.as_str() {
            "entry" => filter.entry = Some(value.clone()),
            "state" => {
                filter.state = Some(JobState::parse(value).ok_or_else(|| bad(format!("no state {value:?}")))?)
            }
            "trigger" => {
                filter.trigger =
                    Some(Trigger::parse(value).ok_or_else(|| bad(format!("no trigger {value:?}")))?)
            }
            "commit" => {
                if value.len() < 4 || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("commit: 4 to 64 hex digits"));
                }
                filter.commit = Some(value.clone());
            }
            "limit" => {
                let n: usize = value.parse().map_err(|_| bad("limit: a number"))?;
                filter.limit = n.clamp(1, MAX_LIMIT);
            }
            "before" => filter.before = Some(value.parse().map_err(|_| bad("before: a job id"))?),
            "wait" => {}
            other => {
                return Err(bad(format!(
                    "no filter {other:?}: entry, state, commit, trigger, limit, before, wait"
                )))
            }
        }
    }
    Ok(filter)
}

pub(in crate::server) async fn jobs(app: &Arc<App>, query: &str) -> Result<Done> {
    let pairs = query_pairs(query);
    let filter = filter_of(&pairs)?;
    let wait = wait_of(&pairs)?;
    if wait.is_some() && (filter.entry.is_none() || filter.commit.is_none()) {
        return Err(bad("wait on jobs needs entry= and commit= (the job of that commit)"));
    }
    let until = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let store = app.store.clone();
        let f = filter.clone();
        let jobs = blocking(move || store.jobs(&f)).await.map_err(store_error)?;
        let done = jobs.first().is_some_and(|j| j.state.is_final());
        if wait.is_none() || done || tokio::time::Instant::now() >= until {
            let status = if wait.is_some() && !done { StatusCode::ACCEPTED } else { StatusCode::OK };
            let next = (jobs.len() == filter.limit).then(|| jobs.last().map(|j| j.id)).flatten();
            let jobs = jobs.iter().map(JobView::from).collect();
            return Ok((status, value(JobsPage { jobs, next_before: next })));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn id_of(id: &str) -> Result<i64> {
    id.parse().map_err(|_| (StatusCode::NOT_FOUND, format!("no job {id:?}")))
}

pub(in crate::server) async fn job(app: &Arc<App>, id: &str, query: &str) -> Result<Done> {
    let id = id_of(id)?;
    let pairs = query_pairs(query);
    let wait = wait_of(&pairs)?;
    let until = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let store = app.store.clone();
        let found = blocking(move || -> std::result::Result<_, crate::store::StoreError> {
            Ok(store.job(id)?.map(|job| (job, store.job_hosts(id))))
        })
        .await
        .map_err(store_error)?;
        let Some((job, hosts)) = found else { return Err((StatusCode::NOT_FOUND, format!("no job {id}"))) };
        let done = job.state.is_final();
        if wait.is_none() || done || tokio::time::Instant::now() >= until {
            let status = if wait.is_some() && !done { StatusCode::ACCEPTED } else { StatusCode::OK };
            let mut view = JobView::from(&job);
            let hosts = hosts.map_err(store_error)?;
            if !hosts.is_empty() {
                view.hosts = Some(hosts.iter().map(super::shapes::HostView::from).collect());
            }
            return Ok((status, value(view)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(in crate::server) async fn releases(app: &Arc<App>, name: &str) -> Result<Done> {
    if app.settings().entry(name).is_none() {
        return Err((StatusCode::NOT_FOUND, format!("no entry {name:?}")));
    }
    let store = app.store.clone();
    let entry = name.to_string();
    let releases = blocking(move || store.releases(&entry, 50)).await.map_err(store_error)?;
    let releases = releases.iter().map(JobView::from).collect();
    Ok((StatusCode::OK, value(Releases { releases })))
}

/// `POST jobs/{id}/cancel`: a waiting job is cancelled at once (200); a running one is asked to
/// stop, its process groups killed (202: its end follows); an ended one is 409.
pub(in crate::server) async fn cancel(app: &Arc<App>, id: &str, by: &str) -> Result<Done> {
    let id = id_of(id)?;
    let why = format!("cancelled through the API (token {by:?})");
    let store = app.store.clone();
    let reason = why.clone();
    if blocking(move || store.cancel_waiting(id, &reason)).await.map_err(store_error)? {
        return Ok((StatusCode::OK, value(Cancelled { job: id, state: "cancelled".into() })));
    }
    if app.cancels.request(id, &why) {
        return Ok((StatusCode::ACCEPTED, value(Cancelled { job: id, state: "cancelling".into() })));
    }
    let store = app.store.clone();
    match blocking(move || store.job(id)).await.map_err(store_error)? {
        None => Err((StatusCode::NOT_FOUND, format!("no job {id}"))),
        Some(job) if job.state.is_final() => {
            Err((StatusCode::CONFLICT, format!("job {id} has ended: {}", job.state.as_str())))
        }
        Some(_) => Err((
            StatusCode::CONFLICT,
            format!("job {id} runs outside this daemon (a manual run in the foreground): stop it there"),
        )),
    }
}

/// Whether a run of `name` may go: 409 when it is frozen, unless an admin forces it.
async fn not_frozen(app: &Arc<App>, name: &str, force: bool, scope: Scope) -> Result<()> {
    if app.settings().entry(name).is_none() {
        return Err((StatusCode::NOT_FOUND, format!("no entry {name:?}")));
    }
    let store = app.store.clone();
    let entry = name.to_string();
    match blocking(move || store.frozen_reason(&entry)).await.map_err(store_error)? {
        Some(why) if !(force && scope >= Scope::Admin) => Err((
            StatusCode::CONFLICT,
            format!("entry {name} is frozen ({why}): an admin token may force it"),
        )),
        _ => Ok(()),
    }
}

/// Queues `job`; its id.
async fn queue(app: &Arc<App>, job: NewJob) -> Result<i64> {
    let app2 = app.clone();
    let enqueued = blocking(move || app2.enqueue(None, Bytes::new(), vec![job]))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    enqueued.queued.first().map(|(id, _)| *id).ok_or_else(|| store_error("no job was recorded"))
}

/// `POST entries/{name}/rollback`: `{"to": SHA|JOB, "force": bool}`.
pub(in crate::server) async fn rollback(
    app: &Arc<App>,
    name: &str,
    body: &Bytes,
    scope: Scope,
) -> Result<Done> {
    let ask: RollbackRequest = body_of(body)?;
    let to = ask.to.map(|to| match to {
        CommitOrJob::Job(id) => id.to_string(),
        CommitOrJob::Commit(commit) => commit,
    });
    not_frozen(app, name, ask.force, scope).await?;
    let store = app.store.clone();
    let entry = name.to_string();
    let target =
        blocking(move || Ok::<_, crate::store::StoreError>(store.rollback_target(&entry, to.as_deref())))
            .await
            .map_err(store_error)?;
    let (event, release) = target.map_err(|e| match e {
        crate::store::NoRelease::Store(e) => store_error(e),
        other => (StatusCode::CONFLICT, other.to_string()),
    })?;
    let commit = event.after.clone();
    let id = queue(app, NewJob { entry: name.to_string(), trigger: Trigger::Rollback, event }).await?;
    let to = Some(ReleaseRef { commit, job: release });
    Ok((StatusCode::ACCEPTED, value(Queued { status: "queued".into(), job: id, to })))
}

/// `POST entries/{name}/run`: `{"branch"|"tag": NAME, "commit": SHA, "force": bool}`.
pub(in crate::server) async fn run(app: &Arc<App>, name: &str, body: &Bytes, scope: Scope) -> Result<Done> {
    let ask: RunRequest = body_of(body)?;
    let (branch, tag, commit, force) = (ask.branch, ask.tag, ask.commit, ask.force);
    if branch.is_some() && tag.is_some() {
        return Err(bad("give branch or tag, not both"));
    }
    let valid =
        |s: &String| !s.is_empty() && s.len() <= 255 && !s.chars().any(|c| c.is_control() || c == ' ');
    if branch.iter().chain(&tag).any(|s| !valid(s)) {
        return Err(bad("branch or tag: a name without blanks or control characters"));
    }
    if commit
        .as_ref()
        .is_some_and(|c| c.len() < 4 || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(bad("commit: 4 to 64 hex digits"));
    }
    not_frozen(app, name, force, scope).await?;
    let git_ref = branch.map(|b| format!("refs/heads/{b}")).or(tag.map(|t| format!("refs/tags/{t}")));
    let mut event = Event::manual_ref(git_ref.as_deref(), commit.as_deref());
    event.pusher = String::new();
    let id = queue(app, NewJob { entry: name.to_string(), trigger: Trigger::Manual, event }).await?;
    Ok((StatusCode::ACCEPTED, value(Queued { status: "queued".into(), job: id, to: None })))
}

/// `POST entries/{name}/freeze` (`{"reason": TEXT}`) and `unfreeze`.
pub(in crate::server) async fn freeze(
    app: &Arc<App>,
    name: &str,
    freeze: bool,
    body: &Bytes,
) -> Result<Done> {
    let ask: FreezeRequest = body_of(body)?;
    let reason = ask.reason.as_deref().unwrap_or("frozen through the API").trim().to_string();
    if reason.chars().any(char::is_control) || reason.len() > 500 {
        return Err(bad("reason: one line of at most 500 bytes"));
    }
    let reply = crate::control::freezing(app, name.to_string(), freeze.then_some(reason)).await;
    match reply {
        Reply::Frozen { held } => Ok((
            StatusCode::OK,
            value(Freezing {
                frozen: true,
                held: Some(held),
                was_frozen: None,
                runs: None,
                superseded: None,
            }),
        )),
        Reply::Unfrozen { was_frozen, runs, superseded } => Ok((
            StatusCode::OK,
            value(Freezing {
                frozen: false,
                held: None,
                was_frozen: Some(was_frozen),
                runs,
                superseded: Some(superseded),
            }),
        )),
        Reply::Error { message } if message.contains("no entry named") => {
            Err((StatusCode::NOT_FOUND, message))
        }
        Reply::Error { message } => Err(store_error(message)),
        other => Err(store_error(format!("{other:?}"))),
    }
}
