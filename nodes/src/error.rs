//! What went wrong on a node, classified so the caller can tell a retry from a give-up.

use crate::ssh::SshError;

/// How the core should treat a failed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth retrying: a dropped connection, a timeout, an engine 5xx.
    Transient,
    /// Retrying will not help: an unknown image, a refused configuration, no disk.
    Permanent,
    /// The node (its SSH or its engine) cannot be reached at all.
    NodeUnreachable,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("node {node}: engine at {endpoint} unreachable: {cause}")]
    EngineUnreachable {
        node: String,
        endpoint: String,
        cause: String,
    },
    #[error("node {node}: engine call {operation} timed out after {timeout_ms} ms")]
    Timeout {
        node: String,
        operation: String,
        timeout_ms: u64,
    },
    #[error("node {node}: engine failed {operation} (HTTP {status}): {message}")]
    EngineFailed {
        node: String,
        operation: String,
        status: u16,
        message: String,
    },
    #[error("node {node}: unknown image {image}: {message}")]
    UnknownImage {
        node: String,
        image: String,
        message: String,
    },
    #[error("node {node}: engine refused the configuration for {operation} (HTTP {status}): {message}")]
    RefusedConfig {
        node: String,
        operation: String,
        status: u16,
        message: String,
    },
    #[error("node {node}: no disk space for {operation}: {message}")]
    NoDisk {
        node: String,
        operation: String,
        message: String,
    },
    #[error("node {node}: no free game port in {first}..={last} ({used} in use)")]
    NoFreePort {
        node: String,
        first: u16,
        last: u16,
        used: usize,
    },
    #[error("node {node}: the engine answered {operation} with something unexpected: {message}")]
    Protocol {
        node: String,
        operation: String,
        message: String,
    },
    #[error("node {node}: bad configuration: {reason}")]
    BadConfig { node: String, reason: String },
    #[error("node {node}: node check `{command}` failed: {message}")]
    CheckFailed {
        node: String,
        command: String,
        message: String,
    },
}

impl NodeError {
    pub fn kind(&self) -> FailureKind {
        match self {
            NodeError::Ssh(SshError::Connect { .. } | SshError::Timeout { .. } | SshError::HostKeyMismatch { .. })
            | NodeError::Ssh(SshError::HostKeyUnknown { .. } | SshError::AuthRefused { .. })
            | NodeError::EngineUnreachable { .. } => FailureKind::NodeUnreachable,
            NodeError::Ssh(SshError::Channel { .. }) | NodeError::Timeout { .. } | NodeError::EngineFailed { .. } => {
                FailureKind::Transient
            }
            NodeError::Ssh(SshError::Key { .. } | SshError::BadKnownHostKey { .. })
            | NodeError::UnknownImage { .. }
            | NodeError::RefusedConfig { .. }
            | NodeError::NoDisk { .. }
            | NodeError::NoFreePort { .. }
            | NodeError::Protocol { .. }
            | NodeError::BadConfig { .. }
            | NodeError::CheckFailed { .. } => FailureKind::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind() != FailureKind::Permanent
    }

    /// Maps a bollard error of `operation` on `node` to its kind.
    pub(crate) fn from_engine(node: &str, endpoint: &str, operation: &str, error: bollard::errors::Error) -> NodeError {
        use bollard::errors::Error as E;
        let node = node.to_string();
        let operation = operation.to_string();
        match error {
            E::DockerResponseServerError { status_code, message } => {
                if message.contains("no space left on device") {
                    NodeError::NoDisk {
                        node,
                        operation,
                        message,
                    }
                } else if status_code >= 500 {
                    NodeError::EngineFailed {
                        node,
                        operation,
                        status: status_code,
                        message,
                    }
                } else {
                    NodeError::RefusedConfig {
                        node,
                        operation,
                        status: status_code,
                        message,
                    }
                }
            }
            E::RequestTimeoutError => NodeError::Timeout {
                node,
                operation,
                timeout_ms: crate::engine::ENGINE_REQUEST_TIMEOUT_S * 1000,
            },
            E::JsonDataError { message, .. } => NodeError::Protocol {
                node,
                operation,
                message,
            },
            E::JsonSerdeError { err } => NodeError::Protocol {
                node,
                operation,
                message: err.to_string(),
            },
            other => NodeError::EngineUnreachable {
                node,
                endpoint: endpoint.to_string(),
                cause: format!("{operation}: {}", error_chain(&other)),
            },
        }
    }
}

/// The error and its sources, joined by ": ".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::errors::Error as E;

    fn classify(error: E) -> NodeError {
        NodeError::from_engine("n1", "unix:///run/docker.sock", "create container", error)
    }

    fn server_error(status_code: u16, message: &str) -> E {
        E::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn engine_errors_are_classified_by_what_a_retry_could_change() {
        let full = classify(server_error(500, "write /var/lib/docker/x: no space left on device"));
        assert!(matches!(full, NodeError::NoDisk { .. }), "{full:?}");
        assert_eq!(full.kind(), FailureKind::Permanent);
        assert_eq!(
            full.to_string(),
            "node n1: no disk space for create container: write /var/lib/docker/x: no space left on device"
        );
        let busy = classify(server_error(503, "daemon is shutting down"));
        assert_eq!(busy.kind(), FailureKind::Transient);
        assert!(busy.to_string().contains("HTTP 503"), "{busy}");
        let refused = classify(server_error(400, "invalid mount config"));
        assert!(
            matches!(refused, NodeError::RefusedConfig { status: 400, .. }),
            "{refused:?}"
        );
        assert_eq!(refused.kind(), FailureKind::Permanent);
        let timeout = classify(E::RequestTimeoutError);
        assert_eq!(timeout.kind(), FailureKind::Transient);
        assert!(timeout.to_string().contains("120000 ms"), "{timeout}");
        let gone = classify(E::IOError {
            err: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
        });
        assert_eq!(gone.kind(), FailureKind::NodeUnreachable);
        assert!(gone.to_string().contains("unix:///run/docker.sock"), "{gone}");
        assert!(gone.to_string().contains("connection refused"), "{gone}");
    }
}
