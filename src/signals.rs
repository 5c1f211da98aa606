//! The stop signals: SIGTERM (systemd, `kill`) and SIGINT (Ctrl-C). The daemon stops on the
//! first and stops waiting for running jobs on the second; a foreground manual run cancels its
//! job on either.

use tracing::error;

/// Resolves on SIGTERM or SIGINT, with the signal's name. Never resolves if the handlers
/// cannot be installed (which is logged).
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
