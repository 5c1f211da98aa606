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

/// The API base of a report's host, when `status.api_url` does not give it: from the
/// repository's URL as the event sent it.
pub fn api_base(host: Host, report: &Report) -> Result<String, SendError> {
    let cannot = || {
        SendError::Invalid(format!(
            "cannot tell the host's API from the repository URL \"{}\": set status.api_url",
            report.repo_url
        ))
    };
    let (origin, path) = origin(&report.repo_url).ok_or_else(cannot)?;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    // A self-hosted host may live under a path: what is before the repository's own path.
    let prefix = |repo_path: &str| -> Result<String, SendError> {
        let lower = path.to_ascii_lowercase();
        let at = lower.rfind(&format!("/{}", repo_path.to_ascii_lowercase())).ok_or_else(cannot)?;
        Ok(format!("{origin}{}", &path[..at]))
    };
    Ok(match host {
        Host::Github if origin == "https://github.com" => "https://api.github.com".into(),
        Host::Github => format!("{}/api/v3", prefix(&report.repo)?),
        Host::Gitea => format!("{}/api/v1", prefix(&report.repo)?),
        Host::Gitlab => format!("{}/api/v4", prefix(&report.repo)?),
        Host::BitbucketCloud => "https://api.bitbucket.org/2.0".into(),
        // Clone URLs are <base>/scm/<project>/<repo>.git.
        Host::BitbucketServer => {
            let at = path.to_ascii_lowercase().rfind("/scm/").ok_or_else(cannot)?;
            format!("{origin}{}", &path[..at])
        }
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

/// Sends the status of `report`. `link`: the job's page, if the daemon has a public URL.
/// `remote`: GitHub's deployment for this job, when one was made; the one made now is returned.
pub async fn send(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    link: Option<&str>,
    remote: Option<&str>,
) -> Result<Option<String>, SendError> {
    let host = Host::of(report)
        .ok_or_else(|| SendError::Invalid(format!("{} has no commit status API", report.provider)))?;
    let api = match &sink.api_url {
        Some(api) => api.clone(),
        None => api_base(host, report)?,
    };
    let (phase, description) = phase(report);
    let token = sink.token.expose_str();
    let sha = &report.commit;
    if !sha.bytes().all(|b| b.is_ascii_hexdigit()) || sha.is_empty() {
        return Err(SendError::Invalid("the event names no commit".into()));
    }
    let repo = &report.repo;
    if !safe_repo(repo) {
        return Err(SendError::Invalid(format!(
            "the repository name {:?} is not one to put in an API path",
            repo.chars().take(100).collect::<String>()
        )));
    }
    let context = &sink.context;
    let request = match host {
        Host::Github if sink.deployment.is_some() => {
            return github_deployment(client, report, sink, &api, link, remote).await.map(Some);
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
    Ok(None)
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

/// GitHub's Deployments API: the job's deployment (made at its first report), then a status
/// of it for each change. Returns the deployment's id.
async fn github_deployment(
    client: &Outbound,
    report: &Report,
    sink: &StatusSink,
    api: &str,
    link: Option<&str>,
    remote: Option<&str>,
) -> Result<String, SendError> {
    let token = sink.token.expose_str();
    let repo = &report.repo;
    let environment = sink.deployment.as_deref().unwrap_or_default();
    let id = match remote {
        Some(id) => id.to_string(),
        None => {
            let body = json!({
                "ref": report.commit,
                "environment": environment,
                "auto_merge": false,
                "required_contexts": [],
                "description": format!("{} job {}", report.entry, report.job),
                "payload": { "job": report.job, "entry": report.entry },
            });
            let reply = client
                .send(github_request(&format!("{api}/repos/{repo}/deployments"), token, &body)?)
                .await?;
            let made: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            match made.get("id").and_then(Value::as_i64) {
                Some(id) => id.to_string(),
                None => {
                    return Err(SendError::Invalid(format!(
                        "GitHub made no deployment: {}",
                        made.get("message").and_then(Value::as_str).unwrap_or("no id in its answer")
                    )))
                }
            }
        }
    };
    let (phase, description) = phase(report);
    let state = word(Host::Github, true, phase);
    let mut body = json!({ "state": state, "description": description, "environment": environment });
    if let Some(link) = link {
        body["log_url"] = link.into();
    }
    let url = format!("{api}/repos/{repo}/deployments/{id}/statuses");
    client.send(github_request(&url, token, &body)?).await?;
    Ok(id)
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

    #[test]
    fn api_bases_are_derived_from_the_repository_url() {
        let cases = [
            ("github", "push", "acme/blog", "https://github.com/acme/blog.git", "https://api.github.com"),
            (
                "github",
                "push",
                "acme/blog",
                "https://ghe.example.com/acme/blog.git",
                "https://ghe.example.com/api/v3",
            ),
            (
                "gitea",
                "push",
                "acme/blog",
                "https://git.example.com/sub/acme/blog.git",
                "https://git.example.com/sub/api/v1",
            ),
            (
                "gitlab",
                "push",
                "g/sub/proj",
                "http://gitlab.example.com:8080/g/sub/proj.git",
                "http://gitlab.example.com:8080/api/v4",
            ),
            (
                "bitbucket",
                "repo:push",
                "ws/repo",
                "https://bitbucket.org/ws/repo.git",
                "https://api.bitbucket.org/2.0",
            ),
            (
                "bitbucket",
                "repo:refs_changed",
                "PRJ/repo",
                "https://bb.example.com/scm/prj/repo.git",
                "https://bb.example.com",
            ),
        ];
        for (provider, event, repo, url, want) in cases {
            let r = report(provider, event, repo, url);
            assert_eq!(api_base(Host::of(&r).unwrap(), &r).unwrap(), want, "{url}");
        }
        let ssh = report("gitea", "push", "acme/blog", "git@git.example.com:acme/blog.git");
        assert!(api_base(Host::Gitea, &ssh).unwrap_err().to_string().contains("set status.api_url"));
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
