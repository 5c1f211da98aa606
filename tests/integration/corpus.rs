//! Every request of the fixture corpus detects, authenticates and normalises as its payload
//! says (expected values in `tests/fixtures/expected.tsv`, derived by a separate script from
//! the JSON paths in PROVIDERS.md); a changed byte fails authentication.

use wh_automata::event::Provider;
use wh_automata::providers::{self, AuthError, PayloadError};
use wh_automata::settings::Secret;

use crate::common::{all_requests, fixtures, request, SECRET};

struct Expected {
    request: String,
    provider: String,
    event: String,
    repo: String,
    git_ref: String,
    after: String,
}

fn expected() -> Vec<Expected> {
    let text = std::fs::read_to_string(fixtures().join("expected.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "{l}");
            Expected {
                request: f[0].into(),
                provider: f[1].into(),
                event: f[2].into(),
                repo: f[3].into(),
                git_ref: f[4].into(),
                after: f[5].into(),
            }
        })
        .collect()
}

#[test]
fn whole_corpus_detects_authenticates_and_normalises() {
    let requests = all_requests();
    let expected = expected();
    assert_eq!(requests.len(), 66, "the corpus holds 66 request descriptions");
    assert_eq!(expected.len(), requests.len(), "one expectation per request");
    let secret = Secret::new(SECRET);
    for (req, want) in requests.iter().zip(&expected) {
        assert_eq!(req.name, want.request);
        let headers = req.header_map();
        let provider = providers::detect(&headers).unwrap_or_else(|| panic!("{}: not detected", req.name));
        assert_eq!(provider.as_str(), want.provider, "{}", req.name);
        assert_eq!(
            providers::authenticate(provider, &headers, &req.body, &secret, false),
            Ok(()),
            "{}",
            req.name
        );
        let events =
            providers::parse(provider, &headers, &req.body).unwrap_or_else(|e| panic!("{}: {e}", req.name));
        let e = &events[0];
        assert_eq!(e.name(), want.event, "{}: event", req.name);
        assert_eq!(e.repo, want.repo, "{}: repo", req.name);
        assert_eq!(e.git_ref, want.git_ref, "{}: ref", req.name);
        assert_eq!(e.after, want.after, "{}: after", req.name);
        assert!(e.delivery_id.is_some(), "{}: delivery id", req.name);
        if e.after != wh_automata::event::ZERO_SHA {
            if let Some(head) = &e.head {
                assert!(
                    head.id == e.after || provider == Provider::Gitlab,
                    "{}: head {} != after",
                    req.name,
                    head.id
                );
            }
        }
    }
}

#[test]
fn one_changed_byte_fails_authentication() {
    let secret = Secret::new(SECRET);
    let mut checked = 0;
    for req in all_requests() {
        let headers = req.header_map();
        let provider = providers::detect(&headers).unwrap();
        if provider == Provider::Gitlab {
            // GitLab sends the secret itself, not a signature of the body: nothing to flip.
            continue;
        }
        for at in [0, req.body.len() / 2, req.body.len() - 1] {
            let mut body = req.body.clone();
            body[at] ^= 0x01;
            assert!(
                matches!(
                    providers::authenticate(provider, &headers, &body, &secret, false),
                    Err(AuthError::Mismatch(_))
                ),
                "{} byte {at}",
                req.name
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 66 - 12);
}

#[test]
fn wrong_secret_and_missing_signature_fail_everywhere() {
    let wrong = Secret::new("not the secret");
    for req in all_requests() {
        let headers = req.header_map();
        let provider = providers::detect(&headers).unwrap();
        assert!(
            matches!(
                providers::authenticate(provider, &headers, &req.body, &wrong, false),
                Err(AuthError::Mismatch(_))
            ),
            "{}",
            req.name
        );
        let mut stripped = headers.clone();
        for name in [
            "x-hub-signature-256",
            "x-hub-signature",
            "x-gitlab-token",
            "x-gogs-signature",
            "x-gitea-signature",
        ] {
            stripped.remove(name);
        }
        assert!(
            matches!(
                providers::authenticate(provider, &stripped, &req.body, &Secret::new(SECRET), false),
                Err(AuthError::Missing(_))
            ),
            "{}",
            req.name
        );
    }
}

#[test]
fn sha1_only_signature_needs_opt_in() {
    let req = request("github/push.json");
    let mut headers = req.header_map();
    headers.remove("x-hub-signature-256");
    let secret = Secret::new(SECRET);
    assert_eq!(
        providers::authenticate(Provider::Github, &headers, &req.body, &secret, false),
        Err(AuthError::Sha1NotAllowed)
    );
    assert_eq!(providers::authenticate(Provider::Github, &headers, &req.body, &secret, true), Ok(()));
}

#[test]
fn gitlab_token_of_another_entry_is_refused() {
    let req = request("gitlab/push.json");
    let headers = req.header_map();
    let other_entry = Secret::new("the other entry's token");
    assert_eq!(
        providers::authenticate(Provider::Gitlab, &headers, &req.body, &other_entry, false),
        Err(AuthError::Mismatch("X-Gitlab-Token"))
    );
}

#[test]
fn bad_payloads_are_typed_errors() {
    let req = request("github/push.json");
    let headers = req.header_map();
    assert_eq!(providers::parse(Provider::Github, &headers, b""), Err(PayloadError::Empty));
    assert!(matches!(
        providers::parse(Provider::Github, &headers, b"{\"ref\": "),
        Err(PayloadError::NotJson(_))
    ));
    assert!(matches!(
        providers::parse(Provider::Github, &headers, b"\xff\xfe"),
        Err(PayloadError::NotJson(_))
    ));
    let mut no_ref: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    no_ref.as_object_mut().unwrap().remove("ref");
    let body = serde_json::to_vec(&no_ref).unwrap();
    assert_eq!(
        providers::parse(Provider::Github, &headers, &body),
        Err(PayloadError::Missing { provider: Provider::Github, event: "push".into(), field: "ref" })
    );
    let gl = request("gitlab/push.json");
    let mut v: serde_json::Value = serde_json::from_slice(&gl.body).unwrap();
    v.as_object_mut().unwrap().remove("ref");
    assert!(matches!(
        providers::parse(Provider::Gitlab, &gl.header_map(), &serde_json::to_vec(&v).unwrap()),
        Err(PayloadError::Missing { field: "ref", .. })
    ));
    // A JSON value that is not an object is not a push either.
    assert!(providers::parse(Provider::Github, &headers, b"[1,2]").is_err());
    let form = request("github/push-form.json");
    assert_eq!(
        providers::parse(Provider::Github, &form.header_map(), b"other=1"),
        Err(PayloadError::NoFormPayload)
    );
    let mut unknown = headers.clone();
    unknown.remove("x-github-event");
    assert_eq!(providers::detect(&unknown), None);
}

#[test]
fn details_of_normalised_events() {
    let secret = Secret::new(SECRET);
    let parse = |name: &str| {
        let req = request(name);
        let h = req.header_map();
        let p = providers::detect(&h).unwrap();
        providers::authenticate(p, &h, &req.body, &secret, false).unwrap();
        providers::parse(p, &h, &req.body).unwrap()
    };
    // GitHub: head commit, pusher, file union, complete list.
    let e = &parse("github/push.json")[0];
    assert_eq!(e.branch.as_deref(), Some("master"));
    assert_eq!(e.pusher, "Codertocat");
    assert!(e.head.as_ref().unwrap().message.contains("Update README"), "{:?}", e.head);
    assert_eq!(e.changed_files, vec!["README.md".to_string()]);
    assert!(e.changes_complete);
    assert_eq!(e.repo_url, "https://github.com/Codertocat/Hello-World.git");
    // The form-encoded delivery is the same event.
    let f = &parse("github/push-form.json")[0];
    assert_eq!(f.after, e.after);
    assert_eq!(f.changed_files, e.changed_files);
    // Gitea lists commits newest first; the head is the one with id == after.
    let g = &parse("gitea/push.json")[0];
    assert_eq!(g.head.as_ref().unwrap().id, g.after);
    // Gogs has no head_commit at all.
    let gg = &parse("gogs/push.json")[0];
    assert_eq!(gg.head.as_ref().unwrap().id, gg.after);
    // GitLab: only some commits listed means the list is not complete.
    let d = &parse("gitlab/push-docs-example.json")[0];
    assert!(!d.changes_complete);
    assert_eq!(d.head.as_ref().unwrap().id, d.after);
    // Annotated tag: head is the tagged commit, not the tag object.
    let t = &parse("gitlab/tag_push-annotated.json")[0];
    assert_eq!(t.tag.as_deref(), Some("v22"));
    // Bitbucket lists no files: never complete.
    let b = &parse("bitbucket/repo_push.json")[0];
    assert!(!b.changes_complete && b.changed_files.is_empty());
    assert_eq!(b.repo_url, "https://bitbucket.org/brydzewski/foo.git");
    // Bitbucket Server data center payload carries a clone URL and the head commit.
    let s = &parse("bitbucket-server/repo_refs_changed-datacenter.json")[0];
    assert_eq!(s.repo_url, "https://bitbucket.example.com/scm/dev/deployment-automation.git");
    // Merged pull requests say so.
    assert_eq!(parse("github/pull_request-closed-merged.json")[0].action.as_deref(), Some("merged"));
    assert_eq!(parse("github/pull_request-closed.json")[0].action.as_deref(), Some("closed"));
    // Actions are normalised; the host's own word is kept beside.
    let gitlab = &parse("gitlab/merge_request-merged.json")[0];
    assert_eq!(
        (gitlab.action.as_deref(), gitlab.provider_action.as_deref()),
        (Some("merged"), Some("merge"))
    );
    let cloud = &parse("bitbucket/pullrequest_fulfilled.json")[0];
    assert_eq!(
        (cloud.action.as_deref(), cloud.provider_action.as_deref()),
        (Some("merged"), Some("fulfilled"))
    );
    assert!(cloud.pull_request.as_ref().unwrap().merged);
}

/// The line of `corpus2-expected.tsv` an event makes.
fn corpus2_line(name: &str, e: &wh_automata::event::Event) -> String {
    [
        name,
        e.provider_name(),
        e.name(),
        &e.repo,
        &e.git_ref,
        &e.after,
        e.action.as_deref().unwrap_or_default(),
        e.tag_object.as_deref().unwrap_or_default(),
    ]
    .join("\t")
}

/// Every delivery of the second corpus (86 real deliveries published by other projects)
/// normalises as `tests/fixtures/corpus2-expected.tsv` says: provider, event, repository, ref,
/// the commit, the pull request action and the tag object. The two older than any host
/// version in service are refused with the field they lack.
#[test]
fn second_corpus_normalises_as_expected() {
    let expected = std::fs::read_to_string(fixtures().join("corpus2-expected.tsv")).unwrap();
    let expected: Vec<&str> = expected.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let requests = crate::common::all_requests_in(&fixtures().join("corpus2"));
    assert_eq!(requests.len(), 86);
    let secret = Secret::new(SECRET);
    let mut got = Vec::new();
    for req in &requests {
        let headers = req.header_map();
        let provider = providers::detect(&headers).unwrap_or_else(|| panic!("{}: not detected", req.name));
        let signed = crate::common::signed(provider, &headers, &req.body);
        assert_eq!(
            providers::authenticate(provider, &signed, &req.body, &secret, false),
            Ok(()),
            "{}",
            req.name
        );
        match providers::parse(provider, &signed, &req.body) {
            Ok(events) => {
                assert!(!events.is_empty(), "{}", req.name);
                for e in events {
                    got.push(corpus2_line(&req.name, &e));
                }
            }
            Err(err) => got.push(format!("{}\tERROR {err}", req.name)),
        }
    }
    for (line, want) in got.iter().zip(&expected) {
        assert_eq!(line, want);
    }
    assert_eq!(got.len(), expected.len(), "one line per event");
}
