//! The daemon: wires the parts together and stops them in order.
//!
//! Start: load the settings, open the shared state ([`App`]: the store and the queue), bind the
//! control socket (refusing a second daemon on the same state), queue the jobs of the previous
//! run, start the workers, the control socket, the watcher, and last the HTTP listener, then
//! tell systemd it is ready. [`run`] takes the count of stop signals as a channel, so tests
//! and the binary decide what stops it.
//!
//! Stop: stop accepting, let running jobs finish within `shutdown_grace` (a second stop signal
//! cuts it short), then kill their process groups; waiting jobs stay recorded for the next start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::app::App;
use crate::worker;
use crate::{control, reload, server, settings, systemd};

/// Runs the daemon until `stops` counts one stop (a second one kills the running jobs without
/// waiting for the grace period); see [`crate::signals::count_stops`]. `on_listening` is told the
/// bound address.
pub async fn run(
    settings_path: &Path,
    mut stops: watch::Receiver<usize>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let settings = settings::load(settings_path).map_err(|p| anyhow::anyhow!("{p}"))?;
    let listen = settings.server.listen.clone();
    let workers = settings.server.workers;
    let grace = settings.server.shutdown_grace;
    let state_dir = settings.server.state_dir.clone();
    let app = Arc::new(
        App::new(settings)
            .with_context(|| format!("cannot open the job store in {}", state_dir.display()))?,
    );
    let client = crate::outbound::Outbound::new(app.settings().server.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot set up outbound HTTPS: {e}"))?;
    let control_socket = control::bind(&state_dir)?;
    let recovered = app.recover()?;
    // What waited in the outbox is tried again now, whatever pause its failures had reached
    // (the pauses are kept in memory, on the monotonic clock).
    let backlog = app.store.outbox_backlog()?;
    if backlog.pending > 0 {
        info!(items = backlog.pending, "undelivered statuses and messages are tried again");
    }
    if recovered > 0 {
        info!(jobs = recovered, "picked up jobs left unfinished by the previous run");
    }

    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut pool = worker::spawn(&app, workers, worker::actions(), &cancel_rx);
    let (stop_control, control_stop) = watch::channel(false);
    let control = tokio::spawn(control::serve(app.clone(), control_socket, control_stop));
    let _watcher = reload::watch(app.clone())?;
    let refusals = tokio::spawn(crate::refusal_log::report());
    let (stop_outbox, outbox_stop) = watch::channel(false);
    let outbox = tokio::spawn(crate::outbox_sender::deliver(app.clone(), client, outbox_stop));
    let (stop_polling, polling_stop) = watch::channel(false);
    let poller = tokio::spawn(crate::poller::run(app.clone(), polling_stop));
    let listener = TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, "listening");
    on_listening(addr);
    systemd::notify(&format!("READY=1\nSTATUS=listening on {addr}"));

    // The listener stays open while running jobs finish: a webhook that arrives meanwhile is
    // recorded (202) and runs at the next start, rather than meeting a refused connection.
    let (stop_serving, serving) = watch::channel(false);
    let server = tokio::spawn(server::serve(app.clone(), listener, stopped(serving)));
    let _ = stops.wait_for(|n| *n >= 1).await;
    let _ = stop_polling.send(true);
    let _ = poller.await;
    app.queue.close();
    let depth = app.queue.depth();
    let (waiting, running) = (depth.waiting + depth.parked, depth.running);
    systemd::notify(&format!("STOPPING=1\nSTATUS=stopping: {running} running job(s) finishing"));
    info!(running, waiting, grace = %humantime::format_duration(grace), "stopping: waiting for running jobs");
    drain(&mut pool, grace, &cancel_tx, stops).await;
    let _ = stop_serving.send(true);
    let _ = server.await;
    let _ = stop_control.send(true);
    let _ = control.await;
    // The statuses of the jobs that just ended get a moment to go out; the rest wait in the
    // outbox for the next start.
    let _ = stop_outbox.send(true);
    let _ = outbox.await;
    refusals.abort();
    if let Some(line) = crate::refusal_log::take() {
        info!("requests not run since the last count: {line}");
    }
    info!("stopped; waiting and interrupted jobs stay recorded for the next start");
    Ok(())
}

/// Resolves when `flag` turns true (or its sender is gone).
async fn stopped(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// Lets the running jobs finish within `grace`; then, or on a second stop signal (Ctrl-C
/// twice), kills their process groups and waits for the workers to record that.
async fn drain(
    pool: &mut JoinSet<()>,
    grace: std::time::Duration,
    cancel: &watch::Sender<bool>,
    mut stops: watch::Receiver<usize>,
) {
    let drained = tokio::select! {
        _ = async { while pool.join_next().await.is_some() {} } => true,
        _ = tokio::time::sleep(grace) => {
            warn!("grace period over: killing the running jobs' process groups");
            false
        }
        _ = stops.wait_for(|n| *n >= 2) => {
            warn!("second stop signal: killing the running jobs' process groups");
            false
        }
    };
    if !drained {
        let _ = cancel.send(true);
        while pool.join_next().await.is_some() {}
    }
}
