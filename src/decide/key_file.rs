//! The keys a guard verifies with: fixed (a secret, or a set given as a value), or a
//! JWK Set file (`--jwks FILE`) read again when it changes, so that a provider's rotation
//! (fetched by curl into the file, contrib/systemd) needs no restart and no signal.
//!
//! The check rides on the requests: a compare of a clock reading with the next check's
//! time, and at most once a second one `stat` (by one request; the others go on). Only a
//! file whose identity (inode, size, modification and change times) moved is read. A set
//! that reads and validates replaces the current one (an `Arc` swapped under a lock held
//! for that swap only); one that does not leaves the last good set and writes one event,
//! once for that version of the file. No thread, no timer: it fits any front end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::Reason;
use crate::event::{Event, KeySetEvent};
use crate::keys::{FileId, KeySet};
use crate::token::{Ask, Denied, Policy, Verified, Verifier};
use crate::token_cache::TokenCache;

/// How often the file is looked at, at most.
const CHECK_EVERY_MS: u64 = 1000;

/// The keys of a guard.
pub(crate) enum Keys {
    Fixed(Verifier),
    Watched(Watched),
    /// Fetched from `--jwks-url` (src/decide/jwks_url.rs).
    Fetched(crate::jwks_url::Fetched),
}

/// A JWK Set file and the verifier of its last good version.
pub(crate) struct Watched {
    path: PathBuf,
    policy: Policy,
    /// Whether HS256 keys shorter than 32 bytes are allowed (`--allow-weak-secret`).
    allow_weak: bool,
    cache: Option<Arc<TokenCache>>,
    current: RwLock<Arc<Verifier>>,
    start: Instant,
    /// Milliseconds from `start` at which the file is next looked at.
    next_check: AtomicU64,
    /// The identity of the file last read (an error: none could be read).
    seen: Mutex<Result<FileId, std::io::ErrorKind>>,
}

impl Keys {
    /// The keys of `set` under `policy`: watched when the set came from a file.
    pub(crate) fn new(
        set: Option<&KeySet>,
        fixed: Vec<crate::keys::VerifyingKey>,
        policy: Policy,
        allow_weak: bool,
        cache: Option<Arc<TokenCache>>,
    ) -> Keys {
        let verifier = Verifier::new(&fixed, policy.clone(), cache.clone());
        match set.and_then(KeySet::source) {
            Some((path, id)) => Keys::Watched(Watched {
                path: path.clone(),
                policy,
                allow_weak,
                cache,
                current: RwLock::new(Arc::new(verifier)),
                start: Instant::now(),
                next_check: AtomicU64::new(CHECK_EVERY_MS),
                seen: Mutex::new(id.ok_or(std::io::ErrorKind::NotFound)),
            }),
            None => Keys::Fixed(verifier),
        }
    }

    /// Whether there is a set to verify with (one fetched from a URL may not be yet).
    pub(crate) fn loaded(&self) -> bool {
        match self {
            Keys::Fetched(fetched) => fetched.current().is_some(),
            Keys::Fixed(_) | Keys::Watched(_) => true,
        }
    }

    /// Starts fetching the set, when it comes from a URL.
    pub(crate) fn start(&self) {
        if let Keys::Fetched(fetched) = self {
            fetched.start();
        }
    }

    /// Verifies `token` with the current keys, the file looked at first if it is time;
    /// `no_keys` while a URL's set was never fetched; a `kid` a fetched set lacks asks for
    /// it again.
    pub(crate) fn verify(
        &self,
        token: &str,
        now: Option<f64>,
        ask: Ask,
    ) -> Result<Verified, Denied> {
        match self {
            Keys::Fixed(verifier) => verifier.verify(token, now, ask),
            Keys::Watched(watched) => {
                watched.check();
                let current =
                    Arc::clone(&watched.current.read().unwrap_or_else(|e| e.into_inner()));
                current.verify(token, now, ask)
            }
            Keys::Fetched(fetched) => {
                let current = fetched.current().ok_or(Reason::NoKeys)?;
                let result = current.verify(token, now, ask);
                if result
                    .as_ref()
                    .is_err_and(|d| d.reason == Reason::UnknownKey)
                {
                    fetched.unknown_kid();
                }
                result
            }
        }
    }
}

impl Watched {
    /// Reads the file again if a second has passed since the last look and it changed.
    fn check(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_check.load(Ordering::Relaxed);
        if now < next
            || self
                .next_check
                .compare_exchange(
                    next,
                    now + CHECK_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let id = FileId::of(&self.path).map_err(|e| e.kind());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == id {
            return;
        }
        *seen = id;
        drop(seen);
        let path = self.path.to_string_lossy();
        let loaded = match id {
            Err(_) => Err(("unreadable", "the file cannot be read".to_owned())),
            Ok(_) => self.load(),
        };
        let (reason, keys, problem) = match loaded {
            Ok(verifier) => {
                let keys = verifier.key_ids();
                if let Some(cache) = &self.cache {
                    cache.keep_keys(&keys);
                }
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(verifier);
                ("changed", keys.len(), None)
            }
            Err((reason, problem)) => (reason, 0, Some(problem)),
        };
        // Not a decision: nothing waits on it being written.
        let _ = crate::logger::record(&Event::KeySet(KeySetEvent {
            loaded: problem.is_none(),
            reason,
            path: &path,
            keys,
            problem: problem.as_deref(),
        }));
    }

    /// The verifier of the file's keys, or why not (a log code and the problem).
    fn load(&self) -> Result<Verifier, (&'static str, String)> {
        let text = crate::secret::read_capped(&self.path)
            .map_err(|e| ("unreadable", format!("the file cannot be read: {e}")))?;
        Verifier::of_set(&text, self.allow_weak, &self.policy, &self.cache)
    }
}
