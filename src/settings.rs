//! The settings file, in two phases.
//!
//! Phase one reads what was typed: serde structs that refuse unknown keys, one per YAML file
//! (the settings file and every file its `include:` globs name). Phase two compiles that into a
//! validated [`Settings`]: regexes and globs compiled, durations and sizes parsed, secrets
//! resolved from the environment or a file, relative paths made absolute. Every problem found is
//! collected, with file, entry and line where known, so a user fixes them all in one pass.
//! This module never touches the network or the job store; it only reads files and the
//! environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::event::{EventKind, Provider};

/// One thing wrong with the settings, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub entry: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show paths under the current directory as the user typed them: relative.
        let cwd = std::env::current_dir().unwrap_or_default();
        let shown = self.file.strip_prefix(&cwd).unwrap_or(&self.file);
        write!(f, "{}", shown.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(entry) = &self.entry {
            write!(f, "entry \"{entry}\": ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found while loading settings; never empty.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

// ---------------------------------------------------------------------------------------------
// Phase one: what was typed.
// ---------------------------------------------------------------------------------------------

/// A settings file, or a file of rules it includes (which holds `entries:` only).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wh-automata settings")]
struct RawFile {
    /// The daemon's own settings (in the main settings file only).
    server: Option<RawServer>,
    /// Globs of rule files holding more `entries:`, relative to this file; each must match a file.
    #[serde(default)]
    include: Vec<String>,
    /// The entries, by name (unique across all files).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, RawEntry>>")]
    entries: Option<serde_yaml::Mapping>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Address and port to listen on (default 127.0.0.1:8970); put a reverse proxy in front for TLS.
    listen: Option<String>,
    /// Route prefix (default /hooks): POST /hooks routes by matchers, POST /hooks/<entry> targets one entry.
    path: Option<String>,
    /// Jobs that may run at once (default 2); never two of one entry.
    #[schemars(range(min = 1))]
    workers: Option<usize>,
    /// Jobs that may wait (default 100); beyond that the answer is 503 with Retry-After.
    #[schemars(range(min = 1))]
    queue: Option<usize>,
    /// Largest request body (default 1 MiB); larger ones get 413 before being read.
    #[schemars(example = &"1 MiB")]
    max_body: Option<String>,
    /// Job database and job logs (default ./state), relative to this file.
    state_dir: Option<PathBuf>,
    /// Connections served at once (default 256); more wait to be accepted.
    #[schemars(range(min = 1))]
    max_connections: Option<usize>,
    /// Time a client has to send its request headers (default 10s).
    #[schemars(example = &"10s")]
    header_timeout: Option<String>,
    /// Largest job log (default 1 MiB); the rest of the output is dropped.
    log_limit: Option<String>,
    /// How long running jobs may go on after SIGTERM before their process groups are killed (default 30s).
    shutdown_grace: Option<String>,
}

/// One entry: which events it accepts, how they are authenticated, and the actions they run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    /// Which events run this entry (default: any provider, any repo, any branch, push).
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    /// The webhook secret, as set on the git host; `${VAR}` reads the environment.
    secret: Option<String>,
    /// A file holding the webhook secret (relative to this file).
    secret_file: Option<PathBuf>,
    /// Accept requests without any secret check. Only for tests on a trusted network.
    #[serde(default)]
    insecure: bool,
    /// Also accept GitHub's legacy SHA-1 signature (X-Hub-Signature).
    #[serde(default)]
    allow_sha1: bool,
    /// Where the actions run (default: the directory of this file).
    workdir: Option<PathBuf>,
    /// More environment variables for the actions; `${VAR}` reads the environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Variables of the daemon's environment passed to the actions by name (SSH_AUTH_SOCK, ...).
    #[serde(default)]
    inherit_env: Vec<String>,
    /// Time limit for the whole job (default 10m); then its process groups are killed.
    #[schemars(example = &"10m")]
    timeout: Option<String>,
    /// Shell commands run in order with `sh -c`; the first failure stops the job.
    #[serde(default)]
    actions: Option<RawActions>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    /// The git host (default any).
    #[schemars(extend("enum" = ["github", "gitlab", "gogs", "gitea", "forgejo", "bitbucket", "any"]))]
    provider: Option<String>,
    /// owner/name (GitLab: the whole namespace path); a glob (acme/*) is allowed.
    repo: Option<String>,
    /// A regular expression on the branch name (^main$).
    branch: Option<String>,
    /// A regular expression on the tag name (^v[0-9]+).
    tag: Option<String>,
    /// push, tag, delete, pull_request, ping, or a provider's own event name; one or a list (default push).
    event: Option<OneOrMany>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
enum RawActions {
    One(String),
    Many(Vec<RawAction>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
enum RawAction {
    /// A shell command.
    Command(String),
    Step(RawStep),
}

/// A shell command that may run only when some files changed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawStep {
    /// The shell command.
    run: String,
    /// Globs of files: the step runs only when the event changed a matching file (or did not list its files).
    #[serde(default)]
    if_changed: Option<OneOrMany>,
}

/// The JSON Schema of settings and rule files (JSON Schema draft 7, which YAML language
/// servers read), as kept in `settings.schema.json`.
pub fn json_schema() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<RawFile>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

// ---------------------------------------------------------------------------------------------
// Phase two: what the daemon uses.
// ---------------------------------------------------------------------------------------------

/// Validated, compiled settings. Held as an `Arc` snapshot and swapped whole on reload.
#[derive(Debug)]
pub struct Settings {
    /// The settings file itself (absolute).
    pub source: PathBuf,
    /// Every file that was read (settings file first, then included files).
    pub files: Vec<PathBuf>,
    /// Directories and patterns whose changes may change the set of included files.
    pub include_globs: Vec<PathBuf>,
    pub server: Server,
    pub entries: Vec<Arc<Entry>>,
    /// Entries by name and by repository, so that finding the entries of a request does not
    /// grow with their number.
    index: Index,
}

/// The `server:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: String,
    /// Route prefix without a trailing slash (`/hooks`).
    pub path: String,
    pub workers: usize,
    pub queue: usize,
    pub max_body: u64,
    pub state_dir: PathBuf,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Cap on each job's log file.
    pub log_limit: u64,
    /// How long running jobs may go on after SIGTERM before their process groups are killed.
    pub shutdown_grace: Duration,
}

/// A webhook secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One entry: a matcher, how to authenticate, and the actions to run.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub matcher: Matcher,
    /// `None` only for entries marked `insecure: true`.
    pub secret: Option<Secret>,
    pub allow_sha1: bool,
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    pub inherit_env: Vec<String>,
    pub timeout: Duration,
    pub actions: Vec<Action>,
}

/// What an entry accepts.
#[derive(Debug)]
pub struct Matcher {
    pub provider: Option<Provider>,
    pub repo: Option<(String, GlobMatcher)>,
    pub branch: Option<Regex>,
    pub tag: Option<Regex>,
    pub events: Vec<EventName>,
}

/// An event name as written in `match.event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventName {
    /// One of the normalised kinds (push, tag, delete, pull_request, ping).
    Kind(EventKind),
    /// A provider's own event name, matched as written (`release`, `issues`, ...).
    Native(String),
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventName::Kind(k) => f.write_str(k.as_str()),
            EventName::Native(n) => f.write_str(n),
        }
    }
}

/// One step of an entry.
#[derive(Debug)]
pub struct Action {
    pub run: String,
    /// Run only when one of the changed files matches (or when they are not fully known).
    pub if_changed: Option<(Vec<String>, GlobSet)>,
}

/// Provider event names that may be matched as written, besides the normalised kinds.
/// A name outside this list is almost always a typo, so it is refused.
const NATIVE_EVENTS: &[&str] = &[
    // GitHub, Gogs, Gitea/Forgejo (X-*-Event values)
    "create",
    "release",
    "issues",
    "issue_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "workflow_run",
    "workflow_job",
    "workflow_dispatch",
    "check_run",
    "check_suite",
    "deployment",
    "deployment_status",
    "status",
    "fork",
    "gollum",
    "member",
    "public",
    "repository",
    "star",
    "watch",
    "package",
    "registry_package",
    "page_build",
    "commit_comment",
    "label",
    "milestone",
    "wiki",
    // GitLab (object_kind values)
    "tag_push",
    "merge_request",
    "issue",
    "note",
    "pipeline",
    "build",
    "wiki_page",
    "deployment",
    "feature_flag",
    "release",
    "emoji",
    "access_token",
    // Bitbucket Cloud and Server (X-Event-Key values)
    "repo:push",
    "repo:fork",
    "repo:updated",
    "repo:commit_comment_created",
    "repo:commit_status_created",
    "repo:commit_status_updated",
    "repo:refs_changed",
    "repo:modified",
    "repo:forked",
    "repo:comment:added",
    "issue:created",
    "issue:updated",
    "issue:comment_created",
    "mirror:repo_synchronized",
    "diagnostics:ping",
];

/// Bitbucket's pull request event keys are matched by prefix.
const NATIVE_PREFIXES: &[&str] = &["pullrequest:", "pr:"];

impl EventName {
    fn parse(s: &str) -> Option<EventName> {
        if let Some(kind) = EventKind::from_name(s) {
            return Some(EventName::Kind(kind));
        }
        if NATIVE_EVENTS.contains(&s) || NATIVE_PREFIXES.iter().any(|p| s.starts_with(p)) {
            return Some(EventName::Native(s.to_string()));
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Default values of the `server:` section.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8970";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Reads, validates and compiles the settings file at `path` and every file it includes.
/// Environment variables (`${VAR}`) are read from the process environment.
pub fn load(path: &Path) -> Result<Settings, Problems> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment lookup, for tests.
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Problems> {
    let mut problems = Vec::new();
    let source = absolute(path);
    let base = source.parent().map(Path::to_path_buf).unwrap_or_default();

    let text = match std::fs::read_to_string(&source) {
        Ok(t) => t,
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: source,
                line: None,
                entry: None,
                message: format!("cannot read: {e}"),
            }]))
        }
    };
    let Some(main) = parse_file(&source, &text, &mut problems) else {
        return Err(Problems(problems));
    };

    let server = compile_server(&source, &base, main.server.as_ref(), &mut problems);

    // Gather (file, raw entries) from the main file and the includes, in order.
    let mut files = vec![source.clone()];
    let mut include_globs = Vec::new();
    let mut sources: Vec<(PathBuf, String, Option<serde_yaml::Mapping>)> =
        vec![(source.clone(), text, main.entries)];
    for pattern in &main.include {
        let full = base.join(pattern);
        include_globs.push(full.clone());
        let matched = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => {
                let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                found.sort();
                found
            }
            Err(e) => {
                problems.push(problem(&source, None, None, format!("include \"{pattern}\": bad glob: {e}")));
                continue;
            }
        };
        if matched.is_empty() {
            problems.push(problem(&source, None, None, format!("include \"{pattern}\" matches no file")));
        }
        for file in matched {
            if files.contains(&file) {
                continue;
            }
            files.push(file.clone());
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(problem(&file, None, None, format!("cannot read: {e}")));
                    continue;
                }
            };
            let Some(raw) = parse_file(&file, &text, &mut problems) else {
                continue;
            };
            if raw.server.is_some() {
                problems.push(problem(
                    &file,
                    None,
                    None,
                    "`server:` belongs in the main settings file, not in an included file".into(),
                ));
            }
            if !raw.include.is_empty() {
                problems.push(problem(
                    &file,
                    None,
                    None,
                    "`include:` is only read in the main settings file".into(),
                ));
            }
            sources.push((file, text, raw.entries));
        }
    }

    // Entries, with duplicate names refused across (and within) files.
    let mut seen: HashMap<String, (PathBuf, Option<usize>)> = HashMap::new();
    let mut entries = Vec::new();
    for (file, text, mapping) in sources {
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let lines = entry_lines(&text);
        let Some(mapping) = mapping else { continue };
        for (key, value) in mapping {
            let Some(name) = key.as_str().map(str::to_string) else {
                problems.push(problem(
                    &file,
                    None,
                    None,
                    format!("entry name must be a string, got {key:?}"),
                ));
                continue;
            };
            let line = lines.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);
            if let Some((other, other_line)) = seen.get(&name) {
                if *other != file {
                    let at = match other_line {
                        Some(l) => format!("{}:{l}", other.display()),
                        None => other.display().to_string(),
                    };
                    problems.push(problem(&file, line, Some(&name), format!("already defined in {at}")));
                }
                continue;
            }
            seen.insert(name.clone(), (file.clone(), line));
            if !valid_entry_name(&name) {
                problems.push(problem(
                    &file,
                    line,
                    Some(&name),
                    "name may only hold letters, digits, '.', '_' and '-' (it is part of the URL)".into(),
                ));
            }
            let raw: RawEntry = match serde_yaml::from_value(value) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(problem(&file, line, Some(&name), e.to_string()));
                    continue;
                }
            };
            let before = problems.len();
            let entry = compile_entry(&name, &file, line, &dir, raw, env, &mut problems);
            if problems.len() == before {
                entries.push(Arc::new(entry));
            }
        }
    }

    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let index = Index::of(&entries);
    Ok(Settings { source, files, include_globs, server, entries, index })
}

fn join_lines(at: &[usize]) -> String {
    at.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

fn problem(file: &Path, line: Option<usize>, entry: Option<&str>, message: String) -> Problem {
    Problem { file: file.to_path_buf(), line, entry: entry.map(str::to_string), message }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

fn parse_file(file: &Path, text: &str, problems: &mut Vec<Problem>) -> Option<RawFile> {
    // Equal entry names in one file are found in the text itself, with both lines: depending
    // on the version, the YAML parser either refuses them vaguely or keeps only the last one.
    let mut at: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, line) in entry_lines(text) {
        at.entry(name).or_default().push(line);
    }
    let mut duplicates = false;
    for (name, lines) in at.iter().filter(|(_, lines)| lines.len() > 1) {
        duplicates = true;
        problems.push(problem(
            file,
            Some(lines[1]),
            Some(name),
            format!("defined twice in this file (lines {})", join_lines(lines)),
        ));
    }
    if text.trim().is_empty() {
        return Some(RawFile { server: None, include: Vec::new(), entries: None });
    }
    match serde_yaml::from_str::<RawFile>(text) {
        Ok(raw) => Some(raw),
        Err(e) if duplicates && e.to_string().contains("duplicate") => None,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            problems.push(problem(file, line, None, e.to_string()));
            None
        }
    }
}

fn valid_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The names and 1-based lines of the keys directly under the top-level `entries:` mapping,
/// in order, duplicates included. A small scan of the text: the YAML parser does not report
/// where a key was, and silently keeps the last of two equal keys.
fn entry_lines(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut in_entries = false;
    let mut indent: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let content = raw.trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let level = content.len() - trimmed.len();
        if level == 0 {
            in_entries = trimmed.starts_with("entries:");
            indent = None;
            continue;
        }
        if !in_entries {
            continue;
        }
        let want = *indent.get_or_insert(level);
        if level != want {
            continue;
        }
        if let Some(name) = key_of(trimmed) {
            out.push((name, i + 1));
        }
    }
    out
}

/// The key of a `key: value` line, unquoted.
fn key_of(line: &str) -> Option<String> {
    let (key, _) = if let Some(rest) = line.strip_prefix('"') {
        let end = rest.find('"')?;
        return Some(rest[..end].to_string());
    } else if let Some(rest) = line.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return Some(rest[..end].to_string());
    } else {
        line.split_once(':')?
    };
    Some(key.trim().to_string())
}

fn compile_server(file: &Path, base: &Path, raw: Option<&RawServer>, problems: &mut Vec<Problem>) -> Server {
    let mut server = Server {
        listen: DEFAULT_LISTEN.to_string(),
        path: "/hooks".to_string(),
        workers: 2,
        queue: 100,
        max_body: 1024 * 1024,
        state_dir: base.join("state"),
        max_connections: 256,
        header_timeout: Duration::from_secs(10),
        log_limit: 1024 * 1024,
        shutdown_grace: Duration::from_secs(30),
    };
    let Some(raw) = raw else { return server };
    let mut bad = |message: String| problems.push(problem(file, None, None, format!("server: {message}")));
    if let Some(listen) = &raw.listen {
        if listen.parse::<SocketAddr>().is_err() {
            bad(format!("listen \"{listen}\" is not an address like 127.0.0.1:8970"));
        }
        server.listen = listen.clone();
    }
    if let Some(path) = &raw.path {
        let trimmed = path.trim_end_matches('/');
        if !path.starts_with('/') || trimmed.contains("//") || trimmed.contains(['?', '#', ' ']) {
            bad(format!("path \"{path}\" must be a URL path starting with '/'"));
        }
        server.path = trimmed.to_string();
    }
    if let Some(workers) = raw.workers {
        if workers == 0 || workers > 1024 {
            bad(format!("workers must be between 1 and 1024, not {workers}"));
        }
        server.workers = workers;
    }
    if let Some(queue) = raw.queue {
        if queue == 0 || queue > 1_000_000 {
            bad(format!("queue must be between 1 and 1000000, not {queue}"));
        }
        server.queue = queue;
    }
    if let Some(max) = raw.max_connections {
        if max == 0 {
            bad("max_connections must be at least 1".into());
        }
        server.max_connections = max;
    }
    for (name, value, slot) in [
        ("max_body", &raw.max_body, &mut server.max_body),
        ("log_limit", &raw.log_limit, &mut server.log_limit),
    ] {
        if let Some(v) = value {
            match parse_size(v) {
                Ok(n) if n > 0 => *slot = n,
                Ok(_) => bad(format!("{name} must be more than 0")),
                Err(e) => bad(format!("{name}: {e}")),
            }
        }
    }
    for (name, value, slot) in [
        ("header_timeout", &raw.header_timeout, &mut server.header_timeout),
        ("shutdown_grace", &raw.shutdown_grace, &mut server.shutdown_grace),
    ] {
        if let Some(v) = value {
            match parse_duration(v) {
                Ok(d) => *slot = d,
                Err(e) => bad(format!("{name}: {e}")),
            }
        }
    }
    if let Some(dir) = &raw.state_dir {
        server.state_dir = base.join(dir);
    }
    server
}

fn compile_entry(
    name: &str,
    file: &Path,
    line: Option<usize>,
    dir: &Path,
    raw: RawEntry,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Entry {
    let mut bad = |message: String| problems.push(problem(file, line, Some(name), message));

    // match
    let provider = match raw.matcher.provider.as_deref() {
        None | Some("any") => None,
        Some(p) => match Provider::from_name(p) {
            Some(p) => Some(p),
            None => {
                bad(format!("unknown provider \"{p}\" (github, gitlab, gogs, gitea, bitbucket or any)"));
                None
            }
        },
    };
    let repo = raw.matcher.repo.as_ref().and_then(|pattern| {
        match globset::GlobBuilder::new(pattern).literal_separator(true).build() {
            Ok(g) => Some((pattern.clone(), g.compile_matcher())),
            Err(e) => {
                bad(format!("match.repo \"{pattern}\": {e}"));
                None
            }
        }
    });
    let mut regex_of = |field: &str, value: &Option<String>| {
        value.as_ref().and_then(|pattern| match Regex::new(pattern) {
            Ok(r) => Some(r),
            Err(e) => {
                bad(format!("match.{field} is not a valid regex: {e}"));
                None
            }
        })
    };
    let branch = regex_of("branch", &raw.matcher.branch);
    let tag = regex_of("tag", &raw.matcher.tag);
    let names = match raw.matcher.event {
        None => vec!["push".to_string()],
        Some(OneOrMany::One(e)) => vec![e],
        Some(OneOrMany::Many(list)) => list,
    };
    let mut events = Vec::new();
    if names.is_empty() {
        bad("match.event is an empty list: the entry could never run".into());
    }
    for n in names {
        match EventName::parse(&n) {
            Some(e) => events.push(e),
            None => bad(format!(
                "unknown event \"{n}\" (push, tag, delete, pull_request, ping, or a provider's own event name)"
            )),
        }
    }

    // secret
    let secret = match (&raw.secret, &raw.secret_file) {
        (Some(_), Some(_)) => {
            bad("give either `secret` or `secret_file`, not both".into());
            None
        }
        (Some(s), None) => match expand(s, env) {
            Ok(v) if v.is_empty() => {
                bad("secret is empty".into());
                None
            }
            Ok(v) => Some(Secret(v)),
            Err(e) => {
                bad(format!("secret: {e}"));
                None
            }
        },
        (None, Some(path)) => {
            let path = dir.join(path);
            match std::fs::read_to_string(&path) {
                Ok(v) => {
                    let v = v.trim_end_matches(['\n', '\r']).to_string();
                    if v.is_empty() {
                        bad(format!("secret_file {} is empty", path.display()));
                        None
                    } else {
                        Some(Secret(v))
                    }
                }
                Err(e) => {
                    bad(format!("secret_file {}: {e}", path.display()));
                    None
                }
            }
        }
        (None, None) => {
            if !raw.insecure {
                bad("no secret: set `secret` or `secret_file`, or say `insecure: true` to accept unsigned requests".into());
            }
            None
        }
    };
    if raw.insecure && (raw.secret.is_some() || raw.secret_file.is_some()) {
        bad("`insecure: true` and a secret contradict each other: remove one".into());
    }

    let workdir = match &raw.workdir {
        Some(w) => dir.join(w),
        None => dir.to_path_buf(),
    };

    let mut env_vars = Vec::new();
    for (key, value) in &raw.env {
        if !valid_env_name(key) {
            bad(format!("env: \"{key}\" is not a valid variable name"));
        } else if key.starts_with("WH_") {
            bad(format!("env: \"{key}\": names starting with WH_ are set by wh-automata"));
        }
        match expand(value, env) {
            Ok(v) => env_vars.push((key.clone(), v)),
            Err(e) => bad(format!("env.{key}: {e}")),
        }
    }
    for key in &raw.inherit_env {
        if !valid_env_name(key) {
            bad(format!("inherit_env: \"{key}\" is not a valid variable name"));
        }
    }

    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => match parse_duration(t) {
            Ok(d) if d.is_zero() => {
                bad("timeout must be more than 0".into());
                DEFAULT_TIMEOUT
            }
            Ok(d) => d,
            Err(e) => {
                bad(format!("timeout: {e}"));
                DEFAULT_TIMEOUT
            }
        },
    };

    let raw_actions = match raw.actions {
        None => Vec::new(),
        Some(RawActions::One(s)) => vec![RawAction::Command(s)],
        Some(RawActions::Many(list)) => list,
    };
    let mut actions = Vec::new();
    for (i, a) in raw_actions.into_iter().enumerate() {
        let (run, if_changed) = match a {
            RawAction::Command(run) => (run, None),
            RawAction::Step(step) => (step.run, step.if_changed),
        };
        if run.trim().is_empty() {
            bad(format!("action {} is empty", i + 1));
            continue;
        }
        let if_changed = match if_changed {
            None => None,
            Some(list) => {
                let patterns = match list {
                    OneOrMany::One(p) => vec![p],
                    OneOrMany::Many(ps) => ps,
                };
                if patterns.is_empty() {
                    bad(format!("action {}: if_changed is an empty list", i + 1));
                }
                let mut builder = GlobSetBuilder::new();
                for p in &patterns {
                    match changed_glob(p) {
                        Ok(globs) => {
                            for g in globs {
                                builder.add(g);
                            }
                        }
                        Err(e) => bad(format!("action {}: if_changed \"{p}\": {e}", i + 1)),
                    }
                }
                match builder.build() {
                    Ok(set) => Some((patterns, set)),
                    Err(e) => {
                        bad(format!("action {}: if_changed: {e}", i + 1));
                        None
                    }
                }
            }
        };
        actions.push(Action { run, if_changed });
    }
    if actions.is_empty() {
        bad("no actions: give at least one command under `actions:`".into());
    }

    Entry {
        name: name.to_string(),
        file: file.to_path_buf(),
        line,
        matcher: Matcher { provider, repo, branch, tag, events },
        secret,
        allow_sha1: raw.allow_sha1,
        workdir,
        env: env_vars,
        inherit_env: raw.inherit_env,
        timeout,
        actions,
    }
}

/// An `if_changed` pattern: a glob on the path from the repository root. A pattern without a
/// `/` also matches that name in any directory (`Dockerfile` matches `app/Dockerfile`), and a
/// directory pattern ending in `/` matches everything under it.
fn changed_glob(pattern: &str) -> Result<Vec<Glob>, globset::Error> {
    let build = |p: &str| globset::GlobBuilder::new(p).literal_separator(true).build();
    let mut out = Vec::new();
    if let Some(dir) = pattern.strip_suffix('/') {
        out.push(build(&format!("{dir}/**"))?);
    } else {
        out.push(build(pattern)?);
        if !pattern.contains('/') {
            out.push(build(&format!("**/{pattern}"))?);
        }
    }
    Ok(out)
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replaces every `${VAR}` with the variable's value. An unset variable is an error: a deploy
/// with an empty secret or path is worse than one that does not start.
pub fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated ${ (write it as ${NAME})".into());
        };
        let name = &after[..end];
        if !valid_env_name(name) {
            return Err(format!("\"${{{name}}}\" is not a valid variable reference"));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `90s`, `10m`, `1h30m`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("\"{text}\" is not a duration like 30s, 10m or 1h"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("\"{text}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            _ => return Err(format!("\"{text}\": unknown unit \"{unit}\" (ms, s, m, h, d)")),
        };
        total += d;
    }
    Ok(total)
}

/// Parses `1 MiB`, `512KiB`, `2MB`, `100k`, or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(format!("\"{text}\" is not a size like 1 MiB or 512 KiB"));
    }
    let n: u64 = s[..digits].parse().map_err(|_| format!("\"{text}\": number too large"))?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("\"{text}\": unknown unit (B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("\"{text}\" is too large"))
}

impl Settings {
    /// The entry called `name`, if any.
    pub fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.index.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The entries whose `match.repo` may accept `repo`: those naming it exactly, and those
    /// with a glob or no repo at all (still to be checked by the matcher), in settings order.
    pub fn entries_for_repo(&self, repo: &str) -> Vec<&Arc<Entry>> {
        let exact = self.index.by_repo.get(repo).map(Vec::as_slice).unwrap_or_default();
        let mut found: Vec<usize> = exact.iter().chain(&self.index.any_repo).copied().collect();
        found.sort_unstable();
        found.into_iter().map(|i| &self.entries[i]).collect()
    }
}

/// See [`Settings::entry`] and [`Settings::entries_for_repo`].
#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<String, usize>,
    /// Entries whose `match.repo` is a literal name.
    by_repo: HashMap<String, Vec<usize>>,
    /// Entries with a repo glob, or none.
    any_repo: Vec<usize>,
}

impl Index {
    fn of(entries: &[Arc<Entry>]) -> Index {
        let mut index = Index::default();
        for (i, entry) in entries.iter().enumerate() {
            index.by_name.insert(entry.name.clone(), i);
            match &entry.matcher.repo {
                Some((pattern, _)) if !pattern.contains(['*', '?', '[', '{', '\\']) => {
                    index.by_repo.entry(pattern.clone()).or_default().push(i);
                }
                _ => index.any_repo.push(i),
            }
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, want) in [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1d", 86400)] {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(want), "{text}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "m", "10 parsecs", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        for (text, want) in
            [("1 MiB", 1 << 20), ("512KiB", 512 << 10), ("2MB", 2_000_000), ("100", 100), ("1 gib", 1 << 30)]
        {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
        for bad in ["", "MiB", "1 parsec", "99999999999999999999 GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expansion() {
        let env = |n: &str| (n == "A").then(|| "x$y".to_string());
        assert_eq!(expand("pre-${A}-post", &env).unwrap(), "pre-x$y-post");
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
        assert!(expand("${B}", &env).unwrap_err().contains("B is not set"));
        assert!(expand("${A", &env).is_err());
        assert!(expand("${1A}", &env).is_err());
    }

    #[test]
    fn entry_lines_sees_duplicates_and_ignores_nested_keys() {
        let text = "server:\n  listen: x\nentries:\n  # comment\n  blog:\n    match:\n      repo: a/b\n  \"site\":\n    actions: x\n  blog:\n    actions: y\n";
        assert_eq!(
            entry_lines(text),
            vec![("blog".to_string(), 5), ("site".to_string(), 8), ("blog".to_string(), 10)]
        );
    }

    #[test]
    fn if_changed_globs() {
        let set = |p: &str| {
            let mut b = GlobSetBuilder::new();
            for g in changed_glob(p).unwrap() {
                b.add(g);
            }
            b.build().unwrap()
        };
        assert!(set("Dockerfile").is_match("Dockerfile"));
        assert!(set("Dockerfile").is_match("app/Dockerfile"));
        assert!(!set("Dockerfile").is_match("Dockerfile.dev"));
        assert!(set("src/").is_match("src/a/b.rs"));
        assert!(!set("src/").is_match("srcx/a"));
        assert!(set("*.lock").is_match("Cargo.lock"));
        assert!(set("web/*.json").is_match("web/package.json"));
        assert!(!set("web/*.json").is_match("web/x/package.json"));
    }
}
