//! Who is asking: `Authorization: Bearer <token>` against the settings' tokens, compared in
//! constant time (each token's SHA-256 against the given one's: the time does not depend on
//! where they differ, nor on their lengths), every token tried whatever matched before. An
//! address that fails too often is refused for a while without a comparison.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::{Api, Token};

/// Failures an address may have within [`WINDOW`] before it is refused (429) until it ends.
const FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// The most addresses remembered (a flood from many addresses costs bounded memory).
const REMEMBERED: usize = 10_000;

static FAILED: Mutex<Option<HashMap<IpAddr, (u32, Instant)>>> = Mutex::new(None);

/// The token the request carries, if it is one of the settings'.
pub(super) fn token<'a>(api: &'a Api, headers: &HeaderMap) -> Option<&'a Token> {
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)?;
    find(api, given)
}

/// The token of the settings whose value is `given`.
pub(in crate::server) fn find<'a>(api: &'a Api, given: &str) -> Option<&'a Token> {
    if given.is_empty() {
        return None;
    }
    let given = Sha256::digest(given.as_bytes());
    let mut found = None;
    for token in &api.tokens {
        let known = Sha256::digest(token.secret.expose());
        if bool::from(known.ct_eq(&given)) {
            found = Some(token);
        }
    }
    found
}

/// Whether `client` failed too often lately.
pub(in crate::server) fn throttled(client: IpAddr) -> bool {
    let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
    let map = failed.get_or_insert_with(HashMap::new);
    match map.get(&client) {
        Some((n, since)) if since.elapsed() < WINDOW => *n >= FAILURES,
        Some(_) => {
            map.remove(&client);
            false
        }
        None => false,
    }
}

/// Counts a failure of `client`.
pub(in crate::server) fn failed(client: IpAddr) {
    let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
    let map = failed.get_or_insert_with(HashMap::new);
    if map.len() >= REMEMBERED {
        map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        if map.len() >= REMEMBERED {
            map.clear();
        }
    }
    let entry = map.entry(client).or_insert((0, Instant::now()));
    if entry.1.elapsed() >= WINDOW {
        *entry = (0, Instant::now());
    }
    entry.0 += 1;
}
