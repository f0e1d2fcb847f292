//! Test doubles: drivers that run nothing, for tests about the runtime rather than
//! the engines (the cloud fake's VMs have no engine to run containers on).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use payperplay_core::{CommandId, Input, NodeId, ServerId};
use payperplay_prod::drivers::{BoxFuture, ContainerDriver, DriverError, NodeRef, ObservationSink};

/// In-process fake of a container engine: containers run at once, Minecraft
/// "boots" after `boot_ms`.
#[derive(Debug, Default)]
pub struct FakeContainers {
    pub boot_ms: u64,
    /// server id → node id of running containers.
    pub running: Mutex<BTreeMap<ServerId, NodeId>>,
    pub archived: Mutex<BTreeSet<ServerId>>,
}

impl FakeContainers {
    pub fn new(boot_ms: u64) -> Self {
        FakeContainers {
            boot_ms,
            ..FakeContainers::default()
        }
    }
}

impl ContainerDriver for FakeContainers {
    fn start_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        node: NodeRef,
        _ram_mib: u32,
        restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            if restore_world {
                self.archived.lock().expect("not poisoned").remove(&server_id);
            }
            self.running.lock().expect("not poisoned").insert(server_id, node.id);
            let boot_ms = self.boot_ms;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(boot_ms)).await;
                sink.observe(Input::ServerBooted { server_id }).await;
            });
            Ok(())
        })
    }

    fn stop_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        _node: NodeRef,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.running.lock().expect("not poisoned").remove(&server_id);
            Ok(())
        })
    }

    fn archive_world(&self, _command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.archived.lock().expect("not poisoned").insert(server_id);
            Ok(())
        })
    }

    fn delete_world(&self, _command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.archived.lock().expect("not poisoned").remove(&server_id);
            Ok(())
        })
    }
}
