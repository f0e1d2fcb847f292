//! Free-RAM indexes for placement. Each ready node sits in one ordered set keyed by
//! `(free_mib, node_id)`, so a decision is one range query (`O(log n)`) instead of a
//! rescan of the fleet.
//!
//! - **Pack** (best fit, cloud nodes): the node with the least free RAM that still fits,
//!   so partly used VMs fill up and others empty out and can be deleted.
//! - **Spread** (dedicated machines): the node with the most free RAM, so load and
//!   noise are shared across machines that are paid for anyway.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Pack,
    Spread,
}

/// One index of ready, placeable nodes.
#[derive(Debug, Clone, Default)]
pub struct FreeIndex {
    by_free: BTreeSet<(u32, NodeId)>,
}

impl FreeIndex {
    pub fn insert(&mut self, node_id: NodeId, free_mib: u32) {
        let inserted = self.by_free.insert((free_mib, node_id));
        assert!(inserted, "node {node_id} already indexed");
    }

    pub fn remove(&mut self, node_id: NodeId, free_mib: u32) {
        let removed = self.by_free.remove(&(free_mib, node_id));
        assert!(removed, "node {node_id} not indexed with {free_mib} MiB free");
    }

    pub fn update(&mut self, node_id: NodeId, free_mib_old: u32, free_mib_new: u32) {
        self.remove(node_id, free_mib_old);
        self.insert(node_id, free_mib_new);
    }

    /// The node to place `need_mib` on, or `None` when nothing fits.
    pub fn choose(&self, need_mib: u32, strategy: Strategy) -> Option<NodeId> {
        match strategy {
            Strategy::Pack => self.by_free.range((need_mib, NodeId(0))..).next().map(|&(_, id)| id),
            Strategy::Spread => self
                .by_free
                .last()
                .filter(|&&(free, _)| free >= need_mib)
                .map(|&(_, id)| id),
        }
    }

    /// Like `choose`, skipping `excluded` (a node claimed by the head of the queue).
    pub fn choose_excluding(&self, need_mib: u32, strategy: Strategy, excluded: Option<NodeId>) -> Option<NodeId> {
        let allowed = |&&(_, id): &&(u32, NodeId)| Some(id) != excluded;
        match strategy {
            Strategy::Pack => self
                .by_free
                .range((need_mib, NodeId(0))..)
                .find(allowed)
                .map(|&(_, id)| id),
            Strategy::Spread => self
                .by_free
                .iter()
                .rev()
                .take_while(|&&(free, _)| free >= need_mib)
                .find(allowed)
                .map(|&(_, id)| id),
        }
    }

    /// (free MiB, node) of the node with the most free RAM.
    pub fn max_free_node(&self) -> Option<(u32, NodeId)> {
        self.by_free.last().copied()
    }

    pub fn max_free_mib(&self) -> u32 {
        self.by_free.last().map_or(0, |&(free, _)| free)
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
}
