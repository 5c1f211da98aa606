//! Freeze: while an entry is frozen its deliveries are recorded `held` and answered so; the
//! frozen state survives a restart; at the unfreezing exactly the newest held push runs, once.
//! A manual run of a frozen entry needs --force. /health, --jobs and /metrics say it is frozen.

use wh_automata::store::JobState;

use crate::common::{github_push, push_body, read, trigger, Daemon, SECRET};

const SETTINGS: &str = "server: { listen: 127.0.0.1:0 }
entries:
  site:
    match: { branch: ^master$ }
    secret: ${SECRET}
    actions: ['echo \"$WH_TRIGGER $WH_AFTER\" >> ran']
";

fn push(daemon: &Daemon, after: char, delivery: &str) -> crate::common::Reply {
    let body = push_body(
        "Codertocat/Hello-World",
        "refs/heads/master",
        &"0".repeat(40),
        &after.to_string().repeat(40),
    );
    daemon.post("/hooks/site", &github_push(&body, SECRET, delivery), &body)
}

#[test]
fn a_frozen_entry_holds_its_pushes_and_runs_only_the_newest_when_unfrozen() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SECRET", SECRET)];
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &env);
    let out = trigger(dir.path(), &["settings.yaml", "site", "--freeze", "--reason", "release freeze"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut held = Vec::new();
    for (i, commit) in ['a', 'b', 'c'].into_iter().enumerate() {
        let reply = push(&daemon, commit, &format!("d{i}"));
        assert_eq!(reply.status, 202, "{}", reply.body);
        assert_eq!(reply.json()["status"], "held", "{}", reply.body);
        held.push(reply.job_ids()[0]);
    }
    let store = daemon.store();
    for id in &held {
        let job = store.job(*id).unwrap().unwrap();
        assert_eq!((job.state, job.reason.as_deref()), (JobState::Held, Some("held: release freeze")));
    }
    // Said by /health, /metrics and --jobs.
    let health = daemon.get("/health").json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["frozen"]["site"]["reason"], "release freeze");
    assert!(daemon.get("/metrics").body.contains("wh_automata_entry_frozen{entry=\"site\"} 1"));
    let jobs = trigger(dir.path(), &["settings.yaml", "--jobs"], &env);
    let text = String::from_utf8_lossy(&jobs.stdout).into_owned();
    assert!(text.contains("entry site is frozen since") && text.contains("release freeze"), "{text}");
    assert_eq!(text.matches(" held ").count(), 3, "{text}");
    // A manual run needs --force.
    let out = trigger(dir.path(), &["settings.yaml", "site", "--branch", "master"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is frozen (release freeze)"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!dir.path().join("ran").exists(), "nothing ran while frozen");

    // The frozen state survives a restart; the held jobs stay held.
    daemon.stop();
    let daemon = Daemon::start(dir.path(), &env);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!dir.path().join("ran").exists(), "nothing ran at the restart");
    assert_eq!(push(&daemon, 'd', "d9").json()["status"], "held");
    let newest = daemon.store().recent(1).unwrap()[0].id;

    let out = trigger(dir.path(), &["settings.yaml", "site", "--unfreeze"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("job {newest}, the newest held, runs now"))
    );
    assert_eq!(daemon.wait_job(newest).state, JobState::Succeeded);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(read(&dir.path().join("ran")), format!("webhook {}\n", "d".repeat(40)));
    for id in held {
        assert_eq!(daemon.store().job(id).unwrap().unwrap().state, JobState::Superseded);
    }
    assert_eq!(daemon.get("/health").json()["status"], "ok");
    // Unfrozen, pushes run again.
    let reply = push(&daemon, 'e', "d10");
    assert_eq!(reply.json()["status"], "queued");
    assert_eq!(daemon.wait_job(reply.job_ids()[0]).state, JobState::Succeeded);
}

#[test]
fn unfreezing_does_not_run_a_held_push_of_the_current_release_and_force_runs_a_frozen_entry() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SECRET", SECRET)];
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &env);
    let first = push(&daemon, 'a', "d1");
    assert_eq!(daemon.wait_job(first.job_ids()[0]).state, JobState::Succeeded);
    // Frozen without a daemon's help (it is told through the store all the same).
    daemon.stop();
    let out = trigger(dir.path(), &["settings.yaml", "site", "--freeze"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let daemon = Daemon::start(dir.path(), &env);
    let again = push(&daemon, 'a', "d2");
    assert_eq!(again.json()["status"], "held");
    let out = trigger(dir.path(), &["settings.yaml", "site", "--unfreeze"], &env);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no held job to run"));
    let job = daemon.store().job(again.job_ids()[0]).unwrap().unwrap();
    assert_eq!(
        (job.state, job.reason.as_deref()),
        (JobState::Superseded, Some("not run: its commit is the current release"))
    );
    // --force runs a frozen entry.
    trigger(dir.path(), &["settings.yaml", "site", "--freeze", "--reason", "x"], &env);
    let out = trigger(dir.path(), &["settings.yaml", "site", "--branch", "master", "--force"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&dir.path().join("ran")), format!("webhook {a}\nmanual \n", a = "a".repeat(40)));
}

/// What the commits say while an entry is frozen: each held push pending "held: REASON"; at the
/// unfreezing the older one ends (superseded), the newest goes on to success. No status stays
/// pending without a reason.
#[test]
fn held_pushes_say_so_on_their_commits_and_end_like_any_job() {
    use crate::standin::{always_ok, StandIn};
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem }}\nentries:\n  site:\n    match: {{ repo: acme/site }}\n    \
         secret: s3cret\n    actions: [\"true\"]\n    status: {{ token: t0ken, api_url: \"{}\", context: deploy/site }}\n",
        standin.url()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let out = trigger(dir.path(), &["settings.yaml", "site", "--freeze", "--reason", "maintenance"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let shas: Vec<String> = (1..=2).map(|i| format!("{i:040x}")).collect();
    for (i, sha) in shas.iter().enumerate() {
        let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), sha);
        let reply = daemon.post("/hooks", &github_push(&body, "s3cret", &format!("h{i}")), &body);
        assert_eq!(reply.json()["status"], "held", "{}", reply.body);
    }
    let said = |seen: &[crate::standin::Seen], sha: &str| -> Vec<(String, String)> {
        seen.iter()
            .filter(|r| r.path.ends_with(sha))
            .map(|r| {
                let body = r.json();
                (
                    body["state"].as_str().unwrap_or_default().into(),
                    body["description"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    };
    let seen = standin.wait("both held", |s| {
        s.iter().filter(|r| r.json()["description"] == "held: maintenance").count() == 2
    });
    assert_eq!(said(&seen, &shas[0]), [("pending".to_string(), "held: maintenance".to_string())]);
    trigger(dir.path(), &["settings.yaml", "site", "--unfreeze"], &[]);
    // Each commit's statuses go in order; the two commits' lanes go side by side.
    let seen = standin.wait("the newest deployed, the older superseded", |s| {
        said(s, &shas[1]).last().is_some_and(|l| l.0 == "success")
            && said(s, &shas[0]).last().is_some_and(|l| l.0 == "error")
    });
    assert_eq!(
        said(&seen, &shas[0]),
        [
            ("pending".to_string(), "held: maintenance".to_string()),
            ("error".to_string(), format!("superseded by {}", &shas[1][..7]))
        ]
    );
    let newest: Vec<String> =
        said(&seen, &shas[1]).into_iter().map(|(state, what)| format!("{state} {what}")).collect();
    assert_eq!(newest[..3], ["pending held: maintenance", "pending queued", "pending deploying"]);
    assert!(newest[3].starts_with("success deployed"), "{newest:?}");
}
