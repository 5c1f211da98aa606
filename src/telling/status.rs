//! Commit statuses: a job's state, reported to the commit on the host its event came from,
//! through that host's status API as its adapter describes it ([`providers::status`]): this
//! module words the job's state, checks where the token may go, and sends.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;

use crate::outbound::{Outbound, SendError};
use crate::providers::status::{ApiCall, DeploymentOf, Phase, Status, StatusApi};
use crate::providers::{self, status::NotPublic};
use crate::settings::StatusSink;
use crate::store::JobState;
use crate::telling::policy::{short, Report};

/// GitHub's (and most hosts') limit on a status description.
const DESCRIPTION_MAX: usize = 140;

/// The phase and description of a report: every job state has its own, no fallback.
pub fn phase(report: &Report) -> (Phase, String) {
    let reason = report.reason.clone().unwrap_or_default();
    let (phase, text) = match report.state {
        JobState::Queued => (Phase::Queued, "queued".to_string()),
        // "held: <why the entry is frozen>": waiting for a person, and saying so.
        JobState::Held => (Phase::Queued, reason.clone()),
        JobState::Running => (Phase::Deploying, "deploying".to_string()),
        JobState::Succeeded => {
            (Phase::Success, report.duration().map_or("deployed".into(), |d| format!("deployed in {d}")))
        }
        // "rolled back to abc1234 (job 7): ...": what a person wants to read first.
        JobState::Failed | JobState::TimedOut if reason.starts_with("rolled back to ") => {
            (Phase::Failure, reason)
        }
        JobState::Failed => (Phase::Failure, format!("failed: {reason}")),
        JobState::TimedOut => (Phase::Failure, reason.clone()),
        JobState::Superseded => (
            Phase::Error,
            report
                .superseded_by
                .as_deref()
                .map_or("superseded".into(), |c| format!("superseded by {}", short(c))),
        ),
        JobState::Cancelled => (Phase::Error, format!("cancelled: {reason}")),
    };
    (phase, text.chars().take(DESCRIPTION_MAX).collect())
}

/// Whether a repository name from an event can go into an API path as it is: segments of
/// letters, digits, `-`, `_` and `.`, none of them `.` or `..` (a signed payload is still not
/// allowed to steer the request elsewhere on the host).
fn safe_repo(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 512
        && repo.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

/// The request of an [`ApiCall`], with the usual headers.
fn post(call: ApiCall) -> Result<Request<Full<Bytes>>, SendError> {
    let bytes = serde_json::to_vec(&call.body).map_err(|e| SendError::Invalid(e.to_string()))?;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&call.url)
        .header(header::USER_AGENT, concat!("wh-automata/", env!("CARGO_PKG_VERSION")))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json");
    for (name, value) in call.headers {
        let headers = builder.headers_mut().ok_or_else(|| SendError::Invalid("bad request".into()))?;
        let value = header::HeaderValue::from_str(&value)
            .map_err(|_| SendError::Invalid("the token cannot go in a header: check status.token".into()))?;
        headers.insert(name, value);
    }
    builder
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|_| SendError::Invalid("the status URL is not valid: check status.api_url".into()))
}

/// Where a report's status goes, once checked: the host's API and its base URL (the commit
/// and the repository were found fit to go into a path).
pub struct Destination {
    api: &'static StatusApi,
    base: String,
}

/// Why a report's status cannot be sent at all.
#[derive(Debug)]
pub enum Unsendable {
    /// The repository is not on its host's public site and the settings name no API.
    NotPublic(NotPublic),
    Invalid(String),
}

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsendable::NotPublic(np) => write!(
                f,
                "the repository is on {:?}, not its provider's public host, and status.api_url is not set",
                np.host.chars().take(100).collect::<String>()
            ),
            Unsendable::Invalid(why) => f.write_str(why),
        }
    }
}

/// Checks that `report` can get a status through `sink`, and where it goes.
pub fn destination(report: &Report, sink: &StatusSink) -> Result<Destination, Unsendable> {
    let api = report
        .provider
        .and_then(|p| providers::status_api(p, &report.provider_event))
        .ok_or_else(|| Unsendable::Invalid(format!("{} has no commit status API", report.provider_name())))?;
    let base = api.api_base(&report.repo_url, sink.api_url.as_deref()).map_err(Unsendable::NotPublic)?;
    let sha = &report.commit;
    if !sha.bytes().all(|b| b.is_ascii_hexdigit()) || sha.is_empty() {
        return Err(Unsendable::Invalid("the event names no commit".into()));
    }
    if !safe_repo(&report.repo) {
        return Err(Unsendable::Invalid(format!(
            "the repository name {:?} is not one to put in an API path",
            report.repo.chars().take(100).collect::<String>()
        )));
    }
    Ok(Destination { api, base })
}

impl Destination {
    /// Whether this status is a deployment's, which needs the deployment made first.
    pub fn is_deployment(&self, sink: &StatusSink) -> bool {
        self.api.deployments().is_some() && sink.deployment.is_some()
    }

    fn status<'a>(
        &'a self,
        report: &'a Report,
        sink: &'a StatusSink,
        link: Option<&'a str>,
        description: &'a str,
    ) -> Status<'a> {
        Status {
            api: &self.base,
            token: sink.token.expose_str(),
            repo: &report.repo,
            repo_url: &report.repo_url,
            commit: &report.commit,
            git_ref: report.branch.as_deref().or(report.tag.as_deref()).unwrap_or(&report.git_ref),
            phase: phase(report).0,
            description,
            context: &sink.context,
            link,
        }
    }
}

/// Sends the status of `report` to `to`. `link`: the job's page, if the daemon has a public
/// URL. `deployment`: the job's deployment (see [`create_deployment`]), for a sink with
/// `deployment:`.
pub async fn send(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    to: &Destination,
    link: Option<&str>,
    deployment: Option<&str>,
) -> Result<(), SendError> {
    let (_, description) = phase(report);
    let status = to.status(report, sink, link, &description);
    let call = match (to.api.deployments(), &sink.deployment) {
        (Some(deployments), Some(environment)) => {
            let Some(id) = deployment else {
                return Err(SendError::Invalid("no deployment was made for this job".into()));
            };
            deployments.status(&status, id, environment)
        }
        _ => to.api.request(&status),
    };
    client.send(post(call)?).await?;
    Ok(())
}

/// The Deployments API: makes the job's deployment (at its first report); returns its id,
/// which the caller records before any status of it is posted, so that a failed post is tried
/// again on the same deployment instead of making another.
pub async fn create_deployment(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    to: &Destination,
) -> Result<String, SendError> {
    let Some(deployments) = to.api.deployments() else {
        return Err(SendError::Invalid(format!("{} has no Deployments API", report.provider_name())));
    };
    let (_, description) = phase(report);
    let status = to.status(report, sink, None, &description);
    let of = DeploymentOf {
        environment: sink.deployment.as_deref().unwrap_or_default(),
        entry: &report.entry,
        job: report.job,
    };
    let reply = client.send(post(deployments.create(&status, &of))?).await?;
    deployments.made(&reply.body).map_err(SendError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_repository_names_go_into_a_path() {
        for good in ["acme/blog", "group/sub/proj.name", "Codertocat/Hello-World", "a_b/c-d"] {
            assert!(safe_repo(good), "{good}");
        }
        for bad in [
            "",
            "acme/../admin",
            "acme/blog?x=1",
            "acme//blog",
            "acme/blog#x",
            "acme/ blog",
            "./x",
            "acme/%2e%2e",
        ] {
            assert!(!safe_repo(bad), "{bad}");
        }
    }

    /// Every job state has its phase: a job never stays pending, a superseded one says by
    /// which commit.
    #[test]
    fn each_state_has_its_phase() {
        let mut r = Report::test_report();
        let want = [
            (JobState::Queued, Phase::Queued),
            (JobState::Held, Phase::Queued),
            (JobState::Running, Phase::Deploying),
            (JobState::Succeeded, Phase::Success),
            (JobState::Failed, Phase::Failure),
            (JobState::TimedOut, Phase::Failure),
            (JobState::Cancelled, Phase::Error),
            (JobState::Superseded, Phase::Error),
        ];
        assert_eq!(want.len(), JobState::ALL.len());
        for (state, phase_of) in want {
            r.state = state;
            assert_eq!(phase(&r).0, phase_of, "{state:?}");
        }
        r.state = JobState::Superseded;
        r.superseded_by = Some("0123456789abcdef".into());
        assert_eq!(phase(&r), (Phase::Error, "superseded by 0123456".into()));
        // A failure that was rolled back says so first.
        r.state = JobState::Failed;
        r.reason = Some("rolled back to abc1234 (job 7): verify failed: http://x/ answered 500".into());
        assert_eq!(phase(&r).1, "rolled back to abc1234 (job 7): verify failed: http://x/ answered 500");
        r.reason = Some("action 1 exited with 2".into());
        assert_eq!(phase(&r).1, "failed: action 1 exited with 2");
        r.state = JobState::Held;
        r.reason = Some("held: maintenance".into());
        assert_eq!(phase(&r), (Phase::Queued, "held: maintenance".into()));
    }
}
