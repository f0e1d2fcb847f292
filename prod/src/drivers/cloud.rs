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
//! - **Host keys** ([`vm_host_key`]): by default the platform makes each VM's SSH host
//!   key, hands it to the VM in its cloud-init user data and pins its public half
//!   before it first connects, so no VM is trusted on first use; a VM presenting
//!   another key is refused at once. The key is derived (HMAC-SHA256) from the
//!   platform's SSH client key and the node id, so it needs no storage and survives a
//!   restart: whoever holds that client key can log in to every VM anyway. Configured
//!   keys (`cloud.ssh_host_keys`) or learning on first use
//!   (`cloud.learn_host_key_on_first_use`) replace it only when configured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use payperplay_core::{Core, NodeId, NodeKind, NodeState};
use payperplay_hetzner::client::LABEL_NODE;
use payperplay_hetzner::cloud_init::HostKey;
use payperplay_hetzner::fake::{HINT_LABEL_GAME_PORTS, HINT_LABEL_SSH_PORT};
use payperplay_hetzner::model::Server;
use payperplay_nodes::{NodeError, SshError};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{LineEnding, PrivateKey};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use super::{DriverError, NodeFleet, cloud_node_name_of};
use crate::config::{CloudConfig, DedicatedNodeConfig, EngineConfig, PortRange, SshNodeConfig};

/// Between two readiness probes of a new VM.
pub const READY_PROBE_INTERVAL_MS: u64 = 250;

/// What a VM's host key seed is the HMAC of, before the platform and the node id.
const HOST_KEY_CONTEXT: &[u8] = b"payperplay vm ssh host key v1";

/// The secret VM host keys are derived from: the platform's SSH client key
/// (`cloud.ssh_key_file`), read when needed.
pub fn host_key_secret(cloud: &CloudConfig) -> Result<SecretSlice<u8>, DriverError> {
    std::fs::read(&cloud.ssh_key_file)
        .map(SecretSlice::from)
        .map_err(|error| {
            DriverError::Permanent(format!(
                "cloud.ssh_key_file {:?}, the secret VM host keys are made from, cannot be read: {error}",
                cloud.ssh_key_file
            ))
        })
}

/// The Ed25519 host key of the VM of `node_id`: its seed is
/// HMAC-SHA256(secret, context ‖ 0 ‖ platform ‖ 0 ‖ node id), so the same node always
/// gets the same key and another node or platform another.
pub fn vm_host_key(secret: &SecretSlice<u8>, platform: &str, node_id: NodeId) -> Result<HostKey, DriverError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret()).expect("HMAC takes keys of any length");
    mac.update(HOST_KEY_CONTEXT);
    mac.update(&[0]);
    mac.update(platform.as_bytes());
    mac.update(&[0]);
    mac.update(&node_id.0.to_be_bytes());
    let seed: [u8; 32] = mac.finalize().into_bytes().into();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let failed = |error: russh::keys::ssh_key::Error| {
        DriverError::Permanent(format!(
            "the host key of node {node_id}'s VM cannot be encoded: {error}"
        ))
    };
    let private_openssh = key.to_openssh(LineEnding::LF).map_err(failed)?.to_string();
    let public_openssh = key.public_key().to_openssh().map_err(failed)?;
    Ok(HostKey {
        private_openssh,
        public_openssh,
    })
}

/// The host key the platform makes for the VM of `node_id`, or `None` when `[cloud]`
/// pins configured keys or learns on first use (the VM keeps its image's keys).
pub fn made_host_key(cloud: &CloudConfig, node_id: NodeId) -> Result<Option<HostKey>, DriverError> {
    if !cloud.ssh_host_keys.is_empty() || cloud.learn_host_key_on_first_use {
        return Ok(None);
    }
    vm_host_key(&host_key_secret(cloud)?, &cloud.platform, node_id).map(Some)
}

/// The node a VM is, as the container driver needs it: reached over SSH at the VM's
/// public IPv4 address, its host key checked as `[cloud]` says ([`made_host_key`]).
pub fn vm_node_config(
    cloud: &CloudConfig,
    node_id: NodeId,
    name: &str,
    vm: &Server,
) -> Result<DedicatedNodeConfig, DriverError> {
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
    let host_keys = match made_host_key(cloud, node_id)? {
        Some(key) => vec![key.public_openssh],
        None => cloud.ssh_host_keys.clone(),
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
                host_keys,
                learn_host_key_on_first_use: cloud.learn_host_key_on_first_use && cloud.ssh_host_keys.is_empty(),
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
/// the fleet under `name`; fails when `deadline` passes first, or at once when the VM
/// presents a host key that is not the pinned one (the caller deletes the VM).
/// Returns how long the wait took.
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
            Ok(Err(error @ NodeError::Ssh(SshError::HostKeyMismatch { .. }))) => {
                return Err(DriverError::Permanent(format!(
                    "VM node {} refused: it presents an SSH host key the platform did not give it ({error})",
                    node.name
                )));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretSlice<u8> {
        SecretSlice::from(text.as_bytes().to_vec())
    }

    #[test]
    fn a_vms_host_key_is_the_same_for_its_node_and_another_for_any_other() {
        let key = vm_host_key(&secret("client key A"), "ppp", NodeId(7)).unwrap();
        assert_eq!(key, vm_host_key(&secret("client key A"), "ppp", NodeId(7)).unwrap());
        assert!(key.public_openssh.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"));
        assert!(key.private_openssh.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        for other in [
            vm_host_key(&secret("client key A"), "ppp", NodeId(8)),
            vm_host_key(&secret("client key A"), "other", NodeId(7)),
            vm_host_key(&secret("client key B"), "ppp", NodeId(7)),
        ] {
            assert_ne!(other.unwrap().public_openssh, key.public_openssh);
        }
        // The private half is the public half's: OpenSSH's format, read back.
        let private = russh::keys::decode_secret_key(&key.private_openssh, None).unwrap();
        assert_eq!(private.public_key().to_openssh().unwrap(), key.public_openssh);
        assert!(
            !format!("{key:?}").contains("PRIVATE"),
            "the private key stays out of logs"
        );
    }

    #[test]
    fn a_key_is_made_unless_keys_are_configured_or_learning_is() {
        let dir = std::env::temp_dir().join(format!("ppp-host-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("id_ed25519");
        std::fs::write(&key_file, "the platform's client key").unwrap();
        let made = CloudConfig {
            ssh_key_file: key_file.display().to_string(),
            ..CloudConfig::default()
        };
        let key = made_host_key(&made, NodeId(3)).unwrap().expect("made by default");
        let from_file = vm_host_key(&secret("the platform's client key"), "payperplay", NodeId(3)).unwrap();
        assert_eq!(key, from_file);
        let pinned = CloudConfig {
            ssh_host_keys: vec!["ssh-ed25519 AAAA known".to_string()],
            ..made.clone()
        };
        assert_eq!(made_host_key(&pinned, NodeId(3)).unwrap(), None);
        let learning = CloudConfig {
            learn_host_key_on_first_use: true,
            ..made.clone()
        };
        assert_eq!(made_host_key(&learning, NodeId(3)).unwrap(), None);
        let unreadable = CloudConfig {
            ssh_key_file: dir.join("missing").display().to_string(),
            ..CloudConfig::default()
        };
        let error = made_host_key(&unreadable, NodeId(3)).unwrap_err().to_string();
        assert!(
            error.contains("cloud.ssh_key_file") && error.contains("missing"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
