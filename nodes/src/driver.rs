//! `NodeDriver`: one node's engine. Starts, stops, kills and removes servers' containers,
//! every call idempotent by command id; allocates game ports; lists the platform's
//! containers by label; streams container exits; probes the node's health.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions,
};
use futures_util::{Stream, StreamExt};

use crate::engine::{EngineEndpoint, map_engine_error};
use crate::error::NodeError;
use crate::spec::{self, LABEL_COMMAND, LABEL_GAME_PORT, LABEL_NODE, LABEL_PLATFORM, LABEL_RCON_PORT, LABEL_SERVER};
use crate::spec::{Ports, ServerSpec};

/// Seconds the engine gives a container between SIGTERM and SIGKILL on stop: longer than
/// the itzg image's own world save (`STOP_DURATION`, 60 s) plus its RCON round trip.
pub const STOP_TIMEOUT_S_DEFAULT: u32 = 90;
/// Engine stop calls tried before the container is killed.
pub const STOP_ATTEMPTS_DEFAULT: u32 = 2;
/// Seconds a stop call may take beyond the stop timeout before it counts as failed.
pub const STOP_CALL_MARGIN_S: u64 = 30;
/// Bound on a node check command over SSH.
pub const NODE_CHECK_TIMEOUT_MS: u64 = 10_000;

/// A node as the drivers see it.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name: in labels, errors and logs.
    pub name: String,
    pub endpoint: EngineEndpoint,
    /// The address game servers bind (`SERVER_IP`); host networking.
    pub bind_address: IpAddr,
    /// Game ports handed out on this node.
    pub game_ports: RangeInclusive<u16>,
    /// The RCON port of game port `p` is `p - game_ports.start() + rcon_ports_first`.
    pub rcon_ports_first: u16,
    /// The platform label's value (one engine may serve several platforms or tests).
    pub platform: String,
    /// A path on the node whose file system holds the engine's data (for `df`).
    pub data_path: String,
    pub stop_timeout_s: u32,
    pub stop_attempts: u32,
}

/// A container the driver started (or found already started by the same command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedContainer {
    pub container_id: String,
    pub ports: Ports,
    /// False when the same command had already created it (a repeated command).
    pub created: bool,
}

/// One of the platform's containers on the node, from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub container_id: String,
    pub name: String,
    pub server_id: Option<u64>,
    pub command_id: Option<u64>,
    pub ports: Option<Ports>,
    pub running: bool,
    /// The engine's state word (`created`, `running`, `exited`, ...).
    pub state: String,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It stopped within the timeout (world saved).
    Stopped,
    /// It was not running, or does not exist.
    AlreadyStopped,
    /// Every stop attempt failed; it was killed.
    Killed,
}

/// What the engine's event stream says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub node: String,
    pub server_id: Option<u64>,
    pub command_id: Option<u64>,
    pub container_id: String,
    pub kind: ContainerEventKind,
    /// The engine's time of the event, in ns since the Unix epoch: resubscribe from here.
    pub engine_time_unix_ns: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// The container's process ended (a stop ends with 0 or 143, a crash otherwise).
    Died { exit_code: Option<i64> },
    /// The kernel killed a process of the container for memory.
    OutOfMemory,
}

/// A node health probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub engine_version: String,
    /// Free space on the file system of `data_path`, in MiB.
    pub disk_free_mib: u64,
}

pub struct NodeDriver {
    config: NodeConfig,
    docker: tokio::sync::Mutex<Option<Docker>>,
    /// Held from port choice to container creation, so two starts never take one port.
    create_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for NodeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDriver").field("node", &self.config.name).finish()
    }
}

fn is_status(error: &bollard::errors::Error, statuses: &[u16]) -> bool {
    matches!(error, bollard::errors::Error::DockerResponseServerError { status_code, .. } if statuses.contains(status_code))
}

impl NodeDriver {
    /// Checks the port ranges: non-empty, the RCON range inside 1..=65535 and apart from
    /// the game range.
    pub fn new(config: NodeConfig) -> Result<NodeDriver, NodeError> {
        let bad = |reason: String| NodeError::BadConfig {
            node: config.name.clone(),
            reason,
        };
        let (first, last) = (*config.game_ports.start(), *config.game_ports.end());
        if first == 0 || first > last {
            return Err(bad(format!("game port range {first}..={last} is empty or starts at 0")));
        }
        let rcon_last = u32::from(config.rcon_ports_first) + u32::from(last - first);
        if config.rcon_ports_first == 0 || rcon_last > u32::from(u16::MAX) {
            return Err(bad(format!(
                "RCON ports {}..={rcon_last} are not all valid ports",
                config.rcon_ports_first
            )));
        }
        if u32::from(config.rcon_ports_first) <= u32::from(last) && rcon_last >= u32::from(first) {
            return Err(bad(format!(
                "RCON ports {}..={rcon_last} overlap the game ports {first}..={last}",
                config.rcon_ports_first
            )));
        }
        Ok(NodeDriver {
            config,
            docker: tokio::sync::Mutex::new(None),
            create_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn error(&self, operation: &str, error: bollard::errors::Error) -> NodeError {
        map_engine_error(&self.config.name, &self.config.endpoint.describe(), operation, error)
    }

    /// The engine client, connected (and its API version negotiated) on first use.
    pub async fn engine(&self) -> Result<Docker, NodeError> {
        let mut slot = self.docker.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let docker = self.config.endpoint.connect(&self.config.name).await?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    fn ports_for(&self, game: u16) -> Ports {
        Ports {
            game,
            rcon: game - self.config.game_ports.start() + self.config.rcon_ports_first,
        }
    }

    /// Creates (if needed) and starts the server's container. Idempotent by command id:
    /// a container of the same command is started if stopped and otherwise left alone; a
    /// container of another (older) command is removed first (its world stays in the
    /// volume).
    pub async fn start(&self, spec: &ServerSpec) -> Result<StartedContainer, NodeError> {
        let docker = self.engine().await?;
        let name = spec::container_name(spec.server_id);
        let _creating = self.create_lock.lock().await;
        let (container_id, ports, created) = match self.find(&docker, spec.server_id).await? {
            Some(found) if found.command_id == Some(spec.command_id) && found.ports.is_some() => {
                (found.container_id, found.ports.expect("checked"), false)
            }
            found => {
                if let Some(old) = found {
                    tracing::info!(node = %self.config.name, server = spec.server_id, old_command = ?old.command_id,
                        "removing the container of an earlier command");
                    self.remove_container(&docker, &old.container_id, true).await?;
                }
                self.create(&docker, spec, &name).await?
            }
        };
        match docker.start_container(&container_id, None).await {
            Ok(()) => {}
            Err(error) if is_status(&error, &[304]) => {}
            Err(error) => {
                let error = self.error("start container", error);
                if created && !error.is_transient() {
                    // The engine refuses to run it: no retry comes for this container.
                    if let Err(remove_error) = self.remove_container(&docker, &container_id, true).await {
                        tracing::warn!(node = %self.config.name, server = spec.server_id, %remove_error,
                            "removing a container that did not start failed");
                    }
                }
                return Err(error);
            }
        }
        Ok(StartedContainer {
            container_id,
            ports,
            created,
        })
    }

    async fn create(&self, docker: &Docker, spec: &ServerSpec, name: &str) -> Result<(String, Ports, bool), NodeError> {
        let volume = spec::volume_name(spec.server_id);
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(spec::volume_labels(
                    &self.config.platform,
                    &self.config.name,
                    spec.server_id,
                )),
                ..VolumeCreateRequest::default()
            })
            .await
            .map_err(|error| self.error("create volume", error))?;
        let ports = self.allocate_ports(docker).await?;
        let memory_bytes = i64::from(spec.ram_mib) * 1024 * 1024;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec::environment(spec, self.config.bind_address, ports)),
            labels: Some(spec::labels(&self.config.platform, &self.config.name, spec, ports)),
            stop_timeout: Some(i64::from(self.config.stop_timeout_s)),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_string()),
                memory: Some(memory_bytes),
                memory_swap: Some(memory_bytes),
                binds: Some(vec![format!("{volume}:{}", spec::WORLD_PATH)]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..CreateContainerOptions::default()
        };
        match docker.create_container(Some(options), body).await {
            Ok(response) => Ok((response.id, ports, true)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            }) if message.to_ascii_lowercase().contains("image") => Err(NodeError::UnknownImage {
                node: self.config.name.clone(),
                image: spec.image.clone(),
                message,
            }),
            Err(error) => Err(self.error("create container", error)),
        }
    }

    /// The lowest game port of the node's range whose game and RCON ports no container of
    /// the platform on this engine claims (any node's: logical nodes may share an engine).
    async fn allocate_ports(&self, docker: &Docker) -> Result<Ports, NodeError> {
        let mut used = BTreeSet::new();
        for container in self.list_labelled(docker, false).await? {
            if let Some(ports) = container.ports {
                used.insert(ports.game);
                used.insert(ports.rcon);
            }
        }
        for game in self.config.game_ports.clone() {
            let ports = self.ports_for(game);
            if !used.contains(&ports.game) && !used.contains(&ports.rcon) {
                return Ok(ports);
            }
        }
        Err(NodeError::NoFreePort {
            node: self.config.name.clone(),
            first: *self.config.game_ports.start(),
            last: *self.config.game_ports.end(),
            used: used.len(),
        })
    }

    async fn find(&self, docker: &Docker, server_id: u64) -> Result<Option<ContainerInfo>, NodeError> {
        let name = spec::container_name(server_id);
        Ok(self
            .list_labelled(docker, false)
            .await?
            .into_iter()
            .find(|container| container.name == name))
    }

    /// The server's container on this node, if any.
    pub async fn inspect(&self, server_id: u64) -> Result<Option<ContainerInfo>, NodeError> {
        let docker = self.engine().await?;
        self.find(&docker, server_id).await
    }

    /// Every container of the platform on this node (running or not), for reconciliation.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, NodeError> {
        let docker = self.engine().await?;
        self.list_labelled(&docker, true).await
    }

    /// Containers labelled with our platform; with `this_node_only`, also with our node.
    async fn list_labelled(&self, docker: &Docker, this_node_only: bool) -> Result<Vec<ContainerInfo>, NodeError> {
        let mut label_filters = vec![format!("{LABEL_PLATFORM}={}", self.config.platform)];
        if this_node_only {
            label_filters.push(format!("{LABEL_NODE}={}", self.config.name));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), label_filters)])),
            ..ListContainersOptions::default()
        };
        let summaries = docker
            .list_containers(Some(options))
            .await
            .map_err(|error| self.error("list containers", error))?;
        Ok(summaries
            .into_iter()
            .map(|summary| {
                let labels = summary.labels.unwrap_or_default();
                let label = |key: &str| labels.get(key).and_then(|value| value.parse::<u64>().ok());
                let port = |key: &str| labels.get(key).and_then(|value| value.parse::<u16>().ok());
                let ports = match (port(LABEL_GAME_PORT), port(LABEL_RCON_PORT)) {
                    (Some(game), Some(rcon)) => Some(Ports { game, rcon }),
                    _ => None,
                };
                let state = summary.state.map(|state| state.to_string()).unwrap_or_default();
                ContainerInfo {
                    container_id: summary.id.unwrap_or_default(),
                    name: summary
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|name| name.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    server_id: label(LABEL_SERVER),
                    command_id: label(LABEL_COMMAND),
                    ports,
                    running: summary.state == Some(ContainerSummaryStateEnum::RUNNING),
                    state,
                }
            })
            .collect())
    }

    /// Stops the server's container gracefully (SIGTERM, then the engine's SIGKILL after
    /// `stop_timeout_s`); after `stop_attempts` failed stop calls it is killed. A missing
    /// or stopped container is a success.
    pub async fn stop(&self, server_id: u64) -> Result<StopOutcome, NodeError> {
        let docker = self.engine().await?;
        let name = spec::container_name(server_id);
        // The engine answers a stop of a stopped container like a stop: ask first.
        match self.find(&docker, server_id).await? {
            Some(container) if container.running => {}
            _ => return Ok(StopOutcome::AlreadyStopped),
        }
        // The HTTP call lasts as long as the stop: give it the stop timeout and a margin.
        let stop_call_timeout = Duration::from_secs(u64::from(self.config.stop_timeout_s) + STOP_CALL_MARGIN_S);
        let stopping = docker.clone().with_timeout(stop_call_timeout);
        let mut last_error = None;
        for attempt in 0..self.config.stop_attempts.max(1) {
            let options = StopContainerOptions {
                t: Some(i32::try_from(self.config.stop_timeout_s).unwrap_or(i32::MAX)),
                ..StopContainerOptions::default()
            };
            match stopping.stop_container(&name, Some(options)).await {
                Ok(()) => return Ok(StopOutcome::Stopped),
                Err(error) if is_status(&error, &[304, 404]) => return Ok(StopOutcome::AlreadyStopped),
                Err(error) => {
                    tracing::warn!(node = %self.config.name, server = server_id, attempt, %error, "stop failed");
                    let mut error = self.error("stop container", error);
                    if let NodeError::Timeout { timeout_ms, .. } = &mut error {
                        *timeout_ms = stop_call_timeout.as_millis().try_into().unwrap_or(u64::MAX);
                    }
                    last_error = Some(error);
                }
            }
        }
        tracing::warn!(node = %self.config.name, server = server_id, "every stop failed: killing");
        match self.kill(server_id).await {
            Ok(()) => Ok(StopOutcome::Killed),
            Err(kill_error) => Err(last_error.unwrap_or(kill_error)),
        }
    }

    /// SIGKILL; a missing or stopped container is a success.
    pub async fn kill(&self, server_id: u64) -> Result<(), NodeError> {
        let docker = self.engine().await?;
        let options = KillContainerOptions {
            signal: "SIGKILL".to_string(),
        };
        match docker
            .kill_container(&spec::container_name(server_id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_status(&error, &[304, 404, 409]) => Ok(()),
            Err(error) => Err(self.error("kill container", error)),
        }
    }

    /// Removes the server's container (forced: a running one is killed). Its world volume
    /// stays. "Not found" is a success.
    pub async fn remove(&self, server_id: u64) -> Result<(), NodeError> {
        let docker = self.engine().await?;
        self.remove_container(&docker, &spec::container_name(server_id), true)
            .await
    }

    async fn remove_container(&self, docker: &Docker, name_or_id: &str, force: bool) -> Result<(), NodeError> {
        let options = RemoveContainerOptions {
            force,
            ..RemoveContainerOptions::default()
        };
        match docker.remove_container(name_or_id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if is_status(&error, &[404]) => Ok(()),
            // 409 "removal already in progress" ends in the same state.
            Err(error) if is_status(&error, &[409]) => Ok(()),
            Err(error) => Err(self.error("remove container", error)),
        }
    }

    /// Deletes the server's world volume (after its container is removed). "Not found" is
    /// a success.
    pub async fn remove_world(&self, server_id: u64) -> Result<(), NodeError> {
        let docker = self.engine().await?;
        match docker
            .remove_volume(&spec::volume_name(server_id), None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_status(&error, &[404]) => Ok(()),
            Err(error) => Err(self.error("remove volume", error)),
        }
    }

    /// The engine's events for this node's containers: exits (with exit code) and
    /// out-of-memory kills, from `since_unix_s` (the engine replays what it still holds
    /// from then) or, with `None`, from the moment the stream is first polled. The stream
    /// ends when the connection drops; the caller re-subscribes from the last event's
    /// time and reconciles by [`NodeDriver::list`].
    pub async fn events(
        &self,
        since_unix_s: Option<u64>,
    ) -> Result<impl Stream<Item = Result<ContainerEvent, NodeError>> + Send + 'static, NodeError> {
        let docker = self.engine().await?;
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["die".to_string(), "oom".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{LABEL_PLATFORM}={}", self.config.platform),
                    format!("{LABEL_NODE}={}", self.config.name),
                ],
            ),
        ]);
        let options = EventsOptions {
            since: since_unix_s.map(|since| since.to_string()),
            filters: Some(filters),
            ..EventsOptions::default()
        };
        let node = self.config.name.clone();
        let endpoint = self.config.endpoint.describe();
        let stream = docker.events(Some(options));
        Ok(stream.filter_map(move |item| {
            let node = node.clone();
            let endpoint = endpoint.clone();
            async move {
                let message = match item {
                    Ok(message) => message,
                    Err(error) => return Some(Err(map_engine_error(&node, &endpoint, "event stream", error))),
                };
                let actor = message.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                let number = |key: &str| attributes.get(key).and_then(|value| value.parse::<i64>().ok());
                let kind = match message.action.as_deref() {
                    Some("die") => ContainerEventKind::Died {
                        exit_code: number("exitCode"),
                    },
                    Some("oom") => ContainerEventKind::OutOfMemory,
                    _ => return None,
                };
                Some(Ok(ContainerEvent {
                    node,
                    server_id: number(LABEL_SERVER).and_then(|id| u64::try_from(id).ok()),
                    command_id: number(LABEL_COMMAND).and_then(|id| u64::try_from(id).ok()),
                    container_id: actor.id.unwrap_or_default(),
                    kind,
                    engine_time_unix_ns: message.time_nano,
                }))
            }
        }))
    }

    /// Health probe: the engine answers (through SSH for a remote node) and the disk of
    /// `data_path` has room. For a remote node `df` runs over SSH; for a local one here.
    pub async fn probe(&self) -> Result<NodeHealth, NodeError> {
        let docker = self.engine().await?;
        docker.ping().await.map_err(|error| self.error("ping", error))?;
        let version = docker.version().await.map_err(|error| self.error("version", error))?;
        let command = format!("df -Pk '{}'", self.config.data_path.replace('\'', ""));
        let output = match &self.config.endpoint {
            EngineEndpoint::Ssh { ssh, .. } => {
                let output = ssh.run(&command, Duration::from_millis(NODE_CHECK_TIMEOUT_MS)).await?;
                if output.exit_status != Some(0) {
                    return Err(self.check_failed(&command, output.stderr.trim().to_string()));
                }
                output.stdout
            }
            EngineEndpoint::Local { .. } => {
                let output = tokio::process::Command::new("df")
                    .arg("-Pk")
                    .arg(&self.config.data_path)
                    .output()
                    .await
                    .map_err(|error| self.check_failed(&command, error.to_string()))?;
                if !output.status.success() {
                    return Err(self.check_failed(&command, String::from_utf8_lossy(&output.stderr).trim().to_string()));
                }
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
        };
        let disk_free_mib = parse_df_free_mib(&output)
            .ok_or_else(|| self.check_failed(&command, format!("unreadable output {output:?}")))?;
        Ok(NodeHealth {
            engine_version: version.version.unwrap_or_default(),
            disk_free_mib,
        })
    }

    fn check_failed(&self, command: &str, message: String) -> NodeError {
        NodeError::CheckFailed {
            node: self.config.name.clone(),
            command: command.to_string(),
            message,
        }
    }
}

/// `df -Pk`'s second line, fourth column (available 1K blocks), in MiB.
fn parse_df_free_mib(output: &str) -> Option<u64> {
    let line = output.lines().nth(1)?;
    let available_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(available_kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FailureKind;

    fn config(game_ports: RangeInclusive<u16>, rcon_ports_first: u16) -> NodeConfig {
        NodeConfig {
            name: "n1".to_string(),
            endpoint: EngineEndpoint::Local {
                socket_path: "/nonexistent.sock".to_string(),
            },
            bind_address: std::net::Ipv4Addr::LOCALHOST.into(),
            game_ports,
            rcon_ports_first,
            platform: "payperplay".to_string(),
            data_path: "/".to_string(),
            stop_timeout_s: STOP_TIMEOUT_S_DEFAULT,
            stop_attempts: STOP_ATTEMPTS_DEFAULT,
        }
    }

    #[test]
    fn port_ranges_are_checked_when_a_driver_is_made() {
        assert!(NodeDriver::new(config(25565..=25664, 35565)).is_ok());
        let error = NodeDriver::new(config(25565..=25664, 25600)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "node n1: bad configuration: RCON ports 25600..=25699 overlap the game ports 25565..=25664"
        );
        assert_eq!(error.kind(), FailureKind::Permanent);
        let error = NodeDriver::new(config(25565..=25664, 65500)).unwrap_err();
        assert!(error.to_string().contains("not all valid ports"), "{error}");
        #[allow(clippy::reversed_empty_ranges)]
        let error = NodeDriver::new(config(30000..=29999, 40000)).unwrap_err();
        assert!(error.to_string().contains("empty"), "{error}");
        let driver = NodeDriver::new(config(25565..=25664, 35565)).unwrap();
        assert_eq!(
            driver.ports_for(25570),
            Ports {
                game: 25570,
                rcon: 35570
            }
        );
    }

    #[test]
    fn df_output_is_read_as_free_mib() {
        let output = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                      /dev/vda         102400000  51200000  20480000      72% /\n";
        assert_eq!(parse_df_free_mib(output), Some(20000));
        assert_eq!(parse_df_free_mib("garbage"), None);
    }
}
