//! Integration tests: the real fixture corpus, the real binaries, real processes.

mod access;
mod allow_from;
mod behind_nginx;
mod check;
mod common;
mod corpus;
mod daemon;
mod deliveries;
mod env_file;
mod faults;
mod first_hour;
mod generated;
mod hostile;
mod one_run;
mod outbox;
mod production;
mod readme;
mod replay;
mod reporting;
mod rules;
mod secrets;
mod settings_faults;
mod standin;
mod store_faults;
mod trigger;
mod upgrade;
