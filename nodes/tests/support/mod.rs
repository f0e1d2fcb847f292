//! What the node tests share: the services from the environment, node drivers made from
//! them, a server spec for the test image, readiness by status ping.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use payperplay_nodes::driver::{STOP_ATTEMPTS_DEFAULT, STOP_TIMEOUT_S_DEFAULT};
use payperplay_nodes::{EngineEndpoint, NodeConfig, NodeDriver, ServerSoftware, ServerSpec, SshConfig, SshConnection};

/// Label value of every test container, so reconciliation tests of other packages can
/// tell them apart.
pub const TEST_PLATFORM: &str = "payperplay-test";
/// RCON port = game port + this (within the test's own range plus an offset).
pub const RCON_PORT_OFFSET: u16 = 10_000;

pub struct Services {
    pub docker_socket: String,
    pub image: String,
    pub ssh_port: u16,
    pub ssh_key_path: String,
    pub ssh_host_key: String,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the Docker engine, sshd and test image that \
             scripts/start-services.sh starts; run `bash scripts/test.sh`, or \
             `source scripts/start-services.sh` and then cargo test"
        )
    })
}

impl Services {
    pub fn from_env() -> Services {
        Services {
            docker_socket: required("PAYPERPLAY_TEST_DOCKER_SOCKET"),
            image: required("PAYPERPLAY_TEST_IMAGE"),
            ssh_port: required("PAYPERPLAY_TEST_SSH_PORT")
                .parse()
                .expect("PAYPERPLAY_TEST_SSH_PORT is a port number"),
            ssh_key_path: required("PAYPERPLAY_TEST_SSH_KEY"),
            ssh_host_key: required("PAYPERPLAY_TEST_SSH_HOST_KEY"),
        }
    }

    fn node(&self, name: &str, game_ports: RangeInclusive<u16>, endpoint: EngineEndpoint) -> NodeDriver {
        NodeDriver::new(NodeConfig {
            name: name.to_string(),
            endpoint,
            bind_address: Ipv4Addr::LOCALHOST.into(),
            rcon_ports_first: game_ports.start() + RCON_PORT_OFFSET,
            game_ports,
            platform: TEST_PLATFORM.to_string(),
            data_path: "/".to_string(),
            stop_timeout_s: STOP_TIMEOUT_S_DEFAULT,
            stop_attempts: STOP_ATTEMPTS_DEFAULT,
        })
        .expect("valid node configuration")
    }

    pub fn local_node(&self, name: &str, game_ports: RangeInclusive<u16>) -> NodeDriver {
        self.node_at_socket(name, game_ports, &self.docker_socket.clone())
    }

    pub fn node_at_socket(&self, name: &str, game_ports: RangeInclusive<u16>, socket_path: &str) -> NodeDriver {
        self.node(
            name,
            game_ports,
            EngineEndpoint::Local {
                socket_path: socket_path.to_string(),
            },
        )
    }

    pub fn ssh_connection_on(&self, name: &str, port: u16, host_keys: &[&str], learn: bool) -> Arc<SshConnection> {
        Arc::new(
            SshConnection::new(SshConfig {
                node: name.to_string(),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                user: "root".to_string(),
                key_path: self.ssh_key_path.clone().into(),
                known_host_keys: host_keys.iter().map(|key| key.to_string()).collect(),
                learn_host_key_on_first_use: learn,
            })
            .expect("SSH key readable"),
        )
    }

    pub fn ssh_connection(&self, name: &str, host_keys: &[&str], learn: bool) -> Arc<SshConnection> {
        self.ssh_connection_on(name, self.ssh_port, host_keys, learn)
    }

    fn ssh_endpoint(&self, connection: Arc<SshConnection>, socket_path: &str) -> EngineEndpoint {
        EngineEndpoint::Ssh {
            ssh: connection,
            socket_path: socket_path.to_string(),
        }
    }

    pub fn ssh_node(&self, name: &str, game_ports: RangeInclusive<u16>) -> NodeDriver {
        let host_key = self.ssh_host_key.clone();
        self.ssh_node_with_host_key(name, game_ports, &host_key)
    }

    pub fn ssh_node_with_host_key(&self, name: &str, game_ports: RangeInclusive<u16>, host_key: &str) -> NodeDriver {
        let connection = self.ssh_connection(name, &[host_key], false);
        self.node(name, game_ports, self.ssh_endpoint(connection, &self.docker_socket))
    }

    pub fn ssh_node_at_socket(&self, name: &str, game_ports: RangeInclusive<u16>, socket_path: &str) -> NodeDriver {
        let connection = self.ssh_connection(name, &[&self.ssh_host_key], false);
        self.node(name, game_ports, self.ssh_endpoint(connection, socket_path))
    }

    pub fn ssh_node_on_port(&self, name: &str, game_ports: RangeInclusive<u16>, port: u16) -> NodeDriver {
        let connection = self.ssh_connection_on(name, port, &[&self.ssh_host_key], false);
        self.node(name, game_ports, self.ssh_endpoint(connection, &self.docker_socket))
    }

    async fn engine(&self) -> bollard::Docker {
        bollard::Docker::connect_with_unix(&self.docker_socket, 30, bollard::API_DEFAULT_VERSION)
            .expect("engine client")
            .negotiate_version()
            .await
            .expect("engine answers")
    }

    /// What the engine says about the server's container.
    pub async fn inspect_container(&self, server_id: u64) -> bollard::models::ContainerInspectResponse {
        self.engine()
            .await
            .inspect_container(&payperplay_nodes::spec::container_name(server_id), None)
            .await
            .expect("the container exists")
    }

    /// The test server's world file in the server's volume (the engine is on this machine).
    pub async fn read_level(&self, server_id: u64) -> Level {
        let docker = self.engine().await;
        let volume = docker
            .inspect_volume(&payperplay_nodes::spec::volume_name(server_id))
            .await
            .expect("the world volume exists");
        let path = std::path::Path::new(&volume.mountpoint).join("world/level.dat");
        let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }
}

/// The fields of the test server's `world/level.dat` the tests look at.
#[derive(Debug, serde::Deserialize)]
pub struct Level {
    pub created_at_ms: u64,
    pub save_count: u64,
}

/// A test-image server: boots at once, stops at once.
pub fn spec(services: &Services, server_id: u64, command_id: u64) -> ServerSpec {
    ServerSpec {
        server_id,
        command_id,
        ram_mib: 512,
        software: ServerSoftware::Vanilla,
        version: "1.21.4".to_string(),
        motd: format!("server {server_id}"),
        max_players: 10,
        image: services.image.clone(),
        rcon_password: payperplay_nodes::generate_rcon_password().unwrap(),
        extra_env: vec![("TESTGAME_BOOT_DELAY_MS".to_string(), "0".to_string())],
    }
}

/// Status pings 127.0.0.1:`port` until it answers (panics after `timeout`).
pub async fn wait_until_answering(port: u16, timeout: Duration) -> payperplay_nodes::ready::StatusReport {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    payperplay_nodes::ready::wait_until_answering(address, timeout)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Seconds since the Unix epoch on this machine, whose clock the loopback engine shares.
#[allow(clippy::disallowed_methods)] // a test reads the wall clock to subscribe to engine events
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
