//! Telling people: what each change of a job sends ([`policy`]), the outbox's sender and its
//! schedule per destination, commit statuses on the host ([`status`]), notifications
//! ([`notify`]) and their test by hand, all through the one HTTPS client ([`outbound`]).

pub mod notify;
pub mod notify_test;
pub mod outbound;
pub mod policy;
pub mod schedule;
pub mod status;
