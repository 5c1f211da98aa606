//! The real daemon on 127.0.0.1:0: fixture deliveries from every provider, real `sh` actions,
//! real git repositories, crashes, bursts, limits.

use std::path::Path;

use wh_automata::store::JobState;

use crate::common::{env_file, eventually, github_push, push_body, read, request, write, Daemon, SECRET};

const SIX: &[(&str, &str, &str, &str, &str)] = &[
    // entry, request, provider, repo, branch
    ("gh", "github/push.json", "github", "Codertocat/Hello-World", "master"),
    ("gl", "gitlab/push.json", "gitlab", "gitlab-org/hello-world", "master"),
    ("gg", "gogs/push.json", "gogs", "gogits/hello-world", "master"),
    ("gt", "gitea/push.json", "gitea", "Test-CI/multi-line-secrets", "main"),
    ("bb", "bitbucket/repo_push.json", "bitbucket", "brydzewski/foo", "master"),
    ("bs", "bitbucket-server/repo_refs_changed.json", "bitbucket", "PRJ/my-repo", "master"),
];

fn six_entries(dir: &Path) {
    let mut yaml = String::from("server:\n  listen: 127.0.0.1:0\n  workers: 2\nentries:\n");
    for (entry, _, provider, repo, branch) in SIX {
        yaml.push_str(&format!(
            "  {entry}:\n    match: {{ provider: {provider}, repo: \"{repo}\", branch: \"^{branch}$\" }}\n    secret: ${{SECRET}}\n    actions:\n      - env > \"$WH_ENTRY.env\"\n"
        ));
    }
    write(dir, "settings.yaml", &yaml);
}

#[test]
fn a_push_from_each_provider_runs_its_entry_with_the_right_environment() {
    let dir = tempfile::tempdir().unwrap();
    six_entries(dir.path());
    let daemon = Daemon::start(dir.path(), &[("SECRET", SECRET)]);
    for (entry, name, provider, repo, branch) in SIX {
        let req = request(name);
        // Both routes: by entry, and by matchers.
        let path = if *entry == "gl" { "/hooks".to_string() } else { format!("/hooks/{entry}") };
        let reply = daemon.send(&path, &req);
        assert_eq!(reply.status, 202, "{name}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["status"], "queued");
        assert_eq!(body["jobs"][0]["entry"], *entry, "{name}");
        let job = daemon.wait_job(reply.job_ids()[0]);
        assert_eq!(job.state, JobState::Succeeded, "{name}: {:?}", job.reason);
        let env = env_file(&dir.path().join(format!("{entry}.env")));
        assert_eq!(env["WH_PROVIDER"], *provider, "{name}");
        assert_eq!(env["WH_REPO"], *repo, "{name}");
        assert_eq!(env["WH_BRANCH"], *branch, "{name}");
        assert_eq!(env["WH_EVENT"], "push", "{name}");
        assert_eq!(env["WH_TRIGGER"], "webhook");
        assert_eq!(env["WH_TAG"], "");
        assert_eq!(env["WH_AFTER"], job.event.after, "{name}");
        assert_eq!(env["WH_AFTER"].len(), 40, "{name}");
        assert_eq!(env["WH_ENTRY"], *entry);
        assert!(!env["WH_DELIVERY_ID"].is_empty());
        // The daemon's secret is not in the action's environment.
        assert!(!env.contains_key("SECRET"), "{name}: the daemon environment leaked");
        // The payload file held the raw body while the job ran (it is removed after).
        assert!(env["WH_PAYLOAD"].ends_with(".body"));
    }
    let gh = env_file(&dir.path().join("gh.env"));
    assert_eq!(gh["WH_CHANGED_FILES"], "README.md");
    assert_eq!(gh["WH_CHANGES_COMPLETE"], "1");
    assert_eq!(gh["WH_COMMIT_MESSAGE"], "Update README");
    assert_eq!(env_file(&dir.path().join("bb.env"))["WH_CHANGES_COMPLETE"], "0");
}

#[test]
fn other_branch_deletion_and_ping_run_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    six_entries(dir.path());
    let daemon = Daemon::start(dir.path(), &[("SECRET", SECRET)]);
    let cases = [
        (
            "github/push-branch-create.json",
            "/hooks/gh",
            "repo \"bradrydzewski/drone-test-go\" does not match",
        ),
        ("github/push-branch-delete.json", "/hooks/gh", "event is delete"),
        (
            "gitlab/push-branch-delete.json",
            "/hooks/gl",
            "event is delete (branch \"feature\" removed), the entry wants push",
        ),
        ("gitea/delete-branch.json", "/hooks/gt", "event is delete"),
        ("gitlab/push-branch-create.json", "/hooks/gl", "branch \"feature\" does not match /^master$/"),
        ("github/push-tag.json", "/hooks/gh", "event is tag"),
        ("github/pull_request-opened.json", "/hooks/gh", "event is pull_request, the entry wants push"),
    ];
    for (name, path, reason) in cases {
        let reply = daemon.send(path, &request(name));
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["status"], "ignored", "{name}");
        assert!(body["reason"].as_str().unwrap().contains(reason), "{name}: {}", body["reason"]);
    }
    // Routed by the payload's repository: no entry is for this one, so no secret is tried and
    // the answer is the one a wrong signature gets.
    let reply = daemon.send("/hooks", &request("github/push-branch-delete.json"));
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.json()["error"], "no entry's secret authenticates this request");
    // A ping is routed like the rest: from a repository no entry is for, it is refused too; from
    // one an entry is for (checked against that entry's secret), it is answered.
    let ping = daemon.send("/hooks", &request("github/ping.json"));
    assert_eq!(ping.status, 401, "{}", ping.body);
    let mut ping = request("github/ping.json");
    let mut body: serde_json::Value = serde_json::from_slice(&ping.body).unwrap();
    body["repository"]["full_name"] = "Codertocat/Hello-World".into();
    ping.body = serde_json::to_vec(&body).unwrap();
    ping.headers.retain(|(k, _)| !k.starts_with("X-Hub-Signature"));
    let signed = github_push(&ping.body, SECRET, "ping-2");
    ping.headers.push(signed[3].clone());
    let reply = daemon.send("/hooks", &ping);
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("pong")), "{}", reply.body);
    // Another branch of a matching repo, rewritten and signed: same answer, named reason.
    let body =
        push_body("Codertocat/Hello-World", "refs/heads/dev", "a".repeat(40).as_str(), &"b".repeat(40));
    let reply = daemon.post("/hooks/gh", &github_push(&body, SECRET, "other-branch"), &body);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["entries"]["gh"], "branch \"dev\" does not match /^master$/");
    assert!(daemon.store().recent(100).unwrap().is_empty(), "no job may have been recorded");
}

#[test]
fn bad_requests_get_clear_answers_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    six_entries(dir.path());
    let daemon = Daemon::start(dir.path(), &[("SECRET", SECRET)]);
    let req = request("github/push.json");
    // Unknown entry.
    // Unknown entry: answered as a wrong signature is, so entry names cannot be enumerated.
    let r = daemon.send("/hooks/nope", &req);
    assert_eq!(r.status, 401, "{}", r.body);
    let mut other = req.headers.clone();
    for (k, v) in &mut other {
        if k.eq_ignore_ascii_case("X-Hub-Signature-256") {
            *v = format!("sha256={}", "0".repeat(64));
        }
    }
    let wrong = daemon.post("/hooks/gh", &other, &req.body);
    assert_eq!((wrong.status, &wrong.body), (401, &r.body), "the same answer as a wrong secret");
    // Wrong signature, missing signature.
    let mut flipped = req.body.clone();
    flipped[10] ^= 1;
    let r = daemon.post("/hooks/gh", &req.headers, &flipped);
    assert_eq!(r.status, 401, "{}", r.body);
    let unsigned: Vec<_> = req.headers.iter().filter(|(k, _)| !k.starts_with("X-Hub")).cloned().collect();
    let r = daemon.post("/hooks", &unsigned, &req.body);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("missing signature"), "{}", r.body);
    // Signed, but not JSON.
    let body = b"this is not json".to_vec();
    let r = daemon.post("/hooks/gh", &github_push(&body, SECRET, "x1"), &body);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("not JSON"));
    // No provider headers at all.
    let r = daemon.post("/hooks/gh", &[], b"{}");
    assert_eq!(r.status, 400);
    // Other routes and methods.
    assert_eq!(daemon.get("/hooks/gh").status, 405);
    assert_eq!(daemon.get("/elsewhere").status, 404);
    assert_eq!(daemon.get("/health").status, 200);
    assert!(daemon.store().recent(10).unwrap().is_empty());
    assert!(!daemon.log().contains("panicked"));
    assert!(!daemon.log().contains(SECRET), "a secret reached the log");
}

#[test]
fn git_checkout_ends_at_exactly_the_pushed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let git = crate::common::git;
    git(root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
    git(root, &["clone", "-q", "origin.git", "work"]);
    let work = root.join("work");
    write(&work, "app.txt", "v1\n");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    git(root, &["clone", "-q", "origin.git", "deploy"]);
    let before = git(&work, &["rev-parse", "HEAD"]);
    write(&work, "app.txt", "v2\n");
    git(&work, &["commit", "-q", "-am", "v2"]);
    let after = git(&work, &["rev-parse", "HEAD"]);
    // A later commit exists on main too: the deploy must stop at the pushed one, not the tip.
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    write(&work, "app.txt", "v3\n");
    git(&work, &["commit", "-q", "-am", "v3"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    let daemon = Daemon::with_settings(
        root,
        "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    match: { repo: acme/site, branch: ^main$ }\n    secret: ${SECRET}\n    workdir: deploy\n    actions:\n      - git fetch -q origin && git checkout -q --force \"$WH_AFTER\"\n",
        &[("SECRET", "s3cret")],
    );
    let body = push_body("acme/site", "refs/heads/main", &before, &after);
    let reply = daemon.post("/hooks", &github_push(&body, "s3cret", "git-1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let job = daemon.wait_job(reply.job_ids()[0]);
    assert_eq!(job.state, JobState::Succeeded, "{:?}\n{}", job.reason, read(&root.join("state/logs/1.log")));
    assert_eq!(git(&root.join("deploy"), &["rev-parse", "HEAD"]), after);
    assert_eq!(read(&root.join("deploy/app.txt")), "v2\n");
}

#[test]
fn branch_names_with_shell_syntax_are_data() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  any:\n    match: { repo: acme/x, branch: \".*\" }\n    secret: s\n    actions:\n      - printf '%s' \"$WH_BRANCH\" > \"branch-$WH_JOB_ID\"\n      - echo $WH_BRANCH $WH_COMMIT_MESSAGE >> unquoted\n",
        &[],
    );
    let names = [
        "$(touch pwned);x",
        "a; touch pwned2",
        "`touch pwned3`",
        "feature/ünïcode 'q' \"d\" && touch pwned4",
    ];
    for (i, name) in names.iter().enumerate() {
        let body =
            push_body("acme/x", &format!("refs/heads/{name}"), &"a".repeat(40), &format!("{:0>40}", i + 1));
        let reply = daemon.post("/hooks/any", &github_push(&body, "s", &format!("meta-{i}")), &body);
        assert_eq!(reply.status, 202, "{name:?}: {}", reply.body);
        let job = daemon.wait_job(reply.job_ids()[0]);
        assert_eq!(job.state, JobState::Succeeded, "{name:?}: {:?}", job.reason);
        assert_eq!(read(&dir.path().join(format!("branch-{}", job.id))), *name);
    }
    // A control character is in no git ref: such a payload is refused, and runs nothing.
    let body = push_body("acme/x", "refs/heads/a\nb; touch pwned5", &"a".repeat(40), &"c".repeat(40));
    let reply = daemon.post("/hooks/any", &github_push(&body, "s", "meta-nl"), &body);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"], "the payload's ref is holding control characters");
    for f in ["pwned", "pwned2", "pwned3", "pwned4", "pwned5"] {
        assert!(!dir.path().join(f).exists(), "{f}: a branch name was executed");
    }
}

#[test]
fn a_burst_to_one_entry_never_overlaps_and_deploys_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, workers: 4 }\nentries:\n  app:\n    match: { repo: acme/app }\n    secret: s\n    actions:\n      - \"if ! mkdir lock 2>/dev/null; then echo overlap >> overlaps; fi; sleep 1; echo $WH_AFTER >> deployed; rmdir lock\"\n",
        &[],
    );
    let mut ids: Vec<i64> = Vec::new();
    let mut last = String::new();
    let store = daemon.store();
    for i in 0..10 {
        last = format!("{:0>40}", i + 1);
        let body = push_body("acme/app", "refs/heads/main", &"a".repeat(40), &last);
        let reply = daemon.post("/hooks/app", &github_push(&body, "s", &format!("burst-{i}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        // The job the new one replaces is superseded in the write that recorded the new one:
        // by the time of its 202, the older one no longer waits.
        // (Unless a worker had taken it already, and is about to record it running: then it
        // runs, and is not superseded later.)
        if let Some(older) = ids.last() {
            let older = store.job(*older).unwrap().unwrap();
            if older.state == JobState::Queued {
                let ended = daemon.wait_job(older.id);
                assert_eq!(
                    ended.state,
                    JobState::Succeeded,
                    "job {} still waited after the 202 of a newer one, and was not taken by a worker",
                    older.id
                );
            }
        }
        ids.extend(reply.job_ids());
    }
    let jobs: Vec<_> = ids.iter().map(|id| daemon.wait_job(*id)).collect();
    assert!(!dir.path().join("overlaps").exists(), "two jobs of one entry ran at once");
    let deployed = read(&dir.path().join("deployed"));
    assert_eq!(deployed.lines().last(), Some(last.as_str()), "the last commit is deployed last");
    let succeeded = jobs.iter().filter(|j| j.state == JobState::Succeeded).count();
    let superseded = jobs.iter().filter(|j| j.state == JobState::Superseded).count();
    assert_eq!(succeeded + superseded, 10, "{jobs:?}");
    // How many ran depends on how fast the pushes came (each runs 1 s): under load, more.
    assert!(superseded >= 1, "succeeded {succeeded}, superseded {superseded}");
    assert_eq!(deployed.lines().count(), succeeded);
    assert_eq!(jobs.last().unwrap().state, JobState::Succeeded);
    let order: Vec<&str> = deployed.lines().collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "an older commit never deployed after a newer one");
}

#[test]
fn kill_9_loses_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, workers: 1 }\nentries:\n  a:\n    match: { repo: acme/a }\n    secret: s\n    actions: [\"sleep 1; echo $WH_JOB_ID >> ran-a\"]\n  b:\n    match: { repo: acme/b }\n    secret: s\n    actions: [\"echo $WH_JOB_ID >> ran-b\"]\n  c:\n    match: { repo: acme/c }\n    secret: s\n    actions: [\"echo $WH_JOB_ID >> ran-c\"]\n",
        &[],
    );
    let mut ids = Vec::new();
    for (i, repo) in ["acme/a", "acme/b", "acme/c"].iter().enumerate() {
        let body = push_body(repo, "refs/heads/main", &"a".repeat(40), &format!("{:0>40}", i + 1));
        let reply = daemon.post("/hooks", &github_push(&body, "s", &format!("crash-{i}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        ids.extend(reply.job_ids());
    }
    let store = daemon.store();
    eventually("job a runs", || store.job(ids[0]).unwrap().unwrap().state == JobState::Running);
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();
    drop(daemon);
    for id in &ids[1..] {
        assert_eq!(store.job(*id).unwrap().unwrap().state, JobState::Queued);
    }
    let daemon = Daemon::start(dir.path(), &[]);
    for id in &ids {
        let job = daemon.wait_job(*id);
        assert_eq!(job.state, JobState::Succeeded, "job {id}: {:?}", job.reason);
    }
    assert!(read(&dir.path().join("ran-b")).contains(&ids[1].to_string()));
    assert!(read(&dir.path().join("ran-c")).contains(&ids[2].to_string()));
    // The same deliveries again are duplicates: no second job.
    let body = push_body("acme/b", "refs/heads/main", &"a".repeat(40), &format!("{:0>40}", 2));
    let reply = daemon.post("/hooks", &github_push(&body, "s", "crash-1"), &body);
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(reply.job_ids(), vec![ids[1]]);
}

#[test]
fn settings_edits_are_live_and_broken_edits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |entry: &str| {
        format!("server: {{ listen: 127.0.0.1:0 }}\nentries:\n  {entry}:\n    insecure: true\n    actions: [\"true\"]\n")
    };
    let daemon = Daemon::with_settings(dir.path(), &settings("first"), &[]);
    let req = request("github/push.json");
    assert_eq!(daemon.send("/hooks/second", &req).status, 401);

    // Saved by rename, as editors do.
    let started = std::time::Instant::now();
    write(dir.path(), "settings.yaml.tmp", &settings("second"));
    std::fs::rename(dir.path().join("settings.yaml.tmp"), dir.path().join("settings.yaml")).unwrap();
    eventually("the new entry answers", || daemon.send("/hooks/second", &req).status == 202);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(1), "reload took {took:?}");
    assert_eq!(daemon.send("/hooks/first", &req).status, 401);
    let health = daemon.get("/health").json();
    assert_eq!(health["settings"]["state"], "loaded");
    assert_eq!(health["settings"]["reloads"], 1);

    // A broken edit keeps the running settings; /health says so.
    write(dir.path(), "settings.yaml.tmp", "entries:\n  third:\n    actions: [\"true\"]\n");
    std::fs::rename(dir.path().join("settings.yaml.tmp"), dir.path().join("settings.yaml")).unwrap();
    eventually("health reports the refused edit", || {
        daemon.get("/health").json()["settings"]["state"] == "error"
    });
    let health = daemon.get("/health").json();
    assert_eq!(health["status"], "degraded");
    assert!(health["settings"]["problems"][0].as_str().unwrap().contains("no secret"), "{health}");
    let mut req2 = request("github/push.json");
    req2.headers.retain(|(k, _)| k != "X-GitHub-Delivery");
    assert_eq!(daemon.send("/hooks/second", &req2).status, 202, "the old settings keep serving");
    assert_eq!(daemon.send("/hooks/third", &req2).status, 401);
    assert!(daemon.log().contains("settings edit refused"));
}

#[test]
fn only_settings_edits_reload_and_sighup_does_too() {
    let dir = tempfile::tempdir().unwrap();
    // The job writes beside the settings file, and the job store lives there too.
    let settings = "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    insecure: true\n    \
                    actions: [\"echo deployed >> deployed.log\"]\n";
    let daemon = Daemon::with_settings(dir.path(), settings, &[]);
    let reply = daemon.send("/hooks/site", &request("github/push.json"));
    assert_eq!(reply.status, 202);
    daemon.wait_job(reply.job_ids()[0]);
    // An unrelated file beside the settings, and a read of the settings: neither is an edit
    // (that reads never reload is pinned by the watcher's own tests, without timing).
    write(dir.path(), "notes.txt", "not settings");
    let _ = read(&dir.path().join("settings.yaml"));
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("SIGHUP reloads", || daemon.get("/health").json()["settings"]["reloads"] != 0);
    assert_eq!(
        daemon.get("/health").json()["settings"]["reloads"],
        1,
        "one reload, by SIGHUP: {}",
        daemon.log()
    );
    // A real edit reloads once more.
    write(dir.path(), "settings.yaml", &settings.replace("site:", "site2:"));
    eventually("the edit is live", || {
        daemon.send("/hooks/site2", &request("github/push.json")).status != 401
    });
    assert_eq!(daemon.get("/health").json()["settings"]["reloads"], 2, "{}", daemon.log());
}

#[test]
fn full_queue_answers_503_and_large_bodies_413() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, workers: 1, queue: 1, max_body: 1 MiB }\nentries:\n  a:\n    insecure: true\n    actions: [\"sleep 2\"]\n  b:\n    insecure: true\n    actions: [\"true\"]\n  c:\n    insecure: true\n    actions: [\"true\"]\n",
        &[],
    );
    let mut req = request("github/push.json");
    req.headers.retain(|(k, _)| k != "X-GitHub-Delivery");
    assert_eq!(daemon.send("/hooks/a", &req).status, 202);
    eventually("a runs", || daemon.get("/health").json()["queue"]["running"] == 1);
    assert_eq!(daemon.send("/hooks/b", &req).status, 202);
    let full = daemon.send("/hooks/c", &req);
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.header("retry-after"), Some("10"));
    assert!(full.json()["error"].as_str().unwrap().contains("queue is full"));
    // Bigger than max_body: refused without reading it all.
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = daemon.post("/hooks/b", &req.headers, &big);
    assert_eq!(r.status, 413);
    assert_eq!(daemon.store().recent(10).unwrap().len(), 2, "only the two queued jobs are recorded");
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  slow:\n    insecure: true\n    timeout: 1s\n    actions:\n      - \"(sleep 30; touch survived) & echo $! > child.pid; sleep 30\"\n      - touch never\n",
        &[],
    );
    let reply = daemon.send("/hooks/slow", &request("github/push.json"));
    assert_eq!(reply.status, 202);
    let job = daemon.wait_job(reply.job_ids()[0]);
    assert_eq!(job.state, JobState::TimedOut);
    assert!(job.reason.unwrap().contains("timed out after 1s during action 1"));
    let pid: i32 = read(&dir.path().join("child.pid")).trim().parse().unwrap();
    eventually("the background child is gone", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
    });
    assert!(!dir.path().join("never").exists());
    let log = read(&dir.path().join(format!("state/logs/{}.log", job.id)));
    assert!(log.contains("job timed out"), "{log}");
}

#[test]
fn failing_action_stops_the_job_and_if_changed_skips() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  build:\n    insecure: true\n    actions:\n      - run: touch rebuilt\n        if_changed: [Dockerfile]\n      - run: touch docs\n        if_changed: [\"*.md\"]\n      - echo to-the-log; exit 3\n      - touch never\n",
        &[],
    );
    let reply = daemon.send("/hooks/build", &request("github/push.json"));
    let job = daemon.wait_job(reply.job_ids()[0]);
    assert_eq!((job.state, job.exit_code), (JobState::Failed, Some(3)));
    assert_eq!(job.reason.as_deref(), Some("action 3 exited with 3"));
    assert!(!dir.path().join("rebuilt").exists(), "README.md changed, not the Dockerfile");
    assert!(dir.path().join("docs").exists());
    assert!(!dir.path().join("never").exists());
    let log = read(&dir.path().join(format!("state/logs/{}.log", job.id)));
    assert!(log.contains("skip action 1: no changed file matches Dockerfile"), "{log}");
    assert!(log.contains(" to-the-log\n"), "{log}");
    // Bitbucket does not list files: the rebuild runs (a needless rebuild beats a stale deploy).
    let reply = daemon.send("/hooks/build", &request("bitbucket/repo_push.json"));
    daemon.wait_job(reply.job_ids()[0]);
    assert!(dir.path().join("rebuilt").exists());
}

#[test]
fn sigterm_lets_the_running_job_finish_and_keeps_the_waiting_ones() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, workers: 1, shutdown_grace: 10s }\nentries:\n  a:\n    insecure: true\n    actions: [\"sleep 0.5; touch a-done\"]\n  b:\n    insecure: true\n    actions: [\"touch b-done\"]\n",
        &[],
    );
    let mut req = request("github/push.json");
    req.headers.retain(|(k, _)| k != "X-GitHub-Delivery");
    let a = daemon.send("/hooks/a", &req).job_ids()[0];
    let store = daemon.store();
    eventually("a runs", || store.job(a).unwrap().unwrap().state == JobState::Running);
    let b = daemon.send("/hooks/b", &req).job_ids()[0];
    let status = daemon.stop();
    assert!(status.success());
    assert_eq!(store.job(a).unwrap().unwrap().state, JobState::Succeeded);
    assert!(dir.path().join("a-done").exists());
    assert_eq!(
        store.job(b).unwrap().unwrap().state,
        JobState::Queued,
        "waiting jobs stay for the next start"
    );
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.wait_job(b).state, JobState::Succeeded);
}

/// A stop interrupts nothing for good: a job killed by the daemon's own stop is recorded
/// `queued` and runs again at the next start, and webhooks that arrive while running jobs
/// finish are answered and recorded for the next start (0.1.0 recorded the job `cancelled`
/// and never ran it again, and refused connections during the grace period).
#[test]
fn a_stop_interrupts_nothing_for_good_and_keeps_answering_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, shutdown_grace: 60s }\nentries:\n  a:\n    insecure: true\n    \
         actions: [\"echo start >> ran; if [ ! -e once ]; then touch once; sleep 30; fi; echo end >> ran\"]\n  \
         b:\n    insecure: true\n    actions: [\"echo b >> ran-b\"]\n",
        &[],
    );
    let mut req = request("github/push.json");
    req.headers.retain(|(k, _)| k != "X-GitHub-Delivery");
    let id = daemon.send("/hooks/a", &req).job_ids()[0];
    let store = daemon.store();
    eventually("the job runs", || dir.path().join("once").exists());
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    // The daemon has taken the first signal: it says it is stopping, and waits for the job.
    assert!(daemon.notice().starts_with("STOPPING=1\n"));
    assert!(daemon.child.try_wait().unwrap().is_none(), "the first signal waits for the running job");
    // Meanwhile a webhook is answered, and recorded for the next start.
    let during = daemon.send("/hooks/b", &req);
    assert_eq!(during.status, 202, "{}", during.body);
    let b = during.job_ids()[0];
    let started = std::time::Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGINT);
    let status = daemon.child.wait().unwrap();
    assert!(status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    let job = store.job(id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued, "{:?}", job.reason);
    assert!(job.reason.as_deref().unwrap().contains("runs again at the next start"), "{:?}", job.reason);
    assert_eq!(store.job(b).unwrap().unwrap().state, JobState::Queued);
    assert!(daemon.log().contains("second stop signal"));
    drop(daemon);

    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.wait_job(id).state, JobState::Succeeded);
    assert_eq!(daemon.wait_job(b).state, JobState::Succeeded);
    assert_eq!(read(&dir.path().join("ran")), "start\nstart\nend\n", "run again, from the start");
    let log = read(&dir.path().join(format!("state/logs/{id}.log")));
    assert!(
        log.contains("cancelled, wh-automata is stopping") && log.contains("job succeeded"),
        "both attempts: {log}"
    );
}

#[test]
fn routed_requests_are_checked_only_against_the_entries_for_their_repository() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("server: { listen: 127.0.0.1:0 }\nentries:\n");
    for i in 0..50 {
        yaml.push_str(&format!(
            "  site{i}:\n    match: {{ repo: acme/site{i} }}\n    secret: s{i}\n    actions: [\"true\"]\n"
        ));
    }
    yaml.push_str("  all:\n    match: { repo: \"acme/*\", branch: ^release$ }\n    secret: s7\n    actions: [\"true\"]\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = push_body("acme/site7", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&body, "s7", "r-1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["jobs"][0]["entry"], "site7");
    assert_eq!(reply.json()["jobs"].as_array().unwrap().len(), 1);
    // Another entry's secret does not authenticate it, even though that entry exists.
    let reply = daemon.post("/hooks", &github_push(&body, "s8", "r-2"), &body);
    assert_eq!(reply.status, 401, "{}", reply.body);
    // The glob entry is for this repository too; its reason is the only other one given.
    let other = push_body("acme/site7", "refs/heads/dev", &"a".repeat(40), &"c".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&other, "s7", "r-3"), &other);
    assert_eq!(reply.status, 202, "site7 takes any branch: {}", reply.body);
    let release = push_body("acme/site9", "refs/heads/release", &"a".repeat(40), &"d".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&release, "s7", "r-4"), &release);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["jobs"][0]["entry"], "all");
    let nobody = push_body("other/repo", "refs/heads/main", &"a".repeat(40), &"e".repeat(40));
    assert_eq!(daemon.post("/hooks", &github_push(&nobody, "s7", "r-5"), &nobody).status, 401);
}

/// At the default level, refused and ignored requests are counted, not logged one by one: a
/// flood of them writes no line each, and the count is logged (here at the stop).
#[test]
fn refused_and_ignored_requests_are_counted_not_logged_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    secret: s\n    match: { branch: ^main$ }\n    actions: [\"true\"]\n",
        &[],
    );
    let other = push_body("acme/app", "refs/heads/dev", &"a".repeat(40), &"b".repeat(40));
    for i in 0..40 {
        assert_eq!(daemon.post("/hooks", &github_push(&other, "s", &format!("ig-{i}")), &other).status, 200);
    }
    for i in 0..7 {
        assert_eq!(
            daemon.post("/nowhere", &github_push(&other, "s", &format!("nf-{i}")), &other).status,
            404
        );
    }
    let main = push_body("acme/app", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&main, "s", "ok-1"), &main);
    assert_eq!(reply.status, 202);
    let log = daemon.stop_with_log();
    assert!(!log.contains("refs/heads/dev"), "no line per ignored request:\n{log}");
    assert!(log.contains("40 ignored, 7 refused (7 with 404)"), "the count is logged:\n{log}");
    assert!(log.contains("queued job"), "an accepted delivery has its line:\n{log}");
    assert!(log.contains("client=127.0.0.1"), "{log}");
}
