//! `sd_notify(3)`: telling systemd that the service is ready, reloading, alive.

use std::os::unix::net::UnixDatagram;

/// systemd's notification socket (`NOTIFY_SOCKET`), if the service has one.
pub(crate) struct Notify {
    socket: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notify {
    /// From `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
    pub(crate) fn from_env() -> Option<Notify> {
        use std::os::linux::net::SocketAddrExt as _;
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?,
            None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notify { socket, addr })
    }

    /// Sends `state` (`READY=1`, `WATCHDOG=1`, ...); systemd not listening is not an
    /// error of ours.
    pub(crate) fn send(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.addr);
    }
}
