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
    set_send_timeout(&listener)?;
    Ok(listener)
}

/// Sets `SO_SNDTIMEO` to [`SEND_TIMEOUT`] on a listening socket (one inherited too).
pub(crate) fn set_send_timeout(listener: &TcpListener) -> io::Result<()> {
    let timeout = TimeVal::new(0, SEND_TIMEOUT.as_micros() as _);
    setsockopt(listener, sockopt::SendTimeout, &timeout).map_err(io::Error::from)
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

/// Shuts down (`how`) the client connection this process accepted on port `local_port`
/// from `peer`: tiny_http gives no handle to its sockets, so it is found among the open
/// descriptors by its two addresses. Returns whether one was found. After
/// [`Shutdown::Both`], whatever is written to it fails and tiny_http's connection thread
/// reads the end of the stream and ends; [`Shutdown::Read`] wakes a read waiting on it.
pub(crate) fn shutdown_peer(local_port: u16, peer: SocketAddr, how: Shutdown) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    let same = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
    };
    let how = match how {
        Shutdown::Read => nix::sys::socket::Shutdown::Read,
        Shutdown::Write => nix::sys::socket::Shutdown::Write,
        Shutdown::Both => nix::sys::socket::Shutdown::Both,
    };
    let mut found = false;
    for entry in dir.filter_map(Result::ok) {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let address = |ours: bool| {
            let addr = if ours {
                getsockname::<SockaddrStorage>(fd)
            } else {
                getpeername::<SockaddrStorage>(fd)
            };
            addr.ok().and_then(|a| socket_addr(&a))
        };
        let matches = address(true).is_some_and(|local| local.port() == local_port)
            && address(false).is_some_and(|p| same(p, peer));
        // Both of tiny_http's descriptors of the connection refer to the one socket: once
        // is enough, but a second shutdown does no harm.
        if matches && shutdown(fd, how).is_ok() {
            found = true;
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
