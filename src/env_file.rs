//! `env_file:` of an entry: `KEY=VALUE` lines read when a job starts.
//!
//! The format is the common one of `.env` files (docker compose, systemd's `EnvironmentFile`):
//! blank lines and `#` comments are skipped, an optional `export ` prefix is allowed, a value
//! may be bare (a ` #` starts a comment, surrounding blanks are dropped), in single quotes (as
//! written) or in double quotes (`\n`, `\t`, `\"`, `\\` and `\$` are escapes, and it may span
//! lines). Nothing is expanded: `$HOME` stays `$HOME`. A line that does not fit is a problem
//! with its line number, and is skipped.

use std::path::Path;

/// What a file gave: the variables in order, and the problems (each with its line).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvFile {
    pub vars: Vec<(String, String)>,
    pub problems: Vec<String>,
}

/// The largest env file read: a deploy's settings, not a data file.
const MAX_SIZE: u64 = 1024 * 1024;

/// Reads the file at `path`; `Err` when it cannot be read at all. It must be a regular file
/// (a committed link to `/dev/zero` or a FIFO is refused: opened without waiting for a writer,
/// then checked on the open file itself), and no more than the limit is ever read, whatever
/// its size says.
pub fn read(path: &Path) -> Result<EnvFile, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    Ok(parse(&text))
}

/// Parses the text of an env file.
pub fn parse(text: &str) -> EnvFile {
    let mut out = EnvFile::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let line = lines[i].trim_start();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            out.problems.push(format!("line {number}: not KEY=VALUE"));
            continue;
        };
        let key = key.trim_end();
        if !valid_key(key) {
            // The text is not repeated: the file may not be what it should be (a link to
            // another file), and the log is no place for its content.
            out.problems.push(format!("line {number}: not a variable name before = (letters, digits, _)"));
            continue;
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some('\'') => match rest[1..].split_once('\'') {
                Some((v, after)) if trailing_ok(after) => Ok(v.to_string()),
                Some(_) => Err("text after the closing quote".to_string()),
                None => Err("no closing single quote".to_string()),
            },
            Some('"') => double_quoted(&rest[1..], &lines, &mut i),
            _ => Ok(bare(rest)),
        };
        match value {
            Ok(v) if v.contains('\0') => out.problems.push(format!("line {number}: {key} holds a NUL byte")),
            Ok(v) => out.vars.push((key.to_string(), v)),
            Err(why) => out.problems.push(format!("line {number}: {key}: {why}")),
        }
    }
    out
}

fn valid_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// After a closing quote: nothing, or a comment.
fn trailing_ok(after: &str) -> bool {
    let after = after.trim_start();
    after.is_empty() || after.starts_with('#')
}

/// A bare value: up to a ` #` comment, blanks around dropped.
fn bare(rest: &str) -> String {
    let end = rest.find(" #").or_else(|| rest.find("\t#")).unwrap_or(rest.len());
    rest[..end].trim().to_string()
}

/// A double-quoted value, which may continue on the next lines (`next` is moved past them).
fn double_quoted(first: &str, lines: &[&str], next: &mut usize) -> Result<String, String> {
    let mut value = String::new();
    let mut text = first.to_string();
    loop {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    let after: String = chars.collect();
                    return if trailing_ok(&after) {
                        Ok(value)
                    } else {
                        Err("text after the closing quote".to_string())
                    };
                }
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some(e @ ('"' | '\\' | '$' | '`')) => value.push(e),
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => value.push('\\'),
                },
                c => value.push(c),
            }
        }
        if *next >= lines.len() {
            return Err("no closing double quote".to_string());
        }
        value.push('\n');
        text = lines[*next].to_string();
        *next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_forms() {
        let text = "# settings\n\nexport A=1\nB = two words  # a comment\nC='$HOME stays # here'\n\
                    D=\"line\\nnext \\\"q\\\" \\$X\"\nE=\"multi\nline\"\nF=\nG=a#b\n  H=x\n";
        let got = parse(text);
        assert_eq!(got.problems, Vec::<String>::new());
        let want = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "$HOME stays # here"),
            ("D", "line\nnext \"q\" $X"),
            ("E", "multi\nline"),
            ("F", ""),
            ("G", "a#b"),
            ("H", "x"),
        ];
        assert_eq!(got.vars, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn problems_name_their_line_and_skip_it() {
        let got = parse("OK=1\nno equals sign\n1X=2\nQ='open\nS='x' y\nR=\"open\nLAST=2\n");
        assert_eq!(got.vars, [("OK".to_string(), "1".to_string())]);
        assert_eq!(got.problems.len(), 5, "{:?}", got.problems);
        assert!(got.problems[0].starts_with("line 2: not KEY=VALUE"));
        assert!(got.problems[1].starts_with("line 3: not a variable name before ="));
        assert!(got.problems[2].starts_with("line 4: Q: no closing single quote"));
        assert!(got.problems[3].starts_with("line 5: S: text after the closing quote"));
        // An unclosed double quote swallows the rest of the file, and says so.
        assert!(got.problems[4].starts_with("line 6: R: no closing double quote"), "{:?}", got.problems);
    }
}
