//! The nodes table: states are a checked set (the core's words plus `removed` with a
//! reason), the migration converts the free text written before, and the runtime
//! writes what the core decides.

use payperplay_core::{NodeId, NodeRemoval, Timestamp};
use payperplay_prod::store::{NodeRecord, NodeRecordState, Store};
use sqlx::PgPool;

const INITIAL_SQL: &str = include_str!("../../../migrations/20261125000001_initial.sql");
const NODE_STATE_SQL: &str = include_str!("../../../migrations/20261126000001_node_state_checked.sql");

fn record(node_id: u64, state: NodeRecordState) -> NodeRecord {
    NodeRecord {
        node_id: NodeId(node_id),
        kind: "cloud",
        name: format!("ppp-node-{node_id}-cpx32-fsn1"),
        is_system: false,
        state,
    }
}

async fn insert_raw(pool: &PgPool, id: i64, state: &str, removal: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (id, kind, name, is_system, state, removal, created_at_ms, updated_at_ms)
         VALUES ($1, 'cloud', 'n', FALSE, $2, $3, 0, 0)",
    )
    .bind(id)
    .bind(state)
    .bind(removal)
    .execute(pool)
    .await
    .map(|_| ())
}

fn violated_constraint(result: Result<(), sqlx::Error>) -> String {
    match result {
        Err(sqlx::Error::Database(db)) => db.constraint().unwrap_or("none").to_string(),
        other => panic!("expected a constraint violation, got {other:?}"),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_state_outside_the_checked_set_is_refused_by_the_database(pool: PgPool) {
    assert_eq!(
        violated_constraint(insert_raw(&pool, 1, "provisioned", None).await),
        "nodes_state_check"
    );
    assert_eq!(
        violated_constraint(insert_raw(&pool, 2, "removed_lost", None).await),
        "nodes_state_check"
    );
    assert_eq!(
        violated_constraint(insert_raw(&pool, 3, "removed", None).await),
        "nodes_removal_iff_removed_check",
        "removed needs its reason"
    );
    assert_eq!(
        violated_constraint(insert_raw(&pool, 4, "ready", Some("lost")).await),
        "nodes_removal_iff_removed_check",
        "only a removed node has a reason"
    );
    assert_eq!(
        violated_constraint(insert_raw(&pool, 5, "removed", Some("vanished")).await),
        "nodes_removal_check"
    );
    insert_raw(&pool, 6, "removed", Some("provision_failed")).await.unwrap();
    let n_nodes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n_nodes, 1, "only the valid row went in");
}

#[sqlx::test(migrations = "../migrations")]
async fn every_node_record_state_is_written_and_read_back(pool: PgPool) {
    let store = Store::new(pool);
    let states = [
        NodeRecordState::Provisioning,
        NodeRecordState::Ready,
        NodeRecordState::Draining,
        NodeRecordState::Deleting,
        NodeRecordState::Lost,
        NodeRecordState::Removed {
            reason: NodeRemoval::Deleted,
        },
        NodeRecordState::Removed {
            reason: NodeRemoval::ProvisionFailed,
        },
        NodeRecordState::Removed {
            reason: NodeRemoval::Lost,
        },
    ];
    store
        .upsert_node(&record(7, NodeRecordState::Provisioning), Timestamp(1))
        .await
        .unwrap();
    for (n, state) in states.into_iter().enumerate() {
        store
            .set_node_state(NodeId(7), state, Timestamp(2 + n as u64))
            .await
            .unwrap();
        assert_eq!(store.node_state(NodeId(7)).await.unwrap(), Some(state));
        store.upsert_node(&record(8, state), Timestamp(2)).await.unwrap();
        assert_eq!(store.node_state(NodeId(8)).await.unwrap(), Some(state));
    }
    assert!(matches!(
        store
            .set_node_state(NodeId(99), NodeRecordState::Ready, Timestamp(3))
            .await,
        Err(payperplay_prod::store::StoreError::NotFound("node"))
    ));
    assert_eq!(store.node_state(NodeId(99)).await.unwrap(), None);
}

#[sqlx::test(migrations = false)]
async fn the_migration_converts_free_text_states_without_losing_rows(pool: PgPool) {
    sqlx::raw_sql(INITIAL_SQL).execute(&pool).await.unwrap();
    let legacy = [
        (1, "provisioning"),
        (2, "provisioned"),
        (3, "ready"),
        (4, "removed_deleted"),
        (5, "removed_provision_failed"),
        (6, "removed_lost"),
    ];
    for (id, state) in legacy {
        sqlx::query(
            "INSERT INTO nodes (id, kind, name, is_system, state, created_at_ms, updated_at_ms)
             VALUES ($1, 'cloud', 'n', FALSE, $2, 0, 0)",
        )
        .bind(id)
        .bind(state)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::raw_sql(NODE_STATE_SQL).execute(&pool).await.unwrap();
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as("SELECT id, state, removal FROM nodes ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let expected = [
        (1, "provisioning", None),
        (2, "provisioning", None),
        (3, "ready", None),
        (4, "removed", Some("deleted")),
        (5, "removed", Some("provision_failed")),
        (6, "removed", Some("lost")),
    ];
    let rows: Vec<(i64, &str, Option<&str>)> = rows
        .iter()
        .map(|(id, state, removal)| (*id, state.as_str(), removal.as_deref()))
        .collect();
    assert_eq!(rows, expected);
    let store = Store::new(pool);
    assert_eq!(
        store.node_state(NodeId(5)).await.unwrap(),
        Some(NodeRecordState::Removed {
            reason: NodeRemoval::ProvisionFailed
        })
    );
}

#[sqlx::test(migrations = false)]
async fn the_migration_refuses_a_state_it_cannot_convert_and_names_it(pool: PgPool) {
    sqlx::raw_sql(INITIAL_SQL).execute(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO nodes (id, kind, name, is_system, state, created_at_ms, updated_at_ms)
         VALUES (41, 'cloud', 'n', FALSE, 'haunted', 0, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let error = sqlx::raw_sql(NODE_STATE_SQL)
        .execute(&pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("node 41") && error.contains("haunted"), "{error}");
}
