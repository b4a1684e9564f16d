//! Which replica process owns the far end of a loopback TCP connection, read from `/proc`:
//! how the peer proxies tell replicas apart when a replica cannot choose the source IP of
//! its peer connections (etcd dials from 127.0.0.1 like every other local process).
//!
//! The proxy accepted a connection from `peer` on `local`; the replica's own socket is the
//! one whose local end is `peer` and whose remote end is `local`. `/proc/net/tcp` (and
//! `tcp6`, for IPv4-mapped sockets) gives that socket's inode, and the replica whose
//! `/proc/PID/fd` holds `socket:[inode]` is the source.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The slot whose process (of `processes`, slot -> pid) owns the connection that the
/// proxy listening on `local` accepted from `peer`; `None` when no process of theirs does
/// (it exited meanwhile, or the connection came from elsewhere).
pub fn owner_slot(
    peer: SocketAddr,
    local: SocketAddr,
    processes: &BTreeMap<usize, u32>,
) -> Option<usize> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|path| {
            let table = std::fs::read_to_string(path).ok()?;
            socket_inode(&table, peer, local)
        })?;
    let link = format!("socket:[{inode}]");
    processes
        .iter()
        .find(|(_, pid)| holds(**pid, &link))
        .map(|(slot, _)| *slot)
}

/// Whether process `pid` has an open file descriptor that reads as `link`.
fn holds(pid: u32, link: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.as_os_str() == link)
}

/// The inode of the socket in a `/proc/net/tcp{,6}` table whose local end is `local` and
/// remote end is `remote`.
fn socket_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (want_local, want_remote) = (proc_addr(local)?, proc_addr(remote)?);
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (l, r, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        let matches = [(l, &want_local), (r, &want_remote)]
            .iter()
            .all(|(got, want)| want.iter().any(|w| got.eq_ignore_ascii_case(w)));
        if matches { inode.parse().ok() } else { None }
    })
}

/// How `/proc/net/tcp` (IPv4) and `/proc/net/tcp6` (the IPv4-mapped form) print an IPv4
/// socket address: the address as 32-bit words in host byte order, the port in hex.
fn proc_addr(addr: SocketAddr) -> Option<[String; 2]> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let word = |ip: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(ip.octets()));
    let mapped_prefix = format!(
        "0000000000000000{:08X}",
        u32::from_ne_bytes([0, 0, 0xff, 0xff])
    );
    let port = addr.port();
    Some([
        format!("{}:{port:04X}", word(ip)),
        format!("{mapped_prefix}{}:{port:04X}", word(ip)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_row_is_found_by_both_ends_and_its_inode_read() {
        // 127.0.0.1:40000 -> 127.0.0.101:12000, as a little-endian kernel prints it.
        let ne = |ip: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(ip));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             \x20  0: {}:2EE0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0\n\
             \x20  1: {}:9C40 {}:2EE0 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n",
            ne([127, 0, 0, 101]),
            ne([127, 0, 0, 1]),
            ne([127, 0, 0, 101]),
        );
        let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let proxy: SocketAddr = "127.0.0.101:12000".parse().expect("addr");
        assert_eq!(socket_inode(&table, client, proxy), Some(4242));
        // The proxy's own end of the same connection is not the replica's socket.
        assert_eq!(socket_inode(&table, proxy, client), None);
    }

    #[test]
    fn a_connection_from_this_process_is_traced_back_to_it() {
        let listener = std::net::TcpListener::bind("127.0.0.101:0").expect("bind");
        let local = listener.local_addr().expect("addr");
        let stream = std::net::TcpStream::connect(local).expect("connect");
        let (_accepted, peer) = listener.accept().expect("accept");
        assert_eq!(stream.local_addr().expect("addr"), peer);
        let me = BTreeMap::from([(1, 1_000_000_000), (3, std::process::id())]);
        assert_eq!(owner_slot(peer, local, &me), Some(3));
        let others = BTreeMap::from([(1, 1_000_000_000)]);
        assert_eq!(owner_slot(peer, local, &others), None);
    }
}
