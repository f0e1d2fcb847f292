//! The start queue: requests wait in order. A requeued start (its node was lost or its
//! container failed to start) goes back to the front.
//!
//! Entries sit in a `VecDeque` sorted by their sequence number: pushes at the back take
//! growing numbers and pushes at the front falling ones, so both ends stay in order
//! without a search. Requests leave from the dispatch window near the front (a short
//! shift) or, when cancelled, from anywhere (a binary search and one shift); no entry
//! allocates, and a position is a binary search.

use std::collections::VecDeque;

use crate::types::{ServerId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueEntry {
    pub server_id: ServerId,
    pub ram_mib: u32,
    pub requested_at: Timestamp,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StartQueue {
    /// `(seq, entry)`, ascending by `seq`.
    entries: VecDeque<(i64, QueueEntry)>,
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
        self.count_in(&entry);
        self.entries.push_back((seq, entry));
        seq
    }

    pub fn push_front(&mut self, entry: QueueEntry) -> i64 {
        self.next_front -= 1;
        let seq = self.next_front;
        self.count_in(&entry);
        self.entries.push_front((seq, entry));
        seq
    }

    fn count_in(&mut self, entry: &QueueEntry) {
        self.demand_mib += entry.ram_mib as u64;
        match self.by_size.binary_search_by_key(&entry.ram_mib, |&(mib, _)| mib) {
            Ok(i) => self.by_size[i].1 += 1,
            Err(i) => self.by_size.insert(i, (entry.ram_mib, 1)),
        }
    }

    fn index_of(&self, seq: i64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&seq, |&(s, _)| s)
    }

    pub fn remove(&mut self, seq: i64) -> QueueEntry {
        let i = self.index_of(seq).expect("queue entry exists");
        let (_, entry) = self.entries.remove(i).expect("index found");
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

    /// `(RAM, how many)` of the first `n` requests, ascending by RAM, every count at
    /// least 1: the running tally itself when the queue holds no more than `n`, else
    /// counted into `scratch` (which keeps its allocation).
    pub fn head_by_size<'a>(&'a self, n: usize, scratch: &'a mut Vec<(u32, u32)>) -> &'a [(u32, u32)] {
        if self.entries.len() <= n {
            return &self.by_size;
        }
        scratch.clear();
        for (_, entry) in self.entries.iter().take(n) {
            match scratch.binary_search_by_key(&entry.ram_mib, |&(mib, _)| mib) {
                Ok(i) => scratch[i].1 += 1,
                Err(i) => scratch.insert(i, (entry.ram_mib, 1)),
            }
        }
        scratch
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many queued requests ask for at most `max_mib` each (from the size tally).
    pub fn count_up_to(&self, max_mib: u32) -> usize {
        self.by_size
            .iter()
            .take_while(|&&(mib, _)| mib <= max_mib)
            .map(|&(_, n)| n as usize)
            .sum()
    }

    /// RAM of the queued requests of at most `max_mib` each (from the size tally: a
    /// handful of tiers, not the queue).
    pub fn demand_mib_up_to(&self, max_mib: u32) -> u64 {
        self.by_size
            .iter()
            .take_while(|&&(mib, _)| mib <= max_mib)
            .map(|&(mib, n)| mib as u64 * n as u64)
            .sum()
    }

    pub fn demand_mib(&self) -> u64 {
        self.demand_mib
    }

    /// Entries in queue order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &QueueEntry)> {
        self.entries.iter().map(|(seq, entry)| (*seq, entry))
    }

    /// Zero-based position of the entry with this sequence number (or of where it
    /// would be).
    pub fn position(&self, seq: i64) -> usize {
        self.index_of(seq).unwrap_or_else(|i| i)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Against an ordered map of the same entries: order, positions, removals from
    /// anywhere, demand, the smallest size and the tally of the first requests.
    #[test]
    fn behaves_like_an_ordered_map() {
        let mut queue = StartQueue::default();
        let mut model: BTreeMap<i64, QueueEntry> = BTreeMap::new();
        let mut rng = crate::test_rng::XorShift::new(0x2545_f491_4f6c_dd1d);
        let mut next = |m: u64| rng.below(m);
        for step in 0..20_000u64 {
            let entry = QueueEntry {
                server_id: ServerId(step),
                ram_mib: [2048, 4096, 8192][next(3) as usize],
                requested_at: Timestamp(step),
            };
            match next(5) {
                0 | 1 => _ = model.insert(queue.push_back(entry), entry),
                2 => _ = model.insert(queue.push_front(entry), entry),
                _ if !model.is_empty() => {
                    // Mostly near the front (dispatch), sometimes anywhere (cancel).
                    let span = if next(4) == 0 { model.len() } else { model.len().min(8) };
                    let (&seq, _) = model.iter().nth(next(span as u64) as usize).expect("in range");
                    assert_eq!(queue.position(seq), model.range(..seq).count());
                    assert_eq!(queue.remove(seq), model.remove(&seq).expect("present"));
                }
                _ => {}
            }
            assert_eq!(queue.len(), model.len());
            assert_eq!(
                queue.demand_mib(),
                model.values().map(|e| e.ram_mib as u64).sum::<u64>()
            );
            assert_eq!(queue.smallest_mib(), model.values().map(|e| e.ram_mib).min());
            assert_eq!(
                queue.count_up_to(4096),
                model.values().filter(|e| e.ram_mib <= 4096).count()
            );
            assert_eq!(
                queue.demand_mib_up_to(4096),
                model
                    .values()
                    .map(|e| e.ram_mib as u64)
                    .filter(|&m| m <= 4096)
                    .sum::<u64>()
            );
            if step % 97 == 0 {
                assert!(
                    queue
                        .iter()
                        .map(|(seq, e)| (seq, *e))
                        .eq(model.iter().map(|(&s, &e)| (s, e)))
                );
                let mut scratch = Vec::new();
                for n in [0, 5, model.len(), model.len() + 1] {
                    let mut tally: BTreeMap<u32, u32> = BTreeMap::new();
                    for e in model.values().take(n) {
                        *tally.entry(e.ram_mib).or_insert(0) += 1;
                    }
                    let expected: Vec<(u32, u32)> = tally.into_iter().collect();
                    assert_eq!(queue.head_by_size(n, &mut scratch), expected.as_slice());
                }
            }
        }
    }
}
