//! VMs: ordered idempotently by name, found by name or label selector (all pages),
//! deleted (absent counts as deleted).

use reqwest::Method;
use serde_json::json;

use super::transport::Failure;
use super::{CreatedVm, HetznerClient, LABEL_PLATFORM, PER_PAGE_MAX, USER_DATA_BYTES_MAX, VmOrder, decode, next_page};
use crate::error::{ErrorClass, HetznerError};
use crate::model::{Action, CreateServerEnvelope, DeleteServerEnvelope, Page, Server, ServerEnvelope, ServersEnvelope};

impl HetznerClient {
    /// Orders a VM, idempotently: a VM of the same name (an earlier try of the same
    /// command) is returned instead of a second one being made.
    pub async fn create_vm(&self, order: &VmOrder) -> Result<CreatedVm, HetznerError> {
        const OP: &str = "create_server";
        if order.user_data.len() > USER_DATA_BYTES_MAX {
            return Err(HetznerError::Config(format!(
                "user data is {} bytes, Hetzner takes at most {USER_DATA_BYTES_MAX}",
                order.user_data.len()
            )));
        }
        let name = self.vm_name(order.command_id);
        let body = json!({
            "name": name,
            "server_type": order.server_type,
            "location": order.location,
            "image": self.config.image,
            "ssh_keys": order.ssh_keys,
            "user_data": order.user_data,
            "labels": self.vm_labels(order),
            "start_after_create": true,
        });
        match self.execute(OP, Method::POST, "servers", &[], Some(&body)).await {
            Ok(bytes) => {
                let created: CreateServerEnvelope = decode(OP, &bytes)?;
                Ok(CreatedVm {
                    server: created.server,
                    action: Some(created.action),
                    next_actions: created.next_actions,
                    already_existed: false,
                })
            }
            Err(Failure::Api { error, .. }) if error.code == "uniqueness_error" => {
                let Some(server) = self.find_server_by_name(&name).await? else {
                    return Err(HetznerError::Api {
                        operation: OP,
                        status: 409,
                        code: error.code,
                        message: format!(
                            "{} (and no VM named {name} exists: another field is not unique)",
                            error.message
                        ),
                        class: ErrorClass::Permanent,
                    });
                };
                if server.labels.get(LABEL_PLATFORM) != Some(&self.config.platform) {
                    return Err(HetznerError::Api {
                        operation: OP,
                        status: 409,
                        code: error.code,
                        message: format!(
                            "a VM named {name} exists but does not carry {}",
                            self.platform_selector()
                        ),
                        class: ErrorClass::Permanent,
                    });
                }
                Ok(CreatedVm {
                    server,
                    action: None,
                    next_actions: Vec::new(),
                    already_existed: true,
                })
            }
            Err(Failure::Api { error, .. }) if error.code == "resource_unavailable" => Err(HetznerError::SoldOut {
                server_type: order.server_type.clone(),
                location: order.location.clone(),
                message: error.message,
            }),
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    /// Orders a VM and waits until its create action and the actions it triggered
    /// (`start_server`) finished. Returns the VM as the create answer (or, for a repeated
    /// order, the list) described it: name, labels, IP; its `status` is from that
    /// moment, `get_server` gives a fresh one. One request per order plus shared polls.
    pub async fn order_vm(&self, order: &VmOrder) -> Result<Server, HetznerError> {
        let created = self.create_vm(order).await?;
        let actions = created.action.into_iter().chain(created.next_actions).collect();
        self.wait_for_actions(actions).await?;
        Ok(created.server)
    }

    /// The VM with this id; None when it does not exist.
    pub async fn get_server(&self, id: u64) -> Result<Option<Server>, HetznerError> {
        const OP: &str = "get_server";
        match self.execute(OP, Method::GET, &format!("servers/{id}"), &[], None).await {
            Ok(bytes) => Ok(Some(decode::<ServerEnvelope>(OP, &bytes)?.server)),
            Err(Failure::Api { status: 404, .. }) => Ok(None),
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    /// The VM with this exact name, if any.
    pub async fn find_server_by_name(&self, name: &str) -> Result<Option<Server>, HetznerError> {
        let page = self
            .list_servers_page(&[("name", name.to_owned())], 1, PER_PAGE_MAX)
            .await?;
        Ok(page.items.into_iter().find(|server| server.name == name))
    }

    /// One page of VMs matching `label_selector` (Hetzner's selector syntax).
    pub async fn list_servers_by_label_page(
        &self,
        label_selector: &str,
        page: u64,
        per_page: u64,
    ) -> Result<Page<Server>, HetznerError> {
        self.list_servers_page(&[("label_selector", label_selector.to_owned())], page, per_page)
            .await
    }

    /// Every VM matching `label_selector`, all pages read.
    pub async fn list_servers(&self, label_selector: &str) -> Result<Vec<Server>, HetznerError> {
        let mut servers = Vec::new();
        let mut page = 1;
        loop {
            let answer = self
                .list_servers_by_label_page(label_selector, page, PER_PAGE_MAX)
                .await?;
            servers.extend(answer.items);
            match next_page("list_servers", &answer.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(servers),
            }
        }
    }

    /// Every VM of this platform instance.
    pub async fn list_platform_vms(&self) -> Result<Vec<Server>, HetznerError> {
        self.list_servers(&self.platform_selector()).await
    }

    async fn list_servers_page(
        &self,
        filter: &[(&str, String)],
        page: u64,
        per_page: u64,
    ) -> Result<Page<Server>, HetznerError> {
        const OP: &str = "list_servers";
        let mut query: Vec<(&str, String)> = filter.to_vec();
        query.push(("page", page.to_string()));
        query.push(("per_page", per_page.clamp(1, PER_PAGE_MAX).to_string()));
        let bytes = self
            .execute(OP, Method::GET, "servers", &query, None)
            .await
            .map_err(|failure| self.failure_to_error(OP, failure))?;
        let answer: ServersEnvelope = decode(OP, &bytes)?;
        Ok(Page {
            items: answer.servers,
            pagination: answer.meta.pagination,
        })
    }

    /// Deletes a VM. A VM that does not exist (404) counts as deleted: Ok(None).
    pub async fn delete_server(&self, id: u64) -> Result<Option<Action>, HetznerError> {
        const OP: &str = "delete_server";
        match self
            .execute(OP, Method::DELETE, &format!("servers/{id}"), &[], None)
            .await
        {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(decode::<DeleteServerEnvelope>(OP, &bytes)?.action),
            Err(Failure::Api { status: 404, .. }) => Ok(None),
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    /// Deletes the VM a command ordered, found by its name; absent counts as deleted.
    /// Returns whether a VM was there to delete.
    pub async fn delete_vm_of_command(&self, command_id: u64) -> Result<bool, HetznerError> {
        let name = self.vm_name(command_id);
        let Some(server) = self.find_server_by_name(&name).await? else {
            return Ok(false);
        };
        if let Some(action) = self.delete_server(server.id).await? {
            self.wait_for_action(action).await?;
        }
        Ok(true)
    }
}
