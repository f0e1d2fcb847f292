//! The in-process fake of the cloud provider (the Hetzner driver replaces it): VMs are
//! ready after a delay. Tests read its state to see what was carried out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use payperplay_core::{CommandId, NodeId};

use super::{BoxFuture, CloudProvider, DriverError};

/// In-process fake of a cloud provider: VMs are ready after `provision_ms`.
#[derive(Debug, Default)]
pub struct FakeCloud {
    pub provision_ms: u64,
    /// node id → provider reference of VMs that exist.
    pub vms: Mutex<BTreeMap<NodeId, String>>,
    /// Fail this many create calls before succeeding (fault injection for tests).
    pub fail_creates: Mutex<u32>,
}

impl FakeCloud {
    pub fn new(provision_ms: u64) -> Self {
        FakeCloud {
            provision_ms,
            ..FakeCloud::default()
        }
    }
}

impl CloudProvider for FakeCloud {
    fn create_node<'a>(
        &'a self,
        _command_id: CommandId,
        node_id: NodeId,
        vm_type: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<String, DriverError>> {
        Box::pin(async move {
            {
                let mut fail = self.fail_creates.lock().expect("not poisoned");
                if *fail > 0 {
                    *fail -= 1;
                    return Err(DriverError::Transient("injected failure".to_string()));
                }
            }
            tokio::time::sleep(Duration::from_millis(self.provision_ms)).await;
            let reference = format!("fake-{vm_type}-{location}-node-{node_id}");
            self.vms
                .lock()
                .expect("not poisoned")
                .insert(node_id, reference.clone());
            Ok(reference)
        })
    }

    fn delete_node(&self, _command_id: CommandId, node_id: NodeId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.vms.lock().expect("not poisoned").remove(&node_id);
            Ok(())
        })
    }
}
