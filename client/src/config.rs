//! Client configuration: timeouts.

use std::time::Duration;

/// How a [`Client`](crate::Client) dials and how long it waits.
///
/// Build it with struct update syntax so new fields keep their defaults:
///
/// ```
/// use std::time::Duration;
/// use ferrokv_client::ClientConfig;
///
/// let config = ClientConfig {
///     request_timeout: Duration::from_secs(2),
///     ..ClientConfig::default()
/// };
/// assert_eq!(config.dial_timeout, Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long opening a connection to one endpoint may take before the client moves
    /// on to the next endpoint. Default 3 s.
    pub dial_timeout: Duration,
    /// The budget of one request across every endpoint tried and every backoff; each
    /// attempt gets what is left of it as its gRPC deadline (enforced by the client and
    /// sent to the server). Dialing is bounded by `dial_timeout` alone, so a request
    /// that must open a connection can take up to `dial_timeout` longer. Default 10 s.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            dial_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
        }
    }
}
