//! `wh-automata-trigger` against a running daemon (over its control socket) and without one
//! (foreground), with the exit status passed through; dry runs, job lists, logs, explanations.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use wh_automata::event::Trigger;
use wh_automata::store::JobState;

use crate::common::{read, request, trigger, write, Daemon};

/// `site` sleeps holding a lock file and records who ran it; `fail` exits 7.
fn settings(dir: &Path) {
    write(
        dir,
        "settings.yaml",
        r#"server: { listen: 127.0.0.1:0, workers: 2 }
entries:
  site:
    match: { branch: ^main$ }
    insecure: true
    actions:
      - |
        if [ -e lock ]; then echo overlap >> overlaps; fi
        touch lock
        echo "$WH_TRIGGER $WH_PROVIDER $WH_BRANCH $WH_AFTER" >> runs
        echo "running for $WH_TRIGGER"
        sleep 0.6
        rm lock
  fail:
    insecure: true
    actions:
      - echo about to fail; exit 7
      - touch never
"#,
    );
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn through_the_daemon_a_manual_run_is_recorded_serialised_and_passes_its_status() {
    let dir = tempfile::tempdir().unwrap();
    settings(dir.path());
    let daemon = Daemon::start(dir.path(), &[]);
    let mode = std::fs::metadata(dir.path().join("state/control.sock")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is owner-only");

    // A webhook job is running when the manual run is asked for: the manual one waits for it.
    let reply = daemon.send("/hooks/site", &request("gitea/push.json"));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let webhook_id = reply.job_ids()[0];
    crate::common::eventually("the webhook job runs", || dir.path().join("lock").exists());
    let out = trigger(dir.path(), &["settings.yaml", "site", "--branch", "main", "--commit", "abc123"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("running for manual"), "the output is shown: {}", stdout(&out));
    assert!(stderr(&out).contains("queued in the running daemon"), "{}", stderr(&out));

    let runs = read(&dir.path().join("runs"));
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 2, "{runs}");
    assert!(lines[0].starts_with("webhook gitea main "), "{runs}");
    assert_eq!(lines[1], "manual  main abc123", "a manual run has no provider: {runs}");
    assert!(!dir.path().join("overlaps").exists(), "two jobs of one entry ran at once");

    let store = daemon.store();
    let jobs = store.recent(10).unwrap();
    let manual = jobs.iter().find(|j| j.trigger == Trigger::Manual).expect("the manual job is recorded");
    let webhook = store.job(webhook_id).unwrap().unwrap();
    assert_eq!((manual.state, manual.event.after.as_str()), (JobState::Succeeded, "abc123"));
    assert!(manual.started_at.unwrap() >= webhook.finished_at.unwrap(), "manual ran after the webhook job");
    // Recorded, listed and logged as manual: no provider, event `manual`.
    assert_eq!((manual.event.name(), manual.event.provider), ("manual", None));
    let list = stdout(&trigger(dir.path(), &["settings.yaml", "--jobs"], &[]));
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with(&format!("{} ", manual.id)))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!((row[3], row[4]), ("manual", "manual"), "TRIGGER and EVENT: {list}");
    let log = read(&dir.path().join(format!("state/logs/{}.log", manual.id)));
    assert!(log.contains(" trigger manual event manual ref refs/heads/main commit abc123"), "{log}");

    // The job's failure is the command's.
    let out = trigger(dir.path(), &["settings.yaml", "fail"], &[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stdout(&out).contains("about to fail"));
    assert!(stderr(&out).contains("failed: action 1 exited with 7"), "{}", stderr(&out));
    assert!(!dir.path().join("never").exists());

    // An entry the daemon does not know is refused, and nothing is recorded.
    let before = store.recent(100).unwrap().len();
    let out = trigger(dir.path(), &["settings.yaml", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no entry named \"nope\""), "{}", stderr(&out));
    assert_eq!(store.recent(100).unwrap().len(), before);

    // A second daemon on the same state_dir would share its job store: it refuses to start.
    let second = std::process::Command::new(crate::common::bin("wh-automatad"))
        .arg("settings.yaml")
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(stderr(&second).contains("another wh-automatad is running"), "{}", stderr(&second));
    assert_eq!(daemon.get("/health").status, 200, "the first one keeps serving");
    assert!(!daemon.log().contains("panicked"));
}

#[test]
fn without_a_daemon_it_runs_in_the_foreground_and_records_the_job() {
    let dir = tempfile::tempdir().unwrap();
    settings(dir.path());
    let out = trigger(dir.path(), &["settings.yaml", "site", "--branch", "main"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("no daemon is running"), "{}", stderr(&out));
    assert!(stdout(&out).contains("running for manual"), "{}", stdout(&out));
    assert_eq!(read(&dir.path().join("runs")), "manual  main \n");

    let out = trigger(dir.path(), &["settings.yaml", "fail"], &[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stdout(&out).contains("about to fail"));
    assert!(!dir.path().join("never").exists());

    // Both runs are in the store, listed, with their logs.
    let out = trigger(dir.path(), &["settings.yaml", "--jobs"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let list = stdout(&out);
    let rows: Vec<&str> = list.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(rows[0].starts_with("ID"), "{list}");
    assert!(rows[1].starts_with("2 ") && rows[1].contains("fail") && rows[1].contains("failed"), "{list}");
    assert!(rows[2].starts_with("1 ") && rows[2].contains("site") && rows[2].contains("succeeded"), "{list}");
    let event_column = |row: &str| row.split_whitespace().nth(4).unwrap().to_string();
    assert_eq!((event_column(rows[1]), event_column(rows[2])), ("manual".into(), "manual".into()), "{list}");
    assert!(list.contains("action 1 exited with 7"), "{list}");

    let out = trigger(dir.path(), &["settings.yaml", "--log", "2"], &[]);
    assert_eq!(out.status.code(), Some(7), "--log ends with the job's status");
    assert!(stdout(&out).contains("about to fail"), "{}", stdout(&out));
    let out = trigger(dir.path(), &["settings.yaml", "--log", "99"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no job 99"));

    // A daemon started later does not run foreground jobs again.
    // Jobs are picked up before the daemon is ready: once it is, nothing waits or runs.
    let daemon = Daemon::start(dir.path(), &[]);
    let health = daemon.get("/health").json();
    assert_eq!(
        (health["queue"]["waiting"].as_u64(), health["queue"]["running"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(daemon.store().recent(10).unwrap().iter().all(|j| j.state.is_final()));
    assert_eq!(read(&dir.path().join("runs")).lines().count(), 1);
    drop(daemon);
}

#[test]
fn a_saved_delivery_runs_as_if_received_and_dry_run_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "settings.yaml",
        "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    match: { provider: github, branch: ^master$ }\n    \
         secret: ${SECRET}\n    actions:\n      - echo \"$WH_PROVIDER $WH_EVENT $WH_REPO $WH_AFTER\" > ran\n      \
         - cp \"$WH_PAYLOAD\" payload.copy\n",
    );
    let push = request("github/push.json");
    std::fs::write(dir.path().join("push.json"), &push.body).unwrap();
    let env = [("SECRET", "s")];

    let out = trigger(dir.path(), &["settings.yaml", "site", "--payload", "push.json", "--dry-run"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(plan.contains("1. echo \"$WH_PROVIDER"), "{plan}");
    assert!(plan.contains("WH_REPO=Codertocat/Hello-World"), "{plan}");
    assert!(plan.contains("WH_BRANCH=master"), "{plan}");
    assert!(plan.contains("WH_JOB_ID=(the job's id)\n"), "no stray backslash: {plan}");
    assert!(!plan.contains("SECRET=s"), "the daemon's environment is not passed: {plan}");
    assert!(!dir.path().join("ran").exists(), "a dry run runs nothing");
    assert!(!dir.path().join("state").exists(), "a dry run records nothing");

    let out = trigger(dir.path(), &["settings.yaml", "site", "--payload", "push.json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(&push.body).unwrap();
    let ran = read(&dir.path().join("ran"));
    assert_eq!(ran, format!("github push Codertocat/Hello-World {}\n", body["after"].as_str().unwrap()));
    assert_eq!(std::fs::read(dir.path().join("payload.copy")).unwrap(), push.body);

    // Through the daemon too, whose environment holds the secret (not needed by the client).
    let daemon = Daemon::start(dir.path(), &env);
    std::fs::remove_file(dir.path().join("ran")).unwrap();
    let out = trigger(dir.path(), &["settings.yaml", "site", "--payload", "push.json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(read(&dir.path().join("ran")).starts_with("github push Codertocat/Hello-World "));
    drop(daemon);
    // Without the daemon and without the secret's variable, it runs all the same: a manual
    // run checks no signature. With no --branch, the ref of the entry's last job.
    std::fs::remove_file(dir.path().join("ran")).unwrap();
    let out = trigger(dir.path(), &["settings.yaml", "site"], &[]);
    assert!(stderr(&out).contains("using refs/heads/master"), "{}", stderr(&out));
    assert_eq!(read(&dir.path().join("ran")), " manual  \n", "{}", stderr(&out));
    // (Its second action copies a payload, which a run without --payload has not.)
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn explain_says_which_entries_match_a_saved_delivery_and_why_not() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "settings.yaml",
        "entries:\n  deploy:\n    match: { provider: github, repo: Codertocat/*, branch: ^master$ }\n    secret: ${SECRET}\n    actions: [\"true\"]\n  \
         staging:\n    match: { branch: ^staging$ }\n    secret: ${SECRET}\n    actions: [\"true\"]\n  \
         gitlab:\n    match: { provider: gitlab }\n    insecure: true\n    actions: [\"true\"]\n",
    );
    // Saved with its headers, as the host's delivery page shows them.
    let push = request("github/push.json");
    let mut saved = String::new();
    for (k, v) in &push.headers {
        saved.push_str(&format!("{k}: {v}\n"));
    }
    saved.push('\n');
    let mut bytes = saved.into_bytes();
    bytes.extend_from_slice(&push.body);
    std::fs::write(dir.path().join("delivery.txt"), &bytes).unwrap();

    let env = [("SECRET", crate::common::SECRET)];
    let out = trigger(dir.path(), &["settings.yaml", "--explain", "delivery.txt"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("github push Codertocat/Hello-World refs/heads/master "), "{text}");
    assert!(text.contains("  deploy: matches (signature ok)"), "{text}");
    assert!(text.contains("  staging: no, branch \"master\" does not match /^staging$/"), "{text}");
    assert!(text.contains("  gitlab: no, "), "{text}");

    let out = trigger(dir.path(), &["settings.yaml", "--explain", "delivery.txt"], &[("SECRET", "other")]);
    assert!(stdout(&out).contains("deploy: matches (but the signature would be refused"), "{}", stdout(&out));

    // A body alone, of another branch: nothing matches, exit 1.
    std::fs::write(dir.path().join("tag.json"), request("github/create-tag.json").body).unwrap();
    let out = trigger(dir.path(), &["settings.yaml", "--explain", "tag.json", "--event", "create"], &env);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("deploy: no, "), "{}", stdout(&out));

    let out = trigger(dir.path(), &["settings.yaml", "--explain", "settings.yaml"], &env);
    assert_eq!(out.status.code(), Some(2), "a file that is not a delivery is refused");
}

#[test]
fn log_follow_waits_for_the_end_of_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  slow:\n    insecure: true\n    actions:\n      - echo first; sleep 0.8; echo last\n",
        &[],
    );
    let reply = daemon.send("/hooks/slow", &request("github/push.json"));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.job_ids()[0].to_string();
    crate::common::eventually("the job runs", || {
        daemon.store().job(reply.job_ids()[0]).unwrap().unwrap().state == JobState::Running
    });
    let out = trigger(dir.path(), &["settings.yaml", "--log", &id], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("is running (--follow"), "{}", stderr(&out));
    let out = trigger(dir.path(), &["settings.yaml", "--log", &id, "--follow"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stdout(&out);
    assert!(log.contains("first") && log.contains("last") && log.contains("job succeeded"), "{log}");
    assert!(stderr(&out).contains(&format!("job {id} succeeded")));
}

/// A manual run started as root, with the daemon's `state_dir` owned by its user (`nobody`
/// here), acts as that user: every file it writes there is that user's, and so are its actions.
#[test]
fn a_manual_run_as_root_leaves_no_root_files_in_the_daemons_state_dir() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to act as another user)");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a user named nobody");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = dir.path().join("work");
    let state = dir.path().join("state");
    for d in [&work, &state] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    }
    write(
        dir.path(),
        "settings.yaml",
        "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    secret_file: /nonexistent/secret\n    workdir: work\n    \
         actions: [\"id -un > whoami\"]\n",
    );
    let out = trigger(dir.path(), &["settings.yaml", "site"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("running as nobody"), "{}", stderr(&out));
    assert_eq!(read(&work.join("whoami")).trim(), "nobody");
    let mut checked = 0;
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(meta.uid(), nobody.uid.as_raw(), "{} is not the state_dir owner's", path.display());
            checked += 1;
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(checked >= 2, "the run was recorded (database, log)");
    let (code, listing) = {
        let out = trigger(dir.path(), &["settings.yaml", "--jobs"], &[]);
        (out.status.code(), stdout(&out))
    };
    assert_eq!(code, Some(0));
    assert!(listing.contains("succeeded"), "{listing}");
}
