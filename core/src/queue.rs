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
    /// How many queued requests ask for each RAM size.
    by_size: BTreeMap<u32, u32>,
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
        *self.by_size.entry(entry.ram_mib).or_default() += 1;
        let previous = self.entries.insert(seq, entry);
        assert!(previous.is_none());
        seq
    }

    pub fn remove(&mut self, seq: i64) -> QueueEntry {
        let entry = self.entries.remove(&seq).expect("queue entry exists");
        self.demand_mib -= entry.ram_mib as u64;
        let count = self.by_size.get_mut(&entry.ram_mib).expect("size counted");
        *count -= 1;
        if *count == 0 {
            self.by_size.remove(&entry.ram_mib);
        }
        entry
    }

    /// The smallest RAM any queued request asks for.
    pub fn smallest_mib(&self) -> Option<u32> {
        self.by_size.first_key_value().map(|(&mib, _)| mib)
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
        self.entries.range(..seq).count()
    }
}
