//! A captured signed push re-sent with a fresh delivery id (the signature does not cover it):
//! an older commit never deploys after a newer one, and a replay supersedes nothing; a real
//! force-push back to an old commit (sent with `before` = the ref's head) still deploys, and so
//! does a manual run.

use wh_automata::store::JobState;

use crate::common::{eventually, github_push, push_body, read, Daemon};

#[test]
fn a_replayed_push_of_an_older_commit_is_ignored_and_supersedes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    secret: s\n    match: { repo: acme/site }\n    \
                actions: [\"while [ -e hold ]; do sleep 0.05; done; echo $WH_AFTER >> deployed\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let (zero, a, b, c) = ("0".repeat(40), "a".repeat(40), "b".repeat(40), "c".repeat(40));
    let push = |before: &str, after: &str, id: &str| {
        let body = push_body("acme/site", "refs/heads/main", before, after);
        daemon.post("/hooks", &github_push(&body, "s", id), &body)
    };
    let first = push(&zero, &a, "d-1");
    daemon.wait_job(first.job_ids()[0]);
    // B runs; C waits behind it.
    std::fs::write(dir.path().join("hold"), "").unwrap();
    let second = push(&a, &b, "d-2");
    let store = daemon.store();
    eventually("B runs", || store.job(second.job_ids()[0]).unwrap().unwrap().state == JobState::Running);
    let third = push(&b, &c, "d-3");
    assert_eq!(third.status, 202);

    // The captured push of A, sent again with a fresh delivery id: ignored, C still waits.
    let replay = push(&zero, &a, "d-replay");
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.json()["status"], "ignored", "{}", replay.body);
    let why = replay.json()["entries"]["site"].as_str().unwrap().to_string();
    assert!(why.contains("replayed push") && why.contains("aaaaaaa"), "{why}");
    assert_eq!(
        store.job(third.job_ids()[0]).unwrap().unwrap().state,
        JobState::Queued,
        "C is not superseded"
    );
    // So is B's, once C is recorded.
    assert_eq!(push(&a, &b, "d-replay-2").json()["status"], "ignored");

    std::fs::remove_file(dir.path().join("hold")).unwrap();
    daemon.wait_job(third.job_ids()[0]);
    // A real force-push back to A names the head it replaces: it deploys.
    let forced = push(&c, &a, "d-4");
    assert_eq!(forced.status, 202, "{}", forced.body);
    daemon.wait_job(forced.job_ids()[0]);
    assert_eq!(read(&dir.path().join("deployed")), format!("{a}\n{b}\n{c}\n{a}\n"));
    // A push of a commit never seen deploys whatever its before; a manual run is never a replay.
    let fresh = push(&zero, &"d".repeat(40), "d-5");
    assert_eq!(fresh.status, 202, "{}", fresh.body);
    daemon.wait_job(fresh.job_ids()[0]);
    let settings = dir.path().join("settings.yaml");
    let out = crate::common::trigger(dir.path(), &[settings.to_str().unwrap(), "site"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
