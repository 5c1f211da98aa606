//! Reading the settings file and the rule files it includes, then compiling their entries.
//! Names are unique across all files; each problem is reported with its file, line and entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compile::{self, EntryPlace, Networks};
use super::problems::{
    action_lines, duplicate_names, entry_lines, key_lines, line_of_message, problem, Problem, Problems,
};
use super::raw::{RawEntry, RawFile};
use super::{include, Entry, Index, Secrets, Settings};

/// One file read: its path, its text, and its `entries:` as typed.
struct Source {
    file: PathBuf,
    text: String,
    entries: Option<serde_yaml::Mapping>,
    networks: Networks,
}

/// What settings without a single entry are said to have (a warning at start and by `--check`;
/// a reload to them from settings that had entries is refused).
pub const NO_ENTRIES: &str = "no entries in the settings nor in any included file";

/// Reads, validates and compiles the settings file at `path` and every file it includes, with
/// `env` to look up `${VAR}`.
pub(super) fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<Settings, Problems> {
    let mut problems = Vec::new();
    let source = absolute(path);
    let base = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = std::fs::read_to_string(&source)
        .map_err(|e| Problems(vec![problem(&source, None, None, format!("cannot read: {e}"))]))?;
    let Some(main) = parse_file(&source, &text, &mut problems) else {
        return Err(Problems(problems));
    };
    // Where each notification target is written: its problems are located there.
    let target_lines = {
        let lines: Vec<&str> = text.lines().collect();
        let top = lines.iter().position(|l| l.trim_end() == "notify:").map(|i| i + 1);
        top.map(|at| key_lines(&lines, at)).unwrap_or_default()
    };
    let api_line = top_level_line(&text, "api:");
    let include_globs: Vec<PathBuf> = main.include.iter().map(|p| base.join(p)).collect();
    let mut sources =
        vec![Source { file: source.clone(), text, entries: main.entries, networks: main.networks }];
    for (pattern, full) in main.include.iter().zip(&include_globs) {
        included(&source, pattern, full, &mut sources, &mut problems);
    }
    let networks = networks(&mut sources, &mut problems);
    let server = compile::server(&source, &base, main.server.as_ref(), &networks, &mut problems);
    let targets = super::telling::targets(&source, &target_lines, &main.notify, env, &mut problems);
    let api = main.api.as_ref().and_then(|raw| {
        let mut said = Vec::new();
        let allow = |list: &[String]| compile::api_allow_from(list, &networks);
        let api = super::api::api(raw, &base, env, &allow, &mut said);
        problems.extend(said.into_iter().map(|m| problem(&source, api_line, None, m)));
        api
    });
    let hosts = {
        let mut said = Vec::new();
        let hosts = super::hosts::hosts(&main.hosts, &main.host_groups, &base, &mut said);
        let text = &sources[0].text;
        let (hosts_line, groups_line) =
            (top_level_line(text, "hosts:"), top_level_line(text, "host_groups:"));
        problems.extend(said.into_iter().map(|m| {
            let line = if m.starts_with("host_groups.") { groups_line } else { hosts_line };
            problem(&source, line, None, m)
        }));
        hosts
    };
    let files = sources.iter().map(|s| s.file.clone()).collect();
    let entries = entries(sources, &networks, &targets, &hosts, secrets, env, &mut problems);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let index = Index::of(&entries);
    let mut warnings: Vec<Problem> = entries.iter().flat_map(|e| warnings(e)).collect();
    if entries.is_empty() {
        let message = format!("{NO_ENTRIES}: nothing runs until one is added");
        warnings.push(problem(&source, None, None, message));
    }
    Ok(Settings { source, files, include_globs, server, entries, targets, api, warnings, index })
}

/// The line (1-based) of `key` at the top level of `text`, if it is there.
fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.trim_end() == key || l.starts_with(&format!("{key} "))).map(|i| i + 1)
}

/// Reads the files that the include `pattern` (`full`: made absolute) names, once each.
fn included(main: &Path, pattern: &str, full: &Path, sources: &mut Vec<Source>, problems: &mut Vec<Problem>) {
    let matched = match include::files_matching(full) {
        Ok(found) => found,
        Err(e) => {
            problems.push(problem(main, None, None, format!("include \"{pattern}\": bad glob: {e}")));
            return;
        }
    };
    if matched.is_empty() {
        problems.push(problem(main, None, None, format!("include \"{pattern}\" matches no file")));
    }
    for file in matched {
        if sources.iter().any(|s| s.file == file) {
            continue;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(&file, None, None, format!("cannot read: {e}")));
                continue;
            }
        };
        let Some(raw) = parse_file(&file, &text, problems) else { continue };
        if raw.server.is_some() {
            let message = "`server:` belongs in the main settings file, not in an included file";
            problems.push(problem(&file, None, None, message.into()));
        }
        if !raw.notify.is_empty() {
            let message = "the top-level `notify:` targets belong in the main settings file";
            problems.push(problem(&file, None, None, message.into()));
        }
        if !raw.hosts.is_empty() || !raw.host_groups.is_empty() {
            let message = "`hosts:` and `host_groups:` belong in the main settings file";
            problems.push(problem(&file, None, None, message.into()));
        }
        if !raw.include.is_empty() {
            problems.push(problem(
                &file,
                None,
                None,
                "`include:` is only read in the main settings file".into(),
            ));
        }
        sources.push(Source { file, text, entries: raw.entries, networks: raw.networks });
    }
}

/// The `networks:` lists of every file, each name defined once.
fn networks(sources: &mut [Source], problems: &mut Vec<Problem>) -> Networks {
    let mut all = Networks::new();
    let mut defined_in: HashMap<String, PathBuf> = HashMap::new();
    for source in sources {
        for (name, list) in std::mem::take(&mut source.networks) {
            if let Some(other) = defined_in.get(&name) {
                let message = format!("networks: \"{name}\" is already defined in {}", other.display());
                problems.push(problem(&source.file, None, None, message));
                continue;
            }
            defined_in.insert(name.clone(), source.file.clone());
            all.insert(name, list);
        }
    }
    all
}

/// Compiles the entries of every file, refusing names defined twice.
fn entries(
    sources: Vec<Source>,
    networks: &Networks,
    targets: &std::collections::BTreeMap<String, Arc<super::Target>>,
    hosts: &super::hosts::HostNames,
    secrets: Secrets,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Vec<Arc<Entry>> {
    let mut seen: HashMap<String, (PathBuf, Option<usize>)> = HashMap::new();
    let mut entries = Vec::new();
    for source in sources {
        let file = &source.file;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        // Found once per file: with thousands of entries, a search per entry would be quadratic.
        let mut lines: HashMap<String, usize> = HashMap::new();
        for (name, line) in entry_lines(&source.text) {
            lines.entry(name).or_insert(line);
        }
        let text_lines: Vec<&str> = source.text.lines().collect();
        for (key, value) in source.entries.into_iter().flatten() {
            let Some(name) = key.as_str().map(str::to_string) else {
                problems.push(problem(file, None, None, format!("entry name must be a string, got {key:?}")));
                continue;
            };
            let line = lines.get(&name).copied();
            if let Some((other, other_line)) = seen.get(&name) {
                if other != file {
                    let at = match other_line {
                        Some(l) => format!("{}:{l}", other.display()),
                        None => other.display().to_string(),
                    };
                    problems.push(problem(file, line, Some(&name), format!("already defined in {at}")));
                }
                continue;
            }
            seen.insert(name.clone(), (file.clone(), line));
            let action_lines = line.map(|l| action_lines(&text_lines, l)).unwrap_or_default();
            let key_lines = line.map(|l| key_lines(&text_lines, l)).unwrap_or_default();
            let place = EntryPlace {
                name: &name,
                file,
                line,
                dir: &dir,
                action_lines,
                key_lines,
                networks,
                secrets,
                targets,
                hosts,
            };
            if let Some(entry) = entry(&place, value, env, problems) {
                entries.push(Arc::new(entry));
            }
        }
    }
    entries
}

/// One entry: its name checked, then what was typed read and compiled.
fn entry(
    place: &EntryPlace<'_>,
    value: serde_yaml::Value,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Entry> {
    if !valid_entry_name(place.name) {
        let message = "name may only hold letters, digits, '.', '_' and '-', and not be dots alone (it is part of the URL)";
        problems.push(problem(place.file, place.line, Some(place.name), message.into()));
    }
    let raw: RawEntry = match serde_yaml::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            let message = e.to_string();
            let line = line_of_message(&place.key_lines, &message).or(place.line);
            problems.push(problem(place.file, line, Some(place.name), message));
            return None;
        }
    };
    compile::entry(place, raw, env, problems)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

fn parse_file(file: &Path, text: &str, problems: &mut Vec<Problem>) -> Option<RawFile> {
    let duplicates = duplicate_names(file, text);
    let has_duplicates = !duplicates.is_empty();
    problems.extend(duplicates);
    if is_empty(text) {
        // Often a file being written: an editor or a generator truncates it first.
        let message =
            "the file is empty (nothing but blanks and comments): refused, as a file being written \
                       would be; to run nothing, stop the daemon";
        problems.push(problem(file, None, None, message.into()));
        return None;
    }
    match serde_yaml::from_str::<RawFile>(text) {
        Ok(raw) => Some(raw),
        Err(e) if has_duplicates && e.to_string().contains("duplicate") => None,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            problems.push(problem(file, line, None, e.to_string()));
            None
        }
    }
}

/// What is valid in `entry` but likely not meant: a branch or tag regex that is not anchored
/// matches every name that merely contains it (`main` matches `not-main`).
fn warnings(entry: &Entry) -> Vec<Problem> {
    let m = &entry.matcher;
    let unknown = m.unknown_events().into_iter().map(|name| {
        let host = m.provider.map_or("any host".to_string(), |p| p.to_string());
        let message = format!(
            "match.event \"{name}\" is not an event {host} is known to send: check its spelling \
             (the entry runs only if a delivery names it exactly)"
        );
        problem(&entry.file, entry.line, Some(&entry.name), message)
    });
    let regexes = [("branch", m.branch.as_ref()), ("tag", m.tag.as_ref())]
        .into_iter()
        .filter_map(|(field, re)| {
            let pattern = re?.as_str();
            let anchored = pattern.starts_with('^') && pattern.ends_with('$');
            let anything = matches!(pattern, ".*" | ".+" | "^.*$" | "^.+$");
            (!anchored && !anything).then(|| {
                let message = format!(
                    "match.{field} \"{pattern}\" is a regular expression that matches any {field} containing it \
                     (\"{pattern}\" also matches \"old-{pattern}\"): write \"^{}$\" to match it alone",
                    pattern.trim_start_matches('^').trim_end_matches('$')
                );
                problem(&entry.file, entry.line, Some(&entry.name), message)
            })
        });
    // Gitea and Forgejo are always self-hosted: without api_url their events get no status.
    let self_hosted = (m.provider == Some(crate::event::Provider::Gitea)
        && entry.status.as_ref().is_some_and(|s| s.api_url.is_none()))
    .then(|| {
        let message =
            "status: has no api_url, and Gitea and Forgejo are always self-hosted: their events get \
                       no status (a token goes only to the API the settings name, or a provider's public \
                       one); set status.api_url to https://<your server>/api/v1"
                .to_string();
        problem(&entry.file, entry.line, Some(&entry.name), message)
    });
    let insecure = entry.secret.is_none().then(|| {
        let message = "insecure: true: its webhooks are not authenticated; anyone who can reach the daemon \
                       (and passes allow_from) can run its actions: only for tests on a trusted network"
            .to_string();
        problem(&entry.file, entry.line, Some(&entry.name), message)
    });
    unknown.chain(regexes).chain(self_hosted).chain(insecure).collect()
}

/// Whether `text` holds no YAML content: only blanks, comments and document markers.
fn is_empty(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

fn valid_entry_name(name: &str) -> bool {
    !name.is_empty()
        && !name.chars().all(|c| c == '.')
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}
