//! `allow_from:`: who may send webhooks, by address, behind trusted proxies; refused with 403
//! before the body is read.

use std::time::{Duration, Instant};

use crate::common::{connect_from, exchange, github_push, push_body, Daemon};

fn push(id: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let body = push_body("acme/site", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    (github_push(&body, "s", id), body)
}

#[test]
fn only_allowed_addresses_may_deliver_and_strangers_are_refused_before_their_body() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, allow_from: [127.0.0.2/32, \"192.30.252.0/22\"], trusted_proxies: [127.0.0.3] }\n\
                entries:\n  site:\n    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);

    let (headers, body) = push("af-1");
    let (status, answer) = exchange(connect_from("127.0.0.2", daemon.addr), &headers, &body);
    assert_eq!(status, 202, "{answer}");

    // From 127.0.0.1: 403 at once, though the body never comes (a stranger's slow body costs
    // nothing: it is not waited for).
    let started = Instant::now();
    let mut stream = connect_from("127.0.0.1", daemon.addr);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (status, answer) = {
        use std::io::{Read, Write};
        let head = format!(
            "POST /hooks HTTP/1.1\r\nHost: wh\r\nContent-Length: 100000\r\n{}\r\n",
            headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect::<String>()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut raw = vec![0u8; 4096];
        let n = stream.read(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw[..n]).into_owned();
        (text.split_whitespace().nth(1).unwrap().to_string(), text)
    };
    assert_eq!(status, "403", "{answer}");
    assert!(answer.contains("requests from 127.0.0.1 are not allowed"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Behind a trusted proxy, the client it names counts; an untrusted peer's header does not.
    let forwarded = |ip: &str| {
        let (mut h, b) = push(&format!("af-{ip}"));
        h.push(("X-Forwarded-For".into(), ip.into()));
        (h, b)
    };
    let (h, b) = forwarded("192.30.253.17");
    assert_eq!(exchange(connect_from("127.0.0.3", daemon.addr), &h, &b).0, 202);
    let (h, b) = forwarded("203.0.113.9");
    let (status, answer) = exchange(connect_from("127.0.0.3", daemon.addr), &h, &b);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("203.0.113.9"), "{answer}");
    let (h, b) = forwarded("192.30.253.18");
    assert_eq!(
        exchange(connect_from("127.0.0.4", daemon.addr), &h, &b).0,
        403,
        "an untrusted peer's header is its word"
    );
    assert_eq!(daemon.store().recent(10).unwrap().len(), 2, "refused requests recorded nothing");
}

#[test]
fn an_entry_allow_list_narrows_it_only() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0 }\nentries:\n  internal:\n    match: { repo: acme/site }\n    secret: s\n    allow_from: [127.0.0.2]\n    actions: [\"true\"]\n\
                \x20 public:\n    match: { repo: acme/other }\n    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let (headers, body) = push("ea-1");
    // Routed or by name, `internal` takes deliveries from 127.0.0.2 only.
    assert_eq!(exchange(connect_from("127.0.0.1", daemon.addr), &headers, &body).0, 403);
    assert_eq!(exchange(connect_from("127.0.0.2", daemon.addr), &headers, &body).0, 202);
    let named = daemon.post("/hooks/internal", &push("ea-2").0, &body);
    assert_eq!(named.status, 403, "{}", named.body);
    // `public` takes them from anywhere.
    let other = push_body("acme/other", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    let reply = daemon.post("/hooks", &github_push(&other, "s", "ea-3"), &other);
    assert_eq!(reply.status, 202, "{}", reply.body);
    // A list that is not one is refused at load.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "server: { allow_from: [10.0.0.0/40, github] }\nentries: {}\n",
    )
    .unwrap();
    let (code, out) = crate::common::check_settings(dir.path(), "bad.yaml");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("10.0.0.0/40") && out.contains("\"github\" is not an address"), "{out}");
}

/// The README's one-line refresh of GitHub's hook ranges writes a rule file that `allow_from`
/// names; the daemon reloads it when it changes. (GitHub's `meta` is replaced by a saved copy
/// of its `hooks` list: no network here.)
#[test]
fn the_readme_refresh_of_github_ranges_feeds_allow_from() {
    let dir = tempfile::tempdir().unwrap();
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with("curl -fsS https://api.github.com/meta")).unwrap();
    let meta = r#"{"verifiable_password_authentication":false,"hooks":["192.30.252.0/22","185.199.108.0/22","140.82.112.0/20","143.55.64.0/20","2a0a:a440::/29","2606:50c0::/32"],"web":["140.82.112.0/20"]}"#;
    std::fs::write(dir.path().join("meta.json"), meta).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let command = line
        .replace("curl -fsS https://api.github.com/meta", "cat meta.json")
        .replace("/etc/wh-automata/", &format!("{}/", dir.path().display()));
    let out =
        std::process::Command::new("sh").arg("-c").arg(&command).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));

    let yaml = "server: { listen: 127.0.0.1:0, allow_from: [github-hooks], trusted_proxies: [127.0.0.1] }\ninclude: [rules/*.yaml]\n\
                entries:\n  site:\n    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let from = |ip: &str, id: &str| {
        let (mut h, b) = push(id);
        h.push(("X-Forwarded-For".into(), ip.into()));
        daemon.post("/hooks", &h, &b).status
    };
    assert_eq!(from("140.82.115.3", "gh-1"), 202);
    assert_eq!(from("2a0a:a440::5", "gh-2"), 202);
    assert_eq!(from("203.0.113.9", "gh-3"), 403);
    // A newer list (here: GitHub adds a range) is picked up without a restart.
    std::fs::write(
        dir.path().join("meta.json"),
        meta.replace("\"192.30.252.0/22\"", "\"192.30.252.0/22\",\"203.0.113.0/24\""),
    )
    .unwrap();
    let out =
        std::process::Command::new("sh").arg("-c").arg(&command).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success());
    crate::common::eventually("the new list", || from("203.0.113.9", "gh-4") == 202);
}

/// The trusted proxy writes `Forwarded`: a client's own `X-Forwarded-For`, passed through
/// untouched, does not name the client; a hop that cannot be read ends the walk (the one before
/// it is not believed).
#[test]
fn a_forged_forwarding_header_does_not_pass_allow_from() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        "server: { listen: 127.0.0.1:0, allow_from: [\"192.30.252.0/22\"], trusted_proxies: [127.0.0.3] }\n\
                entries:\n  site:\n    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let with = |id: &str, extra: &[(&str, &str)]| {
        let (mut h, b) = push(id);
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        exchange(connect_from("127.0.0.3", daemon.addr), &h, &b)
    };
    let (status, answer) =
        with("fw-1", &[("X-Forwarded-For", "192.30.252.9"), ("Forwarded", "for=203.0.113.5;proto=https")]);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("203.0.113.5"), "{answer}");
    let (status, answer) = with("fw-2", &[("Forwarded", "for=\"192.30.252.9\";proto=https")]);
    assert_eq!(status, 202, "{answer}");
    for (i, junk) in
        ["192.30.252.9, not-an-address", "192.30.252.9, unknown", "192.30.252.9,"].iter().enumerate()
    {
        let (status, answer) = with(&format!("fw-x{i}"), &[("X-Forwarded-For", junk)]);
        assert_eq!(status, 403, "X-Forwarded-For: {junk}: {answer}");
    }
    let (status, answer) = with("fw-3", &[("Forwarded", "for=192.30.252.9, for=_hidden")]);
    assert_eq!(status, 403, "{answer}");
}

/// Every connection from nginx comes from its address: a burst of more than
/// `max_connections_per_address` through a trusted proxy is served (the proxy limits its
/// clients itself), while any other address keeps its share.
#[test]
fn a_burst_through_a_trusted_proxy_is_not_cut_at_the_per_address_share() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0, max_connections_per_address: 4, header_timeout: 60s }\n\
                entries:\n  site:\n    secret: s\n    actions: [\"true\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    // Ten connections held open from the proxy's address (127.0.0.1, trusted by default).
    let held: Vec<_> = (0..10).map(|_| connect_from("127.0.0.1", daemon.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (h, b) = push("burst-1");
    let (status, answer) = exchange(connect_from("127.0.0.1", daemon.addr), &h, &b);
    assert_eq!(status, 202, "the eleventh connection from the proxy: {answer}");
    for (i, c) in held.iter().enumerate() {
        use std::io::Read;
        let mut c: &std::net::TcpStream = c;
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(c.read(&mut [0u8; 1]).is_err(), "held connection {i} was closed");
    }
    // Another address still has its share of four.
    let others: Vec<_> = (0..4).map(|_| connect_from("127.0.0.2", daemon.addr)).collect();
    let (h, b) = push("burst-2");
    let (status, _) = exchange(connect_from("127.0.0.2", daemon.addr), &h, &b);
    assert_eq!(status, 0, "the fifth from 127.0.0.2 is closed without an answer");
    drop((held, others));
}
