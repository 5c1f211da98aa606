//! `--explain` gives the daemon's verdict: over every delivery of both corpora, what it says
//! for `POST /hooks` and for each `POST /hooks/<entry>` is what the running daemon answers to
//! the same delivery from the same address (the status, and which entries get a job).

use std::collections::BTreeSet;

use crate::common::{all_requests_in, fixtures, trigger, Daemon, Reply, Request, SECRET};

const SETTINGS: &str = "server: { listen: 127.0.0.1:0, queue: 1000 }
entries:
  main:
    match: { branch: ^(main|master)$ }
    secret: ${SECRET}
    actions: [\"true\"]
  skip:
    match: { branch: ^master$, event: push }
    secret: ${SECRET}
    skip_deployed: true
    actions: [\"sleep 0.3\"]
  gitlab:
    match: { provider: gitlab }
    secret: ${SECRET}
    actions: [\"true\"]
  tags:
    match: { event: tag }
    secret: ${SECRET}
    actions: [\"true\"]
  wrong:
    match: { branch: ^master$ }
    secret: not-the-secret
    actions: [\"true\"]
  guarded:
    match: { event: push }
    secret: ${SECRET}
    allow_from: [10.0.0.0/8]
    actions: [\"true\"]
";

/// The headers that carry a delivery's id, on each host.
const DELIVERY_HEADERS: [&str; 9] = [
    "x-github-delivery",
    "x-gogs-delivery",
    "x-gitea-delivery",
    "x-forgejo-delivery",
    "x-request-uuid",
    "x-request-id",
    "idempotency-key",
    "x-gitlab-webhook-uuid",
    "x-gitlab-event-uuid",
];

const ENTRIES: [&str; 6] = ["main", "skip", "gitlab", "tags", "wrong", "guarded"];

/// A verdict: the status, and the entries that get a job (recorded again or not).
type Verdict = (u16, BTreeSet<String>);

/// What the daemon answered, as a verdict: a redelivery or a replay is the store's business,
/// after the intake decided that the entry gets a job.
fn answered(reply: &Reply) -> Verdict {
    if reply.status >= 400 {
        return (reply.status, BTreeSet::new());
    }
    let body = reply.json();
    let mut entries = BTreeSet::new();
    for key in ["jobs", "duplicate"] {
        for job in body[key].as_array().into_iter().flatten() {
            entries.insert(job["entry"].as_str().unwrap().to_string());
        }
    }
    let replays = body["ignored"].as_object().or(body["entries"].as_object());
    for (entry, why) in replays.into_iter().flatten() {
        if why.as_str().unwrap().starts_with("replayed push") {
            entries.insert(entry.clone());
        }
    }
    let status = if entries.is_empty() { 200 } else { 202 };
    (status, entries)
}

/// What `--explain` said for `route`, as a verdict.
fn explained(out: &str, route: &str) -> Verdict {
    let prefix = format!("POST {route}: ");
    let line =
        out.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {route}: {out}"));
    let status: u16 = line[..3].parse().unwrap();
    let entries = match line.strip_prefix("202 queued: ") {
        Some(list) => list.split(", ").map(str::to_string).collect(),
        None => BTreeSet::new(),
    };
    (status, entries)
}

fn saved(req: &Request) -> Vec<u8> {
    let mut text: Vec<u8> =
        req.headers.iter().flat_map(|(k, v)| format!("{k}: {v}\n").into_bytes()).collect();
    text.push(b'\n');
    text.extend_from_slice(&req.body);
    text
}

#[test]
fn explain_gives_the_daemon_s_verdict_on_every_delivery_of_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SECRET", SECRET)];
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &env);
    let store = daemon.store();
    let mut requests = all_requests_in(&fixtures());
    requests.extend(all_requests_in(&fixtures().join("corpus2")));
    assert_eq!(requests.len(), 66 + 86);
    let (mut compared, mut queued, mut refused, mut skipped) = (0, 0, 0, 0);
    // The one job whose verdict changes when it ends (skip_deployed) takes longer than sending
    // to every route: each send meets the store as --explain read it.
    let check = |req: &Request, round: u8| {
        // Jobs end before the verdict is asked: skip_deployed reads what was deployed.
        crate::common::eventually("the jobs end", || store.unfinished().unwrap().is_empty());
        std::fs::write(dir.path().join("delivery.txt"), saved(req)).unwrap();
        let out =
            trigger(dir.path(), &["settings.yaml", "--explain", "delivery.txt", "--from", "127.0.0.1"], &env);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(2) {
            // Not a delivery --explain can read: the daemon refuses it too.
            let reply = daemon.send("/hooks", req);
            assert!(
                reply.status >= 400,
                "{} round {round}: explain refused, the daemon {}",
                req.name,
                reply.body
            );
            return None;
        }
        let routed = explained(&text, "/hooks");
        let reply = daemon.send("/hooks", req);
        assert_eq!(
            answered(&reply),
            routed,
            "{} round {round}, POST /hooks: {}\n{text}",
            req.name,
            reply.body
        );
        for entry in ENTRIES {
            let route = format!("/hooks/{entry}");
            let reply = daemon.send(&route, req);
            assert_eq!(
                answered(&reply),
                explained(&text, &route),
                "{} round {round}, {route}: {}\n{text}",
                req.name,
                reply.body
            );
        }
        Some((routed, text))
    };
    for req in &requests {
        let Some((routed, text)) = check(req, 1) else { continue };
        compared += 1;
        queued += usize::from(routed.0 == 202);
        refused += usize::from(routed.0 >= 400);
        assert!(text.contains("POST /hooks/guarded: 403 refused"), "{}: {text}", req.name);
        if !routed.1.contains("skip") {
            continue;
        }
        // The same push again at once, as a new delivery of the commit just deployed.
        let mut again = req.clone();
        for (k, v) in again.headers.iter_mut() {
            if DELIVERY_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                v.push_str("-again");
            }
        }
        let (routed, text) = check(&again, 2).unwrap();
        assert!(!routed.1.contains("skip"), "{}: {text}", req.name);
        assert!(text.contains("skip: matches, but commit "), "{}: {text}", req.name);
        skipped += 1;
    }
    assert!(compared >= 140, "only {compared} compared");
    assert!(
        queued >= 20 && refused >= 10 && skipped >= 2,
        "queued {queued}, refused {refused}, skipped {skipped}"
    );
}
