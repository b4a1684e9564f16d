//! Endpoints: `host:port` normalization, one lazy gRPC channel per endpoint (configured
//! or discovered from the member list), their health, the leader hint, and the order in
//! which a request tries them.

use std::sync::Mutex;

use ferrokv_proto::v1::{Member, ResponseHeader};
use tokio::time::Instant;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::retry::{endpoint_down_for, jittered};
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

/// Whether an endpoint was given by the caller or learned from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Given to [`Client::connect`](crate::Client::connect): kept for the client's
    /// lifetime (it may be a Service name that stands for any member).
    Configured,
    /// A member's advertised client address (member list or a response header):
    /// dropped when the member leaves the cluster.
    Discovered,
}

/// Which endpoint a request would rather reach first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Writes: the leader, when known (a follower would forward it there anyway).
    Leader,
    /// Reads and everything else: the endpoint that answered last.
    AnyMember,
}

/// One endpoint to try, as the attempt loop sees it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// As configured or advertised: what errors show.
    pub(crate) name: String,
    /// Normalized URI: the key in the table.
    pub(crate) uri: String,
    pub(crate) channel: Channel,
}

#[derive(Debug)]
struct Entry {
    name: String,
    uri: String,
    source: Source,
    channel: Channel,
    /// Failures to reach it in a row.
    failures: u32,
    /// Until then it is tried only after the endpoints that are not down.
    down_until: Option<Instant>,
}

#[derive(Debug)]
struct Table {
    entries: Vec<Entry>,
    /// URI of the leader as the last response header named it.
    leader: Option<String>,
    /// URI of the endpoint that answered last.
    preferred: Option<String>,
    /// Whether any endpoint ever answered (a wrong endpoint list fails fast).
    ever_answered: bool,
}

/// Every endpoint the client knows, their connections and health, and the leader hint.
///
/// The lock is a plain mutex held only for bookkeeping, never across an `.await`:
/// requests take a snapshot of the order ([`Endpoints::plan`]) and report back.
#[derive(Debug)]
pub(crate) struct Endpoints {
    table: Mutex<Table>,
    config: ClientConfig,
}

impl Endpoints {
    /// The configured endpoints, normalized and deduplicated, each with a lazy channel.
    pub(crate) fn new(names: Vec<String>, config: &ClientConfig) -> Result<Endpoints, Error> {
        let mut entries: Vec<Entry> = Vec::new();
        for name in names {
            let name = name.trim().to_string();
            let uri = normalize_endpoint(&name)?;
            if entries.iter().any(|e| e.uri == uri) {
                continue;
            }
            let channel = lazy_channel(&name, &uri, config)?;
            entries.push(Entry {
                name,
                uri,
                source: Source::Configured,
                channel,
                failures: 0,
                down_until: None,
            });
        }
        if entries.is_empty() {
            return Err(Error::NoEndpoints);
        }
        Ok(Endpoints {
            table: Mutex::new(Table {
                entries,
                leader: None,
                preferred: None,
                ever_answered: false,
            }),
            config: config.clone(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent after every statement that changes it, so a panic
        // elsewhere while it was held leaves nothing half-done: keep using it.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every known endpoint: configured ones first (in configuration order), then the
    /// discovered ones.
    pub(crate) fn names(&self) -> Vec<String> {
        self.table()
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// The configured endpoints.
    pub(crate) fn configured(&self) -> Vec<Target> {
        let table = self.table();
        table
            .entries
            .iter()
            .filter(|e| e.source == Source::Configured)
            .map(Entry::target)
            .collect()
    }

    /// The leader's endpoint as last learned, if any.
    pub(crate) fn leader(&self) -> Option<String> {
        let table = self.table();
        let uri = table.leader.as_ref()?;
        table
            .entries
            .iter()
            .find(|e| &e.uri == uri)
            .map(|e| e.name.clone())
    }

    pub(crate) fn ever_answered(&self) -> bool {
        self.table().ever_answered
    }

    /// The endpoints to try for one round, in order (see [`order`]).
    pub(crate) fn plan(&self, route: Route) -> Vec<Target> {
        let table = self.table();
        let candidates: Vec<Candidate> = table
            .entries
            .iter()
            .map(|e| Candidate {
                leader: route == Route::Leader && table.leader.as_ref() == Some(&e.uri),
                preferred: table.preferred.as_ref() == Some(&e.uri),
                down_until: e.down_until,
            })
            .collect();
        order(&candidates, Instant::now())
            .into_iter()
            .map(|i| table.entries[i].target())
            .collect()
    }

    /// A target for `name`, known or not (for per-endpoint requests such as Status).
    pub(crate) fn target(&self, name: &str) -> Result<Target, Error> {
        let name = name.trim();
        let uri = normalize_endpoint(name)?;
        if let Some(entry) = self.table().entries.iter().find(|e| e.uri == uri) {
            return Ok(Target {
                name: name.to_string(),
                ..entry.target()
            });
        }
        Ok(Target {
            name: name.to_string(),
            channel: lazy_channel(name, &uri, &self.config)?,
            uri,
        })
    }

    /// Endpoint `uri` answered (with `header`, when the answer has one): it is healthy,
    /// preferred next time, and the header's leader becomes the leader hint.
    pub(crate) fn answered(&self, uri: &str, header: Option<&ResponseHeader>) {
        let mut table = self.table();
        table.ever_answered = true;
        table.preferred = Some(uri.to_string());
        if let Some(entry) = table.entries.iter_mut().find(|e| e.uri == uri) {
            entry.failures = 0;
            entry.down_until = None;
        }
        let Some(header) = header else { return };
        if header.leader_id == 0 {
            table.leader = None;
            return;
        }
        let addr = header.leader_client_addr.trim();
        if addr.is_empty() {
            return;
        }
        match normalize_endpoint(addr) {
            Ok(leader_uri) => {
                if !table.entries.iter().any(|e| e.uri == leader_uri) {
                    match lazy_channel(addr, &leader_uri, &self.config) {
                        Ok(channel) => table.entries.push(Entry {
                            name: addr.to_string(),
                            uri: leader_uri.clone(),
                            source: Source::Discovered,
                            channel,
                            failures: 0,
                            down_until: None,
                        }),
                        Err(_) => return,
                    }
                }
                table.leader = Some(leader_uri);
            }
            Err(err) => {
                tracing::debug!(%err, "ignoring the leader's unusable client address");
            }
        }
    }

    /// Endpoint `uri` could not be reached, or its connection broke mid-request: try it
    /// last for a while, forget it as leader, and replace its channel so the next
    /// attempt dials afresh — resolving its name again, since a pod that moved has a
    /// new IP behind the same DNS name.
    pub(crate) fn failed(&self, uri: &str) {
        let mut table = self.table();
        if table.leader.as_deref() == Some(uri) {
            table.leader = None;
        }
        if table.preferred.as_deref() == Some(uri) {
            table.preferred = None;
        }
        let config = self.config.clone();
        if let Some(entry) = table.entries.iter_mut().find(|e| e.uri == uri) {
            entry.failures = entry.failures.saturating_add(1);
            entry.down_until = Some(Instant::now() + jittered(endpoint_down_for(entry.failures)));
            if let Ok(channel) = lazy_channel(&entry.name, &entry.uri, &config) {
                entry.channel = channel;
            }
        }
    }

    /// Replaces the discovered endpoints with the members' advertised client addresses
    /// (configured endpoints stay). Returns how many endpoints are known afterwards.
    pub(crate) fn set_members(&self, members: &[Member]) -> usize {
        let addrs: Vec<(String, String)> = members
            .iter()
            .map(|m| m.client_addr.trim())
            .filter(|a| !a.is_empty())
            .filter_map(|a| normalize_endpoint(a).ok().map(|uri| (a.to_string(), uri)))
            .collect();
        let mut table = self.table();
        table
            .entries
            .retain(|e| e.source == Source::Configured || addrs.iter().any(|(_, u)| *u == e.uri));
        for (name, uri) in addrs {
            if table.entries.iter().any(|e| e.uri == uri) {
                continue;
            }
            if let Ok(channel) = lazy_channel(&name, &uri, &self.config) {
                table.entries.push(Entry {
                    name,
                    uri,
                    source: Source::Discovered,
                    channel,
                    failures: 0,
                    down_until: None,
                });
            }
        }
        let known: Vec<String> = table.entries.iter().map(|e| e.uri.clone()).collect();
        if table.leader.as_ref().is_some_and(|l| !known.contains(l)) {
            table.leader = None;
        }
        if table.preferred.as_ref().is_some_and(|p| !known.contains(p)) {
            table.preferred = None;
        }
        table.entries.len()
    }
}

impl Entry {
    fn target(&self) -> Target {
        Target {
            name: self.name.clone(),
            uri: self.uri.clone(),
            channel: self.channel.clone(),
        }
    }
}

/// What the order of one round depends on, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Candidate {
    /// It is the leader and the request would rather go there.
    pub(crate) leader: bool,
    /// It answered last.
    pub(crate) preferred: bool,
    pub(crate) down_until: Option<Instant>,
}

/// The order in which one round tries the endpoints (indexes into `candidates`):
/// endpoints that are not down first — the leader (when the request wants it), then
/// the one that answered last, then the rest in table order starting after it — and
/// then the endpoints that are down, soonest back first. Every endpoint is in the
/// round once: when all are down, the client still tries them.
pub(crate) fn order(candidates: &[Candidate], now: Instant) -> Vec<usize> {
    let len = candidates.len();
    let start = candidates.iter().position(|c| c.preferred).unwrap_or(0);
    let is_down = |c: &Candidate| c.down_until.is_some_and(|until| until > now);
    let mut up: Vec<usize> = Vec::with_capacity(len);
    let mut down: Vec<usize> = Vec::new();
    for i in try_order(start, len) {
        if is_down(&candidates[i]) {
            down.push(i);
        } else {
            up.push(i);
        }
    }
    // Stable: among the endpoints that are up, the rotation order is kept.
    up.sort_by_key(|&i| !candidates[i].leader);
    down.sort_by_key(|&i| candidates[i].down_until);
    up.extend(down);
    up
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
    fn try_order_starts_at_the_preferred_endpoint_and_wraps() {
        assert_eq!(try_order(0, 3).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(try_order(2, 3).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(try_order(5, 3).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(try_order(0, 0).count(), 0);
    }

    fn at(now: Instant, millis: u64) -> Option<Instant> {
        Some(now + std::time::Duration::from_millis(millis))
    }

    #[test]
    fn leader_goes_first_then_the_last_to_answer_then_the_rest() {
        let now = Instant::now();
        let c = |leader, preferred| Candidate {
            leader,
            preferred,
            down_until: None,
        };
        let candidates = [
            c(false, false),
            c(false, true),
            c(true, false),
            c(false, false),
        ];
        assert_eq!(order(&candidates, now), vec![2, 1, 3, 0]);
        let no_leader = [c(false, false), c(false, true), c(false, false)];
        assert_eq!(order(&no_leader, now), vec![1, 2, 0]);
    }

    #[test]
    fn endpoints_that_are_down_go_last_soonest_back_first_even_the_leader() {
        let now = Instant::now();
        let candidates = [
            Candidate {
                down_until: at(now, 500),
                ..Candidate::default()
            },
            Candidate {
                leader: true,
                down_until: at(now, 100),
                ..Candidate::default()
            },
            Candidate::default(),
            Candidate {
                down_until: Some(now),
                ..Candidate::default()
            },
        ];
        // Index 3's down time is over: it is up again.
        assert_eq!(order(&candidates, now), vec![2, 3, 1, 0]);
    }

    #[tokio::test]
    async fn header_leader_is_learned_and_added_when_unknown() {
        let endpoints =
            Endpoints::new(vec!["127.0.0.1:1".into()], &ClientConfig::default()).expect("valid");
        let header = ResponseHeader {
            leader_id: 3,
            leader_client_addr: "127.0.0.1:3".into(),
            ..ResponseHeader::default()
        };
        endpoints.answered("http://127.0.0.1:1", Some(&header));
        assert_eq!(endpoints.names(), ["127.0.0.1:1", "127.0.0.1:3"]);
        assert_eq!(endpoints.leader().as_deref(), Some("127.0.0.1:3"));
        let plan: Vec<String> = endpoints
            .plan(Route::Leader)
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(plan, ["127.0.0.1:3", "127.0.0.1:1"]);
        let plan: Vec<String> = endpoints
            .plan(Route::AnyMember)
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(plan, ["127.0.0.1:1", "127.0.0.1:3"]);
        endpoints.failed("http://127.0.0.1:3");
        assert_eq!(endpoints.leader(), None);
    }

    #[tokio::test]
    async fn member_list_replaces_discovered_endpoints_and_keeps_configured_ones() {
        let endpoints = Endpoints::new(
            vec!["127.0.0.1:1".into(), "http://127.0.0.1:1".into()],
            &ClientConfig::default(),
        )
        .expect("valid");
        assert_eq!(endpoints.names(), ["127.0.0.1:1"], "duplicates dropped");
        let member = |addr: &str| Member {
            client_addr: addr.into(),
            ..Member::default()
        };
        endpoints.set_members(&[member("127.0.0.1:1"), member("127.0.0.1:2"), member("")]);
        assert_eq!(endpoints.names(), ["127.0.0.1:1", "127.0.0.1:2"]);
        endpoints.set_members(&[member("127.0.0.1:3")]);
        assert_eq!(endpoints.names(), ["127.0.0.1:1", "127.0.0.1:3"]);
    }

    #[test]
    fn lazy_channel_outside_a_runtime_is_an_error() {
        let config = ClientConfig::default();
        let result = lazy_channel("127.0.0.1:1", "http://127.0.0.1:1", &config);
        assert!(matches!(result, Err(Error::NoRuntime)));
    }
}
