//! The few system settings jwtguard makes: the listening socket (with a send timeout
//! every connection inherits), the limit on open files, and shutting down a client
//! connection tiny_http holds.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{SockaddrStorage, getpeername, getsockname};
use nix::sys::socket::{setsockopt, shutdown, sockopt};
use nix::sys::time::TimeVal;

/// How long one write to a client may wait for room in its socket's send buffer. A client
/// that reads its answers never makes a write wait: an answer is a few hundred bytes and
/// the buffer holds tens of kilobytes. A client that pipelines requests and does not read
/// the answers fills it; the serving thread then waits this long once, and stops
/// answering that connection. (The kernel rounds it up to whole clock ticks.)
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_millis(10);

/// Binds `addr` with `SO_SNDTIMEO` set to [`SEND_TIMEOUT`]: Linux gives accepted sockets
/// the listening socket's send timeout, so every write to a client is bounded. (Not
/// `SO_RCVTIMEO`: on a listening socket it also times out `accept`, and tiny_http's
/// accept thread would exit.)
pub(crate) fn listen(addr: &str) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    // The standard library listens with a queue of 128: a burst of connections (2000 idle
    // ones, say) fills it while tiny_http starts a thread for each, and every later
    // client's SYN is dropped and retried for seconds. SOMAXCONN, as systemd's sockets
    // have (the kernel caps it at net.core.somaxconn).
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)?;
    set_send_timeout(&listener)?;
    Ok(listener)
}

/// Binds `addr` with `SO_REUSEPORT`, so that an old and a new worker (a reload) can both
/// hold it: the metrics listener, which each worker binds itself.
pub(crate) fn listen_shared(addr: &str) -> io::Result<TcpListener> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, bind, socket};
    use std::net::ToSocketAddrs as _;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    nix::sys::socket::listen(&fd, Backlog::new(16)?)?;
    Ok(TcpListener::from(fd))
}

/// Sets `SO_SNDTIMEO` to [`SEND_TIMEOUT`] on a listening socket (one inherited too).
pub(crate) fn set_send_timeout(listener: &TcpListener) -> io::Result<()> {
    let timeout = TimeVal::new(0, SEND_TIMEOUT.as_micros() as _);
    setsockopt(listener, sockopt::SendTimeout, &timeout).map_err(io::Error::from)
}

/// How many threads this process has (0 when `/proc` cannot say).
pub(crate) fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How many sockets this process has open (`/proc/self/fd`): a draining server's
/// connections, and its upstream connections.
pub(crate) fn open_sockets() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:")
            })
        })
        .count()
}

/// Shuts down the client connections this process accepted on port `local_port` from
/// each peer given, each as given (`how`); returns how many it found. tiny_http gives no
/// handle to its sockets, so they are found among the open descriptors by their two
/// addresses: one pass over them all, about 1 µs a descriptor (2.2 ms with 2,000
/// connections open). After [`Shutdown::Both`], whatever is written to a connection fails
/// and tiny_http's thread for it reads the end of the stream and ends; [`Shutdown::Read`]
/// wakes a read waiting on it, and leaves it open for an answer.
#[inline(never)]
pub(crate) fn shutdown_peers(local_port: u16, peers: &[(SocketAddr, Shutdown)]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
    let mut found = 0;
    for entry in dir.filter_map(Result::ok) {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let local = getsockname::<SockaddrStorage>(fd).ok();
        if local.and_then(|a| socket_addr(&a)).map(|a| a.port()) != Some(local_port) {
            continue;
        }
        let Some(peer) = getpeername::<SockaddrStorage>(fd)
            .ok()
            .and_then(|a| socket_addr(&a))
        else {
            continue;
        };
        // Both of tiny_http's descriptors of a connection refer to its one socket: once is
        // enough, and a second shutdown does no harm.
        for &(_, how) in peers
            .iter()
            .filter(|(p, _)| canonical(*p) == canonical(peer))
        {
            let how = match how {
                Shutdown::Read => nix::sys::socket::Shutdown::Read,
                Shutdown::Write => nix::sys::socket::Shutdown::Write,
                Shutdown::Both => nix::sys::socket::Shutdown::Both,
            };
            if shutdown(fd, how).is_ok() {
                found += 1;
            }
        }
    }
    found
}

/// A socket address as the standard library's.
fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// Raises the soft limit on open files to the hard limit: each connection costs tiny_http
/// two descriptors, and its accept thread stops for good when it runs out. Returns the
/// limit now in force.
pub(crate) fn raise_open_files() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;

    #[test]
    fn a_client_connection_is_shut_down_by_its_addresses_and_no_other() {
        use std::io::{Read, Write};
        let listener = listen("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut one = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut other = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_accepted_one, peer_one) = listener.accept().unwrap();
        let (mut accepted_other, _) = listener.accept().unwrap();
        // The same peer address on another local port is not it.
        let both = [(peer_one, Shutdown::Both)];
        assert_eq!(shutdown_peers(port.wrapping_add(1), &both), 0);
        assert!(shutdown_peers(port, &both) >= 1);
        let mut got = Vec::new();
        one.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        one.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "closed");
        other.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        accepted_other.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x", "the other connection is untouched");
        drop(one);
    }

    #[test]
    fn accepted_sockets_inherit_the_send_timeout() {
        let listener = listen("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let set = getsockopt(&listener, sockopt::SendTimeout).unwrap();
        let inherited = getsockopt(&accepted, sockopt::SendTimeout).unwrap();
        assert_eq!(inherited, set);
        // The kernel keeps it in clock ticks: at least what was asked, within a tick.
        let micros = inherited.tv_sec() * 1_000_000 + inherited.tv_usec();
        let asked = SEND_TIMEOUT.as_micros() as i64;
        assert!((asked..asked + 10_000).contains(&micros), "{inherited:?}");
        // And no receive timeout: accept would time out with it.
        let timeout = getsockopt(&listener, sockopt::ReceiveTimeout).unwrap();
        assert_eq!(timeout, TimeVal::new(0, 0));
    }
}
