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
    /// Pull request actions, normalised or as the host writes them (empty: any).
    pub actions: Vec<String>,
    /// CI conclusions (empty: any).
    pub conclusions: Vec<String>,
    /// CI workflow or pipeline name.
    pub workflow: Option<Regex>,
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

impl EventName {
    /// Any name shaped like an event name: a normalised kind, or a host's own name
    /// (`merge_group`, `Pipeline Hook`, `repo:refs_changed`, `pr:comment:added`).
    fn parse(s: &str) -> Option<EventName> {
        if let Some(kind) = EventKind::from_name(s) {
            return Some(EventName::Kind(kind));
        }
        let shaped = s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-' | b' '));
        shaped.then(|| EventName::Native(s.to_string()))
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
    pub actions: Option<Vec<String>>,
    pub conclusions: Option<Vec<String>>,
    pub workflow: Option<&'a str>,
}

impl Matcher {
    /// Compiles a `match:` section; `Err` holds every problem, each one line for the user.
    pub fn compile(spec: &MatchSpec<'_>) -> Result<Matcher, Vec<String>> {
        let mut problems = Vec::new();
        let provider = match spec.provider {
            None | Some("any") => None,
            Some(p) => Provider::from_name(p).or_else(|| {
                problems.push(format!("unknown provider \"{p}\" ({})", Provider::names()));
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
        let workflow = regex_of("workflow", spec.workflow);
        let names = spec.events.clone().unwrap_or_else(|| vec!["push".to_string()]);
        if names.is_empty() {
            problems.push("match.event is an empty list: the entry could never run".into());
        }
        let mut events = Vec::new();
        for n in names {
            match EventName::parse(&n) {
                Some(e) => events.push(e),
                None => problems.push(format!(
                    "\"{n}\" is not an event name (push, tag, delete, pull_request, ci, ping, or a provider's own event name: letters, digits, _ : . - and spaces)"
                )),
            }
        }
        let mut words = |field: &str, list: &Option<Vec<String>>| {
            let list = list.clone().unwrap_or_default();
            if list.iter().any(|w| w.is_empty() || w.len() > 64 || w.chars().any(char::is_control)) {
                problems.push(format!("match.{field} holds an empty or unreadable name"));
            }
            list
        };
        let actions = words("action", &spec.actions);
        let conclusions = words("conclusion", &spec.conclusions);
        let wants = |kind| events.contains(&EventName::Kind(kind));
        if spec.actions.as_ref().is_some_and(Vec::is_empty)
            || spec.conclusions.as_ref().is_some_and(Vec::is_empty)
        {
            problems.push(
                "match.action and match.conclusion cannot be empty lists: the entry could never run".into(),
            );
        }
        if !actions.is_empty()
            && !wants(EventKind::PullRequest)
            && !events.iter().any(|e| matches!(e, EventName::Native(_)))
        {
            problems.push("match.action is for pull requests: add pull_request to match.event".into());
        }
        if (!conclusions.is_empty() || workflow.is_some())
            && !wants(EventKind::Ci)
            && !events.iter().any(|e| matches!(e, EventName::Native(_)))
        {
            problems
                .push("match.conclusion and match.workflow are for CI runs: add ci to match.event".into());
        }
        if problems.is_empty() {
            Ok(Matcher { provider, repo, branch, tag, events, actions, conclusions, workflow })
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

    /// The one branch `match.branch` names, when it is a literal anchored at both ends
    /// (`^main$`, `^release/2\.x$`).
    pub fn literal_branch(&self) -> Option<String> {
        let pattern = self.branch.as_ref()?.as_str().strip_prefix('^')?.strip_suffix('$')?;
        let mut name = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => name.push(chars.next().filter(|n| !n.is_ascii_alphanumeric())?),
                c if ".*+?()[]{}|^$".contains(c) => return None,
                c => name.push(c),
            }
        }
        (!name.is_empty()).then_some(name)
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
        check_ref("tag", "is not a tag", self.tag.as_ref(), event.tag.as_deref(), event)?;
        self.check_action(event)?;
        self.check_ci(event)
    }

    /// `match.action`: the normalised action or the host's own word, for events that have
    /// actions (a push in the same entry is not filtered by it). A normalised word is only ever
    /// the normalised action: `closed` never matches a merge, though GitHub, Gitea and Gogs
    /// call a merge `closed`; a host's own word that is not one of them (`close`, `fulfilled`)
    /// matches as written.
    fn check_action(&self, event: &Event) -> Result<(), String> {
        if self.actions.is_empty() || (event.kind != EventKind::PullRequest && event.action.is_none()) {
            return Ok(());
        }
        let have = [event.action.as_deref(), event.provider_action.as_deref()];
        let fits = |want: &str| {
            have[0] == Some(want) || (!crate::event::PR_ACTIONS.contains(&want) && have[1] == Some(want))
        };
        if self.actions.iter().any(|want| fits(want)) {
            return Ok(());
        }
        let what = match (have[0], have[1]) {
            (Some(a), Some(p)) if a != p => format!("action is {a} ({p})"),
            (Some(a), _) => format!("action is {a}"),
            (None, _) => "the event has no action".to_string(),
        };
        Err(format!("{what}, the entry wants {}", self.actions.join(" or ")))
    }

    /// `match.conclusion` and `match.workflow` of a CI event.
    fn check_ci(&self, event: &Event) -> Result<(), String> {
        // Only CI runs are filtered (a push in the same entry is not).
        let Some(ci) = event.ci.as_ref().filter(|_| !self.conclusions.is_empty() || self.workflow.is_some())
        else {
            return Ok(());
        };
        if !self.conclusions.is_empty() {
            match &ci.conclusion {
                Some(c) if self.conclusions.contains(c) => {}
                Some(c) => {
                    return Err(format!(
                        "CI concluded {c}, the entry wants {}",
                        self.conclusions.join(" or ")
                    ))
                }
                None => return Err(format!("CI has not finished (status {})", ci.status)),
            }
        }
        match &self.workflow {
            Some(re) if !re.is_match(&ci.workflow) => {
                Err(format!("workflow \"{}\" does not match /{}/", ci.workflow, re.as_str()))
            }
            _ => Ok(()),
        }
    }

    /// The event names of this matcher that its provider is not known to send.
    pub fn unknown_events(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                EventName::Native(n) if !crate::providers::catalogue::known_event(self.provider, n) => {
                    Some(n.clone())
                }
                _ => None,
            })
            .collect()
    }

    fn check_event(&self, event: &Event) -> Result<(), String> {
        if self.events.iter().any(|want| event_fits(want, event)) {
            // A `create` or `delete` sent beside the push of the same change: when the entry
            // also wants that push, the change is counted once, by the push.
            if let Some(kind) = event.beside_push.filter(|k| self.events.contains(&EventName::Kind(*k))) {
                return Err(format!(
                    "{} of {} comes beside a {} delivery of the same change, which the entry counts",
                    event.provider_event,
                    describe_ref(event),
                    kind.as_str()
                ));
            }
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
        Matcher::compile(&MatchSpec { provider, repo, branch, tag, events, ..MatchSpec::default() }).unwrap()
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
            ("main", matcher(Some(Provider::Github.as_str()), Some("acme/blog"), Some("^main$"), None, &[])),
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
            ("main", push(Provider::Gitlab, "acme/blog", "refs/heads/main"), Err(", the entry wants ")),
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
            events: Some(vec!["psuh!".into(), "push".into()]),
            ..MatchSpec::default()
        };
        let problems = Matcher::compile(&spec).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("unknown provider \"githab\""));
        assert!(problems[3].contains("\"psuh!\" is not an event name"), "{problems:?}");
        let empty = MatchSpec { events: Some(Vec::new()), ..MatchSpec::default() };
        assert!(Matcher::compile(&empty).unwrap_err()[0].contains("empty list"));
        assert_eq!(matcher(None, Some("acme/x"), None, None, &[]).literal_repo(), Some("acme/x"));
        assert_eq!(matcher(None, Some("acme/*"), None, None, &[]).literal_repo(), None);
    }

    #[test]
    fn a_manual_run_has_no_provider() {
        let gitlab = push(Provider::Gitlab, "acme/blog", "refs/heads/main");
        assert_eq!(
            matcher(Some(Provider::Github.as_str()), None, None, None, &[]).check(&gitlab),
            Err(format!("provider is {}, the entry wants {}", Provider::Gitlab, Provider::Github))
        );
        let manual = Event::manual(Some("main"), None);
        assert_eq!(
            matcher(Some(Provider::Github.as_str()), None, None, None, &[]).check(&manual),
            Err(format!("provider is none (a manual run), the entry wants {}", Provider::Github))
        );
        assert!(matcher(None, None, None, None, &[]).check(&manual).unwrap_err().contains("event is manual"));
    }
}
