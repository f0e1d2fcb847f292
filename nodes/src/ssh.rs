//! SSH to nodes (russh on aws-lc-rs): one pooled connection per node with keepalives,
//! reconnect with back-off, host keys pinned against the platform's known keys (learned
//! on first use only where configured), a command runner, and stream-local channels to
//! the node's Docker socket.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyBase64};
use russh::{ChannelMsg, ChannelStream};

/// Keepalive every this many ms of silence from the server.
pub const KEEPALIVE_INTERVAL_MS: u64 = 10_000;
/// Unanswered keepalives after which the connection counts as dead.
pub const KEEPALIVE_MISSES_MAX: usize = 3;
/// Connection attempts per call before giving up (with back-off between them).
pub const CONNECT_ATTEMPTS_MAX: u32 = 3;
/// First back-off between connection attempts; it doubles up to `RECONNECT_BACKOFF_MS_MAX`.
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 200;
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 5_000;
/// Bound on TCP connect plus handshake plus authentication.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Bytes of a command's stdout or stderr kept (the rest is dropped).
pub const COMMAND_OUTPUT_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("node {node}: SSH connection to {addr} failed: {cause}")]
    Connect { node: String, addr: String, cause: String },
    #[error("node {node}: SSH to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        node: String,
        addr: String,
        timeout_ms: u64,
    },
    #[error("node {node}: host key of {addr} is not a pinned one (offered {offered}); refusing to connect")]
    HostKeyMismatch {
        node: String,
        addr: String,
        offered: String,
    },
    #[error("node {node}: no known host key for {addr} and learning on first use is off (offered {offered})")]
    HostKeyUnknown {
        node: String,
        addr: String,
        offered: String,
    },
    #[error("node {node}: SSH authentication as {user} with key {key_path} refused")]
    AuthRefused {
        node: String,
        user: String,
        key_path: String,
    },
    #[error("node {node}: cannot read SSH key {key_path}: {cause}")]
    Key {
        node: String,
        key_path: String,
        cause: String,
    },
    #[error("node {node}: known host key {key:?} is not an OpenSSH public key: {cause}")]
    BadKnownHostKey { node: String, key: String, cause: String },
    #[error("node {node}: SSH channel for {purpose} failed: {cause}")]
    Channel {
        node: String,
        purpose: String,
        cause: String,
    },
}

/// How to reach a node over SSH.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// The node's name, used in errors and logs.
    pub node: String,
    pub addr: SocketAddr,
    pub user: String,
    pub key_path: PathBuf,
    /// Pinned host keys in OpenSSH form (`ssh-ed25519 AAAA...`, a comment allowed).
    pub known_host_keys: Vec<String>,
    /// With no pinned key: accept the first key seen and pin it for this process.
    pub learn_host_key_on_first_use: bool,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

/// One node's SSH connection, shared by every user of the node and re-made when it died.
pub struct SshConnection {
    config: SshConfig,
    pinned: Vec<PublicKey>,
    /// Key learned on first use (when allowed and nothing was pinned).
    learned: Arc<Mutex<Option<PublicKey>>>,
    key: Arc<PrivateKey>,
    handle: tokio::sync::Mutex<Option<Arc<Handle<KeyChecker>>>>,
    /// Back-off state: the delay before the next reconnect after a failure.
    backoff_ms: Mutex<u64>,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("node", &self.config.node)
            .field("addr", &self.config.addr)
            .finish()
    }
}

impl SshConnection {
    /// Reads the key and parses the pinned host keys; connects lazily.
    pub fn new(config: SshConfig) -> Result<SshConnection, SshError> {
        let key = russh::keys::load_secret_key(&config.key_path, None).map_err(|error| SshError::Key {
            node: config.node.clone(),
            key_path: config.key_path.display().to_string(),
            cause: error.to_string(),
        })?;
        let mut pinned = Vec::new();
        for text in &config.known_host_keys {
            let base64 = text.split_whitespace().nth(1).unwrap_or(text);
            let key = russh::keys::parse_public_key_base64(base64).map_err(|error| SshError::BadKnownHostKey {
                node: config.node.clone(),
                key: text.clone(),
                cause: error.to_string(),
            })?;
            pinned.push(key);
        }
        Ok(SshConnection {
            config,
            pinned,
            learned: Arc::new(Mutex::new(None)),
            key: Arc::new(key),
            handle: tokio::sync::Mutex::new(None),
            backoff_ms: Mutex::new(RECONNECT_BACKOFF_MS_MIN),
        })
    }

    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// The host key learned on first use, if any (to store as pinned).
    pub fn learned_host_key(&self) -> Option<String> {
        let learned = self.learned.lock().expect("not poisoned");
        learned
            .as_ref()
            .map(|key| format!("{} {}", key.algorithm().as_str(), key.public_key_base64()))
    }

    /// The live connection, connecting (with back-off between attempts) when there is
    /// none or it died. Host-key and authentication refusals are not retried.
    pub async fn handle(&self) -> Result<Arc<Handle<KeyChecker>>, SshError> {
        let mut slot = self.handle.lock().await;
        if let Some(handle) = slot.as_ref()
            && !handle.is_closed()
        {
            return Ok(handle.clone());
        }
        *slot = None;
        let mut last_error = None;
        for attempt in 0..CONNECT_ATTEMPTS_MAX {
            if attempt > 0 {
                let delay_ms = {
                    let mut backoff = self.backoff_ms.lock().expect("not poisoned");
                    let delay_ms = *backoff;
                    *backoff = (*backoff * 2).min(RECONNECT_BACKOFF_MS_MAX);
                    delay_ms
                };
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            match self.connect_once().await {
                Ok(handle) => {
                    *self.backoff_ms.lock().expect("not poisoned") = RECONNECT_BACKOFF_MS_MIN;
                    let handle = Arc::new(handle);
                    *slot = Some(handle.clone());
                    return Ok(handle);
                }
                Err(error @ (SshError::HostKeyMismatch { .. } | SshError::HostKeyUnknown { .. })) => {
                    return Err(error);
                }
                Err(error @ (SshError::AuthRefused { .. } | SshError::Key { .. })) => return Err(error),
                Err(error) => {
                    tracing::debug!(node = %self.config.node, %error, attempt, "SSH connect failed");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn connect_once(&self) -> Result<Handle<KeyChecker>, SshError> {
        let addr = self.config.addr.to_string();
        let offered = Arc::new(Mutex::new(None));
        let checker = KeyChecker {
            pinned: self.pinned.clone(),
            learn: self.config.learn_host_key_on_first_use,
            learned: self.learned.clone(),
            offered: offered.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(Duration::from_millis(KEEPALIVE_INTERVAL_MS)),
            keepalive_max: KEEPALIVE_MISSES_MAX,
            nodelay: true,
            ..client::Config::default()
        });
        let node = self.config.node.clone();
        let connect = async {
            let mut handle = client::connect(config, self.config.addr, checker)
                .await
                .map_err(|error| {
                    let offered_key = offered.lock().expect("not poisoned").clone();
                    match (error, offered_key) {
                        (russh::Error::UnknownKey, Some(offered)) => {
                            if self.pinned.is_empty() {
                                SshError::HostKeyUnknown {
                                    node: node.clone(),
                                    addr: addr.clone(),
                                    offered,
                                }
                            } else {
                                SshError::HostKeyMismatch {
                                    node: node.clone(),
                                    addr: addr.clone(),
                                    offered,
                                }
                            }
                        }
                        (error, _) => SshError::Connect {
                            node: node.clone(),
                            addr: addr.clone(),
                            cause: error.to_string(),
                        },
                    }
                })?;
            let hash_alg = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
            let auth = handle
                .authenticate_publickey(
                    self.config.user.clone(),
                    PrivateKeyWithHashAlg::new(self.key.clone(), hash_alg),
                )
                .await
                .map_err(|error| SshError::Connect {
                    node: node.clone(),
                    addr: addr.clone(),
                    cause: format!("during authentication: {error}"),
                })?;
            if !auth.success() {
                return Err(SshError::AuthRefused {
                    node: node.clone(),
                    user: self.config.user.clone(),
                    key_path: self.config.key_path.display().to_string(),
                });
            }
            Ok(handle)
        };
        match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                node,
                addr,
                timeout_ms: CONNECT_TIMEOUT_MS,
            }),
        }
    }

    /// Opens a channel to a unix socket on the node (`direct-streamlocal@openssh.com`).
    pub async fn open_socket(&self, socket_path: &str) -> Result<ChannelStream<client::Msg>, SshError> {
        let channel = self
            .open_channel(format!("the socket {socket_path}"), |handle| async move {
                handle.channel_open_direct_streamlocal(socket_path).await
            })
            .await?;
        Ok(channel.into_stream())
    }

    /// Opens a channel with `open`; when that fails because the pooled connection died
    /// (the server went away between two calls), connects again and retries once.
    async fn open_channel<F, Fut>(&self, purpose: String, open: F) -> Result<russh::Channel<client::Msg>, SshError>
    where
        F: Fn(Arc<Handle<KeyChecker>>) -> Fut,
        Fut: Future<Output = Result<russh::Channel<client::Msg>, russh::Error>>,
    {
        let mut retried = false;
        loop {
            let handle = self.handle().await?;
            match open(handle.clone()).await {
                Ok(channel) => return Ok(channel),
                Err(error) => {
                    let connection_died = handle.is_closed() || matches!(error, russh::Error::SendError);
                    if connection_died && !retried {
                        tracing::debug!(node = %self.config.node, %error, "SSH connection died: reconnecting");
                        self.forget(&handle).await;
                        retried = true;
                        continue;
                    }
                    return Err(SshError::Channel {
                        node: self.config.node.clone(),
                        purpose,
                        cause: error.to_string(),
                    });
                }
            }
        }
    }

    /// Drops `dead` from the pool (unless another caller already replaced it).
    async fn forget(&self, dead: &Arc<Handle<KeyChecker>>) {
        let mut slot = self.handle.lock().await;
        if slot.as_ref().is_some_and(|handle| Arc::ptr_eq(handle, dead)) {
            *slot = None;
        }
    }

    /// Runs `command` on the node and collects its output (bounded) and exit status.
    pub async fn run(&self, command: &str, timeout: Duration) -> Result<CommandOutput, SshError> {
        let channel_error = |cause: String| SshError::Channel {
            node: self.config.node.clone(),
            purpose: format!("the command `{command}`"),
            cause,
        };
        let work = async {
            let mut channel = self
                .open_channel(format!("the command `{command}`"), |handle| async move {
                    handle.channel_open_session().await
                })
                .await?;
            channel
                .exec(true, command)
                .await
                .map_err(|error| channel_error(error.to_string()))?;
            let mut output = CommandOutput {
                exit_status: None,
                stdout: String::new(),
                stderr: String::new(),
            };
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => append_bounded(&mut stdout, &data),
                    ChannelMsg::ExtendedData { data, .. } => append_bounded(&mut stderr, &data),
                    ChannelMsg::ExitStatus { exit_status } => output.exit_status = Some(exit_status),
                    _ => {}
                }
            }
            output.stdout = String::from_utf8_lossy(&stdout).into_owned();
            output.stderr = String::from_utf8_lossy(&stderr).into_owned();
            Ok(output)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                node: self.config.node.clone(),
                addr: self.config.addr.to_string(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Closes the pooled connection (the next call reconnects).
    pub async fn disconnect(&self) {
        if let Some(handle) = self.handle.lock().await.take() {
            let _ = handle.disconnect(russh::Disconnect::ByApplication, "bye", "en").await;
        }
    }
}

fn append_bounded(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = COMMAND_OUTPUT_BYTES_MAX.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// russh's client handler: accepts the server only if its key is pinned (or learned).
pub struct KeyChecker {
    pinned: Vec<PublicKey>,
    learn: bool,
    learned: Arc<Mutex<Option<PublicKey>>>,
    /// The key the server offered, for the error message when it is refused.
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for KeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            *self.offered.lock().expect("not poisoned") = Some("a certificate".to_string());
            return Ok(false);
        };
        if self.pinned.iter().any(|pinned| pinned.key_data() == key.key_data()) {
            return Ok(true);
        }
        let mut learned = self.learned.lock().expect("not poisoned");
        if let Some(learned_key) = learned.as_ref() {
            if learned_key.key_data() == key.key_data() {
                return Ok(true);
            }
        } else if self.pinned.is_empty() && self.learn {
            tracing::info!(fingerprint = %key.fingerprint(HashAlg::Sha256), "SSH host key learned on first use");
            *learned = Some(key.clone());
            return Ok(true);
        }
        *self.offered.lock().expect("not poisoned") = Some(format!(
            "{} {}",
            key.algorithm().as_str(),
            key.fingerprint(HashAlg::Sha256)
        ));
        Ok(false)
    }
}
