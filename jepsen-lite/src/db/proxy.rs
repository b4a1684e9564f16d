//! The harness-owned TCP proxies in front of every replica's peer port: they see which
//! replica a connection comes from and where it goes (which proxy), so they can cut any
//! set of links. A cut link closes its open connections and closes new ones as soon as
//! they are accepted, in both directions.
//!
//! The source is the replica whose loopback IP the connection comes from (ferrokv binds
//! `--peer-source-ip`), else the registered replica process that owns the connection's
//! other end ([`socket_owner`], for etcd, which always dials from 127.0.0.1). A connection
//! whose source is unknown is treated as coming from every replica: it is cut whenever any
//! link of its destination is.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use super::{DbError, slot_of, socket_owner};
use crate::nemesis::plan::Cuts;

#[derive(Default)]
struct State {
    cuts: Cuts,
    /// Open connections: id -> (from slot if known, to slot, the task copying it).
    conns: HashMap<u64, (Option<usize>, usize, AbortHandle)>,
    next_id: u64,
    /// Replica processes by slot, for telling connections from 127.0.0.1 apart.
    processes: BTreeMap<usize, u32>,
}

/// Whether the link from `from` (unknown: any replica) to `to` is cut.
fn is_cut(cuts: &Cuts, from: Option<usize>, to: usize) -> bool {
    match from {
        Some(a) => cuts.contains(&(a.min(to), a.max(to))),
        None => cuts.iter().any(|(a, b)| *a == to || *b == to),
    }
}

/// All proxies of one cluster.
pub struct Network {
    state: Arc<Mutex<State>>,
    listeners: Vec<JoinHandle<()>>,
}

impl Network {
    pub fn new() -> Network {
        Network {
            state: Arc::default(),
            listeners: Vec::new(),
        }
    }

    /// Records the process now running slot `slot`'s replica (`None`: none runs), so that
    /// its connections are recognised by their owner when not by their source IP.
    pub fn set_process(&self, slot: usize, pid: Option<u32>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match pid {
            Some(pid) => state.processes.insert(slot, pid),
            None => state.processes.remove(&slot),
        };
    }

    /// Listens on `listen` for connections to slot `to`, forwarding them to `target`.
    pub async fn add_route(
        &mut self,
        to: usize,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> Result<(), DbError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(DbError::io(format!("binding the peer proxy on {listen}")))?;
        let state = self.state.clone();
        self.listeners.push(tokio::spawn(accept_loop(
            listener, listen, to, target, state,
        )));
        Ok(())
    }

    /// Cuts exactly `cuts` (previous cuts not in it are healed).
    pub fn set_cuts(&self, cuts: &Cuts) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.cuts = cuts.clone();
        let doomed: Vec<u64> = state
            .conns
            .iter()
            .filter(|(_, (from, to, _))| is_cut(cuts, *from, *to))
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            if let Some((_, _, task)) = state.conns.remove(&id) {
                // Dropping the copy task drops both sockets: the connection closes.
                task.abort();
            }
        }
    }

    pub fn stop(&mut self) {
        for l in self.listeners.drain(..) {
            l.abort();
        }
        self.set_cuts(&Cuts::new());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (_, _, task)) in state.conns.drain() {
            task.abort();
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    listen: SocketAddr,
    to: usize,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
) {
    loop {
        let Ok((inbound, from_addr)) = listener.accept().await else {
            // Out of file descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let from = source_slot(from_addr, listen, &state).await;
            admit(inbound, from, to, target, state);
        });
    }
}

/// The replica a connection accepted from `peer` on `listen` comes from.
async fn source_slot(
    peer: SocketAddr,
    listen: SocketAddr,
    state: &Arc<Mutex<State>>,
) -> Option<usize> {
    if let Some(slot) = slot_of(peer.ip()) {
        return Some(slot);
    }
    let processes = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .processes
        .clone();
    if processes.is_empty() {
        return None;
    }
    // Reading /proc is blocking file I/O.
    tokio::task::spawn_blocking(move || socket_owner::owner_slot(peer, listen, &processes))
        .await
        .ok()
        .flatten()
}

/// Starts copying `inbound` to `target` unless its link is cut.
fn admit(
    inbound: TcpStream,
    from: Option<usize>,
    to: usize,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
) {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    if is_cut(&guard.cuts, from, to) {
        return;
    }
    let id = guard.next_id;
    guard.next_id += 1;
    let state2 = state.clone();
    // Registered under the same lock as the cut check, so a cut made meanwhile cannot
    // miss this connection.
    let task = tokio::spawn(async move {
        pipe(inbound, target).await;
        state2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .remove(&id);
    });
    guard.conns.insert(id, (from, to, task.abort_handle()));
}

async fn pipe(mut inbound: TcpStream, target: SocketAddr) {
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::*;
    use crate::db::{node_ip, proxy_ip};

    async fn connect_from(slot: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(node_ip(slot), 0))?;
        socket.connect(to).await
    }

    /// Echo server standing in for a replica's peer port.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind((node_ip(2), 0)).await.expect("bind echo");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }

    /// A network with one route: a proxy for slot 2 in front of an echo server.
    async fn proxy_to_echo() -> (Network, SocketAddr) {
        let target = echo().await;
        let port = crate::db::free_port(proxy_ip(2)).expect("port");
        let listen = SocketAddr::new(proxy_ip(2), port);
        let mut net = Network::new();
        net.add_route(2, listen, target).await.expect("route");
        (net, listen)
    }

    #[tokio::test]
    async fn a_cut_link_closes_open_connections_and_refuses_new_ones_until_healed() {
        let (net, listen) = proxy_to_echo().await;

        let mut from1 = connect_from(1, listen).await.expect("connect 1->2");
        let mut from3 = connect_from(3, listen).await.expect("connect 3->2");
        assert!(round_trip(&mut from1).await);
        assert!(round_trip(&mut from3).await);

        net.set_cuts(&Cuts::from([(1, 2)]));
        assert!(!round_trip(&mut from1).await, "cut connection must close");
        assert!(round_trip(&mut from3).await, "other links stay up");
        let mut again = connect_from(1, listen)
            .await
            .expect("tcp accept still happens");
        assert!(
            !round_trip(&mut again).await,
            "new connection on a cut link is closed"
        );

        net.set_cuts(&Cuts::new());
        let mut healed = connect_from(1, listen).await.expect("connect after heal");
        assert!(round_trip(&mut healed).await);
    }

    #[tokio::test]
    async fn connections_from_127_0_0_1_are_told_apart_by_the_process_that_owns_them() {
        let (net, listen) = proxy_to_echo().await;
        let plain = || TcpStream::connect(listen);

        // Nobody registered: the source is unknown, so any cut at slot 2 closes it.
        let mut unknown = plain().await.expect("connect");
        assert!(round_trip(&mut unknown).await);
        net.set_cuts(&Cuts::from([(2, 3)]));
        assert!(
            !round_trip(&mut unknown).await,
            "unknown source, destination cut"
        );

        // This test process is slot 1's replica: only the 1-2 link matters for it.
        net.set_process(1, Some(std::process::id()));
        let mut mine = plain().await.expect("connect");
        assert!(round_trip(&mut mine).await, "link 1-2 is not cut");
        net.set_cuts(&Cuts::from([(1, 2)]));
        assert!(!round_trip(&mut mine).await, "link 1-2 cut");
        let mut again = plain().await.expect("tcp accept still happens");
        assert!(
            !round_trip(&mut again).await,
            "new connection on the cut link"
        );
        net.set_cuts(&Cuts::new());
        let mut healed = plain().await.expect("connect after heal");
        assert!(round_trip(&mut healed).await);
    }
}
