//! What an entry does when a deploy goes wrong: `verify:` (an HTTP check the daemon makes, or
//! a command run where the actions run, tried until it passes or `within` runs out) and
//! `on_failure: rollback` (back to the last release, with the entry's actions or its own
//! `rollback:` ones).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::raw::{Quantity, RawAction};
use super::Action;

/// `verify:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    /// An http:// or https:// URL the daemon asks (GET) until it answers `expect`.
    pub(super) http: Option<String>,
    /// The HTTP status that passes (default 200).
    pub(super) expect: Option<u16>,
    /// A shell command run where the actions run, until it exits 0.
    pub(super) run: Option<String>,
    /// How long the check is tried before the job fails (default 60s).
    pub(super) within: Option<Quantity>,
}

/// `on_failure:` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // The schema's words; read by `on_failure`.
pub(super) enum RawOnFailure {
    /// Nothing more: the job is failed (the default).
    Nothing,
    /// A rollback job to the entry's last release is recorded with the failure.
    Rollback,
}

/// Reads `on_failure:` (whether a failure rolls back), naming the key in its problem.
pub(super) fn on_failure(raw: Option<&str>) -> Result<bool, String> {
    match raw {
        None | Some("nothing") => Ok(false),
        Some("rollback") => Ok(true),
        Some(other) => Err(format!(
            "on_failure: {:?} is not one of: nothing, rollback",
            other.chars().take(64).collect::<String>()
        )),
    }
}

/// The check that tells whether a deploy worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub check: Check,
    /// How long it is tried.
    pub within: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http { url: String, expect: u16 },
    Run { command: String },
}

/// Compiles `verify:`; `Err` holds each problem.
pub(super) fn verify(raw: &RawVerify) -> Result<Verify, Vec<String>> {
    let mut problems = Vec::new();
    let within = match raw.within.as_ref().map(Quantity::text) {
        None => Duration::from_secs(60),
        Some(text) => match super::units::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                problems.push("verify.within must be more than 0".to_string());
                Duration::ZERO
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("verify.within: {e}"));
                Duration::ZERO
            }
        },
    };
    let check = match (&raw.http, &raw.run) {
        (Some(url), None) => {
            let lower = url.to_ascii_lowercase();
            let host = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) || url.chars().any(char::is_whitespace)
            {
                problems.push(format!("verify.http {url:?} is not an http:// or https:// URL"));
            }
            let expect = raw.expect.unwrap_or(200);
            if !(100..=599).contains(&expect) {
                problems.push(format!("verify.expect {expect} is not an HTTP status (100 to 599)"));
            }
            Check::Http { url: url.clone(), expect }
        }
        (None, Some(command)) if !command.trim().is_empty() => {
            if raw.expect.is_some() {
                problems.push("verify.expect goes with verify.http, not verify.run".into());
            }
            Check::Run { command: command.clone() }
        }
        (None, Some(_)) => {
            problems.push("verify.run is empty".into());
            Check::Run { command: String::new() }
        }
        (Some(_), Some(_)) => {
            problems.push("verify: give either `http` or `run`, not both".into());
            Check::Run { command: String::new() }
        }
        (None, None) => {
            problems.push("verify: give `http: URL` (with `expect:`) or `run: COMMAND`".into());
            Check::Run { command: String::new() }
        }
    };
    if problems.is_empty() {
        Ok(Verify { check, within })
    } else {
        Err(problems)
    }
}

/// The `rollback:` actions: shell commands, one or a list.
pub(super) fn rollback_actions(raw: serde_yaml::Value) -> Result<Vec<Action>, Vec<String>> {
    let list = super::actions::read(raw).map_err(|problems| {
        problems.into_iter().map(|(n, why)| format!("rollback: action {n} {why}")).collect::<Vec<_>>()
    })?;
    let mut actions = Vec::new();
    let mut problems = Vec::new();
    for (i, a) in list.into_iter().enumerate() {
        let run = match a {
            RawAction::Command(run) => run,
            RawAction::Step(step) if step.if_changed.is_none() => step.run,
            RawAction::Step(_) => {
                problems.push(format!(
                    "rollback: action {} cannot have if_changed (a rollback runs whole)",
                    i + 1
                ));
                continue;
            }
        };
        if run.trim().is_empty() {
            problems.push(format!("rollback: action {} is empty", i + 1));
        }
        actions.push(Action { run, if_changed: None });
    }
    if actions.is_empty() && problems.is_empty() {
        problems.push(
            "rollback: give at least one command, or leave it out to roll back with the actions".into(),
        );
    }
    if problems.is_empty() {
        Ok(actions)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(http: Option<&str>, run: Option<&str>, within: Option<&str>, expect: Option<u16>) -> RawVerify {
        RawVerify {
            http: http.map(str::to_string),
            expect,
            run: run.map(str::to_string),
            within: within.map(|w| Quantity::Text(w.to_string())),
        }
    }

    #[test]
    fn verify_checks_are_one_of_two_and_within_is_more_than_zero() {
        let ok = verify(&raw(Some("http://127.0.0.1:3000/up"), None, Some("30s"), None)).unwrap();
        assert_eq!(ok.check, Check::Http { url: "http://127.0.0.1:3000/up".into(), expect: 200 });
        assert_eq!(ok.within, Duration::from_secs(30));
        assert_eq!(
            verify(&raw(None, Some("curl -f localhost"), None, None)).unwrap().within,
            Duration::from_secs(60)
        );
        for (bad, says) in [
            (raw(Some("http://x/"), None, Some("0"), None), "more than 0"),
            (raw(Some("ftp://x/"), None, None, None), "not an http"),
            (raw(Some("http://"), None, None, None), "not an http"),
            (raw(Some("http://x/"), None, None, Some(42)), "not an HTTP status"),
            (raw(Some("http://x/"), Some("true"), None, None), "not both"),
            (raw(None, None, None, None), "give `http"),
            (raw(None, Some(" "), None, None), "empty"),
            (raw(None, Some("true"), Some("soon"), None), "verify.within"),
        ] {
            let problems = verify(&bad).unwrap_err();
            assert!(problems.iter().any(|p| p.contains(says)), "{problems:?}");
        }
    }
}
