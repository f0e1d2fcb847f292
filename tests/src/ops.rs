//! Random operations on a core, shared by the property tests (`core_properties.rs`)
//! and the snapshot tests (`core_snapshots.rs`). Each test turns an operation into an
//! input its own way; the failure kinds and the node picks are resolved here.

use payperplay_core::{FailureKind, NodeId};
use proptest::prelude::*;

use payperplay_core::{MS_PER_HOUR, MS_PER_MINUTE};

/// Users and servers the operations name (ids from 1).
pub const N_USERS: u64 = 3;
pub const N_SERVERS: u64 = 8;
/// The RAM tiers servers are created with, by id.
pub const TIERS: [u32; 4] = [2048, 4096, 8192, 16384];

/// One random operation.
#[derive(Debug, Clone)]
pub enum Op {
    Start(u64),
    Stop(u64),
    Cancel(u64),
    Delete(u64),
    TopUp(u64, i64),
    Players(u64, u32),
    Advance(u64),
    /// Completes the pending command at this index (modulo their number): succeeded,
    /// or failed with the failure kind at this index of [`FAILURE_KINDS`].
    Complete(usize, bool, u8),
    Boot(u64),
    LoseNode(usize),
    /// A node (by index, modulo their number) answers a probe again.
    AnswerNode(usize),
    Exited(u64),
}

/// The failure kinds `Op::Complete` picks from.
pub const FAILURE_KINDS: [FailureKind; 4] = [
    FailureKind::Other,
    FailureKind::ResourceUnavailable,
    FailureKind::RateLimited,
    FailureKind::Permanent,
];

pub fn op() -> impl Strategy<Value = Op> {
    let server = 1..=N_SERVERS;
    prop_oneof![
        6 => server.clone().prop_map(Op::Start),
        2 => server.clone().prop_map(Op::Stop),
        1 => server.clone().prop_map(Op::Cancel),
        1 => server.clone().prop_map(Op::Delete),
        1 => (1..=N_USERS, 1i64..5_000_000).prop_map(|(u, a)| Op::TopUp(u, a)),
        3 => (server.clone(), 0u32..4).prop_map(|(s, n)| Op::Players(s, n)),
        4 => (0u64..30 * MS_PER_MINUTE).prop_map(Op::Advance),
        1 => (1u64..30).prop_map(|h| Op::Advance(h * MS_PER_HOUR)),
        8 => (any::<usize>(), prop::bool::weighted(0.85), 0u8..4).prop_map(|(i, ok, kind)| Op::Complete(i, ok, kind)),
        4 => server.clone().prop_map(Op::Boot),
        1 => any::<usize>().prop_map(Op::LoseNode),
        1 => any::<usize>().prop_map(Op::AnswerNode),
        1 => server.prop_map(Op::Exited),
    ]
}

/// The node at `index` (modulo their number) among `nodes`, if there is any.
pub fn pick_node(nodes: &[NodeId], index: usize) -> Option<NodeId> {
    (!nodes.is_empty()).then(|| nodes[index % nodes.len()])
}
