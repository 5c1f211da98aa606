//! When a deploy goes wrong: a service started by the test answers 500 after a bad commit,
//! the job fails its verification, the rollback to the last release runs (recorded with the
//! failure), and the checkout and the service are back at the release. A `kill -9` in the
//! middle of the rollback: after a restart it runs once more, from its start, never beside
//! itself. A rollback that fails is not rolled back. Real git repositories, real `sh`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wh_automata::event::Trigger;
use wh_automata::store::{Job, JobState};

use crate::common::{eventually, git, github_push, push_body, read, trigger, write, Daemon, SECRET};

/// A repository with three commits (a good one, one that breaks the service, a good one) and
/// a clone of it where the actions deploy; returns the commits.
fn repositories(dir: &Path) -> [String; 3] {
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "master"]);
    let mut commits = Vec::new();
    for (i, text) in ["ok 1", "broken", "ok 2"].iter().enumerate() {
        std::fs::write(repo.join("app.txt"), text).unwrap();
        git(&repo, &["add", "app.txt"]);
        git(&repo, &["commit", "-q", "-m", &format!("commit {i}")]);
        commits.push(git(&repo, &["rev-parse", "HEAD"]).trim().to_string());
    }
    git(dir, &["clone", "-q", "repo", "checkout"]);
    [commits[0].clone(), commits[1].clone(), commits[2].clone()]
}

/// The service: answers 500 while the checkout's app.txt says "broken", else 200.
struct Service {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Service {
    fn start(checkout: &Path) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, file) = (stop.clone(), checkout.join("app.txt"));
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let broken = std::fs::read_to_string(&file).unwrap_or_default().contains("broken");
                let (status, body) =
                    if broken { ("500 Internal Server Error", "down") } else { ("200 OK", "up") };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Service { port, stop }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn settings(dir: &Path, port: u16, rollback: &str) -> String {
    let messages = dir.join("messages");
    format!(
        "server: {{ listen: 127.0.0.1:0 }}
notify:
  log: {{ command: 'echo \"$WH_NOTIFY $WH_TRIGGER $WH_STATE $WH_AFTER\" >> {}' }}
entries:
  site:
    match: {{ repo: Codertocat/Hello-World, branch: ^master$ }}
    secret: ${{SECRET}}
    workdir: checkout
    actions:
      - git fetch -q origin && git checkout -q --detach \"$WH_AFTER\"
      - echo \"$WH_TRIGGER $WH_AFTER $WH_ROLLBACK_FROM\" >> ../runs
    verify: {{ http: 'http://127.0.0.1:{port}/up', expect: 200, within: 1500ms }}
    on_failure: rollback
{rollback}    notify: [log]
",
        messages.display()
    )
}

fn push(daemon: &Daemon, before: &str, after: &str, delivery: &str) -> i64 {
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", before, after);
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, delivery), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.job_ids()[0]
}

fn jobs(daemon: &Daemon) -> Vec<Job> {
    let mut jobs = daemon.store().recent(100).unwrap();
    jobs.reverse();
    jobs
}

#[test]
fn a_deploy_that_fails_verification_is_rolled_back_to_the_last_release() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = repositories(dir.path());
    let service = Service::start(&dir.path().join("checkout"));
    let env = [("SECRET", SECRET)];
    let daemon = Daemon::with_settings(dir.path(), &settings(dir.path(), service.port, ""), &env);

    let first = push(&daemon, &"0".repeat(40), &a, "d-a");
    assert_eq!(daemon.wait_job(first).state, JobState::Succeeded);
    let bad = push(&daemon, &a, &b, "d-b");
    let failed = daemon.wait_job(bad);
    assert_eq!(failed.state, JobState::Failed);
    let reason = failed.reason.clone().unwrap();
    assert!(reason.starts_with(&format!("rolled back to {} (job {})", &a[..7], bad + 1)), "{reason}");
    assert!(reason.contains("verify failed:") && reason.contains("answered 500"), "{reason}");
    let back = daemon.wait_job(bad + 1);
    assert_eq!(
        (back.trigger, back.state, back.event.after.as_str()),
        (Trigger::Rollback, JobState::Succeeded, a.as_str())
    );
    assert_eq!(back.event.rollback_from.as_deref(), Some(b.as_str()));
    // The checkout and the service are at the release again.
    assert_eq!(git(&dir.path().join("checkout"), &["rev-parse", "HEAD"]).trim(), a);
    assert_eq!(read(&dir.path().join("checkout/app.txt")), "ok 1");
    let took = back.finished_at.unwrap() - failed.finished_at.unwrap();
    eprintln!("from the failed verification to the rollback's end: {took} ms");
    assert_eq!(read(&dir.path().join("runs")), format!("webhook {a} \nwebhook {b} \nrollback {a} {b}\n"));
    // What people are told: the failure (saying where it was rolled back to), then the rollback.
    crate::common::eventually("the messages", || {
        std::fs::read_to_string(dir.path().join("messages")).is_ok_and(|m| m.lines().count() == 2)
    });
    assert_eq!(
        read(&dir.path().join("messages")),
        format!("failed webhook failed {b}\nrollback rollback succeeded {a}\n")
    );
    // The releases: the first push and the rollback; never the broken commit.
    let out = trigger(dir.path(), &["settings.yaml", "--releases", "site"], &env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(&a[..12]) && lines[0].ends_with("rollback"), "{text}");
    assert!(lines[1].starts_with(&a[..12]) && lines[1].ends_with("push"), "{text}");

    // Then a good commit deploys as usual.
    let good = push(&daemon, &b, &c, "d-c");
    assert_eq!(daemon.wait_job(good).state, JobState::Succeeded);
    assert_eq!(read(&dir.path().join("checkout/app.txt")), "ok 2");
    assert_eq!(jobs(&daemon).len(), 4, "no other job");

    // By hand: back to the first commit, by its job, through the daemon.
    let out = trigger(dir.path(), &["settings.yaml", "site", "--rollback", "--to", &first.to_string()], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let last = jobs(&daemon).pop().unwrap();
    assert_eq!(
        (last.trigger, last.event.after.as_str(), last.state),
        (Trigger::Rollback, a.as_str(), JobState::Succeeded)
    );
    assert_eq!(read(&dir.path().join("checkout/app.txt")), "ok 1");
    // Nothing to roll back to is said, and nothing runs.
    let out = trigger(dir.path(), &["settings.yaml", "site", "--rollback", "--to", &b[..10]], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a release of site"));
    assert_eq!(jobs(&daemon).len(), 5);
}

#[test]
fn a_rollback_killed_in_the_middle_runs_once_more_after_a_restart_and_never_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = repositories(dir.path());
    let service = Service::start(&dir.path().join("checkout"));
    let env = [("SECRET", SECRET)];
    // The rollback's own commands: slow, and each run leaves a start and an end.
    let rollback = "    rollback:\n      - echo start >> ../rb; sleep 1; git checkout -q --detach \"$WH_AFTER\"; echo end >> ../rb\n";
    let mut daemon = Daemon::with_settings(dir.path(), &settings(dir.path(), service.port, rollback), &env);
    let first = push(&daemon, &"0".repeat(40), &a, "d-a");
    assert_eq!(daemon.wait_job(first).state, JobState::Succeeded);
    let bad = push(&daemon, &a, &b, "d-b");
    eventually("the rollback starts", || {
        std::fs::read_to_string(dir.path().join("rb")).is_ok_and(|t| t == "start\n")
    });
    daemon.child.kill().unwrap(); // SIGKILL, in the middle of the rollback
    daemon.child.wait().unwrap();
    assert_eq!(daemon.store().job(bad).unwrap().unwrap().state, JobState::Failed);
    let daemon = Daemon::start(dir.path(), &env);
    let back = daemon.wait_job(bad + 1);
    assert_eq!((back.trigger, back.state), (Trigger::Rollback, JobState::Succeeded));
    // Started twice (the killed run, then again), ended once; the two never overlapped.
    assert_eq!(read(&dir.path().join("rb")), "start\nstart\nend\n");
    assert_eq!(read(&dir.path().join("checkout/app.txt")), "ok 1");
    assert_eq!(jobs(&daemon).len(), 3, "one rollback, recorded once");
}

#[test]
fn a_failing_rollback_is_not_rolled_back_and_nothing_is_left_half_said() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = repositories(dir.path());
    let service = Service::start(&dir.path().join("checkout"));
    let env = [("SECRET", SECRET)];
    let rollback = "    rollback: [\"echo rollback >> ../rb; exit 3\"]\n";
    let daemon = Daemon::with_settings(dir.path(), &settings(dir.path(), service.port, rollback), &env);
    let first = push(&daemon, &"0".repeat(40), &a, "d-a");
    assert_eq!(daemon.wait_job(first).state, JobState::Succeeded);
    let bad = push(&daemon, &a, &b, "d-b");
    assert_eq!(daemon.wait_job(bad).state, JobState::Failed);
    let back = daemon.wait_job(bad + 1);
    assert_eq!((back.trigger, back.state, back.exit_code), (Trigger::Rollback, JobState::Failed, Some(3)));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(jobs(&daemon).len(), 3, "no rollback of the rollback");
    assert_eq!(read(&dir.path().join("rb")), "rollback\n");
    crate::common::eventually("the messages", || {
        std::fs::read_to_string(dir.path().join("messages")).is_ok_and(|m| m.lines().count() == 2)
    });
    assert!(read(&dir.path().join("messages")).ends_with(&format!("rollback rollback failed {a}\n")));
    assert!(daemon.log().contains("the rollback failed"), "{}", daemon.log());
    // The entry is frozen: nothing deploys over what the failed rollback left.
    let health = daemon.get("/health").json();
    assert_eq!(health["status"], "degraded");
    let why = health["frozen"]["site"]["reason"].as_str().unwrap();
    assert!(why.starts_with(&format!("the rollback (job {}) failed", bad + 1)), "{why}");
    let body = push_body("Codertocat/Hello-World", "refs/heads/master", &b, &a);
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, "d-again"), &body);
    assert_eq!(reply.json()["status"], "held", "{}", reply.body);
}

#[test]
fn verify_and_rollback_mistakes_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, says) in [
        ("verify: { http: 'http://127.0.0.1:1/up', within: 0 }", "verify.within must be more than 0"),
        ("verify: { http: 'ftp://x/' }", "is not an http:// or https:// URL"),
        ("verify: { run: 'true', http: 'http://x/' }", "not both"),
        ("on_failure: sometimes", "on_failure"),
    ] {
        write(
            dir.path(),
            "s.yaml",
            &format!("entries:\n  site:\n    insecure: true\n    actions: [\"true\"]\n    {yaml}\n"),
        );
        let (code, text) = crate::common::check_settings(dir.path(), "s.yaml");
        assert_eq!(code, Some(1), "{yaml}: {text}");
        assert!(text.contains(says) && text.contains("s.yaml:"), "{yaml}: {text}");
    }
    // An unreachable check fails the job with what happened, in time; no release: no rollback.
    write(
        dir.path(),
        "settings.yaml",
        "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    insecure: true\n    actions: [\"true\"]\n    verify: { http: 'http://127.0.0.1:1/up', within: 300ms }\n    on_failure: rollback\n",
    );
    let daemon = Daemon::start(dir.path(), &[]);
    let body = push_body("a/b", "refs/heads/master", &"1".repeat(40), &"2".repeat(40));
    let reply = daemon.post("/hooks/site", &github_push(&body, "x", "d1"), &body);
    let job = daemon.wait_job(reply.job_ids()[0]);
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.reason.as_deref().unwrap().starts_with("verify failed: http://127.0.0.1:1/up: "),
        "{:?}",
        job.reason
    );
    assert_eq!(jobs(&daemon).len(), 1);
    assert!(daemon.log().contains("no release to roll back to"), "{}", daemon.log());
    let out = trigger(dir.path(), &["settings.yaml", "site", "--rollback"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no release to roll back to"));
}

#[test]
fn a_kill_between_the_failure_and_the_rollback_loses_no_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = repositories(dir.path());
    let service = Service::start(&dir.path().join("checkout"));
    let env = [("SECRET", SECRET)];
    // The rollback waits a little before it does anything: the kill comes first.
    let rollback = "    rollback:\n      - sleep 1.5; echo start >> ../rb; git checkout -q --detach \"$WH_AFTER\"; echo end >> ../rb\n";
    let mut daemon = Daemon::with_settings(dir.path(), &settings(dir.path(), service.port, rollback), &env);
    let first = push(&daemon, &"0".repeat(40), &a, "d-a");
    assert_eq!(daemon.wait_job(first).state, JobState::Succeeded);
    let bad = push(&daemon, &a, &b, "d-b");
    let store = daemon.store();
    eventually("the failure is recorded", || store.job(bad).unwrap().unwrap().state == JobState::Failed);
    daemon.child.kill().unwrap(); // SIGKILL, just after the failure was recorded
    daemon.child.wait().unwrap();
    assert!(!dir.path().join("rb").exists(), "the rollback had not begun");
    let rollback_job = store.job(bad + 1).unwrap().unwrap();
    assert_eq!((rollback_job.trigger, rollback_job.event.after.as_str()), (Trigger::Rollback, a.as_str()));
    let daemon = Daemon::start(dir.path(), &env);
    assert_eq!(daemon.wait_job(bad + 1).state, JobState::Succeeded);
    assert_eq!(read(&dir.path().join("rb")), "start\nend\n");
    assert_eq!(read(&dir.path().join("checkout/app.txt")), "ok 1");
    assert_eq!(jobs(&daemon).len(), 3);
}
