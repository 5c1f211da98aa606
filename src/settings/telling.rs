//! Phase two of what tells people what happened: an entry's `status:` (the commit on the host)
//! and `notify:` (named targets), the top-level `notify:` targets, and their secrets resolved.
//! Nothing here sends anything; `crate::telling::status` and `crate::telling::notify` do.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::expand::expand;
use super::problems::{problem, Problem};
use super::raw::{RawNotifyUse, RawStatus, RawTarget, SecretText};
use super::Secret;

/// Where an entry's jobs are reported on the commit.
#[derive(Debug, Clone)]
pub struct StatusSink {
    pub token: Secret,
    /// The status's name on the commit.
    pub context: String,
    /// The host's API; `None`: derived from the event.
    pub api_url: Option<String>,
    /// GitHub: the Deployments API, to this environment.
    pub deployment: Option<String>,
}

/// One named notification target.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
}

/// What a target is. URLs that carry their own credential (Slack's, Discord's) are secrets.
#[derive(Debug)]
pub enum TargetKind {
    Slack { url: Secret },
    Discord { url: Secret },
    Ntfy { url: Secret, token: Option<Secret> },
    Email { to: Vec<String> },
    Matrix { homeserver: String, room: String, token: Secret },
    Webhook { url: Secret, secret: Option<Secret> },
    Command { run: String },
}

/// The secret values of a target: its URLs that carry a token, its tokens and secrets.
pub fn target_secrets(target: &Target) -> Vec<String> {
    let all: Vec<&Secret> = match &target.kind {
        TargetKind::Slack { url } | TargetKind::Discord { url } => vec![url],
        TargetKind::Ntfy { url, token } => std::iter::once(url).chain(token.as_ref()).collect(),
        TargetKind::Matrix { token, .. } => vec![token],
        TargetKind::Webhook { url, secret } => std::iter::once(url).chain(secret.as_ref()).collect(),
        TargetKind::Email { .. } | TargetKind::Command { .. } => Vec::new(),
    };
    all.into_iter().map(|s| s.expose_str().to_string()).collect()
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Slack { .. } => "slack",
            TargetKind::Discord { .. } => "discord",
            TargetKind::Ntfy { .. } => "ntfy",
            TargetKind::Email { .. } => "email",
            TargetKind::Matrix { .. } => "matrix",
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Command { .. } => "command",
        }
    }
}

/// When an entry's targets are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyOn {
    /// The first failure of a streak.
    Failed,
    /// The first time-out of a streak.
    TimedOut,
    /// A success after a failing streak.
    Recovered,
    Succeeded,
    Started,
    Cancelled,
    /// The end of a rollback: rolled back, or the rollback failed.
    Rollback,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 7] = [
        NotifyOn::Failed,
        NotifyOn::TimedOut,
        NotifyOn::Recovered,
        NotifyOn::Succeeded,
        NotifyOn::Started,
        NotifyOn::Cancelled,
        NotifyOn::Rollback,
    ];
    pub const DEFAULT: [NotifyOn; 4] =
        [NotifyOn::Failed, NotifyOn::TimedOut, NotifyOn::Recovered, NotifyOn::Rollback];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failed => "failed",
            NotifyOn::TimedOut => "timed_out",
            NotifyOn::Recovered => "recovered",
            NotifyOn::Succeeded => "succeeded",
            NotifyOn::Started => "started",
            NotifyOn::Cancelled => "cancelled",
            NotifyOn::Rollback => "rollback",
        }
    }

    pub fn parse(name: &str) -> Option<NotifyOn> {
        NotifyOn::ALL.into_iter().find(|on| on.as_str() == name)
    }
}

/// Whom an entry tells, and when.
#[derive(Debug, Clone)]
pub struct Notify {
    pub to: Vec<String>,
    pub on: Vec<NotifyOn>,
    /// Lines of the failing action's log in a message.
    pub log_tail: usize,
}

/// The default `log_tail`.
pub const LOG_TAIL: usize = 20;
/// The most `log_tail` may ask for: a chat message has a size limit.
const LOG_TAIL_MAX: usize = 200;

/// Resolves `text` (`${VAR}` expanded) into a secret; `what` names it in problems.
fn secret_text(
    text: &SecretText,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<Secret, String> {
    match expand(&text.0, env) {
        Ok(v) if v.is_empty() => Err(format!("{what} is empty")),
        Ok(v) => Ok(Secret(v)),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// An optional secret (`${VAR}` expanded).
fn optional_secret(
    text: &Option<SecretText>,
    env: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<Option<Secret>, String> {
    text.as_ref().map(|t| secret_text(t, env, what)).transpose()
}

/// A URL typed in settings: http or https, with a host. Never repeated in a problem when it is
/// a secret (`secret: true`).
fn url(value: &str, what: &str, secret: bool) -> Result<(), String> {
    let shown = if secret { String::new() } else { format!(" \"{value}\"") };
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !value.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!("{what}{shown} is not an http:// or https:// URL")),
    }
}

/// An entry's `status:`; `problems` gets what is wrong.
pub(super) fn status(
    raw: &RawStatus,
    entry: &str,
    dir: &Path,
    provider: Option<crate::event::Provider>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<StatusSink> {
    if let Some(p) = provider.filter(|p| !crate::providers::has_status_api(*p)) {
        problems.push(format!("status: {p} has no commit status API; remove `status:` from this entry"));
        return None;
    }
    let token = match (&raw.token, &raw.token_file) {
        (Some(_), Some(_)) => Err("status: give either `token` or `token_file`, not both".to_string()),
        (Some(t), None) => secret_text(t, env, "status.token"),
        (None, Some(path)) => {
            let path = dir.join(path);
            match std::fs::read_to_string(&path) {
                Ok(v) if v.trim().is_empty() => Err(format!("status.token_file {} is empty", path.display())),
                Ok(v) => Ok(Secret(v.trim().to_string())),
                Err(e) => Err(format!("status.token_file {}: {e}", path.display())),
            }
        }
        (None, None) => Err("status: no token: set `token` or `token_file` (the host's API token)".into()),
    };
    let token = token.map_err(|e| problems.push(e)).ok();
    if let Some(api) = &raw.api_url {
        if let Err(e) = url(api, "status.api_url", false) {
            problems.push(e);
        }
    }
    if let Some(p) = provider.filter(|p| raw.deployment.is_some() && !crate::providers::has_deployments(*p)) {
        problems.push(format!("status.deployment needs a host with a Deployments API, and {p} has none"));
    }
    if let Some(env_name) = &raw.deployment {
        if env_name.trim().is_empty() {
            problems.push("status.deployment is empty".into());
        }
    }
    let context = raw.context.clone().unwrap_or_else(|| format!("wh-automata/{entry}"));
    if context.trim().is_empty() || context.len() > 255 {
        problems.push("status.context must be 1 to 255 characters".into());
    }
    Some(StatusSink {
        token: token?,
        context,
        api_url: raw.api_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
        deployment: raw.deployment.clone(),
    })
}

/// An entry's `notify:`, checked against the targets defined.
pub(super) fn notify_use(
    raw: &RawNotifyUse,
    targets: &BTreeMap<String, Arc<Target>>,
    problems: &mut Vec<String>,
) -> Notify {
    let (to, on, log_tail) = match raw {
        RawNotifyUse::Names(names) => (names.clone(), None, None),
        RawNotifyUse::Rule(rule) => (rule.to.clone(), rule.on.clone(), rule.log_tail),
    };
    if to.is_empty() {
        problems.push("notify: names no target".into());
    }
    for name in &to {
        if !targets.contains_key(name) {
            let known: Vec<&str> = targets.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none is defined".to_string() } else { known.join(", ") };
            problems.push(format!("notify: no target \"{name}\" under the top-level notify: ({known})"));
        }
    }
    let on = match on {
        None => NotifyOn::DEFAULT.to_vec(),
        Some(list) => {
            let mut parsed = Vec::new();
            for name in list {
                match NotifyOn::parse(&name) {
                    Some(on) => parsed.push(on),
                    None => {
                        let known: Vec<&str> = NotifyOn::ALL.iter().map(|o| o.as_str()).collect();
                        problems.push(format!("notify.on: \"{name}\" is not one of {}", known.join(", ")));
                    }
                }
            }
            if parsed.is_empty() {
                problems.push("notify.on is empty: no message would ever be sent".into());
            }
            parsed
        }
    };
    let log_tail = log_tail.unwrap_or(LOG_TAIL);
    if log_tail > LOG_TAIL_MAX {
        problems.push(format!("notify.log_tail must be at most {LOG_TAIL_MAX}, not {log_tail}"));
    }
    Notify { to, on, log_tail }
}

/// The top-level `notify:` targets of the settings file `file`.
pub(super) fn targets(
    file: &Path,
    lines: &[(String, usize)],
    raw: &BTreeMap<String, RawTarget>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Target>> {
    let mut out = BTreeMap::new();
    for (name, raw) in raw {
        let line = lines.iter().find(|(k, _)| k == name).map(|(_, l)| *l);
        let mut bad =
            |message: String| problems.push(problem(file, line, None, format!("notify.{name}: {message}")));
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            bad("a target's name may only hold letters, digits, '_' and '-'".into());
            continue;
        }
        match target(raw, env) {
            Ok(kind) => {
                out.insert(name.clone(), Arc::new(Target { name: name.clone(), kind }));
            }
            Err(messages) => messages.into_iter().for_each(&mut bad),
        }
    }
    out
}

fn target(raw: &RawTarget, env: &dyn Fn(&str) -> Option<String>) -> Result<TargetKind, Vec<String>> {
    let kinds = [
        ("slack", raw.slack.is_some()),
        ("discord", raw.discord.is_some()),
        ("ntfy", raw.ntfy.is_some()),
        ("email", raw.email.is_some()),
        ("matrix", raw.matrix.is_some()),
        ("webhook", raw.webhook.is_some()),
        ("command", raw.command.is_some()),
    ];
    let given: Vec<&str> = kinds.iter().filter(|(_, set)| *set).map(|(k, _)| *k).collect();
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    match given.as_slice() {
        [] => return Err(vec![format!("say what it is: one of {}", names.join(", "))]),
        [_] => {}
        many => return Err(vec![format!("one kind per target, not {}", many.join(" and "))]),
    }
    let mut problems = Vec::new();
    if raw.secret.is_some() && raw.webhook.is_none() {
        problems.push("`secret` belongs to a webhook target".into());
    }
    if raw.token.is_some() && raw.ntfy.is_none() {
        problems.push("`token` belongs to an ntfy target (matrix: under matrix:)".into());
    }
    // A URL that is itself the credential: expanded, checked, never repeated.
    let mut secret_url = |value: &str, what: &str| -> Option<Secret> {
        match expand(value, env) {
            Ok(v) => match url(&v, what, true) {
                Ok(()) => Some(Secret(v)),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                None
            }
        }
    };
    let kind = if let Some(u) = &raw.slack {
        secret_url(u, "slack").map(|url| TargetKind::Slack { url })
    } else if let Some(u) = &raw.discord {
        secret_url(u, "discord").map(|url| TargetKind::Discord { url })
    } else if let Some(u) = &raw.ntfy {
        let url = secret_url(u, "ntfy");
        match optional_secret(&raw.token, env, "token") {
            Ok(token) => url.map(|url| TargetKind::Ntfy { url, token }),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    } else if let Some(u) = &raw.webhook {
        let url = secret_url(u, "webhook");
        match optional_secret(&raw.secret, env, "secret") {
            Ok(secret) => url.map(|url| TargetKind::Webhook { url, secret }),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    } else if let Some(list) = &raw.email {
        let to = list.to_vec();
        for address in &to {
            let plain = address.contains('@')
                && !address.starts_with(['@', '-'])
                && !address
                    .contains(|c: char| c.is_whitespace() || c.is_control() || ",;<>\"'()\\".contains(c));
            if !plain {
                problems.push(format!(
                    "email: \"{}\" is not a plain address like ops@example.com",
                    address.escape_debug()
                ));
            }
        }
        if to.is_empty() {
            problems.push("email: no address".into());
        }
        Some(TargetKind::Email { to })
    } else if let Some(m) = &raw.matrix {
        if let Err(e) = url(&m.homeserver, "matrix.homeserver", false) {
            problems.push(e);
        }
        if !m.room.starts_with('!') || !m.room.contains(':') {
            problems.push(format!(
                "matrix.room \"{}\" is not a room id like \"!abc:example.com\" (the room's settings show it)",
                m.room.escape_debug()
            ));
        }
        match secret_text(&m.token, env, "matrix.token") {
            Ok(token) => Some(TargetKind::Matrix {
                homeserver: m.homeserver.trim_end_matches('/').to_string(),
                room: m.room.clone(),
                token,
            }),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    } else if let Some(run) = &raw.command {
        if run.trim().is_empty() {
            problems.push("command is empty".into());
        }
        Some(TargetKind::Command { run: run.clone() })
    } else {
        None
    };
    match kind {
        Some(kind) if problems.is_empty() => Ok(kind),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(url("https://hooks.slack.com/services/x", "slack", true).is_ok());
        assert!(url("http://127.0.0.1:9/x", "slack", true).is_ok());
        let e = url("hooks.slack.com/services/SECRET", "slack", true).unwrap_err();
        assert!(!e.contains("SECRET"), "a secret URL is never repeated: {e}");
        assert!(url("https:///x", "api", false).is_err());
        assert!(url("https://a b", "api", false).is_err());
    }
}
