//! Commands the core waits for, by id. Ids are handed out in increasing order and
//! results mostly come back soon, so the map is a window of slots from the oldest
//! outstanding id: insert and remove are an index, with no allocation per command.
//! An entry that outlives `WINDOW` newer commands (a result that never comes) moves
//! to an ordered map, so memory stays bounded however long the core runs.

use std::collections::{BTreeMap, VecDeque};

use crate::types::CommandId;

const WINDOW: usize = 1 << 16;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PendingMap<V> {
    /// Id of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<V>>,
    /// Entries older than the window, and any inserted out of order.
    old: BTreeMap<CommandId, V>,
}

impl<V> Default for PendingMap<V> {
    fn default() -> Self {
        PendingMap {
            base: 0,
            slots: VecDeque::new(),
            old: BTreeMap::new(),
        }
    }
}

impl<V> PendingMap<V> {
    pub(crate) fn insert(&mut self, id: CommandId, value: V) {
        let end = self.base + self.slots.len() as u64;
        if self.slots.is_empty() && id.0 >= self.base {
            self.base = id.0;
        } else if id.0 < end {
            // Not after every id seen: rare, kept in the ordered map.
            let slot = id.0.checked_sub(self.base).and_then(|i| self.slots.get_mut(i as usize));
            assert!(slot.is_none_or(|s| s.is_none()), "command {} is already pending", id.0);
            let previous = self.old.insert(id, value);
            assert!(previous.is_none(), "command {} is already pending", id.0);
            return;
        }
        while self.base + (self.slots.len() as u64) < id.0 {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(value));
        while self.slots.len() > WINDOW {
            if let Some(value) = self.slots.pop_front().expect("non-empty") {
                self.old.insert(CommandId(self.base), value);
            }
            self.base += 1;
        }
        self.trim();
    }

    pub(crate) fn remove(&mut self, id: &CommandId) -> Option<V> {
        if let Some(i) = id.0.checked_sub(self.base)
            && let Some(slot) = self.slots.get_mut(i as usize)
            && let Some(value) = slot.take()
        {
            self.trim();
            return Some(value);
        }
        if self.old.is_empty() { None } else { self.old.remove(id) }
    }

    /// Forget the command `awaited` names, if any (its result no longer matters).
    pub(crate) fn forget(&mut self, awaited: Option<CommandId>) {
        if let Some(id) = awaited {
            self.remove(&id);
        }
    }

    /// Every entry, the window's in id order, then the older and out-of-order ones.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CommandId, &V)> {
        let base = self.base;
        let window = self.slots.iter().enumerate();
        window
            .filter_map(move |(i, slot)| slot.as_ref().map(|v| (CommandId(base + i as u64), v)))
            .chain(self.old.iter().map(|(&id, v)| (id, v)))
    }

    /// Drop empty slots at the front.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same answers as an ordered map, with ids in order, out of order, long-lived.
    #[test]
    fn behaves_like_an_ordered_map() {
        let mut map = PendingMap::default();
        let mut model = BTreeMap::new();
        let mut rng = crate::test_rng::XorShift::new(0x1234_5678_9abc_def1);
        let mut next = |m: u64| rng.below(m);
        let mut id = 1u64;
        let mut live: Vec<u64> = Vec::new();
        for step in 0..300_000u64 {
            match next(10) {
                0..=4 => {
                    id += 1 + next(3);
                    map.insert(CommandId(id), step);
                    model.insert(CommandId(id), step);
                    live.push(id);
                }
                5..=8 if !live.is_empty() => {
                    // Mostly old ones first, but not always; some never come back.
                    let i = if next(4) == 0 {
                        next(live.len() as u64) as usize
                    } else {
                        0
                    };
                    let k = live.remove(i);
                    if !k.is_multiple_of(97) {
                        assert_eq!(map.remove(&CommandId(k)), model.remove(&CommandId(k)));
                    } else {
                        live.push(k);
                    }
                }
                _ => {
                    let k = CommandId(next(id + 10));
                    assert_eq!(map.remove(&k), model.remove(&k));
                    live.retain(|&l| l != k.0);
                }
            }
        }
        assert_eq!(map.len(), model.len());
        assert!(!map.old.is_empty(), "long-lived entries left the window");
        assert!(map.slots.len() <= WINDOW);
        // An id below the window (never handed out here) is still accepted.
        map.insert(CommandId(0), 7);
        assert_eq!(map.remove(&CommandId(0)), Some(7));
    }
}
