//! Files generated from the code and kept in the repository: the JSON Schema of the settings,
//! the man pages and the shell completions. Each must be what the code generates now; after a
//! change, regenerate them with `WH_REGENERATE=1 cargo test generated`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use wh_automata::cli::{DaemonArgs, TriggerArgs};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn man_page(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).unwrap();
    out
}

fn completion(shell: clap_complete::Shell, cmd: clap::Command) -> Vec<u8> {
    let mut cmd = cmd;
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// Every generated file: its path in the repository and what it must hold.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    use clap_complete::Shell;
    let mut files =
        vec![(root().join("settings.schema.json"), wh_automata::settings::json_schema().into_bytes())];
    for (name, cmd) in
        [("wh-automatad", DaemonArgs::command()), ("wh-automata-trigger", TriggerArgs::command())]
    {
        files.push((root().join(format!("contrib/man/{name}.1")), man_page(cmd.clone())));
        files.push((
            root().join(format!("contrib/completions/{name}.bash")),
            completion(Shell::Bash, cmd.clone()),
        ));
        files
            .push((root().join(format!("contrib/completions/_{name}")), completion(Shell::Zsh, cmd.clone())));
        files.push((root().join(format!("contrib/completions/{name}.fish")), completion(Shell::Fish, cmd)));
    }
    files
}

#[test]
fn generated_files_are_up_to_date() {
    let regenerate = std::env::var_os("WH_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (path, want) in generated() {
        if std::fs::read(&path).ok().as_deref() == Some(&want[..]) {
            continue;
        }
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        } else {
            stale.push(path.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {}; run `WH_REGENERATE=1 cargo test generated`",
        stale.join(", ")
    );
}

#[test]
fn the_schema_describes_every_settings_key_and_refuses_unknown_ones() {
    let schema: serde_json::Value = serde_json::from_str(&wh_automata::settings::json_schema()).unwrap();
    let defs = &schema["definitions"];
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v["properties"].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&schema),
        ["api", "entries", "host_groups", "hosts", "include", "networks", "notify", "server"]
    );
    assert_eq!(schema["additionalProperties"], false);
    let entry = &defs["RawEntry"];
    assert_eq!(entry["additionalProperties"], false);
    for key in [
        "match",
        "secret",
        "secret_file",
        "insecure",
        "allow_sha1",
        "workdir",
        "env",
        "inherit_env",
        "timeout",
        "actions",
        "allow_from",
        "skip_deployed",
        "env_file",
        "status",
        "notify",
        "verify",
        "on_failure",
        "rollback",
        "poll",
        "remote",
        "hosts",
        "rollout",
    ] {
        assert!(entry["properties"][key]["description"].is_string(), "entry key {key} is described");
    }
    for key in [
        "listen",
        "path",
        "workers",
        "queue",
        "max_body",
        "state_dir",
        "max_connections",
        "header_timeout",
        "log_limit",
        "shutdown_grace",
        "allow_from",
        "observe_from",
        "trusted_proxies",
        "public_url",
        "ca_file",
        "notify_retry_for",
        "sendmail",
        "releases_kept",
    ] {
        assert!(defs["RawServer"]["properties"][key].is_object(), "server key {key}");
    }
    assert!(defs["RawMatch"]["properties"]["provider"]["enum"].as_array().unwrap().contains(&"gitea".into()));

    // The examples point editors at it.
    let mut files = vec![root().join("settings.example.yaml")];
    for f in std::fs::read_dir(root().join("rules")).unwrap() {
        files.push(f.unwrap().path());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("# yaml-language-server: $schema=")
                    && l.ends_with("settings.schema.json")),
            "{} has no yaml-language-server schema line",
            file.display()
        );
    }
}

/// Errors of `value` against `schema`, for the keywords the generated schema uses (`type`,
/// `enum`, `minimum`, `properties`, `required`, `additionalProperties`, `items`, `anyOf`,
/// `allOf`, `$ref`); annotations (`description`, `default`, `examples`, `format`) are ignored.
fn violations(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value;
    let mut errors = Vec::new();
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/definitions/");
        return violations(value, &root["definitions"][name], root, at);
    }
    if let Some(types) = schema.get("type") {
        let fits = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        };
        let ok = match types {
            Value::String(t) => fits(t),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(fits),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: {value} is not of type {types}"));
            return errors;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if n < min {
            errors.push(format!("{at}: {n} is below {min}"));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            errors.extend(violations(value, s, root, at));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let each: Vec<Vec<String>> = any.iter().map(|s| violations(value, s, root, at)).collect();
        if !each.iter().any(Vec::is_empty) {
            errors.push(format!("{at}: fits none of the allowed forms: {}", each.concat().join("; ")));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !object.contains_key(key.as_str().unwrap_or_default()) {
                errors.push(format!("{at}: missing {key}"));
            }
        }
        for (key, v) in object {
            let path = format!("{at}.{key}");
            match properties.and_then(|p| p.get(key)) {
                Some(s) => errors.extend(violations(v, s, root, &path)),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{path}: unknown key")),
                    Some(s @ Value::Object(_)) => errors.extend(violations(v, s, root, &path)),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            errors.extend(violations(v, items, root, &format!("{at}[{i}]")));
        }
    }
    errors
}

#[test]
fn the_example_and_every_rule_file_fit_the_schema_and_typos_do_not() {
    let schema: serde_json::Value = serde_json::from_str(&wh_automata::settings::json_schema()).unwrap();
    let yaml = |text: &str| -> serde_json::Value { serde_yaml::from_str(text).unwrap() };
    let mut files = vec![root().join("settings.example.yaml")];
    for f in std::fs::read_dir(root().join("rules")).unwrap() {
        files.push(f.unwrap().path());
    }
    for file in &files {
        let value = yaml(&std::fs::read_to_string(file).unwrap());
        let errors = violations(&value, &schema, &schema, "$");
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
    for (text, want) in [
        ("entries:\n  a:\n    actions: [x]\n    timout: 5m\n", "$.entries.a.timout: unknown key"),
        ("server:\n  workers: 0\n", "$.server.workers: 0 is below 1"),
        ("entries:\n  a:\n    match: { provider: gitbucket }\n", "is not one of"),
        ("entries:\n  a:\n    actions: [{ run: x, if_changd: [y] }]\n", "$.entries.a.actions"),
    ] {
        let errors = violations(&yaml(text), &schema, &schema, "$");
        assert!(errors.iter().any(|e| e.contains(want)), "{text}: {errors:?}");
    }
}
