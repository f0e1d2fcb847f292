//! Versioned snapshots of the core's whole state, and the version of its rules.
//!
//! A snapshot is the core (configuration, fleet, servers, users, queue, timers, pending
//! commands, counters and what the policy has learned) as serde data, wrapped in an
//! envelope that names its format (`SNAPSHOT_FORMAT_VERSION`) and the rules that built
//! it (`CORE_VERSION`, the crate version). Every collection in it is ordered (maps as
//! id-ordered lists, the timer heap sorted), so two cores in the same state serialize
//! to the same bytes: restoring a snapshot and handling the rest of the inputs gives
//! the state a full replay gives (`tests/tests/core_snapshots.rs`).
//!
//! A shell stores the envelope, checks `SnapshotHeader` first (an unknown format is a
//! clear error, not a field-by-field parse failure), then restores with `Core::restore`.

use serde::{Deserialize, Serialize};

/// The core's rules and state version. Bump it when the same inputs can lead to other
/// decisions or another state (a changed billing rule, a new state field): a journal
/// stretch recorded under another version is not replayed by this code, only crossed
/// by a snapshot taken at or after it.
pub const CORE_VERSION: u32 = 1;

/// The snapshot format this core writes. `SNAPSHOT_FORMATS_READ` are the ones it can
/// restore.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
pub const SNAPSHOT_FORMATS_READ: &[u32] = &[1];

/// The crate version that built this core.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a snapshot cannot be restored. (No `thiserror` in the core, whose only
/// dependencies are serde and humantime: `Display` by hand.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The envelope's `format_version` is not one this core reads.
    UnknownFormat { found: u32 },
    /// The state does not hold together (names what is wrong).
    Malformed(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::UnknownFormat { found } => write!(
                f,
                "snapshot format version {found} is unknown to this core (core version {CORE_VERSION}, \
                 crate {CRATE_VERSION}, reads formats {SNAPSHOT_FORMATS_READ:?})"
            ),
            SnapshotError::Malformed(message) => write!(f, "snapshot is malformed: {message}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// The envelope's fields other than the state: read first, so an unknown format is
/// refused before its state is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub format_version: u32,
    pub core_version: u32,
    pub crate_version: String,
}

impl SnapshotHeader {
    /// The header this core writes.
    pub fn current() -> SnapshotHeader {
        SnapshotHeader {
            format_version: SNAPSHOT_FORMAT_VERSION,
            core_version: CORE_VERSION,
            crate_version: CRATE_VERSION.to_string(),
        }
    }

    /// `Ok` when this core can restore a snapshot with this header.
    pub fn check(&self) -> Result<(), SnapshotError> {
        if SNAPSHOT_FORMATS_READ.contains(&self.format_version) {
            Ok(())
        } else {
            Err(SnapshotError::UnknownFormat {
                found: self.format_version,
            })
        }
    }
}

/// A snapshot to write: the header and the core, borrowed (`Core::snapshot`).
#[derive(Serialize)]
pub struct SnapshotRef<'a> {
    #[serde(flatten)]
    pub header: SnapshotHeader,
    pub state: &'a crate::Core,
}

/// A snapshot read back: restore it with `Core::restore`.
#[derive(Deserialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub header: SnapshotHeader,
    pub state: crate::Core,
}

/// serde for a map whose keys are not text or numbers (JSON keys are text): a list of
/// `(key, value)` pairs in key order.
pub(crate) mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?.into_iter().collect())
    }
}

/// serde for an array longer than serde's built-in 32: a list of its elements.
pub(crate) mod array {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<T: Serialize, const N: usize, S: Serializer>(
        array: &[T; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(array.iter())
    }

    pub fn deserialize<'de, T: Deserialize<'de>, const N: usize, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[T; N], D::Error> {
        let items = Vec::<T>::deserialize(deserializer)?;
        let n = items.len();
        items
            .try_into()
            .map_err(|_| D::Error::custom(format!("expected {N} elements, found {n}")))
    }
}

/// serde for a binary min-heap: its entries sorted, so equal heaps give equal bytes
/// whatever their internal layout.
pub(crate) mod heap {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize + Ord + Clone, S: Serializer>(
        heap: &BinaryHeap<Reverse<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<&T> = heap.iter().map(|Reverse(entry)| entry).collect();
        sorted.sort_unstable();
        serializer.collect_seq(sorted)
    }

    pub fn deserialize<'de, T: Deserialize<'de> + Ord, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BinaryHeap<Reverse<T>>, D::Error> {
        Ok(Vec::<T>::deserialize(deserializer)?.into_iter().map(Reverse).collect())
    }
}
