//! Hostile input: forged, confusing or oversized requests and values. Each test here failed on
//! 0.1.0.

use wh_automata::store::JobState;

use crate::common::{connect_from, github_push, push_body, Daemon};

/// A signed JSON push whose commit message embeds `&payload=<another event>`, replayed with a
/// form Content-Type, is still the JSON push it was signed as: the embedded event never runs.
#[test]
fn a_json_body_is_never_read_as_a_form() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  victim:\n    match: { repo: acme/victim, branch: ^main$ }\n    \
         secret: org-wide\n    actions: [\"touch victim-ran\"]\n  real:\n    match: { repo: acme/real, branch: ^main$ }\n    \
         secret: org-wide\n    actions: [\"touch real-ran\"]\n",
        &[],
    );
    let embedded = push_body("acme/victim", "refs/heads/main", &"a".repeat(40), &"e".repeat(40));
    let encoded: String = form_urlencoded::byte_serialize(&embedded).collect();
    let mut outer: serde_json::Value = serde_json::from_slice(&push_body(
        "acme/real",
        "refs/heads/feature",
        &"a".repeat(40),
        &"b".repeat(40),
    ))
    .unwrap();
    outer["head_commit"]["message"] = format!("fix typo&payload={encoded}").into();
    outer["commits"][0]["message"] = outer["head_commit"]["message"].clone();
    let body = serde_json::to_vec(&outer).unwrap();
    for (n, path) in ["/hooks", "/hooks/victim", "/hooks/real"].iter().enumerate() {
        let mut headers = github_push(&body, "org-wide", &format!("confused-{n}"));
        headers[0] = ("Content-Type".into(), "application/x-www-form-urlencoded".into());
        let reply = daemon.post(path, &headers, &body);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.json()["status"], "ignored", "{path}: {}", reply.body);
    }
    assert!(daemon.store().recent(10).unwrap().is_empty(), "no job may have been recorded");
    // A real form body still works.
    let form = format!("payload={}", form_urlencoded::byte_serialize(&embedded).collect::<String>());
    let mut headers = github_push(form.as_bytes(), "org-wide", "form-1");
    headers[0] = ("Content-Type".into(), "application/x-www-form-urlencoded".into());
    let reply = daemon.post("/hooks", &headers, form.as_bytes());
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(daemon.wait_job(reply.job_ids()[0]).state, JobState::Succeeded);
    // A form of two fields is not a delivery.
    let two = format!("{form}&other=1");
    let mut headers = github_push(two.as_bytes(), "org-wide", "form-2");
    headers[0] = ("Content-Type".into(), "application/x-www-form-urlencoded".into());
    assert_eq!(daemon.post("/hooks", &headers, two.as_bytes()).status, 400);
}

/// Entry names made of dots would be path segments: `.` and `..` are refused.
#[test]
fn dot_entry_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in [".", "..", "..."] {
        crate::common::write(
            dir.path(),
            "s.yaml",
            &format!("entries:\n  \"{name}\":\n    insecure: true\n    actions: [\"true\"]\n"),
        );
        let out = std::process::Command::new(crate::common::bin("wh-automatad"))
            .args(["--check", "s.yaml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("not be dots alone"), "{stderr}");
    }
}

/// A newline in a signed `after` is a payload error, not a forged log line; `--jobs` lists a
/// job whose ref is longer than any terminal without panicking, its values escaped.
#[test]
fn payload_values_cannot_forge_lines_or_break_listings() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  any:\n    match: { repo: acme/x, branch: \".*\" }\n    secret: s\n    \
         actions: [\"true\"]\n",
        &[],
    );
    let forged = format!("{}\n2026-01-01T00:00:00Z  INFO forged line", "c".repeat(40));
    let body = push_body("acme/x", "refs/heads/main", &"a".repeat(40), &forged);
    let reply = daemon.post("/hooks/any", &github_push(&body, "s", "inject-1"), &body);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("not a commit id"), "{}", reply.body);
    assert!(!daemon.log().contains("forged line"), "{}", daemon.log());
    drop(daemon);

    // A manual run with a 70,000-character branch (the foreground, no daemon), then the list.
    let long = "b".repeat(70_000);
    let out = crate::common::trigger(dir.path(), &["settings.yaml", "any", "--branch", &long], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = crate::common::trigger(dir.path(), &["settings.yaml", "--jobs"], &[]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let row = list.lines().nth(1).unwrap();
    assert!(row.contains("refs/heads/bbbb") && row.contains('…') && row.len() < 300, "{row}");
}

/// A secret written as a bare number is refused without repeating it (not in `--check`, not
/// in `/health`, not in the log); state files are owner-only whatever the umask; deleted rows
/// are overwritten.
#[test]
fn secrets_are_never_echoed_and_state_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let good = "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    secret: \"s\"\n    \
                actions: [\"stat -c %a \\\"$WH_PAYLOAD\\\" > payload-mode\"]\n";
    crate::common::write(dir.path(), "settings.yaml", good);
    let daemon = Daemon::start_with_umask(dir.path(), &[], "000");
    let bad = good.replace("\"s\"", "8472619305");
    crate::common::write(dir.path(), "bad.yaml", &bad);
    let out = std::process::Command::new(crate::common::bin("wh-automatad"))
        .args(["--check", "bad.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("must be a string") && !stderr.contains("8472619305"), "{stderr}");
    crate::common::write(dir.path(), "settings.yaml", &bad);
    crate::common::eventually("the edit is refused", || {
        daemon.get("/health").json()["settings"]["state"] == "error"
    });
    let health = daemon.get("/health").body;
    assert!(!health.contains("8472619305") && !daemon.log().contains("8472619305"), "{health}");

    // Old Gitea versions put the webhook secret itself in the body.
    let mut body: serde_json::Value =
        serde_json::from_slice(&push_body("acme/x", "refs/heads/main", &"a".repeat(40), &"b".repeat(40)))
            .unwrap();
    body["secret"] = "plaintext-secret-in-the-body".into();
    let body = serde_json::to_vec(&body).unwrap();
    let reply = daemon.post("/hooks/a", &github_push(&body, "s", "perm-1"), &body);
    assert_eq!(daemon.wait_job(reply.job_ids()[0]).state, JobState::Succeeded);
    let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
    for d in ["state", "state/logs", "state/payloads", "state/steps"] {
        assert_eq!(mode(d), 0o700, "{d}");
    }
    for f in ["state/jobs.sqlite3", "state/logs/1.log"] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("payload-mode")).unwrap().trim(), "600");
    // The payload row went with its job, and its bytes with it (the file itself is searched).
    assert!(daemon.stop().success());
    let raw = std::fs::read(dir.path().join("state/jobs.sqlite3")).unwrap();
    let wal = std::fs::read(dir.path().join("state/jobs.sqlite3-wal")).unwrap_or_default();
    let needle = b"plaintext-secret-in-the-body";
    let found = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!found(&raw) && !found(&wal), "a deleted payload is still readable in the database file");
}

/// Values over what the kernel lets into an environment (6,000 changed files, a 140 KB commit
/// message) are cut, and the actions say which were cut; the payload file stays whole.
#[test]
fn long_values_are_cut_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, max_body: 4 MiB }\nentries:\n  a:\n    match: { repo: acme/x }\n    secret: s\n    \
         actions:\n      - env > env.txt; wc -c < \"$WH_PAYLOAD\" > payload-size\n      - run: touch rebuilt\n        \
         if_changed: [Dockerfile]\n",
        &[],
    );
    let mut body: serde_json::Value =
        serde_json::from_slice(&push_body("acme/x", "refs/heads/main", &"a".repeat(40), &"b".repeat(40)))
            .unwrap();
    let files: Vec<String> = (0..6000).map(|i| format!("src/generated/module_{i:05}.rs")).collect();
    body["commits"][0]["added"] = files.into();
    // Sorted last: past the cut of WH_CHANGED_FILES.
    body["commits"][0]["modified"] = vec!["zz/Dockerfile"].into();
    let message = "m".repeat(140_000);
    body["head_commit"]["message"] = message.clone().into();
    let body = serde_json::to_vec(&body).unwrap();
    let reply = daemon.post("/hooks/a", &github_push(&body, "s", "long-1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let job = daemon.wait_job(reply.job_ids()[0]);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.reason);
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    let var = |name: &str| {
        env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
    };
    assert_eq!(var("WH_TRUNCATED"), "WH_COMMIT_MESSAGE WH_CHANGED_FILES");
    assert_eq!(var("WH_CHANGES_COMPLETE"), "0");
    assert_eq!(var("WH_COMMIT_MESSAGE").len(), 32 * 1024);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("payload-size")).unwrap().trim(),
        body.len().to_string()
    );
    // The if_changed decision uses the whole list: the Dockerfile changed.
    assert!(dir.path().join("rebuilt").exists());
}

/// A forged routed request is never checked against every entry: without a repository there
/// is nothing to route by (refused before any secret is tried), a ping without one is answered
/// without running anything, and one with a repository is checked only against its entries.
#[test]
fn routed_requests_without_a_repository_try_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("server: { listen: 127.0.0.1:0 }\nentries:\n");
    for i in 0..50 {
        yaml.push_str(&format!(
            "  e{i}:\n    match: {{ repo: acme/e{i}, event: [push, ping] }}\n    secret: s{i}\n    actions: [\"touch ran-{i}\"]\n"
        ));
    }
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let mut body: serde_json::Value =
        serde_json::from_slice(&push_body("acme/e1", "refs/heads/main", &"a".repeat(40), &"b".repeat(40)))
            .unwrap();
    body.as_object_mut().unwrap().remove("repository");
    let body = serde_json::to_vec(&body).unwrap();
    let reply = daemon.post("/hooks", &github_push(&body, "forged", "nr-1"), &body);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("repository"), "{}", reply.body);

    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let mut headers = github_push(ping, "forged", "nr-2");
    headers[1] = ("X-GitHub-Event".into(), "ping".into());
    let reply = daemon.post("/hooks", &headers, ping);
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("pong")), "{}", reply.body);

    let body = push_body("acme/e7", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    assert_eq!(daemon.post("/hooks", &github_push(&body, "s8", "nr-3"), &body).status, 401);
    let reply = daemon.post("/hooks", &github_push(&body, "s7", "nr-4"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["jobs"][0]["entry"], "e7");
}

/// Slow or idle clients from one address cannot take every place: past its share they are
/// closed at once, and deliveries from elsewhere are answered; a slow body is cut at
/// `body_timeout`. (Figures under a flood: bench/SLOW.md.)
#[test]
fn one_address_cannot_take_every_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, max_connections_per_address: 4, body_timeout: 1s }\nentries:\n  a:\n    \
         insecure: true\n    actions: [\"true\"]\n",
        &[],
    );
    let held: Vec<_> = (0..4).map(|_| connect_from("127.0.0.2", daemon.addr)).collect();
    // Its fifth is closed at once (no answer, end of stream), not kept waiting.
    let mut fifth = connect_from("127.0.0.2", daemon.addr);
    fifth.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(fifth.read(&mut buf).unwrap_or(0), 0, "the fifth connection is closed");
    // A delivery from another address goes through meanwhile.
    let mut req = crate::common::request("github/push.json");
    req.headers.retain(|(k, _)| k != "X-GitHub-Delivery");
    assert_eq!(daemon.send("/hooks/a", &req).status, 202);
    // A body that does not arrive within body_timeout is refused.
    let mut slow = connect_from("127.0.0.3", daemon.addr);
    slow.write_all(
        b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(held);
}

/// When idle or slow connections from many addresses take every place, a delivery still gets
/// in: the oldest connection that has not delivered a request gives up its place.
#[test]
fn a_full_table_makes_room_for_a_delivery() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, max_connections: 8, max_connections_per_address: 2, header_timeout: 60s }\n\
         entries:\n  a:\n    insecure: true\n    actions: [\"true\"]\n",
        &[],
    );
    // Eight places, taken by idle connections from four addresses.
    let held: Vec<_> = (0..8).map(|i| connect_from(&format!("127.0.0.{}", 2 + i / 2), daemon.addr)).collect();
    std::thread::sleep(std::time::Duration::from_millis(200)); // the daemon accepts them (checked below)
    let req = crate::common::request("github/push.json");
    let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut head = "POST /hooks/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_string();
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&req.body).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "no answer within 5 s: {answer:?}");
    // It got in by taking the place of an idle one, which was closed: the oldest.
    let closed: Vec<usize> = held
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let mut c: &std::net::TcpStream = c;
            c.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
            matches!(c.read(&mut [0u8; 1]), Ok(0))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(closed, [0], "the oldest idle connection gave its place");
}
