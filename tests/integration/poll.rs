//! `poll:` against a real bare repository: commits pushed while the daemon was down are
//! deployed at its start, one pushed while it runs within one period, never twice when the
//! webhook also comes, never while the entry is frozen. An entry that only polls takes no
//! webhook. A remote that fails is warned about without its credentials.

use std::path::Path;

use wh_automata::event::Trigger;
use wh_automata::store::JobState;

use crate::common::{eventually, git, github_push, push_body, read, trigger, Daemon, SECRET};

/// A bare repository, a clone to push from, and the checkout the actions deploy in.
fn remote(dir: &Path) {
    git(dir, &["init", "-q", "--bare", "-b", "master", "remote.git"]);
    git(dir, &["clone", "-q", "remote.git", "dev"]);
    commit(dir, "one");
    git(dir, &["clone", "-q", "remote.git", "checkout"]);
}

/// Commits `text` in the clone and pushes it; returns the commit.
fn commit(dir: &Path, text: &str) -> String {
    let dev = dir.join("dev");
    std::fs::write(dev.join("app.txt"), text).unwrap();
    git(&dev, &["add", "app.txt"]);
    git(&dev, &["commit", "-q", "-m", text]);
    git(&dev, &["push", "-q", "origin", "HEAD:master"]);
    git(&dev, &["rev-parse", "HEAD"]).trim().to_string()
}

fn settings(secret: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0 }}
entries:
  site:
    match: {{ repo: Codertocat/Hello-World, branch: ^master$ }}
{secret}    poll: {{ every: 1s }}
    workdir: checkout
    actions:
      - git fetch -q origin && git checkout -q --detach \"$WH_AFTER\"
      - echo \"$WH_TRIGGER $WH_AFTER\" >> ../ran
"
    )
}

fn ran(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ran")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn polling_deploys_what_no_webhook_said_once_and_never_while_frozen() {
    let dir = tempfile::tempdir().unwrap();
    remote(dir.path());
    let env = [("SECRET", SECRET)];
    // Pushed while the daemon was down: deployed at its start.
    let down = commit(dir.path(), "two");
    let daemon = Daemon::with_settings(dir.path(), &settings("    secret: ${SECRET}\n"), &env);
    eventually("the commit pushed while down is deployed", || ran(dir.path()) == [format!("poll {down}")]);
    assert_eq!(read(&dir.path().join("checkout/app.txt")), "two");
    let first = daemon.store().recent(10).unwrap();
    assert_eq!((first.len(), first[0].trigger), (1, Trigger::Poll));

    // Pushed while it runs: within a period; and the webhook for it is a duplicate.
    let live = commit(dir.path(), "three");
    eventually("the live push is deployed", || ran(dir.path()).len() == 2);
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", &down, &live);
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, "late"), &body);
    assert_eq!(reply.json()["status"], "duplicate", "{}", reply.body);

    // A webhook first, then the poll: one job still.
    let both = commit(dir.path(), "four");
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", &live, &both);
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, "early"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    daemon.wait_job(reply.job_ids()[0]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(ran(dir.path()), [format!("poll {down}"), format!("poll {live}"), format!("webhook {both}")]);

    // Frozen: the poll records the new commit held, and nothing runs.
    trigger(dir.path(), &["settings.yaml", "site", "--freeze", "--reason", "hold on"], &env);
    let frozen = commit(dir.path(), "five");
    eventually("the poll holds the new commit", || {
        daemon.store().recent(1).unwrap()[0].state == JobState::Held
    });
    assert_eq!(daemon.store().recent(1).unwrap()[0].event.after, frozen);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(ran(dir.path()).len(), 3, "nothing ran while frozen");
    assert_eq!(daemon.store().recent(100).unwrap().len(), 4, "held once, not once a period");
    let out = trigger(dir.path(), &["settings.yaml", "site", "--unfreeze"], &env);
    assert_eq!(out.status.code(), Some(0));
    eventually("the held commit runs at the unfreezing", || ran(dir.path()).len() == 4);
    assert_eq!(ran(dir.path())[3], format!("poll {frozen}"));
}

#[test]
fn an_entry_that_only_polls_takes_no_webhook_and_a_failing_remote_keeps_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    remote(dir.path());
    let daemon = Daemon::with_settings(dir.path(), &settings(""), &[]);
    eventually("the first commit is deployed", || ran(dir.path()).len() == 1);
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", &"1".repeat(40), &"2".repeat(40));
    assert_eq!(daemon.post("/hooks/site", &github_push(&body, "x", "d1"), &body).status, 401);
    assert_eq!(daemon.post("/hooks", &github_push(&body, "x", "d2"), &body).status, 401);
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    remote(dir.path());
    let yaml = settings("    remote: 'http://bot:s3cret-token@127.0.0.1:1/remote.git'\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    eventually("the failure is warned about", || daemon.log().contains("poll: git ls-remote failed"));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let log = daemon.log();
    assert!(!log.contains("s3cret-token"), "{log}");
    assert_eq!(log.matches("poll: git ls-remote failed").count(), 1, "once per streak: {log}");
    assert!(log.contains("http://***@127.0.0.1:1/remote.git"), "{log}");
    drop(daemon);

    // A remote that accepts the connection and never answers: killed at poll.timeout, said.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    remote(dir.path());
    let yaml = settings(&format!("    remote: 'http://127.0.0.1:{port}/remote.git'\n"))
        .replace("poll: { every: 1s }", "poll: { every: 1h, timeout: 1s }");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    eventually("the hang is cut", || daemon.log().contains("took more than 1s (poll.timeout): killed"));
    assert!(ran(dir.path()).is_empty());
    // Nothing of it is left: git's helper went with it.
    let needle = format!("127.0.0.1:{port}");
    let left = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
    };
    eventually("no git process is left", || !left());
    drop(silent);
    // Bad settings are clear.
    crate::common::write(
        dir.path(),
        "bad.yaml",
        "entries:\n  site:\n    poll: { every: 100ms }\n    actions: [\"true\"]\n",
    );
    let (code, text) = crate::common::check_settings(dir.path(), "bad.yaml");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("poll.every must be at least 1s") && text.contains("which branch"), "{text}");
}
