//! The Hetzner Cloud driver: [`HetznerCloud`] carries out `ProvisionNode` and
//! `DeleteNode` through `payperplay_hetzner::HetznerClient`.
//!
//! - An order is idempotent: the VM is named `{platform}-cmd-{command_id}` and labelled
//!   with the platform, the node and the command, so a repeated order finds its VM.
//! - An order is done when the VM's create and start actions finished, within
//!   `cloud.ready_wait_ms_max`; a failed or late order deletes whatever the provider
//!   made for it, so a failure never leaks a VM.
//! - Failures keep their meaning for the core: sold out becomes
//!   `FailureKind::ResourceUnavailable` (the core falls back to another type or
//!   location), rate limited becomes `FailureKind::RateLimited` (the core backs off),
//!   transient ones are retried by the executor, permanent ones are not.
//! - The token lives in a `SecretString`; no error or log line carries it.

use std::time::Duration;

use payperplay_core::{Catalog, CommandId, NodeId};
use payperplay_hetzner::client::{LABEL_NODE, LABEL_PLATFORM};
use payperplay_hetzner::cloud_init::WorkerBootstrap;
use payperplay_hetzner::model::Server;
use payperplay_hetzner::{ClientConfig, ErrorClass, HetznerClient, HetznerError, VmOrder};

use super::{BoxFuture, CloudProvider, DriverError};
use crate::config::CloudConfig;

/// Hetzner Cloud as the platform's [`CloudProvider`].
#[derive(Debug)]
pub struct HetznerCloud {
    client: HetznerClient,
    ssh_key_name: String,
    ssh_public_key: String,
    ready_url: String,
    ready_wait_ms_max: u64,
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
        })
    }

    /// Checks what `serve` needs before it orders anything: the token is accepted,
    /// every VM type and location of the core's catalog exists at Hetzner, and the
    /// platform's SSH key is there (created when missing). The error names what was
    /// wrong (the type, the location, the refused token).
    pub async fn check(&self, catalog: &Catalog) -> Result<(), HetznerError> {
        let vm_types: Vec<&str> = catalog.server_types.iter().map(|t| t.name.as_str()).collect();
        let locations: Vec<&str> = catalog.locations.iter().map(String::as_str).collect();
        self.client.check_catalog(&vm_types, &locations).await?;
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
        let ready_wait = Duration::from_millis(self.ready_wait_ms_max);
        let error = match tokio::time::timeout(ready_wait, self.client.order_vm(&order)).await {
            Ok(Ok(server)) => {
                metrics::counter!("payperplay_cloud_vms_ordered_total").increment(1);
                return Ok(server.id.to_string());
            }
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
