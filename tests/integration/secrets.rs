//! Secrets kept out of logs: every value the settings know to be secret, printed by an action
//! (even cut between two writes), is `***` in the job's log, on its page and in the message's
//! log tail; and secrets read from systemd credentials (`${credential:ID}`), as systemd hands
//! them over with `$CREDENTIALS_DIRECTORY`.

use std::time::Duration;

use crate::common::{github_push, push_body, Daemon};
use crate::standin::{always_ok, StandIn};

#[test]
fn secrets_an_action_prints_are_masked_in_logs_pages_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::start(dir.path(), always_ok());
    // The credentials systemd would hand over, in a directory of their own.
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("site-secret"), "hook-secret-from-a-credential\n").unwrap();
    std::fs::write(creds.join("status-token"), "ghp_token-from-a-credential").unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DB_PASSWORD=db-password-in-env-file\nPLAIN=not-a-secret-value\n",
    )
    .unwrap();
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, ca_file: test-ca.pem, public_url: https://deploy.example.com }}\n\
         notify:\n  relay: {{ webhook: \"{url}/relay/hook-url-token-part\", secret: relay-signing-secret }}\n\
         entries:\n  site:\n    match: {{ repo: acme/site }}\n    secret: ${{credential:site-secret}}\n    \
         env: {{ API_TOKEN: \"${{API_TOKEN}}\", LITERAL: literal-value-in-settings, SHORT: \"${{SHORT}}\" }}\n    \
         env_file: .env\n    secret_env: [DB_PASSWORD]\n    \
         status: {{ token: \"${{credential:status-token}}\", api_url: \"{url}/gh\" }}\n    \
         notify: {{ to: [relay], on: [failed], log_tail: 20 }}\n    actions:\n      - \
         \"printf 'api=%s\\\\n' \\\"$API_TOKEN\\\"; printf 'split=%s' \\\"$(printf %s \\\"$API_TOKEN\\\" | cut -c1-6)\\\"; sleep 0.3; \
         printf '%s\\\\n' \\\"$(printf %s \\\"$API_TOKEN\\\" | cut -c7-)\\\"; echo db=$DB_PASSWORD plain=$PLAIN short=$SHORT literal=$LITERAL; \
         echo hook=hook-secret-from-a-credential status=ghp_token-from-a-credential relay=relay-signing-secret url={url}/relay/hook-url-token-part; exit 3\"\n",
        url = standin.url()
    );
    let env = [
        ("API_TOKEN", "api-token-from-the-environment"),
        ("SHORT", "main"),
        ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
    ];
    let daemon = Daemon::with_settings(dir.path(), &yaml, &env);
    let body = push_body("acme/site", "refs/heads/main", &"0".repeat(40), &"5".repeat(40));
    // Signed with the secret read from the credential.
    let reply = daemon.post("/hooks", &github_push(&body, "hook-secret-from-a-credential", "sec-1"), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let job = daemon.wait_job(reply.job_ids()[0]);
    let log = std::fs::read_to_string(dir.path().join(format!("state/logs/{}.log", job.id))).unwrap();
    let secrets = [
        "api-token-from-the-environment",
        "db-password-in-env-file",
        "hook-secret-from-a-credential",
        "ghp_token-from-a-credential",
        "relay-signing-secret",
        "hook-url-token-part",
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    for line in [
        "api=***",
        "split=***",
        "db=*** plain=not-a-secret-value short=main literal=literal-value-in-settings",
        "hook=*** status=*** relay=*** url=***",
    ] {
        assert!(log.contains(line), "{line} in:\n{log}");
    }
    let key = daemon.store().page_key(job.id).unwrap();
    let page = crate::common::http(daemon.addr, "GET", &format!("/jobs/{}?key={key}", job.id), &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("api=***"), "{}", page.body);
    let seen = standin.wait("the failure's message", |s| s.iter().any(|r| r.path.starts_with("/relay")));
    std::thread::sleep(Duration::from_millis(200));
    for request in seen.iter().filter(|r| r.path.starts_with("/relay")) {
        let text = String::from_utf8_lossy(&request.body);
        assert!(text.contains("api=***"), "the log tail is in the message: {text}");
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in the message: {text}");
        }
    }
    // A dry run shows the environment as a log would: secrets masked.
    let out = crate::common::trigger(dir.path(), &["settings.yaml", "site", "--dry-run"], &env);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(plan.contains("API_TOKEN=***") && plan.contains("DB_PASSWORD=***"), "{plan}");
    assert!(plan.contains("PLAIN=not-a-secret-value") && plan.contains("SHORT=main"), "{plan}");
    for secret in secrets {
        assert!(!plan.contains(secret), "{secret} in the dry run: {plan}");
    }
    // The status went with the token read from the credential.
    let status = seen.iter().find(|r| r.path.starts_with("/gh/")).expect("a status");
    assert_eq!(status.header("authorization"), "Bearer ghp_token-from-a-credential");
}

#[test]
fn a_missing_credential_is_a_clear_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "entries:\n  site:\n    secret: ${credential:nope}\n    actions: [\"true\"]\n",
    )
    .unwrap();
    let (code, stderr) = crate::common::check_settings(dir.path(), "settings.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("entry \"site\"") && stderr.contains("CREDENTIALS_DIRECTORY is not set"),
        "{stderr}"
    );
}
