//! The README's quick start, run as written (with the binaries the tests built, on a port of
//! its own),
//! and the reverse-proxy snippets of `contrib/`, checked by the servers that will read them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The `sh` blocks of the README section titled `title`.
fn blocks(title: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section.split("```sh\n").skip(1).map(|b| b.split("```").next().unwrap().to_string()).collect()
}

/// The commands as a user runs them, with the binaries this test built (already built: no
/// `cargo build` of its own) and the daemon on `port` instead of 8970.
fn local(block: &str, port: u16) -> String {
    let daemon = bin("wh-automatad");
    let trigger = bin("wh-automata-trigger");
    block
        .replace("cargo build --release && ", "")
        .replace("target/release/wh-automatad", daemon.to_str().unwrap())
        .replace("target/release/wh-automata-trigger", trigger.to_str().unwrap())
        .replace("127.0.0.1:8970", &format!("127.0.0.1:{port}"))
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// The quick start, pasted: the daemon on the example settings in one terminal, the signed
/// push in another; the deploy line is there when the second block ends, every time.
#[test]
fn the_quick_start_works_as_written() {
    for tool in ["curl", "openssl"] {
        assert!(have(tool), "the quick start needs {tool} (.ci/run installs it)");
    }
    let quick = blocks("Quick start");
    assert_eq!(quick.len(), 2, "{quick:?}");
    // The port of the example settings may be taken (the daemon of the Set up line): while
    // this test runs, it is held here if it is free, and the test uses a port of its own.
    let _held = std::net::TcpListener::bind("127.0.0.1:8970");
    let port = crate::standin::free_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(root().join("settings.example.yaml")).unwrap();
    assert!(example.contains("listen: 127.0.0.1:8970"), "the example listens on 8970");
    let example = example.replace("listen: 127.0.0.1:8970", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(dir.path().join("settings.example.yaml"), example).unwrap();
    let mut daemon = Command::new("sh")
        .args(["-c", &local(quick[0].trim(), port)])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(daemon.id() as i32);
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until && daemon.try_wait().unwrap().is_none(), "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out =
        Command::new("sh").args(["-ec", &local(&quick[1], port)]).current_dir(dir.path()).output().unwrap();
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#"{"jobs":[{"entry":"demo","id":1}],"status":"queued"}"#), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" github acme/blog main 2222222222222222222222222222222222222222"), "{stdout}");
}

/// `contrib/nginx.conf` loads in the nginx Debian ships (`nginx -t`), with a certificate made
/// for the test in place of the real one.
#[test]
fn the_nginx_snippet_loads() {
    if !have("nginx") || !have("openssl") {
        eprintln!("skipped: nginx or openssl is not installed (.ci/run installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hooks.example.com",
        ])
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let site = std::fs::read_to_string(root().join("contrib/nginx.conf"))
        .unwrap()
        .replace(
            "/etc/letsencrypt/live/hooks.example.com/fullchain.pem",
            d.join("cert.pem").to_str().unwrap(),
        )
        .replace("/etc/letsencrypt/live/hooks.example.com/privkey.pem", d.join("key.pem").to_str().unwrap());
    std::fs::write(d.join("site.conf"), site).unwrap();
    let main = format!(
        "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  include {0}/site.conf;\n}}\n",
        d.display()
    );
    std::fs::write(d.join("nginx.conf"), main).unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {stderr}");
}

/// `contrib/Caddyfile` is valid for the Caddy Debian ships (`caddy validate`).
#[test]
fn the_caddyfile_is_valid() {
    if !have("caddy") {
        eprintln!("skipped: caddy is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("caddy")
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(root().join("contrib/Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "caddy validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The production install steps: `cargo install --locked`, and man pages and completions
/// installed where their directories do not exist yet (run here under a temporary root).
#[test]
fn the_install_steps_work_where_directories_are_missing() {
    let steps = blocks("In production");
    let install =
        steps.iter().find(|b| b.contains("cargo install --locked --path .")).expect("the install step");
    let dir = tempfile::tempdir().unwrap();
    let under = dir.path().to_str().unwrap();
    let lines: Vec<String> = install
        .lines()
        .filter(|l| l.contains("contrib/"))
        .map(|l| l.replace("sudo ", "").replace(" /usr/", &format!(" {under}/usr/")))
        .collect();
    assert_eq!(lines.len(), 3, "{install}");
    let out = Command::new("sh").args(["-ec", &lines.join("\n")]).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "usr/local/share/man/man1/wh-automatad.1",
        "usr/local/share/man/man1/wh-automata-trigger.1",
        "usr/share/bash-completion/completions/wh-automatad",
        "usr/share/bash-completion/completions/wh-automata-trigger",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} not installed");
    }
}
