//! The nodes table: the fleet's machines as the shell last saw them (the core is
//! authoritative; the table is for operators and for reconciling with providers by
//! label). A node's state is a [`NodeRecordState`], stored in a CHECKed column.

use payperplay_core::{NodeId, NodeRemoval, NodeState, Timestamp};

use super::{Store, StoreError, StoreResult};
use crate::clock::to_db;

/// A node's state in the nodes table: the core's `NodeState`, plus `Removed` for a
/// node the core has let go of (its `NodeRemoval` says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRecordState {
    Provisioning,
    Ready,
    Draining,
    Deleting,
    Lost,
    Removed { reason: NodeRemoval },
}

impl NodeRecordState {
    /// The `state` column's value (`nodes_state_check` lists them).
    pub fn state_text(self) -> &'static str {
        match self {
            NodeRecordState::Provisioning => "provisioning",
            NodeRecordState::Ready => "ready",
            NodeRecordState::Draining => "draining",
            NodeRecordState::Deleting => "deleting",
            NodeRecordState::Lost => "lost",
            NodeRecordState::Removed { .. } => "removed",
        }
    }

    /// The `removal` column's value: set exactly when the node is removed.
    pub fn removal_text(self) -> Option<&'static str> {
        match self {
            NodeRecordState::Removed { reason } => Some(match reason {
                NodeRemoval::Deleted => "deleted",
                NodeRemoval::ProvisionFailed => "provision_failed",
                NodeRemoval::Lost => "lost",
            }),
            _ => None,
        }
    }

    /// Reads the two columns back; `None` for a pair the table's checks refuse.
    pub fn from_columns(state: &str, removal: Option<&str>) -> Option<NodeRecordState> {
        let record = match (state, removal) {
            ("provisioning", None) => NodeRecordState::Provisioning,
            ("ready", None) => NodeRecordState::Ready,
            ("draining", None) => NodeRecordState::Draining,
            ("deleting", None) => NodeRecordState::Deleting,
            ("lost", None) => NodeRecordState::Lost,
            ("removed", Some(removal)) => NodeRecordState::Removed {
                reason: match removal {
                    "deleted" => NodeRemoval::Deleted,
                    "provision_failed" => NodeRemoval::ProvisionFailed,
                    "lost" => NodeRemoval::Lost,
                    _ => return None,
                },
            },
            _ => return None,
        };
        Some(record)
    }
}

impl From<NodeState> for NodeRecordState {
    fn from(state: NodeState) -> Self {
        match state {
            NodeState::Provisioning => NodeRecordState::Provisioning,
            NodeState::Ready => NodeRecordState::Ready,
            NodeState::Draining => NodeRecordState::Draining,
            NodeState::Deleting => NodeRecordState::Deleting,
            NodeState::Lost => NodeRecordState::Lost,
        }
    }
}

/// One row of the nodes table, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: NodeId,
    /// `dedicated` or `cloud` (`nodes_kind_check`).
    pub kind: &'static str,
    pub name: String,
    pub is_system: bool,
    pub state: NodeRecordState,
}

impl Store {
    /// Inserts the node or, when it exists, moves it to `record.state`.
    pub async fn upsert_node(&self, record: &NodeRecord, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO nodes (id, kind, name, is_system, state, removal, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, removal = EXCLUDED.removal,
                 updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(record.node_id.0 as i64)
        .bind(record.kind)
        .bind(&record.name)
        .bind(record.is_system)
        .bind(record.state.state_text())
        .bind(record.state.removal_text())
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the provider's reference of a cloud node's VM. A node not recorded yet
    /// (the driver can answer before the runtime records the order) is inserted as
    /// provisioning; its state is left alone otherwise.
    pub async fn set_node_provider_ref(
        &self,
        node_id: NodeId,
        name: &str,
        provider_ref: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO nodes (id, kind, name, is_system, provider_ref, state, created_at_ms, updated_at_ms)
             VALUES ($1, 'cloud', $2, FALSE, $3, 'provisioning', $4, $4)
             ON CONFLICT (id) DO UPDATE SET provider_ref = EXCLUDED.provider_ref,
                 updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(node_id.0 as i64)
        .bind(name)
        .bind(provider_ref)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets the state of a recorded node; `NotFound` when there is no such row.
    pub async fn set_node_state(&self, node_id: NodeId, state: NodeRecordState, now: Timestamp) -> StoreResult<()> {
        let result = sqlx::query("UPDATE nodes SET state = $2, removal = $3, updated_at_ms = $4 WHERE id = $1")
            .bind(node_id.0 as i64)
            .bind(state.state_text())
            .bind(state.removal_text())
            .bind(to_db(now))
            .execute(&self.pool)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound("node"));
        }
        Ok(())
    }

    /// The recorded state of a node, `None` when it has no row.
    pub async fn node_state(&self, node_id: NodeId) -> StoreResult<Option<NodeRecordState>> {
        let row: Option<(String, Option<String>)> = sqlx::query_as("SELECT state, removal FROM nodes WHERE id = $1")
            .bind(node_id.0 as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(state, removal)| {
            NodeRecordState::from_columns(&state, removal.as_deref())
                .unwrap_or_else(|| panic!("nodes has CHECK constraints, found state {state:?}, removal {removal:?}"))
        }))
    }
}
