//! Saved deliveries: a webhook request kept in a file, for manual runs and for explaining why
//! an event matches or not.
//!
//! A file holds either the request as the host's "recent deliveries" page shows it (header
//! lines, a blank line, then the body), or the body alone. With headers, the provider and the
//! event come from them, as for a live request. With the body alone they are inferred from its
//! shape, or given by the user when the shape is ambiguous (a Gogs `create` and `delete` look
//! alike, for instance).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::{detect, event_header, infer_event, infer_provider};
use crate::event::Provider;

/// A delivery read from a file.
#[derive(Debug)]
pub struct Saved {
    pub provider: Provider,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Whether the headers came from the file (a signature can then be checked).
    pub had_headers: bool,
}

/// Reads a saved delivery. `provider` and `event` (the provider's own event name, as its
/// header would carry it) override what the file says or its shape suggests.
pub fn read(text: &[u8], provider: Option<Provider>, event: Option<&str>) -> Result<Saved, String> {
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let (mut headers, body, had_headers) = if matches!(text.get(start), Some(b'{') | Some(b'[')) {
        (HeaderMap::new(), text.to_vec(), false)
    } else {
        let (headers, body) = split_headers(text)?;
        (headers, body, true)
    };
    // The body's shape is read (once) only when the headers and the user do not say enough.
    let parse = |body: &[u8]| -> Result<Value, String> {
        serde_json::from_slice(body).map_err(|e| format!("the saved delivery is not JSON: {e}"))
    };
    let mut json: Option<Value> = None;
    let provider = match provider.or_else(|| detect(&headers)) {
        Some(p) => p,
        None => infer_provider(json.insert(parse(&body)?)),
    };
    let event_header = event_header(provider);
    let event = match event {
        Some(e) => Some(e.to_string()),
        None if headers.contains_key(event_header) => None,
        None => {
            let json = match json.take() {
                Some(json) => json,
                None => parse(&body)?,
            };
            Some(infer_event(provider, &json).ok_or_else(|| {
                format!(
                    "cannot tell which {provider} event this payload is from its content; give it with --event \
                     (the provider's own name, as in its {event_header} header)"
                )
            })?)
        }
    };
    if let Some(event) = event {
        let value = HeaderValue::from_str(&event).map_err(|_| format!("invalid event name {event:?}"))?;
        headers.insert(HeaderName::from_static(event_header), value);
    }
    Ok(Saved { provider, headers, body, had_headers })
}

/// `Name: value` lines (an optional request line first), a blank line, the body.
fn split_headers(text: &[u8]) -> Result<(HeaderMap, Vec<u8>), String> {
    let (head, body) = match find(text, b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| find(text, b"\n\n").map(|i| (i, 2)))
    {
        Some((i, skip)) => (&text[..i], text[i + skip..].to_vec()),
        None => return Err("the saved delivery is neither JSON nor headers, a blank line, and a body".into()),
    };
    let head =
        std::str::from_utf8(head).map_err(|_| "the saved delivery's headers are not text".to_string())?;
    let mut headers = HeaderMap::new();
    for (n, line) in head.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (n == 0 && (line.starts_with("POST ") || line.starts_with("HTTP/"))) {
            continue;
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| format!("header line {} has no `:`: {line:?}", n + 1))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header line {}: invalid name {:?}", n + 1, name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header line {}: invalid value", n + 1))?;
        headers.append(name, value);
    }
    Ok((headers, body))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path))
            .unwrap()
    }

    #[test]
    fn bodies_alone_are_recognised_by_their_shape() {
        for (file, provider, kind) in [
            ("github/push.json", Provider::Github, EventKind::Push),
            ("github/ping.json", Provider::Github, EventKind::Ping),
            ("gitlab/push.json", Provider::Gitlab, EventKind::Push),
            ("gitlab/tag_push.json", Provider::Gitlab, EventKind::Tag),
            ("gitea/push.json", Provider::Gitea, EventKind::Push),
            ("gogs/push.json", Provider::Gogs, EventKind::Push),
            ("bitbucket/repo_push.json", Provider::Bitbucket, EventKind::Push),
            ("bitbucket-server/repo_refs_changed.json", Provider::Bitbucket, EventKind::Push),
        ] {
            let saved = read(&fixture(file), None, None).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(saved.provider, provider, "{file}");
            assert!(!saved.had_headers);
            let events = super::super::parse(saved.provider, &saved.headers, &saved.body).unwrap();
            assert_eq!(events[0].kind, kind, "{file}");
        }
    }

    #[test]
    fn ambiguous_shapes_ask_for_the_event_and_headers_decide() {
        let err = read(&fixture("gogs/create-tag.json"), None, None).unwrap_err();
        assert!(err.contains("--event"), "{err}");
        let saved = read(&fixture("gogs/create-tag.json"), Some(Provider::Gogs), Some("create")).unwrap();
        let events = super::super::parse(saved.provider, &saved.headers, &saved.body).unwrap();
        assert_eq!(events[0].kind, EventKind::Tag);

        let mut text =
            b"POST /hooks HTTP/1.1\r\nX-Gitea-Event: push\r\nX-Gitea-Signature: ab\r\n\r\n".to_vec();
        text.extend_from_slice(&fixture("gogs/push.json"));
        let saved = read(&text, None, None).unwrap();
        assert_eq!((saved.provider, saved.had_headers), (Provider::Gitea, true));
        assert_eq!(saved.headers["x-gitea-signature"], "ab");
        assert!(read(b"not a delivery", None, None).is_err());
        assert!(read(b"X-GitHub-Event push\n\n{}", None, None).unwrap_err().contains("no `:`"));
    }
}
