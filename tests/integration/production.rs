//! Running under systemd: readiness and stopping notices on `NOTIFY_SOCKET`, journal-friendly
//! log lines.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::common::{write, Daemon};

/// Settings with one entry that does nothing.
const MINIMAL: &str =
    "server: { listen: 127.0.0.1:0 }\nentries:\n  a:\n    insecure: true\n    actions: [\"true\"]\n";

#[test]
fn readiness_and_stopping_are_notified_on_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", MINIMAL);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let daemon = Daemon::start(dir.path(), &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a readiness notice");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(ready, format!("READY=1\nSTATUS=listening on {}", daemon.addr));
    // Ready means ready: the port answers.
    assert_eq!(daemon.get("/health").status, 200);

    let status = daemon.stop();
    assert!(status.success());
    let n = socket.recv(&mut buf).expect("a stopping notice");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1\n"));
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", MINIMAL);
    let name = format!("wh-automata-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _daemon = Daemon::start(dir.path(), &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a readiness notice on the abstract socket");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("READY=1\n"));
}

#[test]
fn under_journald_log_lines_carry_priorities_and_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "settings.yaml", MINIMAL);
    let daemon = Daemon::start(dir.path(), &[("JOURNAL_STREAM", "8:12345")]);
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
