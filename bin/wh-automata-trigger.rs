//! `wh-automata-trigger`: run an entry by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "wh-automata-trigger",
    version,
    about = "Run an entry by hand, as if a webhook had been received"
)]
struct Args {
    /// The settings file (YAML).
    settings: PathBuf,
    /// The entry to run.
    entry: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "wh-automata-trigger: running {} from {} by hand is not available in this version yet",
        args.entry,
        args.settings.display()
    );
    ExitCode::from(2)
}
