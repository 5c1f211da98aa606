//! Which entries a webhook is for and what it says: the host detected from the headers, the
//! request authenticated over its raw bytes (against the entry in the path, or the entries of
//! the repository its payload names), and normalised into events.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::event::{Event, EventKind, Provider, Trigger};
use crate::providers::{self, AuthError, PayloadError};
use crate::settings::{Entry, Settings};
use crate::store::NewJob;

use super::answers::HookError;

/// A request as received: within the limits, its body whole.
#[derive(Clone)]
pub(super) struct Received {
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Which entries authenticated a request, and its events.
pub(super) struct Authentic {
    pub(super) entries: Vec<Arc<Entry>>,
    pub(super) events: Vec<Event>,
}

/// The jobs an event makes, and why each other entry was not one of them.
pub(super) struct Matched {
    pub(super) jobs: Vec<NewJob>,
    pub(super) reasons: Vec<(String, String)>,
}

/// Bodies larger than this are authenticated and parsed off the async threads.
pub(super) const OFF_REACTOR: usize = 64 * 1024;

/// Authenticates and normalises a request, for the entry in its path or routed by its payload.
pub(super) fn identify(
    settings: &Settings,
    target: Option<&str>,
    provider: Provider,
    request: &Received,
) -> Result<Authentic, HookError> {
    match target {
        Some(name) => authenticate_then_normalise(settings, name, provider, request),
        None => normalise_then_authenticate(settings, provider, request),
    }
}

/// The git host, from the headers; recorded in the delivery's span with the delivery id.
pub(super) fn detect(request: &Received) -> Result<Provider, HookError> {
    let provider = providers::detect(&request.headers).ok_or(PayloadError::UnknownProvider)?;
    let span = tracing::Span::current();
    span.record("provider", provider.as_str());
    // The delivery span exists at DEBUG only: no delivery id is copied out for nothing.
    if span.is_disabled() {
        return Ok(provider);
    }
    if let Some(d) = providers::delivery_id(provider, &request.headers) {
        span.record("delivery", d.as_str());
    }
    Ok(provider)
}

/// One entry named in the path: authenticate over the raw bytes before any parsing.
pub(super) fn authenticate_then_normalise(
    settings: &Settings,
    name: &str,
    provider: Provider,
    request: &Received,
) -> Result<Authentic, HookError> {
    let Some(entry) = settings.entry(name) else {
        // Answered as a wrong signature would be, after the same work: which names are entries
        // is not for a stranger to learn.
        let error = match providers::authenticate(provider, &request.headers, &request.body, decoy(), false) {
            Err(e) => e,
            Ok(()) => AuthError::NoEntry,
        };
        let whom = format!("entry {:?} (no entry has that name)", name.chars().take(64).collect::<String>());
        return Err(HookError::Unauthentic { error, whom, key: "an entry not in the settings".into() });
    };
    let entries = authenticate(&[entry], provider, &request.headers, &request.body).map_err(|error| {
        let whom = format!("entry \"{name}\"");
        HookError::Unauthentic { error, key: whom.clone(), whom }
    })?;
    let quick = providers::quick::push(provider, &request.headers, &request.body);
    let events = events_of(entries.iter(), quick, provider, request)?;
    Ok(Authentic { entries, events })
}

/// A secret no request is signed with: what a request for an entry that does not exist is
/// checked against, so that its answer is the one of a wrong secret.
pub(super) fn decoy() -> &'static crate::settings::Secret {
    static DECOY: std::sync::OnceLock<crate::settings::Secret> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if read.is_err() {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes[..16].copy_from_slice(&nanos.as_nanos().to_le_bytes());
        }
        crate::settings::Secret::new(hex::encode(bytes))
    })
}

/// Routed: the repository in the payload says which entries to authenticate against, so the
/// work per request does not grow with the number of entries. An entry for another repository
/// never sees the request, and the answer is the same 401 whether no entry is for this
/// repository or none of their secrets fits (nothing about the settings leaks). A request that
/// names no repository has nothing to route by: it is refused before any secret is tried, but
/// a ping (a new organisation webhook's) is answered, since it runs nothing.
pub(super) fn normalise_then_authenticate(
    settings: &Settings,
    provider: Provider,
    request: &Received,
) -> Result<Authentic, HookError> {
    // A push is first read for its ref and repository alone, and its repository's entries
    // found once: they decide whether the whole payload is needed, then are authenticated.
    let quick = providers::quick::push(provider, &request.headers, &request.body);
    let quick_source = quick.as_ref().map(|q| (q.repo.clone(), for_repo(settings, provider, &q.repo)));
    let asked = quick_source.iter().flat_map(|(_, entries)| entries.iter().copied());
    let events = events_of(asked, quick, provider, request)?;
    let repo = events.first().map(|e| e.repo.as_str()).unwrap_or_default();
    if repo.is_empty() {
        if events.iter().any(|e| e.kind == EventKind::Ping) {
            return Ok(Authentic { entries: Vec::new(), events });
        }
        return Err(HookError::NothingToRoute(settings.server.path.clone()));
    }
    let candidates = match quick_source {
        Some((quick_repo, entries)) if quick_repo == repo => entries,
        _ => for_repo(settings, provider, repo),
    };
    if candidates.is_empty() {
        let whom = format!("repository \"{repo}\" (no entry is for it)");
        let key = "a repository no entry is for".to_string();
        return Err(HookError::Unauthentic { error: AuthError::NoEntry, whom, key });
    }
    let entries = authenticate(&candidates, provider, &request.headers, &request.body).map_err(|error| {
        let names: Vec<&str> = candidates.iter().take(5).map(|e| e.name.as_str()).collect();
        let more = if candidates.len() > 5 { ", ..." } else { "" };
        let key = format!("entries {}{more}", names.join(", "));
        HookError::Unauthentic { error, whom: format!("repository \"{repo}\" ({key})"), key }
    })?;
    Ok(Authentic { entries, events })
}

/// The entries that may be for a request from `provider` about `repo`.
pub(super) fn for_repo<'a>(settings: &'a Settings, provider: Provider, repo: &str) -> Vec<&'a Arc<Entry>> {
    settings.entries_for_repo(repo).into_iter().filter(|e| e.matcher.fits_source(provider, repo)).collect()
}

/// The events of a request: the push read quickly when none of `entries` would run for it
/// (the answer needs nothing more: they are asked again and give the reasons), else the
/// whole payload.
pub(super) fn events_of<'a>(
    entries: impl IntoIterator<Item = &'a Arc<Entry>>,
    quick: Option<Event>,
    provider: Provider,
    request: &Received,
) -> Result<Vec<Event>, HookError> {
    match quick {
        Some(q) if entries.into_iter().all(|e| e.check(&q).is_err()) => Ok(vec![q]),
        _ => Ok(providers::parse(provider, &request.headers, &request.body)?),
    }
}

/// Authenticates against each entry's secret, computing each distinct secret only once.
pub(super) fn authenticate(
    candidates: &[&Arc<Entry>],
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Arc<Entry>>, AuthError> {
    let mut cache: HashMap<(&[u8], bool), Result<(), AuthError>> = HashMap::new();
    let mut authentic = Vec::new();
    let mut first_error = None;
    let mut same_error = true;
    for entry in candidates {
        let result = match &entry.secret {
            None => Ok(()),
            // One entry (named in the path, the usual case): nothing to share, no cache to build.
            Some(secret) if candidates.len() == 1 => {
                providers::authenticate(provider, headers, body, secret, entry.allow_sha1)
            }
            Some(secret) => cache
                .entry((secret.expose(), entry.allow_sha1))
                .or_insert_with(|| providers::authenticate(provider, headers, body, secret, entry.allow_sha1))
                .clone(),
        };
        match result {
            Ok(()) => authentic.push(Arc::clone(entry)),
            Err(e) => match &first_error {
                None => first_error = Some(e),
                Some(f) if *f != e => same_error = false,
                Some(_) => {}
            },
        }
    }
    if authentic.is_empty() {
        return Err(match first_error {
            Some(e) if same_error || candidates.len() == 1 => e,
            _ => AuthError::NoEntry,
        });
    }
    Ok(authentic)
}

/// Each authentic entry against each event.
pub(super) fn match_entries(authentic: &Authentic) -> Matched {
    let mut matched = Matched { jobs: Vec::new(), reasons: Vec::new() };
    for event in &authentic.events {
        for entry in &authentic.entries {
            match entry.check(event) {
                Ok(()) => matched.jobs.push(NewJob {
                    entry: entry.name.clone(),
                    trigger: Trigger::Webhook,
                    event: event.clone(),
                }),
                Err(reason) => matched.reasons.push((entry.name.clone(), reason)),
            }
        }
    }
    matched
}
