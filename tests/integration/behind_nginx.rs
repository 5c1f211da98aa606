//! Behind a real nginx (the reverse proxy most users run): every connection to the daemon comes
//! from nginx's address, so a burst of deliveries is not cut at `max_connections_per_address`
//! (nginx would answer the host 502), and the client nginx names is the one `allow_from` sees.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{github_push, http, push_body, Daemon};
use crate::standin::free_addr;

/// A real nginx on a free loopback port, proxying `/hooks` to `upstream` as contrib/nginx.conf
/// does, with a pool of kept-alive upstream connections. `None` when nginx is not installed.
fn nginx(dir: &Path, upstream: std::net::SocketAddr) -> Option<(Child, std::net::SocketAddr)> {
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return None;
    }
    let addr = free_addr();
    let d = dir.display();
    let user = if nix::unistd::Uid::effective().is_root() { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         upstream wh {{ server {upstream}; keepalive 64; }}\n  server {{\n    listen {addr};\n    client_max_body_size 1m;\n    \
         location /hooks {{\n      proxy_pass http://wh;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header Forwarded \"\";\n    }}\n  }}\n}}\n"
    );
    Some((start(dir, &conf, addr), addr))
}

#[test]
fn a_burst_through_nginx_is_answered_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, max_connections_per_address: 4, queue: 500 }\nentries:\n  site:\n    \
                secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let proxy_dir = tempfile::tempdir().unwrap();
    let Some((mut proxy, addr)) = nginx(proxy_dir.path(), daemon.addr) else { return };
    // 48 deliveries at once, each to its own branch (none supersedes another).
    let answers: Vec<u16> = (0..48)
        .map(|i| {
            std::thread::spawn(move || {
                let body = push_body(
                    "acme/site",
                    &format!("refs/heads/b{i}"),
                    &"0".repeat(40),
                    &format!("{:040x}", i + 1),
                );
                http(addr, "POST", "/hooks", &github_push(&body, "s", &format!("burst-{i}")), &body).status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let _ = proxy.kill();
    let _ = proxy.wait();
    let refused = answers.iter().filter(|s| **s != 202).count();
    assert_eq!(refused, 0, "answers through nginx: {answers:?}");
    // The client nginx names is the one the log shows.
    assert!(daemon.log().contains("client=127.0.0.1"), "{}", daemon.log());
}

/// The shipped `contrib/nginx.conf` (its TLS left out: the test speaks plain HTTP to it), run by
/// a real nginx in front of `upstream`.
fn shipped_nginx(dir: &Path, upstream: std::net::SocketAddr) -> Option<(Child, std::net::SocketAddr)> {
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return None;
    }
    let addr = free_addr();
    let site = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/nginx.conf"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("ssl_certificate") && !l.contains("listen [::]"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("listen 443 ssl;", &format!("listen {addr};"))
        .replace("127.0.0.1:8970", &upstream.to_string());
    let d = dir.display();
    let user = if nix::unistd::Uid::effective().is_root() { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    Some((start(dir, &conf, addr), addr))
}

/// Through the shipped nginx snippet, a job's log arrives as events while the job runs, not
/// buffered to its end (the snippet's `proxy_buffering off`, and the daemon's
/// `X-Accel-Buffering: no` for a proxy configured otherwise).
#[test]
fn the_job_api_streams_through_the_shipped_nginx_snippet() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let token = "read-token-0123456789";
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\napi:\n  tokens:\n    - {{ name: ci, token: {token} }}\nentries:\n  site:\n    \
         secret: s\n    actions: ['echo first; sleep 1.5; echo last']\n"
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let proxy_dir = tempfile::tempdir().unwrap();
    let Some((mut proxy, addr)) = shipped_nginx(proxy_dir.path(), daemon.addr) else { return };
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"1".repeat(40));
    let reply = http(addr, "POST", "/hooks/site", &github_push(&body, "s", "n1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.job_ids()[0];
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /api/v1/jobs/{id}/log HTTP/1.1\r\nHost: hooks.example.com\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let mut first_at = None;
    let mut ended = false;
    let (mut id_now, mut first_id) = (String::new(), String::new());
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(event_id) = line.strip_prefix("id: ") {
            id_now = event_id.trim().to_string();
        }
        if line.contains(" first\"") && first_at.is_none() {
            first_at = Some(started.elapsed());
            first_id = id_now.clone();
        }
        if line.starts_with("event: end") {
            ended = true;
        }
        line.clear();
    }
    let total = started.elapsed();
    let first_at = first_at.expect("the first line came through");
    assert!(ended, "the end event came through");
    assert!(
        total - first_at > Duration::from_millis(700),
        "not buffered: first at {first_at:?} of {total:?}"
    );
    // A reconnect with Last-Event-ID resumes after that line, through nginx too.
    let resumed = {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /api/v1/jobs/{id}/log HTTP/1.1\r\nHost: hooks.example.com\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\nLast-Event-ID: {first_id}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    assert!(!first_id.is_empty());
    assert!(!resumed.contains(" first\"") && resumed.contains(" last\""), "{resumed}");
    assert!(resumed.contains("event: end"), "{resumed}");
    // `?wait=` through it: answered when the job has ended, not cut by a proxy timeout.
    let body = push_body("acme/site", "refs/heads/main", &"1".repeat(40), &"2".repeat(40));
    let reply = http(addr, "POST", "/hooks/site", &github_push(&body, "s", "n2"), &body);
    let second = reply.job_ids()[0];
    let started = Instant::now();
    let auth = vec![("Authorization".to_string(), format!("Bearer {token}"))];
    let reply = http(addr, "GET", &format!("/api/v1/jobs/{second}?wait=30s"), &auth, b"");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("\"state\":\"succeeded\""), "{}", reply.body);
    assert!(started.elapsed() > Duration::from_millis(1000), "it waited for the job");
    // The page passes through, and a sign-in from the page's own origin is taken.
    let reply = http(addr, "GET", "/ui/", &[], b"");
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-security-policy").is_some());
    let origin = vec![("Origin".to_string(), format!("http://{addr}"))];
    let reply = http(addr, "POST", "/ui/login", &origin, format!("token={token}").as_bytes());
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(reply.header("set-cookie").unwrap().starts_with("wh_session="));
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// Starts nginx on `conf` (written into `dir`) and waits until it answers at `addr`.
fn start(dir: &Path, conf: &str, addr: std::net::SocketAddr) -> Child {
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-g", "daemon off;", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < until,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
