//! Phase two: from what was typed to what the daemon uses. Regexes and globs compiled,
//! durations and sizes parsed, secrets resolved from the environment or a file, relative paths
//! made absolute. Each function adds what is wrong to the problems and goes on, so that every
//! problem is reported at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use globset::{Glob, GlobSetBuilder};

use super::expand::{expand, valid_env_name};
use super::problems::{problem, Problem};
use super::raw::{OneOrMany, Quantity, RawAction, RawEntry, RawServer};
use super::units::{parse_duration, parse_size};
use super::{Action, Entry, Secret, Secrets, Server, DEFAULT_LISTEN, DEFAULT_TIMEOUT};
use crate::allow::Nets;
use crate::matcher::{MatchSpec, Matcher};

/// Where an entry is, for its problems.
pub(super) struct EntryPlace<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub line: Option<usize>,
    /// The directory of the file: relative paths are relative to it.
    pub dir: &'a Path,
    /// The line of each item of the entry's `actions:` list, where the text shows them.
    pub action_lines: Vec<usize>,
    /// The entry's own keys with their lines: a problem of a key is located at it.
    pub key_lines: Vec<(String, usize)>,
    /// The named lists of `networks:` of every settings file.
    pub networks: &'a Networks,
    pub secrets: Secrets,
    /// The notification targets, for the entry's `notify:` to name.
    pub targets: &'a std::collections::BTreeMap<String, std::sync::Arc<super::Target>>,
    /// The hosts and host groups, for the entry's `hosts:` to name.
    pub hosts: &'a super::hosts::HostNames,
}

/// The named lists of addresses of `networks:`, from every settings file.
pub(super) type Networks = std::collections::BTreeMap<String, Vec<String>>;

/// `allow_from` (in `server:` or an entry): `None` for anyone, else its networks. An empty list
/// is refused: `never` says what it would mean.
fn allow_from(
    list: Option<&[String]>,
    networks: &Networks,
    never: &str,
) -> Result<Option<Nets>, Vec<String>> {
    match list {
        None => Ok(None),
        Some([]) => Err(vec![format!("allow_from is an empty list: {never}")]),
        Some(list) => address_list(list, networks)
            .map(Some)
            .map_err(|problems| problems.into_iter().map(|p| format!("allow_from: {p}")).collect()),
    }
}

/// `api.allow_from`: `None` for anyone, else its networks (names of `networks:` lists allowed).
pub(super) fn api_allow_from(list: &[String], networks: &Networks) -> Result<Option<Nets>, Vec<String>> {
    allow_from(Some(list), networks, "no API request could ever arrive")
}

/// The longest path a Unix socket can be bound at (`sun_path` is 108 bytes, with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// An address list (`allow_from`, `trusted_proxies`): addresses, networks, and names of
/// `networks:` lists, which stand for their items.
fn address_list(items: &[String], networks: &Networks) -> Result<Nets, Vec<String>> {
    let mut expanded: Vec<&str> = Vec::new();
    for item in items {
        match networks.get(item) {
            Some(list) => expanded.extend(list.iter().map(String::as_str)),
            None => expanded.push(item),
        }
    }
    Nets::parse(&expanded).map_err(|problems| {
        problems.into_iter().map(|p| format!("{p}, nor the name of a list under networks:")).collect()
    })
}

/// The problems of one entry, each located at the entry.
struct EntryProblems<'a, 'p> {
    place: &'a EntryPlace<'a>,
    problems: &'p mut Vec<Problem>,
}

impl EntryProblems<'_, '_> {
    /// A problem at the line of the key its message names (`timeout: ...`), else at the entry.
    fn bad(&mut self, message: String) {
        let line = super::problems::line_of_message(&self.place.key_lines, &message).or(self.place.line);
        self.problems.push(problem(self.place.file, line, Some(self.place.name), message));
    }

    /// A problem at `line` when it is known, else at the entry.
    fn bad_at(&mut self, line: Option<usize>, message: String) {
        let line = line.or(self.place.line);
        self.problems.push(problem(self.place.file, line, Some(self.place.name), message));
    }
}

pub(super) fn server(
    file: &Path,
    base: &Path,
    raw: Option<&RawServer>,
    networks: &Networks,
    problems: &mut Vec<Problem>,
) -> Server {
    let mut server = Server {
        listen: DEFAULT_LISTEN.to_string(),
        path: "/hooks".to_string(),
        workers: 2,
        releases_kept: 10,
        history: 10_000,
        queue: 100,
        max_body: 1024 * 1024,
        state_dir: base.join("state"),
        max_connections: 256,
        max_connections_per_address: 32,
        trusted_proxies: Nets::loopback(),
        allow_from: None,
        observe_from: Nets::loopback(),
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        log_limit: 1024 * 1024,
        shutdown_grace: Duration::from_secs(30),
        public_url: None,
        ca_file: None,
        notify_retry_for: Duration::from_secs(24 * 3600),
        sendmail: "/usr/sbin/sendmail".into(),
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
    for (name, value, slot, max) in [
        ("workers", raw.workers, &mut server.workers, 1024),
        ("queue", raw.queue, &mut server.queue, 1_000_000),
        ("releases_kept", raw.releases_kept, &mut server.releases_kept, 10_000),
        ("history", raw.history, &mut server.history, 10_000_000),
        ("max_connections", raw.max_connections, &mut server.max_connections, 1_000_000),
        (
            "max_connections_per_address",
            raw.max_connections_per_address,
            &mut server.max_connections_per_address,
            1_000_000,
        ),
    ] {
        match value {
            Some(n) if n == 0 || n > max => bad(format!("{name} must be between 1 and {max}, not {n}")),
            Some(n) => *slot = n,
            None => {}
        }
    }
    for (name, value, slot) in [
        ("max_body", &raw.max_body, &mut server.max_body),
        ("log_limit", &raw.log_limit, &mut server.log_limit),
    ] {
        match value.as_ref().map(|v| parse_size(&v.text())) {
            Some(Ok(0)) => bad(format!("{name} must be more than 0")),
            Some(Ok(n)) => *slot = n,
            Some(Err(e)) => bad(format!("{name}: {e}")),
            None => {}
        }
    }
    for (name, value, slot) in [
        ("header_timeout", &raw.header_timeout, &mut server.header_timeout),
        ("body_timeout", &raw.body_timeout, &mut server.body_timeout),
        ("shutdown_grace", &raw.shutdown_grace, &mut server.shutdown_grace),
        ("notify_retry_for", &raw.notify_retry_for, &mut server.notify_retry_for),
    ] {
        match value.as_ref().map(|v| parse_duration(&v.text())) {
            Some(Ok(d)) => *slot = d,
            Some(Err(e)) => bad(format!("{name}: {e}")),
            None => {}
        }
    }
    if let Some(list) = &raw.observe_from {
        match address_list(list, networks) {
            Ok(nets) => server.observe_from = nets,
            Err(problems) => problems.into_iter().for_each(|p| bad(format!("observe_from: {p}"))),
        }
    }
    if let Some(list) = &raw.trusted_proxies {
        match address_list(list, networks) {
            Ok(nets) => server.trusted_proxies = nets,
            Err(problems) => problems.into_iter().for_each(|p| bad(format!("trusted_proxies: {p}"))),
        }
    }
    match allow_from(raw.allow_from.as_deref(), networks, "no webhook could ever arrive") {
        Ok(nets) => server.allow_from = nets,
        Err(problems) => problems.into_iter().for_each(&mut bad),
    }
    if let Some(dir) = &raw.state_dir {
        server.state_dir = base.join(dir);
    }
    // The control socket lives in state_dir, and a Unix socket's path has room for 107 bytes.
    let socket = server.state_dir.join("control.sock");
    let length = socket.as_os_str().len();
    if length > SOCKET_PATH_MAX {
        bad(format!(
            "state_dir {}: the control socket {} would be {length} bytes long, and a Unix socket's path \
             holds at most {SOCKET_PATH_MAX}: choose a shorter state_dir",
            server.state_dir.display(),
            socket.display()
        ));
    }
    if let Some(url) = &raw.public_url {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) || url.contains(char::is_whitespace) {
            bad(format!("public_url \"{url}\" is not an http:// or https:// URL"));
        }
        server.public_url = Some(url.trim_end_matches('/').to_string());
    }
    if let Some(file) = &raw.ca_file {
        let file = base.join(file);
        if let Err(e) = crate::outbound::read_ca_file(&file) {
            bad(format!("ca_file {}: {e}", file.display()));
        }
        server.ca_file = Some(file);
    }
    if let Some(sendmail) = &raw.sendmail {
        server.sendmail = base.join(sendmail);
    }
    server
}

/// Compiles one entry; `None` when it has problems (they are in `problems`).
pub(super) fn entry(
    place: &EntryPlace<'_>,
    raw: RawEntry,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Entry> {
    let before = problems.len();
    let mut report = EntryProblems { place, problems };
    let matcher = matcher(&raw, &mut report);
    let secret = secret(&raw, env, &mut report);
    let (env_vars, env_secrets) = environment(&raw, env, &mut report);
    for name in &raw.secret_env {
        if !valid_env_name(name) {
            report.bad(format!("secret_env: \"{name}\" is not a valid variable name"));
        }
    }
    let timeout = timeout(raw.timeout.as_ref().map(Quantity::text).as_deref(), &mut report);
    let actions = actions(raw.actions, &mut report);
    let umask = raw
        .umask
        .as_ref()
        .and_then(|value| umask(value).map_err(|why| report.bad(format!("umask: {why}"))).ok());
    let allow_from = allow_from(raw.allow_from.as_deref(), place.networks, "the entry could never run")
        .unwrap_or_else(|problems| {
            problems.into_iter().for_each(|p| report.bad(p));
            None
        });
    let mut told = Vec::new();
    let provider = matcher.as_ref().and_then(|m| m.provider);
    let status = raw
        .status
        .as_ref()
        .and_then(|s| super::telling::status(s, place.name, place.dir, provider, env, &mut told));
    let notify = raw.notify.as_ref().map(|n| super::telling::notify_use(n, place.targets, &mut told));
    let verify = raw.verify.as_ref().and_then(|v| super::undo::verify(v).map_err(|p| told.extend(p)).ok());
    let literal_branch = matcher.as_ref().and_then(|m| m.literal_branch());
    let poll = raw.poll.as_ref().and_then(|p| {
        super::poll::poll(p, raw.remote.as_deref(), literal_branch.as_deref())
            .map_err(|p| told.extend(p))
            .ok()
    });
    if raw.remote.is_some() && raw.poll.is_none() {
        told.push("remote: is read only by poll: (add `poll:`, or remove `remote:`)".into());
    }
    let webhooks = poll.is_none() || secret.is_some() || raw.insecure;
    let rollback =
        super::undo::on_failure(raw.on_failure.as_deref()).map_err(|p| told.push(p)).unwrap_or(false);
    let rollback_actions =
        raw.rollback.and_then(|r| super::undo::rollback_actions(r).map_err(|p| told.extend(p)).ok());
    let (hosts, rollout) =
        super::hosts::entry_hosts(raw.hosts.as_ref(), raw.rollout.as_ref(), place.hosts, &mut told);
    told.into_iter().for_each(|p| report.bad(p));
    if problems.len() > before {
        return None;
    }
    // Every secret the settings know: this entry's, and every target's (an action may print
    // any of them, and all of the daemon's environment is within its reach by inherit_env).
    let mut known: Vec<String> = env_secrets;
    known.extend(secret.as_ref().map(|s| s.expose_str().to_string()));
    known.extend(status.as_ref().map(|s| s.token.expose_str().to_string()));
    for target in place.targets.values() {
        known.extend(super::telling::target_secrets(target));
    }
    let mask = crate::secrets::mask::Mask::new(known);
    Some(Entry {
        name: place.name.to_string(),
        file: place.file.to_path_buf(),
        line: place.line,
        matcher: matcher?,
        secret,
        allow_sha1: raw.allow_sha1,
        workdir: raw.workdir.as_ref().map_or_else(|| place.dir.to_path_buf(), |w| place.dir.join(w)),
        env: env_vars,
        inherit_env: raw.inherit_env,
        timeout,
        actions,
        allow_from,
        skip_deployed: raw.skip_deployed,
        umask,
        mask,
        secret_env: raw.secret_env,
        env_file: raw.env_file,
        status,
        notify,
        verify,
        rollback,
        rollback_actions,
        poll,
        webhooks,
        hosts,
        rollout,
    })
}

/// `umask:` as written: octal digits, quoted ("0022") or not (YAML reads `022` as the number 22,
/// whose digits are the ones meant).
fn umask(value: &serde_yaml::Value) -> Result<u32, String> {
    let digits = match value {
        serde_yaml::Value::String(s) => s.trim().to_string(),
        serde_yaml::Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return Err("octal digits, as \"0022\"".into()),
    };
    let octal = !digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(&digits, 8) {
        Ok(mask) if octal && mask <= 0o777 => Ok(mask),
        _ => Err(format!("{digits:?} is not a mask of octal digits from 0000 to 0777, as \"0022\"")),
    }
}

fn matcher(raw: &RawEntry, report: &mut EntryProblems<'_, '_>) -> Option<Matcher> {
    let m = &raw.matcher;
    let events = m.event.as_ref().map(OneOrMany::to_vec);
    let spec = MatchSpec {
        provider: m.provider.as_deref(),
        repo: m.repo.as_deref(),
        branch: m.branch.as_deref(),
        tag: m.tag.as_deref(),
        events,
        actions: m.action.as_ref().map(OneOrMany::to_vec),
        conclusions: m.conclusion.as_ref().map(OneOrMany::to_vec),
        workflow: m.workflow.as_deref(),
    };
    Matcher::compile(&spec).map_err(|problems| problems.into_iter().for_each(|p| report.bad(p))).ok()
}

/// `secret` (with `${VAR}`), `secret_file`, or `insecure: true`: exactly one of them.
fn secret(
    raw: &RawEntry,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut EntryProblems<'_, '_>,
) -> Option<Secret> {
    if raw.insecure && (raw.secret.is_some() || raw.secret_file.is_some()) {
        report.bad("`insecure: true` and a secret contradict each other: remove one".into());
    }
    let value = match (&raw.secret, &raw.secret_file) {
        (Some(_), Some(_)) => Err("give either `secret` or `secret_file`, not both".to_string()),
        (Some(s), None) => expand(&s.0, env).map_err(|e| format!("secret: {e}")),
        // A manual run checks no signature: the daemon's secret file need not be readable here.
        (None, Some(_)) if report.place.secrets == Secrets::Unread => return Some(Secret::unread()),
        (None, Some(path)) => {
            let path = report.place.dir.join(path);
            match std::fs::read_to_string(&path) {
                Ok(v) if v.trim_end_matches(['\n', '\r']).is_empty() => {
                    Err(format!("secret_file {} is empty", path.display()))
                }
                Ok(v) => Ok(v.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => Err(format!("secret_file {}: {e}", path.display())),
            }
        }
        (None, None) if raw.insecure => return None,
        // An entry that only polls takes no webhooks: it needs no secret.
        (None, None) if raw.poll.is_some() => return None,
        (None, None) => Err(
            "no secret: set `secret` or `secret_file`, or say `insecure: true` to accept unsigned requests"
                .into(),
        ),
    };
    match value {
        Ok(v) if v.is_empty() => report.bad("secret is empty".into()),
        Ok(v) => return Some(Secret(v)),
        Err(e) => report.bad(e),
    }
    None
}

/// `env:` (values with `${VAR}`) and the names of `inherit_env:`; with the values read from the
/// environment, a file or a credential (secrets, masked in logs).
fn environment(
    raw: &RawEntry,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut EntryProblems<'_, '_>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut vars = Vec::new();
    let mut secrets = Vec::new();
    for (key, value) in &raw.env {
        if !valid_env_name(key) {
            report.bad(format!("env: \"{key}\" is not a valid variable name"));
        } else if key.starts_with("WH_") {
            report.bad(format!("env: \"{key}\": names starting with WH_ are set by wh-automata"));
        }
        match expand(value, env) {
            Ok(v) => {
                if value.contains("${") {
                    secrets.push(v.clone());
                }
                vars.push((key.clone(), v))
            }
            Err(e) => report.bad(format!("env.{key}: {e}")),
        }
    }
    for key in &raw.inherit_env {
        if !valid_env_name(key) {
            report.bad(format!("inherit_env: \"{key}\" is not a valid variable name"));
        }
    }
    (vars, secrets)
}

fn timeout(text: Option<&str>, report: &mut EntryProblems<'_, '_>) -> Duration {
    match text.map(parse_duration) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(d)) if d.is_zero() => {
            report.bad("timeout must be more than 0".into());
            DEFAULT_TIMEOUT
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            report.bad(format!("timeout: {e}"));
            DEFAULT_TIMEOUT
        }
    }
}

fn actions(raw: Option<serde_yaml::Value>, report: &mut EntryProblems<'_, '_>) -> Vec<Action> {
    let raw_actions = match super::actions::read(raw.unwrap_or_default()) {
        Ok(list) => list,
        Err(problems) => {
            for (n, message) in problems {
                let line = report.place.action_lines.get(n.wrapping_sub(1)).copied();
                let what = if n == 0 { message } else { format!("action {n} {message}") };
                report.bad_at(line, what);
            }
            return Vec::new();
        }
    };
    let mut actions = Vec::new();
    for (i, a) in raw_actions.into_iter().enumerate() {
        let (run, if_changed) = match a {
            RawAction::Command(run) => (run, None),
            RawAction::Step(step) => (step.run, step.if_changed),
        };
        if run.trim().is_empty() {
            report.bad(format!("action {} is empty", i + 1));
            continue;
        }
        let if_changed = if_changed.and_then(|list| changed_set(i + 1, list.to_vec(), report));
        actions.push(Action { run, if_changed });
    }
    if actions.is_empty() {
        report.bad("no actions: give at least one command under `actions:`".into());
    }
    actions
}

/// The compiled `if_changed` patterns of action `n`.
fn changed_set(
    n: usize,
    patterns: Vec<String>,
    report: &mut EntryProblems<'_, '_>,
) -> Option<(Vec<String>, globset::GlobSet)> {
    if patterns.is_empty() {
        report.bad(format!("action {n}: if_changed is an empty list"));
    }
    let mut builder = GlobSetBuilder::new();
    for p in &patterns {
        match changed_glob(p) {
            Ok(globs) => {
                for g in globs {
                    builder.add(g);
                }
            }
            Err(e) => report.bad(format!("action {n}: if_changed \"{p}\": {e}")),
        }
    }
    match builder.build() {
        Ok(set) => Some((patterns, set)),
        Err(e) => {
            report.bad(format!("action {n}: if_changed: {e}"));
            None
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
