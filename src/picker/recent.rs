//! Picks the model servers' metrics cannot show yet: a worker's picks per endpoint, in one
//! bucket per snapshot refresh, so that the picks made since an endpoint's metrics were
//! fetched can be counted as waiting there.
//!
//! Why: metrics are up to a refresh period old (50 ms by default), and every request picked
//! within one period sees the same numbers. Without this, they all go to the endpoint that
//! looked least loaded, and under load that herding costs more than the metrics gain (GIE's
//! EPP polls the same way and herds the same way). Least request never herds because it counts
//! its own requests at once; this gives the queue scorer the same knowledge of the picks this
//! worker made since the fetch, and nothing else changes.
//!
//! Bounded: [`BUCKETS`] counters per endpoint. A pick is counted from the bucket it fell in
//! until a fetch newer than that bucket's end is seen, so it may count a little longer than it
//! needs to (never shorter), and picks older than [`BUCKETS`] refreshes are forgotten.

/// Refresh periods remembered.
pub const BUCKETS: usize = 8;

/// A pool's recent picks. See the module docs.
#[derive(Debug, Clone)]
pub struct RecentPicks {
    /// When each bucket began (the refresh that opened it), 0 for never.
    starts: [u64; BUCKETS],
    /// The open bucket.
    current: usize,
    /// Per endpoint, picks per bucket.
    counts: Vec<[u32; BUCKETS]>,
}

impl RecentPicks {
    pub fn new(endpoints: usize) -> Self {
        Self {
            starts: [0; BUCKETS],
            current: 0,
            counts: vec![[0; BUCKETS]; endpoints],
        }
    }

    /// Opens a new bucket at `now_ms` (a refresh), forgetting the oldest.
    pub fn advance(&mut self, now_ms: u64) {
        self.current = (self.current + 1) % BUCKETS;
        self.starts[self.current] = now_ms;
        for counts in &mut self.counts {
            counts[self.current] = 0;
        }
    }

    /// Records a pick of `endpoint`.
    pub fn record(&mut self, endpoint: usize) {
        let count = &mut self.counts[endpoint][self.current];
        *count = count.saturating_add(1);
    }

    /// Picks of `endpoint` its metrics fetched at `fetched_at_ms` may not show: those of every
    /// bucket that ended after the fetch (the open one always).
    pub fn unseen(&self, endpoint: usize, fetched_at_ms: u64) -> u32 {
        let counts = &self.counts[endpoint];
        let mut unseen = counts[self.current];
        let mut end = self.starts[self.current];
        for age in 1..BUCKETS {
            if end <= fetched_at_ms {
                break;
            }
            let bucket = (self.current + BUCKETS - age) % BUCKETS;
            unseen = unseen.saturating_add(counts[bucket]);
            end = self.starts[bucket];
        }
        unseen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_count_until_a_fetch_after_their_bucket() {
        let mut recent = RecentPicks::new(2);
        recent.advance(1000);
        recent.record(0);
        recent.record(0);
        assert_eq!(recent.unseen(0, 990), 2);
        // The fetch at 1000 may have come before the picks: still counted.
        assert_eq!(recent.unseen(0, 1000), 2);
        assert_eq!(recent.unseen(1, 990), 0);
        recent.advance(1050);
        recent.record(0);
        assert_eq!(recent.unseen(0, 1000), 3);
        // A fetch after the first bucket ended has seen its picks.
        assert_eq!(recent.unseen(0, 1050), 1);
        recent.advance(1100);
        assert_eq!(recent.unseen(0, 1100), 0);
    }

    #[test]
    fn only_the_last_refreshes_are_remembered() {
        let mut recent = RecentPicks::new(1);
        for refresh in 0..BUCKETS as u64 + 3 {
            recent.advance(1000 + refresh * 50);
            recent.record(0);
        }
        assert_eq!(recent.unseen(0, 0), BUCKETS as u32);
    }
}
