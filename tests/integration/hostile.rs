//! Hostile input: forged, confusing or oversized requests and values. Each test here failed on
//! 0.1.0.

use wh_automata::store::JobState;

use crate::common::{github_push, push_body, Daemon};

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
