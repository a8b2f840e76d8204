//! GIE v1.0's scorers and max-score picker (`scheduling/framework/plugins/scorer/`,
//! `picker/max_score_picker.go`, `scheduler_profile.go`), over one pool's candidates:
//! - queue: (max - q) / (max - min) of the waiting requests (and the picks their metrics do
//!   not show yet, [`super::recent`]) over the candidates, 1 for all
//!   when they are equal;
//! - kv-cache: 1 - usage;
//! - prefix: blocks matched / blocks of the request (0 without blocks);
//! - total: the sum of each score, clamped to [0, 1], times its weight;
//! - pick: the highest total wins. GIE breaks ties at random; here a request with prompt blocks
//!   breaks them by rendezvous hashing of its first block with each endpoint, random only for
//!   a request without blocks. Every Envoy worker keeps its own prefix index (see
//!   [`crate::picker`]), so a prefix group's first request on each worker finds no holder: with
//!   a random tie break, each worker would warm its own replica for the group; keyed by the
//!   first block, the workers agree on one whenever the loads tie. The whole order is kept:
//!   the endpoints after the first are where Envoy retries.

use super::config::Weights;

/// One candidate's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub queue: u32,
    pub kv_cache: f64,
    /// Blocks of the request this candidate holds (GIE's longest prefix match).
    pub matched_blocks: u32,
}

/// Each candidate's total score.
pub fn totals(candidates: &[Candidate], total_blocks: usize, weights: Weights) -> Vec<f64> {
    let min = candidates.iter().map(|c| c.queue).min().unwrap_or(0);
    let max = candidates.iter().map(|c| c.queue).max().unwrap_or(0);
    candidates
        .iter()
        .map(|candidate| {
            let queue = if max == min {
                1.0
            } else {
                f64::from(max - candidate.queue) / f64::from(max - min)
            };
            let kv_cache = 1.0 - candidate.kv_cache;
            let prefix = if total_blocks == 0 {
                0.0
            } else {
                f64::from(candidate.matched_blocks) / total_blocks as f64
            };
            clamp(queue) * f64::from(weights.queue)
                + clamp(kv_cache) * f64::from(weights.kv_cache)
                + clamp(prefix) * f64::from(weights.prefix)
        })
        .collect()
}

/// GIE's `enforceScoreRange`: below 0 is 0, above 1 is 1 (NaN counts as 0).
fn clamp(score: f64) -> f64 {
    if score.is_nan() {
        0.0
    } else {
        score.clamp(0.0, 1.0)
    }
}

/// The candidates' indices, best first; equal totals ordered by `ties`, highest first.
pub fn max_score_order(totals: &[f64], ties: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..totals.len()).collect();
    order.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]).then(ties[b].cmp(&ties[a])));
    order
}

/// The tie-break weight of `endpoint` for a request whose first block hashes to `key`
/// (rendezvous hashing: the same key ranks the endpoints the same way on every worker,
/// whichever of them tie).
pub fn rendezvous(key: u64, endpoint: usize) -> u64 {
    Rng::new(key ^ (endpoint as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// SplitMix64: the tie breaks' randomness, seeded once per VM (from the host's random
/// source, through std's hash map keys).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the host's randomness (WASI `random_get` in Envoy).
    pub fn seed_from_host() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `bound` (> 0).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: Weights = Weights {
        queue: 2,
        kv_cache: 2,
        prefix: 3,
    };

    fn candidate(queue: u32, kv_cache: f64, matched_blocks: u32) -> Candidate {
        Candidate {
            queue,
            kv_cache,
            matched_blocks,
        }
    }

    #[test]
    fn queue_scores_spread_from_the_shortest_to_the_longest() {
        let weights = Weights {
            queue: 1,
            kv_cache: 0,
            prefix: 0,
        };
        let candidates = [
            candidate(0, 0.0, 0),
            candidate(5, 0.0, 0),
            candidate(10, 0.0, 0),
        ];
        assert_eq!(totals(&candidates, 0, weights), [1.0, 0.5, 0.0]);
        // Equal queues score 1, whatever their length.
        let equal = [candidate(7, 0.0, 0), candidate(7, 0.0, 0)];
        assert_eq!(totals(&equal, 0, weights), [1.0, 1.0]);
    }

    #[test]
    fn kv_cache_scores_the_free_share_clamped() {
        let weights = Weights {
            queue: 0,
            kv_cache: 1,
            prefix: 0,
        };
        let candidates = [
            candidate(0, 0.0, 0),
            candidate(0, 0.75, 0),
            candidate(0, 1.5, 0),
            candidate(0, -0.5, 0),
            candidate(0, f64::NAN, 0),
        ];
        assert_eq!(totals(&candidates, 0, weights), [1.0, 0.25, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn prefix_scores_the_matched_share_of_the_blocks() {
        let weights = Weights {
            queue: 0,
            kv_cache: 0,
            prefix: 1,
        };
        let candidates = [
            candidate(0, 0.0, 0),
            candidate(0, 0.0, 3),
            candidate(0, 0.0, 4),
        ];
        assert_eq!(totals(&candidates, 4, weights), [0.0, 0.75, 1.0]);
        assert_eq!(totals(&candidates, 0, weights), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn weights_multiply_and_add() {
        // Queue (0 vs 4): 1 and 0; kv: 0.5 and 1; prefix: 0 and 1 of 2 blocks.
        let candidates = [candidate(0, 0.5, 0), candidate(4, 0.0, 2)];
        assert_eq!(totals(&candidates, 2, SEED), [2.0 + 1.0, 2.0 + 3.0]);
    }

    #[test]
    fn the_best_is_first_and_random_ties_break_evenly() {
        let mut rng = Rng::new(1);
        let mut random = |n: usize| (0..n).map(|_| rng.next_u64()).collect::<Vec<_>>();
        assert_eq!(max_score_order(&[1.0, 3.0, 2.0], &random(3)), [1, 2, 0]);
        let mut firsts = [0u32; 3];
        for _ in 0..3000 {
            firsts[max_score_order(&[5.0, 5.0, 5.0], &random(3))[0]] += 1;
        }
        for count in firsts {
            assert!((800..1200).contains(&count), "{firsts:?}");
        }
        // Ties below the best are ordered too, the best stays first.
        let order = max_score_order(&[1.0, 2.0, 1.0], &random(3));
        assert_eq!(order[0], 1);
    }

    #[test]
    fn keyed_ties_agree_whichever_endpoints_tie_and_spread_over_keys() {
        let endpoints = 6;
        let mut firsts = vec![0u32; endpoints];
        for key in 0..6000u64 {
            let ties: Vec<u64> = (0..endpoints).map(|e| rendezvous(key, e)).collect();
            let best = max_score_order(&[1.0; 6], &ties)[0];
            firsts[best] += 1;
            // Another worker with one more endpoint out of the tie still agrees.
            let other = (best + 1) % endpoints;
            let mut totals = [1.0; 6];
            totals[other] = 0.5;
            assert_eq!(max_score_order(&totals, &ties)[0], best);
        }
        for count in &firsts {
            assert!((800..1200).contains(count), "{firsts:?}");
        }
    }

    #[test]
    fn the_rng_is_uniform_enough() {
        let mut rng = Rng::new(Rng::seed_from_host());
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[rng.below(6)] += 1;
        }
        for count in counts {
            assert!((9_400..10_600).contains(&count), "{counts:?}");
        }
    }
}
