//! Who may read what, settled for every path: `/health` and `/metrics` for `observe_from`
//! (loopback by default), a job's page only through the link that carries its key, streamed
//! with bounded memory and with its control characters escaped.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::{connect_from, github_push, push_body, Daemon};

/// `GET path` over HTTP/1.0 from `source` (the answer is not chunked); status and body.
fn get_from(source: &str, daemon: &Daemon, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = connect_from(source, daemon.addr);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: wh\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn health_and_metrics_are_for_observe_from_only() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, trusted_proxies: [127.0.0.3] }\nentries:\n  site:\n    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    for path in ["/health", "/metrics"] {
        assert_eq!(get_from("127.0.0.1", &daemon, path, &[]).0, 200, "{path} from loopback");
        let (status, body) = get_from("127.0.0.2", &daemon, path, &[]);
        assert_eq!(status, 403, "{path} from 127.0.0.2: {body}");
        assert!(body.contains("observe_from"), "{body}");
        // Through the proxy, the client it names counts.
        let proxied = get_from("127.0.0.3", &daemon, path, &[("X-Forwarded-For", "203.0.113.9")]);
        assert_eq!(proxied.0, 403, "{path} for a stranger behind the proxy");
    }
    // Named in the settings: that network may read them, through the proxy too.
    crate::common::write(
        dir.path(),
        "settings.yaml",
        &yaml.replace("trusted_proxies", "observe_from: [203.0.113.0/24], trusted_proxies"),
    );
    crate::common::eventually("the edit is live", || {
        get_from("127.0.0.3", &daemon, "/metrics", &[("X-Forwarded-For", "203.0.113.9")]).0 == 200
    });
    assert_eq!(get_from("127.0.0.1", &daemon, "/health", &[]).0, 403, "loopback is no longer in the list");
}

#[test]
fn a_job_page_opens_only_with_its_key_and_escapes_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, allow_from: [192.0.2.0/24] }\nentries:\n  site:\n    insecure: true\n    \
                actions: [\"printf 'token=abc\\\\033[2J\\\\033]0;owned\\\\007\\\\r\\\\nnext\\\\n'\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let store = daemon.store();
    // Two jobs, made as a manual run would (allow_from refuses this client's webhooks).
    let run = |n: char| {
        let settings = dir.path().join("settings.yaml");
        let out = crate::common::trigger(dir.path(), &[settings.to_str().unwrap(), "site"], &[]);
        assert!(out.status.success(), "{n}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run('a');
    run('b');
    let jobs = store.recent(10).unwrap();
    let (first, second) = (jobs[1].id, jobs[0].id);
    let key = store.page_key(first).unwrap();
    let (status, page) = get_from("127.0.0.2", &daemon, &format!("/jobs/{first}?key={key}"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("state      succeeded"), "{page}");
    assert!(page.contains("token=abc\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\r\n"), "escaped: {page:?}");
    assert!(!page.contains('\u{1b}'), "no raw escape reaches a terminal");
    let refused = |path: String| {
        let (status, body) = get_from("127.0.0.2", &daemon, &path, &[]);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("token=abc"), "{body}");
        body
    };
    let no_such = refused("/jobs/99999?key=0".into());
    assert_eq!(refused(format!("/jobs/{first}")), no_such, "without its key: as if there were no such job");
    assert_eq!(refused(format!("/jobs/{second}?key={key}")), no_such, "another job's key");
    refused(format!("/jobs/{first}?key={}", &key[..31]));
    refused(format!("/jobs/{first}?key={key}x"));
}

/// 200 readers of a page with a 4 MiB log at once: the daemon's memory stays small (the log is
/// streamed, never read whole), and every reader gets all of it.
#[test]
fn many_readers_of_a_large_log_cost_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, log_limit: 8 MiB }\nentries:\n  big:\n    secret: s\n    \
                actions: [\"head -c 4194304 /dev/zero | tr '\\\\0' x; echo\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let body = push_body("acme/big", "refs/heads/main", &"0".repeat(40), &"1".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&body, "s", "big-1"), &body);
    let job = daemon.wait_job(reply.job_ids()[0]);
    let key = daemon.store().page_key(job.id).unwrap();
    let path = format!("/jobs/{}?key={key}", job.id);
    let hwm = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    };
    let before = hwm();
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: wh\r\n\r\n").as_bytes()).unwrap();
            stream
        })
        .collect();
    let got: Vec<usize> = readers
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut n = 0;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break n,
                        Ok(k) => n += k,
                    }
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(got.iter().all(|n| *n > 4 * 1024 * 1024), "every reader got the whole log: {:?}", &got[..5]);
    let grew = hwm().saturating_sub(before);
    eprintln!("200 readers of a 4 MiB log: the daemon's peak memory grew by {grew} kB");
    assert!(grew < 100 * 1024, "the daemon's peak memory grew by {grew} kB for 200 readers of a 4 MiB log");
}
