//! The core's timer queue: entries `(at, seq, timer)` taken earliest first by
//! `(at, seq)`, exactly like one binary heap, but cheaper.
//!
//! Most timers are armed a fixed delay ahead of the core's clock (archive after,
//! reservation timeout, idle sleep, provisioning timeout, scale tick). The clock never
//! goes backwards, so timers of one such delay arrive in deadline order: each delay
//! gets a FIFO lane (a `VecDeque`, O(1) push and pop) and only the others go to the
//! heap. The lanes stay sorted by `(at, seq)` because `seq` grows with every push, so
//! taking the smallest head across the lanes and the heap gives the same order as a
//! single heap. Long-lived timers (a sleeping server's archive timer, 30 days ahead)
//! no longer deepen the heap the short-lived ones go through.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::types::Timestamp;

/// Timers armed exactly `delays[i]` ahead of the clock go to lane `i`.
const MAX_LANES: usize = 6;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TimerQueue<T: Copy + Ord> {
    delays: Vec<u64>,
    lanes: Vec<VecDeque<(Timestamp, u64, T)>>,
    /// Sorted in snapshots, so equal queues serialize to equal bytes.
    #[serde(with = "crate::snapshot::heap")]
    heap: BinaryHeap<Reverse<(Timestamp, u64, T)>>,
    /// The earliest entry and where it sits (`None`: the heap; `Some(i)`: lane `i`),
    /// kept up to date so `peek` is one load.
    head: Option<(Option<usize>, (Timestamp, u64, T))>,
    /// Entries in the lanes and the heap (asked after every core input).
    len: usize,
}

impl<T: Copy + Ord> TimerQueue<T> {
    /// `delays`: the fixed delays that get a lane of their own (duplicates and zeros
    /// are dropped; beyond `MAX_LANES`, timers go to the heap).
    pub(crate) fn new(delays: impl IntoIterator<Item = u64>) -> Self {
        let mut lanes_delays: Vec<u64> = Vec::new();
        for d in delays {
            if d > 0 && !lanes_delays.contains(&d) && lanes_delays.len() < MAX_LANES {
                lanes_delays.push(d);
            }
        }
        TimerQueue {
            lanes: lanes_delays.iter().map(|_| VecDeque::new()).collect(),
            delays: lanes_delays,
            heap: BinaryHeap::new(),
            head: None,
            len: 0,
        }
    }

    /// The same entries under other lane delays (a reconfiguration), as if each had
    /// been armed at `now`: the order of `(at, seq)` is kept.
    pub(crate) fn with_delays(&self, now: Timestamp, delays: impl IntoIterator<Item = u64>) -> Self {
        let mut entries: Vec<(Timestamp, u64, T)> = self
            .lanes
            .iter()
            .flatten()
            .copied()
            .chain(self.heap.iter().map(|Reverse(entry)| *entry))
            .collect();
        entries.sort_unstable();
        let mut queue = TimerQueue::new(delays);
        for (at, seq, timer) in entries {
            queue.push(now, at, seq, timer);
        }
        queue
    }

    /// Add a timer armed at `now`. `seq` must grow with every push and `now` must
    /// never go backwards.
    #[inline]
    pub(crate) fn push(&mut self, now: Timestamp, at: Timestamp, seq: u64, timer: T) {
        self.len += 1;
        if let Some(delay) = at.ms().checked_sub(now.ms())
            && let Some(lane) = self.delays.iter().position(|&d| d == delay)
        {
            let queue = &mut self.lanes[lane];
            debug_assert!(queue.back().is_none_or(|&(a, s, _)| (a, s) < (at, seq)));
            queue.push_back((at, seq, timer));
            self.offer_head(Some(lane), (at, seq, timer));
            return;
        }
        self.heap.push(Reverse((at, seq, timer)));
        self.offer_head(None, (at, seq, timer));
    }

    #[inline]
    fn offer_head(&mut self, from: Option<usize>, entry: (Timestamp, u64, T)) {
        if self.head.is_none_or(|(_, (at, seq, _))| (entry.0, entry.1) < (at, seq)) {
            self.head = Some((from, entry));
        }
    }

    /// Where the earliest entry is: `None` for the heap, `Some(i)` for lane `i`.
    #[inline]
    fn earliest(&self) -> Option<(Option<usize>, (Timestamp, u64, T))> {
        let mut best = self.heap.peek().map(|&Reverse(entry)| (None, entry));
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(&entry) = lane.front()
                && best.is_none_or(|(_, (at, seq, _))| (entry.0, entry.1) < (at, seq))
            {
                best = Some((Some(i), entry));
            }
        }
        best
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<(Timestamp, u64, T)> {
        self.head.map(|(_, entry)| entry)
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<(Timestamp, u64, T)> {
        let (from, entry) = self.head?;
        self.len -= 1;
        match from {
            None => {
                self.heap.pop();
            }
            Some(i) => {
                self.lanes[i].pop_front();
            }
        }
        self.head = self.earliest();
        Some(entry)
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keep only the entries `keep` accepts (lanes keep their order).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Timestamp, u64, T) -> bool) {
        self.heap.retain(|&Reverse((at, seq, timer))| keep(at, seq, timer));
        for lane in &mut self.lanes {
            lane.retain(|&(at, seq, timer)| keep(at, seq, timer));
        }
        self.len = self.heap.len() + self.lanes.iter().map(VecDeque::len).sum::<usize>();
        self.head = self.earliest();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the mix of lane and heap timers, entries come out in the order one
    /// heap gives.
    #[test]
    fn pops_in_the_order_of_a_single_heap() {
        let mut queue = TimerQueue::new([100, 7, 100, 0]);
        let mut heap = BinaryHeap::new();
        let mut rng = crate::test_rng::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = |m: u64| rng.below(m);
        let mut now = Timestamp(0);
        let mut seq = 0;
        let mut popped = 0;
        for _ in 0..20_000 {
            now = now.plus_ms(next(3));
            if next(4) > 0 {
                let delay = [7, 100, next(200), 0][next(4) as usize];
                let at = now.plus_ms(delay);
                seq += 1;
                queue.push(now, at, seq, next(5));
                heap.push(Reverse((at, seq, 0)));
            } else {
                let expect = heap.pop().map(|Reverse((at, seq, _))| (at, seq));
                let got = queue.pop().map(|(at, seq, _)| (at, seq));
                assert_eq!(got, expect);
                popped += usize::from(got.is_some());
            }
            assert_eq!(queue.len(), heap.len());
            assert_eq!(
                queue.peek().map(|(at, seq, _)| (at, seq)),
                heap.peek().map(|&Reverse((at, seq, _))| (at, seq))
            );
        }
        assert!(popped > 1000);
        assert!(queue.lanes.iter().all(|lane| !lane.is_empty()), "lanes were used");
    }
}
