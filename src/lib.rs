//! wh-automata: a rule-driven webhook automation engine.
//!
//! A git host calls the daemon on a push; the request travels top to bottom through these parts:
//!
//! - [`server`]: the HTTP front (limits, routes, answers);
//! - [`providers`]: one adapter per git host: detect it, check the signature over the raw
//!   bytes, normalise the payload into an [`event::Event`];
//! - [`matcher`]: which entries of the settings fit an event, and why the others do not;
//! - [`store`]: the durable job record (SQLite) and job logs;
//! - [`queue`]: the bounded queue and the worker pool (one job per entry at a time, newest wins);
//! - [`runner`]: an entry's actions run with `sh -c`: environment, timeout, log;
//! - [`settings`]: the settings file, read in two phases (raw, then validated and compiled);
//! - [`reload`]: the file watcher that swaps in new settings when they are valid;
//! - [`control`]: the owner-only Unix socket through which `wh-automata-trigger` queues manual runs;
//! - [`trigger`]: `wh-automata-trigger`: manual runs, job lists and logs, explaining a saved delivery;
//! - [`systemd`]: readiness and stopping notices for `Type=notify` services;
//! - [`daemon`]: the glue that starts all of the above and stops it cleanly.
#![forbid(unsafe_code)]

pub mod cli;
pub mod control;
pub mod daemon;
pub mod event;
pub mod matcher;
pub mod providers;
pub mod queue;
pub mod reload;
pub mod runner;
pub mod server;
pub mod settings;
pub mod store;
pub mod systemd;
pub mod trigger;
