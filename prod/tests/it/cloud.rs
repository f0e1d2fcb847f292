//! The cloud for real, against the fake Hetzner API served on loopback by the test: the
//! reactive policy orders a VM when the fleet is full, the VM becomes a node only once
//! SSH and its Docker engine answer (the fake VM's endpoint is the test sshd in front
//! of the test engine, with a game-port range of its own), and the queued start runs
//! there in a real container. A VM that never answers is deleted and its order fails;
//! reconciliation by label deletes VMs the core does not know and reports nodes whose
//! VM the provider lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::{GAME_PORTS_PER_TEST, RCON_PORT_OFFSET, START, TestApp, eventually, test_config, test_ssh_port};
use axum::http::{Method, StatusCode};
use payperplay_core::{Catalog, NodeId, PolicyConfig, ServerId, VmType};
use payperplay_hetzner::client::{LABEL_NODE, LABEL_PLATFORM};
use payperplay_hetzner::fake::{self, EndpointConfig, FakeConfig, FakeState, HINT_LABEL_SSH_PORT, VmSshdConfig};
use payperplay_hetzner::{ClientConfig, HetznerClient, VmOrder};
use payperplay_prod::clock::ManualClock;
use payperplay_prod::config::{CloudConfig, Config, PortRange};
use payperplay_prod::drivers::cloud::{host_key_secret, vm_host_key};
use payperplay_prod::drivers::{HetznerCloud, NodeFleet, cloud_node_name_of};
use payperplay_prod::trace_export::TraceExport;
use secrecy::SecretString;
use sqlx::PgPool;

pub const HETZNER_TOKEN: &str = "it-cloud-token-5e1a";
const SSH_PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0d1sVsDc3Yv4l5ZB8s2o5d0mD7m3XvWq8sE4rY1ab payperplay";

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source scripts/start-services.sh"))
}

/// First game port of the fake VMs' slices. Below Linux's ephemeral range (32768 up),
/// so no outgoing connection and no `127.0.0.1:0` listener (serve's API, the fake, the
/// router) of this or another process can hold a VM's game or RCON port: the test
/// node slices (47,100 up) are inside that range, and a container there failed to bind
/// (exit code 1 on every retry) when one did.
const VM_GAME_PORTS_FIRST: u16 = 29_000;
/// Slices of [`GAME_PORTS_PER_TEST`] ports for fake VMs; their RCON ports are
/// [`RCON_PORT_OFFSET`] higher, still below the ephemeral range.
const VM_PORT_SLICES: u32 = 60;
static NEXT_VM_SLICE: AtomicU32 = AtomicU32::new(0);

/// A fresh slice of game ports for one fake VM, none of whose game or RCON ports is in
/// use now. Slices start at an offset from the process id, so concurrent test runs on
/// one machine begin apart.
pub fn vm_game_ports() -> PortRange {
    let start = std::process::id() % VM_PORT_SLICES;
    for _ in 0..VM_PORT_SLICES {
        let slice = (start + NEXT_VM_SLICE.fetch_add(1, Ordering::SeqCst)) % VM_PORT_SLICES;
        let first = VM_GAME_PORTS_FIRST + slice as u16 * GAME_PORTS_PER_TEST;
        let range = PortRange {
            first,
            last: first + GAME_PORTS_PER_TEST - 1,
        };
        let free = (range.first..=range.last).all(|port| {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port + RCON_PORT_OFFSET)).is_ok()
        });
        if free {
            return range;
        }
    }
    panic!("no free slice of fake-VM game ports from {VM_GAME_PORTS_FIRST}");
}

/// Serves the fake Hetzner API on 127.0.0.1:0 in this test's runtime; each VM it
/// makes is reached at `endpoints[i % len]`. Returns the `/v1` base URL.
pub async fn start_fake_hetzner(endpoints: Vec<EndpointConfig>, adjust: impl FnOnce(&mut FakeConfig)) -> String {
    let mut config = FakeConfig {
        token: HETZNER_TOKEN.to_string(),
        action_delay_ms: 50,
        endpoints,
        hint_labels: true,
        ..FakeConfig::default()
    };
    adjust(&mut config);
    config.validate().expect("fake config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = fake::app(FakeState::new(config));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("fake serves") });
    format!("http://{address}/v1")
}

/// A fake VM endpoint: the test sshd in front of the test engine, its own game ports.
pub fn sshd_endpoint(ssh_port: u16) -> EndpointConfig {
    let ports = vm_game_ports();
    EndpointConfig {
        ip: "127.0.0.1".to_string(),
        ssh_port,
        game_port_first: Some(ports.first),
        game_port_last: Some(ports.last),
    }
}

/// `[cloud]` for the fake at `api`: VMs reached as root through the test sshd with the
/// test key, the host key pinned, the engine's socket the test engine's.
pub fn cloud_config(api: &str, platform: &str) -> CloudConfig {
    CloudConfig {
        api_endpoint: api.to_string(),
        token: SecretString::from(HETZNER_TOKEN.to_string()),
        platform: platform.to_string(),
        ssh_public_key: SSH_PUBLIC_KEY.to_string(),
        ssh_key_file: required("PAYPERPLAY_TEST_SSH_KEY"),
        ssh_host_keys: vec![required("PAYPERPLAY_TEST_SSH_HOST_KEY")],
        engine_socket_path: required("PAYPERPLAY_TEST_DOCKER_SOCKET"),
        rcon_port_offset: RCON_PORT_OFFSET,
        data_path: "/".to_string(),
        ready_wait_ms_max: 20_000,
        rate_limit_wait_ms_max: 10_000,
        request_timeout_ms: 5_000,
        reconcile_interval_ms: 300,
        reconcile_grace_ms: 600,
        ..CloudConfig::default()
    }
}

/// The test config with one 16 GiB dedicated node, a catalog of one 8 GiB VM type
/// (cpx32 in fsn1) and the reactive policy: a fourth 4 GiB server needs a VM.
pub fn cloud_test_config(api: &str) -> Config {
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
    // The VM platform label is the containers' one: VMs and containers of this test only.
    let platform = config.containers.platform.clone();
    config.cloud = Some(cloud_config(api, &platform));
    config
}

/// A client of the fake for the test's own checks and meddling.
pub fn fake_client(api: &str, platform: &str) -> HetznerClient {
    let mut config = ClientConfig::new(api.to_string(), SecretString::from(HETZNER_TOKEN.to_string()));
    config.platform = platform.to_string();
    config.action_poll_ms_min = 20;
    config.action_batch_gap_ms = 0;
    HetznerClient::new(config).expect("client")
}

async fn start_four(app: &TestApp, admin: &str) -> (String, Vec<i64>) {
    let (token, user_id) = app.user("cloudy@example.com").await;
    app.credit(admin, user_id, 100_000_000).await;
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
    (token, ids)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_queued_start_runs_on_a_cloud_vm_once_its_engine_answers(pool: PgPool) {
    let endpoint = sshd_endpoint(test_ssh_port());
    let vm_ports = endpoint.game_port_first.unwrap()..=endpoint.game_port_last.unwrap();
    let api = start_fake_hetzner(vec![endpoint], |_| {}).await;
    let config = cloud_test_config(&api);
    let platform = config.containers.platform.clone();
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, ids) = start_four(&app, &admin).await;

    // The fourth does not fit the 16 GiB dedicated node: a VM is ordered for it, and
    // it runs there once SSH and the engine behind the VM answer.
    eventually("fourth server runs on a cloud node", || async {
        app.state_of(&token, ids[3]).await == "running"
    })
    .await;
    let client = fake_client(&api, &platform);
    let vms = client.list_platform_vms().await.unwrap();
    assert_eq!(vms.len(), 1, "exactly one VM ordered: {vms:?}");
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    let kinds: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["dedicated", "cloud"], "{nodes}");
    assert_eq!(vms[0].labels.get(LABEL_NODE), Some(&nodes[1]["id"].to_string()));
    let (_, server) = app.get(&format!("/v1/servers/{}", ids[3]), &token).await;
    assert_eq!(server["status"]["node_id"], nodes[1]["id"]);
    // A real container, on the VM's node, on a port of the VM's own range.
    let fleet = app.services.as_ref().unwrap().fleet.clone().unwrap();
    let tracked = fleet
        .tracked(ServerId(ids[3] as u64))
        .expect("the fourth server's container is tracked");
    let name = format!("ppp-node-{}-cpx32-fsn1", nodes[1]["id"]);
    assert_eq!(tracked.node, name, "{tracked:?}");
    let game_port = tracked.game_address.port();
    assert!(vm_ports.contains(&game_port), "port {game_port} outside {vm_ports:?}");
    assert!(
        app.container_of(ids[3])
            .await
            .is_some_and(|container| container.running)
    );

    let status: String = sqlx::query_scalar("SELECT status FROM commands WHERE kind = 'provision_node'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
    let (state, provider_ref, node_name): (String, Option<String>, String) =
        sqlx::query_as("SELECT state, provider_ref, name FROM nodes WHERE kind = 'cloud'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "ready");
    assert_eq!(provider_ref, Some(vms[0].id.to_string()), "the provider's VM id");
    assert_eq!(node_name, name);
    assert_eq!(nodes[1]["name"], name, "the API and the table name the node alike");

    // The order and its success (once the VM answered) are journaled: `export-trace`
    // turns them into the order-to-ready latency the simulator replays.
    let mut trace = Vec::new();
    let mut export = TraceExport::new(&mut trace, app.config.core.clone());
    app.store
        .for_each_journal_row(500, |row| -> anyhow::Result<()> {
            let input: payperplay_core::Input = serde_json::from_value(row.input)?;
            export.push(u64::try_from(row.at_ms).unwrap_or(0), input)?;
            Ok(())
        })
        .await
        .unwrap();
    let stats = export.finish().unwrap();
    assert_eq!(stats.provisioning_observed, 1);
    let trace = String::from_utf8(trace).unwrap();
    assert!(
        trace.lines().any(|line| line.contains("\"provisioning_observed\"")
            && line.contains("\"cpx32\"")
            && line.contains("\"fsn1\"")),
        "{trace}"
    );
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_vm_whose_engine_never_answers_is_deleted_and_its_order_fails(pool: PgPool) {
    // Nothing listens on the VM's SSH port: the VM never becomes a node.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let api = start_fake_hetzner(vec![sshd_endpoint(closed_port)], |_| {}).await;
    let mut config = cloud_test_config(&api);
    let platform = config.containers.platform.clone();
    let cloud = config.cloud.as_mut().unwrap();
    cloud.ready_wait_ms_max = 1_500;
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, ids) = start_four(&app, &admin).await;

    eventually("the first order failed", || async {
        let failed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE kind = 'provision_node' AND status = 'failed'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        failed >= 1
    })
    .await;
    let reason: String = sqlx::query_scalar(
        "SELECT COALESCE(error, '') FROM commands WHERE kind = 'provision_node' AND status = 'failed' LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(reason.contains("not ready within"), "{reason}");
    // The failed order's VM is gone; any VM left is a later order still in flight.
    let client = fake_client(&api, &platform);
    let failed_commands: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM commands WHERE kind = 'provision_node' AND status = 'failed'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let names: Vec<String> = client
        .list_platform_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|vm| vm.name)
        .collect();
    for id in failed_commands {
        assert!(
            !names.contains(&client.vm_name(id as u64)),
            "the VM of failed order {id} is still there: {names:?}"
        );
    }
    let ready_cloud_nodes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE kind = 'cloud' AND state = 'ready'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ready_cloud_nodes, 0, "a VM that never answered became a node");
    let (_, server) = app.get(&format!("/v1/servers/{}", ids[3]), &token).await;
    let on_node = server["status"]["node_id"].as_i64();
    let kind: Option<String> = match on_node {
        Some(node_id) => sqlx::query_scalar("SELECT kind FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(&app.pool)
            .await
            .unwrap(),
        None => None,
    };
    assert_ne!(
        kind.as_deref(),
        Some("cloud"),
        "the fourth server is on a cloud node: {server}"
    );
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_deletes_unknown_vms_and_reports_a_lost_one(pool: PgPool) {
    let api = start_fake_hetzner(vec![sshd_endpoint(test_ssh_port())], |_| {}).await;
    let config = cloud_test_config(&api);
    let platform = config.containers.platform.clone();
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let client = fake_client(&api, &platform);

    // A VM of this platform for a node the core never had (a crash between order and
    // journal, an operator's mistake): deleted after the grace period.
    let orphan = client
        .order_vm(&VmOrder {
            command_id: 990_001,
            node_id: 990_001,
            server_type: "cpx22".to_string(),
            location: "nbg1".to_string(),
            ssh_keys: Vec::new(),
            user_data: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(orphan.labels.get(LABEL_PLATFORM), Some(&platform));
    eventually("the orphan VM is deleted", || async {
        client.get_server(orphan.id).await.unwrap().is_none()
    })
    .await;

    // A node the core counts whose VM disappears at the provider: reported lost, and
    // its server goes back to waiting instead of counting as running there.
    let (token, ids) = start_four(&app, &admin).await;
    eventually("fourth server runs on a cloud node", || async {
        app.state_of(&token, ids[3]).await == "running"
    })
    .await;
    let vm = client.list_platform_vms().await.unwrap().remove(0);
    let lost_node: i64 = vm.labels.get(LABEL_NODE).unwrap().parse().unwrap();
    client.delete_server(vm.id).await.unwrap();
    eventually("the cloud node is lost", || async {
        let state: String = sqlx::query_scalar("SELECT state FROM nodes WHERE id = $1")
            .bind(lost_node)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        state == "lost" || state == "removed"
    })
    .await;
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|node| node["id"] != lost_node || node["state"] == "lost"),
        "a lost node still counted: {nodes}"
    );
    let (_, server) = app.get(&format!("/v1/servers/{}", ids[3]), &token).await;
    assert_ne!(
        server["status"]["node_id"], lost_node,
        "its server is no longer placed there: {server}"
    );
    app.stop().await;
    remove_platform_containers(&platform);
}

/// Removes every container of `platform` from the test engine (those on a lost VM's
/// node are no fleet node's any more, so `TestApp::stop` does not see them).
pub fn remove_platform_containers(platform: &str) {
    let socket = format!("unix://{}", required("PAYPERPLAY_TEST_DOCKER_SOCKET"));
    let output = std::process::Command::new("docker")
        .args(["-H", &socket, "ps", "-aq", "--filter"])
        .arg(format!("label=payperplay.platform={platform}"))
        .output()
        .expect("the docker CLI runs");
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["-H", &socket, "rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// The fake gives each VM whose user data carries a host key an sshd of its own
/// presenting that key (the test setup's sshd binary and authorized client key).
fn vm_sshd() -> VmSshdConfig {
    let services = required("PAYPERPLAY_SERVICES_DIR");
    VmSshdConfig {
        binary: "/usr/sbin/sshd".to_string(),
        authorized_keys_file: format!("{services}/sshd/authorized_keys"),
        dir: None,
    }
}

/// The host key an sshd on 127.0.0.1:`port` presents (`ssh-ed25519 AAAA...`), as
/// OpenSSH's own `ssh-keyscan` reads it.
async fn presented_host_key(port: u16) -> String {
    for _ in 0..50 {
        let output = tokio::process::Command::new("ssh-keyscan")
            .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
            .output()
            .await
            .expect("ssh-keyscan runs");
        let text = String::from_utf8_lossy(&output.stdout);
        if let Some(line) = text.lines().find(|line| !line.starts_with('#')) {
            return line.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" ");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no host key from 127.0.0.1:{port}");
}

/// `[cloud]` for VMs whose host key the platform makes: none configured, none learned.
fn made_host_key_config(api: &str) -> Config {
    let mut config = cloud_test_config(api);
    let cloud = config.cloud.as_mut().unwrap();
    cloud.ssh_host_keys.clear();
    assert!(!cloud.learn_host_key_on_first_use, "learning is off unless configured");
    config
}

#[sqlx::test(migrations = "../migrations")]
async fn a_vm_presents_the_host_key_the_platform_made_for_it_and_becomes_a_node(pool: PgPool) {
    let api = start_fake_hetzner(vec![sshd_endpoint(test_ssh_port())], |fake| {
        fake.vm_sshd = Some(vm_sshd());
    })
    .await;
    let config = made_host_key_config(&api);
    let platform = config.containers.platform.clone();
    let cloud = config.cloud.clone().unwrap();
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, ids) = start_four(&app, &admin).await;
    eventually("fourth server runs on a cloud node", || async {
        app.state_of(&token, ids[3]).await == "running"
    })
    .await;
    let client = fake_client(&api, &platform);
    let vms = client.list_platform_vms().await.unwrap();
    assert_eq!(vms.len(), 1, "{vms:?}");
    let node_id: u64 = vms[0].labels[LABEL_NODE].parse().unwrap();
    let ssh_port: u16 = vms[0].labels[HINT_LABEL_SSH_PORT].parse().unwrap();
    assert_ne!(ssh_port, test_ssh_port(), "the VM has an sshd of its own");
    // What the VM presents is the key the platform made for its node (and passed in
    // its user data: the fake has it from nowhere else), not the setup's host key.
    let made = vm_host_key(&host_key_secret(&cloud).unwrap(), &platform, NodeId(node_id)).unwrap();
    let presented = presented_host_key(ssh_port).await;
    assert_eq!(
        presented,
        made.public_openssh
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_ne!(presented, required("PAYPERPLAY_TEST_SSH_HOST_KEY"));
    let (state,): (String,) = sqlx::query_as("SELECT state FROM nodes WHERE kind = 'cloud'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "ready");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_vm_presenting_another_host_key_is_refused_with_the_reason(pool: PgPool) {
    // The fake ignores the key in the user data: its VM is the setup's sshd, whose host
    // key is not the one the platform made for the VM.
    let api = start_fake_hetzner(vec![sshd_endpoint(test_ssh_port())], |_| {}).await;
    let config = made_host_key_config(&api);
    let platform = config.containers.platform.clone();
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, ids) = start_four(&app, &admin).await;
    eventually("an order failed", || async {
        let failed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE kind = 'provision_node' AND status = 'failed'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        failed >= 1
    })
    .await;
    let reason: String = sqlx::query_scalar(
        "SELECT COALESCE(error, '') FROM commands WHERE kind = 'provision_node' AND status = 'failed' LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        reason.contains("refused: it presents an SSH host key the platform did not give it"),
        "{reason}"
    );
    assert!(reason.contains("not a pinned one"), "{reason}");
    let ready_cloud_nodes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE kind = 'cloud' AND state = 'ready'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ready_cloud_nodes, 0, "a VM with a foreign host key became a node");
    assert_ne!(app.state_of(&token, ids[3]).await, "running");
    let failed_commands: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM commands WHERE kind = 'provision_node' AND status = 'failed'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let client = fake_client(&api, &platform);
    let names: Vec<String> = client
        .list_platform_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|vm| vm.name)
        .collect();
    for id in failed_commands {
        assert!(
            !names.contains(&client.vm_name(id as u64)),
            "refused VM kept: {names:?}"
        );
    }
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn learning_the_first_host_key_happens_only_where_configured(pool: PgPool) {
    // No key made, none pinned, learning on: the setup's sshd is trusted on first use.
    let api = start_fake_hetzner(vec![sshd_endpoint(test_ssh_port())], |_| {}).await;
    let mut config = made_host_key_config(&api);
    config.cloud.as_mut().unwrap().learn_host_key_on_first_use = true;
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, ids) = start_four(&app, &admin).await;
    eventually("fourth server runs on a cloud node", || async {
        app.state_of(&token, ids[3]).await == "running"
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_adopted_vm_is_not_ready_before_its_first_probe() {
    let api = start_fake_hetzner(vec![sshd_endpoint(test_ssh_port())], |_| {}).await;
    let config = cloud_test_config(&api);
    let platform = config.containers.platform.clone();
    let client = fake_client(&api, &platform);
    client
        .order_vm(&VmOrder {
            command_id: 7,
            node_id: 7,
            server_type: "cpx32".to_string(),
            location: "fsn1".to_string(),
            ssh_keys: Vec::new(),
            user_data: String::new(),
        })
        .await
        .unwrap();
    // No observer runs here, so nothing probes the adopted VM's engine.
    let fleet = Arc::new(NodeFleet::from_config(&config.containers, &[]));
    let cloud = HetznerCloud::new(config.cloud.as_ref().unwrap())
        .unwrap()
        .with_fleet(fleet.clone());
    let adopted = cloud.adopt_all().await.unwrap();
    assert_eq!(adopted, vec![cloud_node_name_of(NodeId(7), "cpx32", "fsn1")]);
    let status = fleet.status(&adopted[0]).expect("a status");
    assert!(!status.ready, "adopted and shown ready before any probe: {status:?}");
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("not probed yet")),
        "{status:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_removed_nodes_observer_ends_at_removal_not_at_its_next_probe(pool: PgPool) {
    let mut config = test_config();
    // The next probe tick is ten minutes away: only the removal can end the observer.
    config.containers.probe_interval_ms = 600_000;
    config.containers.reconcile_interval_ms = 600_000;
    config.containers.player_poll_interval_ms = 600_000;
    let app = TestApp::start_with(pool, config).await;
    let services = app.services.as_ref().unwrap();
    let fleet = services.fleet.clone().unwrap();
    // Another name for the test node's engine: a node the core does not know.
    let mut node = app.config.fleet.dedicated_nodes[0].clone();
    node.name = "it-extra-node".to_string();
    let driver = fleet.node_driver_for(&node).unwrap();
    fleet.add_unprobed_node(node.name.clone(), Arc::new(driver));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let observer =
        payperplay_prod::observers::spawn_node(fleet.clone(), services.handle.clone(), shutdown, node.name.clone());
    // Its first probe answers: it runs, and the node is ready only now.
    eventually("the extra node's first probe answered", || async {
        fleet.status(&node.name).is_some_and(|status| status.ready)
    })
    .await;
    assert!(!observer.is_finished());
    assert!(fleet.remove_node(&node.name));
    tokio::time::timeout(std::time::Duration::from_secs(20), observer)
        .await
        .expect("the observer ended at the node's removal, not at its next probe tick")
        .expect("the observer task ended cleanly");
    assert!(fleet.status(&node.name).is_none(), "no status left for a removed node");
    app.stop().await;
}
