//! One run of an entry at a time across processes: the daemon's workers and
//! `wh-automata-trigger`'s foreground runs take the entry's lock file in `state_dir/locks/`
//! (flock(2)) before a job starts, and hold it until its end.
//!
//! The locked file is also each action's standard input (an empty file reads as `/dev/null`
//! does), so the processes of a job inherit the lock: when the runner itself is killed
//! (`kill -9`), the actions it left behind still hold the entry, and a new run waits for them
//! (the daemon stops a killed daemon's leftovers at start; a killed foreground run's leftovers
//! end by themselves). At a job's end the lock is released explicitly, for every holder at
//! once: a server an action left running in the background does not keep the entry locked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::fcntl::{Flock, FlockArg};

/// The held lock of one entry; released when dropped.
pub struct EntryLock {
    file: Flock<File>,
}

/// The lock file of `entry` under `state_dir` (entry names are plain file names).
pub fn path(state_dir: &Path, entry: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{entry}.lock"))
}

impl EntryLock {
    /// Takes `entry`'s lock if no other process holds it: `None` when one does.
    pub fn try_take(state_dir: &Path, entry: &str) -> io::Result<Option<EntryLock>> {
        let path = path(state_dir, entry);
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        // Made if missing (never written), then opened to read: what an action's stdin is.
        OpenOptions::new().append(true).create(true).mode(0o600).open(&path)?;
        let file = File::open(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Some(EntryLock { file })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io::Error::from(e)),
        }
    }

    /// Takes `entry`'s lock, waiting for the process that holds it; `waiting` is called once if
    /// it has to wait, and `stop` is asked between tries (the wait ends with `None` when it says so).
    pub fn take(
        state_dir: &Path,
        entry: &str,
        waiting: impl FnOnce(),
        stop: impl Fn() -> bool,
    ) -> io::Result<Option<EntryLock>> {
        let mut waiting = Some(waiting);
        loop {
            if let Some(lock) = EntryLock::try_take(state_dir, entry)? {
                return Ok(Some(lock));
            }
            if let Some(say) = waiting.take() {
                say();
            }
            if stop() {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The locked file as an action's standard input: the action's processes hold the lock too.
    pub fn stdin(&self) -> io::Result<Stdio> {
        Ok(Stdio::from(self.file.try_clone()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_its_children_hold_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let lock = EntryLock::try_take(dir.path(), "site").unwrap().expect("free");
        assert!(EntryLock::try_take(dir.path(), "site").unwrap().is_none(), "held");
        assert!(EntryLock::try_take(dir.path(), "other").unwrap().is_some(), "per entry");
        // A child with the lock as its stdin holds it too.
        let mut child =
            std::process::Command::new("sleep").arg("0.5").stdin(lock.stdin().unwrap()).spawn().unwrap();
        assert!(EntryLock::try_take(dir.path(), "site").unwrap().is_none(), "held");
        // Unlocked explicitly (the job's end): free at once, though the child still has the file.
        // (A holder that dies without unlocking, kill -9, is the integration tests'.)
        let file = lock.file.unlock().map_err(|(_, e)| e).unwrap();
        assert!(EntryLock::try_take(dir.path(), "site").unwrap().is_some(), "released for every holder");
        drop(file);
        child.wait().unwrap();
    }
}
