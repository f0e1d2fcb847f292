//! Reaching a node's Docker engine: its unix socket on this machine, or the remote
//! engine's socket through an SSH `direct-streamlocal` channel fed to bollard as a custom
//! transport (one channel and one HTTP/1.1 connection per request, over the node's one
//! pooled SSH connection). The API version is negotiated after connecting.

use std::sync::Arc;

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::rt::TokioIo;

use crate::error::NodeError;
use crate::ssh::SshConnection;

/// Seconds bollard waits for an engine's response headers (event streams are not cut).
pub const ENGINE_REQUEST_TIMEOUT_S: u64 = 120;

/// Where a node's engine listens.
#[derive(Debug, Clone)]
pub enum EngineEndpoint {
    /// The engine's unix socket on this machine.
    Local { socket_path: String },
    /// The engine's unix socket on the node, through SSH.
    Ssh {
        ssh: Arc<SshConnection>,
        socket_path: String,
    },
}

impl EngineEndpoint {
    /// For messages: `unix:///path` or `ssh://node/path`.
    pub fn describe(&self) -> String {
        match self {
            EngineEndpoint::Local { socket_path } => format!("unix://{socket_path}"),
            EngineEndpoint::Ssh { ssh, socket_path } => format!("ssh://{}{socket_path}", ssh.node()),
        }
    }

    /// A client for the engine with the API version negotiated (the lower of ours and
    /// the engine's).
    pub async fn connect(&self, node: &str) -> Result<Docker, NodeError> {
        let endpoint = self.describe();
        let docker = match self {
            EngineEndpoint::Local { socket_path } => {
                Docker::connect_with_unix(socket_path, ENGINE_REQUEST_TIMEOUT_S, API_DEFAULT_VERSION).map_err(
                    |error| NodeError::EngineUnreachable {
                        node: node.to_string(),
                        endpoint: endpoint.clone(),
                        cause: error.to_string(),
                    },
                )?
            }
            EngineEndpoint::Ssh { ssh, socket_path } => {
                let ssh = ssh.clone();
                let socket_path = socket_path.clone();
                let transport = move |request: BollardRequest| {
                    let ssh = ssh.clone();
                    let socket_path = socket_path.clone();
                    async move { request_over_ssh(&ssh, &socket_path, request).await }
                };
                Docker::connect_with_custom_transport(
                    transport,
                    Some("http://docker"),
                    ENGINE_REQUEST_TIMEOUT_S,
                    API_DEFAULT_VERSION,
                )
                .map_err(|error| NodeError::EngineUnreachable {
                    node: node.to_string(),
                    endpoint: endpoint.clone(),
                    cause: error.to_string(),
                })?
            }
        };
        docker
            .negotiate_version()
            .await
            .map_err(|error| map_engine_error(node, &endpoint, "version negotiation", error))
    }
}

/// Like [`NodeError::from_engine`], but an SSH failure under the transport is returned
/// as the SSH error it is (host key, authentication, connection).
pub(crate) fn map_engine_error(
    node: &str,
    endpoint: &str,
    operation: &str,
    error: bollard::errors::Error,
) -> NodeError {
    match error {
        bollard::errors::Error::IOError { err } if err.get_ref().is_some_and(|inner| inner.is::<SshErrorBox>()) => {
            let inner = err.into_inner().expect("checked above");
            NodeError::Ssh(inner.downcast::<SshErrorBox>().expect("checked above").0)
        }
        error => NodeError::from_engine(node, endpoint, operation, error),
    }
}

/// An [`SshError`](crate::ssh::SshError) carried through bollard's I/O error.
#[derive(Debug)]
struct SshErrorBox(crate::ssh::SshError);

impl std::fmt::Display for SshErrorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SshErrorBox {}

async fn request_over_ssh(
    ssh: &SshConnection,
    socket_path: &str,
    request: BollardRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, bollard::errors::Error> {
    let stream = ssh
        .open_socket(socket_path)
        .await
        .map_err(|error| std::io::Error::other(SshErrorBox(error)))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "engine connection over SSH ended");
        }
    });
    // bollard builds absolute URIs for custom transports; the engine wants origin-form
    // and a Host header.
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    parts.uri = path_and_query.parse().map_err(bollard::errors::Error::from)?;
    parts
        .headers
        .insert(hyper::header::HOST, hyper::header::HeaderValue::from_static("docker"));
    Ok(sender.send_request(hyper::Request::from_parts(parts, body)).await?)
}
