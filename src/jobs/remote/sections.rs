//! The pieces of a parallel rollout: each host's section of the log, and its runs at once.

use std::path::PathBuf;

use super::super::job_log::Log;
use super::ssh::nonce;
use crate::secrets::mask::Mask;

/// A host's section of a parallel rollout: a log of its own in a temporary file (stamped and
/// masked as the job's log is), removed when dropped.
pub(super) struct Section {
    pub(super) log: Log,
    path: PathBuf,
}

impl Section {
    pub(super) fn new(job: i64, host: &str, mask: &Mask) -> Section {
        let path = std::env::temp_dir().join(format!(
            "wh-automata-section-{}-{job}-{host}-{}",
            std::process::id(),
            nonce()
        ));
        let mut log = Log::create(&path, u64::MAX).unwrap_or_else(|_| Log::new(None, u64::MAX));
        log.mask(mask.clone());
        Section { log, path }
    }

    /// What it holds, written out.
    pub(super) fn text(mut self) -> Vec<u8> {
        // The log flushes what its masking holds when dropped.
        drop(std::mem::replace(&mut self.log, Log::new(None, u64::MAX)));
        std::fs::read(&self.path).unwrap_or_default()
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every future of `futures`, run at once; their outputs in order.
pub(super) async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
