//! The few system settings jwtguard makes: the listening sockets and the limit on open
//! files.

use std::io;
use std::net::TcpListener;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{SockaddrStorage, setsockopt, sockopt};

/// Binds `addr` and listens with a queue of `SOMAXCONN`.
pub(crate) fn listen(addr: &str) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    // The standard library listens with a queue of 128: a burst of connections (2000 at
    // once, say) fills it before a turn of the loop accepts them, and every later client's
    // SYN is dropped and retried for seconds. SOMAXCONN, as systemd's sockets have (the
    // kernel caps it at net.core.somaxconn).
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)?;
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

/// Raises the soft limit on open files to the hard limit: each connection costs a
/// descriptor (two in proxy mode, with its upstream connection). Returns the limit now in
/// force.
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
