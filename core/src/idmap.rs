//! A map from dense integer ids to values: a vector slot per id below `DENSE_MAX`
//! (what databases and the simulator hand out), an ordered map above. Iteration is in
//! ascending id order, so it is deterministic, and lookups on the hot path are an
//! index instead of a tree walk. The live dense ids are also kept in a sorted vector,
//! so iterating costs the live entries only, however many ids came and went (cloud
//! VMs: thousands ordered and deleted over a month, a few hundred alive).

use std::collections::BTreeMap;

const DENSE_MAX: u64 = 1 << 22;

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

#[derive(Debug, Clone)]
pub struct IdMap<K: DenseId, V> {
    dense: Vec<Option<V>>,
    /// The ids of the occupied `dense` slots, ascending.
    dense_ids: Vec<K>,
    sparse: BTreeMap<K, V>,
    len: usize,
}

impl<K: DenseId, V> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap {
            dense: Vec::new(),
            dense_ids: Vec::new(),
            sparse: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<K: DenseId, V> IdMap<K, V> {
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
            self.dense.get(i as usize).and_then(Option::as_ref)
        } else {
            self.sparse.get(key)
        }
    }

    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = key.index();
        if i < DENSE_MAX {
            self.dense.get_mut(i as usize).and_then(Option::as_mut)
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
            let i = i as usize;
            if self.dense.len() <= i {
                self.dense.resize_with(i + 1, || None);
            }
            let previous = self.dense[i].replace(value);
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
            let removed = self.dense.get_mut(i as usize).and_then(Option::take);
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
            .map(|&k| {
                (
                    k,
                    self.dense[k.index() as usize]
                        .as_ref()
                        .expect("listed ids are occupied"),
                )
            })
            .chain(self.sparse.iter().map(|(&k, v)| (k, v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: DenseId + std::fmt::Debug, V> std::ops::Index<&K> for IdMap<K, V> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ServerId;

    #[test]
    fn dense_and_sparse_ids_iterate_in_order() {
        let mut map = IdMap::new();
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
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec![ServerId(2), ServerId(5), ServerId(9), ServerId(1 << 40)]
        );
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
