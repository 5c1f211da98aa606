//! Jobs: the bounded queue (newest event of an entry and ref wins), the worker pool (one job
//! per entry at a time), the runner (an entry's actions with `sh -c`, here or on its hosts over OpenSSH), what a job writes (its
//! log, with the secrets the settings know masked; its action records), and the entry's lock
//! across processes.

pub mod action_records;
pub mod cancel;
pub mod end;
pub mod entry_lock;
pub mod job_log;
pub mod queue;
mod remote;
pub mod runner;
pub mod verify;
