//! The core promises under faults: kill -9 in the middle of jobs, racing requests, a full
//! disk, a damaged database, settings files caught half-written, absurd durations, settings
//! behind links. Each test here failed on 0.1.0.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wh_automata::store::JobState;

use crate::common::{eventually, github_push, push_body, read, write, Daemon};

/// A POST that may fail (the daemon may be down): the status, or `None`, and the body.
fn try_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

fn job_ids(body: &str) -> Vec<i64> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["jobs"].as_array().map(|a| a.iter().filter_map(|j| j["id"].as_i64()).collect()).unwrap_or_default()
}

/// Each entry's action, marked by start and end lines; a lock held while it runs tells an
/// overlap (the kernel drops it when the holder dies, however it dies).
const CYCLE_ACTION: &str = "exec 9>>lock-$WH_ENTRY; flock -n 9 || echo \"$WH_JOB_ID\" >> overlaps; \
                            echo \"start $WH_JOB_ID\" >> runs-$WH_ENTRY; sleep 0.15; \
                            echo \"end $WH_JOB_ID\" >> runs-$WH_ENTRY";

/// kill -9 again and again while pushes stream in to several entries: no accepted job is lost,
/// no two runs of one entry overlap (the orphans of a killed daemon are stopped before their
/// entry runs again), and no job whose actions all ended runs again.
#[test]
fn kill_9_cycles_lose_nothing_overlap_nothing_and_repeat_no_completed_job() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut yaml = String::from("server: { listen: 127.0.0.1:0, workers: 3 }\nentries:\n");
    for e in 0..4 {
        yaml.push_str(&format!(
            "  e{e}:\n    match: {{ repo: acme/e{e}, branch: \".*\" }}\n    secret: s\n    actions:\n      - '{CYCLE_ACTION}'\n"
        ));
    }
    write(root, "settings.yaml", &yaml);
    let mut accepted: Vec<i64> = Vec::new();
    let mut n = 0;
    for cycle in 0..10 {
        let mut daemon = Daemon::start(root, &[]);
        let until = Instant::now() + Duration::from_millis(250 + 50 * (cycle % 4));
        while Instant::now() < until {
            n += 1;
            let repo = format!("acme/e{}", n % 4);
            let git_ref = format!("refs/heads/b{}", n % 3);
            let body = push_body(&repo, &git_ref, &"a".repeat(40), &format!("{n:0>40}"));
            if let Some((202, answer)) =
                try_post(daemon.addr, "/hooks", &github_push(&body, "s", &format!("k{n}")), &body)
            {
                accepted.extend(job_ids(&answer));
            }
        }
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
    }
    // A last start, and every job ends.
    let daemon = Daemon::start(root, &[]);
    let jobs: Vec<_> = accepted.iter().map(|id| daemon.wait_job(*id)).collect();
    assert!(accepted.len() > 40, "too few deliveries accepted to say anything: {}", accepted.len());
    let lost: Vec<_> =
        jobs.iter().filter(|j| !matches!(j.state, JobState::Succeeded | JobState::Superseded)).collect();
    assert!(lost.is_empty(), "jobs that did not run: {lost:?}");
    if root.join("overlaps").exists() {
        let mut all = String::new();
        for e in 0..4 {
            all.push_str(&format!(
                "e{e}: {}\n",
                std::fs::read_to_string(root.join(format!("runs-e{e}")))
                    .unwrap_or_default()
                    .replace('\n', " | ")
            ));
        }
        panic!(
            "runs of one entry overlapped: jobs {}\n{all}\n{}",
            read(&root.join("overlaps")),
            daemon.log()
        );
    }
    let mut ran_again = Vec::new();
    let mut ends: HashMap<i64, usize> = HashMap::new();
    for e in 0..4 {
        let Ok(runs) = std::fs::read_to_string(root.join(format!("runs-e{e}"))) else { continue };
        let mut ended = BTreeSet::new();
        for line in runs.lines() {
            let mut parts = line.split(' ');
            let (what, id) = (parts.next().unwrap(), parts.next().unwrap());
            let id: i64 = id.parse().unwrap();
            match what {
                "start" if ended.contains(&id) => ran_again.push(id),
                "end" => {
                    ended.insert(id);
                    *ends.entry(id).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    assert!(ran_again.is_empty(), "jobs run again after their actions had all ended: {ran_again:?}");
    for job in jobs.iter().filter(|j| j.state == JobState::Succeeded) {
        assert_eq!(
            ends.get(&job.id),
            Some(&1),
            "succeeded job {} ended {:?} times",
            job.id,
            ends.get(&job.id)
        );
    }
}

/// Two pushes to one busy entry and ref at the same instant, again and again: the newer
/// recorded job always wins, and never both are superseded.
#[test]
fn simultaneous_pushes_the_newest_recorded_job_wins() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, queue: 1000 }\nentries:\n  app:\n    match: { repo: acme/app }\n    secret: s\n    \
         actions: [\"touch held; while [ ! -e release ]; do sleep 0.05; done; echo $WH_JOB_ID >> ran\"]\n",
        &[],
    );
    let body = push_body("acme/app", "refs/heads/main", &"a".repeat(40), &"f".repeat(40));
    let busy = daemon.post("/hooks/app", &github_push(&body, "s", "busy"), &body).job_ids()[0];
    eventually("the entry is busy", || dir.path().join("held").exists());
    let addr = daemon.addr;
    let mut all = Vec::new();
    for pair in 0..150 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|side| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let n = pair * 2 + side + 1;
                    let body =
                        push_body("acme/app", "refs/heads/main", &"a".repeat(40), &format!("{n:0>40}"));
                    let headers = github_push(&body, "s", &format!("p{n}"));
                    barrier.wait();
                    let (status, answer) = try_post(addr, "/hooks/app", &headers, &body).unwrap();
                    assert_eq!(status, 202, "{answer}");
                    job_ids(&answer)[0]
                })
            })
            .collect();
        all.extend(threads.into_iter().map(|t| t.join().unwrap()));
    }
    let newest = *all.iter().max().unwrap();
    // Let the busy job go: only the newest runs after it.
    write(dir.path(), "release", "");
    let store = daemon.store();
    eventually("the newest job ends", || store.job(newest).unwrap().unwrap().state.is_final());
    assert_eq!(store.job(newest).unwrap().unwrap().state, JobState::Succeeded);
    let mut by_whom: BTreeMap<i64, i64> = BTreeMap::new();
    for id in all.iter().filter(|id| **id != newest) {
        eventually("superseded jobs are recorded", || store.job(*id).unwrap().unwrap().state.is_final());
        let job = store.job(*id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Superseded, "job {id}: {:?}", job.reason);
        let reason = job.reason.unwrap();
        let by: i64 = reason.split_whitespace().nth(3).unwrap().trim_end_matches(',').parse().unwrap();
        assert!(by > *id, "job {id} was superseded by an older job: {reason}");
        by_whom.insert(*id, by);
    }
    assert_eq!(
        read(&dir.path().join("ran")),
        format!("{busy}\n{newest}\n"),
        "only the newest ran after the busy one"
    );
    assert_eq!(by_whom.len(), all.len() - 1);
}
