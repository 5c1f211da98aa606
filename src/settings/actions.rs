//! `actions:` as typed, read by hand: YAML turns an unquoted `true` into a boolean and
//! `echo deploy: done` into a mapping, and a typo like `if_chaged:` makes a step that is no
//! step. Each such mistake is said for its action, with what to write instead.

use serde_yaml::Value;

use super::raw::{OneOrMany, RawAction, RawStep};

/// The actions of an entry, or what is wrong, per action (1-based).
pub(super) fn read(value: Value) -> Result<Vec<RawAction>, Vec<(usize, String)>> {
    let items = match value {
        Value::Null => Vec::new(),
        Value::String(one) => vec![Value::String(one)],
        Value::Sequence(list) => list,
        other => {
            let what = kind(&other);
            return Err(vec![(0, format!("`actions:` is {what}: give a command, or a list of commands"))]);
        }
    };
    let mut actions = Vec::new();
    let mut problems = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match action(item) {
            Ok(a) => actions.push(a),
            Err(message) => problems.push((i + 1, message)),
        }
    }
    if problems.is_empty() {
        Ok(actions)
    } else {
        Err(problems)
    }
}

fn action(item: Value) -> Result<RawAction, String> {
    match item {
        Value::String(command) => Ok(RawAction::Command(command)),
        Value::Mapping(map) if map.contains_key("run") => step(map),
        Value::Mapping(map) => {
            let shown = match map.iter().next() {
                Some((Value::String(k), Value::String(v))) if map.len() == 1 => format!("`{k}: {v}`"),
                _ => "a mapping".to_string(),
            };
            Err(format!(
                "is {shown}, not a command: YAML reads `key: value` as a mapping; quote the whole \
                 command (- \"echo deploy: done\"), or give a step with `run:`"
            ))
        }
        Value::Bool(b) => Err(format!("is the boolean {b}, not a command: quote it (- \"{b}\")")),
        Value::Number(n) => Err(format!("is the number {n}, not a command: quote it (- \"{n}\")")),
        Value::Null => Err("is empty: give a command".to_string()),
        other => Err(format!("is {}, not a command: quote it", kind(&other))),
    }
}

/// A `run:` step; its other keys must be known.
fn step(map: serde_yaml::Mapping) -> Result<RawAction, String> {
    let mut run = None;
    let mut if_changed = None;
    for (key, value) in map {
        match key.as_str() {
            Some("run") => match value {
                Value::String(command) => run = Some(command),
                other => {
                    return Err(format!("has a `run:` that is {}, not a command: quote it", kind(&other)))
                }
            },
            Some("if_changed") => match serde_yaml::from_value::<OneOrMany>(value) {
                Ok(list) => if_changed = Some(list),
                Err(_) => {
                    return Err("has an `if_changed:` that is neither a glob nor a list of globs".to_string())
                }
            },
            Some(other) => {
                let hint = if other.starts_with("if_") { " (did you mean `if_changed`?)" } else { "" };
                return Err(format!("has an unknown key `{other}`{hint}: a step has `run` and `if_changed`"));
            }
            None => return Err("has a key that is not text: a step has `run` and `if_changed`".to_string()),
        }
    }
    let run = run.unwrap_or_default();
    Ok(RawAction::Step(RawStep { run, if_changed }))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<(usize, String)> {
        read(serde_yaml::from_str(yaml).unwrap()).err().unwrap_or_default()
    }

    #[test]
    fn each_mistake_is_said_for_its_action() {
        let found = problems("- git pull\n- true\n- echo deploy: done\n- run: make\n  if_chaged: [x]\n- 3\n");
        let at: Vec<usize> = found.iter().map(|(n, _)| *n).collect();
        assert_eq!(at, [2, 3, 4, 5], "{found:?}");
        assert!(found[0].1.contains("boolean true") && found[0].1.contains("- \"true\""), "{}", found[0].1);
        assert!(found[1].1.contains("`echo deploy: done`") && found[1].1.contains("quote"), "{}", found[1].1);
        assert!(
            found[2].1.contains("has an unknown key `if_chaged` (did you mean `if_changed`?)"),
            "{}",
            found[2].1
        );
        assert!(problems("- git pull\n- run: make\n  if_changed: Dockerfile\n").is_empty());
        assert!(problems("git pull").is_empty());
        assert_eq!(problems("{a: b}")[0].0, 0);
    }
}
