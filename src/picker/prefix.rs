//! Which endpoints of a pool probably hold which prompt blocks in their prefix cache: GIE's
//! prefix indexer (`plugins/multi/prefix/indexer.go`), one LRU of block hashes per endpoint
//! and a map from hash to the endpoints holding it.
//!
//! Bounded whatever the traffic: each endpoint holds at most `capacity` hashes (GIE's 31,250
//! by default); adding one more evicts that endpoint's least recently added. Every operation
//! is O(1) per hash: the LRU lists are intrusive (indices into one node slab, never
//! reallocated per request) and the map is keyed by the hash itself, mixed with a per-index
//! random seed so that crafted prompts cannot pile their hashes into one bucket.
//!
//! Memory: a node (24 bytes) per (hash, endpoint) held, and a map entry (about 24 bytes,
//! times the map's load factor, at most 2) per distinct hash: at most about
//! `72 x capacity` bytes per endpoint, 2.25 MB per endpoint at the default capacity,
//! allocated as blocks are added, never more. Envoy runs one index per worker.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Endpoints per pool the index can tell apart (one bit each in a holder's mask).
pub const MAX_ENDPOINTS: usize = 64;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: u64,
    /// Neighbours in the endpoint's LRU list (toward the most and least recent).
    newer: u32,
    older: u32,
    /// The next node holding the same hash (another endpoint's).
    sibling: u32,
    endpoint: u16,
}

/// The endpoints holding one hash: a bit per endpoint and the chain of their nodes.
#[derive(Debug, Clone, Copy)]
struct Holders {
    mask: u64,
    first: u32,
}

#[derive(Debug, Clone, Copy)]
struct Lru {
    newest: u32,
    oldest: u32,
    len: usize,
}

/// The hash map's hasher: the key is already a hash; a seeded multiply and fold spreads it.
#[derive(Debug, Clone, Copy)]
struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher {
            seed: self.0,
            value: 0,
        }
    }
}

#[derive(Debug)]
struct SeededHasher {
    seed: u64,
    value: u64,
}

impl Hasher for SeededHasher {
    /// The seed, then a 64-bit finalizer (MurmurHash3's fmix64): no 128-bit product, which
    /// wasm32 has no instruction for.
    fn finish(&self) -> u64 {
        let mut mixed = self.value ^ self.seed;
        mixed ^= mixed >> 33;
        mixed = mixed.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        mixed ^= mixed >> 33;
        mixed = mixed.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        mixed ^ (mixed >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.value = self.value.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.value = value;
    }
}

/// The prefix index of one pool. See the module docs.
#[derive(Debug)]
pub struct PrefixIndex {
    capacity: usize,
    lrus: Vec<Lru>,
    nodes: Vec<Node>,
    holders: HashMap<u64, Holders, Seeded>,
}

impl PrefixIndex {
    /// An empty index of `endpoints` endpoints (at most [`MAX_ENDPOINTS`]), each holding at
    /// most `capacity` hashes; `seed` keys the map's hashing.
    pub fn new(endpoints: usize, capacity: usize, seed: u64) -> Self {
        assert!(endpoints <= MAX_ENDPOINTS && capacity > 0);
        Self {
            capacity,
            lrus: vec![
                Lru {
                    newest: NONE,
                    oldest: NONE,
                    len: 0
                };
                endpoints
            ],
            nodes: Vec::new(),
            holders: HashMap::with_hasher(Seeded(seed)),
        }
    }

    /// Hashes held by `endpoint`.
    pub fn len(&self, endpoint: usize) -> usize {
        self.lrus[endpoint].len
    }

    /// GIE's `matchLongestPrefix`: from the first hash on, until one no endpoint holds, adds
    /// one to `matched[e]` for each hash endpoint `e` holds. `matched` has one entry per
    /// endpoint and is zeroed first.
    pub fn match_prefix(&self, hashes: &[u64], matched: &mut [u32]) {
        matched.fill(0);
        for hash in hashes {
            let Some(holders) = self.holders.get(hash) else {
                break;
            };
            let mut mask = holders.mask;
            while mask != 0 {
                matched[mask.trailing_zeros() as usize] += 1;
                mask &= mask - 1;
            }
        }
    }

    /// Records that `endpoint` now holds every hash of `hashes` (in order, the last the most
    /// recent), evicting its least recent ones beyond the capacity.
    pub fn add(&mut self, hashes: &[u64], endpoint: usize) {
        for &hash in hashes {
            self.add_one(hash, endpoint);
        }
    }

    fn add_one(&mut self, hash: u64, endpoint: usize) {
        let bit = 1u64 << endpoint;
        if let Some(holders) = self.holders.get(&hash).copied() {
            if holders.mask & bit != 0 {
                let mut node = holders.first;
                while self.nodes[node as usize].endpoint as usize != endpoint {
                    node = self.nodes[node as usize].sibling;
                }
                self.unlink(node);
                self.push_newest(node);
                return;
            }
        }
        let node = if self.lrus[endpoint].len == self.capacity {
            let oldest = self.lrus[endpoint].oldest;
            self.evict(oldest);
            oldest
        } else {
            self.nodes.push(Node {
                hash,
                newer: NONE,
                older: NONE,
                sibling: NONE,
                endpoint: endpoint as u16,
            });
            self.lrus[endpoint].len += 1;
            (self.nodes.len() - 1) as u32
        };
        let holders = self.holders.entry(hash).or_insert(Holders {
            mask: 0,
            first: NONE,
        });
        holders.mask |= bit;
        let sibling = std::mem::replace(&mut holders.first, node);
        self.nodes[node as usize] = Node {
            hash,
            newer: NONE,
            older: NONE,
            sibling,
            endpoint: endpoint as u16,
        };
        self.push_newest(node);
    }

    /// Takes `node` out of its endpoint's list and its hash's holders, for reuse.
    fn evict(&mut self, node: u32) {
        self.unlink(node);
        let Node { hash, endpoint, .. } = self.nodes[node as usize];
        let holders = self.holders.get_mut(&hash).expect("a held hash");
        holders.mask &= !(1u64 << endpoint);
        if holders.mask == 0 {
            self.holders.remove(&hash);
            return;
        }
        if holders.first == node {
            holders.first = self.nodes[node as usize].sibling;
            return;
        }
        let mut previous = holders.first;
        while self.nodes[previous as usize].sibling != node {
            previous = self.nodes[previous as usize].sibling;
        }
        self.nodes[previous as usize].sibling = self.nodes[node as usize].sibling;
    }

    fn unlink(&mut self, node: u32) {
        let Node {
            newer,
            older,
            endpoint,
            ..
        } = self.nodes[node as usize];
        let lru = &mut self.lrus[endpoint as usize];
        match newer {
            NONE => lru.newest = older,
            newer => self.nodes[newer as usize].older = older,
        }
        match older {
            NONE => lru.oldest = newer,
            older => self.nodes[older as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, node: u32) {
        let endpoint = self.nodes[node as usize].endpoint as usize;
        let lru = &mut self.lrus[endpoint];
        let previous = std::mem::replace(&mut lru.newest, node);
        if previous == NONE {
            lru.oldest = node;
        } else {
            self.nodes[previous as usize].newer = node;
        }
        let entry = &mut self.nodes[node as usize];
        entry.newer = NONE;
        entry.older = previous;
    }

    /// The hashes `endpoint` holds, most recent first (for tests and debugging).
    pub fn held(&self, endpoint: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut node = self.lrus[endpoint].newest;
        while node != NONE {
            out.push(self.nodes[node as usize].hash);
            node = self.nodes[node as usize].older;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(index: &PrefixIndex, hashes: &[u64], endpoints: usize) -> Vec<u32> {
        let mut out = vec![0; endpoints];
        index.match_prefix(hashes, &mut out);
        out
    }

    #[test]
    fn matches_count_blocks_until_no_endpoint_holds_one() {
        let mut index = PrefixIndex::new(3, 100, 7);
        index.add(&[1, 2, 3, 4], 0);
        index.add(&[1, 2, 9], 1);
        assert_eq!(matched(&index, &[1, 2, 3, 4, 5], 3), [4, 2, 0]);
        assert_eq!(matched(&index, &[1, 2, 9, 4], 3), [3, 3, 0]);
        // GIE stops at the first hash nobody holds, even if a later one is held.
        assert_eq!(matched(&index, &[7, 1, 2], 3), [0, 0, 0]);
        assert_eq!(matched(&index, &[], 3), [0, 0, 0]);
    }

    #[test]
    fn each_endpoint_keeps_its_most_recent_hashes() {
        let mut index = PrefixIndex::new(2, 3, 7);
        index.add(&[1, 2, 3], 0);
        index.add(&[1, 2, 3], 1);
        assert_eq!(index.held(0), [3, 2, 1]);
        // Adding a held hash makes it the most recent; a new one evicts the least recent.
        index.add(&[1], 0);
        assert_eq!(index.held(0), [1, 3, 2]);
        index.add(&[4], 0);
        assert_eq!(index.held(0), [4, 1, 3]);
        assert_eq!(index.len(0), 3);
        // Endpoint 1 keeps its own copy of hash 2, which endpoint 0 no longer holds.
        assert_eq!(matched(&index, &[1, 2, 3], 2), [2, 3]);
        index.add(&[5, 6, 7], 1);
        assert_eq!(index.held(1), [7, 6, 5]);
        assert_eq!(matched(&index, &[1, 2, 3], 2), [1, 0]);
        assert_eq!(matched(&index, &[4], 2), [1, 0]);
    }

    #[test]
    fn stays_bounded_and_consistent_under_churn() {
        // A model of the index (per-endpoint recency lists) against the real one.
        let endpoints = 5;
        let capacity = 50;
        let mut index = PrefixIndex::new(endpoints, capacity, 42);
        let mut model: Vec<Vec<u64>> = vec![Vec::new(); endpoints];
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let endpoint = (next() % endpoints as u64) as usize;
            let hashes: Vec<u64> = (0..(next() % 20)).map(|_| next() % 300).collect();
            index.add(&hashes, endpoint);
            let list = &mut model[endpoint];
            for &hash in &hashes {
                list.retain(|&h| h != hash);
                list.insert(0, hash);
                list.truncate(capacity);
            }
            let probe: Vec<u64> = (0..10).map(|_| next() % 300).collect();
            let mut expected = vec![0u32; endpoints];
            for hash in &probe {
                if !model.iter().any(|list| list.contains(hash)) {
                    break;
                }
                for (e, list) in model.iter().enumerate() {
                    expected[e] += u32::from(list.contains(hash));
                }
            }
            assert_eq!(matched(&index, &probe, endpoints), expected);
        }
        for (endpoint, list) in model.iter().enumerate() {
            assert_eq!(&index.held(endpoint), list);
        }
        assert!(index.nodes.len() <= endpoints * capacity);
        let distinct: std::collections::HashSet<u64> = model.iter().flatten().copied().collect();
        assert_eq!(index.holders.len(), distinct.len());
    }
}
