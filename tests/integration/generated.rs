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
    assert_eq!(keys(&schema), ["entries", "include", "server"]);
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
