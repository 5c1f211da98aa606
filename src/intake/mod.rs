//! The intake: what a webhook delivery asks for, decided without a socket. From the delivery
//! (headers, body, sender, route) to a typed decision: the jobs to record, or why it was
//! ignored or refused. The HTTP front ([`crate::server`]) receives the body within its limits,
//! hands it here once and turns the decision into an answer; `wh-automata-trigger --explain`
//! hands a saved delivery to the same steps, so its verdict is the daemon's.
//!
//! The steps, top to bottom, each asking the host's adapter once:
//!
//! 1. [`admit`]: `allow_from`, before the body is read (the server's list, then the entries');
//! 2. [`decide`]: the host from the headers; authenticate over the raw bytes (the entry in the
//!    path, or the entries of the repository the payload names, see [`route`]); the events;
//!    the entries' `allow_from` for the sender; each authentic entry against each event;
//! 3. [`Decision::skip_deployed`]: with the job store, a job for the commit its entry last
//!    deployed is not one (`skip_deployed: true`).
//!
//! Recording (duplicates, replays, superseding) is the store's, in the transaction that writes
//! the jobs.

mod route;

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::event::{Event, EventKind, Provider, Trigger, ZERO_SHA};
use crate::providers::{self, AuthError, PayloadError};
use crate::settings::{Entry, Settings};
use crate::store::NewJob;

/// A delivery as received: within the limits, its body whole.
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The entry named in the path (`{path}/<entry>`), or `None` for `{path}` (routed by the
    /// payload's repository).
    pub target: Option<&'a str>,
    /// The sender (after trusted proxies); `None`: not known (a saved delivery), and the
    /// entries' `allow_from` is not applied.
    pub client: Option<IpAddr>,
    pub signatures: Signatures,
}

/// Whether signatures are checked: always by the daemon; `--explain` cannot when the saved
/// delivery has no headers or the secrets are not set where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signatures {
    Check,
    /// Every candidate entry is taken as authentic, for the reason given.
    Unchecked(String),
}

/// Why a delivery is refused (the HTTP front gives each its status).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Not authentic, with whom it was checked against: that part is for the log, never the
    /// answer (a stranger learns nothing about the settings). `key` groups the warnings: the
    /// entries involved, never a name the sender chose, so a flood cannot flood the log.
    #[error("{error}")]
    Unauthentic { error: AuthError, whom: String, key: String },
    #[error("nothing to route by: the payload names no repository; send it to {0}/<entry>")]
    NothingToRoute(String),
    #[error("requests from {0} are not allowed here (allow_from)")]
    Forbidden(IpAddr),
}

impl Refusal {
    /// The HTTP status the daemon answers it with (also what `--explain` says).
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Payload(_) | Refusal::NothingToRoute(_) => 400,
            Refusal::Unauthentic { .. } => 401,
            Refusal::Forbidden(_) => 403,
        }
    }

    /// The `result` label of `/metrics` for it.
    pub fn result(&self) -> &'static str {
        match self {
            Refusal::Payload(_) | Refusal::NothingToRoute(_) => "bad_request",
            Refusal::Unauthentic { .. } => "unauthentic",
            Refusal::Forbidden(_) => "forbidden",
        }
    }
}

/// A refusal, with the host when it was known by then (for the metrics).
#[derive(Debug)]
pub struct Refused {
    pub provider: Option<Provider>,
    pub why: Refusal,
}

/// What an authentic delivery asks for.
#[derive(Debug)]
pub struct Decision {
    pub provider: Provider,
    /// The host's delivery id, read once.
    pub delivery_id: Option<String>,
    pub events: Vec<Event>,
    /// The entries that authenticated it (and whose `allow_from` holds the sender).
    pub entries: Vec<Arc<Entry>>,
    /// The jobs to record.
    pub jobs: Vec<NewJob>,
    /// Why each other authentic entry makes no job: (entry, reason).
    pub reasons: Vec<(String, String)>,
}

/// `allow_from`, before the body is read: the server's list, then the entry in the path's, or,
/// for a routed request, whether any entry allows the client at all.
pub fn admit(settings: &Settings, target: Option<&str>, client: IpAddr) -> Result<(), Refusal> {
    let fits = |list: &Option<crate::allow::Nets>| list.as_ref().is_none_or(|nets| nets.contains(client));
    if !fits(&settings.server.allow_from) {
        return Err(Refusal::Forbidden(client));
    }
    let entry_fits = match target {
        Some(name) => settings.entry(name).is_none_or(|e| fits(&e.allow_from)),
        None => settings.entries.is_empty() || settings.entries.iter().any(|e| fits(&e.allow_from)),
    };
    if entry_fits {
        Ok(())
    } else {
        Err(Refusal::Forbidden(client))
    }
}

/// Bodies larger than this are better authenticated and parsed off the threads that serve
/// other connections (a hint for the caller).
pub const LARGE: usize = 64 * 1024;

/// Authenticates, reads and matches a delivery (see the module's steps).
pub fn decide(settings: &Settings, delivery: &Delivery) -> Result<Decision, Refused> {
    let request = providers::identify(delivery.headers)
        .ok_or(Refused { provider: None, why: PayloadError::UnknownProvider.into() })?;
    let provider = request.provider();
    let refused = |why: Refusal| Refused { provider: Some(provider), why };
    let (mut entries, events) = match delivery.target {
        Some(name) => route::to_entry(settings, name, &request, delivery),
        None => route::by_repository(settings, &request, delivery),
    }
    .map_err(refused)?;
    let mut reasons = Vec::new();
    if let Some(client) = delivery.client {
        reasons = allowed_entries(&mut entries, client);
        if entries.is_empty() && !reasons.is_empty() {
            return Err(refused(Refusal::Forbidden(client)));
        }
    }
    let mut jobs = Vec::new();
    for event in &events {
        for entry in &entries {
            match entry.check(event) {
                Ok(()) => jobs.push(NewJob {
                    entry: entry.name.clone(),
                    trigger: Trigger::Webhook,
                    event: event.clone(),
                }),
                Err(reason) => reasons.push((entry.name.clone(), reason)),
            }
        }
    }
    let delivery_id = request.delivery_id().map(str::to_string);
    Ok(Decision { provider, delivery_id, events, entries, jobs, reasons })
}

/// Drops the authentic entries whose `allow_from` does not hold `client`; returns why each was.
fn allowed_entries(entries: &mut Vec<Arc<Entry>>, client: IpAddr) -> Vec<(String, String)> {
    let mut dropped = Vec::new();
    entries.retain(|e| {
        let ok = e.allow_from.as_ref().is_none_or(|nets| nets.contains(client));
        if !ok {
            dropped.push((e.name.clone(), format!("the client {client} is not in the entry's allow_from")));
        }
        ok
    });
    dropped
}

impl Decision {
    /// Whether a ping (answered `pong` when nothing runs).
    pub fn is_ping(&self) -> bool {
        self.events.iter().any(|e| e.kind == EventKind::Ping)
    }

    /// The entries whose `skip_deployed` asks the store about this decision's jobs.
    pub fn deployed_wanted(&self) -> Vec<String> {
        let mut wanted: Vec<String> = self
            .jobs
            .iter()
            .filter(|j| self.entries.iter().any(|e| e.name == j.entry && e.skip_deployed))
            .filter(|j| !j.event.after.is_empty() && j.event.after != ZERO_SHA)
            .map(|j| j.entry.clone())
            .collect();
        wanted.dedup();
        wanted
    }

    /// `skip_deployed: true`: a job for the commit its entry last deployed successfully is not
    /// one; it is ignored, with the job that deployed it. `last_deployed` is the store's answer
    /// for an entry: (job, commit).
    pub fn skip_deployed<E>(
        &mut self,
        mut last_deployed: impl FnMut(&str) -> Result<Option<(i64, String)>, E>,
    ) -> Result<(), E> {
        let wanted = self.deployed_wanted();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut deployed = Vec::with_capacity(wanted.len());
        for entry in wanted {
            let last = last_deployed(&entry)?;
            deployed.push((entry, last));
        }
        let reasons = &mut self.reasons;
        self.jobs.retain(|job| {
            let last = deployed.iter().find(|(e, _)| *e == job.entry).and_then(|(_, d)| d.as_ref());
            match last {
                Some((id, commit)) if *commit == job.event.after => {
                    let short = &commit[..commit.len().min(7)];
                    reasons.push((job.entry.clone(), format!("commit {short} already deployed by job {id}")));
                    false
                }
                _ => true,
            }
        });
        Ok(())
    }

    /// The key the store records the delivery under (seen again: a redelivery).
    pub fn delivery_key(&self) -> Option<String> {
        self.delivery_id.as_ref().map(|d| format!("{}:{d}", self.provider))
    }
}

#[cfg(test)]
mod tests;
