//! Client sessions for exactly-once writes: a small pool of server sessions, each
//! carrying at most one write at a time.
//!
//! Why a pool, and one write per session: the state machine keeps the answer to each
//! session's *latest* sequence only. If two writes of one session were in flight and the
//! later one applied first, a retry of the earlier one would be refused as stale, and
//! the client could not tell whether it had applied — exactly-once would be lost. So a
//! session carries one write at a time, and concurrent writes of one [`Client`] each
//! lease their own session from the pool (opening one when none is idle, up to
//! `max_sessions`; beyond that a write waits for a session to come back).
//!
//! [`Client`]: crate::Client

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One server session as the client tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) client_id: u64,
    /// The sequence the next write gets. Sequences only need to increase (the state
    /// machine accepts gaps), so a sequence is consumed as soon as a write takes it.
    pub(crate) next_sequence: u64,
    /// The idle time after which the server expires the session.
    pub(crate) ttl: Duration,
    /// No later than the server's last sight of the session: when the request that
    /// opened it, or its last applied write, was *sent*.
    pub(crate) last_used: Instant,
}

impl Session {
    /// A session just opened by a request sent at `sent`.
    pub(crate) fn opened(client_id: u64, ttl: Duration, sent: Instant) -> Session {
        Session {
            client_id,
            next_sequence: 1,
            ttl,
            last_used: sent,
        }
    }

    /// Takes the next sequence number.
    pub(crate) fn take_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// True when a write starting `now` and retried for up to `reserve` cannot find the
    /// session expired for idleness. Measured on this client's clock from a moment no
    /// later than the server's, so it errs on the side of opening a new session.
    pub(crate) fn fresh_for(&self, now: Instant, reserve: Duration) -> bool {
        now.saturating_duration_since(self.last_used) + reserve < self.ttl
    }
}

/// The TTL to ask the server for: the configured one, but at least three request
/// timeouts (a write may be retried for a whole timeout, and an idle session must
/// survive that), and at most the server's limit of one hour.
pub(crate) fn requested_ttl(configured: Duration, request_timeout: Duration) -> Duration {
    const SERVER_MAX: Duration = Duration::from_secs(3600);
    configured
        .max(request_timeout.saturating_mul(3))
        .min(SERVER_MAX)
}

/// The sessions of one client.
#[derive(Debug)]
pub(crate) struct SessionPool {
    /// Sessions not carrying a write, most recently used last.
    idle: Mutex<Vec<Session>>,
    /// One permit per session that may exist: bounds the sessions (and so the writes
    /// in flight) of this client.
    permits: Arc<Semaphore>,
}

impl SessionPool {
    pub(crate) fn new(max_sessions: usize) -> SessionPool {
        SessionPool {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_sessions.max(1))),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        // Every change to the list is one push or pop: a panic elsewhere cannot leave
        // it half-done, so a poisoned lock is still usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (until `deadline`) for the right to carry one write; `None` when the
    /// deadline passed first.
    pub(crate) async fn permit(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let acquire = self.permits.clone().acquire_owned();
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Some(permit),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// The most recently used idle session that is still fresh for `reserve`; stale
    /// ones are dropped (the server expires them by itself).
    pub(crate) fn take_fresh(&self, now: Instant, reserve: Duration) -> Option<Session> {
        let mut idle = self.idle();
        while let Some(session) = idle.pop() {
            if session.fresh_for(now, reserve) {
                return Some(session);
            }
        }
        None
    }

    /// Returns a session to the pool for the next write.
    pub(crate) fn put_back(&self, session: Session) {
        self.idle().push(session);
    }

    #[cfg(test)]
    pub(crate) fn idle_len(&self) -> usize {
        self.idle().len()
    }
}

/// A session carrying one write; goes back to the pool when dropped, unless discarded.
///
/// Dropping it mid-write (the caller gave up on the future) is safe: the sequence was
/// taken, so the next write uses a later one, which the state machine accepts whether
/// or not the abandoned write applies.
#[derive(Debug)]
pub(crate) struct Lease {
    session: Option<Session>,
    pool: Arc<SessionPool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub(crate) fn new(
        session: Session,
        pool: Arc<SessionPool>,
        permit: OwnedSemaphorePermit,
    ) -> Lease {
        Lease {
            session: Some(session),
            pool,
            _permit: permit,
        }
    }

    /// The leased session (present until discarded).
    pub(crate) fn session_mut(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    /// The server said the session expired: never use it again.
    pub(crate) fn discard(&mut self) {
        self.session = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.put_back(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn sequences_start_at_one_and_are_never_reused() {
        let mut session = Session::opened(7, SECOND * 60, Instant::now());
        assert_eq!(session.take_sequence(), 1);
        assert_eq!(session.take_sequence(), 2);
        assert_eq!(session.next_sequence, 3);
    }

    #[test]
    fn a_session_is_fresh_while_idle_time_plus_reserve_is_under_its_ttl() {
        let start = Instant::now();
        let session = Session::opened(1, SECOND * 60, start);
        assert!(session.fresh_for(start + SECOND * 49, SECOND * 10));
        assert!(!session.fresh_for(start + SECOND * 50, SECOND * 10));
    }

    #[test]
    fn requested_ttl_covers_retries_and_respects_the_server_limit() {
        assert_eq!(requested_ttl(SECOND * 60, SECOND * 10), SECOND * 60);
        assert_eq!(requested_ttl(SECOND * 60, SECOND * 30), SECOND * 90);
        assert_eq!(requested_ttl(SECOND * 7200, SECOND), SECOND * 3600);
    }

    #[tokio::test]
    async fn pool_hands_out_fresh_sessions_most_recent_first_and_drops_stale_ones() {
        let pool = Arc::new(SessionPool::new(4));
        let start = Instant::now();
        pool.put_back(Session::opened(1, SECOND * 60, start - SECOND * 55));
        pool.put_back(Session::opened(2, SECOND * 60, start));
        pool.put_back(Session::opened(3, SECOND * 60, start - SECOND * 59));
        let got = pool.take_fresh(start, SECOND * 10).map(|s| s.client_id);
        assert_eq!(got, Some(2), "3 was stale and dropped");
        assert_eq!(pool.take_fresh(start, SECOND * 10), None, "1 is stale too");
        assert_eq!(pool.idle_len(), 0);
    }

    #[tokio::test]
    async fn a_lease_returns_its_session_unless_discarded_and_bounds_concurrency() {
        let pool = Arc::new(SessionPool::new(1));
        let deadline = Instant::now() + SECOND;
        let permit = pool.permit(deadline).await.expect("a permit");
        let mut lease = Lease::new(
            Session::opened(1, SECOND * 60, Instant::now()),
            pool.clone(),
            permit,
        );
        let sequence = lease.session_mut().map(Session::take_sequence);
        assert_eq!(sequence, Some(1));
        // The only permit is out: another write waits, here until its deadline.
        let short = Instant::now() + Duration::from_millis(20);
        assert!(pool.permit(short).await.is_none());
        drop(lease);
        assert_eq!(pool.idle_len(), 1);
        let taken = pool.take_fresh(Instant::now(), SECOND);
        assert_eq!(taken.map(|s| s.next_sequence), Some(2));

        let permit = pool.permit(deadline).await.expect("the permit came back");
        let mut lease = Lease::new(
            Session::opened(2, SECOND * 60, Instant::now()),
            pool.clone(),
            permit,
        );
        lease.discard();
        drop(lease);
        assert_eq!(pool.idle_len(), 0);
    }
}
