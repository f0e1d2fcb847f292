//! Free-RAM indexes for placement. Each ready node sits in one sorted vector keyed by
//! `(free_mib, node_id)`, so a decision is one binary search (`O(log n)`) instead of a
//! rescan of the fleet. A vector beats a tree here: fleets hold at most a few thousand
//! nodes, and a change of one node's free RAM only shifts the entries between its old
//! and its new position (a placement moves a node by a few slots), with no allocation.
//!
//! - **Pack** (best fit, cloud nodes): the node with the least free RAM that still fits,
//!   so partly used VMs fill up and others empty out and can be deleted.
//! - **Spread** (dedicated machines): the node with the most free RAM, so load and
//!   noise are shared across machines that are paid for anyway.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Pack,
    Spread,
}

/// One index of ready, placeable nodes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FreeIndex {
    /// Ascending keys `free_mib << 32 | node_id`: the order of `(free_mib, node_id)`,
    /// compared as one integer.
    by_free: Vec<u64>,
}

#[inline]
fn key(free_mib: u32, node_id: NodeId) -> u64 {
    assert!(
        node_id.0 <= u32::MAX as u64,
        "node id {node_id} beyond the placement index"
    );
    (free_mib as u64) << 32 | node_id.0
}

#[inline]
fn free_of(key: u64) -> u32 {
    (key >> 32) as u32
}

#[inline]
fn node_of(key: u64) -> NodeId {
    NodeId(key & u32::MAX as u64)
}

impl FreeIndex {
    pub fn insert(&mut self, node_id: NodeId, free_mib: u32) {
        let key = key(free_mib, node_id);
        match self.by_free.binary_search(&key) {
            Ok(_) => panic!("node {node_id} already indexed"),
            Err(pos) => self.by_free.insert(pos, key),
        }
    }

    pub fn remove(&mut self, node_id: NodeId, free_mib: u32) {
        match self.by_free.binary_search(&key(free_mib, node_id)) {
            Ok(pos) => {
                self.by_free.remove(pos);
            }
            Err(_) => panic!("node {node_id} not indexed with {free_mib} MiB free"),
        }
    }

    /// Move a node from `free_mib_old` to `free_mib_new`: only the entries in between shift.
    #[inline]
    pub fn update(&mut self, node_id: NodeId, free_mib_old: u32, free_mib_new: u32) {
        let Ok(old) = self.by_free.binary_search(&key(free_mib_old, node_id)) else {
            panic!("node {node_id} not indexed with {free_mib_old} MiB free")
        };
        let key = key(free_mib_new, node_id);
        if key > self.by_free[old] {
            // Entries after `old` that sort below the new key move one slot down.
            let n = self.by_free[old + 1..].partition_point(|&k| k < key);
            self.by_free.copy_within(old + 1..old + 1 + n, old);
            self.by_free[old + n] = key;
        } else {
            // Entries before `old` that sort above the new key move one slot up.
            let pos = self.by_free[..old].partition_point(|&k| k < key);
            self.by_free.copy_within(pos..old, pos + 1);
            self.by_free[pos] = key;
        }
    }

    /// Index of the first entry with at least `need_mib` free.
    #[inline]
    fn first_fit(&self, need_mib: u32) -> usize {
        let bound = (need_mib as u64) << 32;
        self.by_free.partition_point(|&k| k < bound)
    }

    /// The node to place `need_mib` on, or `None` when nothing fits.
    pub fn choose(&self, need_mib: u32, strategy: Strategy) -> Option<NodeId> {
        match strategy {
            Strategy::Pack => self.by_free.get(self.first_fit(need_mib)).map(|&k| node_of(k)),
            Strategy::Spread => self
                .by_free
                .last()
                .filter(|&&k| free_of(k) >= need_mib)
                .map(|&k| node_of(k)),
        }
    }

    /// Like `choose`, skipping `excluded` (a node claimed by the head of the queue).
    #[inline]
    pub fn choose_excluding(&self, need_mib: u32, strategy: Strategy, excluded: Option<NodeId>) -> Option<NodeId> {
        let allowed = |&&k: &&u64| Some(node_of(k)) != excluded;
        match strategy {
            Strategy::Pack => self.by_free[self.first_fit(need_mib)..]
                .iter()
                .find(allowed)
                .map(|&k| node_of(k)),
            Strategy::Spread => self
                .by_free
                .iter()
                .rev()
                .take_while(|&&k| free_of(k) >= need_mib)
                .find(allowed)
                .map(|&k| node_of(k)),
        }
    }

    /// (free MiB, node) of the node with the most free RAM.
    #[inline]
    pub fn max_free_node(&self) -> Option<(u32, NodeId)> {
        self.by_free.last().map(|&k| (free_of(k), node_of(k)))
    }

    #[inline]
    pub fn max_free_mib(&self) -> u32 {
        self.by_free.last().map_or(0, |&k| free_of(k))
    }

    pub fn len(&self) -> usize {
        self.by_free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_chooses_the_tightest_fit_and_spread_the_emptiest() {
        let mut index = FreeIndex::default();
        index.insert(NodeId(1), 8192);
        index.insert(NodeId(2), 3000);
        index.insert(NodeId(3), 4096);
        assert_eq!(index.choose(4096, Strategy::Pack), Some(NodeId(3)));
        assert_eq!(index.choose(2048, Strategy::Pack), Some(NodeId(2)));
        assert_eq!(index.choose(4096, Strategy::Spread), Some(NodeId(1)));
        assert_eq!(index.choose(9000, Strategy::Pack), None);
        assert_eq!(index.choose(9000, Strategy::Spread), None);
        assert_eq!(
            index.choose_excluding(4096, Strategy::Pack, Some(NodeId(3))),
            Some(NodeId(1))
        );
        assert_eq!(
            index.choose_excluding(4096, Strategy::Spread, Some(NodeId(1))),
            Some(NodeId(3))
        );
        assert_eq!(index.choose_excluding(8192, Strategy::Spread, Some(NodeId(1))), None);
        index.update(NodeId(1), 8192, 1024);
        assert_eq!(index.choose(4096, Strategy::Spread), Some(NodeId(3)));
        assert_eq!(index.max_free_mib(), 4096);
    }

    /// Updates in place must leave the vector exactly as a remove and an insert would
    /// (same order as an ordered set), whatever the direction and distance of the move.
    #[test]
    fn updates_keep_the_same_order_as_an_ordered_set() {
        use std::collections::BTreeSet;
        let mut index = FreeIndex::default();
        let mut model = BTreeSet::new();
        let mut free = vec![0u32; 64];
        let mut rng = crate::test_rng::XorShift::new(0x2545_f491_4f6c_dd1d);
        let mut next = |m: u64| rng.below(m);
        for (i, f) in free.iter_mut().enumerate() {
            *f = next(8) as u32 * 1024;
            index.insert(NodeId(i as u64), *f);
            model.insert((*f, NodeId(i as u64)));
        }
        for _ in 0..5000 {
            let i = next(64) as usize;
            let new = next(8) as u32 * 1024 + next(3) as u32;
            index.update(NodeId(i as u64), free[i], new);
            model.remove(&(free[i], NodeId(i as u64)));
            model.insert((new, NodeId(i as u64)));
            free[i] = new;
            assert!(
                index
                    .by_free
                    .iter()
                    .map(|&k| (free_of(k), node_of(k)))
                    .eq(model.iter().copied())
            );
            let need = next(9) as u32 * 1024;
            let expect_pack = model.range((need, NodeId(0))..).next().map(|&(_, id)| id);
            assert_eq!(index.choose(need, Strategy::Pack), expect_pack);
        }
    }
}
