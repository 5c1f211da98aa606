//! `api:`: who may use the job API (`/api/v1/`): named tokens, each with a scope (`read` <
//! `run` < `admin`), and the addresses it may come from. Without `api:` the API is off.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::raw::SecretText;
use super::Secret;
use crate::allow::Nets;

/// `api:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    /// The tokens that may use the API, sent as `Authorization: Bearer <token>`.
    pub(super) tokens: Vec<RawToken>,
    /// Addresses or networks (CIDR) the API may be used from (default: any; the token decides).
    pub(super) allow_from: Option<Vec<String>>,
    /// The most log streams and `?wait=` requests at once (default 64). They have this room of
    /// their own: they never take the places of server.max_connections that deliveries need.
    pub(super) max_waiting: Option<usize>,
}

/// One token as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    /// Its name, in the log (never the token).
    pub(super) name: String,
    /// The token, `${VAR}` or `${credential:ID}`; at least 16 characters.
    #[schemars(with = "Option<String>")]
    pub(super) token: Option<SecretText>,
    /// A file holding the token (relative to the settings file).
    pub(super) token_file: Option<PathBuf>,
    /// read (see), run (also run, roll back), admin (also freeze); default read.
    pub(super) scope: Option<String>,
}

/// What a token may do; each scope may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Run,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::Admin => "admin",
        }
    }
}

/// A token of the API.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub secret: Secret,
    pub scope: Scope,
}

/// The API's settings.
#[derive(Debug, Clone)]
pub struct Api {
    pub tokens: Vec<Token>,
    pub allow_from: Option<Nets>,
    /// The most long requests (log streams, `?wait=`) at once.
    pub max_waiting: usize,
}

/// Reads an address list (names of `networks:` lists allowed).
pub(super) type NetworksOf<'a> = dyn Fn(&[String]) -> Result<Option<Nets>, Vec<String>> + 'a;

/// Long requests at once when the settings do not say.
const DEFAULT_WAITING: usize = 64;

/// The shortest token taken: a guessable one would open the API.
const MIN_TOKEN: usize = 16;

/// Compiles `api:`; each problem goes to `problems`.
pub(super) fn api(
    raw: &RawApi,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    networks: &NetworksOf,
    problems: &mut Vec<String>,
) -> Option<Api> {
    let before = problems.len();
    if raw.tokens.is_empty() {
        problems
            .push("api.tokens: give at least one token (or leave `api:` out: the API is then off)".into());
    }
    let mut tokens: Vec<Token> = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let what = format!("api.tokens[{i}] ({:?})", t.name.chars().take(64).collect::<String>());
        if t.name.trim().is_empty() || t.name.chars().any(char::is_control) {
            problems.push(format!("api.tokens[{i}]: a name of one line is needed"));
        }
        if tokens.iter().any(|o| o.name == t.name) {
            problems.push(format!("{what}: the name is given twice"));
        }
        let scope = match t.scope.as_deref() {
            None | Some("read") => Scope::Read,
            Some("run") => Scope::Run,
            Some("admin") => Scope::Admin,
            Some(other) => {
                problems.push(format!("{what}: scope {other:?} is not one of: read, run, admin"));
                Scope::Read
            }
        };
        let value = match (&t.token, &t.token_file) {
            (Some(_), Some(_)) => Err("give either `token` or `token_file`, not both".to_string()),
            (Some(text), None) => super::expand::expand(&text.0, env),
            (None, Some(path)) => {
                let path = dir.join(path);
                std::fs::read_to_string(&path)
                    .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("token_file {}: {e}", path.display()))
            }
            (None, None) => Err("no token: set `token` or `token_file`".to_string()),
        };
        match value {
            Ok(v) if v.chars().count() < MIN_TOKEN => {
                problems.push(format!("{what}: the token is shorter than {MIN_TOKEN} characters"))
            }
            Ok(v) if v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                problems.push(format!("{what}: the token holds blanks or control characters"))
            }
            Ok(v) => {
                if tokens.iter().any(|o| o.secret.expose_str() == v) {
                    problems.push(format!("{what}: the same token as another one"));
                }
                tokens.push(Token { name: t.name.clone(), secret: Secret(v), scope });
            }
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    let allow_from = match &raw.allow_from {
        None => None,
        Some(list) => networks(list).unwrap_or_else(|p| {
            problems.extend(p.into_iter().map(|p| format!("api.allow_from: {p}")));
            None
        }),
    };
    let max_waiting = raw.max_waiting.unwrap_or(DEFAULT_WAITING);
    if !(1..=10_000).contains(&max_waiting) {
        problems.push(format!("api.max_waiting: {max_waiting} is not within 1 to 10000"));
    }
    (problems.len() == before).then_some(Api { tokens, allow_from, max_waiting })
}
