//! Connections that have not made an authenticated request yet: at most
//! `limits.maxUnauthenticated` of them. When one more comes, the oldest is closed, so a client
//! holding thousands of sockets open (each reopened as it is closed) never takes the places
//! of authenticated sessions and health checks: a new connection always gets in, and is
//! served if it sends its request before a few thousand newer ones arrive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The unauthenticated connections, oldest first.
#[derive(Debug)]
pub struct Pending {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    waiting: BTreeMap<u64, CancellationToken>,
}

/// A connection's place among the unauthenticated ones, until it authenticates or ends.
#[derive(Debug)]
pub struct Ticket {
    pending: Arc<Pending>,
    id: u64,
    closed: CancellationToken,
}

impl Pending {
    /// At most `cap` (at least 1) unauthenticated connections.
    pub fn new(cap: usize) -> Arc<Pending> {
        Arc::new(Pending {
            cap: cap.max(1),
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection's ticket, and whether the oldest unauthenticated connection was
    /// closed to make room for it.
    pub fn admit(self: &Arc<Self>) -> (Ticket, bool) {
        let mut inner = self.lock();
        let mut evicted = false;
        while inner.waiting.len() >= self.cap {
            if let Some((_, oldest)) = inner.waiting.pop_first() {
                oldest.cancel();
                evicted = true;
            }
        }
        let id = inner.next;
        inner.next += 1;
        let closed = CancellationToken::new();
        inner.waiting.insert(id, closed.clone());
        let ticket = Ticket {
            pending: self.clone(),
            id,
            closed,
        };
        (ticket, evicted)
    }

    /// How many connections wait to authenticate.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Ticket {
    /// Resolves when the connection was closed to make room for newer ones.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    /// The connection made an authenticated request: it is no longer closed for newer ones.
    pub fn authenticated(&self) {
        self.pending.lock().waiting.remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pending.lock().waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_unauthenticated_connection_makes_room() {
        let pending = Pending::new(2);
        let (a, evicted) = pending.admit();
        assert!(!evicted);
        let (b, _) = pending.admit();
        b.authenticated();
        let (c, evicted) = pending.admit();
        assert!(!evicted, "b authenticated: only a and c wait");
        let (_d, evicted) = pending.admit();
        assert!(evicted);
        assert!(a.closed.is_cancelled(), "the oldest goes");
        assert!(!b.closed.is_cancelled() && !c.closed.is_cancelled());
        assert_eq!(pending.waiting(), 2);
        drop(c);
        assert_eq!(pending.waiting(), 1);
    }
}
