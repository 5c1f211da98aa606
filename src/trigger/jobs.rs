//! `--jobs` and `--log ID [--follow]`: what the job store holds.

use std::io::Write;
use std::time::Duration;

use crate::printable::shown;
use crate::settings::Settings;
use crate::store::{Job, JobState};

use super::{job_ended, open_store, Fail, EXIT_USAGE};

pub(super) fn list_jobs(settings: &Settings, limit: usize) -> Result<u8, Fail> {
    let Some(store) = open_store(settings)? else {
        eprintln!("no jobs recorded yet in {}", settings.server.state_dir.display());
        return Ok(0);
    };
    let jobs = store.recent(limit)?;
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|j| {
            let commit: String = j.event.after.chars().take(12).collect();
            [
                j.id.to_string(),
                when(Some(j.created_at)),
                j.entry.clone(),
                j.trigger.as_str().to_string(),
                shown(j.event.name(), CELL),
                if j.event.git_ref.is_empty() { "-".into() } else { shown(&j.event.git_ref, CELL) },
                if commit.is_empty() { "-".into() } else { shown(&commit, CELL) },
                j.state.as_str().to_string(),
                took(j),
            ]
        })
        .collect();
    let header = ["ID", "CREATED", "ENTRY", "TRIGGER", "EVENT", "REF", "COMMIT", "STATE", "TOOK"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_string));
    for (row, job) in rows.iter().zip(&jobs) {
        line(row);
        if let Some(reason) = &job.reason {
            if job.state != JobState::Succeeded {
                println!("    {}", shown(reason, 1000));
            }
        }
    }
    for f in store.frozen()? {
        println!("entry {} is frozen since {}: {}", f.entry, when(Some(f.at)), shown(&f.reason, 1000));
    }
    Ok(0)
}

pub(super) fn print_log(settings: &Settings, id: i64, follow: bool) -> Result<u8, Fail> {
    let store = open_store(settings)?
        .ok_or_else(|| Fail(EXIT_USAGE, format!("no job {id}: no jobs recorded yet")))?;
    let mut offset = 0usize;
    let mut out = std::io::stdout();
    loop {
        let job = store.job(id)?.ok_or_else(|| Fail(EXIT_USAGE, format!("no job {id}")))?;
        // The state first: when it is final, the log read after it is complete.
        let text = std::fs::read(store.log_path(id)).unwrap_or_default();
        if text.len() > offset {
            let _ = out.write_all(&text[offset..]);
            let _ = out.flush();
            offset = text.len();
        }
        if job.state.is_final() {
            return Ok(job_ended(id, job.state, job.exit_code, job.reason.as_deref()));
        }
        if !follow {
            eprintln!("job {id} is {} (--follow to wait for its end)", job.state.as_str());
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        None => "-".to_string(),
    }
}

fn took(job: &Job) -> String {
    match (job.started_at, job.finished_at) {
        (Some(a), Some(b)) => {
            let d = Duration::from_millis((b - a).max(0) as u64);
            if d < Duration::from_secs(1) {
                format!("{}ms", d.as_millis())
            } else {
                humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
            }
        }
        _ => "-".to_string(),
    }
}

/// The widest cell of `--jobs`.
const CELL: usize = 60;
