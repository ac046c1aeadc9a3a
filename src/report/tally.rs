//! The bounded tables the report counts into: the most frequent keys, the reasons an
//! address was refused for, and the timeline.

use std::collections::HashMap;

use super::{MAX_BUCKETS, SCREEN_ROWS, TOP_CAPACITY, thousands};

/// A bounded count of keys (addresses, users, codes), each with the reasons it was
/// refused for where that is counted (one type for every table: one copy of the map's
/// and the sort's code in the binary): the [`TOP_CAPACITY`] most frequent are
/// kept. When it holds twice that, the less frequent half is dropped and a key seen again
/// later starts from the highest count dropped (so its count is an upper bound, as in
/// Misra-Gries and space-saving summaries); the report then says the counts are
/// approximate.
pub(super) struct Top {
    /// Count, whether it started from a floor (an upper bound), value.
    pub(super) map: HashMap<Box<[u8]>, (u64, bool, Reasons)>,
    /// The highest count dropped so far (0: counts are exact).
    pub(super) floor: u64,
    /// Keys ever dropped.
    pub(super) dropped: u64,
}

impl Top {
    pub(super) fn new() -> Self {
        Top {
            map: HashMap::new(),
            floor: 0,
            dropped: 0,
        }
    }

    /// Counts `key` once; its value to update.
    pub(super) fn count(&mut self, key: &[u8]) -> &mut Reasons {
        if !self.map.contains_key(key) {
            if self.map.len() >= 2 * TOP_CAPACITY {
                self.shrink();
            }
            self.map
                .insert(key.into(), (self.floor, self.floor > 0, Reasons::default()));
        }
        let entry = self.map.get_mut(key).expect("inserted above");
        entry.0 += 1;
        &mut entry.2
    }

    pub(super) fn shrink(&mut self) {
        let mut counts: Vec<u64> = self.map.values().map(|(n, _, _)| *n).collect();
        let (_, &mut cut, _) = counts.select_nth_unstable_by(TOP_CAPACITY, |a, b| b.cmp(a));
        let before = self.map.len();
        self.map.retain(|_, (n, _, _)| *n > cut);
        self.dropped += (before - self.map.len()) as u64;
        self.floor = self.floor.max(cut);
    }

    /// The `n` most frequent, most frequent first (ties by key), each with its count as
    /// text: `<=N` for an upper bound.
    pub(super) fn top(&self, n: usize) -> Vec<(&[u8], String, &Reasons)> {
        let mut all: Vec<_> = self.map.iter().collect();
        all.sort_unstable_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        all.into_iter()
            .take(n)
            .map(|(k, (count, bound, v))| {
                let count = thousands(*count);
                (&**k, if *bound { format!("<={count}") } else { count }, v)
            })
            .collect()
    }

    pub(super) fn approximate(&self) -> bool {
        self.dropped > 0
    }
}

/// The reasons an address was refused for: the first few it showed, counted, and the
/// rest together.
#[derive(Default)]
pub(super) struct Reasons {
    pub(super) counts: [(u8, u32); 3],
    pub(super) other: u32,
}

impl Reasons {
    pub(super) fn add(&mut self, reason: u8) {
        for slot in &mut self.counts {
            if slot.1 == 0 {
                *slot = (reason, 1);
                return;
            }
            if slot.0 == reason {
                slot.1 = slot.1.saturating_add(1);
                return;
            }
        }
        self.other = self.other.saturating_add(1);
    }
}

/// Allowed and refused requests per bucket of the timeline.
pub(super) struct Timeline {
    /// Seconds a bucket spans: 60, doubled whenever there would be too many.
    pub(super) width: u64,
    /// `(start, allowed, refused)`, by start: a sorted `Vec` (a log is mostly in time
    /// order, so a line's bucket is nearly always the last), smaller code than a BTreeMap.
    pub(super) buckets: Vec<(u64, u64, u64)>,
}

impl Timeline {
    pub(super) fn add(&mut self, secs: u64, allowed: bool) {
        let start = secs - secs % self.width;
        let at = match self.buckets.last() {
            Some(last) if last.0 == start => self.buckets.len() - 1,
            _ => match self.buckets.binary_search_by_key(&start, |b| b.0) {
                Ok(at) => at,
                Err(at) => {
                    self.buckets.insert(at, (start, 0, 0));
                    at
                }
            },
        };
        if allowed {
            self.buckets[at].1 += 1;
        } else {
            self.buckets[at].2 += 1;
        }
        if self.buckets.len() > MAX_BUCKETS {
            self.width *= 2;
            let width = self.width;
            let mut merged: Vec<(u64, u64, u64)> = Vec::with_capacity(MAX_BUCKETS);
            for &(start, a, r) in &self.buckets {
                let start = start - start % width;
                match merged.last_mut() {
                    Some(last) if last.0 == start => {
                        last.1 += a;
                        last.2 += r;
                    }
                    _ => merged.push((start, a, r)),
                }
            }
            self.buckets = merged;
        }
    }

    /// The rows to draw, `(start, allowed, refused)`, and their width in seconds: the
    /// narrowest of a minute, 5 and 15 minutes, an hour, 6 hours, a day, a week that
    /// makes at most [`SCREEN_ROWS`] rows (or wider, if the buckets had to be).
    pub(super) fn rows(&self) -> (Vec<(u64, u64, u64)>, u64) {
        let (Some(&(first, _, _)), Some(&(last, _, _))) =
            (self.buckets.first(), self.buckets.last())
        else {
            return (Vec::new(), 60);
        };
        let span = last - first;
        let width = [60, 300, 900, 3600, 21_600, 86_400, 604_800]
            .into_iter()
            .find(|w| span / w < SCREEN_ROWS as u64)
            .unwrap_or(604_800)
            .max(self.width);
        let width = width.div_ceil(self.width) * self.width;
        let mut rows: Vec<(u64, u64, u64)> = Vec::new();
        for &(start, a, r) in &self.buckets {
            let row = start - start % width;
            match rows.last_mut() {
                Some(last) if last.0 == row => {
                    last.1 += a;
                    last.2 += r;
                }
                _ => {
                    // Empty rows in between are drawn too (a quiet hour is news), up to
                    // a bound: a forged timestamp far off must not make a million rows.
                    if let Some(&(prev, _, _)) = rows.last() {
                        let mut at = prev + width;
                        while at < row && rows.len() < MAX_BUCKETS {
                            rows.push((at, 0, 0));
                            at += width;
                        }
                    }
                    rows.push((row, a, r));
                }
            }
        }
        (rows, width)
    }
}
