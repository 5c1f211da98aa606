//! The outbox under attack and under faults: a token goes only where the settings say, ids a
//! receiver dedupes by are never repeated, a dead API starves no one, and a GitHub deployment
//! survives a failed post.

use std::time::{Duration, Instant};

use crate::common::{eventually, github_push, push_body, Daemon};
use crate::standin::{always_ok, Answer, StandIn};

/// A push of `repo` whose repository URLs name `url` (the payload's word), signed with `s`.
fn push_naming(repo: &str, url: &str, after: char, id: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let body = push_body(repo, "refs/heads/main", &"0".repeat(40), &after.to_string().repeat(40));
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for key in ["clone_url", "html_url", "url", "git_url", "ssh_url"] {
        v["repository"][key] = url.into();
    }
    let body = serde_json::to_vec(&v).unwrap();
    (github_push(&body, "s", id), body)
}

/// Waits until the outbox is empty (delivered or dropped).
fn drained(daemon: &Daemon) {
    eventually("the outbox is empty", || daemon.get("/health").json()["outbox"]["pending"] == 0);
}

/// Without `api_url`, a signed payload that names another host (over HTTPS or plain HTTP)
/// receives no token, and the operator is told once, naming the entry and `api_url`.
#[test]
fn a_status_token_never_goes_where_the_payload_says() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    plain.set_nonblocking(true).unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, ca_file: test-ca.pem }\nentries:\n  site:\n    \
                match: { repo: \"acme/*\" }\n    secret: s\n    actions: [\"true\"]\n    \
                status: { token: ghp_OPERATORTOKEN }\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let https = format!("{}/acme/site.git", standin.url());
    let http = format!("http://{}/acme/site.git", plain.local_addr().unwrap());
    for (i, url) in
        [https.as_str(), http.as_str(), "https://github.com.127.0.0.1.nip.io/acme/site"].iter().enumerate()
    {
        let (headers, body) = push_naming("acme/site", url, char::from(b'a' + i as u8), &format!("tok-{i}"));
        let reply = daemon.post("/hooks", &headers, &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        daemon.wait_job(reply.job_ids()[0]);
    }
    drained(&daemon);
    std::thread::sleep(Duration::from_millis(300));
    assert!(standin.seen().is_empty(), "the stand-in got: {:?}", standin.seen());
    assert!(plain.accept().is_err(), "nothing connected over plain HTTP");
    let log = daemon.log();
    assert!(!log.contains("ghp_OPERATORTOKEN"), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("no commit status")).collect();
    assert_eq!(warnings.len(), 3, "once per host: {log}");
    assert!(warnings[0].contains("entry=site") && warnings[0].contains("api_url"), "{}", warnings[0]);

    // A self-hosted Gitea without api_url: --check says its events get no status.
    crate::common::write(
        dir.path(),
        "gitea.yaml",
        "entries:\n  forge:\n    match: { provider: gitea }\n    secret: s\n    actions: [\"true\"]\n    status: { token: t }\n",
    );
    let (code, stderr) = crate::common::check_settings(dir.path(), "gitea.yaml");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("entry \"forge\"") && stderr.contains("set status.api_url"), "{stderr}");
}

/// A failed post of a deployment's status is tried again on the same deployment: one job, one
/// GitHub deployment (each one fires the `deployment` event to workflows).
#[test]
fn a_failed_deployment_status_does_not_make_another_deployment() {
    let dir = tempfile::tempdir().unwrap();
    // The deployment is made (id 77); its first status is answered 502, the rest 201.
    let answer: Answer = std::sync::Arc::new(|seen, n| {
        if seen.path.ends_with("/deployments") {
            (201, "{\"id\": 77}".into())
        } else if n == 1 {
            (502, "{\"message\":\"bad gateway\"}".into())
        } else {
            (201, "{}".into())
        }
    });
    let standin = StandIn::start(dir.path(), answer);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  site:\n    match: {{ repo: acme/site }}\n    \
         secret: s\n    actions: [\"true\"]\n    status: {{ token: t, api_url: \"{}\", deployment: production }}\n",
        standin.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let (headers, body) = push_naming("acme/site", "https://github.com/acme/site.git", 'b', "dep-1");
    let reply = daemon.post("/hooks", &headers, &body);
    daemon.wait_job(reply.job_ids()[0]);
    drained(&daemon);
    let seen = standin.seen();
    let made: Vec<_> = seen.iter().filter(|s| s.path.ends_with("/deployments")).collect();
    assert_eq!(made.len(), 1, "one deployment: {:?}", seen.iter().map(|s| &s.path).collect::<Vec<_>>());
    let states: Vec<String> = seen
        .iter()
        .filter(|s| s.path == "/repos/acme/site/deployments/77/statuses" && s.answered == 201)
        .map(|s| s.json()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["queued", "in_progress", "success"]);
}

/// The ids receivers dedupe by (the webhook's `X-WH-Automata-Delivery`, Matrix's transaction
/// id) are never repeated: not after the outbox empties (SQLite hands row ids out again), not
/// by a new store in a state_dir made again; and a retry of one message keeps its id.
#[test]
fn notification_ids_are_never_repeated() {
    let dir = tempfile::tempdir().unwrap();
    // Each message is refused once (503), then taken: its retry must carry the same id.
    let tried = std::sync::Mutex::new(std::collections::HashSet::new());
    let answer: Answer = std::sync::Arc::new(move |seen, _| {
        if tried.lock().unwrap().insert(message_id(seen)) {
            (503, "{}".into())
        } else {
            (200, "{}".into())
        }
    });
    let standin = StandIn::start(dir.path(), answer);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nnotify:\n  relay: {{ webhook: \"{0}/relay\" }}\n  \
         chat: {{ matrix: {{ homeserver: \"{0}/mx\", room: \"!r:example.com\", token: tk }} }}\nentries:\n  site:\n    \
         secret: s\n    actions: [\"true\"]\n    notify: {{ to: [relay, chat], on: [succeeded] }}\n",
        standin.url()
    );
    for round in 0..2 {
        // The second round: the state_dir is made again, as after `rm -rf state`.
        let _ = std::fs::remove_dir_all(dir.path().join("state"));
        let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
        for i in 0..3 {
            let body = push_body(
                "acme/site",
                "refs/heads/main",
                &"0".repeat(40),
                &format!("{}{round}", ["a", "b", "c"][i]).repeat(20),
            );
            let reply = daemon.post("/hooks", &github_push(&body, "s", &format!("id-{round}-{i}")), &body);
            daemon.wait_job(reply.job_ids()[0]);
            // Delivered, and the outbox empty again, before the next one.
            drained(&daemon);
        }
        daemon.stop();
    }
    let seen = standin.seen();
    for target in ["/relay", "/mx/"] {
        let of_target: Vec<_> = seen.iter().filter(|s| s.path.starts_with(target)).collect();
        assert_eq!(of_target.len(), 12, "{target}: each of 6 messages refused once, then taken");
        let mut ids: Vec<String> = of_target.iter().map(|s| message_id(s)).collect();
        for id in &ids {
            let tries: Vec<u16> =
                of_target.iter().filter(|s| message_id(s) == *id).map(|s| s.answered).collect();
            assert_eq!(tries, [503, 200], "{target} {id}: a retry keeps its id");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6, "{target}: every message has its own id: {ids:?}");
    }
}

/// The id a receiver dedupes a message by: the webhook's header, Matrix's transaction id.
fn message_id(seen: &crate::standin::Seen) -> String {
    match seen.path.rsplit_once("/send/m.room.message/") {
        Some((_, txn)) => txn.to_string(),
        None => seen.header("x-wh-automata-delivery").to_string(),
    }
}

/// 20,000 undelivered statuses for an API that accepts connections and never answers: another
/// entry's status still arrives at once, and the daemon does not spin over the backlog.
#[test]
fn a_dead_api_with_a_large_backlog_starves_no_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let alive = StandIn::start(dir.path(), always_ok());
    // The dead API: connections are accepted and held, nothing is ever answered.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://127.0.0.1:{}", dead.local_addr().unwrap().port());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in dead.incoming().take(64) {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(120));
    });
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  stuck:\n    match: {{ repo: acme/stuck }}\n    \
         secret: s\n    actions: [\"true\"]\n    status: {{ token: t, api_url: \"{dead_url}\" }}\n  fine:\n    \
         match: {{ repo: acme/fine }}\n    secret: s\n    actions: [\"true\"]\n    status: {{ token: t, api_url: \"{}\" }}\n",
        alive.url()
    );
    // One real job of the stuck entry, then its undelivered item copied 20,000 times into
    // lanes of their own (as many commits), with the daemon stopped.
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = push_body("acme/stuck", "refs/heads/main", &"0".repeat(40), &"1".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&body, "s", "stuck-1"), &body);
    daemon.wait_job(reply.job_ids()[0]);
    daemon.stop();
    let db = rusqlite::Connection::open(dir.path().join("state/jobs.sqlite3")).unwrap();
    db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO outbox (job_id, entry, sink, lane, dest, head, kind, report, created_at, next_at)
         SELECT o.job_id, o.entry, o.sink, o.lane || ':' || n.i, o.dest, 1, o.kind, o.report, o.created_at, o.next_at
           FROM n, (SELECT * FROM outbox ORDER BY id LIMIT 1) AS o;",
    )
    .unwrap();
    drop(db);
    let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));

    let daemon = Daemon::start(dir.path(), &[]);
    let started = Instant::now();
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    };
    let body = push_body("acme/fine", "refs/heads/main", &"0".repeat(40), &"2".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&body, "s", "fine-1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let seen = alive.wait("the fine entry's three statuses", |s| s.len() >= 3);
    let took = started.elapsed();
    eprintln!("20,000 items for a dead API: the other entry's three statuses arrived in {took:?}");
    assert!(took < Duration::from_secs(15), "the fine entry's statuses took {took:?}");
    assert!(seen.iter().all(|s| s.path.starts_with("/repos/acme/fine/statuses/")));
    // Over the next two seconds the daemon mostly waits (the dead API's items rest).
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu() - before;
    eprintln!("CPU over the next 2 s: {spent:.2} s");
    assert!(spent < 1.0, "the daemon spent {spent} s of CPU in 2 s with a dead API's backlog");
    assert!(daemon.get("/health").json()["outbox"]["pending"].as_i64().unwrap() >= 20_000);
    drop(daemon);
    drop(held);
}
