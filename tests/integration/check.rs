//! `wh-automatad --check`: accepts the shipped settings and rules, rejects broken ones naming
//! the file, the entry, the line and the problem.

use std::path::Path;
use std::process::Command;

use crate::common::bin;

/// Runs `wh-automatad --check` on `path` with a known environment; returns (success, stderr).
fn check(path: &Path, dir: &Path) -> (bool, String) {
    let out = Command::new(bin("wh-automatad"))
        .arg("--check")
        .arg(path)
        .current_dir(dir)
        .env_clear()
        .env("WEBHOOK_SECRET", "s")
        .env("SITE_SECRET", "s")
        .env("APP_SECRET", "s")
        .env("WWW_SECRET", "s")
        .env("RELEASE_SECRET", "s")
        .env("NODE_SECRET", "s")
        .env("SET_VAR", "s")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn example_settings_and_every_rule_file_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, err) = check(&root.join("settings.example.yaml"), root);
    assert!(ok, "{err}");
    let mut rules = 0;
    for file in std::fs::read_dir(root.join("rules")).unwrap() {
        let file = file.unwrap().path();
        let (ok, err) = check(&file, root);
        assert!(ok, "{}: {err}", file.display());
        rules += 1;
    }
    assert!(rules >= 8);
}

/// Each broken file and what `--check` must say about it (every fragment must appear).
const BROKEN: &[(&str, &str, &[&str])] = &[
    (
        "unknown key",
        "entries:\n  blog:\n    secret: x\n    actions: [\"true\"]\n    acions: [x]\n",
        // At the bad key, not at the entry's first line.
        &["settings.yaml:5: entry \"blog\"", "unknown field `acions`"],
    ),
    (
        "bad regex",
        "entries:\n  blog:\n    match: { branch: \"^(main\" }\n    secret: x\n    actions: [\"true\"]\n",
        &["settings.yaml:3: entry \"blog\"", "match.branch is not a valid regex"],
    ),
    (
        "unknown provider",
        "entries:\n  blog:\n    match: { provider: gitbucket }\n    secret: x\n    actions: [\"true\"]\n",
        &["entry \"blog\"", "unknown provider \"gitbucket\""],
    ),
    (
        "not an event name",
        "entries:\n  blog:\n    match: { event: [push, \"push!\"] }\n    secret: x\n    actions: [\"true\"]\n",
        &["entry \"blog\"", "\"push!\" is not an event name"],
    ),
    (
        "no secret",
        "entries:\n  blog:\n    actions: [\"true\"]\n",
        &["settings.yaml:2", "entry \"blog\"", "no secret", "insecure: true"],
    ),
    (
        "unset variable",
        "entries:\n  blog:\n    secret: ${NOT_SET_ANYWHERE}\n    actions: [\"true\"]\n",
        &["entry \"blog\"", "NOT_SET_ANYWHERE is not set"],
    ),
    (
        "no actions",
        "entries:\n  blog:\n    secret: x\n",
        &["entry \"blog\"", "no actions"],
    ),
    (
        "include matches nothing",
        "include: [nothing/*.yaml]\nentries:\n  blog:\n    secret: x\n    actions: [\"true\"]\n",
        &["settings.yaml", "include \"nothing/*.yaml\" matches no file"],
    ),
    (
        "duplicate in one file",
        "entries:\n  blog:\n    secret: x\n    actions: [\"true\"]\n  blog:\n    secret: y\n    actions: [\"false\"]\n",
        &["settings.yaml:5", "entry \"blog\"", "defined twice", "lines 2, 5"],
    ),
    (
        "duplicate across files",
        "include: [rules/*.yaml]\nentries:\n  blog:\n    secret: x\n    actions: [\"true\"]\n",
        &["rules/more.yaml:3", "entry \"blog\"", "already defined in", "settings.yaml:3"],
    ),
    (
        "bad durations and sizes",
        "server:\n  max_body: lots\nentries:\n  blog:\n    secret: x\n    timeout: soon\n    actions: [\"true\"]\n",
        &["server: max_body", "entry \"blog\"", "timeout"],
    ),
    (
        "bad entry name",
        "entries:\n  \"my blog\":\n    secret: x\n    actions: [\"true\"]\n",
        &["entry \"my blog\"", "name may only hold"],
    ),
    (
        "not yaml",
        "entries:\n  blog: [\n",
        &["settings.yaml"],
    ),
    (
        "a notification target of two kinds",
        "notify:\n  ok: { slack: \"https://hooks.example.com/a\" }\n  team:\n    slack: \"https://hooks.example.com/a\"\n    discord: \"https://discord.example.com/b\"\nentries:\n  blog:\n    secret: x\n    actions: [\"true\"]\n",
        &["settings.yaml:3: notify.team: one kind per target, not slack and discord"],
    ),
    (
        "a bad timeout, at its line",
        "entries:\n  blog:\n    secret: x\n    timeout: forever\n    actions: [\"true\"]\n",
        &["settings.yaml:4: entry \"blog\": timeout"],
    ),
    (
        "a state_dir too long for the control socket",
        "server:\n  state_dir: /var/lib/wh-automata/a-directory-name-that-goes-on-and-on/and-on-and-on/and-on/until-it-is-too-long\nentries:\n  blog:\n    secret: x\n    actions: [\"true\"]\n",
        &["state_dir /var/lib/wh-automata/a-directory", "a Unix socket's path holds at most 107", "choose a shorter state_dir"],
    ),
];

#[test]
fn broken_settings_are_refused_with_file_entry_line_and_problem() {
    for (what, yaml, fragments) in BROKEN {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("settings.yaml"), yaml).unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(
            dir.path().join("rules/more.yaml"),
            "# more\nentries:\n  blog:\n    secret: z\n    actions: [\"true\"]\n",
        )
        .unwrap();
        let (ok, err) = check(Path::new("settings.yaml"), dir.path());
        assert!(!ok, "{what}: accepted");
        for f in *fragments {
            assert!(err.contains(f), "{what}: {f:?} missing from:\n{err}");
        }
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "entries:\n  a:\n    match: { branch: \"(\" }\n    secret: x\n    actions: [\"true\"]\n  b:\n    actions: [\"true\"]\n  c:\n    secret: x\n",
    )
    .unwrap();
    let (ok, err) = check(Path::new("settings.yaml"), dir.path());
    assert!(!ok);
    for f in ["entry \"a\"", "entry \"b\"", "entry \"c\"", "3 problem(s)"] {
        assert!(err.contains(f), "{f:?} missing from:\n{err}");
    }
}

#[test]
fn secret_file_and_insecure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "from-a-file\n").unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "entries:\n  a:\n    secret_file: secret\n    actions: [\"true\"]\n  b:\n    insecure: true\n    actions: [\"true\"]\n",
    )
    .unwrap();
    let (ok, err) = check(Path::new("settings.yaml"), dir.path());
    assert!(ok, "{err}");
    assert!(
        err.contains("entry \"b\": insecure: true: its webhooks are not authenticated"),
        "a warning: {err}"
    );
    assert!(!err.contains("entry \"a\": insecure"), "{err}");
    let settings = wh_automata::settings::load(&dir.path().join("settings.yaml")).unwrap();
    let a = settings.entry("a").unwrap();
    assert_eq!(a.secret.as_ref().unwrap().expose(), b"from-a-file");
    assert!(!format!("{a:?}").contains("from-a-file"), "Debug must not show a secret");
    assert!(settings.entry("b").unwrap().secret.is_none());
    std::fs::remove_file(dir.path().join("secret")).unwrap();
    let (ok, err) = check(Path::new("settings.yaml"), dir.path());
    assert!(!ok && err.contains("secret_file"), "{err}");
}
