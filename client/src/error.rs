//! The client's error type: one variant per outcome a caller handles differently.

use ferrokv_proto::v1::KeyValue;
use tonic::Code;

fn describe_current(current: Option<&KeyValue>) -> String {
    match current {
        None => "the key does not exist".to_string(),
        Some(kv) => format!(
            "the key holds a value of {} bytes at version {}",
            kv.value.len(),
            kv.version
        ),
    }
}

/// Why a request failed.
///
/// Match on the variant to decide what to do next; the message (from the server when
/// there is one) is written for a person. A key that does not exist is not an error:
/// [`Client::get`](crate::Client::get) returns `None` for it.
///
/// The enum is `#[non_exhaustive]`: later versions may tell more cases apart, so keep a
/// catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server rejected the request as malformed (empty key, key or value over the
    /// limit, bad range, …). Retrying the same request cannot succeed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The cluster could not serve the request: no leader or no quorum, even after
    /// retrying other endpoints until the request timeout. Nothing was written.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The request timeout passed before an answer arrived, and nothing can have been
    /// applied: a read, or a write that was never sent (or whose every attempt was
    /// refused unapplied). A write still undecided at its deadline is
    /// [`Error::Ambiguous`] instead.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),

    /// A write whose outcome is unknown: it may or may not have been applied. With
    /// sessions (the default) the client has already resent it within its session
    /// until the request timeout ran out; a plain write is never resent. Read the key
    /// back to learn what happened.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),

    /// A write in a client session was refused because the session expired (idle past
    /// its TTL) or was evicted from the cluster's session table. The write was **not**
    /// applied; the client opens a new session for later writes, so sending it again
    /// is safe.
    #[error("session expired: {0}")]
    SessionExpired(String),

    /// A conditional write ([`Client::compare_and_swap`](crate::Client::compare_and_swap))
    /// did not apply because the key did not hold the expected value. `current` is the
    /// key as the transaction saw it (`None`: absent).
    #[error("compare failed on key {:?}: {}", String::from_utf8_lossy(key), describe_current(current.as_deref()))]
    CompareFailed {
        /// The key compared.
        key: Vec<u8>,
        /// Its value and revisions at the transaction's revision, when it exists.
        current: Option<Box<KeyValue>>,
    },

    /// A message was over a size limit (the server's or the client's).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),

    /// No endpoint could be reached (connection refused, dial timeout; for a read also
    /// a connection lost mid-request). `endpoint` names the endpoints tried, `message`
    /// what went wrong. A write that ends with this error was never sent.
    #[error("cannot reach {endpoint}: {message}")]
    Transport {
        /// The endpoint(s) tried, comma-separated.
        endpoint: String,
        /// What failed, per endpoint.
        message: String,
    },

    /// [`Client::connect`](crate::Client::connect) was given no endpoints.
    #[error("no endpoints given")]
    NoEndpoints,

    /// An endpoint is not a valid `host:port` or URI.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is not valid.
        message: String,
    },

    /// The client was used outside a Tokio runtime (its connections need one).
    #[error("the ferrokv client must be created inside a Tokio runtime")]
    NoRuntime,

    /// Any other gRPC status from the server (or a reply the client could not
    /// understand), with its code.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
}

impl Error {
    /// Builds the error for a status `code` with `message`, by code.
    /// An empty message (tonic sends none for an unknown method, for one) is replaced
    /// by the code's description, so the error always says something.
    pub(crate) fn from_code(code: Code, message: String) -> Error {
        let message = if message.is_empty() {
            code.description().to_string()
        } else {
            message
        };
        match code {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::DeadlineExceeded => Error::DeadlineExceeded(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            code => Error::Server { code, message },
        }
    }

    /// True when the request certainly had no effect on the cluster: everything but
    /// [`Error::Ambiguous`]. A read never has an effect, so this is about writes.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Error::Ambiguous(_))
    }
}

/// Maps a status by its code. A client-side timeout (tonic reports it as `Cancelled`
/// with a `TimeoutExpired` source) becomes [`Error::DeadlineExceeded`].
///
/// This mapping knows nothing about the request, so it never yields
/// [`Error::Ambiguous`]; the [`Client`](crate::Client) methods, which know whether they
/// sent a write, do that.
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        if crate::retry::has_source::<tonic::TimeoutExpired>(&status) {
            return Error::DeadlineExceeded(status.message().to_string());
        }
        Error::from_code(status.code(), status.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_maps_by_code() {
        assert_eq!(
            Error::from(tonic::Status::invalid_argument("empty key")),
            Error::InvalidArgument("empty key".into())
        );
        assert_eq!(
            Error::from(tonic::Status::unavailable("no leader")),
            Error::Unavailable("no leader".into())
        );
        assert_eq!(
            Error::from(tonic::Status::deadline_exceeded("late")),
            Error::DeadlineExceeded("late".into())
        );
        assert_eq!(
            Error::from(tonic::Status::resource_exhausted("too big")),
            Error::ResourceExhausted("too big".into())
        );
        assert_eq!(
            Error::from(tonic::Status::internal("boom")),
            Error::Server {
                code: Code::Internal,
                message: "boom".into()
            }
        );
    }

    #[test]
    fn empty_message_is_replaced_by_the_code_description() {
        let err = Error::from(tonic::Status::unimplemented(""));
        assert!(err.to_string().contains("not implemented"), "{err}");
    }

    #[test]
    fn client_side_timeout_maps_to_deadline_exceeded() {
        let status = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(status.code(), Code::Cancelled);
        assert!(matches!(Error::from(status), Error::DeadlineExceeded(_)));
    }

    #[test]
    fn only_ambiguous_is_indefinite() {
        assert!(!Error::Ambiguous("x".into()).is_definite());
        assert!(Error::Unavailable("x".into()).is_definite());
    }
}
