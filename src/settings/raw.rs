//! Phase one: what was typed. Serde structs that refuse unknown keys, one per YAML file (the
//! settings file and every file its `include:` globs name), and the JSON Schema derived from
//! them for editors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

/// A settings file, or a file of rules it includes (which holds `entries:` only).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wh-automata settings")]
pub(super) struct RawFile {
    /// The daemon's own settings (in the main settings file only).
    pub(super) server: Option<RawServer>,
    /// Globs of rule files holding more `entries:`, relative to this file; each must match a file.
    #[serde(default)]
    pub(super) include: Vec<String>,
    /// The entries, by name (unique across all files).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, RawEntry>>")]
    pub(super) entries: Option<serde_yaml::Mapping>,
    /// Named lists of addresses or CIDR networks, for `allow_from` and `trusted_proxies` to name
    /// (`allow_from: [github-hooks]`); in any settings file, names unique across all of them.
    #[serde(default)]
    pub(super) networks: BTreeMap<String, Vec<String>>,
    /// Named notification targets, for entries' `notify:` to name (in the main settings file only).
    #[serde(default)]
    pub(super) notify: BTreeMap<String, RawTarget>,
    /// The job API (`/api/v1/`): its tokens (in the main settings file only). Off without it.
    pub(super) api: Option<super::api::RawApi>,
    /// Machines the entries' actions may run on through OpenSSH, by name, each with its host key
    /// pinned (in the main settings file only).
    #[serde(default)]
    pub(super) hosts: BTreeMap<String, super::hosts::RawHost>,
    /// Named lists of hosts (and of other groups), for entries' `hosts:` to name.
    #[serde(default)]
    pub(super) host_groups: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    /// Address and port to listen on (default 127.0.0.1:8970); put a reverse proxy in front for TLS.
    pub(super) listen: Option<String>,
    /// Route prefix (default /hooks): POST /hooks routes by matchers, POST /hooks/<entry> targets one entry.
    pub(super) path: Option<String>,
    /// Jobs that may run at once (default 2); never two of one entry.
    #[schemars(range(min = 1))]
    pub(super) workers: Option<usize>,
    /// Jobs that may wait (default 100); beyond that the answer is 503 with Retry-After.
    #[schemars(range(min = 1))]
    pub(super) queue: Option<usize>,
    /// How many jobs the job store keeps (default 10000); older finished ones are pruned.
    #[schemars(range(min = 1))]
    pub(super) history: Option<usize>,
    /// The releases of each entry that the job store keeps however old (default 10): what a
    /// rollback can go back to.
    #[schemars(range(min = 1))]
    pub(super) releases_kept: Option<usize>,
    /// Largest request body (default 1 MiB); larger ones get 413 before being read.
    #[schemars(example = &"1 MiB")]
    pub(super) max_body: Option<Quantity>,
    /// Job database and job logs (default ./state), relative to this file.
    pub(super) state_dir: Option<PathBuf>,
    /// Connections served at once (default 256); when all are taken, the oldest one that has not sent a whole request gives its place.
    #[schemars(range(min = 1))]
    pub(super) max_connections: Option<usize>,
    /// Connections served at once from one address (default 32); more from it are closed at once,
    /// so that a flood from one address or a few cannot keep the hosts' deliveries out.
    #[schemars(range(min = 1))]
    pub(super) max_connections_per_address: Option<usize>,
    /// Time a client has to send the body once the headers are in (default 30s).
    #[schemars(example = &"30s")]
    pub(super) body_timeout: Option<Quantity>,
    /// Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For / Forwarded headers
    /// name the client (default: 127.0.0.1 and ::1).
    pub(super) trusted_proxies: Option<Vec<String>>,
    /// Addresses or networks (CIDR) that may send webhooks (default: any); a request from
    /// elsewhere gets 403 before its body is read. The client is the one behind trusted_proxies.
    pub(super) allow_from: Option<Vec<String>>,
    /// Addresses or networks (CIDR) that may read /health and /metrics (default: loopback only,
    /// where a health check, a local Prometheus or the reverse proxy run). The client is the one
    /// behind trusted_proxies.
    pub(super) observe_from: Option<Vec<String>>,
    /// Time a client has to send its request headers (default 10s).
    #[schemars(example = &"10s")]
    pub(super) header_timeout: Option<Quantity>,
    /// Largest job log (default 1 MiB); the rest of the output is dropped.
    pub(super) log_limit: Option<Quantity>,
    /// How long running jobs may go on after SIGTERM before their process groups are killed (default 30s).
    pub(super) shutdown_grace: Option<Quantity>,
    /// The address at which people reach this daemon (https://deploy.example.com): statuses and
    /// messages link to the job at <public_url>/jobs/<id>.
    pub(super) public_url: Option<String>,
    /// A PEM file of certificates trusted besides the system's, for hosts and chat servers
    /// with a private CA (relative to this file).
    pub(super) ca_file: Option<PathBuf>,
    /// How long a status or message that cannot be delivered is tried again (default 24h).
    #[schemars(example = &"24h")]
    pub(super) notify_retry_for: Option<Quantity>,
    /// The sendmail(8) program that email targets use (default /usr/sbin/sendmail).
    pub(super) sendmail: Option<PathBuf>,
}

/// One entry: which events it accepts, how they are authenticated, and the actions they run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    /// Which events run this entry (default: any provider, any repo, any branch, push).
    #[serde(rename = "match", default)]
    pub(super) matcher: RawMatch,
    /// The webhook secret, as set on the git host; `${VAR}` reads the environment. A quoted string.
    #[schemars(with = "Option<String>")]
    pub(super) secret: Option<SecretText>,
    /// A file holding the webhook secret (relative to this file).
    pub(super) secret_file: Option<PathBuf>,
    /// Accept requests without any secret check. Only for tests on a trusted network.
    #[serde(default)]
    pub(super) insecure: bool,
    /// Also accept GitHub's legacy SHA-1 signature (X-Hub-Signature).
    #[serde(default)]
    pub(super) allow_sha1: bool,
    /// Where the actions run (default: the directory of this file).
    pub(super) workdir: Option<PathBuf>,
    /// More environment variables for the actions; `${VAR}` reads the environment.
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    /// Variables of the daemon's environment passed to the actions by name (SSH_AUTH_SOCK, ...).
    #[serde(default)]
    pub(super) inherit_env: Vec<String>,
    /// Addresses or networks (CIDR) that may send this entry's webhooks, besides server.allow_from.
    pub(super) allow_from: Option<Vec<String>>,
    /// Answer `ignored` to a push whose commit is the one this entry last deployed successfully.
    #[serde(default)]
    pub(super) skip_deployed: bool,
    /// A file of KEY=VALUE lines (relative to workdir) added to the actions' environment, read when each job starts; env: wins.
    pub(super) env_file: Option<PathBuf>,
    /// Variables of env_file whose values are secret: written as *** in job logs, pages and
    /// messages (values of 8 characters or more), like the secrets the settings know.
    #[serde(default)]
    pub(super) secret_env: Vec<String>,
    /// The file mode creation mask of the actions, in octal ("0022": files others can read,
    /// for a web server serving what a deploy wrote); default: the daemon's (the shipped
    /// systemd unit sets 0027).
    #[schemars(with = "Option<String>", example = &"0022")]
    pub(super) umask: Option<serde_yaml::Value>,
    /// Time limit for the whole job (default 10m); then its process groups are killed.
    #[schemars(example = &"10m")]
    pub(super) timeout: Option<Quantity>,
    /// Report each job to the commit on the host the event came from (not Gogs: it has no status API).
    pub(super) status: Option<RawStatus>,
    /// The notification targets (names under the top-level `notify:`) told about this entry's
    /// jobs: a list, or `{ to: [...], on: [...], log_tail: 20 }`.
    pub(super) notify: Option<RawNotifyUse>,
    /// Shell commands run in order with `sh -c`; the first failure stops the job.
    #[serde(default)]
    // Read by hand (see `super::actions`) to say which action is wrong and how.
    #[schemars(with = "Option<RawActions>")]
    pub(super) actions: Option<serde_yaml::Value>,
    /// A check run after the actions succeed: the job fails when it does not pass in time.
    pub(super) verify: Option<super::undo::RawVerify>,
    /// `rollback`: when the actions or the verification fail, back to the last release.
    #[schemars(with = "Option<super::undo::RawOnFailure>")]
    pub(super) on_failure: Option<String>,
    /// Ask the remote for the branch's head every so often, and deploy a commit no job of the
    /// entry was ever recorded for (a lost webhook, or no webhook at all).
    pub(super) poll: Option<super::poll::RawPoll>,
    /// The repository `poll:` asks (default: the `origin` of the workdir's git checkout).
    pub(super) remote: Option<String>,
    /// Run the actions on these hosts (names of hosts: or host_groups:) through OpenSSH, one
    /// after the other, instead of here.
    pub(super) hosts: Option<Vec<String>>,
    /// How to deploy to the hosts: max_fail (default 0), wait between hosts.
    pub(super) rollout: Option<super::hosts::RawRollout>,
    /// The commands of a rollback (default: the entry's actions, for the release's commit).
    #[schemars(with = "Option<RawActions>")]
    pub(super) rollback: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    /// The git host (default any).
    #[schemars(with = "Option<crate::event::ProviderName>")]
    pub(super) provider: Option<String>,
    /// owner/name (GitLab: the whole namespace path); a glob (acme/*) is allowed.
    pub(super) repo: Option<String>,
    /// A regular expression on the branch name (^main$).
    pub(super) branch: Option<String>,
    /// A regular expression on the tag name (^v[0-9]+).
    pub(super) tag: Option<String>,
    /// push, tag, delete, pull_request, ci, ping, or a provider's own event name; one or a list (default push).
    pub(super) event: Option<OneOrMany>,
    /// Pull requests: opened, updated, reopened, closed, merged, or a host's own action name; one or a list.
    pub(super) action: Option<OneOrMany>,
    /// CI events: the run's conclusion (success, failure, cancelled, skipped, ...); one or a list.
    pub(super) conclusion: Option<OneOrMany>,
    /// CI events: the workflow (GitLab: pipeline) name, a regular expression.
    pub(super) workflow: Option<String>,
}

/// Where and how an entry's jobs are reported to the commit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    /// The host's API token; `${VAR}` reads the environment. A quoted string.
    #[schemars(with = "Option<String>")]
    pub(super) token: Option<SecretText>,
    /// A file holding the token (relative to this file).
    pub(super) token_file: Option<PathBuf>,
    /// The status's name on the commit (default wh-automata/<entry>).
    pub(super) context: Option<String>,
    /// The host's API (default: the public API of the host the event comes from, for a repository on that public host).
    pub(super) api_url: Option<String>,
    /// GitHub only: report through the Deployments API, to this environment.
    pub(super) deployment: Option<String>,
}

/// An entry's `notify:`: target names, or a rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum RawNotifyUse {
    Names(Vec<String>),
    Rule(RawNotifyRule),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifyRule {
    /// Names of targets under the top-level `notify:`.
    pub(super) to: Vec<String>,
    /// When to tell them (default failed, timed_out, recovered): failed, timed_out, recovered, succeeded, started, cancelled.
    pub(super) on: Option<Vec<String>>,
    /// Lines of the failing action's log in a message (default 20; 0 sends none).
    pub(super) log_tail: Option<usize>,
}

/// One notification target: exactly one of its kinds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    /// A Slack incoming webhook URL (Mattermost and Rocket.Chat take the same).
    pub(super) slack: Option<String>,
    /// A Discord webhook URL.
    pub(super) discord: Option<String>,
    /// An ntfy topic URL (https://ntfy.sh/my-topic).
    pub(super) ntfy: Option<String>,
    /// Addresses mailed through the local sendmail(8); one or a list.
    pub(super) email: Option<OneOrMany>,
    /// A Matrix room.
    pub(super) matrix: Option<RawMatrix>,
    /// A URL that gets each message as JSON, signed like GitHub's deliveries when `secret` is set.
    pub(super) webhook: Option<String>,
    /// A command run with `sh -c`; the job's outcome is in its environment (WH_STATE, ...).
    pub(super) command: Option<String>,
    /// webhook: the key of the X-Hub-Signature-256 header. A quoted string.
    #[schemars(with = "Option<String>")]
    pub(super) secret: Option<SecretText>,
    /// ntfy: an access token. A quoted string.
    #[schemars(with = "Option<String>")]
    pub(super) token: Option<SecretText>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatrix {
    /// The homeserver's URL (https://matrix.example.com).
    pub(super) homeserver: String,
    /// The room's id ("!abc:example.com").
    pub(super) room: String,
    /// The access token of the account that posts. A quoted string.
    #[schemars(with = "String")]
    pub(super) token: SecretText,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

// The shape of `actions:`, for the schema only: the loader reads them by hand (`super::actions`).
/// A shell command, or a list of commands and steps.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum RawActions {
    One(String),
    Many(Vec<RawAction>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum RawAction {
    /// A shell command.
    Command(String),
    Step(RawStep),
}

/// A shell command that may run only when some files changed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    /// The shell command.
    pub(super) run: String,
    /// Globs of files: the step runs only when the event changed a matching file (or did not list its files).
    #[serde(default)]
    pub(super) if_changed: Option<OneOrMany>,
}

/// The JSON Schema of settings and rule files (JSON Schema draft 7, which YAML language
/// servers read), as kept in `settings.schema.json`.
pub fn json_schema() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<RawFile>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

impl OneOrMany {
    pub(super) fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// A duration or a size: text with a unit (`10m`, `1 MiB`), or a bare number (seconds, bytes).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum Quantity {
    Text(String),
    Number(u64),
}

impl Quantity {
    pub(super) fn text(&self) -> String {
        match self {
            Quantity::Text(t) => t.clone(),
            Quantity::Number(n) => n.to_string(),
        }
    }
}

/// The text of `secret:`. Anything but a string is refused without repeating it: an unquoted
/// `8472619305` would otherwise be quoted back in the error, in `/health` and in the log.
#[derive(Debug)]
pub(super) struct SecretText(pub(super) String);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretText, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = SecretText;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a quoted string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
        }
        // Whatever else it is, the message says what to do, never what was written.
        d.deserialize_str(Text).map_err(|_| {
            serde::de::Error::custom(
                "a secret or token must be a string: put it in quotes (its value is not repeated here)",
            )
        })
    }
}
