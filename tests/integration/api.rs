//! The job API against the real daemon: tokens and scopes, JSON errors, pagination that holds
//! while jobs are added, waiting for the job a webhook started (found by its commit), a run,
//! a log, a freeze. No `api:`: no API.

use wh_automata::store::JobState;

use crate::common::{github_push, http, push_body, Daemon, Reply, SECRET};

const READ: &str = "read-token-0123456789";
const RUN: &str = "run-token-0123456789ab";
const ADMIN: &str = "admin-token-0123456789";

const SETTINGS: &str = "server: { listen: 127.0.0.1:0 }
api:
  tokens:
    - { name: dashboard, token: read-token-0123456789 }
    - { name: ci, token: run-token-0123456789ab, scope: run }
    - { name: ops, token: admin-token-0123456789, scope: admin }
entries:
  site:
    match: { branch: ^master$ }
    secret: ${SECRET}
    actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"']
";

fn call(daemon: &Daemon, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(t) = token {
        headers.push(("Authorization".to_string(), format!("Bearer {t}")));
    }
    http(daemon.addr, method, path, &headers, body.as_bytes())
}

/// A chunked body without its framing (the log is streamed in pieces).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

fn push(daemon: &Daemon, commit: char, delivery: &str) -> i64 {
    let body = push_body(
        "Codertocat/Hello-World",
        "refs/heads/master",
        &"0".repeat(40),
        &commit.to_string().repeat(40),
    );
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, delivery), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.job_ids()[0]
}

#[test]
fn tokens_scopes_and_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    for token in [None, Some("not-a-token-at-all-xx"), Some("")] {
        let reply = call(&daemon, "GET", "/api/v1/entries", token, "");
        assert_eq!(reply.status, 401, "{token:?}: {}", reply.body);
        assert!(reply.json()["error"].as_str().unwrap().contains("Bearer"));
        assert!(!reply.body.contains(READ));
    }
    let reply = call(&daemon, "GET", "/api/v1/entries", Some(READ), "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["entries"][0]["name"], "site");
    // A read token sees and cannot run; a run token cannot freeze.
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(READ), "{}");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("needs run"));
    let reply = call(&daemon, "POST", "/api/v1/entries/site/freeze", Some(RUN), "{}");
    assert_eq!(reply.status, 403);
    for (method, path, status) in [
        ("GET", "/api/v1/nothing", 404),
        ("GET", "/api/v1/jobs/999", 404),
        ("GET", "/api/v1/jobs/abc", 404),
        ("DELETE", "/api/v1/jobs", 405),
        ("GET", "/api/v1/jobs?state=sleeping", 400),
        ("GET", "/api/v1/jobs?commit=xyz", 400),
        ("POST", "/api/v1/entries/nope/run", 404),
    ] {
        let reply = call(&daemon, method, path, Some(ADMIN), "{}");
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{path}");
    }
    // Wrong tokens again and again: refused without a comparison for a while, and counted.
    for _ in 0..12 {
        call(&daemon, "GET", "/api/v1/entries", Some("wrong-token-000000000"), "");
    }
    assert_eq!(call(&daemon, "GET", "/api/v1/entries", Some(READ), "").status, 429);
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("wh_automata_api_refused_total 1"), "{metrics}");
    assert!(!daemon.log().contains(READ) && !daemon.log().contains("wrong-token"), "{}", daemon.log());
}

#[test]
fn ci_waits_for_the_job_the_webhook_started_and_pages_hold_while_jobs_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    let first = push(&daemon, 'a', "d1");
    // Waiting on the commit: the answer comes when its job has ended.
    let reply = call(
        &daemon,
        "GET",
        &format!("/api/v1/jobs?entry=site&commit={}&wait=10s", "a".repeat(40)),
        Some(RUN),
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let job = &reply.json()["jobs"][0];
    assert_eq!((job["id"].as_i64(), job["state"].as_str()), (Some(first), Some("succeeded")));
    // A wait that runs out: 202 with the state then.
    let second = push(&daemon, 'b', "d2");
    let reply = call(&daemon, "GET", &format!("/api/v1/jobs/{second}?wait=50ms"), Some(READ), "");
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(matches!(reply.json()["state"].as_str(), Some("queued" | "running")));
    let reply = call(&daemon, "GET", &format!("/api/v1/jobs/{second}?wait=10s"), Some(READ), "");
    assert_eq!((reply.status, reply.json()["state"].as_str()), (200, Some("succeeded")));
    let log = call(&daemon, "GET", &format!("/api/v1/jobs/{second}/log"), Some(READ), "");
    assert!(log.body.contains(&format!("ran webhook {}", "b".repeat(40))), "{}", log.body);
    let tail = call(&daemon, "GET", &format!("/api/v1/jobs/{second}/log?from=10"), Some(READ), "");
    let (whole, rest) = (dechunk(&log.body), dechunk(&tail.body));
    assert_eq!(rest, whole[10..], "?from= gives what follows byte N");

    for (i, c) in ['c', 'd', 'e'].into_iter().enumerate() {
        daemon.wait_job(push(&daemon, c, &format!("p{i}")));
    }
    let page = call(&daemon, "GET", "/api/v1/jobs?entry=site&limit=2", Some(READ), "").json();
    let ids = |page: &serde_json::Value| -> Vec<i64> {
        page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect()
    };
    let one = ids(&page);
    // A job added between two pages does not shift the next page.
    daemon.wait_job(push(&daemon, 'f', "p9"));
    let next = page["next_before"].as_i64().unwrap();
    let two =
        ids(&call(&daemon, "GET", &format!("/api/v1/jobs?entry=site&limit=2&before={next}"), Some(READ), "")
            .json());
    assert_eq!([one.clone(), two.clone()].concat(), [one[0], one[0] - 1, one[0] - 2, one[0] - 3]);
    let failed = call(&daemon, "GET", "/api/v1/jobs?state=failed", Some(READ), "").json();
    assert!(failed["jobs"].as_array().unwrap().is_empty());
}

#[test]
fn a_run_and_a_freeze_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    let reply = call(
        &daemon,
        "POST",
        "/api/v1/entries/site/run",
        Some(RUN),
        r#"{"branch":"master","commit":"abcd1234"}"#,
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.json()["job"].as_i64().unwrap();
    let job = daemon.wait_job(id);
    assert_eq!((job.state, job.event.after.as_str()), (JobState::Succeeded, "abcd1234"));
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(RUN), r#"{"branch":"a b"}"#);
    assert_eq!(reply.status, 400);

    let reply =
        call(&daemon, "POST", "/api/v1/entries/site/freeze", Some(ADMIN), r#"{"reason":"release week"}"#);
    assert_eq!((reply.status, reply.json()["frozen"].as_bool()), (200, Some(true)), "{}", reply.body);
    let held = push(&daemon, 'c', "h1");
    assert_eq!(daemon.store().job(held).unwrap().unwrap().state, JobState::Held);
    let entries = call(&daemon, "GET", "/api/v1/entries", Some(READ), "").json();
    assert_eq!(entries["entries"][0]["frozen"], "release week");
    assert_eq!(entries["entries"][0]["held"], 1);
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(RUN), "{}");
    assert_eq!(reply.status, 409, "{}", reply.body);
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(ADMIN), r#"{"force":true}"#);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let reply = call(&daemon, "POST", "/api/v1/entries/site/unfreeze", Some(ADMIN), "");
    assert_eq!(reply.json()["runs"].as_i64(), Some(held), "{}", reply.body);
    assert_eq!(daemon.wait_job(held).state, JobState::Succeeded);
}

#[test]
fn without_api_settings_there_is_no_api_and_allow_from_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  s:\n    insecure: true\n    actions: [\"true\"]\n",
        &[],
    );
    assert_eq!(call(&daemon, "GET", "/api/v1/entries", Some(ADMIN), "").status, 404);
    drop(daemon);
    let yaml = SETTINGS.replace("api:\n", "api:\n  allow_from: [10.0.0.0/8]\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    assert_eq!(call(&daemon, "GET", "/api/v1/entries", Some(ADMIN), "").status, 403);
    // Bad tokens in the settings are clear.
    crate::common::write(
        dir.path(),
        "bad.yaml",
        "api:\n  tokens:\n    - { name: ci, token: short, scope: root }\nentries: {}\n",
    );
    let (code, text) = crate::common::check_settings(dir.path(), "bad.yaml");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("shorter than 16") && text.contains("scope \"root\"") && text.contains("bad.yaml:1"),
        "{text}"
    );
}

/// What CI runs: `wh-automata-trigger --remote URL --token-file F ENTRY --wait --commit SHA`,
/// for the job the webhook started: the log as it comes, and the job's exit status: 0, the failed
/// action's, the newer job's when superseded, 2 when the wait runs out.
#[test]
fn ci_waits_for_the_deploy_of_its_commit_and_fails_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = SETTINGS.replace(
        "actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"']",
        "actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"; case $WH_AFTER in b*) exit 3;; d*) sleep 2;; esac']",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    std::fs::write(dir.path().join("ci.token"), format!("{RUN}\n")).unwrap();
    let url = format!("http://{}", daemon.addr);
    let wait = |commit: &str, extra: &[&str]| {
        let mut args =
            vec!["--remote", &url, "--token-file", "ci.token", "site", "--wait", "--commit", commit];
        args.extend_from_slice(extra);
        crate::common::trigger(dir.path(), &args, &[])
    };
    let a = "a".repeat(40);
    push(&daemon, 'a', "w1");
    let out = wait(&a, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("ran webhook {a}")));
    // A failing deploy fails the pipeline with the action's status.
    let b = "b".repeat(40);
    push(&daemon, 'b', "w2");
    let out = wait(&b, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    // Waiting before the webhook came: it waits for the job to appear.
    let c = "c".repeat(40);
    let waiter = {
        let (dir, url, c) = (dir.path().to_path_buf(), url.clone(), c.clone());
        std::thread::spawn(move || {
            let args = ["--remote", &url, "--token-file", "ci.token", "site", "--wait", "--commit", &c];
            crate::common::trigger(&dir, &args, &[])
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    push(&daemon, 'c', "w3");
    let out = waiter.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Superseded: the newer job's result counts.
    let first = push(&daemon, 'd', "w4");
    crate::common::eventually("d runs", || {
        daemon.store().job(first).unwrap().unwrap().state == JobState::Running
    });
    push(&daemon, 'e', "w5");
    // e waits behind d; a newer push (of a commit that fails) supersedes it.
    let e = "e".repeat(40);
    let f = format!("{}1", "b".repeat(39));
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", &"0".repeat(40), &f);
    daemon.post("/hooks/site", &github_push(&body, SECRET, "w6"), &body);
    let out = wait(&e, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("superseded by job"), "{err}");
    assert_eq!(out.status.code(), Some(3), "the newer job (a b... commit) failed: {err}");
    // Held: the wait runs out with exit 2 and the state.
    let admin_freeze = call(&daemon, "POST", "/api/v1/entries/site/freeze", Some(ADMIN), "{}");
    assert_eq!(admin_freeze.status, 200);
    push(&daemon, '9', "w7");
    let out = wait(&"9".repeat(40), &["--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still held"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--wait`'s other endings: a job that times out exits 124, one cancelled through the API 125,
/// and a commit skipped as already deployed reports the job that deployed it (0).
#[test]
fn wait_exits_124_on_timeout_125_on_cancel_and_0_for_a_commit_already_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = SETTINGS.replace(
        "actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"']",
        "actions: ['echo \"ran $WH_AFTER\"; case $WH_AFTER in 7*|8*) sleep 30;; esac']\n    timeout: 1s\n    skip_deployed: true",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    std::fs::write(dir.path().join("ci.token"), format!("{RUN}\n")).unwrap();
    let url = format!("http://{}", daemon.addr);
    let wait = |commit: &str| {
        let args = ["--remote", &url, "--token-file", "ci.token", "site", "--wait", "--commit", commit];
        crate::common::trigger(dir.path(), &args, &[])
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    push(&daemon, '7', "t1");
    let out = wait(&"7".repeat(40));
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed_out"), "{}", stderr(&out));
    // Cancelled while the CI job waits for it.
    let running = push(&daemon, '8', "t2");
    let waiter = {
        let (dir, url) = (dir.path().to_path_buf(), url.clone());
        std::thread::spawn(move || {
            let c = "8".repeat(40);
            let args = ["--remote", &url, "--token-file", "ci.token", "site", "--wait", "--commit", &c];
            crate::common::trigger(&dir, &args, &[])
        })
    };
    crate::common::eventually("it runs", || {
        daemon.store().job(running).unwrap().unwrap().state == JobState::Running
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(call(&daemon, "POST", &format!("/api/v1/jobs/{running}/cancel"), Some(RUN), "").status, 202);
    let out = waiter.join().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    // Deployed, then pushed again (another delivery of the same commit): no new job; the wait
    // reports the job that deployed it.
    let deployed = push(&daemon, 'a', "t3");
    assert_eq!(daemon.wait_job(deployed).state, JobState::Succeeded);
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", &"0".repeat(40), &"a".repeat(40));
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, "t4"), &body);
    assert!(reply.body.contains("already deployed"), "{}", reply.body);
    let out = wait(&"a".repeat(40));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("job {deployed} succeeded")), "{}", stderr(&out));
}

#[test]
fn releases_and_a_rollback_through_the_api_and_remote() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    let first = push(&daemon, 'a', "r1");
    daemon.wait_job(first);
    daemon.wait_job(push(&daemon, 'c', "r2"));
    let releases = call(&daemon, "GET", "/api/v1/entries/site/releases", Some(READ), "").json();
    let commits: Vec<&str> = releases["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["event"]["commit"].as_str().unwrap())
        .collect();
    assert_eq!(commits, ["c".repeat(40), "a".repeat(40)]);
    assert_eq!(call(&daemon, "POST", "/api/v1/entries/site/rollback", Some(READ), "{}").status, 403);
    let reply = call(&daemon, "POST", "/api/v1/entries/site/rollback", Some(RUN), "{\"to\":\"ffff\"}");
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("is not a release of site"));
    // The release before the newest, by default.
    let reply = call(&daemon, "POST", "/api/v1/entries/site/rollback", Some(RUN), "{}");
    assert_eq!(reply.status, 202, "{}", reply.body);
    let job = daemon.wait_job(reply.json()["job"].as_i64().unwrap());
    assert_eq!((job.trigger, job.event.after), (wh_automata::event::Trigger::Rollback, "a".repeat(40)));
    assert_eq!(job.event.rollback_from, Some("c".repeat(40)));

    std::fs::write(dir.path().join("ops.token"), ADMIN).unwrap();
    let url = format!("http://{}", daemon.addr);
    let remote = |args: &[&str]| {
        let mut all = vec!["--remote", url.as_str(), "--token-file", "ops.token"];
        all.extend_from_slice(args);
        crate::common::trigger(dir.path(), &all, &[])
    };
    let out = remote(&["site", "--rollback", "--to", &first.to_string(), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("ran rollback {}", "a".repeat(40))));
    let out = remote(&["--releases", "site"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().filter(|l| l.ends_with("rollback")).count(), 2, "{text}");
    assert!(text.lines().any(|l| l.starts_with("cccccccccccc") && l.ends_with("push")), "{text}");
    let out = remote(&["--jobs"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let out = remote(&["site", "--freeze", "--reason", "from ci"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(daemon.store().frozen_reason("site").unwrap().as_deref(), Some("from ci"));
}

/// Reads a Server-Sent Events stream to its end; each event with when it arrived.
fn events(daemon: &Daemon, path: &str, last: Option<&str>) -> Vec<(std::time::Instant, String)> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(daemon.addr).unwrap();
    let resume = last.map(|l| format!("Last-Event-ID: {l}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ}\r\nAccept: text/event-stream\r\n{resume}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut out = Vec::new();
    let mut event = String::new();
    let mut line = String::new();
    let mut in_body = false;
    while reader.read_line(&mut line).unwrap() > 0 {
        if in_body {
            // Chunked framing: only the event lines matter.
            if line.starts_with("id:") || line.starts_with("event:") || line.starts_with("data:") {
                event.push_str(&line);
            } else if (line == "\r\n" || line == "\n") && !event.is_empty() {
                out.push((std::time::Instant::now(), std::mem::take(&mut event)));
            }
        } else if line == "\r\n" {
            in_body = true;
        }
        line.clear();
    }
    out
}

#[test]
fn a_log_streams_as_events_while_the_job_runs_and_resumes_after_the_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = SETTINGS.replace(
        "actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"']",
        "actions: ['for i in 1 2 3; do echo \"line $i <b>\\a\"; sleep 0.7; done']",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let id = push(&daemon, 'a', "s1");
    let got = events(&daemon, &format!("/api/v1/jobs/{id}/log"), None);
    let ended = std::time::Instant::now();
    let texts: Vec<&str> = got.iter().map(|(_, e)| e.as_str()).collect();
    let lines: Vec<&&str> = texts.iter().filter(|e| e.contains("Z line ")).collect();
    assert_eq!(lines.len(), 3, "{texts:#?}");
    assert!(lines[0].contains(r#"Z line 1 <b>\u0007""#), "control characters are escaped: {}", lines[0]);
    // The first line came while the job still ran.
    let first = got.iter().find(|(_, e)| e.contains("line 1")).unwrap().0;
    assert!(
        ended.duration_since(first) > std::time::Duration::from_millis(300),
        "streamed as it came: {:?} before the end; {texts:#?}",
        ended.duration_since(first)
    );
    let end = texts.last().unwrap();
    assert!(end.starts_with("event: end") && end.contains("\"state\":\"succeeded\""), "{end}");
    // Resuming after the second line's event: only what follows.
    let second = lines[1].lines().find_map(|l| l.strip_prefix("id: ")).unwrap().trim().to_string();
    let again = events(&daemon, &format!("/api/v1/jobs/{id}/log"), Some(&second));
    let rest: Vec<&String> = again.iter().map(|(_, e)| e).filter(|e| e.contains("event: log")).collect();
    assert!(rest.iter().all(|e| !e.contains("line 1") && !e.contains("line 2")), "{rest:?}");
    assert!(rest.iter().any(|e| e.contains("line 3")), "{rest:?}");
    assert!(again.last().unwrap().1.starts_with("event: end"));
    // Without a token: 401, no stream.
    let reply = http(
        daemon.addr,
        "GET",
        &format!("/api/v1/jobs/{id}/log"),
        &[("Accept".into(), "text/event-stream".into())],
        b"",
    );
    assert_eq!(reply.status, 401);
}

/// Waiting requests have a room of their own (`api.max_waiting`): beyond it they get 503 at
/// once; they take none of the places of `server.max_connections`, so with every place they
/// could hold taken by waiters, the hosts' deliveries and short requests still get in, and the
/// waiters are not cut for them.
#[test]
fn waiting_requests_have_a_room_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = SETTINGS
        .replace(
            "server: { listen: 127.0.0.1:0 }",
            "server: { listen: 127.0.0.1:0, max_connections: 2, max_connections_per_address: 2 }",
        )
        .replace("api:\n", "api:\n  max_waiting: 3\n")
        .replace("actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"']", "actions: ['sleep 3']");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let id = push(&daemon, 'a', "l1");
    let addr = daemon.addr;
    let waiting = |n: usize| {
        crate::common::eventually("the requests wait", || {
            daemon.get("/metrics").body.contains(&format!("wh_automata_api_waiting {n}\n"))
        })
    };
    let mut waiters = Vec::new();
    for n in 1..=2 {
        waiters.push(std::thread::spawn(move || {
            let headers = vec![("Authorization".to_string(), format!("Bearer {READ}"))];
            http(addr, "GET", &format!("/api/v1/jobs/{id}?wait=20s"), &headers, b"").status
        }));
        waiting(n);
    }
    waiters.push(std::thread::spawn(move || {
        let headers = vec![
            ("Authorization".to_string(), format!("Bearer {READ}")),
            ("Accept".to_string(), "text/event-stream".to_string()),
        ];
        let reply = http(addr, "GET", &format!("/api/v1/jobs/{id}/log"), &headers, b"");
        assert!(reply.body.contains("event: end"), "{}", reply.body);
        reply.status
    }));
    waiting(3);
    let reply = call(&daemon, "GET", &format!("/api/v1/jobs/{id}?wait=20s"), Some(READ), "");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("5"));
    // Three requests wait, on two places: a delivery gets in, and requests that do not wait.
    push(&daemon, 'b', "l2");
    for _ in 0..3 {
        assert_eq!(call(&daemon, "GET", "/api/v1/entries", Some(READ), "").status, 200);
    }
    for w in waiters {
        assert_eq!(w.join().unwrap(), 200);
    }
    waiting(0);
    assert_eq!(call(&daemon, "GET", &format!("/api/v1/jobs/{id}?wait=1s"), Some(READ), "").status, 200);
}

/// Cancelling: a waiting job at once, a running one by killing its processes (recorded
/// cancelled, not run again at the next start), an ended one refused.
#[test]
fn a_job_is_cancelled_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = SETTINGS.replace(
        "actions: ['sleep 0.3; echo \"ran $WH_TRIGGER $WH_AFTER\"']",
        "actions: ['echo started >> ../ran; sleep 5; echo finished >> ../ran']\n    workdir: work",
    );
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let running = push(&daemon, 'a', "c1");
    crate::common::eventually("it runs", || {
        daemon.store().job(running).unwrap().unwrap().state == JobState::Running
    });
    // A manual run waits behind it.
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(RUN), r#"{"branch":"master"}"#);
    let queued = reply.json()["job"].as_i64().unwrap();
    assert_eq!(call(&daemon, "POST", &format!("/api/v1/jobs/{queued}/cancel"), Some(READ), "").status, 403);
    let reply = call(&daemon, "POST", &format!("/api/v1/jobs/{queued}/cancel"), Some(RUN), "");
    assert_eq!((reply.status, reply.json()["state"].as_str()), (200, Some("cancelled")), "{}", reply.body);
    let reply = call(&daemon, "POST", &format!("/api/v1/jobs/{running}/cancel"), Some(RUN), "");
    assert_eq!((reply.status, reply.json()["state"].as_str()), (202, Some("cancelling")), "{}", reply.body);
    let job = daemon.wait_job(running);
    assert_eq!(job.state, JobState::Cancelled);
    assert!(
        job.reason.as_deref().unwrap().contains("cancelled through the API (token \"ci\")"),
        "{:?}",
        job.reason
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ran")).unwrap(),
        "started\n",
        "its processes were killed"
    );
    let q = daemon.store().job(queued).unwrap().unwrap();
    assert_eq!(q.state, JobState::Cancelled, "the waiting one never ran");
    assert_eq!(call(&daemon, "POST", &format!("/api/v1/jobs/{running}/cancel"), Some(RUN), "").status, 409);
    assert_eq!(call(&daemon, "POST", "/api/v1/jobs/999/cancel", Some(RUN), "").status, 404);
    // Not run again at the next start.
    daemon.stop();
    let daemon = Daemon::start(dir.path(), &[("SECRET", SECRET)]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(daemon.store().job(running).unwrap().unwrap().state, JobState::Cancelled);
}

/// `value` against `schema` of the OpenAPI document `doc`: types, required and known
/// properties, items, `$ref`s, `anyOf`/`oneOf`. The path of the first misfit, if any.
fn misfit(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    doc: &serde_json::Value,
    at: &str,
) -> Option<String> {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/schemas/").expect("a component");
        return misfit(value, &doc["components"]["schemas"][name], doc, at);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            return options
                .iter()
                .all(|o| misfit(value, o, doc, at).is_some())
                .then(|| format!("{at}: fits none of {key}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.is_empty() || types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return Some(format!("{at}: {kind}, not {types:?}"));
    }
    if let Value::Object(map) = value {
        let properties = schema["properties"].as_object().cloned().unwrap_or_default();
        for (key, v) in map {
            let Some(property) = properties.get(key) else {
                return Some(format!("{at}.{key}: not documented"));
            };
            if let Some(m) = misfit(v, property, doc, &format!("{at}.{key}")) {
                return Some(m);
            }
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(required.as_str().unwrap()) {
                return Some(format!("{at}.{required}: required, missing"));
            }
        }
    }
    if let Value::Array(items) = value {
        for (i, item) in items.iter().enumerate() {
            if let Some(m) = misfit(item, &schema["items"], doc, &format!("{at}[{i}]")) {
                return Some(m);
            }
        }
    }
    None
}

/// The OpenAPI document is the router's table: every route it lists answers (with a status it
/// documents, and JSON its schemas describe), and a path it does not list is 404.
#[test]
fn the_openapi_document_describes_what_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    assert_eq!(call(&daemon, "GET", "/api/v1/openapi.json", None, "").status, 401);
    let reply = call(&daemon, "GET", "/api/v1/openapi.json", Some(READ), "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let id = push(&daemon, 'a', "o1");
    daemon.wait_job(id);
    let mut asked = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let concrete = path.replace("{id}", &id.to_string()).replace("{name}", "site");
            let body = match concrete.rsplit('/').next().unwrap() {
                "run" => r#"{"branch":"master"}"#,
                "rollback" => r#"{"to":"aaaa"}"#,
                "freeze" => r#"{"reason":"checking the document"}"#,
                _ => "",
            };
            let reply = call(&daemon, &method.to_uppercase(), &concrete, Some(ADMIN), body);
            let documented = &operation["responses"][reply.status.to_string()];
            assert!(
                documented.is_object(),
                "{method} {path}: {} is not documented: {}",
                reply.status,
                reply.body
            );
            if let Some(schema) = documented["content"].get("application/json").map(|c| &c["schema"]) {
                if path.ends_with("openapi.json") {
                    continue;
                }
                assert_eq!(misfit(&reply.json(), schema, &doc, "$"), None, "{method} {path}: {}", reply.body);
            }
            asked += 1;
        }
    }
    assert!(asked >= 10, "{asked} routes asked");
    // The check can fail: a wrong type, an unknown key, a missing one.
    let entries =
        &doc["paths"]["/api/v1/entries"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    for bad in [
        serde_json::json!({ "entries": [{ "name": 1 }] }),
        serde_json::json!({ "entries": [], "more": true }),
        serde_json::json!({}),
    ] {
        assert!(misfit(&bad, entries, &doc, "$").is_some(), "{bad}");
    }
    // A refusal is an ApiError, as documented.
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(READ), "");
    let schema = &doc["paths"]["/api/v1/entries/{name}/run"]["post"]["responses"]["403"]["content"]
        ["application/json"]["schema"];
    assert_eq!((reply.status, misfit(&reply.json(), schema, &doc, "$")), (403, None));
    // A body the shape does not know is refused, saying why.
    let reply = call(&daemon, "POST", "/api/v1/entries/site/run", Some(RUN), r#"{"brnach":"master"}"#);
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].as_str().unwrap().contains("brnach"), "{}", reply.body);
    assert_eq!(call(&daemon, "GET", "/api/v1/nothing", Some(READ), "").status, 404);
    assert_eq!(call(&daemon, "DELETE", "/api/v1/jobs/1", Some(ADMIN), "").status, 405);
}
