//! Readiness and player counts: a server is running when its game port answers a
//! Minecraft status ping (`payperplay_mcproto::status_ping`), not when its container
//! starts.

use std::net::SocketAddr;
use std::time::Duration;

pub use payperplay_mcproto::{ProtoError, StatusReport};

/// Pause between status pings while a server boots.
pub const READY_POLL_INTERVAL_MS: u64 = 50;
/// Bound on one status ping.
pub const STATUS_PING_TIMEOUT_MS: u64 = 2_000;
/// Host name sent in the handshake (a router would route by it; a server ignores it).
pub const PING_HOSTNAME: &str = "payperplay.local";

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("server at {address} did not answer a status ping within {timeout_ms} ms (last attempt: {last_error})")]
    NotAnswering {
        address: SocketAddr,
        timeout_ms: u64,
        last_error: String,
    },
}

/// One status ping: version, MOTD, players online and max.
pub async fn status(address: SocketAddr) -> Result<StatusReport, ProtoError> {
    payperplay_mcproto::status_ping(address, PING_HOSTNAME, Duration::from_millis(STATUS_PING_TIMEOUT_MS)).await
}

/// Pings `address` every [`READY_POLL_INTERVAL_MS`] until it answers; fails after `timeout`
/// (the configured boot bound) with the last ping's error.
pub async fn wait_until_answering(address: SocketAddr, timeout: Duration) -> Result<StatusReport, ReadyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let error = match status(address).await {
            Ok(report) => return Ok(report),
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(ReadyError::NotAnswering {
                address,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                last_error: error.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_INTERVAL_MS)).await;
    }
}
