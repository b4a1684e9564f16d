//! What to do after a failed attempt: the pure decision logic behind endpoint failover.
//!
//! The rule that matters most: a write is sent again (to any endpoint) only when it is
//! known not to have been applied — the connection was never established, or the server
//! said so (`UNAVAILABLE` with a message starting `no leader` or `not applied:`). Once a
//! write may have reached a server, its failure is reported as ambiguous and never
//! retried, because sending it twice could apply it twice (Jepsen found etcd's Java
//! client doing exactly that).

use std::time::Duration;

use tonic::{Code, Status};

/// Whether a request changes state, which decides how freely it may be resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Get, Scan, MemberList, Status: safe to send any number of times.
    Read,
    /// Put, Delete, Txn: must not be applied twice.
    Write,
}

/// Where a failed attempt's status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The server answered with this status.
    Server,
    /// The client could not open a connection (refused, unreachable, dial timeout):
    /// the request never left this process.
    NotConnected,
    /// The request timeout passed on the client; the request may have been sent.
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
    /// That endpoint could not be reached: try the next one now.
    NextEndpoint,
    /// The cluster has no leader right now (or the server refused without applying):
    /// try the next endpoint, and after a full round wait a short backoff and go again,
    /// until the request timeout.
    RetryWithBackoff,
    /// Stop and report the failure as it is.
    Fail,
    /// Stop and report the write as ambiguous: it may have been applied.
    FailAmbiguous,
}

/// Decides what to do after an attempt of `op` failed with `failure`.
pub(crate) fn classify(op: OpKind, failure: &Failure) -> Decision {
    match (op, failure.origin) {
        // Nothing was sent: any request may go elsewhere.
        (_, Origin::NotConnected) => Decision::NextEndpoint,
        // The whole request timeout is spent (each attempt gets what is left of it).
        (OpKind::Read, Origin::ClientDeadline) => Decision::Fail,
        (OpKind::Write, Origin::ClientDeadline) => Decision::FailAmbiguous,
        // A read that died with its connection can simply be asked elsewhere.
        (OpKind::Read, Origin::ClientTransport) => Decision::NextEndpoint,
        (OpKind::Write, Origin::ClientTransport) => Decision::FailAmbiguous,
        (OpKind::Read, Origin::Server) => match failure.code {
            Code::Unavailable => Decision::RetryWithBackoff,
            _ => Decision::Fail,
        },
        (OpKind::Write, Origin::Server) => {
            if failure.server_says_not_applied() {
                Decision::RetryWithBackoff
            } else if write_code_is_definite(failure.code) {
                Decision::Fail
            } else {
                Decision::FailAmbiguous
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
    fn write_whose_connection_broke_is_ambiguous_but_read_moves_on() {
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            let f = local(code, Origin::ClientTransport);
            assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
            assert_eq!(classify(OpKind::Read, &f), Decision::NextEndpoint);
        }
    }

    #[test]
    fn client_deadline_fails_reads_and_makes_writes_ambiguous() {
        let f = local(Code::Cancelled, Origin::ClientDeadline);
        assert_eq!(classify(OpKind::Read, &f), Decision::Fail);
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
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
    fn not_applied_prefix_on_another_code_is_not_trusted() {
        let f = server(Code::Internal, "not applied: storage error");
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
    }

    #[test]
    fn server_deadline_on_a_write_is_ambiguous_and_on_a_read_fails() {
        let f = server(
            Code::DeadlineExceeded,
            "commit not seen before the deadline",
        );
        assert_eq!(classify(OpKind::Write, &f), Decision::FailAmbiguous);
        assert_eq!(classify(OpKind::Read, &f), Decision::Fail);
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
}
