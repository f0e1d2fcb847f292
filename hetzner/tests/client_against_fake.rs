//! The Hetzner client against the fake Hetzner API (the binary, on a loopback port).

mod common;

use common::FakeHetzner;
use payperplay_hetzner::client::{LABEL_COMMAND, LABEL_NODE, LABEL_PLATFORM};
use payperplay_hetzner::cloud_init::WorkerBootstrap;
use payperplay_hetzner::fake::{EndpointConfig, HINT_LABEL_GAME_PORTS, HINT_LABEL_SSH_PORT};
use payperplay_hetzner::{ClientConfig, ErrorClass, HetznerClient, HetznerError, VmOrder};
use secrecy::SecretString;
use serde_json::json;

fn order(command_id: u64, server_type: &str, location: &str) -> VmOrder {
    VmOrder {
        command_id,
        node_id: command_id + 1000,
        server_type: server_type.to_owned(),
        location: location.to_owned(),
        ssh_keys: Vec::new(),
        user_data: "#cloud-config\n".to_owned(),
    }
}

#[tokio::test]
async fn a_repeated_order_finds_the_first_vm_instead_of_making_a_second() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    let first = client.create_vm(&order(7, "cpx42", "fsn1")).await.unwrap();
    assert!(!first.already_existed);
    assert_eq!(first.server.name, "payperplay-cmd-7");
    assert_eq!(first.server.labels[LABEL_PLATFORM], "payperplay");
    assert_eq!(first.server.labels[LABEL_NODE], "1007");
    assert_eq!(first.server.labels[LABEL_COMMAND], "7");
    // The shell retries the same command (a crash, a lost answer): same VM.
    let again = client.order_vm(&order(7, "cpx42", "fsn1")).await.unwrap();
    assert_eq!(again.id, first.server.id);
    let second = client.create_vm(&order(7, "cpx42", "fsn1")).await.unwrap();
    assert!(second.already_existed);
    assert_eq!(second.server.id, first.server.id);
    assert_eq!(client.list_platform_vms().await.unwrap().len(), 1);
    let stats = fake.get_control("stats").await;
    assert_eq!(stats["servers_created"], 1);
    assert_eq!(stats["create_requests"], 3);
}

#[tokio::test]
async fn a_vm_of_that_name_that_is_not_ours_is_not_adopted() {
    let fake = FakeHetzner::start();
    let ours = fake.client();
    let mut other_config = fake.client_config();
    other_config.platform = "other".into();
    // Another platform instance made a VM with our name (it cannot happen by our
    // naming, but a human can): we must not take it as ours.
    let other = HetznerClient::new(other_config).unwrap();
    other.create_vm(&order(1, "cpx22", "fsn1")).await.unwrap();
    let body = json!({"name": "payperplay-cmd-1", "server_type": "cpx22", "image": "ubuntu-24.04"});
    let created = reqwest::Client::new()
        .post(format!("{}/servers", fake.api_url()))
        .bearer_auth(common::TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let error = ours.create_vm(&order(1, "cpx22", "fsn1")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("does not carry payperplay/platform=payperplay"),
        "{error}"
    );
    assert_eq!(error.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn order_vm_waits_for_the_action_and_reports_the_endpoint_the_fake_was_given() {
    let fake = FakeHetzner::start_with(|config| {
        config.action_delay_ms = 300;
        config.endpoints = vec![
            EndpointConfig {
                ip: "127.0.0.1".into(),
                ssh_port: 2201,
                game_port_first: Some(30000),
                game_port_last: Some(30999),
            },
            EndpointConfig {
                ip: "127.0.0.1".into(),
                ssh_port: 2202,
                game_port_first: Some(31000),
                game_port_last: Some(31999),
            },
        ];
    });
    let client = fake.client();
    let key = client
        .ensure_ssh_key("payperplay", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIrust payperplay")
        .await
        .unwrap();
    let user_data = WorkerBootstrap {
        platform: "payperplay".into(),
        node_id: 1,
        ssh_public_key: key.public_key.clone(),
        ready_url: String::new(),
        host_key: None,
    }
    .user_data()
    .unwrap();
    let mut first_order = order(1, "cpx32", "nbg1");
    first_order.ssh_keys = vec![key.name.clone()];
    first_order.user_data = user_data.clone();
    let created = client.create_vm(&first_order).await.unwrap();
    assert_eq!(created.server.status, "initializing");
    let action = created.action.clone().unwrap();
    let finished = client.wait_for_action(action).await.unwrap();
    assert_eq!(finished.progress, 100);
    let first = client.get_server(created.server.id).await.unwrap().unwrap();
    assert_eq!(first.status, "running");
    assert_eq!(first.ipv4(), Some("127.0.0.1"));
    assert_eq!(first.location.name, "nbg1");
    assert_eq!(first.server_type.name, "cpx32");
    assert_eq!(first.labels[HINT_LABEL_SSH_PORT], "2201");
    assert_eq!(first.labels[HINT_LABEL_GAME_PORTS], "30000-30999");
    let second = client.order_vm(&order(2, "cpx32", "nbg1")).await.unwrap();
    let second = client.get_server(second.id).await.unwrap().unwrap();
    assert_eq!(second.status, "running");
    assert_eq!(second.labels[HINT_LABEL_SSH_PORT], "2202");
    assert_eq!(second.labels[HINT_LABEL_GAME_PORTS], "31000-31999");
    // The user data and the key reached the VM as sent.
    let vms = fake.get_control("vms").await;
    assert_eq!(vms["vms"][0]["user_data"], user_data.as_str());
    assert_eq!(vms["vms"][0]["ssh_keys"], json!([key.id]));
}

#[tokio::test]
async fn a_429_is_waited_out_and_no_order_is_lost() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    // An empty budget refilling 20 per second: every other request meets a 429.
    fake.control("rate_limit", json!({"remaining": 0, "limit": 10, "refill_per_s": 20.0}))
        .await;
    let orders: Vec<VmOrder> = (0..20).map(|i| order(i, "cpx22", "fsn1")).collect();
    let results = futures_join_all(&client, &orders).await;
    for (index, result) in results.iter().enumerate() {
        assert!(result.is_ok(), "order {index}: {result:?}");
    }
    let stats = fake.get_control("stats").await;
    assert!(
        stats["rate_limited"].as_u64().unwrap() > 0,
        "no 429 was provoked: {stats}"
    );
    assert_eq!(stats["servers_created"], 20, "{stats}");
    let vms = client.list_platform_vms().await.unwrap();
    let mut names: Vec<String> = vms.into_iter().map(|vm| vm.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 20);
    assert_eq!(client.rate_limit().limit, Some(10));
}

/// Runs the orders concurrently (on this task; the client is shared).
async fn futures_join_all(
    client: &HetznerClient,
    orders: &[VmOrder],
) -> Vec<Result<payperplay_hetzner::CreatedVm, HetznerError>> {
    let mut set = tokio::task::JoinSet::new();
    let client = std::sync::Arc::new(HetznerClient::new(client.config().clone()).unwrap());
    for (index, order) in orders.iter().cloned().enumerate() {
        let client = client.clone();
        set.spawn(async move { (index, client.create_vm(&order).await) });
    }
    let mut results: Vec<Option<Result<_, _>>> = (0..orders.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (index, result) = joined.unwrap();
        results[index] = Some(result);
    }
    results.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_budget_that_stays_spent_ends_in_rate_limited_within_the_wait_bound() {
    let fake = FakeHetzner::start();
    let mut config = fake.client_config();
    config.rate_limit_wait_ms_max = 300;
    let client = HetznerClient::new(config).unwrap();
    fake.control(
        "rate_limit",
        json!({"remaining": 0, "limit": 3600, "refill_per_s": 0.0}),
    )
    .await;
    let error = client.create_vm(&order(1, "cpx22", "fsn1")).await.unwrap_err();
    assert!(matches!(error, HetznerError::RateLimited { .. }), "{error:?}");
    assert_eq!(error.class(), ErrorClass::RateLimited);
    assert_eq!(client.rate_limit().remaining, Some(0));
}

#[tokio::test]
async fn a_sold_out_type_is_sold_out_naming_type_and_location_and_shows_unavailable() {
    let fake = FakeHetzner::start_with(|config| {
        config.sold_out = vec![payperplay_hetzner::fake::SoldOutWindow {
            server_type: "cpx42".into(),
            location: "fsn1".into(),
            from_s: 0,
            until_s: None,
        }];
    });
    let client = fake.client();
    let error = client.create_vm(&order(1, "cpx42", "fsn1")).await.unwrap_err();
    match &error {
        HetznerError::SoldOut {
            server_type, location, ..
        } => {
            assert_eq!((server_type.as_str(), location.as_str()), ("cpx42", "fsn1"));
        }
        other => panic!("expected SoldOut, got {other:?}"),
    }
    assert_eq!(error.class(), ErrorClass::SoldOut);
    // The same type elsewhere, and another type here, can be ordered.
    client.create_vm(&order(2, "cpx42", "nbg1")).await.unwrap();
    client.create_vm(&order(3, "cpx32", "fsn1")).await.unwrap();
    let types = client.server_types().await.unwrap();
    let cpx42 = types.iter().find(|t| t.name == "cpx42").unwrap();
    assert!(!cpx42.available_in("fsn1"));
    assert!(cpx42.available_in("nbg1"));
    assert_eq!(cpx42.price_micros_in("fsn1"), Some((40_000, 24_990_000)));
    // The window is lifted at run time.
    fake.control("sold_out", json!({"windows": []})).await;
    client.create_vm(&order(1, "cpx42", "fsn1")).await.unwrap();
}

#[tokio::test]
async fn deleting_a_vm_that_is_gone_is_success() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    assert_eq!(client.delete_server(424_242).await.unwrap(), None);
    assert!(!client.delete_vm_of_command(5).await.unwrap());
    let vm = client.order_vm(&order(5, "cpx22", "hel1")).await.unwrap();
    assert!(client.delete_vm_of_command(5).await.unwrap());
    assert_eq!(client.get_server(vm.id).await.unwrap(), None);
    // A second delete of the same VM (a retried command) is still fine.
    assert_eq!(client.delete_server(vm.id).await.unwrap(), None);
    assert!(client.list_platform_vms().await.unwrap().is_empty());
}

#[tokio::test]
async fn listing_reads_every_page_and_only_our_label() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    for command in 0..57 {
        client.create_vm(&order(command, "cpx22", "fsn1")).await.unwrap();
    }
    let mut other_config = fake.client_config();
    other_config.platform = "staging".into();
    let other = HetznerClient::new(other_config).unwrap();
    other.create_vm(&order(0, "cpx22", "fsn1")).await.unwrap();

    let ours = client.list_platform_vms().await.unwrap();
    assert_eq!(ours.len(), 57, "more than one page of 50 is read");
    assert!(ours.iter().all(|vm| vm.labels[LABEL_PLATFORM] == "payperplay"));
    let page = client
        .list_servers_by_label_page(&client.platform_selector(), 3, 25)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 7);
    assert_eq!(page.pagination.last_page, Some(3));
    assert_eq!(page.pagination.next_page, None);
    assert_eq!(page.pagination.total_entries, Some(57));
    let selected = client
        .list_servers(&format!("{LABEL_NODE} in (1000,1001),{LABEL_PLATFORM}"))
        .await
        .unwrap();
    assert_eq!(selected.len(), 3, "two of ours and staging's node 1000");
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_naming_the_operation() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    let vm = client.order_vm(&order(1, "cpx22", "fsn1")).await.unwrap();
    fake.control("failures", json!({"operation": "get_server", "malformed": true}))
        .await;
    let error = client.get_server(vm.id).await.unwrap_err();
    assert!(
        matches!(
            error,
            HetznerError::Malformed {
                operation: "get_server",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("malformed answer from Hetzner to get_server"),
        "{error}"
    );
    fake.control("failures", json!({"operation": "list_servers", "malformed": true}))
        .await;
    let error = client.list_platform_vms().await.unwrap_err();
    assert!(error.to_string().contains("list_servers"), "{error}");
    // A non-JSON error page (a proxy's 502) is transient and says what came back.
    fake.control(
        "failures",
        json!({"operation": "get_server", "status": 502, "code": "bad_gateway", "message": "x", "times": 10}),
    )
    .await;
    let error = client.get_server(vm.id).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
}

#[tokio::test]
async fn transient_errors_are_retried_within_the_bound() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    let vm = client.order_vm(&order(1, "cpx22", "fsn1")).await.unwrap();
    fake.control(
        "failures",
        json!({"operation": "get_server", "status": 503, "code": "unavailable", "message": "busy", "times": 2}),
    )
    .await;
    assert_eq!(client.get_server(vm.id).await.unwrap().unwrap().id, vm.id);
    fake.control(
        "failures",
        json!({"operation": "get_server", "status": 423, "code": "locked", "message": "busy", "times": 4}),
    )
    .await;
    let error = client.get_server(vm.id).await.unwrap_err();
    assert!(
        matches!(&error, HetznerError::Api { code, status: 423, class: ErrorClass::Transient, .. } if code == "locked"),
        "{error:?}"
    );
    // Permanent errors are not retried.
    fake.control(
        "failures",
        json!({"operation": "create_server", "status": 403, "code": "forbidden", "message": "no", "times": 1}),
    )
    .await;
    let error = client.create_vm(&order(2, "cpx22", "fsn1")).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    assert!(client.create_vm(&order(2, "cpx22", "fsn1")).await.is_ok());
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_never_shown() {
    let fake = FakeHetzner::start();
    let config = ClientConfig::new(fake.api_url(), SecretString::from("wrong-token-abc"));
    let client = HetznerClient::new(config).unwrap();
    let error = client.list_platform_vms().await.unwrap_err();
    assert!(matches!(error, HetznerError::Unauthorized { .. }), "{error:?}");
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(!error.to_string().contains("wrong-token-abc"));
    assert!(!format!("{error:?}").contains("wrong-token-abc"));
}

#[tokio::test]
async fn an_unknown_type_or_location_is_named() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    let types = client
        .check_catalog(&["cpx22", "cpx62"], &["fsn1", "hel1"])
        .await
        .unwrap();
    assert_eq!(types.len(), 6);
    let error = client.check_catalog(&["cpx22", "cx99"], &["fsn1"]).await.unwrap_err();
    assert!(error.to_string().contains("unknown VM type \"cx99\""), "{error}");
    let error = client.check_catalog(&["cpx22"], &["mars1"]).await.unwrap_err();
    assert!(error.to_string().contains("unknown location \"mars1\""), "{error}");
    let error = client.create_vm(&order(1, "cx99", "fsn1")).await.unwrap_err();
    assert!(
        matches!(&error, HetznerError::InvalidInput { fields, .. } if fields == &["server_type"]),
        "{error:?}"
    );
}

#[tokio::test]
async fn ensure_ssh_key_is_idempotent_and_never_replaces_a_key() {
    let fake = FakeHetzner::start();
    let client = fake.client();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIkey1 payperplay";
    let first = client.ensure_ssh_key("payperplay", key).await.unwrap();
    let again = client.ensure_ssh_key("payperplay", &format!("{key}\n")).await.unwrap();
    assert_eq!(first.id, again.id);
    let error = client
        .ensure_ssh_key("payperplay", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIkey2 payperplay")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("exists at Hetzner with another public key"),
        "{error}"
    );
    // The same key under another name: found, not duplicated.
    let same = client.ensure_ssh_key("renamed", key).await.unwrap();
    assert_eq!(same.id, first.id);
}

#[tokio::test]
async fn concurrent_orders_share_their_action_polls() {
    let fake = FakeHetzner::start_with(|config| config.action_delay_ms = 400);
    let mut config = fake.client_config();
    config.action_batch_gap_ms = 50;
    let client = std::sync::Arc::new(HetznerClient::new(config).unwrap());
    let mut set = tokio::task::JoinSet::new();
    for command in 0..20 {
        let client = client.clone();
        set.spawn(async move { client.order_vm(&order(command, "cpx22", "fsn1")).await });
    }
    while let Some(joined) = set.join_next().await {
        joined.unwrap().unwrap();
    }
    let stats = fake.get_control("stats").await;
    let requests = stats["requests"].as_u64().unwrap();
    // 20 creates; polled one by one, 40 actions of 400 ms at 20..100 ms apart would
    // take about 40 x 6 = 240 polls more. Shared polls at most every 50 ms: about 10
    // (40 leaves room for a slow machine stretching the run to two seconds).
    assert!(requests <= 20 + 40, "{requests} requests for 20 orders: {stats}");
    for command in 0..20 {
        let vm = client.get_server(command + 1).await;
        assert!(vm.is_ok());
    }
    let vms = client.list_platform_vms().await.unwrap();
    assert_eq!(vms.len(), 20);
    assert!(
        vms.iter().all(|vm| vm.status == "running"),
        "an order returned before its VM ran"
    );
}

#[tokio::test]
async fn a_wait_given_up_half_way_leaves_no_action_behind() {
    let fake = FakeHetzner::start_with(|config| config.action_delay_ms = 2_000);
    let client = fake.client();
    let created = client.create_vm(&order(1, "cpx22", "fsn1")).await.unwrap();
    let wait = client.wait_for_action(created.action.unwrap());
    let outcome = tokio::time::timeout(std::time::Duration::from_millis(200), wait).await;
    assert!(outcome.is_err(), "the action cannot have finished yet");
    assert_eq!(
        client.actions_waited_for(),
        0,
        "a dropped wait left its action in the batch"
    );
}
