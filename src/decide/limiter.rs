//! The brute-force limiter: failed authentications counted per client address in a
//! fixed-size table; past the limit within the window, the address is refused (429) until
//! that window ends, whatever its token.
//!
//! The table is set-associative: a keyed hash (SipHash under a per-process random key, so
//! that no one can aim addresses at one set) picks a set of [`WAYS`] entries, each under its
//! own lock, and a new address takes the free or expired entry of its set, else the oldest
//! one that is not blocked, else the oldest. Memory is bounded at start-up, whatever the
//! number of addresses: a set is allocated at its first failure (a worker that sees none
//! keeps a 4,096-entry table's 136 KiB out of its resident memory; a flood fills them all,
//! never more); an address forgotten starts again from zero failures. Time is the
//! monotonic clock: setting the wall clock back neither lifts nor prolongs a block.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::Reason;

/// Entries per set: a lookup compares at most this many keys.
const WAYS: usize = 8;

/// Whether a refusal for `reason` counts as a failed authentication: a token that is not
/// the issuer's (a guess, a forgery, an algorithm confusion, garbage). An expired or missing token, a bad header
/// or a missing scope is a client's mistake, not a guess, and does not count.
pub(crate) fn counts(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::BadSignature
            | Reason::UnknownKey
            | Reason::MalformedToken
            | Reason::AlgNotAllowed
            | Reason::AlgorithmMismatch
    )
}

/// Who is counted: an IPv4 address, or an IPv6 /64 (one host's usual share).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key(u128);

impl Key {
    pub(crate) fn of(ip: IpAddr) -> Key {
        match ip.to_canonical() {
            // The low half is not zero: no IPv6 /64 key (whose low half is) can equal it.
            IpAddr::V4(v4) => Key(1 << 32 | u128::from(u32::from(v4))),
            IpAddr::V6(v6) => Key(u128::from(v6) & !u128::from(u64::MAX)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Key,
    /// When its window began, in ms since the limiter was made.
    start: u64,
    /// Failures in that window; 0 for a free entry.
    failures: u32,
    /// The block of this window has been recorded (once per window).
    recorded: bool,
}

const FREE: Entry = Entry {
    key: Key(0),
    start: 0,
    failures: 0,
    recorded: false,
};

/// A block: refuse with 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// Seconds left in the window, at least 1: the `Retry-After`.
    pub retry_after: u32,
    /// The failures counted in the window.
    pub failures: u32,
    /// This is the first refusal of the window: record it.
    pub first: bool,
}

/// The limiter: `--max-failures` within `--failure-window` per address.
pub(crate) struct Limiter {
    max: u32,
    window_ms: u64,
    clock: Instant,
    hasher: std::collections::hash_map::RandomState,
    /// Each set allocated at its first failure, so that the sets no address failed in
    /// take no memory.
    sets: Box<[OnceLock<Box<Set>>]>,
}

type Set = Mutex<[Entry; WAYS]>;

fn lock(set: &Set) -> std::sync::MutexGuard<'_, [Entry; WAYS]> {
    // A panic never holds this lock (nothing in it panics; and panic = abort).
    set.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("max", &self.max)
            .field("window_ms", &self.window_ms)
            .field("entries", &(self.sets.len() * WAYS))
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// `max` failures in `window_secs` per address, for `entries` addresses (rounded up to
    /// a whole set); `None` when `max` is 0 (off).
    pub(crate) fn new(max: u32, window_secs: u64, entries: usize) -> Option<Limiter> {
        (max > 0).then(|| Limiter {
            max,
            window_ms: window_secs.saturating_mul(1000),
            clock: Instant::now(),
            hasher: Default::default(),
            sets: (0..entries.div_ceil(WAYS).max(1))
                .map(|_| OnceLock::new())
                .collect(),
        })
    }

    /// Now, in ms on the limiter's monotonic clock.
    pub(crate) fn now(&self) -> u64 {
        let elapsed = crate::time::monotonic().saturating_duration_since(self.clock);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// `key`'s set, allocated at its first failure.
    fn set(&self, key: Key) -> std::sync::MutexGuard<'_, [Entry; WAYS]> {
        lock(
            self.slot(key)
                .get_or_init(|| Box::new(Mutex::new([FREE; WAYS]))),
        )
    }

    /// `key`'s set if it was allocated; `None` (no entry) if no address in it ever failed.
    fn existing(&self, key: Key) -> Option<std::sync::MutexGuard<'_, [Entry; WAYS]>> {
        self.slot(key).get().map(|set| lock(set))
    }

    fn slot(&self, key: Key) -> &OnceLock<Box<Set>> {
        &self.sets[self.hasher.hash_one(key.0) as usize % self.sets.len()]
    }

    /// Whether `entry`'s window is over at `now`.
    fn expired(&self, entry: &Entry, now: u64) -> bool {
        entry.failures == 0 || now.saturating_sub(entry.start) >= self.window_ms
    }

    /// The block on `ip` at `now` (ms), if any: its one lookup on the request path.
    pub(crate) fn check(&self, ip: IpAddr, now: u64) -> Option<Block> {
        let key = Key::of(ip);
        let mut set = self.existing(key)?;
        let entry = set.iter_mut().find(|e| e.key == key && e.failures > 0)?;
        if self.expired(entry, now) || entry.failures < self.max {
            return None;
        }
        let left = (entry.start + self.window_ms).saturating_sub(now);
        let first = !entry.recorded;
        entry.recorded = true;
        Some(Block {
            retry_after: u32::try_from(left.div_ceil(1000).max(1)).unwrap_or(u32::MAX),
            failures: entry.failures,
            first,
        })
    }

    /// Counts a failed authentication from `ip` at `now` (ms).
    pub(crate) fn fail(&self, ip: IpAddr, now: u64) {
        let key = Key::of(ip);
        let mut set = self.set(key);
        let at = match set.iter().position(|e| e.key == key && e.failures > 0) {
            Some(at) => at,
            None => {
                // Free or expired first, then the oldest not blocked, then the oldest: an
                // attacker's own block is the last thing a flood of new addresses evicts.
                let at = (0..WAYS)
                    .min_by_key(|&i| {
                        let e = &set[i];
                        let rank = if self.expired(e, now) {
                            0
                        } else if e.failures < self.max {
                            1
                        } else {
                            2
                        };
                        (rank, e.start)
                    })
                    .expect("WAYS > 0");
                set[at] = Entry { key, ..FREE };
                at
            }
        };
        let entry = &mut set[at];
        if self.expired(entry, now) {
            *entry = Entry {
                key,
                start: now,
                ..FREE
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_past_the_limit_until_the_window_ends() {
        let l = Limiter::new(3, 60, 64).unwrap();
        let a = ip("192.0.2.1");
        for t in 0..3 {
            assert_eq!(l.check(a, t * 1000), None);
            l.fail(a, t * 1000);
        }
        let block = l.check(a, 2500).unwrap();
        assert_eq!(
            (block.retry_after, block.failures, block.first),
            (58, 3, true)
        );
        assert!(!l.check(a, 3000).unwrap().first, "recorded once per window");
        assert_eq!(l.check(a, 59_999).unwrap().retry_after, 1);
        assert_eq!(l.check(a, 60_000), None, "the window is over");
        // A new window counts from zero.
        l.fail(a, 61_000);
        assert_eq!(l.check(a, 61_000), None);
    }

    #[test]
    fn guesses_and_forgeries_count_and_a_users_mistakes_do_not() {
        let counted: Vec<Reason> = Reason::ALL.into_iter().filter(|r| counts(*r)).collect();
        assert_eq!(
            counted,
            [
                Reason::MalformedToken,
                Reason::AlgNotAllowed,
                Reason::AlgorithmMismatch,
                Reason::BadSignature,
                Reason::UnknownKey,
            ]
        );
    }

    #[test]
    fn addresses_are_counted_apart_ipv6_by_64() {
        let l = Limiter::new(1, 60, 64).unwrap();
        l.fail(ip("2001:db8:1:2::1"), 0);
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), 0).is_some(), "same /64");
        assert!(l.check(ip("2001:db8:1:3::1"), 0).is_none());
        assert!(l.check(ip("192.0.2.1"), 0).is_none());
        l.fail(ip("::ffff:192.0.2.1"), 0);
        assert!(
            l.check(ip("192.0.2.1"), 0).is_some(),
            "a mapped address is IPv4"
        );
        assert!(l.check(ip("::"), 0).is_none());
    }

    #[test]
    fn the_table_stays_its_size_and_keeps_blocks_longest() {
        let l = Limiter::new(2, 60, 64).unwrap();
        let attacker = ip("198.51.100.1");
        l.fail(attacker, 0);
        l.fail(attacker, 0);
        for n in 0..100_000u32 {
            l.fail(IpAddr::from(n.to_be_bytes()), 1);
        }
        assert_eq!(l.sets.len() * WAYS, 64);
        // Each set had one blocked entry and 7 others to evict before it.
        assert!(l.check(attacker, 2).is_some());
    }

    #[test]
    fn off_at_zero() {
        assert!(Limiter::new(0, 60, 64).is_none());
    }
}
