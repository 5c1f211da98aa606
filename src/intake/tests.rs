//! The intake over the fixture corpus, without sockets: every delivery of both corpora is
//! decided as its payload says, and each kind of refusal is the one the daemon answers with.

use std::net::IpAddr;
use std::path::Path;

use http::HeaderMap;

use super::*;
use crate::providers::corpus;

const SECRET: &str = "It's a Secret to Everybody";

fn settings(yaml: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.yaml");
    std::fs::write(&path, yaml).unwrap();
    crate::settings::load_with_env(&path, &|name| (name == "SECRET").then(|| SECRET.to_string())).unwrap()
}

/// The first corpus, signed with [`SECRET`].
fn all() -> Vec<(String, HeaderMap, Vec<u8>)> {
    corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// The second corpus: real deliveries, signed with secrets no one here knows.
fn real() -> Vec<(String, HeaderMap, Vec<u8>)> {
    corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus2"))
}

/// The GitHub push of the first corpus.
fn github_push() -> (String, HeaderMap, Vec<u8>) {
    let path = format!("{}/push.json", Provider::Github);
    all().into_iter().find(|(n, ..)| n.ends_with(&path)).unwrap()
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn delivery<'a>(h: &'a HeaderMap, body: &'a [u8], target: Option<&'a str>) -> Delivery<'a> {
    Delivery { headers: h, body, target, client: Some(LOOPBACK), signatures: Signatures::Check }
}

/// Routed and named, every delivery of both corpora is authentic for the entry that takes
/// everything, with the host and delivery id its headers give; its jobs are that entry's.
#[test]
fn every_delivery_of_the_corpus_is_decided() {
    let signed = settings("entries:\n  all:\n    secret: ${SECRET}\n    actions: [\"true\"]\n");
    let unsigned = settings("entries:\n  all:\n    insecure: true\n    actions: [\"true\"]\n");
    let (mut decided, mut with_jobs) = (0, 0);
    let corpora = all().into_iter().map(|r| (r, &signed)).chain(real().into_iter().map(|r| (r, &unsigned)));
    for ((name, h, body), s) in corpora {
        for target in [None, Some("all")] {
            match decide(s, &delivery(&h, &body, target)) {
                Ok(d) => {
                    assert_eq!(Some(d.provider), providers::detect(&h), "{name}");
                    // The delivery id is read once, and every event carries it.
                    assert!(d.delivery_id.is_some() || std::ptr::eq(s, &unsigned), "{name}: no delivery id");
                    assert!(d.events.iter().all(|e| e.delivery_id == d.delivery_id), "{name}");
                    assert!(
                        d.jobs.iter().all(|j| j.entry == "all" && j.trigger == Trigger::Webhook),
                        "{name}"
                    );
                    assert_eq!(d.jobs.len() + d.reasons.len(), d.events.len() * d.entries.len(), "{name}");
                    // Only a routed ping that names no repository is answered unauthenticated.
                    assert!(!d.entries.is_empty() || (target.is_none() && d.is_ping()), "{name}");
                    decided += 1;
                    with_jobs += usize::from(!d.jobs.is_empty());
                }
                // What the adapters refuse is refused here, as a bad request; a delivery that
                // names no repository cannot be routed.
                Err(r) => assert!(
                    matches!(r.why, Refusal::Payload(_))
                        || (target.is_none() && matches!(r.why, Refusal::NothingToRoute(_))),
                    "{name} {target:?}: {}",
                    r.why
                ),
            }
        }
    }
    assert!(decided >= 290 && with_jobs >= 90, "{decided} decided, {with_jobs} with jobs");
}

/// One changed byte of the body, or another secret: 401, for the path's entry and routed.
#[test]
fn a_changed_byte_or_another_secret_is_refused() {
    let right = settings("entries:\n  all:\n    secret: ${SECRET}\n    actions: [\"true\"]\n");
    let wrong = settings("entries:\n  all:\n    secret: other\n    actions: [\"true\"]\n");
    for (name, h, body) in
        all().into_iter().filter(|(_, h, _)| providers::detect(h) != Some(Provider::Gitlab)).take(40)
    {
        let mut changed = body.clone();
        let at = changed.iter().rposition(|b| b.is_ascii_digit()).unwrap();
        changed[at] = if changed[at] == b'1' { b'2' } else { b'1' };
        for target in [None, Some("all")] {
            for (s, b) in [(&right, &changed), (&wrong, &body)] {
                match decide(s, &delivery(&h, b, target)) {
                    Err(Refused { why: Refusal::Unauthentic { .. }, provider }) => {
                        assert!(provider.is_some())
                    }
                    Err(Refused { why: Refusal::Payload(_) | Refusal::NothingToRoute(_), .. }) => {}
                    // A routed ping naming no repository runs nothing and is answered.
                    Ok(d) if d.entries.is_empty() && d.jobs.is_empty() && target.is_none() => {}
                    other => panic!("{name} {target:?}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn refusals_are_typed() {
    let s = settings(
        "server: { allow_from: [127.0.0.0/8] }\nentries:\n  site:\n    secret: ${SECRET}\n    allow_from: [10.0.0.0/8]\n    actions: [\"true\"]\n  open:\n    secret: ${SECRET}\n    actions: [\"true\"]\n",
    );
    let (_, h, body) = github_push();
    // Not a git host's request: 400, no provider.
    let r = decide(&s, &delivery(&HeaderMap::new(), &body, None)).unwrap_err();
    assert_eq!((r.provider, r.why.status()), (None, 400));
    // An entry that does not exist is answered as a wrong secret.
    let r = decide(&s, &delivery(&h, &body, Some("nope"))).unwrap_err();
    assert_eq!(r.why.status(), 401);
    // allow_from: the server's list before the body, the entry's for the sender.
    assert_eq!(admit(&s, None, "192.0.2.1".parse().unwrap()).unwrap_err().status(), 403);
    assert_eq!(admit(&s, Some("site"), LOOPBACK).unwrap_err().status(), 403);
    assert!(admit(&s, Some("open"), LOOPBACK).is_ok());
    let r = decide(&s, &delivery(&h, &body, Some("site"))).unwrap_err();
    assert!(matches!(r.why, Refusal::Forbidden(_)), "{:?}", r.why);
    // Routed, the entry that does not allow the sender is left out with why.
    let d = decide(&s, &delivery(&h, &body, None)).unwrap();
    assert_eq!(d.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["open"]);
    assert!(d.reasons.iter().any(|(e, why)| e == "site" && why.contains("allow_from")));
    // A saved delivery without an address: allow_from of the entries is not applied.
    let unknown = Delivery { client: None, ..delivery(&h, &body, Some("site")) };
    assert!(decide(&s, &unknown).is_ok());
    // Signatures not checked (explain without headers): every candidate is taken.
    let mut unsigned = h.clone();
    unsigned.remove("x-hub-signature-256");
    unsigned.remove("x-hub-signature");
    let d = Delivery {
        signatures: Signatures::Unchecked("no headers".into()),
        ..delivery(&unsigned, &body, None)
    };
    assert_eq!(decide(&s, &d).unwrap().entries.len(), 1);
    assert_eq!(decide(&s, &delivery(&unsigned, &body, None)).unwrap_err().why.status(), 401);
}

#[test]
fn skip_deployed_asks_only_for_entries_that_want_it() {
    let s = settings(
        "entries:\n  skip:\n    secret: ${SECRET}\n    skip_deployed: true\n    actions: [\"true\"]\n  always:\n    secret: ${SECRET}\n    actions: [\"true\"]\n",
    );
    let (_, h, body) = github_push();
    let mut d = decide(&s, &delivery(&h, &body, None)).unwrap();
    assert_eq!(d.jobs.len(), 2);
    let commit = d.jobs[0].event.after.clone();
    let mut asked = Vec::new();
    d.skip_deployed(|entry| {
        asked.push(entry.to_string());
        Ok::<_, ()>(Some((7, commit.clone())))
    })
    .unwrap();
    assert_eq!(asked, ["skip"]);
    assert_eq!(d.jobs.iter().map(|j| j.entry.as_str()).collect::<Vec<_>>(), ["always"]);
    assert!(d.reasons.iter().any(|(e, why)| e == "skip" && why.contains("already deployed by job 7")));
    // Another commit deployed last: the job stays.
    let mut d = decide(&s, &delivery(&h, &body, None)).unwrap();
    d.skip_deployed(|_| Ok::<_, ()>(Some((7, "0".repeat(40))))).unwrap();
    assert_eq!(d.jobs.len(), 2);
}
