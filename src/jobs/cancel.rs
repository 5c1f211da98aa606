//! Cancelling a running job by request (the API's `POST jobs/{id}/cancel`): the worker registers
//! each job it runs; a request turns the job's own cancel signal on, the runner kills the job's
//! process groups, and the job is recorded `cancelled` with the request's reason (a stop of the
//! daemon, by contrast, puts the job back in the queue).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// A running job's cancel signal and, once asked, why.
type Signal = (watch::Sender<bool>, Option<String>);

/// The jobs running now, each with its cancel signal.
#[derive(Default)]
pub struct Cancels {
    running: Mutex<HashMap<i64, Signal>>,
}

impl Cancels {
    /// Registers job `id`; its cancel signal (also turned on by `stop`, the daemon's).
    pub fn register(
        &self,
        id: i64,
        mut stop: watch::Receiver<bool>,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let forward = tx.clone();
        let relay = tokio::spawn(async move {
            if stop.wait_for(|s| *s).await.is_ok() {
                let _ = forward.send(true);
            }
        });
        self.lock().insert(id, (tx, None));
        (rx, relay)
    }

    /// Asks running job `id` to stop, for `why`; `false` when it is not running here.
    pub fn request(&self, id: i64, why: &str) -> bool {
        let mut running = self.lock();
        let Some((tx, reason)) = running.get_mut(&id) else { return false };
        reason.get_or_insert_with(|| why.to_string());
        let _ = tx.send(true);
        true
    }

    /// Forgets job `id`; why it was asked to stop, if it was.
    pub fn done(&self, id: i64) -> Option<String> {
        self.lock().remove(&id).and_then(|(_, why)| why)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Signal>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}
