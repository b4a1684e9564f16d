//! Client configuration: timeouts ([`ClientConfig`]) and the rest of a client's settings
//! ([`ClientBuilder`]: sessions, member discovery).

use std::time::Duration;

use crate::{Client, Error};

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
    /// The budget of one request across every endpoint tried, every retry and every
    /// backoff (opening a session included). Default 10 s. One request can be given
    /// another with [`Client::with_timeout`](crate::Client::with_timeout).
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

/// Everything a [`Client`] is built from; see [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// use ferrokv_client::Client;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ferrokv_client::Error> {
/// let client = Client::builder(["ferrokv-0.ferrokv-peer:2379", "ferrokv:2379"])
///     .request_timeout(Duration::from_secs(5))
///     .max_sessions(4)
///     .member_refresh_interval(Some(Duration::from_secs(60)))
///     .connect()?;
/// assert_eq!(client.config().request_timeout, Duration::from_secs(5));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) endpoints: Vec<String>,
    pub(crate) config: ClientConfig,
    pub(crate) settings: Settings,
}

/// The settings beyond [`ClientConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) exactly_once: bool,
    pub(crate) session_ttl: Duration,
    pub(crate) max_sessions: usize,
    pub(crate) member_refresh_interval: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            exactly_once: true,
            session_ttl: Duration::from_secs(60),
            max_sessions: 16,
            member_refresh_interval: Some(Duration::from_secs(30)),
        }
    }
}

impl ClientBuilder {
    pub(crate) fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> ClientBuilder {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            config: ClientConfig::default(),
            settings: Settings::default(),
        }
    }

    /// Both timeouts at once.
    pub fn config(mut self, config: ClientConfig) -> ClientBuilder {
        self.config = config;
        self
    }

    /// See [`ClientConfig::dial_timeout`].
    pub fn dial_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.dial_timeout = timeout;
        self
    }

    /// See [`ClientConfig::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.request_timeout = timeout;
        self
    }

    /// Whether puts, deletes and transactions run in client sessions (default `true`).
    ///
    /// With sessions, a write whose outcome is unknown is resent with the same session
    /// and sequence, which the cluster applies at most once, until it is decided or the
    /// request timeout passes. Without, such a write is never resent and fails at once
    /// with [`Error::Ambiguous`]; each write then costs one request less the first time
    /// (no session to open). See the crate's README, "Retries and sessions".
    pub fn exactly_once(mut self, enabled: bool) -> ClientBuilder {
        self.settings.exactly_once = enabled;
        self
    }

    /// The idle time after which the cluster forgets a session (default 60 s; at least
    /// three request timeouts are asked for, at most one hour). Idle sessions are
    /// replaced before they can expire under a write.
    pub fn session_ttl(mut self, ttl: Duration) -> ClientBuilder {
        self.settings.session_ttl = ttl;
        self
    }

    /// At most this many sessions, and so writes in flight, at once (default 16; at
    /// least 1). One session carries one write at a time; further writes wait.
    pub fn max_sessions(mut self, max: usize) -> ClientBuilder {
        self.settings.max_sessions = max;
        self
    }

    /// How often the client asks the cluster for its member list, to use members added
    /// later (default every 30 s, and soon after an endpoint fails). `None` turns
    /// discovery off: only the configured endpoints and the leader named in response
    /// headers are used, and [`Client::refresh_endpoints`] still works when called.
    pub fn member_refresh_interval(mut self, interval: Option<Duration>) -> ClientBuilder {
        self.settings.member_refresh_interval = interval;
        self
    }

    /// Creates the client. Nothing is dialed yet.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect(self) -> Result<Client, Error> {
        Client::from_builder(self)
    }
}
