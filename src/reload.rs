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
