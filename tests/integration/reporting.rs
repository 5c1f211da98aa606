//! Deploy status on the commit and notifications, end to end: the real daemon, real fixture
//! deliveries, and stand-ins that speak each API over real HTTPS with a test CA.

use std::collections::HashMap;
use std::time::Duration;

use wh_automata::store::JobState;

use crate::common::{eventually, github_push, push_body, request, write, Daemon};
use crate::standin::{always_ok, Answer, Seen, StandIn};

/// The state a request set, in each host's words.
fn state_of(seen: &Seen) -> String {
    let body = seen.json();
    body["state"].as_str().unwrap_or_default().to_string()
}

/// The requests whose path starts with `prefix`, in the order received.
fn under<'a>(seen: &'a [Seen], prefix: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.path.starts_with(prefix)).collect()
}

/// Each host's status request: path, auth header and fields; one job that succeeds and one
/// that fails per host, each reported pending first, then its end, in that order.
#[test]
fn every_host_gets_pending_then_the_end_of_each_job_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let url = standin.url();
    let hosts = [
        // (name, provider, repo, api_url, token variable, fixture)
        ("gh", "github", "Codertocat/Hello-World", format!("{url}/gh"), "GH_TOKEN", "github/push.json"),
        (
            "gitea",
            "gitea",
            "Test-CI/multi-line-secrets",
            format!("{url}/gitea/api/v1"),
            "GITEA_TOKEN",
            "gitea/push.json",
        ),
        (
            "gl",
            "gitlab",
            "group1/group2/group3/grp2repo",
            format!("{url}/gl/api/v4"),
            "GL_TOKEN",
            "gitlab/push-subgroup.json",
        ),
        (
            "bb",
            "bitbucket",
            "brydzewski/foo",
            format!("{url}/bb/2.0"),
            "BB_TOKEN",
            "bitbucket/repo_push.json",
        ),
        (
            "bbs",
            "bitbucket",
            "PRJ/my-repo",
            format!("{url}/bbs"),
            "BBS_TOKEN",
            "bitbucket-server/repo_refs_changed.json",
        ),
    ];
    let mut yaml = String::from(
        "server:\n  listen: 127.0.0.1:0\n  ca_file: test-ca.pem\n  public_url: https://deploy.example.com/\nentries:\n",
    );
    for (name, provider, repo, api, var, _) in &hosts {
        for (suffix, action) in [("ok", "echo fine"), ("bad", "echo first; echo boom-line; exit 3")] {
            yaml.push_str(&format!(
                "  {name}-{suffix}:\n    match: {{ provider: {provider}, repo: \"{repo}\", branch: \".*\" }}\n    \
                 secret: \"It's a Secret to Everybody\"\n    actions: [\"{action}\"]\n    \
                 status: {{ token: \"${{{var}}}\", api_url: \"{api}\" }}\n"
            ));
        }
    }
    let tokens = [
        ("GH_TOKEN", "ghp_SECRETTOKEN1"),
        ("GITEA_TOKEN", "gitea-SECRETTOKEN2"),
        ("GL_TOKEN", "glpat-SECRETTOKEN3"),
        ("BB_TOKEN", "bb-SECRETTOKEN4"),
        ("BBS_TOKEN", "admin:SECRETTOKEN5"),
    ];
    let daemon = Daemon::with_settings(dir.path(), &yaml, &tokens);
    for (_, _, _, _, _, fixture) in &hosts {
        let reply = daemon.send("/hooks", &request(fixture));
        assert_eq!(reply.status, 202, "{fixture}: {}", reply.body);
        assert_eq!(reply.job_ids().len(), 2, "{fixture}: both entries run: {}", reply.body);
    }
    let seen = standin.wait("three statuses per job", |s| s.len() >= 30);
    std::thread::sleep(Duration::from_millis(300));
    let seen_now = standin.seen();
    assert_eq!(seen_now.len(), 30, "no status is sent twice");

    let sha = |fixture: &str| -> String {
        let line = std::fs::read_to_string(crate::common::fixtures().join("expected.tsv"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(&format!("{fixture}\t")))
            .unwrap()
            .to_string();
        line.rsplit('\t').next().unwrap().to_string()
    };
    // GitHub: commit statuses, bearer token, the API version header.
    let gh_sha = sha("github/push.json");
    let gh = under(&seen, "/gh/");
    for s in &gh {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, format!("/gh/repos/Codertocat/Hello-World/statuses/{gh_sha}"));
        assert_eq!(s.header("authorization"), "Bearer ghp_SECRETTOKEN1");
        assert_eq!(s.header("accept"), "application/vnd.github+json");
        assert_eq!(s.header("x-github-api-version"), "2022-11-28");
        assert!(s.header("user-agent").starts_with("wh-automata/"));
        assert!(s.json()["target_url"].as_str().unwrap().starts_with("https://deploy.example.com/jobs/"));
    }
    let by_context = |list: &[&Seen], field: &str| -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for s in list {
            out.entry(s.json()[field].as_str().unwrap().to_string()).or_default().push(state_of(s));
        }
        out
    };
    let states = by_context(&gh, "context");
    assert_eq!(states["wh-automata/gh-ok"], ["pending", "pending", "success"]);
    assert_eq!(states["wh-automata/gh-bad"], ["pending", "pending", "failure"]);
    let descriptions: Vec<String> = gh
        .iter()
        .filter(|s| s.json()["context"] == "wh-automata/gh-bad")
        .map(|s| s.json()["description"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(descriptions[..2], ["queued", "deploying"]);
    assert!(descriptions[2].contains("action 1 exited with 3"), "{descriptions:?}");

    // Gitea and Forgejo: `token` auth.
    let gitea = under(&seen, "/gitea/");
    let gitea_sha = sha("gitea/push.json");
    for s in &gitea {
        assert_eq!(s.path, format!("/gitea/api/v1/repos/Test-CI/multi-line-secrets/statuses/{gitea_sha}"));
        assert_eq!(s.header("authorization"), "token gitea-SECRETTOKEN2");
    }
    let states = by_context(&gitea, "context");
    assert_eq!(states["wh-automata/gitea-ok"], ["pending", "pending", "success"]);
    assert_eq!(states["wh-automata/gitea-bad"], ["pending", "pending", "failure"]);

    // GitLab: the project's whole path encoded as one segment, PRIVATE-TOKEN, ref and name.
    let gl = under(&seen, "/gl/");
    for s in &gl {
        assert_eq!(
            s.path,
            format!(
                "/gl/api/v4/projects/group1%2Fgroup2%2Fgroup3%2Fgrp2repo/statuses/{}",
                sha("gitlab/push-subgroup.json")
            )
        );
        assert_eq!(s.header("private-token"), "glpat-SECRETTOKEN3");
        assert_eq!(s.json()["ref"], "master");
    }
    let states = by_context(&gl, "name");
    assert_eq!(states["wh-automata/gl-ok"], ["pending", "running", "success"]);
    assert_eq!(states["wh-automata/gl-bad"], ["pending", "running", "failed"]);

    // Bitbucket Cloud: build statuses with a key and a required URL.
    let bb = under(&seen, "/bb/");
    for s in &bb {
        assert_eq!(
            s.path,
            format!(
                "/bb/2.0/repositories/brydzewski/foo/commit/{}/statuses/build",
                sha("bitbucket/repo_push.json")
            )
        );
        assert_eq!(s.header("authorization"), "Bearer bb-SECRETTOKEN4");
        assert!(s.json()["url"].as_str().unwrap().starts_with("https://deploy.example.com/jobs/"));
    }
    let states = by_context(&bb, "key");
    assert_eq!(states["wh-automata/bb-ok"], ["INPROGRESS", "INPROGRESS", "SUCCESSFUL"]);
    assert_eq!(states["wh-automata/bb-bad"], ["INPROGRESS", "INPROGRESS", "FAILED"]);

    // Bitbucket Server / Data Center: its own build-status API; user:password is Basic auth.
    let bbs = under(&seen, "/bbs/");
    for s in &bbs {
        assert_eq!(
            s.path,
            format!("/bbs/rest/build-status/1.0/commits/{}", sha("bitbucket-server/repo_refs_changed.json"))
        );
        assert_eq!(s.header("authorization"), "Basic YWRtaW46U0VDUkVUVE9LRU41");
    }
    let states = by_context(&bbs, "key");
    assert_eq!(states["wh-automata/bbs-ok"], ["INPROGRESS", "INPROGRESS", "SUCCESSFUL"]);
    assert_eq!(states["wh-automata/bbs-bad"], ["INPROGRESS", "INPROGRESS", "FAILED"]);

    let health = daemon.get("/health").json();
    assert_eq!(health["outbox"]["pending"], 0, "{health}");
    let log = daemon.stop_with_log();
    for (_, token) in tokens {
        assert!(!log.contains(token), "a token is never logged");
    }
    assert!(!log.contains("SECRETTOKEN5"));
}

/// A job replaced in the queue by a newer push to the same ref ends `error` on its commit,
/// saying which commit replaced it; it never stays pending.
#[test]
fn a_superseded_job_ends_error_on_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  site:\n    match: {{ repo: acme/site }}\n    \
         secret: s3cret\n    actions: [\"sleep 1\"]\n    status: {{ token: t0ken, api_url: \"{}\", context: deploy/site }}\n",
        standin.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let shas: Vec<String> = (1..=3).map(|i| format!("{i:040x}")).collect();
    for (i, sha) in shas.iter().enumerate() {
        let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), sha);
        let reply = daemon.post("/hooks", &github_push(&body, "s3cret", &format!("d{i}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        if i == 0 {
            // The first one is running before the others arrive.
            let store = daemon.store();
            eventually("the first job runs", || store.recent(1).unwrap()[0].state == JobState::Running);
        }
    }
    let seen = standin.wait("the last job's success", |s| {
        s.iter().any(|r| r.path.ends_with(&shas[2]) && state_of(r) == "success")
            && s.iter().any(|r| r.path.ends_with(&shas[1]) && state_of(r) == "error")
    });
    let of = |sha: &str| -> Vec<(String, String)> {
        seen.iter()
            .filter(|r| r.path.ends_with(sha))
            .map(|r| (state_of(r), r.json()["description"].as_str().unwrap_or_default().to_string()))
            .collect()
    };
    assert_eq!(
        of(&shas[1]),
        [("pending".into(), "queued".into()), ("error".into(), format!("superseded by {}", &shas[2][..7]))]
    );
    assert_eq!(of(&shas[0]).last().unwrap().0, "success");
    assert_eq!(
        of(&shas[2]).iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["pending", "pending", "success"]
    );
    assert!(seen.iter().all(|r| r.json()["context"] == "deploy/site"));
}

/// A stand-in that fails five times, then works: every item arrives once, in order per commit.
#[test]
fn a_target_that_fails_five_times_then_works_gets_every_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let answer: Answer =
        std::sync::Arc::new(
            |_, n| if n < 5 { (500, "{\"message\":\"down\"}".into()) } else { (201, "{}".into()) },
        );
    let standin = StandIn::start(dir.path(), answer);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  site:\n    match: {{ repo: acme/site, branch: \".*\" }}\n    \
         secret: s3cret\n    actions: [\"true\"]\n    status: {{ token: t0ken, api_url: \"{}\" }}\n",
        standin.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let shas: Vec<String> = (1..=3).map(|i| format!("{:040x}", 0xabc0 + i)).collect();
    for (i, sha) in shas.iter().enumerate() {
        let body = push_body("acme/site", &format!("refs/heads/b{i}"), &"0".repeat(40), sha);
        assert_eq!(daemon.post("/hooks", &github_push(&body, "s3cret", &format!("d{i}")), &body).status, 202);
    }
    let delivered = |s: &[Seen]| s.iter().filter(|r| r.answered == 201).count();
    let seen = standin.wait("9 statuses delivered", |s| delivered(s) >= 9);
    std::thread::sleep(Duration::from_millis(500));
    let seen_now = standin.seen();
    assert_eq!(delivered(&seen_now), 9, "each item once");
    assert_eq!(seen.iter().filter(|r| r.answered == 500).count(), 5);
    for sha in &shas {
        let ok: Vec<String> = seen_now
            .iter()
            .filter(|r| r.answered == 201 && r.path.ends_with(sha.as_str()))
            .map(state_of)
            .collect();
        assert_eq!(ok, ["pending", "pending", "success"], "in order for {sha}");
    }
    let log = daemon.stop_with_log();
    assert_eq!(
        log.matches("status not delivered; trying again").count(),
        1,
        "failures are warned about, once a minute per target at most:\n{log}"
    );
    assert!(!log.contains("t0ken"));
}

/// With the host down, the daemon is killed with statuses waiting; after its restart they all
/// arrive, once each, in order per commit.
#[test]
fn statuses_waiting_when_the_daemon_is_killed_arrive_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = crate::standin::free_addr();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  site:\n    match: {{ repo: acme/site, branch: \".*\" }}\n    \
         secret: s3cret\n    actions: [\"true\"]\n    status: {{ token: t0ken, api_url: \"https://127.0.0.1:{}\" }}\n",
        addr.port()
    );
    // The CA file must exist for the daemon to start: a first stand-in writes it, and goes.
    drop(StandIn::start(dir.path(), always_ok()));
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let shas: Vec<String> = (1..=7).map(|i| format!("{:040x}", 0xfeed0 + i)).collect();
    for (i, sha) in shas.iter().enumerate() {
        let body = push_body("acme/site", &format!("refs/heads/b{i}"), &"0".repeat(40), sha);
        assert_eq!(daemon.post("/hooks", &github_push(&body, "s3cret", &format!("d{i}")), &body).status, 202);
    }
    eventually("21 statuses wait in the outbox", || daemon.get("/health").json()["outbox"]["pending"] == 21);
    eventually("the oldest was tried", || daemon.get("/health").json()["outbox"]["oldest_error"].is_string());
    let health = daemon.get("/health").json();
    assert!(health["outbox"]["oldest"].is_string(), "{health}");
    assert!(health["outbox"]["oldest_error"].as_str().is_some_and(|e| !e.is_empty()), "{health}");
    assert_eq!(health["outbox"]["pending"], 21, "{health}");
    let mut daemon = daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(daemon);
    let standin = StandIn::start_at(dir.path(), addr, always_ok());
    let daemon = Daemon::start(dir.path(), &[]);
    let seen = standin.wait("21 statuses", |s| s.len() >= 21);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(standin.seen().len(), 21, "each once");
    for sha in &shas {
        let states: Vec<String> =
            seen.iter().filter(|r| r.path.ends_with(sha.as_str())).map(state_of).collect();
        assert_eq!(states, ["pending", "pending", "success"], "in order for {sha}");
    }
    eventually("the outbox is empty", || daemon.get("/health").json()["outbox"]["pending"] == 0);
}

/// A failing entry tells each target once per failing streak, then once that it recovered;
/// every kind of target gets the message in its own API's shape.
#[test]
fn one_message_per_failing_streak_and_one_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let standin =
        StandIn::start(dir.path(), std::sync::Arc::new(|_, _| (200, "{\"event_id\":\"$x\"}".into())));
    let url = standin.url();
    write(
        dir.path(),
        "fake-sendmail",
        "#!/bin/sh\n# A stand-in for sendmail(8): keeps each mail and its arguments.\nn=$(ls mail-* 2>/dev/null | wc -l)\n\
         { echo \"ARGS: $*\"; cat; } > \"mail-$n\"\n",
    );
    std::fs::set_permissions(
        dir.path().join("fake-sendmail"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  ca_file: test-ca.pem\n  public_url: https://deploy.example.com\n  sendmail: ./fake-sendmail\n\
notify:\n  team: {{ slack: \"{url}/slack/${{SLACK_PART}}\" }}\n  relay: {{ webhook: \"{url}/relay\", secret: \"${{RELAY_SECRET}}\" }}\n  \
disc: {{ discord: \"{url}/discord/hook\" }}\n  phone: {{ ntfy: \"{url}/ntfy/deploys\", token: tk_NTFY }}\n  \
chat: {{ matrix: {{ homeserver: \"{url}/mx\", room: \"!room:example.com\", token: \"${{MATRIX_TOKEN}}\" }} }}\n  \
ops: {{ email: [ops@example.com, dev@example.com] }}\n  pager: {{ command: \"echo \\\"$WH_NOTIFY $WH_ENTRY $WH_COMMIT_MESSAGE\\\" >> paged\" }}\n\
entries:\n  site:\n    match: {{ repo: acme/site }}\n    secret: s3cret\n    workdir: .\n    \
actions: [\"echo step-$(cat round 2>/dev/null); test -f ok\"]\n    notify: [team, relay, disc, phone, chat, ops, pager]\n"
    );
    let env = [
        ("SLACK_PART", "T0/B0/SLACKSECRET"),
        ("RELAY_SECRET", "relay-key"),
        ("MATRIX_TOKEN", "syt_MATRIXSECRET"),
    ];
    let daemon = Daemon::with_settings(dir.path(), &yaml, &env);
    // fail, fail, fail, succeed, succeed, fail: two streaks, one recovery.
    let plan = [false, false, false, true, true, false];
    for (i, ok) in plan.iter().enumerate() {
        let flag = dir.path().join("ok");
        if *ok {
            std::fs::write(&flag, "").unwrap();
        } else {
            let _ = std::fs::remove_file(&flag);
        }
        std::fs::write(dir.path().join("round"), i.to_string()).unwrap();
        let sha = format!("{:040x}", 0xc0ffee00u64 + i as u64);
        let mut body: serde_json::Value =
            serde_json::from_slice(&push_body("acme/site", "refs/heads/main", &"0".repeat(40), &sha))
                .unwrap();
        body["head_commit"]["message"] = format!("<!channel> round {i} @everyone").into();
        let body = serde_json::to_vec(&body).unwrap();
        let reply = daemon.post("/hooks", &github_push(&body, "s3cret", &format!("d{i}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        let job = daemon.wait_job(reply.job_ids()[0]);
        assert_eq!(job.state == JobState::Succeeded, *ok);
    }
    // 3 messages to each of the 5 HTTP targets.
    let seen = standin.wait("15 messages", |s| s.len() >= 15);
    eventually("3 mails and 3 pages", || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().starts_with("mail-"))
            .count()
            == 3
            && std::fs::read_to_string(dir.path().join("paged")).is_ok_and(|t| t.lines().count() == 3)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(standin.seen().len(), 15, "one message per streak and target");

    let slack = under(&seen, "/slack/");
    assert_eq!(slack.len(), 3);
    assert_eq!(slack[0].path, "/slack/T0/B0/SLACKSECRET");
    let texts: Vec<String> = slack.iter().map(|s| s.json()["text"].as_str().unwrap().to_string()).collect();
    assert!(texts[0].starts_with("site: deploy failed"), "{}", texts[0]);
    assert!(
        texts[0].contains("&lt;!channel&gt; round 0"),
        "Slack markup from a payload is text: {}",
        texts[0]
    );
    assert!(texts[0].contains("step-0"), "the log's last lines: {}", texts[0]);
    assert!(texts[0].contains("https://deploy.example.com/jobs/"), "{}", texts[0]);
    assert!(texts[1].starts_with("site: deploy works again"), "{}", texts[1]);
    assert!(texts[2].starts_with("site: deploy failed") && texts[2].contains("round 5"), "{}", texts[2]);

    let relay = under(&seen, "/relay");
    assert_eq!(
        relay.iter().map(|s| s.json()["event"].as_str().unwrap().to_string()).collect::<Vec<_>>(),
        ["failed", "recovered", "failed"]
    );
    for s in &relay {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"relay-key").unwrap();
        mac.update(&s.body);
        assert_eq!(
            s.header("x-hub-signature-256"),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_eq!(s.json()["job"]["entry"], "site");
    }
    let discord = under(&seen, "/discord/");
    assert_eq!(
        discord[0].json()["allowed_mentions"]["parse"],
        serde_json::json!([]),
        "no @everyone from a payload"
    );
    let ntfy = under(&seen, "/ntfy/");
    assert_eq!(ntfy[0].header("authorization"), "Bearer tk_NTFY");
    assert_eq!(ntfy[0].header("title"), "site: deploy failed");
    assert_eq!(ntfy[0].header("priority"), "high");
    let matrix = under(&seen, "/mx/");
    for m in &matrix {
        assert_eq!(m.method, "PUT");
        assert!(
            m.path.starts_with(
                "/mx/_matrix/client/v3/rooms/%21room%3Aexample.com/send/m.room.message/wh-automata-"
            ),
            "{}",
            m.path
        );
        assert_eq!(m.header("authorization"), "Bearer syt_MATRIXSECRET");
        assert_eq!(m.json()["msgtype"], "m.text");
    }
    let mail = std::fs::read_to_string(dir.path().join("mail-0")).unwrap();
    assert!(mail.starts_with("ARGS: -t -oi\nTo: ops@example.com, dev@example.com\nSubject: [wh-automata] site: deploy failed\n"), "{mail}");
    let paged = std::fs::read_to_string(dir.path().join("paged")).unwrap();
    let kinds: Vec<&str> = paged.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(kinds, ["failed", "recovered", "failed"]);
    assert!(
        paged.contains("<!channel> round 0 @everyone"),
        "a command gets values in its environment: {paged}"
    );

    let log = daemon.stop_with_log();
    for secret in ["SLACKSECRET", "relay-key", "MATRIXSECRET", "tk_NTFY"] {
        assert!(!log.contains(secret), "{secret} is never logged");
    }
}

/// `--notify-test` sends to each target and the status sink, and prints each result.
#[test]
fn notify_test_tries_each_target_and_says_how_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let answer: Answer = std::sync::Arc::new(|s, _| {
        if s.path.starts_with("/broken") {
            (404, "{\"message\":\"no such hook\"}".into())
        } else {
            (201, "{}".into())
        }
    });
    let standin = StandIn::start(dir.path(), answer);
    let url = standin.url();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nnotify:\n  team: {{ slack: \"{url}/slack/x\" }}\n  \
         broken: {{ slack: \"{url}/broken/${{HOOK_PART}}\" }}\nentries:\n  site:\n    match: {{ repo: acme/site }}\n    secret: s3cret\n    \
         actions: [\"true\"]\n    notify: {{ to: [team, broken], on: [failed] }}\n    status: {{ token: t0ken, api_url: \"{url}/gh\" }}\n"
    );
    write(dir.path(), "settings.yaml", &yaml);
    let settings = dir.path().join("settings.yaml");
    let settings = settings.to_str().unwrap();
    // The variables the targets name must be set.
    let out = crate::common::trigger(dir.path(), &[settings, "--notify-test", "site"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOOK_PART"));

    let out = crate::common::trigger(
        dir.path(),
        &[settings, "--notify-test", "site"],
        &[("HOOK_PART", "BROKENSECRET")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "one target failed: {stdout}");
    assert!(stdout.contains("team (slack): delivered"), "{stdout}");
    assert!(stdout.contains("broken (slack): FAILED: answered 404 Not Found"), "{stdout}");
    assert!(!stdout.contains("BROKENSECRET"), "a secret URL is never shown: {stdout}");
    assert!(
        stdout.contains("status (wh-automata/site): FAILED: no job of this entry from a host has run yet"),
        "{stdout}"
    );
    let seen = standin.seen();
    assert!(seen[0].json()["text"].as_str().unwrap().starts_with("site: test message"));

    // After a push, the status of its job is sent again.
    let daemon = Daemon::start(dir.path(), &[("HOOK_PART", "BROKENSECRET")]);
    let sha = "d".repeat(40);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &sha);
    let reply = daemon.post("/hooks", &github_push(&body, "s3cret", "d1"), &body);
    daemon.wait_job(reply.job_ids()[0]);
    standin.wait("the job's statuses", |s| s.iter().filter(|r| r.path.starts_with("/gh/")).count() >= 3);
    let before = standin.seen().len();
    let out = crate::common::trigger(dir.path(), &[settings, "--notify-test", "site"], &[("HOOK_PART", "x")]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains(&format!(
            "status (wh-automata/site): job {}'s state (succeeded) sent to commit ddddddd",
            reply.job_ids()[0]
        )),
        "{stdout}"
    );
    let seen = standin.seen();
    let last = seen[before..].iter().find(|r| r.path.starts_with("/gh/")).unwrap();
    assert_eq!(last.path, format!("/gh/repos/acme/site/statuses/{sha}"));
    assert_eq!(state_of(last), "success");
}

/// `/metrics` is the Prometheus text format that the official Python client parses, with
/// every metric listed, and no label that a sender chose.
#[test]
fn metrics_are_prometheus_text_with_no_label_a_sender_chose() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    match: { repo: acme/site }\n    secret: s3cret\n    actions: [\"true\"]\n  \
         broken:\n    match: { repo: acme/broken }\n    secret: s3cret\n    actions: [\"false\"]\n",
        &[],
    );
    let pushes = [
        ("acme/site", "refs/heads/secret-branch-name"),
        ("acme/broken", "refs/heads/secret-branch-name"),
        ("acme/site", "refs/tags/secret-tag-name"),
    ];
    for (i, (repo, git_ref)) in pushes.iter().enumerate() {
        let body = push_body(repo, git_ref, &"0".repeat(40), &format!("{:040x}", 0xbeef + i));
        let reply = daemon.post("/hooks", &github_push(&body, "s3cret", &format!("m{i}")), &body);
        if reply.status == 202 {
            daemon.wait_job(reply.job_ids()[0]);
        }
    }
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"1".repeat(40));
    assert_eq!(daemon.post("/hooks", &github_push(&body, "wrong", "forged"), &body).status, 401);
    // A job's end is recorded just before its entry is released in the queue.
    eventually("no job runs", || daemon.get("/metrics").body.contains("wh_automata_jobs_running 0"));
    // OpenMetrics when asked for, as a Prometheus server does; the classic text otherwise.
    let accept = [(
        "Accept".to_string(),
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5".to_string(),
    )];
    let open = crate::common::http(daemon.addr, "GET", "/metrics", &accept, b"");
    assert!(
        open.header("content-type").unwrap().starts_with("application/openmetrics-text"),
        "{:?}",
        open.headers
    );
    let classic = daemon.get("/metrics");
    assert!(
        classic.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"),
        "{:?}",
        classic.headers
    );
    assert!(classic.body.contains("# TYPE wh_automata_settings_reloads_total counter"), "{}", classic.body);
    assert!(!classic.body.contains("# EOF") && !classic.body.contains("_created"), "{}", classic.body);
    let text = open.body;
    for name in [
        "wh_automata_build_info",
        "wh_automata_deliveries_total{provider=\"github\",result=\"queued\"} 2",
        "wh_automata_deliveries_total{provider=\"github\",result=\"ignored\"} 1",
        "wh_automata_deliveries_total{provider=\"github\",result=\"unauthentic\"} 1",
        "wh_automata_jobs_total{entry=\"site\",trigger=\"webhook\",state=\"succeeded\"} 1",
        "wh_automata_jobs_total{entry=\"broken\",trigger=\"webhook\",state=\"failed\"} 1",
        "wh_automata_job_duration_seconds_bucket{",
        "wh_automata_job_queue_wait_seconds_count{entry=\"site\"} 1",
        "wh_automata_jobs_running 0",
        "wh_automata_queue_depth 0",
        "wh_automata_queue_capacity 100",
        "wh_automata_last_success_timestamp_seconds{entry=\"site\"}",
        "wh_automata_settings_degraded 0",
        "wh_automata_outbox_pending 0",
        "# TYPE wh_automata_settings_reloads counter",
        "# TYPE wh_automata_notifications counter",
    ] {
        assert!(text.contains(name), "{name} in:\n{text}");
    }
    for private in ["acme", "secret-branch-name", "secret-tag-name", "beef"] {
        assert!(!text.contains(private), "no label holds {private}");
    }
    // The official client's parser reads it whole (Debian's python3-prometheus-client, or a
    // Python where `pip install prometheus-client` put it).
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import prometheus_client"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("the Python Prometheus client is needed (Debian: python3-prometheus-client; pip: prometheus-client)");
    // Each text read whole by its parser: OpenMetrics, and the classic one.
    for (parser, text, build) in [
        ("prometheus_client.openmetrics.parser", &text, "wh_automata_build"),
        ("prometheus_client.parser", &classic.body, "wh_automata_build_info"),
    ] {
        let parsed = std::process::Command::new(python)
            .args([
                "-c",
                &format!(
                    "import sys\nfrom {parser} import text_string_to_metric_families as p\n\
                     names = sorted(f.name for f in p(sys.stdin.read()))\nprint(' '.join(names))"
                ),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = parsed.expect("python3 runs");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{parser} refuses the output: {stderr}\n{text}");
        let names = String::from_utf8_lossy(&out.stdout);
        for family in [
            "wh_automata_deliveries",
            "wh_automata_job_duration_seconds",
            "wh_automata_outbox_pending",
            build,
        ] {
            assert!(names.split_whitespace().any(|n| n == family), "{parser}: {family} in {names}");
        }
    }
}

/// `--check` says what is wrong with status and notify settings.
#[test]
fn check_explains_status_and_notify_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "settings.yaml",
        "notify:\n  team: { slack: \"hooks.slack.com/services/SECRETPART\" }\n  two: { slack: \"https://a\", discord: \"https://b\" }\n\
entries:\n  gogs-site:\n    match: { provider: gogs }\n    secret: s\n    actions: [\"true\"]\n    status: { token: t }\n  \
site:\n    secret: s\n    actions: [\"true\"]\n    notify: { to: [team, nobody], on: [failed, exploded] }\n    status: { context: x }\n",
    );
    let (code, stderr) = crate::common::check_settings(dir.path(), "settings.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    for said in [
        "gogs has no commit status API",
        "notify.team: slack is not an http:// or https:// URL",
        "notify.two: one kind per target, not slack and discord",
        "notify: no target \"nobody\" under the top-level notify:",
        "notify.on: \"exploded\" is not one of failed, timed_out, recovered, succeeded, started, cancelled",
        "status: no token",
    ] {
        assert!(stderr.contains(said), "{said} in:\n{stderr}");
    }
    assert!(!stderr.contains("SECRETPART"), "a secret URL is never repeated:\n{stderr}");
}

/// A manual run with no daemon records its messages too; the daemon delivers them when it
/// starts. The job page they link to shows the job and its log.
#[test]
fn a_foreground_run_s_messages_go_out_when_the_daemon_starts_and_link_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem, public_url: \"http://127.0.0.1:1\" }}\n\
         notify:\n  relay: {{ webhook: \"{}/relay\" }}\nentries:\n  site:\n    insecure: true\n    \
         actions: [\"echo the-log-line; exit 4\"]\n    notify: [relay]\n",
        standin.url()
    );
    write(dir.path(), "settings.yaml", &yaml);
    let settings = dir.path().join("settings.yaml");
    let out = crate::common::trigger(dir.path(), &[settings.to_str().unwrap(), "site"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(standin.seen().is_empty(), "no daemon: nothing is sent yet");
    let daemon = Daemon::start(dir.path(), &[]);
    let seen = standin.wait("the failure's message", |s| !s.is_empty());
    let body = seen[0].json();
    assert_eq!(body["event"], "failed");
    let id = body["job"]["job"].as_i64().unwrap();
    let key = daemon.store().page_key(id).unwrap();
    let link = format!("http://127.0.0.1:1/jobs/{id}?key={key}");
    assert!(body["text"].as_str().unwrap().contains(&link), "{body}");
    let tail: Vec<&str> =
        body["job"]["log_tail"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(tail.iter().any(|l| l.ends_with(" the-log-line")), "{tail:?}");
    assert!(tail.last().unwrap().contains("action 1 failed: exit status: 4"), "{tail:?}");

    let page = daemon.get(&format!("/jobs/{id}?key={key}"));
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(page.body.contains("state      failed"), "{}", page.body);
    assert!(page.body.contains("the-log-line"), "{}", page.body);
    assert_eq!(daemon.get("/jobs/99999").status, 404);
    assert_eq!(daemon.get("/jobs/abc").status, 404);
}

/// A 200 KB commit message and pusher make a message of a few KB, not one per target of 400.
#[test]
fn huge_payload_values_make_small_messages() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nnotify:\n  relay: {{ webhook: \"{0}/relay\" }}\n  \
         team: {{ slack: \"{0}/slack\" }}\nentries:\n  site:\n    match: {{ repo: acme/site }}\n    secret: s3cret\n    \
         actions: [\"true\"]\n    notify: {{ to: [relay, team], on: [succeeded] }}\n",
        standin.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let mut body: serde_json::Value =
        serde_json::from_slice(&push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"e".repeat(40)))
            .unwrap();
    body["head_commit"]["message"] = "m".repeat(200 * 1024).into();
    body["pusher"]["name"] = "p".repeat(200 * 1024).into();
    let body = serde_json::to_vec(&body).unwrap();
    let reply = daemon.post("/hooks", &github_push(&body, "s3cret", "huge"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let seen = standin.wait("both messages", |s| s.len() >= 2);
    for s in &seen {
        assert!(s.body.len() < 12 * 1024, "{} is {} bytes", s.path, s.body.len());
    }
    let relay = under(&seen, "/relay")[0].json();
    assert_eq!(relay["job"]["commit_message"].as_str().unwrap().chars().count(), 4097);
    assert_eq!(relay["event"], "succeeded");
}

/// With `deployment:`, GitHub gets a deployment per job, then each state as a status of that
/// deployment, in order.
#[test]
fn github_deployments_get_one_deployment_per_job_and_its_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem, public_url: https://deploy.example.com }}\nentries:\n  \
         site:\n    match: {{ provider: github, repo: acme/site }}\n    secret: s3cret\n    actions: [\"true\"]\n    \
         status: {{ token: ghp_DEPLOYTOKEN, api_url: \"{}\", deployment: production }}\n",
        standin.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let sha = "5".repeat(40);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &sha);
    let reply = daemon.post("/hooks", &github_push(&body, "s3cret", "dep1"), &body);
    let job = reply.job_ids()[0];
    let seen = standin.wait("a deployment and three statuses", |s| s.len() >= 4);
    assert_eq!(seen[0].path, "/repos/acme/site/deployments");
    let made = seen[0].json();
    assert_eq!(
        (made["ref"].as_str(), made["environment"].as_str()),
        (Some(sha.as_str()), Some("production"))
    );
    assert_eq!(made["auto_merge"], false);
    assert_eq!(made["required_contexts"], serde_json::json!([]));
    assert_eq!(seen[0].header("authorization"), "Bearer ghp_DEPLOYTOKEN");
    // The stand-in answered the first request with the deployment id 1000.
    let states: Vec<String> = seen[1..]
        .iter()
        .map(|s| {
            assert_eq!(s.path, "/repos/acme/site/deployments/1000/statuses");
            let key = daemon.store().page_key(job).unwrap();
            assert_eq!(s.json()["log_url"], format!("https://deploy.example.com/jobs/{job}?key={key}"));
            state_of(s)
        })
        .collect();
    assert_eq!(states, ["queued", "in_progress", "success"]);
}

/// A target that does not answer holds up only its own messages: the others go out at once.
#[test]
fn a_target_that_hangs_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let slow = StandIn::start(
        dir.path(),
        std::sync::Arc::new(|_, _| {
            std::thread::sleep(Duration::from_secs(4));
            (200, "{}".into())
        }),
    );
    let fast = StandIn::start(dir.path(), always_ok());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nnotify:\n  slow: {{ webhook: \"{}/slow\" }}\n  \
         fast: {{ webhook: \"{}/fast\" }}\nentries:\n  site:\n    insecure: true\n    actions: [\"false\"]\n    \
         notify: [slow, fast]\n",
        slow.url(),
        fast.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"7".repeat(40));
    let started = std::time::Instant::now();
    let reply = daemon.post("/hooks/site", &github_push(&body, "unused", "hang1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    fast.wait("the fast target's message", |s| !s.is_empty());
    assert!(started.elapsed() < Duration::from_secs(3), "not held up: {:?}", started.elapsed());
    slow.wait("the slow target's message too", |s| !s.is_empty());
    assert_eq!(slow.seen().len(), 1, "a slow answer is not a failure: sent once");
}

/// An item undelivered for more than 15 minutes makes `/health` degraded, with the reason.
#[test]
fn an_old_undelivered_item_makes_health_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let down = crate::standin::free_addr();
    drop(StandIn::start(dir.path(), always_ok()));
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  site:\n    insecure: true\n    \
         actions: [\"true\"]\n    status: {{ token: t0ken, api_url: \"https://127.0.0.1:{}\" }}\n",
        down.port()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"9".repeat(40));
    assert_eq!(daemon.post("/hooks/site", &github_push(&body, "unused", "old1"), &body).status, 202);
    eventually("three statuses wait", || daemon.get("/health").json()["outbox"]["pending"] == 3);
    assert_eq!(daemon.get("/health").json()["status"], "ok", "young items are no trouble");
    daemon.stop();
    // As if they had waited for twenty minutes.
    let db = rusqlite::Connection::open(dir.path().join("state/jobs.sqlite3")).unwrap();
    let twenty_minutes_ago = wh_automata::store::now_ms() - 20 * 60 * 1000;
    db.execute("UPDATE outbox SET created_at = ?1", [twenty_minutes_ago]).unwrap();
    drop(db);
    let daemon = Daemon::start(dir.path(), &[]);
    let health = daemon.get("/health").json();
    assert_eq!(health["status"], "degraded", "{health}");
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("the outbox has 3 undelivered status(es) or message(s), the oldest for 20m"),
        "{reasons}"
    );
}
