//! `wh-automata-trigger SETTINGS --notify-test ENTRY`: a test message to each of the entry's
//! notification targets, and its latest job's status sent again to the commit, each result
//! printed. Nothing goes through the outbox: the point is to see the answer now.

use std::io::Write;

use crate::event::{Event, Trigger};
use crate::outbound::Outbound;
use crate::settings::{Entry, Settings};
use crate::store::{now_ms, Change, Job, JobState, Store};
use crate::telling::policy::Report;

/// One line of the result: what was tried, and how it went.
pub struct Tried {
    pub what: String,
    pub result: Result<String, String>,
}

/// The report a test sends: of the entry's latest job with a commit, or of a manual run that
/// succeeded now.
fn report_of(entry: &Entry, job: Option<&Job>) -> Report {
    let none = Job {
        id: 0,
        entry: entry.name.clone(),
        trigger: Trigger::Manual,
        state: JobState::Succeeded,
        event: Event::manual(None, None),
        created_at: now_ms(),
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
    };
    let log = std::path::PathBuf::new();
    Report::of(&Change::of(job.unwrap_or(&none), &log), "test")
}

/// Sends the tests; each result is printed as it comes. Returns whether all were delivered.
pub fn run(
    settings: &Settings,
    entry: &Entry,
    store: Option<&Store>,
    out: &mut dyn Write,
) -> Result<bool, String> {
    if entry.notify.is_none() && entry.status.is_none() {
        return Err(format!("entry {} has neither notify: nor status: to test", entry.name));
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let client = Outbound::new(settings.server.ca_file.as_deref())?;
    let job = match store {
        Some(store) => store.latest_with_commit(&entry.name).map_err(|e| e.to_string())?,
        None => None,
    };
    let report = report_of(entry, job.as_ref());
    let link = |id: i64| {
        let key = store.and_then(|s| s.page_key(id).ok())?;
        settings.server.public_url.as_ref().map(|u| format!("{u}/jobs/{id}?key={key}"))
    };
    let mut all = true;
    let mut print = |tried: Tried| {
        let line = match &tried.result {
            Ok(how) => format!("{}: {how}", tried.what),
            Err(e) => {
                all = false;
                format!("{}: FAILED: {e}", tried.what)
            }
        };
        let _ = writeln!(out, "{line}");
    };
    if let Some(notify) = &entry.notify {
        for name in &notify.to {
            let Some(target) = settings.targets.get(name) else { continue };
            let url = (report.job > 0).then(|| link(report.job)).flatten();
            // A delivery id of its own, in a form no outbox item has (`<store id>-<item id>`).
            let id = format!("test-{}-{}", now_ms(), std::process::id());
            let cx = crate::telling::notify::Context {
                link: url.as_deref(),
                sendmail: &settings.server.sendmail,
                item: &id,
            };
            let result = runtime.block_on(crate::telling::notify::send(&client, &report, target, &cx));
            print(Tried {
                what: format!("{name} ({})", target.kind.as_str()),
                result: result.map(|()| "delivered".to_string()).map_err(|e| e.to_string()),
            });
        }
    }
    if let Some(sink) = &entry.status {
        let what = format!("status ({})", sink.context);
        match &job {
            None => print(Tried {
                what,
                result: Err(
                    "no job of this entry from a host has run yet: push once, then test again (a status \
                             goes to a commit)"
                        .into(),
                ),
            }),
            Some(job) => {
                let mut status = report.clone();
                status.kind = status.state.as_str().to_string();
                let remote =
                    store.and_then(|s| s.remote_id(job.id, crate::telling::policy::STATUS).ok().flatten());
                let url = link(job.id);
                let sent = runtime.block_on(async {
                    let to = crate::telling::status::destination(&status, sink)
                        .map_err(|e| crate::outbound::SendError::Invalid(e.to_string()))?;
                    let deployment = match remote {
                        None if to.is_deployment(sink) => Some(
                            crate::telling::status::create_deployment(&client, &status, sink, &to).await?,
                        ),
                        other => other,
                    };
                    crate::telling::status::send(
                        &client,
                        &status,
                        sink,
                        &to,
                        url.as_deref(),
                        deployment.as_deref(),
                    )
                    .await
                });
                print(Tried {
                    what,
                    result: sent
                        .map(|_| {
                            format!(
                                "job {}'s state ({}) sent to commit {}",
                                job.id,
                                job.state.as_str(),
                                status.short_commit()
                            )
                        })
                        .map_err(|e| e.to_string()),
                });
            }
        }
    }
    Ok(all)
}
