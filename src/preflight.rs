//! What `--check` can see of this machine before the first push, as the user it runs as (run
//! it as the service user): each entry's `workdir` exists and can be read, `state_dir` can be
//! written, the `listen` address is free, `sh` is there. These are warnings, not problems: the
//! settings are valid, and the machine may be made ready after the check.

use std::io::ErrorKind;
use std::path::Path;

use crate::settings::Settings;

/// What would stop the daemon or a job on this machine, one line each.
pub fn warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for entry in &settings.entries {
        if let Some(why) = unusable_dir(&entry.workdir) {
            out.push(format!(
                "entry \"{}\": workdir {} {why}: its actions could not start",
                entry.name,
                entry.workdir.display()
            ));
        }
    }
    if let Some(why) = unwritable(&settings.server.state_dir) {
        out.push(format!(
            "state_dir {} {why}: the daemon could not record jobs",
            settings.server.state_dir.display()
        ));
    }
    match std::net::TcpListener::bind(&settings.server.listen) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AddrInUse => out.push(format!(
            "listen {}: the address is in use (by a daemon already running?)",
            settings.server.listen
        )),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => out.push(format!(
            "listen {}: this user may not listen there (ports below 1024 need privileges; use a reverse proxy)",
            settings.server.listen
        )),
        Err(e) => out.push(format!("listen {}: {e}", settings.server.listen)),
    }
    if !on_path("sh") {
        out.push("no `sh` on PATH: no action could run".to_string());
    }
    out
}

fn unusable_dir(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Some("does not exist".into()),
        Err(e) => Some(format!("cannot be reached by this user ({e})")),
        Ok(m) if !m.is_dir() => Some("is not a directory".into()),
        Ok(_) => std::fs::read_dir(dir).err().map(|e| format!("cannot be read by this user ({e})")),
    }
}

/// Why files cannot be made in `dir` (or, where it does not exist yet, in the nearest
/// directory above it, where it would be created).
fn unwritable(dir: &Path) -> Option<String> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    if !existing.is_dir() {
        return Some(format!("cannot be created: {} is not a directory", existing.display()));
    }
    let probe = existing.join(format!(".wh-automata-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) if existing == dir => Some(format!("is not writable by this user ({e})")),
        Err(e) => Some(format!("cannot be created in {} by this user ({e})", existing.display())),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}
