//! The job store under faults: a full disk, a damaged database. Each test here failed on 0.1.0.

use std::io::Write;
use std::path::{Path, PathBuf};

use wh_automata::store::JobState;

use crate::common::{eventually, github_push, push_body, read, write, Daemon};

/// A tmpfs of `size` mounted at `at` for the test's life (root only).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        out.status.success().then(|| SmallDisk(at.to_path_buf())).or_else(|| {
            eprintln!("skipped: cannot mount a tmpfs here ({})", String::from_utf8_lossy(&out.stderr).trim());
            None
        })
    }

    /// Fills it: a file that takes every free block.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn health(daemon: &Daemon) -> serde_json::Value {
    daemon.get("/health").json()
}

/// With the disk full, jobs that had their 202 wait (they are not failed, nor forgotten), the
/// end of a job that ran is recorded once it can be, `/health` says the store fails; once space
/// is back everything goes on by itself.
#[test]
fn a_full_disk_loses_no_job_and_health_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("state"), "4m") else { return };
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  app:\n    match: { repo: acme/app, branch: \".*\" }\n    secret: s\n    \
         actions: [\"touch ../started-$WH_JOB_ID; while [ ! -e ../go ]; do sleep 0.05; done; echo $WH_JOB_ID >> ../ran\"]\n    \
         workdir: state\n",
        &[],
    );
    let push = |git_ref: &str, n: u32, key: &str| {
        let body = push_body("acme/app", git_ref, &"a".repeat(40), &format!("{n:0>40}"));
        daemon.post("/hooks", &github_push(&body, "s", key), &body)
    };
    let first = push("refs/heads/main", 1, "d1").job_ids()[0];
    eventually("the first job runs", || dir.path().join(format!("started-{first}")).exists());
    let second = push("refs/heads/dev", 2, "d2").job_ids()[0];
    let filler = disk.fill();

    // The running job ends with the disk full; the waiting one cannot start.
    write(dir.path(), "go", "");
    eventually("/health says the store fails", || health(&daemon)["store"]["state"] == "error");
    let h = health(&daemon);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"][0].as_str().unwrap().contains("the job store fails"), "{h}");
    assert!(daemon.log().contains("ERROR"), "store failures are errors: {}", daemon.log());
    let third = push("refs/heads/other", 3, "d3");
    assert!(matches!(third.status, 202 | 500), "{}", third.body);

    std::fs::remove_file(filler).unwrap();
    let store = daemon.store();
    for id in [first, second] {
        eventually("the jobs go on once space is back", || {
            store.job(id).unwrap().is_some_and(|j| j.state.is_final())
        });
        assert_eq!(store.job(id).unwrap().unwrap().state, JobState::Succeeded, "job {id}");
    }
    let ran = read(&dir.path().join("ran"));
    assert_eq!(ran.lines().filter(|l| *l == first.to_string()).count(), 1, "the first ran once: {ran}");
    assert!(ran.lines().any(|l| l == second.to_string()), "{ran}");
    eventually("/health is ok again", || health(&daemon)["status"] == "ok");
    drop(daemon);
}

/// A damaged database is refused at start with what to do, not served with a 500 to every
/// delivery behind an `ok` health.
#[test]
fn a_damaged_database_is_refused_at_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "server: { listen: 127.0.0.1:0 }\nentries:\n  app:\n    match: { repo: acme/app, branch: \".*\" }\n    \
                    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), settings, &[]);
    let mut last = 0;
    for n in 0..60u32 {
        let body =
            push_body("acme/app", &format!("refs/heads/b{n}"), &"a".repeat(40), &format!("{:0>40}", n + 1));
        let reply = daemon.post("/hooks", &github_push(&body, "s", &format!("c{n}")), &body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        last = reply.job_ids()[0];
    }
    daemon.wait_job(last);
    assert!(daemon.stop().success());

    // Interior pages overwritten, the header page kept. Compacted first, so that every page
    // holds live rows (damage in a free page harms nothing and is rightly not reported).
    let db = dir.path().join("state/jobs.sqlite3");
    rusqlite::Connection::open(&db).unwrap().execute_batch("VACUUM").unwrap();
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8 * 4096, "the database is too small to damage inside: {}", bytes.len());
    // Pages in the middle (job rows and payloads), not the schema that opening reads.
    let middle = bytes.len() / 4096 / 2 * 4096;
    for b in &mut bytes[middle..middle + 3 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let (code, stderr) =
        crate::common::refuses_to_start(dir.path(), &[], "the daemon started on a damaged database");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is damaged") && stderr.contains("Move it aside"), "{stderr}");
}
