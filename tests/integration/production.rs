//! Running under systemd: readiness and stopping notices on `NOTIFY_SOCKET`, journal-friendly
//! log lines.

use nix::sys::signal::Signal;

use crate::common::{write, Daemon, NotifyAt};

/// Settings with one entry that does nothing.
const MINIMAL: &str =
    "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    insecure: true\n    actions: [\"true\"]\n";

#[test]
fn readiness_and_stopping_are_notified_on_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    // The test helper binds the socket, waits for the readiness notice, and reads the address
    // the daemon listens on from it.
    let daemon = Daemon::with_settings(dir.path(), MINIMAL, &[]);
    assert_eq!(daemon.ready, format!("READY=1\nSTATUS=listening on {}", daemon.addr));
    // Ready means ready: the port answers.
    assert_eq!(daemon.get("/health").status, 200);

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.notice().starts_with("STOPPING=1\n"));
    assert!(daemon.stop().success());
}

#[cfg(target_os = "linux")]
#[test]
fn an_abstract_notify_socket_works_too() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", MINIMAL);
    let name = format!("wh-automata-test-{}", std::process::id());
    let daemon = Daemon::start_notifying(dir.path(), &[], NotifyAt::Abstract(name));
    assert!(daemon.ready.starts_with("READY=1\n"));
    assert_eq!(daemon.get("/health").status, 200);
}

#[test]
fn under_journald_log_lines_carry_priorities_and_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), MINIMAL, &[("JOURNAL_STREAM", "8:12345")]);
    // A refused edit logs at error priority.
    write(dir.path(), "settings.yaml", "entries:\n  a:\n    actions: [\"true\"]\n");
    crate::common::eventually("the refused edit is logged", || daemon.log().contains("refused"));
    let log = daemon.log();
    let listening = log.lines().find(|l| l.contains("listening")).unwrap();
    assert!(listening.starts_with("<6>"), "{listening}");
    assert!(!listening.contains("Z "), "no timestamp of its own: {listening}");
    let refused = log.lines().find(|l| l.contains("refused")).unwrap();
    assert!(refused.starts_with("<3>"), "{refused}");
}

/// Under journald no line carries an ANSI escape (span fields included), and a wrong secret,
/// the most common mistake, is a warning that names the entry and the header (once a minute
/// per entry), never the secret.
#[test]
fn journal_lines_are_plain_and_a_wrong_secret_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    secret: right-secret\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), settings, &[("JOURNAL_STREAM", "8:12345")]);
    let body = crate::common::push_body("acme/site", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    for n in 0..5 {
        let headers = crate::common::github_push(&body, "wrong-secret", &format!("w{n}"));
        assert_eq!(daemon.post("/hooks/site", &headers, &body).status, 401);
    }
    crate::common::eventually("the refusal is logged", || daemon.log().contains("request refused"));
    let log = daemon.log();
    assert!(!log.contains('\u{1b}'), "an ANSI escape reached the journal: {log:?}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("request refused")).collect();
    assert_eq!(warnings.len(), 1, "rate-limited: {warnings:?}");
    assert!(warnings[0].starts_with("<4>"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("entry \"site\"") && warnings[0].contains("X-Hub-Signature-256"),
        "{}",
        warnings[0]
    );
    assert!(!log.contains("right-secret") && !log.contains("wrong-secret"), "{log}");
}

#[test]
fn the_systemd_unit_is_valid_and_asks_for_what_the_daemon_does() {
    let unit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/wh-automata.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=wh-automata",
        "User=wh-automata",
        "Restart=on-failure",
        "KillMode=mixed",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has no {line}");
    }
    // Longer than the default shutdown_grace (30s), so running jobs can finish.
    assert!(unit.lines().any(|l| l == "TimeoutStopSec=45s"));

    let Ok(version) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit file is not verified");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let local =
        unit.replace("/usr/local/bin/wh-automatad", crate::common::bin("wh-automatad").to_str().unwrap());
    write(dir.path(), "wh-automata.service", &local);
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("wh-automata.service"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
