//! `${VAR}` and `${credential:ID}` in settings values: the daemon's environment, or a systemd
//! credential. Used by the entries' settings and the notification targets' alike.

use std::path::Path;

pub(super) fn valid_env_name(name: &str) -> bool {
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
        if let Some(id) = name.strip_prefix("credential:") {
            out.push_str(&credential(id, env)?);
        } else if !valid_env_name(name) {
            return Err(format!("\"${{{name}}}\" is not a valid variable reference"));
        } else {
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `${credential:ID}`: the systemd credential `ID`, the file `$CREDENTIALS_DIRECTORY/ID` that
/// systemd hands the service for `LoadCredential=ID:PATH` (one trailing newline dropped).
fn credential(id: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let plain = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
    if !plain {
        return Err(format!("\"${{credential:{id}}}\" is not a credential name (letters, digits, _ - . @)"));
    }
    let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
        return Err(format!(
            "${{credential:{id}}}: no credentials (CREDENTIALS_DIRECTORY is not set: give the unit \
             LoadCredential={id}:PATH)"
        ));
    };
    let path = Path::new(&dir).join(id);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("${{credential:{id}}}: {}: {e}", path.display()))?;
    let value = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if value.is_empty() {
        return Err(format!("${{credential:{id}}} is empty"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let env = |n: &str| (n == "A").then(|| "x$y".to_string());
        assert_eq!(expand("pre-${A}-post", &env).unwrap(), "pre-x$y-post");
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
        assert!(expand("${B}", &env).unwrap_err().contains("B is not set"));
        assert!(expand("${A", &env).is_err());
        assert!(expand("${1A}", &env).is_err());
    }
}
