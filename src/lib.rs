//! wh-automata: a rule-driven webhook automation engine. A git host calls the daemon on a
//! push; the daemon decides which entries of its settings it is for, records their jobs and
//! runs each entry's actions in the background, one job per entry at a time.
//!
//! A webhook's path, top to bottom (see `ARCHITECTURE.md` for the drawing):
//! [`server`] (sockets, limits, routes) hands the received delivery once to [`intake`]
//! (admit, authenticate through the host's adapter in [`providers`], match, `skip_deployed`),
//! records the jobs in [`store`] and queues them ([`app`], [`jobs::queue`]); the [`worker`]
//! pool runs them with [`jobs::runner`]; each change of a job writes what it sends to the
//! outbox in the same transaction ([`telling::policy`]), which the [`outbox_sender`] delivers
//! ([`telling::status`], [`telling::notify`]).
//!
//! The layers, each importing only from the ones below it:
//!
//! 1. the binaries' entry points: [`daemon`] (wires the parts and stops them in order),
//!    [`trigger`] (`wh-automata-trigger`: one file per mode) and [`preflight`];
//! 2. the ways in and the runners: [`server`] (one module per endpoint), [`control`] (the
//!    owner-only socket of manual runs), [`reload`] (the settings watcher), [`worker`],
//!    [`outbox_sender`];
//! 3. [`app`]: the shared state (settings snapshot, store, queue, [`metrics`]);
//! 4. [`telling`]: what a job's change sends, and how (statuses, notifications, HTTPS);
//! 5. [`intake`]: what a delivery asks for, without a socket (also `--explain`'s);
//! 6. [`jobs`]: queue, runner, job log, action records, the entry's lock;
//! 7. [`store`]: the durable job record (SQLite), job logs, the outbox;
//! 8. [`settings`] (read in two phases, raw then compiled), above [`matcher`], above
//!    [`providers`] (one adapter per git host: every fact about a host is there), above
//!    [`secrets`];
//! 9. the ground: [`event`] (the one normalised event, and the one enum of host names),
//!    [`allow`], [`admission`], [`forwarded`], [`printable`], [`metrics_format`],
//!    [`refusal_log`] and [`warn_limit`] (a count or one warning in place of a log line per
//!    request), [`run_as`], [`env_file`], [`signals`], [`systemd`], [`cli`].
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
pub(crate) mod intake;
pub(crate) mod jobs;
pub(crate) mod matcher;
pub(crate) mod metrics;
pub(crate) mod metrics_format;
pub(crate) mod outbound;
pub(crate) mod outbox_sender;
pub(crate) mod poller;
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
