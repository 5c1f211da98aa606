//! The page for people (`/ui/`) in a real browser (Debian's headless chromium through
//! chromedriver) against the real daemon: sign in, the entries, a job's log growing while it
//! runs, a rollback pressed, sign out; hostile branch names and commit messages shown as text;
//! and, over plain HTTP, the refusals a browser would not show: a POST from another origin, a
//! form without the session's CSRF token, a `read` token pressing run.

use std::time::Duration;

use wh_automata::store::JobState;

use crate::common::{github_push, http, push_body, Daemon, Reply, SECRET};
use crate::webdriver::Browser;

const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";

const SETTINGS: &str = "server: { listen: 127.0.0.1:0 }
api:
  tokens:
    - { name: ops, token: admin-token-0123456789, scope: admin }
    - { name: viewer, token: read-token-0123456789 }
entries:
  site:
    match: { branch: . }
    secret: ${SECRET}
    actions:
      - 'echo \"deploying $WH_AFTER\"'
      - 'case \"$WH_AFTER\" in bbbb*) for i in 1 2 3 4 5 6 7 8 9 10; do echo \"step $i\"; sleep 0.4; done;; esac'
";

/// Pushes `commit` (a character, repeated) to `branch` with `message`; the job's id.
fn push(daemon: &Daemon, branch: &str, commit: char, message: &str, delivery: &str) -> i64 {
    let body = push_body(
        "Codertocat/Hello-World",
        &format!("refs/heads/{branch}"),
        &"0".repeat(40),
        &commit.to_string().repeat(40),
    );
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["head_commit"]["message"] = message.into();
    let body = serde_json::to_vec(&v).unwrap();
    let reply = daemon.post("/hooks/site", &github_push(&body, SECRET, delivery), &body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.job_ids()[0]
}

/// Where the test keeps its screenshots: `docs/` with `WH_REGENERATE=1` (the README shows
/// them), else the build's directory.
fn shot(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = if std::env::var_os("WH_REGENERATE").is_some() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf()
    };
    std::fs::write(dir.join(name), png).unwrap();
}

#[test]
fn a_person_signs_in_watches_a_deploy_and_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    let base = format!("http://{}", daemon.addr);
    let first = push(&daemon, "master", 'a', "First release", "d1");
    assert_eq!(daemon.wait_job(first).state, JobState::Succeeded);
    let hostile_branch = "<script>alert(1)</script>";
    let hostile_message = "\"><img src=x onerror=alert(2)> <script>alert(3)</script>";
    let hostile = push(&daemon, hostile_branch, 'c', hostile_message, "d2");
    assert_eq!(daemon.wait_job(hostile).state, JobState::Succeeded);

    let browser = Browser::start(dir.path());
    browser.go(&format!("{base}/ui/"));
    // A wrong token: refused, said, still the form.
    browser.type_into("#token", "not-the-token-0123456789");
    browser.click("form.login button");
    assert!(browser.text(".error").contains("not one of api.tokens"), "{}", browser.text("main"));
    browser.type_into("#token", ADMIN);
    browser.click("form.login button");
    browser.wait_for("section.card[data-entry=site]");
    assert!(browser.text("header").contains("ops (admin)"));
    assert!(browser.text("section.card").contains("cccccccccc"), "the release: {}", browser.text("main"));

    // A deploy that takes four seconds: its page shows the log growing, in the same document.
    let slow = push(&daemon, "master", 'b', "Second release", "d3");
    crate::common::eventually("the job runs", || {
        daemon.store().job(slow).unwrap().unwrap().state == JobState::Running
    });
    browser.go(&format!("{base}/ui/jobs/{slow}"));
    browser.wait_for("pre#log");
    browser.script("window.samePage = true;");
    let at_first = browser.text("pre#log");
    assert!(!at_first.contains("step 10"), "{at_first}");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let grown = loop {
        let now = browser.text("pre#log");
        if now.contains("step 6") && now.len() > at_first.len() {
            break now;
        }
        assert!(std::time::Instant::now() < until, "the log did not grow: {now}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(browser.script("return window.samePage === true;"), serde_json::json!(true), "not reloaded");
    assert!(grown.contains(&format!("deploying {}", "b".repeat(40))), "{grown}");
    assert!(browser.text("#state").contains("running"));
    // At its end the page shows the final state, exit code and no cancel button.
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while !browser
        .find("#state .state-succeeded")
        .is_some_and(|_| browser.text("#state").contains("succeeded"))
    {
        assert!(std::time::Instant::now() < until, "no final state: {}", browser.text("main"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = browser.text("pre#log");
    for n in 1..=10 {
        let lines = log.lines().filter(|l| l.ends_with(&format!(" step {n}"))).count();
        assert_eq!(lines, 1, "step {n} once: {log}");
    }
    assert!(browser.text("#state").contains("succeeded"));
    assert!(browser.find("form[action$='/cancel']").is_none(), "no cancel for an ended job");
    assert_eq!(browser.script("return window.samePage === true;"), serde_json::json!(true), "not reloaded");
    browser.script("window.scrollTo(0, 0);");
    shot("ui-job.png", &browser.screenshot());

    // Rolling back to the first release, pressed on the entries page.
    browser.go(&format!("{base}/ui/"));
    browser.type_into("section.card[data-entry=site] input[name=to]", &"a".repeat(40));
    browser.click("section.card[data-entry=site] form[action$='/rollback'] button");
    browser.wait_for("pre#log");
    let rollback: i64 = browser.url().rsplit('/').next().unwrap().parse().expect("the rollback job's page");
    let job = daemon.wait_job(rollback);
    assert_eq!(
        (job.state, job.trigger.as_str(), job.event.after.as_str()),
        (JobState::Succeeded, "rollback", &*"a".repeat(40))
    );
    browser.go(&format!("{base}/ui/"));
    shot("ui-entries.png", &browser.screenshot());

    // Hostile values are text: no dialog, no image, no script but the page's own.
    for page in [format!("{base}/ui/jobs/{hostile}"), format!("{base}/ui/jobs"), format!("{base}/ui/")] {
        browser.go(&page);
        browser.wait_for("main");
        assert_eq!(browser.dialog(), None, "{page}");
        assert_eq!(browser.script("return document.images.length;"), serde_json::json!(0), "{page}");
        assert_eq!(browser.script("return document.scripts.length;"), serde_json::json!(1), "{page}");
    }
    browser.go(&format!("{base}/ui/jobs/{hostile}"));
    let main = browser.text("main");
    assert!(main.contains(hostile_branch), "{main}");
    assert!(browser.text("dd.message").contains("onerror=alert(2)"), "{main}");
    assert!(browser.text("table.jobs, main").contains("Job"), "list shown");
    browser.go(&format!("{base}/ui/jobs"));
    assert!(browser.text("table.jobs").contains(hostile_branch));
    assert_eq!(browser.dialog(), None);

    // Signing out: the form again, and the pages send back to it.
    browser.click("form.signout button");
    browser.wait_for("#token");
    browser.go(&format!("{base}/ui/jobs/{slow}"));
    browser.wait_for("#token");
    assert!(browser.url().ends_with("/ui/"), "{}", browser.url());
}

/// Signs in over plain HTTP: the session's cookie, and the CSRF token of its forms.
fn sign_in(daemon: &Daemon, token: &str) -> (String, String) {
    let origin = format!("http://{}", daemon.addr);
    let headers = vec![
        ("Origin".to_string(), origin),
        ("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string()),
    ];
    let reply = http(daemon.addr, "POST", "/ui/login", &headers, format!("token={token}").as_bytes());
    assert_eq!(reply.status, 303, "{}", reply.body);
    let set = reply.header("set-cookie").unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get(daemon, "/ui/", &cookie, "text/html");
    let csrf =
        page.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    (cookie, csrf)
}

fn get(daemon: &Daemon, path: &str, cookie: &str, accept: &str) -> Reply {
    let headers =
        vec![("Cookie".to_string(), cookie.to_string()), ("Accept".to_string(), accept.to_string())];
    http(daemon.addr, "GET", path, &headers, b"")
}

fn post(daemon: &Daemon, path: &str, cookie: &str, origin: Option<&str>, form: &str) -> Reply {
    let mut headers = vec![
        ("Cookie".to_string(), cookie.to_string()),
        ("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string()),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin".to_string(), origin.to_string()));
    }
    http(daemon.addr, "POST", path, &headers, form.as_bytes())
}

#[test]
fn the_page_refuses_forged_posts_and_scopes_hold() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_settings(dir.path(), SETTINGS, &[("SECRET", SECRET)]);
    let origin = format!("http://{}", daemon.addr);
    let (cookie, csrf) = sign_in(&daemon, ADMIN);
    let jobs = || {
        let all = wh_automata::store::JobFilter { limit: 100, ..Default::default() };
        daemon.store().jobs(&all).unwrap().len()
    };
    let form = format!("csrf={csrf}&branch=master");
    // Another site's form, or none named: refused, nothing queued.
    for bad in [Some("http://evil.example"), Some("null"), None] {
        let reply = post(&daemon, "/ui/entries/site/run", &cookie, bad, &form);
        assert_eq!(reply.status, 403, "{bad:?}: {}", reply.body);
        assert!(reply.body.contains("not sent from this page"), "{}", reply.body);
    }
    // The right origin without the session's CSRF token: refused.
    for form in ["branch=master", "csrf=0000&branch=master"] {
        let reply = post(&daemon, "/ui/entries/site/run", &cookie, Some(&origin), form);
        assert_eq!(reply.status, 403, "{}", reply.body);
    }
    assert_eq!(jobs(), 0);
    // Both: queued, and sent to the job's page.
    let reply = post(&daemon, "/ui/entries/site/run", &cookie, Some(&origin), &form);
    assert_eq!(reply.status, 303, "{}", reply.body);
    let to = reply.header("location").unwrap().to_string();
    assert!(to.starts_with("/ui/jobs/"), "{to}");
    assert_eq!(jobs(), 1);
    // A link of a status (`/jobs/<id>`) leads a signed-in browser to the page; text stays text.
    let id = to.rsplit('/').next().unwrap();
    let reply = get(&daemon, &format!("/jobs/{id}"), &cookie, "text/html,application/xhtml+xml");
    assert_eq!((reply.status, reply.header("location")), (303, Some(to.as_str())));
    assert_eq!(get(&daemon, &format!("/jobs/{id}"), &cookie, "text/plain").status, 404, "the key is needed");
    assert_eq!(get(&daemon, &format!("/jobs/{id}"), "", "text/html").status, 404);

    // A `read` token sees, and may not press.
    let (viewer, viewer_csrf) = sign_in(&daemon, READ);
    let page = get(&daemon, "/ui/", &viewer, "text/html");
    assert!(page.body.contains("data-entry=\"site\"") && !page.body.contains("/run\""), "{}", page.body);
    let reply = post(&daemon, "/ui/entries/site/run", &viewer, Some(&origin), &format!("csrf={viewer_csrf}"));
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("scope read"), "{}", reply.body);
    // One session's CSRF token does not open another's.
    let reply = post(&daemon, "/ui/entries/site/run", &viewer, Some(&origin), &format!("csrf={csrf}"));
    assert_eq!(reply.status, 403);
    assert_eq!(jobs(), 1);
    // Signing out ends the session on the server, whatever the browser keeps.
    assert_eq!(post(&daemon, "/ui/logout", &cookie, Some(&origin), &format!("csrf={csrf}")).status, 303);
    let reply = post(&daemon, "/ui/entries/site/run", &cookie, Some(&origin), &form);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(get(&daemon, "/ui/jobs", &cookie, "text/html").header("location"), Some("/ui/"));
    // A wrong token at the form is counted like the API's; the page says nothing of tokens.
    let headers = vec![("Origin".to_string(), origin.clone())];
    let reply = http(daemon.addr, "POST", "/ui/login", &headers, b"token=wrong-but-long-enough-123");
    assert_eq!(reply.status, 401);
    assert!(!reply.body.contains(ADMIN) && !reply.body.contains("wrong-but-long"), "{}", reply.body);
    assert!(daemon.get("/metrics").body.contains("wh_automata_api_refused_total 1\n"));
    // Over TLS (a trusted proxy says so: loopback is one by default), the cookie is Secure.
    let headers =
        vec![("Origin".to_string(), origin.clone()), ("X-Forwarded-Proto".to_string(), "https".to_string())];
    let reply = http(daemon.addr, "POST", "/ui/login", &headers, format!("token={READ}").as_bytes());
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(reply.header("set-cookie").unwrap().ends_with("; Secure"), "{:?}", reply.header("set-cookie"));
    // Headers that keep the page to itself.
    let reply = get(&daemon, "/ui/", "", "text/html");
    assert!(reply.header("content-security-policy").unwrap().contains("script-src 'self'"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
}

#[test]
fn without_api_there_is_no_page() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0 }\nentries: {}\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    assert_eq!(daemon.get("/ui/").status, 404);
    let headers = vec![("Origin".to_string(), format!("http://{}", daemon.addr))];
    assert_eq!(http(daemon.addr, "POST", "/ui/login", &headers, b"token=x").status, 404);
}
