//! The players' front door: a Minecraft hostname router.
//!
//! Players connect to one address (`:25565`) and type `<server>.<domain>` (or a
//! server's custom hostname). The router reads the handshake, asks the platform
//! ([`Backend`]) where that server is, and
//! - proxies the connection to it when it runs;
//! - answers status and legacy pings itself when it does not ("sleeping: join to
//!   start", "starting", "queued: position N, about M s");
//! - wakes a sleeping or stopped server when a player logs in (if its owner's balance
//!   allows), holds the player up to `hold_ms` and connects them once it runs, or tells
//!   them clearly where the start stands;
//! - reports every join and leave through it at once.
//!
//! Malformed or oversized packets, slow openings and floods from one address close
//! that connection only. See [`connection`] for one connection's path.

pub mod answer;
pub mod backend;
pub mod config;
pub mod connection;
pub mod hostname;
pub mod limit;
pub mod proxy;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use backend::{Backend, BackendError, RequestedHost, Route, ServerState, WakeOutcome, WakeRefusal};
pub use config::{ConfigError, RouterConfig};

use crate::limit::{AddressLimiter, Admission};

/// How often the rate limiter forgets addresses that have their burst back.
pub const LIMITER_PURGE_INTERVAL_MS: u64 = 60_000;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
pub const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen for players on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What every connection task shares.
pub struct Shared<B> {
    pub config: RouterConfig,
    pub backend: B,
}

/// A running router; [`RouterHandle::stop`] closes the listener and every connection.
pub struct RouterHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RouterHandle {
    /// Where it listens (the configured address with the port the system chose for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, and waits until that is done.
    pub async fn stop(self) {
        let _ignored = self.stop.send(true);
        let _ignored = self.task.await;
    }

    /// Waits until the router stops (it runs until [`RouterHandle::stop`]).
    pub async fn finished(&mut self) {
        let _ignored = (&mut self.task).await;
    }
}

/// Validates `config`, binds its listener and serves players on a spawned task.
pub async fn start<B: Backend>(config: RouterConfig, backend: B) -> Result<RouterHandle, RouterError> {
    let config = config.validated()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RouterError::Bind {
            address: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| RouterError::Bind {
        address: config.listen,
        source,
    })?;
    tracing::info!(%local_addr, domain = %config.domain, "the player router listens");
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared { config, backend });
    let task = tokio::spawn(accept_loop(listener, shared, stopped));
    Ok(RouterHandle { local_addr, stop, task })
}

async fn accept_loop<B: Backend>(listener: TcpListener, shared: Arc<Shared<B>>, mut stopped: watch::Receiver<bool>) {
    let config = &shared.config;
    let limiter = AddressLimiter::new(
        NonZeroU32::new(config.connections_per_address_per_s).unwrap_or(NonZeroU32::MIN),
        NonZeroU32::new(config.connection_burst_per_address).unwrap_or(NonZeroU32::MIN),
        config.tracked_addresses_max,
    );
    let slots = Arc::new(Semaphore::new(config.connections_max));
    let mut connections = JoinSet::new();
    let mut purge = tokio::time::interval(Duration::from_millis(LIMITER_PURGE_INTERVAL_MS));
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a player connection failed");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                        continue;
                    }
                };
                match limiter.admit(peer.ip()) {
                    Admission::Admitted => {}
                    refused => {
                        let reason = if refused == Admission::RateLimited { "rate_limited" } else { "too_many_addresses" };
                        metrics::counter!("router_refused_connections_total", "reason" => reason).increment(1);
                        tracing::debug!(%peer, reason, "connection refused at accept");
                        continue;
                    }
                }
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    metrics::counter!("router_refused_connections_total", "reason" => "connections_max").increment(1);
                    tracing::warn!(%peer, connections_max = config.connections_max, "connection refused: the router holds its maximum");
                    continue;
                };
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let _slot = slot;
                    if let Err(error) = connection::serve(shared, stream, peer).await {
                        metrics::counter!("router_closed_connections_total", "reason" => error.reason()).increment(1);
                        tracing::debug!(%peer, %error, "connection closed");
                    }
                });
            }
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = ended && error.is_panic() {
                    tracing::error!(%error, "a connection task panicked");
                }
            }
            _ = purge.tick() => limiter.purge(),
        }
    }
    drop(listener);
    connections.shutdown().await;
    tracing::info!("the player router stopped");
}
