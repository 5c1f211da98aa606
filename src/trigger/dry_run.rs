//! `--dry-run`: the actions and the environment that would run, secrets masked; nothing runs.

use crate::event::{Event, Trigger};
use crate::jobs::runner::{self, JobContext};
use crate::printable::shown;
use crate::settings::Entry;

pub(super) fn dry_run(entry: &Entry, event: &Event) {
    let context = JobContext {
        id: 0,
        trigger: Trigger::Manual,
        event,
        payload: None,
        steps: None,
        lock: None,
        store: None,
    };
    // Secrets are shown masked, as in a job's log.
    let mut mask = entry.mask.clone();
    let mut notes = Vec::new();
    let from_file = match runner::env_file(entry) {
        Ok(file) => {
            notes.extend(file.problems.iter().map(|p| format!("  (env_file: {p}: skipped)")));
            mask = runner::secrets(entry, &file.vars);
            file.vars
        }
        Err(error) => {
            notes.push(format!("  (env_file cannot be read: {error}: the job would fail)"));
            Vec::new()
        }
    };
    println!("entry {} ({}), dry run: nothing runs", entry.name, entry.file.display());
    println!("workdir {}", entry.workdir.display());
    println!("timeout {}", humantime::format_duration(entry.timeout));
    println!("actions:");
    for (i, action) in entry.actions.iter().enumerate() {
        let run = mask.text(&action.run);
        match runner::skip_reason(action, event) {
            None => println!("  {}. {run}", i + 1),
            Some(why) => println!("  {}. {run}   (skipped: {why})", i + 1),
        }
    }
    println!("environment:");
    for note in notes {
        println!("{note}");
    }
    for (name, value) in runner::environment(entry, &context, &from_file) {
        let value = match name.as_str() {
            "WH_JOB_ID" => "(the job's id)".to_string(),
            "WH_PAYLOAD" if value.is_empty() => String::new(),
            _ => value,
        };
        // Control characters escaped (a payload's value must not drive the terminal); quotes
        // and backslashes as they are.
        println!("  {name}={}", shown(&mask.text(&value), usize::MAX));
    }
}
