//! Which entries an event fits, and for the others, why not.
//!
//! A [`Matcher`] is the compiled `match:` of one entry: provider, repository glob, branch and
//! tag regexes, event names. [`Matcher::compile`] turns what was typed into one (the settings
//! loader reports its problems); [`Matcher::check`] is a pure function over an [`Event`]: no
//! I/O, no authentication (the server only asks about entries whose secret authenticated the
//! request). The reasons are written for the person reading an "ignored" answer when a deploy
//! did not happen.

use std::fmt;

use globset::GlobMatcher;
use regex::Regex;

use crate::event::{Event, EventKind, Provider};

/// What an entry accepts.
#[derive(Debug)]
pub struct Matcher {
    pub provider: Option<Provider>,
    pub repo: Option<(String, GlobMatcher)>,
    pub branch: Option<Regex>,
    pub tag: Option<Regex>,
    pub events: Vec<EventName>,
}

/// An event name as written in `match.event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventName {
    /// One of the normalised kinds (push, tag, delete, pull_request, ping).
    Kind(EventKind),
    /// A provider's own event name, matched as written (`release`, `issues`, ...).
    Native(String),
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventName::Kind(k) => f.write_str(k.as_str()),
            EventName::Native(n) => f.write_str(n),
        }
    }
}

/// Provider event names that may be matched as written, besides the normalised kinds.
/// A name outside this list is almost always a typo, so it is refused.
const NATIVE_EVENTS: &[&str] = &[
    // GitHub, Gogs, Gitea/Forgejo (X-*-Event values)
    "create",
    "release",
    "issues",
    "issue_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "workflow_run",
    "workflow_job",
    "workflow_dispatch",
    "check_run",
    "check_suite",
    "deployment",
    "deployment_status",
    "status",
    "fork",
    "gollum",
    "member",
    "public",
    "repository",
    "star",
    "watch",
    "package",
    "registry_package",
    "page_build",
    "commit_comment",
    "label",
    "milestone",
    "wiki",
    // GitLab (object_kind values)
    "tag_push",
    "merge_request",
    "issue",
    "note",
    "pipeline",
    "build",
    "wiki_page",
    "deployment",
    "feature_flag",
    "release",
    "emoji",
    "access_token",
    // Bitbucket Cloud and Server (X-Event-Key values)
    "repo:push",
    "repo:fork",
    "repo:updated",
    "repo:commit_comment_created",
    "repo:commit_status_created",
    "repo:commit_status_updated",
    "repo:refs_changed",
    "repo:modified",
    "repo:forked",
    "repo:comment:added",
    "issue:created",
    "issue:updated",
    "issue:comment_created",
    "mirror:repo_synchronized",
    "diagnostics:ping",
];

/// Bitbucket's pull request event keys are matched by prefix.
const NATIVE_PREFIXES: &[&str] = &["pullrequest:", "pr:"];

impl EventName {
    fn parse(s: &str) -> Option<EventName> {
        if let Some(kind) = EventKind::from_name(s) {
            return Some(EventName::Kind(kind));
        }
        if NATIVE_EVENTS.contains(&s) || NATIVE_PREFIXES.iter().any(|p| s.starts_with(p)) {
            return Some(EventName::Native(s.to_string()));
        }
        None
    }
}

/// A `match:` section as typed, before compiling.
#[derive(Debug, Default)]
pub struct MatchSpec<'a> {
    pub provider: Option<&'a str>,
    pub repo: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// `None`: the default (`push`).
    pub events: Option<Vec<String>>,
}

impl Matcher {
    /// Compiles a `match:` section; `Err` holds every problem, each one line for the user.
    pub fn compile(spec: &MatchSpec<'_>) -> Result<Matcher, Vec<String>> {
        let mut problems = Vec::new();
        let provider = match spec.provider {
            None | Some("any") => None,
            Some(p) => Provider::from_name(p).or_else(|| {
                problems.push(format!(
                    "unknown provider \"{p}\" (github, gitlab, gogs, gitea, bitbucket or any)"
                ));
                None
            }),
        };
        let repo = spec.repo.and_then(|pattern| {
            match globset::GlobBuilder::new(pattern).literal_separator(true).build() {
                Ok(g) => Some((pattern.to_string(), g.compile_matcher())),
                Err(e) => {
                    problems.push(format!("match.repo \"{pattern}\": {e}"));
                    None
                }
            }
        });
        let mut regex_of = |field: &str, value: Option<&str>| {
            value.and_then(|pattern| match Regex::new(pattern) {
                Ok(r) => Some(r),
                Err(e) => {
                    problems.push(format!("match.{field} is not a valid regex: {e}"));
                    None
                }
            })
        };
        let branch = regex_of("branch", spec.branch);
        let tag = regex_of("tag", spec.tag);
        let names = spec.events.clone().unwrap_or_else(|| vec!["push".to_string()]);
        if names.is_empty() {
            problems.push("match.event is an empty list: the entry could never run".into());
        }
        let mut events = Vec::new();
        for n in names {
            match EventName::parse(&n) {
                Some(e) => events.push(e),
                None => problems.push(format!(
                    "unknown event \"{n}\" (push, tag, delete, pull_request, ping, or a provider's own event name)"
                )),
            }
        }
        if problems.is_empty() {
            Ok(Matcher { provider, repo, branch, tag, events })
        } else {
            Err(problems)
        }
    }

    /// Whether a request from `provider` about `repo` may be for this entry (the rest of the
    /// matcher aside). An event without a repository (an organisation's ping) may be for any
    /// entry of the provider.
    pub fn fits_source(&self, provider: Provider, repo: &str) -> bool {
        self.provider.is_none_or(|p| p == provider)
            && (repo.is_empty() || self.repo.as_ref().is_none_or(|(_, glob)| glob.is_match(repo)))
    }

    /// The literal repository this matcher is for, when `match.repo` has no wildcard.
    pub fn literal_repo(&self) -> Option<&str> {
        match &self.repo {
            Some((pattern, _)) if !pattern.contains(['*', '?', '[', '{', '\\']) => Some(pattern),
            _ => None,
        }
    }

    /// Whether an entry with this matcher should run for `event`; `Err` says why not.
    pub fn check(&self, event: &Event) -> Result<(), String> {
        if let Some(p) = self.provider {
            if Some(p) != event.provider {
                let what = event.provider.map_or("none (a manual run)", Provider::as_str);
                return Err(format!("provider is {what}, the entry wants {p}"));
            }
        }
        self.check_event(event)?;
        if let Some((pattern, glob)) = &self.repo {
            if !glob.is_match(&event.repo) {
                return Err(format!("repo \"{}\" does not match \"{pattern}\"", event.repo));
            }
        }
        check_ref("branch", "has no branch", self.branch.as_ref(), event.branch.as_deref(), event)?;
        check_ref("tag", "is not a tag", self.tag.as_ref(), event.tag.as_deref(), event)
    }

    fn check_event(&self, event: &Event) -> Result<(), String> {
        if self.events.iter().any(|want| event_fits(want, event)) {
            return Ok(());
        }
        let wanted: Vec<String> = self.events.iter().map(ToString::to_string).collect();
        let what = match event.kind {
            EventKind::Delete => format!("event is delete ({} removed)", describe_ref(event)),
            EventKind::Other => format!("event is {} ", event.provider_event).trim_end().to_string(),
            k => format!("event is {}", k.as_str()),
        };
        Err(format!("{what}, the entry wants {}", wanted.join(" or ")))
    }
}

/// A branch or tag regex against the event's branch or tag (`None`: the event has none).
fn check_ref(
    field: &str,
    lacking: &str,
    want: Option<&Regex>,
    have: Option<&str>,
    event: &Event,
) -> Result<(), String> {
    let Some(re) = want else { return Ok(()) };
    match have {
        Some(name) if re.is_match(name) => Ok(()),
        Some(name) => Err(format!("{field} \"{name}\" does not match /{}/", re.as_str())),
        None => Err(format!("{} {lacking}, the entry wants {field} /{}/", describe_ref(event), re.as_str())),
    }
}

fn event_fits(want: &EventName, event: &Event) -> bool {
    match want {
        EventName::Kind(k) => *k == event.kind,
        // A provider's own name; normalised kinds are only matched by their normalised name,
        // so that one push is never counted twice (GitHub's `create` beside its tag `push`).
        EventName::Native(n) => *n == event.provider_event,
    }
}

fn describe_ref(event: &Event) -> String {
    if let Some(b) = &event.branch {
        format!("branch \"{b}\"")
    } else if let Some(t) = &event.tag {
        format!("tag \"{t}\"")
    } else if event.git_ref.is_empty() {
        "the event".to_string()
    } else {
        format!("ref \"{}\"", event.git_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ZERO_SHA;

    fn matcher(
        provider: Option<&str>,
        repo: Option<&str>,
        branch: Option<&str>,
        tag: Option<&str>,
        events: &[&str],
    ) -> Matcher {
        let events = (!events.is_empty()).then(|| events.iter().map(|e| e.to_string()).collect());
        Matcher::compile(&MatchSpec { provider, repo, branch, tag, events }).unwrap()
    }

    fn push(provider: Provider, repo: &str, git_ref: &str) -> Event {
        let mut e = Event::new(provider, "push");
        e.after = "abc".into();
        e.repo = repo.into();
        e.set_ref(git_ref);
        e.set_kind_from_ref(false);
        e
    }

    #[test]
    fn table() {
        let list = [
            ("main", matcher(Some("github"), Some("acme/blog"), Some("^main$"), None, &[])),
            ("any-acme", matcher(None, Some("acme/*"), Some(".*"), None, &[])),
            ("tags", matcher(None, None, None, Some("^v[0-9]+"), &["tag"])),
            ("deletes", matcher(None, None, None, None, &["delete", "release"])),
            ("prs", matcher(None, None, Some("^main$"), None, &["pull_request"])),
        ];
        let by_name = |n: &str| &list.iter().find(|(name, _)| *name == n).unwrap().1;
        let mut deleted = push(Provider::Github, "acme/blog", "refs/heads/main");
        deleted.kind = EventKind::Delete;
        deleted.after = ZERO_SHA.into();
        let mut release = push(Provider::Github, "acme/blog", "refs/tags/v1");
        release.kind = EventKind::Other;
        release.provider_event = "release".into();
        let mut create = release.clone();
        create.provider_event = "create".into();
        let mut pr = push(Provider::Gitlab, "acme/blog", "refs/heads/main");
        pr.kind = EventKind::PullRequest;
        let slashy = "feature/a b/$(touch pwned);x\n\u{e9}";

        let cases: Vec<(&str, Event, Result<(), &str>)> = vec![
            ("main", push(Provider::Github, "acme/blog", "refs/heads/main"), Ok(())),
            (
                "main",
                push(Provider::Github, "acme/blog", "refs/heads/dev"),
                Err("branch \"dev\" does not match /^main$/"),
            ),
            (
                "main",
                push(Provider::Gitlab, "acme/blog", "refs/heads/main"),
                Err("provider is gitlab, the entry wants github"),
            ),
            (
                "main",
                push(Provider::Github, "acme/blogs", "refs/heads/main"),
                Err("repo \"acme/blogs\" does not match \"acme/blog\""),
            ),
            ("main", push(Provider::Github, "acme/blog", "refs/heads/main-2"), Err("does not match")),
            ("main", deleted.clone(), Err("event is delete (branch \"main\" removed), the entry wants push")),
            (
                "main",
                push(Provider::Github, "acme/blog", "refs/tags/v1"),
                Err("event is tag, the entry wants push"),
            ),
            ("any-acme", push(Provider::Gogs, "acme/x", &format!("refs/heads/{slashy}")), Ok(())),
            (
                "any-acme",
                push(Provider::Gogs, "acme/x/y", "refs/heads/main"),
                Err("does not match \"acme/*\""),
            ),
            ("any-acme", push(Provider::Gogs, "other/x", "refs/heads/main"), Err("does not match")),
            ("tags", push(Provider::Gitea, "a/b", "refs/tags/v2.0"), Ok(())),
            (
                "tags",
                push(Provider::Gitea, "a/b", "refs/tags/latest"),
                Err("tag \"latest\" does not match /^v[0-9]+/"),
            ),
            (
                "tags",
                push(Provider::Gitea, "a/b", "refs/heads/v1"),
                Err("event is push, the entry wants tag"),
            ),
            ("deletes", deleted, Ok(())),
            ("deletes", release, Ok(())),
            ("deletes", create, Err("event is create, the entry wants delete or release")),
            ("prs", pr.clone(), Ok(())),
            (
                "prs",
                {
                    let mut p = pr;
                    p.set_ref("refs/heads/dev");
                    p
                },
                Err("branch \"dev\""),
            ),
        ];
        for (name, event, want) in cases {
            let got = by_name(name).check(&event);
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err(part), Err(reason)) => {
                    assert!(reason.contains(part), "{name}: {reason:?} lacks {part:?}")
                }
                (want, got) => {
                    panic!("{name} on {} {:?}: want {want:?}, got {got:?}", event.name(), event.git_ref)
                }
            }
        }
    }

    #[test]
    fn compiling_reports_every_problem() {
        let spec = MatchSpec {
            provider: Some("githab"),
            repo: Some("acme/[x"),
            branch: Some("(main"),
            tag: None,
            events: Some(vec!["psuh".into(), "push".into()]),
        };
        let problems = Matcher::compile(&spec).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("unknown provider \"githab\""));
        assert!(problems[3].contains("unknown event \"psuh\""));
        let empty = MatchSpec { events: Some(Vec::new()), ..MatchSpec::default() };
        assert!(Matcher::compile(&empty).unwrap_err()[0].contains("empty list"));
        assert_eq!(matcher(None, Some("acme/x"), None, None, &[]).literal_repo(), Some("acme/x"));
        assert_eq!(matcher(None, Some("acme/*"), None, None, &[]).literal_repo(), None);
    }

    #[test]
    fn a_manual_run_has_no_provider() {
        let manual = Event::manual(Some("main"), None);
        assert_eq!(
            matcher(Some("github"), None, None, None, &[]).check(&manual),
            Err("provider is none (a manual run), the entry wants github".into())
        );
        assert!(matcher(None, None, None, None, &[]).check(&manual).unwrap_err().contains("event is manual"));
    }
}
