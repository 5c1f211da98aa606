//! One run of an entry at a time across processes: two foreground manual runs, a foreground
//! run and the daemon started beside it, and the actions a `kill -9`'d run left behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, github_push, push_body, read, write, Daemon};

/// An action that notes an overlap (another run of the entry inside it), then takes `secs`.
fn settings(secs: f32) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0 }}\nentries:\n  site:\n    secret: s\n    match: {{ repo: acme/site }}\n    \
         actions: [\"if ! mkdir inside 2>/dev/null; then echo overlap >> overlaps; fi; echo start >> runs; sleep {secs}; \
         rmdir inside; echo end >> runs\"]\n"
    )
}

/// `wh-automata-trigger settings.yaml site`, started in the background.
fn manual_run(dir: &Path) -> Child {
    Command::new(bin("wh-automata-trigger"))
        .args(["settings.yaml", "site"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn two_manual_runs_in_the_foreground_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", &settings(1.5));
    let first = manual_run(dir.path());
    std::thread::sleep(Duration::from_millis(500));
    let second = manual_run(dir.path());
    let (a, b) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{a:?} {b:?}");
    assert!(String::from_utf8_lossy(&b.stderr).contains("running in another process"), "{b:?}");
    assert!(!dir.path().join("overlaps").exists(), "the two runs overlapped");
    assert_eq!(runs(dir.path()), ["start", "end", "start", "end"]);
}

/// The daemon starts while a manual run is in the foreground: its next job of the entry waits
/// for that run to end.
#[test]
fn the_daemon_waits_for_a_manual_run_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", &settings(1.5));
    let manual = manual_run(dir.path());
    let started = Instant::now();
    while runs(dir.path()).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the manual run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon = Daemon::start(dir.path(), &[]);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"1".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&body, "s", "one-1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let job = daemon.wait_job(reply.job_ids()[0]);
    assert!(manual.wait_with_output().unwrap().status.success());
    assert_eq!(job.state, wh_automata::store::JobState::Succeeded);
    assert!(!dir.path().join("overlaps").exists(), "the webhook job ran beside the manual run");
    assert_eq!(runs(dir.path()), ["start", "end", "start", "end"]);
    assert!(daemon.log().contains("another process runs this entry"), "{}", daemon.log());
}

/// A manual run is killed with SIGKILL in the middle of its action: the action goes on, and
/// holds the entry. The daemon's job of the entry waits for it.
#[test]
fn what_a_killed_run_left_running_still_holds_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", &settings(2.0));
    let mut manual = manual_run(dir.path());
    let started = Instant::now();
    while runs(dir.path()).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the manual run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    manual.kill().unwrap();
    manual.wait().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"2".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&body, "s", "one-2"), &body);
    daemon.wait_job(reply.job_ids()[0]);
    assert!(!dir.path().join("overlaps").exists(), "{}", read(&dir.path().join("overlaps")));
    assert_eq!(runs(dir.path()), ["start", "end", "start", "end"], "the orphaned action ended first");
}
