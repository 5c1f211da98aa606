//! Deploying to other hosts through OpenSSH, against real `sshd` instances on loopback ports:
//! the rollout's order, `WH_HOST`, a log section per host, hostile branch names reaching the
//! host as data, a failing host stopping the rollout, a wrong pinned key refused with nothing
//! run; and `--check` on the hosts' settings.

use wh_automata::store::JobState;

use crate::common::{check_settings, github_push, push_body, Daemon, SECRET};
use crate::sshd::{client_key, Sshd};

const TOKEN: &str = "read-token-0123456789";

fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap().name
}

fn host(name: &str, sshd: &Sshd, key: &str, dir: &std::path::Path) -> String {
    format!(
        "  {name}: {{ ssh: \"{}@127.0.0.1:{}\", host_key: \"{key}\", identity_file: id_ed25519, dir: \"{}\" }}\n",
        me(),
        sshd.port,
        dir.display()
    )
}

/// Two sshd instances that take the test's key (`id_ed25519` in `dir`), and a directory for each.
fn two_hosts(dir: &std::path::Path) -> (Sshd, Sshd, std::path::PathBuf, std::path::PathBuf) {
    let (_, public) = client_key(dir);
    let (web1, web2) = (Sshd::start(dir, "web1", &public), Sshd::start(dir, "web2", &public));
    let (d1, d2) = (dir.join("srv1"), dir.join("srv2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    (web1, web2, d1, d2)
}

fn push(daemon: &Daemon, branch: &str, commit: char, delivery: &str) -> (i64, Vec<u8>) {
    let body = push_body(
        "acme/site",
        &format!("refs/heads/{branch}"),
        &"0".repeat(40),
        &commit.to_string().repeat(40),
    );
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, delivery), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    (reply.job_ids()[0], body)
}

#[test]
fn a_rolling_deploy_over_two_hosts_and_a_failing_host_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let (web1, web2, d1, d2) = two_hosts(dir.path());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\napi:\n  tokens: [{{ name: t, token: {TOKEN} }}]\nhosts:\n{}{}host_groups:\n  web: [web1, web2]\nentries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [web]\n    on_failure: rollback\n    actions:\n      - 'printf \"%s %s\\n\" \"$WH_HOST\" \"$PWD\" >> ../order'\n      - 'printf %s \"$WH_BRANCH\" > branch; cp \"$WH_PAYLOAD\" payload.json'\n      - 'case \"$WH_AFTER\" in b*) [ \"$WH_HOST\" = web1 ] && exit 7;; esac; true'\n",
        host("web1", &web1, &web1.host_key, &d1),
        host("web2", &web2, &web2.host_key, &d2),
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    // A branch name that would run commands if a shell read it as code, here or there.
    let hostile = "x$(touch${IFS}pwned)`touch${IFS}pwned2`'\"|;&<>";
    let (id, body) = push(&daemon, hostile, 'a', "r1");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Succeeded, "{log}");
    let order = std::fs::read_to_string(dir.path().join("order")).unwrap();
    assert_eq!(order, format!("web1 {}\nweb2 {}\n", d1.display(), d2.display()));
    for d in [&d1, &d2] {
        assert_eq!(std::fs::read_to_string(d.join("branch")).unwrap(), hostile, "byte for byte");
        assert_eq!(std::fs::read(d.join("payload.json")).unwrap(), body, "the payload reached the host");
    }
    let stray: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.contains("pwned")).collect();
    assert!(stray.is_empty(), "nothing executed: {stray:?}");
    for section in
        ["host web1 (", "host web2 (", "web1: action 1: printf", "web2: action 3 ok", "host web2: succeeded"]
    {
        assert!(log.contains(section), "{section:?} in:\n{log}");
    }
    assert!(log.find("host web1 (").unwrap() < log.find("host web2 (").unwrap());
    let states = |id: i64| -> Vec<(String, String, Option<usize>, Option<i32>)> {
        let hosts = daemon.store().job_hosts(id).unwrap();
        hosts.into_iter().map(|h| (h.host, h.state, h.action, h.exit_code)).collect()
    };
    let s = |a: &str, b: &str, c: Option<usize>, d: Option<i32>| (a.to_string(), b.to_string(), c, d);
    assert_eq!(states(id), [s("web1", "succeeded", None, Some(0)), s("web2", "succeeded", None, Some(0))]);

    // web1 fails (max_fail 0): web2 never runs, the job fails with web1's status.
    let (id, _) = push(&daemon, "main", 'b', "r2");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!((job.state, job.exit_code), (JobState::Failed, Some(7)), "{log}");
    assert!(log.contains("rollout stopped: web1 failed (max_fail 0); not run on web2"), "{log}");
    assert_eq!(states(id), [s("web1", "failed", Some(3), Some(7)), s("web2", "not_run", None, None)]);
    // on_failure: rollback returns the hosts that moved (web1 alone), to the last release.
    let rollback = id + 1;
    let job = daemon.wait_job(rollback);
    let rlog = std::fs::read_to_string(daemon.store().log_path(rollback)).unwrap_or_default();
    assert_eq!((job.state, job.trigger.as_str()), (JobState::Succeeded, "rollback"), "{rlog}");
    assert_eq!(states(rollback), [s("web1", "succeeded", None, Some(0))], "{rlog}");
    assert!(rlog.contains("rollback: on the hosts the job before it moved, last first: web1"), "{rlog}");
    let order = std::fs::read_to_string(dir.path().join("order")).unwrap();
    assert_eq!(
        order,
        format!("web1 {0}\nweb2 {1}\nweb1 {0}\nweb1 {0}\n", d1.display(), d2.display()),
        "web2 untouched by the failed push and by its rollback"
    );
    // The API shows them with the job.
    let headers = vec![("Authorization".to_string(), format!("Bearer {TOKEN}"))];
    let reply = crate::common::http(daemon.addr, "GET", &format!("/api/v1/jobs/{id}"), &headers, b"");
    let hosts = reply.json()["hosts"].clone();
    assert_eq!(hosts[0]["host"], "web1");
    assert_eq!(
        (hosts[0]["state"].as_str(), hosts[0]["action"].as_u64()),
        (Some("failed"), Some(3)),
        "{}",
        reply.body
    );
    assert_eq!(hosts[1]["state"], "not_run");
}

/// `kill -9` of the daemon while a host runs the entry's action, and a start: the job runs
/// again from its first action on each host, what the dead run left there is stopped first,
/// and two runs never overlap on a host.
#[test]
fn kill_9_mid_rollout_never_leaves_two_runs_on_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let (web1, web2, d1, d2) = two_hosts(dir.path());
    // Each run says when it starts and ends; one that starts while another runs says so.
    // (A run that is killed leaves its pid in `running`: alive, not a zombie, it is an overlap.)
    let action = "if [ -s running ]; then s=$(cut -d\\  -f3 /proc/$(cat running)/stat 2>/dev/null); if [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo overlap >> events; fi; fi; echo $$ > running; echo \"start $WH_HOST\" >> events; sleep 2; echo \"end $WH_HOST\" >> events; rm running";
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nhosts:\n{}{}entries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [web1, web2]\n    actions: ['{action}']\n",
        host("web1", &web1, &web1.host_key, &d1),
        host("web2", &web2, &web2.host_key, &d2),
    );
    let mut daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let (id, _) = push(&daemon, "main", 'a', "x1");
    crate::common::eventually("web1 runs", || d1.join("running").exists());
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    // The run on web1 is left going (its ssh outlived the daemon); the next start stops it.
    let daemon = Daemon::start(dir.path(), &[("SECRET", SECRET)]);
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Succeeded, "{log}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let e1 = std::fs::read_to_string(d1.join("events")).unwrap();
    let e2 = std::fs::read_to_string(d2.join("events")).unwrap();
    assert_eq!(e1, "start web1\nstart web1\nend web1\n", "the dead run stopped, then one whole run");
    assert_eq!(e2, "start web2\nend web2\n");
    assert!(log.contains("stopping what an interrupted run left here"), "{log}");
    let hosts: Vec<String> =
        daemon.store().job_hosts(id).unwrap().into_iter().map(|h| h.host + " " + &h.state).collect();
    assert_eq!(hosts, ["web1 succeeded", "web2 succeeded"], "the run again, recorded once");
}

/// A host that accepts the connection and never answers is cut at its connect_timeout; one whose
/// connection drops during an action fails that action; either way, said, and the rollout's
/// rules apply (the host after it is not touched).
#[test]
fn a_hanging_host_and_a_dropped_connection_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (web1, web2, d1, d2) = two_hosts(dir.path());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let _open: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    // The action kills the sshd process that serves its session: the connection drops.
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nhosts:\n{}{}  hang: {{ ssh: \"{}@127.0.0.1:{port}\", host_key: \"{}\", connect_timeout: 1s }}\nentries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [hang, web2]\n    actions: ['touch ran']\n  drop:\n    secret: ${{SECRET}}\n    hosts: [web1, web2]\n    actions: ['touch ran; sleep 0.5; kill -9 $(ps -o ppid= -p $PPID)']\n",
        host("web1", &web1, &web1.host_key, &d1),
        host("web2", &web2, &web2.host_key, &d2),
        me(),
        web1.host_key,
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let started = std::time::Instant::now();
    let (id, _) = push(&daemon, "main", 'a', "h1");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{log}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "cut at connect_timeout: {:?}",
        started.elapsed()
    );
    assert!(log.contains("host hang: no action was seen to start: ") && log.contains("timed out"), "{log}");
    assert!(log.contains("not run on web2") && !d2.join("ran").exists(), "{log}");
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"b".repeat(40));
    let reply = daemon.post("/hooks/drop", &github_push(&body, SECRET, "h2"), &body);
    let id = reply.job_ids()[0];
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{log}");
    assert!(log.contains("web1: the connection ended during action 1"), "{log}");
    assert!(d1.join("ran").exists() && !d2.join("ran").exists(), "{log}");
}

/// `rollout.parallel`: both hosts at once (their runs overlap), each host's section whole in
/// the job's log, in order.
#[test]
fn hosts_deploy_at_once_with_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let (web1, web2, d1, d2) = two_hosts(dir.path());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nhosts:\n{}{}entries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [web1, web2]\n    rollout: {{ parallel: 100% }}\n    actions: ['date +%s%N > started; echo \"on $WH_HOST\"; sleep 1; date +%s%N > ended']\n",
        host("web1", &web1, &web1.host_key, &d1),
        host("web2", &web2, &web2.host_key, &d2),
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let (id, _) = push(&daemon, "main", 'a', "p1");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Succeeded, "{log}");
    let time = |d: &std::path::Path, f: &str| -> u128 {
        std::fs::read_to_string(d.join(f)).unwrap().trim().parse().unwrap()
    };
    assert!(
        time(&d2, "started") < time(&d1, "ended") && time(&d1, "started") < time(&d2, "ended"),
        "they overlap"
    );
    assert!(log.contains("at once: web1, web2"), "{log}");
    let (a, b) = (log.find("host web1 (").unwrap(), log.find("host web2 (").unwrap());
    let on1 = log.find("on web1").unwrap();
    assert!(a < on1 && on1 < b, "web1's section whole, then web2's: {log}");
    let hosts: Vec<String> =
        daemon.store().job_hosts(id).unwrap().into_iter().map(|h| h.host + " " + &h.state).collect();
    assert_eq!(hosts, ["web1 succeeded", "web2 succeeded"]);
}

/// `verify: run:` runs on each host after its actions, tried until `within`: it passes on
/// web1 and not on web2, and the job fails as a failed check.
#[test]
fn a_run_check_is_tried_on_each_host() {
    let dir = tempfile::tempdir().unwrap();
    let (web1, web2, d1, d2) = two_hosts(dir.path());
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nhosts:\n{}{}entries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [web1, web2]\n    actions: ['touch deployed']\n    verify: {{ run: 'touch checked; [ \"$WH_HOST\" = web1 ]', within: 2s }}\n",
        host("web1", &web1, &web1.host_key, &d1),
        host("web2", &web2, &web2.host_key, &d2),
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let (id, _) = push(&daemon, "main", 'a', "v1");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{log}");
    assert!(job.reason.as_deref().unwrap_or_default().contains("verify"), "{:?}", job.reason);
    assert!(
        log.contains("web1: action 2: verify (on the host)") && log.contains("verify: passed (try 1)"),
        "{log}"
    );
    assert!(log.contains("verify: did not pass within 2s"), "{log}");
    assert!(d1.join("checked").exists() && d2.join("checked").exists(), "the check ran on the hosts");
    assert!(!dir.path().join("checked").exists(), "not here");
    let hosts: Vec<String> =
        daemon.store().job_hosts(id).unwrap().into_iter().map(|h| h.host + " " + &h.state).collect();
    assert_eq!(hosts, ["web1 succeeded", "web2 failed"]);
}

/// Through a jump host (another host of `hosts:`): its key is pinned like the target's; with a
/// wrong one, nothing runs.
#[test]
fn a_jump_host_is_pinned_too() {
    let dir = tempfile::tempdir().unwrap();
    let (bastion, web, _, d2) = two_hosts(dir.path());
    let yaml = |bastion_key: &str| {
        format!(
            "server: {{ listen: 127.0.0.1:0 }}\nhosts:\n  bastion: {{ ssh: \"{}@127.0.0.1:{}\", host_key: \"{bastion_key}\", identity_file: id_ed25519 }}\n  web: {{ ssh: \"{}@127.0.0.1:{}\", host_key: \"{}\", identity_file: id_ed25519, jump: bastion, dir: \"{}\" }}\nentries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [web]\n    actions: ['echo \"$SSH_CONNECTION\" > via']\n",
            me(),
            bastion.port,
            me(),
            web.port,
            web.host_key,
            d2.display()
        )
    };
    // The bastion's key given wrong first: refused, nothing runs on web.
    let daemon = Daemon::with_settings(dir.path(), &yaml(&web.host_key), &[("SECRET", SECRET)]);
    let (id, _) = push(&daemon, "main", 'a', "j1");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{log}");
    assert!(log.contains("Host key verification failed"), "{log}");
    assert!(!d2.join("via").exists());
    std::fs::write(dir.path().join("settings.yaml"), yaml(&bastion.host_key)).unwrap();
    crate::common::eventually("the settings are reloaded", || daemon.log().contains("reloaded"));
    let (id, _) = push(&daemon, "main", 'b', "j2");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Succeeded, "{log}");
    assert!(d2.join("via").exists(), "{log}");
    // A jump that is not a host of hosts:, or one with a jump of its own: refused by --check.
    let bad = yaml(&bastion.host_key).replace("jump: bastion", "jump: nowhere");
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let (code, said) = check_settings(dir.path(), "bad.yaml");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("hosts.web: jump: \"nowhere\" is not another host of hosts:"), "{said}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

#[test]
fn a_wrong_pinned_key_is_refused_and_nothing_runs_there() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = client_key(dir.path());
    let (good, other) = (Sshd::start(dir.path(), "good", &public), Sshd::start(dir.path(), "other", &public));
    let srv = dir.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    // `good`'s address with `other`'s key: a machine in the middle, as far as ssh can tell.
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0 }}\nhosts:\n{}entries:\n  site:\n    secret: ${{SECRET}}\n    hosts: [web1]\n    actions: ['touch ran']\n",
        host("web1", &good, &other.host_key, &srv),
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[("SECRET", SECRET)]);
    let (id, _) = push(&daemon, "main", 'a', "k1");
    let job = daemon.wait_job(id);
    let log = std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{log}");
    assert!(
        log.contains("host web1: no action was seen to start: ")
            && log.contains("Host key verification failed"),
        "{log}"
    );
    assert!(!srv.join("ran").exists(), "nothing ran on a host whose key is not the pinned one");
    // The right key, from a known_hosts file: it runs.
    std::fs::write(dir.path().join("web1.known"), format!("[127.0.0.1]:{} {}\n", good.port, good.host_key))
        .unwrap();
    let pinned = format!("host_key: \"{}\"", other.host_key);
    assert!(yaml.contains(&pinned), "{yaml}");
    std::fs::write(dir.path().join("settings.yaml"), yaml.replace(&pinned, "known_hosts: web1.known"))
        .unwrap();
    crate::common::eventually("the settings are reloaded", || daemon.log().contains("reloaded"));
    let (id, _) = push(&daemon, "main", 'c', "k2");
    assert_eq!(
        daemon.wait_job(id).state,
        JobState::Succeeded,
        "{}",
        std::fs::read_to_string(daemon.store().log_path(id)).unwrap_or_default()
    );
    assert!(srv.join("ran").exists());
}

#[test]
fn check_says_what_is_wrong_with_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "hosts:\n  web1: { ssh: deploy@10.0.0.1, host_key: ssh-ed25519 AAAA }\n  open: { ssh: deploy@10.0.0.2 }\n  web2: { ssh: \"-oProxyCommand=x\", host_key: ssh-ed25519 AAAA }\nhost_groups:\n  web: [web1, web]\nentries:\n  site:\n    secret: s\n    hosts: [web3]\n    rollout: { parallel: 0 }\n    actions: [\"true\"]\n";
    std::fs::write(dir.path().join("settings.yaml"), yaml).unwrap();
    let (code, said) = check_settings(dir.path(), "settings.yaml");
    assert_eq!(code, Some(1), "{said}");
    for expected in [
        "settings.yaml:1: hosts.open: its host key is not pinned",
        "settings.yaml:1: hosts.web2: ssh: user@host[:port]",
        "settings.yaml:5: host_groups.web: names itself (web → web)",
        "entry \"site\": hosts: \"web3\" is not a host",
        "rollout.parallel: 0: a number of hosts (1 or more) or a share of them",
    ] {
        assert!(said.contains(expected), "{expected:?} in:\n{said}");
    }
}
