//! Start latency on the loopback engine: from the start command to the container
//! running (the driver's `start` returned: created and started), and to the game port
//! answering a status ping. 50 starts of the test image, one after another; prints the
//! median and p99 of both. Needs the services of scripts/start-services.sh:
//!
//!     source scripts/start-services.sh
//!     cargo bench -p payperplay-nodes --bench start_latency
//!
//! `START_LATENCY_RUNS` changes the number of starts; `START_LATENCY_VIA=ssh` drives the
//! engine through sshd instead of its socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use payperplay_nodes::driver::{STOP_ATTEMPTS_DEFAULT, STOP_TIMEOUT_S_DEFAULT};
use payperplay_nodes::{EngineEndpoint, NodeConfig, NodeDriver, ServerSoftware, ServerSpec, SshConfig, SshConnection};

const RUNS_DEFAULT: usize = 50;
const BOOT_TIMEOUT_S: u64 = 60;
const SERVER_ID_FIRST: u64 = 900_000;

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: `source scripts/start-services.sh` first"))
}

fn percentile(sorted_ms: &[f64], fraction: f64) -> f64 {
    // Nearest rank: the smallest value with at least `fraction` of the samples at or below it.
    let rank = (fraction * sorted_ms.len() as f64).ceil().max(1.0) as usize;
    sorted_ms[rank.min(sorted_ms.len()) - 1]
}

fn main() {
    let runs: usize = std::env::var("START_LATENCY_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(RUNS_DEFAULT);
    let via_ssh = std::env::var("START_LATENCY_VIA").is_ok_and(|via| via == "ssh");
    let socket_path = required("PAYPERPLAY_TEST_DOCKER_SOCKET");
    let image = required("PAYPERPLAY_TEST_IMAGE");
    let endpoint = if via_ssh {
        let connection = SshConnection::new(SshConfig {
            node: "bench".to_string(),
            addr: SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                required("PAYPERPLAY_TEST_SSH_PORT").parse().expect("port"),
            )),
            user: "root".to_string(),
            key_path: required("PAYPERPLAY_TEST_SSH_KEY").into(),
            known_host_keys: vec![required("PAYPERPLAY_TEST_SSH_HOST_KEY")],
            learn_host_key_on_first_use: false,
        })
        .expect("SSH key");
        EngineEndpoint::Ssh {
            ssh: Arc::new(connection),
            socket_path,
        }
    } else {
        EngineEndpoint::Local { socket_path }
    };
    let driver = NodeDriver::new(NodeConfig {
        name: "bench".to_string(),
        endpoint,
        bind_address: Ipv4Addr::LOCALHOST.into(),
        game_ports: 22000..=22099,
        rcon_ports_first: 32000,
        platform: "payperplay-bench".to_string(),
        data_path: "/".to_string(),
        stop_timeout_s: STOP_TIMEOUT_S_DEFAULT,
        stop_attempts: STOP_ATTEMPTS_DEFAULT,
    })
    .expect("valid node configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (mut running_ms, mut answering_ms) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        driver.probe().await.expect("the engine answers");
        for run in 0..runs {
            let server_id = SERVER_ID_FIRST + run as u64;
            let spec = ServerSpec {
                server_id,
                command_id: server_id,
                ram_mib: 512,
                software: ServerSoftware::Vanilla,
                version: "1.21.4".to_string(),
                motd: "bench".to_string(),
                max_players: 10,
                image: image.clone(),
                rcon_password: payperplay_nodes::generate_rcon_password().expect("random"),
                extra_env: vec![("TESTGAME_BOOT_DELAY_MS".to_string(), "0".to_string())],
            };
            let started_at = tokio::time::Instant::now();
            let started = driver.start(&spec).await.expect("start");
            let running = started_at.elapsed();
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, started.ports.game));
            payperplay_nodes::ready::wait_until_answering(address, Duration::from_secs(BOOT_TIMEOUT_S))
                .await
                .expect("the server answers");
            let answering = started_at.elapsed();
            running_ms.push(running.as_secs_f64() * 1000.0);
            answering_ms.push(answering.as_secs_f64() * 1000.0);
            driver.remove(server_id).await.expect("remove");
            driver.remove_world(server_id).await.expect("remove world");
        }
    });
    for samples in [&mut running_ms, &mut answering_ms] {
        samples.sort_by(f64::total_cmp);
    }
    let via = if via_ssh {
        "through sshd"
    } else {
        "on the engine's socket"
    };
    println!("start latency, {runs} starts of the test image {via} (loopback):");
    println!(
        "  start command -> container running:       median {:7.1} ms   p99 {:7.1} ms   max {:7.1} ms",
        percentile(&running_ms, 0.5),
        percentile(&running_ms, 0.99),
        running_ms[running_ms.len() - 1]
    );
    println!(
        "  start command -> status ping answering:   median {:7.1} ms   p99 {:7.1} ms   max {:7.1} ms",
        percentile(&answering_ms, 0.5),
        percentile(&answering_ms, 0.99),
        answering_ms[answering_ms.len() - 1]
    );
}
