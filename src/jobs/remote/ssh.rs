//! The ssh side of a remote run: the command (strict host key checking against the pinned key,
//! in a known_hosts file of its own), what goes on the wrapper's input, the lock's name.

use std::path::PathBuf;

use base64::Engine;
use tokio::process::Command;

use crate::settings::{Action, Entry, Host, HostKey};

/// The script run on each host.
pub(super) const WRAPPER: &str = include_str!("remote.sh");
/// Variables of the daemon's own machine, not sent: the host has its own.
const LOCAL_ONLY: [&str; 7] = ["HOME", "PATH", "SHELL", "USER", "LOGNAME", "PWD", "TMPDIR"];

/// `'text'` for a POSIX shell.
pub(super) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A random mark for the wrapper's own lines.
pub(super) fn nonce() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::getrandom(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
    }
    hex::encode(bytes)
}

/// The known_hosts line of a pinned key.
pub(super) fn known_line(host: &Host, key: &str) -> String {
    if host.port == 22 {
        format!("{} {key}\n", host.address)
    } else {
        format!("[{}]:{} {key}\n", host.address, host.port)
    }
}

/// A known_hosts file holding only `host`'s pinned key, removed when dropped.
pub(super) struct KnownHosts(PathBuf, bool);

impl KnownHosts {
    pub(super) fn of(host: &Host, job: i64) -> std::io::Result<KnownHosts> {
        match &host.key {
            HostKey::File(path) => Ok(KnownHosts(path.clone(), false)),
            HostKey::Key(key) => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let path = std::env::temp_dir().join(format!(
                    "wh-automata-known-{}-{job}-{}-{}",
                    std::process::id(),
                    host.name,
                    nonce()
                ));
                let mut file =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
                file.write_all(known_line(host, key).as_bytes())?;
                Ok(KnownHosts(path, true))
            }
        }
    }
}

impl Drop for KnownHosts {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The name of the entry's lock (and files) on a host: its name, with a digest of its settings
/// file's path and of the host's name in front, so that two daemons (say staging and
/// production) that deploy an entry of the same name as the same user each have their own, and
/// two hosts of the settings that are one machine do not stop each other, while a foreground run
/// of the same settings shares the daemon's.
pub(super) fn lock_name(entry: &Entry, host: &Host) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(entry.file.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    hasher.update(host.name.as_bytes());
    let digest = hasher.finalize();
    let name: String = entry
        .name
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    format!("{}-{name}", hex::encode(&digest[..6]))
}

/// The options that hold ssh to `host`'s pinned key, with `known` its known_hosts file.
fn strict(host: &Host, known: &KnownHosts) -> Vec<String> {
    let mut options: Vec<String> = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("UserKnownHostsFile={}", known.0.display()),
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        &format!("ConnectTimeout={}", host.connect_timeout.as_secs().max(1)),
        "-o",
        "LogLevel=ERROR",
        "-p",
        &host.port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(identity) = &host.identity_file {
        options.extend([
            "-i".into(),
            identity.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    options
}

/// The `ssh` command for `host`, running the wrapper for the entry whose lock is `lock`;
/// through its jump host (`jump_known` its known_hosts file) when it has one: a `ProxyCommand`
/// of the same strict options, so the jump host's key is pinned too.
pub(super) fn ssh(host: &Host, known: &KnownHosts, jump_known: Option<&KnownHosts>, lock: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-T").args(strict(host, known)).args([
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
    ]);
    if let (Some(jump), Some(jump_known)) = (&host.jump, jump_known) {
        let mut proxy = vec!["ssh".to_string(), "-T".into(), "-W".into(), "%h:%p".into()];
        proxy.extend(strict(jump, jump_known));
        proxy.extend(["--".into(), format!("{}@{}", jump.user, jump.address)]);
        // ssh hands ProxyCommand to a shell: each word quoted; `%h:%p` is ssh's own.
        let words: Vec<String> =
            proxy.iter().map(|w| if w == "%h:%p" { w.clone() } else { quoted(w) }).collect();
        cmd.arg("-o").arg(format!("ProxyCommand={}", words.join(" ")));
    }
    cmd.arg("--").arg(format!("{}@{}", host.user, host.address)).arg(format!(
        "sh -c {} wh-automata {}",
        quoted(WRAPPER),
        quoted(lock)
    ));
    cmd
}

/// What goes on the wrapper's standard input.
pub(super) fn input(
    nonce: &str,
    env: &[(String, String)],
    host: &Host,
    actions: &[&Action],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = format!("N {nonce}\n");
    for (name, value) in env {
        if !LOCAL_ONLY.contains(&name.as_str()) && name != "WH_PAYLOAD" {
            out.push_str(&format!("E {name} {}\n", b64(value.as_bytes())));
        }
    }
    out.push_str(&format!("E WH_HOST {}\n", b64(host.name.as_bytes())));
    if let Some(dir) = &host.dir {
        out.push_str(&format!("D {}\n", b64(dir.as_bytes())));
    }
    for action in actions {
        out.push_str(&format!("A {}\n", b64(action.run.as_bytes())));
    }
    out.push_str("P\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(b64(payload).as_bytes());
    bytes.push(b'\n');
    bytes
}
