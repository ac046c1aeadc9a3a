//! Proxy mode's upstream connections, in the loop: a non-blocking connect, a socket with
//! its input buffer, and the pool of idle kept-alive ones. An idle connection that becomes
//! readable (the app closed it, or sent bytes nobody asked for) is closed at once: a
//! connection is reused only when its last answer ended exactly at its framing.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Upstream connections' tokens start here (client connections' are below, the listener's
/// and the waker's above).
pub(crate) const FIRST: usize = usize::MAX / 2;

/// Idle upstream connections kept for reuse (nginx `keepalive`, per worker).
const MAX_IDLE: usize = 64;

/// One upstream connection.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub stream: TcpStream,
    /// Bytes read and not used yet: an answer's head under way, or body bytes.
    pub input: Vec<u8>,
    /// It may have input not read yet (edge-triggered: until a read says `WouldBlock`).
    pub readable: bool,
    /// It may take bytes (edge-triggered, as `readable`).
    pub writable: bool,
    /// An event said the upstream's input ended (or failed): its reads go on to the end,
    /// a short one included (no other event will come).
    pub hup: bool,
    /// The exchange (client connection) using it; none while idle.
    pub client: Option<usize>,
}

/// The upstream connections of a worker.
#[derive(Debug)]
pub(crate) struct Pool {
    addrs: Vec<SocketAddr>,
    slots: Vec<Option<Upstream>>,
    free: Vec<usize>,
    /// Idle connections, the most recently used last.
    idle: Vec<usize>,
}

impl Pool {
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Pool {
        Pool {
            addrs,
            slots: Vec::new(),
            free: Vec::new(),
            idle: Vec::new(),
        }
    }

    /// The connection of token `t`, if `t` is one of the pool's.
    pub(crate) fn index(t: Token) -> Option<usize> {
        (t.0 >= FIRST && t.0 < usize::MAX - 16).then(|| t.0 - FIRST)
    }

    pub(crate) fn get(&mut self, i: usize) -> Option<&mut Upstream> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    pub(crate) fn addresses(&self) -> usize {
        self.addrs.len()
    }

    /// An idle connection for client `client`, the most recently used.
    pub(crate) fn take_idle(&mut self, client: usize) -> Option<usize> {
        let i = self.idle.pop()?;
        if let Some(up) = self.get(i) {
            up.client = Some(client);
        }
        Some(i)
    }

    /// Starts connecting to address `addr` for client `client`.
    pub(crate) fn connect(
        &mut self,
        registry: &Registry,
        addr: usize,
        client: usize,
    ) -> io::Result<usize> {
        let mut stream = TcpStream::connect(self.addrs[addr])?;
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) = registry.register(&mut stream, Token(FIRST + i), interest) {
            self.free.push(i);
            return Err(err);
        }
        self.slots[i] = Some(Upstream {
            stream,
            input: Vec::new(),
            readable: false,
            writable: false,
            hup: false,
            client: Some(client),
        });
        Ok(i)
    }

    /// Keeps connection `i` for another request, or closes it when enough are kept.
    pub(crate) fn give_back(&mut self, registry: &Registry, i: usize) {
        if self.idle.len() >= MAX_IDLE {
            return self.close(registry, i);
        }
        if let Some(up) = self.get(i) {
            up.client = None;
            up.input = Vec::new();
            self.idle.push(i);
        }
    }

    /// An event on connection `i` (`hup`: its input ended): whose exchange to go on with,
    /// if any. An idle one that becomes readable is closed: what it says was not asked
    /// for, or it ended.
    pub(crate) fn event(
        &mut self,
        registry: &Registry,
        i: usize,
        (readable, writable, hup): (bool, bool, bool),
    ) -> Option<usize> {
        let up = self.get(i)?;
        up.readable |= readable;
        up.writable |= writable;
        up.hup |= hup;
        match up.client {
            Some(client) => Some(client),
            // Room to write says nothing of what came in.
            None if !readable => None,
            None => {
                // An event may come late, for bytes read already: only what is there now
                // counts.
                let mut byte = [0u8; 1];
                let quiet = matches!(up.stream.peek(&mut byte),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock);
                up.readable = false;
                if !quiet {
                    self.close(registry, i);
                }
                None
            }
        }
    }

    pub(crate) fn close(&mut self, registry: &Registry, i: usize) {
        let Some(mut up) = self.slots.get_mut(i).and_then(Option::take) else {
            return;
        };
        let _ = registry.deregister(&mut up.stream);
        self.idle.retain(|&j| j != i);
        self.free.push(i);
    }

    /// Closes every idle connection (a drain keeps none).
    pub(crate) fn close_idle(&mut self, registry: &Registry) {
        for i in std::mem::take(&mut self.idle) {
            self.close(registry, i);
        }
    }
}

/// Whether a connect under way finished: `Ok(true)` connected, `Ok(false)` not yet.
pub(crate) fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(err) if err.raw_os_error() == Some(107) => Ok(false),
        Err(err) => Err(err),
    }
}
