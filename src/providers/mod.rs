//! Provider adapters: from a raw request (headers and body bytes) to verified, normalised events.
//!
//! The order of work is fixed: [`detect`] the provider from the headers, [`authenticate`] the
//! raw body bytes against an entry's secret (constant time, before any JSON is parsed), then
//! [`parse`] the payload into [`Event`]s. What to do with a verified event (matching, queuing)
//! is left to others.
//!
//! Each host's facts live in its own file, as one [`Adapter`]: the headers that identify it and
//! name its events, its delivery id, its signature scheme, its event names and JSON paths.
//!
//! | provider | file | what it reads |
//! |---|---|---|
//! | GitHub | `github.rs` | `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256`; the GitHub shape, `pusher.name` |
//! | GitLab | `gitlab.rs` | `X-Gitlab-Event`, `Idempotency-Key`/`X-Gitlab-Webhook-UUID`, `X-Gitlab-Token`; `object_kind`, `project.*`, `checkout_sha`, `total_commits_count`, `object_attributes` |
//! | Gogs | `gogs.rs` | `X-Gogs-Event`, `X-Gogs-Delivery`, `X-Gogs-Signature`; the GitHub shape, `create`/`delete` with `ref_type` |
//! | Gitea, Forgejo | `gitea.rs` | `X-Gitea-Event`/`X-Forgejo-Event`, `X-Gitea-Delivery`/`X-Forgejo-Delivery`, `X-Gitea-Signature`/`X-Forgejo-Signature` (or `X-Hub-Signature-256`); the GitHub shape |
//! | Bitbucket Cloud, Server | `bitbucket.rs` | `X-Event-Key`, `X-Request-UUID`/`X-Request-Id`, `X-Hub-Signature`; `push.changes[]` or `changes[]`, `repository.*`, pull request refs |
//!
//! Shared by several: `github_shape.rs` (the payload shape GitHub, Gogs and Gitea have in
//! common), `json.rs` (paths, and the push fields of every push-shaped payload),
//! `signature.rs` (the HMAC and token checks), `pruned.rs` (parsing only what the adapters
//! read), `saved.rs` (deliveries kept in files).

mod bitbucket;
pub mod catalogue;
mod gitea;
mod github;
mod github_shape;
mod gitlab;
mod gogs;
mod json;
mod pruned;
mod quick;
pub mod saved;
mod signature;
pub mod status;

use http::HeaderMap;
use serde_json::Value;

use crate::event::{Event, Provider};
use crate::secrets::Secret;
use status::StatusApi;

/// Why a request was not accepted as authentic (answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing signature: no {0} header")]
    Missing(&'static str),
    #[error("malformed signature in {0}")]
    Malformed(&'static str),
    #[error("{0} does not match (wrong secret, or the body was changed on the way)")]
    Mismatch(&'static str),
    #[error("only a SHA-1 signature was sent; SHA-1 is accepted only for entries with `allow_sha1: true`")]
    Sha1NotAllowed,
    #[error("no entry's secret authenticates this request")]
    NoEntry,
}

/// Why a payload could not be understood (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not a request from a known git host: no X-GitHub-Event, X-Gitlab-Event, X-Gogs-Event, X-Gitea-Event or X-Event-Key header")]
    UnknownProvider,
    #[error("empty body")]
    Empty,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("a form-encoded body must be one field, `payload=<JSON>`")]
    NoFormPayload,
    #[error("{provider} {event} payload has no `{field}`")]
    Missing { provider: Provider, event: String, field: &'static str },
    /// A value no host sends: it is refused rather than passed on (the value is not repeated).
    #[error("the payload's {field} is {why}")]
    Invalid { field: &'static str, why: &'static str },
}

/// The longest ref, repository or event name accepted (git itself refuses much shorter refs).
const MAX_NAME: usize = 1024;

/// A prefix reader: (host, event name, body) to the event's matching fields.
type QuickRead = fn(Provider, &str, &[u8]) -> Option<Event>;

/// What one host's adapter knows. Header names are lowercase.
pub(crate) struct Adapter {
    provider: Provider,
    /// Headers that only this host (or a host that also sends its own) sets.
    detect_headers: &'static [&'static str],
    /// Headers naming the event, the first present wins.
    event_headers: &'static [&'static str],
    /// Headers holding the delivery id, the first present wins.
    delivery_headers: &'static [&'static str],
    /// Checks the raw body against one secret (the flag: accept legacy SHA-1).
    authenticate: fn(&HeaderMap, &[u8], &Secret, bool) -> Result<(), AuthError>,
    /// Turns a payload into events, given the event name from the headers.
    parse: fn(&str, &Value) -> Result<Vec<Event>, PayloadError>,
    /// The event name a body of this shape has, for saved deliveries without headers.
    infer_event: fn(&Value) -> Option<String>,
    /// Reads a push's matching fields from the body without building the rest (the prefix
    /// reader of the host's payload shape), or leaves the event to [`Adapter::parse`].
    quick: Option<QuickRead>,
    /// The commit status API an event of this name reports to, if the host has one.
    status: fn(&str) -> Option<&'static StatusApi>,
    /// The event names the host is known to send, and the prefixes of more (see
    /// [`catalogue`]).
    events: &'static [&'static str],
    event_prefixes: &'static [&'static str],
    /// Whether a body has this host's shape (a saved delivery without headers), asked in
    /// [`SHAPE_ORDER`].
    looks_like: fn(&Value) -> bool,
}

/// Gitea and Forgejo also send Gogs and GitHub headers, and Gogs sends GitHub's, so the most
/// specific host is asked first.
const DETECTION_ORDER: [&Adapter; 5] =
    [&gitea::ADAPTER, &gogs::ADAPTER, &github::ADAPTER, &gitlab::ADAPTER, &bitbucket::ADAPTER];

/// The order in which a body's shape is matched to a host: the most distinctive shapes first;
/// Gogs, whose shape is GitHub's without its extras, takes what is left.
const SHAPE_ORDER: [&Adapter; 5] =
    [&gitlab::ADAPTER, &bitbucket::ADAPTER, &github::ADAPTER, &gitea::ADAPTER, &gogs::ADAPTER];

/// The host whose payloads look like `json`.
pub(crate) fn infer_provider(json: &Value) -> Provider {
    let last = SHAPE_ORDER[SHAPE_ORDER.len() - 1];
    SHAPE_ORDER.iter().find(|a| (a.looks_like)(json)).unwrap_or(&last).provider
}

fn adapter(provider: Provider) -> &'static Adapter {
    match provider {
        Provider::Github => &github::ADAPTER,
        Provider::Gitlab => &gitlab::ADAPTER,
        Provider::Gogs => &gogs::ADAPTER,
        Provider::Gitea => &gitea::ADAPTER,
        Provider::Bitbucket => &bitbucket::ADAPTER,
    }
}

/// Finds the provider of a request from its headers.
pub fn detect(headers: &HeaderMap) -> Option<Provider> {
    DETECTION_ORDER
        .iter()
        .find(|a| a.detect_headers.iter().any(|h| headers.contains_key(*h)))
        .map(|a| a.provider)
}

/// A header's value as text; a value that is not visible ASCII counts as absent.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The event name of a request, from the first of `names` that is present.
fn event_name<'a>(headers: &'a HeaderMap, names: &[&str]) -> &'a str {
    names.iter().find_map(|n| header(headers, n)).unwrap_or_default()
}

/// The header that names the event of `provider`'s requests (for saved deliveries).
pub fn event_header(provider: Provider) -> &'static str {
    adapter(provider).event_headers[0]
}

/// The commit status API of `provider`'s event `event_name` (its own name, as its header
/// says), if the host has one.
pub fn status_api(provider: Provider, event_name: &str) -> Option<&'static StatusApi> {
    (adapter(provider).status)(event_name)
}

/// Whether `provider` can have a status on a commit at all (Gogs cannot).
pub fn has_status_api(provider: Provider) -> bool {
    status_api(provider, "").is_some()
}

/// Whether `provider` has a Deployments API (GitHub).
pub fn has_deployments(provider: Provider) -> bool {
    status_api(provider, "").is_some_and(|api| api.deployments().is_some())
}

/// A request of a known host, its headers read once: the adapter that speaks for the host, the
/// event name and the delivery id. Each later step (authenticate, read quickly, parse) asks
/// the adapter once.
pub struct HostRequest<'a> {
    adapter: &'static Adapter,
    headers: &'a HeaderMap,
    event_name: &'a str,
    delivery_id: Option<&'a str>,
}

/// The request's host, from its headers (`None`: no known host's headers).
pub fn identify(headers: &HeaderMap) -> Option<HostRequest<'_>> {
    detect(headers).map(|provider| HostRequest::of(provider, headers))
}

impl<'a> HostRequest<'a> {
    /// A request taken to be `provider`'s (a saved delivery whose provider is given).
    pub fn of(provider: Provider, headers: &'a HeaderMap) -> HostRequest<'a> {
        let adapter = adapter(provider);
        let delivery_id = adapter
            .delivery_headers
            .iter()
            .find_map(|n| header(headers, n))
            .filter(|v| !v.is_empty() && v.len() <= 200);
        HostRequest { adapter, headers, event_name: event_name(headers, adapter.event_headers), delivery_id }
    }

    pub fn provider(&self) -> Provider {
        self.adapter.provider
    }

    /// The delivery id, as the host names it.
    pub fn delivery_id(&self) -> Option<&'a str> {
        self.delivery_id
    }

    /// Checks the raw body against one secret, in constant time.
    pub fn authenticate(&self, body: &[u8], secret: &Secret, allow_sha1: bool) -> Result<(), AuthError> {
        (self.adapter.authenticate)(self.headers, body, secret, allow_sha1)
    }

    /// A push's matching fields, read without the rest of the payload, when the host's shape
    /// allows it; `None`: only [`HostRequest::parse`] can say.
    pub fn quick(&self, body: &[u8]) -> Option<Event> {
        let mut event =
            self.adapter.quick.and_then(|read| read(self.adapter.provider, self.event_name, body))?;
        event.delivery_id = self.delivery_id.map(str::to_string);
        Some(event)
    }

    /// The events of the payload: one, or (Bitbucket) one per changed ref.
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Event>, PayloadError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(PayloadError::Empty);
        }
        let json = json_body(self.headers, body)?;
        self.events_of(&json)
    }

    /// The events of a payload already parsed as JSON.
    fn events_of(&self, json: &Value) -> Result<Vec<Event>, PayloadError> {
        let mut events = (self.adapter.parse)(self.event_name, json)?;
        for e in &mut events {
            check_values(e)?;
            e.delivery_id = self.delivery_id.map(str::to_string);
        }
        Ok(events)
    }
}

/// Checks the request against one secret, over the raw body bytes, in constant time.
pub fn authenticate(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), AuthError> {
    HostRequest::of(provider, headers).authenticate(body, secret, allow_sha1)
}

/// Turns an authenticated request into events: one, or (Bitbucket) one per changed ref.
pub fn parse(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, PayloadError> {
    HostRequest::of(provider, headers).parse(body)
}

/// Refuses values that no host sends and that would reach logs, answers and the environment
/// of actions as something else: a commit id that is not hex, a ref, repository or event name
/// with control characters (git refuses them in refs) or of absurd length.
fn check_values(e: &Event) -> Result<(), PayloadError> {
    let head = e.head.as_ref().map(|h| h.id.as_str()).unwrap_or_default();
    let pr = e.pull_request.as_ref();
    let pr_head = pr.map(|p| p.head_sha.as_str()).unwrap_or_default();
    let tag_object = e.tag_object.as_deref().unwrap_or_default();
    for (field, id) in [
        ("commit id (after)", &*e.after),
        ("commit id (before)", &*e.before),
        ("head commit id", head),
        ("pull request head commit id", pr_head),
        ("tag object id", tag_object),
    ] {
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PayloadError::Invalid { field, why: "not a commit id (hex, at most 64 digits)" });
        }
    }
    let (head_branch, base_branch) =
        pr.map_or(("", ""), |p| (p.head_branch.as_str(), p.base_branch.as_str()));
    for (field, name) in [
        ("ref", e.git_ref.as_str()),
        ("repository", &e.repo),
        ("event name", &e.provider_event),
        ("pull request head branch", head_branch),
        ("pull request base branch", base_branch),
        ("action", e.provider_action.as_deref().unwrap_or_default()),
        ("action", e.action.as_deref().unwrap_or_default()),
        ("workflow name", e.ci.as_ref().map_or("", |c| c.workflow.as_str())),
        ("CI status", e.ci.as_ref().map_or("", |c| c.status.as_str())),
        ("CI conclusion", e.ci.as_ref().and_then(|c| c.conclusion.as_deref()).unwrap_or_default()),
    ] {
        if name.len() > MAX_NAME {
            return Err(PayloadError::Invalid { field, why: "longer than 1024 bytes" });
        }
        if name.chars().any(char::is_control) {
            return Err(PayloadError::Invalid { field, why: "holding control characters" });
        }
    }
    Ok(())
}

/// The event name of a body of `provider`'s, from its shape alone.
pub(crate) fn infer_event(provider: Provider, json: &Value) -> Option<String> {
    (adapter(provider).infer_event)(json)
}

/// The JSON of a request: the body itself, or the `payload` field of a form-encoded body
/// (GitHub, Gogs and Gitea can send either; the signature covers the encoded body). A body is
/// read as a form only when it is one: `payload=` first and nothing else in it, whatever the
/// Content-Type says. A JSON body is never read as a form: a signed JSON push whose text holds
/// `&payload=...` (in a commit message, say) must not become the event it embeds.
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, PayloadError> {
    let form = header(headers, "content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let json = match body.strip_prefix(b"payload=") {
        Some(encoded) if form => {
            if encoded.contains(&b'&') {
                return Err(PayloadError::NoFormPayload);
            }
            let decoded: String = form_urlencoded::parse(body).map(|(_, v)| v.into_owned()).collect();
            return pruned::parse(decoded.as_bytes()).map_err(|e| PayloadError::NotJson(e.to_string()));
        }
        _ if form && !body.trim_ascii_start().starts_with(b"{") => return Err(PayloadError::NoFormPayload),
        _ => body,
    };
    pruned::parse(json).map_err(|e| PayloadError::NotJson(e.to_string()))
}

/// Every request of a fixture corpus (`tests/fixtures` or its `corpus2`): (name, headers,
/// body), sorted by name.
#[cfg(test)]
pub(crate) fn corpus(root: &std::path::Path) -> Vec<(String, HeaderMap, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root.join("requests")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let desc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let body = std::fs::read(root.join(desc["body_file"].as_str().unwrap())).unwrap();
            let mut h = HeaderMap::new();
            for (k, v) in desc["headers"].as_object().unwrap() {
                h.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.as_str().unwrap().parse().unwrap(),
                );
            }
            out.push((path.display().to_string(), h, body));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use http::HeaderValue;
    use sha1::Sha1;

    /// The pruned parse changes nothing the adapters see: over every request of both corpora
    /// (the 66 of the first and the 86 real deliveries of the second), the events, or the
    /// error, are the same as from the whole payload. A key an adapter starts reading that the
    /// pruned parse drops fails here.
    #[test]
    fn pruned_payloads_give_the_same_events_as_whole_ones() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (root, expected) in [(fixtures.clone(), 66), (fixtures.join("corpus2"), 86)] {
            let requests = corpus(&root);
            assert_eq!(requests.len(), expected, "{}", root.display());
            let mut parsed = 0;
            for (name, h, body) in requests {
                let Some(provider) = detect(&h) else { panic!("{name}: no provider detected") };
                let form = h.get("content-type").is_some_and(|v| v.to_str().unwrap().contains("form"));
                let whole: Value = match form_urlencoded::parse(&body).find(|(k, _)| k == "payload") {
                    Some((_, p)) if form => serde_json::from_str(&p).unwrap(),
                    _ => serde_json::from_slice(&body).unwrap(),
                };
                let pruned = parse(provider, &h, &body);
                assert_eq!(pruned, HostRequest::of(provider, &h).events_of(&whole), "{name}");
                parsed += usize::from(pruned.is_ok());
                assert!(json_body(&h, &body).unwrap().to_string().len() <= whole.to_string().len());
            }
            // Nearly all are understood (the rest must fail the same way both ways).
            assert!(parsed + 2 >= expected, "{}: only {parsed} parsed", root.display());
        }
    }

    /// The quick read of a push agrees with the full parse on everything the matcher asks
    /// about, over every push of both corpora (and is refused where the full parse refuses).
    #[test]
    fn a_quick_push_is_the_full_events_match_fields() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut compared = 0;
        for root in [fixtures.clone(), fixtures.join("corpus2")] {
            for (name, h, body) in corpus(&root) {
                let provider = detect(&h).unwrap();
                let Some(q) = HostRequest::of(provider, &h).quick(&body) else { continue };
                let full = parse(provider, &h, &body)
                    .unwrap_or_else(|e| panic!("{name}: quick read, full refused: {e}"));
                let f = &full[0];
                assert_eq!(
                    (q.provider, q.kind, q.name(), &q.repo, &q.git_ref, &q.branch, &q.tag, &q.before),
                    (f.provider, f.kind, f.name(), &f.repo, &f.git_ref, &f.branch, &f.tag, &f.before),
                    "{name}"
                );
                assert!(q.after == f.after || f.tag_object.as_deref() == Some(q.after.as_str()), "{name}");
                assert_eq!((&q.action, &q.ci, q.beside_push), (&f.action, &f.ci, f.beside_push), "{name}");
                compared += 1;
            }
        }
        assert!(compared >= 30, "only {compared} pushes compared");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const SECRET: &str = "It's a Secret to Everybody";

    type Pairs<'a> = &'a [(&'static str, &'a str)];

    #[test]
    fn github_documented_test_vector() {
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        let secret = Secret::new(SECRET);
        assert_eq!(authenticate(Provider::Github, &h, b"Hello, World!", &secret, false), Ok(()));
        assert_eq!(
            authenticate(Provider::Github, &h, b"Hello, World?", &secret, false),
            Err(AuthError::Mismatch("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn detection_order() {
        let cases: &[(Pairs, Option<Provider>)] = &[
            (
                &[("x-forgejo-event", "push"), ("x-gitea-event", "push"), ("x-github-event", "push")],
                Some(Provider::Gitea),
            ),
            (
                &[("x-gitea-event", "push"), ("x-gogs-event", "push"), ("x-github-event", "push")],
                Some(Provider::Gitea),
            ),
            (&[("x-gogs-event", "push"), ("x-github-event", "push")], Some(Provider::Gogs)),
            (&[("x-github-event", "push")], Some(Provider::Github)),
            (&[("x-gitlab-event", "Push Hook")], Some(Provider::Gitlab)),
            (&[("x-event-key", "repo:push")], Some(Provider::Bitbucket)),
            (&[("user-agent", "curl")], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(detect(&headers(pairs)), *want, "{pairs:?}");
        }
    }

    #[test]
    fn signature_errors_are_typed() {
        let secret = Secret::new("s");
        let body = b"{}";
        let cases: &[(Provider, Pairs, AuthError)] = &[
            (Provider::Github, &[], AuthError::Missing("X-Hub-Signature-256")),
            (
                Provider::Github,
                &[("x-hub-signature-256", "sha256=zz")],
                AuthError::Malformed("X-Hub-Signature-256"),
            ),
            (
                Provider::Github,
                &[("x-hub-signature-256", "md5=00")],
                AuthError::Malformed("X-Hub-Signature-256"),
            ),
            (
                Provider::Github,
                &[("x-hub-signature-256", "abcdef")],
                AuthError::Malformed("X-Hub-Signature-256"),
            ),
            (Provider::Github, &[("x-hub-signature", "sha1=00ff")], AuthError::Sha1NotAllowed),
            (Provider::Gitlab, &[], AuthError::Missing("X-Gitlab-Token")),
            (Provider::Gitlab, &[("x-gitlab-token", "t")], AuthError::Mismatch("X-Gitlab-Token")),
            (Provider::Gogs, &[("x-gogs-signature", "")], AuthError::Missing("X-Gogs-Signature")),
            (Provider::Gogs, &[("x-gogs-signature", "00")], AuthError::Mismatch("X-Gogs-Signature")),
            (Provider::Bitbucket, &[], AuthError::Missing("X-Hub-Signature")),
        ];
        for (provider, pairs, want) in cases {
            assert_eq!(
                authenticate(*provider, &headers(pairs), body, &secret, false).as_ref(),
                Err(want),
                "{provider} {pairs:?}"
            );
        }
    }

    #[test]
    fn sha1_only_when_allowed() {
        let secret = Secret::new("s");
        let mut mac = Hmac::<Sha1>::new_from_slice(b"s").unwrap();
        mac.update(b"{}");
        let sig = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        let h = headers(&[("x-hub-signature", &sig)]);
        assert_eq!(authenticate(Provider::Github, &h, b"{}", &secret, false), Err(AuthError::Sha1NotAllowed));
        assert_eq!(authenticate(Provider::Github, &h, b"{}", &secret, true), Ok(()));
    }
}
