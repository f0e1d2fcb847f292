//! The reactive policy orders a cloud VM through the (fake) cloud provider when the
//! fleet is full; the queued start runs once the VM is ready (containers from the
//! test double: the fake VMs have no engine). Exercises the
//! ProvisionNode command path end to end: core → runtime → driver → result input.

use std::sync::Arc;

use crate::common::{START, TestApp, eventually, test_config};
use crate::doubles::FakeContainers;
use axum::http::{Method, StatusCode};
use payperplay_core::{Catalog, PolicyConfig, VmType};
use payperplay_prod::clock::ManualClock;
use payperplay_prod::drivers::{Drivers, FakeCloud};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn a_queued_start_runs_on_a_cloud_node_ordered_for_it(pool: PgPool) {
    let mut config = test_config();
    config.core.catalog = Catalog {
        server_types: vec![VmType {
            name: "cpx32".to_string(),
            ram_mib: 8192,
            vcpu: 4,
            price_micros_per_hour: 20_000,
            monthly_cap_micros: 14_000_000,
        }],
        locations: vec!["fsn1".to_string()],
        expected_provision_ms: 60_000,
    };
    config.core.policy = PolicyConfig::reactive();
    let cloud = Arc::new(FakeCloud::new(50));
    let drivers = Drivers {
        cloud: cloud.clone(),
        // The cloud fake's VMs have no engine: containers are the test double here.
        containers: Arc::new(FakeContainers::new(50)),
        fleet: None,
    };
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("cloudy@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(app.create_server(&token, &format!("c{n}"), 4096).await);
    }
    for id in &ids {
        let (status, body) = app
            .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    // The fourth does not fit the 16 GiB dedicated node: a VM is ordered for it.
    eventually("fourth server runs on a cloud node", || async {
        app.state_of(&token, ids[3]).await == "running"
    })
    .await;
    assert_eq!(cloud.vms.lock().unwrap().len(), 1, "exactly one VM ordered");
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    let kinds: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["dedicated", "cloud"], "{nodes}");
    let (_, server) = app.get(&format!("/v1/servers/{}", ids[3]), &token).await;
    assert_eq!(server["status"]["node_id"], nodes[1]["id"]);
    let status: String = sqlx::query_scalar("SELECT status FROM commands WHERE kind = 'provision_node'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
    let provider_ref: Option<String> = sqlx::query_scalar("SELECT provider_ref FROM nodes WHERE kind = 'cloud'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(provider_ref.unwrap().contains("cpx32"));
    // The runtime wrote the node's state as the core has it (a checked column).
    let (state, removal, name): (String, Option<String>, String) =
        sqlx::query_as("SELECT state, removal, name FROM nodes WHERE kind = 'cloud'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), removal), ("ready", None));
    assert_eq!(name, format!("ppp-node-{}-cpx32-fsn1", nodes[1]["id"]));
    assert_eq!(nodes[1]["name"], name, "the API and the table name the node alike");
    app.stop().await;
}
