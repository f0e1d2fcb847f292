//! `HetznerCloud` (the production cloud driver) against the fake Hetzner API, served
//! on a free loopback port by the test: orders are idempotent and labelled, deletes
//! find the node's VM, and failures keep the kind the core acts on (sold out, rate
//! limited, other). No database: these tests drive the driver as the executor does,
//! after the start check `serve` runs (which also puts the platform's SSH key there).

use std::collections::BTreeMap;

use payperplay_core::{Catalog, CommandId, FailureKind, NodeId, VmType};
use payperplay_hetzner::client::{LABEL_COMMAND, LABEL_NODE, LABEL_PLATFORM};
use payperplay_hetzner::fake::{self, FakeConfig, FakeState, SoldOutWindow};
use payperplay_prod::config::CloudConfig;
use payperplay_prod::drivers::hetzner::HetznerCloud;
use payperplay_prod::drivers::{CloudProvider, DriverError};
use secrecy::SecretString;

const TOKEN: &str = "prod-test-token-91d2";
const SSH_PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0d1sVsDc3Yv4l5ZB8s2o5d0mD7m3XvWq8sE4rY1ab payperplay";

/// Serves the fake Hetzner API on 127.0.0.1:0 inside the test's runtime; returns its
/// `/v1` base URL.
async fn start_fake(adjust: impl FnOnce(&mut FakeConfig)) -> String {
    start_fake_steered(adjust).await.0
}

/// [`start_fake`], also returning the fake's router, whose `/__fake/` control routes
/// the test calls in process (they share the served fake's state).
async fn start_fake_steered(adjust: impl FnOnce(&mut FakeConfig)) -> (String, axum::Router) {
    let mut config = FakeConfig {
        token: TOKEN.to_string(),
        action_delay_ms: 50,
        ..FakeConfig::default()
    };
    adjust(&mut config);
    config.validate().expect("fake config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = fake::app(FakeState::new(config));
    let served = app.clone();
    tokio::spawn(async move { axum::serve(listener, served).await.expect("fake serves") });
    (format!("http://{address}/v1"), app)
}

/// Sets the fake's rate-limit bucket (`POST /__fake/rate_limit`).
async fn set_rate_limit(fake: &axum::Router, body: serde_json::Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::post("/__fake/rate_limit")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = fake.clone().oneshot(request).await.unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
}

/// A driver for the fake at `api`, checked as `serve` checks it at start.
async fn checked_cloud(config: &CloudConfig) -> HetznerCloud {
    let cloud = HetznerCloud::new(config).unwrap();
    cloud
        .check(&catalog(&["cpx22"], &["fsn1", "nbg1"]))
        .await
        .expect("start check");
    cloud
}

fn cloud_config(api_endpoint: &str) -> CloudConfig {
    CloudConfig {
        api_endpoint: api_endpoint.to_string(),
        token: SecretString::from(TOKEN.to_string()),
        platform: "ppptest".to_string(),
        ssh_public_key: SSH_PUBLIC_KEY.to_string(),
        ready_wait_ms_max: 10_000,
        rate_limit_wait_ms_max: 10_000,
        request_timeout_ms: 5_000,
        // No VM is reached over SSH here (no fleet): no host key is made for it.
        learn_host_key_on_first_use: true,
        ..CloudConfig::default()
    }
}

fn catalog(vm_types: &[&str], locations: &[&str]) -> Catalog {
    Catalog {
        server_types: vm_types
            .iter()
            .map(|name| VmType {
                name: name.to_string(),
                ram_mib: 4096,
                vcpu: 2,
                price_micros_per_hour: 12_800,
                monthly_cap_micros: 7_990_000,
            })
            .collect(),
        locations: locations.iter().map(|name| name.to_string()).collect(),
        ..Catalog::default()
    }
}

#[tokio::test]
async fn an_order_makes_one_labelled_vm_and_a_repeated_order_finds_it() {
    let api = start_fake(|_| {}).await;
    let cloud = HetznerCloud::new(&cloud_config(&api)).unwrap();
    cloud.check(&catalog(&["cpx22"], &["fsn1", "nbg1"])).await.unwrap();

    let first = cloud
        .create_node(CommandId(41), NodeId(7), "cpx22", "fsn1")
        .await
        .unwrap();
    let again = cloud
        .create_node(CommandId(41), NodeId(7), "cpx22", "fsn1")
        .await
        .unwrap();
    assert_eq!(first, again, "a repeated order must find the VM it made");

    let vms = cloud.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1, "{vms:?}");
    let vm = &vms[0];
    assert_eq!(vm.id.to_string(), first);
    assert_eq!(vm.name, "ppptest-cmd-41");
    assert_eq!(
        (vm.server_type.name.as_str(), vm.location.name.as_str()),
        ("cpx22", "fsn1")
    );
    let expected_labels = BTreeMap::from([
        (LABEL_PLATFORM.to_string(), "ppptest".to_string()),
        (LABEL_NODE.to_string(), "7".to_string()),
        (LABEL_COMMAND.to_string(), "41".to_string()),
    ]);
    for (key, value) in &expected_labels {
        assert_eq!(vm.labels.get(key), Some(value), "label {key} of {:?}", vm.labels);
    }
}

#[tokio::test]
async fn deleting_a_node_deletes_its_vm_only_and_a_second_delete_succeeds() {
    let api = start_fake(|_| {}).await;
    let cloud = checked_cloud(&cloud_config(&api)).await;
    cloud
        .create_node(CommandId(1), NodeId(1), "cpx22", "fsn1")
        .await
        .unwrap();
    cloud
        .create_node(CommandId(2), NodeId(2), "cpx22", "nbg1")
        .await
        .unwrap();

    cloud.delete_node(CommandId(3), NodeId(1)).await.unwrap();
    cloud.delete_node(CommandId(3), NodeId(1)).await.unwrap();

    let names: Vec<String> = cloud.list_vms().await.unwrap().into_iter().map(|vm| vm.name).collect();
    assert_eq!(names, vec!["ppptest-cmd-2".to_string()]);
}

#[tokio::test]
async fn a_sold_out_type_fails_as_resource_unavailable_and_another_location_still_orders() {
    let api = start_fake(|config| {
        config.sold_out = vec![SoldOutWindow {
            server_type: "cpx22".to_string(),
            location: "fsn1".to_string(),
            from_s: 0,
            until_s: None,
        }]
    })
    .await;
    let cloud = checked_cloud(&cloud_config(&api)).await;

    let error = cloud
        .create_node(CommandId(5), NodeId(5), "cpx22", "fsn1")
        .await
        .unwrap_err();
    assert!(matches!(error, DriverError::SoldOut(_)), "{error:?}");
    assert_eq!(error.failure_kind(), FailureKind::ResourceUnavailable);
    assert!(
        error.to_string().contains("cpx22") && error.to_string().contains("fsn1"),
        "{error}"
    );
    assert!(
        cloud.list_vms().await.unwrap().is_empty(),
        "a sold-out order makes no VM"
    );

    cloud
        .create_node(CommandId(6), NodeId(5), "cpx22", "nbg1")
        .await
        .unwrap();
    assert_eq!(cloud.list_vms().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_spent_rate_limit_fails_as_rate_limited_and_a_refilling_one_is_waited_out() {
    // After the start check: one request left, one more per hour, and a short wait:
    // the order cannot finish.
    let (api, fake) = start_fake_steered(|_| {}).await;
    let mut config = cloud_config(&api);
    config.rate_limit_wait_ms_max = 200;
    let cloud = checked_cloud(&config).await;
    set_rate_limit(
        &fake,
        serde_json::json!({ "limit": 1, "refill_per_s": 0.000_1, "remaining": 1.0 }),
    )
    .await;
    let error = cloud
        .create_node(CommandId(9), NodeId(9), "cpx22", "fsn1")
        .await
        .unwrap_err();
    assert!(matches!(error, DriverError::RateLimited(_)), "{error:?}");
    assert_eq!(error.failure_kind(), FailureKind::RateLimited);

    // A small bucket that refills quickly: every order waits its turn, none is lost.
    let api = start_fake(|config| {
        config.rate_limit.limit = 3;
        config.rate_limit.refill_per_s = 40.0;
    })
    .await;
    let cloud = checked_cloud(&cloud_config(&api)).await;
    for n in 1..=6 {
        cloud
            .create_node(CommandId(100 + n), NodeId(n), "cpx22", "fsn1")
            .await
            .unwrap_or_else(|error| panic!("order {n} lost: {error}"));
    }
    assert_eq!(cloud.list_vms().await.unwrap().len(), 6);
}

#[tokio::test]
async fn a_vm_not_ready_within_the_bound_is_deleted_and_the_order_fails() {
    let api = start_fake(|config| config.action_delay_ms = 1_500).await;
    let mut config = cloud_config(&api);
    config.ready_wait_ms_max = 200;
    let cloud = checked_cloud(&config).await;
    let error = cloud
        .create_node(CommandId(11), NodeId(3), "cpx22", "fsn1")
        .await
        .unwrap_err();
    assert!(matches!(error, DriverError::Permanent(_)), "{error:?}");
    assert!(error.to_string().contains("not ready within 200 ms"), "{error}");
    assert_eq!(error.failure_kind(), FailureKind::Other);
    assert!(
        cloud.list_vms().await.unwrap().is_empty(),
        "the late VM must be deleted by the failed order"
    );
}

#[tokio::test]
async fn a_wrong_token_fails_the_start_check_without_showing_the_token() {
    let api = start_fake(|_| {}).await;
    let mut config = cloud_config(&api);
    config.token = SecretString::from("wrong-token-3c7e".to_string());
    let cloud = HetznerCloud::new(&config).unwrap();
    let error = cloud.check(&catalog(&["cpx22"], &["fsn1"])).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("token"), "{text}");
    assert!(!text.contains("wrong-token-3c7e"), "the token leaked: {text}");
    assert!(
        !format!("{cloud:?}").contains("wrong-token-3c7e"),
        "the token leaked in Debug"
    );
}

#[tokio::test]
async fn an_unknown_vm_type_or_location_in_the_catalog_fails_the_start_check_naming_it() {
    let api = start_fake(|_| {}).await;
    let cloud = HetznerCloud::new(&cloud_config(&api)).unwrap();
    let error = cloud.check(&catalog(&["cpx999"], &["fsn1"])).await.unwrap_err();
    assert!(error.to_string().contains("\"cpx999\""), "{error}");
    let error = cloud.check(&catalog(&["cpx22"], &["mars1"])).await.unwrap_err();
    assert!(error.to_string().contains("\"mars1\""), "{error}");
}
