//! The attempt loop: carries one request across the endpoints — leader first for
//! writes, failover with backoff and jitter, resends within a session — until it is
//! answered, fails for good, or its deadline passes. Also the session lease around a
//! write, and the background member-list refresh it triggers.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrokv_proto::v1::{
    AddLearnerResponse, DeleteResponse, GetResponse, MemberListResponse, OpenSessionRequest,
    OpenSessionResponse, PromoteLearnerResponse, PutResponse, RemoveMemberResponse, ResponseHeader,
    ScanResponse, Session as WireSession, StatusResponse, TransferLeaderResponse, TxnResponse,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{kv_client, with_timeout};
use crate::endpoint::Route;
use crate::retry::{Decision, Failure, OpKind, Origin, backoff, classify, jittered};
use crate::session::{Lease, Session, requested_ttl};
use crate::{Client, Error};

/// A response that carries the answering replica's header.
pub(crate) trait HasHeader {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),*) => {$(
        impl HasHeader for $t {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        }
    )*};
}

has_header!(
    GetResponse,
    PutResponse,
    DeleteResponse,
    ScanResponse,
    TxnResponse,
    OpenSessionResponse,
    MemberListResponse,
    AddLearnerResponse,
    PromoteLearnerResponse,
    RemoveMemberResponse,
    TransferLeaderResponse,
    StatusResponse
);

/// Slack given to tonic's own timeout before the loop's timer gives up on an attempt:
/// tonic's error says more, the timer only guards against a hang tonic does not bound
/// (dialing, for one).
const ATTEMPT_GRACE: Duration = Duration::from_millis(100);

/// The longest one attempt of a retryable request may take: a third of the request
/// timeout, at least 1 s. A leader that stopped answering (paused, partitioned) then
/// costs a third of the budget, not all of it, before the request moves on.
fn attempt_budget(op: OpKind, request_timeout: Duration, left: Duration) -> Duration {
    match op {
        // A plain write is never resent once sent: give it everything.
        OpKind::Write => left,
        OpKind::Read | OpKind::SessionWrite => {
            left.min((request_timeout / 3).max(Duration::from_secs(1)))
        }
    }
}

impl Client {
    /// Carries one request across the endpoints until it succeeds, fails for good, or
    /// `deadline` passes. `attempt` sends it once on a channel, with the attempt's
    /// time as its gRPC deadline.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: OpKind,
        route: Route,
        what: &str,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        T: HasHeader,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.maybe_refresh(false);
        let endpoints = &self.inner.endpoints;
        let mut failures = RoundFailures::default();
        // Set once an attempt of a session write may have been applied: the write must
        // then be decided (or reported ambiguous), never reported as failed.
        let mut uncertain: Option<String> = None;
        let mut round = 0;
        'rounds: loop {
            let mut round_failures = RoundFailures::default();
            for target in endpoints.plan(route) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    failures.merge(round_failures);
                    break 'rounds;
                }
                let budget = attempt_budget(op, self.timeout, left);
                let attempt_deadline = Instant::now() + budget;
                let sent = attempt(target.channel.clone(), budget);
                let status =
                    match tokio::time::timeout_at(attempt_deadline + ATTEMPT_GRACE, sent).await {
                        Ok(Ok(response)) => {
                            endpoints.answered(&target.uri, response.get_ref().header());
                            return Ok(response.into_inner());
                        }
                        Ok(Err(status)) => Some(status),
                        Err(_) => None,
                    };
                let failure = match status {
                    Some(status) => Failure::from_status(&status)
                        .at_deadline(Instant::now() >= attempt_deadline),
                    None => Failure::attempt_timed_out(what),
                };
                if matches!(
                    failure.origin,
                    Origin::NotConnected | Origin::ClientTransport
                ) {
                    endpoints.failed(&target.uri);
                }
                let decision = classify(op, &failure);
                tracing::debug!(endpoint = %target.name, what, ?failure, ?decision, "attempt failed");
                match decision {
                    Decision::NextEndpoint => {
                        round_failures.unreachable.push((target.name, failure))
                    }
                    Decision::RetryWithBackoff => round_failures.retryable(target.name, failure),
                    Decision::RetryUncertain => {
                        uncertain = Some(format!("{}: {}", target.name, describe(&failure)));
                        round_failures.retryable(target.name, failure);
                    }
                    Decision::Fail => {
                        return Err(match uncertain {
                            Some(earlier) => ambiguous(what, &earlier, &failure, &target.name),
                            None => final_error(what, &target.name, self.timeout, failure),
                        });
                    }
                    Decision::FailAmbiguous => {
                        return Err(Error::Ambiguous(format!(
                            "{what} sent to {} may or may not have been applied: {}",
                            target.name,
                            describe(&failure)
                        )));
                    }
                    Decision::SessionExpired => {
                        return Err(match uncertain {
                            Some(earlier) => ambiguous(what, &earlier, &failure, &target.name),
                            None => Error::SessionExpired(format!(
                                "{what} was not applied: {}",
                                failure.message
                            )),
                        });
                    }
                }
            }
            if !round_failures.unreachable.is_empty() {
                self.maybe_refresh(true);
            }
            let nothing_answered = round_failures.retryable.is_none() && uncertain.is_none();
            failures.merge(round_failures);
            if nothing_answered && !endpoints.ever_answered() {
                // No endpoint has ever answered this client and none does now: most
                // likely a wrong endpoint list, so say so at once rather than wait out
                // the timeout. A client that was connected rides out restarts instead.
                return Err(failures.into_error(what, self.timeout));
            }
            let pause = jittered(backoff(round));
            if deadline.saturating_duration_since(Instant::now()) <= pause {
                break;
            }
            tokio::time::sleep(pause).await;
            round += 1;
        }
        Err(match uncertain {
            Some(last) => Error::Ambiguous(format!(
                "{what} still undecided when the request timeout of {} ran out; it may or may \
                 not have been applied (last unknown outcome from {last})",
                format_duration(self.timeout)
            )),
            None => failures.into_error(what, self.timeout),
        })
    }

    /// Runs a put, delete or txn: in a leased session when sessions are on (resent
    /// with the same sequence while its outcome is unknown), else as a plain write.
    pub(crate) async fn write<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, Error>
    where
        T: HasHeader,
        F: FnMut(Channel, Duration, Option<WireSession>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = self.deadline();
        if !self.inner.settings.exactly_once {
            return self
                .call(
                    OpKind::Write,
                    Route::Leader,
                    what,
                    deadline,
                    |channel, timeout| attempt(channel, timeout, None),
                )
                .await;
        }
        let mut lease = self.lease(what, deadline).await?;
        let Some(session) = lease.session_mut() else {
            return Err(Error::Server {
                code: Code::Internal,
                message: format!("{what}: the session lease was empty (a client bug)"),
            });
        };
        let wire = WireSession {
            client_id: session.client_id,
            sequence: session.take_sequence(),
        };
        let sent = Instant::now();
        let result = self
            .call(
                OpKind::SessionWrite,
                Route::Leader,
                what,
                deadline,
                |channel, timeout| attempt(channel, timeout, Some(wire)),
            )
            .await;
        match &result {
            Ok(_) => {
                if let Some(session) = lease.session_mut() {
                    session.last_used = sent;
                }
            }
            Err(Error::SessionExpired(_)) => lease.discard(),
            Err(_) => {}
        }
        result
    }

    /// A session for one write: an idle fresh one, or a new one opened now. Waits for a
    /// free session when `max_sessions` writes are in flight.
    async fn lease(&self, what: &str, deadline: Instant) -> Result<Lease, Error> {
        let pool = &self.inner.sessions;
        let Some(permit) = pool.permit(deadline).await else {
            return Err(Error::DeadlineExceeded(format!(
                "{what}: no session became free within the request timeout of {} (at most {} \
                 writes of this client are in flight at once); the write was not sent",
                format_duration(self.timeout),
                self.inner.settings.max_sessions.max(1)
            )));
        };
        // A write may be retried for the whole timeout: the session must outlive that.
        let reserve = self.timeout + Duration::from_secs(1);
        if let Some(session) = pool.take_fresh(Instant::now(), reserve) {
            return Ok(Lease::new(session, pool.clone(), permit));
        }
        let ttl = requested_ttl(self.inner.settings.session_ttl, self.timeout);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let sent = Instant::now();
        // Opening is safe to resend: a duplicate only leaves an unused session behind,
        // which the cluster expires.
        let opened = self
            .call(
                OpKind::Read,
                Route::Leader,
                &format!("{what}: open session"),
                deadline,
                |channel, timeout| {
                    let request = with_timeout(OpenSessionRequest { ttl_ms }, timeout);
                    async move { kv_client(channel).open_session(request).await }
                },
            )
            .await?;
        let granted = match opened.ttl_ms {
            0 => ttl,
            ms => Duration::from_millis(ms),
        };
        tracing::debug!(
            client_id = opened.client_id,
            ?granted,
            "opened a client session"
        );
        let session = Session::opened(opened.client_id, granted, sent);
        Ok(Lease::new(session, pool.clone(), permit))
    }

    /// Starts a member-list refresh in the background when one is due: periodically,
    /// or (`after_failure`) at most once a second while endpoints fail. Off when the
    /// client was built without a refresh interval.
    fn maybe_refresh(&self, after_failure: bool) {
        let Some(interval) = self.inner.settings.member_refresh_interval else {
            return;
        };
        let min_gap = if after_failure {
            Duration::from_secs(1).min(interval)
        } else {
            interval
        };
        let now = Instant::now();
        {
            let last = self
                .inner
                .last_refresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now.saturating_duration_since(at) < min_gap) {
                return;
            }
        }
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(err) = client.refresh_endpoints().await {
                tracing::debug!(%err, "member list refresh failed");
            }
            client.inner.refreshing.store(false, Ordering::Release);
        });
    }
}

/// The ambiguous error of a write whose earlier attempt may have applied and whose
/// later attempt failed in a way that cannot settle it.
fn ambiguous(what: &str, earlier: &str, failure: &Failure, endpoint: &str) -> Error {
    Error::Ambiguous(format!(
        "{what}: an attempt's outcome was unknown ({earlier}) and the retry could not settle \
         it ({endpoint}: {}); it may or may not have been applied",
        describe(failure)
    ))
}

/// What the rounds over the endpoints ran into, none of it final on its own.
#[derive(Default)]
struct RoundFailures {
    /// Endpoints that could not be reached, with why.
    unreachable: Vec<(String, Failure)>,
    /// The last answer that left the request retryable: no leader, or an attempt that
    /// timed out or broke.
    retryable: Option<(String, Failure)>,
}

impl RoundFailures {
    fn retryable(&mut self, endpoint: String, failure: Failure) {
        self.retryable = Some((endpoint, failure));
    }

    /// Folds a later round in: its news replace the older ones.
    fn merge(&mut self, later: RoundFailures) {
        for (name, failure) in later.unreachable {
            self.unreachable.retain(|(n, _)| *n != name);
            self.unreachable.push((name, failure));
        }
        if later.retryable.is_some() {
            self.retryable = later.retryable;
        }
    }

    /// The error to report when no round is left. Nothing in `self` applied a write
    /// (an uncertain attempt is reported by the caller), so it is never ambiguous.
    fn into_error(self, what: &str, timeout: Duration) -> Error {
        if let Some((endpoint, failure)) = self.retryable {
            return match failure.origin {
                Origin::Server if failure.code == Code::Unavailable => Error::Unavailable(format!(
                    "{what}: {} (answered by {endpoint}; retried until the request timeout \
                         of {})",
                    failure.message,
                    format_duration(timeout)
                )),
                Origin::Server => Error::from_code(
                    failure.code,
                    format!(
                        "{what}: {} (answered by {endpoint}; retried until the request timeout \
                         of {})",
                        failure.message,
                        format_duration(timeout)
                    ),
                ),
                _ => Error::DeadlineExceeded(format!(
                    "{what}: no answer within the request timeout of {} (last tried {endpoint}: \
                     {})",
                    format_duration(timeout),
                    describe(&failure)
                )),
            };
        }
        if self.unreachable.is_empty() {
            return Error::DeadlineExceeded(format!(
                "{what}: the request timeout of {} ran out",
                format_duration(timeout)
            ));
        }
        let endpoint = join(self.unreachable.iter().map(|(name, _)| name.as_str()), ", ");
        let message = if let [(_, failure)] = self.unreachable.as_slice() {
            describe(failure)
        } else {
            join(
                self.unreachable
                    .iter()
                    .map(|(name, failure)| format!("{name}: {}", describe(failure))),
                "; ",
            )
        };
        Error::Transport { endpoint, message }
    }
}

fn join(items: impl Iterator<Item = impl AsRef<str>>, separator: &str) -> String {
    items
        .map(|item| item.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

/// The error for a failure that ends the request (not an ambiguous write).
pub(crate) fn final_error(
    what: &str,
    endpoint: &str,
    timeout: Duration,
    failure: Failure,
) -> Error {
    match failure.origin {
        Origin::ClientDeadline => Error::DeadlineExceeded(format!(
            "{what}: no answer within the request timeout of {} (last tried {endpoint})",
            format_duration(timeout)
        )),
        Origin::NotConnected | Origin::ClientTransport => Error::Transport {
            endpoint: endpoint.to_string(),
            message: describe(&failure),
        },
        Origin::Server => Error::from_code(failure.code, failure.message),
    }
}

/// The failure as one line: the message, and the code when the message alone would
/// not say it.
fn describe(failure: &Failure) -> String {
    match (failure.origin, failure.message.is_empty()) {
        (Origin::Server, true) => format!("{:?} with no message", failure.code),
        (Origin::Server, false) if failure.code != Code::Unavailable => {
            format!("{:?}: {}", failure.code, failure.message)
        }
        _ => failure.message.clone(),
    }
}

/// `1.5s`, `300ms`: for messages.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_of_retryable_requests_get_a_third_of_the_timeout() {
        let ten = Duration::from_secs(10);
        let third = ten / 3;
        assert_eq!(attempt_budget(OpKind::Read, ten, ten), third);
        assert_eq!(attempt_budget(OpKind::SessionWrite, ten, ten), third);
        assert_eq!(attempt_budget(OpKind::Write, ten, ten), ten);
        let short = Duration::from_millis(600);
        assert_eq!(
            attempt_budget(OpKind::Read, short, short),
            short,
            "at least 1 s, capped by what is left"
        );
        assert_eq!(
            attempt_budget(OpKind::Read, ten, Duration::from_millis(5)),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
    }

    #[test]
    fn no_leader_until_the_deadline_is_unavailable_and_timeouts_are_deadline_exceeded() {
        let mut failures = RoundFailures::default();
        failures.retryable(
            "a:1".into(),
            Failure {
                code: Code::Unavailable,
                message: "no leader: election".into(),
                origin: Origin::Server,
            },
        );
        let err = failures.into_error("put", Duration::from_secs(1));
        assert!(
            matches!(err, Error::Unavailable(ref m) if m.contains("no leader")),
            "{err}"
        );

        let mut failures = RoundFailures::default();
        failures.retryable("a:1".into(), Failure::attempt_timed_out("get"));
        let err = failures.into_error("get", Duration::from_secs(1));
        assert!(matches!(err, Error::DeadlineExceeded(_)), "{err}");
    }
}
