//! What an entry gives its actions besides the event: `env_file:` (read when each job starts,
//! the usual `.env` forms, problems in the job's log, `env:` wins, a missing file fails the job
//! before any action), and `umask:`.

use wh_automata::store::JobState;

use crate::common::{env_file, github_push, push_body, read, Daemon};

#[test]
fn the_env_file_is_read_when_each_job_starts() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("app");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(
        work.join(".env"),
        "# the app's settings\nexport MODE=blue\nNAME=\"two words \\\"q\\\"\"\nRAW='$HOME'\nOVER=file\nbad line\nWH_AFTER=x\n",
    )
    .unwrap();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nentries:\n  site:\n    secret: s\n    workdir: {}\n    env_file: .env\n    env: {{ OVER: entry }}\n    \
         actions: [\"env > env-$WH_JOB_ID\", \"sed -i s/blue/green/ .env\"]\n",
        work.display()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let run = |id: &str, after: &str| {
        let body = push_body("acme/site", "refs/heads/main", &"a".repeat(40), after);
        let reply = daemon.post("/hooks", &github_push(&body, "s", id), &body);
        let job = daemon.wait_job(reply.job_ids()[0]);
        let log = read(&daemon.dir.join(format!("state/logs/{}.log", job.id)));
        (job, log)
    };
    let (job, log) = run("ef-1", &"b".repeat(40));
    assert_eq!(job.state, JobState::Succeeded, "{log}");
    let env = env_file(&work.join(format!("env-{}", job.id)));
    assert_eq!(env["MODE"], "blue");
    assert_eq!(env["NAME"], "two words \"q\"");
    assert_eq!(env["RAW"], "$HOME", "nothing is expanded");
    assert_eq!(env["OVER"], "entry", "env: wins");
    assert_eq!(env["WH_AFTER"], "b".repeat(40), "the event's variables are not the file's to set");
    assert!(log.contains("env_file: line 6: not KEY=VALUE (skipped)"), "{log}");
    assert!(log.contains("WH_AFTER: WH_* variables are the event's"), "{log}");
    // The first deploy changed the file: the next job reads the new one.
    let (job, _) = run("ef-2", &"c".repeat(40));
    assert_eq!(env_file(&work.join(format!("env-{}", job.id)))["MODE"], "green");

    // Without the file, no action runs and the job says why.
    std::fs::remove_file(work.join(".env")).unwrap();
    let (job, log) = run("ef-3", &"d".repeat(40));
    assert_eq!(job.state, JobState::Failed);
    assert!(job.reason.as_deref().unwrap().starts_with("env_file cannot be read"), "{:?}", job.reason);
    assert!(!work.join(format!("env-{}", job.id)).exists(), "{log}");
}

/// A committed `.env` that is a link to `/dev/zero`, or a FIFO: the job fails at once with the
/// reason, the daemon reads none of it (its size stays), and it keeps answering.
#[test]
fn an_env_file_that_is_a_device_or_a_fifo_fails_the_job_not_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("app");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink("/dev/zero", work.join(".env")).unwrap();
    nix::unistd::mkfifo(&work.join("fifo.env"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nentries:\n  zero:\n    secret: s\n    match: {{ repo: acme/zero }}\n    \
         workdir: {w}\n    env_file: .env\n    actions: [\"touch ran-$WH_JOB_ID\"]\n  fifo:\n    secret: s\n    \
         match: {{ repo: acme/fifo }}\n    workdir: {w}\n    env_file: fifo.env\n    actions: [\"touch ran-$WH_JOB_ID\"]\n",
        w = work.display()
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    for (i, repo) in ["acme/zero", "acme/fifo"].iter().enumerate() {
        let body = push_body(repo, "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
        let reply = daemon.post("/hooks", &github_push(&body, "s", &format!("dev-{i}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        let job = daemon.wait_job(reply.job_ids()[0]);
        assert_eq!(job.state, JobState::Failed, "{repo}");
        let reason = job.reason.clone().unwrap_or_default();
        assert!(reason.contains("not a regular file"), "{repo}: {reason}");
        assert!(!work.join(format!("ran-{}", job.id)).exists(), "no action ran for {repo}");
    }
    let status = read(&std::path::PathBuf::from(format!("/proc/{}/status", daemon.child.id())));
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 200 * 1024, "the daemon's peak memory is {rss_kb} kB");
    assert_eq!(daemon.get("/health").status, 200);
}

/// The shipped unit's `UMask=0027` makes what a deploy writes unreadable to a web server; an
/// entry's `umask:` gives its actions their own mask.
#[test]
fn an_entry_s_umask_is_its_actions_mask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0 }\nentries:\n  web:\n    secret: s\n    match: { repo: acme/web }\n    \
                umask: \"0022\"\n    actions: [\"mkdir -p out && echo hi > out/index.html\"]\n  plain:\n    secret: s\n    \
                match: { repo: acme/plain }\n    umask: 077\n    actions: [\"echo hi > plain.txt\"]\n  daemon:\n    secret: s\n    \
                match: { repo: acme/daemon }\n    actions: [\"echo hi > daemon.txt\"]\n";
    std::fs::write(dir.path().join("settings.yaml"), yaml).unwrap();
    let daemon = Daemon::start_with_umask(dir.path(), &[], "027");
    for repo in ["acme/web", "acme/plain", "acme/daemon"] {
        let body = push_body(repo, "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
        let reply = daemon.post("/hooks", &github_push(&body, "s", repo), &body);
        assert_eq!(daemon.wait_job(reply.job_ids()[0]).state, JobState::Succeeded, "{repo}");
    }
    let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("out/index.html"), 0o644, "umask: \"0022\"");
    assert_eq!(mode("out"), 0o755);
    assert_eq!(mode("plain.txt"), 0o600, "umask: 077 (unquoted)");
    assert_eq!(mode("daemon.txt"), 0o640, "no umask: the daemon's (027)");
    for bad in ["\"0999\"", "\"u=rwx\"", "7777", "[1]"] {
        std::fs::write(dir.path().join("bad.yaml"), yaml.replace("umask: 077", &format!("umask: {bad}")))
            .unwrap();
        let (code, stderr) = crate::common::check_settings(dir.path(), "bad.yaml");
        assert_eq!(code, Some(1), "{bad}: {stderr}");
        assert!(stderr.contains("entry \"plain\"") && stderr.contains("umask:"), "{bad}: {stderr}");
    }
}
