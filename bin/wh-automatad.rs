//! `wh-automatad`: the daemon, or `--check` to validate settings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(name = "wh-automatad", version, about = "Serve git webhooks and run the matching entries' actions")]
struct Args {
    /// The settings file (YAML).
    settings: PathBuf,
    /// Validate the settings and every included file, print every problem, and exit.
    #[arg(long)]
    check: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match wh_automata::settings::load(&args.settings) {
            Ok(settings) => {
                eprintln!(
                    "{}: ok ({} entries in {} files)",
                    args.settings.display(),
                    settings.entries.len(),
                    settings.files.len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("{}: {} problem(s)", args.settings.display(), problems.0.len());
                ExitCode::FAILURE
            }
        };
    }
    let _ = args.log_format;
    eprintln!("wh-automatad: serving is not available in this version yet; use --check");
    ExitCode::from(2)
}
