//! What each host's commit status API is: where it lives, its words for a job's phase, and
//! the request it documents (method, path, auth header, JSON fields). Pure: the outbox's sink
//! ([`crate::telling::status`]) sends what is built here. Gogs has none; GitHub also has the
//! Deployments API.

use serde_json::Value;

/// Where a job is, as a commit status says it (each host has its words for these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Deploying,
    Success,
    Failure,
    Error,
}

/// One status, in the host-neutral terms the sink gives.
pub struct Status<'a> {
    /// The API's base URL (see [`StatusApi::api_base`]).
    pub api: &'a str,
    pub token: &'a str,
    /// The repository (checked fit to go into a path) and its URL, as the event gave them.
    pub repo: &'a str,
    pub repo_url: &'a str,
    pub commit: &'a str,
    /// The branch or tag (GitLab wants it), else the ref.
    pub git_ref: &'a str,
    pub phase: Phase,
    pub description: &'a str,
    /// The status's name on the commit.
    pub context: &'a str,
    /// The job's page, when the daemon has a public URL.
    pub link: Option<&'a str>,
}

/// A request to a host's API: always a JSON `POST`.
#[derive(Debug)]
pub struct ApiCall {
    pub url: String,
    /// The auth header, then any the host wants besides the usual ones.
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// One host's commit status API.
pub struct StatusApi {
    /// The host's public web origin and its API: the only API a token goes to without
    /// `status.api_url`.
    pub(super) public: Option<(&'static str, &'static str)>,
    /// The words for [`Phase`], in its order.
    pub(super) words: [&'static str; 5],
    pub(super) request: fn(&Status, &StatusApi) -> ApiCall,
    pub(super) deployments: Option<Deployments>,
}

/// GitHub's Deployments API: a deployment made at a job's first report, then its statuses.
pub struct Deployments {
    /// The words for [`Phase`], in its order.
    pub(super) words: [&'static str; 5],
    pub(super) create: fn(&Status, &DeploymentOf) -> ApiCall,
    /// The id of the deployment made, from the host's answer, or why there is none.
    pub(super) made: fn(&[u8]) -> Result<String, String>,
    pub(super) status: fn(&Status, &str, &str, &Deployments) -> ApiCall,
}

/// What a deployment is made for.
pub struct DeploymentOf<'a> {
    pub environment: &'a str,
    pub entry: &'a str,
    pub job: i64,
}

/// Why a status gets no API without `status.api_url`: its repository does not live on its
/// host's public site. `host` is where the event says it lives (for the warning), as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPublic {
    pub host: String,
}

/// The scheme and authority of `url` (`https://host:8443`) and its path.
fn origin(url: &str) -> Option<(&str, &str)> {
    let after = url.find("://")? + 3;
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    (end > after).then(|| (&url[..end], &url[end..]))
}

impl StatusApi {
    /// The API a status goes to: `api_url` when the settings name one, else the host's own
    /// public API over HTTPS, and only for an event whose repository lives on that public
    /// host. The event's URLs never choose where the token goes: a signed payload naming
    /// another host (or plain HTTP) gets no status, and so does an event of a self-hosted
    /// server until `api_url` names it.
    pub fn api_base(&self, repo_url: &str, api_url: Option<&str>) -> Result<String, NotPublic> {
        if let Some(api) = api_url {
            return Ok(api.to_string());
        }
        let event_origin = origin(repo_url).map(|(o, _)| o).unwrap_or_default();
        self.public
            .filter(|(public, _)| event_origin.eq_ignore_ascii_case(public))
            .map(|(_, api)| api.to_string())
            .ok_or_else(|| NotPublic {
                host: if event_origin.is_empty() { repo_url.to_string() } else { event_origin.to_string() },
            })
    }

    /// The host's word for `phase`.
    pub fn word(&self, phase: Phase) -> &'static str {
        self.words[phase as usize]
    }

    /// The commit status request.
    pub fn request(&self, status: &Status) -> ApiCall {
        (self.request)(status, self)
    }

    /// The Deployments API, on a host that has one.
    pub fn deployments(&self) -> Option<&Deployments> {
        self.deployments.as_ref()
    }
}

impl Deployments {
    pub fn word(&self, phase: Phase) -> &'static str {
        self.words[phase as usize]
    }

    pub fn create(&self, status: &Status, of: &DeploymentOf) -> ApiCall {
        (self.create)(status, of)
    }

    pub fn made(&self, answer: &[u8]) -> Result<String, String> {
        (self.made)(answer)
    }

    /// A status of deployment `id` in `environment`.
    pub fn status(&self, status: &Status, id: &str, environment: &str) -> ApiCall {
        (self.status)(status, id, environment, self)
    }
}

/// A path segment, percent-encoded (GitLab's project path, a ref).
pub(super) fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The GitHub-shaped commit status body (GitHub, Gitea and Forgejo).
pub(super) fn commit_status_body(status: &Status, api: &StatusApi) -> Value {
    let mut body = serde_json::json!({
        "state": api.word(status.phase),
        "description": status.description,
        "context": status.context,
    });
    if let Some(link) = status.link {
        body["target_url"] = link.into();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Provider;

    /// Without `api_url`, a token goes only to the host's public API, for a repository on its
    /// public host; whatever the event's URLs say otherwise, there is no status.
    #[test]
    fn a_token_goes_only_where_the_settings_say() {
        let api = |p: Provider, event: &str| super::super::status_api(p, event).unwrap();
        let public = [
            (Provider::Github, "push", "https://github.com/acme/blog.git", "https://api.github.com"),
            (Provider::Gitlab, "Push Hook", "https://gitlab.com/g/sub/proj.git", "https://gitlab.com/api/v4"),
            (
                Provider::Bitbucket,
                "repo:push",
                "https://bitbucket.org/ws/repo",
                "https://api.bitbucket.org/2.0",
            ),
        ];
        for (provider, event, url, want) in public {
            assert_eq!(api(provider, event).api_base(url, None).unwrap(), want, "{url}");
        }
        let elsewhere = [
            (Provider::Github, "push", "https://ghe.example.com/acme/blog.git", "https://ghe.example.com"),
            (Provider::Github, "push", "http://github.com/acme/blog.git", "http://github.com"),
            (
                Provider::Github,
                "push",
                "https://github.com.evil.example/acme/blog.git",
                "https://github.com.evil.example",
            ),
            (
                Provider::Github,
                "push",
                "https://github.com@evil.example/acme/blog.git",
                "https://github.com@evil.example",
            ),
            (
                Provider::Gitlab,
                "Push Hook",
                "http://gitlab.example.com:8080/g/p.git",
                "http://gitlab.example.com:8080",
            ),
            (Provider::Gitea, "push", "https://codeberg.org/acme/blog.git", "https://codeberg.org"),
            (
                Provider::Bitbucket,
                "repo:refs_changed",
                "https://bb.example.com/scm/prj/repo.git",
                "https://bb.example.com",
            ),
            (
                Provider::Gitea,
                "push",
                "git@git.example.com:acme/blog.git",
                "git@git.example.com:acme/blog.git",
            ),
        ];
        for (provider, event, url, host) in elsewhere {
            let err = api(provider, event).api_base(url, None).unwrap_err();
            assert_eq!(err.host, host, "{url}");
            // With api_url, that API, whatever the event says.
            let named = "https://git.internal.example/api/v1";
            assert_eq!(api(provider, event).api_base(url, Some(named)).unwrap(), named);
        }
        assert!(super::super::status_api(Provider::Gogs, "push").is_none());
    }

    /// Each phase in each host's words: a job never stays pending, and a superseded or
    /// cancelled one is an error where the host has the word.
    #[test]
    fn each_phase_in_each_host_s_words() {
        use Phase::*;
        let phases = [Queued, Deploying, Success, Failure, Error];
        let hosts = [
            (Provider::Github, "push", ["pending", "pending", "success", "failure", "error"]),
            (Provider::Gitea, "push", ["pending", "pending", "success", "failure", "error"]),
            (Provider::Gitlab, "Push Hook", ["pending", "running", "success", "failed", "canceled"]),
            (
                Provider::Bitbucket,
                "repo:push",
                ["INPROGRESS", "INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"],
            ),
            // Bitbucket Server's build status has no word for "stopped".
            (
                Provider::Bitbucket,
                "repo:refs_changed",
                ["INPROGRESS", "INPROGRESS", "SUCCESSFUL", "FAILED", "FAILED"],
            ),
        ];
        for (provider, event, words) in hosts {
            let api = super::super::status_api(provider, event).unwrap();
            for (phase, want) in phases.iter().zip(words) {
                assert_eq!(api.word(*phase), want, "{provider} {event} {phase:?}");
            }
        }
        let deployments = super::super::status_api(Provider::Github, "push").unwrap().deployments().unwrap();
        let words: Vec<_> = phases.iter().map(|p| deployments.word(*p)).collect();
        assert_eq!(words, ["queued", "in_progress", "success", "failure", "error"]);
    }
}
