//! Where each prefix group went first, shared between Envoy's workers: each worker keeps its
//! own prefix index, so without this a group's first request on every worker would warm one
//! more replica. When a worker picks for a prompt whose first block no endpoint holds, it
//! sends a [`NewGroup`] to the metrics singleton (a shared queue: many producers, one
//! consumer); the singleton records it in the [`GroupHints`] table and publishes the table in
//! shared data; every worker copies it on its timer. A worker meeting a group it does not know
//! follows the hint: it takes the hinted endpoint as holding the prompt before scoring.
//!
//! The table is bounded: [`SLOTS`] slots, a later group taking an earlier one's slot.

/// The shared queue the singleton registers and the workers send new groups to.
pub const NEW_GROUPS_QUEUE: &str = "model_router.picker.new_groups";
/// The shared data key of the published table.
pub const HINTS_KEY: &str = "model_router.picker.group_hints";
/// Slots of the table: 12 bytes each, 48 KiB published.
pub const SLOTS: usize = 4096;

const SLOT_BYTES: usize = 12;

/// A worker picked `endpoint` of pool `pool` for a prompt whose first block hashes to
/// `first_block`, and no endpoint held that block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewGroup {
    pub pool: u16,
    pub endpoint: u16,
    pub first_block: u64,
}

impl NewGroup {
    pub fn to_bytes(self) -> [u8; SLOT_BYTES] {
        let mut bytes = [0; SLOT_BYTES];
        bytes[..8].copy_from_slice(&self.first_block.to_le_bytes());
        bytes[8..10].copy_from_slice(&self.pool.to_le_bytes());
        bytes[10..].copy_from_slice(&self.endpoint.to_le_bytes());
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; SLOT_BYTES] = bytes.try_into().ok()?;
        Some(Self {
            first_block: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            pool: u16::from_le_bytes([bytes[8], bytes[9]]),
            endpoint: u16::from_le_bytes([bytes[10], bytes[11]]),
        })
    }
}

/// The table of first endpoints, by pool and first block, kept as it is published (a slot's
/// [`NewGroup`] bytes, an empty slot all ones), so that taking a new version copies into the
/// same buffer rather than allocating. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHints {
    bytes: Vec<u8>,
}

impl Default for GroupHints {
    fn default() -> Self {
        Self {
            bytes: vec![0xFF; SLOTS * SLOT_BYTES],
        }
    }
}

impl GroupHints {
    fn slot(pool: u16, first_block: u64) -> std::ops::Range<usize> {
        let mixed = (first_block ^ u64::from(pool)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let at = (mixed >> 32) as usize % SLOTS * SLOT_BYTES;
        at..at + SLOT_BYTES
    }

    pub fn record(&mut self, group: NewGroup) {
        self.bytes[Self::slot(group.pool, group.first_block)].copy_from_slice(&group.to_bytes());
    }

    /// The endpoint the group of `first_block` went to first, if the table still says.
    pub fn lookup(&self, pool: u16, first_block: u64) -> Option<usize> {
        NewGroup::from_bytes(&self.bytes[Self::slot(pool, first_block)])
            .filter(|g| g.pool == pool && g.first_block == first_block)
            .map(|g| usize::from(g.endpoint))
    }

    /// The table as published.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes a published table; false (and nothing taken) when `bytes` is not one.
    pub fn take(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() != self.bytes.len() {
            return false;
        }
        self.bytes.copy_from_slice(bytes);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_pool_and_first_block_and_survive_publishing() {
        let mut hints = GroupHints::default();
        let group = NewGroup {
            pool: 1,
            endpoint: 4,
            first_block: 0xDEAD_BEEF_0123_4567,
        };
        assert_eq!(NewGroup::from_bytes(&group.to_bytes()), Some(group));
        hints.record(group);
        assert_eq!(hints.lookup(1, group.first_block), Some(4));
        assert_eq!(hints.lookup(0, group.first_block), None);
        assert_eq!(hints.lookup(1, group.first_block + 1), None);
        let mut published = GroupHints::default();
        assert!(published.take(hints.as_bytes()));
        assert_eq!(published, hints);
        assert!(!published.take(b"short"));
        assert_eq!(published, hints);
        // A later group in the same slot replaces the earlier one: the table stays bounded.
        for first_block in 0..(SLOTS as u64 * 4) {
            hints.record(NewGroup {
                pool: 1,
                endpoint: 0,
                first_block,
            });
        }
        assert_eq!(hints.lookup(1, group.first_block), None);
        assert_eq!(hints.as_bytes().len(), SLOTS * 12);
    }
}
