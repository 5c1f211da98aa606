//! `hosts:` and `host_groups:`: the machines an entry's actions may run on through OpenSSH,
//! each with its host key pinned; and an entry's `hosts:` and `rollout:`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// One host as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    /// `user@host` or `user@host:port` (the port defaults to 22).
    pub(super) ssh: String,
    /// Its public host key, pinned: `ssh-ed25519 AAAA...` (a line of `ssh-keyscan`, with or
    /// without the host name in front). Or `known_hosts`.
    pub(super) host_key: Option<String>,
    /// A known_hosts file that holds its key (relative to the settings file).
    pub(super) known_hosts: Option<PathBuf>,
    /// The private key to log in with (default: the daemon user's ssh agent and keys).
    pub(super) identity_file: Option<PathBuf>,
    /// A host of `hosts:` to connect through (its key pinned too), as `ssh -J` would.
    pub(super) jump: Option<String>,
    /// The directory the actions run in there (default: the user's home).
    pub(super) dir: Option<String>,
    /// How long connecting and the SSH handshake may take (default 10s).
    pub(super) connect_timeout: Option<String>,
}

/// An entry's `rollout:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    /// Hosts deployed at once: a number, or a share of the hosts ("25%"); default 1, one
    /// after the other in the order given.
    #[schemars(with = "Option<serde_json::Value>")]
    pub(super) parallel: Option<serde_yaml::Value>,
    /// Hosts that may fail before the rollout stops and the job fails (default 0).
    pub(super) max_fail: Option<usize>,
    /// Pause between one host and the next (default 0s).
    pub(super) wait: Option<String>,
}

/// Where a host's key is pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// A key (`type base64`), written into a known_hosts file of its own for each connection.
    Key(String),
    /// A known_hosts file.
    File(PathBuf),
}

/// A host the actions may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub user: String,
    pub address: String,
    pub port: u16,
    pub key: HostKey,
    pub identity_file: Option<PathBuf>,
    /// The host connected through, pinned like any (it has no jump of its own).
    pub jump: Option<Box<Host>>,
    pub dir: Option<String>,
    /// Connecting and the SSH handshake, at most (whole seconds, at least 1).
    pub connect_timeout: Duration,
}

/// How an entry deploys to its hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub parallel: usize,
    pub max_fail: usize,
    pub wait: Duration,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout { parallel: 1, max_fail: 0, wait: Duration::ZERO }
    }
}

/// The hosts and groups by name: what an entry's `hosts:` may name.
pub(super) type HostNames = BTreeMap<String, Vec<Arc<Host>>>;

fn simple_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `user@host[:port]`.
fn target(text: &str) -> Result<(String, String, u16), String> {
    let (user, rest) = text.split_once('@').ok_or("ssh: user@host[:port] (the user is needed)")?;
    let (address, port) = match rest.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') || a.starts_with('[') => {
            (a.trim_matches(['[', ']']), p.parse::<u16>().map_err(|_| format!("ssh: {p:?} is not a port"))?)
        }
        _ => (rest, 22),
    };
    let good = |s: &str| {
        !s.is_empty() && !s.starts_with('-') && s.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
    };
    if !good(user) || !good(address) {
        return Err("ssh: user@host[:port], without blanks, and neither starting with '-'".into());
    }
    Ok((user.to_string(), address.to_string(), port))
}

/// A pinned key: `[hostnames] type base64 [comment]` → `type base64`.
fn key_of(line: &str) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at =
        words.iter().position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"));
    match at.and_then(|i| Some((words[i], *words.get(i + 1)?))) {
        Some((kind, key)) if key.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) => {
            Ok(format!("{kind} {key}"))
        }
        _ => Err("host_key: a public key as ssh-keyscan prints it (ssh-ed25519 AAAA...)".into()),
    }
}

/// Compiles `hosts:` and `host_groups:`; each problem goes to `problems` (prefixed with where).
pub(super) fn hosts(
    raw: &BTreeMap<String, RawHost>,
    groups: &BTreeMap<String, Vec<String>>,
    dir: &Path,
    problems: &mut Vec<String>,
) -> HostNames {
    let mut names = HostNames::new();
    for (name, h) in raw {
        let what = format!("hosts.{name}");
        if !simple_name(name) {
            problems.push(format!("{what}: a name of letters, digits, '.', '_' and '-'"));
            continue;
        }
        let (user, address, port) = match target(&h.ssh) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        let key = match (&h.host_key, &h.known_hosts) {
            (Some(line), None) => key_of(line).map(HostKey::Key),
            (None, Some(file)) => Ok(HostKey::File(dir.join(file))),
            (Some(_), Some(_)) => Err("give host_key or known_hosts, not both".to_string()),
            (None, None) => Err("its host key is not pinned: give host_key (ssh-keyscan -p PORT HOST, then \
                                 check its fingerprint with ssh-keygen -lf) or known_hosts"
                .to_string()),
        };
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        if h.dir.as_deref().is_some_and(|d| d.is_empty() || d.chars().any(char::is_control)) {
            problems.push(format!("{what}: dir: a path of one line"));
            continue;
        }
        let connect_timeout = match h.connect_timeout.as_deref().map(humantime::parse_duration) {
            None => Duration::from_secs(10),
            Some(Ok(d)) if d >= Duration::from_secs(1) && d <= Duration::from_secs(600) => d,
            Some(_) => {
                problems.push(format!("{what}: connect_timeout: a duration from 1s to 10m"));
                continue;
            }
        };
        let host = Host {
            name: name.clone(),
            user,
            address,
            port,
            key,
            identity_file: h.identity_file.as_ref().map(|f| dir.join(f)),
            jump: None,
            dir: h.dir.clone(),
            connect_timeout,
        };
        names.insert(name.clone(), vec![Arc::new(host)]);
    }
    // Jumps: through another host of `hosts:`, itself reached directly.
    for (name, h) in raw {
        let (Some(jump), Some(host)) = (&h.jump, names.get(name).and_then(|v| v.first()).cloned()) else {
            continue;
        };
        let through = raw.get(jump).and_then(|j| j.jump.is_none().then_some(()));
        match names.get(jump).and_then(|v| v.first()) {
            Some(j) if jump != name && through.is_some() => {
                let mut host = (*host).clone();
                host.jump = Some(Box::new((**j).clone()));
                names.insert(name.clone(), vec![Arc::new(host)]);
            }
            _ => problems.push(format!(
                "hosts.{name}: jump: {jump:?} is not another host of hosts: reached directly (one jump, pinned like any host)"
            )),
        }
    }
    for name in groups.keys() {
        if raw.contains_key(name) {
            problems.push(format!("host_groups.{name}: a host has that name"));
        } else if !simple_name(name) {
            problems.push(format!("host_groups.{name}: a name of letters, digits, '.', '_' and '-'"));
        } else {
            let mut trail = Vec::new();
            match members(name, groups, &names, &mut trail) {
                Ok(hosts) => {
                    names.insert(name.clone(), hosts);
                }
                Err(e) => problems.push(format!("host_groups.{name}: {e}")),
            }
        }
    }
    names
}

/// The hosts of group `name`, in order, each once.
fn members(
    name: &str,
    groups: &BTreeMap<String, Vec<String>>,
    hosts: &HostNames,
    trail: &mut Vec<String>,
) -> Result<Vec<Arc<Host>>, String> {
    if trail.iter().any(|t| t == name) {
        trail.push(name.to_string());
        return Err(format!("names itself ({})", trail.join(" → ")));
    }
    trail.push(name.to_string());
    let mut out: Vec<Arc<Host>> = Vec::new();
    for member in &groups[name] {
        let found = if groups.contains_key(member) {
            members(member, groups, hosts, trail)?
        } else {
            hosts.get(member).cloned().ok_or_else(|| format!("{member:?} is neither a host nor a group"))?
        };
        for h in found {
            if !out.iter().any(|o| o.name == h.name) {
                out.push(h);
            }
        }
    }
    trail.pop();
    Ok(out)
}

/// An entry's `hosts:` (names of hosts or groups) and `rollout:`.
pub(super) fn entry_hosts(
    list: Option<&Vec<String>>,
    rollout: Option<&RawRollout>,
    names: &HostNames,
    problems: &mut Vec<String>,
) -> (Vec<Arc<Host>>, Rollout) {
    let mut hosts: Vec<Arc<Host>> = Vec::new();
    for name in list.into_iter().flatten() {
        match names.get(name) {
            Some(found) => {
                for h in found {
                    if !hosts.iter().any(|o| o.name == h.name) {
                        hosts.push(h.clone());
                    }
                }
            }
            None => {
                problems.push(format!("hosts: {name:?} is not a host nor a group of hosts:/host_groups:"))
            }
        }
    }
    if list.is_some_and(|l| l.is_empty()) {
        problems.push("hosts: an empty list (leave it out to run the actions here)".into());
    }
    let mut out = Rollout::default();
    if let Some(r) = rollout {
        if list.is_none() {
            problems.push("rollout: without hosts: (it says how to deploy to them)".into());
        }
        let count = hosts.len().max(1);
        match &r.parallel {
            None => {}
            Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
                out.parallel = (n.as_u64().unwrap_or(1) as usize).min(count);
            }
            Some(serde_yaml::Value::String(s))
                if s.strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .is_some_and(|p| (1..=100).contains(&p)) =>
            {
                let share = s.trim_end_matches('%').trim().parse::<usize>().unwrap_or(100);
                out.parallel = (count * share).div_ceil(100).max(1);
            }
            Some(other) => problems.push(format!(
                "rollout.parallel: {}: a number of hosts (1 or more) or a share of them (\"25%\")",
                serde_yaml::to_string(other).unwrap_or_default().trim()
            )),
        }
        out.max_fail = r.max_fail.unwrap_or(0);
        if let Some(wait) = &r.wait {
            match humantime::parse_duration(wait) {
                Ok(d) if d <= Duration::from_secs(3600) => out.wait = d,
                _ => problems.push(format!("rollout.wait: {wait:?} is not a duration up to 1h (10s, 2m)")),
            }
        }
    }
    (hosts, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ssh: &str, key: Option<&str>) -> RawHost {
        RawHost {
            ssh: ssh.into(),
            host_key: key.map(str::to_string),
            known_hosts: None,
            identity_file: None,
            jump: None,
            dir: None,
            connect_timeout: None,
        }
    }

    #[test]
    fn hosts_are_pinned_and_groups_resolved() {
        let key = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE";
        let mut hosts = BTreeMap::new();
        hosts.insert("web1".to_string(), raw("deploy@10.0.0.1", Some(key)));
        hosts.insert("web2".to_string(), raw("deploy@[::1]:2200", Some("ssh-ed25519 AAAAB")));
        hosts.insert("open".to_string(), raw("deploy@10.0.0.3", None));
        hosts.insert("bad".to_string(), raw("-oProxyCommand=x@h", Some(key)));
        let mut groups = BTreeMap::new();
        groups.insert("web".to_string(), vec!["web1".to_string(), "web2".to_string(), "web1".to_string()]);
        groups.insert("loop".to_string(), vec!["web1".to_string(), "loop2".to_string()]);
        groups.insert("loop2".to_string(), vec!["loop".to_string()]);
        let mut problems = Vec::new();
        let names = hosts_of(&hosts, &groups, &mut problems);
        let web: Vec<&str> = names["web"].iter().map(|h| h.name.as_str()).collect();
        assert_eq!(web, ["web1", "web2"]);
        assert_eq!(names["web1"][0].key, HostKey::Key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE".into()));
        assert_eq!((names["web2"][0].address.as_str(), names["web2"][0].port), ("::1", 2200));
        let said = problems.join("\n");
        assert!(said.contains("hosts.open: its host key is not pinned"), "{said}");
        assert!(said.contains("hosts.bad: ssh:"), "{said}");
        assert!(said.contains("host_groups.loop: names itself (loop → loop2 → loop)"), "{said}");
        let mut problems = Vec::new();
        let (list, _) = entry_hosts(Some(&vec!["web".into(), "nope".into()]), None, &names, &mut problems);
        assert_eq!(list.len(), 2);
        assert!(problems[0].contains("\"nope\" is not a host"), "{problems:?}");
    }

    fn hosts_of(
        raw: &BTreeMap<String, RawHost>,
        groups: &BTreeMap<String, Vec<String>>,
        problems: &mut Vec<String>,
    ) -> HostNames {
        hosts(raw, groups, Path::new("/etc/wh-automata"), problems)
    }
}
