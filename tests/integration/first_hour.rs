//! A new user's first hour: the mistakes people make first get answers that say what to do.
//! Each test here failed on 0.1.0.

use crate::common::{check_settings, write};

/// YAML mistakes in actions are said per action, with the line and how to fix them.
#[test]
fn yaml_mistakes_in_actions_name_the_action_the_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.yaml",
        "entries:\n  site:\n    insecure: true\n    actions:\n      - git pull --ff-only\n      - true\n      \
         - echo deploy: done\n      - run: docker compose up -d --build\n        if_chaged: [Dockerfile]\n",
    );
    let (code, stderr) = check_settings(dir.path(), "s.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("s.yaml:6: entry \"site\": action 2 is the boolean true")
            && lines[0].contains("(- \"true\")"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("s.yaml:7: entry \"site\": action 3 is `echo deploy: done`")
            && lines[1].contains("quote"),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with("s.yaml:8: entry \"site\": action 4 has an unknown key `if_chaged`"),
        "{stderr}"
    );
    assert!(!stderr.contains("untagged enum"), "{stderr}");
}

/// `branch: main` is a regular expression that also matches `not-main`: `--check` warns, and
/// still exits 0 (the file is valid).
#[test]
fn an_unanchored_branch_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.yaml",
        "entries:\n  site:\n    secret: s\n    match: { branch: main }\n    actions: [\"true\"]\n",
    );
    let (code, stderr) = check_settings(dir.path(), "s.yaml");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: s.yaml:2: entry \"site\": match.branch \"main\"")
            && stderr.contains("\"^main$\""),
        "{stderr}"
    );
    write(
        dir.path(),
        "s.yaml",
        "entries:\n  site:\n    secret: s\n    match: { branch: ^main$ }\n    actions: [\"true\"]\n",
    );
    let (code, stderr) = check_settings(dir.path(), "s.yaml");
    assert_eq!((code, stderr.contains("warning")), (Some(0), false), "{stderr}");
}

/// A `WH_LOG` that is no level is an error at start, not a silent daemon.
#[test]
fn a_bad_log_filter_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "settings.yaml",
        "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    insecure: true\n    actions: [\"true\"]\n",
    );
    let (code, stderr) = crate::common::refuses_to_start(
        dir.path(),
        &[("WH_LOG", "inf"), ("PATH", &std::env::var("PATH").unwrap_or_default())],
        "the daemon started, silent, with WH_LOG=inf",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("WH_LOG=\"inf\": \"inf\" is not a level"), "{stderr}");
}

/// Behind nginx every delivery comes from 127.0.0.1: the log names the client that the trusted
/// proxy says, and ignores what an untrusted peer says.
#[test]
fn the_log_names_the_client_behind_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = crate::common::Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    secret: s\n    actions: [\"true\"]\n",
        &[],
    );
    let mut req = crate::common::request("github/push.json");
    req.headers.push(("X-Forwarded-For".into(), "203.0.113.9".into()));
    assert_eq!(daemon.send("/hooks/a", &req).status, 401);
    crate::common::eventually("the refusal is logged", || daemon.log().contains("client=203.0.113.9"));
    drop(daemon);
    let daemon = crate::common::Daemon::with_settings(
        dir.path(),
        "server: { listen: 127.0.0.1:0, trusted_proxies: [] }\nentries:\n  a:\n    secret: s\n    actions: [\"true\"]\n",
        &[],
    );
    assert_eq!(daemon.send("/hooks/a", &req).status, 401);
    crate::common::eventually("the refusal is logged", || daemon.log().contains("client=127.0.0.1"));
    assert!(!daemon.log().contains("203.0.113.9"), "{}", daemon.log());
}

/// `--check` also says what would stop the daemon on this machine (a missing workdir, a listen
/// address in use), as warnings: the settings are valid, exit 0.
#[test]
fn check_warns_about_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    write(
        dir.path(),
        "s.yaml",
        &format!("server: {{ listen: \"{addr}\" }}\nentries:\n  site:\n    secret: s\n    workdir: /nonexistent/site\n    actions: [\"true\"]\n"),
    );
    let (code, stderr) = check_settings(dir.path(), "s.yaml");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("warning: entry \"site\": workdir /nonexistent/site does not exist"), "{stderr}");
    assert!(stderr.contains(&format!("warning: listen {addr}: the address is in use")), "{stderr}");
    assert!(stderr.contains("2 warning(s)"), "{stderr}");
}
