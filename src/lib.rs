//! wh-automata: a rule-driven webhook automation engine.
//!
//! A git host calls the daemon on a push; the request travels top to bottom through these parts:
//!
//! - [`providers`]: one adapter per git host: detect it, check the signature over the raw
//!   bytes, normalise the payload into an [`event::Event`];
//! - [`matcher`]: which entries of the settings fit an event, and why the others do not;
//! - [`settings`]: the settings file, read in two phases (raw, then validated and compiled).
#![forbid(unsafe_code)]

pub mod event;
pub mod matcher;
pub mod providers;
pub mod settings;
