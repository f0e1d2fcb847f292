//! Node drivers for the production shell: Docker engines reached through their local
//! unix socket or, for remote nodes, through an SSH channel to the node's socket; the
//! containers that run servers (image, environment, memory, labels, ports, world
//! volume), started, stopped, killed and removed idempotently by command id; the
//! observers' building blocks (container exits from the engine's event stream, listing
//! by label, node health probes); and `SecretBox`, which keeps RCON passwords encrypted
//! at rest.
//!
//! No clock reads for decisions, no core types: the shell maps ids and results.

pub mod driver;
pub mod engine;
pub mod error;
pub mod ready;
pub mod secret;
pub mod spec;
pub mod ssh;

pub use driver::{
    ContainerEvent, ContainerEventKind, ContainerInfo, NodeConfig, NodeDriver, NodeHealth, StartedContainer,
    StopOutcome,
};
pub use engine::EngineEndpoint;
pub use error::{FailureKind, NodeError};
pub use secret::{SecretBox, SecretError, generate_rcon_password};
pub use spec::{Ports, ServerSoftware, ServerSpec};
pub use ssh::{CommandOutput, SshConfig, SshConnection, SshError};
