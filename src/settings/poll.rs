//! `poll:` of an entry: the branch's head asked of the remote every so often (`git ls-remote`),
//! so that a push whose webhook was lost, or an entry no webhook can reach, is deployed all the
//! same.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::raw::Quantity;

/// `poll:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoll {
    /// How often the remote is asked (default 5m, at least 1s).
    pub(super) every: Option<Quantity>,
    /// The branch (default: the one `match.branch` names, as in `^main$`).
    pub(super) branch: Option<String>,
    /// How long `git ls-remote` may take before it is killed (default 30s).
    pub(super) timeout: Option<Quantity>,
}

/// What an entry polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    pub every: Duration,
    /// How long `git ls-remote` may take.
    pub timeout: Duration,
    pub branch: String,
    /// The remote's URL; `None`: the `origin` of the workdir's checkout.
    pub remote: Option<String>,
}

impl Poll {
    /// The remote as it may be shown: a URL without its credentials (`user:token@`).
    pub fn shown_remote(&self) -> String {
        match &self.remote {
            None => "origin".to_string(),
            Some(url) => match (url.find("://"), url.find('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
                }
                _ => url.clone(),
            },
        }
    }
}

/// The shortest `every`: the remote is someone else's server.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// Compiles `poll:`; `literal_branch` is the branch `match.branch` names, if it names one.
pub(super) fn poll(
    raw: &RawPoll,
    remote: Option<&str>,
    literal_branch: Option<&str>,
) -> Result<Poll, Vec<String>> {
    let mut problems = Vec::new();
    let every = match raw.every.as_ref().map(Quantity::text) {
        None => Duration::from_secs(300),
        Some(text) => match super::units::parse_duration(&text) {
            Ok(d) if d < MIN_EVERY => {
                problems.push("poll.every must be at least 1s".to_string());
                d
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("poll.every: {e}"));
                Duration::ZERO
            }
        },
    };
    let timeout = match raw.timeout.as_ref().map(Quantity::text) {
        None => Duration::from_secs(30),
        Some(text) => match super::units::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                problems.push("poll.timeout must be more than 0".to_string());
                d
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("poll.timeout: {e}"));
                Duration::ZERO
            }
        },
    };
    let branch = match (&raw.branch, literal_branch) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => b.to_string(),
        (None, None) => {
            problems
                .push("poll: say which branch with `branch:` (match.branch names no single branch)".into());
            String::new()
        }
    };
    let valid_ref = !branch.is_empty()
        && !branch.starts_with(['-', '/'])
        && !branch.contains("..")
        && branch.chars().all(|c| !c.is_control() && !" ~^:?*[\\".contains(c));
    if !branch.is_empty() && !valid_ref {
        problems.push(format!(
            "poll.branch {:?} is not a branch name",
            branch.chars().take(100).collect::<String>()
        ));
    }
    if let Some(url) = remote {
        if url.trim().is_empty() || url.starts_with('-') || url.chars().any(char::is_control) {
            problems.push("remote: is not a repository URL".into());
        }
    }
    if problems.is_empty() {
        Ok(Poll { every, timeout, branch, remote: remote.map(str::to_string) })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(every: Option<&str>, branch: Option<&str>) -> RawPoll {
        RawPoll {
            every: every.map(|e| Quantity::Text(e.into())),
            branch: branch.map(str::to_string),
            timeout: None,
        }
    }

    #[test]
    fn poll_needs_a_branch_and_a_sane_period() {
        let p = poll(&raw(None, None), None, Some("main")).unwrap();
        assert_eq!((p.every, p.branch.as_str()), (Duration::from_secs(300), "main"));
        assert!(poll(&raw(Some("500ms"), Some("main")), None, None).unwrap_err()[0].contains("at least 1s"));
        assert!(poll(&raw(None, None), None, None).unwrap_err()[0].contains("which branch"));
        assert!(poll(&raw(None, Some("--upload-pack=x")), None, None).is_err());
        assert!(poll(&raw(None, Some("main")), Some("--upload-pack=evil"), None).is_err());
        let with =
            poll(&raw(None, Some("main")), Some("https://bot:s3cret@git.example/a.git"), None).unwrap();
        assert_eq!(with.shown_remote(), "https://***@git.example/a.git");
    }
}
