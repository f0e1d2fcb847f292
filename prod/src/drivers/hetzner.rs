//! The Hetzner Cloud driver: [`HetznerCloud`] carries out `ProvisionNode` and
//! `DeleteNode` through `payperplay_hetzner::HetznerClient`.
//!
//! - An order is idempotent: the VM is named `{platform}-cmd-{command_id}` and labelled
//!   with the platform, the node and the command, so a repeated order finds its VM.
//! - An order is done when the VM's create and start actions finished and, with a
//!   fleet attached (`serve`), when SSH to the VM and its Docker engine answer and it
//!   joined the fleet as a node ([`super::cloud`]), all within `cloud.ready_wait_ms_max`;
//!   a failed or late order deletes whatever the provider made for it, so a failure
//!   never leaks a VM (and the core orders elsewhere).
//! - Reconciliation by label ([`HetznerCloud::reconcile_with`]) at start and every
//!   `cloud.reconcile_interval_ms`: adopts, deletes unknown VMs after
//!   `cloud.reconcile_grace_ms`, reports lost nodes.
//! - Failures keep their meaning for the core: sold out becomes
//!   `FailureKind::ResourceUnavailable` (the core falls back to another type or
//!   location), rate limited becomes `FailureKind::RateLimited` (the core backs off),
//!   transient ones are retried by the executor, permanent ones are not.
//! - The token lives in a `SecretString`; no error or log line carries it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payperplay_core::{Catalog, CommandId, Input, NodeId, NodeState};
use payperplay_hetzner::client::{LABEL_NODE, LABEL_PLATFORM};
use payperplay_hetzner::cloud_init::WorkerBootstrap;
use payperplay_hetzner::model::Server;
use payperplay_hetzner::{ClientConfig, ErrorClass, HetznerClient, HetznerError, VmOrder};

use super::cloud::{self, CloudReconcileReport};
use super::{BoxFuture, CloudProvider, DriverError, NodeFleet, cloud_node_name_of};
use crate::clock::Stopwatch;
use crate::config::CloudConfig;
use crate::runtime::RuntimeHandle;

/// Hetzner Cloud as the platform's [`CloudProvider`].
#[derive(Debug)]
pub struct HetznerCloud {
    client: HetznerClient,
    ssh_key_name: String,
    ssh_public_key: String,
    ready_url: String,
    ready_wait_ms_max: u64,
    config: CloudConfig,
    /// Where a ready VM joins as a node; without one an order ends with the VM running.
    fleet: Option<Arc<NodeFleet>>,
    /// VMs reconciliation found unknown to the core, by VM id: since when.
    unknown_since: Mutex<BTreeMap<u64, Stopwatch>>,
}

impl HetznerCloud {
    /// A driver for `[cloud]`. Talks to nothing yet: [`HetznerCloud::check`] does.
    pub fn new(config: &CloudConfig) -> Result<HetznerCloud, HetznerError> {
        let mut client_config = ClientConfig::new(config.api_endpoint.clone(), config.token.clone());
        client_config.platform = config.platform.clone();
        client_config.image = config.image.clone();
        client_config.request_timeout_ms = config.request_timeout_ms;
        client_config.rate_limit_wait_ms_max = config.rate_limit_wait_ms_max;
        client_config.action_wait_ms_max = config.ready_wait_ms_max;
        Ok(HetznerCloud {
            client: HetznerClient::new(client_config)?,
            ssh_key_name: config.ssh_key_name.clone(),
            ssh_public_key: config.ssh_public_key.trim().to_string(),
            ready_url: config.ready_url.clone(),
            ready_wait_ms_max: config.ready_wait_ms_max,
            config: config.clone(),
            fleet: None,
            unknown_since: Mutex::new(BTreeMap::new()),
        })
    }

    /// Ready VMs join `fleet` as nodes (only once SSH and their engine answer).
    pub fn with_fleet(mut self, fleet: Arc<NodeFleet>) -> HetznerCloud {
        self.fleet = Some(fleet);
        self
    }

    /// Adds every running VM of the platform to the fleet without waiting for it (its
    /// observer reports its engine): at start, before the runtime re-issues commands
    /// for nodes on those VMs. Reconciliation deletes the ones the core does not know.
    pub async fn adopt_all(&self) -> Result<Vec<String>, DriverError> {
        let Some(fleet) = &self.fleet else {
            return Ok(Vec::new());
        };
        let mut adopted = Vec::new();
        for vm in self.list_vms().await? {
            if let Some(name) = self.adopt(fleet, &vm) {
                adopted.push(name);
            }
        }
        Ok(adopted)
    }

    /// Puts a VM's node into the fleet when it is not there; its name when it was added.
    fn adopt(&self, fleet: &NodeFleet, vm: &Server) -> Option<String> {
        let name = cloud::vm_node_name(vm)?;
        if fleet.driver(&name).is_some() {
            return None;
        }
        let node_id = cloud::vm_node_id(vm)?;
        let node = match cloud::vm_node_config(&self.config, node_id, &name, vm) {
            Ok(node) => node,
            Err(error) => {
                tracing::warn!(vm = %vm.name, %error, "VM cannot be adopted as a node");
                return None;
            }
        };
        match fleet.node_driver_for(&node) {
            Ok(driver) => {
                // Not ready until its observer's first probe answers.
                fleet.add_unprobed_node(name.clone(), Arc::new(driver));
                Some(name)
            }
            Err(error) => {
                tracing::warn!(vm = %vm.name, %error, "VM cannot be adopted as a node");
                None
            }
        }
    }

    /// One reconciliation pass (see [`super::cloud`]): the core's cloud nodes first,
    /// then the provider's VMs (so a node the core counts had its VM before the list).
    pub async fn reconcile_with(&self, handle: &RuntimeHandle) -> Result<CloudReconcileReport, DriverError> {
        let nodes = handle
            .query(cloud::core_cloud_nodes)
            .await
            .map_err(|error| DriverError::Transient(format!("reconciliation could not ask the core: {error}")))?;
        let vms = self.list_vms().await?;
        let grace = Duration::from_millis(self.config.reconcile_grace_ms);
        let mut report = CloudReconcileReport::default();
        let mut seen_nodes = std::collections::BTreeSet::new();
        let mut listed = std::collections::BTreeSet::new();
        for vm in &vms {
            listed.insert(vm.id);
            let node = cloud::vm_node_id(vm).and_then(|id| nodes.get(&id).map(|node| (id, node)));
            match node {
                Some((node_id, (_, state))) if *state != NodeState::Lost => {
                    seen_nodes.insert(node_id);
                    self.unknown_since.lock().expect("unknown VMs lock").remove(&vm.id);
                    if matches!(state, NodeState::Ready | NodeState::Draining)
                        && let Some(fleet) = &self.fleet
                        && let Some(name) = self.adopt(fleet, vm)
                    {
                        tracing::info!(node = %name, vm = %vm.name, "adopted the VM of a known node");
                        report.adopted.push(name);
                    }
                }
                _ => {
                    let overdue = self
                        .unknown_since
                        .lock()
                        .expect("unknown VMs lock")
                        .entry(vm.id)
                        .or_insert_with(Stopwatch::start)
                        .elapsed()
                        >= grace;
                    if !overdue {
                        report.unknown_waiting.push(vm.name.clone());
                        continue;
                    }
                    tracing::warn!(vm = %vm.name, "deleting a VM no node of the core owns");
                    self.client.delete_server(vm.id).await.map_err(driver_error)?;
                    metrics::counter!("payperplay_cloud_vms_deleted_total").increment(1);
                    if let (Some(fleet), Some(name)) = (&self.fleet, cloud::vm_node_name(vm)) {
                        fleet.remove_node(&name);
                    }
                    self.unknown_since.lock().expect("unknown VMs lock").remove(&vm.id);
                    report.deleted.push(vm.name.clone());
                }
            }
        }
        self.unknown_since
            .lock()
            .expect("unknown VMs lock")
            .retain(|id, _| listed.contains(id));
        let sink = handle.observation_sink();
        for (node_id, (name, state)) in &nodes {
            if matches!(state, NodeState::Ready | NodeState::Draining) && !seen_nodes.contains(node_id) {
                tracing::warn!(node = %name, "the provider lost the VM of a node: reporting it lost");
                if let Some(fleet) = &self.fleet {
                    fleet.remove_node(name);
                }
                sink.observe(Input::NodeLost { node_id: *node_id }).await;
                report.lost.push(*node_id);
            }
        }
        Ok(report)
    }

    /// With a fleet: waits until the VM's SSH and engine answer and it joined the
    /// fleet, by `deadline`. Without one there is nothing to wait for.
    async fn become_node(
        &self,
        node_id: NodeId,
        vm_type: &str,
        location: &str,
        vm: &Server,
        deadline: tokio::time::Instant,
    ) -> Result<(), DriverError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        let name = cloud_node_name_of(node_id, vm_type, location);
        let node = cloud::vm_node_config(&self.config, node_id, &name, vm)?;
        let waited = cloud::wait_until_node(fleet, &node, deadline).await?;
        metrics::histogram!("payperplay_cloud_vm_engine_wait_seconds").record(waited.as_secs_f64());
        Ok(())
    }

    /// Checks what `serve` needs before it orders anything: the token is accepted,
    /// every VM type and location of the core's catalog exists at Hetzner, and the
    /// platform's SSH key is there (created when missing). The error names what was
    /// wrong (the type, the location, the refused token).
    pub async fn check(&self, catalog: &Catalog) -> Result<(), HetznerError> {
        let vm_types: Vec<&str> = catalog.server_types.iter().map(|t| t.name.as_str()).collect();
        let locations: Vec<&str> = catalog.locations.iter().map(String::as_str).collect();
        self.client.check_catalog(&vm_types, &locations).await?;
        if cloud::made_host_key(&self.config, NodeId(0)).is_err() {
            return Err(HetznerError::Config(format!(
                "cloud.ssh_key_file {:?} cannot be read: the platform makes every VM's SSH host key from it \
                 (or configure cloud.ssh_host_keys, or cloud.learn_host_key_on_first_use)",
                self.config.ssh_key_file
            )));
        }
        self.client
            .ensure_ssh_key(&self.ssh_key_name, &self.ssh_public_key)
            .await?;
        Ok(())
    }

    pub fn client(&self) -> &HetznerClient {
        &self.client
    }

    /// Every VM of this platform instance the provider runs (all pages).
    pub async fn list_vms(&self) -> Result<Vec<Server>, DriverError> {
        self.client.list_platform_vms().await.map_err(driver_error)
    }

    /// The label selector of the VMs of one node.
    fn node_selector(&self, node_id: NodeId) -> String {
        format!("{},{LABEL_NODE}={node_id}", self.client.platform_selector())
    }

    async fn order(
        &self,
        command_id: CommandId,
        node_id: NodeId,
        vm_type: &str,
        location: &str,
    ) -> Result<String, DriverError> {
        let user_data = WorkerBootstrap {
            platform: self.client.config().platform.clone(),
            node_id: node_id.0,
            ssh_public_key: self.ssh_public_key.clone(),
            ready_url: self.ready_url.clone(),
            host_key: cloud::made_host_key(&self.config, node_id)?,
        }
        .user_data()
        .map_err(driver_error)?;
        let order = VmOrder {
            command_id: command_id.0,
            node_id: node_id.0,
            server_type: vm_type.to_string(),
            location: location.to_string(),
            ssh_keys: vec![self.ssh_key_name.clone()],
            user_data,
        };
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_millis(self.ready_wait_ms_max);
        let error = match tokio::time::timeout_at(deadline, self.client.order_vm(&order)).await {
            Ok(Ok(server)) => match self.become_node(node_id, vm_type, location, &server, deadline).await {
                Ok(()) => {
                    metrics::counter!("payperplay_cloud_vms_ordered_total").increment(1);
                    // Order to ready; the journal carries it too (the order's and its
                    // success's times: `export-trace` writes `provisioning_observed`).
                    metrics::histogram!("payperplay_cloud_provision_seconds").record(started.elapsed().as_secs_f64());
                    return Ok(server.id.to_string());
                }
                Err(error) => error,
            },
            // Sold out is the create request's own answer: nothing was made.
            Ok(Err(error)) if error.class() == ErrorClass::SoldOut => return Err(driver_error(error)),
            Ok(Err(error)) => driver_error(error),
            Err(_elapsed) => DriverError::Permanent(format!(
                "VM {} ({vm_type} in {location}) not ready within {} ms",
                self.client.vm_name(command_id.0),
                self.ready_wait_ms_max
            )),
        };
        // A failed order leaves nothing behind; what cleanup cannot delete now,
        // reconciliation deletes later (the VM carries the platform label).
        match self.client.delete_vm_of_command(command_id.0).await {
            Ok(true) => tracing::warn!(%command_id, %node_id, "deleted the VM of a failed order"),
            Ok(false) => {}
            Err(cleanup) => {
                tracing::warn!(%command_id, %node_id, %cleanup, "could not delete the VM of a failed order yet")
            }
        }
        Err(error)
    }

    async fn delete(&self, node_id: NodeId) -> Result<(), DriverError> {
        let vms = self
            .client
            .list_servers(&self.node_selector(node_id))
            .await
            .map_err(driver_error)?;
        for vm in vms {
            if vm.labels.get(LABEL_PLATFORM) != Some(&self.client.config().platform) {
                continue;
            }
            if let (Some(fleet), Some(name)) = (&self.fleet, cloud::vm_node_name(&vm)) {
                fleet.remove_node(&name);
            }
            if let Some(action) = self.client.delete_server(vm.id).await.map_err(driver_error)? {
                self.client.wait_for_action(action).await.map_err(driver_error)?;
            }
            metrics::counter!("payperplay_cloud_vms_deleted_total").increment(1);
        }
        Ok(())
    }
}

impl CloudProvider for HetznerCloud {
    fn create_node<'a>(
        &'a self,
        command_id: CommandId,
        node_id: NodeId,
        vm_type: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<String, DriverError>> {
        Box::pin(self.order(command_id, node_id, vm_type, location))
    }

    /// Deletes every VM labelled with the node (a 404 counts as deleted).
    fn delete_node(&self, _command_id: CommandId, node_id: NodeId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(self.delete(node_id))
    }

    fn reconcile_interval_ms(&self) -> Option<u64> {
        Some(self.config.reconcile_interval_ms)
    }

    fn reconcile<'a>(&'a self, handle: &'a RuntimeHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let report = self.reconcile_with(handle).await?;
            if report != CloudReconcileReport::default() {
                tracing::info!(?report, "cloud reconciliation");
            }
            Ok(())
        })
    }
}

/// A Hetzner failure as the executor and the core need it.
pub fn driver_error(error: HetznerError) -> DriverError {
    let text = error.to_string();
    match error.class() {
        ErrorClass::SoldOut => DriverError::SoldOut(text),
        ErrorClass::RateLimited => DriverError::RateLimited(text),
        ErrorClass::Transient => DriverError::Transient(text),
        ErrorClass::Permanent => DriverError::Permanent(text),
    }
}

/// Used when `[cloud]` is absent: the fleet is the dedicated nodes alone.
#[derive(Debug, Default)]
pub struct NoCloud;

impl CloudProvider for NoCloud {
    fn create_node<'a>(
        &'a self,
        _command_id: CommandId,
        _node_id: NodeId,
        vm_type: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<String, DriverError>> {
        Box::pin(async move {
            Err(DriverError::Permanent(format!(
                "cannot order a {vm_type} VM in {location}: no [cloud] section is configured"
            )))
        })
    }

    fn delete_node(&self, _command_id: CommandId, _node_id: NodeId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async { Ok(()) })
    }
}
