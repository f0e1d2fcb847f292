//! The node driver against the real Docker engine, OpenSSH server and test image that
//! scripts/start-services.sh starts (scripts/test.sh sources it). Each test uses its own
//! server ids and port range, so they run in parallel on the one engine.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use payperplay_nodes::{ContainerEventKind, FailureKind, NodeError, SshError, StopOutcome};
use support::{Services, spec, wait_until_answering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_server_starts_answers_stops_and_is_removed() {
    let services = Services::from_env();
    let driver = services.local_node("local-lifecycle", 21000..=21009);
    let spec = spec(&services, 1001, 1);

    let started = driver.start(&spec).await.expect("start");
    assert!(started.created);
    assert!((21000..=21009).contains(&started.ports.game), "{started:?}");
    let status = wait_until_answering(started.ports.game, Duration::from_secs(30)).await;
    assert_eq!(status.motd, "server 1001");
    assert_eq!((status.players_online, status.players_max), (0, 10), "{status:?}");
    let found = driver.inspect(1001).await.unwrap().expect("the container exists");
    assert!(found.running, "{found:?}");
    assert_eq!(found.command_id, Some(1));
    assert_eq!(found.server_id, Some(1001));

    // What the engine was asked for: memory limit = the tier, heap below it, host
    // networking, labels, the world volume.
    let inspected = services.inspect_container(1001).await;
    let host_config = inspected.host_config.expect("host config");
    assert_eq!(host_config.memory, Some(512 * 1024 * 1024));
    assert_eq!(host_config.network_mode.as_deref(), Some("host"));
    assert_eq!(host_config.binds, Some(vec!["payperplay-world-1001:/data".to_string()]));
    let config = inspected.config.expect("config");
    let env = config.env.unwrap_or_default();
    for expected in [
        "EULA=TRUE",
        "MEMORY=409M",
        "SERVER_IP=127.0.0.1",
        "TYPE=VANILLA",
        "ENABLE_RCON=true",
    ] {
        assert!(env.iter().any(|line| line == expected), "{expected} not in {env:?}");
    }
    assert!(env.contains(&format!("SERVER_PORT={}", started.ports.game)), "{env:?}");
    let labels = config.labels.unwrap_or_default();
    assert_eq!(
        labels.get("payperplay.platform").map(String::as_str),
        Some("payperplay-test")
    );
    assert_eq!(
        labels.get("payperplay.node").map(String::as_str),
        Some("local-lifecycle")
    );
    assert_eq!(labels.get("payperplay.server").map(String::as_str), Some("1001"));
    assert_eq!(labels.get("payperplay.command").map(String::as_str), Some("1"));

    assert_eq!(driver.stop(1001).await.unwrap(), StopOutcome::Stopped);
    let found = driver
        .inspect(1001)
        .await
        .unwrap()
        .expect("a stopped container stays until removed");
    assert!(!found.running, "{found:?}");
    // Stopping again, removing twice: the same end state, no error.
    assert_eq!(driver.stop(1001).await.unwrap(), StopOutcome::AlreadyStopped);
    driver.remove(1001).await.unwrap();
    driver.remove(1001).await.unwrap();
    assert_eq!(driver.inspect(1001).await.unwrap(), None);
    assert_eq!(driver.stop(1001).await.unwrap(), StopOutcome::AlreadyStopped);
    driver.remove_world(1001).await.unwrap();
    driver.remove_world(1001).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_start_command_twice_makes_one_container() {
    let services = Services::from_env();
    let driver = services.local_node("local-idempotent", 21010..=21019);
    let spec = spec(&services, 1002, 7);

    let (first, second) = tokio::join!(driver.start(&spec), driver.start(&spec));
    let (first, second) = (first.expect("first start"), second.expect("second start"));
    assert_eq!(first.container_id, second.container_id);
    assert_eq!(first.ports, second.ports);
    assert_ne!(first.created, second.created, "exactly one of them created it");
    let third = driver.start(&spec).await.expect("third start");
    assert_eq!(third.container_id, first.container_id);
    assert!(!third.created);
    let containers: Vec<_> = driver
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|container| container.server_id == Some(1002))
        .collect();
    assert_eq!(containers.len(), 1, "{containers:?}");

    // A later command for the same server replaces the container; the world volume stays.
    let mut later = spec.clone();
    later.command_id = 8;
    let replaced = driver.start(&later).await.expect("start by a later command");
    assert_ne!(replaced.container_id, first.container_id);
    assert!(replaced.created);
    let found = driver.inspect(1002).await.unwrap().unwrap();
    assert_eq!(found.command_id, Some(8));

    driver.remove(1002).await.unwrap();
    driver.remove_world(1002).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_node_through_ssh_runs_servers_like_a_local_one() {
    let services = Services::from_env();
    let driver = services.ssh_node("remote-lifecycle", 21020..=21029);

    let health = driver.probe().await.expect("probe through SSH");
    assert!(!health.engine_version.is_empty());
    assert!(health.disk_free_mib > 0, "{health:?}");

    let spec = spec(&services, 1003, 11);
    let started = driver.start(&spec).await.expect("start through SSH");
    assert!((21020..=21029).contains(&started.ports.game));
    let again = driver.start(&spec).await.expect("repeat through SSH");
    assert_eq!(again.container_id, started.container_id);
    wait_until_answering(started.ports.game, Duration::from_secs(30)).await;
    let listed = driver.list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|container| container.server_id == Some(1003) && container.running),
        "{listed:?}"
    );
    assert_eq!(driver.stop(1003).await.unwrap(), StopOutcome::Stopped);
    driver.remove(1003).await.unwrap();
    driver.remove_world(1003).await.unwrap();
    assert_eq!(driver.inspect(1003).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_do_not_collide_across_two_logical_nodes_on_one_engine() {
    let services = Services::from_env();
    // Overlapping ranges on purpose: node B's first ports are node A's last ones.
    let node_a = services.local_node("ports-a", 21030..=21032);
    let node_b = services.ssh_node("ports-b", 21031..=21035);
    let mut game_ports = Vec::new();
    let mut rcon_ports = Vec::new();
    for server_id in 1010..1013 {
        let started = node_a
            .start(&spec(&services, server_id, server_id))
            .await
            .expect("start on A");
        assert!((21030..=21032).contains(&started.ports.game));
        game_ports.push(started.ports.game);
        rcon_ports.push(started.ports.rcon);
    }
    for server_id in 1013..1016 {
        let started = node_b
            .start(&spec(&services, server_id, server_id))
            .await
            .expect("start on B");
        assert!((21031..=21035).contains(&started.ports.game));
        game_ports.push(started.ports.game);
        rcon_ports.push(started.ports.rcon);
    }
    let mut all: Vec<u16> = game_ports.iter().chain(rcon_ports.iter()).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 12, "game {game_ports:?} rcon {rcon_ports:?}");
    // Every server answers on its own port.
    for port in &game_ports {
        wait_until_answering(*port, Duration::from_secs(30)).await;
    }
    // Node A's range is full now.
    let error = node_a.start(&spec(&services, 1016, 1016)).await.unwrap_err();
    assert!(matches!(error, NodeError::NoFreePort { .. }), "{error}");
    assert!(error.to_string().contains("node ports-a"), "{error}");
    assert_eq!(error.kind(), FailureKind::Permanent);

    for server_id in 1010..1016 {
        let driver = if server_id < 1013 { &node_a } else { &node_b };
        driver.remove(server_id).await.unwrap();
        driver.remove_world(server_id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reports_a_crash_with_exit_code_1() {
    let services = Services::from_env();
    let driver = services.local_node("local-crash", 21040..=21049);
    // From a second ago: the stream's request goes out when it is first polled, after the start.
    let since_unix_s = support::now_unix_s() - 1;
    let mut events = Box::pin(driver.events(Some(since_unix_s)).await.expect("event stream"));
    // The same node's events seen through SSH (a remote node's observer).
    let remote = services.ssh_node("local-crash", 21040..=21049);
    let mut remote_events = Box::pin(remote.events(Some(since_unix_s)).await.expect("event stream over SSH"));
    let mut spec = spec(&services, 1020, 21);
    spec.extra_env
        .push(("TESTGAME_CRASH_AFTER_MS".to_string(), "500".to_string()));
    driver.start(&spec).await.expect("start");
    for events in [&mut events, &mut remote_events] {
        let event = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let event = events.next().await.expect("stream open").expect("event");
                if event.server_id == Some(1020) {
                    return event;
                }
            }
        })
        .await
        .expect("a die event within 30 s");
        assert_eq!(event.kind, ContainerEventKind::Died { exit_code: Some(1) });
        assert_eq!(event.command_id, Some(21));
        assert_eq!(event.node, "local-crash");
        assert!(
            event
                .engine_time_unix_ns
                .is_some_and(|ns| ns / 1_000_000_000 >= since_unix_s as i64)
        );
    }
    driver.remove(1020).await.unwrap();
    driver.remove_world(1020).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_saves_the_world_and_a_restart_keeps_it() {
    let services = Services::from_env();
    let driver = services.local_node("local-world", 21050..=21059);
    let started = driver.start(&spec(&services, 1030, 31)).await.expect("start");
    wait_until_answering(started.ports.game, Duration::from_secs(30)).await;
    assert_eq!(driver.stop(1030).await.unwrap(), StopOutcome::Stopped);
    let first = services.read_level(1030).await;
    assert!(first.save_count >= 1, "{first:?}");

    // A later start of the same server (new command, new container) opens the same world.
    let restarted = driver.start(&spec(&services, 1030, 32)).await.expect("restart");
    assert!(restarted.created);
    wait_until_answering(restarted.ports.game, Duration::from_secs(30)).await;
    assert_eq!(driver.stop(1030).await.unwrap(), StopOutcome::Stopped);
    let second = services.read_level(1030).await;
    assert_eq!(
        second.created_at_ms, first.created_at_ms,
        "the same world, not a new one"
    );
    assert!(second.save_count > first.save_count, "{first:?} then {second:?}");

    driver.remove(1030).await.unwrap();
    driver.remove_world(1030).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_image_is_a_permanent_error_naming_node_and_image() {
    let services = Services::from_env();
    let driver = services.local_node("local-bad-image", 21060..=21069);
    let mut spec = spec(&services, 1040, 41);
    spec.image = "payperplay/no-such-image:never".to_string();
    let error = driver.start(&spec).await.unwrap_err();
    assert!(matches!(error, NodeError::UnknownImage { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("node local-bad-image"), "{message}");
    assert!(message.contains("payperplay/no-such-image:never"), "{message}");
    assert_eq!(error.kind(), FailureKind::Permanent);
    assert_eq!(driver.inspect(1040).await.unwrap(), None, "nothing half-made is left");
    driver.remove_world(1040).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_is_refused_naming_the_node() {
    let services = Services::from_env();
    // A key that is not sshd's: its own client key's public half.
    let wrong_key = std::fs::read_to_string(format!("{}.pub", services.ssh_key_path)).expect("client public key");
    let driver = services.ssh_node_with_host_key("wrong-host-key", 21070..=21079, &wrong_key);
    let error = driver.probe().await.unwrap_err();
    assert!(
        matches!(error, NodeError::Ssh(SshError::HostKeyMismatch { .. })),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("node wrong-host-key"), "{message}");
    assert!(message.contains("host key"), "{message}");
    assert!(message.contains("SHA256:"), "the offered key's fingerprint: {message}");
    assert_eq!(error.kind(), FailureKind::NodeUnreachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_on_first_use_pins_the_first_key_seen() {
    let services = Services::from_env();
    let connection = services.ssh_connection("learning", &[], true);
    let output = connection
        .run("echo hello", Duration::from_secs(10))
        .await
        .expect("command");
    assert_eq!(output.exit_status, Some(0));
    assert_eq!(output.stdout.trim(), "hello");
    let learned = connection.learned_host_key().expect("a learned key");
    assert_eq!(learned.trim(), services.ssh_host_key.trim());
    // Without pins and without learning, the node is refused.
    let strict = services.ssh_connection("strict", &[], false);
    let error = strict.run("true", Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(error, SshError::HostKeyUnknown { .. }), "{error:?}");
    assert!(error.to_string().contains("node strict"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_socket_is_an_error_naming_node_and_socket() {
    let services = Services::from_env();
    let missing = "/nonexistent/payperplay/docker.sock";
    let driver = services.node_at_socket("no-engine", 21080..=21089, missing);
    let error = driver.probe().await.unwrap_err();
    assert!(matches!(error, NodeError::EngineUnreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("node no-engine"), "{message}");
    assert!(message.contains(missing), "{message}");
    assert_eq!(error.kind(), FailureKind::NodeUnreachable);

    // Through SSH: sshd cannot reach the socket either; the error names the node.
    let remote = services.ssh_node_at_socket("no-remote-engine", 21090..=21099, missing);
    let error = remote.probe().await.unwrap_err();
    assert!(error.to_string().contains("node no-remote-engine"), "{error}");
    assert!(error.to_string().contains(missing), "{error}");
    assert!(error.is_transient(), "{error:?}");

    // An SSH port where nothing listens: unreachable, naming node and address.
    let closed = services.ssh_node_on_port("no-sshd", 21100..=21109, support::closed_port());
    let error = closed.probe().await.unwrap_err();
    assert!(matches!(error, NodeError::Ssh(SshError::Connect { .. })), "{error:?}");
    assert!(error.to_string().contains("node no-sshd"), "{error}");
    assert_eq!(error.kind(), FailureKind::NodeUnreachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_refusing_the_configuration_is_a_permanent_error() {
    let services = Services::from_env();
    let driver = services.local_node("local-refused", 21110..=21119);
    // 4 MiB is below the engine's minimum memory limit: it refuses the container.
    let mut spec = spec(&services, 1050, 51);
    spec.ram_mib = 4;
    let error = driver.start(&spec).await.unwrap_err();
    assert!(matches!(error, NodeError::RefusedConfig { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("node local-refused"), "{message}");
    assert!(
        message.to_lowercase().contains("memory"),
        "the engine's reason: {message}"
    );
    assert_eq!(error.kind(), FailureKind::Permanent);
    assert_eq!(driver.inspect(1050).await.unwrap(), None);
    driver.remove_world(1050).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_ssh_connection_is_made_again() {
    let services = Services::from_env();
    let connection = services.ssh_connection("reconnect", &[&services.ssh_host_key], false);
    let first = connection
        .run("echo $PPID", Duration::from_secs(10))
        .await
        .expect("first command");
    let session_pid = first.stdout.trim().to_string();
    assert!(!session_pid.is_empty(), "{first:?}");
    // Kill this connection's sshd session process from the inside: the TCP connection drops.
    let _ = connection.run("kill -9 $PPID", Duration::from_secs(10)).await;
    let second = connection
        .run("echo $PPID", Duration::from_secs(10))
        .await
        .expect("a command after the drop reconnects");
    assert_eq!(second.exit_status, Some(0));
    assert_ne!(
        second.stdout.trim(),
        session_pid,
        "a new session process, so a new connection"
    );
    // The engine is reachable again through the same node, too.
    let driver = services.ssh_node("reconnect-engine", 21120..=21129);
    driver.probe().await.expect("probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_a_container_at_once_and_repeats_harmlessly() {
    let services = Services::from_env();
    let driver = services.local_node("local-kill", 21130..=21139);
    let since_unix_s = support::now_unix_s() - 1;
    let mut events = Box::pin(driver.events(Some(since_unix_s)).await.expect("event stream"));
    let started = driver.start(&spec(&services, 1060, 61)).await.expect("start");
    wait_until_answering(started.ports.game, Duration::from_secs(30)).await;
    driver.kill(1060).await.expect("kill");
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events.next().await.expect("stream open").expect("event");
            if event.server_id == Some(1060) {
                return event;
            }
        }
    })
    .await
    .expect("a die event");
    // SIGKILL: 128 + 9.
    assert_eq!(event.kind, ContainerEventKind::Died { exit_code: Some(137) });
    assert!(!driver.inspect(1060).await.unwrap().unwrap().running);
    driver
        .kill(1060)
        .await
        .expect("killing a stopped container is a success");
    assert_eq!(driver.stop(1060).await.unwrap(), StopOutcome::AlreadyStopped);
    driver.remove(1060).await.unwrap();
    driver
        .kill(1060)
        .await
        .expect("killing a removed container is a success");
    driver.remove_world(1060).await.unwrap();
}
