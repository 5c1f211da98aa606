//! wh-automata: a rule-driven webhook automation engine.
//!
//! A git host calls the daemon on a push; the request travels top to bottom through these parts:
//!
//! From the top (what the binaries call) down; each imports only from below it:
//!
//! - [`daemon`]: wires the parts below together and stops them in order;
//! - [`trigger`]: `wh-automata-trigger`: manual runs, job lists and logs, explaining a saved delivery;
//! - [`server`]: the HTTP front (limits, routes, answers): receive, detect, authenticate,
//!   normalise, match, record, answer; one module per endpoint (`/hooks`, `/health`,
//!   `/metrics`, [`server::jobs`]), each answering only whom may read it;
//! - [`control`]: the owner-only Unix socket through which `wh-automata-trigger` queues manual runs;
//! - [`reload`]: the file watcher that swaps in new settings when they are valid;
//! - [`outbox`]: the sender of what jobs' changes wrote to the outbox (each destination on
//!   its own [`outbox_schedule`]): [`status`] (the commit
//!   on the host) and [`notify`] (chat, mail, a command), through [`outbound`] (the one HTTPS
//!   client); [`notify_test`] sends the same by hand;
//! - [`worker`]: the worker pool: one job per entry at a time, each job's end recorded once;
//!   [`entry_lock`] holds an entry across processes (foreground runs, leftovers of a killed run);
//! - [`app`]: the shared state: settings snapshot, load status, store, queue, recording jobs,
//!   [`metrics`] (written in either text format by [`metrics_format`]); [`report`] decides what
//!   each change of a job sends;
//! - [`queue`]: the bounded queue (newest event of an entry and ref wins);
//! - [`store`]: the durable job record (SQLite, versioned schema), job logs and the outbox;
//! - [`runner`]: an entry's actions run with `sh -c`: environment, timeout; their output in the
//!   [`job_log`], with the secrets the settings know written as `***` by [`mask`];
//!   [`printable`] escapes what reaches a terminal or a page;
//! - [`providers`]: one adapter per git host: detect it, check the signature over the raw
//!   bytes, normalise the payload into an [`event::Event`];
//! - [`settings`]: the settings file, read in two phases (raw, then validated and compiled);
//! - [`matcher`]: which entries fit an event, and why the others do not;
//! - [`event`]: the one normalised event;
//! - [`signals`], [`systemd`], [`cli`]: stop signals, service manager notices, command lines;
//!   [`tally`] and [`throttle`]: counts and warnings in place of a log line per request.
#![forbid(unsafe_code)]

pub(crate) mod admission;
pub(crate) mod allow;
pub(crate) mod app;
pub mod cli;
pub(crate) mod control;
pub mod daemon;
pub(crate) mod env_file;
pub mod event;
pub(crate) mod forwarded;
pub(crate) mod jobs;
pub(crate) mod intake;
pub(crate) mod matcher;
pub(crate) mod metrics;
pub(crate) mod metrics_format;
pub(crate) mod outbox_sender;
pub mod preflight;
pub(crate) mod printable;
pub mod providers;
pub(crate) mod refusal_log;
pub mod reload;
pub(crate) mod run_as;
pub(crate) mod secrets;
pub(crate) mod server;
pub mod settings;
pub mod signals;
pub mod store;
pub mod systemd;
pub(crate) mod telling;
pub mod trigger;
pub(crate) mod warn_limit;
pub(crate) mod worker;
