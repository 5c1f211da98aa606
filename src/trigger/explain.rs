//! `--explain FILE [--from ADDR]`: what the daemon would do with a saved delivery, decided by
//! the same [`intake`] the daemon uses (authentication, routing, matching, `allow_from` when
//! `--from` names the sender, `skip_deployed` against the job store), for `POST {path}` and for
//! each entry's `POST {path}/<entry>`; and, for each event, why each entry matches or not.
//! Nothing is recorded: whether the store would take it as a redelivery or a replay is not
//! said.

use std::path::Path;
use std::sync::Arc;

use crate::cli::TriggerArgs;
use crate::event::Event;
use crate::intake::{self, Decision, Delivery, Refusal, Signatures};
use crate::printable::shown;
use crate::providers::{self, saved::Saved};
use crate::settings::{Entry, Settings};
use crate::store::Store;

use super::{open_store, read_saved, Fail, Loaded};

/// The daemon's verdict on the delivery for one route.
enum Verdict {
    Refused(Refusal),
    Decided(Decision),
}

impl Verdict {
    /// One line: the status the daemon answers with, and what runs.
    fn line(&self) -> String {
        match self {
            Verdict::Refused(r) => format!("{} refused: {}", r.status(), shown(&r.to_string(), 1000)),
            Verdict::Decided(d) if d.jobs.is_empty() && d.is_ping() => "200 pong".into(),
            Verdict::Decided(d) if d.jobs.is_empty() => "200 ignored".into(),
            Verdict::Decided(d) => {
                let mut names: Vec<&str> = d.jobs.iter().map(|j| j.entry.as_str()).collect();
                names.dedup();
                format!("202 queued: {}", names.join(", "))
            }
        }
    }

    fn runs(&self) -> bool {
        matches!(self, Verdict::Decided(d) if !d.jobs.is_empty())
    }
}

pub(super) fn explain(loaded: &Loaded, file: &Path, args: &TriggerArgs) -> Result<u8, Fail> {
    let settings = &loaded.settings;
    let saved = read_saved(file, args)?;
    let events = providers::parse(saved.provider, &saved.headers, &saved.body)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let signatures = match (saved.had_headers, loaded.unset.is_empty()) {
        (false, _) => Signatures::Unchecked("the file has no headers".into()),
        (true, false) => Signatures::Unchecked(format!("{} not set here", loaded.unset.join(", "))),
        (true, true) => Signatures::Check,
    };
    // skip_deployed asks the job store; one that cannot be read here (another user's) is said,
    // and the rest is decided all the same.
    let store = open_store(settings).unwrap_or_else(|Fail(_, why)| {
        println!("(skip_deployed not applied: the job store cannot be read here: {why})");
        None
    });
    let verdict = |target: Option<&str>| decide(settings, &saved, target, args, &signatures, store.as_ref());
    let routed = verdict(None)?;
    let per_entry: Vec<(Arc<Entry>, Verdict)> = settings
        .entries
        .iter()
        .map(|e| verdict(Some(&e.name)).map(|v| (e.clone(), v)))
        .collect::<Result<_, _>>()?;
    for event in &events {
        let git_ref = if event.git_ref.is_empty() { "-" } else { &event.git_ref };
        println!(
            "{} {} {} {} {}",
            if event.provider.is_none() { "-" } else { event.provider_name() },
            shown(event.name(), 200),
            if event.repo.is_empty() { "-".into() } else { shown(&event.repo, 200) },
            shown(git_ref, 200),
            if event.after.is_empty() { "-".into() } else { shown(&event.after, 200) }
        );
        for (entry, verdict) in &per_entry {
            println!("  {}: {}", entry.name, shown(&entry_line(entry, event, verdict, &signatures), 1000));
        }
    }
    let path = &settings.server.path;
    println!("POST {path}: {}", routed.line());
    for (entry, verdict) in &per_entry {
        println!("POST {path}/{}: {}", entry.name, verdict.line());
    }
    if args.from.is_none() && has_allow_from(settings) {
        println!("(allow_from not applied: give the sender's address with --from ADDR)");
    }
    let runs = routed.runs() || per_entry.iter().any(|(_, v)| v.runs());
    Ok(if runs { 0 } else { 1 })
}

/// The intake's verdict for one route, `skip_deployed` asked of the store when there is one.
fn decide(
    settings: &Settings,
    saved: &Saved,
    target: Option<&str>,
    args: &TriggerArgs,
    signatures: &Signatures,
    store: Option<&Store>,
) -> Result<Verdict, Fail> {
    if let Some(client) = args.from {
        if let Err(refusal) = intake::admit(settings, target, client) {
            return Ok(Verdict::Refused(refusal));
        }
    }
    let delivery = Delivery {
        headers: &saved.headers,
        body: &saved.body,
        target,
        client: args.from,
        signatures: signatures.clone(),
    };
    let mut decision = match intake::decide(settings, &delivery) {
        Ok(decision) => decision,
        Err(refused) => return Ok(Verdict::Refused(refused.why)),
    };
    if let Some(store) = store {
        decision.skip_deployed(|entry| store.last_deployed(entry))?;
    }
    Ok(Verdict::Decided(decision))
}

/// Why `entry` runs for `event` or not, through its own route.
fn entry_line(entry: &Entry, event: &Event, verdict: &Verdict, signatures: &Signatures) -> String {
    let check = entry.check(event);
    match verdict {
        Verdict::Refused(Refusal::Unauthentic { error, .. }) => match check {
            Ok(()) => format!("matches (but the signature would be refused: {error})"),
            Err(why) => format!("no, {why}"),
        },
        Verdict::Refused(refusal) => format!("no, {refusal}"),
        Verdict::Decided(d) if d.jobs.iter().any(|j| j.entry == entry.name && j.event == *event) => {
            let auth = match (&entry.secret, signatures) {
                (None, _) => "insecure: no signature check".to_string(),
                (Some(_), Signatures::Unchecked(why)) => format!("signature not checked: {why}"),
                (Some(_), Signatures::Check) => "signature ok".to_string(),
            };
            format!("matches ({auth})")
        }
        Verdict::Decided(d) => match check {
            Err(why) => format!("no, {why}"),
            Ok(()) => {
                let why = d.reasons.iter().rev().find(|(e, _)| *e == entry.name).map(|(_, why)| why.as_str());
                format!("matches, but {}", why.unwrap_or("it is not run"))
            }
        },
    }
}

fn has_allow_from(settings: &Settings) -> bool {
    settings.server.allow_from.is_some() || settings.entries.iter().any(|e| e.allow_from.is_some())
}
