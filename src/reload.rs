//! Hot reload: watch the settings file and every included file, and swap in new settings when
//! they are valid.
//!
//! The watches are on the files' directories, not the files: editors save by writing a new
//! file and renaming it over the old one, which a watch on the old file would not see. They are
//! Linux inotify watches that ask only for what a save does (a file written and closed, renamed,
//! created, deleted, its attributes changed), never for each write: a log file appended in the
//! same directory does not wake the watcher at all. Events are debounced on the trailing edge, so
//! a burst of saves makes one reload. SIGHUP reloads too. A broken edit is refused by
//! [`App::reload`] and the running settings keep serving; the watcher only decides when to try.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::app::{off_thread, App};
use crate::settings::include::literal_prefix;
use crate::settings::Settings;

/// Quiet time after the last change before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Which paths matter: the files read, every link on the way to them, and the include
/// patterns (a new file may match).
#[derive(Default)]
struct Relevant {
    files: BTreeSet<PathBuf>,
    patterns: Option<GlobSet>,
    dirs: BTreeSet<PathBuf>,
}

impl Relevant {
    fn of(settings: &Settings) -> Relevant {
        // A file behind links changes when its target is edited, and when a link on the way is
        // swapped (Kubernetes ConfigMaps rename a new `..data` link over the old one): every
        // path on the way is watched, through the directory that holds it.
        let files: BTreeSet<PathBuf> = settings.files.iter().flat_map(|f| link_chain(f)).collect();
        let mut dirs: BTreeSet<PathBuf> =
            files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        let mut builder = GlobSetBuilder::new();
        for pattern in &settings.include_globs {
            if let Ok(g) = Glob::new(&pattern.to_string_lossy()) {
                builder.add(g);
            }
            dirs.insert(literal_prefix(pattern));
        }
        Relevant { files, patterns: builder.build().ok(), dirs }
    }

    fn matters(&self, path: &Path) -> bool {
        self.files.contains(path) || self.patterns.as_ref().is_some_and(|p| p.is_match(path))
    }
}

/// The paths met while resolving `path`: itself, each link on the way (as named where it is
/// met), and where they lead, ending with the real file.
fn link_chain(path: &Path) -> Vec<PathBuf> {
    let mut chain = vec![path.to_path_buf()];
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(current) = pending.pop() {
        let mut resolved = PathBuf::new();
        let parts: Vec<_> = current.components().collect();
        for (i, part) in parts.iter().enumerate() {
            resolved.push(part);
            let Ok(target) = std::fs::read_link(&resolved) else { continue };
            hops += 1;
            if hops > 40 {
                return chain;
            }
            chain.push(resolved.clone());
            let base = resolved.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut next = base.join(target);
            next.extend(&parts[i + 1..]);
            chain.push(next.clone());
            pending.push(next);
            break;
        }
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        chain.push(real);
    }
    chain.sort();
    chain.dedup();
    chain
}

/// The name of the watcher's thread, as `/proc/PID/task/*/comm` shows it (at most 15 bytes).
pub const THREAD_NAME: &str = "settings-watch";

/// What a save does to a directory entry, and what happens to the directory itself. Not
/// `IN_MODIFY`: it fires on every write to any file of the directory (a log beside the
/// settings), and a save is complete only when its writer closes or renames the file.
fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// What the watcher thread reads and [`update_watches`] writes.
#[derive(Default)]
struct Watched {
    relevant: Relevant,
    /// The watch of each directory (two paths to one directory share one).
    dirs: BTreeMap<PathBuf, WatchDescriptor>,
}

impl Watched {
    /// Whether an event can change the settings read.
    fn is_change(&self, wd: &WatchDescriptor, mask: EventMask, name: Option<&std::ffi::OsStr>) -> bool {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return true; // events were lost: look again
        }
        match name {
            Some(name) => self.dirs.iter().any(|(dir, w)| w == wd && self.relevant.matters(&dir.join(name))),
            // The directory itself moved or deleted. `IN_IGNORED` follows a watch's removal,
            // which `update_watches` does after a reload: not a change.
            None => !mask.contains(EventMask::IGNORED) && self.dirs.values().any(|w| w == wd),
        }
    }
}

/// The inotify watches and what they are for.
#[derive(Clone)]
struct Watching {
    watches: Watches,
    watched: Arc<Mutex<Watched>>,
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchHandle {
    watching: Watching,
    stop: Arc<AtomicBool>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Removing the watches queues `IN_IGNORED` events, which wake the thread to see `stop`.
        let mut watches = self.watching.watches.clone();
        let watched = self.watching.watched.lock().unwrap_or_else(|e| e.into_inner());
        for wd in watched.dirs.values() {
            let _ = watches.remove(wd.clone());
        }
    }
}

/// Starts watching the settings of `app`, and listening for SIGHUP.
pub fn watch(app: Arc<App>) -> anyhow::Result<WatchHandle> {
    let mut inotify = Inotify::init().map_err(|e| anyhow::anyhow!("cannot watch the settings files: {e}"))?;
    let watches = inotify.watches();
    let watched = Arc::new(Mutex::new(Watched::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    {
        let (watched, stop) = (watched.clone(), stop.clone());
        std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                let events = match inotify.read_events_blocking(&mut buffer) {
                    Ok(events) => events,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!(error = %e, "file watch error; settings edits need SIGHUP to be seen");
                        return;
                    }
                };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let w = watched.lock().unwrap_or_else(|e| e.into_inner());
                let changed = events.fold(false, |changed, e| changed | w.is_change(&e.wd, e.mask, e.name));
                drop(w);
                if changed && tx.send(()).is_err() {
                    return;
                }
            }
        })?;
    }
    let watching = Watching { watches, watched };
    update_watches(&watching, &app.settings());

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let updater = watching.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    // Trailing-edge debounce: wait until the changes stop.
                    loop {
                        match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    debug!("settings files changed");
                }
                _ = hangup.recv() => debug!("SIGHUP: reloading settings"),
            }
            let app2 = app.clone();
            match off_thread(move || app2.reload()).await {
                Ok(Ok(new)) => update_watches(&updater, &new),
                // Refused: logged, and reported by /health.
                Ok(Err(_)) => {}
                Err(panic) => {
                    tracing::error!(%panic, "reloading the settings failed; the previous settings keep serving")
                }
            }
        }
    });
    Ok(WatchHandle { watching, stop })
}

fn update_watches(watching: &Watching, settings: &Settings) {
    let new = Relevant::of(settings);
    let mut watches = watching.watches.clone();
    let mut current = watching.watched.lock().unwrap_or_else(|e| e.into_inner());
    let gone: Vec<PathBuf> = current.dirs.keys().filter(|d| !new.dirs.contains(*d)).cloned().collect();
    for dir in gone {
        if let Some(wd) = current.dirs.remove(&dir) {
            if !current.dirs.values().any(|w| *w == wd) {
                let _ = watches.remove(wd);
            }
        }
    }
    // Every directory is watched again: a path that now names another directory (the old one
    // moved away or deleted, a new one put in its place) gets a watch of its own. Watching a
    // directory watched already gives back the same watch.
    for dir in &new.dirs {
        match watches.add(dir, mask()) {
            Ok(wd) => {
                if let Some(old) = current.dirs.insert(dir.clone(), wd) {
                    if !current.dirs.values().any(|w| *w == old) {
                        let _ = watches.remove(old);
                    }
                }
            }
            Err(e) => {
                current.dirs.remove(dir);
                warn!(dir = %dir.display(), "cannot watch: {}; edits there need SIGHUP to be seen", explain(&e))
            }
        }
    }
    current.relevant = new;
}

/// A readable message, with the fix for the one error users hit.
fn explain(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC) => {
            "the system's limit of watched files is reached (raise fs.inotify.max_user_watches)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watcher's own reads (and every other read) never start a reload: once they did,
    /// and the reload's read of the file started the next one, every 100 ms. Nor does a write
    /// that is not yet closed.
    #[test]
    fn reads_are_not_changes_and_other_files_do_not_matter() {
        let m = mask();
        for not_asked in [WatchMask::ACCESS, WatchMask::OPEN, WatchMask::CLOSE_NOWRITE, WatchMask::MODIFY] {
            assert!(!m.intersects(not_asked), "{not_asked:?}");
        }

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(
            dir.path().join("rules/a.yaml"),
            "entries:\n  a:\n    insecure: true\n    actions: [\"true\"]\n",
        )
        .unwrap();
        let path = dir.path().join("settings.yaml");
        std::fs::write(
            &path,
            "include: [rules/*.yaml]
",
        )
        .unwrap();
        let settings = crate::settings::load_with_env(&path, &|_| None).unwrap();
        let relevant = Relevant::of(&settings);
        assert!(relevant.matters(&path));
        assert!(relevant.matters(&dir.path().join("rules/a.yaml")));
        assert!(relevant.matters(&dir.path().join("rules/new.yaml")), "a new rule file matches the include");
        assert!(!relevant.matters(&dir.path().join("notes.txt")));
        assert!(!relevant.matters(&dir.path().join("state/jobs.sqlite3")));
        assert!(relevant.dirs.contains(dir.path()) && relevant.dirs.contains(&dir.path().join("rules")));
    }

    /// Settings behind links: an edit of the target, and a swap of a link on the way (as
    /// Kubernetes does with `..data`), both touch a path that matters.
    #[test]
    fn links_on_the_way_to_a_file_matter() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/settings.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/settings.yaml", root.join("settings.yaml")).unwrap();
        let chain = link_chain(&root.join("settings.yaml"));
        for want in ["settings.yaml", "..data/settings.yaml", "..data", "..v1/settings.yaml"] {
            assert!(chain.contains(&root.join(want)), "{want} missing from {chain:?}");
        }
        let plain = root.join("..v1/settings.yaml");
        assert_eq!(link_chain(&plain), vec![std::fs::canonicalize(&plain).unwrap()]);
    }
}
