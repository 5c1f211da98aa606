//! Settings under faults: a file caught empty while being written, an entry that vanishes for
//! a moment, durations that overflow, settings behind links. Each test here failed on 0.1.0.

use wh_automata::store::JobState;

use crate::common::{check_settings, eventually, request, write, Daemon};

fn entry(name: &str, action: &str) -> String {
    format!("  {name}:\n    insecure: true\n    actions: [\"{action}\"]\n")
}

/// Settings with one entry `name` and the state directory at `root/state`, so that the
/// settings file can live in another directory (behind a link) than the job store.
fn kept_apart(root: &std::path::Path, name: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0, state_dir: {} }}\nentries:\n{}",
        root.join("state").display(),
        entry(name, "true")
    )
}

/// A GitHub push without a delivery id: each one sent is a new delivery.
fn undelivered_push() -> crate::common::Request {
    let mut req = request("github/push.json");
    req.headers.retain(|(k, _)| k != "X-GitHub-Delivery");
    req
}

/// A file truncated and written again a second later (an editor, a generator): the empty file
/// is refused, the running settings keep serving all along, and the full file is taken.
#[test]
fn a_momentarily_empty_settings_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let full =
        format!("server: {{ listen: 127.0.0.1:0, path: /deploy }}\nentries:\n{}", entry("site", "true"));
    let daemon = Daemon::with_settings(dir.path(), &full, &[]);
    let req = undelivered_push();
    assert_eq!(daemon.send("/deploy/site", &req).status, 202);

    write(dir.path(), "settings.yaml", "");
    eventually("the empty file is refused", || daemon.get("/health").json()["settings"]["state"] == "error");
    let health = daemon.get("/health").json();
    assert!(health["settings"]["problems"][0].as_str().unwrap().contains("the file is empty"), "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(daemon.send("/deploy/site", &req).status, 202, "the running settings keep serving");
    // Caught after its first lines, or with only a byte-order mark: refused the same way.
    for partial in ["server: { listen: 127.0.0.1:0, path: /deploy }\nentries:\n", "{}\n", "\u{feff}\n"] {
        write(dir.path(), "settings.yaml", &full);
        eventually("the full file is back", || daemon.get("/health").json()["status"] == "ok");
        write(dir.path(), "settings.yaml", partial);
        eventually(&format!("{partial:?} is refused"), || {
            daemon.get("/health").json()["status"] == "degraded"
        });
        let health = daemon.get("/health").json();
        assert_eq!(health["settings"]["state"], "error", "{health}");
        assert_eq!(daemon.send("/deploy/site", &req).status, 202, "the running settings keep serving");
    }

    std::thread::sleep(std::time::Duration::from_millis(300)); // the writer takes its time
    write(dir.path(), "settings.yaml", &full.replace("site:", "site2:"));
    eventually("the full file is taken", || daemon.get("/health").json()["settings"]["state"] == "loaded");
    assert_eq!(daemon.send("/deploy/site2", &req).status, 202);

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing yet\n\n").unwrap();
    let (code, stderr) = check_settings(dir.path(), "empty.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the file is empty"), "{stderr}");
}

/// Settings written without entries on purpose (a fresh install) are valid, with a warning;
/// the daemon runs nothing and `/health` says why until an entry is added.
#[test]
fn settings_without_entries_run_nothing_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let none = "server: { listen: 127.0.0.1:0 }\nentries: {}\n";
    write(dir.path(), "none.yaml", none);
    let (code, stderr) = check_settings(dir.path(), "none.yaml");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("no entries in the settings") && stderr.contains("nothing runs"), "{stderr}");
    let daemon = Daemon::with_settings(dir.path(), none, &[]);
    let health = daemon.get("/health").json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["reasons"][0].as_str().unwrap().contains("no entries"), "{health}");
    write(
        dir.path(),
        "settings.yaml",
        &format!("server: {{ listen: 127.0.0.1:0 }}\nentries:\n{}", entry("site", "true")),
    );
    eventually("the entry is added", || daemon.get("/health").json()["status"] == "ok");
    assert_eq!(daemon.send("/hooks/site", &undelivered_push()).status, 202);
}

/// A job is never cancelled because its entry vanished in a reload: it waits until the entry
/// is back. At the next start, a job whose entry is really gone is cancelled, and says why.
#[test]
fn a_job_whose_entry_vanishes_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = entry("app", "while [ ! -e go ]; do sleep 0.05; done; echo $WH_JOB_ID >> ran");
    let other = entry("other", "true");
    let with = format!("server: {{ listen: 127.0.0.1:0 }}\nentries:\n{app}{other}");
    let without = format!("server: {{ listen: 127.0.0.1:0 }}\nentries:\n{other}");
    let daemon = Daemon::with_settings(dir.path(), &with, &[]);
    let push = |n: u32| {
        let body = crate::common::push_body(
            "acme/app",
            &format!("refs/heads/b{n}"),
            &"a".repeat(40),
            &format!("{n:0>40}"),
        );
        let reply =
            daemon.post("/hooks/app", &crate::common::github_push(&body, "s", &format!("v{n}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        reply.job_ids()[0]
    };
    let first = push(1);
    let second = push(2);
    let store = daemon.store();
    eventually("the first runs", || store.job(first).unwrap().unwrap().state == JobState::Running);

    // The entry goes (a valid edit), the first job ends, the second is taken: it waits.
    write(dir.path(), "settings.yaml", &without);
    eventually("the edit is live", || daemon.send("/hooks/app", &request("github/ping.json")).status == 401);
    write(dir.path(), "go", "");
    eventually("the second waits aside", || daemon.get("/health").json()["queue"]["parked"] == 1);
    assert_eq!(store.job(first).unwrap().unwrap().state, JobState::Succeeded);
    assert_eq!(store.job(second).unwrap().unwrap().state, JobState::Queued);

    // The entry is back: the job runs.
    write(dir.path(), "settings.yaml", &with);
    assert_eq!(daemon.wait_job(second).state, JobState::Succeeded);
    assert_eq!(std::fs::read_to_string(dir.path().join("ran")).unwrap(), format!("{first}\n{second}\n"));

    // Gone for real across a restart: cancelled at start, saying why.
    std::fs::remove_file(dir.path().join("go")).unwrap();
    let third = push(3);
    let fourth = push(4);
    eventually("the third runs", || store.job(third).unwrap().unwrap().state == JobState::Running);
    write(dir.path(), "settings.yaml", &without);
    eventually("the edit is live", || daemon.send("/hooks/app", &request("github/ping.json")).status == 401);
    write(dir.path(), "go", "");
    eventually("the fourth waits aside", || daemon.get("/health").json()["queue"]["parked"] == 1);
    assert!(daemon.stop().success());
    let daemon = Daemon::start(dir.path(), &[]);
    let job = daemon.wait_job(fourth);
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.reason.as_deref(), Some("cancelled at start: its entry is not in the settings"));
}

/// Durations that overflow are refused with a message (no panic in `--check`, none in a
/// reload, none in a worker), a refused edit leaves reloads working, and plain seconds work.
#[test]
fn overflowing_durations_are_refused_and_plain_seconds_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for (value, why) in [
        ("\"18446744073709551615s1s\"", "too long"),
        ("\"9999999999999999999\"", "too long"),
        ("\"400d\"", "too long"),
    ] {
        write(
            dir.path(),
            "bad.yaml",
            &format!("entries:\n  a:\n    insecure: true\n    timeout: {value}\n    actions: [\"true\"]\n"),
        );
        let (code, stderr) = check_settings(dir.path(), "bad.yaml");
        assert_eq!(code, Some(1), "{value}: {stderr}");
        assert!(stderr.contains(why), "{value}: {stderr}");
    }
    write(dir.path(), "plain.yaml", "server: { header_timeout: 5, max_body: 65536 }\nentries:\n  a:\n    insecure: true\n    timeout: 600\n    actions: [\"true\"]\n");
    let (code, stderr) = check_settings(dir.path(), "plain.yaml");
    assert_eq!(code, Some(0), "{stderr}");

    let good = format!("server: {{ listen: 127.0.0.1:0 }}\nentries:\n{}", entry("a", "true"));
    let daemon = Daemon::with_settings(dir.path(), &good, &[]);
    write(
        dir.path(),
        "settings.yaml",
        &good.replace("actions:", "timeout: \"9999999999999999999\"\n    actions:"),
    );
    eventually("the edit is refused", || daemon.get("/health").json()["settings"]["state"] == "error");
    write(dir.path(), "settings.yaml", &good.replace("  a:", "  b:"));
    eventually("a later edit is applied", || daemon.get("/health").json()["settings"]["state"] == "loaded");
    let req = undelivered_push();
    assert_eq!(daemon.send("/hooks/b", &req).status, 202);
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Settings behind a link: an edit of the target, and a swap of a link on the way (as
/// Kubernetes ConfigMaps do with `..data`), are both applied.
#[test]
fn settings_behind_links_are_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let settings = |name: &str| kept_apart(root, name);
    std::fs::create_dir(root.join("..v1")).unwrap();
    write(&root.join("..v1"), "settings.yaml", &settings("one"));
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/settings.yaml", root.join("settings.yaml")).unwrap();
    let daemon = Daemon::start(root, &[]);
    let req = undelivered_push();
    assert_eq!(daemon.send("/hooks/one", &req).status, 202);

    // The target edited in place.
    write(&root.join("..v1"), "settings.yaml", &settings("two"));
    eventually("an edit of the target is applied", || daemon.send("/hooks/two", &req).status == 202);

    // The ConfigMap way: a new directory, a new link renamed over `..data`.
    std::fs::create_dir(root.join("..v2")).unwrap();
    write(&root.join("..v2"), "settings.yaml", &settings("three"));
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    eventually("the swap is applied", || daemon.send("/hooks/three", &req).status == 202);

    // And the new target is watched in turn.
    write(&root.join("..v2"), "settings.yaml", &settings("four"));
    eventually("an edit of the new target is applied", || daemon.send("/hooks/four", &req).status == 202);
}

/// The context switches of the daemon's settings watcher thread so far. A new thread takes its
/// name once it first runs: under load that may be a moment after the daemon is ready.
fn watcher_wakeups(daemon: &Daemon) -> u64 {
    let tasks = std::path::PathBuf::from(format!("/proc/{}/task", daemon.child.id()));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for task in std::fs::read_dir(&tasks).unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == wh_automata::reload::THREAD_NAME {
                let status = std::fs::read_to_string(task.path().join("status")).unwrap();
                return status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
                    .sum();
            }
        }
        assert!(
            std::time::Instant::now() < until,
            "no thread named {} in {}",
            wh_automata::reload::THREAD_NAME,
            tasks.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A log file appended beside the settings (`2>> app.log` in the same directory) does not
/// wake the settings watcher: it watches saves, not writes. A save still does.
#[test]
fn writes_beside_the_settings_do_not_wake_the_watcher() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let settings =
        |name: &str| format!("server: {{ listen: 127.0.0.1:0 }}\nentries:\n{}", entry(name, "true"));
    let daemon = Daemon::with_settings(dir.path(), &settings("one"), &[]);
    let mut log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("app.log")).unwrap();
    let before = watcher_wakeups(&daemon);
    for i in 0..300 {
        writeln!(log, "line {i}").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let after = watcher_wakeups(&daemon);
    assert!(after - before <= 3, "300 appends woke the watcher {} times", after - before);

    let req = undelivered_push();
    write(dir.path(), "settings.yaml", &settings("two"));
    eventually("the save is applied", || daemon.send("/hooks/two", &req).status == 202);
    assert!(watcher_wakeups(&daemon) > after, "a save wakes the watcher");
}

/// The directory holding the settings replaced by another (moved aside, a new one put in its
/// place): the new settings are taken, and later edits in the new directory are seen too.
#[test]
fn a_settings_directory_put_in_place_of_another_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let settings = |name: &str| kept_apart(root, name);
    std::fs::create_dir(root.join("conf")).unwrap();
    write(&root.join("conf"), "settings.yaml", &settings("one"));
    std::os::unix::fs::symlink("conf/settings.yaml", root.join("settings.yaml")).unwrap();
    let daemon = Daemon::start(root, &[]);
    let req = undelivered_push();
    assert_eq!(daemon.send("/hooks/one", &req).status, 202);

    std::fs::create_dir(root.join("conf.new")).unwrap();
    write(&root.join("conf.new"), "settings.yaml", &settings("two"));
    std::fs::rename(root.join("conf"), root.join("conf.old")).unwrap();
    std::fs::rename(root.join("conf.new"), root.join("conf")).unwrap();
    eventually("the new directory's settings are taken", || daemon.send("/hooks/two", &req).status == 202);

    write(&root.join("conf"), "settings.yaml", &settings("three"));
    eventually("an edit in the new directory is seen", || daemon.send("/hooks/three", &req).status == 202);
}
