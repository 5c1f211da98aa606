//! Parsing a payload into JSON without the parts no adapter reads.
//!
//! A GitHub push is ~7 KB, most of it the `repository` object (some ninety URLs and counters),
//! the `sender` and the commits' URLs and committers. Building all of it as a [`Value`] (one allocation per string and map) cost
//! more than everything else on the path of an ignored request. Here the parts known to be
//! unused are skipped while parsing (still fully validated as JSON, never allocated). The
//! adapters read the result as before; a test checks, over the whole fixture corpus, that they
//! produce the same events from it as from the whole payload.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// What to keep of a JSON value: all of it, or only some keys of an object (of each object,
/// for an array of objects).
enum Keep {
    All,
    Keys(&'static [(&'static str, Keep)]),
}

/// The keys of `repository` that the adapters read (GitHub, Gogs, Gitea, GitLab, Bitbucket).
const REPOSITORY: Keep = Keep::Keys(&[
    ("full_name", Keep::All),
    ("clone_url", Keep::All),
    ("html_url", Keep::All),
    ("git_http_url", Keep::All),
    ("node_id", Keep::All),
    ("internal_tracker", Keep::All),
    ("name", Keep::All),
    ("slug", Keep::All),
    ("project", Keep::All),
    ("links", Keep::All),
]);

/// The keys of each commit (`commits[]`, `head_commit`) that the adapters read.
const COMMIT: Keep = Keep::Keys(&[
    ("id", Keep::All),
    ("message", Keep::All),
    ("author", Keep::All),
    ("added", Keep::All),
    ("modified", Keep::All),
    ("removed", Keep::All),
]);

/// The keys of `sender` that the adapters read.
const SENDER: Keep = Keep::Keys(&[("login", Keep::All), ("username", Keep::All)]);

/// Parses `bytes` as JSON, skipping what no adapter reads.
pub fn parse(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed(&Keep::All, true).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// What to keep of one value. The top level (`true`) keeps every key but prunes two; below
/// it, `Keep` says.
#[derive(Clone, Copy)]
struct Seed(&'static Keep, bool);

impl Seed {
    /// What to keep of the value under `key` of an object kept by this seed.
    fn child(&self, key: &str) -> Option<&'static Keep> {
        if self.1 {
            return Some(match key {
                "repository" => &REPOSITORY,
                "sender" => &SENDER,
                "commits" | "head_commit" => &COMMIT,
                _ => &Keep::All,
            });
        }
        match self.0 {
            Keep::All => Some(&Keep::All),
            Keep::Keys(keys) => keys.iter().find(|(k, _)| *k == key).map(|(_, keep)| keep),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match (self.0, self.1) {
            (Keep::All, false) => Value::deserialize(d),
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(self))? {
            match key {
                Some((key, keep)) => {
                    let value = map.next_value_seed(Seed(keep, false))?;
                    out.insert(key, value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed(self.0, false))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key: the key and what to keep of its value, or `None` (without allocating) when
/// its value is skipped.
struct KeySeed(Seed);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<(String, &'static Keep)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<(String, &'static Keep)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.child(key).map(|keep| (key.to_string(), keep)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_adapters_read_and_drops_the_rest() {
        let json = br#"{"ref":"refs/heads/main","repository":{"full_name":"a/b","hooks_url":"x","owner":{"login":"a"},
            "links":{"clone":[{"href":"h"}]}},"sender":{"login":"me","avatar_url":"y"},"commits":[{"id":"1","added":["f"]}],
            "n":1.5,"t":true,"z":null,"neg":-3}"#;
        let v = parse(json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ref":"refs/heads/main","repository":{"full_name":"a/b","links":{"clone":[{"href":"h"}]}},
                "sender":{"login":"me"},"commits":[{"id":"1","added":["f"]}],"n":1.5,"t":true,"z":null,"neg":-3})
        );
        assert!(parse(br#"{"repository":{"hooks_url":"x",}}"#).is_err(), "skipped parts are still validated");
        assert!(parse(br#"{"a":1} x"#).is_err(), "trailing bytes");
    }
}
