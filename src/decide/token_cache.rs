//! The verified-token cache (`--token-cache N`), as Envoy's `jwt_authn` keeps one: a
//! public-key signature costs tens of microseconds, and clients send one token many
//! times. An entry says "this exact token's signature verified under this key"; the
//! claims it holds are checked again (`exp`, `nbf`, leeway, issuer, audience, scopes) on
//! every use.
//!
//! Keyed by the SHA-256 of the whole token; bounded; an entry expires at the token's
//! `exp` and is dropped when its key leaves the key set. HS256 tokens do not go through
//! it: digesting the token costs what verifying its HMAC does.

// Without the `idp` feature there are no public keys, and nothing is cached.
#![cfg_attr(not(feature = "idp"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the verified-token cache has done: hits and misses since start (a miss is a
/// public-key token whose signature had to be verified), and the entries it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Tokens whose verified signature was found.
    pub hits: u64,
    /// Public-key tokens not found, whose signature was verified.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
}

struct Entry {
    /// The identity of the key that verified it ([`crate::keys::VerifyingKey::id`]).
    key: [u8; 32],
    /// The token's `exp`: gone from then on. `None`: none (`--allow-missing-exp`).
    expires: Option<f64>,
    /// The decoded claims.
    claims: Box<[u8]>,
}

/// Verified tokens by the digest of the token.
pub(crate) struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (at least 1).
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic under the lock leaves a map that is still a map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the claims of the token `digest`, verified under `key`, into `out` and says
    /// whether it was there (and not expired at `now`); counts a hit or a miss.
    pub(crate) fn get(
        &self,
        digest: &[u8; 32],
        key: &[u8; 32],
        now: f64,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut entries = self.entries();
        let found = match entries.get(digest) {
            Some(entry) if entry.key == *key && entry.expires.is_none_or(|exp| now < exp) => {
                out.clear();
                out.extend_from_slice(&entry.claims);
                true
            }
            Some(_) => {
                entries.remove(digest);
                false
            }
            None => false,
        };
        drop(entries);
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers that the token `digest` verified under `key`, with `claims`, until
    /// `expires`. When full, expired entries go first, then the one expiring soonest.
    pub(crate) fn insert(
        &self,
        digest: [u8; 32],
        key: [u8; 32],
        expires: Option<f64>,
        claims: &[u8],
        now: f64,
    ) {
        if expires.is_some_and(|exp| exp <= now) {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, e| e.expires.is_none_or(|exp| now < exp));
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by(|a, b| {
                        let at = |e: &Entry| e.expires.unwrap_or(f64::INFINITY);
                        at(a.1).total_cmp(&at(b.1))
                    })
                    .map(|(digest, _)| *digest);
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(
            digest,
            Entry {
                key,
                expires,
                claims: claims.into(),
            },
        );
    }

    /// Drops the entries of keys not in `keys` (a reloaded set's).
    pub(crate) fn keep_keys(&self, keys: &[[u8; 32]]) {
        self.entries().retain(|_, e| keys.contains(&e.key));
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_are_bounded_and_leave_with_their_key() {
        let cache = TokenCache::new(2);
        let mut out = Vec::new();
        let (k1, k2) = ([1; 32], [2; 32]);
        cache.insert([10; 32], k1, Some(100.0), b"a", 0.0);
        assert!(cache.get(&[10; 32], &k1, 99.0, &mut out));
        assert_eq!(out, b"a");
        // At exp the entry is gone.
        assert!(!cache.get(&[10; 32], &k1, 100.0, &mut out));
        // Already expired: not kept.
        cache.insert([11; 32], k1, Some(5.0), b"b", 10.0);
        assert!(!cache.get(&[11; 32], &k1, 1.0, &mut out));
        // Another key's entry is no hit.
        cache.insert([12; 32], k1, None, b"c", 0.0);
        assert!(!cache.get(&[12; 32], &k2, 0.0, &mut out));
        // Full: the one expiring soonest goes.
        cache.insert([13; 32], k1, Some(50.0), b"d", 0.0);
        cache.insert([14; 32], k2, None, b"e", 0.0);
        cache.insert([15; 32], k2, None, b"f", 0.0);
        assert!(!cache.get(&[13; 32], &k1, 0.0, &mut out));
        assert!(cache.get(&[14; 32], &k2, 0.0, &mut out));
        assert!(cache.get(&[15; 32], &k2, 0.0, &mut out));
        cache.keep_keys(&[k1]);
        assert!(!cache.get(&[15; 32], &k2, 0.0, &mut out));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.entries), (3, 0));
        assert_eq!(stats.misses, 5);
    }
}
