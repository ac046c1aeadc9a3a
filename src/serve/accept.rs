//! Taking connections: accepting them, the caps they are admitted under, and closing the
//! idle ones to make room.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::limiter::Key;

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
