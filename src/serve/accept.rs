//! Taking connections: accepting them from the listener and the `--metrics` one, the
//! caps they are admitted under (`--max-connections`, per address), and closing the idle
//! ones, oldest first, to make room.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};

use super::conn::{Conn, Phase};
use super::event_loop::{ACCEPT_BATCH, ACCEPT_PAUSE, Loop, METRICS};
use super::slot::Slot;
use super::timers::Kind;
use crate::limiter::Key;

/// The `--metrics` listener, in the loop.
pub(super) struct Metrics {
    pub(super) listener: TcpListener,
    pub(super) cache: Box<dyn Fn() -> Option<crate::CacheStats> + Send>,
    /// It may have connections waiting.
    pub(super) more: bool,
}

impl Metrics {
    pub(super) fn register(poll: &Poll, handed: crate::metrics::Listener) -> Option<Metrics> {
        let mut listener = TcpListener::from_std(handed.listener);
        let registered = poll
            .registry()
            .register(&mut listener, METRICS, Interest::READABLE);
        if let Err(err) = registered {
            log::error!("cannot serve --metrics: {err}");
            return None;
        }
        Some(Metrics {
            listener,
            cache: handed.cache,
            more: true,
        })
    }
}

impl Loop<'_> {
    /// Takes the connections waiting on either listener, up to a batch from each.
    pub(super) fn accept(&mut self) {
        if self.accept_paused.is_some_and(|until| until > self.now) {
            return;
        }
        self.accept_paused = None;
        if self.metrics.as_ref().is_some_and(|m| m.more) {
            self.accept_from(true);
        }
        if self.accept_more {
            self.accept_from(false);
        }
    }

    /// Accepts from the listener, or the `--metrics` one.
    fn accept_from(&mut self, metrics: bool) {
        for _ in 0..ACCEPT_BATCH {
            let listener = match metrics {
                true => self.metrics.as_ref().map(|m| &m.listener),
                false => self.listener.as_ref(),
            };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, metrics),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    match (metrics, self.metrics.as_mut()) {
                        (true, Some(m)) => m.more = false,
                        _ => self.accept_more = false,
                    }
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors or memory: the connections wait in the queue.
                Err(err) if matches!(err.raw_os_error(), Some(12 | 23 | 24 | 105)) => {
                    log::error!("cannot accept a connection: {err}; pausing for 100 ms");
                    self.accept_paused = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
                // A connection that went away, or was refused, before it was accepted.
                Err(err) if matches!(err.raw_os_error(), Some(1 | 71 | 103 | 110)) => {}
                // The listening socket itself failed: stop, as tiny_http's accept thread
                // did, after this turn's answers (a supervisor starts a new worker).
                Err(err) => {
                    self.accept_failed = Some(err);
                    return;
                }
            }
        }
    }

    /// Takes a new connection, or refuses it over a cap (closing an idle connection to make
    /// room first, as nginx reuses its keep-alive connections).
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, metrics: bool) {
        let ip = peer.ip().to_canonical();
        let limits = self.cx.limits;
        // Behind a trusted proxy the peer is the proxy: its clients are many, and the cap
        // on each of them is the proxy's to keep.
        let capped = limits.max_connections_per_address > 0 && !self.cx.guard.trusts(Some(ip));
        if capped
            && self
                .per_address
                .full(ip, limits.max_connections_per_address)
            && !self.evict(Some(ip))
        {
            crate::metrics::refused_at_accept(crate::metrics::Limit::MaxConnectionsPerAddress);
            return self.refuse(
                "too_many_from_address",
                "connections closed at once: their address holds --max-connections-per-address",
            );
        }
        if self.live >= limits.max_connections && !self.evict(None) {
            crate::metrics::refused_at_accept(crate::metrics::Limit::MaxConnections);
            return self.refuse(
                "too_many_connections",
                "connections closed at once: the server holds --max-connections",
            );
        }
        let t = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(t), interest)
            .is_err()
        {
            self.free.push(t);
            return;
        }
        let timer = self.timers.arm(Kind::Fresh, t, self.now, self.live);
        if capped {
            self.per_address.add(ip);
        }
        self.slots[t] = Some(Slot {
            stream,
            peer,
            conn: match self.cx.proxy {
                Some(_) if !metrics => Conn::passing_bodies(),
                _ => Conn::new(),
            },
            out: Vec::new(),
            unsent_id: None,
            readable: false,
            hup: false,
            eof: false,
            dead: false,
            lingering: false,
            more: false,
            timer,
            capped,
            metrics,
            progress: false,
            requests: 0,
            exchange: None,
        });
        self.live += 1;
    }

    fn refuse(&mut self, code: &'static str, text: &'static str) {
        self.refused += 1;
        self.refused_reason = (code, text);
    }

    /// Closes the connection idle the longest (from `ip` only, if given) to make room: one
    /// whose closing answer is out (lingering) first, then the oldest of those that sent
    /// nothing yet, wait between requests, or throw away a body already answered.
    fn evict(&mut self, ip: Option<IpAddr>) -> bool {
        let mut oldest: Option<(Instant, usize)> = None;
        for kind in [Kind::Linger, Kind::Fresh, Kind::Idle, Kind::Body] {
            let found = self.timers.oldest(kind).find(|&(t, seq)| {
                self.slots.get(t).and_then(Option::as_ref).is_some_and(|s| {
                    s.timer.seq == seq
                        && s.timer.kind == kind
                        && s.out.is_empty()
                        // A body thrown away is owed nothing: its answer is out.
                        && (s.lingering
                            || s.conn.is_idle()
                            || matches!(s.conn.phase(), Phase::Discard(_)))
                        && ip.is_none_or(|ip| PerAddress::same(s.peer.ip(), ip))
                })
            });
            if kind == Kind::Linger
                && let Some((t, _)) = found
            {
                self.close(t);
                return true;
            }
            if let Some((t, _)) = found {
                let since = self.slots[t].as_ref().map_or(self.now, |s| s.timer.since);
                if oldest.is_none_or(|(s, _)| since < s) {
                    oldest = Some((since, t));
                }
            }
        }
        match oldest {
            Some((_, t)) => {
                self.close(t);
                true
            }
            None => false,
        }
    }
}

/// Connections by client address, for `--max-connections-per-address`: grouped as the
/// brute-force limiter groups them (an IPv6 /64 is one host's usual share, and an
/// IPv4-mapped address is its IPv4 one), so that one host cannot take a slot per address
/// of its /64.
#[derive(Debug, Default)]
pub(super) struct PerAddress {
    counts: HashMap<Key, usize>,
}

impl PerAddress {
    /// Whether `ip` holds `cap` connections already.
    pub(super) fn full(&self, ip: IpAddr, cap: usize) -> bool {
        self.counts.get(&Key::of(ip)).copied().unwrap_or(0) >= cap
    }

    pub(super) fn add(&mut self, ip: IpAddr) {
        *self.counts.entry(Key::of(ip)).or_default() += 1;
    }

    pub(super) fn remove(&mut self, ip: IpAddr) {
        let key = Key::of(ip);
        if let Some(n) = self.counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// Whether `a` and `b` are counted as one address.
    pub(super) fn same(a: IpAddr, b: IpAddr) -> bool {
        Key::of(a) == Key::of(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv6_64_is_one_address_and_ipv4_mapped_is_ipv4() {
        let mut per = PerAddress::default();
        per.add(ip("2001:db8:1:2::1"));
        per.add(ip("2001:db8:1:2:ffff::9"));
        assert!(per.full(ip("2001:db8:1:2::77"), 2), "same /64: at the cap");
        assert!(!per.full(ip("2001:db8:1:3::1"), 2), "another /64: free");
        per.add(ip("::ffff:192.0.2.1"));
        assert!(per.full(ip("192.0.2.1"), 1), "IPv4-mapped counts as IPv4");
        assert!(!per.full(ip("192.0.2.2"), 1));
        assert!(PerAddress::same(ip("2001:db8::1"), ip("2001:db8::2")));
        per.remove(ip("2001:db8:1:2::5"));
        per.remove(ip("2001:db8:1:2::6"));
        assert!(
            !per.full(ip("2001:db8:1:2::1"), 1),
            "released by any address of it"
        );
    }
}
