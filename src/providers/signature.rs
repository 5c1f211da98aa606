//! The signature schemes the hosts use, shared by the adapters: `algo=hex` HMACs
//! (`X-Hub-Signature-256` and its relatives), bare hex HMAC-SHA256 (Gogs, Gitea/Forgejo), and a
//! plain token (GitLab). Every comparison is over the raw body bytes, in constant time.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{header, AuthError};
use crate::secrets::Secret;

/// `algo=hex` signatures in `primary`, falling back to `X-Hub-Signature`: GitHub's
/// `X-Hub-Signature-256` (with its legacy SHA-1 `X-Hub-Signature`), and Bitbucket's
/// `X-Hub-Signature`, which holds SHA-256 despite the name. SHA-1 only when `allow_sha1`.
pub(super) fn hub(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
    primary: &'static str,
) -> Result<(), AuthError> {
    let mut saw_sha1 = false;
    for name in [primary, "x-hub-signature"] {
        let Some(value) = header(headers, name).filter(|v| !v.is_empty()) else { continue };
        let label = display_name(name);
        let (algo, hex_sig) = value.split_once('=').ok_or(AuthError::Malformed(label))?;
        let mut buf = [0u8; MAX_DIGEST];
        let sig = decode(hex_sig, &mut buf).ok_or(AuthError::Malformed(label))?;
        match algo {
            "sha256" => return verify::<Hmac<Sha256>>(secret, body, sig, label),
            "sha1" if allow_sha1 => return verify::<Hmac<Sha1>>(secret, body, sig, label),
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

/// Longer than any digest a host sends (SHA-256: 32 bytes): a longer signature is a mismatch.
const MAX_DIGEST: usize = 64;

/// The bytes of a hex signature, decoded into `buf` (no allocation on the request path); `None`
/// when it is not hex. A signature longer than `buf` decodes to its first bytes, which no digest
/// verifies (their length is wrong): a mismatch, as before it was cut.
fn decode<'b>(hex_sig: &str, buf: &'b mut [u8; MAX_DIGEST]) -> Option<&'b [u8]> {
    let hex = hex_sig.as_bytes();
    if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let n = (hex.len() / 2).min(MAX_DIGEST);
    hex::decode_to_slice(&hex[..2 * n], &mut buf[..n]).ok()?;
    Some(&buf[..n])
}

fn display_name(name: &str) -> &'static str {
    match name {
        "x-hub-signature-256" => "X-Hub-Signature-256",
        _ => "X-Hub-Signature",
    }
}

/// Bare lowercase hex HMAC-SHA256, no `sha256=` prefix, in the first of `names` (header name,
/// name as shown) that is present.
pub(super) fn bare_hex(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    names: &[(&str, &'static str)],
) -> Result<(), AuthError> {
    for (name, label) in names {
        let Some(value) = header(headers, name).filter(|v| !v.is_empty()) else { continue };
        let mut buf = [0u8; MAX_DIGEST];
        let sig = decode(value, &mut buf).ok_or(AuthError::Malformed(label))?;
        return verify::<Hmac<Sha256>>(secret, body, sig, label);
    }
    Err(AuthError::Missing(names[0].1))
}

/// A plain token in `name`, equal to the secret. Digests are compared, so that neither the
/// content nor the length of the secret leaks through timing.
pub(super) fn token(
    headers: &HeaderMap,
    secret: &Secret,
    name: &str,
    label: &'static str,
) -> Result<(), AuthError> {
    let token = header(headers, name).ok_or(AuthError::Missing(label))?;
    let a = Sha256::digest(token.as_bytes());
    let b = Sha256::digest(secret.expose());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(AuthError::Mismatch(label))
    }
}

fn verify<M: Mac + hmac::digest::KeyInit>(
    secret: &Secret,
    body: &[u8],
    sig: &[u8],
    label: &'static str,
) -> Result<(), AuthError> {
    let Ok(mut mac) = <M as Mac>::new_from_slice(secret.expose()) else {
        // HMAC takes keys of any length: this cannot happen, and would refuse the request.
        return Err(AuthError::Mismatch(label));
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(sig).map_err(|_| AuthError::Mismatch(label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn signed(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", HeaderValue::from_str(value).unwrap());
        headers
    }

    fn check(value: &str) -> Result<(), AuthError> {
        hub(&signed(value), b"{}", &Secret::new("s3cret"), false, "x-hub-signature-256")
    }

    #[test]
    fn hex_signatures_of_any_length_are_decoded_without_allocating_or_panicking() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"{}");
        let good = hex::encode(mac.finalize().into_bytes());
        assert_eq!(check(&format!("sha256={good}")), Ok(()));
        assert_eq!(check(&format!("sha256={}", good.to_uppercase())), Ok(()));
        let malformed = AuthError::Malformed("X-Hub-Signature-256");
        let mismatch = AuthError::Mismatch("X-Hub-Signature-256");
        assert_eq!(check(&format!("sha256={}", &good[1..])), Err(malformed.clone()), "odd length");
        assert_eq!(check(&format!("sha256={}zz", &good[2..])), Err(malformed.clone()), "not hex");
        assert_eq!(
            check(&format!("sha256={good}{good}{good}{good}{good}")),
            Err(mismatch.clone()),
            "too long"
        );
        assert_eq!(check(&format!("sha256={good}{good}{good}{good}zz")), Err(malformed), "too long, not hex");
        assert_eq!(check(&format!("sha256={}", &good[..62])), Err(mismatch.clone()), "too short");
        assert_eq!(check("sha256="), Err(mismatch), "empty");
    }
}
