//! The daemon's open connections: a fixed number of places, a share of them per client address,
//! and, when every place is taken, the new connection takes the place of the oldest one that has
//! not delivered a request yet (idle, or still sending its headers or body). So neither one
//! address nor many can keep a host's delivery waiting behind slow or idle connections, and a
//! connection whose request is being handled is never cut.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::Notify;

/// Where a connection is.
const IDLE: u8 = 0;
const RECEIVING: u8 = 1;
const HANDLING: u8 = 2;

/// The table of open connections.
pub struct Connections {
    cap: usize,
    per_address: usize,
    inner: Mutex<Inner>,
    freed: Notify,
}

#[derive(Default)]
struct Inner {
    open: HashMap<u64, Arc<Conn>>,
    by_address: HashMap<IpAddr, usize>,
    next: u64,
}

/// One open connection.
pub struct Conn {
    id: u64,
    ip: IpAddr,
    since: Instant,
    stage: AtomicU8,
    evict: Notify,
    table: Weak<Connections>,
    left: AtomicBool,
}

/// A connection's place in the table; given back when dropped.
pub struct Slot {
    of: Arc<Connections>,
    pub conn: Arc<Conn>,
}

/// Whether a new connection may stay.
pub enum Admission {
    Admitted(Slot),
    /// Its address has its share: closed at once.
    AddressFull,
    /// Every place is taken.
    Full,
}

impl Connections {
    pub fn new(cap: usize, per_address: usize) -> Arc<Connections> {
        Arc::new(Connections { cap, per_address, inner: Mutex::new(Inner::default()), freed: Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, if there is one. A trusted proxy (`shared`: every
    /// client behind it comes from its address, and it limits them itself) has no share of its
    /// own: only the total cap applies to it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, shared: bool) -> Admission {
        let mut inner = self.lock();
        if !shared && inner.by_address.get(&ip).copied().unwrap_or(0) >= self.per_address {
            return Admission::AddressFull;
        }
        if inner.open.len() >= self.cap {
            return Admission::Full;
        }
        inner.next += 1;
        let conn = Arc::new(Conn {
            id: inner.next,
            ip,
            since: Instant::now(),
            stage: AtomicU8::new(IDLE),
            evict: Notify::new(),
            table: Arc::downgrade(self),
            left: AtomicBool::new(false),
        });
        inner.open.insert(conn.id, conn.clone());
        *inner.by_address.entry(ip).or_insert(0) += 1;
        Admission::Admitted(Slot { of: self.clone(), conn })
    }

    /// Asks the oldest connection that has no request being handled to close: idle ones
    /// first, then those still sending. `false` when every connection is handling a request.
    pub fn evict_slowest(&self) -> bool {
        let inner = self.lock();
        let victim = inner
            .open
            .values()
            .filter(|c| c.stage.load(Ordering::Relaxed) != HANDLING)
            .min_by_key(|c| (c.stage.load(Ordering::Relaxed), c.since));
        match victim {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Gives `conn`'s place back while it stays open (a request that lasts, which has a room
    /// of its own); `false` when it had no place any more.
    fn release(&self, conn: &Conn) -> bool {
        let mut inner = self.lock();
        if inner.open.remove(&conn.id).is_none() {
            return false;
        }
        if let Some(n) = inner.by_address.get_mut(&conn.ip) {
            *n -= 1;
            if *n == 0 {
                inner.by_address.remove(&conn.ip);
            }
        }
        drop(inner);
        self.freed.notify_waiters();
        self.freed.notify_one();
        true
    }

    /// Resolves when a place is given back.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    /// How many connections are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Conn {
    /// A request's headers are in; its body is on the way.
    pub fn receiving(&self) {
        self.stage.store(RECEIVING, Ordering::Relaxed);
    }

    /// The request is whole and being handled: this connection is never evicted now.
    pub fn handling(&self) {
        self.stage.store(HANDLING, Ordering::Relaxed);
    }

    /// The answer is out; the connection waits for another request.
    pub fn idle(&self) {
        self.stage.store(IDLE, Ordering::Relaxed);
    }

    /// Leaves the table for good: the connection serves a request that lasts (a log stream, a
    /// `?wait=`), counted in a room of its own, and closes when it is answered. It no longer
    /// counts against the places that deliveries need, nor is it evicted for them.
    pub fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        if let Some(table) = self.table.upgrade() {
            table.release(self);
        }
    }

    /// Whether it left the table ([`Conn::leave`]).
    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::Relaxed)
    }

    /// Resolves when the table wants this connection's place.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.of.release(&self.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admitted(a: Admission) -> Slot {
        match a {
            Admission::Admitted(p) => p,
            _ => panic!("not admitted"),
        }
    }

    #[tokio::test]
    async fn shares_places_and_evicts_the_oldest_not_handling() {
        let table = Connections::new(3, 2);
        let a1 = admitted(table.admit(ip("10.0.0.1"), false));
        let a2 = admitted(table.admit(ip("10.0.0.1"), false));
        assert!(matches!(table.admit(ip("10.0.0.1"), false), Admission::AddressFull));
        let b1 = admitted(table.admit(ip("10.0.0.2"), false));
        assert!(matches!(table.admit(ip("10.0.0.3"), false), Admission::Full));
        // a1 is handling a request, a2 is receiving, b1 is idle: b1 goes first (idle before
        // receiving), though a2 is older.
        a1.conn.handling();
        a2.conn.receiving();
        assert!(table.evict_slowest());
        tokio::time::timeout(std::time::Duration::from_secs(1), b1.conn.evicted()).await.unwrap();
        drop(b1);
        let c1 = admitted(table.admit(ip("10.0.0.3"), false));
        c1.conn.handling();
        assert!(table.evict_slowest());
        tokio::time::timeout(std::time::Duration::from_secs(1), a2.conn.evicted()).await.unwrap();
        drop(a2);
        let d1 = admitted(table.admit(ip("10.0.0.4"), false));
        d1.conn.handling();
        assert!(!table.evict_slowest(), "every connection is handling a request");
        assert_eq!(table.len(), 3);
        drop((a1, c1, d1));
        assert!(table.is_empty());
        // A proxy's address has no share, only the total cap.
        let proxied: Vec<Slot> = (0..3).map(|_| admitted(table.admit(ip("127.0.0.1"), true))).collect();
        assert!(matches!(table.admit(ip("127.0.0.1"), true), Admission::Full));
        drop(proxied);
    }

    #[test]
    fn a_connection_that_left_frees_its_place_once() {
        let table = Connections::new(2, 1);
        let a = admitted(table.admit(ip("10.0.0.1"), false));
        let b = admitted(table.admit(ip("10.0.0.2"), false));
        assert!(matches!(table.admit(ip("10.0.0.3"), false), Admission::Full));
        a.conn.leave();
        assert_eq!(table.len(), 1);
        // Its address may connect again, and its place is taken by another.
        let a2 = admitted(table.admit(ip("10.0.0.1"), false));
        assert!(matches!(table.admit(ip("10.0.0.3"), false), Admission::Full));
        // Dropping the one that left gives nothing back twice.
        drop(a);
        assert_eq!(table.len(), 2);
        assert!(matches!(table.admit(ip("10.0.0.1"), false), Admission::AddressFull));
        drop((b, a2));
        assert!(table.is_empty());
    }
}
