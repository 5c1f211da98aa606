//! A command run as root acts as the owner of `state_dir`, as the daemon does: the files it
//! writes there (the job store's journal, logs, payloads) stay the daemon's, and a manual run's
//! actions run as the daemon's user would run them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

/// When this process runs as root and `dir` belongs to another user, becomes that user (its
/// group, its supplementary groups, then its id; `HOME`, `USER` and `LOGNAME` follow). Nothing
/// to do when `dir` does not exist yet, is root's, or this process is not root (it cannot
/// write another user's files then).
pub fn become_owner_of(dir: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(dir) else { return Ok(()) };
    let me = nix::unistd::geteuid();
    if !me.is_root() || meta.uid() == me.as_raw() {
        return Ok(());
    }
    let uid = Uid::from_raw(meta.uid());
    let user = User::from_uid(uid).ok().flatten();
    let gid = user.as_ref().map_or(Gid::from_raw(meta.gid()), |u| u.gid);
    let name = user.as_ref().map_or_else(|| uid.to_string(), |u| u.name.clone());
    let fail = |what: &str, e: nix::Error| {
        format!("cannot act as {name}, the owner of {} ({what}: {e}): run this as {name}", dir.display())
    };
    nix::unistd::setgroups(&[gid]).map_err(|e| fail("setgroups", e))?;
    nix::unistd::setgid(gid).map_err(|e| fail("setgid", e))?;
    nix::unistd::setuid(uid).map_err(|e| fail("setuid", e))?;
    if let Some(u) = &user {
        std::env::set_var("HOME", &u.dir);
        std::env::set_var("USER", &u.name);
        std::env::set_var("LOGNAME", &u.name);
    }
    eprintln!("note: running as {name}, the owner of {}", dir.display());
    Ok(())
}
