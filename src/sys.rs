//! The few system settings jwtguard makes: the listening socket (with a send timeout
//! every connection inherits) and the limit on open files.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{setsockopt, sockopt};
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
