//! A map from dense integer ids to values: a slot per id below `DENSE_MAX` (what
//! databases and the simulator hand out), an ordered map above. Iteration is in
//! ascending id order, so it is deterministic, and lookups on the hot path are an
//! index instead of a tree walk. The live dense ids are also kept in a sorted vector,
//! so iterating costs the live entries only, however many ids came and went.
//!
//! Two slot stores, chosen by the kind of id:
//! - [`Flat`] (the default): one vector slot per id up to the largest. For ids that
//!   stay (users, servers): one index per lookup.
//! - [`Paged`]: slots in pages of `PAGE` ids, allocated when an id in them is
//!   inserted and freed when their last entry goes. For ids that churn (cloud VMs:
//!   thousands ordered and deleted over a month, each with a new id, a few hundred
//!   alive), where a flat vector would grow with every id ever handed out and memory
//!   would rise with simulated time. A run of dead ids costs one empty page-table entry
//!   per `PAGE` ids, and the page table is bounded by `DENSE_MAX / PAGE` entries.

use std::collections::BTreeMap;

const DENSE_MAX: u64 = 1 << 22;
const PAGE_BITS: u32 = 6;
const PAGE: usize = 1 << PAGE_BITS;

pub trait DenseId: Copy + Ord {
    fn index(self) -> u64;
    fn from_index(index: u64) -> Self;
}

macro_rules! dense_id {
    ($($t:ty),*) => {$(
        impl DenseId for $t {
            fn index(self) -> u64 {
                self.0
            }
            fn from_index(index: u64) -> Self {
                Self(index)
            }
        }
    )*};
}

dense_id!(crate::types::ServerId, crate::types::UserId, crate::types::NodeId);

/// Where an [`IdMap`] keeps the values of ids below `DENSE_MAX`.
pub trait Slots<V>: Default {
    fn get(&self, i: usize) -> Option<&V>;
    fn get_mut(&mut self, i: usize) -> Option<&mut V>;
    /// Put `value` in slot `i`; the value it held, if any.
    fn put(&mut self, i: usize, value: V) -> Option<V>;
    fn take(&mut self, i: usize) -> Option<V>;
}

/// One vector slot per id, up to the largest inserted.
#[derive(Debug, Clone)]
pub struct Flat<V>(Vec<Option<V>>);

impl<V> Default for Flat<V> {
    fn default() -> Self {
        Flat(Vec::new())
    }
}

impl<V> Slots<V> for Flat<V> {
    #[inline]
    fn get(&self, i: usize) -> Option<&V> {
        self.0.get(i).and_then(Option::as_ref)
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> Option<&mut V> {
        self.0.get_mut(i).and_then(Option::as_mut)
    }

    fn put(&mut self, i: usize, value: V) -> Option<V> {
        if self.0.len() <= i {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i].replace(value)
    }

    fn take(&mut self, i: usize) -> Option<V> {
        self.0.get_mut(i).and_then(Option::take)
    }
}

/// `PAGE` consecutive slots and how many of them are occupied.
#[derive(Debug, Clone)]
struct Page<V> {
    slots: Box<[Option<V>; PAGE]>,
    live: u32,
}

/// Slots in pages of `PAGE` ids; a page is freed with its last entry.
#[derive(Debug, Clone)]
pub struct Paged<V>(Vec<Option<Page<V>>>);

impl<V> Default for Paged<V> {
    fn default() -> Self {
        Paged(Vec::new())
    }
}

impl<V> Paged<V> {
    #[cfg(test)]
    fn pages_allocated(&self) -> usize {
        self.0.iter().filter(|p| p.is_some()).count()
    }
}

#[inline]
fn split(i: usize) -> (usize, usize) {
    (i >> PAGE_BITS, i & (PAGE - 1))
}

impl<V> Slots<V> for Paged<V> {
    #[inline]
    fn get(&self, i: usize) -> Option<&V> {
        let (page, slot) = split(i);
        self.0.get(page)?.as_ref()?.slots[slot].as_ref()
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> Option<&mut V> {
        let (page, slot) = split(i);
        self.0.get_mut(page)?.as_mut()?.slots[slot].as_mut()
    }

    fn put(&mut self, i: usize, value: V) -> Option<V> {
        let (page, slot) = split(i);
        if self.0.len() <= page {
            self.0.resize_with(page + 1, || None);
        }
        let page = self.0[page].get_or_insert_with(|| {
            let slots: Box<[Option<V>]> = (0..PAGE).map(|_| None).collect();
            Page {
                slots: slots.try_into().ok().expect("PAGE slots"),
                live: 0,
            }
        });
        let previous = page.slots[slot].replace(value);
        page.live += u32::from(previous.is_none());
        previous
    }

    fn take(&mut self, i: usize) -> Option<V> {
        let (page_idx, slot) = split(i);
        let page = self.0.get_mut(page_idx)?.as_mut()?;
        let taken = page.slots[slot].take();
        if taken.is_some() {
            page.live -= 1;
            if page.live == 0 {
                self.0[page_idx] = None;
            }
        }
        taken
    }
}

#[derive(Debug, Clone)]
pub struct IdMap<K: DenseId, V, S: Slots<V> = Flat<V>> {
    slots: S,
    /// The ids of the occupied slots, ascending.
    dense_ids: Vec<K>,
    sparse: BTreeMap<K, V>,
    len: usize,
}

impl<K: DenseId, V, S: Slots<V>> Default for IdMap<K, V, S> {
    fn default() -> Self {
        IdMap {
            slots: S::default(),
            dense_ids: Vec::new(),
            sparse: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<K: DenseId, V, S: Slots<V>> IdMap<K, V, S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        let i = key.index();
        if i < DENSE_MAX {
            self.slots.get(i as usize)
        } else {
            self.sparse.get(key)
        }
    }

    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = key.index();
        if i < DENSE_MAX {
            self.slots.get_mut(i as usize)
        } else {
            self.sparse.get_mut(key)
        }
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let i = key.index();
        let previous = if i < DENSE_MAX {
            let previous = self.slots.put(i as usize, value);
            if previous.is_none() {
                // Ids are mostly handed out ascending: a push at the end.
                if self.dense_ids.last().is_none_or(|last| *last < key) {
                    self.dense_ids.push(key);
                } else {
                    let at = self.dense_ids.partition_point(|id| *id < key);
                    self.dense_ids.insert(at, key);
                }
            }
            previous
        } else {
            self.sparse.insert(key, value)
        };
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = key.index();
        let removed = if i < DENSE_MAX {
            let removed = self.slots.take(i as usize);
            if removed.is_some() {
                let at = self.dense_ids.partition_point(|id| id < key);
                self.dense_ids.remove(at);
            }
            removed
        } else {
            self.sparse.remove(key)
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Entries in ascending id order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.dense_ids
            .iter()
            .map(|&k| (k, self.slots.get(k.index() as usize).expect("listed ids are occupied")))
            .chain(self.sparse.iter().map(|(&k, v)| (k, v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: DenseId + std::fmt::Debug, V, S: Slots<V>> std::ops::Index<&K> for IdMap<K, V, S> {
    type Output = V;

    #[inline]
    fn index(&self, key: &K) -> &V {
        self.get(key).unwrap_or_else(|| panic!("no entry for {key:?}"))
    }
}

/// A small set of ids kept as a sorted vector: a user's servers and the ones holding
/// RAM are a handful each, and a start or stop inserts or removes one. A `BTreeSet`
/// allocates a node for its first element and frees it with its last; this keeps its
/// capacity and searches a few cache-resident ids. Iteration is in ascending order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<K>", into = "Vec<K>")]
pub struct IdSet<K: Ord + Copy> {
    sorted: Vec<K>,
}

impl<K: Ord + Copy> Default for IdSet<K> {
    fn default() -> Self {
        IdSet { sorted: Vec::new() }
    }
}

impl<K: Ord + Copy> IdSet<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Adds `id`; false when it was already there.
    pub fn insert(&mut self, id: K) -> bool {
        match self.sorted.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.sorted.insert(at, id);
                true
            }
        }
    }

    /// Removes `id`; false when it was not there.
    pub fn remove(&mut self, id: &K) -> bool {
        match self.sorted.binary_search(id) {
            Ok(at) => {
                self.sorted.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, id: &K) -> bool {
        self.sorted.binary_search(id).is_ok()
    }

    /// The smallest id at or above `from`.
    pub fn first_from(&self, from: K) -> Option<K> {
        let at = self.sorted.partition_point(|&id| id < from);
        self.sorted.get(at).copied()
    }

    /// Ids in ascending order.
    pub fn iter(&self) -> std::slice::Iter<'_, K> {
        self.sorted.iter()
    }
}

impl<K: Ord + Copy> From<Vec<K>> for IdSet<K> {
    fn from(mut ids: Vec<K>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        IdSet { sorted: ids }
    }
}

impl<K: Ord + Copy> From<IdSet<K>> for Vec<K> {
    fn from(set: IdSet<K>) -> Self {
        set.sorted
    }
}

impl<'a, K: Ord + Copy> IntoIterator for &'a IdSet<K> {
    type Item = &'a K;
    type IntoIter = std::slice::Iter<'a, K>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// In snapshots a map is its entries in id order, `(id, value)` pairs; reading them
/// back inserts them one by one (the slots' layout is rebuilt, not copied).
impl<K: DenseId + serde::Serialize, V: serde::Serialize, S: Slots<V>> serde::Serialize for IdMap<K, V, S> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, K: DenseId + serde::Deserialize<'de>, V: serde::Deserialize<'de>, S: Slots<V>> serde::Deserialize<'de>
    for IdMap<K, V, S>
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<(K, V)>::deserialize(deserializer)?;
        let mut map = IdMap::new();
        for (key, value) in entries {
            if map.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("an id appears twice"));
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ServerId;

    fn dense_and_sparse_ids_iterate_in_order<S: Slots<&'static str>>() {
        let mut map: IdMap<ServerId, &str, S> = IdMap::new();
        map.insert(ServerId(1 << 40), "far");
        map.insert(ServerId(7), "seven");
        map.insert(ServerId(2), "two");
        assert_eq!(map.len(), 3);
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec![ServerId(2), ServerId(7), ServerId(1 << 40)]
        );
        assert_eq!(map.remove(&ServerId(7)), Some("seven"));
        assert_eq!(map.remove(&ServerId(7)), None);
        assert_eq!(map[&ServerId(1 << 40)], "far");
        assert_eq!(map.len(), 2);
        map.insert(ServerId(5), "five");
        map.insert(ServerId(9), "nine");
        assert_eq!(map.insert(ServerId(9), "nine again"), Some("nine"));
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec![ServerId(2), ServerId(5), ServerId(9), ServerId(1 << 40)]
        );
    }

    #[test]
    fn both_slot_stores_iterate_dense_and_sparse_ids_in_order() {
        dense_and_sparse_ids_iterate_in_order::<Flat<&str>>();
        dense_and_sparse_ids_iterate_in_order::<Paged<&str>>();
    }

    #[test]
    fn ids_that_come_and_go_leave_no_pages_behind() {
        // Like cloud VMs: every id new, a few alive at a time.
        let mut map: IdMap<ServerId, u64, Paged<u64>> = IdMap::new();
        map.insert(ServerId(1), 1);
        for id in 2..100_000u64 {
            map.insert(ServerId(id), id);
            if id > 10 {
                assert_eq!(map.remove(&ServerId(id - 8)), Some(id - 8));
            }
        }
        assert_eq!(map.len(), 10, "ids 1, 2 and the last eight");
        assert_eq!(
            map.slots.pages_allocated(),
            2,
            "the page of ids 1 and 2, and the current one"
        );
        assert_eq!(map[&ServerId(99_999)], 99_999);
        assert_eq!(map.get(&ServerId(50_000)), None);
        assert_eq!(
            map.keys().take(3).collect::<Vec<_>>(),
            [ServerId(1), ServerId(2), ServerId(99_992)]
        );
        assert_eq!(map.slots.0.len(), 99_999 / PAGE + 1);
    }

    #[test]
    fn id_set_stays_sorted_and_unique() {
        let mut set = IdSet::new();
        assert!(set.insert(ServerId(9)));
        assert!(set.insert(ServerId(3)));
        assert!(set.insert(ServerId(5)));
        assert!(!set.insert(ServerId(5)));
        assert_eq!(
            set.iter().copied().collect::<Vec<_>>(),
            vec![ServerId(3), ServerId(5), ServerId(9)]
        );
        assert_eq!(set.first_from(ServerId(4)), Some(ServerId(5)));
        assert_eq!(set.first_from(ServerId(10)), None);
        assert!(set.remove(&ServerId(5)));
        assert!(!set.remove(&ServerId(5)));
        assert!(!set.contains(&ServerId(5)) && set.contains(&ServerId(9)));
        let json = serde_json::to_string(&set).expect("serializes");
        assert_eq!(json, "[3,9]");
        let back: IdSet<ServerId> = serde_json::from_str("[9,3,3]").expect("deserializes");
        assert_eq!(back, set);
    }
}
