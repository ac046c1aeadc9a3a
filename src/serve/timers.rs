//! The loop's timeouts: one FIFO queue per kind. Every wait of one kind lasts as long, so
//! a queue is in deadline order by construction: pop from the front while expired, no heap
//! and no timer wheel. Re-arming on progress only moves the connection's own start time;
//! its entry, once at the front, is pushed again with the later deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A new connection, not a byte yet (`--header-timeout`): closed silently.
    Fresh,
    /// The rest of a head (`--header-timeout`, nginx `client_header_timeout`): 408.
    Head,
    /// The next request on a kept-alive connection (`--idle-timeout`, nginx
    /// `keepalive_timeout`): closed silently.
    Idle,
    /// The rest of a body being thrown away (`--body-timeout` for the whole of it, nginx
    /// `lingering_time`): progress does not restart it.
    Body,
    /// Room for its answers (`--send-timeout`, nginx `send_timeout`): the client does not
    /// read.
    Send,
    /// The client's end after a closing answer (nginx `lingering_timeout`).
    Linger,
    /// Proxy mode: progress of an exchange with the upstream, either way
    /// (`--upstream-timeout`, nginx `proxy_read_timeout`): 504, or 408 for a client's
    /// stalled body.
    Upstream,
}

const KINDS: usize = 7;

const ALL: [Kind; KINDS] = [
    Kind::Fresh,
    Kind::Head,
    Kind::Idle,
    Kind::Body,
    Kind::Send,
    Kind::Linger,
    Kind::Upstream,
];

impl Kind {
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// An armed timer, as the connection remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Armed {
    pub kind: Kind,
    pub seq: u32,
    /// When the wait began (or last made progress).
    pub since: Instant,
}

/// The queues.
#[derive(Debug)]
pub(crate) struct Timers {
    lengths: [Duration; KINDS],
    queues: [VecDeque<(Instant, usize, u32)>; KINDS],
    next_seq: u32,
    /// A queue holds many more entries than there are connections.
    compact_wanted: bool,
}

impl Timers {
    /// `lengths` in the order of [`Kind`].
    pub(crate) fn new(lengths: [Duration; KINDS]) -> Timers {
        Timers {
            lengths,
            queues: Default::default(),
            next_seq: 0,
            compact_wanted: false,
        }
    }

    /// Each kind's length, by [`Kind::index`].
    pub(crate) fn lengths(&self) -> [Duration; KINDS] {
        self.lengths
    }

    /// Arms `kind` for connection `token` from `now`.
    pub(crate) fn arm(&mut self, kind: Kind, token: usize, now: Instant, live: usize) -> Armed {
        self.next_seq = self.next_seq.wrapping_add(1);
        let queue = &mut self.queues[kind.index()];
        queue.push_back((now + self.lengths[kind.index()], token, self.next_seq));
        if queue.len() > 64 + 4 * live {
            // Entries of connections gone or re-armed pile up under churn: the loop
            // drops them (`compact`) instead of letting them grow.
            self.compact_wanted = true;
        }
        Armed {
            kind,
            seq: self.next_seq,
            since: now,
        }
    }

    /// The earliest deadline at the front of any queue.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|e| e.0))
            .min()
    }

    /// Pops the expired entries of every queue and gives each to `check`, which says
    /// whether the connection's wait is over (`None`: the entry is stale), or, with
    /// `Some(later)`, when it now ends: the entry goes to the back with that deadline.
    pub(crate) fn expired(
        &mut self,
        now: Instant,
        check: &mut dyn FnMut(Kind, usize, u32) -> Check,
    ) {
        for kind in ALL {
            let queue = &mut self.queues[kind.index()];
            // Bounded: each entry is looked at once per turn at most.
            for _ in 0..queue.len() {
                let Some(&(deadline, token, seq)) = queue.front() else {
                    break;
                };
                if deadline > now {
                    break;
                }
                queue.pop_front();
                if let Check::Later(at) = check(kind, token, seq) {
                    queue.push_back((at, token, seq));
                }
            }
        }
    }

    /// Whether [`Timers::compact`] is due.
    pub(crate) fn compact_wanted(&self) -> bool {
        self.compact_wanted
    }

    /// Drops the entries `live` says are stale.
    pub(crate) fn compact(&mut self, live: &dyn Fn(Kind, usize, u32) -> bool) {
        self.compact_wanted = false;
        for kind in ALL {
            self.queues[kind.index()].retain(|&(_, token, seq)| live(kind, token, seq));
        }
    }

    /// The entries of `kind` from the front, oldest first (for evicting idle connections).
    pub(crate) fn oldest(&self, kind: Kind) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.queues[kind.index()].iter().map(|&(_, t, s)| (t, s))
    }
}

/// What an expired entry means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// The connection no longer waits on it.
    Stale,
    /// The wait is over: the connection was dealt with.
    Over,
    /// The wait made progress: it now ends then.
    Later(Instant),
}
