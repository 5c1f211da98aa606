//! `include:` globs: which rule files a pattern names, and which directory to watch for new
//! ones. Patterns are matched with the same glob crate as `match.repo` and `if_changed`: `*`
//! stays within one directory, `**` crosses directories.

use std::path::{Path, PathBuf};

use globset::GlobBuilder;

/// How deep under the pattern's fixed directory files are looked for (`**` included).
const MAX_DEPTH: usize = 16;

/// The files that `pattern` (an absolute path with wildcards) matches, sorted.
pub fn files_matching(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let glob = GlobBuilder::new(&text).literal_separator(true).build().map_err(|e| e.to_string())?;
    let matcher = glob.compile_matcher();
    if !has_wildcard(&text) {
        return Ok(if pattern.is_file() { vec![pattern.to_path_buf()] } else { Vec::new() });
    }
    let mut found = Vec::new();
    walk(&literal_prefix(pattern), 0, &mut |path| {
        if matcher.is_match(path) {
            found.push(path.to_path_buf());
        }
    });
    found.sort();
    Ok(found)
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

/// Calls `each` with every file under `dir`, not following links to directories (a loop of
/// links must not hang a reload).
fn walk(dir: &Path, depth: usize, each: &mut dyn FnMut(&Path)) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    for item in read.flatten() {
        let path = item.path();
        let Ok(kind) = item.file_type() else { continue };
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, depth + 1, each);
            }
        } else if path.is_file() {
            each(&path);
        }
    }
}

/// The directory part of a glob before its first wildcard (`/etc/wh/rules/*.yaml` →
/// `/etc/wh/rules`); for a plain file, its directory.
pub fn literal_prefix(pattern: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in pattern.components() {
        if has_wildcard(&part.as_os_str().to_string_lossy()) {
            break;
        }
        out.push(part);
    }
    if out == pattern {
        out.parent().map(Path::to_path_buf).unwrap_or(out)
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix(Path::new("/etc/wh/rules/*.yaml")), PathBuf::from("/etc/wh/rules"));
        assert_eq!(literal_prefix(Path::new("/etc/wh/r*/x.yaml")), PathBuf::from("/etc/wh"));
        assert_eq!(literal_prefix(Path::new("/etc/wh/one.yaml")), PathBuf::from("/etc/wh"));
    }

    #[test]
    fn star_stays_in_its_directory_and_double_star_crosses() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("rules/deep")).unwrap();
        for f in ["rules/a.yaml", "rules/b.yml", "rules/deep/c.yaml", "rules/.hidden.yaml"] {
            std::fs::write(root.join(f), "").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            files_matching(&root.join(pattern))
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("rules/*.yaml"), ["rules/.hidden.yaml", "rules/a.yaml"]);
        assert_eq!(names("rules/**/*.yaml"), ["rules/.hidden.yaml", "rules/a.yaml", "rules/deep/c.yaml"]);
        assert_eq!(names("rules/*.{yaml,yml}"), ["rules/.hidden.yaml", "rules/a.yaml", "rules/b.yml"]);
        assert_eq!(names("rules/a.yaml"), ["rules/a.yaml"]);
        assert!(names("rules/none.yaml").is_empty());
        assert!(files_matching(&root.join("rules/[a.yaml")).is_err());
    }
}
