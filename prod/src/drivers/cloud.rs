//! Cloud VMs as nodes: how an ordered VM becomes a node the container driver reaches,
//! and how the provider's VMs are reconciled with the core by label.
//!
//! - **Readiness**: a VM is a node only once SSH to it and its Docker engine answer (the
//!   same health probe the node observers run). The VM's address is its public IPv4;
//!   its SSH port and game-port range come from `[cloud]` (the fake Hetzner API names
//!   its own in hint labels, so several fake VMs in front of one test engine never
//!   share a port). Until then, or when the bound passes, it is no node.
//! - **Reconciliation** ([`reconcile`]): the provider's VMs by the platform label
//!   against the core's cloud nodes. A VM whose node the core knows (and has not
//!   deleted or lost) is adopted: its engine joins the fleet; a VM the core does not
//!   know is deleted once older than `reconcile_grace_ms` (an order in flight is not
//!   an orphan); a node the core counts (ready or draining) whose VM the provider no
//!   longer lists is reported lost (`Input::NodeLost`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use payperplay_core::{Core, NodeId, NodeKind, NodeState};
use payperplay_hetzner::client::LABEL_NODE;
use payperplay_hetzner::fake::{HINT_LABEL_GAME_PORTS, HINT_LABEL_SSH_PORT};
use payperplay_hetzner::model::Server;

use super::{DriverError, NodeFleet, cloud_node_name_of};
use crate::config::{CloudConfig, DedicatedNodeConfig, EngineConfig, PortRange, SshNodeConfig};

/// Between two readiness probes of a new VM.
pub const READY_PROBE_INTERVAL_MS: u64 = 250;

/// The node a VM is, as the container driver needs it: reached over SSH at the VM's
/// public IPv4 address.
pub fn vm_node_config(cloud: &CloudConfig, name: &str, vm: &Server) -> Result<DedicatedNodeConfig, DriverError> {
    let ip = vm
        .ipv4()
        .ok_or_else(|| DriverError::Permanent(format!("VM {} ({name}) has no public IPv4 address", vm.name)))?;
    let bind_address = ip
        .parse()
        .map_err(|_| DriverError::Permanent(format!("VM {}: public IPv4 {ip:?} is not an address", vm.name)))?;
    let ssh_port = match vm.labels.get(HINT_LABEL_SSH_PORT) {
        Some(port) => port
            .parse()
            .map_err(|_| DriverError::Permanent(format!("VM {}: SSH port label {port:?} is not a port", vm.name)))?,
        None => cloud.ssh_port,
    };
    let game_ports = match vm.labels.get(HINT_LABEL_GAME_PORTS) {
        Some(range) => parse_port_range(range).ok_or_else(|| {
            DriverError::Permanent(format!("VM {}: game ports label {range:?} is not first-last", vm.name))
        })?,
        None => cloud.game_ports,
    };
    // RCON ports follow the game ports at the configured distance.
    let rcon_ports_first =
        (u32::from(game_ports.first) + u32::from(cloud.rcon_port_offset)).min(u32::from(u16::MAX)) as u16;
    Ok(DedicatedNodeConfig {
        name: name.to_string(),
        capacity_mib: 0,
        monthly_cost_micros: 0,
        is_system: false,
        engine: Some(EngineConfig {
            socket_path: cloud.engine_socket_path.clone(),
            ssh: Some(SshNodeConfig {
                host: ip.to_string(),
                port: ssh_port,
                user: cloud.ssh_user.clone(),
                key_file: cloud.ssh_key_file.clone(),
                host_keys: cloud.ssh_host_keys.clone(),
                learn_host_key_on_first_use: cloud.ssh_host_keys.is_empty(),
            }),
        }),
        bind_address,
        game_ports,
        rcon_ports_first,
        data_path: cloud.data_path.clone(),
    })
}

fn parse_port_range(text: &str) -> Option<PortRange> {
    let (first, last) = text.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first <= last && first > 0).then_some(PortRange { first, last })
}

/// Waits until the VM's SSH and Docker engine answer a health probe, then adds it to
/// the fleet under `name`; fails when `deadline` passes first (the caller deletes the
/// VM). Returns how long the wait took.
pub async fn wait_until_node(
    fleet: &NodeFleet,
    node: &DedicatedNodeConfig,
    deadline: tokio::time::Instant,
) -> Result<Duration, DriverError> {
    let started = tokio::time::Instant::now();
    let driver = Arc::new(
        fleet
            .node_driver_for(node)
            .map_err(|error| DriverError::Permanent(format!("VM node {}: engine not usable: {error}", node.name)))?,
    );
    let mut last_error = String::from("not probed yet");
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(DriverError::Permanent(format!(
                "VM node {} not ready within {} ms: SSH and its Docker engine did not answer ({last_error})",
                node.name,
                (deadline - started).as_millis()
            )));
        }
        match tokio::time::timeout(deadline - now, driver.probe()).await {
            Ok(Ok(health)) => {
                tracing::info!(node = %node.name, engine_version = %health.engine_version, "cloud node ready");
                fleet.add_node(node.name.clone(), driver);
                return Ok(started.elapsed());
            }
            Ok(Err(error)) => last_error = error.to_string(),
            Err(_elapsed) => last_error = "the probe outlasted the bound".to_string(),
        }
        tokio::time::sleep(Duration::from_millis(READY_PROBE_INTERVAL_MS)).await;
    }
}

/// What one reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudReconcileReport {
    /// Nodes whose VM joined the fleet (their engine was not in it).
    pub adopted: Vec<String>,
    /// VMs deleted: the core does not know their node.
    pub deleted: Vec<String>,
    /// Unknown VMs still within the grace period.
    pub unknown_waiting: Vec<String>,
    /// Nodes the core counts whose VM the provider no longer lists: reported lost.
    pub lost: Vec<NodeId>,
}

/// The core's cloud nodes, by id: their name and whether the core still counts them on
/// a VM (ready or draining).
pub fn core_cloud_nodes(core: &Core) -> BTreeMap<NodeId, (String, NodeState)> {
    let catalog = &core.config().catalog;
    core.nodes()
        .filter_map(|node| match &node.kind {
            NodeKind::Cloud { server_type, location } => Some((
                node.id,
                (
                    super::cloud_node_name(catalog, node.id, *server_type, *location),
                    node.state,
                ),
            )),
            NodeKind::Dedicated { .. } => None,
        })
        .collect()
}

/// The node a VM was ordered for, from its node label.
pub fn vm_node_id(vm: &Server) -> Option<NodeId> {
    vm.labels.get(LABEL_NODE)?.parse().ok().map(NodeId)
}

/// The node name a VM carries (the same as the core's for its node).
pub fn vm_node_name(vm: &Server) -> Option<String> {
    Some(cloud_node_name_of(
        vm_node_id(vm)?,
        &vm.server_type.name,
        &vm.location.name,
    ))
}
