//! Who is signed in to the page: a session made when a token of `api.tokens` is given to the
//! login form, kept in the daemon's memory and named by a random cookie (HttpOnly,
//! SameSite=Strict, Secure when the page is served over TLS). The daemon keeps only the
//! cookie's SHA-256, the token's name and a digest of its value: a session ends when it
//! expires, when its user signs out, when the daemon restarts, and when its token is removed
//! from the settings or changed. Its scope is the token's scope now, read at each request.
//!
//! Every POST of the page carries the session's CSRF token (compared in constant time), and an
//! `Origin` that is the page's own: a form on another site cannot act for a signed-in user.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::{Api, Scope, Settings};

/// The cookie's name.
const COOKIE: &str = "wh_session";
/// How long a session lasts from its sign-in.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept; beyond, the oldest is ended (a flood of sign-ins costs bounded
/// memory and cannot sign anyone out but the oldest).
const MOST: usize = 1000;

struct Kept {
    token: String,
    token_digest: [u8; 32],
    csrf: String,
    since: Instant,
}

static SESSIONS: Mutex<Option<HashMap<[u8; 32], Kept>>> = Mutex::new(None);

/// A signed-in user, as the request's cookie says.
#[derive(Debug, Clone)]
pub(super) struct User {
    /// The token's name (never its value).
    pub name: String,
    pub scope: Scope,
    /// The token every POST of this session carries.
    pub csrf: String,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// 32 random bytes, in hex.
fn random() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn with<T>(f: impl FnOnce(&mut HashMap<[u8; 32], Kept>) -> T) -> T {
    let mut sessions = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    f(sessions.get_or_insert_with(HashMap::new))
}

/// The session cookie's value in `headers`.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The user whose session the request's cookie names, if it is alive and its token still one
/// of the settings' (with the same value).
pub(super) fn user(api: &Api, headers: &HeaderMap) -> Option<User> {
    let id = digest(cookie(headers)?.as_bytes());
    with(|sessions| {
        let kept = sessions.get(&id)?;
        if kept.since.elapsed() >= LIFETIME {
            sessions.remove(&id);
            return None;
        }
        let token = api.tokens.iter().find(|t| t.name == kept.token)?;
        if digest(token.secret.expose()) != kept.token_digest {
            sessions.remove(&id);
            return None;
        }
        Some(User { name: token.name.clone(), scope: token.scope, csrf: kept.csrf.clone() })
    })
}

/// A new session for `token`: the `Set-Cookie` value that names it.
pub(super) fn start(token: &crate::settings::Token, secure: bool) -> Option<String> {
    let id = random()?;
    let csrf = random()?;
    with(|sessions| {
        sessions.retain(|_, k| k.since.elapsed() < LIFETIME);
        if sessions.len() >= MOST {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, k)| k.since).map(|(id, _)| *id) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            digest(id.as_bytes()),
            Kept {
                token: token.name.clone(),
                token_digest: digest(token.secret.expose()),
                csrf,
                since: Instant::now(),
            },
        );
    });
    Some(format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" }))
}

/// Ends the request's session; the `Set-Cookie` value that clears the cookie.
pub(super) fn end(headers: &HeaderMap, secure: bool) -> String {
    if let Some(value) = cookie(headers) {
        let id = digest(value.as_bytes());
        with(|sessions| sessions.remove(&id));
    }
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

/// Whether `given` is the session's CSRF token.
pub(super) fn csrf_fits(user: &User, given: &str) -> bool {
    let (a, b) = (digest(user.csrf.as_bytes()), digest(given.as_bytes()));
    bool::from(a.ct_eq(&b))
}

/// Whether a POST comes from the page itself: its `Origin` names the host the request was sent
/// to (`Host`), or the origin of `server.public_url`. A POST without `Origin` is refused: every
/// browser sends one with a form's POST, and the page is for browsers (scripts use the API).
pub(super) fn same_origin(settings: &Settings, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    if authority.is_empty() || authority.contains('/') {
        return false;
    }
    let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok());
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    settings.server.public_url.as_deref().is_some_and(|url| {
        let public = url.trim_end_matches('/');
        let public_origin = match public.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
            None => return false,
        };
        public_origin.eq_ignore_ascii_case(origin)
    })
}

/// Whether the page is served over TLS: `server.public_url` is https, or a trusted proxy says
/// the request came over TLS (`X-Forwarded-Proto: https`). Its cookie is then `Secure`.
pub(super) fn secure(settings: &Settings, headers: &HeaderMap, peer: std::net::IpAddr) -> bool {
    if settings.server.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
        return true;
    }
    settings.server.trusted_proxies.contains(peer)
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;
    use crate::settings::Token;

    fn api(value: &str) -> Api {
        Api {
            tokens: vec![Token { name: "ops".into(), secret: Secret(value.into()), scope: Scope::Admin }],
            allow_from: None,
            max_waiting: 1,
        }
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("other=1; {}", cookie.split(';').next().unwrap()).parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_session_lives_while_its_token_does() {
        let api = api("token-value-0123456789");
        let set = start(&api.tokens[0], false).unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"));
        let user = user(&api, &headers(&set)).expect("signed in");
        assert_eq!((user.name.as_str(), user.scope), ("ops", Scope::Admin));
        assert!(csrf_fits(&user, &user.csrf.clone()));
        assert!(!csrf_fits(&user, "0"));
        // Another cookie opens nothing.
        assert!(super::user(&api, &headers("wh_session=00")).is_none());
        // The token changed in the settings: the session is over.
        assert!(super::user(&self::api("another-value-0123456789"), &headers(&set)).is_none());
        assert!(super::user(&api, &headers(&set)).is_none(), "ended for good");
        // Signing out ends it.
        let set = start(&api.tokens[0], true).unwrap();
        assert!(set.ends_with("; Secure"));
        assert!(end(&headers(&set), true).contains("Max-Age=0"));
        assert!(super::user(&api, &headers(&set)).is_none());
    }
}
