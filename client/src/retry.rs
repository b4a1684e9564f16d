//! What to do after a failed attempt: the pure decision logic behind endpoint failover.
//!
//! The rule that matters most: a write is sent again only when that cannot apply it
//! twice. A plain write ([`OpKind::Write`]) is resent only when it is known not to have
//! been applied — the connection was never established, or the server said so
//! (`UNAVAILABLE` with a message starting `no leader` or `not applied:`). A session
//! write ([`OpKind::SessionWrite`]) carries `(client_id, sequence)`, which the state
//! machine applies at most once, so it is resent after an unknown outcome too — with the
//! same session and sequence — until it is decided or the deadline passes. Blind resends
//! of a plain write are what made etcd's Java client apply writes twice (Jepsen).

use std::time::Duration;

use tonic::{Code, Status};

/// How freely a request may be resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Get, Scan, MemberList, Status, OpenSession, TransferLeader: safe to send any
    /// number of times (an extra OpenSession only leaves an idle session to expire).
    Read,
    /// A write without a session (membership changes, or a client built without
    /// sessions): must not be sent again once it may have reached a server.
    Write,
    /// Put, Delete, Txn in a session: resent with the same `(client_id, sequence)` until
    /// decided; the state machine answers a duplicate with the stored result.
    SessionWrite,
}

/// Where a failed attempt's status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The server answered with this status.
    Server,
    /// The client could not open a connection (refused, unreachable, dial timeout):
    /// the request never left this process.
    NotConnected,
    /// The attempt's deadline passed on the client; the request may have been sent.
    ClientDeadline,
    /// Any other client-side failure (connection reset or closed mid-request, h2
    /// error, …); the request may have been sent.
    ClientTransport,
}

/// A failed attempt, reduced to what the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) origin: Origin,
}

impl Failure {
    /// Reads a status's code, message and origin. tonic marks client-side failures by
    /// giving the status a source error: `ConnectError` when the connection could not be
    /// opened, `TimeoutExpired` when the request timeout passed; a status decoded from a
    /// server's reply has no source.
    pub(crate) fn from_status(status: &Status) -> Failure {
        let origin = if has_source::<tonic::ConnectError>(status) {
            Origin::NotConnected
        } else if has_source::<tonic::TimeoutExpired>(status) {
            Origin::ClientDeadline
        } else if std::error::Error::source(status).is_some() {
            Origin::ClientTransport
        } else {
            Origin::Server
        };
        let message = match origin {
            Origin::Server => status.message().to_string(),
            _ => message_with_causes(status),
        };
        Failure {
            code: status.code(),
            message,
            origin,
        }
    }

    /// The attempt's own timer fired on the client (tonic's timeout did not get to).
    pub(crate) fn attempt_timed_out(what: &str) -> Failure {
        Failure {
            code: Code::DeadlineExceeded,
            message: format!("{what}: no answer before the attempt's deadline"),
            origin: Origin::ClientDeadline,
        }
    }

    /// A server that gave up because the request's own deadline passed (tonic answers
    /// `CANCELLED` then) failed for the same reason a client-side timeout does; call
    /// this with whether the deadline has passed, to report both alike.
    pub(crate) fn at_deadline(self, deadline_passed: bool) -> Failure {
        let server_gave_up = self.origin == Origin::Server
            && matches!(self.code, Code::Cancelled | Code::DeadlineExceeded);
        if deadline_passed && server_gave_up {
            Failure {
                origin: Origin::ClientDeadline,
                ..self
            }
        } else {
            self
        }
    }

    /// True when the server said it did not apply (or propose) the request.
    fn server_says_not_applied(&self) -> bool {
        self.origin == Origin::Server
            && self.code == Code::Unavailable
            && is_not_applied_message(&self.message)
    }

    /// True when the server refused a session write because its session expired (or
    /// was evicted); the write was not applied.
    pub(crate) fn is_session_expired(&self) -> bool {
        self.origin == Origin::Server
            && self.code == Code::FailedPrecondition
            && self.message.trim_start().starts_with("session expired")
    }

    /// True when the server refused a membership change, unapplied, only because
    /// another one is still being committed: worth asking again shortly.
    fn is_membership_change_in_progress(&self) -> bool {
        self.origin == Origin::Server
            && self.code == Code::FailedPrecondition
            && self.message.trim_start().starts_with("not applied:")
            && self.message.contains("undergoing a configuration change")
    }

    /// True when the server refused a session write whose sequence is older than the
    /// session's last applied one.
    fn is_stale_sequence(&self) -> bool {
        self.origin == Origin::Server
            && self.code == Code::FailedPrecondition
            && self.message.trim_start().starts_with("stale sequence")
    }
}

/// True for the server's messages that promise a write was not proposed: `no leader…`
/// (no leader known) and `not applied:…` (other known-not-applied failures).
pub(crate) fn is_not_applied_message(message: &str) -> bool {
    let message = message.trim_start().to_ascii_lowercase();
    message.starts_with("no leader") || message.starts_with("not applied:")
}

/// What the attempt loop does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// That endpoint could not be reached (nothing was sent): try the next one now.
    NextEndpoint,
    /// Nothing was applied (no leader right now, or a read that can simply be asked
    /// again): try the next endpoint, and after a full round wait a short backoff and
    /// go again, until the request timeout.
    RetryWithBackoff,
    /// A session write that may have been applied: resend it with the same session and
    /// sequence, like `RetryWithBackoff`; if it is still undecided at the deadline, the
    /// error is [`Error::Ambiguous`](crate::Error::Ambiguous).
    RetryUncertain,
    /// Stop and report the failure as it is.
    Fail,
    /// Stop and report the write as ambiguous: it may have been applied.
    FailAmbiguous,
    /// The write's session expired (or was evicted) on the server: the write was not
    /// applied, and the session must not be used again.
    SessionExpired,
}

/// Decides what to do after an attempt of `op` failed with `failure`. A
/// `ClientDeadline` origin means the attempt's deadline passed; the caller stops once
/// the whole request's deadline has.
pub(crate) fn classify(op: OpKind, failure: &Failure) -> Decision {
    match (op, failure.origin) {
        // Nothing was sent: any request may go elsewhere.
        (_, Origin::NotConnected) => Decision::NextEndpoint,
        (OpKind::Read, Origin::ClientDeadline | Origin::ClientTransport) => {
            Decision::RetryWithBackoff
        }
        (OpKind::Write, Origin::ClientDeadline | Origin::ClientTransport) => {
            Decision::FailAmbiguous
        }
        (OpKind::SessionWrite, Origin::ClientDeadline | Origin::ClientTransport) => {
            Decision::RetryUncertain
        }
        // The server gave up (no leader, or its deadline for this attempt passed while
        // waiting, e.g. for a read index or a leadership transfer): ask again.
        (OpKind::Read, Origin::Server) => match failure.code {
            Code::Unavailable | Code::DeadlineExceeded => Decision::RetryWithBackoff,
            _ => Decision::Fail,
        },
        (OpKind::Write, Origin::Server) => {
            if failure.server_says_not_applied() || failure.is_membership_change_in_progress() {
                Decision::RetryWithBackoff
            } else if write_code_is_definite(failure.code) {
                Decision::Fail
            } else {
                Decision::FailAmbiguous
            }
        }
        (OpKind::SessionWrite, Origin::Server) => {
            if failure.server_says_not_applied() {
                Decision::RetryWithBackoff
            } else if failure.is_session_expired() {
                Decision::SessionExpired
            } else if failure.is_stale_sequence() {
                // Writes of one session are serialized, so a later sequence can only
                // have been applied if this one's earlier attempt raced it: unknown.
                Decision::FailAmbiguous
            } else if write_code_is_definite(failure.code) {
                Decision::Fail
            } else {
                Decision::RetryUncertain
            }
        }
    }
}

/// True for status codes with which a server refuses a write before proposing it
/// (validation, limits, unknown method). Every other code on a write — UNAVAILABLE
/// without the not-applied prefix, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, CANCELLED,
/// ABORTED, DATA_LOSS — can come after the entry entered the log, so it is ambiguous.
fn write_code_is_definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// The pause after the `round`-th full round of endpoints that all said "no leader"
/// (0-based): 50 ms doubling to at most 1 s. A Raft election takes a few hundred ms, so
/// a handful of rounds usually covers it. The caller adds jitter.
pub(crate) fn backoff(round: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);
    FIRST.saturating_mul(1u32 << round.min(10)).min(MAX)
}

/// How long an endpoint that could not be reached (`failures` times in a row, 1-based)
/// is tried only after every other endpoint: 250 ms doubling to at most 10 s. It is
/// still tried when nothing else answers, so a cluster that comes back is found.
pub(crate) fn endpoint_down_for(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(10);
    FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(MAX)
}

/// Adds up to 50% random jitter, so clients that failed together do not retry in step.
pub(crate) fn jittered(pause: Duration) -> Duration {
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
    pause + Duration::from_millis(rand::random_range(0..=millis / 2))
}

/// The status message and the root cause of its source chain, when the message does
/// not already say it: tonic's message for a refused connection is just "tcp connect
/// error", the useful part ("Connection refused") is the innermost cause.
fn message_with_causes(status: &Status) -> String {
    let message = status.message();
    let mut root = None;
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        root = Some(err);
        source = err.source();
    }
    let cause = root.map(ToString::to_string).unwrap_or_default();
    if cause.is_empty() || message.contains(&cause) {
        message.to_string()
    } else if message.is_empty() {
        cause
    } else {
        format!("{message}: {cause}")
    }
}

/// True when `E` appears in the source chain of `status`.
pub(crate) fn has_source<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<E>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: Code, message: &str) -> Failure {
        Failure {
            code,
            message: message.into(),
            origin: Origin::Server,
        }
    }

    fn local(code: Code, origin: Origin) -> Failure {
        Failure {
            code,
            message: "local".into(),
            origin,
        }
    }

    #[test]
    fn connect_refused_status_is_not_connected() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let failure = Failure::from_status(&status);
        assert_eq!(failure.code, Code::Unavailable);
        assert_eq!(failure.origin, Origin::NotConnected);
        assert_eq!(failure.message, "refused");
    }

    #[test]
    fn connect_error_deep_in_the_chain_is_found() {
        #[derive(Debug)]
        struct Wrapper(tonic::ConnectError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "wrapped: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "dial timeout");
        let err = Wrapper(tonic::ConnectError(Box::new(timeout)));
        let status = Status::from_error(Box::new(err));
        let failure = Failure::from_status(&status);
        assert_eq!(failure.origin, Origin::NotConnected);
        assert_eq!(failure.message, "dial timeout");
    }

    #[test]
    fn client_timeout_status_is_client_deadline() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(Failure::from_status(&status).origin, Origin::ClientDeadline);
    }

    #[test]
    fn other_local_error_is_client_transport() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = Status::from_error(Box::new(reset));
        assert_eq!(
            Failure::from_status(&status).origin,
            Origin::ClientTransport
        );
    }

    #[test]
    fn status_without_source_is_from_the_server() {
        let status = Status::unavailable("no leader known");
        assert_eq!(Failure::from_status(&status).origin, Origin::Server);
    }

    #[test]
    fn server_giving_up_at_our_deadline_counts_as_our_deadline() {
        let f = server(Code::Cancelled, "Timeout expired");
        assert_eq!(f.clone().at_deadline(true).origin, Origin::ClientDeadline);
        assert_eq!(f.at_deadline(false).origin, Origin::Server);
        let f = server(Code::Unavailable, "no leader");
        assert_eq!(f.at_deadline(true).origin, Origin::Server);
    }

    #[test]
    fn unreachable_endpoint_moves_on_for_reads_and_writes() {
        let f = local(Code::Unavailable, Origin::NotConnected);
        assert_eq!(classify(OpKind::Read, &f), Decision::NextEndpoint);
        assert_eq!(classify(OpKind::Write, &f), Decision::NextEndpoint);
    }

    #[test]
    fn plain_write_whose_connection_broke_is_ambiguous_but_read_moves_on() {
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            let f = local(code, Origin::ClientTransport);
            assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
            assert_eq!(classify(OpKind::Read, &f), Decision::RetryWithBackoff);
        }
    }

    #[test]
    fn attempt_deadline_retries_reads_and_session_writes_but_not_plain_writes() {
        let f = local(Code::Cancelled, Origin::ClientDeadline);
        assert_eq!(classify(OpKind::Read, &f), Decision::RetryWithBackoff);
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
        assert_eq!(classify(OpKind::SessionWrite, &f), Decision::RetryUncertain);
    }

    #[test]
    fn session_write_with_unknown_outcome_is_resent_in_its_session() {
        for f in [
            server(
                Code::Unknown,
                "outcome unknown: leader changed after proposing",
            ),
            server(
                Code::DeadlineExceeded,
                "commit not seen before the deadline",
            ),
            server(Code::Unavailable, "no quorum within the deadline"),
            server(Code::Internal, "boom"),
            local(Code::Unavailable, Origin::ClientTransport),
        ] {
            assert_eq!(
                classify(OpKind::SessionWrite, &f),
                Decision::RetryUncertain,
                "{f:?}"
            );
        }
        let f = server(Code::Unavailable, "no leader: election in progress");
        assert_eq!(
            classify(OpKind::SessionWrite, &f),
            Decision::RetryWithBackoff
        );
        let f = local(Code::Unavailable, Origin::NotConnected);
        assert_eq!(classify(OpKind::SessionWrite, &f), Decision::NextEndpoint);
    }

    #[test]
    fn session_rejections_are_told_apart() {
        let f = server(
            Code::FailedPrecondition,
            "session expired: session 7 expired or is unknown; open a new session",
        );
        assert_eq!(classify(OpKind::SessionWrite, &f), Decision::SessionExpired);
        let f = server(
            Code::FailedPrecondition,
            "stale sequence: session 7: sequence 2 ...",
        );
        assert_eq!(classify(OpKind::SessionWrite, &f), Decision::FailAmbiguous);
        let f = server(
            Code::InvalidArgument,
            "value of 2097152 bytes is over 1048576",
        );
        assert_eq!(classify(OpKind::SessionWrite, &f), Decision::Fail);
        // A plain write never sees these, but a FAILED_PRECONDITION is definite for it.
        let f = server(Code::FailedPrecondition, "session expired: x");
        assert_eq!(classify(OpKind::Write, &f), Decision::Fail);
    }

    #[test]
    fn reads_retry_any_server_unavailable() {
        let f = server(Code::Unavailable, "no quorum within the deadline");
        assert_eq!(classify(OpKind::Read, &f), Decision::RetryWithBackoff);
        let f = server(Code::Unavailable, "no leader known");
        assert_eq!(classify(OpKind::Read, &f), Decision::RetryWithBackoff);
    }

    #[test]
    fn writes_retry_only_what_the_server_says_it_did_not_apply() {
        let f = server(Code::Unavailable, "no leader known to member 2");
        assert_eq!(classify(OpKind::Write, &f), Decision::RetryWithBackoff);
        let f = server(Code::Unavailable, "not applied: leader stepped down");
        assert_eq!(classify(OpKind::Write, &f), Decision::RetryWithBackoff);
        let f = server(Code::Unavailable, "no quorum within the deadline");
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
        let f = server(Code::Unavailable, "");
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
    }

    #[test]
    fn not_applied_prefix_must_start_the_message() {
        assert!(is_not_applied_message("no leader"));
        assert!(is_not_applied_message("No leader known"));
        assert!(is_not_applied_message("not applied: log truncated"));
        assert!(!is_not_applied_message("proposal failed: no leader"));
        assert!(!is_not_applied_message("not applied"));
    }

    #[test]
    fn a_membership_change_refused_while_another_commits_is_retried() {
        let f = server(
            Code::FailedPrecondition,
            "not applied: the cluster is already undergoing a configuration change at log 12",
        );
        assert_eq!(classify(OpKind::Write, &f), Decision::RetryWithBackoff);
        let f = server(Code::FailedPrecondition, "not applied: 9 is not a learner");
        assert_eq!(classify(OpKind::Write, &f), Decision::Fail);
    }

    #[test]
    fn not_applied_prefix_on_another_code_is_not_trusted() {
        let f = server(Code::Internal, "not applied: storage error");
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
    }

    #[test]
    fn server_deadline_on_a_write_is_ambiguous_and_on_a_read_is_retried() {
        let f = server(
            Code::DeadlineExceeded,
            "commit not seen before the deadline",
        );
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
        assert_eq!(classify(OpKind::Read, &f), Decision::RetryWithBackoff);
    }

    #[test]
    fn validation_errors_fail_at_once() {
        for code in [
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
        ] {
            let f = server(code, "bad");
            assert_eq!(classify(OpKind::Read, &f), Decision::Fail);
            assert_eq!(classify(OpKind::Write, &f), Decision::Fail);
        }
    }

    #[test]
    fn server_internal_on_a_write_is_ambiguous() {
        for code in [Code::Internal, Code::Unknown, Code::Aborted, Code::DataLoss] {
            let f = server(code, "boom");
            assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
            assert_eq!(classify(OpKind::Read, &f), Decision::Fail);
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn endpoint_down_time_doubles_then_caps() {
        assert_eq!(endpoint_down_for(1), Duration::from_millis(250));
        assert_eq!(endpoint_down_for(2), Duration::from_millis(500));
        assert_eq!(endpoint_down_for(7), Duration::from_secs(10));
        assert_eq!(endpoint_down_for(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_adds_at_most_half() {
        for _ in 0..100 {
            let pause = jittered(Duration::from_millis(100));
            assert!(pause >= Duration::from_millis(100) && pause <= Duration::from_millis(150));
        }
    }
}
