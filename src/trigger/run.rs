//! A manual run: its event (a saved delivery, or a branch, tag and commit), then through the
//! running daemon when there is one (queued, serialised with the entry's webhook jobs), else
//! here in the foreground with the same runner.

use std::io::Write;
use std::sync::Arc;

use crate::cli::TriggerArgs;
use crate::control::{self, Reply, Request};
use crate::event::{Event, Trigger};
use crate::jobs::runner::{self, JobContext, Log};
use crate::providers;
use crate::settings::{Entry, Settings};
use crate::signals;
use crate::store::{JobState, NewJob, Store};
use crate::worker::{finish_job, Finished};

use super::{job_ended, open_store, read_saved, Fail, Loaded, EXIT_CANCELLED, EXIT_USAGE};

/// The event of a manual run: from a saved delivery, or from `--branch`/`--tag` and `--commit`.
pub(super) fn manual_event(
    entry: &Entry,
    args: &TriggerArgs,
    settings: &Settings,
) -> Result<(Event, Vec<u8>), Fail> {
    let Some(file) = &args.payload else {
        let git_ref = manual_ref(entry, args, settings)?;
        return Ok((Event::manual_ref(git_ref.as_deref(), args.commit.as_deref()), Vec::new()));
    };
    let saved = read_saved(file, args)?;
    let events = providers::parse(saved.provider, &saved.headers, &saved.body)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    // A Bitbucket push may hold several refs: take the first one the entry matches.
    let event = match events.iter().find(|e| entry.check(e).is_ok()) {
        Some(e) => e.clone(),
        None => {
            let first =
                events.into_iter().next().ok_or_else(|| format!("{}: no event in it", file.display()))?;
            let why = entry.check(&first).err().unwrap_or_default();
            eprintln!(
                "note: entry {} would not match this delivery as a webhook ({why}); running it anyway",
                entry.name
            );
            first
        }
    };
    Ok((event, saved.body))
}

/// The ref of a manual run: `--branch` or `--tag`; else the ref of the entry's last job; else
/// the one branch its `match.branch` names. An entry whose actions use the branch or tag and
/// that has none of these is refused with the option to give.
fn manual_ref(entry: &Entry, args: &TriggerArgs, settings: &Settings) -> Result<Option<String>, Fail> {
    if let Some(b) = &args.branch {
        return Ok(Some(format!("refs/heads/{b}")));
    }
    if let Some(t) = &args.tag {
        return Ok(Some(format!("refs/tags/{t}")));
    }
    let last =
        open_store(settings).ok().flatten().and_then(|store| store.last_ref(&entry.name).ok().flatten());
    if let Some((id, git_ref)) = last {
        eprintln!("note: no --branch or --tag: using {git_ref}, the ref of job {id}, the entry's last");
        return Ok(Some(git_ref));
    }
    let uses = |name: &str| entry.actions.iter().any(|a| a.run.contains(name));
    let wants_tag = uses("WH_TAG") || entry.matcher.tag.is_some();
    if wants_tag {
        return Err(Fail(
            EXIT_USAGE,
            format!(
                "entry {} runs for a tag and has no earlier job: say which one with --tag NAME",
                entry.name
            ),
        ));
    }
    if let Some(branch) = entry.matcher.literal_branch() {
        eprintln!("note: no --branch: using {branch}, the branch the entry's match.branch names");
        return Ok(Some(format!("refs/heads/{branch}")));
    }
    if uses("WH_BRANCH") || uses("WH_REF") {
        return Err(Fail(
            EXIT_USAGE,
            format!(
                "entry {} uses the branch and has no earlier job, and its match.branch names no single branch: \
                 say which one with --branch NAME",
                entry.name
            ),
        ));
    }
    Ok(None)
}

/// Runs `entry` for `event`: through the daemon when it runs, else here.
pub(super) fn run(
    loaded: &Loaded,
    entry: &Arc<Entry>,
    event: Event,
    body: &[u8],
    trigger: Trigger,
    force: bool,
) -> Result<u8, Fail> {
    let state_dir = &loaded.settings.server.state_dir;
    match control::connect(state_dir) {
        Ok(Some(stream)) => through_daemon(stream, &entry.name, event, body, (trigger, force)),
        Ok(None) => {
            // The actions need the entry's `env:`; secrets are not checked by a manual run.
            let values: Vec<&str> = entry.env.iter().map(|(_, v)| v.as_str()).collect();
            let needed = loaded.unset_in(&values);
            if !needed.is_empty() {
                return Err(Fail(
                    EXIT_USAGE,
                    format!(
                        "no daemon is running for these settings, and running {} here needs the variables its \
                         env: names: {} (set them, or start the daemon)",
                        entry.name,
                        needed.join(", ")
                    ),
                ));
            }
            if !force {
                let frozen = open_store(&loaded.settings)?
                    .map(|s| s.frozen_reason(&entry.name))
                    .transpose()?
                    .flatten();
                if let Some(why) = frozen {
                    return Err(Fail(
                        EXIT_USAGE,
                        format!(
                            "entry {} is frozen ({why}): run it with --force, or --unfreeze it first",
                            entry.name
                        ),
                    ));
                }
            }
            foreground(&loaded.settings, entry, event, body, trigger)
        }
        Err(e) => Err(Fail(
            EXIT_USAGE,
            format!(
                "cannot reach the daemon's control socket {}: {e} (run this as the daemon's user)",
                control::socket_path(state_dir).display()
            ),
        )),
    }
}

/// Queues the run in the daemon and follows it to its end.
fn through_daemon(
    stream: std::os::unix::net::UnixStream,
    entry: &str,
    event: Event,
    body: &[u8],
    (trigger, force): (Trigger, bool),
) -> Result<u8, Fail> {
    let rollback = trigger == Trigger::Rollback;
    let request = Request::Trigger {
        entry: entry.to_string(),
        event: Box::new(event),
        body: hex::encode(body),
        rollback,
        force,
    };
    let mut queued = None;
    let mut end: Option<Result<u8, Fail>> = None;
    let mut out = std::io::stdout();
    control::exchange(stream, &request, |reply| match reply {
        Reply::Queued { id } => {
            eprintln!("job {id} queued in the running daemon");
            queued = Some(id);
        }
        Reply::Output { text } => {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        Reply::Done { id, state: name, exit_code, reason } => {
            end = Some(match JobState::parse(&name) {
                Some(state) => Ok(job_ended(id, state, exit_code, reason.as_deref())),
                None => Err(Fail(
                    EXIT_CANCELLED,
                    format!("job {id} ended in a state this version does not know: {name:?}"),
                )),
            });
        }
        Reply::Error { message } => {
            let code = if queued.is_some() { EXIT_CANCELLED } else { EXIT_USAGE };
            end = Some(Err(Fail(code, message)));
        }
        other @ (Reply::Frozen { .. } | Reply::Unfrozen { .. }) => {
            end = Some(Err(Fail(EXIT_USAGE, format!("unexpected answer from the daemon: {other:?}"))));
        }
    })
    .map_err(|e| format!("the connection to the daemon failed: {e}"))?;
    end.unwrap_or_else(|| {
        let message = match queued {
            Some(id) => format!("the daemon closed the connection; job {id} goes on there: see --log {id}"),
            None => "the daemon closed the connection without an answer".to_string(),
        };
        Err(Fail(EXIT_CANCELLED, message))
    })
}

/// Runs the job here, with the same runner as the daemon.
fn foreground(
    settings: &Arc<Settings>,
    entry: &Arc<Entry>,
    event: Event,
    body: &[u8],
    trigger: Trigger,
) -> Result<u8, Fail> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let job = NewJob { entry: entry.name.clone(), trigger, event };
    // One run of the entry at a time, whoever runs it: wait for the daemon's job or another
    // manual run (or what a killed one left running) to end first.
    let state_dir = &settings.server.state_dir;
    let name = &entry.name;
    let lock = crate::jobs::entry_lock::EntryLock::take(
        state_dir,
        name,
        || eprintln!("entry {name} is running in another process (the daemon, or another manual run): waiting for it"),
        || false,
    )
    .map_err(|e| eprintln!("note: cannot take the entry's lock ({e}): running without it"))
    .ok()
    .flatten();
    // Recorded in the store when it can be written; the run goes on either way. Its statuses
    // and messages wait in the outbox for the daemon to deliver them.
    let recorded = Store::open(&settings.server.state_dir)
        .inspect(|store| {
            let shared = Arc::new(std::sync::RwLock::new(settings.clone()));
            store.set_reporter(Arc::new(crate::telling::policy::Reports::new(shared, Arc::default())));
        })
        .and_then(|store| store.insert_foreground(&job).map(|id| (store, id)))
        .map_err(|e| eprintln!("note: this run is not recorded ({e})"))
        .ok();
    let payload = match &recorded {
        Some((store, id)) if !body.is_empty() => {
            let path = store.payload_path(*id);
            crate::store::write_private(&path, body)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Some(path)
        }
        _ => None,
    };
    let id = recorded.as_ref().map_or(0, |(_, id)| *id);
    eprintln!("no daemon is running for these settings: running {} here", entry.name);
    let limit = settings.server.log_limit;
    let file = recorded.as_ref().and_then(|(store, id)| Log::create(&store.log_path(*id), limit).ok());
    let mut log = file.unwrap_or_else(|| Log::new(None, limit)).echoing();
    let outcome = runtime.block_on(async {
        let (cancel_tx, mut cancel) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signals::stop_signal().await;
            let _ = cancel_tx.send(true);
        });
        let context = JobContext {
            id,
            trigger,
            event: &job.event,
            payload: payload.as_deref(),
            steps: None,
            lock: lock.as_ref(),
            store: recorded.as_ref().map(|(store, _)| store),
        };
        runner::run(entry, &context, &mut log, &mut cancel).await
    });
    drop(log);
    let finished = Finished::of(&outcome, entry.timeout);
    if let Some((store, id)) = &recorded {
        match finish_job(store, *id, &finished, Some((entry, trigger))) {
            Err(e) => eprintln!("note: cannot record the end of job {id}: {e}"),
            Ok(Some(crate::store::RolledBack::To { job, commit })) => eprintln!(
                "rollback job {job} to {} recorded: it runs when the daemon starts",
                &commit[..commit.len().min(12)]
            ),
            Ok(Some(crate::store::RolledBack::NoRelease)) => {
                eprintln!("note: the entry has no release to roll back to")
            }
            Ok(None) => {}
        }
    }
    Ok(job_ended(id, finished.state, finished.exit_code, finished.reason.as_deref()))
}
