//! `wh-automata-trigger`: run an entry by hand, list jobs, print a job's log, explain a saved delivery.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ExitCode::from(wh_automata::trigger::main(wh_automata::cli::TriggerArgs::parse()))
}
