//! `wh-automatad`: the daemon, or `--check` to validate settings.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use wh_automata::cli::{DaemonArgs, LogFormat};

fn main() -> ExitCode {
    let args = DaemonArgs::parse();
    if args.check {
        return match wh_automata::settings::load(&args.settings) {
            Ok(settings) => {
                for warning in &settings.warnings {
                    eprintln!("warning: {warning}");
                }
                let machine = wh_automata::preflight::warnings(&settings);
                for warning in &machine {
                    eprintln!("warning: {warning}");
                }
                eprintln!(
                    "{}: ok ({} entries in {} files{})",
                    args.settings.display(),
                    settings.entries.len(),
                    settings.files.len(),
                    match settings.warnings.len() + machine.len() {
                        0 => String::new(),
                        n => format!("; {n} warning(s)"),
                    }
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
    if let Err(message) = init_logging(args.log_format) {
        eprintln!("wh-automatad: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Listening for stop signals comes first: one that came before would kill the daemon.
        let stops = wh_automata::signals::count_stops()?;
        wh_automata::daemon::run(&args.settings, stops, |_| {}).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: text (under journald with priorities and without timestamps, which the
/// journal adds) or JSON lines.
fn init_logging(format: Option<LogFormat>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let text = std::env::var("WH_LOG").unwrap_or_else(|_| "info".to_string());
    wh_automata::cli::check_log_filter(&text).map_err(|why| format!("WH_LOG={text:?}: {why}"))?;
    let filter = EnvFilter::try_new(&text).map_err(|e| format!("WH_LOG={text:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        Some(LogFormat::Json) => builder.json().init(),
        Some(LogFormat::Text) => builder.with_ansi(false).init(),
        None if wh_automata::systemd::logs_to_journal() => {
            // No ANSI escapes anywhere (span fields included): the journal stores text.
            builder.with_ansi(false).event_format(wh_automata::systemd::JournalFormat::default()).init()
        }
        None => builder.with_ansi(false).init(),
    }
    Ok(())
}
