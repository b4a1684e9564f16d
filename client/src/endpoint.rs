//! Endpoints: `host:port` normalization, one lazy gRPC channel per endpoint, and the
//! order in which a request tries them.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::{ClientConfig, Error};

/// Turns `host:port` (or `http://host:port`) into the URI tonic dials.
///
/// A missing scheme means `http://`. The port is required: ferrokv has no well-known
/// port, and a silent default of 80 would only hide a typo. TLS (`https://`) is not
/// supported yet.
pub(crate) fn normalize_endpoint(endpoint: &str) -> Result<String, Error> {
    let invalid = |message: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        message: message.to_string(),
    };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty endpoint (expected host:port)"));
    }
    let uri = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let parsed: Uri = uri
        .parse()
        .map_err(|e| invalid(&format!("not a valid host:port ({e})")))?;
    match parsed.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("TLS (https://) is not supported")),
        _ => return Err(invalid("the scheme must be http:// (or none)")),
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(invalid("missing host (expected host:port)"));
    }
    if parsed.port_u16().is_none() {
        // http's Uri drops a port that is not a number; tell that apart from none.
        let authority = parsed.authority().map_or("", |a| a.as_str());
        let after_host = authority.rsplit(']').next().unwrap_or(authority);
        return Err(match after_host.rsplit_once(':') {
            Some((_, port)) => invalid(&format!("{port:?} is not a valid port")),
            None => invalid("missing port (expected host:port)"),
        });
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(invalid("an endpoint has no path (expected host:port)"));
    }
    Ok(uri.trim_end_matches('/').to_string())
}

/// Opens a lazy channel to `uri`: nothing is dialed until the first request, and a
/// broken connection is re-dialed by the next request that needs it.
pub(crate) fn lazy_channel(
    endpoint: &str,
    uri: &str,
    config: &ClientConfig,
) -> Result<Channel, Error> {
    // Channel creation spawns the channel's worker task, which needs a runtime; check
    // here so a misuse is an error, not a panic inside tonic.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let endpoint =
        TonicEndpoint::from_shared(uri.to_string()).map_err(|e| Error::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        })?;
    Ok(endpoint
        .connect_timeout(config.dial_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// One configured endpoint and its channel.
#[derive(Debug)]
pub(crate) struct EndpointConn {
    /// As the caller wrote it (trimmed): what errors and `status_all` show.
    pub(crate) name: String,
    pub(crate) channel: Channel,
}

/// The configured endpoints and which one to try first.
#[derive(Debug)]
pub(crate) struct Endpoints {
    conns: Vec<EndpointConn>,
    /// Index of the endpoint that last answered a request.
    preferred: AtomicUsize,
}

impl Endpoints {
    pub(crate) fn new(conns: Vec<EndpointConn>) -> Result<Endpoints, Error> {
        if conns.is_empty() {
            return Err(Error::NoEndpoints);
        }
        Ok(Endpoints {
            conns,
            preferred: AtomicUsize::new(0),
        })
    }

    pub(crate) fn all(&self) -> &[EndpointConn] {
        &self.conns
    }

    /// The indexes to try, in order: the endpoint that last succeeded, then the others
    /// in configuration order after it (wrapping around).
    pub(crate) fn order(&self) -> impl Iterator<Item = usize> + use<> {
        try_order(self.preferred.load(Ordering::Relaxed), self.conns.len())
    }

    pub(crate) fn get(&self, index: usize) -> &EndpointConn {
        &self.conns[index % self.conns.len()]
    }

    /// Remembers that endpoint `index` answered.
    pub(crate) fn succeeded(&self, index: usize) {
        // Relaxed: this is only a hint for the next request; racing requests may each
        // store their own winner and either is fine.
        self.preferred.store(index, Ordering::Relaxed);
    }
}

/// `len` indexes starting at `first` and wrapping around.
pub(crate) fn try_order(first: usize, len: usize) -> impl Iterator<Item = usize> {
    let first = if len == 0 { 0 } else { first % len };
    (0..len).map(move |i| (first + i) % len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_http_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").ok(),
            Some("http://127.0.0.1:2379".to_string())
        );
        assert_eq!(
            normalize_endpoint(" ferrokv-0.ferrokv-peer.default.svc:2379 ").ok(),
            Some("http://ferrokv-0.ferrokv-peer.default.svc:2379".to_string())
        );
        assert_eq!(
            normalize_endpoint("[::1]:2379").ok(),
            Some("http://[::1]:2379".to_string())
        );
    }

    #[test]
    fn explicit_http_scheme_is_kept() {
        assert_eq!(
            normalize_endpoint("http://localhost:2379/").ok(),
            Some("http://localhost:2379".to_string())
        );
    }

    #[test]
    fn bad_endpoints_are_rejected_with_the_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("localhost", "missing port"),
            ("https://localhost:2379", "TLS"),
            ("grpc://localhost:2379", "scheme"),
            ("localhost:2379/v1", "no path"),
            ("local host:2379", "not a valid"),
            ("localhost:notaport", "not a valid port"),
            ("localhost:99999", "not a valid"),
        ] {
            match normalize_endpoint(input) {
                Err(Error::InvalidEndpoint { endpoint, message }) => {
                    assert_eq!(endpoint, input);
                    assert!(message.contains(reason), "{input:?}: {message}");
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn order_starts_at_the_preferred_endpoint_and_wraps() {
        assert_eq!(try_order(0, 3).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(try_order(2, 3).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(try_order(5, 3).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(try_order(0, 0).count(), 0);
    }

    #[test]
    fn lazy_channel_outside_a_runtime_is_an_error() {
        let config = ClientConfig::default();
        let result = lazy_channel("127.0.0.1:1", "http://127.0.0.1:1", &config);
        assert!(matches!(result, Err(Error::NoRuntime)));
    }
}
