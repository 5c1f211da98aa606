//! What is wrong with a settings file, located as precisely as possible: the file, the line
//! where known, the entry. The YAML parser reports no positions for keys, so the lines of the
//! entries are found by a small scan of the text ([`entry_lines`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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

pub(super) fn problem(file: &Path, line: Option<usize>, entry: Option<&str>, message: String) -> Problem {
    Problem { file: file.to_path_buf(), line, entry: entry.map(str::to_string), message }
}

/// The entry names defined twice in one file, each with all its lines: the YAML parser either
/// refuses them vaguely or keeps the last one, depending on its version.
pub(super) fn duplicate_names(file: &Path, text: &str) -> Vec<Problem> {
    let mut at: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, line) in entry_lines(text) {
        at.entry(name).or_default().push(line);
    }
    at.iter()
        .filter(|(_, lines)| lines.len() > 1)
        .map(|(name, lines)| {
            let list = lines.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
            problem(file, Some(lines[1]), Some(name), format!("defined twice in this file (lines {list})"))
        })
        .collect()
}

/// The names and 1-based lines of the keys directly under the top-level `entries:` mapping,
/// in order, duplicates included. A small scan of the text: the YAML parser does not report
/// where a key was, and silently keeps the last of two equal keys.
pub(super) fn entry_lines(text: &str) -> Vec<(String, usize)> {
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

/// The 1-based lines of the items of the `actions:` list of the entry whose name is on line
/// `entry_line` (a block list, `- ...`, directly under `actions:`); empty for a flow list.
/// (`lines`: the file's lines, split once for all its entries.)
pub(super) fn action_lines(lines: &[&str], entry_line: usize) -> Vec<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(entry) = lines.get(entry_line.wrapping_sub(1)) else { return Vec::new() };
    let content = |i: &usize| !lines[*i].trim().is_empty() && !lines[*i].trim_start().starts_with('#');
    // The entry's own lines: until one is not deeper than the entry's name.
    let body: Vec<usize> =
        (entry_line..lines.len()).filter(content).take_while(|i| indent(lines[*i]) > indent(entry)).collect();
    let Some(at) = body.iter().position(|i| lines[*i].trim_end().trim_start() == "actions:") else {
        return Vec::new();
    };
    let key_indent = indent(lines[body[at]]);
    let items: Vec<usize> =
        body[at + 1..].iter().copied().take_while(|i| indent(lines[*i]) >= key_indent).collect();
    let Some(first) = items.iter().find(|i| lines[**i].trim_start().starts_with('-')) else {
        return Vec::new();
    };
    let item_indent = indent(lines[*first]);
    items
        .into_iter()
        .filter(|i| indent(lines[*i]) == item_indent && lines[*i].trim_start().starts_with('-'))
        .map(|i| i + 1)
        .collect()
}

/// The keys directly inside the mapping whose key is on line `at` (1-based; an entry, or the
/// top-level `notify:`), with their 1-based lines. (`lines`: the file's lines.)
pub(super) fn key_lines(lines: &[&str], at: usize) -> Vec<(String, usize)> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(head) = lines.get(at.wrapping_sub(1)) else { return Vec::new() };
    let content = |i: &usize| !lines[*i].trim().is_empty() && !lines[*i].trim_start().starts_with('#');
    let body: Vec<usize> =
        (at..lines.len()).filter(content).take_while(|i| indent(lines[*i]) > indent(head)).collect();
    let Some(first) = body.first() else { return Vec::new() };
    let level = indent(lines[*first]);
    body.iter()
        .filter(|i| indent(lines[**i]) == level)
        .filter_map(|i| key_of(lines[*i].trim()).map(|k| (k, i + 1)))
        .collect()
}

/// The line of the key a problem's message starts with (`timeout: ...`, `env.X: ...`,
/// `match.branch ...`, serde's "unknown field `acions`"), among `keys`.
pub(super) fn line_of_message(keys: &[(String, usize)], message: &str) -> Option<usize> {
    let key: String = match message.strip_prefix("unknown field `") {
        Some(rest) => rest.split('`').next().unwrap_or_default().to_string(),
        None => message.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect(),
    };
    keys.iter().find(|(k, _)| *k == key).map(|(_, line)| *line)
}

/// The key of a `key: value` line, unquoted.
fn key_of(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        return rest.find('"').map(|end| rest[..end].to_string());
    }
    if let Some(rest) = line.strip_prefix('\'') {
        return rest.find('\'').map(|end| rest[..end].to_string());
    }
    line.split_once(':').map(|(key, _)| key.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lines_find_each_item() {
        let text = "entries:\n  a:\n    insecure: true\n    actions:\n      - one\n      - run: two\n        if_changed: [x]\n\n      - three\n  b:\n    actions:\n    - four\n";
        assert_eq!(action_lines(&text.lines().collect::<Vec<_>>(), 2), vec![5, 6, 9]);
        assert_eq!(action_lines(&text.lines().collect::<Vec<_>>(), 10), vec![12]);
    }

    #[test]
    fn entry_lines_sees_duplicates_and_ignores_nested_keys() {
        let text = "server:\n  listen: x\nentries:\n  # comment\n  blog:\n    match:\n      repo: a/b\n  \"site\":\n    actions: x\n  blog:\n    actions: y\n";
        assert_eq!(
            entry_lines(text),
            vec![("blog".to_string(), 5), ("site".to_string(), 8), ("blog".to_string(), 10)]
        );
        let dup = duplicate_names(Path::new("s.yaml"), text);
        assert_eq!(dup.len(), 1);
        assert_eq!(dup[0].line, Some(10));
        assert_eq!(dup[0].message, "defined twice in this file (lines 5, 10)");
    }
}
