//! Every file of `rules/`, run as shipped by the real daemon: its paths moved under a temp dir,
//! real git repositories, and stand-ins on PATH for the programs that cannot run here (docker,
//! npm, pm2, systemctl) which record how they were called.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hmac::Mac;
use serde_json::{json, Value};
use wh_automata::store::JobState;

use crate::common::{fixtures, git, github_push, push_body, read, trigger, write, Daemon};

const ZERO: &str = "0000000000000000000000000000000000000000";

/// An upstream repository (`origin.git`) and a working clone that commits and pushes to it.
struct Upstream {
    root: PathBuf,
    work: PathBuf,
}

impl Upstream {
    /// With a first commit of `files` on main.
    fn new(root: &Path, files: &[(&str, &str)]) -> Upstream {
        git(root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git(root, &["clone", "-q", "origin.git", "work"]);
        let up = Upstream { root: root.to_path_buf(), work: root.join("work") };
        up.commit(files);
        up
    }

    /// Commits `files` and pushes main; returns the commit.
    fn commit(&self, files: &[(&str, &str)]) -> String {
        for (name, text) in files {
            let path = self.work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", "change"]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        self.head()
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Pushes an annotated tag of the current commit; returns the tag object.
    fn tag(&self, name: &str) -> String {
        git(&self.work, &["tag", "-a", name, "-m", name]);
        git(&self.work, &["push", "-q", "origin", &format!("refs/tags/{name}")]);
        git(&self.work, &["rev-parse", name])
    }

    /// Clones origin at `path` (the deploy checkout).
    fn clone_to(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        git(&self.root, &["clone", "-q", "origin.git", path.to_str().unwrap()]);
    }
}

/// Installs rule file `name` under `root` with `/srv/` moved to `root/srv/`, and settings that
/// include it; starts the daemon with stand-ins first on PATH.
fn start(root: &Path, name: &str, env: &[(&str, &str)]) -> Daemon {
    start_with_umask(root, name, env, "022")
}

/// [`start`], the daemon running with `umask` (the shipped unit's is 027).
fn start_with_umask(root: &Path, name: &str, env: &[(&str, &str)], umask: &str) -> Daemon {
    install(root, name);
    let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut all: Vec<(&str, &str)> = env.to_vec();
    all.push(("PATH", &path));
    Daemon::start_with_umask(root, &all, umask)
}

/// Installs rule file `name` under `root` (`/srv/` moved to `root/srv/`) and settings that
/// include it.
fn install(root: &Path, name: &str) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").join(name)).unwrap();
    let text = text.replace("/srv/", &format!("{}/srv/", root.display()));
    std::fs::create_dir_all(root.join("rules")).unwrap();
    write(&root.join("rules"), name, &text);
    write(root, "settings.yaml", &format!("server: {{ listen: 127.0.0.1:0 }}\ninclude: [rules/{name}]\n"));
}

/// A program on PATH that appends `name args...` (and `script`'s effects) to `root/calls`.
fn stand_in(root: &Path, name: &str, script: &str) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(name);
    let calls = root.join("calls");
    std::fs::write(&path, format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n{script}\n", calls.display()))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The calls recorded since the last look, and forgets them.
fn take_calls(root: &Path) -> Vec<String> {
    let path = root.join("calls");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    text.lines().map(str::to_string).collect()
}

/// A GitHub push of `after` to `git_ref` of `repo`, whose one commit changed `changed`.
fn github(repo: &str, git_ref: &str, before: &str, after: &str, changed: &[&str]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&push_body(repo, git_ref, before, after)).unwrap();
    let mut commit = v["commits"][0].clone();
    commit["added"] = json!([]);
    commit["removed"] = json!([]);
    commit["modified"] = json!(changed);
    v["commits"] = json!([commit]);
    serde_json::to_vec(&v).unwrap()
}

/// A GitLab push of `after` to main of `repo`, whose one commit changed `changed`.
fn gitlab(repo: &str, before: &str, after: &str, changed: &[&str]) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("gitlab/push.json")).unwrap()).unwrap();
    v["ref"] = "refs/heads/main".into();
    v["before"] = before.into();
    v["after"] = after.into();
    v["checkout_sha"] = after.into();
    v["project"]["path_with_namespace"] = repo.into();
    v["commits"] = json!([{ "id": after, "message": "m", "added": [], "modified": changed, "removed": [] }]);
    v["total_commits_count"] = 1.into();
    serde_json::to_vec(&v).unwrap()
}

fn gitlab_headers(token: &str, id: &str) -> Vec<(String, String)> {
    vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Gitlab-Event".to_string(), "Push Hook".to_string()),
        ("X-Gitlab-Token".to_string(), token.to_string()),
        ("X-Gitlab-Event-UUID".to_string(), id.to_string()),
    ]
}

/// Sends a request and waits for the one job it queues to end; returns it and its log.
fn deploy(daemon: &Daemon, headers: &[(String, String)], body: &[u8]) -> (wh_automata::store::Job, String) {
    let reply = daemon.post("/hooks", headers, body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let ids = reply.job_ids();
    assert_eq!(ids.len(), 1, "{}", reply.body);
    let job = daemon.wait_job(ids[0]);
    let log = read(&daemon.dir.join(format!("state/logs/{}.log", ids[0])));
    assert_eq!(job.state, JobState::Succeeded, "{:?}\n{log}", job.reason);
    (job, log)
}

fn ignored(daemon: &Daemon, headers: &[(String, String)], body: &[u8]) -> String {
    let reply = daemon.post("/hooks", headers, body);
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("ignored")), "{}", reply.body);
    reply.json()["reason"].as_str().unwrap().to_string()
}

#[test]
fn git_checkout_keeps_the_checkout_at_the_pushed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("index.php", "v1")]);
    let deploy_dir = root.join("srv/site");
    up.clone_to(&deploy_dir);
    // A local edit on the server does not stop the deploy (unlike `git pull`).
    write(&deploy_dir, "index.php", "edited on the server");
    let before = up.head();
    let pushed = up.commit(&[("index.php", "v2")]);
    up.commit(&[("index.php", "v3")]); // later, not announced yet

    let daemon = start(root, "git-checkout.yaml", &[("SITE_SECRET", "s")]);
    let body = github("acme/site", "refs/heads/main", &before, &pushed, &["index.php"]);
    deploy(&daemon, &github_push(&body, "s", "gc-1"), &body);
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), pushed);
    assert_eq!(read(&deploy_dir.join("index.php")), "v2");

    let other = github("acme/site", "refs/heads/feature/x", &before, &pushed, &[]);
    assert!(ignored(&daemon, &github_push(&other, "s", "gc-2"), &other).contains("feature/x"));
    assert_eq!(daemon.post("/hooks", &github_push(&body, "wrong", "gc-3"), &body).status, 401);
}

#[test]
fn gitlab_checkout_uses_the_namespace_path_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("index.html", "v1")]);
    let deploy_dir = root.join("srv/site");
    up.clone_to(&deploy_dir);
    let before = up.head();
    let pushed = up.commit(&[("index.html", "v2")]);

    let daemon = start(root, "gitlab-checkout.yaml", &[("SITE_SECRET", "tok")]);
    let body = |after: &str| gitlab("acme/web/site", &before, after, &["index.html"]);
    deploy(&daemon, &gitlab_headers("tok", "gl-1"), &body(&pushed));
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), pushed);
    assert_eq!(daemon.post("/hooks", &gitlab_headers("other", "gl-2"), &body(&pushed)).status, 401);
    // Deleting main is a push with an all-zero `after`: a deletion, which never deploys.
    assert!(ignored(&daemon, &gitlab_headers("tok", "gl-3"), &body(ZERO)).contains("delete"));
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), pushed);
}

#[test]
fn docker_compose_rebuilds_only_when_a_build_input_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("Dockerfile", "FROM alpine\n"), ("compose.yaml", "services: {}\n")]);
    up.clone_to(&root.join("srv/app"));
    stand_in(root, "docker", "");
    let daemon = start(root, "docker-compose.yaml", &[("APP_SECRET", "s")]);
    let build = "docker compose up -d --build --remove-orphans";
    let up_only = "docker compose up -d --remove-orphans";

    let before = up.head();
    let c1 = up.commit(&[("Dockerfile", "FROM alpine:3\n")]);
    let body = github("acme/app", "refs/heads/main", &before, &c1, &["Dockerfile"]);
    deploy(&daemon, &github_push(&body, "s", "dc-1"), &body);
    assert_eq!(take_calls(root), vec![build, up_only]);

    let c2 = up.commit(&[("README.md", "docs\n")]);
    let body = github("acme/app", "refs/heads/main", &c1, &c2, &["README.md"]);
    let (_, log) = deploy(&daemon, &github_push(&body, "s", "dc-2"), &body);
    assert_eq!(take_calls(root), vec![up_only]);
    assert!(log.contains("skip action 3: no changed file matches Dockerfile"), "{log}");
    assert_eq!(git(&root.join("srv/app"), &["rev-parse", "HEAD"]), c2);

    // A lock file in a subdirectory is a build input too (`*.lock` matches at any depth).
    let c3 = up.commit(&[("web/yarn.lock", "x\n")]);
    let body = github("acme/app", "refs/heads/main", &c2, &c3, &["web/yarn.lock"]);
    deploy(&daemon, &github_push(&body, "s", "dc-3"), &body);
    assert_eq!(take_calls(root), vec![build, up_only]);

    // A manual run does not know what changed: it rebuilds.
    let out = trigger(root, &["settings.yaml", "app", "--branch", "main", "--commit", &c3], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(take_calls(root), vec![build, up_only]);
}

#[test]
fn static_site_builds_a_release_and_switches_the_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("package.json", "{}"), ("content/index.md", "hello")]);
    up.clone_to(&root.join("srv/www/src"));
    // `npm run build -- --outDir DIR` builds into DIR.
    stand_in(
        root,
        "npm",
        "if [ \"$1\" = run ]; then mkdir -p \"$5\" && git rev-parse HEAD > \"$5/index.html\"; fi",
    );
    let daemon = start_with_umask(root, "static-site.yaml", &[("WWW_SECRET", "tok")], "027");
    let push = |before: &str, after: &str, changed: &[&str], id: &str| {
        (gitlab_headers("tok", id), gitlab("acme/www", before, after, changed))
    };
    let before = up.head();
    let c1 = up.commit(&[("package.json", "{\"v\":2}")]);
    let (h, b) = push(&before, &c1, &["package.json"], "ss-1");
    deploy(&daemon, &h, &b);
    let releases = root.join("srv/www/releases");
    assert_eq!(
        take_calls(root),
        vec!["npm ci".to_string(), format!("npm run build -- --outDir {}/{c1}", releases.display())]
    );
    let current = root.join("srv/www/current");
    assert_eq!(std::fs::read_link(&current).unwrap(), releases.join(&c1));
    assert_eq!(read(&current.join("index.html")).trim(), c1);
    // Readable by the web server whatever the daemon's umask (its `umask: "0022"`).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(current.join("index.html")).unwrap().permissions().mode();
    assert_eq!(mode & 0o044, 0o044, "{mode:o}");

    let c2 = up.commit(&[("content/index.md", "hello again")]);
    let (h, b) = push(&c1, &c2, &["content/index.md"], "ss-2");
    deploy(&daemon, &h, &b);
    assert_eq!(take_calls(root), vec![format!("npm run build -- --outDir {}/{c2}", releases.display())]);
    assert_eq!(std::fs::read_link(&current).unwrap(), releases.join(&c2));
    assert!(releases.join(&c1).join("index.html").exists(), "the previous release stays for a rollback");
}

#[test]
fn node_app_under_pm2_installs_when_the_lock_file_changed_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("package-lock.json", "{}"), ("index.js", "1")]);
    up.clone_to(&root.join("srv/api"));
    stand_in(root, "npm", "");
    stand_in(root, "pm2", &format!("echo \"NODE_ENV=$NODE_ENV\" >> '{}'", root.join("calls").display()));
    let daemon = start(root, "node-pm2.yaml", &[("NODE_SECRET", "s")]);
    let before = up.head();
    let c1 = up.commit(&[("package-lock.json", "{\"lockfileVersion\":3}")]);
    let body = github("acme/api", "refs/heads/main", &before, &c1, &["package-lock.json"]);
    deploy(&daemon, &github_push(&body, "s", "pm-1"), &body);
    let reload = "pm2 startOrReload ecosystem.config.js --env production --update-env";
    assert_eq!(take_calls(root), vec!["npm ci --omit=dev", reload, "NODE_ENV=production"]);

    let c2 = up.commit(&[("index.js", "2")]);
    let body = github("acme/api", "refs/heads/main", &c1, &c2, &["index.js"]);
    deploy(&daemon, &github_push(&body, "s", "pm-2"), &body);
    assert_eq!(take_calls(root), vec![reload, "NODE_ENV=production"]);
    assert_eq!(git(&root.join("srv/api"), &["rev-parse", "HEAD"]), c2);
}

#[test]
fn node_service_under_systemd_builds_when_sources_changed_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("package.json", "{}"), ("src/index.ts", "1"), ("README.md", "r")]);
    up.clone_to(&root.join("srv/api"));
    stand_in(root, "npm", "");
    stand_in(root, "systemctl", "");
    let daemon = start(root, "node-systemd.yaml", &[("NODE_SECRET", "s")]);
    let before = up.head();
    let c1 = up.commit(&[("src/index.ts", "2")]);
    let body = github("acme/api", "refs/heads/main", &before, &c1, &["src/index.ts"]);
    deploy(&daemon, &github_push(&body, "s", "sd-1"), &body);
    assert_eq!(take_calls(root), vec!["npm run build", "systemctl restart api.service"]);

    let c2 = up.commit(&[("README.md", "r2")]);
    let body = github("acme/api", "refs/heads/main", &c1, &c2, &["README.md"]);
    deploy(&daemon, &github_push(&body, "s", "sd-2"), &body);
    assert_eq!(take_calls(root), vec!["systemctl restart api.service"]);
}

/// A repository whose deploy/build.sh writes the checked-out version into the given directory.
fn tool_upstream(root: &Path) -> Upstream {
    let up = Upstream::new(
        root,
        &[("deploy/build.sh", "mkdir -p \"$1\" && git describe --tags > \"$1/VERSION\"\n"), ("main.c", "1")],
    );
    up.clone_to(&root.join("srv/tool/src"));
    up
}

#[test]
fn release_runs_on_version_tags_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = tool_upstream(root);
    let daemon = start(root, "release.yaml", &[("RELEASE_SECRET", "s")]);
    let commit = up.commit(&[("main.c", "2")]);
    let tag = up.tag("v1.2.0");
    let body = github("acme/tool", "refs/tags/v1.2.0", ZERO, &tag, &[]);
    deploy(&daemon, &github_push(&body, "s", "rel-1"), &body);
    let current = root.join("srv/tool/current");
    assert_eq!(std::fs::read_link(&current).unwrap(), root.join("srv/tool/releases/v1.2.0"));
    assert_eq!(read(&current.join("VERSION")).trim(), "v1.2.0");
    assert_eq!(git(&root.join("srv/tool/src"), &["rev-parse", "HEAD"]), commit);

    let nightly = up.tag("nightly");
    let body = github("acme/tool", "refs/tags/nightly", ZERO, &nightly, &[]);
    assert!(ignored(&daemon, &github_push(&body, "s", "rel-2"), &body).contains("nightly"));
    let body = github("acme/tool", "refs/heads/main", ZERO, &commit, &[]);
    assert!(ignored(&daemon, &github_push(&body, "s", "rel-3"), &body).contains("push"));
    assert_eq!(std::fs::read_link(&current).unwrap(), root.join("srv/tool/releases/v1.2.0"));
}

#[test]
fn gitea_release_runs_once_per_tag_with_gitea_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = tool_upstream(root);
    let daemon = start(root, "gitea-release.yaml", &[("RELEASE_SECRET", "s")]);
    up.commit(&[("main.c", "3")]);
    let tag = up.tag("v2.0.0");
    let signed = |event: &str, body: &[u8], id: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s").unwrap();
        mac.update(body);
        vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Gitea-Event".to_string(), event.to_string()),
            ("X-Gitea-Delivery".to_string(), id.to_string()),
            ("X-Gitea-Signature".to_string(), hex::encode(mac.finalize().into_bytes())),
        ]
    };
    let mut push: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("gitea/push.json")).unwrap()).unwrap();
    push["ref"] = "refs/tags/v2.0.0".into();
    push["before"] = ZERO.into();
    push["after"] = tag.as_str().into();
    push["repository"]["full_name"] = "acme/tool".into();
    let push = serde_json::to_vec(&push).unwrap();
    // Gitea's `create` for the same tag comes too, and is not a second release.
    let mut create: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("gitea/create-tag-legacy-secret.json")).unwrap(),
    )
    .unwrap();
    create["ref"] = "v2.0.0".into();
    create["repository"]["full_name"] = "acme/tool".into();
    let create = serde_json::to_vec(&create).unwrap();

    deploy(&daemon, &signed("push", &push, "gt-1"), &push);
    assert!(ignored(&daemon, &signed("create", &create, "gt-2"), &create).contains("create"));
    let current = root.join("srv/tool/current");
    assert_eq!(read(&current.join("VERSION")).trim(), "v2.0.0");
    assert_eq!(daemon.store().recent(10).unwrap().len(), 1, "one release per tag");
    let mut forged = signed("push", &push, "gt-3");
    forged[3].1 = "00".repeat(32);
    assert_eq!(daemon.post("/hooks", &forged, &push).status, 401);
}

/// A GitHub `workflow_run` delivery of `workflow` on `branch` for `sha`.
fn workflow_run(workflow: &str, branch: &str, sha: &str, status: &str, conclusion: Option<&str>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("github/workflow_run-completed.json")).unwrap(),
    )
    .unwrap();
    v["action"] = if status == "completed" { "completed" } else { "in_progress" }.into();
    v["repository"]["full_name"] = "acme/site".into();
    v["workflow_run"]["head_repository"]["full_name"] = "acme/site".into();
    v["workflow"]["name"] = workflow.into();
    v["workflow_run"]["name"] = workflow.into();
    v["workflow_run"]["head_branch"] = branch.into();
    v["workflow_run"]["head_sha"] = sha.into();
    v["workflow_run"]["status"] = status.into();
    v["workflow_run"]["conclusion"] = conclusion.map_or(Value::Null, Value::from);
    serde_json::to_vec(&v).unwrap()
}

fn as_event(mut headers: Vec<(String, String)>, event: &str) -> Vec<(String, String)> {
    for (k, v) in &mut headers {
        if k == "X-GitHub-Event" {
            *v = event.to_string();
        }
    }
    headers
}

#[test]
fn after_ci_deploys_the_tested_commit_only_when_its_workflow_passed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("index.php", "v1")]);
    let deploy_dir = root.join("srv/site");
    up.clone_to(&deploy_dir);
    let tested = up.commit(&[("index.php", "v2")]);
    let later = up.commit(&[("index.php", "v3")]); // pushed, CI not finished yet

    let daemon = start(root, "after-ci.yaml", &[("SITE_SECRET", "s")]);
    let send = |body: &[u8], id: &str| (as_event(github_push(body, "s", id), "workflow_run"), body.to_vec());

    // Still running, failed, another workflow, another branch: nothing deploys.
    let (h, b) = send(&workflow_run("CI", "main", &later, "in_progress", None), "ci-1");
    assert!(ignored(&daemon, &h, &b).contains("workflow_run"));
    let (h, b) = send(&workflow_run("CI", "main", &later, "completed", Some("failure")), "ci-2");
    assert!(ignored(&daemon, &h, &b).contains("CI concluded failure, the entry wants success"));
    let (h, b) = send(&workflow_run("Lint", "main", &later, "completed", Some("success")), "ci-3");
    assert!(ignored(&daemon, &h, &b).contains("workflow \"Lint\" does not match /^CI$/"));
    let (h, b) = send(&workflow_run("CI", "dev", &later, "completed", Some("success")), "ci-4");
    assert!(ignored(&daemon, &h, &b).contains("branch \"dev\""));
    // A push is not a CI run.
    let push = github("acme/site", "refs/heads/main", &tested, &later, &["index.php"]);
    assert!(ignored(&daemon, &github_push(&push, "s", "ci-5"), &push)
        .contains("event is push, the entry wants ci"));
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), git(&deploy_dir, &["rev-parse", "origin/main"]));

    // The run of `tested` passed: that commit deploys, not the newer head of main.
    let (h, b) = send(&workflow_run("CI", "main", &tested, "completed", Some("success")), "ci-6");
    let (job, log) = deploy(&daemon, &h, &b);
    assert_eq!(job.event.name(), "ci");
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), tested, "{log}");
    assert_eq!(read(&deploy_dir.join("index.php")), "v2");
}

/// The README's "deploy without a push": `wh-automata-trigger SETTINGS ENTRY`, with no branch
/// and no commit, deploys the head of the branch, through the daemon and without one; an entry
/// that never ran takes the branch its match.branch names; a tag rule asks for --tag.
#[test]
fn every_shipped_rule_deploys_without_a_push() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("index.php", "v1")]);
    let deploy_dir = root.join("srv/site");
    up.clone_to(&deploy_dir);
    // Never deployed, no daemon, no secret in the environment: the branch of `^main$`.
    install(root, "git-checkout.yaml");
    let head = up.commit(&[("index.php", "v2")]);
    let out = trigger(root, &["settings.yaml", "site"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), head);
    assert_eq!(read(&deploy_dir.join("index.php")), "v2");
    // Through the daemon: the ref of the last job, the head of that branch.
    let daemon = start(root, "git-checkout.yaml", &[("SITE_SECRET", "s")]);
    let head = up.commit(&[("index.php", "v3")]);
    let out = trigger(root, &["settings.yaml", "site"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(git(&deploy_dir, &["rev-parse", "HEAD"]), head);
    assert!(String::from_utf8_lossy(&out.stderr).contains("using refs/heads/main"));
    drop(daemon);

    // The static site names its build after the commit checked out, not an empty WH_AFTER.
    std::fs::create_dir(root.join("www")).unwrap();
    let up = Upstream::new(&root.join("www"), &[("package.json", "{}")]);
    let www = root.join("srv/www/src");
    std::fs::create_dir_all(www.parent().unwrap()).unwrap();
    git(&root.join("www"), &["clone", "-q", "origin.git", www.to_str().unwrap()]);
    stand_in(root, "npm", "if [ \"$1\" = run ]; then mkdir -p \"$5\"; fi");
    install(root, "static-site.yaml");
    let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let out = trigger(root, &["settings.yaml", "www"], &[("PATH", &path)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let current = std::fs::read_link(root.join("srv/www/current")).unwrap();
    assert_eq!(current, root.join("srv/www/releases").join(up.head()));

    // A release needs its tag.
    std::fs::create_dir(root.join("tool")).unwrap();
    let tool = tool_upstream(&root.join("tool"));
    std::fs::rename(root.join("tool/srv/tool"), root.join("srv/tool")).unwrap();
    install(root, "release.yaml");
    let out = trigger(root, &["settings.yaml", "release"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tag NAME"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tool.tag("v2.0.0");
    let out = trigger(root, &["settings.yaml", "release", "--tag", "v2.0.0"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&root.join("srv/tool/current/VERSION")).trim(), "v2.0.0");

    // Every rule that checks out $WH_AFTER falls back to the fetched head (or the branch's).
    for file in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap() {
        let text = read(&file.unwrap().path());
        for line in text.lines().filter(|l| l.contains("$WH_AFTER") || l.contains("${WH_AFTER")) {
            assert!(line.contains("${WH_AFTER:-") || line.trim_start().starts_with('#'), "{line}");
        }
    }
}

#[test]
fn every_rule_file_is_tested_here_and_in_the_readme_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = read(&root.join("tests/integration/rules.rs"));
    let readme = read(&root.join("README.md"));
    for file in std::fs::read_dir(root.join("rules")).unwrap() {
        let name = file.unwrap().file_name().to_string_lossy().into_owned();
        assert!(source.contains(&format!("\"{name}\"")), "rules/{name} has no test in rules.rs");
        assert!(readme.contains(&format!("\n| `{name}` | ")), "rules/{name} is not in the README's table");
    }
}

/// The service of the atomic-release rule's check: 500 while the current release's app.txt
/// says "broken", else 200; its port.
fn release_service(current: PathBuf) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let broken =
                std::fs::read_to_string(current.join("app.txt")).unwrap_or_default().contains("broken");
            let status = if broken { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    port
}

#[test]
fn atomic_release_switches_a_symlink_and_a_failed_check_switches_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Upstream::new(root, &[("app.txt", "v1")]);
    std::fs::create_dir_all(root.join("srv/app/releases")).unwrap();
    git(root, &["clone", "-q", "--mirror", "origin.git", "srv/app/repo.git"]);
    let current = root.join("srv/app/current");
    let port = release_service(current.clone());
    install(root, "atomic-release.yaml");
    let rule = root.join("rules/atomic-release.yaml");
    let text = read(&rule)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("within: 30s", "within: 1s");
    std::fs::write(&rule, text).unwrap();
    let daemon = Daemon::start(root, &[("APP_SECRET", "s")]);
    let releases = root.join("srv/app/releases");
    let send = |before: &str, after: &str, id: &str| {
        let body = github("acme/app", "refs/heads/main", before, after, &["app.txt"]);
        daemon.post("/hooks/app", &github_push(&body, "s", id), &body)
    };
    let c1 = up.head();
    let reply = send(ZERO, &c1, "ar-1");
    assert_eq!(daemon.wait_job(reply.job_ids()[0]).state, JobState::Succeeded);
    assert_eq!(std::fs::read_link(&current).unwrap(), Path::new("releases").join(&c1));
    assert_eq!(read(&current.join("app.txt")), "v1");
    assert!(!current.join(".git").exists(), "no repository in what is served");

    let c2 = up.commit(&[("app.txt", "broken")]);
    let reply = send(&c1, &c2, "ar-2");
    let id = reply.job_ids()[0];
    let failed = daemon.wait_job(id);
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.reason.as_deref().unwrap().starts_with("rolled back to"), "{:?}", failed.reason);
    assert_eq!(daemon.wait_job(id + 1).state, JobState::Succeeded);
    assert_eq!(std::fs::read_link(&current).unwrap(), Path::new("releases").join(&c1), "switched back");
    assert!(releases.join(&c2).exists(), "the broken release stays to be looked at");

    // Releases beyond the newest 5 go, never the current one.
    let mut last = c2.clone();
    for i in 3..=8 {
        let c = up.commit(&[("app.txt", &format!("v{i}"))]);
        let reply = send(&last, &c, &format!("ar-{i}"));
        assert_eq!(daemon.wait_job(reply.job_ids()[0]).state, JobState::Succeeded);
        std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct modification times
        last = c;
    }
    let kept: Vec<String> = std::fs::read_dir(&releases)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept.len(), 5, "{kept:?}");
    assert!(kept.contains(&last));
    assert_eq!(read(&current.join("app.txt")), "v8");
}
