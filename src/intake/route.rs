//! Which entries a delivery is for: the entry in its path, authenticated over the raw bytes
//! before any parsing; or, routed, the entries of the repository its payload names, so that
//! the work per request does not grow with the number of entries.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Event, EventKind};
use crate::providers::{AuthError, HostRequest};
use crate::settings::{Entry, Secret, Settings};

use super::{Delivery, Refusal, Signatures};

/// One entry named in the path: authenticate over the raw bytes before any parsing.
pub(super) fn to_entry(
    settings: &Settings,
    name: &str,
    request: &HostRequest,
    delivery: &Delivery,
) -> Result<(Vec<Arc<Entry>>, Vec<Event>), Refusal> {
    // An entry that only polls takes no webhooks: as if it did not exist.
    let Some(entry) = settings.entry(name).filter(|e| e.webhooks) else {
        // Answered as a wrong signature would be, after the same work: which names are entries
        // is not for a stranger to learn.
        let error = match request.authenticate(delivery.body, decoy(), false) {
            Err(e) => e,
            Ok(()) => AuthError::NoEntry,
        };
        let whom = format!("entry {:?} (no entry has that name)", name.chars().take(64).collect::<String>());
        return Err(Refusal::Unauthentic { error, whom, key: "an entry not in the settings".into() });
    };
    let entries = authenticate(&[entry], request, delivery).map_err(|error| {
        let whom = format!("entry \"{name}\"");
        Refusal::Unauthentic { error, key: whom.clone(), whom }
    })?;
    let events = events_of(entries.iter(), request.quick(delivery.body), request, delivery)?;
    Ok((entries, events))
}

/// A secret no request is signed with: what a request for an entry that does not exist is
/// checked against, so that its answer is the one of a wrong secret.
fn decoy() -> &'static Secret {
    static DECOY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if read.is_err() {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes[..16].copy_from_slice(&nanos.as_nanos().to_le_bytes());
        }
        Secret::new(hex::encode(bytes))
    })
}

/// Routed: the repository in the payload says which entries to authenticate against. An entry
/// for another repository never sees the request, and the answer is the same 401 whether no
/// entry is for this repository or none of their secrets fits (nothing about the settings
/// leaks). A request that names no repository has nothing to route by: it is refused before
/// any secret is tried, but a ping (a new organisation webhook's) is answered, since it runs
/// nothing.
pub(super) fn by_repository(
    settings: &Settings,
    request: &HostRequest,
    delivery: &Delivery,
) -> Result<(Vec<Arc<Entry>>, Vec<Event>), Refusal> {
    // A push is first read for its ref and repository alone, and its repository's entries
    // found once: they decide whether the whole payload is needed, then are authenticated.
    let quick = request.quick(delivery.body);
    let quick_source = quick.as_ref().map(|q| (q.repo.clone(), for_repo(settings, request, &q.repo)));
    let asked = quick_source.iter().flat_map(|(_, entries)| entries.iter().copied());
    let events = events_of(asked, quick, request, delivery)?;
    let repo = events.first().map(|e| e.repo.as_str()).unwrap_or_default();
    if repo.is_empty() {
        if events.iter().any(|e| e.kind == EventKind::Ping) {
            return Ok((Vec::new(), events));
        }
        return Err(Refusal::NothingToRoute(settings.server.path.clone()));
    }
    let candidates = match quick_source {
        Some((quick_repo, entries)) if quick_repo == repo => entries,
        _ => for_repo(settings, request, repo),
    };
    if candidates.is_empty() {
        let whom = format!("repository \"{repo}\" (no entry is for it)");
        let key = "a repository no entry is for".to_string();
        return Err(Refusal::Unauthentic { error: AuthError::NoEntry, whom, key });
    }
    let entries = authenticate(&candidates, request, delivery).map_err(|error| {
        let names: Vec<&str> = candidates.iter().take(5).map(|e| e.name.as_str()).collect();
        let more = if candidates.len() > 5 { ", ..." } else { "" };
        let key = format!("entries {}{more}", names.join(", "));
        Refusal::Unauthentic { error, whom: format!("repository \"{repo}\" ({key})"), key }
    })?;
    Ok((entries, events))
}

/// The entries that may be for a request from this host about `repo`.
fn for_repo<'a>(settings: &'a Settings, request: &HostRequest, repo: &str) -> Vec<&'a Arc<Entry>> {
    let provider = request.provider();
    settings
        .entries_for_repo(repo)
        .into_iter()
        .filter(|e| e.webhooks && e.matcher.fits_source(provider, repo))
        .collect()
}

/// The events of a request: the push read quickly when none of `entries` would run for it
/// (the answer needs nothing more: they are asked again and give the reasons), else the
/// whole payload.
fn events_of<'a>(
    entries: impl IntoIterator<Item = &'a Arc<Entry>>,
    quick: Option<Event>,
    request: &HostRequest,
    delivery: &Delivery,
) -> Result<Vec<Event>, Refusal> {
    match quick {
        Some(q) if entries.into_iter().all(|e| e.check(&q).is_err()) => Ok(vec![q]),
        _ => Ok(request.parse(delivery.body)?),
    }
}

/// Authenticates against each entry's secret, computing each distinct secret only once.
fn authenticate(
    candidates: &[&Arc<Entry>],
    request: &HostRequest,
    delivery: &Delivery,
) -> Result<Vec<Arc<Entry>>, AuthError> {
    if let Signatures::Unchecked(_) = delivery.signatures {
        return Ok(candidates.iter().map(|e| Arc::clone(e)).collect());
    }
    let body = delivery.body;
    let mut cache: HashMap<(&[u8], bool), Result<(), AuthError>> = HashMap::new();
    let mut authentic = Vec::new();
    let mut first_error = None;
    let mut same_error = true;
    for entry in candidates {
        let result = match &entry.secret {
            None => Ok(()),
            // One entry (named in the path, the usual case): nothing to share, no cache to build.
            Some(secret) if candidates.len() == 1 => request.authenticate(body, secret, entry.allow_sha1),
            Some(secret) => cache
                .entry((secret.expose(), entry.allow_sha1))
                .or_insert_with(|| request.authenticate(body, secret, entry.allow_sha1))
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
