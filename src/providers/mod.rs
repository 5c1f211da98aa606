//! Provider adapters: from a raw request (headers and body bytes) to verified, normalised events.
//!
//! The order of work is fixed: [`detect`] the provider from the headers, [`authenticate`] the
//! raw body bytes against an entry's secret (constant time, before any JSON is parsed), then
//! [`parse`] the payload into [`Event`]s. Each provider's JSON shape is known only to its own
//! file here. What to do with a verified event (matching, queuing) is left to others.

mod bitbucket;
mod github;
mod gitlab;
mod gogs;
mod pruned;
pub mod saved;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::event::{Event, Provider};
use crate::settings::Secret;

/// Why a request was not accepted as authentic (answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing signature: no {0} header")]
    Missing(&'static str),
    #[error("malformed signature in {0}")]
    Malformed(&'static str),
    #[error("signature does not match (wrong secret, or the body was changed on the way)")]
    Mismatch,
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
    #[error("form-encoded body has no `payload` field")]
    NoFormPayload,
    #[error("{provider} {event} payload has no `{field}`")]
    Missing { provider: Provider, event: String, field: &'static str },
}

/// Finds the provider of a request from its headers. Gitea and Forgejo also send Gogs and
/// GitHub headers, and Gogs sends GitHub's, so the most specific header wins.
pub fn detect(headers: &HeaderMap) -> Option<Provider> {
    let has = |name: &str| headers.contains_key(name);
    if has("x-forgejo-event") || has("x-gitea-event") {
        Some(Provider::Gitea)
    } else if has("x-gogs-event") {
        Some(Provider::Gogs)
    } else if has("x-github-event") {
        Some(Provider::Github)
    } else if has("x-gitlab-event") {
        Some(Provider::Gitlab)
    } else if has("x-event-key") {
        Some(Provider::Bitbucket)
    } else {
        None
    }
}

/// A header's value as text; a value that is not visible ASCII counts as absent.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The request's delivery id, as the provider names it.
pub fn delivery_id(provider: Provider, headers: &HeaderMap) -> Option<String> {
    let names: &[&str] = match provider {
        Provider::Github => &["x-github-delivery"],
        Provider::Gitlab => &["idempotency-key", "x-gitlab-webhook-uuid", "x-gitlab-event-uuid"],
        Provider::Gogs => &["x-gogs-delivery", "x-github-delivery"],
        Provider::Gitea => &["x-forgejo-delivery", "x-gitea-delivery", "x-gogs-delivery"],
        Provider::Bitbucket => &["x-request-uuid", "x-request-id"],
    };
    names
        .iter()
        .find_map(|n| header(headers, n))
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
}

/// Checks the request against one secret, over the raw body bytes, in constant time.
pub fn authenticate(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), AuthError> {
    match provider {
        Provider::Github => hub_signature(headers, body, secret, allow_sha1, "x-hub-signature-256"),
        Provider::Bitbucket => hub_signature(headers, body, secret, allow_sha1, "x-hub-signature"),
        Provider::Gitlab => {
            let token = header(headers, "x-gitlab-token").ok_or(AuthError::Missing("X-Gitlab-Token"))?;
            // Compare digests so that neither the content nor the length of the secret leaks.
            let a = Sha256::digest(token.as_bytes());
            let b = Sha256::digest(secret.expose());
            if bool::from(a.ct_eq(&b)) {
                Ok(())
            } else {
                Err(AuthError::Mismatch)
            }
        }
        Provider::Gogs => bare_hex(headers, body, secret, &[("x-gogs-signature", "X-Gogs-Signature")]),
        Provider::Gitea => {
            let named = [
                ("x-forgejo-signature", "X-Forgejo-Signature"),
                ("x-gitea-signature", "X-Gitea-Signature"),
                ("x-gogs-signature", "X-Gogs-Signature"),
            ];
            match bare_hex(headers, body, secret, &named) {
                Err(AuthError::Missing(_)) => {
                    hub_signature(headers, body, secret, allow_sha1, "x-hub-signature-256")
                }
                other => other,
            }
        }
    }
}

/// `algo=hex` signatures: GitHub's `X-Hub-Signature-256` (with legacy `X-Hub-Signature` SHA-1),
/// and Bitbucket's `X-Hub-Signature`, which holds SHA-256 despite the name.
fn hub_signature(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
    primary: &'static str,
) -> Result<(), AuthError> {
    let candidates = [primary, "x-hub-signature"];
    let mut saw_sha1 = false;
    for name in candidates {
        let Some(value) = header(headers, name).filter(|v| !v.is_empty()) else { continue };
        let label = display_name(name);
        let (algo, hex_sig) = value.split_once('=').ok_or(AuthError::Malformed(label))?;
        let sig = hex::decode(hex_sig).map_err(|_| AuthError::Malformed(label))?;
        match algo {
            "sha256" => return verify::<Hmac<Sha256>>(secret, body, &sig),
            "sha1" if allow_sha1 => return verify::<Hmac<Sha1>>(secret, body, &sig),
            "sha1" => saw_sha1 = true,
            _ => return Err(AuthError::Malformed(label)),
        }
    }
    if saw_sha1 {
        Err(AuthError::Sha1NotAllowed)
    } else {
        Err(AuthError::Missing(display_name(primary)))
    }
}

fn display_name(name: &str) -> &'static str {
    match name {
        "x-hub-signature-256" => "X-Hub-Signature-256",
        _ => "X-Hub-Signature",
    }
}

/// Gogs and Gitea: bare lowercase hex HMAC-SHA256, no `sha256=` prefix.
fn bare_hex(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    names: &[(&str, &'static str)],
) -> Result<(), AuthError> {
    for (name, label) in names {
        let Some(value) = header(headers, name).filter(|v| !v.is_empty()) else { continue };
        let sig = hex::decode(value).map_err(|_| AuthError::Malformed(label))?;
        return verify::<Hmac<Sha256>>(secret, body, &sig);
    }
    Err(AuthError::Missing(names[0].1))
}

fn verify<M: Mac + hmac::digest::KeyInit>(secret: &Secret, body: &[u8], sig: &[u8]) -> Result<(), AuthError> {
    let mut mac = <M as Mac>::new_from_slice(secret.expose()).expect("HMAC takes keys of any length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(sig).map_err(|_| AuthError::Mismatch)
}

/// Turns an authenticated request into events: one, or (Bitbucket) one per changed ref.
pub fn parse(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    let json = json_body(headers, body)?;
    events_of(provider, headers, &json)
}

/// The events of a payload already parsed as JSON.
fn events_of(provider: Provider, headers: &HeaderMap, json: &Value) -> Result<Vec<Event>, PayloadError> {
    let delivery = delivery_id(provider, headers);
    let mut events = match provider {
        Provider::Github => github::parse(headers, json)?,
        Provider::Gitlab => gitlab::parse(headers, json)?,
        Provider::Gogs => gogs::parse(Provider::Gogs, headers, json)?,
        Provider::Gitea => gogs::parse(Provider::Gitea, headers, json)?,
        Provider::Bitbucket => bitbucket::parse(headers, json)?,
    };
    for e in &mut events {
        e.delivery_id = delivery.clone();
    }
    Ok(events)
}

/// The JSON of a request: the body itself, or the `payload` field of a form-encoded body
/// (GitHub, Gogs and Gitea can send either; the signature covers the encoded body).
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, PayloadError> {
    let form = header(headers, "content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if form {
        let payload = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or(PayloadError::NoFormPayload)?;
        pruned::parse(payload.as_bytes()).map_err(|e| PayloadError::NotJson(e.to_string()))
    } else {
        pruned::parse(body).map_err(|e| PayloadError::NotJson(e.to_string()))
    }
}

// Small helpers for reading JSON by path; shared by the adapters.

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

pub(crate) fn string_at(v: &Value, pointer: &str) -> String {
    str_at(v, pointer).unwrap_or_default().to_string()
}

/// The first non-empty string among several paths.
pub(crate) fn first_str(v: &Value, pointers: &[&str]) -> String {
    pointers.iter().find_map(|p| str_at(v, p).filter(|s| !s.is_empty())).unwrap_or_default().to_string()
}

/// The union of `added`, `modified` and `removed` over `commits`, sorted and deduplicated,
/// and whether every commit carried its file lists.
pub(crate) fn commit_files(commits: &[Value]) -> (Vec<String>, bool) {
    let mut files = std::collections::BTreeSet::new();
    let mut all_listed = true;
    for c in commits {
        for key in ["added", "modified", "removed"] {
            match c.get(key).and_then(Value::as_array) {
                Some(list) => files.extend(list.iter().filter_map(Value::as_str).map(str::to_string)),
                None => all_listed = false,
            }
        }
    }
    (files.into_iter().collect(), all_listed)
}

/// The commit of `commits` whose id is `after`, whatever the order the provider lists them in.
pub(crate) fn find_commit<'a>(commits: &'a [Value], after: &str, id_key: &str) -> Option<&'a Value> {
    commits.iter().find(|c| c.get(id_key).and_then(Value::as_str) == Some(after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The pruned parse changes nothing the adapters see: over every request of the fixture
    /// corpus, the events are the same as from the whole payload.
    #[test]
    fn pruned_payloads_give_the_same_events_as_whole_ones() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut checked = 0;
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
                let provider = detect(&h).unwrap();
                let whole: Value = match form_urlencoded::parse(&body).find(|(k, _)| k == "payload") {
                    Some((_, p)) if h["content-type"].to_str().unwrap().contains("form") => {
                        serde_json::from_str(&p).unwrap()
                    }
                    _ => serde_json::from_slice(&body).unwrap(),
                };
                let pruned = parse(provider, &h, &body);
                assert_eq!(pruned, events_of(provider, &h, &whole), "{}", path.display());
                assert!(json_body(&h, &body).unwrap().to_string().len() <= whole.to_string().len());
                checked += 1;
            }
        }
        assert_eq!(checked, 66);
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
            Err(AuthError::Mismatch)
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
            (Provider::Gitlab, &[("x-gitlab-token", "t")], AuthError::Mismatch),
            (Provider::Gogs, &[("x-gogs-signature", "")], AuthError::Missing("X-Gogs-Signature")),
            (Provider::Gogs, &[("x-gogs-signature", "00")], AuthError::Mismatch),
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
