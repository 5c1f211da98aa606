//! The shape of the code, as ARCHITECTURE.md draws it: no file under `src/` over 600 lines,
//! every host's name only in its adapter (and the one enum of host names), and each module
//! importing only from its own layer or the layers below it, with no circle between files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first (ARCHITECTURE.md): a module may import from its layer or below.
const LAYERS: &[&[&str]] = &[
    &["daemon", "trigger", "preflight"],
    &["server", "control", "reload", "worker", "outbox_sender", "poller"],
    &["app", "metrics"],
    &["telling"],
    &["intake"],
    &["jobs"],
    &["store"],
    &["settings"],
    &["matcher"],
    &["providers"],
    &["secrets"],
    &[
        "event",
        "allow",
        "admission",
        "forwarded",
        "printable",
        "metrics_format",
        "refusal_log",
        "warn_limit",
        "outbound",
        "run_as",
        "env_file",
        "signals",
        "systemd",
        "cli",
    ],
];

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// A file's module path (`jobs::queue`), from its place under `src/`.
fn module_of(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap().with_extension("");
    let text = rel.to_string_lossy().replace('/', "::");
    text.strip_suffix("::mod").unwrap_or(&text).to_string()
}

/// The code of a file without its unit tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

#[test]
fn no_file_under_src_is_over_600_lines() {
    for path in sources() {
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 600, "{}: {lines} lines", path.display());
    }
}

#[test]
fn only_the_adapters_name_a_host() {
    let literal = regex::Regex::new(r#""(?:[^"\\\n]|\\.)*""#).unwrap();
    let host = regex::Regex::new(r"(?i)github|gitlab|gogs|gitea|forgejo|bitbucket").unwrap();
    let mut checked = 0;
    for path in sources() {
        let module = module_of(&path);
        if module.starts_with("providers") || module == "event" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")) {
            for text in literal.find_iter(line) {
                assert!(!host.is_match(text.as_str()), "{}:{}: {line}", path.display(), n + 1);
            }
        }
        checked += 1;
    }
    assert!(checked > 50);
}

#[test]
fn each_module_imports_only_from_its_layer_or_below_and_no_two_files_import_each_other() {
    let layer_of = |module: &str| {
        let top = module.split("::").next().unwrap();
        LAYERS.iter().position(|l| l.contains(&top))
    };
    let files: BTreeMap<String, String> =
        sources().into_iter().map(|p| (module_of(&p), code(&p))).filter(|(m, _)| m != "lib").collect();
    let uses = regex::Regex::new(r"crate::((?:\w+::)*\w+)").unwrap();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, text) in &files {
        let from = layer_of(module).unwrap_or_else(|| panic!("{module} is in no layer of ARCHITECTURE.md"));
        for used in uses.captures_iter(text) {
            let path = &used[1];
            // The longest module that the path names.
            let Some(target) = files
                .keys()
                .filter(|m| path == m.as_str() || path.starts_with(&format!("{m}::")))
                .max_by_key(|m| m.len())
            else {
                continue;
            };
            if target == module || module.starts_with(&format!("{target}::")) {
                continue;
            }
            let to = layer_of(target).unwrap_or_else(|| panic!("{target} is in no layer of ARCHITECTURE.md"));
            assert!(to >= from, "{module} (layer {from}) imports {target} (layer {to}), a layer above it");
            edges.entry(module).or_default().insert(target);
        }
    }
    // No circle: every module can be put after everything it imports.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < files.len() {
        let ready: Vec<&str> = files
            .keys()
            .map(String::as_str)
            .filter(|m| !done.contains(m))
            .filter(|m| edges.get(m).is_none_or(|to| to.iter().all(|t| done.contains(t))))
            .collect();
        assert!(
            !ready.is_empty(),
            "a circle of imports among: {:?}",
            files.keys().filter(|m| !done.contains(m.as_str())).collect::<Vec<_>>()
        );
        done.extend(ready);
    }
}
