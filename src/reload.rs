//! Hot reload: watch the settings file and every included file, and swap in new settings when
//! they are valid.
//!
//! The watches are on the files' directories, not the files: editors save by writing a new
//! file and renaming it over the old one, which a watch on the old file would not see. Events
//! are debounced on the trailing edge, so a burst of writes makes one reload. SIGHUP reloads
//! too. A broken edit is refused by [`App::reload`] and the running settings keep serving; the
//! watcher only decides when to try.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::app::{off_thread, App};
use crate::settings::include::literal_prefix;
use crate::settings::Settings;

/// Quiet time after the last change before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Which paths matter: the files read, and the include patterns (a new file may match).
#[derive(Default)]
struct Relevant {
    files: BTreeSet<PathBuf>,
    patterns: Option<GlobSet>,
    dirs: BTreeSet<PathBuf>,
}

impl Relevant {
    fn of(settings: &Settings) -> Relevant {
        let files: BTreeSet<PathBuf> = settings.files.iter().cloned().collect();
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

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

/// Starts watching the settings of `app`, and listening for SIGHUP.
pub fn watch(app: Arc<App>) -> anyhow::Result<WatchHandle> {
    let relevant = Arc::new(Mutex::new(Relevant::default()));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let seen = relevant.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            if !is_change(&event.kind) {
                return;
            }
            let r = seen.lock().unwrap_or_else(|e| e.into_inner());
            if event.paths.iter().any(|p| r.matters(p)) {
                let _ = tx.send(());
            }
        }
        Err(e) => warn!(error = %e, "file watch error"),
    })
    .map_err(|e| anyhow::anyhow!("cannot watch the settings files: {}", explain(&e)))?;
    let watcher = Arc::new(Mutex::new(watcher));
    update_watches(&watcher, &relevant, &app.settings());

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let w = watcher.clone();
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
                Ok(Ok(new)) => update_watches(&w, &relevant, &new),
                // Refused: logged, and reported by /health.
                Ok(Err(_)) => {}
                Err(panic) => {
                    tracing::error!(%panic, "reloading the settings failed; the previous settings keep serving")
                }
            }
        }
    });
    Ok(WatchHandle { _watcher: watcher })
}

/// Whether an event can change what a file holds. Opening and reading are not changes: the
/// reload itself reads the files, and reacting to that would reload forever.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

fn update_watches(watcher: &Mutex<RecommendedWatcher>, relevant: &Mutex<Relevant>, settings: &Settings) {
    let new = Relevant::of(settings);
    let mut watcher = watcher.lock().unwrap_or_else(|e| e.into_inner());
    let mut current = relevant.lock().unwrap_or_else(|e| e.into_inner());
    for gone in current.dirs.difference(&new.dirs) {
        let _ = watcher.unwatch(gone);
    }
    for dir in new.dirs.difference(&current.dirs) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), "cannot watch: {}; edits there need SIGHUP to be seen", explain(&e));
        }
    }
    *current = new;
}

/// A readable message, with the fix for the one error users hit.
fn explain(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "the system's limit of watched files is reached (raise fs.inotify.max_user_watches)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};

    /// The watcher's own reads (and every other read) never start a reload: once they did,
    /// and the reload's read of the file started the next one, every 100 ms.
    #[test]
    fn reads_are_not_changes_and_other_files_do_not_matter() {
        use notify::EventKind as K;
        assert!(!is_change(&K::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!is_change(&K::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!is_change(&K::Access(AccessKind::Read)));
        assert!(is_change(&K::Access(AccessKind::Close(AccessMode::Write))));
        assert!(is_change(&K::Modify(ModifyKind::Any)));
        assert!(is_change(&K::Create(CreateKind::File)));

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
}
