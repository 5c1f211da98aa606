//! Which entries an event fits, and for the others, why not.
//!
//! Pure functions over an [`Event`] and compiled [`Entry`] matchers: no I/O, no authentication
//! (the server only asks about entries whose secret authenticated the request). The reasons are
//! written for the person reading an "ignored" answer when a deploy did not happen.

use crate::event::{Event, EventKind, Provider};
use crate::settings::{Entry, EventName, Matcher};

/// Whether `entry` should run for `event`; `Err` says why not.
pub fn check(entry: &Entry, event: &Event) -> Result<(), String> {
    check_matcher(&entry.matcher, event)
}

/// Whether a request from `provider` about `repo` may be for `entry` (the rest of its matcher
/// aside). An event without a repository (an organisation's ping) may be for any entry of
/// the provider.
pub fn fits_source(entry: &Entry, provider: Provider, repo: &str) -> bool {
    let m = &entry.matcher;
    m.provider.is_none_or(|p| p == provider)
        && (repo.is_empty() || m.repo.as_ref().is_none_or(|(_, glob)| glob.is_match(repo)))
}

fn check_matcher(m: &Matcher, event: &Event) -> Result<(), String> {
    if let Some(p) = m.provider {
        if p != event.provider {
            return Err(format!("provider is {}, the entry wants {p}", event.provider));
        }
    }
    if !m.events.iter().any(|want| event_fits(want, event)) {
        let wanted: Vec<String> = m.events.iter().map(ToString::to_string).collect();
        let what = match event.kind {
            EventKind::Delete => format!("event is delete ({} removed)", describe_ref(event)),
            EventKind::Other => format!("event is {} ", event.provider_event).trim_end().to_string(),
            k => format!("event is {}", k.as_str()),
        };
        return Err(format!("{what}, the entry wants {}", wanted.join(" or ")));
    }
    if let Some((pattern, glob)) = &m.repo {
        if !glob.is_match(&event.repo) {
            return Err(format!("repo \"{}\" does not match \"{pattern}\"", event.repo));
        }
    }
    if let Some(re) = &m.branch {
        match &event.branch {
            Some(b) if re.is_match(b) => {}
            Some(b) => return Err(format!("branch \"{b}\" does not match /{}/", re.as_str())),
            None => {
                return Err(format!(
                    "{} has no branch, the entry wants branch /{}/",
                    describe_ref(event),
                    re.as_str()
                ))
            }
        }
    }
    if let Some(re) = &m.tag {
        match &event.tag {
            Some(t) if re.is_match(t) => {}
            Some(t) => return Err(format!("tag \"{t}\" does not match /{}/", re.as_str())),
            None => {
                return Err(format!(
                    "{} is not a tag, the entry wants tag /{}/",
                    describe_ref(event),
                    re.as_str()
                ))
            }
        }
    }
    Ok(())
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
    use crate::event::{Provider, ZERO_SHA};
    use crate::settings;
    use std::io::Write;

    fn entries(yaml: &str) -> Vec<std::sync::Arc<Entry>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.yaml");
        std::fs::File::create(&path).unwrap().write_all(yaml.as_bytes()).unwrap();
        settings::load_with_env(&path, &|_| None).unwrap_or_else(|p| panic!("{p}")).entries
    }

    fn push(provider: Provider, repo: &str, git_ref: &str) -> Event {
        let mut e = Event::manual(None, Some("abc"));
        e.provider = provider;
        e.provider_event = "push".into();
        e.repo = repo.into();
        e.set_ref(git_ref);
        e.kind = if e.tag.is_some() { EventKind::Tag } else { EventKind::Push };
        e
    }

    #[test]
    fn table() {
        let list = entries(
            r#"
entries:
  main:
    match: { provider: github, repo: acme/blog, branch: ^main$ }
    insecure: true
    actions: "true"
  any-acme:
    match: { repo: "acme/*", branch: ".*" }
    insecure: true
    actions: "true"
  tags:
    match: { event: tag, tag: "^v[0-9]+" }
    insecure: true
    actions: "true"
  deletes:
    match: { event: [delete, release] }
    insecure: true
    actions: "true"
  prs:
    match: { event: pull_request, branch: ^main$ }
    insecure: true
    actions: "true"
"#,
        );
        let by_name = |n: &str| list.iter().find(|e| e.name == n).unwrap().clone();
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
            let got = check(&by_name(name), &event);
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
}
