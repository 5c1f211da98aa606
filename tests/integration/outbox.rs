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
