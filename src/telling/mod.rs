//! Telling people: what each change of a job sends ([`policy`]), the outbox's sender and its
//! schedule per destination, commit statuses on the host ([`status`]), notifications
//! ([`notify`]) and their test by hand, all through the one HTTP client, `crate::outbound`.

pub mod notify;
pub mod notify_test;
pub mod policy;
pub mod schedule;
pub mod status;
