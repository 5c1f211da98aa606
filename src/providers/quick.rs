//! A push read for the decision alone: most pushes a webhook daemon gets are for a branch no
//! entry deploys, and deciding that needs only the ref, the commits and the repository. This
//! reads just those (borrowed from the body, every other key skipped without being built), so
//! that an ignored push costs no full parse; when an entry may match, the caller parses the
//! payload whole, and the event it gets is the one the matcher was asked about.
//!
//! Only the GitHub shape's `push` (GitHub, Gitea/Forgejo, Gogs) is read here. Anything this
//! cannot read exactly as the full parse would (a form-encoded body, a missing field, a value
//! the full parse refuses) is left to the full parse.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::check_values;
use crate::event::{Event, Provider, ZERO_SHA};

/// What the decision needs of a push. Borrowed strings only: a value with an escape in it
/// cannot be borrowed, fails this read, and is left to the full parse (rare in refs, hashes and
/// repository names: Go's encoder, Gitea's and Gogs', escapes `<`, `>` and `&`).
///
/// Read by hand rather than derived: a derived reader checks every key of the payload as UTF-8
/// and matches it as a field name (some ninety keys in a GitHub push's repository), which cost
/// more than skipping the values. Here a key is compared as the bytes serde_json gives (escapes
/// resolved, as a derived reader would see it); the body has been checked as UTF-8 once, whole,
/// so nothing a derived reader refuses is read. A field given twice is refused, as derived
/// readers do.
#[derive(Default)]
struct Push<'a> {
    git_ref: Option<Option<&'a str>>,
    before: Option<Option<&'a str>>,
    after: Option<Option<&'a str>>,
    deleted: Option<Option<bool>>,
    repository: Option<Option<Repository<'a>>>,
}

#[derive(Default)]
struct Repository<'a> {
    full_name: Option<Option<&'a str>>,
}

/// A key, compared as bytes (serde_json gives a key's bytes with its escapes resolved).
struct Key<'a>(std::borrow::Cow<'a, [u8]>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key<'de>, E> {
                Ok(Key(v.to_vec().into()))
            }
        }
        deserializer.deserialize_bytes(KeyVisitor)
    }
}

/// An object read key by key: the keys it knows are taken by `field`, every other value is
/// skipped unbuilt.
trait Fields<'de>: Default {
    const WHAT: &'static str;

    /// Takes the value of `key` when it is one of the fields; `false` when it is not.
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error>;
}

struct FieldsVisitor<T>(PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for FieldsVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::WHAT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut fields = T::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if !fields.field(&key.0, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// Sets `slot` to the next value, refusing a second one.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<bool, A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(true)
}

impl<'de> Fields<'de> for Push<'de> {
    const WHAT: &'static str = "a push";

    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"ref" => once(map, &mut self.git_ref, "ref"),
            b"before" => once(map, &mut self.before, "before"),
            b"after" => once(map, &mut self.after, "after"),
            b"deleted" => once(map, &mut self.deleted, "deleted"),
            b"repository" => once(map, &mut self.repository, "repository"),
            _ => Ok(false),
        }
    }
}

impl<'de> Fields<'de> for Repository<'de> {
    const WHAT: &'static str = "a repository";

    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"full_name" => once(map, &mut self.full_name, "full_name"),
            _ => Ok(false),
        }
    }
}

impl<'de> Deserialize<'de> for Push<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Repository<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(PhantomData))
    }
}

/// The event of a GitHub-shaped push with what matching needs (provider, kind, repository,
/// ref, commits), or `None` when only the full parse can say.
pub(super) fn push(provider: Provider, event_name: &str, body: &[u8]) -> Option<Event> {
    if event_name != "push" || !body.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let body = std::str::from_utf8(body).ok()?;
    let push: Push<'_> = serde_json::from_str(body).ok()?;
    let git_ref = push.git_ref.flatten().filter(|r| !r.is_empty())?;
    let after = push.after.flatten()?;
    let repo = push.repository.flatten().and_then(|r| r.full_name.flatten()).filter(|r| !r.is_empty())?;
    let mut event = Event::new(provider, "push");
    event.set_ref(git_ref);
    event.repo = repo.to_owned();
    event.before = push.before.flatten().unwrap_or_default().to_owned();
    event.after = after.to_owned();
    event.set_kind_from_ref(event.after == ZERO_SHA || push.deleted.flatten() == Some(true));
    check_values(&event).ok()?;
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::push;
    use crate::event::Provider;

    const BODY: &str = r#"{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111","after":"2222222222222222222222222222222222222222","deleted":false,"repository":{"id":1,"full_name":"acme/app","owner":{"name":"acme"}},"commits":[]}"#;

    fn read(body: &str) -> Option<(String, String)> {
        push(Provider::Github, "push", body.as_bytes()).map(|e| (e.repo, e.git_ref))
    }

    #[test]
    fn reads_the_ref_and_repository_of_a_push() {
        assert_eq!(read(BODY), Some(("acme/app".into(), "refs/heads/main".into())));
        // A key written with escapes is the same key, as for the full parse.
        let escaped =
            BODY.replace(r#""full_name""#, r#""full\u005fname""#).replace(r#""ref""#, r#""r\u0065f""#);
        assert_eq!(read(&escaped), read(BODY));
    }

    /// Whatever this cannot read exactly as serde_json would is left to the full parse.
    #[test]
    fn leaves_to_the_full_parse_what_it_cannot_read_exactly() {
        let cases = [
            // a field given twice (a derived reader refuses it)
            BODY.replace(r#""deleted":false"#, r#""ref":"refs/heads/other","deleted":false"#),
            BODY.replace(r#""owner""#, r#""full_name":"evil/app","owner""#),
            // not UTF-8 in a value no one reads
            BODY.replace("acme\"}", "acme\u{fffd}\"}"),
            // an escape in a value that must be borrowed
            BODY.replace("acme/app", r"acme\/app"),
            // wrong types, a truncated body, trailing bytes
            BODY.replace(r#""deleted":false"#, r#""deleted":"no""#),
            BODY.replace(r#""after":"2222222222222222222222222222222222222222""#, r#""after":2"#),
            BODY[..BODY.len() - 1].to_string(),
            format!("{BODY}x"),
        ];
        let invalid_utf8 = {
            let mut b = BODY.as_bytes().to_vec();
            let at = BODY.find("acme\"}").unwrap() + 2;
            b[at] = 0xff;
            b
        };
        assert_eq!(push(Provider::Github, "push", &invalid_utf8).map(|e| e.repo), None);
        // The replacement character is valid UTF-8: that one is read.
        assert!(read(&cases[2]).is_some());
        for (i, case) in cases.iter().enumerate().filter(|(i, _)| *i != 2) {
            assert_eq!(read(case), None, "case {i}: {case}");
        }
    }
}
