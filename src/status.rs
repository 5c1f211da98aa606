//! Commit statuses: a job's state, reported to the commit on the host its event came from.
//!
//! GitHub (commit statuses, or the Deployments API for an entry with `deployment:`), Gitea and
//! Forgejo (commit statuses), GitLab (commit statuses with `ref` and `name`), Bitbucket Cloud
//! and Bitbucket Server / Data Center (build statuses). Gogs has none. Each host's request is
//! the one its API documents: method, path, auth header, JSON fields.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::outbound::{Outbound, SendError};
use crate::report::{short, Report};
use crate::settings::StatusSink;

/// GitHub's (and most hosts') limit on a status description.
const DESCRIPTION_MAX: usize = 140;

/// What a job's state is on the commit: the generic state, and the words beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Deploying,
    Success,
    Failure,
    Error,
}

/// The state and description of a report.
pub fn phase(report: &Report) -> (Phase, String) {
    let reason = report.reason.clone().unwrap_or_default();
    let (phase, text) = match report.state.as_str() {
        "queued" => (Phase::Queued, "queued".to_string()),
        "running" => (Phase::Deploying, "deploying".to_string()),
        "succeeded" => {
            (Phase::Success, report.duration().map_or("deployed".into(), |d| format!("deployed in {d}")))
        }
        "failed" => (Phase::Failure, format!("failed: {reason}")),
        "timed_out" => (Phase::Failure, reason.clone()),
        "superseded" => (
            Phase::Error,
            report
                .superseded_by
                .as_deref()
                .map_or("superseded".into(), |c| format!("superseded by {}", short(c))),
        ),
        _ => (Phase::Error, format!("cancelled: {reason}")),
    };
    (phase, text.chars().take(DESCRIPTION_MAX).collect())
}

/// Each host's word for a phase (`deployments`: GitHub's Deployments API, not its statuses).
pub fn word(host: Host, deployments: bool, phase: Phase) -> &'static str {
    use Phase::*;
    match (host, phase) {
        (Host::Github, Queued) if deployments => "queued",
        (Host::Github, Deploying) if deployments => "in_progress",
        (Host::Github | Host::Gitea, Queued | Deploying) => "pending",
        (Host::Github | Host::Gitea, Success) => "success",
        (Host::Github | Host::Gitea, Failure) => "failure",
        (Host::Github | Host::Gitea, Error) => "error",
        (Host::Gitlab, Queued) => "pending",
        (Host::Gitlab, Deploying) => "running",
        (Host::Gitlab, Success) => "success",
        (Host::Gitlab, Failure) => "failed",
        (Host::Gitlab, Error) => "canceled",
        (Host::BitbucketCloud | Host::BitbucketServer, Queued | Deploying) => "INPROGRESS",
        (Host::BitbucketCloud | Host::BitbucketServer, Success) => "SUCCESSFUL",
        (Host::BitbucketCloud | Host::BitbucketServer, Failure) => "FAILED",
        // Bitbucket Server's build status has no word for "stopped".
        (Host::BitbucketCloud, Error) => "STOPPED",
        (Host::BitbucketServer, Error) => "FAILED",
    }
}

/// Which host API an event's provider means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Github,
    Gitea,
    Gitlab,
    BitbucketCloud,
    BitbucketServer,
}

impl Host {
    /// The host of a report, if it has a status API.
    pub fn of(report: &Report) -> Option<Host> {
        match report.provider.as_str() {
            "github" => Some(Host::Github),
            "gitea" => Some(Host::Gitea),
            "gitlab" => Some(Host::Gitlab),
            // Bitbucket Server / Data Center names its events `repo:refs_changed`, `pr:...`.
            "bitbucket"
                if report.provider_event.starts_with("repo:refs_changed")
                    || report.provider_event.starts_with("pr:")
                    || report.provider_event.starts_with("mirror:") =>
            {
                Some(Host::BitbucketServer)
            }
            "bitbucket" => Some(Host::BitbucketCloud),
            _ => None,
        }
    }
}

/// The scheme and authority of `url` (`https://host:8443`) and its path.
fn origin(url: &str) -> Option<(&str, &str)> {
    let after = url.find("://")? + 3;
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    (end > after).then(|| (&url[..end], &url[end..]))
}

/// The public host of each provider that has one, and its API: the only API a token goes to
/// without `status.api_url`.
const PUBLIC: [(Host, &str, &str); 3] = [
    (Host::Github, "https://github.com", "https://api.github.com"),
    (Host::Gitlab, "https://gitlab.com", "https://gitlab.com/api/v4"),
    (Host::BitbucketCloud, "https://bitbucket.org", "https://api.bitbucket.org/2.0"),
];

/// Why a report gets no status without `status.api_url`: its repository does not live on its
/// provider's public host. `host` is where the event says it lives (for the warning), as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPublic {
    pub host: String,
}

/// The API a report's status goes to: `status.api_url` when the settings name one, else the
/// provider's own public API over HTTPS, and only for an event whose repository lives on that
/// public host. The event's URLs never choose where the token goes: a signed payload naming
/// another host (or plain HTTP) gets no status, and so does an event of a self-hosted server
/// (GitHub Enterprise, GitLab, Gitea, Forgejo, Bitbucket Server) until `api_url` names it.
pub fn api_base(host: Host, report: &Report, sink: &StatusSink) -> Result<String, NotPublic> {
    if let Some(api) = &sink.api_url {
        return Ok(api.clone());
    }
    let event_origin = origin(&report.repo_url).map(|(o, _)| o).unwrap_or_default();
    PUBLIC
        .iter()
        .find(|(h, public, _)| *h == host && event_origin.eq_ignore_ascii_case(public))
        .map(|(_, _, api)| api.to_string())
        .ok_or_else(|| NotPublic {
            host: if event_origin.is_empty() { report.repo_url.clone() } else { event_origin.to_string() },
        })
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

/// A JSON request with the usual headers.
fn post(url: &str, auth: (&'static str, String), body: &Value) -> Result<Request<Full<Bytes>>, SendError> {
    let bytes = serde_json::to_vec(body).map_err(|e| SendError::Invalid(e.to_string()))?;
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::USER_AGENT, concat!("wh-automata/", env!("CARGO_PKG_VERSION")))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(auth.0, auth.1)
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|_| SendError::Invalid("the status URL is not valid: check status.api_url".into()))
}

/// A path segment, percent-encoded (GitLab's project path, a ref).
fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Basic auth (`user:password`) or a bearer token, as Bitbucket takes either.
fn bitbucket_auth(token: &str) -> (&'static str, String) {
    if token.contains(':') {
        ("authorization", format!("Basic {}", base64(token.as_bytes())))
    } else {
        ("authorization", format!("Bearer {token}"))
    }
}

/// Standard base64 with padding (only for Basic auth: not worth a dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where a report's status goes, once checked: the host and its API (the commit and the
/// repository were found fit to go into a path).
pub struct Destination {
    host: Host,
    api: String,
}

/// Why a report's status cannot be sent at all.
#[derive(Debug)]
pub enum Unsendable {
    /// The repository is not on its provider's public host and the settings name no API.
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
    let host = Host::of(report)
        .ok_or_else(|| Unsendable::Invalid(format!("{} has no commit status API", report.provider)))?;
    let api = api_base(host, report, sink).map_err(Unsendable::NotPublic)?;
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
    Ok(Destination { host, api })
}

impl Destination {
    /// Whether this status is a GitHub deployment's, which needs the deployment made first.
    pub fn is_deployment(&self, sink: &StatusSink) -> bool {
        self.host == Host::Github && sink.deployment.is_some()
    }
}

/// Sends the status of `report` to `to`. `link`: the job's page, if the daemon has a public
/// URL. `deployment`: GitHub's deployment for this job (see [`create_deployment`]), for a sink
/// with `deployment:`.
pub async fn send(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    to: &Destination,
    link: Option<&str>,
    deployment: Option<&str>,
) -> Result<(), SendError> {
    let (host, api) = (to.host, to.api.as_str());
    let (phase, description) = phase(report);
    let token = sink.token.expose_str();
    let sha = &report.commit;
    let repo = &report.repo;
    let context = &sink.context;
    let request = match host {
        Host::Github if sink.deployment.is_some() => {
            let Some(id) = deployment else {
                return Err(SendError::Invalid("no GitHub deployment was made for this job".into()));
            };
            return deployment_status(client, report, sink, api, link, id).await;
        }
        Host::Github => github_request(
            &format!("{api}/repos/{repo}/statuses/{sha}"),
            token,
            &commit_status(phase, &description, context, link),
        )?,
        // Gitea's commit status API has GitHub's shape, with its own auth header.
        Host::Gitea => post(
            &format!("{api}/repos/{repo}/statuses/{sha}"),
            ("authorization", format!("token {token}")),
            &commit_status(phase, &description, context, link),
        )?,
        Host::Gitlab => {
            let state = word(host, false, phase);
            let git_ref = report.branch.as_deref().or(report.tag.as_deref()).unwrap_or(&report.git_ref);
            let mut body =
                json!({ "state": state, "ref": git_ref, "name": context, "description": description });
            if let Some(link) = link {
                body["target_url"] = link.into();
            }
            let url = format!("{api}/projects/{}/statuses/{sha}", segment(repo));
            post(&url, ("private-token", token.to_string()), &body)?
        }
        Host::BitbucketCloud | Host::BitbucketServer => {
            let state = word(host, false, phase);
            // The key is at most 40 characters on Bitbucket Cloud; the URL is required.
            let key: String = context.chars().take(40).collect();
            let url =
                link.map(str::to_string).unwrap_or_else(|| report.repo_url.trim_end_matches(".git").into());
            let body = json!({ "key": key, "state": state, "name": context, "url": url, "description": description });
            let endpoint = match host {
                Host::BitbucketCloud => format!("{api}/repositories/{repo}/commit/{sha}/statuses/build"),
                _ => format!("{api}/rest/build-status/1.0/commits/{sha}"),
            };
            post(&endpoint, bitbucket_auth(token), &body)?
        }
    };
    client.send(request).await?;
    Ok(())
}

/// The body of a GitHub (or Gitea) commit status.
fn commit_status(phase: Phase, description: &str, context: &str, link: Option<&str>) -> Value {
    let state = word(Host::Github, false, phase);
    let mut body = json!({ "state": state, "description": description, "context": context });
    if let Some(link) = link {
        body["target_url"] = link.into();
    }
    body
}

fn github_request(url: &str, token: &str, body: &Value) -> Result<Request<Full<Bytes>>, SendError> {
    let mut request = post(url, ("authorization", format!("Bearer {token}")), body)?;
    let headers = request.headers_mut();
    headers.insert(header::ACCEPT, header::HeaderValue::from_static("application/vnd.github+json"));
    headers.insert("x-github-api-version", header::HeaderValue::from_static("2022-11-28"));
    Ok(request)
}

/// GitHub's Deployments API: makes the job's deployment (at its first report); returns its id,
/// which the caller records before any status of it is posted, so that a failed post is tried
/// again on the same deployment instead of making another.
pub async fn create_deployment(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    to: &Destination,
) -> Result<String, SendError> {
    let environment = sink.deployment.as_deref().unwrap_or_default();
    let body = json!({
        "ref": report.commit,
        "environment": environment,
        "auto_merge": false,
        "required_contexts": [],
        "description": format!("{} job {}", report.entry, report.job),
        "payload": { "job": report.job, "entry": report.entry },
    });
    let url = format!("{}/repos/{}/deployments", to.api, report.repo);
    let reply = client.send(github_request(&url, sink.token.expose_str(), &body)?).await?;
    let made: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    match made.get("id").and_then(Value::as_i64) {
        Some(id) => Ok(id.to_string()),
        None => Err(SendError::Invalid(format!(
            "GitHub made no deployment: {}",
            made.get("message").and_then(Value::as_str).unwrap_or("no id in its answer")
        ))),
    }
}

/// A status of the job's GitHub deployment `id`.
async fn deployment_status(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    api: &str,
    link: Option<&str>,
    id: &str,
) -> Result<(), SendError> {
    let environment = sink.deployment.as_deref().unwrap_or_default();
    let (phase, description) = phase(report);
    let state = word(Host::Github, true, phase);
    let mut body = json!({ "state": state, "description": description, "environment": environment });
    if let Some(link) = link {
        body["log_url"] = link.into();
    }
    let url = format!("{api}/repos/{}/deployments/{id}/statuses", report.repo);
    client.send(github_request(&url, sink.token.expose_str(), &body)?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(provider: &str, event: &str, repo: &str, url: &str) -> Report {
        Report {
            job: 1,
            entry: "site".into(),
            trigger: "webhook".into(),
            state: "queued".into(),
            kind: "queued".into(),
            provider: provider.into(),
            provider_event: event.into(),
            repo: repo.into(),
            repo_url: url.into(),
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

    /// Without `api_url`, a token goes only to the provider's public API, for a repository on
    /// its public host; whatever the event's URLs say otherwise, there is no status.
    #[test]
    fn a_token_goes_only_where_the_settings_say() {
        let sink = |api: Option<&str>| StatusSink {
            token: crate::settings::Secret::new("t"),
            context: "deploy".into(),
            api_url: api.map(str::to_string),
            deployment: None,
        };
        let public = [
            ("github", "push", "acme/blog", "https://github.com/acme/blog.git", "https://api.github.com"),
            (
                "gitlab",
                "push",
                "g/sub/proj",
                "https://gitlab.com/g/sub/proj.git",
                "https://gitlab.com/api/v4",
            ),
            (
                "bitbucket",
                "repo:push",
                "ws/repo",
                "https://bitbucket.org/ws/repo",
                "https://api.bitbucket.org/2.0",
            ),
        ];
        for (provider, event, repo, url, want) in public {
            let r = report(provider, event, repo, url);
            assert_eq!(api_base(Host::of(&r).unwrap(), &r, &sink(None)).unwrap(), want, "{url}");
        }
        let elsewhere = [
            ("github", "push", "https://ghe.example.com/acme/blog.git", "https://ghe.example.com"),
            ("github", "push", "http://github.com/acme/blog.git", "http://github.com"),
            (
                "github",
                "push",
                "https://github.com.evil.example/acme/blog.git",
                "https://github.com.evil.example",
            ),
            (
                "github",
                "push",
                "https://github.com@evil.example/acme/blog.git",
                "https://github.com@evil.example",
            ),
            ("gitlab", "push", "http://gitlab.example.com:8080/g/p.git", "http://gitlab.example.com:8080"),
            ("gitea", "push", "https://codeberg.org/acme/blog.git", "https://codeberg.org"),
            (
                "bitbucket",
                "repo:refs_changed",
                "https://bb.example.com/scm/prj/repo.git",
                "https://bb.example.com",
            ),
            ("gitea", "push", "git@git.example.com:acme/blog.git", "git@git.example.com:acme/blog.git"),
        ];
        for (provider, event, url, host) in elsewhere {
            let r = report(provider, event, "acme/blog", url);
            let err = api_base(Host::of(&r).unwrap(), &r, &sink(None)).unwrap_err();
            assert_eq!(err.host, host, "{url}");
            // With api_url, that API, whatever the event says.
            let api = "https://git.internal.example/api/v1";
            assert_eq!(api_base(Host::of(&r).unwrap(), &r, &sink(Some(api))).unwrap(), api);
        }
    }

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

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:app-password"), "dXNlcjphcHAtcGFzc3dvcmQ=");
    }

    /// Every job state, in each host's words: a job never stays pending, and a superseded or
    /// cancelled one is an error where the host has the word.
    #[test]
    fn each_state_in_each_host_s_words() {
        let states = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "superseded"];
        let hosts = [
            (Host::Github, false, ["pending", "pending", "success", "failure", "failure", "error", "error"]),
            (
                Host::Github,
                true,
                ["queued", "in_progress", "success", "failure", "failure", "error", "error"],
            ),
            (Host::Gitea, false, ["pending", "pending", "success", "failure", "failure", "error", "error"]),
            (
                Host::Gitlab,
                false,
                ["pending", "running", "success", "failed", "failed", "canceled", "canceled"],
            ),
            (
                Host::BitbucketCloud,
                false,
                ["INPROGRESS", "INPROGRESS", "SUCCESSFUL", "FAILED", "FAILED", "STOPPED", "STOPPED"],
            ),
            (
                Host::BitbucketServer,
                false,
                ["INPROGRESS", "INPROGRESS", "SUCCESSFUL", "FAILED", "FAILED", "FAILED", "FAILED"],
            ),
        ];
        for (host, deployments, words) in hosts {
            for (state, want) in states.iter().zip(words) {
                let mut r = report("github", "push", "a/b", "https://github.com/a/b");
                r.state = state.to_string();
                assert_eq!(word(host, deployments, phase(&r).0), want, "{host:?} {state}");
            }
        }
    }

    #[test]
    fn a_superseded_job_says_by_which_commit() {
        let mut r = report("github", "push", "a/b", "https://github.com/a/b");
        r.state = "superseded".into();
        r.superseded_by = Some("0123456789abcdef".into());
        assert_eq!(phase(&r), (Phase::Error, "superseded by 0123456".into()));
    }
}
