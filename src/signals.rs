//! The stop signals: SIGTERM (systemd, `kill`) and SIGINT (Ctrl-C). The daemon stops on the
//! first and stops waiting for running jobs on the second; a foreground manual run cancels its
//! job on either.
//!
//! The daemon listens from its very start ([`count_stops`], before it says it is ready): a
//! signal that came before anyone listened would otherwise kill it outright, or be missed.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info};

/// Starts counting SIGTERM and SIGINT: the receiver holds how many came so far. Call it inside
/// the runtime, before anything that a signal should stop cleanly.
pub fn count_stops() -> std::io::Result<watch::Receiver<usize>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            info!("{name}: stopping");
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

/// Resolves on SIGTERM or SIGINT, with the signal's name. Never resolves if the handlers
/// cannot be installed (which is logged).
pub async fn stop_signal() -> &'static str {
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
