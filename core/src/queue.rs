//! The start queue: requests wait in order. A requeued start (its node was lost or its
//! container failed to start) goes back to the front.

use std::collections::BTreeMap;

use crate::types::{ServerId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    pub server_id: ServerId,
    pub ram_mib: u32,
    pub requested_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct StartQueue {
    entries: BTreeMap<i64, QueueEntry>,
    next_back: i64,
    next_front: i64,
    demand_mib: u64,
    /// How many queued requests ask for each RAM size, ascending by size (a handful
    /// of tiers: a sorted vector, no allocation per change).
    by_size: Vec<(u32, u32)>,
}

impl StartQueue {
    pub fn push_back(&mut self, entry: QueueEntry) -> i64 {
        let seq = self.next_back;
        self.next_back += 1;
        self.insert(seq, entry)
    }

    pub fn push_front(&mut self, entry: QueueEntry) -> i64 {
        self.next_front -= 1;
        let seq = self.next_front;
        self.insert(seq, entry)
    }

    fn insert(&mut self, seq: i64, entry: QueueEntry) -> i64 {
        self.demand_mib += entry.ram_mib as u64;
        match self.by_size.binary_search_by_key(&entry.ram_mib, |&(mib, _)| mib) {
            Ok(i) => self.by_size[i].1 += 1,
            Err(i) => self.by_size.insert(i, (entry.ram_mib, 1)),
        }
        let previous = self.entries.insert(seq, entry);
        assert!(previous.is_none());
        seq
    }

    pub fn remove(&mut self, seq: i64) -> QueueEntry {
        let entry = self.entries.remove(&seq).expect("queue entry exists");
        self.demand_mib -= entry.ram_mib as u64;
        let i = self
            .by_size
            .binary_search_by_key(&entry.ram_mib, |&(mib, _)| mib)
            .expect("size counted");
        self.by_size[i].1 -= 1;
        if self.by_size[i].1 == 0 {
            self.by_size.remove(i);
        }
        entry
    }

    /// The smallest RAM any queued request asks for.
    pub fn smallest_mib(&self) -> Option<u32> {
        self.by_size.first().map(|&(mib, _)| mib)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn demand_mib(&self) -> u64 {
        self.demand_mib
    }

    /// Entries in queue order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &QueueEntry)> {
        self.entries.iter().map(|(&seq, entry)| (seq, entry))
    }

    /// Zero-based position of the entry with this sequence number.
    pub fn position(&self, seq: i64) -> usize {
        // Just pushed to either end (the usual question): no walk over the queue.
        if self.entries.last_key_value().is_some_and(|(&last, _)| last == seq) {
            return self.entries.len() - 1;
        }
        if self.entries.first_key_value().is_some_and(|(&first, _)| first == seq) {
            return 0;
        }
        self.entries.range(..seq).count()
    }
}
