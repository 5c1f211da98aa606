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
