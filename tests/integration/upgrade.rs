//! A state directory written by 0.1.0, taken over by this version's daemon: the job database
//! is migrated in place, its waiting jobs run, its deliveries are still known.

use std::path::Path;

use wh_automata::event::EventKind;
use wh_automata::store::JobState;

use crate::common::{fixtures, request, trigger, Daemon};

#[test]
fn a_state_dir_of_0_1_0_is_migrated_and_its_waiting_jobs_run() {
    // A new store says it was created, once; it migrates nothing.
    let fresh = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        fresh.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    secret: s\n    actions: [\"true\"]\n",
        &[],
    );
    let log = daemon.stop_with_log();
    assert_eq!(log.matches("job database created").count(), 1, "{log}");
    assert!(!log.contains("job database migrated"), "{log}");

    let dir = tempfile::tempdir().unwrap();
    let old = fixtures().join("store-0.1.0");
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::copy(old.join("jobs.sqlite3"), dir.path().join("state/jobs.sqlite3")).unwrap();
    let settings = std::fs::read_to_string(old.join("settings.yaml")).unwrap();
    let settings = settings.replace("127.0.0.1:18971", "127.0.0.1:0");
    let daemon = Daemon::with_settings(dir.path(), &settings, &[]);

    // Job 5 (a webhook push) and job 6 (a manual run) were waiting: both run now.
    for id in [5, 6] {
        let job = daemon.wait_job(id);
        assert_eq!(job.state, JobState::Succeeded, "job {id}: {:?}\n{}", job.reason, daemon.log());
    }
    let log = std::fs::read_to_string(dir.path().join("state/logs/6.log")).unwrap();
    assert!(log.contains("trigger manual event manual ref refs/heads/main commit abc123"), "{log}");
    assert_eq!(daemon.store().job(6).unwrap().unwrap().event.kind, EventKind::Manual);
    let log = daemon.log();
    assert_eq!(log.matches("job database migrated").count(), 1, "one line for the migration: {log}");
    assert!(log.contains("from=0 to="), "{log}");

    // The delivery 0.1.0 recorded is still a duplicate.
    let reply = daemon.send("/hooks/site", &request("github/push.json"));
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("duplicate")), "{}", reply.body);
    assert_eq!(reply.job_ids(), [1]);

    // The trigger lists the old jobs beside the new ones.
    let out = trigger(dir.path(), &["settings.yaml", "--jobs"], &[]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{list}");
    for id in 1..=7 {
        assert!(list.lines().any(|l| l.starts_with(&format!("{id} "))), "job {id} missing: {list}");
    }
    drop(daemon);
    assert!(Path::new(&dir.path().join("state/jobs.sqlite3")).exists());
}

#[test]
fn a_database_of_a_newer_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::copy(fixtures().join("store-0.1.0/jobs.sqlite3"), dir.path().join("state/jobs.sqlite3"))
        .unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("state/jobs.sqlite3")).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    crate::common::write(
        dir.path(),
        "settings.yaml",
        "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    insecure: true\n    actions: [\"true\"]\n",
    );
    let out = std::process::Command::new(crate::common::bin("wh-automatad"))
        .arg("settings.yaml")
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schema version 999, written by a newer wh-automata"), "{stderr}");
}
