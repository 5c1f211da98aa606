//! What real deliveries of every host do to the real daemon: pull requests by action, CI runs,
//! any event name, one job per change, the same values on every host.

use wh_automata::providers;
use wh_automata::store::JobState;

use crate::common::{
    check_settings, env_file, fixtures, github_push, push_body, request_in, signed, Daemon, Reply,
};

/// Sends a delivery of the second corpus, signed with the corpus secret.
fn send(daemon: &Daemon, name: &str) -> Reply {
    let req = request_in(&fixtures().join("corpus2"), name);
    send_body(daemon, &req.headers, &req.body)
}

/// Sends `body` with `headers` (placeholder signatures replaced by real ones).
fn send_body(daemon: &Daemon, headers: &[(String, String)], body: &[u8]) -> Reply {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let provider = providers::detect(&map).unwrap();
    let headers: Vec<(String, String)> = signed(provider, &map, body)
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    daemon.post("/hooks", &headers, body)
}

/// The headers of a JSON delivery: `pairs` after the Content-Type (a signature given as
/// `SIGNED-BY-RUN.PY` is signed when sent).
fn json_headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    std::iter::once(("Content-Type", "application/json"))
        .chain(pairs.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A fixture file's JSON.
fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
}

/// Settings whose entries each write their `WH_*` variables to `env-<entry>-<job>`.
fn settings(entries: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0 }}\nentries:\n{}",
        entries.replace("ACTIONS", "secret: \"It's a Secret to Everybody\"\n    actions: [\"env | grep ^WH_ > env-$WH_ENTRY-$WH_JOB_ID\"]")
    )
}

/// The entries of the jobs a reply queued, after they ran, with their environments.
fn ran(daemon: &Daemon, reply: &Reply) -> Vec<(String, std::collections::HashMap<String, String>)> {
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply
        .job_ids()
        .into_iter()
        .map(|id| {
            let job = daemon.wait_job(id);
            let env = env_file(&daemon.dir.join(format!("env-{}-{id}", job.entry)));
            (job.entry, env)
        })
        .collect()
}

fn ignored(reply: &Reply) -> String {
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("ignored")), "{}", reply.body);
    reply.body.clone()
}

#[test]
fn pull_requests_are_routed_by_action_with_their_details() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(
        "  tests:\n    match: { event: pull_request, action: [opened, updated, reopened] }\n    ACTIONS\n\
         \x20 deploy:\n    match: { event: pull_request, action: merged }\n    ACTIONS\n\
         \x20 deleted:\n    match: { provider: bitbucket, event: pull_request, action: deleted }\n    ACTIONS\n",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);

    let jobs = ran(&daemon, &send(&daemon, "github/app-pr-synchronize.json"));
    assert_eq!(jobs.len(), 1);
    let (entry, env) = &jobs[0];
    assert_eq!(entry, "tests");
    assert_eq!(env["WH_PR_ACTION"], "updated");
    assert_eq!(env["WH_EVENT"], "pull_request");
    assert_eq!(env["WH_BRANCH"], "trunk");
    assert_eq!(env["WH_PR_BASE_BRANCH"], "trunk");
    assert_eq!(env["WH_PR_HEAD_SHA"], "7e39d83fc6a99f2c6a02cc7637c4de8db50da6ca");
    assert_eq!(env["WH_AFTER"], env["WH_PR_HEAD_SHA"]);
    assert_eq!(env["WH_PR_MERGED"], "0");
    assert!(
        !env["WH_PR_NUMBER"].is_empty() && env["WH_PR_URL"].starts_with("https://github.com/"),
        "{env:?}"
    );
    assert!(!env["WH_PR_HEAD_BRANCH"].is_empty() && !env["WH_PR_TITLE"].is_empty(), "{env:?}");

    // GitLab's `update`, Gitea's `synchronized`, Bitbucket's `pr:from_ref_updated` are `updated`.
    for name in [
        "gitlab/mr-update-new-commit.json",
        "gitea/pr-synchronized-drone.json",
        "bitbucket-server/pr-from-ref-updated-dc.json",
    ] {
        let jobs = ran(&daemon, &send(&daemon, name));
        assert_eq!(
            (jobs.len(), jobs[0].0.as_str(), jobs[0].1["WH_PR_ACTION"].as_str()),
            (1, "tests", "updated"),
            "{name}"
        );
    }
    // A Forgejo that names the event by its type (`pull_request_sync`) means the same.
    let mut req = request_in(&fixtures().join("corpus2"), "gitea/forgejo-pr-synchronized.json");
    for (k, v) in &mut req.headers {
        if k.eq_ignore_ascii_case("X-Forgejo-Event") || k.eq_ignore_ascii_case("X-Gitea-Event") {
            *v = "pull_request_sync".into();
        }
    }
    let jobs = ran(&daemon, &send_body(&daemon, &req.headers, &req.body));
    assert_eq!((jobs[0].0.as_str(), jobs[0].1["WH_PR_ACTION"].as_str()), ("tests", "updated"));
    let gitlab = &ran(&daemon, &send(&daemon, "gitlab/mr-open-subgroup.json"))[0].1;
    assert_eq!((gitlab["WH_PR_ACTION"].as_str(), gitlab["WH_PR_NUMBER"].as_str()), ("opened", "2"));
    assert_eq!(
        (gitlab["WH_PR_HEAD_BRANCH"].as_str(), gitlab["WH_PR_BASE_BRANCH"].as_str()),
        ("patch", "main")
    );

    // A pull request closed without merging runs neither; the answer says why.
    let body = ignored(&send(&daemon, "github/app-pr-closed.json"));
    assert!(body.contains("action is closed, the entry wants merged"), "{body}");
    // Merged: the deploy, with WH_PR_MERGED.
    for name in ["bitbucket/pr-fulfilled-atlantis.json", "bitbucket-server/pr-merged-from-fork.json"] {
        let jobs = ran(&daemon, &send(&daemon, name));
        assert_eq!(jobs.len(), 1, "{name}");
        assert_eq!((jobs[0].0.as_str(), jobs[0].1["WH_PR_MERGED"].as_str()), ("deploy", "1"), "{name}");
    }
    // A host's own word matches too: Bitbucket Server's `pr:deleted` is `closed` for the others.
    let jobs = ran(&daemon, &send(&daemon, "bitbucket-server/pr-deleted.json"));
    assert_eq!(jobs.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["deleted"]);
    assert_eq!(jobs[0].1["WH_PR_ACTION"], "closed");
}

#[test]
fn a_finished_gitlab_pipeline_is_a_ci_event_for_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(
        "  after-ci:\n    match: { provider: gitlab, event: ci, branch: ^master$, conclusion: success }\n    ACTIONS\n",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = std::fs::read(fixtures().join("transcribed/gitlab-pipeline-success.json")).unwrap();
    let headers = |id: &str| {
        json_headers(&[
            ("X-Gitlab-Event", "Pipeline Hook"),
            ("X-Gitlab-Token", "SIGNED-BY-RUN.PY"),
            ("Idempotency-Key", id),
        ])
    };
    let with_status = |status: &str| {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["object_attributes"]["status"] = status.into();
        serde_json::to_vec(&v).unwrap()
    };
    let reply = send_body(&daemon, &headers("p-1"), &with_status("running"));
    assert!(ignored(&reply).contains("event is pipeline, the entry wants ci"), "{}", reply.body);
    let reply = send_body(&daemon, &headers("p-2"), &with_status("failed"));
    assert!(ignored(&reply).contains("CI concluded failure, the entry wants success"), "{}", reply.body);
    let jobs = ran(&daemon, &send_body(&daemon, &headers("p-3"), &body));
    let env = &jobs[0].1;
    assert_eq!(env["WH_EVENT"], "ci");
    assert_eq!(env["WH_BRANCH"], "master");
    assert_eq!(env["WH_AFTER"], "bcbb5ec396a2c0f828686f14fac9b80b780504f2");
    assert_eq!(env["WH_CI_CONCLUSION"], "success");
    assert_eq!(env["WH_REPO"], "gitlab-org/gitlab-test");
}

#[test]
fn any_event_name_can_be_matched_and_check_warns_about_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(
        "  queue:\n    match: { provider: github, event: [merge_group, repository_dispatch] }\n    ACTIONS\n",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let jobs = ran(&daemon, &send(&daemon, "github/merge-group-checks-requested.json"));
    let env = &jobs[0].1;
    assert_eq!(env["WH_EVENT"], "merge_group");
    assert_eq!(env["WH_BRANCH"], "main");
    assert_eq!(env["WH_AFTER"], "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d");

    std::fs::write(
        dir.path().join("check.yaml"),
        "entries:\n  a:\n    match: { provider: gitea, event: [pull_request_approved, pull_request_aproved] }\n    insecure: true\n    actions: [\"true\"]\n",
    )
    .unwrap();
    let (code, out) = check_settings(dir.path(), "check.yaml");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"pull_request_aproved\" is not an event gitea is known to send"), "{out}");
    assert!(!out.contains("\"pull_request_approved\" is not"), "{out}");
    // A name that is not shaped like one is still refused.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "entries:\n  a:\n    match: { event: \"push; rm -rf /\" }\n    insecure: true\n    actions: [\"true\"]\n",
    )
    .unwrap();
    let (code, out) = check_settings(dir.path(), "bad.yaml");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not an event name"), "{out}");
}

#[test]
fn a_create_beside_a_tag_push_runs_an_entry_that_wants_both_once() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(
        "  both:\n    match: { provider: github, event: [tag, create] }\n    ACTIONS\n\
         \x20 create-only:\n    match: { provider: github, event: create }\n    ACTIONS\n",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    // GitHub sends `create` and `push` for one new tag (simple-tag of Codertocat/Hello-World).
    let create = ran(&daemon, &send(&daemon, "github/create-event-tag-app.json"));
    assert_eq!(create.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["create-only"]);
    let reply = send(&daemon, "github/ghes-push-tag.json");
    let push = ran(&daemon, &reply);
    assert_eq!(push.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["both"], "{}", reply.body);
    let store = daemon.store();
    assert_eq!(store.recent(10).unwrap().iter().filter(|j| j.entry == "both").count(), 1);
}

#[test]
fn values_mean_the_same_on_every_host() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(
        "  tags:\n    match: { event: tag }\n    ACTIONS\n  deletes:\n    match: { event: delete }\n    ACTIONS\n",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    // Annotated tags: WH_AFTER is the commit, WH_TAG_OBJECT the tag object.
    for (name, commit, object) in [
        (
            "github/app-push-annotated-tag.json",
            "bd7a63727468ca899e6a43e40fe9d76b3501f3f4",
            "f19c884ab35c8d243bf9d857d631a5d4f190079f",
        ),
        (
            "gitlab/system-hook-tag-push.json",
            "5937ac0a7beb003549fc5fd26fc247adbce4a52e",
            "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        ),
        (
            "bitbucket-server/refs-changed-annotated-tag.json",
            "fb522a6f08c7c7df337312e4e65ec1b57710672e",
            "118cc36527dd376b94de5b0e6424b1dfbd4717ff",
        ),
        ("bitbucket/push-annotated-tag.json", "7ef5981d59145c3ed300b1ab77b93907d33abe59", ""),
    ] {
        let jobs = ran(&daemon, &send(&daemon, name));
        let env = &jobs[0].1;
        assert_eq!((env["WH_AFTER"].as_str(), env["WH_TAG_OBJECT"].as_str()), (commit, object), "{name}");
    }
    // Deletions: forty zeros, whether the host sends a push or a delete event.
    for name in [
        "gitea/delete-branch-event-zulip.json",
        "gogs/delete-tag-zulip.json",
        "github/push-branch-delete-zulip.json",
    ] {
        let jobs = ran(&daemon, &send(&daemon, name));
        assert_eq!(jobs[0].1["WH_AFTER"], "0".repeat(40), "{name}");
    }
    // Payloads older than any host in service: a clear 400, no job with an empty repository.
    for (name, field) in [
        ("github/push-2013-no-full-name.json", "repository.full_name"),
        ("gitlab/legacy-push-no-project.json", "project.path_with_namespace"),
    ] {
        let reply = send(&daemon, name);
        assert_eq!(reply.status, 400, "{name}: {}", reply.body);
        assert!(reply.body.contains(field), "{name}: {}", reply.body);
    }
}

/// The host's "Redeliver" keeps the delivery id: a delivery whose job failed runs again; one
/// whose job succeeded (or still waits or runs) is a duplicate, and the answer says which job.
#[test]
fn a_redelivery_runs_again_only_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    secret: s\n    actions: [\"test -f ok\", \"echo ran >> runs\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let body = push_body("acme/site", "refs/heads/main", &"a".repeat(40), &"b".repeat(40));
    let headers = github_push(&body, "s", "redelivered-1");

    let first = daemon.post("/hooks", &headers, &body);
    let failed = daemon.wait_job(first.job_ids()[0]);
    assert_eq!(failed.state, JobState::Failed);
    // Redelivered after the fix: runs again, as a new job.
    std::fs::write(dir.path().join("ok"), "").unwrap();
    let again = daemon.post("/hooks", &headers, &body);
    assert_eq!((again.status, again.json()["status"].as_str()), (202, Some("queued")), "{}", again.body);
    let rerun = again.job_ids()[0];
    assert_ne!(rerun, failed.id);
    assert_eq!(daemon.wait_job(rerun).state, JobState::Succeeded);
    // Redelivered once more: it succeeded, so it is a duplicate naming that job and its state.
    let dup = daemon.post("/hooks", &headers, &body);
    assert_eq!((dup.status, dup.json()["status"].as_str()), (200, Some("duplicate")), "{}", dup.body);
    assert_eq!(dup.json()["jobs"][0]["id"], rerun);
    assert_eq!(dup.json()["jobs"][0]["state"], "succeeded");
    assert_eq!(std::fs::read_to_string(dir.path().join("runs")).unwrap(), "ran\n");
}

/// `skip_deployed: true`: a push of the commit the entry last deployed is answered ignored.
#[test]
fn skip_deployed_never_deploys_the_same_commit_twice_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server: { listen: 127.0.0.1:0 }\nentries:\n  site:\n    secret: s\n    skip_deployed: true\n    actions: [\"echo $WH_AFTER >> deployed\"]\n  every:\n    secret: s\n    actions: [\"echo $WH_AFTER >> every\"]\n";
    let daemon = Daemon::with_settings(dir.path(), yaml, &[]);
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let push_from = |before: &str, after: &str, id: &str| {
        let body = push_body("acme/site", "refs/heads/main", before, after);
        daemon.post("/hooks", &github_push(&body, "s", id), &body)
    };
    let push = |after: &str, id: &str| push_from(&"1".repeat(40), after, id);
    let first = push(&a, "sd-1");
    let ids = first.job_ids();
    let site_job = ids.iter().map(|id| daemon.wait_job(*id)).find(|j| j.entry == "site").unwrap();
    // The same commit again (another delivery: a re-push, a second webhook): only `every` runs.
    let again = push(&a, "sd-2");
    assert_eq!(again.status, 202, "{}", again.body);
    let ran: Vec<String> = again.job_ids().iter().map(|id| daemon.wait_job(*id).entry).collect();
    assert_eq!(ran, ["every"]);
    // Alone, it is answered ignored with the job that deployed the commit.
    let yaml_only = yaml.split("  every:").next().unwrap().to_string();
    std::fs::write(dir.path().join("settings.yaml"), &yaml_only).unwrap();
    crate::common::eventually("the reload", || daemon.get("/health").json()["settings"]["entries"] == 1);
    let reply = push(&a, "sd-3");
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("ignored")), "{}", reply.body);
    let reason = reply.json()["entries"]["site"].as_str().unwrap().to_string();
    assert_eq!(reason, format!("commit aaaaaaa already deployed by job {}", site_job.id));
    // Another commit deploys, and after it the first one may deploy again: a force-push back
    // to it (sent with before = the head it replaces; see the replay tests).
    for (before, after, id) in [(&a, &b, "sd-4"), (&b, &a, "sd-5")] {
        let reply = push_from(before, after, id);
        assert_eq!(reply.status, 202, "{}", reply.body);
        daemon.wait_job(reply.job_ids()[0]);
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("deployed")).unwrap(), format!("{a}\n{b}\n{a}\n"));
}

/// Gitea and Forgejo (1.24+) send `workflow_run` in GitHub's shape, with their own headers.
#[test]
fn a_gitea_workflow_run_is_a_ci_event_too() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings("  after-ci:\n    match: { provider: gitea, event: ci, conclusion: success, workflow: ^test$ }\n    ACTIONS\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = std::fs::read(fixtures().join("github/workflow_run-completed.json")).unwrap();
    let headers = json_headers(&[
        ("X-Gitea-Event", "workflow_run"),
        ("X-Forgejo-Event", "workflow_run"),
        ("X-Gitea-Delivery", "g-1"),
        ("X-Gitea-Signature", "SIGNED-BY-RUN.PY"),
    ]);
    let jobs = ran(&daemon, &send_body(&daemon, &headers, &body));
    let env = &jobs[0].1;
    assert_eq!(env["WH_PROVIDER"], "gitea");
    assert_eq!(env["WH_EVENT"], "ci");
    assert_eq!(env["WH_BRANCH"], "master");
    assert_eq!(env["WH_AFTER"], "3484a3fb816e0859fd6e1cea078d76385ff50625");
    assert_eq!((env["WH_CI_WORKFLOW"].as_str(), env["WH_CI_CONCLUSION"].as_str()), ("test", "success"));
}

/// The new values that reach answers and logs (a CI run's workflow name and conclusion, an
/// action) are refused when they hold control characters, like refs: a forged log line cannot
/// ride in on them.
#[test]
fn control_characters_in_new_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings("  ci:\n    match: { event: ci, workflow: ^CI$ }\n    ACTIONS\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let body = std::fs::read(fixtures().join("github/workflow_run-completed.json")).unwrap();
    let forged = |pointer: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        *v.pointer_mut(pointer).unwrap() = value.into();
        serde_json::to_vec(&v).unwrap()
    };
    let headers =
        |event: &str| json_headers(&[("X-GitHub-Event", event), ("X-Hub-Signature-256", "SIGNED-BY-RUN.PY")]);
    for (pointer, value, field) in [
        ("/workflow_run/name", "CI\n2026-12-02T00:00:00Z ERROR forged", "workflow name"),
        ("/workflow_run/conclusion", "success\r\nforged", "CI conclusion"),
        ("/action", "completed\u{1b}[2J", "action"),
    ] {
        let reply = send_body(&daemon, &headers("workflow_run"), &forged(pointer, value));
        assert_eq!(reply.status, 400, "{pointer}: {}", reply.body);
        assert!(reply.body.contains(field) && reply.body.contains("control characters"), "{}", reply.body);
        assert!(!daemon.log().contains("forged"), "{}", daemon.log());
    }
}

/// A CI run for a pull request from a fork names the fork's branch: it never passes for a
/// branch of the repository (a fork's `main` must not deploy).
#[test]
fn a_ci_run_of_a_forks_branch_matches_no_branch() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        settings("  deploy:\n    match: { event: ci, branch: ^master$, conclusion: success }\n    ACTIONS\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let mut v = fixture_json("github/workflow_run-completed.json");
    v["workflow_run"]["head_repository"]["full_name"] = "mallory/octo-repo".into();
    let headers =
        json_headers(&[("X-GitHub-Event", "workflow_run"), ("X-Hub-Signature-256", "SIGNED-BY-RUN.PY")]);
    let reply = send_body(&daemon, &headers, &serde_json::to_vec(&v).unwrap());
    assert!(ignored(&reply).contains("has no branch"), "{}", reply.body);
    let mut gl = fixture_json("transcribed/gitlab-pipeline-success.json");
    gl["merge_request"]["source_project_id"] = 99.into();
    let headers =
        json_headers(&[("X-Gitlab-Event", "Pipeline Hook"), ("X-Gitlab-Token", "SIGNED-BY-RUN.PY")]);
    let reply = send_body(&daemon, &headers, &serde_json::to_vec(&gl).unwrap());
    assert!(ignored(&reply).contains("has no branch"), "{}", reply.body);
}

/// GitHub sends a run that waits for approval as `requested` with the status `completed`:
/// only the delivery of its `completed` action is the finished run (`event: ci` fires once).
#[test]
fn a_requested_workflow_run_is_not_a_finished_ci_run() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings("  after-ci:\n    match: { event: ci }\n    ACTIONS\n");
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    let headers =
        json_headers(&[("X-GitHub-Event", "workflow_run"), ("X-Hub-Signature-256", "SIGNED-BY-RUN.PY")]);
    for name in ["github/workflow_run-requested-action-required.json", "github/workflow_run-requested.json"] {
        let body = std::fs::read(fixtures().join(name)).unwrap();
        let reply = send_body(&daemon, &headers, &body);
        assert!(ignored(&reply).contains("workflow_run"), "{name}: {}", reply.body);
    }
    let body = std::fs::read(fixtures().join("github/workflow_run-completed.json")).unwrap();
    let jobs = ran(&daemon, &send_body(&daemon, &headers, &body));
    assert_eq!(jobs[0].1["WH_EVENT"], "ci");
}

/// `action: closed` means closed without merging, on every host: GitHub, Gitea and Gogs call a
/// merge `closed`, and the normalised word wins over theirs. A host's own word that differs
/// (GitLab's `close`) still matches as written.
#[test]
fn closed_never_matches_a_merged_pull_request() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(
        "  closed:\n    match: { event: pull_request, action: closed }\n    ACTIONS\n\
         \x20 close:\n    match: { event: pull_request, action: close }\n    ACTIONS\n",
    );
    let daemon = Daemon::with_settings(dir.path(), &yaml, &[]);
    for name in ["github/pull_request-closed-merged.json", "gitea/pull_request-closed-merged.json"] {
        let req = crate::common::request(name);
        let body = ignored(&send_body(&daemon, &req.headers, &req.body));
        assert!(body.contains("action is merged (closed), the entry wants closed"), "{name}: {body}");
    }
    let req = crate::common::request("github/pull_request-closed.json");
    let jobs = ran(&daemon, &send_body(&daemon, &req.headers, &req.body));
    assert_eq!(jobs.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["closed"]);
    let req = crate::common::request("gitlab/merge_request-closed.json");
    let jobs = ran(&daemon, &send_body(&daemon, &req.headers, &req.body));
    let mut names: Vec<&str> = jobs.iter().map(|(e, _)| e.as_str()).collect();
    names.sort();
    assert_eq!(names, ["close", "closed"]);
}
