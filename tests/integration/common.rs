//! Shared helpers: the fixture corpus and the built binaries.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};

pub const SECRET: &str = "It's a Secret to Everybody";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One request description of `tests/fixtures/requests`.
#[derive(Clone)]
pub struct Request {
    /// `github/push.json`
    pub name: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }
}

pub fn request(name: &str) -> Request {
    request_in(&fixtures(), name)
}

/// One request description of the corpus at `root` (`tests/fixtures` or its `corpus2`).
pub fn request_in(root: &Path, name: &str) -> Request {
    let path = root.join("requests").join(name);
    let desc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let body = std::fs::read(root.join(desc["body_file"].as_str().unwrap())).unwrap();
    let headers = desc["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    Request { name: name.to_string(), headers, body }
}

/// Every request description, sorted by name.
pub fn all_requests() -> Vec<Request> {
    all_requests_in(&fixtures())
}

/// Every request description of the corpus at `root`, sorted by name.
pub fn all_requests_in(root: &Path) -> Vec<Request> {
    let mut names = Vec::new();
    for dir in std::fs::read_dir(root.join("requests")).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                names.push(format!(
                    "{}/{}",
                    dir.file_name().unwrap().to_string_lossy(),
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    names.sort();
    names.iter().map(|n| request_in(root, n)).collect()
}

/// A built binary of this package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "wh-automatad" => PathBuf::from(env!("CARGO_BIN_EXE_wh-automatad")),
        "wh-automata-trigger" => PathBuf::from(env!("CARGO_BIN_EXE_wh-automata-trigger")),
        other => panic!("no binary {other}"),
    }
}

/// A running `wh-automatad` on `127.0.0.1:0`, with its stderr collected and its service
/// manager notices (`NOTIFY_SOCKET`) received on a socket the test binds.
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub dir: PathBuf,
    /// The readiness notice, as sent.
    pub ready: String,
    notify: std::os::unix::net::UnixDatagram,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Where the daemon sends its notices.
pub enum NotifyAt {
    /// A socket file in the daemon's directory.
    File,
    /// A Linux abstract socket of this name.
    Abstract(String),
}

impl Daemon {
    /// Writes `yaml` as `dir/settings.yaml` and starts the daemon on it.
    pub fn with_settings(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Daemon {
        write(dir, "settings.yaml", yaml);
        Daemon::start(dir, env)
    }

    /// Starts the daemon on `dir/settings.yaml` with `env` added to a minimal environment, and
    /// waits for its readiness notice.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_notifying(dir, env, NotifyAt::File)
    }

    pub fn start_notifying(dir: &Path, env: &[(&str, &str)], at: NotifyAt) -> Daemon {
        Daemon::spawn(dir, env, at, None)
    }

    /// Starts the daemon under `umask` (as a service manager may).
    pub fn start_with_umask(dir: &Path, env: &[(&str, &str)], umask: &str) -> Daemon {
        Daemon::spawn(dir, env, NotifyAt::File, Some(umask))
    }

    fn spawn(dir: &Path, env: &[(&str, &str)], at: NotifyAt, umask: Option<&str>) -> Daemon {
        use std::os::unix::net::UnixDatagram;
        let (notify, target) = match at {
            NotifyAt::File => {
                let path = dir.join(format!("notify-{}.sock", unique()));
                (UnixDatagram::bind(&path).unwrap(), path.to_string_lossy().into_owned())
            }
            NotifyAt::Abstract(name) => (bind_abstract(&name), format!("@{name}")),
        };
        let mut cmd = match umask {
            None => std::process::Command::new(bin("wh-automatad")),
            Some(mask) => {
                let mut sh = std::process::Command::new("sh");
                sh.args(["-c", "umask \"$1\"; shift; exec \"$@\"", "sh", mask]).arg(bin("wh-automatad"));
                sh
            }
        };
        cmd.arg(dir.join("settings.yaml"))
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WH_LOG", "info")
            .env("NOTIFY_SOCKET", target)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start wh-automatad");
        let log = collect(child.stderr.take().unwrap());
        let ready = wait_ready(&mut child, &notify, &log);
        let addr = ready
            .lines()
            .find_map(|l| l.strip_prefix("STATUS=listening on "))
            .unwrap_or_else(|| panic!("no address in the readiness notice {ready:?}"))
            .parse()
            .unwrap();
        Daemon { child, addr, dir: dir.to_path_buf(), ready, notify, log }
    }

    /// The next notice the daemon sends to the service manager (waits up to 20 s).
    pub fn notice(&self) -> String {
        self.notify.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.notify.recv(&mut buf).expect("a notice from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn post(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
        http(self.addr, "POST", path, headers, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        http(self.addr, "GET", path, &[], b"")
    }

    /// Sends a fixture request (its headers and body) to `path`.
    pub fn send(&self, path: &str, req: &Request) -> Reply {
        self.post(path, &req.headers, &req.body)
    }

    /// The job store of this daemon, opened beside it.
    pub fn store(&self) -> wh_automata::store::Store {
        wh_automata::store::Store::open(&self.dir.join("state")).unwrap()
    }

    /// Waits until job `id` is in a final state; returns it.
    pub fn wait_job(&self, id: i64) -> wh_automata::store::Job {
        let store = self.store();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(job) = store.job(id).unwrap() {
                if job.state.is_final() {
                    return job;
                }
            }
            assert!(std::time::Instant::now() < until, "job {id} did not finish:\n{}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }

    /// Stops the daemon (SIGTERM) and returns its whole log, up to its last line.
    pub fn stop_with_log(self) -> String {
        let log = self.log.clone();
        self.stop();
        eventually("the last log line", || log.lock().unwrap().contains("stopped;"));
        let text = log.lock().unwrap().clone();
        text
    }
}

/// A number no other daemon of this test process has.
fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> std::os::unix::net::UnixDatagram {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap()
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(_name: &str) -> std::os::unix::net::UnixDatagram {
    panic!("abstract sockets are Linux-only")
}

/// Collects the lines of `stderr` as they come.
fn collect(stderr: std::process::ChildStderr) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    log
}

/// Waits for the `READY=1` notice; fails the test with the daemon's log if it exits first or
/// takes longer than 20 s.
fn wait_ready(
    child: &mut std::process::Child,
    notify: &std::os::unix::net::UnixDatagram,
    log: &std::sync::Mutex<String>,
) -> String {
    notify.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            let notice = String::from_utf8_lossy(&buf[..n]).into_owned();
            if notice.lines().any(|l| l == "READY=1") {
                return notice;
            }
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            // The stderr reader may still be catching up with the last lines.
            std::thread::sleep(std::time::Duration::from_millis(100));
            panic!("daemon did not become ready ({exited:?}):\n{}", log.lock().unwrap());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The job ids of a `queued` or `duplicate` answer.
    pub fn job_ids(&self) -> Vec<i64> {
        self.json()["jobs"]
            .as_array()
            .map(|a| a.iter().map(|j| j["id"].as_i64().unwrap()).collect())
            .unwrap_or_default()
    }
}

/// A minimal HTTP/1.1 client (one request per connection): the tests need nothing more.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    // The server may answer (413) and close before reading everything: write errors are fine.
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply { status, headers, body: body.to_string() }
}

/// A GitHub push delivery for `body`, signed with `secret`.
pub fn github_push(body: &[u8], secret: &str, delivery: &str) -> Vec<(String, String)> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-GitHub-Event".into(), "push".into()),
        ("X-GitHub-Delivery".into(), delivery.into()),
        ("X-Hub-Signature-256".into(), format!("sha256={}", hex::encode(mac.finalize().into_bytes()))),
    ]
}

/// `github/push.json` with its ref, commits and repo rewritten.
pub fn push_body(repo: &str, git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("github/push.json")).unwrap()).unwrap();
    v["ref"] = git_ref.into();
    v["before"] = before.into();
    v["after"] = after.into();
    v["head_commit"]["id"] = after.into();
    v["commits"][0]["id"] = after.into();
    v["repository"]["full_name"] = repo.into();
    serde_json::to_vec(&v).unwrap()
}

/// Waits until `cond` holds (up to 10 s).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses the `KEY=value` lines that `env` wrote (values without newlines).
pub fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    read(path)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `wh-automata-trigger` in `dir` with `args`, with a clean environment plus `env`.
pub fn trigger(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin("wh-automata-trigger"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run wh-automata-trigger")
}

/// Runs git in `cwd` (failing the test if it fails); returns its trimmed stdout.
pub fn git(cwd: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `wh-automatad --check FILE` in `dir`: its exit status and stderr.
pub fn check_settings(dir: &Path, file: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(bin("wh-automatad"))
        .args(["--check", file])
        .current_dir(dir)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `wh-automatad settings.yaml` in `dir` with `env` and expects it to refuse to start:
/// fails the test with `started` if it is still running after 10 s. Returns the exit status
/// and stderr.
pub fn refuses_to_start(dir: &Path, env: &[(&str, &str)], started: &str) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(bin("wh-automatad"));
    cmd.arg("settings.yaml").current_dir(dir).env_clear().stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{started}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `headers` of a corpus2 request with each placeholder signature (`SIGNED-BY-RUN.PY`) replaced
/// by the real one for `body` and [`SECRET`], in the provider's scheme.
pub fn signed(provider: wh_automata::event::Provider, headers: &HeaderMap, body: &[u8]) -> HeaderMap {
    use hmac::Mac;
    let sha256 = || {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    };
    let mut out = headers.clone();
    for (name, value) in headers {
        if value != "SIGNED-BY-RUN.PY" {
            continue;
        }
        let real = match name.as_str() {
            "x-gitlab-token" => SECRET.to_string(),
            "x-hub-signature-256" => format!("sha256={}", sha256()),
            // GitHub's legacy SHA-1 header is dropped (the SHA-256 one is checked); Bitbucket's
            // only header holds a SHA-256 signature.
            "x-hub-signature" if provider == wh_automata::event::Provider::Bitbucket => {
                format!("sha256={}", sha256())
            }
            "x-hub-signature" => {
                out.remove(name);
                continue;
            }
            _ => sha256(),
        };
        out.insert(name.clone(), HeaderValue::from_str(&real).unwrap());
    }
    out
}

/// A connection from 127.0.0.2 (a chosen source address, on loopback).
pub fn connect_from(source: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Sends `headers` and `body` as one HTTP/1.1 request on `stream`; returns the answer's status
/// line and body (the connection is closed after).
pub fn exchange(mut stream: std::net::TcpStream, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut head = format!(
        "POST /hooks HTTP/1.1\r\nHost: wh\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
